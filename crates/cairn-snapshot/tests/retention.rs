//! Retention: reference counting, subsumption, cancellation policies and the
//! cleanup executor, with property-style random sequences.

mod common;

use std::collections::BTreeSet;

use cairn_snapshot::layout::IdGenerator;
use cairn_snapshot::metadata::{
    write_metadata, OperatorSnapshot, SavepointFormat, SnapshotKind, SnapshotMetadata, StateFileRef, SubtaskSnapshot,
    METADATA_VERSION,
};
use cairn_snapshot::retention::{execute_cleanup, CleanupPlan, CompletedCheckpoint};
use cairn_snapshot::storage::{FaultInjectingStorage, FaultTiming, LocalFileStorage, OpKind};
use cairn_snapshot::{CompletedCheckpointStore, ExternalizedRetention};
use common::*;

fn meta(n: u64, paths: &[String]) -> SnapshotMetadata {
    SnapshotMetadata {
        format_version: METADATA_VERSION,
        kind: SnapshotKind::Checkpoint,
        job_id: JOB.into(),
        checkpoint_id: n,
        trigger_timestamp_ms: n,
        completion_timestamp_ms: n + 1,
        cairn_version: "test".into(),
        operators: vec![OperatorSnapshot {
            operator_id: OP_A.into(),
            uid: "a".into(),
            name: "A".into(),
            parallelism: 1,
            max_parallelism: 8,
            subtasks: vec![SubtaskSnapshot {
                subtask_index: 0,
                files: paths
                    .iter()
                    .map(|p| StateFileRef {
                        path: p.clone(),
                        size: 0,
                        crc32: 0,
                        sections: vec![],
                        format: Default::default(),
                    })
                    .collect(),
            }],
        }],
    }
}

/// Applies a plan to a simulated set of files (as `execute_cleanup` would).
fn apply(disk: &mut BTreeSet<String>, plan: &CleanupPlan) {
    for f in plan.metadata_files.iter().chain(&plan.files) {
        disk.remove(f);
    }
}

#[test]
fn random_sequences_never_delete_referenced_files() {
    for seed in 0..200u64 {
        let mut rng = IdGenerator::with_seed(seed);
        let retained = 1 + (rng.next_u64() % 4) as usize;
        let mut store = CompletedCheckpointStore::new(retained).unwrap();
        let mut disk: BTreeSet<String> = BTreeSet::new();
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        let mut next_shared = 0u64;
        let steps = 5 + rng.next_u64() % 30;
        let mut n = 0;
        for _ in 0..steps {
            n += 1 + rng.next_u64() % 3; // ids increase, with gaps (failed attempts)
            let mut paths = Vec::new();
            for i in 0..rng.next_u64() % 3 {
                paths.push(format!("f{i}.state"));
            }
            // reuse shared files referenced by retained checkpoints
            let candidates: Vec<String> = store
                .referenced_files()
                .filter(|f| f.starts_with("shared/"))
                .map(String::from)
                .collect();
            for c in &candidates {
                if rng.next_u64() & 1 == 0 {
                    paths.push(format!("../{c}"));
                }
            }
            for _ in 0..rng.next_u64() % 3 {
                next_shared += 1;
                paths.push(format!("../shared/s{next_shared}.sst"));
            }
            if rng.next_u64() % 5 < 1 {
                paths.push(format!("../taskowned/t{n}"));
            }
            let cp = CompletedCheckpoint::new(meta(n, &paths)).unwrap();
            for f in &cp.files {
                assert!(!deleted.contains(f), "seed {seed}: a deleted file was reused");
                disk.insert(f.clone());
            }
            disk.insert(cp.metadata_file());
            let outcome = store.add(cp).unwrap();
            assert!(outcome.subsumed.len() <= 1);
            for f in &outcome.cleanup.files {
                assert!(!f.starts_with("taskowned/"), "seed {seed}: deleted task-owned {f}");
            }
            apply(&mut disk, &outcome.cleanup);
            deleted.extend(outcome.cleanup.files.iter().cloned());
            // Invariant 2: every file of every retained checkpoint still exists.
            for cp in store.retained() {
                assert!(disk.contains(&cp.metadata_file()));
                for f in &cp.files {
                    assert!(
                        disk.contains(f),
                        "seed {seed}: retained chk-{} lost {f}",
                        cp.checkpoint_id()
                    );
                }
            }
            // Nothing unreferenced survives (task-owned files aside).
            let expected: BTreeSet<String> = store
                .referenced_files()
                .map(String::from)
                .chain(store.retained().map(|c| c.metadata_file()))
                .collect();
            let live: BTreeSet<String> = disk
                .iter()
                .filter(|f| !f.starts_with("taskowned/") || expected.contains(*f))
                .cloned()
                .collect();
            assert_eq!(live, expected, "seed {seed}");
            assert!(store.retained().count() <= retained);
        }
        let plan = store.discard_all();
        apply(&mut disk, &plan);
        assert!(
            disk.iter().all(|f| f.starts_with("taskowned/")),
            "seed {seed}: left {disk:?}"
        );
        assert_eq!(store.retained().count(), 0);
    }
}

#[test]
fn savepoints_are_refused_and_ids_must_increase() {
    let mut m = meta(3, &[]);
    m.kind = SnapshotKind::Savepoint {
        format: SavepointFormat::Canonical,
    };
    assert!(CompletedCheckpoint::new(m).is_err());
    let mut store = CompletedCheckpointStore::new(2).unwrap();
    store.add(CompletedCheckpoint::new(meta(5, &[])).unwrap()).unwrap();
    assert!(store.add(CompletedCheckpoint::new(meta(5, &[])).unwrap()).is_err());
    assert!(store.add(CompletedCheckpoint::new(meta(4, &[])).unwrap()).is_err());
    assert!(CompletedCheckpointStore::new(0).is_err());
}

#[test]
fn cancellation_policies() {
    assert_eq!(
        "retain_on_cancellation".parse::<ExternalizedRetention>().unwrap(),
        ExternalizedRetention::RetainOnCancellation
    );
    assert!("KEEP".parse::<ExternalizedRetention>().is_err());
    for policy in [
        ExternalizedRetention::RetainOnCancellation,
        ExternalizedRetention::DeleteOnCancellation,
        ExternalizedRetention::NoExternalizedCheckpoints,
    ] {
        assert_eq!(policy.to_string().parse::<ExternalizedRetention>().unwrap(), policy);
        let mut store = CompletedCheckpointStore::new(2).unwrap();
        store
            .add(CompletedCheckpoint::new(meta(1, &["a".into(), "../shared/x".into()])).unwrap())
            .unwrap();
        store
            .add(CompletedCheckpoint::new(meta(2, &["a".into(), "../shared/x".into()])).unwrap())
            .unwrap();
        let plan = store.on_cancel(policy);
        if policy == ExternalizedRetention::RetainOnCancellation {
            assert!(plan.is_empty());
            assert_eq!(store.retained().count(), 2);
        } else {
            assert_eq!(plan.metadata_files, vec!["chk-1/_metadata", "chk-2/_metadata"]);
            let files: BTreeSet<_> = plan.files.iter().cloned().collect();
            let want: BTreeSet<String> = ["chk-1/a", "chk-2/a", "shared/x"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(files, want);
            assert_eq!(store.retained().count(), 0);
        }
    }
}

/// Real files: subsumption deletes exactly the unreferenced ones and removes
/// the empty chk directory; DELETE_ON_CANCELLATION empties the job directory.
#[test]
fn executor_on_disk() {
    let tmp = TempDir::new("retention-disk");
    let job = tmp.path().join(JOB);
    let storage = LocalFileStorage::new();
    let mut store = CompletedCheckpointStore::new(1).unwrap();
    let mut shared = None;
    for n in 1..=3u64 {
        let dir = job.join(format!("chk-{n}"));
        let mut files = vec![write_state(&storage, &dir, "a.state", "a.state", b"x", &[0]).unwrap()];
        if n <= 2 {
            if shared.is_none() {
                shared = Some(write_state(&storage, &job, "shared/s.sst", "../shared/s.sst", b"s", &[1]).unwrap());
            }
            files.push(shared.clone().unwrap());
        }
        let mut m = meta(n, &[]);
        m.operators[0].subtasks[0].files = files;
        write_metadata(&storage, &dir, &m).unwrap();
        let outcome = store.add(CompletedCheckpoint::new(m).unwrap()).unwrap();
        let report = execute_cleanup(&storage, &job, &outcome.cleanup);
        assert!(report.is_complete(), "{:?}", report.failures);
        match n {
            1 => assert!(outcome.subsumed.is_empty()),
            2 => {
                assert_eq!(outcome.subsumed, vec![1]);
                assert!(job.join("shared/s.sst").exists(), "shared file still used by chk-2");
                assert!(!job.join("chk-1").exists());
            }
            _ => {
                assert_eq!(outcome.subsumed, vec![2]);
                assert!(!job.join("shared/s.sst").exists());
            }
        }
    }
    assert_eq!(list_files(&job), vec!["chk-3/_metadata", "chk-3/a.state"]);
    let plan = store.on_cancel(ExternalizedRetention::DeleteOnCancellation);
    let report = execute_cleanup(&storage, &job, &plan);
    assert!(report.is_complete());
    assert!(!job.exists(), "job dir should be gone: {:?}", list_files(&job));
}

/// A checkpoint whose files sit in subdirectories of its directory (a state
/// backend's private files, as RocksDB's `chk-<n>/op-…/MANIFEST-…`) leaves no
/// empty directory behind once subsumed.
#[test]
fn subsumed_checkpoints_with_private_subdirectories_leave_nothing() {
    let tmp = TempDir::new("retention-subdirs");
    let job = tmp.path().join(JOB);
    let storage = LocalFileStorage::new();
    let mut store = CompletedCheckpointStore::new(1).unwrap();
    for n in 1..=2u64 {
        let dir = job.join(format!("chk-{n}"));
        let files = vec![
            write_state(
                &storage,
                &dir,
                "op-a-0/MANIFEST-000005",
                "op-a-0/MANIFEST-000005",
                b"m",
                &[0],
            )
            .unwrap(),
            write_state(
                &storage,
                &dir,
                "op-a-0/deeper/CURRENT",
                "op-a-0/deeper/CURRENT",
                b"c",
                &[0],
            )
            .unwrap(),
            write_state(&storage, &dir, "op-a-0.state", "op-a-0.state", b"x", &[0]).unwrap(),
        ];
        let mut m = meta(n, &[]);
        m.operators[0].subtasks[0].files = files;
        write_metadata(&storage, &dir, &m).unwrap();
        let outcome = store.add(CompletedCheckpoint::new(m).unwrap()).unwrap();
        let report = execute_cleanup(&storage, &job, &outcome.cleanup);
        assert!(report.is_complete(), "{:?}", report.failures);
    }
    assert!(
        !job.join("chk-1").exists(),
        "chk-1 is gone entirely: {:?}",
        list_files(&job)
    );
    assert!(job.join("chk-2/op-a-0/deeper/CURRENT").exists());
}

/// If a `_metadata` deletion fails, no data file is deleted: a checkpoint that
/// still looks complete keeps all its files.
#[test]
fn failed_metadata_delete_stops_cleanup() {
    let tmp = TempDir::new("retention-fault");
    let job = tmp.path().to_path_buf();
    let local = LocalFileStorage::new();
    let dir = job.join("chk-1");
    let f = write_state(&local, &dir, "a.state", "a.state", b"x", &[0]).unwrap();
    let mut m = meta(1, &[]);
    m.operators[0].subtasks[0].files = vec![f];
    write_metadata(&local, &dir, &m).unwrap();
    let mut store = CompletedCheckpointStore::new(1).unwrap();
    store.add(CompletedCheckpoint::new(m).unwrap()).unwrap();
    let plan = store.discard_all();
    let faulty = FaultInjectingStorage::new(LocalFileStorage::new());
    faulty.fail_nth(OpKind::DeleteFile, 1, FaultTiming::Before);
    let report = execute_cleanup(&faulty, &job, &plan);
    assert!(!report.is_complete());
    assert!(dir.join("_metadata").exists() && dir.join("a.state").exists());
    // retry the remainder
    let report = execute_cleanup(&local, &job, &report.remaining);
    assert!(report.is_complete());
    assert!(list_files(&job).is_empty());
}
