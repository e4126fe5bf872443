//! RocksDB snapshots as files: checkpoints (incremental or full) and native
//! savepoints (spec: `docs/formats/rocksdb-snapshot.md`).
//!
//! The synchronous part takes a RocksDB checkpoint (memtables flushed, SST
//! files hard-linked into a fresh directory); the runtime then uploads the
//! files. SST files are immutable and RocksDB never reuses a file number
//! within one instance, so an incremental checkpoint references the SSTs
//! the last completed checkpoint already uploaded and uploads only new ones
//! into the job's `shared/` directory. The other files (`CURRENT`,
//! `MANIFEST-*`, `OPTIONS-*`, and Cairn's `CAIRN-ROCKSDB` descriptor) are
//! small and belong to each snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use cairn_state::backend::{FileSetSnapshot, SnapshotFile, UploadedFile};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{StateError, StateMeta};

use crate::backend::StateColumn;
use crate::keys::KEY_GROUP_PREFIX_LEN;
use crate::local_dir::OwnedDir;

/// Name of Cairn's descriptor file in every RocksDB snapshot.
pub const DESCRIPTOR_FILE: &str = "CAIRN-ROCKSDB";
/// The snapshot layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// What Cairn records next to RocksDB's own files: the layout version, the
/// key groups the instance held, and which column family holds which state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub format: String,
    pub version: u32,
    pub key_group_prefix_bytes: usize,
    /// `[start, end_exclusive)` of the instance's key groups.
    pub key_groups: [u32; 2],
    pub column_families: Vec<DescribedState>,
}

/// One state's column family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedState {
    pub state: String,
    pub column_family: String,
}

impl Descriptor {
    pub(crate) fn new(range: KeyGroupRange, states: &[StateColumn]) -> Self {
        Descriptor {
            format: "cairn-rocksdb".into(),
            version: LAYOUT_VERSION,
            key_group_prefix_bytes: KEY_GROUP_PREFIX_LEN,
            key_groups: [range.start, range.end_exclusive],
            column_families: states
                .iter()
                .map(|s| DescribedState {
                    state: s.meta.name.clone(),
                    column_family: s.cf.clone(),
                })
                .collect(),
        }
    }

    /// Parse and check a descriptor read from a snapshot.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, StateError> {
        let d: Descriptor = serde_json::from_slice(bytes)
            .map_err(|e| StateError::Restore(format!("{what}: {DESCRIPTOR_FILE} is not valid: {e}")))?;
        if d.format != "cairn-rocksdb" {
            return Err(StateError::Restore(format!(
                "{what}: {DESCRIPTOR_FILE} describes format '{}', not cairn-rocksdb",
                d.format
            )));
        }
        if d.version != LAYOUT_VERSION || d.key_group_prefix_bytes != KEY_GROUP_PREFIX_LEN {
            return Err(StateError::Restore(format!(
                "{what}: RocksDB snapshot layout version {} (key-group prefix {} bytes) is not supported by this \
                 build, which reads version {LAYOUT_VERSION} ({KEY_GROUP_PREFIX_LEN} bytes); restore it with the \
                 Cairn release that wrote it and take a canonical savepoint",
                d.version, d.key_group_prefix_bytes
            )));
        }
        Ok(d)
    }
}

/// Which files later checkpoints may reference instead of uploading again.
#[derive(Default, Debug)]
pub(crate) struct UploadTracker {
    /// SSTs of the last completed checkpoint, by local name.
    confirmed: HashMap<String, UploadedFile>,
    /// Incremental checkpoints taken since and neither completed nor aborted.
    newer: BTreeMap<u64, Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// SSTs this checkpoint uploads itself.
    fresh: HashSet<String>,
    /// All its SSTs with their references, once uploaded.
    all: Option<HashMap<String, UploadedFile>>,
}

impl UploadTracker {
    /// The reference to reuse for SST `name`: only when the last completed
    /// checkpoint uploaded it and no newer pending checkpoint uploads its
    /// own copy (that copy would be the one retention keeps once the newer
    /// checkpoint completes).
    pub fn reusable(&self, name: &str) -> Option<&UploadedFile> {
        let u = self.confirmed.get(name)?;
        (!self.newer.values().any(|p| p.fresh.contains(name))).then_some(u)
    }

    pub fn begin(&mut self, checkpoint_id: u64, fresh: HashSet<String>) {
        self.newer.insert(checkpoint_id, Pending { fresh, all: None });
    }

    pub fn uploaded(&mut self, checkpoint_id: u64, all: HashMap<String, UploadedFile>) {
        if let Some(p) = self.newer.get_mut(&checkpoint_id) {
            p.all = Some(all);
        }
    }

    pub fn complete(&mut self, checkpoint_id: u64) {
        if let Some(Pending { all: Some(all), .. }) = self.newer.remove(&checkpoint_id) {
            self.confirmed = all;
            // Older pending checkpoints were subsumed.
            self.newer = self.newer.split_off(&checkpoint_id);
        }
    }

    pub fn abort(&mut self, checkpoint_id: u64) {
        self.newer.remove(&checkpoint_id);
    }

    /// Forget everything (a restored instance uploads all its files once).
    pub fn reset(&mut self) {
        *self = UploadTracker::default();
    }

    #[cfg(test)]
    pub fn confirmed_len(&self) -> usize {
        self.confirmed.len()
    }
}

pub(crate) type SharedTracker = Arc<Mutex<UploadTracker>>;

pub(crate) fn lock(t: &SharedTracker) -> MutexGuard<'_, UploadTracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a file of a RocksDB checkpoint directory is an SST.
pub fn is_sst(name: &str) -> bool {
    name.ends_with(".sst")
}

/// One RocksDB checkpoint, uploaded by the runtime.
pub(crate) struct RocksDbFileSnapshot {
    // The files live in `dir` until uploaded or discarded.
    files: Vec<SnapshotFile>,
    states: Vec<StateMeta>,
    /// `Some` for incremental checkpoints, which record what they uploaded.
    tracked: Option<(u64, SharedTracker)>,
    dir: OwnedDir,
}

impl RocksDbFileSnapshot {
    /// Describe the checkpoint in `dir`: SSTs are reused (when `tracked` and
    /// the tracker allows) or uploaded (`shared` for incremental
    /// checkpoints); every other file is uploaded as the snapshot's own.
    pub fn new(
        dir: OwnedDir,
        states: Vec<StateMeta>,
        tracked: Option<(u64, SharedTracker)>,
    ) -> Result<Self, StateError> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .map_err(|e| StateError::Backend(format!("listing the RocksDB checkpoint {}: {e}", dir.path().display())))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK" && !n.starts_with("LOG"))
            .collect();
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        let mut fresh = HashSet::new();
        {
            let tracker = tracked.as_ref().map(|(_, t)| lock(t));
            for name in names {
                let sst = is_sst(&name);
                if let (true, Some(t)) = (sst, tracker.as_ref()) {
                    if let Some(u) = t.reusable(&name) {
                        files.push(SnapshotFile::Reuse(u.clone()));
                        continue;
                    }
                    fresh.insert(name.clone());
                }
                files.push(SnapshotFile::Upload {
                    local_path: dir.path().join(&name),
                    shared: sst && tracker.is_some(),
                    name,
                });
            }
        }
        if let Some((id, t)) = &tracked {
            lock(t).begin(*id, fresh);
        }
        Ok(RocksDbFileSnapshot {
            files,
            states,
            tracked,
            dir,
        })
    }
}

impl FileSetSnapshot for RocksDbFileSnapshot {
    fn backend(&self) -> &str {
        "rocksdb"
    }

    fn states(&self) -> &[StateMeta] {
        &self.states
    }

    fn files(&self) -> &[SnapshotFile] {
        &self.files
    }

    fn uploaded(self: Box<Self>, uploaded: Vec<UploadedFile>) {
        if let Some((id, tracker)) = &self.tracked {
            let mut all: HashMap<String, UploadedFile> = HashMap::new();
            let mut fresh = uploaded.into_iter();
            for f in &self.files {
                match f {
                    SnapshotFile::Reuse(u) => {
                        all.insert(u.name.clone(), u.clone());
                    }
                    SnapshotFile::Upload { name, .. } => {
                        if let Some(u) = fresh.next() {
                            if is_sst(name) {
                                all.insert(name.clone(), u);
                            }
                        }
                    }
                }
            }
            lock(tracker).uploaded(*id, all);
        }
        drop(self.dir);
    }

    fn discard(self: Box<Self>) {
        if let Some((id, tracker)) = &self.tracked {
            lock(tracker).abort(*id);
        }
        drop(self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, path: &str) -> UploadedFile {
        UploadedFile {
            name: name.into(),
            path: path.into(),
            size: 1,
            crc32: 0,
        }
    }

    fn done(t: &mut UploadTracker, id: u64, files: &[(&str, &str)]) {
        t.begin(id, files.iter().map(|(n, _)| n.to_string()).collect());
        t.uploaded(id, files.iter().map(|(n, p)| (n.to_string(), up(n, p))).collect());
    }

    #[test]
    fn only_files_of_the_last_completed_checkpoint_are_reused() {
        let mut t = UploadTracker::default();
        done(
            &mut t,
            1,
            &[("1.sst", "../shared/a-1.sst"), ("2.sst", "../shared/a-2.sst")],
        );
        assert!(t.reusable("1.sst").is_none(), "checkpoint 1 has not completed");
        t.complete(1);
        assert_eq!(t.reusable("1.sst").map(|u| u.path.as_str()), Some("../shared/a-1.sst"));
        // Checkpoint 2 is aborted: nothing of it is reused, checkpoint 1's files still are.
        done(&mut t, 2, &[("3.sst", "../shared/b-3.sst")]);
        t.abort(2);
        t.complete(2);
        assert!(t.reusable("3.sst").is_none());
        assert!(t.reusable("2.sst").is_some());
        assert_eq!(t.confirmed_len(), 2);
    }

    #[test]
    fn a_file_a_pending_checkpoint_uploads_again_is_not_reused_from_an_older_one() {
        let mut t = UploadTracker::default();
        done(&mut t, 1, &[("1.sst", "../shared/a-1.sst")]);
        t.complete(1);
        // Checkpoint 2 uploaded its own copy of 1.sst (it was taken before
        // checkpoint 1's completion reached the backend); once 2 completes
        // retention keeps only that copy, so checkpoint 3 must not
        // reference checkpoint 1's.
        t.begin(2, ["1.sst".to_string()].into());
        assert!(t.reusable("1.sst").is_none());
        t.uploaded(2, [("1.sst".to_string(), up("1.sst", "../shared/b-1.sst"))].into());
        t.complete(2);
        assert_eq!(t.reusable("1.sst").map(|u| u.path.as_str()), Some("../shared/b-1.sst"));
    }

    #[test]
    fn descriptors_of_other_versions_are_refused_saying_what_to_do() {
        let d = Descriptor::new(
            KeyGroupRange {
                start: 0,
                end_exclusive: 4,
            },
            &[],
        );
        let mut bytes = serde_json::to_vec(&d).unwrap();
        assert_eq!(Descriptor::parse(&bytes, "x").unwrap(), d);
        let newer = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        let e = Descriptor::parse(newer.as_bytes(), "subtask 1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("subtask 1") && e.contains("version 2") && e.contains("canonical"),
            "{e}"
        );
        bytes.truncate(5);
        assert!(Descriptor::parse(&bytes, "x").is_err());
    }
}
