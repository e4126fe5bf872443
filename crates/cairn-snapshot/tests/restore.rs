//! Loading snapshots for restore: savepoints (relocatable), checkpoints with
//! shared files, `_metadata` paths, and discovery of the latest checkpoint.

mod common;

use cairn_snapshot::commit::{complete_checkpoint, CommitReport, PendingCheckpoint};
use cairn_snapshot::layout::{find_latest_checkpoint, savepoint_dir_name, CheckpointLayout, IdGenerator};
use cairn_snapshot::metadata::{SavepointFormat, SnapshotKind};
use cairn_snapshot::storage::LocalFileStorage;
use cairn_snapshot::{load_snapshot, CompletedCheckpointStore, SnapshotError};
use common::*;

fn take_savepoint(storage: &LocalFileStorage, parent: &std::path::Path) -> std::path::PathBuf {
    let name = savepoint_dir_name(&job_id(), &mut IdGenerator::from_entropy());
    let dir = parent.join(name);
    let kind = SnapshotKind::Savepoint {
        format: SavepointFormat::Canonical,
    };
    let mut p = PendingCheckpoint::new(spec(860, kind)).unwrap();
    for (op, sub) in [(OP_A, 0u32), (OP_A, 1), (OP_B, 0)] {
        let rel = format!("{}/{sub}.state", &op[..6]);
        let f = write_state(storage, &dir, &rel, &rel, b"sp", &[sub, sub + 2]).unwrap();
        p.acknowledge(op, sub, vec![f]).unwrap();
    }
    let r = complete_checkpoint(storage, &dir, p.finalize(9).unwrap(), None, &mut |_| Ok(()));
    assert!(matches!(r, CommitReport::Completed { .. }), "{r:?}");
    dir
}

#[test]
fn savepoint_is_relocatable() {
    let tmp = TempDir::new("restore-sp");
    let s = LocalFileStorage::new();
    let dir = take_savepoint(&s, &tmp.path().join("savepoints"));
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("savepoint-012345-"));
    let a = load_snapshot(&s, &dir).unwrap();
    // move it elsewhere and load from there, by dir and by _metadata path
    let moved = tmp.path().join("elsewhere/copied-savepoint");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&dir, &moved).unwrap();
    assert!(load_snapshot(&s, &dir).is_err());
    let b = load_snapshot(&s, &moved).unwrap();
    let c = load_snapshot(&s, &moved.join("_metadata")).unwrap();
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(b.dir, moved);
    assert_eq!(c.dir, moved);
    // state is readable by key group via the section index
    let op = b.metadata.operator(OP_A).unwrap();
    let file = &op.subtasks[1].files[0];
    let sec = file.sections.iter().find(|s| s.key_group == Some(3)).unwrap();
    let mut want = b"sp".to_vec();
    want.extend_from_slice(&3u32.to_le_bytes());
    assert_eq!(b.read_section(&s, file, sec).unwrap(), want);
    // a corrupted file is found and named
    let victim = b.resolve(file).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 30;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let e = load_snapshot(&s, &moved).unwrap_err();
    assert!(matches!(e, SnapshotError::ChecksumMismatch { .. }));
    assert!(e.to_string().contains("1.state"), "{e}");
}

#[test]
fn checkpoints_with_shared_files_and_latest_discovery() {
    let tmp = TempDir::new("restore-chk");
    let s = LocalFileStorage::new();
    let layout = CheckpointLayout::new(tmp.path(), job_id());
    layout.create_dirs(&s).unwrap();
    let job = layout.job_dir();
    let mut store = CompletedCheckpointStore::new(2).unwrap();
    let shared = write_state(&s, &job, "shared/base.sst", "../shared/base.sst", b"base", &[0]).unwrap();
    for n in 1..=2u64 {
        let mut p = PendingCheckpoint::new(spec(n, SnapshotKind::Checkpoint)).unwrap();
        for (op, sub) in [(OP_A, 0u32), (OP_A, 1), (OP_B, 0)] {
            let rel = format!("{}-{sub}.state", &op[..4]);
            let mut files = vec![write_state(&s, &layout.checkpoint_dir(n), &rel, &rel, b"c", &[sub]).unwrap()];
            if sub == 0 && op == OP_A {
                files.push(shared.clone());
            }
            p.acknowledge(op, sub, files).unwrap();
        }
        let r = complete_checkpoint(&s, &job, p.finalize(n).unwrap(), Some(&mut store), &mut |_| Ok(()));
        assert!(matches!(r, CommitReport::Completed { .. }));
    }
    // an incomplete attempt (files, no _metadata) and a stray directory
    write_state(&s, &layout.checkpoint_dir(3), "x.state", "x.state", b"", &[]).unwrap();
    std::fs::create_dir_all(job.join("chk-abc")).unwrap();

    let scan = find_latest_checkpoint(&s, &job).unwrap();
    let latest = scan.latest.unwrap();
    assert_eq!(latest.checkpoint_id, 2);
    assert_eq!(scan.completed, vec![1, 2]);
    assert_eq!(scan.ignored.len(), 1);
    assert!(scan.ignored[0].dir.ends_with("chk-3"));

    let loaded = load_snapshot(&s, &latest.dir).unwrap();
    assert_eq!(loaded.metadata.checkpoint_id, 2);
    let e = load_snapshot(&s, &layout.checkpoint_dir(3)).unwrap_err();
    assert!(matches!(e, SnapshotError::NotASnapshot { .. }), "{e}");
    assert!(e.to_string().contains("chk-3"));

    // A corrupt _metadata makes the checkpoint not count, and is reported.
    let mp = layout.checkpoint_dir(2).join("_metadata");
    let mut bytes = std::fs::read(&mp).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&mp, bytes).unwrap();
    let scan = find_latest_checkpoint(&s, &job).unwrap();
    assert_eq!(scan.latest.unwrap().checkpoint_id, 1);
    assert_eq!(scan.ignored.len(), 2);
    // Missing job dir: empty scan, not an error.
    let empty = find_latest_checkpoint(&s, &tmp.path().join("nope")).unwrap();
    assert!(empty.latest.is_none());
}
