//! The Nexmark benchmark, Cairn side: runs one query over N generated
//! events and prints one summary line (the Flink side,
//! `benches/nexmark-flink`, prints the same fields).
//!
//!     cargo bench -p cairn-nexmark --bench nexmark -- <q0..q8|q11|q12> [N] [parallelism] \
//!         [--event-rate R] [-D key=value ...]
//!
//! `events_per_s` is N over the job's wall time (start to end);
//! `cpu_s` is the process's user + system CPU time; `checksum` is the sum
//! of the results' signatures (`cairn_nexmark::signature`), equal to
//! Flink's when both computed the same result.

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::time::Instant;

use cairn::config::parse_startup_args;
use cairn::prelude::*;
use cairn_nexmark::generator::NexmarkConfig;
use cairn_nexmark::queries::{self, BidderCount, QUERIES};
use cairn_nexmark::signature::{Checksum, ChecksumSink, Signature};

fn sign<T: Data + Signature>(stream: DataStream<T>) -> Checksum {
    let (sink, checksum) = ChecksumSink::new();
    stream.sink(sink).uid("sink").name("checksum sink");
    checksum
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`,
/// in clock ticks of 1/100 s, the value on every Linux platform Cairn runs on).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    match (
        f.get(11).and_then(|x| x.parse::<u64>().ok()),
        f.get(12).and_then(|x| x.parse::<u64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => f64::NAN,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let opts = parse_startup_args(args)?;
    let mut user = opts.user_args.clone().into_iter();
    let mut positional = Vec::new();
    let mut event_rate = NexmarkConfig::default().event_rate;
    while let Some(a) = user.next() {
        if a == "--event-rate" {
            event_rate = user.next().ok_or("--event-rate needs a value")?.parse()?;
        } else {
            positional.push(a);
        }
    }
    let query = positional.first().cloned().unwrap_or_else(|| "q0".into());
    if !QUERIES.contains(&query.as_str()) {
        return Err(format!("unknown query '{query}'; pick one of {}", QUERIES.join(", ")).into());
    }
    let n: u64 = positional.get(1).map_or(Ok(10_000_000), |s| s.parse())?;
    let p: u32 = positional.get(2).map_or(Ok(2), |s| s.parse())?;
    let config = NexmarkConfig {
        events: n,
        event_rate,
        ..Default::default()
    };

    let env = StreamEnv::with_startup(opts);
    env.set_parallelism(p)?;
    env.show_progress(std::env::var_os("CAIRN_BENCH_LOG").is_some());
    let events = queries::events(&env, config);
    let s = queries::split(&events);
    let checksum = match query.as_str() {
        "q0" => sign(queries::q0(&s.bids)),
        "q1" => sign(queries::q1(&s.bids)),
        "q2" => sign(queries::q2(&s.bids)),
        "q3" => sign(queries::q3(&s.persons, &s.auctions)),
        "q4" => sign(queries::q4(&s.auctions, &s.bids)),
        "q5" => sign(queries::q5(&s.bids)),
        "q6" => sign(queries::q6(&s.auctions, &s.bids)),
        "q7" => sign(queries::q7(&s.bids)),
        "q8" => sign(queries::q8(&s.persons, &s.auctions)),
        "q11" => sign(queries::q11(&s.bids)),
        _ => {
            let (sink, checksum) = ChecksumSink::signed_by(BidderCount::total_signature);
            queries::q12(&s.bids).sink(sink).uid("sink").name("checksum sink");
            checksum
        }
    };
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let result = env.execute(&format!("nexmark {query}"))?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "engine=cairn query={query} events={n} parallelism={p} event_rate={event_rate} seconds={secs:.3} events_per_s={:.0} \
         cpu_s={cpu:.2} results={} checksum={:016x} checkpoints={} nproc={} load1={}",
        n as f64 / secs,
        checksum.records(),
        checksum.sum(),
        result.checkpoints.len(),
        std::thread::available_parallelism().map_or(0, |x| x.get()),
        load.split_whitespace().next().unwrap_or("?")
    );
    Ok(())
}
