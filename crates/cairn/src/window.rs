//! Windows on keyed streams: `key_by(..).window(assigner)` then `reduce`,
//! `aggregate` or `process`. Results carry the window's last timestamp
//! (`window.max_timestamp()`), so downstream event-time operators see them in
//! the right window.
//!
//! ```ignore
//! let late = OutputTag::<Click>::new("late-clicks");
//! let counts = clicks
//!     .key_by(|c: &Click| c.user)
//!     .window(TumblingEventTimeWindows::of(Duration::from_secs(60)))
//!     .allowed_lateness(Duration::from_secs(10))
//!     .side_output_late_data(&late)
//!     .aggregate(CountClicks)
//!     .uid("clicks-per-minute");
//! let late_clicks = counts.side_output(&late);
//! ```

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_operators::collector::SidePorts;
use cairn_operators::keyed::Key;
use cairn_operators::window::{
    AggregateContents, AggregateWindowContents, ProcessContents, ReduceContents, WindowOperator,
};
use cairn_operators::OutputTag;
use cairn_state::AggregateFunction;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::env::short_type_name;
use crate::stream::{DataStream, KeyedStream, Prototype};
use crate::Data;

pub use cairn_operators::window::{
    EventTimeSessionWindows, ProcessWindowFunction, ProcessingTimeSessionWindows, SlidingEventTimeWindows,
    SlidingProcessingTimeWindows, TimeWindow, TumblingEventTimeWindows, TumblingProcessingTimeWindows, WindowAssigner,
    WindowCollector, WindowContents, WindowSettings,
};

impl<K: Key, T: Data> KeyedStream<K, T> {
    /// Group each key's records into the windows `assigner` gives them.
    pub fn window<A: WindowAssigner>(&self, assigner: A) -> WindowedStream<K, T, A> {
        WindowedStream {
            keyed: self.clone(),
            assigner,
            settings: WindowSettings::default(),
        }
    }
}

/// A keyed stream cut into windows; finish it with `reduce`, `aggregate` or
/// `process`. The resulting operator is stateful and needs a `uid`.
pub struct WindowedStream<K, T, A> {
    keyed: KeyedStream<K, T>,
    assigner: A,
    settings: WindowSettings<T>,
}

impl<K: Key, T: Data, A: WindowAssigner> WindowedStream<K, T, A> {
    /// Keep event-time windows for `lateness` after they fire: a record that
    /// arrives in that time is added and the window fires again with the
    /// updated result. Has no effect on processing-time windows.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.settings.allowed_lateness_ms = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Send records that are too late for all their windows to side output
    /// `tag` (read it with `result.side_output(&tag)`) instead of dropping them.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.settings.late_tag = Some(tag.clone());
        self
    }

    /// Count late records that are dropped (not sent to a side output), over
    /// all subtasks, into `counter`.
    pub fn count_dropped_late_data(mut self, counter: &Arc<AtomicU64>) -> Self {
        self.settings.late_dropped = counter.clone();
        self
    }

    /// Fold each window's records with `f`; emits the reduced value per window.
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T>
    where
        T: Serialize + DeserializeOwned,
    {
        self.build("Reduce", move || ReduceContents::new(f.clone()))
    }

    /// Aggregate each window's records incrementally; emits the result per window.
    pub fn aggregate<F>(&self, function: F) -> DataStream<F::Out>
    where
        F: AggregateFunction<T> + Clone,
        F::Out: Data,
    {
        self.build(&format!("Aggregate: {}", short_type_name::<F>()), move || {
            AggregateContents::new(function.clone())
        })
    }

    /// Aggregate each window's records incrementally, then turn the result,
    /// with the window's key and the window, into the output (Flink's
    /// `aggregate(aggregateFunction, windowFunction)`): one accumulator per
    /// window, not every record, yet results that name their key and window.
    pub fn aggregate_with_window<F, O>(
        &self,
        function: F,
        window_function: impl Fn(&K, &TimeWindow, F::Out) -> O + Send + Sync + 'static,
    ) -> DataStream<O>
    where
        F: AggregateFunction<T> + Clone,
        F::Out: Send + 'static,
        O: Data,
    {
        let window_function = Arc::new(window_function);
        self.build(&format!("Aggregate: {}", short_type_name::<F>()), move || {
            AggregateWindowContents::new(function.clone(), window_function.clone())
        })
    }

    /// Hand all records of each window, with its key and window, to `function`.
    pub fn process<O: Data, F: ProcessWindowFunction<K, T, O>>(&self, function: F) -> DataStream<O>
    where
        T: Serialize + DeserializeOwned,
    {
        let proto = Prototype::new(function);
        self.build(&format!("Process: {}", short_type_name::<F>()), move || {
            ProcessContents::new(proto.get())
        })
    }

    /// Add the window operator with contents made by `contents` (one per subtask).
    pub fn build<O: Data, C: WindowContents<K, T, O>>(
        &self,
        what: &str,
        contents: impl Fn() -> C + Send + Sync + 'static,
    ) -> DataStream<O> {
        let key = self.keyed.key.clone();
        let assigner = self.assigner.clone();
        let settings = self.settings.clone();
        let holder: Arc<OnceLock<SidePorts>> = Arc::new(OnceLock::new());
        let h = holder.clone();
        let out = self
            .keyed
            .then_keyed(format!("Window({}, {what})", self.assigner.describe()), move || {
                Box::new(WindowOperator::<K, T, O, A, C>::new(
                    assigner.clone(),
                    contents(),
                    key.clone(),
                    settings.clone(),
                    h.get().cloned().unwrap_or_default(),
                ))
            });
        let _ = holder.set(out.env.side_ports(out.node));
        out
    }
}
