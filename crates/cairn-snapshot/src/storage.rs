//! The one interface to durable storage.
//!
//! Everything this crate (and the runtime, through it) persists goes through
//! [`Storage`]. [`LocalFileStorage`] implements it on the local file system;
//! object stores can implement it later. [`FaultInjectingStorage`] wraps any
//! storage and fails chosen operations, to test crash/failure behaviour.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Result, SnapshotError};

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// File name (last path component), not the full path.
    pub name: String,
    /// True for directories.
    pub is_dir: bool,
}

/// A file being written. Bytes go through [`Write`]; [`StorageWriter::finish`]
/// makes them durable (flush + fsync) and returns the file size. A writer
/// dropped without `finish` leaves a file whose content is unspecified.
pub trait StorageWriter: Write + Send {
    /// Flushes, fsyncs and closes the file; returns its size in bytes.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// Durable storage. Paths may be relative (to the process working directory
/// for local files) or absolute.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates (or truncates) a file for writing. Parent directories must exist.
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>>;
    /// Reads a whole file. A missing file yields [`SnapshotError::MissingFile`].
    fn read(&self, path: &Path) -> Result<Vec<u8>>;
    /// Reads `len` bytes starting at `offset`. Reading past the end is an error.
    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Size of a file in bytes.
    fn size(&self, path: &Path) -> Result<u64>;
    /// Lists a directory (sorted by name). A missing directory yields
    /// [`SnapshotError::MissingFile`].
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> Result<bool>;
    /// Deletes a file. Deleting a file that does not exist succeeds (idempotent).
    fn delete_file(&self, path: &Path) -> Result<()>;
    /// Deletes a directory and everything below it. Missing is fine.
    fn delete_dir_all(&self, path: &Path) -> Result<()>;
    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Publishes `bytes` at `path` atomically: readers see either no file (or
    /// the previous one) or the complete new content, never a partial file.
    /// Local implementation: write a temporary name in the same directory,
    /// fsync it, rename over `path`, fsync the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()>;
    /// Publishes `bytes` at `path` atomically only if nothing is there yet;
    /// false (and nothing written) when `path` already exists. Two writers
    /// racing for one path: exactly one gets true. This is what fences a
    /// zombie attempt out of a checkpoint and publishes `_metadata` on
    /// object stores (a conditional put).
    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool>;
    /// How `path` is written for people (a URI for object stores).
    fn display(&self, path: &Path) -> String {
        path.display().to_string()
    }
}

impl<S: Storage + ?Sized> Storage for Arc<S> {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>> {
        (**self).create(path)
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        (**self).read(path)
    }
    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
        (**self).read_range(path, offset, len)
    }
    fn size(&self, path: &Path) -> Result<u64> {
        (**self).size(path)
    }
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        (**self).list(dir)
    }
    fn exists(&self, path: &Path) -> Result<bool> {
        (**self).exists(path)
    }
    fn delete_file(&self, path: &Path) -> Result<()> {
        (**self).delete_file(path)
    }
    fn delete_dir_all(&self, path: &Path) -> Result<()> {
        (**self).delete_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        (**self).create_dir_all(path)
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        (**self).write_atomic(path, bytes)
    }
    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        (**self).put_if_absent(path, bytes)
    }
    fn display(&self, path: &Path) -> String {
        (**self).display(path)
    }
}

/// Writes `bytes` to a new file through `storage` and makes it durable.
/// Returns the size written.
pub fn write_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<u64> {
    let mut w = storage.create(path)?;
    w.write_all(bytes).map_err(|e| SnapshotError::io("write", path, e))?;
    w.finish()
}

// ---------------------------------------------------------------------------
// Local files
// ---------------------------------------------------------------------------

/// [`Storage`] on the local file system.
#[derive(Debug, Default, Clone)]
pub struct LocalFileStorage {
    _private: (),
}

impl LocalFileStorage {
    /// A storage rooted nowhere in particular: paths are used as given.
    pub fn new() -> Self {
        LocalFileStorage { _private: () }
    }
}

fn map_not_found(op: &'static str, path: &Path, e: io::Error) -> SnapshotError {
    if e.kind() == io::ErrorKind::NotFound || is_not_a_directory(&e) {
        SnapshotError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        SnapshotError::io(op, path, e)
    }
}

/// `ENOTDIR`: a path component that should be a directory is a file, so the
/// path cannot exist.
fn is_not_a_directory(e: &io::Error) -> bool {
    cfg!(unix) && e.raw_os_error() == Some(20)
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes a rename/creation durable on POSIX systems.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    #[cfg(unix)]
    {
        let f = fs::File::open(dir).map_err(|e| SnapshotError::io("open directory", dir, e))?;
        f.sync_all().map_err(|e| SnapshotError::io("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

struct LocalWriter {
    path: PathBuf,
    file: io::BufWriter<fs::File>,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl StorageWriter for LocalWriter {
    fn finish(self: Box<Self>) -> Result<u64> {
        let LocalWriter { path, file } = *self;
        let file = file
            .into_inner()
            .map_err(|e| SnapshotError::io("flush", &path, e.into_error()))?;
        file.sync_all().map_err(|e| SnapshotError::io("fsync", &path, e))?;
        let len = file.metadata().map_err(|e| SnapshotError::io("stat", &path, e))?.len();
        Ok(len)
    }
}

impl Storage for LocalFileStorage {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>> {
        let file = fs::File::create(path).map_err(|e| SnapshotError::io("create", path, e))?;
        Ok(Box::new(LocalWriter {
            path: path.to_path_buf(),
            file: io::BufWriter::with_capacity(64 * 1024, file),
        }))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        fs::read(path).map_err(|e| map_not_found("read", path, e))
    }

    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = fs::File::open(path).map_err(|e| map_not_found("open", path, e))?;
        let size = f.metadata().map_err(|e| SnapshotError::io("stat", path, e))?.len();
        if !matches!(offset.checked_add(len), Some(end) if end <= size) {
            return Err(SnapshotError::corrupt(
                path,
                format!("range {offset}+{len} is beyond the end of the file ({size} bytes)"),
            ));
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| SnapshotError::io("seek", path, e))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| SnapshotError::io("read", path, e))?;
        Ok(buf)
    }

    fn size(&self, path: &Path) -> Result<u64> {
        fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| map_not_found("stat", path, e))
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        let rd = fs::read_dir(dir).map_err(|e| map_not_found("list", dir, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| SnapshotError::io("list", dir, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| SnapshotError::io("stat", entry.path(), e))?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: ft.is_dir(),
            });
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound || is_not_a_directory(&e) => Ok(false),
            Err(e) => Err(SnapshotError::io("stat", path, e)),
        }
    }

    fn delete_file(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io("delete", path, e)),
        }
    }

    fn delete_dir_all(&self, path: &Path) -> Result<()> {
        match fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io("delete directory", path, e)),
        }
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(|e| SnapshotError::io("create directory", path, e))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = write_temp_beside(path, bytes)?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(SnapshotError::io("rename", path, e));
        }
        sync_dir(path.parent().unwrap_or(Path::new("")))
    }

    /// A hard link of a complete temporary file: `link` fails when the name
    /// exists, so the check and the publication are one atomic step.
    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        let tmp = write_temp_beside(path, bytes)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(path.parent().unwrap_or(Path::new("")))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SnapshotError::io("publish", path, e)),
        }
    }
}

/// Writes `bytes` durably to a fresh temporary name in `path`'s directory.
fn write_temp_beside(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| SnapshotError::InvalidPath {
        path: path.display().to_string(),
        reason: "an atomic write needs a file name".into(),
    })?;
    let parent = path.parent().unwrap_or(Path::new(""));
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| SnapshotError::io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| SnapshotError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| SnapshotError::io("fsync", &tmp, e))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

/// Kinds of storage operations, for [`FaultInjectingStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Create,
    /// `StorageWriter::finish` (the flush + fsync of a created file).
    Finish,
    Read,
    ReadRange,
    Size,
    List,
    Exists,
    DeleteFile,
    DeleteDirAll,
    CreateDirAll,
    WriteAtomic,
    PutIfAbsent,
}

/// When an injected fault strikes relative to the real operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// The operation is not performed; an error is returned.
    Before,
    /// The operation is performed, then an error is returned (models e.g. a
    /// rename that happened but whose directory fsync failed, or a lost reply).
    After,
}

#[derive(Debug, Default)]
struct FaultState {
    counts: HashMap<OpKind, u64>,
    /// (kind, nth 1-based occurrence, timing, the error's kind)
    planned: Vec<(OpKind, u64, FaultTiming, io::ErrorKind)>,
    /// Every operation performed, in order, with the path.
    log: Vec<(OpKind, PathBuf)>,
}

/// Wraps a [`Storage`] and fails the N-th operation of a given kind.
///
/// Counting is per kind and starts at 1 with the first operation of that kind
/// after construction (or after [`FaultInjectingStorage::reset_counts`]).
/// Injected errors are [`SnapshotError::Io`] with an `io::ErrorKind::Other`
/// source whose message contains "injected fault", or a chosen kind (e.g.
/// `StorageFull`, to model a full disk) with [`FaultInjectingStorage::fail_nth_with`].
#[derive(Debug, Clone)]
pub struct FaultInjectingStorage<S> {
    inner: S,
    state: Arc<Mutex<FaultState>>,
}

impl<S: Storage> FaultInjectingStorage<S> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: S) -> Self {
        FaultInjectingStorage {
            inner,
            state: Arc::new(Mutex::new(FaultState::default())),
        }
    }

    /// Plans a failure of the `nth` (1-based) operation of `kind` from now on.
    pub fn fail_nth(&self, kind: OpKind, nth: u64, timing: FaultTiming) {
        self.fail_nth_with(kind, nth, timing, io::ErrorKind::Other);
    }

    /// Like [`FaultInjectingStorage::fail_nth`], with an error of `error_kind`
    /// (`StorageFull` behaves as a full disk, `ReadOnlyFilesystem` as a
    /// read-only mount).
    pub fn fail_nth_with(&self, kind: OpKind, nth: u64, timing: FaultTiming, error_kind: io::ErrorKind) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let base = st.counts.get(&kind).copied().unwrap_or(0);
        st.planned.push((kind, base + nth, timing, error_kind));
    }

    /// Removes all planned faults.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).planned.clear();
    }

    /// Number of operations of `kind` attempted so far.
    pub fn count(&self, kind: OpKind) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// All operations attempted so far, in order.
    pub fn log(&self) -> Vec<(OpKind, PathBuf)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).log.clone()
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, kind: OpKind, path: &Path) -> Option<(FaultTiming, io::ErrorKind)> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = st.counts.entry(kind).or_insert(0);
        *c += 1;
        let n = *c;
        st.log.push((kind, path.to_path_buf()));
        let idx = st.planned.iter().position(|(k, nth, _, _)| *k == kind && *nth == n)?;
        let (_, _, timing, error_kind) = st.planned.remove(idx);
        Some((timing, error_kind))
    }

    fn run<T>(&self, kind: OpKind, path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.check(kind, path) {
            None => f(),
            Some((FaultTiming::Before, e)) => Err(injected(kind, path, e)),
            Some((FaultTiming::After, e)) => {
                f()?;
                Err(injected(kind, path, e))
            }
        }
    }
}

fn injected(kind: OpKind, path: &Path, error_kind: io::ErrorKind) -> SnapshotError {
    SnapshotError::io(
        "injected",
        path,
        io::Error::new(error_kind, format!("injected fault in {kind:?}")),
    )
}

struct FaultWriter<S> {
    owner: FaultInjectingStorage<S>,
    path: PathBuf,
    inner: Box<dyn StorageWriter>,
}

impl<S: Send> Write for FaultWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Storage> StorageWriter for FaultWriter<S> {
    fn finish(self: Box<Self>) -> Result<u64> {
        let FaultWriter { owner, path, inner } = *self;
        owner.run(OpKind::Finish, &path, || inner.finish())
    }
}

impl<S: Storage + Clone + 'static> Storage for FaultInjectingStorage<S> {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>> {
        let inner = self.run(OpKind::Create, path, || self.inner.create(path))?;
        Ok(Box::new(FaultWriter {
            owner: self.clone(),
            path: path.to_path_buf(),
            inner,
        }))
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.run(OpKind::Read, path, || self.inner.read(path))
    }
    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(OpKind::ReadRange, path, || self.inner.read_range(path, offset, len))
    }
    fn size(&self, path: &Path) -> Result<u64> {
        self.run(OpKind::Size, path, || self.inner.size(path))
    }
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        self.run(OpKind::List, dir, || self.inner.list(dir))
    }
    fn exists(&self, path: &Path) -> Result<bool> {
        self.run(OpKind::Exists, path, || self.inner.exists(path))
    }
    fn delete_file(&self, path: &Path) -> Result<()> {
        self.run(OpKind::DeleteFile, path, || self.inner.delete_file(path))
    }
    fn delete_dir_all(&self, path: &Path) -> Result<()> {
        self.run(OpKind::DeleteDirAll, path, || self.inner.delete_dir_all(path))
    }
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.run(OpKind::CreateDirAll, path, || self.inner.create_dir_all(path))
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.run(OpKind::WriteAtomic, path, || self.inner.write_atomic(path, bytes))
    }
    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        self.run(OpKind::PutIfAbsent, path, || self.inner.put_if_absent(path, bytes))
    }
    fn display(&self, path: &Path) -> String {
        self.inner.display(path)
    }
}
