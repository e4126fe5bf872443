//! Random values of many serde shapes, for comparing Cairn's key encoding with bincode 1.3.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// splitmix64: deterministic, seedable, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Lengths are mostly short, sometimes long.
    pub fn len(&mut self) -> usize {
        match self.below(10) {
            0 => 0,
            1..=7 => self.below(6) as usize,
            8 => self.below(40) as usize,
            _ => self.below(300) as usize,
        }
    }
}

/// Makes a random value.
pub trait Gen: Sized {
    fn gen(r: &mut Rng) -> Self;
}

macro_rules! gen_int {
    ($($t:ty),*) => {$(
        impl Gen for $t {
            fn gen(r: &mut Rng) -> Self {
                // Edge values half the time: 0, 1, -1, MIN, MAX.
                match r.below(8) {
                    0 => 0 as $t,
                    1 => <$t>::MAX,
                    2 => <$t>::MIN,
                    3 => (1u8 as $t).wrapping_sub(2 as $t),
                    _ => ((r.next_u64() as u128) << 64 | r.next_u64() as u128) as $t,
                }
            }
        }
    )*};
}
gen_int!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128);

impl Gen for bool {
    fn gen(r: &mut Rng) -> Self {
        r.below(2) == 1
    }
}

impl Gen for f32 {
    fn gen(r: &mut Rng) -> Self {
        match r.below(6) {
            0 => f32::NAN,
            1 => -0.0,
            2 => f32::INFINITY,
            _ => f32::from_bits(r.next_u64() as u32),
        }
    }
}

impl Gen for f64 {
    fn gen(r: &mut Rng) -> Self {
        match r.below(6) {
            0 => f64::NAN,
            1 => -0.0,
            2 => f64::NEG_INFINITY,
            _ => f64::from_bits(r.next_u64()),
        }
    }
}

impl Gen for char {
    fn gen(r: &mut Rng) -> Self {
        // Every UTF-8 width: ASCII, 2-, 3- and 4-byte scalar values.
        let ranges: [(u32, u32); 5] = [(0, 0x80), (0x80, 0x800), (0x800, 0xd800), (0xe000, 0x10000), (0x10000, 0x110000)];
        let (lo, hi) = ranges[r.below(5) as usize];
        char::from_u32(lo + r.below(u64::from(hi - lo)) as u32).expect("not a surrogate")
    }
}

impl Gen for String {
    fn gen(r: &mut Rng) -> Self {
        (0..r.len()).map(|_| char::gen(r)).collect()
    }
}

impl Gen for () {
    fn gen(_: &mut Rng) -> Self {}
}

impl<T: Gen> Gen for Option<T> {
    fn gen(r: &mut Rng) -> Self {
        (r.below(3) != 0).then(|| T::gen(r))
    }
}

impl<T: Gen> Gen for Vec<T> {
    fn gen(r: &mut Rng) -> Self {
        (0..r.len().min(60)).map(|_| T::gen(r)).collect()
    }
}

impl<T: Gen> Gen for Box<T> {
    fn gen(r: &mut Rng) -> Self {
        Box::new(T::gen(r))
    }
}

impl<K: Gen + Ord, V: Gen> Gen for BTreeMap<K, V> {
    fn gen(r: &mut Rng) -> Self {
        (0..r.len().min(30)).map(|_| (K::gen(r), V::gen(r))).collect()
    }
}

impl<K: Gen + std::hash::Hash + Eq, V: Gen> Gen for HashMap<K, V> {
    fn gen(r: &mut Rng) -> Self {
        (0..r.len().min(30)).map(|_| (K::gen(r), V::gen(r))).collect()
    }
}

impl<T: Gen + Ord> Gen for BTreeSet<T> {
    fn gen(r: &mut Rng) -> Self {
        (0..r.len().min(30)).map(|_| T::gen(r)).collect()
    }
}

impl<T: Gen, const N: usize> Gen for [T; N] {
    fn gen(r: &mut Rng) -> Self {
        std::array::from_fn(|_| T::gen(r))
    }
}

impl<A: Gen, B: Gen> Gen for (A, B) {
    fn gen(r: &mut Rng) -> Self {
        (A::gen(r), B::gen(r))
    }
}

impl<A: Gen, B: Gen, C: Gen> Gen for (A, B, C) {
    fn gen(r: &mut Rng) -> Self {
        (A::gen(r), B::gen(r), C::gen(r))
    }
}

impl<A: Gen, B: Gen> Gen for Result<A, B> {
    fn gen(r: &mut Rng) -> Self {
        if bool::gen(r) {
            Ok(A::gen(r))
        } else {
            Err(B::gen(r))
        }
    }
}

impl Gen for Duration {
    fn gen(r: &mut Rng) -> Self {
        Duration::new(r.next_u64(), r.below(1_000_000_000) as u32)
    }
}

impl Gen for IpAddr {
    fn gen(r: &mut Rng) -> Self {
        if bool::gen(r) {
            IpAddr::V4(Ipv4Addr::from(u32::gen(r)))
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::gen(r)))
        }
    }
}

impl Gen for SocketAddr {
    fn gen(r: &mut Rng) -> Self {
        SocketAddr::new(IpAddr::gen(r), u16::gen(r))
    }
}

/// A byte string serialized with `serialize_bytes` (as `serde_bytes` does).
#[derive(Debug, Clone, PartialEq)]
pub struct ByteString(pub Vec<u8>);

impl Serialize for ByteString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ByteString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteString, E> {
                Ok(ByteString(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteString, E> {
                Ok(ByteString(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Gen for ByteString {
    fn gen(r: &mut Rng) -> Self {
        ByteString(Vec::gen(r))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStruct;

impl Gen for UnitStruct {
    fn gen(_: &mut Rng) -> Self {
        UnitStruct
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Newtype(pub i64);

impl Gen for Newtype {
    fn gen(r: &mut Rng) -> Self {
        Newtype(i64::gen(r))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TupleStruct(pub u8, pub String, pub Option<char>);

impl Gen for TupleStruct {
    fn gen(r: &mut Rng) -> Self {
        TupleStruct(u8::gen(r), String::gen(r), Option::gen(r))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Empty,
    Circle(f64),
    Pair(u8, i16),
    Rect { w: u32, h: u32 },
    Named(Newtype),
    Nested(Box<Shape>),
}

impl Gen for Shape {
    fn gen(r: &mut Rng) -> Self {
        match r.below(6) {
            0 => Shape::Empty,
            1 => Shape::Circle(f64::gen(r)),
            2 => Shape::Pair(u8::gen(r), i16::gen(r)),
            3 => Shape::Rect {
                w: u32::gen(r),
                h: u32::gen(r),
            },
            4 => Shape::Named(Newtype::gen(r)),
            // Bounded: each level is a quarter as likely as the last.
            _ => Shape::Nested(Box::new(if r.below(4) == 0 { Shape::gen(r) } else { Shape::Empty })),
        }
    }
}

/// A struct with one field of each kind, as a user's key or record type would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub score: f32,
    pub active: bool,
    pub tags: Vec<String>,
    pub parent: Option<Box<Newtype>>,
    pub shape: Shape,
    pub attrs: BTreeMap<String, i32>,
    pub raw: ByteString,
    pub pair: (u16, char),
    pub grid: [i8; 3],
    pub nothing: (),
    pub marker: UnitStruct,
    pub wide: i128,
}

impl Gen for Record {
    fn gen(r: &mut Rng) -> Self {
        Record {
            id: u64::gen(r),
            name: String::gen(r),
            score: f32::gen(r),
            active: bool::gen(r),
            tags: Vec::gen(r),
            parent: Option::gen(r),
            shape: Shape::gen(r),
            attrs: BTreeMap::gen(r),
            raw: ByteString::gen(r),
            pair: <(u16, char)>::gen(r),
            grid: <[i8; 3]>::gen(r),
            nothing: (),
            marker: UnitStruct,
            wide: i128::gen(r),
        }
    }
}

/// A struct whose fields are skipped or renamed: neither changes the layout (fields are
/// positional), only `skip_serializing_if` would, and bincode shares that quirk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attributed {
    #[serde(rename = "other")]
    pub a: u32,
    #[serde(skip)]
    pub skipped: u8,
    pub b: Vec<Option<bool>>,
}

impl Gen for Attributed {
    fn gen(r: &mut Rng) -> Self {
        Attributed {
            a: u32::gen(r),
            skipped: 0,
            b: Vec::gen(r),
        }
    }
}

impl Gen for cairn_state::operator_state::DistributionMode {
    fn gen(r: &mut Rng) -> Self {
        use cairn_state::operator_state::DistributionMode::*;
        [SplitEvenly, Union, Broadcast][r.below(3) as usize]
    }
}

impl Gen for cairn_state::operator_state::OperatorStateEntry {
    fn gen(r: &mut Rng) -> Self {
        cairn_state::operator_state::OperatorStateEntry {
            name: String::gen(r),
            mode: Gen::gen(r),
            elements: Vec::gen(r),
        }
    }
}

impl Gen for cairn_state::KeyGroupRange {
    fn gen(r: &mut Rng) -> Self {
        cairn_state::KeyGroupRange::new(u32::gen(r), u32::gen(r))
    }
}
