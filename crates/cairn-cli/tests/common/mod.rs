//! Running the `cairn` binary in a private `CAIRN_HOME`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(tag: &str) -> Home {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Home {
            dir: std::fs::canonicalize(dir).unwrap(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Runs `cairn args...`; returns (exit code, stdout, stderr).
    pub fn cairn(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("CAIRN_HOME", self.dir.join("home"))
            .env_remove("CAIRN_REST_TOKEN")
            .env_remove("CAIRN_CONF_DIR")
            .env_remove("CAIRN_PROGRESS")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `cairn args...` with extra environment; returns (exit code, stdout, stderr).
    pub fn cairn_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(args)
            .env("CAIRN_HOME", self.dir.join("home"))
            .env_remove("CAIRN_REST_TOKEN")
            .env_remove("CAIRN_CONF_DIR")
            .env_remove("CAIRN_PROGRESS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `cairn`, expecting exit code `code`; returns stdout.
    #[track_caller]
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        let (c, out, err) = self.cairn(args);
        assert_eq!(c, code, "cairn {args:?}\n--- stdout\n{out}--- stderr\n{err}");
        out
    }

    /// The pids of the jobs registered in this home.
    pub fn registered_pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("home/jobs")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
            .collect()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Kill the job processes this test started, if any is left.
        for pid in self.registered_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `cargo test` built the example job `name` (override with
/// `CAIRN_CLI_DEMO_JOB`).
pub fn example(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_CLI_DEMO_JOB") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p cairn --example {name}` \
         (`cargo test --workspace` builds it), or point CAIRN_CLI_DEMO_JOB at it",
        path.display()
    );
    path
}
