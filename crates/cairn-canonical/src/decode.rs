//! Typed columns back into stored values: any Arrow array a canonical file
//! may hold (also after pyarrow, DuckDB or Spark rewrote it: large and view
//! string types, dictionary encoding, fixed-size lists, decimals with scale
//! 0) is turned into the value codec's MessagePack, row by row. The Arrow
//! type alone decides (see [`crate::columns`]): a struct whose first field is
//! `$variant` is an enum, a struct whose fields are `0`, `1`, ... a tuple.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, FixedSizeBinaryArray, FixedSizeListArray, GenericListArray,
    LargeBinaryArray, LargeStringArray, MapArray, OffsetSizeTrait, PrimitiveArray, StringArray, StringViewArray,
    StructArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

use crate::columns::VARIANT_FIELD;
use crate::msgpack;

/// Writes the values of one array as MessagePack.
pub struct Decoder<'a> {
    array: &'a dyn Array,
    /// The array's nulls (what `Array::is_null` reads), without a call
    /// through the `dyn Array` on every row.
    nulls: Option<&'a NullBuffer>,
    kind: DKind<'a>,
}

// The arrays of the common types, read without a boxed closure per value.

enum Signed<'a> {
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
}

impl Signed<'_> {
    #[inline]
    fn get(&self, i: usize) -> i64 {
        match self {
            Signed::I8(a) => i64::from(a.value(i)),
            Signed::I16(a) => i64::from(a.value(i)),
            Signed::I32(a) => i64::from(a.value(i)),
            Signed::I64(a) => a.value(i),
        }
    }
}

enum Unsigned<'a> {
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
}

impl Unsigned<'_> {
    #[inline]
    fn get(&self, i: usize) -> u64 {
        match self {
            Unsigned::U8(a) => u64::from(a.value(i)),
            Unsigned::U16(a) => u64::from(a.value(i)),
            Unsigned::U32(a) => u64::from(a.value(i)),
            Unsigned::U64(a) => a.value(i),
        }
    }
}

enum Strs<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strs<'a> {
    #[inline]
    fn get(&self, i: usize) -> &'a str {
        match self {
            Strs::Utf8(a) => a.value(i),
            Strs::Large(a) => a.value(i),
            Strs::View(a) => a.value(i),
        }
    }
}

enum Bins<'a> {
    Binary(&'a BinaryArray),
    Large(&'a LargeBinaryArray),
    View(&'a BinaryViewArray),
    Fixed(&'a FixedSizeBinaryArray),
}

impl<'a> Bins<'a> {
    #[inline]
    fn get(&self, i: usize) -> &'a [u8] {
        match self {
            Bins::Binary(a) => a.value(i),
            Bins::Large(a) => a.value(i),
            Bins::View(a) => a.value(i),
            Bins::Fixed(a) => a.value(i),
        }
    }
}

enum DKind<'a> {
    Null,
    Bool,
    Signed(Signed<'a>),
    Unsigned(Unsigned<'a>),
    F32(&'a arrow_array::Float32Array),
    F64(&'a arrow_array::Float64Array),
    Str(Strs<'a>),
    Bin(Bins<'a>),
    Decimal(&'a arrow_array::Decimal128Array),
    List {
        range: Box<dyn Fn(usize) -> (usize, usize) + 'a>,
        child: Box<Decoder<'a>>,
    },
    Struct {
        names: Vec<&'a str>,
        children: Vec<Decoder<'a>>,
        form: StructForm,
    },
    Map {
        array: &'a MapArray,
        keys: Box<Decoder<'a>>,
        values: Box<Decoder<'a>>,
    },
    Dict {
        keys: Vec<usize>,
        values: Box<Decoder<'a>>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StructForm {
    Named,
    Tuple,
    Enum,
}

fn unsupported(t: &DataType) -> String {
    format!("Arrow type {t} is not used by canonical savepoints")
}

fn list<'a, O: OffsetSizeTrait>(l: &'a GenericListArray<O>) -> Result<DKind<'a>, String> {
    let child = Box::new(Decoder::new_ref(l.values())?);
    Ok(DKind::List {
        range: Box::new(move |row| {
            let o = l.value_offsets();
            (o[row].as_usize(), o[row + 1].as_usize())
        }),
        child,
    })
}

impl<'a> Decoder<'a> {
    /// A decoder of `array`; an error names what the array's type cannot be.
    pub fn new(array: &'a ArrayRef) -> Result<Self, String> {
        Self::new_ref(array)
    }

    fn new_ref(array: &'a ArrayRef) -> Result<Self, String> {
        let a: &'a dyn Array = array.as_ref();
        let kind = match a.data_type() {
            DataType::Null => DKind::Null,
            DataType::Boolean => DKind::Bool,
            DataType::Int8 => DKind::Signed(Signed::I8(a.as_primitive::<Int8Type>())),
            DataType::Int16 => DKind::Signed(Signed::I16(a.as_primitive::<Int16Type>())),
            DataType::Int32 => DKind::Signed(Signed::I32(a.as_primitive::<Int32Type>())),
            DataType::Int64 => DKind::Signed(Signed::I64(a.as_primitive::<Int64Type>())),
            DataType::UInt8 => DKind::Unsigned(Unsigned::U8(a.as_primitive::<UInt8Type>())),
            DataType::UInt16 => DKind::Unsigned(Unsigned::U16(a.as_primitive::<UInt16Type>())),
            DataType::UInt32 => DKind::Unsigned(Unsigned::U32(a.as_primitive::<UInt32Type>())),
            DataType::UInt64 => DKind::Unsigned(Unsigned::U64(a.as_primitive::<UInt64Type>())),
            DataType::Float32 => DKind::F32(a.as_primitive::<Float32Type>()),
            DataType::Float64 => DKind::F64(a.as_primitive::<Float64Type>()),
            DataType::Utf8 => DKind::Str(Strs::Utf8(a.as_string::<i32>())),
            DataType::LargeUtf8 => DKind::Str(Strs::Large(a.as_string::<i64>())),
            DataType::Utf8View => DKind::Str(Strs::View(a.as_string_view())),
            DataType::Binary => DKind::Bin(Bins::Binary(a.as_binary::<i32>())),
            DataType::LargeBinary => DKind::Bin(Bins::Large(a.as_binary::<i64>())),
            DataType::BinaryView => DKind::Bin(Bins::View(a.as_binary_view())),
            DataType::FixedSizeBinary(_) => DKind::Bin(Bins::Fixed(a.as_fixed_size_binary())),
            DataType::Decimal128(_, 0) => DKind::Decimal(a.as_primitive::<arrow_array::types::Decimal128Type>()),
            DataType::List(_) => list(a.as_list::<i32>())?,
            DataType::LargeList(_) => list(a.as_list::<i64>())?,
            DataType::FixedSizeList(_, n) => {
                let n = usize::try_from(*n).map_err(|_| "a fixed-size list has a negative size".to_string())?;
                let l: &'a FixedSizeListArray = a.as_fixed_size_list();
                DKind::List {
                    range: Box::new(move |row| (row * n, row * n + n)),
                    child: Box::new(Decoder::new_ref(l.values())?),
                }
            }
            DataType::Struct(fields) => {
                let s: &'a StructArray = a.as_struct();
                let names: Vec<&'a str> = fields.iter().map(|f| f.name().as_str()).collect();
                let form = if names.first() == Some(&VARIANT_FIELD) {
                    StructForm::Enum
                } else if names.iter().enumerate().all(|(i, n)| *n == i.to_string()) && !names.is_empty() {
                    StructForm::Tuple
                } else {
                    StructForm::Named
                };
                let children = s
                    .columns()
                    .iter()
                    .map(Decoder::new_ref)
                    .collect::<Result<Vec<_>, _>>()?;
                if form == StructForm::Enum && !matches!(children[0].kind, DKind::Str(_) | DKind::Dict { .. }) {
                    return Err(format!(
                        "the '{VARIANT_FIELD}' field of an enum column must be a string"
                    ));
                }
                DKind::Struct { names, children, form }
            }
            DataType::Map(_, _) => {
                let m: &'a MapArray = a.as_map();
                DKind::Map {
                    array: m,
                    keys: Box::new(Decoder::new_ref(m.keys())?),
                    values: Box::new(Decoder::new_ref(m.values())?),
                }
            }
            DataType::Dictionary(_, _) => {
                let d = a
                    .as_any_dictionary_opt()
                    .ok_or_else(|| "a dictionary column could not be read".to_string())?;
                DKind::Dict {
                    keys: d.normalized_keys(),
                    values: Box::new(Decoder::new_ref(d.values())?),
                }
            }
            other => return Err(unsupported(other)),
        };
        Ok(Decoder {
            array: a,
            nulls: a.nulls(),
            kind,
        })
    }

    /// Whether row `row` is null.
    #[inline]
    pub fn is_null(&self, row: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(row))
    }

    /// The integer at `row` of an integer column; `None` when null or not an integer.
    pub fn int_at(&self, row: usize) -> Option<i64> {
        if self.is_null(row) {
            return None;
        }
        match &self.kind {
            DKind::Signed(f) => Some(f.get(row)),
            DKind::Unsigned(f) => i64::try_from(f.get(row)).ok(),
            DKind::Decimal(a) => i64::try_from(a.value(row)).ok(),
            DKind::Dict { keys, values } => values.int_at(keys[row]),
            _ => None,
        }
    }

    /// The bytes at `row` of a binary column; `None` when null or not binary.
    pub fn bin_at(&self, row: usize) -> Option<&'a [u8]> {
        if self.is_null(row) {
            return None;
        }
        match &self.kind {
            DKind::Bin(f) => Some(f.get(row)),
            DKind::Dict { keys, values } => values.bin_at(keys[row]),
            _ => None,
        }
    }

    /// The string at `row` of a string column; `None` when null or not a string.
    pub fn str_at(&self, row: usize) -> Option<&'a str> {
        if self.is_null(row) {
            return None;
        }
        match &self.kind {
            DKind::Str(f) => Some(f.get(row)),
            DKind::Dict { keys, values } => values.str_at(keys[row]),
            _ => None,
        }
    }

    /// Append the MessagePack of row `row` to `out`.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.is_null(row) {
            msgpack::write_nil(out);
            return Ok(());
        }
        match &self.kind {
            DKind::Null => msgpack::write_nil(out),
            DKind::Bool => msgpack::write_bool(out, self.array.as_boolean().value(row)),
            DKind::Signed(f) => msgpack::write_sint(out, f.get(row)),
            DKind::Unsigned(f) => msgpack::write_uint(out, f.get(row)),
            DKind::F32(a) => msgpack::write_f32(out, a.value(row)),
            DKind::F64(a) => msgpack::write_f64(out, a.value(row)),
            DKind::Str(f) => msgpack::write_str(out, f.get(row).as_bytes()),
            DKind::Bin(f) => msgpack::write_bin(out, f.get(row)),
            DKind::Decimal(a) => {
                let v = a.value(row);
                if let Ok(s) = i64::try_from(v) {
                    msgpack::write_sint(out, s);
                } else if let Ok(u) = u64::try_from(v) {
                    msgpack::write_uint(out, u);
                } else {
                    msgpack::write_bin(out, &v.to_be_bytes());
                }
            }
            DKind::List { range, child } => {
                let (a, b) = range(row);
                msgpack::write_array_len(out, b - a);
                for i in a..b {
                    child.write(i, out)?;
                }
            }
            DKind::Struct { names, children, form } => match form {
                StructForm::Named => {
                    msgpack::write_map_len(out, children.len());
                    for (n, c) in names.iter().zip(children) {
                        msgpack::write_str(out, n.as_bytes());
                        c.write(row, out)?;
                    }
                }
                StructForm::Tuple => {
                    msgpack::write_array_len(out, children.len());
                    for c in children {
                        c.write(row, out)?;
                    }
                }
                StructForm::Enum => {
                    let tag = children[0]
                        .str_at(row)
                        .ok_or_else(|| format!("an enum value has no '{VARIANT_FIELD}'"))?;
                    match names.iter().skip(1).position(|n| *n == tag) {
                        Some(i) => {
                            msgpack::write_map_len(out, 1);
                            msgpack::write_str(out, tag.as_bytes());
                            children[i + 1].write(row, out)?;
                        }
                        None => msgpack::write_str(out, tag.as_bytes()),
                    }
                }
            },
            DKind::Map { array, keys, values } => {
                let o = array.value_offsets();
                let (a, b) = (o[row] as usize, o[row + 1] as usize);
                msgpack::write_map_len(out, b - a);
                for i in a..b {
                    keys.write(i, out)?;
                    values.write(i, out)?;
                }
            }
            DKind::Dict { keys, values } => values.write(keys[row], out)?,
        }
        Ok(())
    }
}
