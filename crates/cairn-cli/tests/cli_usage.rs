//! Help, usage errors and exit codes, without a running job.

mod common;

use common::Home;

#[test]
fn help_everywhere() {
    let h = Home::new("help");
    let main = h.expect(0, &["--help"]);
    assert!(main.contains("Exit codes"), "{main}");
    assert_eq!(h.expect(0, &["help"]), main);
    for cmd in ["list", "info", "run", "savepoint", "checkpoint", "stop", "cancel"] {
        let out = h.expect(0, &[cmd, "--help"]);
        assert!(out.starts_with(&format!("Usage: cairn {cmd}")), "{out}");
        assert_eq!(h.expect(0, &["help", cmd]), out);
        assert_eq!(h.expect(0, &[cmd, "-h"]), out);
    }
    assert!(h.expect(0, &["--version"]).starts_with("cairn "));
}

#[test]
fn usage_errors_exit_2() {
    let h = Home::new("usage");
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command given"),
        (&["frobnicate"], "unknown command 'frobnicate'"),
        (&["help", "frobnicate"], "unknown command"),
        (&["info"], "missing the job id"),
        (&["info", "a1", "b2"], "unexpected argument 'b2'"),
        (&["info", "not-hex"], "is not a job id"),
        (&["info", "a1", "--bogus"], "unknown option '--bogus' for 'cairn info'"),
        (&["list", "extra"], "unexpected argument"),
        (&["savepoint", "a1", "--type", "xml"], "use canonical or native"),
        (&["savepoint", "a1", "--type"], "--type needs a value"),
        (&["savepoint", "a1", "--detached=yes"], "takes no value"),
        (&["savepoint", "a1", "-D", "x=y"], "only to --dispose"),
        (&["savepoint", "--dispose", "/x", "a1"], "unexpected argument"),
        (&["savepoint", "--dispose", "/x", "--type", "native"], "do not apply"),
        (
            &["savepoint", "--dispose", "/x", "-D", "nope.key=1"],
            "unknown configuration key",
        ),
        (&["checkpoint", "a1", "--incremental"], "unknown option"),
        (&["stop", "a1", "--savepoint-path"], "needs a value"),
        (&["stop", "a1", "-p", "--drain"], "followed by '--drain'"),
        (&["cancel", "a1", "--type", "native"], "only with -s"),
        (&["run"], "missing the job binary"),
        (&["run", "-p", "0", "--", "job"], "must be at least 1"),
        (&["run", "--claim-mode", "LEGACY", "--", "job"], "LEGACY"),
        (&["run", "-D", "novalue", "--", "job"], "-D <key>=<value>"),
        (&["run", "--timeout", "soon", "--", "job"], "seconds"),
        (
            &["run", "--bogus", "--", "job"],
            "unknown option '--bogus' for 'cairn run'",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = h.cairn(args);
        assert_eq!(code, 2, "cairn {args:?}: {err}");
        assert!(err.contains(needle), "cairn {args:?}: {err:?} lacks {needle:?}");
        assert!(err.contains("--help"), "cairn {args:?}: {err}");
    }
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

    // Disposal refuses what it must not delete.
    let sp = h.path("sp");
    std::fs::create_dir_all(sp.join("not-a-savepoint")).unwrap();
    let allow = format!("rest.allowed-paths={}", sp.display());
    let s = |p: &std::path::Path| p.display().to_string();
    for (path, needle) in [
        (s(&sp.join("not-a-savepoint")), "no '_metadata'"),
        (s(&sp), "configured directory"),
        (s(&sp.join("missing")), "does not exist"),
        (format!("{}/../sp", s(&sp)), "'..'"),
        ("/etc".to_string(), "outside"),
    ] {
        let (code, _, err) = h.cairn(&["savepoint", "--dispose", &path, "-D", &allow]);
        assert_eq!(code, 1, "{path}: {err}");
        assert!(err.contains(needle), "{path}: {err:?} lacks {needle:?}");
    }
    assert!(sp.join("not-a-savepoint").is_dir());
}
