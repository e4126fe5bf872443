//! The README's main job: counts clicks per user from a deterministic
//! generator, with keyed `ValueState`, and prints the final count of the
//! first users. Runs on embedded defaults and ends by itself.
//!
//!     cargo run --release --example click_counter -- [-p 2] [-D key=value] [events] [users]

/// The allocator Cairn advises for jobs (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use cairn::prelude::*;

/// Counts events per user and emits (user, count) when the input ends, using
/// an event-time timer at the end of time.
#[derive(Clone, Default)]
struct CountPerUser {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64)> for CountPerUser {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _event: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count state not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        if n == 1 {
            // Fires once, when event time ends with the bounded input.
            ctx.register_event_time_timer(i64::MAX)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count state not registered")?;
        let n = count.value(ctx)?.unwrap_or(0);
        let user = *ctx.key();
        ctx.collect((user, n));
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
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5_000_000);
    let users: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    env.show_progress(true);

    let clicks = env
        .source_with_watermarks(
            GeneratorSource::new(events, users).seed(7),
            WatermarkStrategy::for_monotonous_timestamps(),
        )
        .uid("source-id")
        .name("clicks");
    clicks
        .key_by(|e: &GeneratedEvent| e.key)
        .process(CountPerUser::default())
        .uid("mapper-id")
        .name("count per user")
        .filter(|(user, _)| *user < 5)
        .print();
    let result = env.execute("click counter")?;
    eprintln!(
        "click counter: {} events from {users} users in {:.2}s",
        result.source_records,
        result.elapsed.as_secs_f64()
    );
    Ok(())
}
