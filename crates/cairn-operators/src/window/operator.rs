//! The window operator: assigns each record of a keyed stream to windows,
//! keeps every window's contents in keyed state under the window's namespace,
//! and fires windows with timers (event time: at the window's last timestamp
//! when the watermark passes it; processing time: at that wall-clock time).
//!
//! Session windows keep, per key, a map from each active window to the window
//! whose namespace holds its contents; merging windows folds their contents
//! into one namespace and moves the timers to the merged window. Timers always
//! use the actual window as namespace, contents the state window.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use cairn_state::{codec, MapState, MapStateDescriptor};

use super::{TimeWindow, WindowAssigner, WindowCollector, WindowContents, WindowSettings, MERGING_WINDOWS_STATE};
use crate::collector::SidePorts;
use crate::keyed::{Key, KeyFn};
use crate::keyed_core::KeyedCore;
use crate::timers::{TimeDomain, Timer};
use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{downcast_batch, Emitter, OpenContext, OperatorLogic, OperatorSnapshot};
use cairn_runtime::record::{AnyBatch, BatchKeys, MAX_WATERMARK, NO_TIMESTAMP};
use cairn_state::SnapshotRequest;

/// Runs windows of assigner `A` whose contents are kept by `C`.
pub struct WindowOperator<K, T, O, A, C> {
    assigner: A,
    key_fn: KeyFn<K, T>,
    settings: WindowSettings<T>,
    side_ports: SidePorts,
    pending: Option<C>,
    run: Option<Running<K, T, O, C>>,
    windows: Vec<TimeWindow>,
}

/// Everything the operator holds once open.
struct Running<K, T, O, C> {
    core: KeyedCore<O>,
    contents: C,
    /// Active session windows per key (only for merging assigners).
    merging: Option<MapState<TimeWindow, TimeWindow>>,
    event_time: bool,
    lateness: i64,
    _t: PhantomData<fn(K, T)>,
}

impl<K, T, O, A, C> WindowOperator<K, T, O, A, C> {
    pub fn new(
        assigner: A,
        contents: C,
        key_fn: KeyFn<K, T>,
        settings: WindowSettings<T>,
        side_ports: SidePorts,
    ) -> Self {
        WindowOperator {
            assigner,
            key_fn,
            settings,
            side_ports,
            pending: Some(contents),
            run: None,
            windows: Vec::with_capacity(4),
        }
    }
}

impl<K, T, O, A, C> WindowOperator<K, T, O, A, C>
where
    K: Key,
    T: Clone + Send + 'static,
    O: Send + 'static,
    A: WindowAssigner,
    C: WindowContents<K, T, O>,
{
    /// Assign each record of a batch to its windows, with the keys its
    /// sender computed when it came over a key-group edge.
    fn run_batch(&mut self, batch: AnyBatch, keys: Option<&BatchKeys>, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("window operator not opened")?;
        let batch = downcast_batch::<T>(batch, &run.core.info.operator_name)?;
        let keys = keys.filter(|k| k.len() == batch.len());
        let now = run.core.info.processing_time();
        run.core.state.set_processing_time(now.max(0) as u64);
        for (i, rec) in batch.into_iter().enumerate() {
            if run.event_time && rec.timestamp == NO_TIMESTAMP {
                return Err(format!(
                    "window operator '{}' got a record without an event timestamp; event-time windows need timestamps: \
                     read the source with env.source_with_watermarks(.., WatermarkStrategy::..with_timestamp_assigner(..)) \
                     or use a processing-time window assigner",
                    run.core.info.operator_name
                )
                .into());
            }
            let key = (self.key_fn)(&rec.value);
            match keys {
                Some(keys) => {
                    let (bytes, key_group) = keys.get(i);
                    run.core.set_carried_key(&key, bytes, key_group)?;
                }
                None => run.core.set_key(&key)?,
            }
            self.windows.clear();
            self.assigner.assign_windows(rec.timestamp, now, &mut self.windows);
            let rejected = if run.merging.is_some() {
                let n = self.windows.len();
                let mut value = Some(rec.value);
                let mut accepted = false;
                for i in 0..n {
                    let Some(v) = value.take() else { break };
                    let give = if i + 1 < n {
                        value = Some(v.clone());
                        v
                    } else {
                        v
                    };
                    match run.add_merging(&key, give, self.windows[i])? {
                        Some(back) if i + 1 == n => value = Some(back),
                        Some(_) => {}
                        None => accepted = true,
                    }
                }
                // Late only when no window took it.
                if accepted {
                    None
                } else {
                    value
                }
            } else {
                self.windows.retain(|w| !run.is_late(w));
                if self.windows.is_empty() {
                    Some(rec.value)
                } else {
                    run.add_to_windows(&key, rec.value, &self.windows)?;
                    None
                }
            };
            if let Some(late) = rejected {
                match &self.settings.late_tag {
                    Some(tag) => run.core.out.side(tag, late, rec.timestamp),
                    None => {
                        self.settings.late_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        run.core.out.flush(out);
        Ok(())
    }
}

impl<K, T, O, C> Running<K, T, O, C>
where
    K: Key,
    T: Send + 'static,
    O: Send + 'static,
    C: WindowContents<K, T, O>,
{
    /// When a window's contents and timers are dropped.
    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        if self.event_time {
            w.max_timestamp().saturating_add(self.lateness)
        } else {
            w.max_timestamp()
        }
    }

    /// A window past its cleanup time takes no more records.
    fn is_late(&self, w: &TimeWindow) -> bool {
        self.event_time && self.cleanup_time(w) <= self.core.watermark
    }

    fn emit(&mut self, key: &K, w: &TimeWindow, state_ns: &[u8]) -> OpResult {
        self.core.state.set_namespace(state_ns);
        let mut out = WindowCollector {
            out: &mut self.core.out,
            timestamp: w.max_timestamp(),
            watermark: self.core.watermark,
            processing_time: self.core.info.processing_time(),
        };
        self.contents.emit(&mut self.core.state, key, w, &mut out)
    }

    /// A record was added to `w`: fire at once if event time already passed
    /// the window (a late record within the allowed lateness), else make sure
    /// the window's timers are set. `timers_set`: the window had contents
    /// before, so its first record registered them (a window's timers go
    /// only with its contents, in `clear_window`), and registering again
    /// would only find them.
    fn after_add(&mut self, key: &K, w: &TimeWindow, state_ns: &[u8], timers_set: bool) -> OpResult {
        let ns = w.to_namespace();
        let max_ts = w.max_timestamp();
        if self.event_time {
            let cleanup = self.cleanup_time(w);
            if cleanup != max_ts && !timers_set {
                self.core
                    .timers
                    .register(&mut self.core.state, TimeDomain::EventTime, cleanup, &ns)?;
            }
            if max_ts <= self.core.watermark {
                self.emit(key, w, state_ns)?;
            } else if !timers_set {
                self.core
                    .timers
                    .register(&mut self.core.state, TimeDomain::EventTime, max_ts, &ns)?;
            }
        } else if !timers_set {
            self.core
                .timers
                .register(&mut self.core.state, TimeDomain::ProcessingTime, max_ts, &ns)?;
        }
        Ok(())
    }

    fn delete_timers(&mut self, w: &TimeWindow) -> OpResult {
        let ns = w.to_namespace();
        if self.event_time {
            let cleanup = self.cleanup_time(w);
            self.core
                .timers
                .delete(&mut self.core.state, TimeDomain::EventTime, w.max_timestamp(), &ns)?;
            if cleanup != w.max_timestamp() {
                self.core
                    .timers
                    .delete(&mut self.core.state, TimeDomain::EventTime, cleanup, &ns)?;
            }
        } else {
            self.core
                .timers
                .delete(&mut self.core.state, TimeDomain::ProcessingTime, w.max_timestamp(), &ns)?;
        }
        Ok(())
    }

    /// Drop a window: contents, session bookkeeping and pending timers.
    fn clear_window(&mut self, w: &TimeWindow, state_ns: &[u8]) -> OpResult {
        self.core.state.set_namespace(state_ns);
        self.contents.clear(&mut self.core.state)?;
        if let Some(map) = self.merging.clone() {
            self.core.state.set_namespace(&[]);
            map.remove(&mut self.core.state, w)?;
        }
        self.delete_timers(w)
    }

    /// Add a record to non-merging windows (none of them late).
    fn add_to_windows(&mut self, key: &K, value: T, windows: &[TimeWindow]) -> OpResult
    where
        T: Clone,
    {
        for w in windows {
            let ns = w.to_namespace();
            self.core.state.set_namespace(&ns);
            let timers_set = self.contents.add(&mut self.core.state, &value)?;
            self.after_add(key, w, &ns, timers_set)?;
        }
        Ok(())
    }

    /// Add a record to session window `w`, merging it with the key's active
    /// windows it touches. Gives the record back when the merged window is
    /// already past its allowed lateness.
    fn add_merging(&mut self, key: &K, value: T, w: TimeWindow) -> OpResult<Option<T>> {
        let map = self
            .merging
            .clone()
            .ok_or("session windows without their merging state; this is a Cairn bug")?;
        self.core.state.set_namespace(&[]);
        let mut rest = map.entries(&mut self.core.state)?;
        let mut merged: Vec<(TimeWindow, TimeWindow)> = Vec::new();
        let mut result = w;
        loop {
            let before = merged.len();
            let mut i = 0;
            while i < rest.len() {
                if rest[i].0.intersects(&result) {
                    let e = rest.swap_remove(i);
                    result = result.cover(&e.0);
                    merged.push(e);
                } else {
                    i += 1;
                }
            }
            if merged.len() == before {
                break;
            }
        }
        if self.is_late(&result) {
            return Ok(Some(value));
        }
        merged.sort();
        let state_window = match merged.as_slice() {
            [] => {
                map.put(&mut self.core.state, &result, &result)?;
                result
            }
            [(active, stored)] if *active == result => *stored,
            _ => {
                let target = merged[0].1;
                let target_ns = target.to_namespace();
                for (active, stored) in &merged {
                    self.core.state.set_namespace(&[]);
                    map.remove(&mut self.core.state, active)?;
                    self.delete_timers(active)?;
                    if *stored != target {
                        self.contents
                            .merge(&mut self.core.state, &stored.to_namespace(), &target_ns)?;
                    }
                }
                self.core.state.set_namespace(&[]);
                map.put(&mut self.core.state, &result, &target)?;
                target
            }
        };
        let state_ns = state_window.to_namespace();
        self.core.state.set_namespace(&state_ns);
        // The merged window may be new while its contents are not.
        self.contents.add(&mut self.core.state, &value)?;
        self.after_add(key, &result, &state_ns, false)?;
        Ok(None)
    }

    /// A window timer fired: emit the window when it is due, drop it at its
    /// cleanup time.
    fn on_timer(&mut self, domain: TimeDomain, t: Timer) -> OpResult {
        let w = TimeWindow::from_namespace(&t.namespace).ok_or_else(|| {
            format!(
                "window operator '{}' found a timer whose namespace is not a window ({} bytes); the state is corrupt",
                self.core.info.operator_name,
                t.namespace.len()
            )
        })?;
        let key: K = codec::decode_key("window timer key", &t.key)?;
        let state_ns = match self.merging.clone() {
            Some(map) => {
                self.core.state.set_namespace(&[]);
                match map.get(&mut self.core.state, &w)? {
                    Some(stored) => stored.to_namespace(),
                    // The window was merged into another; its timer is stale.
                    None => return Ok(()),
                }
            }
            None => w.to_namespace(),
        };
        let due = match domain {
            TimeDomain::EventTime => t.timestamp == w.max_timestamp(),
            TimeDomain::ProcessingTime => true,
        };
        if due {
            self.emit(&key, &w, &state_ns)?;
        }
        if t.timestamp >= self.cleanup_time(&w) {
            self.clear_window(&w, &state_ns)?;
        }
        Ok(())
    }

    fn fire(&mut self, domain: TimeDomain, time: i64) -> OpResult {
        self.core.begin_batch();
        while let Some(t) = self.core.pop_due(domain, time)? {
            self.on_timer(domain, t)?;
        }
        Ok(())
    }
}

impl<K, T, O, A, C> OperatorLogic for WindowOperator<K, T, O, A, C>
where
    K: Key,
    T: Clone + Send + 'static,
    O: Send + 'static,
    A: WindowAssigner,
    C: WindowContents<K, T, O>,
{
    fn open(&mut self, ctx: OpenContext) -> OpResult {
        let name = ctx.info.operator_name.clone();
        self.assigner
            .validate()
            .map_err(|e| format!("window operator '{name}': {e}"))?;
        if self.settings.allowed_lateness_ms < 0 {
            return Err(format!(
                "window operator '{name}': allowed lateness must not be negative (got {} ms)",
                self.settings.allowed_lateness_ms
            )
            .into());
        }
        let mut core = KeyedCore::open(ctx, &self.side_ports, |name| {
            format!("window operator '{name}' runs on a stream that is not keyed; use key_by before window")
        })?;
        let state = &mut core.state;
        let mut contents = self
            .pending
            .take()
            .ok_or_else(|| format!("window operator '{name}' was opened twice"))?;
        contents.open(state)?;
        let merging = if self.assigner.is_merging() {
            Some(state.map_state(MapStateDescriptor::new(MERGING_WINDOWS_STATE))?)
        } else {
            None
        };
        let event_time = self.assigner.is_event_time();
        self.run = Some(Running {
            core,
            contents,
            merging,
            event_time,
            lateness: if event_time {
                self.settings.allowed_lateness_ms
            } else {
                0
            },
            _t: PhantomData,
        });
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: AnyBatch, out: &mut Emitter) -> OpResult {
        self.run_batch(batch, None, out)
    }

    fn process_keyed_batch(&mut self, _input: usize, batch: AnyBatch, keys: &BatchKeys, out: &mut Emitter) -> OpResult {
        self.run_batch(batch, Some(keys), out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("window operator not opened")?;
        run.core.watermark = run.core.watermark.max(watermark);
        run.fire(TimeDomain::EventTime, watermark)?;
        run.core.out.flush(out);
        Ok(())
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("window operator not opened")?;
        // Fire strictly after a window's last millisecond: a record arriving
        // in that millisecond still belongs to the window, so firing at it
        // would split the window's result in two.
        run.fire(TimeDomain::ProcessingTime, now_ms.saturating_sub(1))?;
        run.core.out.flush(out);
        Ok(())
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.run
            .as_ref()
            .and_then(|r| r.core.next_processing_timer())
            .map(|t| t.saturating_add(1))
    }

    fn end_input(&mut self, out: &mut Emitter) -> OpResult {
        let run = self.run.as_mut().ok_or("window operator not opened")?;
        // Bounded input ended (event time reached its end): processing-time
        // windows still open fire now, as in Flink's batch-style end of input.
        // A stop without drain never advances event time, so nothing fires.
        if run.core.watermark == MAX_WATERMARK {
            run.fire(TimeDomain::ProcessingTime, i64::MAX)?;
            run.core.out.flush(out);
        }
        Ok(())
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        let run = self.run.as_mut().ok_or("window operator not opened")?;
        run.core.snapshot(request)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        match self.run.as_mut() {
            Some(run) => run.core.notify_checkpoint_complete(checkpoint_id),
            None => Ok(()),
        }
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> OpResult {
        match self.run.as_mut() {
            Some(run) => run.core.notify_checkpoint_aborted(checkpoint_id),
            None => Ok(()),
        }
    }

    fn keyed_state(&mut self) -> Option<&mut cairn_state::KeyedStateAccess> {
        self.run.as_mut().map(|r| &mut r.core.state)
    }
}

#[cfg(test)]
mod tests {
    //! Rescaling: a window operator snapshotted mid-stream at parallelism 1
    //! and restored at parallelism 2 (key groups split) must produce exactly
    //! what an uninterrupted run produces: contents, session bookkeeping and
    //! timers all travel with their key groups.

    use std::sync::Arc;
    use std::time::Duration;

    use cairn_config::Configuration;
    use cairn_runtime::operator::SubtaskInfo;
    use cairn_state::keygroup::{key_group_for_key, subtask_for_key_group};
    use cairn_state::{HeapKeyedStateBackend, KeyGroupRange, KeyedStateAccess, KeyedStateBackend, OperatorStateStore};

    use super::*;
    use crate::window::{EventTimeSessionWindows, ProcessContents, ProcessWindowFunction, SlidingEventTimeWindows};
    use cairn_runtime::record::StreamRecord;

    const MAX_P: u32 = 8;
    type Ev = (u32, i64);
    type Out = (u32, i64, i64, Vec<i64>);

    #[derive(Clone)]
    struct List;

    impl ProcessWindowFunction<u32, Ev, Out> for List {
        fn process(
            &mut self,
            key: &u32,
            w: &TimeWindow,
            elements: Vec<Ev>,
            out: &mut WindowCollector<'_, Out>,
        ) -> OpResult {
            let mut ts: Vec<i64> = elements.iter().map(|e| e.1).collect();
            ts.sort_unstable();
            out.collect((*key, w.start, w.end, ts));
            Ok(())
        }
    }

    type Op<A> = WindowOperator<u32, Ev, Out, A, ProcessContents<u32, Ev, Out, List>>;

    fn operator<A: WindowAssigner>(
        assigner: &A,
        subtask: u32,
        parallelism: u32,
        restore: Option<&dyn cairn_state::KeyedStateSnapshot>,
    ) -> Op<A> {
        let mut op = WindowOperator::new(
            assigner.clone(),
            ProcessContents::new(List),
            Arc::new(|e: &Ev| e.0) as KeyFn<u32, Ev>,
            WindowSettings {
                allowed_lateness_ms: 5,
                ..WindowSettings::default()
            },
            SidePorts::default(),
        );
        let range = KeyGroupRange::for_subtask(MAX_P, parallelism, subtask);
        let mut backend = HeapKeyedStateBackend::new(range);
        if let Some(snap) = restore {
            snap.for_each_group(&mut |meta, kg, bytes| {
                if range.contains(kg) {
                    backend.restore_group(meta, kg, bytes)?;
                }
                Ok(())
            })
            .unwrap();
        }
        op.open(OpenContext {
            info: SubtaskInfo {
                job_id: "test".into(),
                operator_name: "windows".into(),
                uid: "windows".into(),
                operator_id: "0".into(),
                subtask,
                parallelism,
                max_parallelism: MAX_P,
                attempt: 0,
                clock: cairn_runtime::time::system_clock(),
            },
            config: Arc::new(Configuration::new()),
            keyed: Some(KeyedStateAccess::new(Box::new(backend))),
            operator_state: OperatorStateStore::new(),
        })
        .unwrap();
        op
    }

    fn collect(em: Emitter, into: &mut Vec<Out>) {
        for (port, b) in em.into_batches() {
            assert_eq!(port, 0);
            let recs = b.downcast::<Vec<StreamRecord<Out>>>().unwrap();
            into.extend(recs.into_iter().map(|r| r.value));
        }
    }

    /// Feed `events` to the operators (routed by key group), then the watermark.
    fn feed<A: WindowAssigner>(ops: &mut [Op<A>], events: &[Ev], wm: i64, out: &mut Vec<Out>) {
        let p = ops.len() as u32;
        for e in events {
            let kg = key_group_for_key(&e.0, MAX_P).unwrap();
            let op = &mut ops[subtask_for_key_group(MAX_P, p, kg) as usize];
            let mut em = Emitter::default();
            let batch: AnyBatch = Box::new(vec![StreamRecord::with_timestamp(*e, e.1)]);
            op.process_batch(0, batch, &mut em).unwrap();
            collect(em, out);
        }
        for op in ops.iter_mut() {
            let mut em = Emitter::default();
            op.on_watermark(wm, &mut em).unwrap();
            collect(em, out);
        }
    }

    fn check_rescale<A: WindowAssigner>(assigner: A) {
        let first: Vec<Ev> = (0..40).map(|i| (i % 6, (i as i64 * 7) % 90)).collect();
        // Bridges earlier sessions, re-fires within lateness, and opens new ones.
        let second: Vec<Ev> = (0..40).map(|i| (i % 6, 50 + (i as i64 * 11) % 80)).collect();

        let mut straight = Vec::new();
        let mut ops = vec![operator(&assigner, 0, 1, None)];
        feed(&mut ops, &first, 55, &mut straight);
        feed(&mut ops, &second, MAX_WATERMARK, &mut straight);

        let mut rescaled = Vec::new();
        let mut ops = vec![operator(&assigner, 0, 1, None)];
        feed(&mut ops, &first, 55, &mut rescaled);
        let snap = ops[0].snapshot(&SnapshotRequest::checkpoint(1)).unwrap().keyed.unwrap();
        let groups = snap.key_groups().expect("the heap backend snapshots key groups");
        let mut ops: Vec<Op<A>> = (0..2).map(|s| operator(&assigner, s, 2, Some(groups))).collect();
        feed(&mut ops, &second, MAX_WATERMARK, &mut rescaled);

        straight.sort();
        rescaled.sort();
        assert!(straight.len() > 10, "{straight:?}");
        assert_eq!(rescaled, straight);
    }

    #[test]
    fn session_windows_survive_rescaling() {
        check_rescale(EventTimeSessionWindows::with_gap(Duration::from_millis(10)));
    }

    #[test]
    fn sliding_windows_survive_rescaling() {
        check_rescale(SlidingEventTimeWindows::of(
            Duration::from_millis(30),
            Duration::from_millis(10),
        ));
    }
}
