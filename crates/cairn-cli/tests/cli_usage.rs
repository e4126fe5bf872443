//! Help, usage errors, suggestions, completions and exit codes, without a
//! running job.

mod common;

use common::Home;

#[test]
fn help_everywhere() {
    let h = Home::new("help");
    let main = h.expect(0, &["--help"]);
    assert!(
        main.contains("Exit codes") && main.contains("savepoint") && main.contains("dashboard"),
        "{main}"
    );
    assert_eq!(h.expect(0, &["help"]), main);
    for cmd in [
        "list",
        "info",
        "run",
        "savepoint",
        "checkpoint",
        "stop",
        "cancel",
        "dashboard",
        "fsck",
        "gc",
        "state",
        "state get",
        "savepoint inspect",
        "savepoint check",
        "savepoint rewrite",
        "savepoint reseal",
    ] {
        let words: Vec<&str> = cmd.split(' ').collect();
        let with = |flag: &'static str| [words.as_slice(), &[flag]].concat();
        let out = h.expect(0, &with("--help"));
        assert!(out.contains(&format!("Usage: cairn {cmd}")), "{out}");
        assert_eq!(h.expect(0, &[&["help"], words.as_slice()].concat()), out);
        let short = h.expect(0, &with("-h"));
        assert!(short.contains(&format!("Usage: cairn {cmd}")), "{short}");
    }
    // The flags Flink users know are all documented.
    let run = h.expect(0, &["run", "--help"]);
    for flag in [
        "--fromSavepoint",
        "--allowNonRestoredState",
        "--claim-mode",
        "--parallelism",
        "-D",
        "--config",
    ] {
        assert!(run.contains(flag), "run --help lacks {flag}:\n{run}");
    }
    let sp = h.expect(0, &["savepoint", "--help"]);
    for flag in ["--dispose", "--type", "--detached", "--address"] {
        assert!(sp.contains(flag), "savepoint --help lacks {flag}:\n{sp}");
    }
    for v in ["--version", "-v", "-V"] {
        assert!(h.expect(0, &[v]).starts_with("cairn "), "{v}");
    }
}

#[test]
fn usage_errors_exit_2_with_a_pointer_to_help() {
    let h = Home::new("usage");
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["info"], "<JOB_ID>"),
        (&["info", "a1", "b2"], "unexpected argument 'b2'"),
        (&["info", "not-hex"], "is not a job id"),
        (&["info", "a1", "--bogus"], "unexpected argument '--bogus'"),
        (&["list", "extra"], "unexpected argument"),
        (
            &["savepoint", "a1", "--type", "xml"],
            "possible values: canonical, native",
        ),
        (&["savepoint", "a1", "--type"], "a value is required for '--type"),
        (&["savepoint", "a1", "--detached=yes"], "unexpected value 'yes'"),
        (&["savepoint", "a1", "-D", "x=y"], "--dispose"),
        (&["savepoint", "--dispose", "/x", "a1"], "cannot be used with"),
        (
            &["savepoint", "--dispose", "/x", "--type", "native"],
            "cannot be used with",
        ),
        (
            &["savepoint", "--dispose", "/x", "-D", "nope.key=1"],
            "unknown configuration key",
        ),
        (
            &["checkpoint", "a1", "--incremental"],
            "unexpected argument '--incremental'",
        ),
        (&["stop", "a1", "--savepoint-path"], "a value is required"),
        (&["cancel", "a1", "--type", "native"], "--with-savepoint"),
        (&["run"], "BINARY"),
        (&["run", "-p", "0", "--", "job"], "must be between 1 and 32768"),
        (&["run", "--claim-mode", "LEGACY", "--", "job"], "LEGACY"),
        (&["run", "-D", "novalue", "--", "job"], "-D <key>=<value>"),
        (&["run", "--timeout", "soon", "--", "job"], "seconds"),
        // Larger than a deadline can be (it panicked adding it to the clock).
        (
            &["run", "--timeout", "18446744073709551615", "--", "job"],
            "between 1 and 31536000",
        ),
        (&["run", "--timeout", "0", "--", "job"], "between 1 and 31536000"),
        (&["run", "--bogus", "--", "job"], "unexpected argument '--bogus'"),
        (&["completions", "tcsh"], "possible values"),
        (&["savepoint", "inspect"], "<PATH>"),
        (&["savepoint", "inspect", "/x", "a1"], "unexpected argument 'a1'"),
        (&["savepoint", "check", "/x"], "<BINARY [ARGS]...>"),
        (&["savepoint", "rewrite", "/x"], "<OUT>"),
        (
            &["savepoint", "rewrite", "/x", "/y", "--max-parallelism", "0"],
            "0 is not in 1..=32768",
        ),
        (
            &["savepoint", "rewrite", "/x", "/y", "--rename-uid", "a"],
            "is not OLD=NEW",
        ),
        (
            &["savepoint", "rewrite", "/x", "/y", "--memory", "lots"],
            "invalid digit",
        ),
        (&["fsck"], "<PATH>"),
        (&["gc", "/x", "--delete=now"], "unexpected value"),
        (&["state", "get", "a1", "uid", "name"], "<KEY>"),
        (
            &["state", "get", "a1", "uid", "name", "alice"],
            "a string key is written in quotes",
        ),
        (&["state", "put", "a1"], "unrecognized subcommand 'put'"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = h.cairn(args);
        assert_eq!(code, 2, "cairn {args:?}: {err}");
        assert!(err.contains(needle), "cairn {args:?}: {err:?} lacks {needle:?}");
        assert!(err.contains("--help"), "cairn {args:?}: {err}");
    }
    // No command at all: the help, as a usage error.
    let (code, out, err) = h.cairn(&[]);
    assert_eq!(code, 2);
    assert!(format!("{out}{err}").contains("Usage: cairn <COMMAND>"));
}

#[test]
fn typos_get_suggestions() {
    let h = Home::new("typo");
    for (args, want) in [
        (&["savepiont", "a1"][..], "savepoint"),
        (&["lst"], "list"),
        (&["stop", "a1", "--drian"], "--drain"),
        (&["cancel", "a1", "--with-savepiont", "/x"], "--with-savepoint"),
    ] {
        let (code, _, err) = h.cairn(args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("similar") && err.contains(want), "cairn {args:?}: {err}");
    }
}

#[test]
fn shell_completions() {
    let h = Home::new("complete");
    let bash = h.expect(0, &["completions", "bash"]);
    assert!(
        bash.contains("_cairn()") && bash.contains("savepoint") && bash.contains("--drain"),
        "{bash}"
    );
    let zsh = h.expect(0, &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef cairn"), "{zsh}");
    let fish = h.expect(0, &["completions", "fish"]);
    assert!(fish.contains("complete -c cairn"), "{fish}");
    // The bash script is valid bash.
    let path = h.path("cairn.bash");
    std::fs::write(&path, &bash).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn legacy_flink_spellings_still_parse() {
    let h = Home::new("legacy");
    // -cm, -dcp and -full are rewritten to the long options, so these get as
    // far as looking up the job (exit 3), not a usage error.
    for args in [
        &["checkpoint", "abc", "-full"][..],
        &["savepoint", "abc", "-dcp"],
        &["stop", "abc", "--savepointPath", "/x"],
        &["cancel", "abc", "--withSavepoint", "/x"],
    ] {
        let (code, _, err) = h.cairn(args);
        assert_eq!(code, 3, "cairn {args:?}: {err}");
    }
    let (code, _, err) = h.cairn(&["run", "-cm", "LEGACY", "--", "job"]);
    assert_eq!(code, 2);
    assert!(err.contains("LEGACY"), "{err}");
}

#[test]
fn unknown_jobs_exit_3() {
    let h = Home::new("missing");
    for args in [
        &["info", "abc"][..],
        &["savepoint", "abc"],
        &["checkpoint", "abcdef"],
        &["stop", "0123456789abcdef0123456789abcdef"],
        &["cancel", "abc"],
    ] {
        let (code, _, err) = h.cairn(args);
        assert_eq!(code, 3, "cairn {args:?}: {err}");
        assert!(err.contains("no running job with id"), "{err}");
    }
    // A server that is not there.
    let (code, _, err) = h.cairn(&["info", "abc", "-m", "127.0.0.1:1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = h.cairn(&["list", "-m", "127.0.0.1:1"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = h.cairn(&["list", "-m", "/no/such/socket"]);
    assert_eq!(code, 3, "{err}");
    // A registry entry whose process is gone is cleaned up, not used.
    let jobs = h.path("home/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let stale = "abcdef00000000000000000000000000";
    std::fs::write(
        jobs.join(format!("{stale}.json")),
        format!(r#"{{"jid":"{stale}","name":"gone","pid":999999999,"address":"127.0.0.1","port":1,"start-time":0}}"#),
    )
    .unwrap();
    assert_eq!(h.expect(0, &["list"]).trim(), "No running jobs.");
    assert!(!jobs.join(format!("{stale}.json")).exists());
}

#[test]
fn failed_operations_exit_1() {
    let h = Home::new("failed");
    // A binary that does not exist, and one that exits at once.
    let (code, _, err) = h.cairn(&["run", "--", "/definitely/not/a/job"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot start"), "{err}");
    let script = h.path("failing-job.sh");
    std::fs::write(&script, "#!/bin/sh\necho starting\necho boom >&2\nexit 7\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (code, _, err) = h.cairn(&["run", "--", &script.display().to_string(), "job-arg"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exited (exit status: 7)") && err.contains("boom"), "{err}");
    let logs: Vec<_> = std::fs::read_dir(h.path("home/logs")).unwrap().collect();
    assert_eq!(logs.len(), 2);

    // Disposal refuses what it must not delete, with no configuration at all.
    let sp = h.path("sp");
    std::fs::create_dir_all(sp.join("not-a-savepoint")).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    for (path, needle) in [
        (s(&sp.join("not-a-savepoint")), "no '_metadata'"),
        (s(&sp), "no '_metadata'"),
        (s(&sp.join("missing")), "does not exist"),
        (format!("{}/missing/../sp", s(&sp)), "'..'"),
        ("/etc".to_string(), "no '_metadata'"),
    ] {
        let (code, _, err) = h.cairn(&["savepoint", "--dispose", &path]);
        assert_eq!(code, 1, "{path}: {err}");
        assert!(err.contains(needle), "{path}: {err:?} lacks {needle:?}");
    }
    assert!(sp.join("not-a-savepoint").is_dir());
}

/// Runs `cairn args...` with its stdout the write end of a pipe whose read end is
/// already closed (as when `cairn list | head -0` has ended), through python3 so the
/// order is certain; returns (exit code, stderr).
fn cairn_into_a_closed_pipe(h: &Home, args: &[&str]) -> (i32, String) {
    let script = "import os, sys\n\
                  r, w = os.pipe()\n\
                  os.close(r)\n\
                  os.dup2(w, 1)\n\
                  os.execv(sys.argv[1], sys.argv[1:])\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_HOME", h.path("home"))
        .output()
        .expect("python3 runs (it is installed with the test services)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_left_ends_the_command_quietly_as_sigpipe_would() {
    let h = Home::new("pipe");
    for args in [&["list"][..], &["completions", "bash"], &["--help"]] {
        let (code, stderr) = cairn_into_a_closed_pipe(&h, args);
        assert!(
            !stderr.contains("panicked"),
            "cairn {args:?} into a closed pipe panicked:\n{stderr}"
        );
        // Help is printed by clap, which ignores a failed write and exits 0.
        let want = if args == ["--help"] { 0 } else { 141 };
        assert_eq!(code, want, "cairn {args:?} into a closed pipe: {stderr}");
    }
}
