//! Fencing: only the current coordinator of a job may complete its
//! checkpoints. A coordinator that starts on a job directory takes the next
//! *epoch* (`<job>/fence/epoch-<k>`, created with put-if-absent, so two
//! starters never share one); every checkpoint it triggers is *claimed* first
//! (`chk-<n>/_claim`, put-if-absent, holding the epoch), so two coordinators
//! never write one checkpoint; and before a claim and before `_metadata` is
//! published it checks that no newer epoch exists. A zombie (an older
//! coordinator still running after a newer one started) therefore stops at its
//! next claim or commit; the window left is one check-to-publish step, and
//! whatever the zombie published there is numbered below everything the new
//! coordinator writes (it numbers its checkpoints above every claim it finds
//! after taking its epoch).

use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotError};
use crate::layout::parse_checkpoint_dir_name;
use crate::storage::Storage;

/// Directory of epoch markers under the job directory.
pub const FENCE_DIR: &str = "fence";
/// The claim file in a checkpoint directory.
pub const CLAIM_FILE_NAME: &str = "_claim";
const EPOCH_PREFIX: &str = "epoch-";

/// The epoch a coordinator holds on one job directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    job_dir: PathBuf,
    epoch: u64,
}

fn epoch_path(job_dir: &Path, epoch: u64) -> PathBuf {
    job_dir.join(FENCE_DIR).join(format!("{EPOCH_PREFIX}{epoch}"))
}

fn fenced(storage: &dyn Storage, job_dir: &Path, epoch: u64, what: String) -> SnapshotError {
    SnapshotError::Fenced {
        job_dir: PathBuf::from(storage.display(job_dir)),
        epoch,
        what,
    }
}

impl Fence {
    /// Take the next epoch on `job_dir` (creating `fence/`).
    pub fn acquire(storage: &dyn Storage, job_dir: &Path) -> Result<Fence> {
        let dir = job_dir.join(FENCE_DIR);
        storage.create_dir_all(&dir)?;
        // An object store has no empty directories: no markers yet.
        let markers = match storage.list(&dir) {
            Ok(m) => m,
            Err(SnapshotError::MissingFile { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut next = markers
            .iter()
            .filter_map(|e| e.name.strip_prefix(EPOCH_PREFIX)?.parse::<u64>().ok())
            .max()
            .map_or(1, |m| m + 1);
        loop {
            if storage.put_if_absent(&epoch_path(job_dir, next), next.to_string().as_bytes())? {
                return Ok(Fence {
                    job_dir: job_dir.to_path_buf(),
                    epoch: next,
                });
            }
            next += 1;
        }
    }

    /// This coordinator's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Fails with [`SnapshotError::Fenced`] when a newer coordinator started.
    pub fn check(&self, storage: &dyn Storage, what: &str) -> Result<()> {
        if storage.exists(&epoch_path(&self.job_dir, self.epoch + 1))? {
            return Err(fenced(storage, &self.job_dir, self.epoch, what.to_string()));
        }
        Ok(())
    }

    /// Claim checkpoint directory `chk_dir` for this epoch (the directory is
    /// created). Fails when another coordinator claimed it or this one is
    /// fenced out.
    pub fn claim(&self, storage: &dyn Storage, chk_dir: &Path) -> Result<()> {
        storage.create_dir_all(chk_dir)?;
        let claim = chk_dir.join(CLAIM_FILE_NAME);
        if !storage.put_if_absent(&claim, self.epoch.to_string().as_bytes())? {
            let owner = storage.read(&claim).map(|b| String::from_utf8_lossy(&b).into_owned());
            return Err(fenced(
                storage,
                &self.job_dir,
                self.epoch,
                format!(
                    "{} was already claimed by coordinator epoch {}",
                    storage.display(chk_dir),
                    owner.unwrap_or_else(|_| "?".into())
                ),
            ));
        }
        if let Err(fenced) = self.check(storage, &format!("claiming {}", storage.display(chk_dir))) {
            // Give the id back: leave no directory the newer coordinator skips for nothing.
            let _ = storage.delete_dir_all(chk_dir);
            return Err(fenced);
        }
        Ok(())
    }

    /// The first checkpoint id above every checkpoint directory (claimed or
    /// complete) under the job directory, and at least `at_least`.
    pub fn next_free_id(&self, storage: &dyn Storage, at_least: u64) -> Result<u64> {
        let highest = match storage.list(&self.job_dir) {
            Ok(entries) => entries
                .iter()
                .filter(|e| e.is_dir)
                .filter_map(|e| parse_checkpoint_dir_name(&e.name))
                .max(),
            Err(SnapshotError::MissingFile { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(highest.map_or(at_least, |h| (h + 1).max(at_least)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStorage;

    #[test]
    fn a_newer_coordinator_fences_the_older_one_out() {
        let s = InMemoryStorage::new();
        let job = Path::new("/ck/job");
        let old = Fence::acquire(&s, job).unwrap();
        old.claim(&s, &job.join("chk-1")).unwrap();
        old.check(&s, "commit").unwrap();
        let new = Fence::acquire(&s, job).unwrap();
        assert_eq!((old.epoch(), new.epoch()), (1, 2));
        let e = old.check(&s, "publishing chk-1").unwrap_err();
        assert!(matches!(e, SnapshotError::Fenced { epoch: 1, .. }), "{e}");
        assert!(e.to_string().contains("newer coordinator"), "{e}");
        assert!(old.claim(&s, &job.join("chk-2")).is_err(), "the zombie cannot claim");
        assert!(
            !s.exists(&job.join("chk-2")).unwrap(),
            "a refused claim leaves no directory"
        );
        assert_eq!(new.next_free_id(&s, 1).unwrap(), 2, "numbered above every claim");
        new.claim(&s, &job.join("chk-2")).unwrap();
    }

    #[test]
    fn a_claimed_checkpoint_cannot_be_claimed_again() {
        let s = InMemoryStorage::new();
        let job = Path::new("/ck/job");
        let a = Fence::acquire(&s, job).unwrap();
        a.claim(&s, &job.join("chk-5")).unwrap();
        let e = a.claim(&s, &job.join("chk-5")).unwrap_err().to_string();
        assert!(e.contains("already claimed"), "{e}");
    }

    #[test]
    fn racing_starters_get_distinct_epochs() {
        let s = InMemoryStorage::new();
        let job = Path::new("/ck/job");
        let epochs: Vec<u64> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| Fence::acquire(&s, job).unwrap().epoch()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = epochs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "{epochs:?}");
    }
}
