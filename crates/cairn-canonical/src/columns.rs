//! Typed columns from type shapes: the Arrow type of a [`Shape`], and a
//! builder that appends stored values (MessagePack) to it. A value that does
//! not have the shape exactly (a value written by an older version of the
//! type, with other fields or another field order) is refused by
//! [`Column::conforms`]; the writer then keeps it as JSON text instead, so
//! what the typed column holds always turns back into the very same bytes.
//!
//! Mapping (also in `docs/formats/savepoint-canonical.md`):
//!
//! | shape | Arrow |
//! |---|---|
//! | `()` | Null |
//! | bool, i8..i64, u8..u64, f32, f64 | Boolean, Int8..Int64, UInt8..UInt64, Float32, Float64 |
//! | i128, u128 | FixedSizeBinary(16), big-endian |
//! | char, String | Utf8 |
//! | bytes | Binary |
//! | `Option<T>` | T, nullable |
//! | `Vec<T>` | List\<T\> |
//! | map | Map\<K, V\> |
//! | tuple, tuple struct | Struct with fields "0", "1", ... |
//! | struct | Struct with the field names |
//! | enum of unit variants | Utf8 (the variant name) |
//! | other enum | Struct { "$variant": Utf8, one field per non-unit variant } |
//! | opaque, unit struct, empty struct, map with nullable keys | none (JSON text) |

use std::any::Any;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, Int8Builder, StringBuilder, UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, ListArray, MapArray, NullArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields};
use cairn_state::shape::{Shape, VariantContent};

use crate::msgpack::{self, Item, Reader};

/// The struct field holding an enum's variant name.
pub const VARIANT_FIELD: &str = "$variant";

/// A typed column being filled.
pub struct Column {
    /// Whether nil is a valid value here (`Option<T>`, `()`).
    nil_ok: bool,
    kind: Kind,
}

enum Kind {
    Null(usize),
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Char(StringBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Fixed16(FixedSizeBinaryBuilder),
    List {
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Column>,
    },
    Tuple {
        nulls: NullBufferBuilder,
        children: Vec<Column>,
    },
    Struct {
        names: Vec<String>,
        nulls: NullBufferBuilder,
        children: Vec<Column>,
    },
    Map {
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        key: Box<Column>,
        value: Box<Column>,
    },
    UnitEnum {
        names: Vec<String>,
        tag: StringBuilder,
    },
    Enum {
        /// Per variant: its name and the index of its content column.
        variants: Vec<(String, Option<usize>)>,
        nulls: NullBufferBuilder,
        tag: StringBuilder,
        /// (variant name, content column) of the non-unit variants.
        children: Vec<(String, Column)>,
    },
}

fn nulls() -> NullBufferBuilder {
    NullBufferBuilder::new(1024)
}

impl Column {
    /// A column for values of `shape`; `None` when the shape has no typed
    /// column (the value is kept as JSON text).
    pub fn for_shape(shape: &Shape) -> Option<Column> {
        let (kind, nil_ok) = match shape {
            Shape::Option(inner) => {
                let mut c = Column::for_shape(inner)?;
                c.nil_ok = true;
                return Some(c);
            }
            Shape::Unit => (Kind::Null(0), true),
            Shape::Bool => (Kind::Bool(BooleanBuilder::new()), false),
            Shape::I8 => (Kind::I8(Int8Builder::new()), false),
            Shape::I16 => (Kind::I16(Int16Builder::new()), false),
            Shape::I32 => (Kind::I32(Int32Builder::new()), false),
            Shape::I64 => (Kind::I64(Int64Builder::new()), false),
            Shape::U8 => (Kind::U8(UInt8Builder::new()), false),
            Shape::U16 => (Kind::U16(UInt16Builder::new()), false),
            Shape::U32 => (Kind::U32(UInt32Builder::new()), false),
            Shape::U64 => (Kind::U64(UInt64Builder::new()), false),
            Shape::I128 | Shape::U128 => (Kind::Fixed16(FixedSizeBinaryBuilder::new(16)), false),
            Shape::F32 => (Kind::F32(Float32Builder::new()), false),
            Shape::F64 => (Kind::F64(Float64Builder::new()), false),
            Shape::Char => (Kind::Char(StringBuilder::new()), false),
            Shape::Str => (Kind::Str(StringBuilder::new()), false),
            Shape::Bytes => (Kind::Bin(BinaryBuilder::new()), false),
            Shape::Seq(inner) => (
                Kind::List {
                    offsets: vec![0],
                    nulls: nulls(),
                    child: Box::new(Column::for_shape(inner)?),
                },
                false,
            ),
            Shape::Map { key, value } => {
                if key.can_be_nil() {
                    return None;
                }
                (
                    Kind::Map {
                        offsets: vec![0],
                        nulls: nulls(),
                        key: Box::new(Column::for_shape(key)?),
                        value: Box::new(Column::for_shape(value)?),
                    },
                    false,
                )
            }
            Shape::Tuple(items) => (
                Kind::Tuple {
                    nulls: nulls(),
                    children: tuple_children(items)?,
                },
                false,
            ),
            Shape::Struct { fields, .. } => {
                if fields.is_empty() {
                    return None;
                }
                (
                    Kind::Struct {
                        names: fields.iter().map(|f| f.name.clone()).collect(),
                        nulls: nulls(),
                        children: fields
                            .iter()
                            .map(|f| Column::for_shape(&f.shape))
                            .collect::<Option<Vec<_>>>()?,
                    },
                    false,
                )
            }
            Shape::Enum { variants, .. } => {
                if variants.iter().all(|v| v.content == VariantContent::Unit) {
                    (
                        Kind::UnitEnum {
                            names: variants.iter().map(|v| v.name.clone()).collect(),
                            tag: StringBuilder::new(),
                        },
                        false,
                    )
                } else {
                    let mut children = Vec::new();
                    let mut index = Vec::new();
                    for v in variants {
                        let content = match &v.content {
                            VariantContent::Unit => None,
                            VariantContent::Newtype(s) => Some(Column::for_shape(s)?),
                            VariantContent::Tuple(items) => Some(Column {
                                nil_ok: false,
                                kind: Kind::Tuple {
                                    nulls: nulls(),
                                    children: tuple_children(items)?,
                                },
                            }),
                            VariantContent::Struct(fields) => Some(Column {
                                nil_ok: false,
                                kind: Kind::Struct {
                                    names: fields.iter().map(|f| f.name.clone()).collect(),
                                    nulls: nulls(),
                                    children: fields
                                        .iter()
                                        .map(|f| Column::for_shape(&f.shape))
                                        .collect::<Option<Vec<_>>>()?,
                                },
                            }),
                        };
                        match content {
                            None => index.push((v.name.clone(), None)),
                            Some(c) => {
                                index.push((v.name.clone(), Some(children.len())));
                                children.push((v.name.clone(), c));
                            }
                        }
                    }
                    (
                        Kind::Enum {
                            variants: index,
                            nulls: nulls(),
                            tag: StringBuilder::new(),
                            children,
                        },
                        false,
                    )
                }
            }
            Shape::UnitStruct(_) | Shape::Opaque(_) => return None,
        };
        Some(Column { nil_ok, kind })
    }

    /// The Arrow type of the column.
    pub fn data_type(&self) -> DataType {
        match &self.kind {
            Kind::Null(_) => DataType::Null,
            Kind::Bool(_) => DataType::Boolean,
            Kind::I8(_) => DataType::Int8,
            Kind::I16(_) => DataType::Int16,
            Kind::I32(_) => DataType::Int32,
            Kind::I64(_) => DataType::Int64,
            Kind::U8(_) => DataType::UInt8,
            Kind::U16(_) => DataType::UInt16,
            Kind::U32(_) => DataType::UInt32,
            Kind::U64(_) => DataType::UInt64,
            Kind::F32(_) => DataType::Float32,
            Kind::F64(_) => DataType::Float64,
            Kind::Char(_) | Kind::Str(_) | Kind::UnitEnum { .. } => DataType::Utf8,
            Kind::Bin(_) => DataType::Binary,
            Kind::Fixed16(_) => DataType::FixedSizeBinary(16),
            Kind::List { child, .. } => DataType::List(Arc::new(Field::new("item", child.data_type(), true))),
            Kind::Tuple { children, .. } => DataType::Struct(tuple_fields(children)),
            Kind::Struct { names, children, .. } => DataType::Struct(named_fields(names, children)),
            Kind::Map { key, value, .. } => DataType::Map(map_entries(key, value), false),
            Kind::Enum { children, .. } => DataType::Struct(enum_fields(children)),
        }
    }

    /// Whether the value at the reader (all of it) has this column's shape
    /// exactly, so that appending it and reading it back gives its bytes.
    pub fn conforms(&self, bytes: &[u8]) -> bool {
        let mut r = Reader::new(bytes);
        matches!(self.check(&mut r), Ok(true)) && r.at_end()
    }

    /// Append `bytes` if it [`conforms`](Column::conforms), else append
    /// nothing and return `Ok(false)`. Scalar columns (most values and
    /// keys) read the value once instead of once to check and once to append.
    pub fn append_if_conforms(&mut self, bytes: &[u8]) -> Result<bool, String> {
        // Integer columns holding one unsigned integer (counts, sums, ids:
        // most keys and values) are appended straight from its bytes; any
        // other value takes the general way below, which decides alike.
        if let Some(v) = msgpack::whole_uint(bytes) {
            if self.push_uint(v) {
                return Ok(true);
            }
        }
        // Likewise one string into a string column, its UTF-8 checked once.
        if let (Kind::Str(b), Some(s)) = (&mut self.kind, msgpack::whole_str(bytes)) {
            return Ok(match std::str::from_utf8(s) {
                Ok(s) => {
                    b.append_value(s);
                    true
                }
                Err(_) => false,
            });
        }
        if !self.is_scalar() {
            if !self.conforms(bytes) {
                return Ok(false);
            }
            return self.append(bytes).map(|()| true);
        }
        let mut r = Reader::new(bytes);
        let Ok(item) = r.next_item() else {
            return Ok(false);
        };
        if !r.at_end() {
            return Ok(false);
        }
        if item == Item::Nil && self.nil_ok {
            self.append_null();
            return Ok(true);
        }
        if !self.scalar_fits(item) {
            return Ok(false);
        }
        self.push_scalar(item).map(|()| true)
    }

    /// Append `v` to an integer column whose range holds it; `false` (and
    /// nothing appended) for any other column or value.
    #[inline]
    fn push_uint(&mut self, v: u64) -> bool {
        match &mut self.kind {
            Kind::U64(b) => b.append_value(v),
            Kind::U32(b) => match u32::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::U16(b) => match u16::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::U8(b) => match u8::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::I64(b) => match i64::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::I32(b) => match i32::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::I16(b) => match i16::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Kind::I8(b) => match i8::try_from(v) {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            _ => return false,
        }
        true
    }

    /// Append a value kept as an object when it is this scalar column's own
    /// Rust type (a `u64` to a `UInt64` column, a `String` to a string
    /// column); `false`, appending nothing, for any other type, which the
    /// caller then encodes. What is appended is what the value's bytes would
    /// append, since the column was made from the same type's shape.
    pub fn append_object(&mut self, value: &dyn Any) -> bool {
        fn put<T: Copy + 'static>(value: &dyn Any, append: impl FnOnce(T)) -> bool {
            value.downcast_ref::<T>().map(|v| append(*v)).is_some()
        }
        match &mut self.kind {
            Kind::U64(b) => put(value, |v: u64| b.append_value(v)),
            Kind::I64(b) => put(value, |v: i64| b.append_value(v)),
            Kind::U32(b) => put(value, |v: u32| b.append_value(v)),
            Kind::I32(b) => put(value, |v: i32| b.append_value(v)),
            Kind::U16(b) => put(value, |v: u16| b.append_value(v)),
            Kind::I16(b) => put(value, |v: i16| b.append_value(v)),
            Kind::U8(b) => put(value, |v: u8| b.append_value(v)),
            Kind::I8(b) => put(value, |v: i8| b.append_value(v)),
            Kind::F64(b) => put(value, |v: f64| b.append_value(v)),
            Kind::F32(b) => put(value, |v: f32| b.append_value(v)),
            Kind::Bool(b) => put(value, |v: bool| b.append_value(v)),
            Kind::Str(b) => value.downcast_ref::<String>().map(|v| b.append_value(v)).is_some(),
            _ => false,
        }
    }

    /// Whether [`Column::append_object`] can take this column's values.
    pub fn takes_objects(&self) -> bool {
        matches!(
            self.kind,
            Kind::U64(_)
                | Kind::I64(_)
                | Kind::U32(_)
                | Kind::I32(_)
                | Kind::U16(_)
                | Kind::I16(_)
                | Kind::U8(_)
                | Kind::I8(_)
                | Kind::F64(_)
                | Kind::F32(_)
                | Kind::Bool(_)
                | Kind::Str(_)
        )
    }

    /// Whether values of this column are one MessagePack item.
    fn is_scalar(&self) -> bool {
        !matches!(
            self.kind,
            Kind::List { .. } | Kind::Tuple { .. } | Kind::Struct { .. } | Kind::Map { .. } | Kind::Enum { .. }
        )
    }

    /// Whether `item` (not nil of an optional column) fits this scalar column.
    fn scalar_fits(&self, item: Item<'_>) -> bool {
        match (&self.kind, item) {
            (Kind::Null(_), Item::Nil) => true,
            (Kind::Bool(_), Item::Bool(_)) => true,
            (Kind::I8(_), i) => int_in(i, i8::MIN.into(), i8::MAX.into()),
            (Kind::I16(_), i) => int_in(i, i16::MIN.into(), i16::MAX.into()),
            (Kind::I32(_), i) => int_in(i, i32::MIN.into(), i32::MAX.into()),
            (Kind::I64(_), i) => int_in(i, i64::MIN.into(), i64::MAX.into()),
            (Kind::U8(_), i) => int_in(i, 0, u8::MAX.into()),
            (Kind::U16(_), i) => int_in(i, 0, u16::MAX.into()),
            (Kind::U32(_), i) => int_in(i, 0, u32::MAX.into()),
            (Kind::U64(_), i) => int_in(i, 0, u64::MAX.into()),
            (Kind::F32(_), Item::F32(_)) => true,
            (Kind::F64(_), Item::F64(_)) => true,
            (Kind::Char(_), Item::Str(s)) => std::str::from_utf8(s).is_ok_and(|s| s.chars().count() == 1),
            (Kind::Str(_), Item::Str(s)) => std::str::from_utf8(s).is_ok(),
            (Kind::Bin(_), Item::Bin(_)) => true,
            (Kind::Fixed16(_), Item::Bin(b)) => b.len() == 16,
            (Kind::UnitEnum { names, .. }, Item::Str(s)) => names.iter().any(|n| n.as_bytes() == s),
            _ => false,
        }
    }

    fn check(&self, r: &mut Reader<'_>) -> Result<bool, String> {
        let item = r.next_item()?;
        if item == Item::Nil && self.nil_ok {
            return Ok(true);
        }
        if self.is_scalar() {
            return Ok(self.scalar_fits(item));
        }
        Ok(match (&self.kind, item) {
            (Kind::List { child, .. }, Item::Array(n)) => {
                for _ in 0..n {
                    if !child.check(r)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Kind::Tuple { children, .. }, Item::Array(n)) => {
                if n as usize != children.len() {
                    return Ok(false);
                }
                for c in children {
                    if !c.check(r)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Kind::Struct { names, children, .. }, Item::Map(n)) => {
                if n as usize != names.len() {
                    return Ok(false);
                }
                for (name, c) in names.iter().zip(children) {
                    if r.next_item()? != Item::Str(name.as_bytes()) || !c.check(r)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Kind::Map { key, value, .. }, Item::Map(n)) => {
                for _ in 0..n {
                    if !key.check(r)? || !value.check(r)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Kind::Enum { variants, .. }, Item::Str(s)) => {
                variants.iter().any(|(n, c)| c.is_none() && n.as_bytes() == s)
            }
            (Kind::Enum { variants, children, .. }, Item::Map(1)) => {
                let Item::Str(s) = r.next_item()? else {
                    return Ok(false);
                };
                match variants.iter().find(|(n, _)| n.as_bytes() == s) {
                    Some((_, Some(i))) => children[*i].1.check(r)?,
                    _ => false,
                }
            }
            _ => false,
        })
    }

    /// Append one value that [`Column::conforms`].
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Reader::new(bytes);
        self.push(&mut r)
    }

    fn push(&mut self, r: &mut Reader<'_>) -> Result<(), String> {
        let item = r.next_item()?;
        if item == Item::Nil && self.nil_ok {
            self.append_null();
            return Ok(());
        }
        if self.is_scalar() {
            return self.push_scalar(item);
        }
        let bad = || "a value does not have the column's shape (checked before; this is a Cairn bug)".to_string();
        match (&mut self.kind, item) {
            (Kind::List { offsets, nulls, child }, Item::Array(n)) => {
                for _ in 0..n {
                    child.push(r)?;
                }
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last + n as i32);
                nulls.append_non_null();
            }
            (Kind::Tuple { nulls, children }, Item::Array(_)) => {
                for c in children {
                    c.push(r)?;
                }
                nulls.append_non_null();
            }
            (Kind::Struct { nulls, children, .. }, Item::Map(_)) => {
                for c in children {
                    r.next_item()?; // the field name, checked by `conforms`
                    c.push(r)?;
                }
                nulls.append_non_null();
            }
            (
                Kind::Map {
                    offsets,
                    nulls,
                    key,
                    value,
                },
                Item::Map(n),
            ) => {
                for _ in 0..n {
                    key.push(r)?;
                    value.push(r)?;
                }
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last + n as i32);
                nulls.append_non_null();
            }
            (
                Kind::Enum {
                    nulls, tag, children, ..
                },
                Item::Str(s),
            ) => {
                tag.append_value(std::str::from_utf8(s).map_err(|_| bad())?);
                for (_, c) in children.iter_mut() {
                    c.append_null();
                }
                nulls.append_non_null();
            }
            (
                Kind::Enum {
                    nulls, tag, children, ..
                },
                Item::Map(_),
            ) => {
                let Item::Str(s) = r.next_item()? else {
                    return Err(bad());
                };
                tag.append_value(std::str::from_utf8(s).map_err(|_| bad())?);
                for (name, c) in children.iter_mut() {
                    if name.as_bytes() == s {
                        c.push(r)?;
                    } else {
                        c.append_null();
                    }
                }
                nulls.append_non_null();
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Append a scalar `item` that [`Column::scalar_fits`].
    fn push_scalar(&mut self, item: Item<'_>) -> Result<(), String> {
        let bad = || "a value does not have the column's shape (checked before; this is a Cairn bug)".to_string();
        match (&mut self.kind, item) {
            (Kind::Null(n), Item::Nil) => *n += 1,
            (Kind::Bool(b), Item::Bool(v)) => b.append_value(v),
            (Kind::I8(b), i) => b.append_value(as_i64(i).ok_or_else(bad)? as i8),
            (Kind::I16(b), i) => b.append_value(as_i64(i).ok_or_else(bad)? as i16),
            (Kind::I32(b), i) => b.append_value(as_i64(i).ok_or_else(bad)? as i32),
            (Kind::I64(b), i) => b.append_value(as_i64(i).ok_or_else(bad)?),
            (Kind::U8(b), Item::UInt(v)) => b.append_value(v as u8),
            (Kind::U16(b), Item::UInt(v)) => b.append_value(v as u16),
            (Kind::U32(b), Item::UInt(v)) => b.append_value(v as u32),
            (Kind::U64(b), Item::UInt(v)) => b.append_value(v),
            (Kind::F32(b), Item::F32(v)) => b.append_value(v),
            (Kind::F64(b), Item::F64(v)) => b.append_value(v),
            (Kind::Char(b) | Kind::Str(b), Item::Str(s)) => {
                b.append_value(std::str::from_utf8(s).map_err(|_| "a string is not UTF-8".to_string())?)
            }
            (Kind::Bin(b), Item::Bin(v)) => b.append_value(v),
            (Kind::Fixed16(b), Item::Bin(v)) => b.append_value(v).map_err(|e| e.to_string())?,
            (Kind::UnitEnum { tag, .. }, Item::Str(s)) => {
                tag.append_value(std::str::from_utf8(s).map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Append a null (the value is absent from this column).
    pub fn append_null(&mut self) {
        match &mut self.kind {
            Kind::Null(n) => *n += 1,
            Kind::Bool(b) => b.append_null(),
            Kind::I8(b) => b.append_null(),
            Kind::I16(b) => b.append_null(),
            Kind::I32(b) => b.append_null(),
            Kind::I64(b) => b.append_null(),
            Kind::U8(b) => b.append_null(),
            Kind::U16(b) => b.append_null(),
            Kind::U32(b) => b.append_null(),
            Kind::U64(b) => b.append_null(),
            Kind::F32(b) => b.append_null(),
            Kind::F64(b) => b.append_null(),
            Kind::Char(b) | Kind::Str(b) => b.append_null(),
            Kind::Bin(b) => b.append_null(),
            Kind::Fixed16(b) => b.append_null(),
            Kind::List { offsets, nulls, .. } | Kind::Map { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
            Kind::Tuple { nulls, children } | Kind::Struct { nulls, children, .. } => {
                for c in children {
                    c.append_null();
                }
                nulls.append_null();
            }
            Kind::UnitEnum { tag, .. } => tag.append_null(),
            Kind::Enum {
                nulls, tag, children, ..
            } => {
                tag.append_null();
                for (_, c) in children.iter_mut() {
                    c.append_null();
                }
                nulls.append_null();
            }
        }
    }

    /// The values appended so far as an array; the column starts empty again.
    pub fn finish(&mut self) -> Result<ArrayRef, String> {
        let err = |e: arrow_schema::ArrowError| format!("building a column: {e}");
        Ok(match &mut self.kind {
            Kind::Null(n) => {
                let a = Arc::new(NullArray::new(*n));
                *n = 0;
                a
            }
            Kind::Bool(b) => Arc::new(b.finish()),
            Kind::I8(b) => Arc::new(b.finish()),
            Kind::I16(b) => Arc::new(b.finish()),
            Kind::I32(b) => Arc::new(b.finish()),
            Kind::I64(b) => Arc::new(b.finish()),
            Kind::U8(b) => Arc::new(b.finish()),
            Kind::U16(b) => Arc::new(b.finish()),
            Kind::U32(b) => Arc::new(b.finish()),
            Kind::U64(b) => Arc::new(b.finish()),
            Kind::F32(b) => Arc::new(b.finish()),
            Kind::F64(b) => Arc::new(b.finish()),
            Kind::Char(b) | Kind::Str(b) | Kind::UnitEnum { tag: b, .. } => Arc::new(b.finish()),
            Kind::Bin(b) => Arc::new(b.finish()),
            Kind::Fixed16(b) => Arc::new(b.finish()),
            Kind::List { offsets, nulls, child } => {
                let field = Arc::new(Field::new("item", child.data_type(), true));
                let values = child.finish()?;
                let offs = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::try_new(field, offs, values, nulls.finish()).map_err(err)?)
            }
            Kind::Tuple { nulls, children } => {
                let fields = tuple_fields(children);
                let arrays = children.iter_mut().map(Column::finish).collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(fields, arrays, nulls.finish()).map_err(err)?)
            }
            Kind::Struct { names, nulls, children } => {
                let fields = named_fields(names, children);
                let arrays = children.iter_mut().map(Column::finish).collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(fields, arrays, nulls.finish()).map_err(err)?)
            }
            Kind::Map {
                offsets,
                nulls,
                key,
                value,
            } => {
                let entries_field = map_entries(key, value);
                let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
                    return Err("map entries are not a struct (a Cairn bug)".into());
                };
                let entries =
                    StructArray::try_new(entry_fields, vec![key.finish()?, value.finish()?], None).map_err(err)?;
                let offs = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(MapArray::try_new(entries_field, offs, entries, nulls.finish(), false).map_err(err)?)
            }
            Kind::Enum {
                nulls, tag, children, ..
            } => {
                let fields = enum_fields(children);
                let mut arrays: Vec<ArrayRef> = vec![Arc::new(tag.finish())];
                for (_, c) in children.iter_mut() {
                    arrays.push(c.finish()?);
                }
                Arc::new(StructArray::try_new(fields, arrays, nulls.finish()).map_err(err)?)
            }
        })
    }

    /// Rows appended and not yet finished.
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Null(n) => *n,
            Kind::Bool(b) => b.len(),
            Kind::I8(b) => b.len(),
            Kind::I16(b) => b.len(),
            Kind::I32(b) => b.len(),
            Kind::I64(b) => b.len(),
            Kind::U8(b) => b.len(),
            Kind::U16(b) => b.len(),
            Kind::U32(b) => b.len(),
            Kind::U64(b) => b.len(),
            Kind::F32(b) => b.len(),
            Kind::F64(b) => b.len(),
            Kind::Char(b) | Kind::Str(b) | Kind::UnitEnum { tag: b, .. } => b.len(),
            Kind::Bin(b) => b.len(),
            Kind::Fixed16(b) => b.len(),
            Kind::List { offsets, .. } | Kind::Map { offsets, .. } => offsets.len() - 1,
            Kind::Tuple { nulls, .. } | Kind::Struct { nulls, .. } | Kind::Enum { nulls, .. } => nulls.len(),
        }
    }

    /// Whether nothing was appended since the last finish.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn tuple_children(items: &[Shape]) -> Option<Vec<Column>> {
    if items.is_empty() {
        return None;
    }
    items.iter().map(Column::for_shape).collect()
}

fn tuple_fields(children: &[Column]) -> Fields {
    children
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(i.to_string(), c.data_type(), true))
        .collect()
}

fn named_fields(names: &[String], children: &[Column]) -> Fields {
    names
        .iter()
        .zip(children)
        .map(|(n, c)| Field::new(n.clone(), c.data_type(), true))
        .collect()
}

fn enum_fields(children: &[(String, Column)]) -> Fields {
    std::iter::once(Field::new(VARIANT_FIELD, DataType::Utf8, true))
        .chain(children.iter().map(|(n, c)| Field::new(n.clone(), c.data_type(), true)))
        .collect()
}

fn map_entries(key: &Column, value: &Column) -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", key.data_type(), false),
            Field::new("value", value.data_type(), true),
        ])),
        false,
    ))
}

fn int_in(i: Item<'_>, min: i128, max: i128) -> bool {
    let v = match i {
        Item::UInt(u) => i128::from(u),
        Item::Int(s) => i128::from(s),
        _ => return false,
    };
    (min..=max).contains(&v)
}

fn as_i64(i: Item<'_>) -> Option<i64> {
    match i {
        Item::UInt(u) => i64::try_from(u).ok(),
        Item::Int(s) => Some(s),
        _ => None,
    }
}

/// The Arrow type of `shape`, `None` when it is kept as JSON text.
pub fn data_type(shape: &Shape) -> Option<DataType> {
    Column::for_shape(shape).map(|c| c.data_type())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_state::codec::encode_into;
    use cairn_state::shape::trace;

    fn mp<T: serde::Serialize>(v: &T) -> Vec<u8> {
        let mut b = Vec::new();
        encode_into("t", v, &mut b).unwrap();
        b
    }

    #[test]
    fn a_value_is_appended_only_when_it_fits_and_nothing_is_left_behind_when_not() {
        let mut u8s = Column::for_shape(&trace::<u8>()).unwrap();
        assert!(u8s.append_if_conforms(&mp(&7u8)).unwrap());
        // Out of range, another type, trailing bytes, truncated: refused, nothing appended.
        assert!(!u8s.append_if_conforms(&mp(&300u16)).unwrap());
        assert!(!u8s.append_if_conforms(&mp(&"7")).unwrap());
        let mut trailing = mp(&7u8);
        trailing.push(0);
        assert!(!u8s.append_if_conforms(&trailing).unwrap());
        assert!(!u8s.append_if_conforms(&[]).unwrap());
        assert_eq!(u8s.len(), 1);

        // Unsigned integers of every width into every integer column: appended
        // exactly when they fit, as the general path decides.
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            1 << 40,
            u64::MAX,
        ] {
            let bytes = mp(&v);
            assert_eq!(msgpack::whole_uint(&bytes), Some(v));
            for shape in [
                trace::<u8>(),
                trace::<u16>(),
                trace::<u32>(),
                trace::<u64>(),
                trace::<i8>(),
                trace::<i16>(),
                trace::<i32>(),
                trace::<i64>(),
                trace::<Option<u32>>(),
                trace::<String>(),
            ] {
                let mut fast = Column::for_shape(&shape).unwrap();
                let general = Column::for_shape(&shape).unwrap();
                let fits = general.conforms(&bytes);
                assert_eq!(fast.append_if_conforms(&bytes).unwrap(), fits, "{v} into {shape:?}");
                assert_eq!(fast.len(), usize::from(fits));
            }
        }
        // Strings of every header size, and bytes that are not one string.
        let long = "x".repeat(70_000);
        for text in [
            "",
            "a",
            "user-17",
            &"y".repeat(31),
            &"z".repeat(32),
            &"w".repeat(300),
            &long,
        ] {
            let bytes = mp(&text);
            assert_eq!(msgpack::whole_str(&bytes), Some(text.as_bytes()));
            let mut col = Column::for_shape(&trace::<String>()).unwrap();
            assert!(col.append_if_conforms(&bytes).unwrap());
            assert_eq!(col.len(), 1);
        }
        let mut not_utf8 = mp(&"ab");
        not_utf8[1] = 0xff;
        let mut col = Column::for_shape(&trace::<String>()).unwrap();
        assert!(!col.append_if_conforms(&not_utf8).unwrap());
        let mut trailing = mp(&"ab");
        trailing.push(0);
        assert!(!col.append_if_conforms(&trailing).unwrap());
        assert!(!col.append_if_conforms(&[0xd9]).unwrap());
        assert_eq!(col.len(), 0);
        assert_eq!(msgpack::whole_uint(&[0xcd, 1]), None, "truncated");
        assert_eq!(msgpack::whole_uint(&[0x05, 0]), None, "trailing bytes");
        assert_eq!(msgpack::whole_uint(&mp(&-1i64)), None);

        let mut opt = Column::for_shape(&trace::<Option<u64>>()).unwrap();
        assert!(opt.append_if_conforms(&mp(&None::<u64>)).unwrap());
        assert!(opt.append_if_conforms(&mp(&Some(5u64))).unwrap());
        assert_eq!(opt.len(), 2);

        let mut pairs = Column::for_shape(&trace::<Vec<(u32, String)>>()).unwrap();
        assert!(pairs.append_if_conforms(&mp(&vec![(1u32, "a".to_string())])).unwrap());
        assert!(!pairs.append_if_conforms(&mp(&vec![(1u32, 2u32)])).unwrap());
        assert_eq!(pairs.len(), 1);
        let array = pairs.finish().unwrap();
        assert_eq!(array.len(), 1);
    }
}
