//! Keyed reduce and aggregate, as keyed process functions over one state.

use cairn_operators::{KeyedContext, KeyedOpenContext, KeyedProcessFunction};
use cairn_runtime::OpResult;
use cairn_state::{AggregateFunction, AggregatingState, AggregatingStateDescriptor, ValueState, ValueStateDescriptor};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Data;

/// State name of a keyed reduce.
pub const REDUCE_STATE: &str = "reduce";
/// State name of a keyed aggregate.
pub const AGGREGATE_STATE: &str = "aggregate";

/// Rolling reduce per key.
#[derive(Clone)]
pub struct ReduceProcess<T, F> {
    f: F,
    state: Option<ValueState<T>>,
}

impl<T, F> ReduceProcess<T, F> {
    pub fn new(f: F) -> Self {
        ReduceProcess { f, state: None }
    }
}

impl<K, T, F> KeyedProcessFunction<K, T, T> for ReduceProcess<T, F>
where
    T: Data + Serialize + DeserializeOwned,
    F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    K: 'static,
{
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.state = Some(ctx.value_state(ValueStateDescriptor::new(REDUCE_STATE))?);
        Ok(())
    }

    fn process_element(&mut self, value: T, ctx: &mut KeyedContext<'_, K, T>) -> OpResult {
        let state = self.state.as_ref().ok_or("reduce state not registered")?;
        let next = match state.value(ctx)? {
            Some(acc) => (self.f)(acc, value),
            None => value,
        };
        state.update(ctx, &next)?;
        ctx.collect(next);
        Ok(())
    }
}

/// Rolling aggregate per key.
pub struct AggregateProcess<T, A: AggregateFunction<T>> {
    function: A,
    state: Option<AggregatingState<T, A>>,
}

impl<T, A: AggregateFunction<T> + Clone> Clone for AggregateProcess<T, A> {
    fn clone(&self) -> Self {
        AggregateProcess {
            function: self.function.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T, A: AggregateFunction<T>> AggregateProcess<T, A> {
    pub fn new(function: A) -> Self {
        AggregateProcess { function, state: None }
    }
}

impl<K, T, A> KeyedProcessFunction<K, T, A::Out> for AggregateProcess<T, A>
where
    T: Data,
    A: AggregateFunction<T> + Clone,
    A::Out: Data,
    K: 'static,
{
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.state =
            Some(ctx.aggregating_state(AggregatingStateDescriptor::new(AGGREGATE_STATE), self.function.clone())?);
        Ok(())
    }

    fn process_element(&mut self, value: T, ctx: &mut KeyedContext<'_, K, A::Out>) -> OpResult {
        let state = self.state.as_ref().ok_or("aggregate state not registered")?;
        state.add(ctx, &value)?;
        if let Some(out) = state.get(ctx)? {
            ctx.collect(out);
        }
        Ok(())
    }
}
