//! The keyed counting workload with no engine at all: what the machine can
//! do, to put `keyed_count` in proportion (issue 14). The same events as the
//! engine benchmark and the peers (event `i` of `0..N` has key `i % K` and
//! value `i`), per key a count (+1) and a sum (+value), each event's
//! `(key, count)` handed to a sink the optimiser cannot remove. Two threads
//! (as two subtasks) each own half the keys: thread `t` handles the events
//! `i ≡ t (mod threads)`, which with `K` a multiple of the thread count are
//! exactly the events of its keys.
//!
//!     cargo bench -p cairn --bench keyed_count_engine_free -- [N] [K] [threads]
//!
//! `two-maps` keeps count and sum in two `std` hash maps (two lookups per
//! event, like an engine with two value states); `one-map` keeps them in one.

/// The allocator of the Cairn benchmarks (`cairn::alloc`), for a like comparison.
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    TwoMaps,
    OneMap,
}

fn thread_share(n: u64, k: u64, threads: u64, t: u64, layout: Layout) -> u64 {
    let mut count: HashMap<u64, u64> = HashMap::new();
    let mut sum: HashMap<u64, u64> = HashMap::new();
    let mut both: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut sink = 0u64;
    let mut i = t;
    while i < n {
        let key = i % k;
        let emitted = match layout {
            Layout::TwoMaps => {
                let c = count.entry(key).or_insert(0);
                *c += 1;
                let c = *c;
                let s = sum.entry(key).or_insert(0);
                *s = s.wrapping_add(i);
                c
            }
            Layout::OneMap => {
                let e = both.entry(key).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.wrapping_add(i);
                e.0
            }
        };
        // The sink: (key, count) must be produced.
        sink = sink.wrapping_add(black_box(key) ^ emitted);
        i += threads;
    }
    black_box((count.len(), sum.len(), both.len()));
    sink
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, in
/// clock ticks of 1/100 s): on a shared machine, events per CPU second is
/// the figure that does not depend on how much of the machine the run got.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (in parentheses, may hold spaces); utime, stime are 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|x| x.parse::<u64>().ok()),
        f.get(12).and_then(|x| x.parse::<u64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => f64::NAN,
    }
}

/// Events per second of wall time, and CPU seconds used.
fn run(n: u64, k: u64, threads: u64, layout: Layout) -> (f64, f64) {
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || thread_share(n, k, threads, t, layout)))
        .collect();
    for w in workers {
        black_box(w.join().expect("worker thread"));
    }
    (n as f64 / start.elapsed().as_secs_f64(), cpu_seconds() - cpu0)
}

fn main() -> Result<(), String> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(20_000_000);
    let k = args.get(1).copied().unwrap_or(100_000).max(1);
    let threads = args.get(2).copied().unwrap_or(2).max(1);
    if k % threads != 0 {
        return Err(format!(
            "K ({k}) must be a multiple of the thread count ({threads}), so that each thread owns whole keys"
        ));
    }
    for (layout, name) in [(Layout::TwoMaps, "two-maps"), (Layout::OneMap, "one-map")] {
        let (eps, cpu) = run(n, k, threads, layout);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "peer=engine-free-{name} events={n} keys={k} threads={threads} events_per_s={eps:.0} cpu_s={cpu:.2} \
             events_per_cpu_s={:.0} load1={}",
            n as f64 / cpu,
            load.split_whitespace().next().unwrap_or("?")
        );
    }
    Ok(())
}
