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

/// Start the demo job (parallelism 2, 300 events over 10 keys) detached,
/// checkpointing every `interval` into `chk`, savepoints into `sp`; its job id.
fn run_demo_job(h: &Home, job: &Path, chk: &Path, sp: &Path, out: &Path, interval: &str) -> String {
    let o = h.expect(
        0,
        &[
            "run",
            "-p",
            "2",
            "-D",
            "rest.port=0",
            "-D",
            &format!("execution.checkpointing.interval={interval}"),
            "-D",
            &format!("execution.checkpointing.dir={}", s(chk)),
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(sp)),
            "--",
            &s(job),
            &s(out),
            "300",
            "10",
        ],
    );
    after(&o, "Job has been submitted with JobID ").to_string()
}

#[test]
fn live_state_then_the_offline_tools_on_its_savepoint() {
    let job = example("cli_demo_job");
    let h = Home::new("state");
    let (sp, chk, out) = (h.path("savepoints"), h.path("checkpoints"), h.path("out"));
    let (job_s, out_s) = (s(&job), s(&out));
    let jid = run_demo_job(&h, &job, &chk, &sp, &out, "200ms");
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

/// Copy a directory (one level of files: a savepoint).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn the_offline_tools_touch_nothing_they_should_not() {
    // A checkpoint directory whose name has " (" in it, beside a directory
    // named like its prefix: gc once took its report's text for paths.
    let job = example("cli_demo_job");
    let h = Home::new("state-guard");
    let precious = h.path("checkpoints");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("keep.txt"), "precious").unwrap();
    let (sp, chk, out) = (h.path("savepoints"), h.path("checkpoints (prod)"), h.path("out"));
    let (job_s, out_s) = (s(&job), s(&out));
    let jid = run_demo_job(&h, &job, &chk, &sp, &out, "100ms");
    let job_dir = chk.join(&jid);
    let deadline = Instant::now() + Duration::from_secs(60);
    let completed = || {
        std::fs::read_dir(&job_dir)
            .map(|d| d.flatten().filter(|e| e.path().join("_metadata").exists()).count())
            .unwrap_or(0)
    };
    while completed() == 0 {
        assert!(Instant::now() < deadline, "no checkpoint completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = h.expect(0, &["stop", &jid[..8]]);
    let savepoint = PathBuf::from(after(&o, "Savepoint completed. Path: "));
    let sp_s = s(&savepoint);

    // gc deletes exactly the garbage: an aborted checkpoint's leftovers
    // (older than the latest complete one) and an unreferenced shared file.
    std::fs::create_dir_all(job_dir.join("chk-0")).unwrap();
    std::fs::write(job_dir.join("chk-0/op-x.state"), "left by a crash").unwrap();
    std::fs::create_dir_all(job_dir.join("shared")).unwrap();
    std::fs::write(job_dir.join("shared/orphan (copy).sst"), "unreferenced").unwrap();
    let o = h.expect(0, &["gc", &s(&job_dir), "--delete"]);
    assert!(o.contains("2 path(s)"), "{o}");
    assert!(
        precious.join("keep.txt").exists(),
        "gc deleted a directory outside the job's: {o}"
    );
    assert!(
        !job_dir.join("chk-0").exists() && !job_dir.join("shared/orphan (copy).sst").exists(),
        "{o}"
    );
    let o = h.expect(0, &["fsck", &s(&job_dir)]);
    assert!(!o.contains("PROBLEM") && !o.contains("orphan "), "{o}");
    // gc refuses what is not a job's checkpoint directory (exit 2), as fsck does.
    for not_a_job_dir in [&savepoint, &precious, &h.path("nowhere")] {
        let (code, _, err) = h.cairn(&["gc", &s(not_a_job_dir)]);
        assert_eq!(code, 2, "{}: {err}", not_a_job_dir.display());
    }
    assert!(precious.join("keep.txt").exists());

    // A path that does not exist is a wrong path (exit 2), for every tool.
    let nowhere = s(&h.path("nowhere"));
    for args in [
        vec!["savepoint", "inspect", &nowhere],
        vec!["savepoint", "reseal", &nowhere],
        vec!["fsck", &nowhere],
        vec!["savepoint", "check", &nowhere, "--", &job_s, &out_s],
    ] {
        let (code, _, err) = h.cairn(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("does not exist"), "{args:?}: {err}");
    }

    // rewrite writes only into a new or empty directory outside its input.
    let listing = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        names
    };
    let before = listing(&savepoint);
    let inside = savepoint.join("sub");
    let (code, _, err) = h.cairn(&["savepoint", "rewrite", &sp_s, &s(&inside), "--max-parallelism", "64"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the savepoint being read"), "{err}");
    let busy = h.path("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = h.cairn(&["savepoint", "rewrite", &sp_s, &s(&busy), "--max-parallelism", "64"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an empty directory"), "{err}");
    assert_eq!(listing(&busy), vec![std::ffi::OsString::from("notes.txt")]);
    // `new/..` is `busy` itself, which the checks above would not see.
    let climbing = format!("{}/new/..", s(&busy));
    let (code, _, err) = h.cairn(&["savepoint", "rewrite", &sp_s, &climbing, "--max-parallelism", "64"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without '..'"), "{err}");
    assert_eq!(listing(&busy), vec![std::ffi::OsString::from("notes.txt")]);
    assert_eq!(listing(&savepoint), before, "the input is untouched");
    // Renames apply at once: two uids can be swapped.
    let swapped = h.path("swapped");
    h.expect(
        0,
        &[
            "savepoint",
            "rewrite",
            &sp_s,
            &s(&swapped),
            "--rename-uid",
            "running-count=events",
            "--rename-uid",
            "events=running-count",
        ],
    );
    let v: serde_json::Value =
        serde_json::from_str(&h.expect(0, &["savepoint", "inspect", &s(&swapped), "--json"])).unwrap();
    let keyed_uid = v["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| {
            op["states"]
                .as_array()
                .is_some_and(|st| st.iter().any(|x| x["name"] == "count"))
        })
        .map(|op| op["uid"].as_str().unwrap().to_string());
    assert_eq!(keyed_uid.as_deref(), Some("events"), "{v}");
    let (code, _, err) = h.cairn(&[
        "savepoint",
        "rewrite",
        &sp_s,
        &s(&h.path("twice")),
        "--rename-uid",
        "events=a",
        "--rename-uid",
        "events=b",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("renames uid 'events' twice"), "{err}");
    let (code, _, err) = h.cairn(&[
        "savepoint",
        "rewrite",
        &sp_s,
        &s(&h.path("blank")),
        "--rename-uid",
        "events= ",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is blank"), "{err}");

    // A savepoint does not carry an unaligned checkpoint's in-flight
    // records: rewriting one says so.
    let unaligned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-snapshot/tests/golden/v4/job/chk-3");
    let (code, _, err) = h.cairn(&["savepoint", "rewrite", &s(&unaligned), &s(&h.path("from-unaligned"))]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note: the input is an unaligned checkpoint: its in-flight records"),
        "{err}"
    );

    // reseal vouches only for files that read back whole: a truncated one
    // is refused and _metadata stays as it was.
    let edited = h.path("edited");
    copy_dir(&savepoint, &edited);
    let victim = listing(&edited)
        .into_iter()
        .map(|n| edited.join(n))
        .find(|p| p.to_string_lossy().ends_with(".count.parquet"))
        .expect("a count file");
    let metadata_before = std::fs::read(edited.join("_metadata")).unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = h.cairn(&["savepoint", "reseal", &s(&edited)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be resealed"), "{err}");
    assert_eq!(std::fs::read(edited.join("_metadata")).unwrap(), metadata_before);

    // check runs the job binary for its plan only, even when the job's own
    // arguments follow a `--`, and stops a binary that is not a Cairn job.
    let o = h.expect(0, &["savepoint", "check", &sp_s, "--", &job_s, "--", &out_s]);
    assert!(o.contains("result: the snapshot restores into this job"), "{o}");
    let script = h.path("endless.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let started = Instant::now();
    let (code, _, err) = h.cairn_env(
        &["savepoint", "check", &sp_s, "--", &s(&script)],
        &[("CAIRN_PLAN_TIMEOUT", "1")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did not finish within 1 s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "check waited for the binary"
    );
    let chatty = h.path("chatty.sh");
    std::fs::write(&chatty, "#!/bin/sh\nexec yes\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&chatty)
        .status()
        .unwrap();
    let (code, _, err) = h.cairn(&["savepoint", "check", &sp_s, "--", &s(&chatty)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("printed more than 16 MiB"), "{err}");
}
