//! Output batches through a `key_by` (`execution.buffer-timeout.*`): a
//! partly filled batch leaves after the buffer timeout (default and zero),
//! never waits forever behind a source that has nothing more; with the
//! timeout disabled it waits for a full batch, a checkpoint barrier or the
//! end of input, and then arrives whole: nothing is lost or counted twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::coordinator::control::{CheckpointRequestKind, JobClient, JobStatus, OperationStatus};
use cairn::prelude::*;

const DEADLINE: Duration = Duration::from_secs(60);
const RECORDS: u64 = 10;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-buffer-timeout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Emits [`RECORDS`] records (far fewer than a batch) from subtask 0, then
/// has no data until `release` is set; `emitted` once they were handed on.
#[derive(Clone)]
struct TrickleSource {
    next: u64,
    mine: bool,
    emitted: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl Source<u64> for TrickleSource {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.mine = ctx.info.subtask == 0;
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<u64>>, _max: usize) -> OpResult<SourceStatus> {
        if self.mine && self.next < RECORDS {
            out.extend((self.next..RECORDS).map(StreamRecord::new));
            self.next = RECORDS;
            return Ok(SourceStatus::More);
        }
        if self.mine {
            self.emitted.store(true, Ordering::SeqCst);
        }
        Ok(if self.release.load(Ordering::SeqCst) {
            SourceStatus::Finished
        } else {
            SourceStatus::Pending(Duration::from_millis(2))
        })
    }

    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

/// Counts the records it sees and keeps a per-key count in state.
#[derive(Clone)]
struct Count {
    seen: Arc<AtomicUsize>,
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, u64, (u64, u64)> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        self.seen.fetch_add(1, Ordering::SeqCst);
        ctx.collect((v, n));
        Ok(())
    }
}

struct Running {
    handle: JobHandle,
    client: JobClient,
    seen: Arc<AtomicUsize>,
    emitted: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    collected: Collected<(u64, u64)>,
}

/// Source (parallelism 2) -> key_by -> count (parallelism 2) -> collect,
/// with `config` set on the environment.
fn start(name: &str, config: &[(&str, &str)]) -> Running {
    let env = StreamEnv::new();
    env.set_parallelism(2).unwrap();
    for (k, v) in config {
        env.set_config(k, v).unwrap();
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let emitted = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (sink, collected) = CollectSink::new();
    env.source(TrickleSource {
        next: 0,
        mine: false,
        emitted: emitted.clone(),
        release: release.clone(),
    })
    .uid("trickle")
    .key_by(|v: &u64| *v)
    .process(Count {
        seen: seen.clone(),
        count: None,
    })
    .uid("count")
    .sink(sink)
    .uid("collect");
    let handle = env.execute_async(name).unwrap();
    let client = handle.client();
    wait_until("the job to run", || client.info().status == JobStatus::Running);
    Running {
        handle,
        client,
        seen,
        emitted,
        release,
        collected,
    }
}

impl Running {
    /// Let the source end and check that every record arrived exactly once.
    fn finish(self) {
        self.release.store(true, Ordering::SeqCst);
        self.handle.wait().unwrap();
        let mut got = self.collected.values();
        got.sort();
        let want: Vec<(u64, u64)> = (0..RECORDS).map(|v| (v, 1)).collect();
        assert_eq!(got, want, "every record once, each key counted once");
    }
}

#[test]
fn a_partly_filled_batch_leaves_after_the_buffer_timeout_while_the_source_has_nothing_more() {
    for interval in [None, Some("0 ms"), Some("20 ms")] {
        let config: Vec<(&str, &str)> = interval
            .map(|i| vec![("execution.buffer-timeout.interval", i)])
            .unwrap_or_default();
        let job = start("buffer-timeout-on", &config);
        // The source keeps running with nothing more to send: only the
        // timeout can send the 10 records on.
        wait_until(&format!("records processed with interval {interval:?}"), || {
            job.seen.load(Ordering::SeqCst) == RECORDS as usize
        });
        assert!(!job.release.load(Ordering::SeqCst));
        job.finish();
    }
}

#[test]
fn with_the_buffer_timeout_disabled_a_partial_batch_waits_for_a_barrier() {
    let dir = temp_dir("disabled");
    let dir_s = dir.to_str().unwrap().to_string();
    let job = start(
        "buffer-timeout-off",
        &[
            ("execution.buffer-timeout.enabled", "false"),
            ("execution.checkpointing.dir", &dir_s),
        ],
    );
    wait_until("the source to emit", || job.emitted.load(Ordering::SeqCst));
    // Held in the source's output: no timeout sends it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        job.seen.load(Ordering::SeqCst),
        0,
        "a partial batch left without a timeout"
    );
    // A checkpoint barrier sends what waits before it, so the checkpoint
    // holds the records' state.
    let op = job
        .client
        .trigger_checkpoint(CheckpointRequestKind::Configured, None)
        .unwrap();
    match job.client.wait_operation(&op, DEADLINE) {
        Some(OperationStatus::Completed { .. }) => {}
        other => panic!("checkpoint did not complete: {other:?}"),
    }
    wait_until("the records after the barrier", || {
        job.seen.load(Ordering::SeqCst) == RECORDS as usize
    });
    job.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_the_buffer_timeout_disabled_the_end_of_input_sends_what_waits() {
    let job = start(
        "buffer-timeout-off-end",
        &[("execution.buffer-timeout.enabled", "false")],
    );
    wait_until("the source to emit", || job.emitted.load(Ordering::SeqCst));
    assert_eq!(
        job.seen.load(Ordering::SeqCst),
        0,
        "a partial batch left without a timeout"
    );
    job.finish();
}

#[test]
fn a_bad_buffer_timeout_is_refused_naming_the_key() {
    let env = StreamEnv::new();
    let err = env
        .set_config("execution.buffer-timeout.interval", "soon")
        .unwrap_err()
        .to_string();
    assert!(err.contains("execution.buffer-timeout.interval"), "{err}");
    let err = env
        .set_config("execution.buffer-timeout.enabled", "sometimes")
        .unwrap_err()
        .to_string();
    assert!(err.contains("execution.buffer-timeout.enabled"), "{err}");
}
