//! Logs as a user sees them: a job binary (`StreamEnv::from_args`) and the
//! `cairn` CLI print `tracing` events on stderr, filtered by `RUST_LOG`
//! (job binaries default to `info`, the CLI to `warn`); `cairn run` puts the
//! job's in its log file.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{example, Home};

/// Runs the demo job binary directly; returns (exit code, stderr).
fn job_binary(h: &Home, rust_log: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(example("cli_demo_job"));
    cmd.args(args)
        .env("CAIRN_HOME", h.path("home"))
        .env_remove("CAIRN_CONF_DIR")
        .env_remove("RUST_LOG");
    if let Some(spec) = rust_log {
        cmd.env("RUST_LOG", spec);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of `text` at `level` (the subscriber's plain format: time, level, target).
fn at(text: &str, level: &str) -> Vec<String> {
    let tag = format!(" {level} ");
    text.lines()
        .filter(|l| l.get(..40).is_some_and(|head| head.contains(&tag)))
        .map(String::from)
        .collect()
}

/// A job that cannot start (a checkpoint interval without a directory) exits
/// 1 with the cause; on its way it logs the REST address (info) and the
/// cause (error, with the job id and the stable code). `RUST_LOG` filters by
/// level and by crate; an unusable `RUST_LOG` is named and the default used.
#[test]
fn a_job_binary_logs_on_stderr_filtered_by_rust_log() {
    let h = Home::new("logs-job");
    let out = h.path("out").display().to_string();
    let args = [
        "-Drest.port=0",
        "-D",
        "execution.checkpointing.interval=1s",
        out.as_str(),
    ];

    // Default: info and above.
    let (code, err) = job_binary(&h, None, &args);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the job could not start") && last.contains("execution.checkpointing.dir"),
        "the binary ends with the cause: {err}"
    );
    let info = at(&err, "INFO");
    assert!(
        info.iter()
            .any(|l| l.contains("cairn_rest_server") && l.contains("REST API and web UI")),
        "{err}"
    );
    let errors = at(&err, "ERROR");
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("execution.checkpointing.dir")
            && errors[0].contains("job_id=")
            && errors[0].contains("code=\"INVALID_CONFIGURATION\""),
        "{err}"
    );
    assert!(
        !errors[0].contains("could not start: the job could not start"),
        "said once: {err}"
    );
    assert!(at(&err, "DEBUG").is_empty(), "{err}");

    // A level: warnings and errors only.
    let (code, err) = job_binary(&h, Some("warn"), &args);
    assert_eq!(code, 1, "{err}");
    assert!(at(&err, "INFO").is_empty(), "{err}");
    assert_eq!(at(&err, "ERROR").len(), 1, "{err}");

    // Per crate: the REST server quiet, the rest at info.
    let (_, err) = job_binary(&h, Some("cairn_rest_server=warn,info"), &args);
    let info = at(&err, "INFO");
    assert!(!info.iter().any(|l| l.contains("cairn_rest_server")), "{err}");
    assert!(
        info.iter()
            .any(|l| l.contains("cairn::execution") && l.contains("starting the job")),
        "{err}"
    );

    // Not a filter: said so, and the default applies.
    let (_, err) = job_binary(&h, Some("x=[="), &args);
    assert!(
        at(&err, "WARN")
            .iter()
            .any(|l| l.contains("RUST_LOG='x=[='") && l.contains("not a valid filter")),
        "{err}"
    );
    assert!(!at(&err, "INFO").is_empty(), "{err}");
}

/// Runs `cairn args...` with `RUST_LOG` as given (unset for `None`).
fn cairn_logged(h: &Home, rust_log: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .env("CAIRN_HOME", h.path("home"))
        .env_remove("CAIRN_REST_TOKEN")
        .env_remove("CAIRN_CONF_DIR")
        .env_remove("CAIRN_PROGRESS")
        .env_remove("RUST_LOG");
    if let Some(spec) = rust_log {
        cmd.env("RUST_LOG", spec);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI is quiet by default and shows every REST call it makes at debug;
/// the job `cairn run` started logs into its log file.
#[test]
fn the_cli_shows_its_rest_calls_at_debug_and_the_job_logs_to_its_file() {
    let job = example("cli_demo_job");
    let h = Home::new("logs-cli");
    let out = h.path("out").display().to_string();
    let (code, o, err) = cairn_logged(
        &h,
        None,
        &[
            "run",
            "-Drest.port=0",
            "--",
            &job.display().to_string(),
            &out,
            "50",
            "3",
        ],
    );
    assert_eq!(code, 0, "{o}{err}");
    let jid = o
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_else(|| panic!("{o}"))
        .trim()
        .to_string();
    let log = o
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("log:"))
        .unwrap_or_else(|| panic!("{o}"))
        .trim()
        .to_string();

    let (code, _, quiet) = cairn_logged(&h, None, &["info", &jid]);
    assert_eq!(code, 0, "{quiet}");
    assert_eq!(quiet, "", "the CLI logs nothing below warn by default");

    let (code, _, debug) = cairn_logged(&h, Some("debug"), &["info", &jid]);
    assert_eq!(code, 0, "{debug}");
    let calls = at(&debug, "DEBUG");
    assert!(
        calls
            .iter()
            .any(|l| l.contains("REST call") && l.contains("GET") && l.contains(&format!("/jobs/{jid}"))),
        "{debug}"
    );

    // The job's own events went to its log file, at its default level.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let info = at(&text, "INFO");
        if info
            .iter()
            .any(|l| l.contains("REST API and web UI") && l.contains(&jid))
        {
            assert!(at(&text, "DEBUG").is_empty(), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no REST address in the job's log {log}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, o, err) = cairn_logged(&h, None, &["cancel", &jid]);
    assert_eq!(code, 0, "{o}{err}");
}
