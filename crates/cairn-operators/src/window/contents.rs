//! What a window keeps and how it turns into results: a running reduce, an
//! incremental aggregate, or the full list of elements for a
//! [`ProcessWindowFunction`]. Contents live in keyed state under the window's
//! namespace, so they move with their key group on rescale.

use std::marker::PhantomData;
use std::sync::Arc;

use cairn_state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedStateAccess, ListState, ListStateDescriptor,
    ReducingState, ReducingStateDescriptor, StateValue,
};

use super::{ProcessWindowFunction, TimeWindow, WindowCollector, WINDOW_CONTENTS_STATE};
use cairn_runtime::error::OpResult;

/// The per-window state of a window operator. Every call works on the
/// namespace currently set on `state` (the window's state namespace).
pub trait WindowContents<K, T, O>: Send + 'static {
    /// Register the state.
    fn open(&mut self, state: &mut KeyedStateAccess) -> OpResult;
    /// Add one element (by reference: an element in several windows, as
    /// with sliding windows, is cloned only by contents that keep it).
    /// Returns whether the window had contents before, so its timers are
    /// set already (false where that would cost a lookup).
    fn add(&mut self, state: &mut KeyedStateAccess, value: &T) -> OpResult<bool>;
    /// Fold the contents stored under namespace `source` into namespace
    /// `target` and clear `source` (session windows merging). Leaves the
    /// namespace set to `target`.
    fn merge(&mut self, state: &mut KeyedStateAccess, source: &[u8], target: &[u8]) -> OpResult;
    /// Emit the window's result(s); nothing when the window is empty.
    fn emit(
        &mut self,
        state: &mut KeyedStateAccess,
        key: &K,
        window: &TimeWindow,
        out: &mut WindowCollector<'_, O>,
    ) -> OpResult;
    /// Drop the contents.
    fn clear(&mut self, state: &mut KeyedStateAccess) -> OpResult;
}

fn not_open() -> cairn_runtime::error::BoxError {
    "window contents used before the operator was opened; this is a Cairn bug".into()
}

/// Keeps one reduced value per window.
pub struct ReduceContents<T, F> {
    f: Arc<F>,
    state: Option<ReducingState<T>>,
}

impl<T, F> ReduceContents<T, F> {
    pub fn new(f: F) -> Self {
        ReduceContents {
            f: Arc::new(f),
            state: None,
        }
    }
}

impl<K, T, F> WindowContents<K, T, T> for ReduceContents<T, F>
where
    T: StateValue,
    F: Fn(T, T) -> T + Send + Sync + 'static,
{
    fn open(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        let f = self.f.clone();
        self.state =
            Some(state.reducing_state(ReducingStateDescriptor::new(WINDOW_CONTENTS_STATE), move |a, b| f(a, b))?);
        Ok(())
    }

    fn add(&mut self, state: &mut KeyedStateAccess, value: &T) -> OpResult<bool> {
        Ok(!self
            .state
            .as_ref()
            .ok_or_else(not_open)?
            .add_is_first(state, value.clone())?)
    }

    fn merge(&mut self, state: &mut KeyedStateAccess, source: &[u8], target: &[u8]) -> OpResult {
        let s = self.state.as_ref().ok_or_else(not_open)?;
        state.set_namespace(source);
        let moved = s.get(state)?;
        s.clear(state)?;
        state.set_namespace(target);
        if let Some(v) = moved {
            s.add(state, v)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        state: &mut KeyedStateAccess,
        _key: &K,
        _window: &TimeWindow,
        out: &mut WindowCollector<'_, T>,
    ) -> OpResult {
        if let Some(v) = self.state.as_ref().ok_or_else(not_open)?.get(state)? {
            out.collect(v);
        }
        Ok(())
    }

    fn clear(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        Ok(self.state.as_ref().ok_or_else(not_open)?.clear(state)?)
    }
}

/// Keeps one accumulator per window.
pub struct AggregateContents<T, A: AggregateFunction<T>> {
    function: Option<A>,
    state: Option<AggregatingState<T, A>>,
}

impl<T, A: AggregateFunction<T>> AggregateContents<T, A> {
    pub fn new(function: A) -> Self {
        AggregateContents {
            function: Some(function),
            state: None,
        }
    }
}

impl<K, T, A> WindowContents<K, T, A::Out> for AggregateContents<T, A>
where
    T: Send + 'static,
    A: AggregateFunction<T>,
    A::Out: Send + 'static,
{
    fn open(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        let function = self.function.take().ok_or("window aggregate opened twice")?;
        self.state = Some(state.aggregating_state(AggregatingStateDescriptor::new(WINDOW_CONTENTS_STATE), function)?);
        Ok(())
    }

    fn add(&mut self, state: &mut KeyedStateAccess, value: &T) -> OpResult<bool> {
        Ok(!self.state.as_ref().ok_or_else(not_open)?.add_is_first(state, value)?)
    }

    fn merge(&mut self, state: &mut KeyedStateAccess, source: &[u8], target: &[u8]) -> OpResult {
        let s = self.state.as_ref().ok_or_else(not_open)?;
        state.set_namespace(source);
        let moved = s.accumulator(state)?;
        s.clear(state)?;
        state.set_namespace(target);
        if let Some(acc) = moved {
            let merged = match s.accumulator(state)? {
                Some(existing) => s.function().merge(existing, acc),
                None => acc,
            };
            s.set_accumulator(state, &merged)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        state: &mut KeyedStateAccess,
        _key: &K,
        _window: &TimeWindow,
        out: &mut WindowCollector<'_, A::Out>,
    ) -> OpResult {
        if let Some(v) = self.state.as_ref().ok_or_else(not_open)?.get(state)? {
            out.collect(v);
        }
        Ok(())
    }

    fn clear(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        Ok(self.state.as_ref().ok_or_else(not_open)?.clear(state)?)
    }
}

/// Keeps one accumulator per window, like [`AggregateContents`], and hands
/// the result with its key and window to a window function (Flink's
/// `aggregate(AggregateFunction, ProcessWindowFunction)`): incremental state,
/// yet results that say which key and window they are for.
pub struct AggregateWindowContents<T, A: AggregateFunction<T>, W> {
    inner: AggregateContents<T, A>,
    window_function: Arc<W>,
}

impl<T, A: AggregateFunction<T>, W> AggregateWindowContents<T, A, W> {
    pub fn new(function: A, window_function: Arc<W>) -> Self {
        AggregateWindowContents {
            inner: AggregateContents::new(function),
            window_function,
        }
    }
}

impl<K, T, A, W, O> WindowContents<K, T, O> for AggregateWindowContents<T, A, W>
where
    T: Send + 'static,
    A: AggregateFunction<T>,
    A::Out: Send + 'static,
    W: Fn(&K, &TimeWindow, A::Out) -> O + Send + Sync + 'static,
    O: Send + 'static,
{
    fn open(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        <AggregateContents<T, A> as WindowContents<K, T, A::Out>>::open(&mut self.inner, state)
    }

    fn add(&mut self, state: &mut KeyedStateAccess, value: &T) -> OpResult<bool> {
        <AggregateContents<T, A> as WindowContents<K, T, A::Out>>::add(&mut self.inner, state, value)
    }

    fn merge(&mut self, state: &mut KeyedStateAccess, source: &[u8], target: &[u8]) -> OpResult {
        <AggregateContents<T, A> as WindowContents<K, T, A::Out>>::merge(&mut self.inner, state, source, target)
    }

    fn emit(
        &mut self,
        state: &mut KeyedStateAccess,
        key: &K,
        window: &TimeWindow,
        out: &mut WindowCollector<'_, O>,
    ) -> OpResult {
        if let Some(result) = self.inner.state.as_ref().ok_or_else(not_open)?.get(state)? {
            out.collect((self.window_function)(key, window, result));
        }
        Ok(())
    }

    fn clear(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        <AggregateContents<T, A> as WindowContents<K, T, A::Out>>::clear(&mut self.inner, state)
    }
}

/// Keeps every element of a window for a [`ProcessWindowFunction`].
pub struct ProcessContents<K, T, O, F> {
    function: F,
    state: Option<ListState<T>>,
    _t: PhantomData<fn(K) -> O>,
}

impl<K, T, O, F> ProcessContents<K, T, O, F> {
    pub fn new(function: F) -> Self {
        ProcessContents {
            function,
            state: None,
            _t: PhantomData,
        }
    }
}

impl<K, T, O, F> WindowContents<K, T, O> for ProcessContents<K, T, O, F>
where
    K: 'static,
    T: StateValue,
    O: Send + 'static,
    F: ProcessWindowFunction<K, T, O>,
{
    fn open(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        self.state = Some(state.list_state(ListStateDescriptor::new(WINDOW_CONTENTS_STATE))?);
        Ok(())
    }

    fn add(&mut self, state: &mut KeyedStateAccess, value: &T) -> OpResult<bool> {
        let first = self.state.as_ref().ok_or_else(not_open)?.add_is_first(state, value)?;
        Ok(first == Some(false))
    }

    fn merge(&mut self, state: &mut KeyedStateAccess, source: &[u8], target: &[u8]) -> OpResult {
        let s = self.state.as_ref().ok_or_else(not_open)?;
        state.set_namespace(source);
        let moved = s.get(state)?;
        s.clear(state)?;
        state.set_namespace(target);
        for v in &moved {
            s.add(state, v)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        state: &mut KeyedStateAccess,
        key: &K,
        window: &TimeWindow,
        out: &mut WindowCollector<'_, O>,
    ) -> OpResult {
        let elements = self.state.as_ref().ok_or_else(not_open)?.get(state)?;
        if elements.is_empty() {
            return Ok(());
        }
        self.function.process(key, window, elements, out)
    }

    fn clear(&mut self, state: &mut KeyedStateAccess) -> OpResult {
        Ok(self.state.as_ref().ok_or_else(not_open)?.clear(state)?)
    }
}
