//! Writing a subtask's operator snapshot into a state file, and reading it
//! back for restore. One file per (operator, subtask); keyed state goes into
//! one section per (state, key group) so a rescaled restore reads only the key
//! groups it owns.
//!
//! Sections: `keyed/<state name>` (key group set) hold
//! [`cairn_state::snapshot_codec`] entries (values are the value codec's
//! MessagePack, keys the key encoding); `keyed-states` holds the states'
//! metadata as JSON; `operator` holds the operator state entries (the entry
//! list framed with the key encoding, each element in the value codec). A
//! backend that snapshots into files of its own (RocksDB) has no `keyed/`
//! sections but a `backend-files` section listing those files, which
//! `_metadata` references beside the state file.
//!
//! Canonical savepoints ([`write_canonical_file`]) are Parquet files instead,
//! readable without Cairn (spec: `docs/formats/savepoint-canonical.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cairn_snapshot::checksum::ChecksummingWriter;
use cairn_snapshot::layout::{IdGenerator, SHARED_DIR};
use cairn_snapshot::parquet::{
    BytesColumn, ColumnData, ColumnDef, ColumnType, ParquetError, ParquetFile, ParquetFooter, ParquetWriter,
    RowGroupBuilder,
};
use cairn_snapshot::{FileFormat, SnapshotError, StateFileRef, StateFileWriter, Storage, StorageWriter};
use cairn_state::canonical::{
    mode_from_name, mode_name, operator_entries_from_rows, operator_rows, states_from_json, states_to_json,
    GroupFromRows, KeyCodec, KeyedRow, OperatorRow, RowIn, RowsFromGroups, CANONICAL_FORMAT_VERSION,
};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::operator_state::OperatorStateEntry;
use cairn_state::{
    BackendSnapshot, KeyedStateBackend, KeyedStateSnapshot, SnapshotFile, StateError, StateMeta, UploadedFile,
};

use crate::operator::OperatorSnapshot;
use crate::upload::{copy_local_file, WriteTicket};

/// Why a subtask's snapshot files could not be written or read. Storage
/// failures keep their [`SnapshotError`] (which names the path and tells a
/// full or read-only disk from other trouble); content that does not decode
/// names the file and what is wrong with it.
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotIoError {
    /// The storage underneath failed.
    Storage(SnapshotError),
    /// The state backend failed while its state was read or written.
    State(StateError),
    /// A file's content does not decode (corrupt, or not what its format says).
    Corrupt { file: String, detail: String },
    /// Cairn's own mistake (encoding its metadata, a writer thread that died).
    Internal(String),
    /// Writing a canonical (Parquet, format v2) file failed; `cairn-canonical`
    /// reports its causes as text, storage failures included.
    Canonical(String),
}

impl SnapshotIoError {
    /// A decoding failure of `file`.
    pub fn corrupt(file: impl Into<String>, detail: impl fmt::Display) -> Self {
        SnapshotIoError::Corrupt {
            file: file.into(),
            detail: detail.to_string(),
        }
    }

    /// The storage error underneath, if that is what failed.
    pub fn storage_error(&self) -> Option<&SnapshotError> {
        match self {
            SnapshotIoError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for SnapshotIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotIoError::Storage(e) => write!(f, "{e}"),
            SnapshotIoError::State(e) => write!(f, "{e}"),
            SnapshotIoError::Corrupt { file, detail } => write!(f, "'{file}' cannot be read: {detail}"),
            SnapshotIoError::Internal(m) => write!(f, "internal error while writing a snapshot: {m}"),
            SnapshotIoError::Canonical(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for SnapshotIoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotIoError::Storage(e) => Some(e),
            SnapshotIoError::State(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SnapshotError> for SnapshotIoError {
    fn from(e: SnapshotError) -> Self {
        SnapshotIoError::Storage(e)
    }
}

impl From<StateError> for SnapshotIoError {
    fn from(e: StateError) -> Self {
        SnapshotIoError::State(e)
    }
}

fn internal(e: impl fmt::Display) -> SnapshotIoError {
    SnapshotIoError::Internal(e.to_string())
}

/// Section holding the keyed states' metadata.
pub const KEYED_STATES_SECTION: &str = "keyed-states";
/// Section holding operator state entries.
pub const OPERATOR_SECTION: &str = "operator";

/// Section name of one keyed state.
pub fn keyed_section(state: &str) -> String {
    format!("keyed/{state}")
}

/// Section holding the shape of the operator's key type (JSON,
/// `cairn_state::shape::Shape`), so offline tools can split backend keys
/// into key and namespace without the job's code.
pub const KEY_SHAPE_SECTION: &str = "key-shape";

/// Section listing a backend's own files: `{"backend": .., "files": [[name, path], ..]}`.
pub const BACKEND_FILES_SECTION: &str = "backend-files";

/// The content of the [`BACKEND_FILES_SECTION`]: which backend wrote the
/// subtask's files, and each file's restore name and reference path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendFilesManifest {
    pub backend: String,
    /// `(name when restored, path relative to the snapshot directory)`.
    pub files: Vec<(String, String)>,
}

/// Write `snapshot` to `dir/name`; `None` when there is nothing to write.
/// Keyed state must be logical key groups (backend files go through
/// [`write_native`]).
pub fn write_snapshot_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    snapshot: OperatorSnapshot,
) -> Result<Option<StateFileRef>, SnapshotIoError> {
    let keyed = match snapshot.keyed {
        None => None,
        Some(BackendSnapshot::KeyGroups(k)) => Some(k),
        Some(BackendSnapshot::Files(set)) => {
            set.discard();
            return Err(internal("a backend's file snapshot cannot be written as a state file"));
        }
    };
    write_state_file(
        storage,
        dir,
        name,
        keyed.as_deref(),
        None,
        &snapshot.operator_state,
        None,
    )
}

/// The state file of one operator subtask: keyed key groups (or the states
/// and the manifest of backend files) and operator state.
fn write_state_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    keyed: Option<&dyn KeyedStateSnapshot>,
    backend_files: Option<(&[StateMeta], &BackendFilesManifest)>,
    operator_state: &[OperatorStateEntry],
    key_codec: Option<&KeyCodec>,
) -> Result<Option<StateFileRef>, SnapshotIoError> {
    if keyed.is_none() && backend_files.is_none() && operator_state.is_empty() {
        return Ok(None);
    }
    let path = dir.join(name);
    let mut w = StateFileWriter::create(storage, &path)?;
    let mut metas: Vec<StateMeta> = Vec::new();
    if let Some(keyed) = keyed {
        // The backend's callback speaks StateError; a storage failure inside
        // it is kept aside so it reaches the caller typed (a full disk).
        let mut storage_failure: Option<SnapshotError> = None;
        let visited = keyed.for_each_group(&mut |meta, kg, bytes| {
            if !metas.iter().any(|m| m.name == meta.name) {
                metas.push(meta.clone());
            }
            let written = w
                .begin_section(&keyed_section(&meta.name), Some(kg))
                .and_then(|()| w.write_section_bytes(bytes));
            written.map_err(|e| {
                let message = e.to_string();
                storage_failure = Some(e);
                StateError::Backend(message)
            })
        });
        if let Some(e) = storage_failure {
            return Err(SnapshotIoError::Storage(e));
        }
        visited?;
    }
    if let Some((states, manifest)) = backend_files {
        metas = states.to_vec();
        let json = serde_json::to_vec(manifest).map_err(internal)?;
        w.begin_section(BACKEND_FILES_SECTION, None)?;
        w.write_section_bytes(&json)?;
    }
    if keyed.is_some() || backend_files.is_some() {
        let json = serde_json::to_vec(&metas).map_err(internal)?;
        w.begin_section(KEYED_STATES_SECTION, None)?;
        w.write_section_bytes(&json)?;
    }
    if let Some(codec) = key_codec.filter(|_| keyed.is_some() || backend_files.is_some()) {
        let json = serde_json::to_vec(&codec.key_shape()).map_err(internal)?;
        w.begin_section(KEY_SHAPE_SECTION, None)?;
        w.write_section_bytes(&json)?;
    }
    if !operator_state.is_empty() {
        let bytes = cairn_state::key_encoding::to_vec(operator_state).map_err(internal)?;
        w.begin_section(OPERATOR_SECTION, None)?;
        w.write_section_bytes(&bytes)?;
    }
    let info = w.finish_durable()?;
    Ok(Some(info.to_file_ref(name)))
}

/// Write one operator subtask's native snapshot for the ticket's
/// destination: a state file `<stem>.state`, plus, for backends that
/// snapshot into files, those files (new shared ones into the job's
/// `shared/` directory under unique names, private ones into `<stem>/`).
/// Every file is recorded in the ticket before it is created.
pub fn write_native(
    ticket: &WriteTicket,
    stem: &str,
    snapshot: OperatorSnapshot,
    key_codec: Option<&KeyCodec>,
) -> Result<Vec<StateFileRef>, SnapshotIoError> {
    let dest = ticket.destination();
    let storage = ticket.storage();
    let state_name = format!("{stem}.state");
    ticket.intend(&dest.dir.join(&state_name));
    let set = match snapshot.keyed {
        Some(BackendSnapshot::Files(set)) => set,
        keyed => {
            let keyed = match keyed {
                Some(BackendSnapshot::KeyGroups(k)) => Some(k),
                _ => None,
            };
            let file = write_state_file(
                storage,
                &dest.dir,
                &state_name,
                keyed.as_deref(),
                None,
                &snapshot.operator_state,
                key_codec,
            )?;
            return Ok(file.into_iter().collect());
        }
    };
    let mut refs = Vec::new();
    let mut uploaded = Vec::new();
    let mut manifest = BackendFilesManifest {
        backend: set.backend().to_string(),
        files: Vec::new(),
    };
    let result = (|| -> Result<(), SnapshotIoError> {
        let mut rng = IdGenerator::from_entropy();
        let mut private_dir_made = false;
        for file in set.files() {
            let u = match file {
                SnapshotFile::Upload {
                    local_path,
                    name,
                    shared,
                } => {
                    let (target, rel) = match (&dest.shared_dir, *shared) {
                        (Some(shared_dir), true) => {
                            let unique = format!("{}-{name}", rng.hex(16));
                            (shared_dir.join(&unique), format!("../{SHARED_DIR}/{unique}"))
                        }
                        _ => {
                            let private = dest.dir.join(stem);
                            if !private_dir_made {
                                storage.create_dir_all(&private)?;
                                private_dir_made = true;
                            }
                            (private.join(name), format!("{stem}/{name}"))
                        }
                    };
                    ticket.intend(&target);
                    let (size, crc32) = copy_local_file(storage, local_path, &target)?;
                    let u = UploadedFile {
                        name: name.clone(),
                        path: rel,
                        size,
                        crc32,
                    };
                    uploaded.push(u.clone());
                    u
                }
                SnapshotFile::Reuse(u) => {
                    if dest.shared_dir.is_none() {
                        return Err(internal(format!(
                            "the '{}' backend referenced an earlier file ({}) in a savepoint, which must be self-contained; this is a Cairn bug",
                            set.backend(),
                            u.path
                        )));
                    }
                    u.clone()
                }
            };
            manifest.files.push((u.name.clone(), u.path.clone()));
            refs.push(StateFileRef {
                path: u.path,
                size: u.size,
                crc32: u.crc32,
                sections: Vec::new(),
                format: FileFormat::BackendFile,
            });
        }
        let state = write_state_file(
            storage,
            &dest.dir,
            &state_name,
            None,
            Some((set.states(), &manifest)),
            &snapshot.operator_state,
            key_codec,
        )?;
        refs.extend(state);
        Ok(())
    })();
    match result {
        Ok(()) => {
            set.uploaded(uploaded);
            Ok(refs)
        }
        Err(e) => {
            set.discard();
            Err(e)
        }
    }
}

/// Read the [`BACKEND_FILES_SECTION`] of `file`.
pub fn decode_backend_files(file: &str, bytes: &[u8]) -> Result<BackendFilesManifest, SnapshotIoError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SnapshotIoError::corrupt(file, format!("its backend file list is corrupt: {e}")))
}

/// Decode the operator state entries of a section of `file`.
pub fn decode_operator_entries(file: &str, bytes: &[u8]) -> Result<Vec<OperatorStateEntry>, SnapshotIoError> {
    cairn_state::key_encoding::from_bytes(bytes)
        .map_err(|e| SnapshotIoError::corrupt(file, format!("its operator state section is corrupt: {e}")))
}

/// Decode the keyed states' metadata of `file`.
pub fn decode_keyed_states(file: &str, bytes: &[u8]) -> Result<Vec<StateMeta>, SnapshotIoError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SnapshotIoError::corrupt(file, format!("its keyed state list is corrupt: {e}")))
}

// ---------------------------------------------------------------------------
// Canonical (portable) savepoint files: Parquet, canonical format version 1.
// Spec: docs/formats/savepoint-canonical.md
// ---------------------------------------------------------------------------

/// Suffix of the keyed-state file of an operator subtask.
pub const KEYED_PARQUET_SUFFIX: &str = ".keyed.parquet";
/// Suffix of the operator-state file of an operator subtask.
pub const OPERATOR_PARQUET_SUFFIX: &str = ".operator.parquet";
/// Key-value metadata: the canonical format version (`"1"`).
pub const KV_VERSION: &str = "cairn.canonical.version";
/// Key-value metadata: what the file holds (`"keyed-state"` or `"operator-state"`).
pub const KV_CONTENT: &str = "cairn.canonical.content";
/// Key-value metadata: the keyed states' metadata (JSON array).
pub const KV_STATES: &str = "cairn.states";
/// Key-value metadata: per row group `[state index, first key group, last key group]` (JSON).
pub const KV_KEY_GROUP_INDEX: &str = "cairn.key_group_index";
/// Key-value metadata: the Cairn version that wrote the file.
pub const KV_WRITER: &str = "cairn.writer";
/// [`KV_CONTENT`] of keyed-state files.
pub const CONTENT_KEYED: &str = "keyed-state";
/// [`KV_CONTENT`] of operator-state files.
pub const CONTENT_OPERATOR: &str = "operator-state";
/// A row group is closed once it holds this many rows...
pub const ROW_GROUP_MAX_ROWS: usize = 64 * 1024;
/// ... or this many buffered bytes.
pub const ROW_GROUP_MAX_BYTES: usize = 64 << 20;

/// Columns of keyed-state files.
pub mod keyed_col {
    pub const STATE: usize = 0;
    pub const KEY_GROUP: usize = 1;
    pub const KEY: usize = 2;
    pub const KEY_BYTES: usize = 3;
    pub const NAMESPACE: usize = 4;
    pub const USER_KEY: usize = 5;
    pub const POSITION: usize = 6;
    pub const VALUE: usize = 7;
    pub const TTL: usize = 8;
}

/// Columns of operator-state files.
pub mod operator_col {
    pub const STATE: usize = 0;
    pub const MODE: usize = 1;
    pub const POSITION: usize = 2;
    pub const KEY: usize = 3;
    pub const VALUE: usize = 4;
}

/// The schema of keyed-state files.
pub fn keyed_schema() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("state", ColumnType::Utf8, false),
        ColumnDef::new("key_group", ColumnType::Int32, false),
        ColumnDef::new("key", ColumnType::Utf8, true),
        ColumnDef::new("key_bytes", ColumnType::Binary, false),
        ColumnDef::new("namespace", ColumnType::Binary, false),
        ColumnDef::new("user_key", ColumnType::Utf8, true),
        ColumnDef::new("position", ColumnType::Int32, true),
        ColumnDef::new("value", ColumnType::Utf8, false),
        ColumnDef::new("ttl_timestamp_ms", ColumnType::Int64, true),
    ]
}

/// The schema of operator-state files.
pub fn operator_schema() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("state", ColumnType::Utf8, false),
        ColumnDef::new("mode", ColumnType::Utf8, false),
        ColumnDef::new("position", ColumnType::Int32, true),
        ColumnDef::new("key", ColumnType::Utf8, true),
        ColumnDef::new("value", ColumnType::Utf8, true),
    ]
}

fn base_kv(content: &str) -> Vec<(String, String)> {
    vec![
        (KV_VERSION.into(), CANONICAL_FORMAT_VERSION.to_string()),
        (KV_CONTENT.into(), content.into()),
        (KV_WRITER.into(), format!("cairn {}", env!("CARGO_PKG_VERSION"))),
    ]
}

type DurableParquet = ParquetWriter<ChecksummingWriter<Box<dyn StorageWriter>>>;

fn create_parquet(
    storage: &dyn Storage,
    path: &Path,
    schema: Vec<ColumnDef>,
    kv: Vec<(String, String)>,
) -> Result<DurableParquet, SnapshotIoError> {
    let w = storage.create(path)?;
    ParquetWriter::new(ChecksummingWriter::new(w), schema, kv).map_err(|e| write_err(path, e))
}

/// A failed write of a Parquet file: a storage failure naming the file.
fn write_err(path: &Path, e: std::io::Error) -> SnapshotIoError {
    SnapshotIoError::Storage(SnapshotError::io("write", path, e))
}

/// Finish a Parquet file, make it durable (fsync) and describe it for `_metadata`.
fn finish_parquet(w: DurableParquet, path: &Path, rel: String) -> Result<StateFileRef, SnapshotIoError> {
    let (cw, _) = w.finish().map_err(|e| write_err(path, e))?;
    let (inner, size, crc32) = cw.into_parts();
    let durable = inner.finish()?;
    if durable != size {
        return Err(internal(format!(
            "{}: {durable} bytes are on storage but {size} were written",
            path.display()
        )));
    }
    Ok(StateFileRef {
        path: rel,
        size,
        crc32,
        sections: Vec::new(),
        format: FileFormat::ParquetV1,
    })
}

/// One row group being filled with rows of one state: the index entry.
struct OpenRowGroup {
    state: usize,
    first_kg: u32,
    last_kg: u32,
}

/// The keyed-state file being written. Full row groups go to a writer thread
/// (page encoding, CRCs, storage writes) while the next one is filled, so
/// converting rows and writing bytes overlap.
struct KeyedParquet<'scope> {
    path: PathBuf,
    rel: String,
    schema: Vec<ColumnDef>,
    to_writer: Option<crossbeam_channel::Sender<RowGroupBuilder>>,
    recycled: crossbeam_channel::Receiver<RowGroupBuilder>,
    writer: Option<std::thread::ScopedJoinHandle<'scope, Result<DurableParquet, SnapshotIoError>>>,
    rg: RowGroupBuilder,
    open: Option<OpenRowGroup>,
    index: Vec<[u32; 3]>,
    metas: Vec<StateMeta>,
}

impl<'scope> KeyedParquet<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        storage: &dyn Storage,
        path: PathBuf,
        rel: String,
    ) -> Result<Self, SnapshotIoError> {
        let schema = keyed_schema();
        let mut w = create_parquet(storage, &path, schema.clone(), base_kv(CONTENT_KEYED))?;
        let file = path.clone();
        // One row group in flight: memory stays at about three row groups.
        let (tx, rx) = crossbeam_channel::bounded::<RowGroupBuilder>(1);
        let (back_tx, back_rx) = crossbeam_channel::unbounded();
        let writer = std::thread::Builder::new()
            .name("cairn-canonical-writer".into())
            .spawn_scoped(scope, move || {
                for mut rg in rx {
                    w.write_row_group(&mut rg).map_err(|e| write_err(&file, e))?;
                    let _ = back_tx.send(rg);
                }
                Ok(w)
            })
            .map_err(|e| internal(format!("could not start a writer thread: {e}")))?;
        Ok(KeyedParquet {
            rg: RowGroupBuilder::new(&schema),
            schema,
            path,
            rel,
            to_writer: Some(tx),
            recycled: back_rx,
            writer: Some(writer),
            open: None,
            index: Vec::new(),
            metas: Vec::new(),
        })
    }

    /// Wait for the writer thread; its writer, or the error that stopped it.
    fn join(&mut self) -> Result<DurableParquet, SnapshotIoError> {
        self.to_writer = None;
        match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(internal("the canonical writer thread panicked"))),
            None => Err(internal("the canonical writer thread already stopped")),
        }
    }

    fn flush(&mut self) -> Result<(), SnapshotIoError> {
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        if self.rg.num_rows() == 0 {
            return Ok(());
        }
        let fresh = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| RowGroupBuilder::new(&self.schema));
        let full = std::mem::replace(&mut self.rg, fresh);
        let sent = self.to_writer.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if !sent {
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| internal("the canonical writer stopped")));
        }
        self.index.push([o.state as u32, o.first_kg, o.last_kg]);
        Ok(())
    }

    /// Make sure the open row group takes rows of `state` in key group `kg`.
    #[inline]
    fn prepare(&mut self, state: usize, kg: u32) -> Result<(), SnapshotIoError> {
        let full = self.rg.num_rows() >= ROW_GROUP_MAX_ROWS || self.rg.buffered_bytes() >= ROW_GROUP_MAX_BYTES;
        if full || self.open.as_ref().is_some_and(|o| o.state != state) {
            self.flush()?;
        }
        match &mut self.open {
            Some(o) => o.last_kg = kg,
            None => {
                self.open = Some(OpenRowGroup {
                    state,
                    first_kg: kg,
                    last_kg: kg,
                })
            }
        }
        Ok(())
    }

    #[inline]
    fn push(&mut self, state: usize, row: &KeyedRow<'_>) -> Result<(), SnapshotIoError> {
        self.prepare(state, row.key_group)?;
        let b = &mut self.rg;
        b.push_bytes(keyed_col::STATE, Some(self.metas[state].name.as_bytes()));
        b.push_i32(keyed_col::KEY_GROUP, Some(row.key_group as i32));
        b.push_bytes(keyed_col::KEY, row.key_json);
        b.push_bytes(keyed_col::KEY_BYTES, Some(row.key_bytes));
        b.push_bytes(keyed_col::NAMESPACE, Some(row.namespace));
        b.push_bytes(keyed_col::USER_KEY, row.user_key_json);
        b.push_i32(keyed_col::POSITION, row.position);
        b.push_bytes(keyed_col::VALUE, Some(row.value_json));
        b.push_i64(keyed_col::TTL, row.ttl_timestamp_ms);
        Ok(())
    }

    /// Flush, wait for the writer, add the footer metadata and make the file durable.
    fn finish(mut self) -> Result<StateFileRef, SnapshotIoError> {
        self.flush()?;
        let mut w = self.join()?;
        w.push_key_value(KV_STATES, states_to_json(&self.metas));
        let index = serde_json::to_string(&self.index).map_err(internal)?;
        w.push_key_value(KV_KEY_GROUP_INDEX, index);
        finish_parquet(w, &self.path, std::mem::take(&mut self.rel))
    }
}

/// Write `snapshot` in the canonical format: `dir/<stem>.keyed.parquet` (all
/// keyed states, when there are any) and `dir/<stem>.operator.parquet`
/// (operator list, union, broadcast state and source positions, when there is
/// any). Files are durable when this returns; their references (paths
/// relative to `dir`, whole-file size and CRC-32, format `ParquetV1`) go into
/// `_metadata`. `key_codec` renders keys as JSON and splits backend keys into
/// key and namespace; without it the `key` column is null and `key_bytes`
/// holds the whole backend key.
pub fn write_canonical_file(
    storage: &dyn Storage,
    dir: &Path,
    name_stem: &str,
    snapshot: OperatorSnapshot,
    key_codec: Option<&KeyCodec>,
) -> Result<Vec<StateFileRef>, SnapshotIoError> {
    let mut files = Vec::new();
    let keyed = match snapshot.keyed {
        None => None,
        Some(BackendSnapshot::KeyGroups(k)) => Some(k),
        Some(BackendSnapshot::Files(set)) => {
            let backend = set.backend().to_string();
            set.discard();
            return Err(internal(format!(
                "the '{backend}' state backend answered a canonical savepoint with its own files; it must give logical key groups"
            )));
        }
    };
    if let Some(keyed) = keyed {
        let rel = format!("{name_stem}{KEYED_PARQUET_SUFFIX}");
        let path = dir.join(&rel);
        let keyed_ref = std::thread::scope(|scope| -> Result<Option<StateFileRef>, SnapshotIoError> {
            let mut out: Option<KeyedParquet<'_>> = None;
            let mut conv = RowsFromGroups::new();
            let mut failure: Option<SnapshotIoError> = None;
            let visited = keyed.for_each_group(&mut |meta, kg, bytes| {
                let step = (|| -> Result<(), SnapshotIoError> {
                    if out.is_none() {
                        out = Some(KeyedParquet::start(scope, storage, path.clone(), rel.clone())?);
                    }
                    let f = out.as_mut().expect("created above");
                    let state = match f.metas.iter().position(|m| m.name == meta.name) {
                        Some(i) => i,
                        None => {
                            f.metas.push(meta.clone());
                            f.metas.len() - 1
                        }
                    };
                    // Rows come through a callback that speaks strings; the
                    // typed failure of writing a row is kept aside.
                    let mut write_failure: Option<SnapshotIoError> = None;
                    let converted = conv.rows(meta, kg, bytes, key_codec, &mut |row| {
                        f.push(state, row).map_err(|e| {
                            let message = e.to_string();
                            write_failure = Some(e);
                            message
                        })
                    });
                    match (write_failure, converted) {
                        (Some(e), _) => Err(e),
                        (None, Err(e)) => Err(SnapshotIoError::State(StateError::Codec {
                            state: meta.name.clone(),
                            detail: e,
                        })),
                        (None, Ok(())) => Ok(()),
                    }
                })();
                step.map_err(|e| {
                    let message = e.to_string();
                    failure = Some(e);
                    StateError::Backend(message)
                })
            });
            let result = match (failure, visited) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(SnapshotIoError::State(e)),
                (None, Ok(())) => Ok(()),
            };
            match (result, out) {
                (Ok(()), Some(f)) => f.finish().map(Some),
                (Ok(()), None) => Ok(None),
                (Err(e), Some(mut f)) => {
                    let _ = f.join();
                    Err(e)
                }
                (Err(e), None) => Err(e),
            }
        })?;
        files.extend(keyed_ref);
    }
    if !snapshot.operator_state.is_empty() {
        let rel = format!("{name_stem}{OPERATOR_PARQUET_SUFFIX}");
        let path = dir.join(&rel);
        let schema = operator_schema();
        let mut w = create_parquet(storage, &path, schema.clone(), base_kv(CONTENT_OPERATOR))?;
        let mut rg = RowGroupBuilder::new(&schema);
        let mut write_failure: Option<std::io::Error> = None;
        let converted = operator_rows(&snapshot.operator_state, &mut |r| {
            rg.push_bytes(operator_col::STATE, Some(r.state.as_bytes()));
            rg.push_bytes(operator_col::MODE, Some(mode_name(r.mode).as_bytes()));
            rg.push_i32(operator_col::POSITION, r.position);
            rg.push_bytes(operator_col::KEY, r.key_json);
            rg.push_bytes(operator_col::VALUE, r.value_json);
            if rg.num_rows() >= ROW_GROUP_MAX_ROWS || rg.buffered_bytes() >= ROW_GROUP_MAX_BYTES {
                w.write_row_group(&mut rg).map_err(|e| {
                    let message = e.to_string();
                    write_failure = Some(e);
                    message
                })?;
            }
            Ok(())
        });
        if let Some(e) = write_failure {
            return Err(write_err(&path, e));
        }
        converted.map_err(|e| SnapshotIoError::corrupt(path.display().to_string(), e))?;
        w.write_row_group(&mut rg).map_err(|e| write_err(&path, e))?;
        files.push(finish_parquet(w, &path, rel)?);
    }
    Ok(files)
}

/// Write `snapshot` in the canonical format, version 2 (what canonical
/// savepoints are now): one Parquet file per keyed state,
/// `dir/<stem>.<state>.parquet`, with typed columns, and
/// `dir/<stem>.operator.parquet` for operator state. Every file is recorded
/// in the ticket before it is created; files are durable when this returns.
pub fn write_canonical_v2(
    ticket: &WriteTicket,
    stem: &str,
    snapshot: OperatorSnapshot,
    key_codec: Option<&KeyCodec>,
) -> Result<Vec<StateFileRef>, SnapshotIoError> {
    let dest = ticket.destination();
    let storage = ticket.storage();
    let options = cairn_canonical::WriteOptions::default();
    let mut files = Vec::new();
    match snapshot.keyed {
        None => {}
        Some(BackendSnapshot::KeyGroups(k)) => {
            files.extend(
                cairn_canonical::write_keyed_snapshot(storage, &dest.dir, stem, &*k, key_codec, &options, &mut |p| {
                    ticket.intend(p)
                })
                .map_err(SnapshotIoError::Canonical)?,
            );
        }
        Some(BackendSnapshot::Files(set)) => {
            let backend = set.backend().to_string();
            set.discard();
            return Err(internal(format!(
                "the '{backend}' state backend answered a canonical savepoint with its own files; it must give logical key groups"
            )));
        }
    }
    if !snapshot.operator_state.is_empty() {
        let rel = format!("{stem}{OPERATOR_PARQUET_SUFFIX}");
        ticket.intend(&dest.dir.join(&rel));
        files.push(
            cairn_canonical::write_operator_file(storage, &dest.dir, &rel, &snapshot.operator_state, &options)
                .map_err(SnapshotIoError::Canonical)?,
        );
    }
    Ok(files)
}

/// What a canonical file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanonicalContent {
    Keyed,
    Operator,
}

/// Read and check the footer of a canonical file of `size` bytes (two range
/// reads: the tail, then the footer).
pub fn read_canonical_footer(storage: &dyn Storage, path: &Path, size: u64) -> Result<ParquetFooter, SnapshotIoError> {
    let file = path.display().to_string();
    let named = |e: ParquetError| SnapshotIoError::corrupt(file.clone(), e.in_file(file.clone()));
    if size < 12 {
        return Err(SnapshotIoError::corrupt(
            file.clone(),
            format!("{size} bytes is too short to be a Parquet file"),
        ));
    }
    let tail = storage.read_range(path, size - 8, 8)?;
    let (off, len) = ParquetFooter::locate(size, &tail).map_err(named)?;
    let footer = storage.read_range(path, off, len)?;
    ParquetFooter::parse(&footer, off).map_err(named)
}

/// The content of canonical file `file`, from its key-value metadata; checks
/// the canonical format version.
pub fn canonical_content(file: &str, footer: &ParquetFooter) -> Result<CanonicalContent, SnapshotIoError> {
    content_of(footer).map_err(|e| SnapshotIoError::corrupt(file, e))
}

fn content_of(footer: &ParquetFooter) -> Result<CanonicalContent, String> {
    match footer.metadata_value(KV_VERSION) {
        Some(v) if v == CANONICAL_FORMAT_VERSION.to_string() => {}
        Some(v) => {
            return Err(format!(
                "canonical format version {v} is not supported: this build reads version {CANONICAL_FORMAT_VERSION} (use a newer Cairn)"
            ))
        }
        None => return Err(format!("the key-value metadata has no '{KV_VERSION}': not a Cairn canonical savepoint file")),
    }
    match footer.metadata_value(KV_CONTENT) {
        Some(CONTENT_KEYED) => Ok(CanonicalContent::Keyed),
        Some(CONTENT_OPERATOR) => Ok(CanonicalContent::Operator),
        other => Err(format!("unknown '{KV_CONTENT}' {other:?}")),
    }
}

/// Whether a keyed canonical file may hold key groups of `range` (by its
/// key-group index; without an index every file may).
pub fn canonical_keyed_overlaps(
    file: &str,
    footer: &ParquetFooter,
    range: KeyGroupRange,
) -> Result<bool, SnapshotIoError> {
    Ok(
        match keyed_row_groups(footer).map_err(|e| SnapshotIoError::corrupt(file, e))? {
            None => true,
            Some(index) => index
                .iter()
                .any(|[_, a, b]| *a < range.end_exclusive && *b >= range.start),
        },
    )
}

fn keyed_row_groups(footer: &ParquetFooter) -> Result<Option<Vec<[u32; 3]>>, String> {
    let Some(json) = footer.metadata_value(KV_KEY_GROUP_INDEX) else {
        return Ok(None);
    };
    let index: Vec<[u32; 3]> =
        serde_json::from_str(json).map_err(|e| format!("'{KV_KEY_GROUP_INDEX}' is not valid: {e}"))?;
    if index.len() != footer.num_row_groups() {
        return Err(format!(
            "'{KV_KEY_GROUP_INDEX}' lists {} row groups but the file has {}",
            index.len(),
            footer.num_row_groups()
        ));
    }
    Ok(Some(index))
}

fn column(f: &ParquetFile<'_>, name: &str, ty: &[ColumnType], required: bool) -> Result<Option<usize>, String> {
    match f.column_index(name) {
        Some(i) if ty.contains(&f.schema()[i].ty) => Ok(Some(i)),
        Some(i) => Err(format!(
            "column '{name}' has type {:?}, expected {:?}",
            f.schema()[i].ty,
            ty
        )),
        None if required => Err(format!("column '{name}' is missing")),
        None => Ok(None),
    }
}

fn read_bytes(f: &ParquetFile<'_>, rg: usize, col: Option<usize>) -> Result<Option<BytesColumn>, String> {
    match col {
        None => Ok(None),
        Some(c) => match f.read_column(rg, c).map_err(|e| e.to_string())? {
            ColumnData::Bytes(b) => Ok(Some(b)),
            _ => Err("internal: a byte column read as numbers".into()),
        },
    }
}

fn read_i32(f: &ParquetFile<'_>, rg: usize, col: Option<usize>) -> Result<Option<Vec<Option<i32>>>, String> {
    match col {
        None => Ok(None),
        Some(c) => match f.read_column(rg, c).map_err(|e| e.to_string())? {
            ColumnData::Int32(v) => Ok(Some(v)),
            _ => Err("internal: an INT32 column read as another type".into()),
        },
    }
}

fn utf8<'b>(b: Option<&'b [u8]>, what: &str, row: usize) -> Result<Option<&'b str>, String> {
    b.map(|b| std::str::from_utf8(b).map_err(|_| format!("row {row}: '{what}' is not UTF-8")))
        .transpose()
}

/// Restore the rows of a keyed canonical file (`bytes`, named `name` in
/// errors) that fall into `range` into `backend`. Errors name the state and
/// what did not decode.
pub fn restore_canonical_keyed(
    bytes: &[u8],
    name: &str,
    range: KeyGroupRange,
    backend: &mut dyn KeyedStateBackend,
) -> Result<(), SnapshotIoError> {
    let mut restore_failure: Option<StateError> = None;
    restore_keyed_rows(bytes, name, range, backend, &mut restore_failure).map_err(|detail| match restore_failure {
        Some(e) => SnapshotIoError::State(e),
        None => SnapshotIoError::corrupt(name, detail),
    })
}

fn restore_keyed_rows(
    bytes: &[u8],
    name: &str,
    range: KeyGroupRange,
    backend: &mut dyn KeyedStateBackend,
    restore_failure: &mut Option<StateError>,
) -> Result<(), String> {
    let f = ParquetFile::parse_named(bytes, name).map_err(|e| e.to_string())?;
    if content_of(f.footer())? != CanonicalContent::Keyed {
        return Err("not a keyed-state file".into());
    }
    let states = f
        .footer()
        .metadata_value(KV_STATES)
        .ok_or_else(|| format!("the key-value metadata has no '{KV_STATES}'"))?;
    let metas = states_from_json(states)?;
    let index = keyed_row_groups(f.footer())?;
    let c_state = column(&f, "state", &[ColumnType::Utf8], true)?;
    let c_kg = column(&f, "key_group", &[ColumnType::Int32], true)?;
    let c_kb = column(&f, "key_bytes", &[ColumnType::Binary], true)?;
    let c_ns = column(&f, "namespace", &[ColumnType::Binary], false)?;
    let c_uk = column(&f, "user_key", &[ColumnType::Utf8], false)?;
    let c_pos = column(&f, "position", &[ColumnType::Int32], false)?;
    let c_val = column(&f, "value", &[ColumnType::Utf8], true)?;
    let c_ttl = column(&f, "ttl_timestamp_ms", &[ColumnType::Int64], false)?;
    let mut groups: BTreeMap<(usize, u32), GroupFromRows<'_>> = BTreeMap::new();
    for rg in 0..f.num_row_groups() {
        if let Some(ix) = &index {
            let [_, a, b] = ix[rg];
            if a >= range.end_exclusive || b < range.start {
                continue;
            }
        }
        let states = read_bytes(&f, rg, c_state)?.expect("required");
        let kgs = read_i32(&f, rg, c_kg)?.expect("required");
        let kbs = read_bytes(&f, rg, c_kb)?.expect("required");
        let nss = read_bytes(&f, rg, c_ns)?;
        let uks = read_bytes(&f, rg, c_uk)?;
        let poss = read_i32(&f, rg, c_pos)?;
        let vals = read_bytes(&f, rg, c_val)?.expect("required");
        let ttls = match c_ttl {
            None => None,
            Some(c) => match f.read_column(rg, c).map_err(|e| e.to_string())? {
                ColumnData::Int64(v) => Some(v),
                _ => return Err("internal: an INT64 column read as another type".into()),
            },
        };
        let mut last: Option<(&str, usize)> = None;
        for row in 0..states.len() {
            let at = |what: &str| format!("row group {rg}, row {row}: {what}");
            let Some(kg) = kgs[row] else {
                return Err(at("key_group is null"));
            };
            let kg = u32::try_from(kg).map_err(|_| at("key_group is negative"))?;
            if !range.contains(kg) {
                continue;
            }
            let state = utf8(states.get(row), "state", row)?.ok_or_else(|| at("state is null"))?;
            let si = match last {
                Some((n, i)) if n == state => i,
                _ => {
                    let i = metas
                        .iter()
                        .position(|m| m.name == state)
                        .ok_or_else(|| at(&format!("state '{state}' is not listed in '{KV_STATES}'")))?;
                    last = Some((state, i));
                    i
                }
            };
            let r = RowIn {
                key_bytes: kbs.get(row).ok_or_else(|| at("key_bytes is null"))?,
                namespace: nss.as_ref().and_then(|c| c.get(row)).unwrap_or(&[]),
                user_key_json: uks.as_ref().and_then(|c| c.get(row)),
                position: poss.as_ref().and_then(|c| c[row]),
                value_json: vals.get(row),
                ttl_timestamp_ms: ttls.as_ref().and_then(|c| c[row]),
            };
            groups
                .entry((si, kg))
                .or_insert_with(|| GroupFromRows::new(&metas[si]))
                .push(&r)
                .map_err(|e| at(&e))?;
        }
    }
    for ((si, kg), g) in groups {
        let meta = &metas[si];
        let encoded = g.encode()?;
        backend.restore_group(meta, kg, &encoded).map_err(|e| {
            let message = format!("state '{}', key group {kg}: {e}", meta.name);
            *restore_failure = Some(e);
            message
        })?;
    }
    Ok(())
}

/// Read the operator state entries of an operator canonical file.
pub fn read_canonical_operator_entries(bytes: &[u8], name: &str) -> Result<Vec<OperatorStateEntry>, SnapshotIoError> {
    operator_rows_of(bytes, name).map_err(|e| SnapshotIoError::corrupt(name, e))
}

fn operator_rows_of(bytes: &[u8], name: &str) -> Result<Vec<OperatorStateEntry>, String> {
    let f = ParquetFile::parse_named(bytes, name).map_err(|e| e.to_string())?;
    if content_of(f.footer())? != CanonicalContent::Operator {
        return Err("not an operator-state file".into());
    }
    let c_state = column(&f, "state", &[ColumnType::Utf8], true)?;
    let c_mode = column(&f, "mode", &[ColumnType::Utf8], true)?;
    let c_pos = column(&f, "position", &[ColumnType::Int32], false)?;
    let c_key = column(&f, "key", &[ColumnType::Utf8], false)?;
    let c_val = column(&f, "value", &[ColumnType::Utf8], false)?;
    let mut cols = Vec::new();
    for rg in 0..f.num_row_groups() {
        cols.push((
            read_bytes(&f, rg, c_state)?.expect("required"),
            read_bytes(&f, rg, c_mode)?.expect("required"),
            read_i32(&f, rg, c_pos)?,
            read_bytes(&f, rg, c_key)?,
            read_bytes(&f, rg, c_val)?,
        ));
    }
    let mut rows = Vec::new();
    for (rg, (states, modes, poss, keys, vals)) in cols.iter().enumerate() {
        for row in 0..states.len() {
            let at = |what: &str| format!("row group {rg}, row {row}: {what}");
            let state = utf8(states.get(row), "state", row)?.ok_or_else(|| at("state is null"))?;
            let mode = utf8(modes.get(row), "mode", row)?.ok_or_else(|| at("mode is null"))?;
            let mode = mode_from_name(mode).ok_or_else(|| {
                at(&format!(
                    "operator state '{state}': mode '{mode}' is not one of split_evenly, union, broadcast"
                ))
            })?;
            rows.push(OperatorRow {
                state,
                mode,
                position: poss.as_ref().and_then(|c| c[row]),
                key_json: keys.as_ref().and_then(|c| c.get(row)),
                value_json: vals.as_ref().and_then(|c| c.get(row)),
            });
        }
    }
    operator_entries_from_rows(rows)
}
