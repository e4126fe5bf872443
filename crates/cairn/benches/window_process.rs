//! Sliding event-time windows with a `ProcessWindowFunction` (the window
//! keeps every element as list state): event `i` of `0..N` has key `i % K`;
//! the source reads two contiguous halves of `0..N` as two splits, and event
//! `i` of the half starting at `h` has event time `i - h` ms, so both splits
//! move through event time together and windows fire as the job goes (with
//! time `i` the second half would wait for the first and pile up as state).
//! Windows of 10 s every 2 s, so each event goes into five windows; the
//! function emits each window's element count.
//!
//!     cargo bench -p cairn --bench window_process -- [N] [K] [parallelism] [-D key=value ...]
//!
//! Prints one summary line.

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::time::{Duration, Instant};

use cairn::config::parse_startup_args;
use cairn::prelude::*;

#[derive(Clone)]
struct CountElements;

impl ProcessWindowFunction<u64, GeneratedEvent, (u64, i64, u64)> for CountElements {
    fn process(
        &mut self,
        key: &u64,
        window: &TimeWindow,
        elements: Vec<GeneratedEvent>,
        out: &mut WindowCollector<'_, (u64, i64, u64)>,
    ) -> OpResult {
        out.collect((*key, window.start, elements.len() as u64));
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` appends `--bench`; ignore it.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let opts = parse_startup_args(args)?;
    let pos: Vec<u64> = opts.user_args.iter().filter_map(|a| a.parse().ok()).collect();
    let n = pos.first().copied().unwrap_or(10_000_000);
    let k = pos.get(1).copied().unwrap_or(1_000);
    let p = pos.get(2).copied().unwrap_or(2) as u32;
    let backend = opts.config.get(&cairn::config::options::STATE_BACKEND_TYPE).as_str();

    // The generator's two splits are `0..n/2` and `n/2..n`.
    let half = n / 2;
    let env = StreamEnv::with_startup(opts);
    env.set_parallelism(p)?;
    env.source_with_watermarks(
        GeneratorSource::new(n, k).splits(2),
        WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(move |e: &GeneratedEvent, _| {
            (if e.index >= half { e.index - half } else { e.index }) as i64
        }),
    )
    .uid("gen")
    .key_by(|e: &GeneratedEvent| e.key)
    .window(SlidingEventTimeWindows::of(
        Duration::from_secs(10),
        Duration::from_secs(2),
    ))
    .process(CountElements)
    .uid("windows")
    .sink(DiscardSink)
    .uid("sink");
    let start = Instant::now();
    env.execute("process window benchmark")?;
    let secs = start.elapsed().as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench=window_process backend={backend} events={n} keys={k} parallelism={p} seconds={secs:.3} events_per_s={:.0} load1={}",
        n as f64 / secs,
        load.split_whitespace().next().unwrap_or("?")
    );
    Ok(())
}
