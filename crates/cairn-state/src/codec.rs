//! The value codec: how user values become state bytes. Cairn uses bincode 1
//! (fixed-width little-endian integers), the same encoding as key bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StateError;

/// Encode `value` into `buf` (cleared first).
pub fn encode_into<T: Serialize>(state: &str, value: &T, buf: &mut Vec<u8>) -> Result<(), StateError> {
    buf.clear();
    bincode::serialize_into(&mut *buf, value).map_err(|e| StateError::Codec {
        state: state.to_string(),
        detail: e.to_string(),
    })
}

/// Append the encoding of `value` to `buf`.
pub fn append<T: Serialize>(state: &str, value: &T, buf: &mut Vec<u8>) -> Result<(), StateError> {
    bincode::serialize_into(&mut *buf, value).map_err(|e| StateError::Codec {
        state: state.to_string(),
        detail: e.to_string(),
    })
}

/// Decode a value, naming the state and type when the bytes do not fit.
pub fn decode<T: DeserializeOwned>(state: &str, bytes: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(bytes).map_err(|e| StateError::Codec {
        state: state.to_string(),
        detail: format!("as {}: {e}", std::any::type_name::<T>()),
    })
}

/// Append a LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Read a LEB128 varint, returning it and the bytes consumed.
pub fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Append a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Read a length-prefixed byte string, returning it and the rest.
pub fn get_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = get_varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    let rest = &bytes[n..];
    if rest.len() < len {
        return None;
    }
    Some((&rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [0u64, 1, 127, 128, 300, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(get_varint(&b), Some((v, b.len())));
        }
        assert_eq!(get_varint(&[0x80]), None, "truncated varint is rejected");
    }

    #[test]
    fn decode_error_names_state_and_type() {
        let err = decode::<u64>("count", &[1, 2]).unwrap_err().to_string();
        assert!(err.contains("count") && err.contains("u64"), "{err}");
    }
}
