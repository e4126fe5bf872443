//! Golden fixture for `_metadata` format version 1 and state-file format
//! version 1 (invariant 5). The files under `tests/golden/v1/` are committed
//! and must keep loading forever. `CAIRN_REGEN_GOLDEN=1` only creates
//! them when missing; they are never rewritten.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use cairn_snapshot::metadata::{
    encode_metadata, OperatorSnapshot, SavepointFormat, SnapshotKind, SnapshotMetadata, SubtaskSnapshot,
};
use cairn_snapshot::storage::LocalFileStorage;
use cairn_snapshot::{load_snapshot, StateFileReader, StateFileWriter};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

/// The state file of the fixture, deterministic.
fn golden_state_file() -> (Vec<u8>, cairn_snapshot::StateFileInfo) {
    let mut w = StateFileWriter::new(Vec::new()).unwrap();
    w.begin_section("count", Some(3)).unwrap();
    w.write_all(b"key-a=1;key-b=2").unwrap();
    w.begin_section("count", Some(5)).unwrap();
    w.write_all(b"key-c=7").unwrap();
    w.begin_section("offsets", None).unwrap();
    w.write_all(&42u64.to_le_bytes()).unwrap();
    w.finish().unwrap()
}

fn golden_metadata(info: &cairn_snapshot::StateFileInfo) -> SnapshotMetadata {
    SnapshotMetadata {
        format_version: 1,
        kind: SnapshotKind::Savepoint {
            format: SavepointFormat::Canonical,
        },
        job_id: "5f3c2a9e8d7b6a5f4e3d2c1b0a998877".into(),
        checkpoint_id: 860,
        trigger_timestamp_ms: 1_700_000_000_000,
        completion_timestamp_ms: 1_700_000_000_250,
        cairn_version: "0.1.0".into(),
        operators: vec![
            OperatorSnapshot {
                operator_id: "0123456789abcdef0123456789abcdef".into(),
                uid: "word-counter".into(),
                name: "Word Counter".into(),
                parallelism: 1,
                max_parallelism: 128,
                subtasks: vec![SubtaskSnapshot {
                    subtask_index: 0,
                    files: vec![info.to_file_ref("state/op-0.state")],
                }],
            },
            OperatorSnapshot {
                operator_id: "fedcba9876543210fedcba9876543210".into(),
                uid: "sink".into(),
                name: "Sink".into(),
                parallelism: 2,
                max_parallelism: 128,
                subtasks: vec![
                    SubtaskSnapshot {
                        subtask_index: 0,
                        files: vec![],
                    },
                    SubtaskSnapshot {
                        subtask_index: 1,
                        files: vec![],
                    },
                ],
            },
        ],
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
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let (bytes, info) = golden_state_file();
        std::fs::write(dir.join("state/op-0.state"), bytes).unwrap();
        std::fs::write(dir.join("_metadata"), encode_metadata(&golden_metadata(&info)).unwrap()).unwrap();
        eprintln!("regenerated golden fixture in {}", dir.display());
    });
}

#[test]
fn golden_v1_loads() {
    regenerate_if_asked();
    let storage = LocalFileStorage::new();
    let snap = load_snapshot(&storage, &golden_dir()).expect("golden v1 fixture must load");
    let m = &snap.metadata;
    assert_eq!(m.format_version, 1);
    assert_eq!(
        m.kind,
        SnapshotKind::Savepoint {
            format: SavepointFormat::Canonical
        }
    );
    assert_eq!(m.job_id, "5f3c2a9e8d7b6a5f4e3d2c1b0a998877");
    assert_eq!(m.checkpoint_id, 860);
    assert_eq!(m.trigger_timestamp_ms, 1_700_000_000_000);
    assert_eq!(m.completion_timestamp_ms, 1_700_000_000_250);
    assert_eq!(m.cairn_version, "0.1.0");
    assert_eq!(m.operators.len(), 2);
    let op = &m.operators[0];
    assert_eq!(
        (op.uid.as_str(), op.parallelism, op.max_parallelism),
        ("word-counter", 1, 128)
    );
    let file = &op.subtasks[0].files[0];
    assert_eq!(file.path, "state/op-0.state");
    assert_eq!(file.sections.len(), 3);

    let reader: StateFileReader = snap.open_state_file(&storage, file).unwrap();
    assert_eq!(reader.version(), 1);
    assert_eq!(reader.section("count", Some(3)), Some(&b"key-a=1;key-b=2"[..]));
    assert_eq!(reader.section("count", Some(5)), Some(&b"key-c=7"[..]));
    assert_eq!(reader.section("offsets", None), Some(&42u64.to_le_bytes()[..]));
    // Range reads driven by the section index in _metadata.
    let s5 = file.sections.iter().find(|s| s.key_group == Some(5)).unwrap();
    assert_eq!(snap.read_section(&storage, file, s5).unwrap(), b"key-c=7");
    assert!(m.operators[1].subtasks.iter().all(|s| s.files.is_empty()));
}

/// While the current writer still produces version 1, it must produce exactly
/// the committed bytes (catches accidental format changes). When the format
/// version is bumped, add a `v2` fixture and drop this check for v1.
#[test]
fn writer_still_produces_v1_bytes() {
    regenerate_if_asked();
    let dir = golden_dir();
    let (bytes, info) = golden_state_file();
    assert_eq!(std::fs::read(dir.join("state/op-0.state")).unwrap(), bytes);
    assert_eq!(
        std::fs::read(dir.join("_metadata")).unwrap(),
        encode_metadata(&golden_metadata(&info)).unwrap()
    );
}

/// Every single-bit flip in the fixture's header line (magic, version digit, newline) reads
/// as corruption of that file: integrity is checked before the version is interpreted, so a
/// damaged digit never reads as "format version 0 ... use a newer Cairn release".
#[test]
fn golden_metadata_header_flips_read_as_corruption_not_as_another_version() {
    use cairn_snapshot::metadata::decode_metadata;
    use cairn_snapshot::SnapshotError;
    let path = golden_dir().join("_metadata");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(&bytes[..header_len], b"CAIRN-METADATA 1\n");
    for i in 0..header_len {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let e = decode_metadata(&path, &b).expect_err("a flipped header byte must be noticed");
            assert!(
                matches!(e, SnapshotError::ChecksumMismatch { .. }),
                "byte {i} bit {bit}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains("corrupt") && msg.contains("_metadata"), "{msg}");
            assert!(!msg.contains("newer Cairn"), "byte {i} bit {bit}: {msg}");
        }
    }
    // Anywhere else in the file, a flip is never mistaken for a version either.
    for i in header_len..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let e = decode_metadata(&path, &b).expect_err("a flipped byte must be noticed");
        assert!(!matches!(e, SnapshotError::UnsupportedVersion { .. }), "byte {i}: {e}");
    }
}

/// The same for the fixture's state file: a flipped version byte is damage.
#[test]
fn golden_state_file_header_flips_read_as_corruption_not_as_another_version() {
    use cairn_snapshot::SnapshotError;
    let path = golden_dir().join("state/op-0.state");
    let bytes = std::fs::read(&path).unwrap();
    for i in 0..16 {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let e = StateFileReader::from_bytes(&path, b).expect_err("a flipped header byte must be noticed");
            assert!(
                matches!(e, SnapshotError::ChecksumMismatch { .. }),
                "byte {i} bit {bit}: {e}"
            );
        }
    }
}
