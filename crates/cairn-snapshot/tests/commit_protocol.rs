//! The commit protocol: pure state-machine tests and exhaustive fault
//! injection through the I/O driver.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use cairn_snapshot::commit::{
    complete_checkpoint, discard_attempt, AbortReason, AckStatus, CommitReport, CommitStep, PendingCheckpoint,
    StepFailure,
};
use cairn_snapshot::layout::{checkpoint_dir_name, find_latest_checkpoint, CHECKPOINT_DIR_PREFIX};
use cairn_snapshot::metadata::{read_metadata, verify_files, SavepointFormat, SnapshotKind};
use cairn_snapshot::retention::{AddOutcome, CleanupPlan};
use cairn_snapshot::storage::{FaultInjectingStorage, FaultTiming, LocalFileStorage, OpKind, Storage};
use cairn_snapshot::{CompletedCheckpointStore, SnapshotError, StateFileRef};
use common::*;

fn fake_ref(path: &str) -> StateFileRef {
    StateFileRef {
        path: path.into(),
        size: 10,
        crc32: 0,
        sections: vec![],
        format: Default::default(),
    }
}

fn fully_acked(n: u64, kind: SnapshotKind) -> PendingCheckpoint {
    let mut p = PendingCheckpoint::new(spec(n, kind)).unwrap();
    let second = if kind.is_savepoint() {
        "s.sst"
    } else {
        "../shared/s.sst"
    };
    assert_eq!(
        p.acknowledge(OP_A, 0, vec![fake_ref("a0.state"), fake_ref(second)])
            .unwrap(),
        AckStatus::Pending { remaining: 2 }
    );
    assert_eq!(
        p.acknowledge(OP_A, 1, vec![]).unwrap(),
        AckStatus::Pending { remaining: 1 }
    );
    assert_eq!(
        p.acknowledge(OP_B, 0, vec![fake_ref("b0.state")]).unwrap(),
        AckStatus::AllAcknowledged
    );
    p
}

// ---------------------------------------------------------------------------
// Pure logic
// ---------------------------------------------------------------------------

#[test]
fn acks_are_validated() {
    let mut p = PendingCheckpoint::new(spec(3, SnapshotKind::Checkpoint)).unwrap();
    assert_eq!(p.missing_acks().len(), 3);
    p.acknowledge(OP_A, 0, vec![]).unwrap();
    // duplicate
    assert!(matches!(
        p.acknowledge(OP_A, 0, vec![]),
        Err(SnapshotError::Protocol { .. })
    ));
    // unknown operator / subtask
    assert!(p.acknowledge("cccccccccccccccccccccccccccccccc", 0, vec![]).is_err());
    assert!(p.acknowledge(OP_B, 1, vec![]).is_err());
    // path escaping the job dir / absolute
    assert!(p.acknowledge(OP_B, 0, vec![fake_ref("../../x")]).is_err());
    assert!(p.acknowledge(OP_B, 0, vec![fake_ref("/etc/passwd")]).is_err());
    // rejected acks changed nothing
    assert_eq!(p.missing_acks().len(), 2);
    // not finalizable yet
    assert!(p.clone().finalize(5).is_err());
}

#[test]
fn savepoint_acks_must_stay_inside() {
    let kind = SnapshotKind::Savepoint {
        format: SavepointFormat::Canonical,
    };
    let mut p = PendingCheckpoint::new(spec(3, kind)).unwrap();
    assert!(p.acknowledge(OP_A, 0, vec![fake_ref("../shared/x.sst")]).is_err());
    p.acknowledge(OP_A, 0, vec![fake_ref("a/x.state")]).unwrap();
}

#[test]
fn decline_and_expire_yield_discard_plans() {
    let mut p = PendingCheckpoint::new(spec(4, SnapshotKind::Checkpoint)).unwrap();
    p.acknowledge(OP_A, 0, vec![fake_ref("a0.state"), fake_ref("../shared/s.sst")])
        .unwrap();
    let aborted = p.decline("disk full").unwrap();
    assert_eq!(aborted.reason, AbortReason::Declined("disk full".into()));
    assert_eq!(aborted.cleanup.metadata_files, vec!["chk-4/_metadata"]);
    assert_eq!(aborted.cleanup.files, vec!["chk-4/a0.state", "shared/s.sst"]);
    assert_eq!(aborted.cleanup.dirs_recursive, vec!["chk-4"]);
    // once aborted, nothing else is accepted
    assert!(p.acknowledge(OP_A, 1, vec![]).is_err());
    assert!(p.expire().is_err());
    assert!(p.clone().finalize(1).is_err());

    let mut q = PendingCheckpoint::new(spec(5, SnapshotKind::Checkpoint)).unwrap();
    assert_eq!(q.expire().unwrap().reason, AbortReason::Expired);
}

#[test]
fn discard_keeps_files_of_retained_checkpoints() {
    // Checkpoint 1 is retained and uses shared/s.sst; attempt 2 reused it and failed.
    let mut store = CompletedCheckpointStore::new(1).unwrap();
    let c1 = fully_acked(1, SnapshotKind::Checkpoint).finalize(10).unwrap();
    store
        .add(cairn_snapshot::retention::CompletedCheckpoint::new(c1.metadata().clone()).unwrap())
        .unwrap();
    let mut p = PendingCheckpoint::new(spec(2, SnapshotKind::Checkpoint)).unwrap();
    p.acknowledge(OP_A, 0, vec![fake_ref("a0.state"), fake_ref("../shared/s.sst")])
        .unwrap();
    let aborted = p.expire().unwrap();
    let plan = aborted.discard_plan(Some(&store));
    assert_eq!(plan.files, vec!["chk-2/a0.state"]);
}

/// Walks the completion state machine, failing at every possible step, for
/// checkpoints and savepoints.
#[test]
fn failure_at_every_step_pure() {
    let kinds = [
        SnapshotKind::Checkpoint,
        SnapshotKind::Savepoint {
            format: SavepointFormat::Native,
        },
    ];
    for kind in kinds {
        for fail_at in CommitStep::ALL {
            let mut c = fully_acked(7, kind).finalize(99).unwrap();
            assert_eq!(c.metadata().operators[0].subtasks.len(), 2);
            let mut visited = Vec::new();
            let mut steps_left = 4 * CommitStep::ALL.len();
            let failure = loop {
                steps_left -= 1;
                assert!(steps_left > 0, "the commit protocol does not reach Done: {visited:?}");
                let step = c.next_step();
                if step == CommitStep::Done {
                    break None;
                }
                visited.push(step);
                if step == fail_at {
                    break Some(c.clone().step_failed("boom"));
                }
                if step == CommitStep::Register {
                    c.registered(AddOutcome {
                        subsumed: vec![6],
                        cleanup: CleanupPlan::default(),
                    })
                    .unwrap();
                } else {
                    c.step_done(step).unwrap();
                }
            };
            if kind.is_savepoint() {
                assert!(!visited.contains(&CommitStep::Register));
                assert!(!visited.contains(&CommitStep::Cleanup));
            }
            match failure {
                None => {
                    // the failing step is skipped for this kind
                    assert!(kind.is_savepoint());
                    assert!(matches!(fail_at, CommitStep::Register | CommitStep::Cleanup));
                }
                Some(StepFailure::Aborted(a)) => {
                    assert!(fail_at < CommitStep::Notify, "{fail_at:?}");
                    let meta = if kind.is_savepoint() {
                        "_metadata"
                    } else {
                        "chk-7/_metadata"
                    };
                    assert_eq!(a.cleanup.metadata_files, vec![meta]);
                    assert!(!a.cleanup.files.is_empty());
                    assert!(matches!(a.reason, AbortReason::CommitFailed { step, .. } if step == fail_at));
                }
                Some(StepFailure::CompletedWithError { step, .. }) => {
                    assert!(fail_at >= CommitStep::Notify);
                    assert_eq!(step, fail_at);
                }
            }
        }
    }
}

#[test]
fn steps_must_be_reported_in_order() {
    let mut c = fully_acked(7, SnapshotKind::Checkpoint).finalize(99).unwrap();
    assert!(c.step_done(CommitStep::WriteMetadata).is_err());
    assert!(c.step_done(CommitStep::Register).is_err());
    c.step_done(CommitStep::VerifyFiles).unwrap();
    assert!(!c.is_complete());
    c.step_done(CommitStep::WriteMetadata).unwrap();
    assert!(c.step_done(CommitStep::Register).is_err(), "needs `registered`");
    c.registered(AddOutcome {
        subsumed: vec![],
        cleanup: CleanupPlan::default(),
    })
    .unwrap();
    assert!(c.is_complete());
}

// ---------------------------------------------------------------------------
// I/O driver with fault injection
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RunLog {
    completed: Vec<u64>,
    discarded: Vec<u64>,
    /// Some cleanup (of a subsumed checkpoint or a discarded attempt) did not finish.
    cleanup_incomplete: bool,
}

/// Runs checkpoints 1..=4 with num_retained = 2. Subtask A/0 reuses a shared
/// file while a retained checkpoint references it. Tasks write through the
/// same (possibly faulty) storage; a failing task write declines the checkpoint.
fn scenario(storage: &dyn Storage, job_dir: &Path, store: &mut CompletedCheckpointStore) -> RunLog {
    let mut log = RunLog::default();
    let mut shared: Option<StateFileRef> = None;
    for n in 1..=4u64 {
        let mut pending = PendingCheckpoint::new(spec(n, SnapshotKind::Checkpoint)).unwrap();
        let chk = checkpoint_dir_name(n);
        let mut declined = None;
        'tasks: for (op, sub) in [(OP_A, 0u32), (OP_A, 1), (OP_B, 0)] {
            let mut files = Vec::new();
            let rel = format!("{chk}/{}-{sub}.state", &op[..4]);
            match write_state(
                storage,
                job_dir,
                &rel,
                &format!("{}-{sub}.state", &op[..4]),
                b"v",
                &[sub],
            ) {
                Ok(f) => files.push(f),
                Err(e) => {
                    declined = Some(e);
                    break 'tasks;
                }
            }
            if op == OP_A && sub == 0 {
                let reusable = shared
                    .as_ref()
                    .filter(|s| store.is_referenced(&format!("shared/{}", &s.path["../shared/".len()..])));
                match reusable {
                    Some(s) => files.push(s.clone()),
                    None => {
                        let name = format!("s{n}.sst");
                        match write_state(
                            storage,
                            job_dir,
                            &format!("shared/{name}"),
                            &format!("../shared/{name}"),
                            b"shared",
                            &[0, 1],
                        ) {
                            Ok(f) => {
                                shared = Some(f.clone());
                                files.push(f);
                            }
                            Err(e) => {
                                // A task cleans up its own partial upload (best effort);
                                // the exclusive file already written belongs to this attempt.
                                let _ = storage.delete_file(&job_dir.join("shared").join(&name));
                                pending.acknowledge(op, sub, files).unwrap();
                                declined = Some(e);
                                break 'tasks;
                            }
                        }
                    }
                }
            }
            pending.acknowledge(op, sub, files).unwrap();
        }
        if let Some(e) = declined {
            let aborted = pending.decline(e.to_string()).unwrap();
            let r = discard_attempt(storage, job_dir, &aborted, Some(store));
            log.cleanup_incomplete |= !r.is_complete();
            log.discarded.push(n);
            continue;
        }
        let completing = pending.finalize(2_000 + n).unwrap();
        let mut notified = Vec::new();
        let report = complete_checkpoint(storage, job_dir, completing, Some(store), &mut |id| {
            notified.push(id);
            Ok(())
        });
        match report {
            CommitReport::Completed {
                checkpoint_id, cleanup, ..
            } => {
                assert_eq!(notified, vec![checkpoint_id]);
                log.cleanup_incomplete |= cleanup.is_some_and(|c| !c.is_complete());
                log.completed.push(checkpoint_id);
            }
            CommitReport::Discarded { aborted, discard, .. } => {
                assert!(notified.is_empty(), "tasks notified of a discarded checkpoint");
                log.cleanup_incomplete |= !discard.is_complete();
                log.discarded.push(aborted.checkpoint_id);
            }
        }
    }
    log
}

/// The invariants that must hold whatever failed.
fn check_invariants(job_dir: &Path, store: &CompletedCheckpointStore, log: &RunLog, context: &str) {
    let local = LocalFileStorage::new();
    // 1. Every chk dir with a _metadata is complete and references only existing, intact files.
    for e in std::fs::read_dir(job_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(CHECKPOINT_DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        if dir.join("_metadata").exists() {
            let meta =
                read_metadata(&local, &dir).unwrap_or_else(|e| panic!("{context}: unreadable {name}/_metadata: {e}"));
            verify_files(&local, &dir, &meta).unwrap_or_else(|e| panic!("{context}: {name} looks complete but: {e}"));
        }
    }
    // 2. Retained checkpoints are on disk and intact.
    for cp in store.retained() {
        let dir = job_dir.join(&cp.dir_in_job);
        let meta = read_metadata(&local, &dir)
            .unwrap_or_else(|e| panic!("{context}: retained {} unreadable: {e}", cp.dir_in_job));
        assert_eq!(meta, cp.metadata, "{context}");
        verify_files(&local, &dir, &meta).unwrap_or_else(|e| panic!("{context}: {e}"));
    }
    // 3. Discarded attempts leave no trace (unless their own cleanup failed).
    if !log.cleanup_incomplete {
        for n in &log.discarded {
            assert!(
                !job_dir.join(checkpoint_dir_name(*n)).exists(),
                "{context}: discarded chk-{n} left behind"
            );
        }
        // 4. Nothing unreferenced is left: disk == retained metadata + referenced files.
        let mut expected: BTreeSet<String> = store.referenced_files().map(String::from).collect();
        for cp in store.retained() {
            expected.insert(cp.metadata_file());
        }
        let actual: BTreeSet<String> = list_files(job_dir).into_iter().collect();
        assert_eq!(actual, expected, "{context}: orphaned or missing files");
    }
    // 5. Recovery sees exactly the latest retained checkpoint.
    let scan = find_latest_checkpoint(&local, job_dir).unwrap();
    assert_eq!(
        scan.latest.map(|l| l.checkpoint_id),
        store.latest().map(|c| c.checkpoint_id()),
        "{context}"
    );
}

#[test]
fn scenario_without_faults() {
    let tmp = TempDir::new("commit-ok");
    let storage = LocalFileStorage::new();
    let mut store = CompletedCheckpointStore::new(2).unwrap();
    let log = scenario(&storage, tmp.path(), &mut store);
    assert_eq!(log.completed, vec![1, 2, 3, 4]);
    assert!(!log.cleanup_incomplete);
    assert_eq!(
        store.retained().map(|c| c.checkpoint_id()).collect::<Vec<_>>(),
        vec![3, 4]
    );
    check_invariants(tmp.path(), &store, &log, "no faults");
}

/// Fails every single storage operation of the scenario in turn (both before
/// and after the operation takes effect) and checks the invariants each time.
#[test]
fn every_single_fault_keeps_invariants() {
    // Dry run to learn the sequence of operations.
    let ops = {
        let tmp = TempDir::new("commit-dry");
        let storage = FaultInjectingStorage::new(LocalFileStorage::new());
        let mut store = CompletedCheckpointStore::new(2).unwrap();
        scenario(&storage, tmp.path(), &mut store);
        storage.log()
    };
    assert!(ops.len() > 40, "scenario too small: {} ops", ops.len());
    let mut kinds_seen = BTreeSet::new();
    let mut runs = 0;
    for i in 0..ops.len() {
        let kind = ops[i].0;
        let nth = ops[..=i].iter().filter(|(k, _)| *k == kind).count() as u64;
        kinds_seen.insert(kind);
        for timing in [FaultTiming::Before, FaultTiming::After] {
            let tmp = TempDir::new("commit-fault");
            let storage = FaultInjectingStorage::new(LocalFileStorage::new());
            storage.fail_nth(kind, nth, timing);
            let mut store = CompletedCheckpointStore::new(2).unwrap();
            let log = scenario(&storage, tmp.path(), &mut store);
            let context = format!("fault {timing:?} {kind:?} #{nth} ({})", ops[i].1.display());
            check_invariants(tmp.path(), &store, &log, &context);
            // The fault must be visible unless it hit only an idempotent cleanup step.
            assert!(
                log.completed.len() < 4
                    || log.cleanup_incomplete
                    || !log.discarded.is_empty()
                    || matches!(
                        kind,
                        OpKind::List | OpKind::DeleteDirAll | OpKind::DeleteFile | OpKind::Exists
                    )
                    || timing == FaultTiming::After,
                "{context}: fault went unnoticed"
            );
            runs += 1;
        }
    }
    for k in [
        OpKind::Create,
        OpKind::Finish,
        OpKind::Size,
        OpKind::PutIfAbsent,
        OpKind::DeleteFile,
    ] {
        assert!(kinds_seen.contains(&k), "scenario never exercised {k:?}");
    }
    assert!(runs >= 80);
}

#[test]
fn metadata_write_that_lands_but_reports_failure_is_rolled_back() {
    // The rename happens but the directory fsync "fails": _metadata exists on
    // disk while the coordinator sees an error. It must be removed again.
    let tmp = TempDir::new("commit-after");
    let storage = FaultInjectingStorage::new(LocalFileStorage::new());
    storage.fail_nth(OpKind::PutIfAbsent, 1, FaultTiming::After);
    let mut store = CompletedCheckpointStore::new(1).unwrap();
    let log = scenario(&storage, tmp.path(), &mut store);
    assert_eq!(log.discarded, vec![1]);
    assert_eq!(log.completed, vec![2, 3, 4]);
    assert!(!tmp.path().join("chk-1").exists());
    check_invariants(tmp.path(), &store, &log, "after-rename fault");
}

#[test]
fn savepoint_commit_and_failed_savepoint_cleanup() {
    let tmp = TempDir::new("savepoint-commit");
    let storage = FaultInjectingStorage::new(LocalFileStorage::new());
    let kind = SnapshotKind::Savepoint {
        format: SavepointFormat::Canonical,
    };
    for fail in [false, true] {
        let dir = tmp.path().join(if fail { "sp-fail" } else { "sp-ok" });
        let mut p = PendingCheckpoint::new(spec(9, kind)).unwrap();
        for (op, sub) in [(OP_A, 0u32), (OP_A, 1), (OP_B, 0)] {
            let rel = format!("{}-{sub}.state", &op[..4]);
            let f = write_state(&storage, &dir, &rel, &rel, b"x", &[sub]).unwrap();
            p.acknowledge(op, sub, vec![f]).unwrap();
        }
        if fail {
            storage.fail_nth(OpKind::PutIfAbsent, 1, FaultTiming::Before);
        }
        let report = complete_checkpoint(&storage, &dir, p.finalize(5).unwrap(), None, &mut |_| Ok(()));
        match report {
            CommitReport::Completed { subsumed, .. } => {
                assert!(!fail);
                assert!(subsumed.is_empty());
                let meta = read_metadata(&storage, &dir).unwrap();
                assert!(meta.kind.is_savepoint());
            }
            CommitReport::Discarded { discard, .. } => {
                assert!(fail);
                assert!(discard.is_complete());
                assert!(!dir.exists(), "failed savepoint directory left behind");
            }
        }
    }
}
