//! Cairn reports through `tracing` and leaves the subscriber to the program:
//! an embedding program (this test) installs its own and receives Cairn's
//! events with their fields (job id, checkpoint id, uid, subtask). Nothing in
//! the library installed a subscriber before it (`set_global_default` works).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cairn::prelude::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured event: level, target, fields (the message under "message").
#[derive(Debug, Clone)]
struct Captured {
    level: tracing::Level,
    target: String,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields,
        });
    }
}

/// Fails on the record with value 3, once.
#[derive(Clone)]
struct FailOnce(Arc<std::sync::atomic::AtomicBool>);

impl ProcessFunction<u64, u64> for FailOnce {
    fn process_element(&mut self, v: u64, ctx: &mut ProcessContext<'_, u64>) -> OpResult {
        if v == 3 && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err("boom on record 3".into());
        }
        ctx.collect(v);
        Ok(())
    }
}

#[test]
fn an_embedding_program_receives_cairn_events_with_their_fields() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .expect("no subscriber was installed before: Cairn never installs one in a library");

    let dir = std::env::temp_dir().join(format!("cairn-logging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let env = StreamEnv::new();
    env.set_config("execution.checkpointing.interval", "10 ms").unwrap();
    env.set_config("execution.checkpointing.dir", &dir.display().to_string())
        .unwrap();
    env.set_config("restart-strategy.type", "fixed-delay").unwrap();
    env.set_config("restart-strategy.fixed-delay.delay", "0 ms").unwrap();
    let (sink, _out) = CollectSink::new();
    env.source(GeneratorSource::new(200_000, 10))
        .uid("events")
        .map(|e: GeneratedEvent| e.index)
        .process(FailOnce(Arc::default()))
        .uid("fail-once")
        .sink(sink)
        .uid("sink");
    let result = env.execute("logging").unwrap();
    assert_eq!(result.restarts, 1);
    let _ = std::fs::remove_dir_all(&dir);

    let events = capture.0.lock().unwrap().clone();
    let job_id = &result.job_id;
    let completed = events
        .iter()
        .find(|e| {
            e.target == "cairn_coordinator::checkpoint"
                && e.fields.get("message").is_some_and(|m| m.contains("completed"))
        })
        .unwrap_or_else(|| panic!("no checkpoint completion event: {events:#?}"));
    assert_eq!(completed.level, tracing::Level::INFO);
    assert_eq!(completed.fields.get("job_id"), Some(job_id), "{completed:?}");
    assert!(completed.fields.contains_key("checkpoint_id"), "{completed:?}");

    let failed = events
        .iter()
        .find(|e| e.fields.get("message").is_some_and(|m| m.contains("a task failed")))
        .unwrap_or_else(|| panic!("no task failure event: {events:#?}"));
    assert_eq!(failed.level, tracing::Level::WARN);
    assert_eq!(
        failed.fields.get("uid").map(String::as_str),
        Some("fail-once"),
        "{failed:?}"
    );
    assert!(failed.fields.contains_key("subtask"), "{failed:?}");
    assert!(failed.fields["message"].contains("boom on record 3"), "{failed:?}");

    let restart = events
        .iter()
        .find(|e| e.fields.get("message").is_some_and(|m| m.contains("restarting")))
        .unwrap_or_else(|| panic!("no restart event: {events:#?}"));
    assert_eq!(restart.fields.get("strategy").map(String::as_str), Some("fixed-delay"));
    assert_eq!(restart.fields.get("code").map(String::as_str), Some("TASK_FAILED"));
}
