//! The Thrift compact protocol, as far as Parquet's footer and page headers
//! need it: an encoder that writes structs field by field, and a decoder that
//! parses any compact-protocol struct into a small generic tree, with bounds
//! checks everywhere, a nesting limit and list sizes checked against the
//! remaining input, so malformed bytes give an error, never a panic.
//!
//! Wire format (Apache Thrift compact protocol): a field header is one byte
//! `(delta << 4) | type` when the field id is 1..=15 above the previous one,
//! else the type byte followed by the zigzag-varint field id; integers are
//! zigzag varints; binary is a varint length then the bytes; a list header is
//! `(size << 4) | elem_type` for sizes below 15, else `0xF0 | elem_type` then a
//! varint size; booleans live in the field header's type nibble (1 = true,
//! 2 = false); a struct ends with a zero byte.

/// Compact-protocol type ids.
pub mod ty {
    pub const STOP: u8 = 0;
    pub const BOOL_TRUE: u8 = 1;
    pub const BOOL_FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Writes compact-protocol structs into a byte buffer.
///
/// Start with [`CompactWriter::new`] (an implicit top-level struct is open),
/// write fields in increasing id order, and finish every struct with
/// [`CompactWriter::struct_end`] (the top-level one included).
pub struct CompactWriter<'a> {
    buf: &'a mut Vec<u8>,
    /// Last field id written, per open struct (innermost last).
    last: Vec<i16>,
}

impl<'a> CompactWriter<'a> {
    /// Writes into `buf` (appending); a top-level struct is open.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        CompactWriter { buf, last: vec![0] }
    }

    fn field_header(&mut self, id: i16, t: u8) {
        let last = self.last.last_mut().expect("a struct is open");
        let delta = i32::from(id) - i32::from(*last);
        if (1..=15).contains(&delta) {
            self.buf.push(((delta as u8) << 4) | t);
        } else {
            self.buf.push(t);
            put_uvarint(self.buf, zigzag(i64::from(id)));
        }
        *last = id;
    }

    /// An `i32` field.
    pub fn i32(&mut self, id: i16, v: i32) {
        self.field_header(id, ty::I32);
        put_uvarint(self.buf, zigzag(i64::from(v)));
    }

    /// An `i64` field.
    pub fn i64(&mut self, id: i16, v: i64) {
        self.field_header(id, ty::I64);
        put_uvarint(self.buf, zigzag(v));
    }

    /// An `i16` field.
    pub fn i16(&mut self, id: i16, v: i16) {
        self.field_header(id, ty::I16);
        put_uvarint(self.buf, zigzag(i64::from(v)));
    }

    /// A `bool` field.
    pub fn bool(&mut self, id: i16, v: bool) {
        self.field_header(id, if v { ty::BOOL_TRUE } else { ty::BOOL_FALSE });
    }

    /// A binary (or string) field.
    pub fn binary(&mut self, id: i16, v: &[u8]) {
        self.field_header(id, ty::BINARY);
        self.raw_binary(v);
    }

    /// Open a struct field; close it with [`CompactWriter::struct_end`].
    pub fn struct_begin(&mut self, id: i16) {
        self.field_header(id, ty::STRUCT);
        self.last.push(0);
    }

    /// Close the innermost open struct (writes the stop byte).
    pub fn struct_end(&mut self) {
        self.buf.push(ty::STOP);
        self.last.pop();
    }

    /// Open a list field of `len` elements of type `elem`; then write the
    /// elements with the `elem_*` methods (struct elements with
    /// [`CompactWriter::elem_struct_begin`] and `struct_end`).
    pub fn list_begin(&mut self, id: i16, elem: u8, len: usize) {
        self.field_header(id, ty::LIST);
        if len < 15 {
            self.buf.push(((len as u8) << 4) | elem);
        } else {
            self.buf.push(0xF0 | elem);
            put_uvarint(self.buf, len as u64);
        }
    }

    /// An `i32` list element.
    pub fn elem_i32(&mut self, v: i32) {
        put_uvarint(self.buf, zigzag(i64::from(v)));
    }

    /// A binary list element.
    pub fn elem_binary(&mut self, v: &[u8]) {
        self.raw_binary(v);
    }

    /// Open a struct list element; close it with `struct_end`.
    pub fn elem_struct_begin(&mut self) {
        self.last.push(0);
    }

    fn raw_binary(&mut self, v: &[u8]) {
        put_uvarint(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// A decoded compact-protocol value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Bool(bool),
    Byte(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    Double(f64),
    Binary(&'a [u8]),
    List(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
    Struct(Struct<'a>),
}

/// A decoded struct: its fields in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Struct<'a> {
    pub fields: Vec<(i16, Value<'a>)>,
}

impl<'a> Struct<'a> {
    /// The field with id `id`, if present.
    pub fn get(&self, id: i16) -> Option<&Value<'a>> {
        self.fields.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// An integer field (any width) as `i64`; `Err` names the field when it
    /// is present with another type.
    pub fn int(&self, id: i16, what: &str) -> Result<Option<i64>, String> {
        match self.get(id) {
            None => Ok(None),
            Some(Value::Byte(v)) => Ok(Some(i64::from(*v))),
            Some(Value::I16(v)) => Ok(Some(i64::from(*v))),
            Some(Value::I32(v)) => Ok(Some(i64::from(*v))),
            Some(Value::I64(v)) => Ok(Some(*v)),
            Some(_) => Err(format!("{what} (field {id}) is not an integer")),
        }
    }

    /// A required integer field.
    pub fn req_int(&self, id: i16, what: &str) -> Result<i64, String> {
        self.int(id, what)?
            .ok_or_else(|| format!("required field {what} (field {id}) is missing"))
    }

    /// A binary field.
    pub fn binary(&self, id: i16, what: &str) -> Result<Option<&'a [u8]>, String> {
        match self.get(id) {
            None => Ok(None),
            Some(Value::Binary(b)) => Ok(Some(b)),
            Some(_) => Err(format!("{what} (field {id}) is not binary")),
        }
    }

    /// A UTF-8 string field.
    pub fn string(&self, id: i16, what: &str) -> Result<Option<&'a str>, String> {
        match self.binary(id, what)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| format!("{what} (field {id}) is not UTF-8")),
        }
    }

    /// A list field.
    pub fn list(&self, id: i16, what: &str) -> Result<Option<&[Value<'a>]>, String> {
        match self.get(id) {
            None => Ok(None),
            Some(Value::List(l)) => Ok(Some(l)),
            Some(_) => Err(format!("{what} (field {id}) is not a list")),
        }
    }

    /// A struct field.
    pub fn strukt(&self, id: i16, what: &str) -> Result<Option<&Struct<'a>>, String> {
        match self.get(id) {
            None => Ok(None),
            Some(Value::Struct(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{what} (field {id}) is not a struct")),
        }
    }
}

/// Nesting deeper than this is refused (Parquet's footer needs about 5).
const MAX_DEPTH: usize = 32;

/// Parses compact-protocol bytes.
pub struct CompactReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> CompactReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        CompactReader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| "thrift data ends too early".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("thrift varint is longer than 10 bytes".into())
    }

    fn ivarint(&mut self) -> Result<i64, String> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let rest = self.buf.len() - self.pos;
        if n > rest as u64 {
            return Err(format!(
                "thrift binary of {n} bytes runs past the end ({rest} bytes left)"
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Reads one struct (up to and including its stop byte).
    pub fn read_struct(&mut self) -> Result<Struct<'a>, String> {
        self.struct_at(0)
    }

    fn struct_at(&mut self, depth: usize) -> Result<Struct<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("thrift structs nest deeper than {MAX_DEPTH} levels"));
        }
        let mut fields = Vec::new();
        let mut last: i16 = 0;
        loop {
            let h = self.byte()?;
            if h == ty::STOP {
                return Ok(Struct { fields });
            }
            let t = h & 0x0f;
            let delta = h >> 4;
            let id = if delta == 0 {
                let v = self.ivarint()?;
                i16::try_from(v).map_err(|_| format!("thrift field id {v} is out of range"))?
            } else {
                last.checked_add(i16::from(delta))
                    .ok_or_else(|| "thrift field id overflows".to_string())?
            };
            last = id;
            let v = match t {
                ty::BOOL_TRUE => Value::Bool(true),
                ty::BOOL_FALSE => Value::Bool(false),
                other => self.value(other, depth)?,
            };
            fields.push((id, v));
        }
    }

    fn value(&mut self, t: u8, depth: usize) -> Result<Value<'a>, String> {
        Ok(match t {
            ty::BOOL_TRUE | ty::BOOL_FALSE => {
                // Inside lists and maps a bool is one byte (1 = true).
                Value::Bool(self.byte()? == 1)
            }
            ty::BYTE => Value::Byte(self.byte()? as i8),
            ty::I16 => {
                let v = self.ivarint()?;
                Value::I16(i16::try_from(v).map_err(|_| format!("thrift i16 value {v} is out of range"))?)
            }
            ty::I32 => {
                let v = self.ivarint()?;
                Value::I32(i32::try_from(v).map_err(|_| format!("thrift i32 value {v} is out of range"))?)
            }
            ty::I64 => Value::I64(self.ivarint()?),
            ty::DOUBLE => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Double(f64::from_le_bytes(a))
            }
            ty::BINARY => {
                let n = self.uvarint()?;
                Value::Binary(self.take(n)?)
            }
            ty::LIST | ty::SET => {
                if depth >= MAX_DEPTH {
                    return Err(format!("thrift values nest deeper than {MAX_DEPTH} levels"));
                }
                let h = self.byte()?;
                let et = h & 0x0f;
                let n = if h >> 4 == 0x0f {
                    self.uvarint()?
                } else {
                    u64::from(h >> 4)
                };
                // Every element takes at least one byte.
                let rest = (self.buf.len() - self.pos) as u64;
                if n > rest {
                    return Err(format!(
                        "thrift list claims {n} elements but only {rest} bytes are left"
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, depth + 1)?);
                }
                Value::List(items)
            }
            ty::MAP => {
                if depth >= MAX_DEPTH {
                    return Err(format!("thrift values nest deeper than {MAX_DEPTH} levels"));
                }
                let n = self.uvarint()?;
                if n == 0 {
                    return Ok(Value::Map(Vec::new()));
                }
                let kv = self.byte()?;
                let rest = (self.buf.len() - self.pos) as u64;
                if n > rest {
                    return Err(format!("thrift map claims {n} entries but only {rest} bytes are left"));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let k = self.value(kv >> 4, depth + 1)?;
                    let v = self.value(kv & 0x0f, depth + 1)?;
                    items.push((k, v));
                }
                Value::Map(items)
            }
            ty::STRUCT => Value::Struct(self.struct_at(depth + 1)?),
            other => return Err(format!("unknown thrift type id {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_written_shape() {
        let mut buf = Vec::new();
        let mut w = CompactWriter::new(&mut buf);
        w.i32(1, -5);
        w.i64(2, 1 << 40);
        w.binary(3, b"hello");
        w.bool(4, true);
        w.bool(5, false);
        w.struct_begin(6);
        w.i32(1, 7);
        w.struct_end();
        w.list_begin(30, ty::I32, 20); // long delta and a long list
        for i in 0..20 {
            w.elem_i32(i);
        }
        w.list_begin(31, ty::STRUCT, 1);
        w.elem_struct_begin();
        w.binary(1, b"x");
        w.struct_end();
        w.i16(32, -3);
        w.struct_end();
        let s = CompactReader::new(&buf).read_struct().unwrap();
        assert_eq!(s.req_int(1, "a").unwrap(), -5);
        assert_eq!(s.req_int(2, "b").unwrap(), 1 << 40);
        assert_eq!(s.binary(3, "c").unwrap(), Some(&b"hello"[..]));
        assert_eq!(s.get(4), Some(&Value::Bool(true)));
        assert_eq!(s.get(5), Some(&Value::Bool(false)));
        assert_eq!(s.strukt(6, "d").unwrap().unwrap().req_int(1, "e").unwrap(), 7);
        let l = s.list(30, "f").unwrap().unwrap();
        assert_eq!(l.len(), 20);
        assert_eq!(l[19], Value::I32(19));
        let l = s.list(31, "g").unwrap().unwrap();
        let Value::Struct(inner) = &l[0] else { panic!() };
        assert_eq!(inner.string(1, "h").unwrap(), Some("x"));
        assert_eq!(s.req_int(32, "i").unwrap(), -3);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        let mut w = CompactWriter::new(&mut buf);
        w.binary(1, b"abc");
        w.list_begin(2, ty::STRUCT, 3);
        for _ in 0..3 {
            w.elem_struct_begin();
            w.i64(1, 99);
            w.struct_end();
        }
        w.struct_end();
        for n in 0..buf.len() {
            assert!(
                CompactReader::new(&buf[..n]).read_struct().is_err(),
                "truncation at {n}"
            );
        }
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let _ = CompactReader::new(&b).read_struct();
            }
        }
        // Deep nesting is refused.
        let deep = vec![0x1c; 10_000];
        assert!(CompactReader::new(&deep).read_struct().is_err());
        // A huge list size is refused before allocating.
        let huge = [0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(CompactReader::new(&huge).read_struct().is_err());
    }
}
