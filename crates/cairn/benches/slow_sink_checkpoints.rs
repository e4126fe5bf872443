//! The slow-sink checkpoint benchmark (issue 16), Cairn side; the Flink side
//! is `benches/flink-slow-sink/` and runs the same job with the same keys.
//!
//! An unbounded generator (event `i`: key `i % K`), parallelism 2,
//! `key_by(key)`, a running count per key in `ValueState`, and a sink that
//! takes a fixed time per record (1 ms): the sink's task is the bottleneck
//! and backpressures the keyed edge. Checkpoints every interval; after the
//! run time the job is cancelled and the completed checkpoints' end-to-end
//! durations, state sizes and persisted (in-flight) data are summarised in
//! one line.
//!
//!     cargo bench -p cairn --bench slow_sink_checkpoints -- MODE SECONDS [-D key=value ...]
//!
//! The `-D` keys are Flink's (`execution.checkpointing.unaligned.enabled`,
//! `execution.checkpointing.aligned-checkpoint-timeout`,
//! `taskmanager.network.memory.buffer-debloat.enabled`, ...).

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn::config::{options, parse_startup_args};
use cairn::coordinator::control::{CheckpointStats, SnapshotStatus};
use cairn::operators::Sink;
use cairn::prelude::*;

#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        ctx.collect((e.key, n));
        Ok(())
    }
}

/// A sink that spends a fixed time on every record (an external system that is slow).
#[derive(Clone)]
struct SlowSink {
    delay: Duration,
}

impl Sink<(u64, u64)> for SlowSink {
    fn write_batch(&mut self, batch: Vec<StreamRecord<(u64, u64)>>) -> OpResult {
        for _ in &batch {
            std::thread::sleep(self.delay);
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as i64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` appends `--bench`; ignore it.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let opts = parse_startup_args(args)?;
    let mode = opts.user_args.first().cloned().unwrap_or_else(|| "custom".into());
    let seconds: u64 = opts.user_args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let keys = 1_000;
    let ckpt = std::env::temp_dir().join(format!("cairn-slow-sink-{}-{mode}", std::process::id()));
    let env = StreamEnv::with_startup(opts);
    env.set_parallelism(2)?;
    if !env.config().contains(&options::CHECKPOINTING_INTERVAL) {
        env.set_config("execution.checkpointing.interval", "2s")?;
    }
    env.set_config(
        "execution.checkpointing.dir",
        ckpt.to_str().ok_or("the temporary directory is not UTF-8")?,
    )?;
    env.source(GeneratorSource::new(u64::MAX / 2, keys).splits(2))
        .uid("gen")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Count::default())
        .uid("count")
        .sink(SlowSink {
            delay: Duration::from_millis(1),
        })
        .uid("sink");
    let handle = env.execute_async("slow sink benchmark")?;
    let client = handle.client();
    // The published history holds the newest few: collect as the run goes.
    let mut seen: BTreeMap<u64, CheckpointStats> = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        for s in client.checkpoints().history {
            seen.insert(s.id, s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in client.checkpoints().history {
        seen.insert(s.id, s);
    }
    let sink_id = cairn::state::hash::operator_id_for_uid("sink");
    let sink_records: u64 = client
        .metrics()
        .subtasks
        .iter()
        .filter(|s| s.operator_id == sink_id)
        .map(|s| s.records_in)
        .sum();
    client.cancel()?;
    let _ = handle.wait();
    let _ = std::fs::remove_dir_all(&ckpt);
    let done: Vec<&CheckpointStats> = seen
        .values()
        .filter(|s| s.status == SnapshotStatus::Completed && !s.is_savepoint)
        .collect();
    let failed = seen.values().filter(|s| s.status == SnapshotStatus::Failed).count();
    let sorted = |f: &dyn Fn(&CheckpointStats) -> u64| {
        let mut v: Vec<u64> = done.iter().map(|s| f(s)).collect();
        v.sort_unstable();
        v
    };
    let e2e = sorted(&|s| s.duration_ms);
    let state = sorted(&|s| s.state_size_bytes);
    let persisted = sorted(&|s| s.persisted_data_bytes);
    let alignment = sorted(&|s| s.alignment_duration_ms);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "engine=cairn mode={mode} seconds={seconds} checkpoints={} unaligned={} failed={failed} e2e_ms_p50={} e2e_ms_max={} \
         state_bytes_p50={} persisted_bytes_p50={} persisted_bytes_max={} alignment_ms_max={} e2e_ms_all={:?} \
         sink_records={sink_records} load1={}",
        done.len(),
        done.iter().filter(|s| s.is_unaligned).count(),
        percentile(&e2e, 0.5),
        percentile(&e2e, 1.0),
        percentile(&state, 0.5),
        percentile(&persisted, 0.5),
        percentile(&persisted, 1.0),
        percentile(&alignment, 1.0),
        done.iter().map(|s| s.duration_ms).collect::<Vec<_>>(),
        load.split_whitespace().next().unwrap_or("?")
    );
    Ok(())
}
