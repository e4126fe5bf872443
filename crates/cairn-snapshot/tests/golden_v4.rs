//! Golden fixture for `_metadata` format version 4 (invariant 5): a retained
//! unaligned checkpoint whose operator `echo` references a channel-state
//! file. The fixture is written (with `CAIRN_REGEN_GOLDEN=1`) and its
//! channel state decoded and restored by
//! `crates/cairn/tests/golden_v4_channel_state.rs`, where the record codec
//! lives; here the snapshot layer reads and verifies it.

use std::path::{Path, PathBuf};

use cairn_snapshot::metadata::SnapshotKind;
use cairn_snapshot::storage::LocalFileStorage;
use cairn_snapshot::{load_snapshot, FileFormat};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v4/job/chk-3")
}

#[test]
fn golden_v4_loads_with_its_channel_state_file_verified() {
    let storage = LocalFileStorage::new();
    let snap = load_snapshot(&storage, &golden_dir()).expect("golden v4 fixture must load");
    let m = &snap.metadata;
    assert_eq!(
        (m.format_version, m.kind, m.checkpoint_id),
        (4, SnapshotKind::Checkpoint, 3)
    );
    assert!(m.has_channel_state());
    assert_eq!(m.version_needed(), 4);
    let (op, _, file) = m
        .files()
        .find(|(_, _, f)| f.format == FileFormat::ChannelStateV1)
        .expect("a channel-state file");
    assert_eq!(op.uid, "echo");
    cairn_snapshot::verify_files(&storage, &snap.dir, m).unwrap();
    let reader = snap.open_state_file(&storage, file).unwrap();
    assert!(reader.section("channels", None).is_some());
    assert!(reader.section("channel/0", None).is_some());
}

/// A damaged byte of the channel-state file is found by its checksum and
/// named, never replayed.
#[test]
fn a_flipped_byte_of_the_golden_channel_state_is_named() {
    let dir = std::env::temp_dir().join(format!("cairn-golden-v4-flip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let storage = LocalFileStorage::new();
    let snap = load_snapshot(&storage, &dir).unwrap();
    let (_, _, file) = snap
        .metadata
        .files()
        .find(|(_, _, f)| f.format == FileFormat::ChannelStateV1)
        .unwrap();
    let path = dir.join(&file.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let e = load_snapshot(&storage, &dir).expect_err("a damaged channel-state file must not load");
    let msg = e.to_string();
    assert!(msg.contains(&file.path) && msg.contains("CRC"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// As for v1 and v2: every single-bit flip in the v4 fixture's header line
/// reads as corruption (integrity before interpretation), never as another
/// version, so a damaged unaligned checkpoint is never read as an older
/// format without its channel state.
#[test]
fn golden_v4_metadata_header_flips_read_as_corruption_not_as_another_version() {
    use cairn_snapshot::metadata::decode_metadata;
    use cairn_snapshot::SnapshotError;
    let path = golden_dir().join("_metadata");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(&bytes[..header_len], b"CAIRN-METADATA 4\n");
    for i in 0..header_len {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let e = decode_metadata(&path, &b).expect_err("a flipped header byte must be noticed");
            assert!(
                matches!(e, SnapshotError::ChecksumMismatch { .. }),
                "byte {i} bit {bit}: {e}"
            );
        }
    }
}
