//! The RocksDB snapshot layout, version 1 (`docs/formats/rocksdb-snapshot.md`),
//! pinned by a golden native snapshot in `tests/golden/v1/`: RocksDB's files
//! plus Cairn's `CAIRN-ROCKSDB` descriptor, written once by
//! `write_golden_v1_fixture` (ignored; it refuses to overwrite) and never
//! rewritten. Every later build must restore it, whole and rescaled.
#![cfg(feature = "rocksdb")]

use std::path::{Path, PathBuf};

use cairn_state::backend::{BackendContext, KeyedStateBackend, StateBackendFactory};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{
    BackendSnapshot, FileSetRestore, SnapshotFile, SnapshotRequest, SnapshotRequestKind, StateError, StateKind,
    StateMeta, UploadedFile,
};
use cairn_state_rocksdb::{JobShape, MemoryPlan, RocksDbBackendFactory, RocksDbSettings};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn factory() -> RocksDbBackendFactory {
    let shape = JobShape {
        slots: 1,
        keyed_subtasks: 1,
    };
    RocksDbBackendFactory::new(
        RocksDbSettings {
            local_dir: std::env::temp_dir().join("cairn-rocksdb-golden"),
            memory: MemoryPlan::managed(32 << 20, shape, 0.5, 0.25, 64 << 20, 2),
            background_jobs: 1,
        },
        &format!("{:032x}", 0x601d_u64),
    )
    .unwrap()
}

fn backend(f: &RocksDbBackendFactory, range: KeyGroupRange) -> Box<dyn KeyedStateBackend> {
    f.create(&BackendContext {
        job_id: format!("{:032x}", 0x601d_u64),
        operator_id: "00112233445566778899aabbccddeeff".into(),
        uid: "golden".into(),
        subtask: 0,
        key_groups: range,
        attempt: 0,
    })
    .unwrap()
}

fn meta(name: &str, kind: StateKind) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        value_type: "bytes".into(),
        ttl: None,
        shapes: None,
    }
}

const ALL: KeyGroupRange = KeyGroupRange {
    start: 0,
    end_exclusive: 4,
};

/// The fixture's content: per key group, 3 keys with a value, a list and a map.
fn fill(b: &mut dyn KeyedStateBackend) {
    let v = b.register(&meta("count", StateKind::Value)).unwrap();
    let l = b.register(&meta("items", StateKind::List)).unwrap();
    let m = b.register(&meta("attrs", StateKind::Map)).unwrap();
    for kg in 0..4u32 {
        for i in 0..3u32 {
            let key = format!("key-{kg}-{i}");
            b.put(v, kg, key.as_bytes(), &(kg * 10 + i).to_be_bytes()).unwrap();
            b.append(l, kg, key.as_bytes(), b"\x01a").unwrap();
            b.append(l, kg, key.as_bytes(), b"\x01b").unwrap();
            b.map_put(m, kg, key.as_bytes(), b"colour", format!("c{i}").as_bytes())
                .unwrap();
            b.map_put(m, kg, key.as_bytes(), b"size", &[i as u8]).unwrap();
        }
    }
}

#[test]
#[ignore = "writes the golden fixture once; never rerun over an existing one"]
fn write_golden_v1_fixture() {
    let dir = golden();
    assert!(
        !dir.exists(),
        "{} exists: golden fixtures are never rewritten",
        dir.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let f = factory();
    let mut b = backend(&f, ALL);
    fill(&mut *b);
    let request = SnapshotRequest {
        checkpoint_id: 1,
        kind: SnapshotRequestKind::NativeSavepoint,
    };
    let BackendSnapshot::Files(set) = b.snapshot(&request).unwrap() else {
        panic!("RocksDB snapshots are files")
    };
    let mut list = Vec::new();
    for file in set.files() {
        let SnapshotFile::Upload { local_path, name, .. } = file else {
            panic!("a native savepoint references nothing")
        };
        std::fs::copy(local_path, dir.join(name)).unwrap();
        list.push(name.clone());
    }
    std::fs::write(dir.join("files.txt"), format!("{}\n", list.join("\n"))).unwrap();
    std::fs::write(
        dir.join("states.json"),
        serde_json::to_vec_pretty(set.states()).unwrap(),
    )
    .unwrap();
    set.discard();
}

fn fixture_parts() -> Vec<FileSetRestore> {
    let dir = golden();
    let names = std::fs::read_to_string(dir.join("files.txt")).expect("the golden fixture exists");
    let states: Vec<StateMeta> = serde_json::from_slice(&std::fs::read(dir.join("states.json")).unwrap()).unwrap();
    let files = names
        .lines()
        .map(|n| {
            let bytes = std::fs::read(dir.join(n)).unwrap();
            UploadedFile {
                name: n.to_string(),
                path: dir.join(n).display().to_string(),
                size: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            }
        })
        .collect();
    vec![FileSetRestore {
        backend: "rocksdb".into(),
        states,
        key_groups: ALL,
        files,
    }]
}

fn copy(f: &UploadedFile, local: &Path) -> Result<(), StateError> {
    std::fs::copy(&f.path, local).map_err(|e| StateError::Restore(format!("{}: {e}", f.path)))?;
    Ok(())
}

fn check(b: &mut dyn KeyedStateBackend, range: KeyGroupRange) {
    let v = b.register(&meta("count", StateKind::Value)).unwrap();
    let l = b.register(&meta("items", StateKind::List)).unwrap();
    let m = b.register(&meta("attrs", StateKind::Map)).unwrap();
    let mut out = Vec::new();
    let mut keys = 0;
    b.for_each_key(v, &mut |kg, _| {
        assert!(range.contains(kg));
        keys += 1
    })
    .unwrap();
    assert_eq!(keys, 3 * range.len());
    for kg in range.start..range.end_exclusive {
        for i in 0..3u32 {
            let key = format!("key-{kg}-{i}");
            assert!(b.get(v, kg, key.as_bytes(), &mut out).unwrap());
            assert_eq!(out, (kg * 10 + i).to_be_bytes());
            assert!(b.get(l, kg, key.as_bytes(), &mut out).unwrap());
            assert_eq!(out, b"\x01a\x01b");
            let mut entries = Vec::new();
            b.map_entries(m, kg, key.as_bytes(), &mut |u, x| {
                entries.push((u.to_vec(), x.to_vec()))
            })
            .unwrap();
            assert_eq!(
                entries,
                vec![
                    (b"colour".to_vec(), format!("c{i}").into_bytes()),
                    (b"size".to_vec(), vec![i as u8])
                ]
            );
        }
    }
}

#[test]
fn the_golden_v1_snapshot_restores_whole() {
    let f = factory();
    let mut b = backend(&f, ALL);
    b.restore_files(&fixture_parts(), &copy).unwrap();
    check(&mut *b, ALL);
}

#[test]
fn the_golden_v1_snapshot_restores_into_part_of_its_key_groups() {
    let f = factory();
    let part = KeyGroupRange {
        start: 1,
        end_exclusive: 3,
    };
    let mut b = backend(&f, part);
    b.restore_files(&fixture_parts(), &copy).unwrap();
    check(&mut *b, part);
}

#[test]
fn a_damaged_golden_sst_is_refused_or_read_as_an_error_never_as_wrong_data() {
    // A fetch that does not check the CRC-32 (the runtime's does): RocksDB's
    // own block checksums still refuse the damaged file.
    let f = factory();
    let mut b = backend(&f, ALL);
    let parts = fixture_parts();
    let damaged = |u: &UploadedFile, local: &Path| -> Result<(), StateError> {
        copy(u, local)?;
        if u.name.ends_with(".sst") {
            let mut bytes = std::fs::read(local).unwrap();
            // Inside the first data block.
            bytes[20] ^= 0xff;
            std::fs::write(local, bytes).unwrap();
        }
        Ok(())
    };
    match b.restore_files(&parts, &damaged) {
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("corrupt") || e.to_string().contains("checksum"),
            "{e}"
        ),
        Ok(()) => {
            let v = b.register(&meta("count", StateKind::Value)).unwrap();
            let mut out = Vec::new();
            let mut errors = 0;
            for kg in 0..4u32 {
                for i in 0..3u32 {
                    match b.get(v, kg, format!("key-{kg}-{i}").as_bytes(), &mut out) {
                        Ok(true) => assert_eq!(out, (kg * 10 + i).to_be_bytes(), "a damaged file gave a wrong value"),
                        Ok(false) => panic!("a damaged file lost key-{kg}-{i} silently"),
                        Err(e) => {
                            assert!(e.to_string().to_lowercase().contains("corrupt"), "{e}");
                            errors += 1;
                        }
                    }
                }
            }
            assert!(errors > 0, "the damage was noticed");
        }
    }
}
