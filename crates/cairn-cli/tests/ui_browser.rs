//! The web UI in real headless Chromium: `tests/ui/ui_flow.py` (Selenium
//! with Debian's chromium and chromium-driver) drives the flow an operator
//! follows, against a real job and `cairn dashboard`; this test starts them
//! and checks the outcome on disk and in the registry.
//!
//! Needs `chromium`, `chromedriver` and a Python with `selenium`
//! (`$CAIRN_SELENIUM_PYTHON`, else `python3`). `.ci/test` (`.ci/services/browser.sh`) installs them and
//! sets `CAIRN_REQUIRE_BROWSER=1`, which turns a missing piece into a
//! failure; elsewhere the test says it is skipped. Screenshots go to
//! `$CAIRN_UI_SCREENSHOTS` (docs/ui/ holds the ones in docs/ui.md).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{example, Home};

fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
        .trim()
}

/// The Python that has Selenium, or why there is none.
fn selenium_python() -> Result<String, String> {
    for b in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(b).exists() {
            return Err(format!("{b} is missing (apt-get install chromium chromium-driver)"));
        }
    }
    let py = std::env::var("CAIRN_SELENIUM_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import selenium"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{py} cannot import selenium (pip install selenium, or set CAIRN_SELENIUM_PYTHON)"
        ))
    }
}

/// Committed `key,count` lines of the file sink, per key.
fn committed(out_dir: &Path) -> BTreeMap<u64, Vec<u64>> {
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
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

struct Dashboard(std::process::Child);
impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn operate_jobs_in_the_browser() {
    let py = match selenium_python() {
        Ok(p) => p,
        Err(why) if std::env::var_os("CAIRN_REQUIRE_BROWSER").is_some() => {
            panic!("CAIRN_REQUIRE_BROWSER is set but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED operate_jobs_in_the_browser: {why}");
            return;
        }
    };
    let job = example("cli_demo_job");
    let h = Home::new("ui");
    let s = |p: &Path| p.display().to_string();
    let out = h.path("out");
    let o = h.expect(
        0,
        &[
            "run",
            "-p",
            "2",
            "-D",
            "rest.port=0",
            "-D",
            "execution.checkpointing.interval=700ms",
            "-D",
            "execution.checkpointing.unaligned.enabled=true",
            "-D",
            &format!("execution.checkpointing.dir={}", s(&h.path("checkpoints"))),
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(&h.path("savepoints"))),
            "--",
            &s(&job),
            &s(&out),
            "200",
            "6",
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    let job_url = after(&o, "REST: ").split(' ').next().unwrap().to_string();

    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dashboard", "--port", "0", "--token", "ui-test-token"])
        .env("CAIRN_HOME", h.path("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let dashboard = Dashboard(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the dashboard printed its address").unwrap();
        if let Some(u) = line.trim().strip_prefix("open ") {
            break u.to_string();
        }
    };
    assert!(url.ends_with("#token=ui-test-token"), "{url}");

    let shots = std::env::var_os("CAIRN_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| h.path("screenshots"));
    let chosen = h.path("chosen/anywhere");
    let run = Command::new(&py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/ui_flow.py"))
        .args(["--dashboard", &url, "--job-url", &job_url, "--jid", &jid])
        .args(["--savepoint-dir", &s(&chosen), "--shots", &s(&shots)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser flow failed (screenshots in {}):\n{stdout}\n{}\n{}",
        shots.display(),
        String::from_utf8_lossy(&run.stderr),
        job_log_warnings(&h.path("home/logs"))
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // What the UI showed is what happened.
    assert_eq!(seen["overview_parallelism"], "2", "{seen}");
    // Unaligned checkpoints are shown as such, with their in-flight data,
    // and the configuration says they are on.
    let types = seen["checkpoint_types"].as_array().unwrap();
    assert!(types.iter().any(|t| t == "UNALIGNED_CHECKPOINT"), "{seen}");
    assert!(seen["in_flight_column"].as_bool().unwrap(), "{seen}");
    assert_eq!(seen["config_unaligned"], "enabled", "{seen}");
    let grew = seen["checkpoints_grew"].as_array().unwrap();
    assert!(grew[1].as_u64() > grew[0].as_u64(), "{seen}");
    assert!(seen["edges"].as_array().unwrap().iter().any(|e| e == "HASH"), "{seen}");
    let ops: Vec<&str> = seen["operators"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    assert_eq!(ops, ["events", "running-count", "output"], "{seen}");
    let sp = PathBuf::from(seen["savepoint"].as_str().unwrap());
    assert!(sp.starts_with(&chosen) && sp.join("_metadata").is_file(), "{seen}");
    let stop_sp = PathBuf::from(seen["stop_savepoint"].as_str().unwrap());
    assert!(stop_sp.join("_metadata").is_file(), "{seen}");
    let before = committed(&out);
    assert_eq!(before.len(), 6, "all keys were seen: {before:?}");

    // The restored job runs from the stop's savepoint, with parallelism 3,
    // and its counts continue exactly where the stopped job's ended.
    let jid2 = seen["restored_jid"].as_str().unwrap().to_string();
    assert_ne!(jid2, jid);
    let o = h.expect(0, &["info", &jid2]);
    assert_eq!(after(&o, "Restored from:"), s(&stop_sp));
    assert!(o.contains("parallelism 3/128"), "{o}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = committed(&out);
        if before
            .iter()
            .all(|(k, c)| now.get(k).is_some_and(|n| n.len() > c.len() + 2))
        {
            for (k, counts) in &now {
                let want: Vec<u64> = (1..=counts.len() as u64).collect();
                assert_eq!(
                    counts, &want,
                    "key {k}: counts are not exactly 1..=n across the restore"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored job did not continue the counts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = h.expect(0, &["cancel", &jid2]);
    assert!(o.contains("Cancelled job"), "{o}");
    drop(dashboard);
}

/// The warnings and errors of the jobs' logs (the test's home is deleted
/// when it ends): why a job restarted or a savepoint failed.
fn job_log_warnings(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.push_str(&format!("--- {}:\n", entry.path().display()));
        for line in text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
