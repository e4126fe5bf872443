//! Connecting two streams into one two-input operator: co-process functions
//! over plain or keyed pairs of streams, and the broadcast state pattern.
//!
//! ```no_run
//! # use cairn::prelude::*;
//! # use cairn::connect::*;
//! # use cairn::operators::two_input::*;
//! #[derive(Clone)]
//! struct Allow;
//! impl BroadcastProcessFunction<u32, u32, u32> for Allow {
//!     fn process_element(&mut self, v: u32, ctx: &mut ReadOnlyBroadcastContext<'_, u32>) -> OpResult {
//!         if ctx.broadcast_get::<u32, bool>("allowed", &v)?.is_some() {
//!             ctx.collect(v);
//!         }
//!         Ok(())
//!     }
//!     fn process_broadcast_element(&mut self, v: u32, ctx: &mut BroadcastContext<'_, u32>) -> OpResult {
//!         Ok(ctx.broadcast_put("allowed", &v, &true)?)
//!     }
//! }
//! # let env = StreamEnv::new();
//! let events = env.from_collection(vec![1u32, 2, 3]);
//! let allowed = env.from_collection(vec![2u32]).broadcast_to_all();
//! events.connect_broadcast(&allowed).process(Allow).uid("allow").print();
//! ```
//!
//! Broadcast state must be updated identically on every subtask: the
//! broadcast side sees the same records in the same order everywhere, so the
//! update must depend on those records alone (not on the subtask, the other
//! input, the clock or randomness). On restore every subtask gets one
//! subtask's copy; divergent copies would silently change results.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use cairn_graph::{NodeKind, Partitioning};
use cairn_operators::collector::SidePorts;
use cairn_operators::keyed::Key;
use cairn_operators::two_input::{
    BroadcastProcessFunction, BroadcastProcessOperator, CoProcessFunction, CoProcessOperator,
    KeyedBroadcastProcessFunction, KeyedBroadcastProcessOperator, KeyedCoProcessFunction, KeyedCoProcessOperator,
};
use cairn_runtime::job::NodeCode;
use cairn_runtime::output::port_factory;
use cairn_runtime::OperatorLogic;
use cairn_state::canonical::{key_codec_for, KeyCodec};

use crate::env::short_type_name;
use crate::stream::{operator_spec, DataStream, KeyedStream, Prototype};
use crate::Data;

/// One input edge of a two-input node.
struct InputEdge<'a, T> {
    stream: &'a DataStream<T>,
    partitioning: Partitioning,
    key: Option<Arc<dyn Any + Send + Sync>>,
    /// Keyed edges: the key type's codec (canonical savepoints).
    key_codec: Option<KeyCodec>,
}

impl<'a, T: Data> InputEdge<'a, T> {
    fn plain(stream: &'a DataStream<T>) -> Self {
        InputEdge {
            stream,
            partitioning: stream.partitioning,
            key: None,
            key_codec: None,
        }
    }

    fn keyed<K: Key>(keyed: &'a KeyedStream<K, T>) -> Self {
        InputEdge {
            stream: &keyed.stream,
            partitioning: Partitioning::KeyGroups,
            key: Some(keyed.key_bytes_fn()),
            key_codec: Some(key_codec_for::<K>()),
        }
    }

    fn broadcast(stream: &'a BroadcastStream<T>) -> Self {
        InputEdge {
            stream: &stream.stream,
            partitioning: Partitioning::Broadcast,
            key: None,
            key_codec: None,
        }
    }
}

/// Add a two-input node fed by `first` on input 0 and `second` on input 1;
/// `make` builds a subtask's operator given the node's consumed side outputs.
fn two_input_node<A: Data, B: Data, O: Data>(
    name: String,
    keyed: bool,
    first: InputEdge<'_, A>,
    second: InputEdge<'_, B>,
    make: impl Fn(SidePorts) -> Box<dyn OperatorLogic> + Send + Sync + 'static,
) -> DataStream<O> {
    let env = first.stream.env.clone();
    let holder: Arc<OnceLock<SidePorts>> = Arc::new(OnceLock::new());
    let h = holder.clone();
    let id = env.add_node(
        operator_spec(name, true, keyed, NodeKind::Operator),
        NodeCode::Operator(Arc::new(move || make(h.get().cloned().unwrap_or_default()))),
        port_factory::<O>(),
    );
    let _ = holder.set(env.side_ports(id));
    if keyed {
        if let Some(codec) = first.key_codec.clone().or_else(|| second.key_codec.clone()) {
            env.set_key_codec(id, codec);
        }
    }
    env.add_edge(
        first.stream.node,
        first.stream.port,
        id,
        0,
        first.partitioning,
        first.key,
    );
    env.add_edge(
        second.stream.node,
        second.stream.port,
        id,
        1,
        second.partitioning,
        second.key,
    );
    DataStream::new(env, id, 0)
}

/// Two streams connected for a [`CoProcessFunction`] (or keyed with `key_by`).
pub struct ConnectedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    /// Apply a [`CoProcessFunction`]. The operator may hold operator state,
    /// so it needs a `uid`.
    pub fn process<O: Data, F: CoProcessFunction<A, B, O>>(&self, function: F) -> DataStream<O> {
        let proto = Prototype::new(function);
        two_input_node(
            format!("CoProcess: {}", short_type_name::<F>()),
            false,
            InputEdge::plain(&self.first),
            InputEdge::plain(&self.second),
            move |ports| Box::new(CoProcessOperator::<A, B, O, F>::new(proto.get(), ports)),
        )
    }

    /// Key both streams by the same key type, so that records with equal keys
    /// meet in one subtask with shared keyed state and timers.
    pub fn key_by<K: Key>(
        &self,
        key_first: impl Fn(&A) -> K + Send + Sync + 'static,
        key_second: impl Fn(&B) -> K + Send + Sync + 'static,
    ) -> KeyedConnectedStreams<K, A, B> {
        KeyedConnectedStreams {
            first: self.first.key_by(key_first),
            second: self.second.key_by(key_second),
        }
    }
}

/// Two streams keyed by the same key type, connected for a
/// [`KeyedCoProcessFunction`].
pub struct KeyedConnectedStreams<K, A, B> {
    first: KeyedStream<K, A>,
    second: KeyedStream<K, B>,
}

impl<K: Key, A: Data, B: Data> KeyedConnectedStreams<K, A, B> {
    /// Apply a [`KeyedCoProcessFunction`]: keyed state and timers shared by
    /// both inputs' records of a key. Needs a `uid`.
    pub fn process<O: Data, F: KeyedCoProcessFunction<K, A, B, O>>(&self, function: F) -> DataStream<O> {
        let proto = Prototype::new(function);
        let (k1, k2) = (self.first.key.clone(), self.second.key.clone());
        two_input_node(
            format!("KeyedCoProcess: {}", short_type_name::<F>()),
            true,
            InputEdge::keyed(&self.first),
            InputEdge::keyed(&self.second),
            move |ports| {
                Box::new(KeyedCoProcessOperator::<K, A, B, O, F>::new(
                    proto.get(),
                    k1.clone(),
                    k2.clone(),
                    ports,
                ))
            },
        )
    }
}

/// A stream whose every record goes to every subtask of the operator it is
/// connected to, where it may update broadcast state.
pub struct BroadcastStream<B> {
    stream: DataStream<B>,
}

impl<B> Clone for BroadcastStream<B> {
    fn clone(&self) -> Self {
        BroadcastStream {
            stream: self.stream.clone(),
        }
    }
}

/// A stream connected with a [`BroadcastStream`], for a [`BroadcastProcessFunction`].
pub struct BroadcastConnectedStream<A, B> {
    first: DataStream<A>,
    broadcast: BroadcastStream<B>,
}

impl<A: Data, B: Data> BroadcastConnectedStream<A, B> {
    /// Apply a [`BroadcastProcessFunction`]. Broadcast state is operator state,
    /// so the operator needs a `uid`.
    pub fn process<O: Data, F: BroadcastProcessFunction<A, B, O>>(&self, function: F) -> DataStream<O> {
        let proto = Prototype::new(function);
        two_input_node(
            format!("BroadcastProcess: {}", short_type_name::<F>()),
            false,
            InputEdge::plain(&self.first),
            InputEdge::broadcast(&self.broadcast),
            move |ports| Box::new(BroadcastProcessOperator::<A, B, O, F>::new(proto.get(), ports)),
        )
    }
}

/// A keyed stream connected with a [`BroadcastStream`], for a
/// [`KeyedBroadcastProcessFunction`].
pub struct KeyedBroadcastConnectedStream<K, A, B> {
    first: KeyedStream<K, A>,
    broadcast: BroadcastStream<B>,
}

impl<K: Key, A: Data, B: Data> KeyedBroadcastConnectedStream<K, A, B> {
    /// Apply a [`KeyedBroadcastProcessFunction`]: keyed state and timers on
    /// the keyed side, broadcast state read-only there and read-write on the
    /// broadcast side. Needs a `uid`.
    pub fn process<O: Data, F: KeyedBroadcastProcessFunction<K, A, B, O>>(&self, function: F) -> DataStream<O> {
        let proto = Prototype::new(function);
        let key = self.first.key.clone();
        two_input_node(
            format!("KeyedBroadcastProcess: {}", short_type_name::<F>()),
            true,
            InputEdge::keyed(&self.first),
            InputEdge::broadcast(&self.broadcast),
            move |ports| {
                Box::new(KeyedBroadcastProcessOperator::<K, A, B, O, F>::new(
                    proto.get(),
                    key.clone(),
                    ports,
                ))
            },
        )
    }
}

impl<T: Data> DataStream<T> {
    /// Connect with another stream (of any type) for a co-process function.
    pub fn connect<B: Data>(&self, other: &DataStream<B>) -> ConnectedStreams<T, B> {
        ConnectedStreams {
            first: self.clone(),
            second: other.clone(),
        }
    }

    /// Send every record of this stream to every subtask of the operator it is
    /// connected to (see [`DataStream::connect_broadcast`]).
    pub fn broadcast_to_all(&self) -> BroadcastStream<T> {
        BroadcastStream { stream: self.clone() }
    }

    /// Connect with a broadcast stream: this stream's records read the
    /// broadcast state the broadcast stream's records write.
    pub fn connect_broadcast<B: Data>(&self, broadcast: &BroadcastStream<B>) -> BroadcastConnectedStream<T, B> {
        BroadcastConnectedStream {
            first: self.clone(),
            broadcast: broadcast.clone(),
        }
    }
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    /// Connect with another stream keyed by the same key type.
    pub fn connect<B: Data>(&self, other: &KeyedStream<K, B>) -> KeyedConnectedStreams<K, T, B> {
        KeyedConnectedStreams {
            first: self.clone(),
            second: other.clone(),
        }
    }

    /// Connect with a broadcast stream, keeping keyed state and timers on
    /// this side.
    pub fn connect_broadcast<B: Data>(&self, broadcast: &BroadcastStream<B>) -> KeyedBroadcastConnectedStream<K, T, B> {
        KeyedBroadcastConnectedStream {
            first: self.clone(),
            broadcast: broadcast.clone(),
        }
    }
}
