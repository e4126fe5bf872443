//! The conformance suite every [`KeyedStateBackend`] must pass, one property
//! per function. [`backend_conformance_tests!`] instantiates every property as
//! its own `#[test]` for a backend factory, so one violated property does not
//! hide the others (TiKV's `engine_traits_tests` is the model).
//!
//! ```ignore
//! cairn_state_conformance::backend_conformance_tests!(|range| Box::new(HeapKeyedStateBackend::new(range)));
//! ```

use cairn_state::backend::{KeyedStateBackend, KeyedStateSnapshot};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::snapshot_codec::{self, Decoded};
use cairn_state::{StateKind, StateMeta};

/// Builds an empty backend holding the given key groups.
pub type BackendFactory<'a> = &'a dyn Fn(KeyGroupRange) -> Box<dyn KeyedStateBackend>;

fn meta(name: &str, kind: StateKind) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        value_type: "bytes".into(),
        ttl: None,
    }
}

fn range(start: u32, end: u32) -> KeyGroupRange {
    KeyGroupRange {
        start,
        end_exclusive: end,
    }
}

/// Expands to one `#[test]` per conformance property for the backend built
/// by `$factory` (an expression usable as `Fn(KeyGroupRange) -> Box<dyn
/// KeyedStateBackend>`). Every property the suite gains is listed here.
#[macro_export]
macro_rules! backend_conformance_tests {
    ($factory:expr) => {
        $crate::backend_conformance_tests!(@each $factory;
            values_round_trip,
            lists_append,
            maps_round_trip_in_key_order,
            registration_rules,
            key_groups_outside_range_are_refused,
            snapshots_are_isolated_from_later_writes,
            restore_into_a_subset_of_key_groups,
        );
    };
    (@each $factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[test]
            fn $property() {
                let factory = $factory;
                $crate::$property(&factory);
            }
        )*
    };
}

/// put/get/remove of values, with distinct states and key groups kept apart.
pub fn values_round_trip(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 4));
    let a = b.register(&meta("a", StateKind::Value)).unwrap();
    let c = b.register(&meta("c", StateKind::Value)).unwrap();
    let mut out = Vec::new();
    assert!(!b.get(a, 1, b"k", &mut out).unwrap(), "fresh backend is empty");
    b.put(a, 1, b"k", b"v1").unwrap();
    b.put(c, 1, b"k", b"other").unwrap();
    b.put(a, 2, b"k", b"group2").unwrap();
    assert!(b.get(a, 1, b"k", &mut out).unwrap());
    assert_eq!(out, b"v1");
    b.put(a, 1, b"k", b"v2-longer").unwrap();
    assert!(b.get(a, 1, b"k", &mut out).unwrap());
    assert_eq!(out, b"v2-longer");
    assert!(b.get(c, 1, b"k", &mut out).unwrap());
    assert_eq!(out, b"other", "states are separate");
    assert!(b.get(a, 2, b"k", &mut out).unwrap());
    assert_eq!(out, b"group2", "key groups are separate");
    b.remove(a, 1, b"k").unwrap();
    assert!(!b.get(a, 1, b"k", &mut out).unwrap());
    b.remove(a, 1, b"never-there").unwrap();
    let mut keys = Vec::new();
    b.for_each_key(a, &mut |kg, k| keys.push((kg, k.to_vec()))).unwrap();
    assert_eq!(keys, vec![(2, b"k".to_vec())]);
}

/// append concatenates and creates.
pub fn lists_append(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 2));
    let l = b.register(&meta("l", StateKind::List)).unwrap();
    b.append(l, 0, b"k", b"ab").unwrap();
    b.append(l, 0, b"k", b"cd").unwrap();
    let mut out = Vec::new();
    assert!(b.get(l, 0, b"k", &mut out).unwrap());
    assert_eq!(out, b"abcd");
}

/// map operations, iteration in user-key byte order, removal of empty maps.
pub fn maps_round_trip_in_key_order(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 2));
    let m = b.register(&meta("m", StateKind::Map)).unwrap();
    b.map_put(m, 1, b"k", b"z", b"26").unwrap();
    b.map_put(m, 1, b"k", b"a", b"1").unwrap();
    b.map_put(m, 1, b"k2", b"a", b"other key").unwrap();
    let mut out = Vec::new();
    assert!(b.map_get(m, 1, b"k", b"a", &mut out).unwrap());
    assert_eq!(out, b"1");
    let mut seen = Vec::new();
    b.map_entries(m, 1, b"k", &mut |k, v| seen.push((k.to_vec(), v.to_vec())))
        .unwrap();
    assert_eq!(
        seen,
        vec![(b"a".to_vec(), b"1".to_vec()), (b"z".to_vec(), b"26".to_vec())]
    );
    b.map_remove(m, 1, b"k", b"a").unwrap();
    b.map_remove(m, 1, b"k", b"z").unwrap();
    assert!(!b.map_get(m, 1, b"k", b"z", &mut out).unwrap());
    let mut keys = Vec::new();
    b.for_each_key(m, &mut |_, k| keys.push(k.to_vec())).unwrap();
    assert_eq!(keys, vec![b"k2".to_vec()], "a map emptied entry by entry disappears");
    b.remove(m, 1, b"k2").unwrap();
    assert!(!b.map_get(m, 1, b"k2", b"a", &mut out).unwrap());
}

/// re-registering is idempotent; a kind conflict is an error naming the state.
pub fn registration_rules(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 1));
    let x = b.register(&meta("x", StateKind::Value)).unwrap();
    assert_eq!(b.register(&meta("x", StateKind::Value)).unwrap(), x);
    let err = b.register(&meta("x", StateKind::Map)).unwrap_err().to_string();
    assert!(err.contains("'x'"), "{err}");
    assert_eq!(b.registered().len(), 1);
    let mut out = Vec::new();
    assert!(
        b.map_get(x, 0, b"k", b"u", &mut out).is_err(),
        "map access to a value state is refused"
    );
}

/// access to a key group the subtask does not own is an error, not a panic.
pub fn key_groups_outside_range_are_refused(factory: BackendFactory<'_>) {
    let mut b = factory(range(4, 8));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    assert!(b.put(s, 3, b"k", b"v").is_err());
    assert!(b.put(s, 8, b"k", b"v").is_err());
    let mut out = Vec::new();
    assert!(b.get(s, 9, b"k", &mut out).is_err());
}

fn collect(snapshot: &dyn KeyedStateSnapshot) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    snapshot
        .for_each_group(&mut |m, kg, bytes| {
            out.push((m.name.clone(), kg, bytes.to_vec()));
            Ok(())
        })
        .unwrap();
    out
}

/// a snapshot shows the state as of the moment it was taken.
pub fn snapshots_are_isolated_from_later_writes(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 4));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    let m = b.register(&meta("m", StateKind::Map)).unwrap();
    b.put(s, 0, b"k1", b"before").unwrap();
    b.map_put(m, 3, b"k", b"u", b"before").unwrap();
    let snap = b.snapshot().unwrap();
    b.put(s, 0, b"k1", b"after").unwrap();
    b.put(s, 1, b"k2", b"new").unwrap();
    b.map_put(m, 3, b"k", b"u", b"after").unwrap();
    let groups = collect(&*snap);
    assert_eq!(groups.len(), 2, "only non-empty groups are visited: {groups:?}");
    let mut values = Vec::new();
    for (name, _, bytes) in &groups {
        let kind = if name == "m" { StateKind::Map } else { StateKind::Value };
        snapshot_codec::decode_group(name, kind, bytes, &mut |d| {
            match d {
                Decoded::Entry { value, .. } | Decoded::MapEntry { value, .. } => values.push(value.to_vec()),
            }
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(values, vec![b"before".to_vec(), b"before".to_vec()]);
}

/// a snapshot of key groups 0..8 restores into a backend owning 4..8 only.
pub fn restore_into_a_subset_of_key_groups(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 8));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    let m = b.register(&meta("m", StateKind::Map)).unwrap();
    for kg in 0..8u32 {
        b.put(s, kg, format!("key{kg}").as_bytes(), &kg.to_le_bytes()).unwrap();
        b.map_put(m, kg, b"k", b"u", &kg.to_le_bytes()).unwrap();
    }
    let snap = b.snapshot().unwrap();
    let mut target = factory(range(4, 8));
    snap.for_each_group(&mut |meta, kg, bytes| {
        if (4..8).contains(&kg) {
            target.restore_group(meta, kg, bytes)?;
        }
        Ok(())
    })
    .unwrap();
    let s2 = target.register(&meta("s", StateKind::Value)).unwrap();
    let m2 = target.register(&meta("m", StateKind::Map)).unwrap();
    let mut out = Vec::new();
    for kg in 4..8u32 {
        assert!(target.get(s2, kg, format!("key{kg}").as_bytes(), &mut out).unwrap());
        assert_eq!(out, kg.to_le_bytes());
        assert!(target.map_get(m2, kg, b"k", b"u", &mut out).unwrap());
        assert_eq!(out, kg.to_le_bytes());
    }
    let mut count = 0;
    target.for_each_key(s2, &mut |_, _| count += 1).unwrap();
    assert_eq!(count, 4);
}
