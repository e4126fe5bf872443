use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
use crate::{
    HeapKeyedStateBackend, KeyedStateAccess, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor,
    OperatorStateStore, ValueStateDescriptor,
};

const MAX_P: u32 = 16;

fn all() -> KeyGroupRange {
    KeyGroupRange {
        start: 0,
        end_exclusive: MAX_P,
    }
}

/// An owned keyed row as a file would hold it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    state: String,
    kg: u32,
    key: Option<String>,
    key_bytes: Vec<u8>,
    namespace: Vec<u8>,
    user_key: Option<String>,
    position: Option<i32>,
    value: String,
    ttl: Option<i64>,
}

fn to_rows(backend: &mut dyn KeyedStateBackend, codec: Option<&KeyCodec>) -> (Vec<StateMeta>, Vec<Row>) {
    let snap = backend.snapshot(&crate::SnapshotRequest::checkpoint(1)).unwrap();
    let mut metas: Vec<StateMeta> = Vec::new();
    let mut rows = Vec::new();
    let mut conv = RowsFromGroups::new();
    snap.for_each_group(&mut |meta, kg, bytes| {
        if !metas.iter().any(|m| m.name == meta.name) {
            metas.push(meta.clone());
        }
        conv.rows(meta, kg, bytes, codec, &mut |r| {
            rows.push(Row {
                state: meta.name.clone(),
                kg: r.key_group,
                key: r.key_json.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                key_bytes: r.key_bytes.to_vec(),
                namespace: r.namespace.to_vec(),
                user_key: r.user_key_json.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                position: r.position,
                value: String::from_utf8(r.value_json.to_vec()).unwrap(),
                ttl: r.ttl_timestamp_ms,
            });
            Ok(())
        })
        .map_err(crate::StateError::Backend)
    })
    .unwrap();
    (metas, rows)
}

fn from_rows(metas: &[StateMeta], rows: &[Row], range: KeyGroupRange) -> Result<HeapKeyedStateBackend, String> {
    let mut b = HeapKeyedStateBackend::new(range);
    for meta in metas {
        for kg in range.start..range.end_exclusive {
            let mut g = GroupFromRows::new(meta);
            for r in rows.iter().filter(|r| r.state == meta.name && r.kg == kg) {
                g.push(&RowIn {
                    key_bytes: &r.key_bytes,
                    namespace: &r.namespace,
                    user_key_json: r.user_key.as_deref().map(str::as_bytes),
                    position: r.position,
                    value_json: Some(r.value.as_bytes()),
                    ttl_timestamp_ms: r.ttl,
                })?;
            }
            if !g.is_empty() {
                b.restore_group(meta, kg, &g.encode()?).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(b)
}

/// Every entry of every group, in a canonical order (snapshot byte layouts
/// follow hash-map order), for exact comparisons.
type Entries = Vec<(String, u32, Vec<u8>, Option<Vec<u8>>, Vec<u8>)>;

fn encoded(backend: &mut dyn KeyedStateBackend) -> Entries {
    let snap = backend.snapshot(&crate::SnapshotRequest::checkpoint(1)).unwrap();
    let mut out = Vec::new();
    snap.for_each_group(&mut |m, kg, b| {
        snapshot_codec::decode_group(&m.name, m.kind, b, &mut |d| {
            out.push(match d {
                Decoded::Entry { key, value } => (m.name.clone(), kg, key.to_vec(), None, value.to_vec()),
                Decoded::MapEntry { key, user_key, value } => (
                    m.name.clone(),
                    kg,
                    key.to_vec(),
                    Some(user_key.to_vec()),
                    value.to_vec(),
                ),
            });
            Ok(())
        })
    })
    .unwrap();
    out.sort();
    out
}

/// The raw groups, for restoring them elsewhere.
fn groups(backend: &mut dyn KeyedStateBackend) -> Vec<(String, u32, Vec<u8>)> {
    let snap = backend.snapshot(&crate::SnapshotRequest::checkpoint(1)).unwrap();
    let mut out = Vec::new();
    snap.for_each_group(&mut |m, kg, b| {
        out.push((m.name.clone(), kg, b.to_vec()));
        Ok(())
    })
    .unwrap();
    out
}

fn access(backend: HeapKeyedStateBackend) -> KeyedStateAccess {
    let mut a = KeyedStateAccess::new(Box::new(backend));
    a.set_processing_time(1_000);
    a
}

fn set_key(a: &mut KeyedStateAccess, key: &str) {
    let mut kb = Vec::new();
    key_bytes(&key.to_string(), &mut kb).unwrap();
    let kg = key_group_for_bytes(&kb, MAX_P);
    a.set_current_key(&kb, kg);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct V1 {
    count: u64,
    label: String,
}

fn populate(a: &mut KeyedStateAccess, ttl: bool) {
    let t = StateTtlConfig::new(Duration::from_secs(60));
    let mut vd = ValueStateDescriptor::<V1>::new("profile");
    let mut ld = ListStateDescriptor::<i64>::new("events");
    let mut md = MapStateDescriptor::<u32, String>::new("names");
    if ttl {
        vd = vd.with_ttl(t);
        ld = ld.with_ttl(t);
        md = md.with_ttl(t);
    }
    let v = a.value_state(vd).unwrap();
    let l = a.list_state(ld).unwrap();
    let m = a.map_state(md).unwrap();
    for (i, k) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        set_key(a, k);
        v.update(
            a,
            &V1 {
                count: i as u64 * 1000,
                label: format!("{k}!"),
            },
        )
        .unwrap();
        for e in 0..=i as i64 {
            l.add(a, &(e - 2)).unwrap();
        }
        m.put(a, &(i as u32), &format!("n{i}")).unwrap();
        m.put(a, &300, &"big".to_string()).unwrap();
        // A window namespace.
        let mut ns = [0u8; 16];
        ns[..8].copy_from_slice(&(-5i64).to_be_bytes());
        ns[8..].copy_from_slice(&(5i64).to_be_bytes());
        a.set_namespace(&ns);
        v.update(
            a,
            &V1 {
                count: 7,
                label: "windowed".into(),
            },
        )
        .unwrap();
        a.set_namespace(&[]);
    }
}

fn check_typed(a: &mut KeyedStateAccess, ttl: bool) {
    let t = StateTtlConfig::new(Duration::from_secs(60));
    let mut vd = ValueStateDescriptor::<V1>::new("profile");
    let mut ld = ListStateDescriptor::<i64>::new("events");
    let mut md = MapStateDescriptor::<u32, String>::new("names");
    if ttl {
        vd = vd.with_ttl(t);
        ld = ld.with_ttl(t);
        md = md.with_ttl(t);
    }
    let v = a.value_state(vd).unwrap();
    let l = a.list_state(ld).unwrap();
    let m = a.map_state(md).unwrap();
    for (i, k) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        set_key(a, k);
        assert_eq!(v.value(a).unwrap().unwrap().label, format!("{k}!"));
        assert_eq!(l.get(a).unwrap(), (0..=i as i64).map(|e| e - 2).collect::<Vec<_>>());
        assert_eq!(
            m.get(a, &(i as u32)).unwrap(),
            Some(format!("n{i}")),
            "lookup by re-encoded user key"
        );
        assert_eq!(m.get(a, &300).unwrap(), Some("big".to_string()));
    }
}

#[test]
fn value_list_and_map_states_round_trip_with_and_without_ttl() {
    for ttl in [false, true] {
        let mut a = access(HeapKeyedStateBackend::new(all()));
        populate(&mut a, ttl);
        let codec = key_codec_for::<String>();
        let (metas, rows) = to_rows(a.backend_mut(), Some(&codec));
        // One row per value, list element and map entry.
        let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
        assert_eq!(count("profile"), 8);
        assert_eq!(count("events"), 1 + 2 + 3 + 4);
        assert_eq!(count("names"), 8);
        let alice = rows
            .iter()
            .find(|r| r.state == "profile" && r.key.as_deref() == Some("\"alice\"") && r.namespace.is_empty())
            .unwrap();
        assert_eq!(alice.value, r#"{"count":0,"label":"alice!"}"#);
        assert_eq!(alice.ttl, ttl.then_some(1_000));
        assert!(rows
            .iter()
            .any(|r| r.state == "profile" && r.namespace.len() == 16 && r.value.contains("windowed")));
        let ev = rows
            .iter()
            .find(|r| r.state == "events" && r.key.as_deref() == Some("\"dave\"") && r.position == Some(3))
            .unwrap();
        assert_eq!(ev.value, "1");
        assert!(rows
            .iter()
            .any(|r| r.state == "names" && r.user_key.as_deref() == Some("300")));
        for r in &rows {
            let mut kb = Vec::new();
            key_bytes(
                &serde_json::from_str::<String>(r.key.as_deref().unwrap()).unwrap(),
                &mut kb,
            )
            .unwrap();
            assert_eq!(kb, r.key_bytes, "key bytes are the canonical key bytes");
            assert_eq!(r.position.is_some(), r.state == "events");
            assert_eq!(r.user_key.is_some(), r.state == "names");
        }
        // Back, byte for byte.
        let mut restored = from_rows(&metas, &rows, all()).unwrap();
        assert_eq!(encoded(&mut restored), encoded(a.backend_mut()));
        check_typed(&mut access(restored), ttl);
        // Restoring a sub-range keeps only its key groups.
        let half = KeyGroupRange {
            start: 0,
            end_exclusive: MAX_P / 2,
        };
        let mut part = from_rows(&metas, &rows, half).unwrap();
        assert!(encoded(&mut part).iter().all(|(_, kg, ..)| *kg < MAX_P / 2));
    }
}

#[test]
fn without_a_key_codec_the_whole_backend_key_is_kept() {
    let mut a = access(HeapKeyedStateBackend::new(all()));
    populate(&mut a, false);
    let (metas, rows) = to_rows(a.backend_mut(), None);
    assert!(rows.iter().all(|r| r.key.is_none() && r.namespace.is_empty()));
    let mut restored = from_rows(&metas, &rows, all()).unwrap();
    assert_eq!(encoded(&mut restored), encoded(a.backend_mut()));
}

#[test]
fn a_closure_is_a_key_codec_too() {
    let codec: KeyCodec = Arc::new(|b: &[u8]| -> Result<(serde_json::Value, usize), String> {
        let (s, used): (String, usize) = crate::key_encoding::from_prefix(b).map_err(|e| e.to_string())?;
        Ok((serde_json::Value::String(s), used))
    });
    let mut a = access(HeapKeyedStateBackend::new(all()));
    populate(&mut a, false);
    let (_, rows) = to_rows(a.backend_mut(), Some(&codec));
    assert!(rows
        .iter()
        .any(|r| r.key.as_deref() == Some("\"bob\"") && r.namespace.len() == 16));
}

#[test]
fn timers_become_rows_with_their_timestamp() {
    let meta = StateMeta {
        name: "_timers/event".into(),
        kind: StateKind::Value,
        value_type: "timer".into(),
        ttl: None,
        shapes: None,
    };
    let mut b = HeapKeyedStateBackend::new(all());
    let id = b.register(&meta).unwrap();
    let mut kb = Vec::new();
    key_bytes(&"k1".to_string(), &mut kb).unwrap();
    let kg = key_group_for_bytes(&kb, MAX_P);
    for (ts, ns) in [(-3i64, &[][..]), (1_700_000_000_000, &[9u8; 16][..])] {
        let mut composite = ((ts as u64) ^ (1 << 63)).to_be_bytes().to_vec();
        put_bytes(&mut composite, &kb);
        composite.extend_from_slice(ns);
        b.put(id, kg, &composite, &[]).unwrap();
    }
    let codec = key_codec_for::<String>();
    let (metas, rows) = to_rows(&mut b, Some(&codec));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let early = rows.iter().find(|r| r.namespace.is_empty()).unwrap();
    assert_eq!(early.value, "-3", "{rows:?}");
    assert_eq!(early.key.as_deref(), Some("\"k1\""));
    assert_eq!(early.key_bytes, kb);
    let late = rows.iter().find(|r| !r.namespace.is_empty()).unwrap();
    assert_eq!(late.value, "1700000000000");
    assert_eq!(late.namespace, vec![9u8; 16]);
    let mut restored = from_rows(&metas, &rows, all()).unwrap();
    assert_eq!(encoded(&mut restored), encoded(&mut b));
}

#[derive(Clone, Serialize, Deserialize, Debug, PartialEq)]
struct V2 {
    count: u64,
    label: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    score: f64,
}

#[derive(Clone, Serialize, Deserialize, Debug, PartialEq)]
struct V3 {
    label: String,
}

#[derive(Clone, Serialize, Deserialize, Debug, PartialEq)]
struct Incompatible {
    count: String,
    label: u8,
}

#[test]
fn type_evolution_through_canonical_rows() {
    let mut a = access(HeapKeyedStateBackend::new(all()));
    populate(&mut a, false);
    let codec = key_codec_for::<String>();
    let (metas, rows) = to_rows(a.backend_mut(), Some(&codec));
    for native in [false, true] {
        // Restore through rows (canonical) or straight from the backend (native).
        let mut fresh = || {
            if native {
                let mut b = HeapKeyedStateBackend::new(all());
                for (name, kg, bytes) in groups(a.backend_mut()) {
                    let m = metas.iter().find(|m| m.name == name).unwrap();
                    b.restore_group(m, kg, &bytes).unwrap();
                }
                access(b)
            } else {
                access(from_rows(&metas, &rows, all()).unwrap())
            }
        };
        // v2: a new defaulted field.
        let mut r = fresh();
        let v2 = r.value_state(ValueStateDescriptor::<V2>::new("profile")).unwrap();
        set_key(&mut r, "carol");
        assert_eq!(
            v2.value(&mut r).unwrap(),
            Some(V2 {
                count: 2000,
                label: "carol!".into(),
                region: None,
                score: 0.0
            })
        );
        // v3: a field removed.
        let mut r = fresh();
        let v3 = r.value_state(ValueStateDescriptor::<V3>::new("profile")).unwrap();
        set_key(&mut r, "bob");
        assert_eq!(v3.value(&mut r).unwrap(), Some(V3 { label: "bob!".into() }));
        // Incompatible: a clear error naming the state and the type.
        let mut r = fresh();
        let bad = r
            .value_state(ValueStateDescriptor::<Incompatible>::new("profile"))
            .unwrap();
        set_key(&mut r, "bob");
        let e = bad.value(&mut r).unwrap_err().to_string();
        assert!(e.contains("'profile'") && e.contains("Incompatible"), "{e}");
    }
}

#[test]
fn bad_rows_are_refused_with_the_state_named() {
    let mut a = access(HeapKeyedStateBackend::new(all()));
    populate(&mut a, true);
    let codec = key_codec_for::<String>();
    let (metas, rows) = to_rows(a.backend_mut(), Some(&codec));
    type Case = (fn(&mut Row), &'static str);
    let cases: Vec<Case> = vec![
        (|r| r.value = "{not json".into(), "not valid"),
        (|r| r.ttl = None, "ttl_timestamp_ms"),
        (|r| r.position = None, "position"),
        (|r| r.user_key = None, "user_key"),
    ];
    for (i, (f, want)) in cases.into_iter().enumerate() {
        let state = ["profile", "events", "events", "names"][i];
        let mut rows = rows.clone();
        let r = rows.iter_mut().find(|r| r.state == state).unwrap();
        f(r);
        let e = from_rows(&metas, &rows, all()).err().unwrap();
        assert!(e.contains(&format!("'{state}'")) && e.contains(want), "{e}");
    }
    let mut dup = rows.clone();
    let first = dup.iter().find(|r| r.state == "profile").unwrap().clone();
    dup.push(first);
    assert!(from_rows(&metas, &dup, all()).err().unwrap().contains("two rows"));
}

#[test]
fn state_metadata_json_round_trips() {
    let metas = vec![
        StateMeta {
            name: "a".into(),
            kind: StateKind::Map,
            value_type: "(u32, String)".into(),
            ttl: Some(StateTtlConfig::new(Duration::from_millis(5)).with_update_type(TtlUpdateType::OnReadAndWrite)),
            shapes: None,
        },
        StateMeta {
            name: "b".into(),
            kind: StateKind::List,
            value_type: "u8".into(),
            ttl: None,
            shapes: None,
        },
    ];
    let json = states_to_json(&metas);
    assert!(
        json.contains("\"kind\":\"map\"") && json.contains("on_read_and_write"),
        "{json}"
    );
    assert_eq!(states_from_json(&json).unwrap(), metas);
    assert!(states_from_json(r#"[{"name":"x","kind":"tree"}]"#)
        .unwrap_err()
        .contains("'x'"));
}

#[test]
fn operator_state_rows_round_trip() {
    let mut s = OperatorStateStore::new();
    s.set_list("offsets", DistributionMode::SplitEvenly, &[3u64, 1, 2])
        .unwrap();
    s.set_list::<String>("empty", DistributionMode::Union, &[]).unwrap();
    s.broadcast_put("rules", &"r1".to_string(), &vec![1u8, 2]).unwrap();
    s.broadcast_put("rules", &"r0".to_string(), &Vec::<u8>::new()).unwrap();
    let entries = s.to_entries();
    type OpRow = (String, DistributionMode, Option<i32>, Option<String>, Option<String>);
    let mut rows: Vec<OpRow> = Vec::new();
    operator_rows(&entries, &mut |r| {
        rows.push((
            r.state.to_string(),
            r.mode,
            r.position,
            r.key_json.map(|k| String::from_utf8(k.to_vec()).unwrap()),
            r.value_json.map(|k| String::from_utf8(k.to_vec()).unwrap()),
        ));
        Ok(())
    })
    .unwrap();
    assert!(rows.contains(&("empty".into(), DistributionMode::Union, None, None, None)));
    assert!(rows.contains(&(
        "rules".into(),
        DistributionMode::Broadcast,
        Some(1),
        Some("\"r1\"".into()),
        Some("[1,2]".into())
    )));
    assert!(rows.contains(&(
        "offsets".into(),
        DistributionMode::SplitEvenly,
        Some(0),
        None,
        Some("3".into())
    )));
    // Any order in, same entries out.
    rows.reverse();
    let back = operator_entries_from_rows(rows.iter().map(|(s, m, p, k, v)| OperatorRow {
        state: s,
        mode: *m,
        position: *p,
        key_json: k.as_deref().map(str::as_bytes),
        value_json: v.as_deref().map(str::as_bytes),
    }))
    .unwrap();
    let mut back_sorted = back.clone();
    back_sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want = entries.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back_sorted, want);
    let store = OperatorStateStore::from_entries(back).unwrap();
    assert!(store.has_list("empty"));
    assert_eq!(store.list::<u64>("offsets").unwrap(), vec![3, 1, 2]);
}
