//! The MessagePack subset the value codec writes (`rmp_serde` with named
//! fields), read and written byte for byte as `rmp` does: integers in their
//! smallest form (non-negative ones unsigned), strings, binaries, arrays and
//! maps with the shortest length header, `f32` and `f64` kept apart.

/// One MessagePack item; containers give their length, their items follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    Nil,
    Bool(bool),
    /// Any non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(u32),
    Map(u32),
    Ext(i8, &'a [u8]),
}

/// Reads items from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
    pub pos: usize,
}

fn truncated() -> String {
    "MessagePack value is truncated".into()
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(truncated)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }

    fn len_of(&mut self, n: usize) -> Result<usize, String> {
        usize::try_from(self.be(n)?).map_err(|_| "MessagePack length is too large".to_string())
    }

    /// The next item.
    pub fn next_item(&mut self) -> Result<Item<'a>, String> {
        let m = *self.take(1)?.first().ok_or_else(truncated)?;
        Ok(match m {
            0x00..=0x7f => Item::UInt(u64::from(m)),
            0x80..=0x8f => Item::Map(u32::from(m & 0x0f)),
            0x90..=0x9f => Item::Array(u32::from(m & 0x0f)),
            0xa0..=0xbf => Item::Str(self.take(usize::from(m & 0x1f))?),
            0xc0 => Item::Nil,
            0xc2 => Item::Bool(false),
            0xc3 => Item::Bool(true),
            0xc4 => {
                let n = self.len_of(1)?;
                Item::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = self.len_of(2)?;
                Item::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = self.len_of(4)?;
                Item::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len_of(match m {
                    0xc7 => 1,
                    0xc8 => 2,
                    _ => 4,
                })?;
                let t = self.take(1)?[0] as i8;
                Item::Ext(t, self.take(n)?)
            }
            0xca => Item::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Item::F64(f64::from_bits(self.be(8)?)),
            0xcc => Item::UInt(self.be(1)?),
            0xcd => Item::UInt(self.be(2)?),
            0xce => Item::UInt(self.be(4)?),
            0xcf => Item::UInt(self.be(8)?),
            0xd0 => signed(self.be(1)? as u8 as i8 as i64),
            0xd1 => signed(self.be(2)? as u16 as i16 as i64),
            0xd2 => signed(self.be(4)? as u32 as i32 as i64),
            0xd3 => signed(self.be(8)? as i64),
            0xd4..=0xd8 => {
                let n = 1usize << (m - 0xd4);
                let t = self.take(1)?[0] as i8;
                Item::Ext(t, self.take(n)?)
            }
            0xd9 => {
                let n = self.len_of(1)?;
                Item::Str(self.take(n)?)
            }
            0xda => {
                let n = self.len_of(2)?;
                Item::Str(self.take(n)?)
            }
            0xdb => {
                let n = self.len_of(4)?;
                Item::Str(self.take(n)?)
            }
            0xdc => Item::Array(self.be(2)? as u32),
            0xdd => Item::Array(self.be(4)? as u32),
            0xde => Item::Map(self.be(2)? as u32),
            0xdf => Item::Map(self.be(4)? as u32),
            0xe0..=0xff => Item::Int(i64::from(m as i8)),
            0xc1 => return Err("MessagePack marker 0xc1 is never used".into()),
        })
    }

    /// Skip one whole value (with everything nested in it).
    pub fn skip(&mut self) -> Result<(), String> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            match self.next_item()? {
                Item::Array(n) => pending += u64::from(n),
                Item::Map(n) => pending += 2 * u64::from(n),
                _ => {}
            }
        }
        Ok(())
    }
}

fn signed(v: i64) -> Item<'static> {
    if v >= 0 {
        Item::UInt(v as u64)
    } else {
        Item::Int(v)
    }
}

/// The value of `bytes` when they are exactly one MessagePack unsigned
/// integer (positive fixint or uint 8/16/32/64), what [`Reader::next_item`]
/// reads as `Item::UInt` with nothing after it.
#[inline]
pub fn whole_uint(bytes: &[u8]) -> Option<u64> {
    let (&m, rest) = bytes.split_first()?;
    match (m, rest.len()) {
        (0x00..=0x7f, 0) => Some(u64::from(m)),
        (0xcc, 1) => Some(u64::from(rest[0])),
        (0xcd, 2) => Some(u64::from(u16::from_be_bytes([rest[0], rest[1]]))),
        (0xce, 4) => Some(u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))),
        (0xcf, 8) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// The bytes of the string when `bytes` are exactly one MessagePack
/// string (fixstr or str 8/16/32), what [`Reader::next_item`] reads as
/// `Item::Str` with nothing after it.
#[inline]
pub fn whole_str(bytes: &[u8]) -> Option<&[u8]> {
    let (&m, rest) = bytes.split_first()?;
    let (len, body) = match m {
        0xa0..=0xbf => (usize::from(m & 0x1f), rest),
        0xd9 => (usize::from(*rest.first()?), rest.get(1..)?),
        0xda => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        0xdb => (
            usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?,
            rest.get(4..)?,
        ),
        _ => return None,
    };
    (body.len() == len).then_some(body)
}

pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_sint(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    out.push(0xca);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

fn write_len(out: &mut Vec<u8>, n: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) {
    match fix {
        Some((base, limit)) if n < limit => out.push(base | n as u8),
        _ => match m8 {
            Some(m) if n <= usize::from(u8::MAX) => out.extend_from_slice(&[m, n as u8]),
            _ if n <= usize::from(u16::MAX) => {
                out.push(m16);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m32);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        },
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    write_len(out, s.len(), Some((0xa0, 32)), Some(0xd9), 0xda, 0xdb);
    out.extend_from_slice(s);
}

pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    write_len(out, b.len(), None, Some(0xc4), 0xc5, 0xc6);
    out.extend_from_slice(b);
}

pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    write_len(out, n, Some((0x90, 16)), None, 0xdc, 0xdd);
}

pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    write_len(out, n, Some((0x80, 16)), None, 0xde, 0xdf);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every writer matches the bytes `rmp_serde` produces for the same value.
    #[test]
    fn writers_match_the_value_codec() {
        fn codec<T: serde::Serialize>(v: &T) -> Vec<u8> {
            let mut b = Vec::new();
            cairn_state::codec::append("t", v, &mut b).unwrap();
            b
        }
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            write_uint(&mut b, v);
            assert_eq!(b, codec(&v), "{v}");
        }
        for v in [
            0i64,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
            5,
            300,
        ] {
            let mut b = Vec::new();
            write_sint(&mut b, v);
            assert_eq!(b, codec(&v), "{v}");
        }
        for n in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
            let s = "x".repeat(n);
            let mut b = Vec::new();
            write_str(&mut b, s.as_bytes());
            assert_eq!(b, codec(&s), "str {n}");
            let v = vec![0u8; n];
            let mut b = Vec::new();
            write_array_len(&mut b, n);
            for _ in 0..n {
                write_uint(&mut b, 0);
            }
            assert_eq!(b, codec(&v), "array {n}");
        }
        let mut b = Vec::new();
        write_f32(&mut b, 1.5);
        assert_eq!(b, codec(&1.5f32));
        let mut b = Vec::new();
        write_f64(&mut b, -0.25);
        assert_eq!(b, codec(&-0.25f64));
        let mut r = Reader::new(&[0x92, 0x01, 0xa1, b'a']);
        assert_eq!(r.next_item().unwrap(), Item::Array(2));
        assert_eq!(r.next_item().unwrap(), Item::UInt(1));
        assert_eq!(r.next_item().unwrap(), Item::Str(b"a"));
        assert!(r.at_end());
        assert!(Reader::new(&[0xd9, 5, b'a']).next_item().is_err(), "truncated");
    }
}
