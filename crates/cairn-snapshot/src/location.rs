//! Storage chosen from the scheme of a location. A checkpoint directory or a
//! savepoint path is a plain path or `file://...` (local files) or a URI of
//! another scheme (`s3://bucket/prefix`) served by a storage registered for
//! it. The job builds one [`StorageRouter`] from its configuration and passes
//! it down as its `Arc<dyn Storage>`; no component builds its own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, SnapshotError};
use crate::storage::{DirEntry, LocalFileStorage, Storage, StorageWriter};

/// The scheme of `location` (`"s3"` for `s3://b/k`), if it is a URI.
pub fn scheme_of(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(scheme)
}

/// A user-given location as the path storage is addressed with: `file://`
/// URIs become plain paths; other URIs stay as they are.
pub fn normalize_location(location: &str) -> PathBuf {
    match location.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None => PathBuf::from(location),
    }
}

/// Dispatches every operation to the storage of its path's scheme: local
/// files for plain paths, a registered storage for URIs.
#[derive(Clone)]
pub struct StorageRouter {
    local: LocalFileStorage,
    schemes: BTreeMap<String, Arc<dyn Storage>>,
}

impl fmt::Debug for StorageRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageRouter")
            .field("schemes", &self.schemes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for StorageRouter {
    fn default() -> Self {
        Self::local_only()
    }
}

impl StorageRouter {
    /// Local files only; URIs are refused with an error naming the scheme.
    pub fn local_only() -> Self {
        StorageRouter {
            local: LocalFileStorage::new(),
            schemes: BTreeMap::new(),
        }
    }

    /// Serve URIs of `scheme` (without `://`) with `storage`; it receives the
    /// whole URI as its path.
    pub fn with_scheme(mut self, scheme: &str, storage: Arc<dyn Storage>) -> Self {
        self.schemes.insert(scheme.to_ascii_lowercase(), storage);
        self
    }

    /// This router as the `Arc<dyn Storage>` components take.
    pub fn shared(self) -> Arc<dyn Storage> {
        Arc::new(self)
    }

    /// Whether this router can serve `location`: an error naming the
    /// scheme (and how to get it) when no storage is registered for it.
    pub fn check_location(&self, location: &Path) -> Result<()> {
        self.route(location).map(|_| ())
    }

    fn route(&self, path: &Path) -> Result<(&dyn Storage, PathBuf)> {
        let text = path.to_string_lossy();
        if let Some(rest) = text.strip_prefix("file://") {
            return Ok((&self.local, PathBuf::from(rest)));
        }
        match scheme_of(&text) {
            None => Ok((&self.local, path.to_path_buf())),
            Some(scheme) => match self.schemes.get(&scheme.to_ascii_lowercase()) {
                Some(s) => Ok((&**s, path.to_path_buf())),
                None => Err(SnapshotError::InvalidPath {
                    path: text.to_string(),
                    reason: format!(
                        "no storage for '{scheme}://' locations in this build: use a local path or file:// URI{}",
                        if scheme.eq_ignore_ascii_case("s3") {
                            ", or build the job with Cairn's `s3` feature (cairn = { features = [\"s3\"] })"
                        } else {
                            ""
                        }
                    ),
                }),
            },
        }
    }
}

impl Storage for StorageRouter {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>> {
        let (s, p) = self.route(path)?;
        s.create(&p)
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let (s, p) = self.route(path)?;
        s.read(&p)
    }
    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (s, p) = self.route(path)?;
        s.read_range(&p, offset, len)
    }
    fn size(&self, path: &Path) -> Result<u64> {
        let (s, p) = self.route(path)?;
        s.size(&p)
    }
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        let (s, p) = self.route(dir)?;
        s.list(&p)
    }
    fn exists(&self, path: &Path) -> Result<bool> {
        let (s, p) = self.route(path)?;
        s.exists(&p)
    }
    fn delete_file(&self, path: &Path) -> Result<()> {
        let (s, p) = self.route(path)?;
        s.delete_file(&p)
    }
    fn delete_dir_all(&self, path: &Path) -> Result<()> {
        let (s, p) = self.route(path)?;
        s.delete_dir_all(&p)
    }
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let (s, p) = self.route(path)?;
        s.create_dir_all(&p)
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let (s, p) = self.route(path)?;
        s.write_atomic(&p, bytes)
    }
    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        let (s, p) = self.route(path)?;
        s.put_if_absent(&p, bytes)
    }
    fn display(&self, path: &Path) -> String {
        match self.route(path) {
            Ok((s, p)) => s.display(&p),
            Err(_) => path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStorage;

    #[test]
    fn schemes_are_recognised() {
        assert_eq!(scheme_of("s3://bucket/key"), Some("s3"));
        assert_eq!(scheme_of("file:///tmp/x"), Some("file"));
        assert_eq!(scheme_of("/tmp/x"), None);
        assert_eq!(scheme_of("relative/dir"), None);
        assert_eq!(scheme_of("odd name://x"), None);
        assert_eq!(normalize_location("file:///tmp/x"), PathBuf::from("/tmp/x"));
        assert_eq!(normalize_location("s3://b/k"), PathBuf::from("s3://b/k"));
    }

    #[test]
    fn uris_go_to_their_storage_and_unknown_schemes_are_named() {
        let mem = InMemoryStorage::new();
        let router = StorageRouter::local_only().with_scheme("mem", Arc::new(mem.clone()));
        router.write_atomic(Path::new("mem://b/chk-1/_metadata"), b"x").unwrap();
        assert_eq!(mem.read(Path::new("mem://b/chk-1/_metadata")).unwrap(), b"x");
        let err = router.read(Path::new("s3://bucket/x")).unwrap_err().to_string();
        assert!(err.contains("s3://") && err.contains("`s3` feature"), "{err}");
    }

    #[test]
    fn file_uris_are_local_paths() {
        let dir = std::env::temp_dir().join(format!("cairn-router-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let router = StorageRouter::local_only();
        let uri = format!("file://{}", dir.join("f").display());
        router.write_atomic(Path::new(&uri), b"hello").unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"hello");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
