use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize)]
struct Account {
    id: i32,
    amount: f64,
    owner: Option<String>,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum Status {
    Open,
    Frozen(String),
    Limited(u32, u32),
    Closed { at: i64 },
}

#[derive(Serialize, Deserialize)]
struct Nested {
    status: Status,
    history: Vec<Status>,
    by_day: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct Meters(f64);

#[derive(Serialize, Deserialize)]
struct Pair(u8, String);

#[derive(Serialize, Deserialize)]
struct Marker;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    A(u32),
    B(String),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum Internally {
    A { x: u32 },
}

#[derive(Serialize, Deserialize)]
struct Recursive {
    next: Option<Box<Recursive>>,
}

#[derive(Serialize, Deserialize)]
enum List {
    Nil,
    Cons(u32, Box<List>),
}

#[derive(Serialize, Deserialize)]
struct Flattened {
    a: u32,
    #[serde(flatten)]
    rest: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
#[allow(dead_code)]
struct Renamed {
    #[serde(rename = "userId")]
    user_id: u64,
    #[serde(skip)]
    cache: u32,
}

fn f(name: &str, shape: Shape) -> Field {
    Field {
        name: name.into(),
        shape,
    }
}

#[test]
fn primitives_trace_to_their_shapes() {
    assert_eq!(trace::<u64>(), Shape::U64);
    assert_eq!(trace::<i8>(), Shape::I8);
    assert_eq!(trace::<u128>(), Shape::U128);
    assert_eq!(trace::<f32>(), Shape::F32);
    assert_eq!(trace::<bool>(), Shape::Bool);
    assert_eq!(trace::<String>(), Shape::Str);
    assert_eq!(trace::<char>(), Shape::Char);
    assert_eq!(trace::<()>(), Shape::Unit);
    assert_eq!(trace::<Option<i64>>(), Shape::Option(Box::new(Shape::I64)));
    assert_eq!(trace::<Vec<u8>>(), Shape::Seq(Box::new(Shape::U8)));
    assert_eq!(trace::<(u8, String)>(), Shape::Tuple(vec![Shape::U8, Shape::Str]));
    assert_eq!(trace::<[u16; 3]>(), Shape::Tuple(vec![Shape::U16; 3]));
    assert_eq!(
        trace::<HashMap<String, Vec<i32>>>(),
        Shape::Map {
            key: Box::new(Shape::Str),
            value: Box::new(Shape::Seq(Box::new(Shape::I32)))
        }
    );
}

#[test]
fn structs_keep_field_names_and_order() {
    assert_eq!(
        trace::<Account>(),
        Shape::Struct {
            name: "Account".into(),
            fields: vec![
                f("id", Shape::I32),
                f("amount", Shape::F64),
                f("owner", Shape::Option(Box::new(Shape::Str))),
                f("tags", Shape::Seq(Box::new(Shape::Str))),
            ]
        }
    );
    // serde attributes are honoured: renamed fields, skipped fields.
    assert_eq!(
        trace::<Renamed>(),
        Shape::Struct {
            name: "Renamed".into(),
            fields: vec![f("userId", Shape::U64)]
        }
    );
    assert_eq!(trace::<Meters>(), Shape::F64, "newtype structs are transparent");
    assert_eq!(trace::<Pair>(), Shape::Tuple(vec![Shape::U8, Shape::Str]));
    assert_eq!(trace::<Marker>(), Shape::UnitStruct("Marker".into()));
}

#[test]
fn every_variant_of_every_enum_is_traced() {
    let status = Shape::Enum {
        name: "Status".into(),
        variants: vec![
            Variant {
                name: "Open".into(),
                content: VariantContent::Unit,
            },
            Variant {
                name: "Frozen".into(),
                content: VariantContent::Newtype(Shape::Str),
            },
            Variant {
                name: "Limited".into(),
                content: VariantContent::Tuple(vec![Shape::U32, Shape::U32]),
            },
            Variant {
                name: "Closed".into(),
                content: VariantContent::Struct(vec![f("at", Shape::I64)]),
            },
        ],
    };
    assert_eq!(trace::<Status>(), status);
    assert_eq!(
        trace::<Nested>(),
        Shape::Struct {
            name: "Nested".into(),
            fields: vec![
                f("status", status.clone()),
                f("history", Shape::Seq(Box::new(status))),
                f(
                    "by_day",
                    Shape::Map {
                        key: Box::new(Shape::Str),
                        value: Box::new(Shape::U64)
                    }
                ),
            ]
        }
    );
    assert_eq!(
        trace::<Option<Status>>().to_string(),
        "Option<enum Status { Open, Frozen(String), Limited(u32, u32), Closed { at: i64 } }>"
    );
}

#[test]
fn what_serde_cannot_describe_is_opaque_with_a_reason() {
    for (shape, why) in [
        (trace::<Untagged>(), "without data"),
        (trace::<Internally>(), "without data"),
        (trace::<Flattened>(), "without data"),
        (trace::<Recursive>(), "recursive"),
        (trace::<List>(), "recursive"),
        (trace::<std::num::NonZeroU8>(), "Opaque-free"),
    ] {
        if why == "Opaque-free" {
            assert_eq!(shape, Shape::U8, "a minimal value of 1 satisfies NonZero");
            continue;
        }
        match shape {
            Shape::Opaque(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected opaque ({why}), got {other}"),
        }
    }
}

#[test]
fn shapes_round_trip_through_json() {
    let s = trace::<Nested>();
    let json = serde_json::to_string(&s).unwrap();
    let back: Shape = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
