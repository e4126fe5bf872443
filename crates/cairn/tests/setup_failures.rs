//! A job whose setup fails says so at once: `execute_async` (and so
//! `execute`) returns the setup error instead of a handle to a job stuck in
//! INITIALIZING. Triggers: checkpointing interval without a directory, a
//! checkpoint directory that is a file, one that cannot be created.

use std::path::PathBuf;

use cairn::prelude::*;
use cairn::runtime::JobError;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-setup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small job that would run until stopped.
fn job(conf: &[(&str, &str)]) -> StreamEnv {
    let env = StreamEnv::new();
    for (k, v) in conf {
        env.set_config(k, v).unwrap();
    }
    env.source(GeneratorSource::new(u64::MAX, 10).rate(100))
        .uid("gen")
        .sink(DiscardSink)
        .uid("sink");
    env
}

/// The setup error `execute_async` returned.
fn start_error(env: &StreamEnv) -> String {
    match env.execute_async("setup failure") {
        Ok(handle) => {
            let status = handle.client().info().status;
            let _ = handle.client().cancel();
            panic!("the job started ({status:?}) although its setup is bad");
        }
        Err(CairnError::Job(e @ JobError::Setup(_))) => e.to_string(),
        Err(other) => panic!("expected a setup error, got {other:?}"),
    }
}

#[test]
fn interval_without_directory_fails_the_start() {
    let msg = start_error(&job(&[("execution.checkpointing.interval", "1 s")]));
    assert!(msg.contains("execution.checkpointing.interval"), "{msg}");
    assert!(msg.contains("execution.checkpointing.dir"), "{msg}");
}

#[test]
fn a_checkpoint_directory_that_is_a_file_fails_the_start_naming_it() {
    let dir = temp_dir("file");
    let file = dir.join("chk");
    std::fs::write(&file, b"not a directory").unwrap();
    let f = file.display().to_string();
    let msg = start_error(&job(&[
        ("execution.checkpointing.interval", "1 s"),
        ("execution.checkpointing.dir", &f),
    ]));
    assert!(
        msg.contains(&f) && msg.contains("cannot create the checkpoint directory"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_directory_under_a_file_fails_the_start_naming_it() {
    let dir = temp_dir("under-file");
    std::fs::write(dir.join("plain"), b"x").unwrap();
    let below = dir.join("plain/below/chk").display().to_string();
    let msg = start_error(&job(&[
        ("execution.checkpointing.interval", "1 s"),
        ("execution.checkpointing.dir", &below),
    ]));
    assert!(msg.contains(&below), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_job_without_setup_problems_still_starts_and_runs() {
    let dir = temp_dir("fine");
    let d = dir.display().to_string();
    let env = job(&[
        ("execution.checkpointing.interval", "1 h"),
        ("execution.checkpointing.dir", &d),
    ]);
    let handle = env.execute_async("fine").expect("starts");
    assert_eq!(
        handle.client().info().status,
        cairn::coordinator::control::JobStatus::Running
    );
    handle.client().cancel().unwrap();
    assert!(matches!(handle.wait(), Err(CairnError::Job(JobError::Cancelled))));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restore failure keeps its typed cause: the `SnapshotError` is the
/// error's source, with its own stable code, and the job's code says what
/// failed.
#[test]
fn a_restore_failure_carries_its_snapshot_error() {
    let dir = temp_dir("restore");
    let sp = dir.join("savepoint-000000-000000000000");
    std::fs::create_dir_all(&sp).unwrap();
    std::fs::write(sp.join("_metadata"), b"CAIRN-METADATA 1\n{}\nCRC32 00000000\n").unwrap();
    for (path, snapshot_code) in [
        (sp.clone(), "SNAPSHOT_CORRUPT"),
        (dir.join("gone"), "SNAPSHOT_FILE_MISSING"),
    ] {
        let startup = cairn::config::StartupOptions {
            restore_path: Some(path.clone()),
            ..Default::default()
        };
        let env = StreamEnv::with_startup(startup);
        env.source(GeneratorSource::new(10, 2))
            .uid("gen")
            .sink(DiscardSink)
            .uid("sink");
        let err = env.execute_async("restore").err().expect("the restore fails");
        assert_eq!(err.code(), "RESTORE_FAILED", "{err}");
        assert!(err.is_user_error(), "{err}");
        let CairnError::Job(job) = &err else { panic!("{err:?}") };
        let snapshot = job
            .snapshot_error()
            .unwrap_or_else(|| panic!("no SnapshotError in the chain: {err:?}"));
        assert_eq!(snapshot.code(), snapshot_code, "{snapshot}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
