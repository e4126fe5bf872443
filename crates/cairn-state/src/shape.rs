//! Type shapes: what a state's key or value type looks like to serde, found
//! without a value by *tracing* its `Deserialize` implementation once, when
//! the state is registered.
//!
//! Canonical savepoints (format v2) turn each shape into typed Parquet
//! columns (an integer column for a `u64`, a struct column for a struct, a
//! list for a `Vec`), so tools that do not know Cairn query them as data;
//! `cairn savepoint check` compares the shape a snapshot recorded with the
//! shape a job declares. The mapping is specified in
//! `docs/formats/savepoint-canonical.md`.
//!
//! Tracing drives the type's `Deserialize` with a deserializer that answers
//! every request with a minimal value and records what was asked for: a
//! struct's field names come from serde itself, an `Option`'s inner type from
//! visiting `Some`, an enum's variants from one pass per variant (an enum is
//! explored one variant per pass until every variant was seen). Types serde
//! cannot describe without data (`deserialize_any`: untagged or internally
//! tagged enums, `#[serde(flatten)]`, `serde_json::Value`), recursive types,
//! and types whose `Deserialize` rejects the minimal values get
//! [`Shape::Opaque`]: canonical savepoints then keep them as JSON text, so
//! nothing is lost, only the typed columns.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer as _, Visitor};
use serde::{Deserialize, Serialize};

/// The shape of a serde type, as it is stored (MessagePack with named
/// struct fields, see [`crate::codec`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `()`: MessagePack nil.
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    /// Stored as 16 big-endian bytes (MessagePack bin).
    I128,
    U8,
    U16,
    U32,
    U64,
    /// Stored as 16 big-endian bytes (MessagePack bin).
    U128,
    F32,
    F64,
    Char,
    Str,
    /// `serde_bytes` and friends: MessagePack bin.
    Bytes,
    /// `Option<T>`: nil or the value itself.
    Option(Box<Shape>),
    /// `Vec<T>`, sets, slices: a MessagePack array.
    Seq(Box<Shape>),
    /// `HashMap<K, V>`, `BTreeMap<K, V>`: a MessagePack map.
    Map {
        key: Box<Shape>,
        value: Box<Shape>,
    },
    /// Tuples, tuple structs, arrays `[T; N]`: a MessagePack array of fixed length.
    Tuple(Vec<Shape>),
    /// A struct with named fields: a MessagePack map keyed by field name.
    Struct {
        name: String,
        fields: Vec<Field>,
    },
    /// A unit struct (`struct Marker;`): an empty MessagePack array.
    UnitStruct(String),
    /// An enum: a unit variant is its name (a string), any other variant a
    /// one-entry map from its name to its content.
    Enum {
        name: String,
        variants: Vec<Variant>,
    },
    /// A type serde cannot describe without data, or a recursive type.
    Opaque(String),
}

/// A named field of a struct (or struct variant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub shape: Shape,
}

/// One variant of an enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub content: VariantContent,
}

/// What a variant holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantContent {
    Unit,
    Newtype(Shape),
    Tuple(Vec<Shape>),
    Struct(Vec<Field>),
}

/// The shapes of a state's types, recorded with its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateShapes {
    /// Map state: the user key type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<Shape>,
    /// The value (list element, map value) type.
    pub value: Shape,
}

impl Shape {
    /// Whether this is [`Shape::Opaque`].
    pub fn is_opaque(&self) -> bool {
        matches!(self, Shape::Opaque(_))
    }

    /// Whether a stored value of this shape can be nil (so a null in a
    /// typed column is ambiguous with an absent value).
    pub fn can_be_nil(&self) -> bool {
        matches!(self, Shape::Unit | Shape::Option(_))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, items: &[Shape]) -> fmt::Result {
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{s}")?;
            }
            Ok(())
        }
        fn fields(f: &mut fmt::Formatter<'_>, fields: &[Field]) -> fmt::Result {
            f.write_str("{ ")?;
            for (i, fd) in fields.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}: {}", fd.name, fd.shape)?;
            }
            f.write_str(" }")
        }
        match self {
            Shape::Unit => f.write_str("()"),
            Shape::Bool => f.write_str("bool"),
            Shape::I8 => f.write_str("i8"),
            Shape::I16 => f.write_str("i16"),
            Shape::I32 => f.write_str("i32"),
            Shape::I64 => f.write_str("i64"),
            Shape::I128 => f.write_str("i128"),
            Shape::U8 => f.write_str("u8"),
            Shape::U16 => f.write_str("u16"),
            Shape::U32 => f.write_str("u32"),
            Shape::U64 => f.write_str("u64"),
            Shape::U128 => f.write_str("u128"),
            Shape::F32 => f.write_str("f32"),
            Shape::F64 => f.write_str("f64"),
            Shape::Char => f.write_str("char"),
            Shape::Str => f.write_str("String"),
            Shape::Bytes => f.write_str("bytes"),
            Shape::Option(s) => write!(f, "Option<{s}>"),
            Shape::Seq(s) => write!(f, "Vec<{s}>"),
            Shape::Map { key, value } => write!(f, "Map<{key}, {value}>"),
            Shape::Tuple(items) => {
                f.write_str("(")?;
                list(f, items)?;
                f.write_str(")")
            }
            Shape::Struct { name, fields: fs } => {
                write!(f, "{name} ")?;
                fields(f, fs)
            }
            Shape::UnitStruct(name) => f.write_str(name),
            Shape::Enum { name, variants } => {
                write!(f, "enum {name} {{ ")?;
                for (i, v) in variants.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&v.name)?;
                    match &v.content {
                        VariantContent::Unit => {}
                        VariantContent::Newtype(s) => write!(f, "({s})")?,
                        VariantContent::Tuple(items) => {
                            f.write_str("(")?;
                            list(f, items)?;
                            f.write_str(")")?;
                        }
                        VariantContent::Struct(fs) => {
                            f.write_str(" ")?;
                            fields(f, fs)?;
                        }
                    }
                }
                f.write_str(" }")
            }
            Shape::Opaque(why) => write!(f, "opaque ({why})"),
        }
    }
}

// ---------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------

/// Passes over a type before tracing gives up on exploring its enums.
const MAX_PASSES: usize = 4096;
/// Nesting deeper than this is treated as opaque.
const MAX_DEPTH: usize = 64;

/// The shape of `T`, traced from its `Deserialize` implementation. Never
/// fails: what cannot be traced is [`Shape::Opaque`] with the reason.
pub fn trace<T: DeserializeOwned>() -> Shape {
    let mut tracer = Tracer::default();
    let mut first: Option<TShape> = None;
    let mut stale = 0usize;
    for pass in 0..MAX_PASSES {
        tracer.pass = pass;
        tracer.progress = false;
        let mut out = None;
        let result = T::deserialize(TraceDe {
            t: &mut tracer,
            out: &mut out,
            depth: 0,
        });
        if let Err(e) = result {
            return Shape::Opaque(e.0);
        }
        let Some(shape) = out else {
            return Shape::Opaque("its Deserialize implementation asked for nothing".into());
        };
        first.get_or_insert(shape);
        if tracer.complete() {
            break;
        }
        stale = if tracer.progress { 0 } else { stale + 1 };
        let variants: usize = tracer.enums.iter().map(|e| e.variants.len()).sum();
        if stale > 2 * variants + 4 {
            break;
        }
    }
    let Some(shape) = first else {
        return Shape::Opaque("not traced".into());
    };
    match tracer.resolve(&shape, &mut Vec::new()) {
        Ok(s) => s,
        Err(why) => Shape::Opaque(why),
    }
}

/// A shape while tracing: enums are references into the tracer's registry,
/// filled in over several passes.
#[derive(Clone, Debug)]
enum TShape {
    Plain(Shape),
    Option(Box<TShape>),
    Seq(Box<TShape>),
    Map(Box<TShape>, Box<TShape>),
    Tuple(Vec<TShape>),
    Struct(String, Vec<(String, TShape)>),
    Enum(usize),
}

#[derive(Clone, Debug)]
enum TVariant {
    Unit,
    Newtype(TShape),
    Tuple(Vec<TShape>),
    Struct(Vec<(String, TShape)>),
}

#[derive(Debug)]
struct EnumEntry {
    name: &'static str,
    variants: &'static [&'static str],
    contents: Vec<Option<TVariant>>,
}

#[derive(Default)]
struct Tracer {
    enums: Vec<EnumEntry>,
    index: HashMap<(&'static str, Vec<&'static str>), usize>,
    /// Names of the structs and enums being traced (recursion detection).
    stack: Vec<&'static str>,
    pass: usize,
    progress: bool,
    /// Encounters of each enum in this pass (to rotate through variants).
    seen: HashMap<usize, usize>,
}

impl Tracer {
    fn complete(&self) -> bool {
        self.enums.iter().all(|e| e.contents.iter().all(Option::is_some))
    }

    fn enum_id(&mut self, name: &'static str, variants: &'static [&'static str]) -> usize {
        let key = (name, variants.to_vec());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.enums.push(EnumEntry {
            name,
            variants,
            contents: vec![None; variants.len()],
        });
        self.index.insert(key, self.enums.len() - 1);
        self.enums.len() - 1
    }

    /// The variant to explore at this encounter: the first one not yet
    /// seen, else one in rotation (so enums nested in variants are reached).
    fn choose(&mut self, id: usize) -> usize {
        let e = &self.enums[id];
        if let Some(i) = e.contents.iter().position(Option::is_none) {
            return i;
        }
        let n = self.seen.entry(id).or_insert(0);
        *n += 1;
        (self.pass + *n) % e.variants.len()
    }

    fn resolve(&self, s: &TShape, stack: &mut Vec<usize>) -> Result<Shape, String> {
        Ok(match s {
            TShape::Plain(p) => p.clone(),
            TShape::Option(i) => Shape::Option(Box::new(self.resolve(i, stack)?)),
            TShape::Seq(i) => Shape::Seq(Box::new(self.resolve(i, stack)?)),
            TShape::Map(k, v) => Shape::Map {
                key: Box::new(self.resolve(k, stack)?),
                value: Box::new(self.resolve(v, stack)?),
            },
            TShape::Tuple(items) => {
                Shape::Tuple(items.iter().map(|i| self.resolve(i, stack)).collect::<Result<_, _>>()?)
            }
            TShape::Struct(name, fields) => Shape::Struct {
                name: name.clone(),
                fields: self.fields(fields, stack)?,
            },
            TShape::Enum(id) => {
                let e = &self.enums[*id];
                if stack.contains(id) {
                    return Err(format!("enum {} is recursive", e.name));
                }
                stack.push(*id);
                let mut variants = Vec::with_capacity(e.variants.len());
                for (name, content) in e.variants.iter().zip(&e.contents) {
                    let content = match content {
                        None => return Err(format!("variant {name} of enum {} could not be traced", e.name)),
                        Some(TVariant::Unit) => VariantContent::Unit,
                        Some(TVariant::Newtype(s)) => VariantContent::Newtype(self.resolve(s, stack)?),
                        Some(TVariant::Tuple(items)) => VariantContent::Tuple(
                            items.iter().map(|i| self.resolve(i, stack)).collect::<Result<_, _>>()?,
                        ),
                        Some(TVariant::Struct(fields)) => VariantContent::Struct(self.fields(fields, stack)?),
                    };
                    variants.push(Variant {
                        name: (*name).to_string(),
                        content,
                    });
                }
                stack.pop();
                Shape::Enum {
                    name: e.name.to_string(),
                    variants,
                }
            }
        })
    }

    fn fields(&self, fields: &[(String, TShape)], stack: &mut Vec<usize>) -> Result<Vec<Field>, String> {
        fields
            .iter()
            .map(|(n, s)| {
                Ok(Field {
                    name: n.clone(),
                    shape: self.resolve(s, stack)?,
                })
            })
            .collect()
    }
}

/// Why tracing stopped.
#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(format!(
            "its Deserialize implementation rejected a minimal value: {msg}"
        ))
    }
}

fn needs_data(what: &str) -> TraceError {
    TraceError(format!(
        "serde cannot describe it without data ({what}: untagged or internally tagged enums, #[serde(flatten)], self-describing values)"
    ))
}

struct TraceDe<'t> {
    t: &'t mut Tracer,
    out: &'t mut Option<TShape>,
    depth: usize,
}

impl<'t> TraceDe<'t> {
    fn leaf(self, s: Shape) {
        *self.out = Some(TShape::Plain(s));
    }

    fn enter(&mut self, name: &'static str) -> Result<(), TraceError> {
        if self.depth >= MAX_DEPTH {
            return Err(TraceError(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        if self.t.stack.contains(&name) {
            return Err(TraceError(format!("type {name} is recursive")));
        }
        self.t.stack.push(name);
        Ok(())
    }
}

/// Trace one value with `seed`, returning its shape.
fn trace_seed<'de, S: DeserializeSeed<'de>>(
    t: &mut Tracer,
    depth: usize,
    seed: S,
) -> Result<(S::Value, TShape), TraceError> {
    if depth >= MAX_DEPTH {
        return Err(TraceError(format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    let mut out = None;
    let v = seed.deserialize(TraceDe {
        t,
        out: &mut out,
        depth: depth + 1,
    })?;
    let shape = out.ok_or_else(|| TraceError("a nested Deserialize asked for nothing".into()))?;
    Ok((v, shape))
}

macro_rules! leaf {
    ($method:ident, $shape:expr, $visit:ident, $value:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            self.leaf($shape);
            visitor.$visit($value)
        }
    };
}

impl<'de, 't> de::Deserializer<'de> for TraceDe<'t> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(needs_data("deserialize_any"))
    }

    leaf!(deserialize_bool, Shape::Bool, visit_bool, false);
    leaf!(deserialize_i8, Shape::I8, visit_i8, 1);
    leaf!(deserialize_i16, Shape::I16, visit_i16, 1);
    leaf!(deserialize_i32, Shape::I32, visit_i32, 1);
    leaf!(deserialize_i64, Shape::I64, visit_i64, 1);
    leaf!(deserialize_i128, Shape::I128, visit_i128, 1);
    leaf!(deserialize_u8, Shape::U8, visit_u8, 1);
    leaf!(deserialize_u16, Shape::U16, visit_u16, 1);
    leaf!(deserialize_u32, Shape::U32, visit_u32, 1);
    leaf!(deserialize_u64, Shape::U64, visit_u64, 1);
    leaf!(deserialize_u128, Shape::U128, visit_u128, 1);
    leaf!(deserialize_f32, Shape::F32, visit_f32, 0.0);
    leaf!(deserialize_f64, Shape::F64, visit_f64, 0.0);
    leaf!(deserialize_char, Shape::Char, visit_char, 'a');
    leaf!(deserialize_str, Shape::Str, visit_str, "");
    leaf!(deserialize_string, Shape::Str, visit_string, String::new());
    leaf!(deserialize_bytes, Shape::Bytes, visit_bytes, &[]);
    leaf!(deserialize_byte_buf, Shape::Bytes, visit_byte_buf, Vec::new());

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut inner = None;
        let v = visitor.visit_some(TraceDe {
            t: self.t,
            out: &mut inner,
            depth: self.depth + 1,
        })?;
        let inner = inner.ok_or_else(|| TraceError("an Option's content asked for nothing".into()))?;
        *self.out = Some(TShape::Option(Box::new(inner)));
        Ok(v)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Shape::Unit);
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Shape::UnitStruct(name.to_string()));
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut inner = None;
        let r = visitor.visit_newtype_struct(TraceDe {
            t: self.t,
            out: &mut inner,
            depth: self.depth + 1,
        });
        self.t.stack.pop();
        let v = r?;
        *self.out = Some(inner.ok_or_else(|| TraceError(format!("newtype {name} asked for nothing")))?);
        Ok(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = SeqTrace {
            t: self.t,
            depth: self.depth,
            remaining: 1,
            shapes: Vec::new(),
        };
        let v = visitor.visit_seq(&mut access)?;
        let element = access
            .shapes
            .pop()
            .ok_or_else(|| TraceError("a sequence's element type was never asked for".into()))?;
        *self.out = Some(TShape::Seq(Box::new(element)));
        Ok(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = SeqTrace {
            t: self.t,
            depth: self.depth,
            remaining: len,
            shapes: Vec::new(),
        };
        let v = visitor.visit_seq(&mut access)?;
        if access.shapes.len() != len {
            return Err(TraceError(format!(
                "a tuple of {len} asked for {} elements",
                access.shapes.len()
            )));
        }
        *self.out = Some(TShape::Tuple(access.shapes));
        Ok(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut out = None;
        let r = TraceDe {
            t: self.t,
            out: &mut out,
            depth: self.depth,
        }
        .deserialize_tuple(len, visitor);
        self.t.stack.pop();
        let v = r?;
        *self.out = out;
        Ok(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = MapTrace {
            t: self.t,
            depth: self.depth,
            remaining: 1,
            key: None,
            value: None,
        };
        let v = visitor.visit_map(&mut access)?;
        match (access.key, access.value) {
            (Some(k), Some(val)) => {
                *self.out = Some(TShape::Map(Box::new(k), Box::new(val)));
                Ok(v)
            }
            _ => Err(TraceError("a map's key or value type was never asked for".into())),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut access = StructTrace {
            t: self.t,
            depth: self.depth,
            fields,
            next: 0,
            shapes: Vec::new(),
        };
        let r = visitor.visit_map(&mut access);
        let shapes = std::mem::take(&mut access.shapes);
        self.t.stack.pop();
        let v = r?;
        if fields.is_empty() {
            *self.out = Some(TShape::Plain(Shape::Opaque(format!("struct {name} has no fields"))));
        } else {
            *self.out = Some(TShape::Struct(name.to_string(), shapes));
        }
        Ok(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError(format!("enum {name} has no variants")));
        }
        self.enter(name)?;
        let id = self.t.enum_id(name, variants);
        let chosen = self.t.choose(id);
        let mut content = None;
        let r = visitor.visit_enum(EnumTrace {
            t: self.t,
            depth: self.depth,
            variant: variants[chosen],
            content: &mut content,
        });
        self.t.stack.pop();
        let v = r?;
        let content = content.ok_or_else(|| TraceError(format!("variant {} asked for nothing", variants[chosen])))?;
        let slot = &mut self.t.enums[id].contents[chosen];
        if slot.is_none() {
            *slot = Some(content);
            self.t.progress = true;
        }
        *self.out = Some(TShape::Enum(id));
        Ok(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(needs_data("deserialize_identifier outside a struct or enum"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(needs_data("deserialize_ignored_any"))
    }

    fn is_human_readable(&self) -> bool {
        // As MessagePack (the value codec) and the key encoding.
        false
    }
}

struct SeqTrace<'t> {
    t: &'t mut Tracer,
    depth: usize,
    remaining: usize,
    shapes: Vec<TShape>,
}

impl<'de> de::SeqAccess<'de> for SeqTrace<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let (v, shape) = trace_seed(self.t, self.depth, seed)?;
        self.shapes.push(shape);
        Ok(Some(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

struct MapTrace<'t> {
    t: &'t mut Tracer,
    depth: usize,
    remaining: usize,
    key: Option<TShape>,
    value: Option<TShape>,
}

impl<'de> de::MapAccess<'de> for MapTrace<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let (v, shape) = trace_seed(self.t, self.depth, seed)?;
        self.key = Some(shape);
        Ok(Some(v))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, TraceError> {
        let (v, shape) = trace_seed(self.t, self.depth, seed)?;
        self.value = Some(shape);
        Ok(v)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

struct StructTrace<'t> {
    t: &'t mut Tracer,
    depth: usize,
    fields: &'static [&'static str],
    next: usize,
    shapes: Vec<(String, TShape)>,
}

impl<'de> de::MapAccess<'de> for StructTrace<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        let Some(&name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let d: de::value::BorrowedStrDeserializer<'de, TraceError> = de::value::BorrowedStrDeserializer::new(name);
        seed.deserialize(d).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, TraceError> {
        let name = self.fields[self.next];
        self.next += 1;
        let (v, shape) = trace_seed(self.t, self.depth, seed)?;
        self.shapes.push((name.to_string(), shape));
        Ok(v)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

struct EnumTrace<'t, 'o> {
    t: &'t mut Tracer,
    depth: usize,
    variant: &'static str,
    content: &'o mut Option<TVariant>,
}

impl<'de> de::EnumAccess<'de> for EnumTrace<'_, '_> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), TraceError> {
        let d: de::value::BorrowedStrDeserializer<'de, TraceError> =
            de::value::BorrowedStrDeserializer::new(self.variant);
        let v = seed.deserialize(d)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumTrace<'_, '_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.content = Some(TVariant::Unit);
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        let (v, shape) = trace_seed(self.t, self.depth, seed)?;
        *self.content = Some(TVariant::Newtype(shape));
        Ok(v)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut out = None;
        let v = TraceDe {
            t: self.t,
            out: &mut out,
            depth: self.depth + 1,
        }
        .deserialize_tuple(len, visitor)?;
        match out {
            Some(TShape::Tuple(items)) => *self.content = Some(TVariant::Tuple(items)),
            _ => return Err(TraceError("a tuple variant was not traced as a tuple".into())),
        }
        Ok(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut access = StructTrace {
            t: self.t,
            depth: self.depth + 1,
            fields,
            next: 0,
            shapes: Vec::new(),
        };
        let v = visitor.visit_map(&mut access)?;
        if fields.is_empty() {
            return Err(TraceError("a struct variant has no fields".into()));
        }
        *self.content = Some(TVariant::Struct(std::mem::take(&mut access.shapes)));
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
