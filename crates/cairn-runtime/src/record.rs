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

/// The encoded key and key group of each record of a batch, in order, as
/// the sender of a key-group edge computed them to pick the target: the
/// receiving keyed operator uses them instead of encoding and hashing every
/// key again. Not part of channel state or of the wire between workers
/// (receivers compute the keys of batches that come without them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchKeys {
    bytes: Vec<u8>,
    /// Per record, where its key ends in `bytes`.
    ends: Vec<u32>,
    key_groups: Vec<u32>,
}

impl BatchKeys {
    /// Room for `records` keys.
    pub fn with_capacity(records: usize) -> Self {
        BatchKeys {
            bytes: Vec::with_capacity(records * 16),
            ends: Vec::with_capacity(records),
            key_groups: Vec::with_capacity(records),
        }
    }

    /// Append the next record's encoded key and key group.
    #[inline]
    pub fn push(&mut self, key: &[u8], key_group: u32) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u32);
        self.key_groups.push(key_group);
    }

    /// How many records' keys this holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Record `i`'s encoded key and key group.
    #[inline]
    pub fn get(&self, i: usize) -> (&[u8], u32) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (&self.bytes[start..self.ends[i] as usize], self.key_groups[i])
    }

    /// Keep the first `at` records' keys and return the others'.
    pub fn split_off(&mut self, at: usize) -> BatchKeys {
        if at >= self.len() {
            return BatchKeys::default();
        }
        let cut = if at == 0 { 0 } else { self.ends[at - 1] };
        let bytes = self.bytes.split_off(cut as usize);
        let ends = self.ends.split_off(at).into_iter().map(|e| e - cut).collect();
        let key_groups = self.key_groups.split_off(at);
        BatchKeys {
            bytes,
            ends,
            key_groups,
        }
    }
}

/// One message on a channel between two subtasks.
pub enum Message {
    /// A batch of records, how many it holds (the receiver cannot see into
    /// the type-erased batch, and counts its input with it) and, over a
    /// key-group edge inside a process, their keys.
    Records(AnyBatch, u64, Option<Box<BatchKeys>>),
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
            Message::Records(_, n, _) => write!(f, "Records({n})"),
            Message::Watermark(w) => f.debug_tuple("Watermark").field(w).finish(),
            Message::Idle(i) => f.debug_tuple("Idle").field(i).finish(),
            Message::Barrier(b) => f.debug_tuple("Barrier").field(b).finish(),
            Message::EndOfInput { drained } => f.debug_struct("EndOfInput").field("drained", drained).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BatchKeys;

    #[test]
    fn batch_keys_split_keeps_each_records_key() {
        let mut keys = BatchKeys::with_capacity(4);
        for (k, kg) in [(&b"a"[..], 1), (b"bc", 2), (b"", 3), (b"def", 4)] {
            keys.push(k, kg);
        }
        let rest = keys.split_off(1);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get(0), (&b"a"[..], 1));
        assert_eq!(rest.len(), 3);
        assert_eq!(rest.get(0), (&b"bc"[..], 2));
        assert_eq!(rest.get(1), (&b""[..], 3));
        assert_eq!(rest.get(2), (&b"def"[..], 4));
        let mut whole = rest.clone();
        assert_eq!(whole.split_off(0), rest);
        assert!(whole.is_empty());
        assert!(keys.split_off(5).is_empty());
    }
}
