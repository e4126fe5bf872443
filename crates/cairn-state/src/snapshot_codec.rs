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
/// How many keys a group in this encoding holds (a cheap walk over the
/// lengths), so a restore can size its tables first;
/// `None` when the bytes are truncated ([`decode_group`] then names it).
pub fn count_keys(kind: StateKind, mut bytes: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !bytes.is_empty() {
        let (_, rest) = get_bytes(bytes)?;
        bytes = match kind {
            StateKind::Value | StateKind::List => get_bytes(rest)?.1,
            StateKind::Map => {
                let (entries, used) = get_varint(rest)?;
                let mut rest = rest.get(used..)?;
                for _ in 0..entries {
                    rest = get_bytes(get_bytes(rest)?.1)?.1;
                }
                rest
            }
        };
        n += 1;
    }
    Some(n)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_keys_counts_what_decode_group_visits_and_refuses_truncated_groups() {
        let mut values = Vec::new();
        for i in 0..300u32 {
            put_entry(&mut values, &i.to_le_bytes(), &vec![7; i as usize % 200]);
        }
        assert_eq!(count_keys(StateKind::Value, &values), Some(300));
        let mut maps = Vec::new();
        put_map(&mut maps, b"a", [(&b"x"[..], &b"1"[..]), (b"y", b"22")].into_iter());
        put_map(&mut maps, b"b", std::iter::empty());
        put_map(&mut maps, b"c", [(&b"z"[..], &b""[..])].into_iter());
        assert_eq!(count_keys(StateKind::Map, &maps), Some(3));
        let mut visited = 0;
        decode_group("m", StateKind::Map, &maps, &mut |_| {
            visited += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(visited, 3, "map entries (the empty map has none)");
        assert_eq!(count_keys(StateKind::Value, &values[..values.len() - 1]), None);
        assert_eq!(count_keys(StateKind::Map, &maps[..maps.len() - 1]), None);
        assert_eq!(count_keys(StateKind::List, &[]), Some(0));
    }
}
