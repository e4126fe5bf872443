//! Drives a real job process through the `cairn` binary, the way an operator
//! does: run, list, info, checkpoint, savepoint, stop with a savepoint, run
//! from it with a new parallelism, cancel with a savepoint, dispose — checking
//! the output, the files and the exit codes at each step.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{example, Home};

/// The value after `prefix` on the line that has it.
#[track_caller]
fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
        .trim()
}

fn savepoint_path(out: &str) -> PathBuf {
    PathBuf::from(after(out, "Savepoint completed. Path: "))
}

/// Committed `key,count` lines of the file sink, per key.
fn committed(out_dir: &Path) -> BTreeMap<u64, Vec<u64>> {
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue; // in-progress and pending parts are hidden
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let (k, n) = line.split_once(',').unwrap();
            per_key.entry(k.parse().unwrap()).or_default().push(n.parse().unwrap());
        }
    }
    for v in per_key.values_mut() {
        v.sort_unstable();
    }
    per_key
}

/// Every key's counts are exactly 1..=max: nothing lost, nothing twice.
#[track_caller]
fn assert_exactly_once(per_key: &BTreeMap<u64, Vec<u64>>) {
    for (k, counts) in per_key {
        let want: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, &want, "key {k}: counts are not exactly 1..=n");
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn operate_a_job_end_to_end() {
    let job = example("cli_demo_job");
    let h = Home::new("e2e");
    let sp = h.path("savepoints");
    let chk = h.path("checkpoints");
    let out = h.path("out");
    let s = |p: &Path| p.display().to_string();
    let conf = [
        "-D".to_string(),
        "rest.port=0".to_string(),
        "-D".to_string(),
        "execution.checkpointing.interval=200ms".to_string(),
        "-D".to_string(),
        format!("execution.checkpointing.dir={}", s(&chk)),
        "-D".to_string(),
        format!("execution.checkpointing.savepoint-dir={}", s(&sp)),
    ];
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();

    // Nothing runs yet.
    assert_eq!(h.expect(0, &["list"]).trim(), "No running jobs.");

    // run
    let mut args = vec!["run", "-p", "2"];
    args.extend(&conf);
    let (job_s, out_s) = (s(&job), s(&out));
    args.extend(["--", &job_s, &out_s, "300", "10"]);
    let o = h.expect(0, &args);
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    assert_eq!(jid.len(), 32);
    let log = PathBuf::from(after(&o, "log:"));
    assert!(log.starts_with(h.path("home/logs")) && log.is_file(), "{o}");
    assert!(h.path(&format!("home/jobs/{jid}.json")).is_file());
    let short = &jid[..7];

    // list and info
    let o = h.expect(0, &["list"]);
    assert!(
        o.contains(&format!(": {jid} : cli demo (RUNNING) http://127.0.0.1:")),
        "{o}"
    );
    let o = h.expect(0, &["info", short]);
    assert_eq!(after(&o, "JobID:"), jid);
    assert_eq!(after(&o, "State:"), "RUNNING");
    assert!(o.contains("running-count") && o.contains("parallelism 2/128"), "{o}");
    let o = h.expect(0, &["info", short, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["jid"], jid.as_str());
    assert_eq!(
        v["vertices"].as_array().unwrap().len(),
        2,
        "two tasks: the source, and the count chained with the sink"
    );
    assert_eq!(v["cairn"]["operators"].as_array().unwrap().len(), 3);

    // checkpoint
    let o = h.expect(0, &["checkpoint", short]);
    let line = o.lines().find(|l| l.starts_with("Checkpoint(CONFIGURED) ")).unwrap();
    assert!(line.ends_with(&format!("for job {jid} completed.")), "{o}");
    let o = h.expect(0, &["checkpoint", short, "--full"]);
    assert!(o.contains("Checkpoint(FULL) "), "{o}");
    assert!(chk.join(&jid).is_dir());
    wait_until("committed output", Duration::from_secs(20), || {
        !committed(&out).is_empty()
    });

    // savepoint: default directory, then an explicit one
    let o = h.expect(0, &["savepoint", short, "--type", "native"]);
    let p1 = savepoint_path(&o);
    assert!(p1.starts_with(&sp), "{o}");
    assert!(p1
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("savepoint-{}-", &jid[..6])));
    assert!(p1.join("_metadata").is_file());
    let explicit = sp.join("explicit");
    let o = h.expect(0, &["savepoint", short, &s(&explicit), "-t", "native"]);
    let p2 = savepoint_path(&o);
    assert!(p2.starts_with(&explicit) && p2.join("_metadata").is_file(), "{o}");
    // ... and through the REST server's address instead of the registry
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path(&format!("home/jobs/{jid}.json"))).unwrap()).unwrap();
    let authority = format!("{}:{}", entry["address"].as_str().unwrap(), entry["port"]);
    let o = h.expect(0, &["savepoint", &jid, "--type", "native", "-m", &authority]);
    assert!(savepoint_path(&o).join("_metadata").is_file());
    // On a terminal (forced here) a progress bar shows files, bytes and time;
    // piped (every other call in this test) nothing but the result lines.
    let (code, out_sp, err) = h.cairn_env(
        &["savepoint", short, "--type", "native"],
        &[("CAIRN_PROGRESS", "always")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(savepoint_path(&out_sp).join("_metadata").is_file());
    assert!(
        err.contains("savepoint [") && err.contains(" files ") && err.contains('s'),
        "{err:?}"
    );
    let (code, _, err) = h.cairn_env(&["savepoint", short, "--type", "native"], &[]);
    assert_eq!(code, 0);
    assert!(err.is_empty(), "piped output stays quiet: {err:?}");

    // Over the trusted socket (the default) any directory may be named, as
    // with Flink's CLI; over TCP a directory outside the allowed ones is
    // refused, and nothing is written.
    assert!(
        entry["socket"].as_str().is_some_and(|p| Path::new(p).exists()),
        "{entry}"
    );
    let anywhere = h.path("anywhere/else");
    let o = h.expect(0, &["savepoint", short, &s(&anywhere), "--type", "native"]);
    let p_any = savepoint_path(&o);
    assert!(p_any.starts_with(&anywhere) && p_any.join("_metadata").is_file(), "{o}");
    let refused = h.path("not-allowed");
    let (code, _, err) = h.cairn(&["savepoint", short, &s(&refused), "--type", "native", "-m", &authority]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PATH_NOT_ALLOWED"), "{err}");
    assert!(!refused.exists());
    // Disposal: over TCP only inside the allowed roots; over the socket,
    // and locally without any configuration, any Cairn savepoint.
    let (code, _, err) = h.cairn(&["savepoint", "--dispose", &s(&p_any), "-m", &authority]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PATH_NOT_ALLOWED"), "{err}");
    assert!(p_any.join("_metadata").is_file());
    let socket = entry["socket"].as_str().unwrap().to_string();
    let o = h.expect(0, &["savepoint", "--dispose", &s(&p_any), "-m", &socket]);
    assert!(o.contains("disposed."), "{o}");
    assert!(!p_any.exists());
    let o = h.expect(0, &["savepoint", short, &s(&anywhere), "--type", "native"]);
    let p_any = savepoint_path(&o);
    let o = h.expect(0, &["savepoint", "--dispose", &s(&p_any)]);
    assert!(o.contains("disposed."), "{o}");
    assert!(!p_any.exists() && anywhere.is_dir(), "only the savepoint goes");
    // What is not a Cairn savepoint is refused everywhere.
    let (code, _, err) = h.cairn(&["savepoint", "--dispose", &s(&anywhere), "-m", &socket]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NOT_A_SAVEPOINT"), "{err}");
    assert!(anywhere.is_dir());

    // stop with a savepoint
    let stopped = sp.join("stopped");
    let o = h.expect(
        0,
        &["stop", short, "--savepoint-path", &s(&stopped), "--type", "native"],
    );
    let p3 = savepoint_path(&o);
    assert!(p3.starts_with(&stopped) && p3.join("_metadata").is_file(), "{o}");
    assert!(o.contains(&format!("Job {jid} stopped")), "{o}");
    wait_until("the job to unregister", Duration::from_secs(20), || {
        !h.path(&format!("home/jobs/{jid}.json")).exists()
    });
    assert_eq!(h.expect(0, &["list"]).trim(), "No running jobs.");
    let (code, _, err) = h.cairn(&["info", short]);
    assert_eq!(code, 3, "{err}");
    // Stop is atomic and the sink committed: the output is exactly once.
    let first = committed(&out);
    assert_exactly_once(&first);
    assert_eq!(first.len(), 10, "all keys were seen");

    // run from the savepoint with a new parallelism
    let mut args = vec!["run", "-s"];
    let p3_s = s(&p3);
    args.push(&p3_s);
    args.extend(["-p", "3"]);
    args.extend(&conf);
    args.extend(["--", &job_s, &out_s, "300", "10"]);
    let o = h.expect(0, &args);
    let jid2 = after(&o, "Job has been submitted with JobID ").to_string();
    assert_ne!(jid2, jid, "a restored job gets a new job id");
    let o = h.expect(0, &["info", &jid2[..8]]);
    assert!(o.contains("parallelism 3/128"), "{o}");
    assert_eq!(after(&o, "Restored from:"), p3_s);
    // Counts continue where the first run stopped, still exactly once.
    wait_until("the restored job's output", Duration::from_secs(30), || {
        let now = committed(&out);
        first
            .iter()
            .all(|(k, c)| now.get(k).is_some_and(|n| n.len() > c.len() + 2))
    });

    // cancel with a savepoint
    let cancelled = sp.join("cancelled");
    let o = h.expect(0, &["cancel", &jid2[..8], "-s", &s(&cancelled), "--type", "native"]);
    let p4 = savepoint_path(&o);
    assert!(p4.starts_with(&cancelled) && p4.join("_metadata").is_file(), "{o}");
    assert!(
        o.contains(&format!("Cancelled job {jid2}. Savepoint stored in {}.", s(&p4))),
        "{o}"
    );
    wait_until("the second job to unregister", Duration::from_secs(20), || {
        !h.path(&format!("home/jobs/{jid2}.json")).exists()
    });
    let second = committed(&out);
    assert_exactly_once(&second);
    for (k, c) in &first {
        assert!(second[k].len() > c.len(), "key {k} did not continue");
    }

    // dispose (locally, no configuration needed): refused for what is not a
    // savepoint, then done for real.
    let (code, _, err) = h.cairn(&["savepoint", "--dispose", &s(&cancelled)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no '_metadata'"), "{err}");
    let o = h.expect(0, &["savepoint", "--dispose", &s(&p4)]);
    assert!(o.contains("disposed."), "{o}");
    assert!(!p4.exists() && cancelled.is_dir());
    assert!(p1.join("_metadata").is_file(), "other savepoints are untouched");
}

#[test]
fn cancel_without_savepoint_and_a_failing_start() {
    let job = example("cli_demo_job");
    let h = Home::new("cancel");
    let out = h.path("out");
    let (job_s, out_s) = (job.display().to_string(), out.display().to_string());
    let o = h.expect(0, &["run", "-Drest.port=0", "--", &job_s, &out_s, "100", "3"]);
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    // Without a savepoint directory a savepoint is refused with a clear message.
    let (code, _, err) = h.cairn(&["savepoint", &jid[..5], "--type", "native"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no savepoint directory"), "{err}");
    let o = h.expect(0, &["cancel", &jid[..5]]);
    assert!(o.contains(&format!("Cancelled job {jid}.")), "{o}");
    wait_until("the job to unregister", Duration::from_secs(20), || {
        !h.path(&format!("home/jobs/{jid}.json")).exists()
    });
    assert_eq!(h.expect(3, &["cancel", &jid[..5]]), "");

    // A job that cannot start: the CLI says why, from its log.
    let (code, _, err) = h.cairn(&["run", "-D", "rest.port=0", "-D", "parallelism.default=0", "--", &job_s]);
    assert_eq!(code, 2, "the CLI validates the flags first: {err}");
    let missing = h.path("no-such-savepoint");
    let (code, _, err) = h.cairn(&["run", "-s", &missing.display().to_string(), "--", &job_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let bogus = h.path("bogus-sp");
    std::fs::create_dir_all(&bogus).unwrap();
    let (code, _, err) = h.cairn(&["run", "-s", &bogus.display().to_string(), "-Drest.port=0", "--", &job_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exited") && err.contains("_metadata"), "{err}");
}

/// Runs `cairn args...` inside a private mount namespace where `dir` is a
/// read-only bind mount of itself (a real read-only file system, which even
/// root cannot write). `None` when this machine allows no user namespaces.
fn cairn_with_read_only(h: &Home, dir: &Path, args: &[&str]) -> Option<(i32, String, String)> {
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let d = dir.display().to_string();
    let script = format!("mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' && exec \"$@\"");
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script, "sh"])
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_HOME", h.dir.join("home"))
        .env_remove("CAIRN_REST_TOKEN")
        .env_remove("CAIRN_CONF_DIR")
        .output()
        .unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Setup errors surface at once: `cairn run` waits for the outcome of the
/// start, prints the cause and exits 1 (it printed "submitted" and exited 0
/// while the job sat in INITIALIZING for 30 s before).
#[test]
fn run_fails_at_once_with_the_cause_when_the_job_cannot_start() {
    let job = example("cli_demo_job");
    let h = Home::new("setup");
    let job_s = job.display().to_string();
    let out_s = h.path("out").display().to_string();

    // Checkpointing interval without a directory.
    let (code, stdout, err) = h.cairn(&[
        "run",
        "-Drest.port=0",
        "-D",
        "execution.checkpointing.interval=1s",
        "--",
        &job_s,
        &out_s,
    ]);
    assert_eq!(code, 1, "--- stdout\n{stdout}--- stderr\n{err}");
    assert!(!stdout.contains("submitted"), "{stdout}");
    assert!(
        err.contains("execution.checkpointing.interval") && err.contains("execution.checkpointing.dir"),
        "{err}"
    );

    // A checkpoint directory that is a file.
    let file = h.path("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let dir_flag = format!("execution.checkpointing.dir={}", file.display());
    let (code, stdout, err) = h.cairn(&[
        "run",
        "-Drest.port=0",
        "-D",
        "execution.checkpointing.interval=1s",
        "-D",
        &dir_flag,
        "--",
        &job_s,
        &out_s,
    ]);
    assert_eq!(code, 1, "--- stdout\n{stdout}--- stderr\n{err}");
    assert!(!stdout.contains("submitted"), "{stdout}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("cannot create the checkpoint directory"), "{err}");

    // A read-only checkpoint directory.
    let ro = h.path("read-only");
    std::fs::create_dir_all(&ro).unwrap();
    let dir_flag = format!("execution.checkpointing.dir={}", ro.display());
    let args = [
        "run",
        "-Drest.port=0",
        "-D",
        "execution.checkpointing.interval=1s",
        "-D",
        &dir_flag,
        "--",
        &job_s,
        &out_s,
    ];
    match cairn_with_read_only(&h, &ro, &args) {
        Some((code, stdout, err)) => {
            assert_eq!(code, 1, "--- stdout\n{stdout}--- stderr\n{err}");
            assert!(!stdout.contains("submitted"), "{stdout}");
            assert!(
                err.contains(&ro.display().to_string()) && err.contains("Read-only"),
                "{err}"
            );
        }
        None => eprintln!("skipped the read-only case: no user namespaces on this machine (unshare -r -m)"),
    }
    assert!(h.registered_pids().is_empty(), "failed jobs leave the registry");
}

/// `cairn rescale`: stop with a savepoint and start the registered binary
/// again at a new parallelism, twice (2 -> 3 -> 1); every key's counts go on
/// exactly once, and what would fail is refused before the job stops.
#[test]
fn rescale_a_running_job_by_savepoint() {
    let job = example("cli_demo_job");
    let h = Home::new("rescale");
    let (sp, chk, out) = (h.path("savepoints"), h.path("checkpoints"), h.path("out"));
    let s = |p: &Path| p.display().to_string();
    let (job_s, out_s, sp_s, chk_s) = (s(&job), s(&out), s(&sp), s(&chk));
    let cp_dir = format!("execution.checkpointing.dir={chk_s}");
    let sp_dir = format!("execution.checkpointing.savepoint-dir={sp_s}");
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
            &cp_dir,
            "-D",
            &sp_dir,
            "--",
            &job_s,
            &out_s,
            "300",
            "10",
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    wait_until("committed output", Duration::from_secs(30), || {
        committed(&out).len() == 10
    });

    // Refused up front, and the job keeps running: a parallelism above the
    // max parallelism, zero, an unknown job.
    let (code, _, err) = h.cairn(&["rescale", &jid[..8], "-p", "129"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("max parallelism 128"), "{err}");
    let (code, _, err) = h.cairn(&["rescale", &jid[..8], "-p", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a parallelism"), "{err}");
    let (code, _, err) = h.cairn(&["rescale", "ffffffff", "-p", "2"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(after(&h.expect(0, &["info", &jid[..8]]), "State:"), "RUNNING");

    let mut previous = jid.clone();
    for p in [3u32, 1] {
        let o = h.expect(0, &["rescale", &previous[..8], "-p", &p.to_string(), "-t", "native"]);
        // The stop committed everything before its savepoint; what comes
        // after is the restarted job's.
        let before = committed(&out);
        let location = savepoint_path(&o);
        assert!(location.starts_with(&sp) && location.join("_metadata").is_file(), "{o}");
        let line = o
            .lines()
            .find(|l| l.contains(" rescaled to parallelism "))
            .unwrap_or_else(|| panic!("{o}"));
        let next = line.rsplit(' ').next().unwrap().to_string();
        assert_eq!(next.len(), 32, "{o}");
        assert_ne!(next, previous);
        assert!(
            !h.path(&format!("home/jobs/{previous}.json")).exists(),
            "the old job is gone"
        );
        let info = h.expect(0, &["info", &next[..8]]);
        assert!(info.contains(&format!("parallelism {p}/128")), "{info}");
        assert_eq!(after(&info, "Restored from:"), s(&location));
        // The stop committed everything before the savepoint, exactly once.
        assert_exactly_once(&before);
        wait_until("counts continuing after the rescale", Duration::from_secs(60), || {
            let now = committed(&out);
            before
                .iter()
                .all(|(k, c)| now.get(k).is_some_and(|n| n.len() > c.len() + 2))
        });
        previous = next;
    }
    h.expect(0, &["cancel", &previous[..8]]);
    wait_until("the last job to unregister", Duration::from_secs(20), || {
        !h.path(&format!("home/jobs/{previous}.json")).exists()
    });
    let all = committed(&out);
    assert_exactly_once(&all);
    assert_eq!(all.len(), 10, "every key kept its state");
}
