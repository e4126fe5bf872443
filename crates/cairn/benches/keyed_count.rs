//! The keyed counting benchmark, the same workload as the peers in
//! `../shared/peers/` (Flink, Bytewax): event `i` of `0..N` has key `i % K`
//! and value `i`; `key_by(key)`; per key a `ValueState<u64>` count (+1) and,
//! unless `--no-sum`, a `ValueState<u64>` sum (+value); every event emits
//! `(key, count)` to a discarding sink.
//!
//!     cargo bench -p cairn --bench keyed_count -- [N] [K] [parallelism] [--no-sum] [-D key=value ...]
//!     cargo bench -p cairn --features rocksdb --bench keyed_count -- -D state.backend.type=rocksdb ...
//!
//! Prints one summary line in the peers' format.

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::time::Instant;

use cairn::config::parse_startup_args;
use cairn::prelude::*;

#[derive(Clone, Default)]
struct CountAndSum {
    with_sum: bool,
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for CountAndSum {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        if self.with_sum {
            self.sum = Some(ctx.value_state(ValueStateDescriptor::new("sum"))?);
        }
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        if let Some(sum) = &self.sum {
            let s = sum.value(ctx)?.unwrap_or(0).wrapping_add(e.index);
            sum.update(ctx, &s)?;
        }
        ctx.collect((e.key, n));
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` appends `--bench`; ignore it.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let with_sum = !args.iter().any(|a| a == "--no-sum");
    let opts = parse_startup_args(args.into_iter().filter(|a| a != "--no-sum"))?;
    let pos: Vec<u64> = opts.user_args.iter().filter_map(|a| a.parse().ok()).collect();
    let n = pos.first().copied().unwrap_or(20_000_000);
    let k = pos.get(1).copied().unwrap_or(100_000);
    let p = pos.get(2).copied().unwrap_or(2) as u32;

    let backend = opts.config.get(&cairn::config::options::STATE_BACKEND_TYPE).as_str();
    let incremental = opts.config.get(&cairn::config::options::CHECKPOINTING_INCREMENTAL);
    let env = StreamEnv::with_startup(opts);
    env.set_parallelism(p)?;
    // Progress and checkpoint statistics on stderr.
    env.show_progress(std::env::var_os("CAIRN_BENCH_LOG").is_some());
    env.source(GeneratorSource::new(n, k).splits(2))
        .uid("gen")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(CountAndSum {
            with_sum,
            ..Default::default()
        })
        .uid("counter")
        .sink(DiscardSink)
        .uid("sink");
    let start = Instant::now();
    let result = env.execute("keyed count benchmark")?;
    let secs = start.elapsed().as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut sync: Vec<u64> = result
        .checkpoints
        .iter()
        .filter(|c| c.status == cairn::coordinator::control::SnapshotStatus::Completed)
        .map(|c| c.sync_duration_ms)
        .collect();
    sync.sort_unstable();
    let checkpoints = match (sync.first(), sync.get(sync.len() / 2), sync.last()) {
        (Some(_), Some(med), Some(max)) => format!("{} sync_ms_median={med} sync_ms_max={max}", sync.len()),
        _ => "0".to_string(),
    };
    // Peak resident memory of the whole process (VmHWM), MiB.
    let peak_rss_mib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    println!(
        "peer=cairn backend={backend} incremental={incremental} events={n} keys={k} parallelism={p} sum={with_sum} seconds={secs:.3} events_per_s={:.0} source_records={} checkpoints={} peak_rss_mib={peak_rss_mib} nproc={} load1={}",
        n as f64 / secs,
        result.source_records,
        checkpoints,
        std::thread::available_parallelism().map_or(0, |x| x.get()),
        load.split_whitespace().next().unwrap_or("?")
    );
    Ok(())
}
