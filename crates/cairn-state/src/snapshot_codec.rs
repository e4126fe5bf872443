//! The byte encoding of one key group of one state inside a snapshot, shared
//! by all backends so that any backend can restore any other's snapshot.
//!
//! Value and list states: a sequence of `bytes(key) bytes(value)`.
//! Map states: a sequence of `bytes(key) varint(n) n × (bytes(user_key) bytes(value))`.
//! `bytes(x)` is a LEB128 length followed by the bytes.

use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};
use crate::descriptor::StateKind;
use crate::error::StateError;

/// Append one value or list entry.
pub fn put_entry(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_bytes(buf, key);
    put_bytes(buf, value);
}

/// Append one key's map with its entries.
pub fn put_map<'a>(buf: &mut Vec<u8>, key: &[u8], entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>) {
    put_bytes(buf, key);
    put_varint(buf, entries.len() as u64);
    for (k, v) in entries {
        put_bytes(buf, k);
        put_bytes(buf, v);
    }
}

/// One decoded record of a group's encoding.
pub enum Decoded<'a> {
    /// A value or list entry.
    Entry { key: &'a [u8], value: &'a [u8] },
    /// One entry of a key's map.
    MapEntry {
        key: &'a [u8],
        user_key: &'a [u8],
        value: &'a [u8],
    },
}

/// Decode a group's encoding, calling `visit` for each record.
pub fn decode_group(
    state: &str,
    kind: StateKind,
    mut bytes: &[u8],
    visit: &mut dyn FnMut(Decoded<'_>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let corrupt = || StateError::Restore(format!("state '{state}': snapshot entries are truncated or corrupt"));
    while !bytes.is_empty() {
        let (key, rest) = get_bytes(bytes).ok_or_else(corrupt)?;
        match kind {
            StateKind::Value | StateKind::List => {
                let (value, rest) = get_bytes(rest).ok_or_else(corrupt)?;
                visit(Decoded::Entry { key, value })?;
                bytes = rest;
            }
            StateKind::Map => {
                let (n, used) = get_varint(rest).ok_or_else(corrupt)?;
                let mut rest = &rest[used..];
                for _ in 0..n {
                    let (user_key, r) = get_bytes(rest).ok_or_else(corrupt)?;
                    let (value, r) = get_bytes(r).ok_or_else(corrupt)?;
                    visit(Decoded::MapEntry { key, user_key, value })?;
                    rest = r;
                }
                bytes = rest;
            }
        }
    }
    Ok(())
}
