//! A real full disk under the checkpoint directory: a tiny tmpfs, filled up,
//! mounted in a private mount namespace (`unshare --user --map-root-user
//! --mount`, no root needed). The test re-runs itself in there.
//!
//! What must hold: a job that cannot even set up its checkpoint directory
//! fails at once, labelled storage full (code `STORAGE_FULL`). With a little
//! room (the job's fence fits, its state does not), checkpoints fail for lack
//! of space and, as in Flink, each attempt tolerates
//! `tolerable-failed-checkpoints` of them before it fails over (the count
//! starts over with every attempt), the restart strategy bounds the
//! restarts, and the job fails labelled as what it is: storage full, naming
//! the file that did not fit.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::coordinator::control::SnapshotStatus;
use cairn::prelude::*;
use cairn::runtime::JobError;

const CHILD_ENV: &str = "CAIRN_DISK_FULL_DIR";

/// Whether this machine lets an unprivileged process mount a tmpfs in a
/// namespace of its own.
fn namespaces_available() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn checkpoints_on_a_full_disk_fail_over_per_flink_and_name_the_storage() {
    if !namespaces_available() {
        eprintln!("skipped: no user namespaces on this machine (unshare -r -m); the storage-full paths are also tested through the Storage seam in cairn-snapshot");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cairn-disk-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    // Mount a 256 KiB tmpfs over `dir`, fill it (two 4 KiB pages as separate
    // files the test frees later), then run the real test.
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs '{d}' && head -c 4096 /dev/zero > '{d}/spare-0' && head -c 4096 /dev/zero > '{d}/spare-1' && (dd if=/dev/zero of='{d}/filler' bs=4k 2>/dev/null; true) && exec \"$@\""
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script, "sh"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "job_on_a_full_disk",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the job on a full disk misbehaved\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// Runs inside the namespace, started by the test above.
#[test]
#[ignore = "runs inside a private mount namespace, started by checkpoints_on_a_full_disk_fail_over_per_flink_and_name_the_storage"]
fn job_on_a_full_disk() {
    let dir = PathBuf::from(std::env::var_os(CHILD_ENV).expect("started by the namespace test"));
    assert!(
        std::fs::write(dir.join("probe"), [0u8; 8192]).is_err(),
        "the file system must be full"
    );
    let chk = dir.join("chk");

    // Completely full: the job cannot take its fence in the checkpoint
    // directory, and says so at once.
    let err = job(&chk)
        .execute_async("on a full disk")
        .err()
        .expect("the setup fails");
    let CairnError::Job(ref e @ JobError::Setup(_)) = err else {
        panic!("expected a setup error, got {err:?}");
    };
    assert_eq!(e.code(), "STORAGE_FULL", "{e}");
    assert!(!e.is_user_error(), "{e}");
    assert!(e.snapshot_error().is_some_and(|s| s.is_storage_full()), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("storage is full") && msg.contains(&chk.display().to_string()),
        "{msg}"
    );

    // Two free pages: the fence and a checkpoint's claim fit, its state does not.
    for spare in ["spare-0", "spare-1"] {
        std::fs::remove_file(dir.join(spare)).unwrap();
    }
    let handle = job(&chk)
        .execute_async("on a full disk")
        .expect("setup works: the fence fits");
    let client = handle.client();
    let err = handle.wait().expect_err("the job cannot checkpoint, so it fails");

    // Two restarts (fixed-delay attempts), then it fails for good.
    let info = client.info();
    assert_eq!(info.restarts, 2, "{info:?}");

    // Every attempt tolerated one failure and failed over on the second:
    // 3 attempts x 2 storage failures (the count restarts with every attempt).
    let history = client.checkpoints().history;
    let full = history
        .iter()
        .filter(|c| c.status == SnapshotStatus::Failed)
        .filter(|c| {
            c.failure_message
                .as_deref()
                .is_some_and(|m| m.contains("storage is full"))
        })
        .count();
    assert_eq!(full, 6, "{history:#?}");

    // Labelled as what it is, with the file that did not fit.
    let job_err = err_job(&err);
    let JobError::Checkpointing(e) = job_err else {
        panic!("expected a checkpointing failure, got {err:?}");
    };
    assert_eq!((e.consecutive, e.tolerable), (2, 1), "{err}");
    assert_eq!(job_err.code(), "STORAGE_FULL", "{err}");
    assert!(!job_err.is_user_error());
    assert_eq!(info.last_failure_code, Some("STORAGE_FULL"));
    let msg = err.to_string();
    assert!(msg.starts_with("checkpoint storage is full"), "{msg}");
    assert!(
        msg.contains(&chk.display().to_string()) && msg.contains("chk-"),
        "{msg}"
    );
    assert!(!msg.contains("internal error"), "{msg}");
    assert!(!msg.contains("<state file>"), "{msg}");
    assert_eq!(info.last_failure.as_deref(), Some(job_err.to_string().as_str()));
}

/// A keyed counting job checkpointing every 10 ms into `chk`, tolerating one
/// failed checkpoint, restarting twice.
fn job(chk: &Path) -> StreamEnv {
    let env = StreamEnv::new();
    for (k, v) in [
        ("execution.checkpointing.interval", "10 ms"),
        ("execution.checkpointing.dir", &chk.display().to_string()),
        ("execution.checkpointing.tolerable-failed-checkpoints", "1"),
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "2"),
        ("restart-strategy.fixed-delay.delay", "0 ms"),
    ] {
        env.set_config(k, v).unwrap();
    }
    env.source(GeneratorSource::new(u64::MAX, 1000).rate(20_000))
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(Count::default())
        .uid("count")
        .sink(DiscardSink)
        .uid("sink");
    env
}

fn err_job(e: &CairnError) -> &JobError {
    match e {
        CairnError::Job(j) => j,
        other => panic!("expected a job failure, got {other:?}"),
    }
}

/// Counts events per key (keyed state that has to be checkpointed).
#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, u64> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(&mut self, _e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, u64>) -> OpResult {
        let count = self.count.as_ref().ok_or("count state not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        Ok(())
    }
}
