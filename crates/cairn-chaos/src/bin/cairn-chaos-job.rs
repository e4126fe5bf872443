//! The chaos job: a real Cairn job over bounded, deterministic input with
//! keyed state, timers, windows and exactly-once file sinks. The harness
//! (`cairn-chaos`) starts, kills and restarts it; see `cairn_chaos::job`.

fn main() {
    if let Err(e) = cairn_chaos::job::run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
