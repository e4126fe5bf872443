//! The state commands through the `cairn` binary against a real job
//! process: `cairn state get` reads a running job's live counts (and
//! refuses what it cannot answer with the right exit code), then the
//! offline tools work on the savepoint `cairn stop` wrote: inspect, check
//! (exit 0 when a restore would succeed, 1 when not), rewrite, fsck (which
//! finds a corrupted file) and gc.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{example, Home};

#[track_caller]
fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
        .trim()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn live_state_then_the_offline_tools_on_its_savepoint() {
    let job = example("cli_demo_job");
    let h = Home::new("state");
    let (sp, chk, out) = (h.path("savepoints"), h.path("checkpoints"), h.path("out"));
    let (job_s, out_s) = (s(&job), s(&out));
    let o = h.expect(
        0,
        &[
            "run",
            "-p",
            "2",
            "-D",
            "rest.port=0",
            "-D",
            "execution.checkpointing.interval=200ms",
            "-D",
            &format!("execution.checkpointing.dir={}", s(&chk)),
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(&sp)),
            "--",
            &job_s,
            &out_s,
            "300",
            "10",
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    let short = &jid[..8];

    // state get: key 3's count, live (it only grows).
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let (code, out, err) = h.cairn(&["state", "get", short, "running-count", "count", "3"]);
        assert_eq!(code, 0, "{err}");
        if let Ok(n) = out.trim().parse::<u64>() {
            break n;
        }
        assert_eq!(out.trim(), "null", "no value yet prints null");
        assert!(Instant::now() < deadline, "key 3 was never counted");
        std::thread::sleep(Duration::from_millis(50));
    };
    let o = h.expect(0, &["state", "get", short, "running-count", "count", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (v["uid"].as_str(), v["state"].as_str(), v["key"].as_u64()),
        (Some("running-count"), Some("count"), Some(3))
    );
    assert!(v["value"].as_u64().unwrap() >= first, "{v}");
    assert!(v["subtask"].as_u64().unwrap() < 2, "{v}");

    // What cannot be answered, with its exit code.
    let (code, _, err) = h.cairn(&["state", "get", short, "running-count", "count", "\"3\""]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a key of operator 'running-count' (key type u64)"),
        "{err}"
    );
    let (code, _, err) = h.cairn(&["state", "get", short, "running-count", "count", "three"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a string key is written in quotes: '\"three\"'"), "{err}");
    let (code, _, err) = h.cairn(&["state", "get", short, "nope", "count", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no operator with uid 'nope'"), "{err}");
    let (code, _, err) = h.cairn(&["state", "get", short, "running-count", "total", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("its queryable states: 'count'"), "{err}");
    let (code, _, err) = h.cairn(&["state", "get", "0123456789abcdef", "running-count", "count", "3"]);
    assert_eq!(code, 3, "{err}");

    // Stop with a (canonical) savepoint; the job is gone afterwards.
    let o = h.expect(0, &["stop", short]);
    let savepoint = PathBuf::from(after(&o, "Savepoint completed. Path: "));
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.path(&format!("home/jobs/{jid}.json")).exists() {
        assert!(Instant::now() < deadline, "the job did not unregister");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, err) = h.cairn(&["state", "get", short, "running-count", "count", "3"]);
    assert_eq!(code, 3, "{err}");
    let sp_s = s(&savepoint);

    // inspect
    let o = h.expect(0, &["savepoint", "inspect", &sp_s]);
    assert!(
        o.contains("savepoint (canonical)") && o.contains("operator uid 'running-count'"),
        "{o}"
    );
    assert!(o.contains("count") && o.contains("10 keys"), "{o}");
    let o = h.expect(0, &["savepoint", "inspect", &sp_s, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert!(
        v["operators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["uid"] == "running-count"),
        "{v}"
    );

    // check: restores into the same job (exit 0) ...
    let o = h.expect(0, &["savepoint", "check", &sp_s, "--", &job_s, &out_s]);
    assert!(o.contains("result: the snapshot restores into this job"), "{o}");
    // ... but not once its uid is renamed (the state would map to nothing).
    let renamed = h.path("renamed");
    let o = h.expect(
        0,
        &[
            "savepoint",
            "rewrite",
            &sp_s,
            &s(&renamed),
            "--rename-uid",
            "running-count=counts-v2",
        ],
    );
    assert!(o.starts_with("wrote "), "{o}");
    let (code, o, err) = h.cairn(&["savepoint", "check", &s(&renamed), "--", &job_s, &out_s]);
    assert_eq!(code, 1, "{o}{err}");
    assert!(
        o.contains("counts-v2") && o.contains("result: the restore would FAIL"),
        "{o}"
    );
    let (code, o, _) = h.cairn(&["savepoint", "check", &s(&renamed), "--json", "--", &job_s, &out_s]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "error"),
        "{v}"
    );
    // A job binary that is not one gets a usage error.
    let (code, _, err) = h.cairn(&["savepoint", "check", &sp_s, "--", "/bin/false"]);
    assert_eq!(code, 2, "{err}");

    // rewrite with a new max parallelism: every key keeps its count.
    let rescaled = h.path("rescaled");
    h.expect(
        0,
        &["savepoint", "rewrite", &sp_s, &s(&rescaled), "--max-parallelism", "256"],
    );
    let o = h.expect(0, &["savepoint", "inspect", &s(&rescaled)]);
    assert!(o.contains("max parallelism 256") && o.contains("10 keys"), "{o}");

    // fsck: the checkpoints and the savepoints are sound ...
    let o = h.expect(0, &["fsck", &s(&chk)]);
    assert!(!o.contains("PROBLEM"), "{o}");

    // Progress bars: none when stderr is not a terminal (as here); forced
    // on (CAIRN_PROGRESS=always, as on a terminal) they go to stderr and
    // stdout stays the same; --quiet and --json draw none. On the savepoint,
    // which always has files (the checkpoint directory may hold none: a job
    // stopped with a savepoint may have completed no checkpoint to keep).
    let (code, plain, err) = h.cairn(&["fsck", &sp_s]);
    assert_eq!(code, 0);
    assert!(!err.contains('\r') && !err.contains("verifying"), "{err}");
    let always = [("CAIRN_PROGRESS", "always")];
    let (code, o, err) = h.cairn_env(&["fsck", &sp_s], &always);
    assert_eq!(code, 0, "{err}");
    assert_eq!(o, plain, "the report does not change");
    assert!(err.contains("fsck: verifying [") && err.contains(" files "), "{err}");
    let (_, _, err) = h.cairn_env(&["fsck", "--quiet", &sp_s], &always);
    assert!(!err.contains("verifying"), "{err}");
    let (_, o, err) = h.cairn_env(&["fsck", "--json", &sp_s], &always);
    assert!(!err.contains("verifying"), "{err}");
    serde_json::from_str::<serde_json::Value>(&o).unwrap();
    let (_, _, err) = h.cairn_env(&["savepoint", "inspect", &sp_s], &always);
    assert!(
        err.contains("inspect: reading [") && err.contains(" key groups "),
        "{err}"
    );
    let (code, _, err) = h.cairn_env(
        &[
            "savepoint",
            "rewrite",
            &sp_s,
            &s(&h.path("renamed-2")),
            "--rename-uid",
            "running-count=c3",
        ],
        &always,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rewrite: rewriting ["), "{err}");
    let (_, _, err) = h.cairn_env(&["savepoint", "reseal", &s(&h.path("renamed-2"))], &always);
    assert!(err.contains("reseal: resealing ["), "{err}");
    h.expect(0, &["fsck", &s(&rescaled)]);
    // ... until a byte of a state file changes.
    let victim = std::fs::read_dir(&rescaled)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a parquet file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let (code, o, _) = h.cairn(&["fsck", &s(&rescaled)]);
    assert_eq!(code, 1, "{o}");
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(o.contains("PROBLEM") && o.contains(&name), "{o}");

    // gc: a dry run lists, deletes nothing.
    let job_dir = chk.join(&jid);
    let before = std::fs::read_dir(&job_dir).unwrap().count();
    let o = h.expect(0, &["gc", &s(&job_dir)]);
    assert!(o.contains("dry run"), "{o}");
    let (_, _, err) = h.cairn_env(&["gc", &s(&job_dir)], &always);
    assert!(err.contains("gc: verifying ["), "{err}");
    assert_eq!(std::fs::read_dir(&job_dir).unwrap().count(), before);
}
