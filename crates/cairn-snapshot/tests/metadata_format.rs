//! `_metadata` encoding, framing, corruption detection and file verification.

mod common;

use std::path::Path;

use cairn_snapshot::metadata::{
    decode_metadata, encode_metadata, read_metadata, verify_files, write_metadata, OperatorSnapshot, SavepointFormat,
    SnapshotKind, SnapshotMetadata, SubtaskSnapshot,
};
use cairn_snapshot::storage::{LocalFileStorage, Storage};
use cairn_snapshot::SnapshotError;
use common::*;

fn sample(files: Vec<cairn_snapshot::StateFileRef>, kind: SnapshotKind) -> SnapshotMetadata {
    SnapshotMetadata {
        format_version: 1,
        kind,
        job_id: JOB.into(),
        checkpoint_id: 12,
        trigger_timestamp_ms: 1,
        completion_timestamp_ms: 2,
        cairn_version: "0.1.0".into(),
        operators: vec![OperatorSnapshot {
            operator_id: OP_A.into(),
            uid: "a".into(),
            name: "A".into(),
            parallelism: 2,
            max_parallelism: 8,
            subtasks: vec![SubtaskSnapshot {
                subtask_index: 1,
                files,
            }],
        }],
    }
}

#[test]
fn roundtrip_and_every_bit_flip_detected() {
    let m = sample(vec![], SnapshotKind::Checkpoint);
    let bytes = encode_metadata(&m).unwrap();
    assert!(bytes.starts_with(b"CAIRN-METADATA 1\n"));
    assert_eq!(decode_metadata(Path::new("x"), &bytes).unwrap(), m);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        assert!(decode_metadata(Path::new("x"), &b).is_err(), "flip at {i} unnoticed");
    }
    for n in 0..bytes.len() {
        assert!(
            decode_metadata(Path::new("x"), &bytes[..n]).is_err(),
            "truncation at {n}"
        );
    }
}

#[test]
fn errors_name_the_file_and_version() {
    let p = Path::new("/snap/_metadata");
    let m = sample(vec![], SnapshotKind::Checkpoint);
    // A file from a future release: intact framing, version 9.
    let v1 = encode_metadata(&m).unwrap();
    let text = String::from_utf8(v1).unwrap();
    let framed = text
        .rsplit_once("CRC32 ")
        .unwrap()
        .0
        .replacen("CAIRN-METADATA 1", "CAIRN-METADATA 9", 1);
    let bytes = format!("{framed}CRC32 {:08x}\n", crc32fast::hash(framed.as_bytes())).into_bytes();
    let e = decode_metadata(p, &bytes).unwrap_err();
    assert!(matches!(e, SnapshotError::UnsupportedVersion { found: 9, .. }), "{e}");
    assert!(e.to_string().contains("/snap/_metadata") && e.to_string().contains("newer Cairn"));

    let e = decode_metadata(p, b"PK\x03\x04 zip file").unwrap_err();
    assert!(matches!(e, SnapshotError::NotASnapshot { .. }), "{e}");

    let mut bytes = encode_metadata(&m).unwrap();
    let pos = bytes.iter().position(|b| *b == b'2').unwrap(); // inside the body
    bytes[pos] = b'3';
    let e = decode_metadata(p, &bytes).unwrap_err();
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("/snap/_metadata"));
    assert!(e.is_user_error());
}

#[test]
fn invalid_models_are_refused() {
    let mut m = sample(vec![], SnapshotKind::Checkpoint);
    m.job_id = "XYZ".into();
    assert!(encode_metadata(&m).is_err());
    let mut m = sample(vec![], SnapshotKind::Checkpoint);
    m.operators[0].subtasks[0].subtask_index = 2;
    assert!(encode_metadata(&m).is_err());
    let mut m = sample(vec![], SnapshotKind::Checkpoint);
    m.format_version = cairn_snapshot::metadata::METADATA_VERSION + 1;
    assert!(encode_metadata(&m).is_err());
    // backend files need version 2
    let mut m = sample(vec![], SnapshotKind::Checkpoint);
    m.operators[0].subtasks[0].files.push(cairn_snapshot::StateFileRef {
        path: "../shared/000012.sst".into(),
        size: 10,
        crc32: 7,
        sections: vec![],
        format: cairn_snapshot::FileFormat::BackendFile,
    });
    assert!(encode_metadata(&m).is_err(), "a v1 file cannot hold backend files");
    m.format_version = 2;
    assert!(encode_metadata(&m).is_ok());
    // canonical v2 files need version 3 (and later versions still hold them)
    let parquet = cairn_snapshot::StateFileRef {
        path: "op-1-0-state-0.parquet".into(),
        size: 10,
        crc32: 7,
        sections: vec![],
        format: cairn_snapshot::FileFormat::ParquetV2,
    };
    let sp = SnapshotKind::Savepoint {
        format: SavepointFormat::Canonical,
    };
    let mut m = sample(vec![parquet], sp);
    for older in [1, 2] {
        m.format_version = older;
        let e = encode_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("op-1-0-state-0.parquet") && e.contains("version 3"), "{e}");
    }
    assert_eq!(m.version_needed(), 3, "canonical v2 files need version 3");
    for newer in [3, 4] {
        m.format_version = newer;
        assert!(encode_metadata(&m).is_ok(), "version {newer}");
    }
    // channel state needs version 4, and savepoints never hold it
    let channel = cairn_snapshot::StateFileRef {
        path: "op-1-0.channel".into(),
        size: 10,
        crc32: 7,
        sections: vec![],
        format: cairn_snapshot::FileFormat::ChannelStateV1,
    };
    let mut m = sample(vec![channel.clone()], SnapshotKind::Checkpoint);
    for older in [2, 3] {
        m.format_version = older;
        let e = encode_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("op-1-0.channel") && e.contains("version 4"), "{e}");
    }
    assert_eq!(m.version_needed(), 4, "channel state needs version 4");
    m.format_version = 4;
    assert!(encode_metadata(&m).is_ok());
    let mut m = sample(
        vec![channel],
        SnapshotKind::Savepoint {
            format: SavepointFormat::Native,
        },
    );
    m.format_version = 4;
    let e = encode_metadata(&m).unwrap_err().to_string();
    assert!(e.contains("savepoints are aligned"), "{e}");
    // savepoints must be self-contained
    let r = cairn_snapshot::StateFileRef {
        path: "../shared/x".into(),
        size: 1,
        crc32: 1,
        sections: vec![],
        format: Default::default(),
    };
    let sp = SnapshotKind::Savepoint {
        format: SavepointFormat::Native,
    };
    assert!(encode_metadata(&sample(vec![r.clone()], sp)).is_err());
    assert!(encode_metadata(&sample(vec![r], SnapshotKind::Checkpoint)).is_ok());
}

#[test]
fn write_read_verify_on_disk() {
    let tmp = TempDir::new("metadata");
    let s = LocalFileStorage::new();
    let dir = tmp.path().join("chk-12");
    let f = write_state(&s, &dir, "op/a.state", "op/a.state", b"payload", &[1, 2]).unwrap();
    let m = sample(vec![f], SnapshotKind::Checkpoint);
    let mp = write_metadata(&s, &dir, &m).unwrap();
    // no temporary files are left next to _metadata
    let names: Vec<_> = s.list(&dir).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["_metadata", "op"]);
    assert_eq!(read_metadata(&s, &dir).unwrap(), m);
    assert_eq!(read_metadata(&s, &mp).unwrap(), m);
    verify_files(&s, &dir, &m).unwrap();

    // not a snapshot / missing
    let e = read_metadata(&s, &dir.join("op")).unwrap_err();
    assert!(matches!(e, SnapshotError::NotASnapshot { .. }), "{e}");
    let e = read_metadata(&s, &dir.join("op/a.state")).unwrap_err();
    assert!(matches!(e, SnapshotError::NotASnapshot { .. }), "{e}");
    let e = read_metadata(&s, &tmp.path().join("nope")).unwrap_err();
    assert!(matches!(e, SnapshotError::MissingFile { .. }), "{e}");

    // corrupt data file: same size, different byte
    let data = dir.join("op/a.state");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let e = verify_files(&s, &dir, &m).unwrap_err();
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("a.state"));
    // truncated
    std::fs::write(&data, &bytes[..10]).unwrap();
    let e = verify_files(&s, &dir, &m).unwrap_err();
    assert!(matches!(e, SnapshotError::SizeMismatch { expected, actual: 10, .. } if expected > 10));
    // missing
    std::fs::remove_file(&data).unwrap();
    let e = verify_files(&s, &dir, &m).unwrap_err();
    assert!(matches!(e, SnapshotError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("a.state"));
}
