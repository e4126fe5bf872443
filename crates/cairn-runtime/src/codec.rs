//! Record codecs: how the records of one edge become bytes and back. Built
//! where the record type is known (the API's port of each stream), carried by
//! the wiring as `Arc<dyn BatchCodec>`, and used wherever records leave
//! memory: channel state of unaligned checkpoints today, remote edges later.
//!
//! Encoding of a batch (`Vec<StreamRecord<T>>`), specified in
//! `docs/formats/channel-state.md`:
//!
//! ```text
//! count     LEB128 varint       number of records
//! count times:
//!   timestamp  i64 little-endian  (i64::MIN = no timestamp)
//!   len        LEB128 varint      length of the value's bytes
//!   value      len bytes          the value in the value codec (MessagePack, named fields)
//! ```
//!
//! Values use the same codec as state values (`cairn_state::codec`), so a
//! record type that evolves compatibly for state (a new `#[serde(default)]`
//! field) also decodes from older channel state.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use cairn_state::codec::{get_bytes, get_varint, put_bytes, put_varint};
use cairn_state::keygroup::{key_group_for_bytes, KeyGroupRange};

use crate::error::{BoxError, OpResult};
use crate::output::KeyBytesFn;
use crate::record::{AnyBatch, StreamRecord};

/// Encodes and decodes batches of one record type, type-erased.
pub trait BatchCodec: Send + Sync {
    /// Append the encoding of `batch` (a `Vec<StreamRecord<T>>`) to `out`;
    /// returns how many records it held.
    fn encode(&self, batch: &AnyBatch, out: &mut Vec<u8>) -> OpResult<u64>;
    /// Decode one batch written by [`BatchCodec::encode`].
    fn decode(&self, bytes: &[u8]) -> OpResult<AnyBatch>;
    /// How many records `batch` (of this codec's type) holds; 0 for another type.
    fn count(&self, batch: &AnyBatch) -> u64;
    /// Split `batch` in two: it keeps its first `at` records, the rest is returned.
    fn split_off(&self, batch: &mut AnyBatch, at: usize) -> OpResult<AnyBatch>;
    /// Keep only the records of `batch` whose key, written by `key_fn` (the
    /// edge's `KeyBytesFn<T>`), falls into `range` of `max_parallelism` key
    /// groups; returns how many are left. Rescaled restores of channel state
    /// hand each new subtask the in-flight records of its key groups.
    fn retain_key_groups(
        &self,
        batch: &mut AnyBatch,
        key_fn: &(dyn Any + Send + Sync),
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> OpResult<u64>;
    /// The record type's name, for errors.
    fn record_type(&self) -> &'static str;
}

struct TypedCodec<T>(PhantomData<fn() -> T>);

/// The codec of records of type `T`.
pub fn batch_codec<T: Serialize + DeserializeOwned + Send + 'static>() -> Arc<dyn BatchCodec> {
    Arc::new(TypedCodec::<T>(PhantomData))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> BatchCodec for TypedCodec<T> {
    fn encode(&self, batch: &AnyBatch, out: &mut Vec<u8>) -> OpResult<u64> {
        let records = batch
            .downcast_ref::<Vec<StreamRecord<T>>>()
            .ok_or_else(|| -> BoxError {
                format!(
                    "a batch to encode is not of the edge's record type {}: this is a Cairn bug",
                    self.record_type()
                )
                .into()
            })?;
        put_varint(out, records.len() as u64);
        let mut value = Vec::new();
        for r in records {
            out.extend_from_slice(&r.timestamp.to_le_bytes());
            cairn_state::codec::encode_into("in-flight record", &r.value, &mut value)?;
            put_bytes(out, &value);
        }
        Ok(records.len() as u64)
    }

    fn decode(&self, bytes: &[u8]) -> OpResult<AnyBatch> {
        let truncated = || -> BoxError { format!("a batch of {} records is truncated", self.record_type()).into() };
        let (count, n) = get_varint(bytes).ok_or_else(truncated)?;
        let mut rest = &bytes[n..];
        // Each record takes at least 9 bytes: a hostile count cannot reserve much.
        let mut records = Vec::with_capacity((count as usize).min(rest.len() / 9 + 1));
        for _ in 0..count {
            if rest.len() < 8 {
                return Err(truncated());
            }
            let (ts, tail) = rest.split_at(8);
            let timestamp = i64::from_le_bytes(ts.try_into().expect("8 bytes"));
            let (value, tail) = get_bytes(tail).ok_or_else(truncated)?;
            let value: T = cairn_state::codec::decode("in-flight record", value)?;
            records.push(StreamRecord { value, timestamp });
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(format!(
                "a batch of {} records has {} bytes after its last record",
                self.record_type(),
                rest.len()
            )
            .into());
        }
        Ok(Box::new(records))
    }

    fn count(&self, batch: &AnyBatch) -> u64 {
        batch
            .downcast_ref::<Vec<StreamRecord<T>>>()
            .map_or(0, |r| r.len() as u64)
    }

    fn split_off(&self, batch: &mut AnyBatch, at: usize) -> OpResult<AnyBatch> {
        let records = batch
            .downcast_mut::<Vec<StreamRecord<T>>>()
            .ok_or_else(|| -> BoxError {
                format!(
                    "a batch to split is not of the edge's record type {}: this is a Cairn bug",
                    self.record_type()
                )
                .into()
            })?;
        let at = at.min(records.len());
        Ok(Box::new(records.split_off(at)))
    }

    fn retain_key_groups(
        &self,
        batch: &mut AnyBatch,
        key_fn: &(dyn Any + Send + Sync),
        max_parallelism: u32,
        range: KeyGroupRange,
    ) -> OpResult<u64> {
        let bug = |what: &str| -> BoxError {
            format!(
                "{what} is not of the edge's record type {}: this is a Cairn bug",
                self.record_type()
            )
            .into()
        };
        let key_fn = key_fn
            .downcast_ref::<KeyBytesFn<T>>()
            .ok_or_else(|| bug("a key_by function"))?;
        let records = batch
            .downcast_mut::<Vec<StreamRecord<T>>>()
            .ok_or_else(|| bug("a batch to filter"))?;
        let mut key = Vec::new();
        let mut failed = None;
        records.retain(|r| {
            key.clear();
            if failed.is_some() {
                return false;
            }
            match (key_fn.0)(&r.value, &mut key) {
                Ok(()) => range.contains(key_group_for_bytes(&key, max_parallelism)),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(records.len() as u64),
        }
    }

    fn record_type(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Event {
        key: u64,
        name: String,
    }

    #[test]
    fn batches_round_trip_with_timestamps() {
        let codec = batch_codec::<Event>();
        let batch: Vec<StreamRecord<Event>> = vec![
            StreamRecord::new(Event {
                key: 1,
                name: "a".into(),
            }),
            StreamRecord::with_timestamp(
                Event {
                    key: u64::MAX,
                    name: "ünïcode".into(),
                },
                -5,
            ),
        ];
        let mut bytes = Vec::new();
        assert_eq!(
            codec
                .encode(&(Box::new(batch.clone()) as AnyBatch), &mut bytes)
                .unwrap(),
            2
        );
        let back = codec.decode(&bytes).unwrap();
        assert_eq!(*back.downcast::<Vec<StreamRecord<Event>>>().unwrap(), batch);
    }

    #[test]
    fn wrong_types_and_damaged_bytes_are_errors_not_panics() {
        let codec = batch_codec::<Event>();
        let mut bytes = Vec::new();
        let wrong: AnyBatch = Box::new(vec![StreamRecord::new(3u32)]);
        assert!(codec
            .encode(&wrong, &mut bytes)
            .unwrap_err()
            .to_string()
            .contains("Cairn bug"));
        let ok: AnyBatch = Box::new(vec![StreamRecord::new(Event {
            key: 7,
            name: "x".into(),
        })]);
        codec.encode(&ok, &mut bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(codec.decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(codec
            .decode(&longer)
            .unwrap_err()
            .to_string()
            .contains("after its last record"));
        let other = batch_codec::<(u8, u8)>();
        assert!(
            other.decode(&bytes).is_err(),
            "an Event does not decode as a pair of bytes"
        );
    }
}
