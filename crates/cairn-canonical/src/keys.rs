//! A key codec from a recorded key shape: reads the key encoding
//! (`docs/key-groups.md`: bincode 1.x's layout) of a key whose Rust type is
//! not at hand, knowing only its [`Shape`], and writes it in the value codec
//! as `rmp_serde` would have written the decoded key. Offline tools use it to
//! split backend keys into key and namespace (rehashing keys into new key
//! groups needs exactly the key's bytes) and to fill typed key columns.

use cairn_state::canonical::KeyJson;
use cairn_state::codec;
use cairn_state::shape::{Field, Shape, VariantContent};

use crate::msgpack;

/// Decodes keys of one shape.
pub struct ShapeKeyCodec {
    shape: Shape,
}

impl ShapeKeyCodec {
    /// A codec for keys of `shape`; `None` for shapes whose encoding cannot
    /// be walked without the type (opaque shapes).
    pub fn new(shape: Shape) -> Option<Self> {
        fn walkable(s: &Shape) -> bool {
            match s {
                Shape::Opaque(_) => false,
                Shape::Option(i) | Shape::Seq(i) => walkable(i),
                Shape::Map { key, value } => walkable(key) && walkable(value),
                Shape::Tuple(items) => items.iter().all(walkable),
                Shape::Struct { fields, .. } => fields.iter().all(|f| walkable(&f.shape)),
                Shape::Enum { variants, .. } => variants.iter().all(|v| match &v.content {
                    VariantContent::Unit => true,
                    VariantContent::Newtype(s) => walkable(s),
                    VariantContent::Tuple(items) => items.iter().all(walkable),
                    VariantContent::Struct(fields) => fields.iter().all(|f| walkable(&f.shape)),
                }),
                _ => true,
            }
        }
        walkable(&shape).then_some(ShapeKeyCodec { shape })
    }
}

impl KeyJson for ShapeKeyCodec {
    fn key_json(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut mp = Vec::new();
        let used = self.key_msgpack(composite, &mut mp)?;
        codec::msgpack_to_json(&mp, out)?;
        Ok(used)
    }

    fn key_msgpack(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut pos = 0;
        decode(&self.shape, composite, &mut pos, out, 0)?;
        Ok(pos)
    }

    fn key_shape(&self) -> Shape {
        self.shape.clone()
    }
}

fn take<'b>(b: &'b [u8], pos: &mut usize, n: usize) -> Result<&'b [u8], String> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| format!("the key ends after {} bytes, inside its value", b.len()))?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

fn le(b: &[u8], pos: &mut usize, n: usize) -> Result<u64, String> {
    Ok(take(b, pos, n)?
        .iter()
        .rev()
        .fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

fn len(b: &[u8], pos: &mut usize) -> Result<usize, String> {
    let n = le(b, pos, 8)?;
    let n = usize::try_from(n).map_err(|_| "a length does not fit in memory".to_string())?;
    if n > b.len() && n > (1 << 20) {
        return Err(format!("a length of {n} is longer than the key"));
    }
    Ok(n)
}

fn fields(fs: &[Field], b: &[u8], pos: &mut usize, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    msgpack::write_map_len(out, fs.len());
    for f in fs {
        msgpack::write_str(out, f.name.as_bytes());
        decode(&f.shape, b, pos, out, depth + 1)?;
    }
    Ok(())
}

fn decode(shape: &Shape, b: &[u8], pos: &mut usize, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err("the key nests deeper than 64 levels".into());
    }
    match shape {
        Shape::Unit | Shape::UnitStruct(_) => {
            if matches!(shape, Shape::UnitStruct(_)) {
                msgpack::write_array_len(out, 0);
            } else {
                msgpack::write_nil(out);
            }
        }
        Shape::Bool => match take(b, pos, 1)?[0] {
            0 => msgpack::write_bool(out, false),
            1 => msgpack::write_bool(out, true),
            x => return Err(format!("a bool byte is {x:#04x}")),
        },
        Shape::I8 => msgpack::write_sint(out, i64::from(le(b, pos, 1)? as u8 as i8)),
        Shape::I16 => msgpack::write_sint(out, i64::from(le(b, pos, 2)? as u16 as i16)),
        Shape::I32 => msgpack::write_sint(out, i64::from(le(b, pos, 4)? as u32 as i32)),
        Shape::I64 => msgpack::write_sint(out, le(b, pos, 8)? as i64),
        Shape::U8 => msgpack::write_uint(out, le(b, pos, 1)?),
        Shape::U16 => msgpack::write_uint(out, le(b, pos, 2)?),
        Shape::U32 => msgpack::write_uint(out, le(b, pos, 4)?),
        Shape::U64 => msgpack::write_uint(out, le(b, pos, 8)?),
        Shape::I128 | Shape::U128 => {
            // Little-endian in keys, big-endian bytes in the value codec.
            let mut v = take(b, pos, 16)?.to_vec();
            v.reverse();
            msgpack::write_bin(out, &v);
        }
        Shape::F32 => msgpack::write_f32(out, f32::from_bits(le(b, pos, 4)? as u32)),
        Shape::F64 => msgpack::write_f64(out, f64::from_bits(le(b, pos, 8)?)),
        Shape::Char => {
            let first = *b.get(*pos).ok_or_else(|| "the key ends inside a char".to_string())?;
            let w = match first {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => return Err("a char is not UTF-8".into()),
            };
            let s = take(b, pos, w)?;
            std::str::from_utf8(s).map_err(|_| "a char is not UTF-8".to_string())?;
            msgpack::write_str(out, s);
        }
        Shape::Str => {
            let n = len(b, pos)?;
            let s = take(b, pos, n)?;
            std::str::from_utf8(s).map_err(|_| "a string is not UTF-8".to_string())?;
            msgpack::write_str(out, s);
        }
        Shape::Bytes => {
            let n = len(b, pos)?;
            msgpack::write_bin(out, take(b, pos, n)?);
        }
        Shape::Option(inner) => match take(b, pos, 1)?[0] {
            0 => msgpack::write_nil(out),
            1 => decode(inner, b, pos, out, depth + 1)?,
            x => return Err(format!("an option tag is {x:#04x}")),
        },
        Shape::Seq(inner) => {
            let n = len(b, pos)?;
            msgpack::write_array_len(out, n);
            for _ in 0..n {
                decode(inner, b, pos, out, depth + 1)?;
            }
        }
        Shape::Map { key, value } => {
            let n = len(b, pos)?;
            msgpack::write_map_len(out, n);
            for _ in 0..n {
                decode(key, b, pos, out, depth + 1)?;
                decode(value, b, pos, out, depth + 1)?;
            }
        }
        Shape::Tuple(items) => {
            msgpack::write_array_len(out, items.len());
            for i in items {
                decode(i, b, pos, out, depth + 1)?;
            }
        }
        Shape::Struct { fields: fs, .. } => fields(fs, b, pos, out, depth)?,
        Shape::Enum { name, variants } => {
            let idx = le(b, pos, 4)? as usize;
            let v = variants
                .get(idx)
                .ok_or_else(|| format!("variant index {idx} is not a variant of enum {name}"))?;
            match &v.content {
                VariantContent::Unit => msgpack::write_str(out, v.name.as_bytes()),
                content => {
                    msgpack::write_map_len(out, 1);
                    msgpack::write_str(out, v.name.as_bytes());
                    match content {
                        VariantContent::Newtype(s) => decode(s, b, pos, out, depth + 1)?,
                        VariantContent::Tuple(items) => {
                            msgpack::write_array_len(out, items.len());
                            for i in items {
                                decode(i, b, pos, out, depth + 1)?;
                            }
                        }
                        VariantContent::Struct(fs) => fields(fs, b, pos, out, depth)?,
                        VariantContent::Unit => unreachable!("matched above"),
                    }
                }
            }
        }
        Shape::Opaque(why) => return Err(format!("the key's type is not known ({why})")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Clone)]
    enum Region {
        Eu,
        Us(u16),
        Other { code: String },
    }

    #[derive(Serialize, Deserialize, Clone)]
    struct Composite {
        id: u64,
        name: String,
        region: Region,
        weight: Option<f32>,
        big: i128,
        tags: Vec<char>,
        pair: (bool, i16),
    }

    /// The shape codec reads what the key encoding wrote and writes what the
    /// value codec would, and tells where the key ends.
    #[test]
    fn shape_codec_matches_the_typed_codec() {
        let codec = ShapeKeyCodec::new(cairn_state::shape::trace::<Composite>()).unwrap();
        for (i, region) in [Region::Eu, Region::Us(7), Region::Other { code: "x".into() }]
            .into_iter()
            .enumerate()
        {
            let key = Composite {
                id: i as u64 * 1_000_000_007,
                name: format!("n{i}"),
                region,
                weight: i.is_multiple_of(2).then_some(0.5),
                big: -(i as i128) << 100,
                tags: vec!['a', 'é', '€', '😀'],
                pair: (i == 1, -3),
            };
            let mut kb = Vec::new();
            cairn_state::keygroup::key_bytes(&key, &mut kb).unwrap();
            let len = kb.len();
            kb.extend_from_slice(b"namespace");
            let mut mp = Vec::new();
            assert_eq!(codec.key_msgpack(&kb, &mut mp).unwrap(), len);
            let mut want = Vec::new();
            cairn_state::codec::append("k", &key, &mut want).unwrap();
            assert_eq!(mp, want);
        }
        assert!(
            codec.key_msgpack(&[1, 2, 3], &mut Vec::new()).is_err(),
            "truncated keys are refused"
        );
        assert!(ShapeKeyCodec::new(Shape::Opaque("x".into())).is_none());
    }
}
