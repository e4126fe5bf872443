use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Circle(f64),
    Pair(u8, i16),
    Rect { w: u32, h: u32 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Meters(u16);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Point(i8, i8);

/// A recursive type, the only kind that can nest without bound.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Chain {
    End,
    Link(Box<Chain>),
}

fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + Debug>(v: &T) -> Vec<u8> {
    let bytes = to_vec(v).unwrap();
    assert_eq!(&from_bytes::<T>(&bytes).unwrap(), v, "{bytes:02x?}");
    bytes
}

#[test]
fn every_data_model_case_has_its_layout() {
    assert_eq!(round_trip(&true), [1]);
    assert_eq!(round_trip(&false), [0]);
    assert_eq!(round_trip(&-2i8), [0xfe]);
    assert_eq!(round_trip(&0x0102i16), [2, 1]);
    assert_eq!(round_trip(&-1i32), [0xff; 4]);
    assert_eq!(round_trip(&1i64), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(round_trip(&-1i128), [0xff; 16]);
    assert_eq!(round_trip(&7u8), [7]);
    assert_eq!(round_trip(&0xabcdu16), [0xcd, 0xab]);
    assert_eq!(round_trip(&1u32), [1, 0, 0, 0]);
    assert_eq!(round_trip(&u64::MAX), [0xff; 8]);
    let mut u128_bytes = [0u8; 16];
    u128_bytes[15] = 0x80;
    assert_eq!(round_trip(&(1u128 << 127)), u128_bytes);
    assert_eq!(round_trip(&1.0f32), 1.0f32.to_bits().to_le_bytes());
    assert_eq!(round_trip(&-0.0f64), (-0.0f64).to_bits().to_le_bytes());
    assert_eq!(round_trip(&'a'), b"a");
    assert_eq!(round_trip(&'é'), "é".as_bytes());
    assert_eq!(round_trip(&'€'), "€".as_bytes());
    assert_eq!(round_trip(&'🦀'), "🦀".as_bytes());
    assert_eq!(round_trip(&String::from("ab")), [2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    assert_eq!(to_vec("ab").unwrap(), to_vec(&String::from("ab")).unwrap());
    assert_eq!(round_trip(&None::<u8>), [0]);
    assert_eq!(round_trip(&Some(5u8)), [1, 5]);
    assert_eq!(round_trip(&()), [0u8; 0]);
    assert_eq!(round_trip(&Unit), [0u8; 0]);
    assert_eq!(round_trip(&Meters(3)), [3, 0]);
    assert_eq!(round_trip(&Point(-1, 1)), [0xff, 1]);
    assert_eq!(round_trip(&Shape::Empty), [0, 0, 0, 0]);
    assert_eq!(round_trip(&Shape::Circle(0.0)), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(round_trip(&Shape::Pair(9, -1)), [2, 0, 0, 0, 9, 0xff, 0xff]);
    assert_eq!(
        round_trip(&Shape::Rect { w: 1, h: 2 }),
        [3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
    );
    assert_eq!(round_trip(&vec![1u16, 2]), [2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0]);
    assert_eq!(round_trip(&Vec::<u64>::new()), [0; 8]);
    assert_eq!(round_trip(&(1u8, 2u16, 'x')), [1, 2, 0, b'x']);
    assert_eq!(round_trip(&[1u8, 2, 3]), [1, 2, 3]);
    let map: BTreeMap<u8, bool> = [(1, true), (2, false)].into();
    assert_eq!(round_trip(&map), [2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0]);
    assert_eq!(round_trip(&vec![(); 3]), [3, 0, 0, 0, 0, 0, 0, 0]);
}

/// `serialize_bytes` (serde_bytes-style types) and a sequence of `u8` share one layout.
#[test]
fn byte_strings_encode_like_byte_sequences() {
    struct Bytes<'a>(&'a [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    assert_eq!(to_vec(&Bytes(b"xyz")).unwrap(), to_vec(&b"xyz".to_vec()).unwrap());
    let bytes = to_vec(&Bytes(b"xyz")).unwrap();
    let borrowed: &[u8] = from_bytes(&bytes).unwrap();
    assert_eq!(borrowed, b"xyz");
}

#[test]
fn sequences_of_unknown_length_cannot_be_encoded() {
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(None)?;
            seq.serialize_element(&1u8)?;
            seq.end()
        }
    }
    assert_eq!(to_vec(&Unsized), Err(Error::SequenceMustHaveLength));
}

#[test]
fn prefix_decoding_reports_the_bytes_used() {
    let mut bytes = to_vec(&(7u32, String::from("k"))).unwrap();
    bytes.extend_from_slice(b"namespace");
    let ((n, s), used): ((u32, String), usize) = from_prefix(&bytes).unwrap();
    assert_eq!((n, s.as_str(), used), (7, "k", 13));
    assert_eq!(
        from_bytes::<(u32, String)>(&bytes),
        Err(Error::TrailingBytes { used: 13, len: 22 })
    );
}

type Sample = (Shape, Vec<Option<String>>, BTreeMap<String, (char, i64)>, u128);

/// A complex value whose every strict prefix must be refused.
fn sample() -> Sample {
    (
        Shape::Rect { w: 3, h: 4 },
        vec![Some("äb".into()), None, Some(String::new())],
        [("k".to_string(), ('🦀', -5))].into(),
        u128::MAX / 3,
    )
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = to_vec(&sample()).unwrap();
    for n in 0..bytes.len() {
        let r = from_bytes::<Sample>(&bytes[..n]);
        assert!(r.is_err(), "a prefix of {n} of {} bytes decoded: {r:?}", bytes.len());
    }
}

/// Flipping any byte either decodes to some value or fails with an error; it never panics.
#[test]
fn corrupted_bytes_never_panic() {
    let bytes = to_vec(&sample()).unwrap();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let _ = from_bytes::<Sample>(&b);
        }
    }
}

#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"abc");
    assert_eq!(
        from_bytes::<String>(&huge),
        Err(Error::UnexpectedEnd {
            at: 8,
            needed: u64::MAX - 3
        })
    );
    assert!(from_bytes::<Vec<u8>>(&huge).is_err());
    assert!(from_bytes::<Vec<u64>>(&huge).is_err());
    assert!(from_bytes::<BTreeMap<u32, u32>>(&huge).is_err());
    assert!(from_bytes::<std::collections::HashMap<u32, u32>>(&huge).is_err());
    let b: &[u8] = &huge;
    assert!(from_bytes::<&[u8]>(b).is_err());
}

#[test]
fn invalid_scalars_are_named() {
    assert_eq!(from_bytes::<bool>(&[2]), Err(Error::InvalidBool { at: 0, byte: 2 }));
    assert_eq!(
        from_bytes::<Option<u8>>(&[7, 1]),
        Err(Error::InvalidOptionTag { at: 0, byte: 7 })
    );
    for bad in [
        &[0x80][..],
        &[0xc0, 0x80],
        &[0xed, 0xa0, 0x80],
        &[0xf5, 0x80, 0x80, 0x80],
        &[0xe2, 0x82],
    ] {
        assert_eq!(from_bytes::<char>(bad), Err(Error::InvalidChar { at: 0 }), "{bad:02x?}");
    }
    let mut s = 2u64.to_le_bytes().to_vec();
    s.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(from_bytes::<String>(&s), Err(Error::InvalidUtf8 { at: 0 }));
    assert_eq!(from_bytes::<&str>(&s), Err(Error::InvalidUtf8 { at: 0 }));
    let unknown_variant = 9u32.to_le_bytes();
    let err = from_bytes::<Shape>(&unknown_variant).unwrap_err();
    assert!(
        matches!(err, Error::Custom(ref m) if m.contains("`9`") && m.contains("variant index")),
        "{err}"
    );
}

#[test]
fn recursion_is_bounded() {
    // Chain::Link is variant 1: each level is four bytes, the end is variant 0.
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&1u32.to_le_bytes());
    }
    deep.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(from_bytes::<Chain>(&deep), Err(Error::TooDeep { .. })));
    // A shallow chain decodes.
    let mut ok = Vec::new();
    for _ in 0..20 {
        ok.extend_from_slice(&1u32.to_le_bytes());
    }
    ok.extend_from_slice(&0u32.to_le_bytes());
    assert!(from_bytes::<Chain>(&ok).is_ok());
}

#[test]
fn zero_byte_elements_are_bounded() {
    let flood = u64::MAX.to_le_bytes();
    assert!(matches!(
        from_bytes::<Vec<()>>(&flood),
        Err(Error::TooManyZeroSizedElements { .. })
    ));
    let fine = (MAX_ZERO_SIZED_ELEMENTS).to_le_bytes();
    assert_eq!(
        from_bytes::<Vec<()>>(&fine).unwrap().len() as u64,
        MAX_ZERO_SIZED_ELEMENTS
    );
    // Fields of tuples and structs do not count: their number is fixed by the type.
    let many: Vec<((), u8)> = vec![((), 1); (MAX_ZERO_SIZED_ELEMENTS + 10) as usize];
    assert_eq!(from_bytes::<Vec<((), u8)>>(&to_vec(&many).unwrap()).unwrap(), many);
}

#[test]
fn self_describing_requests_are_refused() {
    assert!(matches!(
        from_bytes::<serde_json::Value>(&[0]),
        Err(Error::NotSelfDescribing { .. })
    ));
}
