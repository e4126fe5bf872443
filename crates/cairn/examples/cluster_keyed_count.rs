//! A keyed job for running on several processes (docs/deployment.md): a
//! generator of `count` events over `keys` keys, a running count and sum per
//! key in keyed state, and an exactly-once file sink writing
//! `key,count,sum` lines. The same binary is the coordinator and the workers:
//!
//!     cluster_keyed_count --mode coordinator -p 4 -D execution.checkpointing.interval=1s \
//!         -D execution.checkpointing.dir=s3://bucket/checkpoints -- /shared/out 1000000 100
//!     cluster_keyed_count --mode worker --coordinator coordinator-host:6123 -- /shared/out 1000000 100
//!
//! Without `--mode` it runs every task in one process. Arguments: output
//! directory, events (default 100000), keys (default 100), events per second
//! per source subtask (default: unlimited), microseconds the running totals
//! spend on each event (default 0: a slow operator, so records queue up in
//! front of it, across hosts too, as under backpressure).

/// The allocator Cairn advises for jobs (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use cairn::prelude::*;

/// Emits `(key, count so far, sum so far)` for every event.
#[derive(Clone, Default)]
struct RunningTotals {
    totals: Option<ValueState<(u64, u64)>>,
    work: std::time::Duration,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64, u64)> for RunningTotals {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        // Queryable: `cairn state get <job> running-totals totals <key>` reads a key's totals live.
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals").queryable("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64, u64)>) -> OpResult {
        if !self.work.is_zero() {
            std::thread::sleep(self.work);
        }
        let totals = self.totals.as_ref().ok_or("totals state not registered")?;
        let (n, sum) = totals.value(ctx)?.unwrap_or((0, 0));
        let next = (n + 1, sum.wrapping_add(e.value % 1000));
        totals.update(ctx, &next)?;
        let key = *ctx.key();
        ctx.collect((key, next.0, next.1));
        Ok(())
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), CairnError> {
    let env = StreamEnv::from_args()?;
    let args = env.user_args();
    let out = args.first().cloned().unwrap_or_else(|| "cluster-output".to_string());
    let count: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let keys: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rate: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    let work_us: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(0);
    env.show_progress(true);
    let mut source = GeneratorSource::new(count, keys).seed(11).splits(12);
    if rate > 0 {
        source = source.rate(rate);
    }
    env.source(source)
        .uid("events")
        .name("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(RunningTotals {
            totals: None,
            work: std::time::Duration::from_micros(work_us),
        })
        .uid("running-totals")
        .name("running totals")
        .sink(FileSink::new(out, |(key, n, sum): &(u64, u64, u64)| {
            format!("{key},{n},{sum}")
        }))
        .uid("output")
        .name("output files");
    env.execute("cluster keyed count")?;
    Ok(())
}
