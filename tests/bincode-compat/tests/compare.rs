//! Cairn's key encoding against bincode 1.3.3 on randomized values of many types.
//!
//! For every value: identical bytes from both encoders, and each decoder gives back the value.
//! For corrupted copies of the bytes (bit flips, truncations, insertions, deletions): both
//! decoders succeed with equal values, or both fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bincode::Options;
use cairn_bincode_compat::*;
use cairn_state::key_encoding;
use cairn_state::operator_state::OperatorStateEntry;
use cairn_state::KeyGroupRange;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Values per type.
const VALUES: usize = 20_000;
/// Corrupted copies per value.
const MUTATIONS: usize = 4;

#[derive(Default)]
struct Tally {
    types: usize,
    values: usize,
    bytes: usize,
    mutations: usize,
    mutations_decoded: usize,
}

/// bincode 1.3's `deserialize` without trailing bytes, as `key_encoding::from_bytes` decodes.
fn bincode_exact<T: DeserializeOwned>(b: &[u8]) -> bincode::Result<T> {
    bincode::DefaultOptions::new().with_fixint_encoding().deserialize(b)
}

/// Equal values, or equal encodings (a NaN is not equal to itself, a `HashMap` may iterate
/// in another order after decoding).
fn same<T: Serialize + PartialEq>(a: &T, b: &T) -> bool {
    a == b || bincode::serialize(a).unwrap() == bincode::serialize(b).unwrap()
}

fn mutate(r: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match r.below(5) {
        0 if !b.is_empty() => {
            let i = r.below(b.len() as u64) as usize;
            b[i] ^= 1 << r.below(8);
        }
        1 if !b.is_empty() => {
            let i = r.below(b.len() as u64) as usize;
            b[i] = r.next_u64() as u8;
        }
        2 => b.truncate(r.below(b.len() as u64 + 1) as usize),
        3 => {
            let i = r.below(b.len() as u64 + 1) as usize;
            b.insert(i, r.next_u64() as u8);
        }
        _ if !b.is_empty() => {
            let i = r.below(b.len() as u64) as usize;
            b.remove(i);
        }
        _ => b.push(r.next_u64() as u8),
    }
    b
}

fn check<T: Gen + Serialize + DeserializeOwned + Debug + PartialEq>(name: &str, seed: u64, tally: &mut Tally) {
    check_with::<T>(name, seed, MUTATIONS, tally)
}

fn check_with<T: Gen + Serialize + DeserializeOwned + Debug + PartialEq>(name: &str, seed: u64, mutations: usize, tally: &mut Tally) {
    let mut r = Rng::new(seed);
    let mut decoded = 0;
    for i in 0..VALUES {
        let v = T::gen(&mut r);
        let theirs = bincode::serialize(&v).expect("bincode encodes");
        let ours = key_encoding::to_vec(&v).expect("key encoding encodes");
        assert_eq!(ours, theirs, "{name} #{i}: {v:?}");
        let back: T = key_encoding::from_bytes(&ours).unwrap_or_else(|e| panic!("{name} #{i}: {e}: {v:?}"));
        assert!(same(&back, &v), "{name} #{i}: decoded {back:?}, expected {v:?}");
        let (prefix, used): (T, usize) = key_encoding::from_prefix(&ours).unwrap();
        assert!(same(&prefix, &v) && used == ours.len(), "{name} #{i}");
        tally.bytes += ours.len();
        for _ in 0..mutations {
            let bad = mutate(&mut r, &ours);
            let a = key_encoding::from_bytes::<T>(&bad);
            let b = bincode_exact::<T>(&bad);
            match (&a, &b) {
                (Ok(x), Ok(y)) => {
                    assert!(same(x, y), "{name} #{i} {bad:02x?}: ours {x:?}, bincode {y:?}");
                    decoded += 1;
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{name} #{i} {bad:02x?}: ours {a:?}, bincode {b:?}"),
            }
            tally.mutations += 1;
        }
    }
    tally.types += 1;
    tally.values += VALUES;
    tally.mutations_decoded += decoded;
    println!("{name:<58} {VALUES} values ok, {decoded}/{} corrupted copies decoded alike", VALUES * mutations);
}

#[test]
fn key_encoding_equals_bincode_1_3() {
    let mut t = Tally::default();
    check::<bool>("bool", 1, &mut t);
    check::<i8>("i8", 2, &mut t);
    check::<i16>("i16", 3, &mut t);
    check::<i32>("i32", 4, &mut t);
    check::<i64>("i64", 5, &mut t);
    check::<i128>("i128", 6, &mut t);
    check::<u8>("u8", 7, &mut t);
    check::<u16>("u16", 8, &mut t);
    check::<u32>("u32", 9, &mut t);
    check::<u64>("u64", 10, &mut t);
    check::<u128>("u128", 11, &mut t);
    check::<f32>("f32", 12, &mut t);
    check::<f64>("f64", 13, &mut t);
    check::<char>("char", 14, &mut t);
    check::<String>("String", 15, &mut t);
    check::<()>("()", 16, &mut t);
    check::<UnitStruct>("unit struct", 17, &mut t);
    check::<Newtype>("newtype struct", 18, &mut t);
    check::<TupleStruct>("tuple struct", 19, &mut t);
    check::<Shape>("enum (unit, newtype, tuple, struct variants)", 20, &mut t);
    check::<Option<u32>>("Option<u32>", 21, &mut t);
    check::<Option<Option<String>>>("Option<Option<String>>", 22, &mut t);
    check::<Vec<u8>>("Vec<u8>", 23, &mut t);
    check::<ByteString>("bytes (serialize_bytes)", 24, &mut t);
    check::<Vec<String>>("Vec<String>", 25, &mut t);
    // No corrupted copies: a corrupt length makes bincode loop over up to 2^64 `()`s, where
    // the key encoding stops at MAX_ZERO_SIZED_ELEMENTS (tested in cairn-state).
    check_with::<Vec<()>>("Vec<()> (valid values only)", 26, 0, &mut t);
    check::<Vec<Vec<u8>>>("Vec<Vec<u8>>", 27, &mut t);
    check::<(u32, String)>("(u32, String)", 28, &mut t);
    check::<(i64, char, bool)>("(i64, char, bool)", 29, &mut t);
    check::<[u16; 4]>("[u16; 4]", 30, &mut t);
    check::<[String; 2]>("[String; 2]", 31, &mut t);
    check::<BTreeMap<String, Vec<i32>>>("BTreeMap<String, Vec<i32>>", 32, &mut t);
    check::<HashMap<u32, bool>>("HashMap<u32, bool>", 33, &mut t);
    check::<BTreeSet<char>>("BTreeSet<char>", 34, &mut t);
    check::<BTreeMap<(u8, String), Option<Shape>>>("BTreeMap<(u8, String), Option<Shape>>", 35, &mut t);
    check::<Result<u8, String>>("Result<u8, String>", 36, &mut t);
    check::<Box<Shape>>("Box<Shape>", 37, &mut t);
    check::<Record>("struct Record (every field kind)", 38, &mut t);
    check::<Vec<Record>>("Vec<Record>", 39, &mut t);
    check::<Attributed>("struct with rename and skip", 40, &mut t);
    check::<Duration>("Duration", 41, &mut t);
    check::<IpAddr>("IpAddr", 42, &mut t);
    check::<SocketAddr>("SocketAddr", 43, &mut t);
    check::<Vec<OperatorStateEntry>>("Vec<OperatorStateEntry> (state file operator section)", 44, &mut t);
    check::<KeyGroupRange>("KeyGroupRange", 45, &mut t);
    check::<(Vec<Option<(u64, f64)>>, BTreeMap<i16, ByteString>)>("(Vec<Option<(u64, f64)>>, BTreeMap<i16, bytes>)", 46, &mut t);
    println!(
        "TOTAL: {} types, {} values ({} bytes) encoded identically and decoded back; {} corrupted copies, \
         {} decoded to equal values by both, the rest refused by both",
        t.types, t.values, t.bytes, t.mutations, t.mutations_decoded
    );
}

/// Both refuse sequences of unknown length.
#[test]
fn both_refuse_sequences_without_length() {
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(None)?;
            seq.serialize_element(&1u8)?;
            seq.end()
        }
    }
    assert!(bincode::serialize(&Unsized).is_err());
    assert!(key_encoding::to_vec(&Unsized).is_err());
}
