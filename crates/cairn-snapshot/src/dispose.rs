//! Disposing of a savepoint on request (`cairn savepoint --dispose`,
//! `POST /savepoint-disposal`).
//!
//! Savepoints belong to the user and Cairn never deletes one by itself; this
//! is the one place that does, when asked. It is deliberately narrow: it
//! deletes only a *directory* that directly holds a Cairn `_metadata` which
//! verifies (checksum of `_metadata` and of every file it names) and which
//! describes a *savepoint*. A file, a `_metadata` path, a checkpoint, a
//! directory without `_metadata` or one whose snapshot does not verify is
//! refused with an error naming it, and nothing is deleted.
//!
//! `_metadata` is deleted first, so a disposal interrupted half-way leaves a
//! directory that is visibly no longer a snapshot rather than a damaged one
//! that still looks complete.
//!
//! Callers that take paths from untrusted requests must first check them
//! (absolute, normalised, inside allowed roots, symbolic links resolved);
//! this module only checks that the target is a savepoint.

use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotError};
use crate::metadata::{SnapshotKind, METADATA_FILE_NAME};
use crate::restore::load_snapshot;
use crate::storage::Storage;

/// What [`dispose_savepoint`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisposedSavepoint {
    /// The savepoint directory, now gone.
    pub dir: PathBuf,
    /// The job that took the savepoint.
    pub job_id: String,
    /// The savepoint's checkpoint number.
    pub checkpoint_id: u64,
    /// How many state files it referenced.
    pub state_files: usize,
}

/// Checks that `dir` is a savepoint directory (see the module docs) and
/// returns its verified description, without deleting anything.
pub fn check_disposable(storage: &dyn Storage, dir: &Path) -> Result<DisposedSavepoint> {
    if dir.file_name().is_some_and(|n| n == METADATA_FILE_NAME) {
        return Err(SnapshotError::InvalidPath {
            path: dir.display().to_string(),
            reason: "this is a savepoint's _metadata file; pass the savepoint directory that holds it".into(),
        });
    }
    if dir.as_os_str().is_empty() || dir.parent().is_none() {
        return Err(SnapshotError::InvalidPath {
            path: dir.display().to_string(),
            reason: "not a savepoint directory".into(),
        });
    }
    if !storage.exists(dir)? {
        return Err(SnapshotError::MissingFile {
            path: dir.to_path_buf(),
        });
    }
    let entries = match storage.list(dir) {
        Ok(entries) => entries,
        Err(SnapshotError::MissingFile { .. }) => {
            return Err(SnapshotError::NotASnapshot {
                path: dir.to_path_buf(),
                reason: "it is a file, and only savepoint directories are disposed of".into(),
            })
        }
        Err(e) => return Err(e),
    };
    if !entries.iter().any(|e| e.name == METADATA_FILE_NAME && !e.is_dir) {
        return Err(SnapshotError::NotASnapshot {
            path: dir.to_path_buf(),
            reason: "it holds no '_metadata' file directly, so it is not a savepoint directory; nothing was deleted"
                .into(),
        });
    }
    let loaded = load_snapshot(storage, dir)?;
    let meta = &loaded.metadata;
    if !matches!(meta.kind, SnapshotKind::Savepoint { .. }) {
        return Err(SnapshotError::NotASnapshot {
            path: dir.to_path_buf(),
            reason: format!(
                "it is checkpoint {} of job {}, which the engine owns and deletes by retention; only savepoints are disposed of",
                meta.checkpoint_id, meta.job_id
            ),
        });
    }
    Ok(DisposedSavepoint {
        dir: dir.to_path_buf(),
        job_id: meta.job_id.clone(),
        checkpoint_id: meta.checkpoint_id,
        state_files: meta.files().count(),
    })
}

/// Deletes the savepoint directory `dir` after [`check_disposable`] accepted it.
pub fn dispose_savepoint(storage: &dyn Storage, dir: &Path) -> Result<DisposedSavepoint> {
    let found = check_disposable(storage, dir)?;
    storage.delete_file(&dir.join(METADATA_FILE_NAME))?;
    storage.delete_dir_all(dir)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{write_metadata, SavepointFormat, SnapshotMetadata, METADATA_VERSION};
    use crate::storage::{write_file, LocalFileStorage};
    use crate::{OperatorSnapshot, StateFileRef, SubtaskSnapshot};

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "cairn-dispose-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn snapshot(dir: &Path, kind: SnapshotKind) {
        let s = LocalFileStorage::new();
        s.create_dir_all(dir).unwrap();
        let bytes = b"state bytes";
        write_file(&s, &dir.join("op-0"), bytes).unwrap();
        let meta = SnapshotMetadata {
            format_version: METADATA_VERSION,
            kind,
            job_id: "0123456789abcdef0123456789abcdef".into(),
            checkpoint_id: 7,
            trigger_timestamp_ms: 1,
            completion_timestamp_ms: 2,
            cairn_version: "test".into(),
            operators: vec![OperatorSnapshot {
                operator_id: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                uid: "a".into(),
                name: "A".into(),
                parallelism: 1,
                max_parallelism: 8,
                subtasks: vec![SubtaskSnapshot {
                    subtask_index: 0,
                    files: vec![StateFileRef {
                        path: "op-0".into(),
                        size: bytes.len() as u64,
                        crc32: crate::checksum::crc32(bytes),
                        sections: vec![],
                        format: Default::default(),
                    }],
                }],
            }],
        };
        write_metadata(&s, dir, &meta).unwrap();
    }

    #[test]
    fn disposes_a_savepoint_directory() {
        let t = Tmp::new("ok");
        let sp = t.0.join("savepoint-012345-aaaaaaaaaaaa");
        snapshot(
            &sp,
            SnapshotKind::Savepoint {
                format: SavepointFormat::Canonical,
            },
        );
        let d = dispose_savepoint(&LocalFileStorage::new(), &sp).unwrap();
        assert_eq!(d.checkpoint_id, 7);
        assert_eq!(d.state_files, 1);
        assert!(!sp.exists());
        assert!(t.0.exists(), "the parent stays");
    }

    #[test]
    fn refuses_everything_else() {
        let t = Tmp::new("refuse");
        let s = LocalFileStorage::new();
        // A checkpoint.
        let chk = t.0.join("job/chk-7");
        snapshot(&chk, SnapshotKind::Checkpoint);
        let e = dispose_savepoint(&s, &chk).unwrap_err().to_string();
        assert!(e.contains("only savepoints"), "{e}");
        assert!(chk.join("_metadata").exists());
        // The _metadata file of a savepoint.
        let sp = t.0.join("sp");
        snapshot(
            &sp,
            SnapshotKind::Savepoint {
                format: SavepointFormat::Native,
            },
        );
        let e = dispose_savepoint(&s, &sp.join("_metadata")).unwrap_err().to_string();
        assert!(e.contains("pass the savepoint directory"), "{e}");
        // A plain file.
        let e = dispose_savepoint(&s, &sp.join("op-0")).unwrap_err().to_string();
        assert!(e.contains("it is a file"), "{e}");
        // A directory without _metadata (the parent of a savepoint).
        let e = dispose_savepoint(&s, &t.0).unwrap_err().to_string();
        assert!(e.contains("no '_metadata'"), "{e}");
        // Missing.
        let e = dispose_savepoint(&s, &t.0.join("nope")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        // A savepoint whose files do not verify.
        std::fs::write(sp.join("op-0"), b"tampered!!!").unwrap();
        let e = dispose_savepoint(&s, &sp).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        assert!(sp.join("_metadata").exists());
    }
}
