//! Golden fixture for `_metadata` format version 2 (invariant 5): a
//! checkpoint whose subtask consists of a state file and backend files, one
//! of them in the job's `shared/` directory as incremental checkpoints
//! reference it. The files under `tests/golden/v2/` are committed and must
//! keep loading forever; `CAIRN_REGEN_GOLDEN=1` only creates them when missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use cairn_snapshot::checksum::crc32;
use cairn_snapshot::metadata::{encode_metadata, OperatorSnapshot, SnapshotKind, SnapshotMetadata, SubtaskSnapshot};
use cairn_snapshot::storage::LocalFileStorage;
use cairn_snapshot::{load_snapshot, FileFormat, StateFileRef, StateFileWriter};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v2")
}

const SST: &[u8] = b"not really an SST: backend files are opaque to the snapshot layer";
const MANIFEST: &[u8] = b"MANIFEST-000005";

fn golden_state_file() -> (Vec<u8>, cairn_snapshot::StateFileInfo) {
    let mut w = StateFileWriter::new(Vec::new()).unwrap();
    w.begin_section("backend-files", None).unwrap();
    w.write_all(br#"{"backend":"rocksdb","files":[["000009.sst","../shared/9f8e7d6c-000009.sst"],["MANIFEST-000005","MANIFEST-000005"]]}"#)
        .unwrap();
    w.finish().unwrap()
}

fn backend_ref(path: &str, bytes: &[u8]) -> StateFileRef {
    StateFileRef {
        path: path.into(),
        size: bytes.len() as u64,
        crc32: crc32(bytes),
        sections: vec![],
        format: FileFormat::BackendFile,
    }
}

fn golden_metadata(info: &cairn_snapshot::StateFileInfo) -> SnapshotMetadata {
    SnapshotMetadata {
        format_version: 2,
        kind: SnapshotKind::Checkpoint,
        job_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
        checkpoint_id: 7,
        trigger_timestamp_ms: 1_764_000_000_000,
        completion_timestamp_ms: 1_764_000_000_400,
        cairn_version: "0.1.0".into(),
        operators: vec![OperatorSnapshot {
            operator_id: "00112233445566778899aabbccddeeff".into(),
            uid: "counter".into(),
            name: "Counter".into(),
            parallelism: 1,
            max_parallelism: 128,
            subtasks: vec![SubtaskSnapshot {
                subtask_index: 0,
                files: vec![
                    info.to_file_ref("op-0-0.state"),
                    backend_ref("../shared/9f8e7d6c-000009.sst", SST),
                    backend_ref("MANIFEST-000005", MANIFEST),
                ],
            }],
        }],
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
        std::fs::create_dir_all(dir.join("job/chk-7")).unwrap();
        std::fs::create_dir_all(dir.join("job/shared")).unwrap();
        let (bytes, info) = golden_state_file();
        std::fs::write(dir.join("job/chk-7/op-0-0.state"), bytes).unwrap();
        std::fs::write(dir.join("job/chk-7/MANIFEST-000005"), MANIFEST).unwrap();
        std::fs::write(dir.join("job/shared/9f8e7d6c-000009.sst"), SST).unwrap();
        std::fs::write(
            dir.join("job/chk-7/_metadata"),
            encode_metadata(&golden_metadata(&info)).unwrap(),
        )
        .unwrap();
        eprintln!("regenerated golden fixture in {}", dir.display());
    });
}

#[test]
fn golden_v2_loads_with_shared_backend_files() {
    regenerate_if_asked();
    let storage = LocalFileStorage::new();
    let snap = load_snapshot(&storage, &golden_dir().join("job/chk-7")).expect("golden v2 fixture must load");
    let m = &snap.metadata;
    assert_eq!(
        (m.format_version, m.kind, m.checkpoint_id),
        (2, SnapshotKind::Checkpoint, 7)
    );
    let files = &m.operators[0].subtasks[0].files;
    assert_eq!(files.len(), 3);
    assert_eq!(files[1].format, FileFormat::BackendFile);
    assert_eq!(files[1].path, "../shared/9f8e7d6c-000009.sst");
    let sst = snap.resolve(&files[1]).unwrap();
    assert_eq!(std::fs::read(sst).unwrap(), SST);
    cairn_snapshot::verify_files(&storage, &snap.dir, m).unwrap();
    let reader = snap.open_state_file(&storage, &files[0]).unwrap();
    assert!(reader.section("backend-files", None).is_some());
}

/// The writer still produces exactly the committed v2 bytes.
#[test]
fn writer_still_produces_v2_bytes() {
    regenerate_if_asked();
    let dir = golden_dir().join("job/chk-7");
    let (bytes, info) = golden_state_file();
    assert_eq!(std::fs::read(dir.join("op-0-0.state")).unwrap(), bytes);
    assert_eq!(
        std::fs::read(dir.join("_metadata")).unwrap(),
        encode_metadata(&golden_metadata(&info)).unwrap()
    );
}

/// As for v1: every single-bit flip in the v2 fixture's header line reads as
/// corruption (integrity before interpretation), never as another version.
#[test]
fn golden_v2_metadata_header_flips_read_as_corruption_not_as_another_version() {
    use cairn_snapshot::metadata::decode_metadata;
    use cairn_snapshot::SnapshotError;
    let path = golden_dir().join("job/chk-7/_metadata");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(&bytes[..header_len], b"CAIRN-METADATA 2\n");
    for i in 0..header_len {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let e = decode_metadata(&path, &b).expect_err("a flipped header byte must be noticed");
            assert!(
                matches!(e, SnapshotError::ChecksumMismatch { .. }),
                "byte {i} bit {bit}: {e}"
            );
            assert!(!e.to_string().contains("newer Cairn"), "byte {i} bit {bit}: {e}");
        }
    }
}
