//! A long-running job to operate with the `cairn` CLI (and the CLI's
//! end-to-end test): a rate-limited generator, a running count per key in
//! keyed state, and an exactly-once file sink writing `key,count` lines.
//! It runs until it is stopped or cancelled.
//!
//!     cairn run -p 2 -D execution.checkpointing.interval=1s \
//!         -D execution.checkpointing.dir=/tmp/cairn/checkpoints \
//!         -D execution.checkpointing.savepoint-dir=/tmp/cairn/savepoints \
//!         -- target/debug/examples/cli_demo_job /tmp/cairn/out [events/s per subtask] [keys]
//!
//! After a restore from a savepoint taken by `cairn stop`, every key's counts
//! continue exactly where the committed output of the previous run ended.
//! While it runs, `cairn state get <jobId> running-count count 3` prints key
//! 3's current count.

use cairn::prelude::*;

/// Emits `(key, count so far)` for every event.
#[derive(Clone, Default)]
struct RunningCount {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for RunningCount {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        // Queryable: `cairn state get <jobId> running-count count <key>` reads it live.
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _event: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count state not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        let key = *ctx.key();
        ctx.collect((key, n));
        Ok(())
    }
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(CairnError::Job(cairn::runtime::JobError::Cancelled)) => eprintln!("cli demo: the job was cancelled"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), CairnError> {
    let env = StreamEnv::from_args()?;
    let args = env.user_args();
    let out = args.first().cloned().unwrap_or_else(|| "cli-demo-output".to_string());
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let keys: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    env.show_progress(true);

    env.source(GeneratorSource::new(1 << 40, keys).seed(3).rate(rate).splits(4))
        .uid("events")
        .name("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(RunningCount::default())
        .uid("running-count")
        .name("running count")
        .sink(FileSink::new(out, |(key, n): &(u64, u64)| format!("{key},{n}")))
        .uid("output")
        .name("output files");
    env.execute("cli demo")?;
    Ok(())
}
