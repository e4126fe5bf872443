//! Row keys of the RocksDB backend (spec: `docs/formats/rocksdb-snapshot.md`).
//!
//! Every row starts with its key group as a big-endian `u16` (max parallelism
//! is at most 32768), so the rows of a subtask's key groups are one contiguous
//! range of every column family: restoring, rescaling and dropping key groups
//! are range operations, and a key group's rows can be scanned in order.
//!
//! - value and list states: `kg ‖ key` — the key bytes (with their namespace)
//!   as the typed layer gives them, so keys of one key group sort by their
//!   bytes (timers rely on that: their keys start with the timestamp);
//! - map states: `kg ‖ varint(len(key)) ‖ key ‖ user key` — one row per map
//!   entry, so a map entry is a point lookup and a key's whole map is a
//!   prefix scan in user-key byte order. The length prefix (LEB128, a prefix
//!   code) keeps one key's rows from running into another key's.

use cairn_state::codec::{get_varint, put_varint};

/// Bytes of the key-group prefix.
pub const KEY_GROUP_PREFIX_LEN: usize = 2;

/// The prefix of every row of key group `kg` (`kg < 65536`).
#[inline]
pub fn group_prefix(kg: u32) -> [u8; KEY_GROUP_PREFIX_LEN] {
    debug_assert!(kg <= u16::MAX as u32);
    (kg as u16).to_be_bytes()
}

/// The first row key past the key groups `..end_exclusive`: rows of groups
/// `start..end_exclusive` lie in `[group_prefix(start), group_bound(end_exclusive))`.
#[inline]
pub fn group_bound(end_exclusive: u32) -> Vec<u8> {
    if end_exclusive > u16::MAX as u32 {
        // Past every key group: one byte more than any two-byte prefix.
        vec![0xff, 0xff, 0xff]
    } else {
        group_prefix(end_exclusive).to_vec()
    }
}

/// The key group of a row.
#[inline]
pub fn row_key_group(row: &[u8]) -> Option<u32> {
    row.get(..KEY_GROUP_PREFIX_LEN)
        .map(|p| u16::from_be_bytes([p[0], p[1]]) as u32)
}

/// Row of a value or list state entry.
#[inline]
pub fn value_row(kg: u32, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&group_prefix(kg));
    out.extend_from_slice(key);
}

/// The key of a value or list state row.
#[inline]
pub fn value_row_key(row: &[u8]) -> &[u8] {
    &row[KEY_GROUP_PREFIX_LEN.min(row.len())..]
}

/// The common prefix of the rows of one key's map.
#[inline]
pub fn map_prefix(kg: u32, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&group_prefix(kg));
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
}

/// Row of one map entry.
#[inline]
pub fn map_row(kg: u32, key: &[u8], user_key: &[u8], out: &mut Vec<u8>) {
    map_prefix(kg, key, out);
    out.extend_from_slice(user_key);
}

/// Splits a map row into (key, user key); `None` when it is malformed.
pub fn split_map_row(row: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = row.get(KEY_GROUP_PREFIX_LEN..)?;
    let (len, used) = get_varint(rest)?;
    let rest = &rest[used..];
    let len = usize::try_from(len).ok()?;
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// The smallest byte string greater than every string starting with `prefix`
/// (`None` when there is none: the prefix is all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_prefixes_sort_by_key_group() {
        let mut rows = Vec::new();
        for kg in [0u32, 1, 255, 256, 32767] {
            let mut r = Vec::new();
            value_row(kg, b"\xff\xff", &mut r);
            rows.push(r);
        }
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows, sorted);
        assert_eq!(row_key_group(&rows[3]), Some(256));
        assert!(group_bound(32768) > rows[4]);
        assert!(group_bound(65536) > vec![0xff, 0xff, 0xff - 1]);
    }

    #[test]
    fn map_rows_of_one_key_never_interleave_with_another_key() {
        // "ab" with user key "c" and "abc" with user key "" must differ and
        // each key's prefix scan must see only its own rows.
        let (mut a, mut b, mut pa, mut pb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        map_row(3, b"ab", b"c", &mut a);
        map_row(3, b"abc", b"", &mut b);
        map_prefix(3, b"ab", &mut pa);
        map_prefix(3, b"abc", &mut pb);
        assert_ne!(a, b);
        assert!(a.starts_with(&pa) && !b.starts_with(&pa));
        assert!(b.starts_with(&pb) && !a.starts_with(&pb));
        assert_eq!(split_map_row(&a), Some((&b"ab"[..], &b"c"[..])));
        assert_eq!(split_map_row(&b), Some((&b"abc"[..], &b""[..])));
        assert_eq!(split_map_row(&[0, 3, 9, 1]), None, "length beyond the row");
        // A 200-byte key needs a two-byte length.
        let long = vec![7u8; 200];
        map_row(1, &long, b"u", &mut a);
        assert_eq!(split_map_row(&a), Some((&long[..], &b"u"[..])));
    }

    #[test]
    fn successors() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
