//! Helpers shared by the engine-core integration tests: small test sources
//! whose pacing is driven by the job itself (so tests never depend on how fast
//! the machine is), sorting helpers and error-message assertions.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::prelude::*;
pub use cairn::runtime::time::ManualClock;

/// How long a gated source waits for its gate before giving up; only reached
/// when the behaviour under test is broken (the test then fails on its
/// assertions instead of hanging).
pub const GATE_DEADLINE: Duration = Duration::from_secs(20);

/// An environment with default configuration and the given parallelism.
pub fn env_with_parallelism(p: u32) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(p).expect("valid parallelism");
    env
}

/// The values sorted, to compare multisets.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Assert that `text` contains every piece, showing the whole text otherwise.
pub fn assert_contains_all(text: &str, pieces: &[&str]) {
    for p in pieces {
        assert!(text.contains(p), "expected the message to contain {p:?}, got:\n{text}");
    }
}

/// A counter the job bumps after handling a record; [`PacedSource`] waits on
/// it so the next record is processed strictly after the previous one.
pub type Ack = Arc<AtomicUsize>;

/// Emits `items` from subtask 0 only, one record per poll, in order.
///
/// - `gap`: after the previous record was acknowledged (see `ack`), wait at
///   least this long (wall clock) before emitting the next one.
/// - `clock_step`: before emitting each record after the first, move the
///   job's [`ManualClock`] forward by this many ms. With `ack`, record `i` is
///   then processed at exactly `start + i * step` of processing time, which
///   is what TTL and processing-time tests need (no wall-clock dependence).
/// - `ack`: when set, record `i + 1` is emitted only once the job has bumped
///   the counter past `i` (so two records never share a batch or a clock read).
/// - `hold`: when set, after the last item the source stays alive (no data)
///   until the flag is true or [`GATE_DEADLINE`] passes.
/// - `other_subtasks_wait_for`: when set, subtasks other than 0 emit nothing
///   and stay alive until this flag is true (or the deadline passes); used to
///   create an idle source subtask.
#[derive(Clone)]
pub struct PacedSource<T> {
    items: Arc<Vec<(T, i64)>>,
    gap: Duration,
    ack: Option<Ack>,
    hold: Option<Arc<AtomicBool>>,
    other_subtasks_wait_for: Option<Arc<AtomicBool>>,
    clock_step: Option<(ManualClock, i64)>,
    /// Set by subtask 0 when it finished emitting and holding.
    done: Arc<AtomicBool>,
    next: usize,
    mine: bool,
    acked_at: Option<(usize, Instant)>,
    started: Option<Instant>,
}

impl<T: Clone + Send + Sync + 'static> PacedSource<T> {
    /// Records without timestamps.
    pub fn new(items: Vec<T>) -> Self {
        Self::with_timestamps(items.into_iter().map(|v| (v, i64::MIN)).collect())
    }

    /// Records with the given event timestamps.
    pub fn with_timestamps(items: Vec<(T, i64)>) -> Self {
        PacedSource {
            items: Arc::new(items),
            gap: Duration::ZERO,
            ack: None,
            hold: None,
            other_subtasks_wait_for: None,
            clock_step: None,
            done: Arc::new(AtomicBool::new(false)),
            next: 0,
            mine: false,
            acked_at: None,
            started: None,
        }
    }

    pub fn gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }

    /// Advance `clock` by `step_ms` before each record after the first.
    pub fn clock_step(mut self, clock: ManualClock, step_ms: i64) -> Self {
        self.clock_step = Some((clock, step_ms));
        self
    }

    pub fn ack(mut self, ack: Ack) -> Self {
        self.ack = Some(ack);
        self
    }

    pub fn hold_until(mut self, flag: Arc<AtomicBool>) -> Self {
        self.hold = Some(flag);
        self
    }

    /// Other subtasks stay alive (idle) until subtask 0 is done.
    pub fn idle_other_subtasks(mut self) -> Self {
        self.other_subtasks_wait_for = Some(self.done.clone());
        self
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for PacedSource<T> {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.mine = ctx.info.subtask == 0;
        self.started = Some(Instant::now());
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<T>>, _max: usize) -> OpResult<SourceStatus> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let wait = SourceStatus::Pending(Duration::from_millis(1));
        if !self.mine {
            return Ok(match &self.other_subtasks_wait_for {
                Some(flag) if !flag.load(Ordering::SeqCst) && started.elapsed() < GATE_DEADLINE => wait,
                _ => SourceStatus::Finished,
            });
        }
        if self.next == self.items.len() {
            let held = match &self.hold {
                Some(flag) => !flag.load(Ordering::SeqCst) && started.elapsed() < GATE_DEADLINE,
                None => false,
            };
            if held {
                return Ok(wait);
            }
            self.done.store(true, Ordering::SeqCst);
            return Ok(SourceStatus::Finished);
        }
        if self.next > 0 {
            if let Some(ack) = &self.ack {
                if ack.load(Ordering::SeqCst) < self.next {
                    return Ok(wait);
                }
            }
            let since = match self.acked_at {
                Some((i, t)) if i == self.next => t,
                _ => {
                    let now = Instant::now();
                    self.acked_at = Some((self.next, now));
                    now
                }
            };
            if since.elapsed() < self.gap {
                return Ok(SourceStatus::Pending(self.gap - since.elapsed()));
            }
            if let Some((clock, step)) = &self.clock_step {
                clock.advance(*step);
            }
        }
        let (value, ts) = self.items[self.next].clone();
        out.push(StreamRecord { value, timestamp: ts });
        self.next += 1;
        Ok(SourceStatus::More)
    }

    fn snapshot_state(&mut self, _ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
}

/// Run `build(env)` then `env.execute` on a separate thread and wait for it
/// at most `limit`; a job that does not return in time is reported as a hang
/// (the limit is a hang detector, far above the expected run time).
pub fn execute_with_hang_detector<R: Send + 'static>(limit: Duration, job: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(job());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the job did not return within {limit:?}: it hangs"))
}

/// Polls `f` until it holds; panics naming `what` after `deadline` (a hang
/// detector far above the expected wait, never a timing assertion).
#[track_caller]
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The keyed state backends a job-level test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Heap,
    RocksDb,
}

impl Backend {
    /// Configure `env` for this backend (`state.backend.type`).
    pub fn apply(self, env: &StreamEnv) {
        if self == Backend::RocksDb {
            env.set_config("state.backend.type", "rocksdb").expect("valid backend");
        }
    }

    /// The `state.backend.type` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Heap => "hashmap",
            Backend::RocksDb => "rocksdb",
        }
    }
}

/// Runs each named `fn(Backend)` as one test per state backend:
/// `<name>::heap` and, with the `rocksdb` feature, `<name>::rocksdb`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn heap() {
                    super::$name($crate::common::Backend::Heap)
                }
                #[cfg(feature = "rocksdb")]
                #[test]
                fn rocksdb() {
                    super::$name($crate::common::Backend::RocksDb)
                }
            }
        )+
    };
}
