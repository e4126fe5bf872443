//! `DataStream` and `KeyedStream`: the typed handles a job is declared with.

use std::marker::PhantomData;
use std::sync::Arc;

use cairn_graph::{NodeId, NodeKind, NodeSpec, Partitioning};
use cairn_operators::keyed::{Key, KeyFn, KeyedProcessOperator};
use cairn_operators::process::{ProcessOperator, TransformOperator};
use cairn_operators::sink::SinkOperator;
use cairn_operators::{KeyedProcessFunction, OutputTag, ProcessFunction, Sink};
use cairn_runtime::job::NodeCode;
use cairn_runtime::output::{port_factory, KeyBytesFn};
use cairn_runtime::{OperatorLogic, StreamRecord};
use cairn_state::keygroup::key_bytes;

use crate::env::{short_type_name, StreamEnv};
use crate::functions::{AggregateProcess, ReduceProcess};
use crate::Data;

/// The user's function as declared; every subtask gets its own clone. The
/// mutex makes a `Send` function shareable by the (Sync) operator factory.
pub(crate) struct Prototype<F>(std::sync::Mutex<F>);

impl<F: Clone> Prototype<F> {
    pub(crate) fn new(f: F) -> Self {
        Prototype(std::sync::Mutex::new(f))
    }

    pub(crate) fn get(&self) -> F {
        match self.0.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A stream of records of type `T`: the output port of one operator.
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    pub(crate) node: NodeId,
    pub(crate) port: usize,
    pub(crate) partitioning: Partitioning,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            node: self.node,
            port: self.port,
            partitioning: self.partitioning,
            _t: PhantomData,
        }
    }
}

pub(crate) fn operator_spec(name: String, stateful: bool, keyed: bool, kind: NodeKind) -> NodeSpec {
    NodeSpec {
        name,
        uid: None,
        kind,
        parallelism: None,
        max_parallelism: None,
        stateful,
        keyed,
        chaining_disabled: false,
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(env: StreamEnv, node: NodeId, port: usize) -> Self {
        DataStream {
            env,
            node,
            port,
            partitioning: Partitioning::Auto,
            _t: PhantomData,
        }
    }

    /// Add an operator node fed by this stream on input 0.
    pub(crate) fn then<O: Data>(
        &self,
        spec: NodeSpec,
        op: impl Fn() -> Box<dyn OperatorLogic> + Send + Sync + 'static,
    ) -> DataStream<O> {
        let id = self
            .env
            .add_node(spec, NodeCode::Operator(Arc::new(op)), port_factory::<O>());
        self.env.add_edge(self.node, self.port, id, 0, self.partitioning, None);
        DataStream::new(self.env.clone(), id, 0)
    }

    /// Set the stable id that state is matched by on restore. Required for
    /// stateful operators.
    pub fn uid(self, uid: &str) -> Self {
        self.env.with_node(self.node, |n| n.uid = Some(uid.to_string()));
        self
    }

    /// Set the operator's display name.
    pub fn name(self, name: &str) -> Self {
        self.env.with_node(self.node, |n| n.name = name.to_string());
        self
    }

    /// Set the operator's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        self.env.with_node(self.node, |n| n.parallelism = Some(parallelism));
        self
    }

    /// Set the operator's max parallelism (its number of key groups).
    pub fn set_max_parallelism(self, max_parallelism: u32) -> Self {
        self.env
            .with_node(self.node, |n| n.max_parallelism = Some(max_parallelism));
        self
    }

    /// Do not chain this operator to its predecessor (run it in its own task).
    pub fn start_new_chain(self) -> Self {
        self.env.with_node(self.node, |n| n.chaining_disabled = true);
        self
    }

    /// Send records round-robin to the next operator's subtasks.
    pub fn rebalance(mut self) -> Self {
        self.partitioning = Partitioning::Rebalance;
        self
    }

    /// Send every record to every subtask of the next operator.
    pub fn broadcast(mut self) -> Self {
        self.partitioning = Partitioning::Broadcast;
        self
    }

    /// Keep records in the same subtask index (parallelism must match).
    pub fn forward(mut self) -> Self {
        self.partitioning = Partitioning::Forward;
        self
    }

    /// Transform each record.
    pub fn map<O: Data>(&self, f: impl Fn(T) -> O + Clone + Send + Sync + 'static) -> DataStream<O> {
        self.then(
            operator_spec("Map".into(), false, false, NodeKind::Operator),
            move || {
                let f = f.clone();
                Box::new(TransformOperator::new(
                    move |r: StreamRecord<T>, out: &mut Vec<StreamRecord<O>>| {
                        out.push(StreamRecord {
                            value: f(r.value),
                            timestamp: r.timestamp,
                        })
                    },
                ))
            },
        )
    }

    /// Keep the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.then(
            operator_spec("Filter".into(), false, false, NodeKind::Operator),
            move || {
                let f = f.clone();
                Box::new(TransformOperator::new(
                    move |r: StreamRecord<T>, out: &mut Vec<StreamRecord<T>>| {
                        if f(&r.value) {
                            out.push(r)
                        }
                    },
                ))
            },
        )
    }

    /// Turn each record into zero or more records.
    pub fn flat_map<O: Data, I: IntoIterator<Item = O>>(
        &self,
        f: impl Fn(T) -> I + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        self.then(
            operator_spec("Flat Map".into(), false, false, NodeKind::Operator),
            move || {
                let f = f.clone();
                Box::new(TransformOperator::new(
                    move |r: StreamRecord<T>, out: &mut Vec<StreamRecord<O>>| {
                        let ts = r.timestamp;
                        out.extend(
                            f(r.value)
                                .into_iter()
                                .map(|value| StreamRecord { value, timestamp: ts }),
                        )
                    },
                ))
            },
        )
    }

    /// Apply a [`ProcessFunction`] (side outputs, operator state).
    pub fn process<O: Data, F: ProcessFunction<T, O>>(&self, function: F) -> DataStream<O> {
        let env = self.env.clone();
        let node_holder = Arc::new(std::sync::OnceLock::new());
        let holder = node_holder.clone();
        let proto = Prototype::new(function);
        let out = self.then(
            operator_spec(
                format!("Process: {}", short_type_name::<F>()),
                true,
                false,
                NodeKind::Operator,
            ),
            move || {
                let ports = holder.get().cloned().unwrap_or_default();
                Box::new(ProcessOperator::<T, O, F>::new(proto.get(), ports))
            },
        );
        let _ = node_holder.set(env.side_ports(out.node));
        out
    }

    /// Partition by key: records with equal keys go to the same subtask (by key group).
    pub fn key_by<K: Key>(&self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T> {
        KeyedStream {
            stream: self.clone(),
            key: Arc::new(key),
        }
    }

    /// Merge with other streams of the same type.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let id = self.env.add_node(
            operator_spec("Union".into(), false, false, NodeKind::Operator),
            NodeCode::Operator(Arc::new(|| {
                Box::new(TransformOperator::new(
                    |r: StreamRecord<T>, out: &mut Vec<StreamRecord<T>>| out.push(r),
                )) as Box<dyn OperatorLogic>
            })),
            port_factory::<T>(),
        );
        for s in std::iter::once(self).chain(others.iter()) {
            self.env.add_edge(s.node, s.port, id, 0, s.partitioning, None);
        }
        DataStream::new(self.env.clone(), id, 0)
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        let port = self.env.add_side_port(self.node, tag.id(), port_factory::<S>());
        DataStream::new(self.env.clone(), self.node, port)
    }

    /// Write to a sink.
    pub fn sink<S: Sink<T>>(&self, sink: S) -> DataStream<()> {
        let stateful = sink.stateful();
        let spec = operator_spec(
            format!("Sink: {}", short_type_name::<S>()),
            stateful,
            false,
            NodeKind::Sink,
        );
        let proto = Prototype::new(sink);
        self.then(spec, move || Box::new(SinkOperator::<T, S>::new(proto.get())))
    }

    /// Print every record to stdout.
    pub fn print(&self) -> DataStream<()>
    where
        T: std::fmt::Debug,
    {
        self.sink(cairn_connectors::PrintSink::new())
    }
}

/// A stream partitioned by key; stateful operations apply per key.
pub struct KeyedStream<K, T> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KeyFn<K, T>,
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        KeyedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    /// The key-bytes function carried by the key-group edge.
    pub(crate) fn key_bytes_fn(&self) -> Arc<dyn std::any::Any + Send + Sync> {
        let key = self.key.clone();
        Arc::new(KeyBytesFn::<T>(Box::new(move |v: &T, buf: &mut Vec<u8>| {
            Ok(key_bytes(&key(v), buf)?)
        })))
    }

    /// Add a keyed operator fed by this stream through a key-group edge.
    pub(crate) fn then_keyed<O: Data>(
        &self,
        name: String,
        op: impl Fn() -> Box<dyn OperatorLogic> + Send + Sync + 'static,
    ) -> DataStream<O> {
        let env = &self.stream.env;
        let id = env.add_node(
            operator_spec(name, true, true, NodeKind::Operator),
            NodeCode::Operator(Arc::new(op)),
            port_factory::<O>(),
        );
        env.add_edge(
            self.stream.node,
            self.stream.port,
            id,
            0,
            Partitioning::KeyGroups,
            Some(self.key_bytes_fn()),
        );
        env.set_key_codec(id, cairn_state::canonical::key_codec_for::<K>());
        DataStream::new(env.clone(), id, 0)
    }

    /// Apply a [`KeyedProcessFunction`]: keyed state, timers, side outputs.
    pub fn process<O: Data, F: KeyedProcessFunction<K, T, O>>(&self, function: F) -> DataStream<O> {
        let key = self.key.clone();
        let holder: Arc<std::sync::OnceLock<cairn_operators::collector::SidePorts>> =
            Arc::new(std::sync::OnceLock::new());
        let h = holder.clone();
        let proto = Prototype::new(function);
        let out = self.then_keyed(format!("KeyedProcess: {}", short_type_name::<F>()), move || {
            Box::new(KeyedProcessOperator::<K, T, O, F>::new(
                proto.get(),
                key.clone(),
                h.get().cloned().unwrap_or_default(),
            ))
        });
        let _ = holder.set(out.env.side_ports(out.node));
        out
    }

    /// Rolling reduce: emits the reduced value per key after each record.
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.process(ReduceProcess::new(f)).name("Reduce")
    }

    /// Rolling aggregate: emits the aggregate's result per key after each record.
    pub fn aggregate<A>(&self, function: A) -> DataStream<A::Out>
    where
        A: cairn_state::AggregateFunction<T> + Clone,
        A::Out: Data,
    {
        self.process(AggregateProcess::new(function)).name("Aggregate")
    }
}
