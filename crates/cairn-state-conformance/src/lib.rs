//! The conformance suite every [`KeyedStateBackend`] must pass, one property
//! per function. [`backend_conformance_tests!`] instantiates every property as
//! its own `#[test]` for a backend factory, so one violated property does not
//! hide the others (TiKV's `engine_traits_tests` is the model).
//!
//! ```ignore
//! cairn_state_conformance::backend_conformance_tests!(|range| Box::new(HeapKeyedStateBackend::new(range)));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_state::backend::KeyedStateBackend;
use cairn_state::codec::{self, put_bytes};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{
    AggregateFunction, AggregatingStateDescriptor, BackendSnapshot, FileSetRestore, FileSetSnapshot, KeyedStateAccess,
    ListStateDescriptor, ReducingStateDescriptor, SnapshotFile, SnapshotRequest, SnapshotRequestKind, StateError,
    StateKind, StateMeta, UploadedFile, ValueStateDescriptor,
};

/// Builds an empty backend holding the given key groups.
pub type BackendFactory<'a> = &'a dyn Fn(KeyGroupRange) -> Box<dyn KeyedStateBackend>;

fn meta(name: &str, kind: StateKind) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        value_type: "bytes".into(),
        ttl: None,
        shapes: None,
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
            ordered_scan_within_a_key_group,
            many_keys_round_trip_through_a_snapshot,
            removals_and_appends_are_in_snapshots,
            incremental_checkpoints_reuse_unchanged_files,
            aborted_checkpoints_are_never_referenced,
            restore_merges_several_old_subtasks,
            typed_handles_store_the_codec_bytes,
            typed_handles_read_bytes_written_before,
            typed_handle_snapshots_are_isolated_from_later_writes,
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

/// Removes the upload directories of test processes that no longer run (a
/// test cannot know when the last reference to its uploads is gone, so
/// each process's directories are left for the next run to remove).
fn remove_uploads_of_finished_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("cairn-conformance-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A directory standing in for checkpoint storage in file round trips.
fn upload_dir() -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_uploads_of_finished_processes);
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
    restore_snapshot(factory, b, snap, request, target)
}

/// Restore `snap`, taken of `b` for `request`, into a new backend for `target`.
fn restore_snapshot(
    factory: BackendFactory<'_>,
    b: &mut dyn KeyedStateBackend,
    snap: BackendSnapshot,
    request: SnapshotRequest,
    target: KeyGroupRange,
) -> Box<dyn KeyedStateBackend> {
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

/// a backend that supports ordered scans visits one key group's keys of a
/// value state in byte order from `from`, and stops when told; one that does
/// not refuses with an error naming itself.
pub fn ordered_scan_within_a_key_group(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 4));
    let t = b.register(&meta("t", StateKind::Value)).unwrap();
    let mut seen = Vec::new();
    if !b.supports_ordered_scan() {
        let err = b.scan_from(t, 1, b"", &mut |_, _| true).unwrap_err().to_string();
        assert!(err.contains(b.kind()), "{err}");
        return;
    }
    for (kg, k) in [
        (1, &b"b"[..]),
        (1, b"a"),
        (1, b"c\x00"),
        (1, b"c"),
        (0, b"a"),
        (2, b"\x00"),
        (1, b"bb"),
    ] {
        b.put(t, kg, k, &[kg as u8]).unwrap();
    }
    b.remove(t, 1, b"bb").unwrap();
    b.scan_from(t, 1, b"", &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    let keys: Vec<&[u8]> = seen.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        keys,
        vec![&b"a"[..], b"b", b"c", b"c\x00"],
        "key group 1 only, in byte order"
    );
    assert!(seen.iter().all(|(_, v)| v == &[1]));
    let mut from_b = Vec::new();
    b.scan_from(t, 1, b"b\x00", &mut |k, _| {
        from_b.push(k.to_vec());
        from_b.is_empty()
    })
    .unwrap();
    assert_eq!(
        from_b,
        vec![b"c".to_vec()],
        "starts at the first key >= from and stops when told"
    );
    // Writes after a scan are seen by the next scan.
    b.put(t, 1, b"0", b"x").unwrap();
    let mut first = None;
    b.scan_from(t, 1, b"", &mut |k, _| {
        first = Some(k.to_vec());
        false
    })
    .unwrap();
    assert_eq!(first, Some(b"0".to_vec()));
    let mut none = 0;
    b.scan_from(t, 3, b"", &mut |_, _| {
        none += 1;
        true
    })
    .unwrap();
    assert_eq!(none, 0);
}

/// thousands of keys in several states (more than a small cache holds)
/// read back exactly, and restore exactly from every kind of snapshot, with
/// later overwrites and list appends.
pub fn many_keys_round_trip_through_a_snapshot(factory: BackendFactory<'_>) {
    let n = 8_000u32;
    let list_of = |i: u32| if i % 3 == 0 { vec![1, 2] } else { vec![1] };
    for (r, request) in every_request(1).into_iter().enumerate() {
        let mut b = factory(range(0, 16));
        let v = b.register(&meta("v", StateKind::Value)).unwrap();
        let l = b.register(&meta("l", StateKind::List)).unwrap();
        let m = b.register(&meta("m", StateKind::Map)).unwrap();
        for i in 0..n {
            let kg = i % 16;
            let key = i.to_be_bytes();
            b.put(v, kg, &key, &[i as u8; 40]).unwrap();
            b.append(l, kg, &key, &[1]).unwrap();
            if i % 5 == 0 {
                b.map_put(m, kg, &key, b"u", &key).unwrap();
            }
        }
        for i in (0..n).step_by(3) {
            b.put(v, i % 16, &i.to_be_bytes(), b"over").unwrap();
            b.append(l, i % 16, &i.to_be_bytes(), &[2]).unwrap();
        }
        for i in (0..n).step_by(7) {
            let want: Vec<u8> = if i % 3 == 0 {
                b"over".to_vec()
            } else {
                vec![i as u8; 40]
            };
            assert_eq!(
                value(&mut *b, v, i % 16, &i.to_be_bytes()),
                Some(want),
                "value of key {i}"
            );
            assert_eq!(
                value(&mut *b, l, i % 16, &i.to_be_bytes()),
                Some(list_of(i)),
                "list of key {i}"
            );
        }
        let mut target = snapshot_round_trip(factory, &mut *b, request, range(0, 16), &mut |_| {});
        let v2 = target.register(&meta("v", StateKind::Value)).unwrap();
        let l2 = target.register(&meta("l", StateKind::List)).unwrap();
        let m2 = target.register(&meta("m", StateKind::Map)).unwrap();
        let mut count = 0;
        target.for_each_key(v2, &mut |_, _| count += 1).unwrap();
        assert_eq!(count, n, "request {r}");
        let mut maps = 0;
        target.for_each_key(m2, &mut |_, _| maps += 1).unwrap();
        assert_eq!(maps, n / 5, "request {r}");
        for i in (0..n).step_by(11) {
            let key = i.to_be_bytes();
            assert_eq!(
                value(&mut *target, l2, i % 16, &key),
                Some(list_of(i)),
                "request {r}, key {i}"
            );
            let len = value(&mut *target, v2, i % 16, &key).map(|x| x.len());
            assert_eq!(len, Some(if i % 3 == 0 { 4 } else { 40 }), "request {r}, key {i}");
            if i % 5 == 0 {
                assert_eq!(map_value(&mut *target, m2, i % 16, &key, b"u"), Some(key.to_vec()));
            }
        }
    }
}

/// removed keys stay removed in a snapshot; appends made after a removal
/// start a new list; a removed map is gone with all its entries.
pub fn removals_and_appends_are_in_snapshots(factory: BackendFactory<'_>) {
    for (r, request) in every_request(2).into_iter().enumerate() {
        let mut b = factory(range(0, 2));
        let v = b.register(&meta("v", StateKind::Value)).unwrap();
        let l = b.register(&meta("l", StateKind::List)).unwrap();
        let m = b.register(&meta("m", StateKind::Map)).unwrap();
        b.put(v, 0, b"gone", b"1").unwrap();
        b.put(v, 0, b"kept", b"2").unwrap();
        b.append(l, 1, b"list", b"old").unwrap();
        b.map_put(m, 1, b"map", b"a", b"1").unwrap();
        b.map_put(m, 1, b"map", b"b", b"2").unwrap();
        b.map_put(m, 1, b"other", b"a", b"3").unwrap();
        let first = SnapshotRequest {
            checkpoint_id: 1,
            kind: request.kind,
        };
        let mut before = snapshot_round_trip(factory, &mut *b, first, range(0, 2), &mut |b| {
            b.remove(v, 0, b"gone").unwrap();
            b.remove(l, 1, b"list").unwrap();
            b.append(l, 1, b"list", b"new").unwrap();
            b.remove(m, 1, b"map").unwrap();
        });
        let mut after = snapshot_round_trip(factory, &mut *b, request, range(0, 2), &mut |_| {});
        for (t, gone_value, list, map_a) in [
            (&mut before, Some(b"1".to_vec()), b"old".to_vec(), Some(b"1".to_vec())),
            (&mut after, None, b"new".to_vec(), None),
        ] {
            let v2 = t.register(&meta("v", StateKind::Value)).unwrap();
            let l2 = t.register(&meta("l", StateKind::List)).unwrap();
            let m2 = t.register(&meta("m", StateKind::Map)).unwrap();
            assert_eq!(value(&mut **t, v2, 0, b"gone"), gone_value, "request {r}");
            assert_eq!(value(&mut **t, v2, 0, b"kept"), Some(b"2".to_vec()), "request {r}");
            assert_eq!(value(&mut **t, l2, 1, b"list"), Some(list), "request {r}");
            assert_eq!(map_value(&mut **t, m2, 1, b"map", b"a"), map_a, "request {r}");
            assert_eq!(
                map_value(&mut **t, m2, 1, b"other", b"a"),
                Some(b"3".to_vec()),
                "request {r}"
            );
        }
    }
}

/// Bytes a file snapshot uploads (new files) and references (earlier files).
fn upload_sizes(set: &dyn FileSetSnapshot) -> (u64, usize) {
    let mut new_bytes = 0;
    let mut reused = 0;
    for f in set.files() {
        match f {
            SnapshotFile::Upload { local_path, .. } => {
                new_bytes += std::fs::metadata(local_path).map(|m| m.len()).unwrap_or(0);
            }
            SnapshotFile::Reuse(_) => reused += 1,
        }
    }
    (new_bytes, reused)
}

/// a backend whose checkpoints are files reuses, in an incremental
/// checkpoint, the files of the last completed one that did not change, and
/// uploads much less than the first; full checkpoints and savepoints
/// reference nothing earlier (they are self-contained). A backend of logical
/// key groups gives key groups for every request.
pub fn incremental_checkpoints_reuse_unchanged_files(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 8));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    for i in 0..5000u32 {
        b.put(s, i % 8, &i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    let incremental = |id| SnapshotRequest {
        checkpoint_id: id,
        kind: SnapshotRequestKind::Checkpoint { incremental: true },
    };
    let first = match b.snapshot(&incremental(1)).unwrap() {
        BackendSnapshot::KeyGroups(_) => {
            for r in every_request(2) {
                assert!(
                    matches!(b.snapshot(&r).unwrap(), BackendSnapshot::KeyGroups(_)),
                    "{r:?}"
                );
            }
            return;
        }
        BackendSnapshot::Files(set) => set,
    };
    let (first_bytes, first_reused) = upload_sizes(&*first);
    assert_eq!(first_reused, 0, "nothing completed before the first checkpoint");
    upload(first, range(0, 8));
    b.notify_checkpoint_complete(1).unwrap();
    for i in 0..50u32 {
        b.put(s, i % 8, &i.to_be_bytes(), &[7; 100]).unwrap();
    }
    let BackendSnapshot::Files(second) = b.snapshot(&incremental(2)).unwrap() else {
        panic!("a file backend changed its kind of snapshot")
    };
    let (second_bytes, second_reused) = upload_sizes(&*second);
    assert!(second_reused > 0, "unchanged files of checkpoint 1 are referenced");
    assert!(
        second_bytes * 5 < first_bytes,
        "1% of the keys changed: uploads {second_bytes} bytes after {first_bytes}"
    );
    let mut restored = factory(range(0, 8));
    let parts = vec![upload(second, range(0, 8))];
    restored.restore_files(&parts, &fetch).unwrap();
    let s2 = restored.register(&meta("s", StateKind::Value)).unwrap();
    assert_eq!(value(&mut *restored, s2, 3, &3u32.to_be_bytes()), Some(vec![7; 100]));
    assert_eq!(
        value(&mut *restored, s2, 3, &3003u32.to_be_bytes()),
        Some(vec![3003u32 as u8; 100])
    );
    for r in [
        SnapshotRequest::checkpoint(3),
        SnapshotRequest {
            checkpoint_id: 3,
            kind: SnapshotRequestKind::NativeSavepoint,
        },
    ] {
        let BackendSnapshot::Files(set) = b.snapshot(&r).unwrap() else {
            panic!("{r:?} of a file backend is files")
        };
        assert_eq!(upload_sizes(&*set).1, 0, "{r:?} is self-contained");
        set.discard();
    }
}

/// the files of an aborted (or discarded) checkpoint are never referenced by
/// a later one: only completed checkpoints' files are reused.
pub fn aborted_checkpoints_are_never_referenced(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 2));
    let s = b.register(&meta("s", StateKind::Value)).unwrap();
    let incremental = |id| SnapshotRequest {
        checkpoint_id: id,
        kind: SnapshotRequestKind::Checkpoint { incremental: true },
    };
    b.put(s, 0, b"a", b"1").unwrap();
    let BackendSnapshot::Files(first) = b.snapshot(&incremental(1)).unwrap() else {
        return; // logical key groups reference no files (see the property above)
    };
    let kept: Vec<String> = upload(first, range(0, 2)).files.into_iter().map(|f| f.path).collect();
    b.notify_checkpoint_complete(1).unwrap();
    b.put(s, 1, b"b", b"2").unwrap();
    let BackendSnapshot::Files(aborted) = b.snapshot(&incremental(2)).unwrap() else {
        unreachable!()
    };
    // What the aborted checkpoint uploaded itself (it may reference checkpoint 1's files too).
    let aborted_paths: Vec<String> = upload(aborted, range(0, 2))
        .files
        .into_iter()
        .map(|f| f.path)
        .filter(|p| !kept.contains(p))
        .collect();
    assert!(
        !aborted_paths.is_empty(),
        "the aborted checkpoint uploaded its new data"
    );
    b.notify_checkpoint_aborted(2).unwrap();
    b.put(s, 1, b"c", b"3").unwrap();
    let BackendSnapshot::Files(discarded) = b.snapshot(&incremental(3)).unwrap() else {
        unreachable!()
    };
    discarded.discard();
    b.put(s, 0, b"d", b"4").unwrap();
    let BackendSnapshot::Files(next) = b.snapshot(&incremental(4)).unwrap() else {
        unreachable!()
    };
    for f in next.files() {
        if let SnapshotFile::Reuse(u) = f {
            assert!(
                kept.contains(&u.path),
                "{} is not a file of the completed checkpoint",
                u.path
            );
            assert!(
                !aborted_paths.contains(&u.path),
                "{} belongs to the aborted checkpoint",
                u.path
            );
        }
    }
    let mut restored = factory(range(0, 2));
    restored.restore_files(&[upload(next, range(0, 2))], &fetch).unwrap();
    let s2 = restored.register(&meta("s", StateKind::Value)).unwrap();
    for (kg, k, v) in [
        (0, &b"a"[..], &b"1"[..]),
        (1, b"b", b"2"),
        (1, b"c", b"3"),
        (0, b"d", b"4"),
    ] {
        assert_eq!(value(&mut *restored, s2, kg, k).as_deref(), Some(v));
    }
}

/// the snapshots of two old subtasks (key groups 0..4 and 4..8) restore into
/// one new subtask owning 2..7 (a rescale): exactly the keys of 2..7, from
/// both, for every kind of snapshot.
pub fn restore_merges_several_old_subtasks(factory: BackendFactory<'_>) {
    for (r, request) in every_request(1).into_iter().enumerate() {
        let mut old: Vec<Box<dyn KeyedStateBackend>> = vec![factory(range(0, 4)), factory(range(4, 8))];
        for b in old.iter_mut() {
            let s = b.register(&meta("s", StateKind::Value)).unwrap();
            let m = b.register(&meta("m", StateKind::Map)).unwrap();
            let l = b.register(&meta("l", StateKind::List)).unwrap();
            let kgs = b.key_group_range();
            for kg in kgs.start..kgs.end_exclusive {
                for i in 0..20u32 {
                    let key = format!("k{kg}-{i}");
                    b.put(s, kg, key.as_bytes(), &kg.to_le_bytes()).unwrap();
                    b.map_put(m, kg, key.as_bytes(), b"u", &i.to_le_bytes()).unwrap();
                    b.append(l, kg, key.as_bytes(), b"x").unwrap();
                }
            }
        }
        let target = range(2, 7);
        let mut restored = factory(target);
        let mut parts = Vec::new();
        for b in old.iter_mut() {
            let kgs = b.key_group_range();
            match b.snapshot(&request).unwrap() {
                BackendSnapshot::KeyGroups(groups) => groups
                    .for_each_group(&mut |meta, kg, bytes| {
                        if target.contains(kg) {
                            restored.restore_group(meta, kg, bytes)?;
                        }
                        Ok(())
                    })
                    .unwrap(),
                BackendSnapshot::Files(set) => parts.push(upload(set, kgs)),
            }
        }
        if !parts.is_empty() {
            restored.restore_files(&parts, &fetch).unwrap();
        }
        let s = restored.register(&meta("s", StateKind::Value)).unwrap();
        let m = restored.register(&meta("m", StateKind::Map)).unwrap();
        let l = restored.register(&meta("l", StateKind::List)).unwrap();
        let mut keys = Vec::new();
        restored
            .for_each_key(s, &mut |kg, k| keys.push((kg, k.to_vec())))
            .unwrap();
        assert_eq!(keys.len(), 5 * 20, "request {r}: keys of key groups 2..7 only");
        assert!(keys.iter().all(|(kg, _)| target.contains(*kg)), "request {r}");
        let mut maps = 0;
        restored.for_each_key(m, &mut |_, _| maps += 1).unwrap();
        assert_eq!(maps, 100, "request {r}");
        for kg in 2..7u32 {
            let key = format!("k{kg}-19");
            assert_eq!(
                value(&mut *restored, s, kg, key.as_bytes()),
                Some(kg.to_le_bytes().to_vec())
            );
            assert_eq!(
                map_value(&mut *restored, m, kg, key.as_bytes(), b"u"),
                Some(19u32.to_le_bytes().to_vec())
            );
            assert_eq!(value(&mut *restored, l, kg, key.as_bytes()), Some(b"x".to_vec()));
        }
        assert!(
            restored.put(s, 7, b"k", b"v").is_err(),
            "key group 7 is not the new subtask's"
        );
    }
}

// ---------------------------------------------------------------------------
// Typed handles: whether a backend keeps objects (the heap backend) or
// bytes, what the handles store is the value codec's bytes.
// ---------------------------------------------------------------------------

/// Sums and counts its inputs.
struct SumCount;

impl AggregateFunction<u64> for SumCount {
    type Acc = (u64, u64);
    type Out = u64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, v: &u64, acc: &mut (u64, u64)) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> u64 {
        acc.0 / acc.1.max(1)
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

fn encoded<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_into("test", v, &mut out).expect("encode");
    out
}

fn encoded_list(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        put_bytes(&mut out, &encoded(v));
    }
    out
}

/// (state name, key group, key) -> stored bytes.
type Stored = BTreeMap<(String, u32, Vec<u8>), Vec<u8>>;

/// Writes through every typed handle for 24 keys (some with a namespace),
/// and returns what the byte path would have stored.
fn write_through_handles(access: &mut KeyedStateAccess, round: u64) -> Stored {
    let v = access
        .value_state(ValueStateDescriptor::<(String, u64)>::new("v"))
        .unwrap();
    let l = access.list_state(ListStateDescriptor::<u64>::new("l")).unwrap();
    let r = access
        .reducing_state(ReducingStateDescriptor::<u64>::new("r"), |a, b| a + b)
        .unwrap();
    let g = access
        .aggregating_state(AggregatingStateDescriptor::<u64, (u64, u64)>::new("g"), SumCount)
        .unwrap();
    let mut want = Stored::new();
    for k in 0..24u64 {
        let kg = (k % 4) as u32;
        let key = format!("key-{k}").into_bytes();
        access.set_current_key(&key, kg);
        let mut composite = key.clone();
        if k % 3 == 0 {
            access.set_namespace(b"window");
            composite.extend_from_slice(b"window");
        }
        let name = format!("n{k}-{round}");
        // Start each round from nothing (the earlier round's values stay in snapshots).
        l.clear(access).unwrap();
        r.clear(access).unwrap();
        g.clear(access).unwrap();
        v.update(access, &(name.clone(), k)).unwrap();
        l.add(access, &k).unwrap();
        l.add(access, &(k * round)).unwrap();
        r.add(access, k).unwrap();
        r.add(access, round).unwrap();
        g.add(access, &k).unwrap();
        g.add(access, &100).unwrap();
        let mut list = vec![k, k * round];
        if k % 5 == 0 {
            v.clear(access).unwrap();
            l.update(access, &[7, 8]).unwrap();
            list = vec![7, 8];
        } else {
            want.insert(("v".into(), kg, composite.clone()), encoded(&(name, k)));
        }
        if k % 7 == 0 {
            l.clear(access).unwrap();
            list.clear();
        }
        assert_eq!(v.value(access).unwrap().is_some(), k % 5 != 0);
        assert_eq!(l.get(access).unwrap(), list);
        assert_eq!(r.get(access).unwrap(), Some(k + round));
        assert_eq!(g.get(access).unwrap(), Some((k + 100) / 2));
        if !list.is_empty() {
            want.insert(("l".into(), kg, composite.clone()), encoded_list(&list));
        }
        want.insert(("r".into(), kg, composite.clone()), encoded(&(k + round)));
        want.insert(("g".into(), kg, composite), encoded(&(k + 100, 2u64)));
    }
    want
}

/// Everything the backend holds, read through the byte methods.
fn stored_bytes(b: &mut dyn KeyedStateBackend) -> Stored {
    let mut got = Stored::new();
    for (id, meta) in b.registered().to_vec().iter().enumerate() {
        let mut keys = Vec::new();
        b.for_each_key(id as u32, &mut |kg, k| keys.push((kg, k.to_vec())))
            .unwrap();
        for (kg, k) in keys {
            let mut out = Vec::new();
            assert!(b.get(id as u32, kg, &k, &mut out).unwrap(), "listed key is readable");
            got.insert((meta.name.clone(), kg, k), out);
        }
    }
    got
}

/// value, list, reducing and aggregating handles store exactly the codec's
/// bytes (what snapshots and savepoints contain), read back through the
/// byte methods and through a snapshot of every kind.
pub fn typed_handles_store_the_codec_bytes(factory: BackendFactory<'_>) {
    for (i, request) in every_request(1).into_iter().enumerate() {
        let mut access = KeyedStateAccess::new(factory(range(0, 4)));
        let want = write_through_handles(&mut access, 3);
        assert_eq!(stored_bytes(access.backend_mut()), want, "request {i}: byte reads");
        let mut restored = snapshot_round_trip(factory, access.backend_mut(), request, range(0, 4), &mut |_| {});
        for m in access.backend_mut().registered().to_vec() {
            restored.register(&m).unwrap();
        }
        assert_eq!(stored_bytes(&mut *restored), want, "request {i}: snapshot");
    }
}

/// handles registered on state written as bytes before (a restore) read
/// it, and byte writes after registration are seen by the handles.
pub fn typed_handles_read_bytes_written_before(factory: BackendFactory<'_>) {
    let mut b = factory(range(0, 2));
    let v = b.register(&meta("v", StateKind::Value)).unwrap();
    let l = b.register(&meta("l", StateKind::List)).unwrap();
    b.put(v, 1, b"k", &encoded(&("x".to_string(), 5u64))).unwrap();
    b.append(l, 1, b"k", &encoded_list(&[1, 2])).unwrap();
    let mut access = KeyedStateAccess::new(b);
    let vs = access
        .value_state(ValueStateDescriptor::<(String, u64)>::new("v"))
        .unwrap();
    let ls = access.list_state(ListStateDescriptor::<u64>::new("l")).unwrap();
    access.set_current_key(b"k", 1);
    assert_eq!(vs.value(&mut access).unwrap(), Some(("x".to_string(), 5)));
    assert_eq!(ls.get(&mut access).unwrap(), vec![1, 2]);
    let b = access.backend_mut();
    b.put(v, 1, b"k", &encoded(&("y".to_string(), 6u64))).unwrap();
    b.append(l, 1, b"k", &encoded_list(&[3])).unwrap();
    assert_eq!(vs.value(&mut access).unwrap(), Some(("y".to_string(), 6)));
    assert_eq!(ls.get(&mut access).unwrap(), vec![1, 2, 3]);
    // A value that does not decode as the handle's type is an error naming both.
    let b = access.backend_mut();
    b.put(v, 0, b"bad", &encoded(&"not a tuple")).unwrap();
    access.set_current_key(b"bad", 0);
    let err = vs.value(&mut access).unwrap_err().to_string();
    assert!(err.contains("'v'") && err.contains("String"), "{err}");
}

/// a snapshot taken between handle writes holds the first writes only.
pub fn typed_handle_snapshots_are_isolated_from_later_writes(factory: BackendFactory<'_>) {
    for (i, request) in every_request(1).into_iter().enumerate() {
        let mut access = KeyedStateAccess::new(factory(range(0, 4)));
        let first = write_through_handles(&mut access, 1);
        let snap = access.backend_mut().snapshot(&request).expect("snapshot");
        let second = write_through_handles(&mut access, 2);
        assert_ne!(first, second);
        assert_eq!(stored_bytes(access.backend_mut()), second, "request {i}: live");
        let mut restored = restore_snapshot(factory, access.backend_mut(), snap, request, range(0, 4));
        for m in access.backend_mut().registered().to_vec() {
            restored.register(&m).unwrap();
        }
        assert_eq!(stored_bytes(&mut *restored), first, "request {i}: snapshot");
    }
}
