//! State descriptors: the name, kind and type of a piece of keyed state, as a
//! user declares it. The name is what snapshots record and what restore
//! matches on, so it must stay stable across job versions.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::shape::{self, StateShapes};

/// How a keyed state stores its values; recorded in snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per key (also used by reducing and aggregating state).
    Value,
    /// An appendable list of values per key.
    List,
    /// A map of user keys to values per key.
    Map,
}

/// When a state entry's time-to-live clock restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlUpdateType {
    /// Writes restart the clock (Flink's `OnCreateAndWrite`).
    OnCreateAndWrite,
    /// Reads and writes restart the clock (Flink's `OnReadAndWrite`).
    OnReadAndWrite,
}

/// Processing-time TTL for keyed state: expired entries are never returned and
/// are removed when touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTtlConfig {
    pub ttl_ms: u64,
    pub update_type: TtlUpdateType,
}

impl StateTtlConfig {
    /// A TTL whose clock restarts on every write.
    pub fn new(ttl: Duration) -> Self {
        StateTtlConfig {
            ttl_ms: ttl.as_millis().max(1) as u64,
            update_type: TtlUpdateType::OnCreateAndWrite,
        }
    }

    /// Choose when the clock restarts.
    pub fn with_update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }
}

/// Everything a backend needs to know about a registered state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    pub name: String,
    pub kind: StateKind,
    /// `std::any::type_name` of the value type, for error messages only.
    pub value_type: String,
    pub ttl: Option<StateTtlConfig>,
    /// The shapes of the state's types ([`crate::shape`]), traced when the
    /// state was registered; `None` for internal states and for snapshots
    /// written before shapes were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapes: Option<StateShapes>,
}

macro_rules! descriptor {
    ($(#[$doc:meta])* $name:ident < $($t:ident),+ >, $kind:expr) => {
        $(#[$doc])*
        pub struct $name<$($t),+> {
            pub(crate) name: String,
            pub(crate) ttl: Option<StateTtlConfig>,
            pub(crate) queryable: Option<String>,
            _types: PhantomData<fn() -> ($($t,)+)>,
        }

        impl<$($t),+> $name<$($t),+> {
            /// Declare a state by its stable name.
            pub fn new(name: impl Into<String>) -> Self {
                $name { name: name.into(), ttl: None, queryable: None, _types: PhantomData }
            }

            /// Let the running job answer live queries for this state's
            /// values under `name` (`GET /jobs/:jobid/state/:uid/:name?key=`,
            /// `cairn state get`), as Flink's `setQueryable`. The subtask
            /// that owns the key reads it between two batches.
            pub fn queryable(mut self, name: impl Into<String>) -> Self {
                self.queryable = Some(name.into());
                self
            }

            /// The name live queries use, when the state is queryable.
            pub fn queryable_name(&self) -> Option<&str> {
                self.queryable.as_deref()
            }

            /// Expire entries after a processing-time TTL.
            pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }

            /// The state's name.
            pub fn name(&self) -> &str {
                &self.name
            }

            fn meta_with(&self, shapes: StateShapes) -> StateMeta {
                StateMeta {
                    name: self.name.clone(),
                    kind: $kind,
                    value_type: std::any::type_name::<($($t,)+)>().to_string(),
                    ttl: self.ttl,
                    shapes: Some(shapes),
                }
            }
        }
    };
}

descriptor!(
    /// Declares a `ValueState<T>`.
    ValueStateDescriptor<T>, StateKind::Value);
descriptor!(
    /// Declares a `ListState<T>`.
    ListStateDescriptor<T>, StateKind::List);
descriptor!(
    /// Declares a `MapState<UK, UV>`.
    MapStateDescriptor<UK, UV>, StateKind::Map);
descriptor!(
    /// Declares a `ReducingState<T>`; the reduce function is given at registration.
    ReducingStateDescriptor<T>, StateKind::Value);
descriptor!(
    /// Declares an `AggregatingState<IN, ACC, OUT>`; the aggregate function is given at registration.
    AggregatingStateDescriptor<IN, ACC>, StateKind::Value);

impl<T: DeserializeOwned> ValueStateDescriptor<T> {
    /// The metadata the backend records for this state (its type traced).
    pub fn meta(&self) -> StateMeta {
        self.meta_with(StateShapes {
            user_key: None,
            value: shape::trace::<T>(),
        })
    }
}

impl<T: DeserializeOwned> ListStateDescriptor<T> {
    /// The metadata the backend records for this state (its type traced).
    pub fn meta(&self) -> StateMeta {
        self.meta_with(StateShapes {
            user_key: None,
            value: shape::trace::<T>(),
        })
    }
}

impl<UK: DeserializeOwned, UV: DeserializeOwned> MapStateDescriptor<UK, UV> {
    /// The metadata the backend records for this state (its types traced).
    pub fn meta(&self) -> StateMeta {
        self.meta_with(StateShapes {
            user_key: Some(shape::trace::<UK>()),
            value: shape::trace::<UV>(),
        })
    }
}

impl<T: DeserializeOwned> ReducingStateDescriptor<T> {
    /// The metadata the backend records for this state (its type traced).
    pub fn meta(&self) -> StateMeta {
        self.meta_with(StateShapes {
            user_key: None,
            value: shape::trace::<T>(),
        })
    }
}

impl<IN, ACC: DeserializeOwned> AggregatingStateDescriptor<IN, ACC> {
    /// The metadata the backend records for this state (the accumulator's type traced).
    pub fn meta(&self) -> StateMeta {
        self.meta_with(StateShapes {
            user_key: None,
            value: shape::trace::<ACC>(),
        })
    }
}
