//! [`InMemoryStorage`]: storage in a map, for fast protocol tests. It behaves
//! like an object store (directories exist when something is below them or
//! they were created; a created file needs no parent), so tests against it
//! catch code that relies on local-file-system behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Result, SnapshotError};
use crate::storage::{DirEntry, Storage, StorageWriter};

#[derive(Debug, Default)]
struct Files {
    files: BTreeMap<PathBuf, Arc<Vec<u8>>>,
    dirs: BTreeSet<PathBuf>,
}

/// Storage held in memory; clones share the same files.
#[derive(Debug, Default, Clone)]
pub struct InMemoryStorage {
    inner: Arc<Mutex<Files>>,
}

impl InMemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Files> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every file path, sorted (for assertions).
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.lock().files.keys().cloned().collect()
    }
}

fn missing(path: &Path) -> SnapshotError {
    SnapshotError::MissingFile {
        path: path.to_path_buf(),
    }
}

struct MemoryWriter {
    owner: InMemoryStorage,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StorageWriter for MemoryWriter {
    fn finish(self: Box<Self>) -> Result<u64> {
        let len = self.buf.len() as u64;
        self.owner.lock().files.insert(self.path, Arc::new(self.buf));
        Ok(len)
    }
}

impl Storage for InMemoryStorage {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>> {
        Ok(Box::new(MemoryWriter {
            owner: self.clone(),
            path: path.to_path_buf(),
            buf: Vec::new(),
        }))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.lock()
            .files
            .get(path)
            .map(|b| b.to_vec())
            .ok_or_else(|| missing(path))
    }

    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
        let files = self.lock();
        let bytes = files.files.get(path).ok_or_else(|| missing(path))?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= bytes.len() as u64)
            .ok_or_else(|| {
                SnapshotError::corrupt(
                    path,
                    format!(
                        "range {offset}+{len} is beyond the end of the file ({} bytes)",
                        bytes.len()
                    ),
                )
            })?;
        Ok(bytes[offset as usize..end as usize].to_vec())
    }

    fn size(&self, path: &Path) -> Result<u64> {
        self.lock()
            .files
            .get(path)
            .map(|b| b.len() as u64)
            .ok_or_else(|| missing(path))
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        let files = self.lock();
        let mut out = BTreeSet::new();
        for p in files.files.keys() {
            if let Ok(rest) = p.strip_prefix(dir) {
                let mut parts = rest.components();
                if let Some(first) = parts.next() {
                    out.insert(DirEntry {
                        name: first.as_os_str().to_string_lossy().into_owned(),
                        is_dir: parts.next().is_some(),
                    });
                }
            }
        }
        for d in &files.dirs {
            if let Ok(rest) = d.strip_prefix(dir) {
                if let Some(first) = rest.components().next() {
                    out.insert(DirEntry {
                        name: first.as_os_str().to_string_lossy().into_owned(),
                        is_dir: true,
                    });
                }
            }
        }
        if out.is_empty() && !files.dirs.contains(dir) {
            return Err(missing(dir));
        }
        Ok(out.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        let files = self.lock();
        Ok(files.files.contains_key(path)
            || files.dirs.contains(path)
            || files.files.keys().any(|p| p.starts_with(path) && p != path))
    }

    fn delete_file(&self, path: &Path) -> Result<()> {
        self.lock().files.remove(path);
        Ok(())
    }

    fn delete_dir_all(&self, path: &Path) -> Result<()> {
        let mut files = self.lock();
        files.files.retain(|p, _| !p.starts_with(path));
        files.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.lock().dirs.insert(path.to_path_buf());
        Ok(())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.lock().files.insert(path.to_path_buf(), Arc::new(bytes.to_vec()));
        Ok(())
    }

    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        let mut files = self.lock();
        if files.files.contains_key(path) {
            return Ok(false);
        }
        files.files.insert(path.to_path_buf(), Arc::new(bytes.to_vec()));
        Ok(true)
    }

    fn display(&self, path: &Path) -> String {
        format!("memory://{}", path.display())
    }
}
