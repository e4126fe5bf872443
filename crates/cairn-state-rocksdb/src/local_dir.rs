//! The local working directories: one per job process
//! (`<localdir>/cairn-rocksdb-<job id>-<pid>-<n>/`), one per backend instance
//! inside it. Both are removed when dropped — the job ended (finished,
//! failed or cancelled) or the subtask was torn down. A process killed with
//! `kill -9` cannot clean up; the next job using the same local directory
//! removes directories whose owning process is gone.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_state::StateError;

/// Prefix of every job directory Cairn creates under the local directory.
pub const JOB_DIR_PREFIX: &str = "cairn-rocksdb-";
const OWNER_FILE: &str = "owner";
/// Job directories created by this process so far.
static FACTORIES: AtomicU64 = AtomicU64::new(0);

/// Hint appended to errors about the local directory.
pub(crate) const LOCAL_DIR_HINT: &str =
    "set state.backend.rocksdb.localdir to a writable directory on a disk with free space";

/// One job's working directory, removed on drop.
#[derive(Debug)]
pub struct JobDir {
    path: PathBuf,
    next: AtomicU64,
}

/// An error about a local path, with what to do.
pub(crate) fn local_err(what: &str, path: &Path, e: &io::Error) -> StateError {
    let full = if e.raw_os_error() == Some(28) {
        " (the disk is full)"
    } else {
        ""
    };
    StateError::Backend(format!(
        "RocksDB local state directory: cannot {what} {}: {e}{full}; {LOCAL_DIR_HINT}",
        path.display()
    ))
}

/// This process's start time (field 22 of `/proc/<pid>/stat`), so a reused
/// pid is not mistaken for the process that created a directory.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn owner_line() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", process_start_time(pid).unwrap_or(0))
}

/// Whether the process that created a job directory is gone. The owner
/// file (`<pid> <start time>`) decides; a process killed between creating
/// the directory and writing that file leaves none, or a partial line, so
/// then the pid in the directory's name (`...-<pid>-<n>`) decides, without
/// the start time: a live process with that pid keeps the directory.
fn owner_is_gone(owner: Option<&str>, dir_name: &str) -> bool {
    let mut parts = owner.unwrap_or("").split_whitespace();
    let recorded = parts.next().and_then(|p| p.parse::<u32>().ok());
    let start = parts.next().and_then(|s| s.parse::<u64>().ok());
    if let (Some(pid), Some(start)) = (recorded, start) {
        return match process_start_time(pid) {
            None => true,
            Some(now) => now != start,
        };
    }
    let mut from_name = dir_name.rsplit('-');
    let (Some(_n), Some(pid)) = (from_name.next(), from_name.next()) else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => process_start_time(pid).is_none(),
        Err(_) => false,
    }
}

impl JobDir {
    /// Create `<local_dir>/cairn-rocksdb-<job_id>-<pid>`, after removing
    /// leftovers of processes that no longer run. Fails with an error naming
    /// the path when the directory cannot be created or written.
    pub fn create(local_dir: &Path, job_id: &str) -> Result<Self, StateError> {
        fs::create_dir_all(local_dir).map_err(|e| local_err("create", local_dir, &e))?;
        remove_stale(local_dir);
        // Unique per factory, even for several factories of one job in one
        // process (tests): each removes only its own directory.
        let path = loop {
            let n = FACTORIES.fetch_add(1, Ordering::Relaxed);
            let path = local_dir.join(format!("{JOB_DIR_PREFIX}{job_id}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(local_err("create", &path, &e)),
            }
        };
        let dir = JobDir {
            path,
            next: AtomicU64::new(0),
        };
        // Proves the directory is writable, and marks who owns it.
        let owner = dir.path.join(OWNER_FILE);
        fs::File::create(&owner)
            .and_then(|mut f| f.write_all(owner_line().as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| local_err("write", &owner, &e))?;
        Ok(dir)
    }

    /// The job directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh, empty directory inside the job directory, removed on drop.
    pub fn subdir(&self, name: &str) -> Result<OwnedDir, StateError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{name}-{n}"));
        fs::create_dir_all(&path).map_err(|e| local_err("create", &path, &e))?;
        Ok(OwnedDir { path })
    }
}

impl JobDir {
    /// A fresh path inside the job directory that does not exist yet (for
    /// RocksDB checkpoints, which create their directory), removed on drop.
    pub fn reserve(&self, name: &str) -> OwnedDir {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        OwnedDir {
            path: self.path.join(format!("{name}-{n}")),
        }
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Remove `cairn-rocksdb-*` directories whose owner process is gone.
fn remove_stale(local_dir: &Path) {
    let Ok(entries) = fs::read_dir(local_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(JOB_DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let owner = fs::read_to_string(path.join(OWNER_FILE)).ok();
        if owner_is_gone(owner.as_deref(), &name.to_string_lossy()) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
}

impl OwnedDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-localdir-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn job_dir_is_created_and_removed_on_drop() {
        let root = scratch("drop");
        let job = JobDir::create(&root, "ab").unwrap();
        let sub = job.subdir("op").unwrap();
        assert!(sub.path().starts_with(job.path()));
        fs::write(sub.path().join("f"), b"x").unwrap();
        let (jp, sp) = (job.path().to_path_buf(), sub.path().to_path_buf());
        drop(sub);
        assert!(!sp.exists());
        drop(job);
        assert!(!jp.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
        let root = scratch("stale");
        fs::create_dir_all(root.join("cairn-rocksdb-dead-1")).unwrap();
        // pid 1 runs, but not since time 1: a reused pid.
        fs::write(root.join("cairn-rocksdb-dead-1/owner"), "1 1\n").unwrap();
        fs::create_dir_all(root.join("cairn-rocksdb-live-2")).unwrap();
        fs::write(root.join("cairn-rocksdb-live-2/owner"), owner_line()).unwrap();
        fs::create_dir_all(root.join("unrelated")).unwrap();
        // Killed before the owner file was written (or while writing it):
        // the pid in the name decides. No process has pid 4194304 (above
        // Linux's pid_max).
        fs::create_dir_all(root.join("cairn-rocksdb-j-4194304-0")).unwrap();
        fs::create_dir_all(root.join("cairn-rocksdb-j-4194304-1")).unwrap();
        fs::write(root.join("cairn-rocksdb-j-4194304-1/owner"), "41").unwrap();
        let me = std::process::id();
        fs::create_dir_all(root.join(format!("cairn-rocksdb-j-{me}-99"))).unwrap();
        fs::create_dir_all(root.join("cairn-rocksdb-no-pid")).unwrap();
        let job = JobDir::create(&root, "new").unwrap();
        assert!(!root.join("cairn-rocksdb-dead-1").exists());
        assert!(root.join("cairn-rocksdb-live-2").exists());
        assert!(root.join("unrelated").exists());
        assert!(!root.join("cairn-rocksdb-j-4194304-0").exists());
        assert!(!root.join("cairn-rocksdb-j-4194304-1").exists());
        assert!(root.join(format!("cairn-rocksdb-j-{me}-99")).exists());
        assert!(root.join("cairn-rocksdb-no-pid").exists());
        drop(job);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_local_dir_that_is_a_file_is_named_in_the_error() {
        let root = scratch("file");
        fs::write(&root, b"not a dir").unwrap();
        let e = JobDir::create(&root, "x").unwrap_err().to_string();
        assert!(e.contains(&root.display().to_string()), "{e}");
        assert!(e.contains("state.backend.rocksdb.localdir"), "{e}");
        fs::remove_file(&root).unwrap();
    }
}
