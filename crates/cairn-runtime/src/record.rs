//! What flows between tasks: batches of records and the control events
//! (watermarks, idleness, checkpoint barriers, end of input) that travel in
//! line with them.

use std::any::Any;

/// Timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = i64::MIN;
/// The watermark that ends event time: every event-time timer fires.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// A user value with its event timestamp ([`NO_TIMESTAMP`] when none).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord<T> {
    pub value: T,
    pub timestamp: i64,
}

impl<T> StreamRecord<T> {
    /// A record without timestamp.
    pub fn new(value: T) -> Self {
        StreamRecord {
            value,
            timestamp: NO_TIMESTAMP,
        }
    }

    /// A record with an event timestamp.
    pub fn with_timestamp(value: T, timestamp: i64) -> Self {
        StreamRecord { value, timestamp }
    }
}

/// A type-erased `Vec<StreamRecord<T>>`; operators downcast it once per batch.
pub type AnyBatch = Box<dyn Any + Send>;

/// Whether a barrier belongs to a checkpoint or a savepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotType {
    Checkpoint,
    /// A savepoint; `terminate` when the job stops right after it.
    Savepoint {
        terminate: bool,
    },
}

/// A checkpoint barrier: everything before it belongs to snapshot `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub checkpoint_id: u64,
    pub timestamp_ms: u64,
    pub snapshot_type: SnapshotType,
}

/// One message on a channel between two subtasks.
pub enum Message {
    /// A batch of records and how many it holds (the receiver cannot see
    /// into the type-erased batch, and counts its input with it).
    Records(AnyBatch, u64),
    Watermark(i64),
    /// The sender became idle (true) or active again (false).
    Idle(bool),
    Barrier(Barrier),
    /// The sender's input ended. `drained: false` when the job stops with a
    /// savepoint without draining: event time must not advance to the end
    /// and operators must not flush (their state goes into the savepoint).
    EndOfInput {
        drained: bool,
    },
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Records(_, n) => write!(f, "Records({n})"),
            Message::Watermark(w) => f.debug_tuple("Watermark").field(w).finish(),
            Message::Idle(i) => f.debug_tuple("Idle").field(i).finish(),
            Message::Barrier(b) => f.debug_tuple("Barrier").field(b).finish(),
            Message::EndOfInput { drained } => f.debug_struct("EndOfInput").field("drained", drained).finish(),
        }
    }
}
