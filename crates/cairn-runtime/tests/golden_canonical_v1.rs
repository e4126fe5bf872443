//! Golden fixture of canonical savepoint format version 1 (invariant 5): the
//! Parquet files under `tests/golden/canonical-v1/` are committed and must keep
//! restoring forever. `CAIRN_REGEN_GOLDEN=1` only creates them
//! when they are missing; they are never rewritten. Spec: `docs/formats/savepoint-canonical.md`.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use cairn_runtime::operator::OperatorSnapshot;
use cairn_runtime::snapshot_io::{read_canonical_operator_entries, restore_canonical_keyed, write_canonical_file};
use cairn_snapshot::parquet::ParquetFile;
use cairn_snapshot::LocalFileStorage;
use cairn_state::backend::GroupVisitor;
use cairn_state::canonical::key_codec_for;
use cairn_state::codec::{self, put_bytes};
use cairn_state::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
use cairn_state::snapshot_codec::{put_entry, put_map};
use cairn_state::{
    DistributionMode, HeapKeyedStateBackend, KeyedStateAccess, KeyedStateSnapshot, ListStateDescriptor,
    MapStateDescriptor, OperatorStateStore, StateError, StateKind, StateMeta, StateTtlConfig, ValueStateDescriptor,
};
use serde::{Deserialize, Serialize};

const MAX_P: u32 = 128;
const KEYED: &str = "op-golden-0.keyed.parquet";
const OPERATOR: &str = "op-golden-0.operator.parquet";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/canonical-v1")
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Profile {
    count: u64,
    name: String,
    ratio: f64,
}

/// The profile as a later job version declares it.
#[derive(Clone, Serialize, Deserialize, Debug, PartialEq)]
struct ProfileV2 {
    count: u64,
    name: String,
    #[serde(default)]
    region: Option<String>,
}

fn ttl() -> StateTtlConfig {
    StateTtlConfig::new(Duration::from_secs(3600))
}

fn meta(name: &str, kind: StateKind, ttl: Option<StateTtlConfig>) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        value_type: "golden".into(),
        ttl,
        shapes: None,
    }
}

fn key(k: &str) -> (Vec<u8>, u32) {
    let mut kb = Vec::new();
    key_bytes(&k.to_string(), &mut kb).unwrap();
    let kg = key_group_for_bytes(&kb, MAX_P);
    (kb, kg)
}

fn mp<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    codec::encode_into("golden", v, &mut b).unwrap();
    b
}

/// A snapshot with fixed groups (deterministic bytes, independent of any backend).
struct Fixed(Vec<(StateMeta, u32, Vec<u8>)>);

impl KeyedStateSnapshot for Fixed {
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        for (m, kg, b) in &self.0 {
            visit(m, *kg, b)?;
        }
        Ok(())
    }
}

fn fixture_snapshot() -> OperatorSnapshot {
    let mut groups = Vec::new();
    for k in ["alice", "bob"] {
        let (kb, kg) = key(k);
        // profile: a value state.
        let mut g = Vec::new();
        put_entry(
            &mut g,
            &kb,
            &mp(&Profile {
                count: k.len() as u64,
                name: format!("{k}!"),
                ratio: 0.5,
            }),
        );
        groups.push((meta("profile", StateKind::Value, None), kg, g));
        // recent: a list state with TTL, three elements.
        let mut list = Vec::new();
        for (i, v) in [10i64, -20, 30].iter().enumerate() {
            let mut e = (1_700_000_000_000u64 + i as u64).to_le_bytes().to_vec();
            e.extend(mp(v));
            put_bytes(&mut list, &e);
        }
        let mut g = Vec::new();
        put_entry(&mut g, &kb, &list);
        groups.push((meta("recent", StateKind::List, Some(ttl())), kg, g));
        // tags: a map state.
        let entries = [(mp(&1u32), mp(&"one")), (mp(&300u32), mp(&"three hundred"))];
        let mut g = Vec::new();
        put_map(&mut g, &kb, entries.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
        groups.push((meta("tags", StateKind::Map, None), kg, g));
        // window-contents: a value under a window namespace.
        let mut composite = kb.clone();
        composite.extend_from_slice(&0i64.to_be_bytes());
        composite.extend_from_slice(&60_000i64.to_be_bytes());
        let mut g = Vec::new();
        put_entry(&mut g, &composite, &mp(&7u64));
        groups.push((meta("window-contents", StateKind::Value, None), kg, g));
        // A processing-time timer of the key.
        let mut t = ((1_700_000_360_000i64 as u64) ^ (1 << 63)).to_be_bytes().to_vec();
        put_bytes(&mut t, &kb);
        let mut g = Vec::new();
        put_entry(&mut g, &t, &[]);
        groups.push((meta("_timers/processing", StateKind::Value, None), kg, g));
    }
    // State then key-group order, as snapshots hand groups out.
    let order = ["profile", "recent", "tags", "window-contents", "_timers/processing"];
    groups.sort_by_key(|(m, kg, _)| (order.iter().position(|n| *n == m.name).unwrap(), *kg));
    let mut ops = OperatorStateStore::new();
    ops.set_list("offsets", DistributionMode::SplitEvenly, &[5u64, 6])
        .unwrap();
    ops.set_list::<String>("pending", DistributionMode::Union, &[]).unwrap();
    ops.broadcast_put("rules", &"r1".to_string(), &vec![1u8, 2]).unwrap();
    OperatorSnapshot {
        keyed: Some(cairn_state::BackendSnapshot::KeyGroups(Box::new(Fixed(groups)))),
        operator_state: ops.to_entries(),
    }
}

static REGEN: Once = Once::new();

fn regenerate_if_asked() {
    REGEN.call_once(|| {
        if std::env::var("CAIRN_REGEN_GOLDEN").as_deref() != Ok("1") {
            return;
        }
        let dir = golden_dir();
        // Fixtures are never rewritten: this only creates a missing one (a new format
        // version gets a new fixture directory).
        assert!(
            !dir.exists(),
            "{} exists: golden fixtures are never rewritten; a new format version gets a new fixture",
            dir.display()
        );
        std::fs::create_dir_all(&dir).unwrap();
        let codec = key_codec_for::<String>();
        let files = write_canonical_file(
            &LocalFileStorage::new(),
            &dir,
            "op-golden-0",
            fixture_snapshot(),
            Some(&codec),
        )
        .unwrap();
        assert_eq!(files.len(), 2);
        eprintln!("regenerated golden fixture in {}", dir.display());
    });
}

#[test]
fn golden_canonical_v1_restores() {
    regenerate_if_asked();
    let keyed = std::fs::read(golden_dir().join(KEYED)).expect("golden canonical v1 fixture must exist");
    let f = ParquetFile::parse(&keyed).unwrap();
    assert_eq!(f.footer().metadata_value("cairn.canonical.version"), Some("1"));
    let all = KeyGroupRange {
        start: 0,
        end_exclusive: MAX_P,
    };
    let mut backend = HeapKeyedStateBackend::new(all);
    restore_canonical_keyed(&keyed, KEYED, all, &mut backend).unwrap();
    let mut a = KeyedStateAccess::new(Box::new(backend));
    a.set_processing_time(1_700_000_000_100);
    let profile = a
        .value_state(ValueStateDescriptor::<ProfileV2>::new("profile"))
        .unwrap();
    let recent = a
        .list_state(ListStateDescriptor::<i64>::new("recent").with_ttl(ttl()))
        .unwrap();
    let tags = a.map_state(MapStateDescriptor::<u32, String>::new("tags")).unwrap();
    let window = a
        .value_state(ValueStateDescriptor::<u64>::new("window-contents"))
        .unwrap();
    for k in ["alice", "bob"] {
        let (kb, kg) = key(k);
        a.set_current_key(&kb, kg);
        assert_eq!(
            profile.value(&mut a).unwrap(),
            Some(ProfileV2 {
                count: k.len() as u64,
                name: format!("{k}!"),
                region: None
            })
        );
        assert_eq!(recent.get(&mut a).unwrap(), vec![10, -20, 30]);
        assert_eq!(tags.get(&mut a, &300).unwrap().as_deref(), Some("three hundred"));
        let mut ns = 0i64.to_be_bytes().to_vec();
        ns.extend_from_slice(&60_000i64.to_be_bytes());
        a.set_namespace(&ns);
        assert_eq!(window.value(&mut a).unwrap(), Some(7));
        a.set_namespace(&[]);
    }
    let mut timers = 0;
    let b = a.backend_mut();
    let id = b.register(&meta("_timers/processing", StateKind::Value, None)).unwrap();
    b.for_each_key(id, &mut |_, _| timers += 1).unwrap();
    assert_eq!(timers, 2);
    // A rescaled subtask gets only its key groups.
    let (_, alice_kg) = key("alice");
    let one = KeyGroupRange {
        start: alice_kg,
        end_exclusive: alice_kg + 1,
    };
    let mut part = HeapKeyedStateBackend::new(one);
    restore_canonical_keyed(&keyed, KEYED, one, &mut part).unwrap();

    let operator = std::fs::read(golden_dir().join(OPERATOR)).unwrap();
    let store =
        OperatorStateStore::from_entries(read_canonical_operator_entries(&operator, OPERATOR).unwrap()).unwrap();
    assert_eq!(store.list::<u64>("offsets").unwrap(), vec![5, 6]);
    assert!(store.has_list("pending"));
    assert_eq!(
        store.broadcast_entries::<String, Vec<u8>>("rules").unwrap(),
        vec![("r1".to_string(), vec![1, 2])]
    );
}
