//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_snapshot::commit::{CheckpointSpec, ExpectedOperator};
use cairn_snapshot::metadata::{SnapshotKind, StateFileRef};
use cairn_snapshot::storage::Storage;
use cairn_snapshot::{JobId, StateFileWriter};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!(
            "cairn-snapshot-test-{}-{}-{}",
            tag,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const JOB: &str = "0123456789abcdef0123456789abcdef";
pub const OP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const OP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub fn job_id() -> JobId {
    JobId::parse(JOB).unwrap()
}

/// Two operators: A with parallelism 2, B with parallelism 1 (max parallelism 8).
pub fn operators() -> Vec<ExpectedOperator> {
    vec![
        ExpectedOperator {
            operator_id: OP_A.into(),
            uid: "counter".into(),
            name: "Counter".into(),
            parallelism: 2,
            max_parallelism: 8,
        },
        ExpectedOperator {
            operator_id: OP_B.into(),
            uid: "sink".into(),
            name: "Sink".into(),
            parallelism: 1,
            max_parallelism: 8,
        },
    ]
}

pub fn spec(checkpoint_id: u64, kind: SnapshotKind) -> CheckpointSpec {
    CheckpointSpec {
        job_id: job_id(),
        checkpoint_id,
        kind,
        trigger_timestamp_ms: 1_000 + checkpoint_id,
        operators: operators(),
    }
}

/// Writes a small state file at `dir/rel` (creating parents) and returns a
/// reference whose path is `ref_path`.
pub fn write_state(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    ref_path: &str,
    payload: &[u8],
    key_groups: &[u32],
) -> cairn_snapshot::Result<StateFileRef> {
    let path = dir.join(rel);
    storage.create_dir_all(path.parent().unwrap())?;
    let mut w = StateFileWriter::create(storage, &path)?;
    for kg in key_groups {
        w.begin_section("counts", Some(*kg))?;
        w.write_all(payload).unwrap();
        w.write_all(&kg.to_le_bytes()).unwrap();
    }
    w.begin_section("operator-list", None)?;
    w.write_all(b"list").unwrap();
    let info = w.finish_durable()?;
    Ok(info.to_file_ref(ref_path))
}

/// Every regular file under `dir`, relative, with forward slashes.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap();
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
