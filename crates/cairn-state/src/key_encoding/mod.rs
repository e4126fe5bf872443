//! Cairn's key encoding: the canonical bytes of a key, which are hashed into its key group.
//!
//! The bytes are exactly those of bincode 1.3's default `bincode::serialize` (fixed-width
//! little-endian integers, `u64` length prefixes, `u32` variant indices), because checkpoints
//! and savepoints written before Cairn owned this code used bincode and a key's group must
//! never move. Cairn owns the encoding instead of depending on the unmaintained bincode 1.x;
//! the format is specified in `docs/key-groups.md` (section 1) and pinned by golden vectors in
//! `tests/key_encoding_golden.rs`, generated with bincode 1.3.3 itself.
//!
//! The same encoding frames the operator-state section of native state files
//! (`docs/formats/state-file.md`).
//!
//! Decoding never trusts a length prefix: lengths are checked against the bytes that remain
//! before anything is allocated, nesting is limited to [`MAX_DEPTH`] levels and zero-byte
//! elements (sequences of `()`) to [`MAX_ZERO_SIZED_ELEMENTS`] per value, so malformed input
//! gets an [`Error`], never a panic, an unbounded allocation or a stall.

mod de;
mod ser;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use de::Deserializer;
pub use ser::Serializer;

/// Deepest nesting of sequences, maps, tuples, structs, enums, options and newtypes a decoded
/// value may have (only recursive types can reach it).
pub const MAX_DEPTH: usize = 128;

/// Most elements that decode from zero bytes (`()`, unit structs, empty tuples) one decoded
/// value may hold; a length prefix alone would otherwise make the decoder loop for ever.
pub const MAX_ZERO_SIZED_ELEMENTS: u64 = 1 << 20;

/// Appends the encoding of `value` to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), Error> {
    value.serialize(&mut Serializer::new(buf))
}

/// The encoding of `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// Decodes a `T` that must use all of `bytes`.
pub fn from_bytes<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    let (value, used) = from_prefix(bytes)?;
    if used != bytes.len() {
        return Err(Error::TrailingBytes { used, len: bytes.len() });
    }
    Ok(value)
}

/// Decodes a `T` from the start of `bytes`, returning it and how many bytes it used.
pub fn from_prefix<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<(T, usize), Error> {
    let mut de = Deserializer::new(bytes);
    let value = T::deserialize(&mut de)?;
    Ok((value, de.position()))
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A sequence or map was serialized without announcing its length (the encoding writes
    /// the length first).
    SequenceMustHaveLength,
    /// The input ended: `needed` more bytes were expected at byte `at`.
    UnexpectedEnd { at: usize, needed: u64 },
    /// A `bool` byte other than 0 or 1.
    InvalidBool { at: usize, byte: u8 },
    /// An `Option` tag byte other than 0 or 1.
    InvalidOptionTag { at: usize, byte: u8 },
    /// A `char` that is not one UTF-8 encoded Unicode scalar value.
    InvalidChar { at: usize },
    /// A string whose bytes are not UTF-8.
    InvalidUtf8 { at: usize },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep { at: usize },
    /// More than [`MAX_ZERO_SIZED_ELEMENTS`] zero-byte elements.
    TooManyZeroSizedElements { at: usize },
    /// [`from_bytes`] decoded a value from the first `used` of `len` bytes.
    TrailingBytes { used: usize, len: usize },
    /// The type asked for a self-describing format (`deserialize_any`, identifiers, ignored
    /// values, `#[serde(flatten)]`, untagged enums); this encoding has no type information.
    NotSelfDescribing { what: &'static str },
    /// The type's own `Serialize`/`Deserialize` implementation failed.
    Custom(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SequenceMustHaveLength => f.write_str(
                "a sequence or map did not announce its length before its elements; the key \
                 encoding writes the length first, so the type must serialize collections of \
                 known length",
            ),
            Error::UnexpectedEnd { at, needed } => {
                write!(f, "the bytes end at byte {at}, but {needed} more were expected")
            }
            Error::InvalidBool { at, byte } => write!(f, "byte {at} is {byte}, not a bool (0 or 1)"),
            Error::InvalidOptionTag { at, byte } => {
                write!(f, "byte {at} is {byte}, not an Option tag (0 for None, 1 for Some)")
            }
            Error::InvalidChar { at } => write!(f, "the char at byte {at} is not valid UTF-8"),
            Error::InvalidUtf8 { at } => write!(f, "the string at byte {at} is not valid UTF-8"),
            Error::TooDeep { at } => write!(f, "the value is nested more than {MAX_DEPTH} levels deep at byte {at}"),
            Error::TooManyZeroSizedElements { at } => write!(
                f,
                "more than {MAX_ZERO_SIZED_ELEMENTS} zero-byte elements (at byte {at}); a length \
                 prefix is probably corrupt"
            ),
            Error::TrailingBytes { used, len } => {
                write!(f, "the value ends at byte {used}, but there are {len} bytes")
            }
            Error::NotSelfDescribing { what } => write!(
                f,
                "the type uses {what}, which needs a self-describing format; the key encoding \
                 carries no type information (use plain structs, enums, tuples and collections)"
            ),
            Error::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}
