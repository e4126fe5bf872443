//! The value codec: how user values become state bytes, and the one place
//! that knows that encoding.
//!
//! * **Values** (value/list/map/reducing/aggregating state values, map user
//!   keys, operator list elements, broadcast keys and values) are MessagePack
//!   with named struct fields (`rmp_serde::encode::write_named`): structs are
//!   maps keyed by field name, so a struct that gains a `#[serde(default)]`
//!   field or loses a field still decodes, in native snapshots and canonical
//!   savepoints alike. Integers use the smallest MessagePack representation
//!   whatever their Rust width, so equal values have equal bytes.
//! * **Keys** (the key of a keyed stream) use [`crate::key_encoding`] (bincode
//!   1.x's layout), because their bytes are hashed into key groups (see
//!   `docs/key-groups.md` and [`crate::keygroup::key_bytes`]); [`decode_key`]
//!   reads them back.
//!
//! For the canonical savepoint format, [`msgpack_to_json`] and
//! [`json_to_msgpack`] convert value bytes to JSON text and back without
//! knowing the type (conventions in `docs/formats/savepoint-canonical.md`).

use std::io::Write as _;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::error::StateError;

/// Encode `value` into `buf` (cleared first).
pub fn encode_into<T: Serialize + ?Sized>(state: &str, value: &T, buf: &mut Vec<u8>) -> Result<(), StateError> {
    buf.clear();
    append(state, value, buf)
}

/// Append the encoding of `value` to `buf`.
pub fn append<T: Serialize + ?Sized>(state: &str, value: &T, buf: &mut Vec<u8>) -> Result<(), StateError> {
    rmp_serde::encode::write_named(buf, value).map_err(|e| StateError::Codec {
        state: state.to_string(),
        detail: format!("encoding a {}: {e}", std::any::type_name::<T>()),
    })
}

/// Decode a value, naming the state and type when the bytes do not fit.
pub fn decode<T: DeserializeOwned>(state: &str, bytes: &[u8]) -> Result<T, StateError> {
    rmp_serde::from_slice(bytes).map_err(|e| StateError::Codec {
        state: state.to_string(),
        detail: format!(
            "the stored value does not decode as {}: {e} (was the type changed incompatibly? \
             adding a field with #[serde(default)] or removing a field is compatible; \
             renaming or retyping one is not)",
            std::any::type_name::<T>()
        ),
    })
}

/// Decode key bytes (as [`crate::keygroup::key_bytes`] writes them), naming
/// `what` and the type when they do not fit.
pub fn decode_key<K: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<K, StateError> {
    crate::key_encoding::from_bytes(bytes).map_err(|e| StateError::Codec {
        state: what.to_string(),
        detail: format!("key bytes do not decode as {}: {e}", std::any::type_name::<K>()),
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

// ---------------------------------------------------------------------------
// MessagePack <-> JSON, without knowing the type
// ---------------------------------------------------------------------------

/// Special single-key JSON objects that carry what JSON cannot say directly.
/// A real map key starting with `$` is written with one more `$` in front.
pub const JSON_MAP: &str = "$map";
/// Binary data: `{"$bin": "<base64>"}`.
pub const JSON_BIN: &str = "$bin";
/// A MessagePack extension: `{"$ext": [type, "<base64>"]}`.
pub const JSON_EXT: &str = "$ext";
/// A non-finite float: `{"$float": "NaN" | "Infinity" | "-Infinity"}`.
pub const JSON_FLOAT: &str = "$float";

const MAX_DEPTH: usize = 128;

/// Append the JSON text of one MessagePack value (all of `bytes`) to `out`.
/// On error `out` may hold a partial value; truncate it.
pub fn msgpack_to_json(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut r = MpReader { b: bytes, pos: 0 };
    r.value(out, 0)?;
    if r.pos != bytes.len() {
        return Err(format!("{} bytes follow the MessagePack value", bytes.len() - r.pos));
    }
    Ok(())
}

/// Append the MessagePack encoding of the JSON text `json` to `out`: the
/// inverse of [`msgpack_to_json`] (byte for byte, except that float32 values
/// come back as float64, which decode into `f32` fields just the same).
pub fn json_to_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Transcode { out }.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct MpReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> MpReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.pos < n {
            return Err("MessagePack value is truncated".into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }
    fn count(&mut self, n: u64, per: u64) -> Result<usize, String> {
        let rest = (self.b.len() - self.pos) as u64;
        if n.saturating_mul(per) > rest {
            return Err(format!(
                "MessagePack container claims {n} elements but only {rest} bytes follow"
            ));
        }
        Ok(n as usize)
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("MessagePack value nests deeper than {MAX_DEPTH} levels"));
        }
        let m = self.u8()?;
        match m {
            0x00..=0x7f => write_int(out, false, u64::from(m)),
            0xe0..=0xff => write_i64(out, i64::from(m as i8)),
            0xc0 => out.extend_from_slice(b"null"),
            0xc2 => out.extend_from_slice(b"false"),
            0xc3 => out.extend_from_slice(b"true"),
            0xcc => write_int(out, false, self.be(1)?),
            0xcd => write_int(out, false, self.be(2)?),
            0xce => write_int(out, false, self.be(4)?),
            0xcf => write_int(out, false, self.be(8)?),
            0xd0 => write_i64(out, i64::from(self.be(1)? as u8 as i8)),
            0xd1 => write_i64(out, i64::from(self.be(2)? as u16 as i16)),
            0xd2 => write_i64(out, i64::from(self.be(4)? as u32 as i32)),
            0xd3 => write_i64(out, self.be(8)? as i64),
            0xca => {
                let f = f32::from_bits(self.be(4)? as u32);
                if f.is_finite() {
                    serde_json::to_writer(&mut *out, &f).map_err(|e| e.to_string())?;
                } else {
                    write_nonfinite(out, f64::from(f));
                }
            }
            0xcb => {
                let f = f64::from_bits(self.be(8)?);
                if f.is_finite() {
                    serde_json::to_writer(&mut *out, &f).map_err(|e| e.to_string())?;
                } else {
                    write_nonfinite(out, f);
                }
            }
            0xa0..=0xbf | 0xd9 | 0xda | 0xdb => {
                let n = match m {
                    0xd9 => self.be(1)?,
                    0xda => self.be(2)?,
                    0xdb => self.be(4)?,
                    _ => u64::from(m & 0x1f),
                };
                let s = self.take(n as usize)?;
                let s = std::str::from_utf8(s).map_err(|_| "a MessagePack string is not UTF-8".to_string())?;
                write_json_str(out, s);
            }
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))?;
                let b = self.take(n as usize)?;
                out.extend_from_slice(b"{\"$bin\":\"");
                base64_encode(b, out);
                out.extend_from_slice(b"\"}");
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                let n = match m {
                    0xc7 => self.be(1)?,
                    0xc8 => self.be(2)?,
                    0xc9 => self.be(4)?,
                    _ => 1u64 << (m - 0xd4),
                };
                let t = self.u8()? as i8;
                let b = self.take(n as usize)?;
                let _ = write!(out, "{{\"$ext\":[{t},\"");
                base64_encode(b, out);
                out.extend_from_slice(b"\"]}");
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = match m {
                    0xdc => self.be(2)?,
                    0xdd => self.be(4)?,
                    _ => u64::from(m & 0x0f),
                };
                let n = self.count(n, 1)?;
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, depth + 1)?;
                }
                out.push(b']');
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let n = match m {
                    0xde => self.be(2)?,
                    0xdf => self.be(4)?,
                    _ => u64::from(m & 0x0f),
                };
                let n = self.count(n, 2)?;
                let (start_out, start_pos) = (out.len(), self.pos);
                out.push(b'{');
                let mut as_object = true;
                for i in 0..n {
                    let k = self.b.get(self.pos).copied().unwrap_or(0);
                    if !matches!(k, 0xa0..=0xbf | 0xd9 | 0xda | 0xdb) {
                        as_object = false;
                        break;
                    }
                    if i > 0 {
                        out.push(b',');
                    }
                    // The key, with a `$` added in front of a leading `$`.
                    let before = out.len();
                    self.value(out, depth + 1)?;
                    if out.get(before + 1) == Some(&b'$') {
                        out.insert(before + 1, b'$');
                    }
                    out.push(b':');
                    self.value(out, depth + 1)?;
                }
                if as_object {
                    out.push(b'}');
                } else {
                    out.truncate(start_out);
                    self.pos = start_pos;
                    out.extend_from_slice(b"{\"$map\":[");
                    for i in 0..n {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.push(b'[');
                        self.value(out, depth + 1)?;
                        out.push(b',');
                        self.value(out, depth + 1)?;
                        out.push(b']');
                    }
                    out.extend_from_slice(b"]}");
                }
            }
            0xc1 => return Err("byte 0xc1 is not valid MessagePack".into()),
        }
        Ok(())
    }
}

/// Append the decimal digits of `v` (negative when `neg`).
fn write_int(out: &mut Vec<u8>, neg: bool, mut u: u64) {
    let mut buf = [0u8; 21];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    write_int(out, v < 0, v.unsigned_abs());
}

/// Append `v` as a JSON number.
pub fn write_json_i64(out: &mut Vec<u8>, v: i64) {
    write_i64(out, v);
}

fn write_nonfinite(out: &mut Vec<u8>, f: f64) {
    let s = if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    };
    let _ = write!(out, "{{\"$float\":\"{s}\"}}");
}

/// Append `s` as a JSON string (quoted and escaped).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(b: &[u8], out: &mut Vec<u8>) {
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        out.push(B64[(n >> 18) as usize & 63]);
        out.push(B64[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 { B64[(n >> 6) as usize & 63] } else { b'=' });
        out.push(if c.len() > 2 { B64[n as usize & 63] } else { b'=' });
    }
}

/// Decode standard base64 with padding.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.as_bytes();
    if s.len() & 3 != 0 {
        return Err("base64 text length is not a multiple of 4".into());
    }
    let val = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("'{}' is not a base64 character", c as char)),
        }
        .into())
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err("misplaced base64 padding".into());
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Ok(out)
}

fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v < 256 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 65536 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_sint(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        put_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= -128 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= -(1 << 31) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

fn put_len(
    out: &mut Vec<u8>,
    n: usize,
    fix: Option<(u8, usize)>,
    m8: Option<u8>,
    m16: u8,
    m32: u8,
) -> Result<(), String> {
    match fix {
        Some((base, lim)) if n < lim => out.push(base | n as u8),
        _ => match m8 {
            Some(m) if n < 256 => out.extend_from_slice(&[m, n as u8]),
            _ if n < 65536 => {
                out.push(m16);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                let n = u32::try_from(n).map_err(|_| format!("{n} is too long for MessagePack"))?;
                out.push(m32);
                out.extend_from_slice(&n.to_be_bytes());
            }
        },
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    put_len(out, s.len(), Some((0xa0, 32)), Some(0xd9), 0xda, 0xdb)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Place a container header for `n` elements at `at`, where 5 bytes were
/// reserved, moving the content that follows into place.
fn finish_container(out: &mut Vec<u8>, at: usize, n: usize, map: bool) -> Result<(), String> {
    let mut hdr = Vec::with_capacity(5);
    if map {
        put_len(&mut hdr, n, Some((0x80, 16)), None, 0xde, 0xdf)?;
    } else {
        put_len(&mut hdr, n, Some((0x90, 16)), None, 0xdc, 0xdd)?;
    }
    let content = at + 5;
    let len = out.len() - content;
    out.copy_within(content.., at + hdr.len());
    out.truncate(at + hdr.len() + len);
    out[at..at + hdr.len()].copy_from_slice(&hdr);
    Ok(())
}

/// Transcodes one JSON value into MessagePack as it is parsed.
struct Transcode<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        put_uint(self.out, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        put_sint(self.out, v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        put_f64(self.out, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        put_str(self.out, v).map_err(E::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut n = 0;
        while seq.next_element_seed(Transcode { out: &mut *self.out })?.is_some() {
            n += 1;
        }
        finish_container(self.out, at, n, false).map_err(de::Error::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut n = 0;
        while let Some(key) = map.next_key::<String>()? {
            if n == 0 && key.starts_with('$') && !key.starts_with("$$") {
                self.out.truncate(at);
                special(&key, &mut map, self.out)?;
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "the special object {{\"{key}\": ..}} must have no other key, found \"{k}\""
                    )));
                }
                return Ok(());
            }
            if key.starts_with('$') && !key.starts_with("$$") {
                return Err(de::Error::custom(format!(
                    "object key \"{key}\" starts with one '$' (reserved); a key that starts with '$' is written with '$$'"
                )));
            }
            let real = if key.starts_with("$$") { &key[1..] } else { &key[..] };
            put_str(self.out, real).map_err(de::Error::custom)?;
            map.next_value_seed(Transcode { out: &mut *self.out })?;
            n += 1;
        }
        finish_container(self.out, at, n, true).map_err(de::Error::custom)
    }
}

fn special<'de, A: MapAccess<'de>>(key: &str, map: &mut A, out: &mut Vec<u8>) -> Result<(), A::Error> {
    match key {
        JSON_MAP => map.next_value_seed(Pairs { out }),
        JSON_BIN => {
            let s: String = map.next_value()?;
            let b = base64_decode(&s).map_err(de::Error::custom)?;
            put_len(out, b.len(), None, Some(0xc4), 0xc5, 0xc6).map_err(de::Error::custom)?;
            out.extend_from_slice(&b);
            Ok(())
        }
        JSON_EXT => {
            let (t, s): (i8, String) = map.next_value()?;
            let b = base64_decode(&s).map_err(de::Error::custom)?;
            match b.len() {
                1 => out.push(0xd4),
                2 => out.push(0xd5),
                4 => out.push(0xd6),
                8 => out.push(0xd7),
                16 => out.push(0xd8),
                n => put_len(out, n, None, Some(0xc7), 0xc8, 0xc9).map_err(de::Error::custom)?,
            }
            out.push(t as u8);
            out.extend_from_slice(&b);
            Ok(())
        }
        JSON_FLOAT => {
            let s: String = map.next_value()?;
            let f = match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => {
                    return Err(de::Error::custom(format!(
                        "{{\"$float\": \"{other}\"}}: expected \"NaN\", \"Infinity\" or \"-Infinity\""
                    )))
                }
            };
            put_f64(out, f);
            Ok(())
        }
        other => Err(de::Error::custom(format!(
            "unknown special object key \"{other}\" (known: $map, $bin, $ext, $float; a real key starting with '$' is written with '$$')"
        ))),
    }
}

/// `[[key, value], ...]` of a `$map` object.
struct Pairs<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Pairs<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Pairs<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of [key, value] pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut n = 0;
        while seq.next_element_seed(Pair { out: &mut *self.out })?.is_some() {
            n += 1;
        }
        finish_container(self.out, at, n, true).map_err(de::Error::custom)
    }
}

struct Pair<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Pair<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Pair<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a [key, value] pair")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for what in ["key", "value"] {
            if seq.next_element_seed(Transcode { out: &mut *self.out })?.is_none() {
                return Err(de::Error::custom(format!("a $map pair has no {what}")));
            }
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a $map pair has more than two elements"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

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
        let mut b = Vec::new();
        encode_into("count", &"text", &mut b).unwrap();
        let err = decode::<u64>("count", &b).unwrap_err().to_string();
        assert!(err.contains("count") && err.contains("u64"), "{err}");
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Shape {
        Unit,
        Circle(f64),
        Rect { w: u32, h: u32 },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Rich {
        name: String,
        n: u64,
        neg: i32,
        small: i8,
        big: u64,
        ratio: f64,
        f: f32,
        nan: f64,
        flag: bool,
        none: Option<String>,
        some: Option<u16>,
        list: Vec<i64>,
        tuple: (u8, String),
        by_str: BTreeMap<String, u32>,
        by_int: BTreeMap<i32, String>,
        shapes: Vec<Shape>,
        dollar: BTreeMap<String, u8>,
        text: String,
        unit: (),
        wide: u128,
    }

    fn rich() -> Rich {
        Rich {
            name: "Zoë \"quoted\" \\ \n\t\u{1}".into(),
            n: 300,
            neg: -70000,
            small: -5,
            big: u64::MAX,
            ratio: 2.0,
            f: 0.1,
            nan: f64::NAN,
            flag: true,
            none: None,
            some: Some(65535),
            list: vec![i64::MIN, -33, -32, -1, 0, 127, 128, 255, 256, 65536, i64::MAX],
            tuple: (7, "x".repeat(40)),
            by_str: [("a".to_string(), 1), ("b".to_string(), 2)].into(),
            by_int: [(-1, "m".to_string()), (5, "p".to_string())].into(),
            shapes: vec![Shape::Unit, Shape::Circle(1.5), Shape::Rect { w: 2, h: 3 }],
            dollar: [("$map".to_string(), 1), ("$$x".to_string(), 2)].into(),
            text: "y".repeat(70000),
            unit: (),
            wide: u128::MAX - 5,
        }
    }

    #[test]
    fn msgpack_json_round_trip_is_byte_exact_for_every_shape() {
        let mut r = rich();
        r.f = 0.5; // exactly representable: the only lossy case is float32 width
        let mut mp = Vec::new();
        encode_into("s", &r, &mut mp).unwrap();
        let mut json = Vec::new();
        msgpack_to_json(&mp, &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["n"], 300);
        assert_eq!(v["by_int"]["$map"][0][0], -1);
        assert_eq!(v["dollar"]["$$map"], 1);
        assert_eq!(v["dollar"]["$$$x"], 2);
        assert_eq!(v["nan"]["$float"], "NaN");
        assert_eq!(v["shapes"][0], "Unit");
        assert_eq!(v["shapes"][2]["Rect"]["h"], 3);
        assert!(v["wide"]["$bin"].is_string());
        let mut back = Vec::new();
        json_to_msgpack(&json, &mut back).unwrap();
        // Byte-exact except f32 (written back as f64): compare by decoding and re-encoding.
        let decoded: Rich = decode("s", &back).unwrap();
        assert!(decoded.nan.is_nan());
        let mut again = Vec::new();
        encode_into("s", &decoded, &mut again).unwrap();
        assert_eq!(again, mp);
        // Without floats the bytes are identical.
        let plain = (
            r.name.clone(),
            r.list.clone(),
            r.by_int.clone(),
            r.shapes[2].clone(),
            r.text.clone(),
            r.wide,
        );
        let mut mp = Vec::new();
        encode_into("s", &plain, &mut mp).unwrap();
        let mut json = Vec::new();
        msgpack_to_json(&mp, &mut json).unwrap();
        let mut back = Vec::new();
        json_to_msgpack(&json, &mut back).unwrap();
        assert_eq!(back, mp);
    }

    #[test]
    fn float32_survives_as_the_same_value() {
        let mut mp = Vec::new();
        encode_into("s", &0.1f32, &mut mp).unwrap();
        let mut json = Vec::new();
        msgpack_to_json(&mp, &mut json).unwrap();
        assert_eq!(json, b"0.1");
        let mut back = Vec::new();
        json_to_msgpack(&json, &mut back).unwrap();
        assert_eq!(decode::<f32>("s", &back).unwrap(), 0.1f32);
    }

    #[test]
    fn bad_json_and_bad_msgpack_are_errors() {
        let mut out = Vec::new();
        for bad in [
            &b"{\"$nope\": 1}"[..],
            b"{\"$map\": [[1]]}",
            b"{\"$map\": [[1,2]], \"x\": 1}",
            b"{\"a\": 1, \"$bin\": \"\"}",
            b"{\"$bin\": \"abc\"}",
            b"{\"$float\": \"big\"}",
            b"[1,2",
            b"1 2",
        ] {
            out.clear();
            assert!(
                json_to_msgpack(bad, &mut out).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &[0xc1][..],
            &[0x92, 0x01],
            &[0xa3, b'a'],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0x01, 0x02],
            &[0xa1, 0xff],
        ] {
            out.clear();
            assert!(msgpack_to_json(bad, &mut out).is_err(), "{bad:?}");
        }
        let deep = vec![0x91u8; 10_000];
        assert!(msgpack_to_json(&deep, &mut out).is_err());
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..20 {
            let b: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            let mut s = Vec::new();
            base64_encode(&b, &mut s);
            assert_eq!(base64_decode(std::str::from_utf8(&s).unwrap()).unwrap(), b);
        }
        assert!(base64_decode("a=bc").is_err());
    }
}
