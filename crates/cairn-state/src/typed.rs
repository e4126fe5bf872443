//! Typed state: values kept as Rust objects in a backend that holds its
//! state in memory (the heap backend), so a `value()` or `update()` is a
//! hash-map access and a clone, not a copy of bytes and a MessagePack decode
//! and encode. The bytes are made only when a snapshot is written (by the
//! snapshot's writer thread, from the copy-on-write view), and they are the
//! same bytes the byte path would have stored, so snapshots, savepoints and
//! their golden fixtures do not change.
//!
//! A backend opts in per state ([`crate::KeyedStateBackend::register_typed`]);
//! backends that must hold bytes (an LSM) decline and the typed handles use
//! the byte-oriented methods as before. States with a TTL stay bytes (the
//! TTL timestamp is part of their stored value).
//!
//! Each (state, key group) of a typed state is a [`TypedGroup`]: a value
//! group (value, reducing and aggregating state: one `T` per key) or a list
//! group (list state: a `Vec<T>` per key), both paged copy-on-write maps
//! ([`crate::paged`]). Everything that still speaks bytes (restores, the
//! byte methods of the backend trait, tools) is served by encoding or
//! decoding one entry at a time.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, get_bytes, put_bytes};
use crate::error::StateError;
pub use crate::page_table::HashedKey;
use crate::paged::Paged;
use crate::snapshot_codec;

/// What a state's values must be to be kept as objects: serializable for
/// snapshots, cloneable because reads hand out copies, and shareable with
/// the snapshot writer thread.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be kept in keyed state",
    note = "state values are kept as objects and serialized when a snapshot is written: derive `Clone`, `serde::Serialize` and `serde::Deserialize` for `{Self}` (and keep it `Send + Sync`)"
)]
pub trait StateValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> StateValue for T {}

/// A value kept as an object, handed to a snapshot writer as it is: a
/// writer that knows the concrete type (a `u64` for an integer Parquet
/// column) takes it without the byte encoding; any other encodes it.
pub trait StoredObject {
    fn as_any(&self) -> &dyn Any;
    /// The stored bytes, the same the byte path keeps, into `out` (cleared first).
    fn encode(&self, state: &str, out: &mut Vec<u8>) -> Result<(), StateError>;
}

impl<T: StateValue> StoredObject for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self, state: &str, out: &mut Vec<u8>) -> Result<(), StateError> {
        codec::encode_into(state, self, out)
    }
}

/// Receives one key and its value object ([`TypedGroup::for_each_object`]).
pub type ObjectSink<'a> = dyn FnMut(&[u8], &dyn StoredObject) -> Result<(), StateError> + 'a;

/// The objects of one (state, key group). The byte methods see the same
/// bytes the byte path would store for the entry. Handles reach the concrete
/// group by upcasting to `dyn Any` and down-casting.
pub trait TypedGroup: Any + Send + Sync {
    /// A read-only copy-on-write view for a snapshot (shares the pages;
    /// this group copies a page on its next write to it).
    fn share(&mut self) -> Box<dyn TypedGroup>;
    /// Number of keys.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn contains(&self, key: &[u8]) -> bool;
    /// Start fetching the memory `key`'s entry would be in, without waiting
    /// for it (a hint; see [`crate::backend::KeyedStateBackend::prefetch`]).
    fn prefetch(&self, key: HashedKey<'_>);
    fn remove(&mut self, key: &[u8]);
    fn for_each_key(&self, visit: &mut dyn FnMut(&[u8]));
    /// The stored value of `key` as bytes, into `out`; false when absent.
    fn get_bytes(&self, state: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError>;
    /// Set `key` from stored bytes.
    fn put_bytes(&mut self, state: &str, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Append stored list bytes (length-prefixed elements) to `key`.
    fn append_bytes(&mut self, state: &str, key: &[u8], bytes: &[u8]) -> Result<(), StateError>;
    /// The group in the snapshot encoding ([`crate::snapshot_codec`]), into `buf` (cleared first).
    fn encode(&self, state: &str, buf: &mut Vec<u8>) -> Result<(), StateError>;
    /// Visit every key with its value object when the group holds one
    /// value per key; `false`, visiting nothing, when it does not (a list
    /// group), and the caller encodes the group instead.
    fn for_each_object(&self, visit: &mut ObjectSink<'_>) -> Result<bool, StateError> {
        let _ = visit;
        Ok(false)
    }
    /// Make room for `additional` more keys (a restore knows how many).
    fn reserve(&mut self, additional: usize);
}

/// Makes the empty typed groups of one state; knows the value type.
pub trait TypedKind: Send + Sync {
    /// The Rust type kept (a state cannot be kept as two types).
    fn value_type(&self) -> TypeId;
    fn type_name(&self) -> &'static str;
    fn empty(&self) -> Box<dyn TypedGroup>;
}

/// One `T` per key: value, reducing and aggregating state.
pub struct ValueGroup<T>(pub(crate) Paged<T>);

/// A `Vec<T>` per key: list state.
pub struct ListGroup<T>(pub(crate) Paged<Vec<T>>);

impl<T: StateValue> ValueGroup<T> {
    #[inline]
    pub fn get(&self, key: HashedKey<'_>) -> Option<&T> {
        self.0.get(key)
    }
    /// The value and a hint to its slot for [`ValueGroup::insert_hinted`].
    #[inline]
    pub fn get_indexed(&self, key: HashedKey<'_>) -> Option<(&T, usize)> {
        self.0.get_indexed(key)
    }
    #[inline]
    pub fn get_mut(&mut self, key: HashedKey<'_>) -> Option<&mut T> {
        self.0.get_mut(key)
    }
    #[inline]
    pub fn get_or_insert_with(&mut self, key: HashedKey<'_>, make: impl FnOnce() -> T) -> &mut T {
        self.0.get_or_insert_with(key, make)
    }
    #[inline]
    pub fn insert(&mut self, key: HashedKey<'_>, value: T) {
        self.0.insert(key, value)
    }
    /// Insert after [`ValueGroup::get_indexed`] of the same key gave `hint`.
    #[inline]
    pub fn insert_hinted(&mut self, key: HashedKey<'_>, value: T, hint: usize) {
        self.0.insert_hinted(key, value, hint)
    }
    #[inline]
    pub fn remove(&mut self, key: HashedKey<'_>) -> Option<T> {
        self.0.remove(key)
    }
}

impl<T: StateValue> ListGroup<T> {
    #[inline]
    pub fn get(&self, key: HashedKey<'_>) -> Option<&Vec<T>> {
        self.0.get(key)
    }
    /// Append `value`; true when the key's list had no element before.
    #[inline]
    pub fn push(&mut self, key: HashedKey<'_>, value: T) -> bool {
        let values = self.0.get_or_insert_with(key, Vec::new);
        values.push(value);
        values.len() == 1
    }
    #[inline]
    pub fn set(&mut self, key: HashedKey<'_>, values: Vec<T>) {
        if values.is_empty() {
            self.0.remove(key);
        } else {
            self.0.insert(key, values)
        }
    }
    #[inline]
    pub fn remove(&mut self, key: HashedKey<'_>) -> Option<Vec<T>> {
        self.0.remove(key)
    }
}

fn wrong_kind(state: &str, what: &str) -> StateError {
    StateError::Usage(format!("state '{state}' {what}; use the matching state handle"))
}

impl<T: StateValue> TypedGroup for ValueGroup<T> {
    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
    fn share(&mut self) -> Box<dyn TypedGroup> {
        Box::new(ValueGroup(self.0.share()))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn contains(&self, key: &[u8]) -> bool {
        self.0.contains_key(HashedKey::new(key))
    }
    #[inline]
    fn prefetch(&self, key: HashedKey<'_>) {
        self.0.prefetch(key.hash());
    }
    fn remove(&mut self, key: &[u8]) {
        self.0.remove(HashedKey::new(key));
    }
    fn for_each_key(&self, visit: &mut dyn FnMut(&[u8])) {
        self.0.iter().for_each(|(k, _)| visit(k))
    }
    fn get_bytes(&self, state: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        match self.0.get(HashedKey::new(key)) {
            Some(v) => codec::encode_into(state, v, out).map(|()| true),
            None => Ok(false),
        }
    }
    fn put_bytes(&mut self, state: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let v: T = codec::decode(state, value)?;
        self.0.insert(HashedKey::new(key), v);
        Ok(())
    }
    fn append_bytes(&mut self, state: &str, _key: &[u8], _bytes: &[u8]) -> Result<(), StateError> {
        Err(wrong_kind(state, "holds one value per key, not a list"))
    }
    fn for_each_object(&self, visit: &mut ObjectSink<'_>) -> Result<bool, StateError> {
        for (k, v) in self.0.iter() {
            visit(k, v)?;
        }
        Ok(true)
    }
    fn encode(&self, state: &str, buf: &mut Vec<u8>) -> Result<(), StateError> {
        buf.clear();
        for (k, v) in self.0.iter() {
            // `put_entry(key, encode(v))`, with the value encoded in place:
            // one length byte is reserved and widened when the value is longer.
            put_bytes(buf, k);
            let at = buf.len();
            buf.push(0);
            codec::append(state, v, buf)?;
            let len = buf.len() - at - 1;
            if len < 0x80 {
                buf[at] = len as u8;
            } else {
                let mut prefix = Vec::with_capacity(10);
                codec::put_varint(&mut prefix, len as u64);
                buf.splice(at..at + 1, prefix);
            }
        }
        Ok(())
    }
}

/// Decode length-prefixed list elements.
fn decode_elements<T: StateValue>(state: &str, mut bytes: &[u8], out: &mut Vec<T>) -> Result<(), StateError> {
    while !bytes.is_empty() {
        let (elem, rest) = get_bytes(bytes).ok_or_else(|| StateError::Codec {
            state: state.to_string(),
            detail: "list element framing is corrupt".into(),
        })?;
        out.push(codec::decode(state, elem)?);
        bytes = rest;
    }
    Ok(())
}

/// Length-prefixed elements, as list state stores them.
fn encode_elements<T: StateValue>(
    state: &str,
    values: &[T],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), StateError> {
    for v in values {
        codec::encode_into(state, v, scratch)?;
        put_bytes(out, scratch);
    }
    Ok(())
}

impl<T: StateValue> TypedGroup for ListGroup<T> {
    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
    fn share(&mut self) -> Box<dyn TypedGroup> {
        Box::new(ListGroup(self.0.share()))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn contains(&self, key: &[u8]) -> bool {
        self.0.contains_key(HashedKey::new(key))
    }
    #[inline]
    fn prefetch(&self, key: HashedKey<'_>) {
        self.0.prefetch(key.hash());
    }
    fn remove(&mut self, key: &[u8]) {
        self.0.remove(HashedKey::new(key));
    }
    fn for_each_key(&self, visit: &mut dyn FnMut(&[u8])) {
        self.0.iter().for_each(|(k, _)| visit(k))
    }
    fn get_bytes(&self, state: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        match self.0.get(HashedKey::new(key)) {
            Some(values) => {
                out.clear();
                encode_elements(state, values, &mut Vec::new(), out)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn put_bytes(&mut self, state: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let mut values = Vec::new();
        decode_elements(state, value, &mut values)?;
        // An empty stored list is still a present key, as in the byte path.
        self.0.insert(HashedKey::new(key), values);
        Ok(())
    }
    fn append_bytes(&mut self, state: &str, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let mut more = Vec::new();
        decode_elements(state, bytes, &mut more)?;
        self.0.get_or_insert_with(HashedKey::new(key), Vec::new).extend(more);
        Ok(())
    }
    fn encode(&self, state: &str, buf: &mut Vec<u8>) -> Result<(), StateError> {
        buf.clear();
        let (mut scratch, mut value) = (Vec::new(), Vec::new());
        for (k, values) in self.0.iter() {
            value.clear();
            encode_elements(state, values, &mut scratch, &mut value)?;
            snapshot_codec::put_entry(buf, k, &value);
        }
        Ok(())
    }
}

/// The kind of [`ValueGroup<T>`].
pub struct ValueKind<T>(PhantomData<fn() -> T>);
/// The kind of [`ListGroup<T>`].
pub struct ListKind<T>(PhantomData<fn() -> T>);

impl<T> Default for ValueKind<T> {
    fn default() -> Self {
        ValueKind(PhantomData)
    }
}

impl<T> Default for ListKind<T> {
    fn default() -> Self {
        ListKind(PhantomData)
    }
}

impl<T: StateValue> TypedKind for ValueKind<T> {
    fn value_type(&self) -> TypeId {
        TypeId::of::<ValueGroup<T>>()
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn empty(&self) -> Box<dyn TypedGroup> {
        Box::new(ValueGroup::<T>(Paged::default()))
    }
}

impl<T: StateValue> TypedKind for ListKind<T> {
    fn value_type(&self) -> TypeId {
        TypeId::of::<ListGroup<T>>()
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn empty(&self) -> Box<dyn TypedGroup> {
        Box::new(ListGroup::<T>(Paged::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Profile {
        name: String,
        visits: u32,
    }

    #[test]
    fn value_bytes_are_the_codec_bytes() {
        let mut g = ValueGroup::<Profile>(Paged::default());
        let p = Profile {
            name: "ann".into(),
            visits: 3,
        };
        g.insert(HashedKey::new(b"k1"), p.clone());
        let mut out = Vec::new();
        assert!(g.get_bytes("s", b"k1", &mut out).unwrap());
        let mut want = Vec::new();
        codec::encode_into("s", &p, &mut want).unwrap();
        assert_eq!(out, want);
        assert!(!g.get_bytes("s", b"k2", &mut out).unwrap());
        g.put_bytes("s", b"k2", &want).unwrap();
        assert_eq!(g.get(HashedKey::new(b"k2")), Some(&p));
        let err = g.put_bytes("s", b"k3", &[0xc1]).unwrap_err().to_string();
        assert!(err.contains("'s'") && err.contains("Profile"), "{err}");
    }

    #[test]
    fn a_value_group_encodes_as_entries_of_codec_bytes_short_and_long() {
        let mut g = ValueGroup::<String>(Paged::default());
        let (short, long) = ("ab".to_string(), "x".repeat(300));
        g.insert(HashedKey::new(b"k1"), short.clone());
        g.insert(HashedKey::new(b"k2"), long.clone());
        let mut got = Vec::new();
        g.encode("s", &mut got).unwrap();
        let mut entries = Vec::new();
        snapshot_codec::decode_group("s", crate::StateKind::Value, &got, &mut |d| {
            if let snapshot_codec::Decoded::Entry { key, value } = d {
                entries.push((key.to_vec(), value.to_vec()));
            }
            Ok(())
        })
        .unwrap();
        entries.sort();
        let enc = |v: &String| {
            let mut b = Vec::new();
            codec::encode_into("s", v, &mut b).unwrap();
            b
        };
        assert_eq!(
            entries,
            vec![(b"k1".to_vec(), enc(&short)), (b"k2".to_vec(), enc(&long))]
        );
    }

    #[test]
    fn list_bytes_are_length_prefixed_codec_elements() {
        let mut g = ListGroup::<u64>(Paged::default());
        g.push(HashedKey::new(b"k"), 1);
        g.push(HashedKey::new(b"k"), 300);
        let mut out = Vec::new();
        assert!(g.get_bytes("s", b"k", &mut out).unwrap());
        let mut want = Vec::new();
        for v in [1u64, 300] {
            let mut e = Vec::new();
            codec::encode_into("s", &v, &mut e).unwrap();
            put_bytes(&mut want, &e);
        }
        assert_eq!(out, want);
        g.append_bytes("s", b"k", &want).unwrap();
        assert_eq!(g.get(HashedKey::new(b"k")), Some(&vec![1, 300, 1, 300]));
        let mut encoded = Vec::new();
        g.encode("s", &mut encoded).unwrap();
        let mut back = Vec::new();
        snapshot_codec::decode_group("s", crate::StateKind::List, &encoded, &mut |d| {
            if let snapshot_codec::Decoded::Entry { key, value } = d {
                back.push((key.to_vec(), value.to_vec()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, b"k");
        let mut again = ListGroup::<u64>(Paged::default());
        again.put_bytes("s", b"k", &back[0].1).unwrap();
        assert_eq!(again.get(HashedKey::new(b"k")), Some(&vec![1, 300, 1, 300]));
    }
}
