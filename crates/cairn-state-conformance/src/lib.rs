//! The conformance suite every [`KeyedStateBackend`] must pass, one property
//! per function. [`backend_conformance_tests!`] instantiates every property as
//! its own `#[test]` for a backend factory, so one violated property does not
//! hide the others (TiKV's `engine_traits_tests` is the model).
//!
//! ```ignore
//! cairn_state_conformance::backend_conformance_tests!(|range| Box::new(HeapKeyedStateBackend::new(range)));
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_state::backend::KeyedStateBackend;
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{
    BackendSnapshot, FileSetRestore, FileSetSnapshot, SnapshotFile, SnapshotRequest, SnapshotRequestKind, StateError,
    StateKind, StateMeta, UploadedFile,
};

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
            incremental_checkpoints_restore_each_state,
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

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// A directory standing in for checkpoint storage in file round trips.
fn upload_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cairn-conformance-{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the upload directory");
    dir
}

/// "Upload" a file snapshot the way the runtime does: copy each new file,
/// report where it went, and return the references to restore from.
fn upload(set: Box<dyn FileSetSnapshot>, range: KeyGroupRange) -> FileSetRestore {
    let dir = upload_dir();
    let mut uploaded = Vec::new();
    let mut files = Vec::new();
    for (i, f) in set.files().iter().enumerate() {
        let u = match f {
            SnapshotFile::Upload { local_path, name, .. } => {
                let target = dir.join(format!("{i}-{name}"));
                std::fs::copy(local_path, &target).expect("copy a snapshot file");
                let bytes = std::fs::read(&target).expect("read back");
                let u = UploadedFile {
                    name: name.clone(),
                    path: target.to_string_lossy().into_owned(),
                    size: bytes.len() as u64,
                    crc32: crc(&bytes),
                };
                uploaded.push(u.clone());
                u
            }
            SnapshotFile::Reuse(u) => u.clone(),
        };
        files.push(u);
    }
    let restore = FileSetRestore {
        backend: set.backend().to_string(),
        states: set.states().to_vec(),
        key_groups: range,
        files,
    };
    set.uploaded(uploaded);
    restore
}

/// A small CRC-32 (IEEE) so the suite needs no checksum crate.
fn crc(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in bytes {
        c ^= *b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn fetch(f: &UploadedFile, local: &Path) -> Result<(), StateError> {
    std::fs::copy(&f.path, local).map_err(|e| StateError::Restore(format!("{}: {e}", f.path)))?;
    Ok(())
}

/// Snapshot `b` (running `between` after the synchronous part, as
/// processing would), then restore the snapshot into a fresh backend for
/// `target`, whatever kind of snapshot the backend gives.
pub fn snapshot_round_trip(
    factory: BackendFactory<'_>,
    b: &mut dyn KeyedStateBackend,
    request: SnapshotRequest,
    target: KeyGroupRange,
    between: &mut dyn FnMut(&mut dyn KeyedStateBackend),
) -> Box<dyn KeyedStateBackend> {
    let snap = b.snapshot(&request).expect("snapshot");
    between(b);
    let mut restored = factory(target);
    match snap {
        BackendSnapshot::KeyGroups(groups) => groups
            .for_each_group(&mut |meta, kg, bytes| {
                if target.contains(kg) {
                    restored.restore_group(meta, kg, bytes)?;
                }
                Ok(())
            })
            .expect("restore groups"),
        BackendSnapshot::Files(set) => {
            let parts = vec![upload(set, b.key_group_range())];
            restored.restore_files(&parts, &fetch).expect("restore files");
        }
    }
    b.notify_checkpoint_complete(request.checkpoint_id)
        .expect("notify complete");
    restored
}

/// Every kind of snapshot a backend can be asked for.
fn every_request(id: u64) -> [SnapshotRequest; 4] {
    [
        SnapshotRequest {
            checkpoint_id: id,
            kind: SnapshotRequestKind::Checkpoint { incremental: false },
        },
        SnapshotRequest {
            checkpoint_id: id,
            kind: SnapshotRequestKind::Checkpoint { incremental: true },
        },
        SnapshotRequest {
            checkpoint_id: id,
            kind: SnapshotRequestKind::NativeSavepoint,
        },
        SnapshotRequest {
            checkpoint_id: id,
            kind: SnapshotRequestKind::CanonicalSavepoint,
        },
    ]
}

fn value(b: &mut dyn KeyedStateBackend, s: u32, kg: u32, key: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    b.get(s, kg, key, &mut out).unwrap().then_some(out)
}

fn map_value(b: &mut dyn KeyedStateBackend, s: u32, kg: u32, key: &[u8], uk: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    b.map_get(s, kg, key, uk, &mut out).unwrap().then_some(out)
}

/// a snapshot shows the state as of the moment it was taken, for every kind
/// of snapshot.
pub fn snapshots_are_isolated_from_later_writes(factory: BackendFactory<'_>) {
    for (i, request) in every_request(1).into_iter().enumerate() {
        let mut b = factory(range(0, 4));
        let s = b.register(&meta("s", StateKind::Value)).unwrap();
        let m = b.register(&meta("m", StateKind::Map)).unwrap();
        b.put(s, 0, b"k1", b"before").unwrap();
        b.map_put(m, 3, b"k", b"u", b"before").unwrap();
        let mut restored = snapshot_round_trip(factory, &mut *b, request, range(0, 4), &mut |b| {
            b.put(s, 0, b"k1", b"after").unwrap();
            b.put(s, 1, b"k2", b"new").unwrap();
            b.map_put(m, 3, b"k", b"u", b"after").unwrap();
        });
        let s2 = restored.register(&meta("s", StateKind::Value)).unwrap();
        let m2 = restored.register(&meta("m", StateKind::Map)).unwrap();
        assert_eq!(
            value(&mut *restored, s2, 0, b"k1").as_deref(),
            Some(&b"before"[..]),
            "request {i}"
        );
        assert_eq!(
            value(&mut *restored, s2, 1, b"k2"),
            None,
            "request {i}: a later write is not in the snapshot"
        );
        assert_eq!(
            map_value(&mut *restored, m2, 3, b"k", b"u").as_deref(),
            Some(&b"before"[..]),
            "request {i}"
        );
        assert_eq!(
            value(&mut *b, s, 0, b"k1").as_deref(),
            Some(&b"after"[..]),
            "the live backend moved on"
        );
    }
}

/// a snapshot of key groups 0..8 restores into a backend owning 4..8 only,
/// which holds exactly those key groups afterwards.
pub fn restore_into_a_subset_of_key_groups(factory: BackendFactory<'_>) {
    for (i, request) in every_request(1).into_iter().enumerate() {
        let mut b = factory(range(0, 8));
        let s = b.register(&meta("s", StateKind::Value)).unwrap();
        let m = b.register(&meta("m", StateKind::Map)).unwrap();
        for kg in 0..8u32 {
            b.put(s, kg, format!("key{kg}").as_bytes(), &kg.to_le_bytes()).unwrap();
            b.map_put(m, kg, b"k", b"u", &kg.to_le_bytes()).unwrap();
        }
        let mut target = snapshot_round_trip(factory, &mut *b, request, range(4, 8), &mut |_| {});
        let s2 = target.register(&meta("s", StateKind::Value)).unwrap();
        let m2 = target.register(&meta("m", StateKind::Map)).unwrap();
        for kg in 4..8u32 {
            let v = value(&mut *target, s2, kg, format!("key{kg}").as_bytes());
            assert_eq!(v, Some(kg.to_le_bytes().to_vec()), "request {i}, key group {kg}");
            let v = map_value(&mut *target, m2, kg, b"k", b"u");
            assert_eq!(v, Some(kg.to_le_bytes().to_vec()), "request {i}, key group {kg}");
        }
        let mut count = 0;
        target
            .for_each_key(s2, &mut |kg, _| {
                assert!((4..8).contains(&kg), "request {i}: key group {kg} is outside the range");
                count += 1
            })
            .unwrap();
        assert_eq!(count, 4, "request {i}");
    }
}

/// consecutive incremental checkpoints each restore to exactly the state at
/// their moment (a file backend may reuse files of completed checkpoints).
pub fn incremental_checkpoints_restore_each_state(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 4));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    for id in 1..=4u64 {
        for k in 0..50u32 {
            if k % 4 == id as u32 % 4 || id == 1 {
                b.put(s, k % 4, &k.to_be_bytes(), format!("v{id}-{k}").as_bytes())
                    .unwrap();
            }
        }
        if id == 3 {
            b.remove(s, 1, &9u32.to_be_bytes()).unwrap();
        }
        let expected: Vec<(u32, Vec<u8>, Vec<u8>)> = {
            let mut keys = Vec::new();
            b.for_each_key(s, &mut |kg, k| keys.push((kg, k.to_vec()))).unwrap();
            keys.into_iter()
                .map(|(kg, k)| {
                    let v = value(&mut *b, s, kg, &k).unwrap();
                    (kg, k, v)
                })
                .collect()
        };
        let request = SnapshotRequest {
            checkpoint_id: id,
            kind: SnapshotRequestKind::Checkpoint { incremental: true },
        };
        let mut restored = snapshot_round_trip(factory, &mut *b, request, range(0, 4), &mut |_| {});
        let s2 = restored.register(&meta("s", StateKind::Value)).unwrap();
        let mut n = 0;
        restored.for_each_key(s2, &mut |_, _| n += 1).unwrap();
        assert_eq!(n, expected.len(), "checkpoint {id}: key count");
        for (kg, k, v) in expected {
            assert_eq!(value(&mut *restored, s2, kg, &k), Some(v), "checkpoint {id}");
        }
    }
}
