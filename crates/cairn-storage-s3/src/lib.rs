//! Cairn's [`Storage`] on S3-compatible object stores, through the
//! `object_store` crate. Locations are `s3://<bucket>/<key prefix>/...`; a job
//! registers this storage for the `s3` scheme in its
//! [`cairn_snapshot::StorageRouter`], so checkpoints, savepoints, retention,
//! claim modes and dispose work as on local files.
//!
//! Object stores have no directories: a "directory" exists when an object lies
//! below it, creating one is a no-op, deleting one deletes every object below
//! it. Every put is atomic; [`Storage::put_if_absent`] is a conditional put
//! (`If-None-Match: *`), which publishes `_metadata` and fences zombie
//! coordinators.
//!
//! The engine core stays free of async runtimes: this crate owns a small
//! tokio runtime on threads of its own and blocks the calling (task or writer)
//! thread on each request.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_snapshot::storage::DirEntry;
use cairn_snapshot::{SnapshotError, Storage, StorageWriter};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

#[doc(hidden)]
pub mod test_server;

/// Objects larger than this are uploaded in parts of this size.
const PART_SIZE: usize = 16 << 20;
/// Parts of one object uploaded at once.
const PART_CONCURRENCY: usize = 2;

/// How to reach the object store: Flink's `s3.*` keys, else the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// `s3.endpoint`: e.g. `http://127.0.0.1:9000` for an S3-compatible server.
    pub endpoint: Option<String>,
    /// `s3.access-key`.
    pub access_key: Option<String>,
    /// `s3.secret-key`.
    pub secret_key: Option<String>,
    /// `s3.region` (default `us-east-1`).
    pub region: Option<String>,
    /// `s3.path.style.access`: `http://endpoint/bucket/key` instead of
    /// `http://bucket.endpoint/key` (what most S3-compatible servers need).
    pub path_style_access: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key.as_ref().map(|_| "<set>"))
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<set>"))
            .field("region", &self.region)
            .field("path_style_access", &self.path_style_access)
            .finish()
    }
}

/// [`Storage`] on S3: one client per bucket, shared by every thread; clones
/// share the clients and the runtime.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    settings: S3Settings,
    runtime: tokio::runtime::Runtime,
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

fn io_error(op: &'static str, path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> SnapshotError {
    SnapshotError::io(op, path, io::Error::other(e))
}

fn map_error(op: &'static str, path: &Path, e: object_store::Error) -> SnapshotError {
    match e {
        object_store::Error::NotFound { .. } => SnapshotError::MissingFile {
            path: path.to_path_buf(),
        },
        other => io_error(op, path, other),
    }
}

/// `s3://bucket/a/b` → (`bucket`, `a/b`).
fn split_location(path: &Path) -> Result<(String, ObjectPath), SnapshotError> {
    let text = path.to_string_lossy();
    let invalid = |reason: &str| SnapshotError::InvalidPath {
        path: text.to_string(),
        reason: reason.into(),
    };
    let rest = text
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("an S3 location starts with s3://"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("the location names no bucket: use s3://<bucket>/<prefix>"));
    }
    let key =
        ObjectPath::parse(key.trim_end_matches('/')).map_err(|e| invalid(&format!("not a valid object key: {e}")))?;
    Ok((bucket.to_string(), key))
}

impl Inner {
    fn client(&self, bucket: &str, path: &Path) -> Result<Arc<AmazonS3>, SnapshotError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = buckets.get(bucket) {
            return Ok(c.clone());
        }
        let s = &self.settings;
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &s.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(k) = &s.access_key {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &s.secret_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(r) = &s.region {
            b = b.with_region(r);
        }
        if s.path_style_access {
            b = b.with_virtual_hosted_style_request(false);
        }
        let client = Arc::new(b.build().map_err(|e| SnapshotError::InvalidPath {
            path: path.display().to_string(),
            reason: format!(
                "the S3 client cannot be configured ({e}); set s3.endpoint, s3.access-key and s3.secret-key \
                 (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), and s3.path.style.access: true for most \
                 S3-compatible servers"
            ),
        })?);
        buckets.insert(bucket.to_string(), client.clone());
        Ok(client)
    }

    fn locate(&self, path: &Path) -> Result<(Arc<AmazonS3>, ObjectPath), SnapshotError> {
        let (bucket, key) = split_location(path)?;
        Ok((self.client(&bucket, path)?, key))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl S3Storage {
    /// A storage reaching S3 (or an S3-compatible server) with `settings`.
    pub fn new(settings: S3Settings) -> Result<Self, SnapshotError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| SnapshotError::io("start the S3 client runtime", PathBuf::from("s3://"), e))?;
        Ok(S3Storage {
            inner: Arc::new(Inner {
                settings,
                runtime,
                buckets: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Every object below `dir` (recursively).
    fn objects_below(&self, dir: &Path) -> Result<(Arc<AmazonS3>, Vec<ObjectPath>), SnapshotError> {
        let (client, key) = self.inner.locate(dir)?;
        let prefix = (!key.as_ref().is_empty()).then_some(key);
        let list: Vec<ObjectPath> = self
            .inner
            .block_on(client.list(prefix.as_ref()).map_ok(|m| m.location).try_collect())
            .map_err(|e| map_error("list", dir, e))?;
        Ok((client, list))
    }
}

/// An object being written: small ones in one put, large ones in parts.
struct S3Writer {
    inner: Arc<Inner>,
    client: Arc<AmazonS3>,
    key: ObjectPath,
    path: PathBuf,
    buf: Vec<u8>,
    multipart: Option<WriteMultipart>,
    size: u64,
}

impl S3Writer {
    fn flush_part(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.buf);
        if self.multipart.is_none() {
            let started = self
                .inner
                .block_on(self.client.put_multipart(&self.key))
                .map_err(io::Error::other)?;
            self.multipart = Some(WriteMultipart::new_with_chunk_size(started, PART_SIZE));
        }
        let upload = self.multipart.as_mut().expect("started above");
        self.inner
            .block_on(upload.wait_for_capacity(PART_CONCURRENCY))
            .map_err(io::Error::other)?;
        // Parts are sent by tasks spawned on the storage's runtime.
        let _runtime = self.inner.runtime.enter();
        upload.put(Bytes::from(part));
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        if self.buf.len() >= PART_SIZE {
            self.flush_part()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StorageWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<u64, SnapshotError> {
        let path = self.path.clone();
        match self.multipart.take() {
            None => {
                let payload = PutPayload::from(std::mem::take(&mut self.buf));
                self.inner
                    .block_on(self.client.put(&self.key, payload))
                    .map_err(|e| map_error("upload", &path, e))?;
            }
            Some(mut upload) => {
                if !self.buf.is_empty() {
                    let _runtime = self.inner.runtime.enter();
                    upload.put(Bytes::from(std::mem::take(&mut self.buf)));
                }
                self.inner
                    .block_on(upload.finish())
                    .map_err(|e| map_error("complete the upload", &path, e))?;
            }
        }
        Ok(self.size)
    }
}

impl Storage for S3Storage {
    fn create(&self, path: &Path) -> Result<Box<dyn StorageWriter>, SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            client,
            key,
            path: path.to_path_buf(),
            buf: Vec::new(),
            multipart: None,
            size: 0,
        }))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        let bytes = self
            .inner
            .block_on(async { client.get(&key).await?.bytes().await })
            .map_err(|e| map_error("read", path, e))?;
        Ok(bytes.to_vec())
    }

    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SnapshotError> {
        let size = self.size(path)?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= size)
            .ok_or_else(|| SnapshotError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("range {offset}+{len} is beyond the end of the file ({size} bytes)"),
            })?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let (client, key) = self.inner.locate(path)?;
        let bytes = self
            .inner
            .block_on(client.get_range(&key, offset..end))
            .map_err(|e| map_error("read", path, e))?;
        Ok(bytes.to_vec())
    }

    fn size(&self, path: &Path) -> Result<u64, SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        let meta = self
            .inner
            .block_on(client.head(&key))
            .map_err(|e| map_error("stat", path, e))?;
        Ok(meta.size)
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>, SnapshotError> {
        let (client, key) = self.inner.locate(dir)?;
        let prefix = (!key.as_ref().is_empty()).then_some(key);
        let listed = self
            .inner
            .block_on(client.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| map_error("list", dir, e))?;
        let mut out: Vec<DirEntry> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(|name| DirEntry {
                name: name.to_string(),
                is_dir: true,
            })
            .chain(
                listed
                    .objects
                    .iter()
                    .filter_map(|o| o.location.filename())
                    .map(|name| DirEntry {
                        name: name.to_string(),
                        is_dir: false,
                    }),
            )
            .collect();
        if out.is_empty() {
            // An empty "directory" is not there on an object store.
            return Err(SnapshotError::MissingFile {
                path: dir.to_path_buf(),
            });
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> Result<bool, SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        match self.inner.block_on(client.head(&key)) {
            Ok(_) => return Ok(true),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(map_error("stat", path, e)),
        }
        let prefix = (!key.as_ref().is_empty()).then_some(key);
        let first = self
            .inner
            .block_on(async { client.list(prefix.as_ref()).next().await.transpose() })
            .map_err(|e| map_error("list", path, e))?;
        Ok(first.is_some())
    }

    fn delete_file(&self, path: &Path) -> Result<(), SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        match self.inner.block_on(client.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error("delete", path, e)),
        }
    }

    fn delete_dir_all(&self, path: &Path) -> Result<(), SnapshotError> {
        let (client, objects) = self.objects_below(path)?;
        let locations = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.inner.block_on(client.delete_stream(locations).collect::<Vec<_>>());
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_error("delete directory", path, e)),
            }
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<(), SnapshotError> {
        // No directories on an object store; the location must still parse.
        split_location(path).map(|_| ())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        self.inner
            .block_on(client.put(&key, PutPayload::from(bytes.to_vec())))
            .map_err(|e| map_error("upload", path, e))?;
        Ok(())
    }

    fn put_if_absent(&self, path: &Path, bytes: &[u8]) -> Result<bool, SnapshotError> {
        let (client, key) = self.inner.locate(path)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .block_on(client.put_opts(&key, PutPayload::from(bytes.to_vec()), opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(map_error("conditional upload", path, e)),
        }
    }
}
