//! Keyed state files of canonical format v2: one Parquet file per (operator
//! subtask, state), one row per value, list element, map entry or timer,
//! with the key, user key and value in typed columns (see
//! [`crate::columns`]) and the key's canonical bytes beside them (what
//! restore hashes into key groups). Spec: `docs/formats/savepoint-canonical.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use cairn_snapshot::{StateFileRef, Storage};
use cairn_state::canonical::{KeyCodec, TIMER_STATE_PREFIX};
use cairn_state::codec::{self, get_bytes, put_bytes};
use cairn_state::hash::murmur3_x86_32;
use cairn_state::keygroup::{key_group_hash, KeyGroupRange};
use cairn_state::shape::Shape;
use cairn_state::snapshot_codec::{self, Decoded};
use cairn_state::{StateKind, StateMeta, StateTtlConfig, StoredObject, TtlUpdateType};

use crate::columns::Column;
use crate::decode::Decoder;
use crate::io::{FileWriter, ParquetSource, WriteOptions};
use crate::{kv_base, CONTENT_KEYED, KV_KEY_SHAPE, KV_STATE};

pub const COL_STATE: &str = "state";
pub const COL_KEY_GROUP: &str = "key_group";
pub const COL_KEY_BYTES: &str = "key_bytes";
pub const COL_NAMESPACE: &str = "namespace";
pub const COL_KEY: &str = "key";
pub const COL_USER_KEY: &str = "user_key";
pub const COL_USER_KEY_JSON: &str = "user_key_json";
pub const COL_POSITION: &str = "position";
pub const COL_VALUE_JSON: &str = "value_json";
pub const COL_TTL: &str = "ttl_timestamp_ms";
pub const COL_TIMESTAMP: &str = "timestamp";
/// The value column of a state whose name is one of the reserved names.
pub const COL_VALUE: &str = "value";

const RESERVED: [&str; 11] = [
    COL_STATE,
    COL_KEY_GROUP,
    COL_KEY_BYTES,
    COL_NAMESPACE,
    COL_KEY,
    COL_USER_KEY,
    COL_USER_KEY_JSON,
    COL_POSITION,
    COL_VALUE_JSON,
    COL_TTL,
    COL_TIMESTAMP,
];

/// The name of a state's typed value column: the state's own name (so
/// `SELECT key, count FROM ...` reads state `count`), `value` when that
/// name is reserved, `timestamp` for timers.
pub fn value_column_name(state: &str) -> &str {
    if state.starts_with(TIMER_STATE_PREFIX) {
        COL_TIMESTAMP
    } else if RESERVED.contains(&state) || state == COL_VALUE {
        COL_VALUE
    } else {
        state
    }
}

/// A file name fragment for a state name (readers never infer anything
/// from names; this only helps people and globs).
pub fn file_slug(state: &str) -> String {
    let s: String = state
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "state".into()
    } else {
        s
    }
}

struct Columns {
    key_group: Int32Builder,
    key_bytes: BinaryBuilder,
    namespace: BinaryBuilder,
    key: Option<Column>,
    user_key: Option<Column>,
    user_key_json: Option<StringBuilder>,
    position: Option<Int32Builder>,
    value: Option<Column>,
    value_json: Option<StringBuilder>,
    ttl: Option<Int64Builder>,
    timestamp: Option<Int64Builder>,
    rows: usize,
}

impl Columns {
    /// Append a row's key group, key bytes and namespace (every row has them).
    fn push_key_bytes(&mut self, kg: u32, key_bytes: &[u8], namespace: &[u8]) {
        self.key_group.append_value(kg as i32);
        self.key_bytes.append_value(key_bytes);
        self.namespace.append_value(namespace);
    }
}

/// Writes one state of one operator subtask.
pub struct KeyedFileWriter {
    meta: StateMeta,
    timers: bool,
    key_codec: Option<KeyCodec>,
    key_shape: Option<Shape>,
    schema: SchemaRef,
    cols: Columns,
    file: FileWriter,
    batch_rows: usize,
    // Consecutive rows of one key decode it once.
    last_composite: Vec<u8>,
    have_last: bool,
    key_len: usize,
    key_mp: Vec<u8>,
    scratch: Vec<u8>,
    /// A value object's stored bytes, when its type is not the column's.
    object_bytes: Vec<u8>,
    /// The `state` column of a whole batch.
    state_names: ArrayRef,
}

fn err(meta: &StateMeta, kg: u32, what: impl std::fmt::Display) -> String {
    format!("state '{}' (key group {kg}): {what}", meta.name)
}

impl KeyedFileWriter {
    /// Start `dir/rel` for state `meta`; `key_codec` splits backend keys and
    /// gives the key type (without one the whole backend key is `key_bytes`).
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        rel: &str,
        meta: &StateMeta,
        key_codec: Option<&KeyCodec>,
        options: &WriteOptions,
    ) -> Result<Self, String> {
        let timers = meta.name.starts_with(TIMER_STATE_PREFIX);
        let key_shape = key_codec.map(|c| c.key_shape());
        let key = key_shape.as_ref().and_then(Column::for_shape);
        let shapes = meta.shapes.as_ref();
        let value = if timers {
            None
        } else {
            shapes.and_then(|s| Column::for_shape(&s.value))
        };
        let is_map = meta.kind == StateKind::Map && !timers;
        let user_key = if is_map {
            shapes.and_then(|s| s.user_key.as_ref()).and_then(Column::for_shape)
        } else {
            None
        };
        let mut fields = vec![
            Field::new(COL_STATE, DataType::Utf8, false),
            Field::new(COL_KEY_GROUP, DataType::Int32, false),
            Field::new(COL_KEY_BYTES, DataType::Binary, false),
            Field::new(COL_NAMESPACE, DataType::Binary, false),
        ];
        if let Some(k) = &key {
            fields.push(Field::new(COL_KEY, k.data_type(), true));
        }
        if is_map {
            if let Some(u) = &user_key {
                fields.push(Field::new(COL_USER_KEY, u.data_type(), true));
            }
            fields.push(Field::new(COL_USER_KEY_JSON, DataType::Utf8, true));
        }
        let is_list = meta.kind == StateKind::List && !timers;
        if is_list {
            fields.push(Field::new(COL_POSITION, DataType::Int32, false));
        }
        if timers {
            fields.push(Field::new(COL_TIMESTAMP, DataType::Int64, false));
        } else {
            if let Some(v) = &value {
                fields.push(Field::new(value_column_name(&meta.name), v.data_type(), true));
            }
            fields.push(Field::new(COL_VALUE_JSON, DataType::Utf8, true));
        }
        let ttl = meta.ttl.is_some() && !timers;
        if ttl {
            fields.push(Field::new(COL_TTL, DataType::Int64, false));
        }
        let schema = Arc::new(Schema::new(fields));
        let file = FileWriter::create(storage, dir, rel, schema.clone(), options)?;
        Ok(KeyedFileWriter {
            meta: meta.clone(),
            timers,
            key_codec: key_codec.cloned(),
            key_shape,
            schema,
            cols: Columns {
                key_group: Int32Builder::new(),
                key_bytes: BinaryBuilder::new(),
                namespace: BinaryBuilder::new(),
                key,
                user_key,
                user_key_json: is_map.then(StringBuilder::new),
                position: is_list.then(Int32Builder::new),
                value,
                value_json: (!timers).then(StringBuilder::new),
                ttl: ttl.then(Int64Builder::new),
                timestamp: timers.then(Int64Builder::new),
                rows: 0,
            },
            file,
            batch_rows: options.batch_rows.max(1),
            last_composite: Vec::new(),
            have_last: false,
            key_len: 0,
            key_mp: Vec::new(),
            scratch: Vec::new(),
            object_bytes: Vec::new(),
            state_names: Arc::new(StringArray::from(Vec::<&str>::new())),
        })
    }

    /// The state written.
    pub fn meta(&self) -> &StateMeta {
        &self.meta
    }

    /// Split `composite` into key and namespace, decoding the key for the
    /// typed column (cached for consecutive rows of one key).
    fn key(&mut self, composite: &[u8], kg: u32) -> Result<(), String> {
        if self.have_last && self.last_composite == composite {
            return Ok(());
        }
        self.split_key(composite, kg)?;
        self.last_composite.clear();
        self.last_composite.extend_from_slice(composite);
        self.have_last = true;
        Ok(())
    }

    /// [`Self::key`] without the cache, for rows whose key is never the
    /// previous row's (value and list entries: one entry per key).
    fn split_key(&mut self, composite: &[u8], kg: u32) -> Result<(), String> {
        self.key_mp.clear();
        self.key_len = match &self.key_codec {
            Some(c) => c
                .key_msgpack(composite, &mut self.key_mp)
                .map_err(|e| err(&self.meta, kg, e))?,
            None => composite.len(),
        };
        if self.key_len > composite.len() {
            return Err(err(&self.meta, kg, "the key codec read past the key"));
        }
        self.have_last = false;
        Ok(())
    }

    /// Split `composite` and append the row's key columns, for a row whose
    /// key is decoded for it alone. A key of a scalar type goes into the
    /// typed column as the decoded value itself, without the MessagePack in
    /// between.
    fn push_split_key(&mut self, kg: u32, composite: &[u8]) -> Result<(), String> {
        if let (Some(codec), Some(column)) = (&self.key_codec, &mut self.cols.key) {
            if column.takes_objects() {
                if let Some(visited) = codec.visit_key(composite, &mut |key| column.append_object(key)) {
                    let (used, appended) = visited.map_err(|e| err(&self.meta, kg, e))?;
                    if used > composite.len() {
                        return Err(err(&self.meta, kg, "the key codec read past the key"));
                    }
                    if appended {
                        let (key_bytes, namespace) = composite.split_at(used);
                        self.cols.push_key_bytes(kg, key_bytes, namespace);
                        self.have_last = false;
                        return Ok(());
                    }
                }
            }
        }
        self.split_key(composite, kg)?;
        let (key_bytes, namespace) = composite.split_at(self.key_len);
        self.push_key(kg, key_bytes, namespace);
        Ok(())
    }

    /// Append the row's key columns, the typed key from the MessagePack
    /// [`Self::split_key`] left in `key_mp`.
    fn push_key(&mut self, kg: u32, key_bytes: &[u8], namespace: &[u8]) {
        let c = &mut self.cols;
        c.push_key_bytes(kg, key_bytes, namespace);
        if let Some(k) = &mut c.key {
            // A key that does not fit the column (or cannot be appended) is
            // still in key_bytes: the typed column holds null.
            if !matches!(k.append_if_conforms(&self.key_mp), Ok(true)) {
                k.append_null();
            }
        }
    }

    /// Append a value (with `ts` for TTL states) to the value columns.
    fn push_value(&mut self, kg: u32, payload: &[u8], ttl: Option<i64>) -> Result<(), String> {
        let typed = match &mut self.cols.value {
            Some(v) => v.append_if_conforms(payload).map_err(|e| err(&self.meta, kg, e))?,
            None => false,
        };
        if typed {
            if let Some(j) = &mut self.cols.value_json {
                j.append_null();
            }
        } else {
            if let Some(v) = &mut self.cols.value {
                v.append_null();
            }
            self.scratch.clear();
            codec::msgpack_to_json(payload, &mut self.scratch)
                .map_err(|e| err(&self.meta, kg, format!("a stored value is not valid: {e}")))?;
            let json = std::str::from_utf8(&self.scratch).map_err(|_| err(&self.meta, kg, "JSON is not UTF-8"))?;
            self.cols
                .value_json
                .as_mut()
                .expect("values have a JSON column")
                .append_value(json);
        }
        if let Some(t) = &mut self.cols.ttl {
            t.append_value(ttl.ok_or_else(|| err(&self.meta, kg, "a value of a TTL state has no timestamp"))?);
        }
        Ok(())
    }

    /// Append the row of one value-state entry kept as an object: typed
    /// straight into the value column when it is that column's type,
    /// otherwise through its stored bytes as [`KeyedFileWriter::push_group`] would.
    pub fn push_object(&mut self, kg: u32, key: &[u8], value: &dyn StoredObject) -> Result<(), String> {
        if self.timers || self.meta.kind != StateKind::Value || self.meta.ttl.is_some() {
            return Err(err(
                &self.meta,
                kg,
                "only value states without a TTL are kept as objects (a Cairn bug)",
            ));
        }
        self.push_split_key(kg, key)?;
        let typed = self
            .cols
            .value
            .as_mut()
            .is_some_and(|c| c.append_object(value.as_any()));
        if typed {
            if let Some(j) = &mut self.cols.value_json {
                j.append_null();
            }
        } else {
            let mut bytes = std::mem::take(&mut self.object_bytes);
            value
                .encode(&self.meta.name, &mut bytes)
                .map_err(|e| err(&self.meta, kg, e))?;
            let pushed = self.push_value(kg, &bytes, None);
            self.object_bytes = bytes;
            pushed?;
        }
        self.end_row()
    }

    fn ttl_split<'b>(&self, kg: u32, raw: &'b [u8]) -> Result<(Option<i64>, &'b [u8]), String> {
        if self.meta.ttl.is_none() {
            return Ok((None, raw));
        }
        let ts = raw
            .get(..8)
            .ok_or_else(|| err(&self.meta, kg, "a value is shorter than its TTL timestamp"))?;
        let ts = u64::from_le_bytes(ts.try_into().expect("8 bytes"));
        let ts = i64::try_from(ts).map_err(|_| err(&self.meta, kg, format!("TTL timestamp {ts} is out of range")))?;
        Ok((Some(ts), &raw[8..]))
    }

    /// Append the rows of one encoded (state, key group) group.
    pub fn push_group(&mut self, kg: u32, encoded: &[u8]) -> Result<(), String> {
        self.have_last = false;
        let meta = self.meta.clone();
        let mut failure = None;
        let decoded = snapshot_codec::decode_group(&meta.name, meta.kind, encoded, &mut |d| match self.row(kg, d) {
            Ok(()) => Ok(()),
            Err(e) => {
                failure = Some(e);
                Err(cairn_state::StateError::Restore(String::new()))
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        decoded.map_err(|e| err(&meta, kg, e))
    }

    fn row(&mut self, kg: u32, d: Decoded<'_>) -> Result<(), String> {
        match d {
            Decoded::Entry { key, value } if self.timers => {
                let ts = key
                    .get(..8)
                    .ok_or_else(|| err(&self.meta, kg, "a timer entry is shorter than its timestamp"))?;
                let ts = (u64::from_be_bytes(ts.try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
                let (user_key, ns) =
                    get_bytes(&key[8..]).ok_or_else(|| err(&self.meta, kg, "a timer entry's key is truncated"))?;
                if !value.is_empty() {
                    return Err(err(&self.meta, kg, "a timer entry has a value"));
                }
                self.key(user_key, kg)?;
                self.push_key(kg, user_key, ns);
                self.cols.timestamp.as_mut().expect("timer column").append_value(ts);
                self.end_row()
            }
            Decoded::Entry { key, value } if self.meta.kind != StateKind::List => {
                let (ttl, payload) = self.ttl_split(kg, value)?;
                self.push_split_key(kg, key)?;
                self.push_value(kg, payload, ttl)?;
                self.end_row()
            }
            Decoded::Entry { key, value } => {
                self.split_key(key, kg)?;
                let (key_bytes, namespace) = key.split_at(self.key_len);
                let mut rest = value;
                let mut position = 0i32;
                while !rest.is_empty() {
                    let (elem, r) =
                        get_bytes(rest).ok_or_else(|| err(&self.meta, kg, "list element framing is corrupt"))?;
                    rest = r;
                    let (ttl, payload) = self.ttl_split(kg, elem)?;
                    self.push_key(kg, key_bytes, namespace);
                    self.cols.position.as_mut().expect("list column").append_value(position);
                    self.push_value(kg, payload, ttl)?;
                    self.end_row()?;
                    position = position
                        .checked_add(1)
                        .ok_or_else(|| err(&self.meta, kg, "a list has more than 2^31 elements"))?;
                }
                Ok(())
            }
            Decoded::MapEntry { key, user_key, value } => {
                self.key(key, kg)?;
                let (key_bytes, namespace) = key.split_at(self.key_len);
                let (ttl, payload) = self.ttl_split(kg, value)?;
                self.push_key(kg, key_bytes, namespace);
                let typed = match &mut self.cols.user_key {
                    Some(u) => u.append_if_conforms(user_key).map_err(|e| err(&self.meta, kg, e))?,
                    None => false,
                };
                if typed {
                    self.cols.user_key_json.as_mut().expect("map column").append_null();
                } else {
                    if let Some(u) = &mut self.cols.user_key {
                        u.append_null();
                    }
                    self.scratch.clear();
                    codec::msgpack_to_json(user_key, &mut self.scratch)
                        .map_err(|e| err(&self.meta, kg, format!("a map user key is not valid: {e}")))?;
                    let json =
                        std::str::from_utf8(&self.scratch).map_err(|_| err(&self.meta, kg, "JSON is not UTF-8"))?;
                    self.cols.user_key_json.as_mut().expect("map column").append_value(json);
                }
                self.push_value(kg, payload, ttl)?;
                self.end_row()
            }
        }
    }

    fn end_row(&mut self) -> Result<(), String> {
        self.cols.rows += 1;
        if self.cols.rows >= self.batch_rows {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), String> {
        let n = self.cols.rows;
        if n == 0 {
            return Ok(());
        }
        let c = &mut self.cols;
        let namespace = c.namespace.finish();
        if self.file.is_pending() && namespace.values().is_empty() {
            // No namespaces (no windows) in the file's first batch: the
            // column is written without a dictionary, as delta lengths of
            // empty values (next to nothing). A dictionary would intern
            // every empty value, and that cost a third of the whole write
            // (profiled: the byte compare of two empty slices, whose
            // pointers are dangling, with masked vector loads, slow on
            // AVX-512 machines).
            self.file.without_dictionary(COL_NAMESPACE);
        }
        // Every row holds the state's name: one array, made once, serves every batch.
        if self.state_names.len() < n {
            self.state_names = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                self.meta.name.as_str(),
                n,
            )));
        }
        let mut arrays: Vec<ArrayRef> = vec![
            self.state_names.slice(0, n),
            Arc::new(c.key_group.finish()),
            Arc::new(c.key_bytes.finish()),
            Arc::new(namespace),
        ];
        if let Some(k) = &mut c.key {
            arrays.push(k.finish()?);
        }
        if let Some(u) = &mut c.user_key {
            arrays.push(u.finish()?);
        }
        if let Some(u) = &mut c.user_key_json {
            arrays.push(Arc::new(u.finish()));
        }
        if let Some(p) = &mut c.position {
            arrays.push(Arc::new(p.finish()));
        }
        if let Some(t) = &mut c.timestamp {
            arrays.push(Arc::new(t.finish()));
        }
        if let Some(v) = &mut c.value {
            arrays.push(v.finish()?);
        }
        if let Some(j) = &mut c.value_json {
            arrays.push(Arc::new(j.finish()));
        }
        if let Some(t) = &mut c.ttl {
            arrays.push(Arc::new(t.finish()));
        }
        c.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| format!("state '{}': building a batch: {e} (a Cairn bug)", self.meta.name))?;
        self.file.write(&batch)
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.file.rows() + self.cols.rows as u64
    }

    /// Finish the file (durable) and describe it for `_metadata`.
    pub fn finish(mut self) -> Result<StateFileRef, String> {
        self.flush_batch()?;
        let mut kv = kv_base(CONTENT_KEYED);
        kv.push((
            KV_STATE.into(),
            serde_json::to_string(&self.meta).map_err(|e| e.to_string())?,
        ));
        if let Some(s) = &self.key_shape {
            kv.push((
                KV_KEY_SHAPE.into(),
                serde_json::to_string(s).map_err(|e| e.to_string())?,
            ));
        }
        self.file.finish(kv)
    }
}

/// Write every (state, key group) of a keyed snapshot: one file per state,
/// `dir/<stem>.<state slug>.parquet` (made unique). Files are durable when
/// this returns. `intend` is told each file before it is created.
pub fn write_keyed_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    stem: &str,
    snapshot: &dyn cairn_state::KeyedStateSnapshot,
    key_codec: Option<&KeyCodec>,
    options: &WriteOptions,
    intend: &mut dyn FnMut(&Path),
) -> Result<Vec<StateFileRef>, String> {
    let mut files = SnapshotFiles {
        storage,
        dir,
        stem,
        key_codec,
        options,
        intend,
        done: Vec::new(),
        current: None,
        used_names: Vec::new(),
        last_meta: std::ptr::null(),
        failure: None,
    };
    // Value objects (the heap backend's typed states) are taken as they
    // are; every other group comes encoded. Both visitors write through the
    // one set of files.
    let files = std::cell::RefCell::new(&mut files);
    let visited = snapshot.for_each_group_or_object(
        &mut |meta, kg, bytes| {
            let mut f = files.borrow_mut();
            let written = f.writer(meta).and_then(|w| w.push_group(kg, bytes));
            f.check(written)
        },
        &mut |meta, kg, key, value| {
            let mut f = files.borrow_mut();
            let written = f.writer(meta).and_then(|w| w.push_object(kg, key, value));
            f.check(written)
        },
    );
    let files = files.into_inner();
    if let Some(e) = files.failure.take() {
        return Err(e);
    }
    visited.map_err(|e| e.to_string())?;
    if let Some(w) = files.current.take() {
        files.done.push(w.finish()?);
    }
    Ok(std::mem::take(&mut files.done))
}

/// The files of [`write_keyed_snapshot`]: one open at a time, for the state
/// being visited (a snapshot visits states one after the other).
struct SnapshotFiles<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    stem: &'a str,
    key_codec: Option<&'a KeyCodec>,
    options: &'a WriteOptions,
    intend: &'a mut dyn FnMut(&Path),
    done: Vec<StateFileRef>,
    current: Option<KeyedFileWriter>,
    used_names: Vec<String>,
    last_meta: *const StateMeta,
    /// The first error, kept here because the snapshot's visitor can only
    /// say that it stopped.
    failure: Option<String>,
}

impl SnapshotFiles<'_> {
    /// Keep a failed write's error and stop the visit.
    fn check(&mut self, written: Result<(), String>) -> Result<(), cairn_state::StateError> {
        written.map_err(|e| {
            self.failure.get_or_insert(e);
            cairn_state::StateError::Backend(String::new())
        })
    }

    /// The writer of `meta`'s file, finishing the previous state's file and
    /// creating this one's when the state changes.
    fn writer(&mut self, meta: &StateMeta) -> Result<&mut KeyedFileWriter, String> {
        // The same state as the previous entry (the snapshot hands out one
        // `StateMeta` per state): no name to compare, once per row.
        if !(std::ptr::eq(self.last_meta, meta) && self.current.is_some()) {
            self.last_meta = meta;
            self.switch_to(meta)?;
        }
        Ok(self.current.as_mut().expect("opened"))
    }

    /// Finish the previous state's file and create `meta`'s when the state changed.
    fn switch_to(&mut self, meta: &StateMeta) -> Result<(), String> {
        if self.current.as_ref().is_some_and(|w| w.meta().name != meta.name) {
            let finished = self.current.take().expect("checked").finish()?;
            self.done.push(finished);
        }
        if self.current.is_none() {
            let slug = file_slug(&meta.name);
            let mut rel = format!("{}.{slug}.parquet", self.stem);
            let mut n = 2;
            while self.used_names.contains(&rel) {
                rel = format!("{}.{slug}-{n}.parquet", self.stem);
                n += 1;
            }
            self.used_names.push(rel.clone());
            (self.intend)(&self.dir.join(&rel));
            let w = KeyedFileWriter::create(self.storage, self.dir, &rel, meta, self.key_codec, self.options)?;
            self.current = Some(w);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// A keyed state file of canonical format v2, opened (footer read).
pub struct KeyedFile {
    source: ParquetSource,
    meta: StateMeta,
    key_shape: Option<Shape>,
    /// Per row group: its key-group range from the statistics, if recorded.
    kg_ranges: Vec<Option<(u32, u32)>>,
}

/// Receives one restored (state, key group) with its encoded entries and
/// how many keys they hold (for `KeyedStateBackend::restore_group_of`).
pub type GroupSink<'a> = dyn FnMut(&StateMeta, u32, &[u8], usize) -> Result<(), String> + 'a;

/// Placeholder TTL for files that lost Cairn's key-value metadata: never
/// expires, and the job's own registration replaces it.
const UNKNOWN_TTL: StateTtlConfig = StateTtlConfig {
    ttl_ms: u64::MAX,
    update_type: TtlUpdateType::OnCreateAndWrite,
};

fn has_col(source: &ParquetSource, name: &str) -> bool {
    source.schema().fields().iter().any(|f| f.name() == name)
}

impl KeyedFile {
    /// Interpret an opened Parquet file as keyed state. The state's metadata
    /// comes from Cairn's key-value metadata when the file still has it, and
    /// from its columns otherwise (tools that rewrite files may drop it).
    pub fn new(storage: &dyn Storage, source: ParquetSource) -> Result<Self, String> {
        let key_shape = match source.kv(KV_KEY_SHAPE) {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| format!("'{KV_KEY_SHAPE}' is not valid: {e}"))?),
            None => None,
        };
        let meta = match source.kv(KV_STATE) {
            Some(json) => {
                serde_json::from_str::<StateMeta>(json).map_err(|e| format!("'{KV_STATE}' is not valid: {e}"))?
            }
            None => {
                let name = first_state_name(storage, &source)?;
                let kind = if has_col(&source, COL_POSITION) {
                    StateKind::List
                } else if has_col(&source, COL_USER_KEY) || has_col(&source, COL_USER_KEY_JSON) {
                    StateKind::Map
                } else {
                    StateKind::Value
                };
                StateMeta {
                    name,
                    kind,
                    value_type: String::new(),
                    ttl: has_col(&source, COL_TTL).then_some(UNKNOWN_TTL),
                    shapes: None,
                }
            }
        };
        let kg_col = source
            .schema()
            .fields()
            .iter()
            .position(|f| f.name() == COL_KEY_GROUP)
            .ok_or_else(|| format!("column '{COL_KEY_GROUP}' is missing"))?;
        let kg_ranges = (0..source.metadata.num_row_groups())
            .map(|rg| kg_range(&source, rg, kg_col))
            .collect();
        Ok(KeyedFile {
            source,
            meta,
            key_shape,
            kg_ranges,
        })
    }

    /// The state this file holds.
    pub fn meta(&self) -> &StateMeta {
        &self.meta
    }

    /// The key type's shape, when the file records it.
    pub fn key_shape(&self) -> Option<&Shape> {
        self.key_shape.as_ref()
    }

    /// Rows in the file.
    pub fn num_rows(&self) -> u64 {
        self.source.metadata.file_metadata().num_rows().max(0) as u64
    }

    /// The underlying Parquet file.
    pub fn source(&self) -> &ParquetSource {
        &self.source
    }

    /// The key groups row group `rg` holds, from its statistics.
    pub fn row_group_range(&self, rg: usize) -> Option<KeyGroupRange> {
        self.kg_ranges.get(rg).copied().flatten().map(|(a, b)| KeyGroupRange {
            start: a,
            end_exclusive: b + 1,
        })
    }

    /// Whether the file may hold key groups of `range` (by statistics).
    pub fn overlaps(&self, range: KeyGroupRange) -> bool {
        self.kg_ranges
            .iter()
            .any(|r| r.is_none_or(|(a, b)| a < range.end_exclusive && b >= range.start))
    }

    /// Visit the file's rows of key groups in `range` as encoded groups
    /// ([`cairn_state::snapshot_codec`], what `restore_group` takes). Groups
    /// are handed out as soon as no later row can belong to them (files
    /// sorted by key group, as Cairn writes them), else at the end.
    /// `max_parallelism` checks that each row's key group is its key's.
    /// `verify` is the file's CRC-32 from `_metadata` (see [`ParquetSource::read`]).
    pub fn for_each_group(
        &self,
        storage: &dyn Storage,
        range: KeyGroupRange,
        max_parallelism: Option<u32>,
        verify: Option<u32>,
        visit: &mut GroupSink<'_>,
    ) -> Result<(), String> {
        let selected: Vec<usize> = (0..self.kg_ranges.len())
            .filter(|&rg| self.kg_ranges[rg].is_none_or(|(a, b)| a < range.end_exclusive && b >= range.start))
            .collect();
        if selected.is_empty() {
            return Ok(());
        }
        // Sorted at row-group granularity: later row groups start after the
        // earlier ones end, so groups below the next row group's start are done.
        let sorted = self.kg_ranges.iter().all(Option::is_some)
            && self
                .kg_ranges
                .windows(2)
                .all(|w| matches!((w[0], w[1]), (Some((_, b)), Some((c, _))) if b <= c));
        let verify_now = if selected.len() == self.kg_ranges.len() {
            verify
        } else {
            None
        };
        let mut pending: BTreeMap<u32, Pending> = BTreeMap::new();
        // The key group of the rows being read, out of the map (rows of one
        // key group come together: one map lookup per key group, not per row).
        let mut current: Option<(u32, Pending)> = None;
        let stash = |pending: &mut BTreeMap<u32, Pending>, current: &mut Option<(u32, Pending)>| {
            if let Some((kg, p)) = current.take() {
                pending.insert(kg, p);
            }
        };
        let timers = self.meta.name.starts_with(TIMER_STATE_PREFIX);
        let value_col = value_column_name(&self.meta.name).to_string();
        let mut last_rg = None;
        let mut scratch = Vec::new();
        // Reused for every row: the backend key and the value.
        let (mut composite, mut value) = (Vec::new(), Vec::new());
        // Without a key split (no key codec) key_bytes is the whole backend key.
        let check_kg = max_parallelism.filter(|_| self.key_shape.is_some() || has_col(&self.source, COL_KEY));
        // The duplicate check's table, reused by every group.
        let mut table = Vec::new();
        let mut flush = |pending: &mut BTreeMap<u32, Pending>, below: Option<u32>| -> Result<(), String> {
            let done: Vec<u32> = pending
                .keys()
                .copied()
                .filter(|kg| below.is_none_or(|b| *kg < b))
                .collect();
            for kg in done {
                let p = pending.remove(&kg).expect("listed");
                let keys = p.key_count();
                let encoded = p.encode(&self.meta, kg, timers, &mut table)?;
                visit(&self.meta, kg, &encoded, keys)?;
            }
            Ok(())
        };
        // The columns a restore reads: not the typed key (restores use
        // key_bytes; the key is for people and SQL), nor columns Cairn does
        // not know. Decoding the key cost as much as decoding key_bytes.
        let wanted: Vec<usize> = self
            .source
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                let name = f.name().as_str();
                name != COL_KEY && (RESERVED.contains(&name) || name == value_col)
            })
            .map(|(i, _)| i)
            .collect();
        self.source
            .read_columns(storage, &selected, Some(&wanted), 8192, verify_now, &mut |rg, batch| {
            if sorted && last_rg != Some(rg) {
                if let Some((start, _)) = self.kg_ranges[rg] {
                    stash(&mut pending, &mut current);
                    flush(&mut pending, Some(start))?;
                }
                last_rg = Some(rg);
            }
            let at = |row: usize, what: &str| format!("row group {rg}, row {row}: {what}");
            let col = |name: &str| -> Result<Option<Decoder<'_>>, String> {
                match batch.column_by_name(name) {
                    Some(a) => Decoder::new(a).map(Some).map_err(|e| format!("column '{name}': {e}")),
                    None => Ok(None),
                }
            };
            let c_state = col(COL_STATE)?;
            let c_kg = col(COL_KEY_GROUP)?.ok_or_else(|| format!("column '{COL_KEY_GROUP}' is missing"))?;
            let c_kb = col(COL_KEY_BYTES)?.ok_or_else(|| format!("column '{COL_KEY_BYTES}' is missing"))?;
            let c_ns = col(COL_NAMESPACE)?;
            let c_uk = col(COL_USER_KEY)?;
            let c_ukj = col(COL_USER_KEY_JSON)?;
            let c_pos = col(COL_POSITION)?;
            let c_val = if timers { None } else { col(&value_col)? };
            let c_valj = col(COL_VALUE_JSON)?;
            let c_ttl = col(COL_TTL)?;
            let c_ts = if timers { col(COL_TIMESTAMP)? } else { None };
            for row in 0..batch.num_rows() {
                let kg = c_kg
                    .int_at(row)
                    .ok_or_else(|| at(row, "key_group is null or not an integer"))?;
                let kg = u32::try_from(kg).map_err(|_| at(row, "key_group is negative"))?;
                if !range.contains(kg) {
                    continue;
                }
                if let Some(s) = &c_state {
                    if s.str_at(row).is_some_and(|s| s != self.meta.name) {
                        return Err(at(row, &format!("the row belongs to state '{}', but the file holds state '{}' (one state per file)", s.str_at(row).unwrap_or_default(), self.meta.name)));
                    }
                }
                let key_bytes = c_kb.bin_at(row).ok_or_else(|| at(row, "key_bytes is null"))?;
                // The key's key-group hash, when checked: also the duplicate
                // check's hash of a key without namespace (one hash a row).
                let mut key_hash = None;
                if let Some(mp) = check_kg {
                    // `key_group_for_bytes`, with the hash kept.
                    let hash = key_group_hash(key_bytes);
                    let expected = hash % mp;
                    key_hash = Some(hash);
                    if expected != kg {
                        return Err(at(row, &format!("key_group is {kg} but the key's bytes hash to key group {expected} (with max parallelism {mp}); a row in the wrong key group would never be found")));
                    }
                }
                let namespace = c_ns.as_ref().and_then(|c| c.bin_at(row)).unwrap_or(&[]);
                if current.as_ref().is_none_or(|(k, _)| *k != kg) {
                    stash(&mut pending, &mut current);
                    current = Some((kg, pending.remove(&kg).unwrap_or_default()));
                }
                let p = &mut current.as_mut().expect("set above").1;
                if timers {
                    let ts = c_ts
                        .as_ref()
                        .and_then(|c| c.int_at(row))
                        .ok_or_else(|| at(row, "a timer row has no timestamp"))?;
                    composite.clear();
                    composite.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
                    put_bytes(&mut composite, key_bytes);
                    composite.extend_from_slice(namespace);
                    p.add_value(&composite, &[]);
                    continue;
                }
                composite.clear();
                composite.extend_from_slice(key_bytes);
                composite.extend_from_slice(namespace);
                // The value: TTL timestamp, then MessagePack (typed column, else JSON).
                value.clear();
                match (self.meta.ttl.is_some(), c_ttl.as_ref().and_then(|c| c.int_at(row))) {
                    (true, Some(ts)) => {
                        let ts = u64::try_from(ts).map_err(|_| at(row, &format!("ttl_timestamp_ms {ts} is negative")))?;
                        value.extend_from_slice(&ts.to_le_bytes());
                    }
                    (true, None) => return Err(at(row, "the state has a TTL but the row has no ttl_timestamp_ms")),
                    (false, Some(_)) => return Err(at(row, "the row has a ttl_timestamp_ms but the state has no TTL")),
                    (false, None) => {}
                }
                typed_or_json(c_val.as_ref(), c_valj.as_ref(), row, &mut value, &mut scratch)
                    .map_err(|e| at(row, &format!("value: {e}")))?;
                match self.meta.kind {
                    StateKind::Value => match key_hash {
                        Some(hash) if namespace.is_empty() => p.add_value_hashed(&composite, &value, hash),
                        _ => p.add_value(&composite, &value),
                    },
                    StateKind::List => {
                        let pos = c_pos
                            .as_ref()
                            .and_then(|c| c.int_at(row))
                            .ok_or_else(|| at(row, "a list-state row has no position"))?;
                        let pos = i32::try_from(pos).map_err(|_| at(row, "position is out of range"))?;
                        p.lists.entry(composite.clone()).or_default().push((pos, value.clone()));
                    }
                    StateKind::Map => {
                        let mut uk = Vec::new();
                        typed_or_json(c_uk.as_ref(), c_ukj.as_ref(), row, &mut uk, &mut scratch)
                            .map_err(|e| at(row, &format!("user key: {e}")))?;
                        if p.maps.entry(composite.clone()).or_default().insert(uk, value.clone()).is_some() {
                            return Err(at(row, "a map user key appears twice for the same key and namespace"));
                        }
                    }
                }
            }
            Ok(())
        })?;
        stash(&mut pending, &mut current);
        flush(&mut pending, None)
    }
}

/// The value of `row` from its typed column, or else its JSON column.
fn typed_or_json(
    typed: Option<&Decoder<'_>>,
    json: Option<&Decoder<'_>>,
    row: usize,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    if let Some(j) = json.filter(|j| !j.is_null(row)) {
        let text = j
            .str_at(row)
            .ok_or_else(|| "the JSON column is not a string".to_string())?;
        scratch.clear();
        return codec::json_to_msgpack(text.as_bytes(), out).map_err(|e| format!("the JSON text is not valid: {e}"));
    }
    match typed {
        Some(t) => t.write(row, out),
        None => Err("the row has neither a typed value nor JSON text".into()),
    }
}

/// Probes the duplicate check spends on `n` entries before it sorts
/// instead: about eight per entry, far above what well-spread hashes need.
fn probe_budget(n: usize) -> usize {
    8 * n + 1024
}

/// The rows of one key group, collected until the group is complete.
/// Values and timers (the bulk of most savepoints) are encoded as they
/// arrive, in one buffer, with an index to find duplicate keys at the end
/// (restores do not depend on order); lists and maps are grouped per key.
#[derive(Default)]
struct Pending {
    /// `snapshot_codec` entries of value states and timers, in arrival order.
    encoded: Vec<u8>,
    /// Per entry in `encoded`: a hash of its key, and the key's offset and length there.
    keys: Vec<(u32, u32, u32)>,
    lists: BTreeMap<Vec<u8>, Vec<(i32, Vec<u8>)>>,
    maps: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Pending {
    /// The keys (with namespaces) collected: value entries, lists, maps.
    fn key_count(&self) -> usize {
        self.keys.len() + self.lists.len() + self.maps.len()
    }

    fn add_value(&mut self, key: &[u8], value: &[u8]) {
        self.add_value_hashed(key, value, murmur3_x86_32(key, 0x9e37_79b9));
    }

    /// `add_value` with the key's hash known (any well-mixed hash of the
    /// whole key: it only has to tell most different keys apart).
    fn add_value_hashed(&mut self, key: &[u8], value: &[u8], hash: u32) {
        cairn_state::codec::put_varint(&mut self.encoded, key.len() as u64);
        let at = self.encoded.len();
        self.encoded.extend_from_slice(key);
        put_bytes(&mut self.encoded, value);
        self.keys.push((hash, at as u32, key.len() as u32));
    }

    /// Two entries with one key would silently keep only one of them.
    fn check_unique_keys(&self, meta: &StateMeta, kg: u32, timers: bool, table: &mut Vec<u32>) -> Result<(), String> {
        if self.keys.len() < 2 {
            return Ok(());
        }
        // The file's keys may have been chosen to share one hash (keys that
        // hash alike land in one key group by design); past a budget of
        // probes the check sorts instead, so such a file costs n log n, not n².
        let duplicate = match self.duplicate_by_hash(table, probe_budget(self.keys.len())) {
            Some(found) => found,
            None => self.duplicate_by_sorting(),
        };
        if duplicate {
            return Err(format!(
                "state '{}', key group {kg}: {}",
                meta.name,
                if timers {
                    "a timer appears twice"
                } else {
                    "two rows hold a value for the same key and namespace"
                }
            ));
        }
        Ok(())
    }

    fn key(&self, &(_, at, len): &(u32, u32, u32)) -> &[u8] {
        &self.encoded[at as usize..(at + len) as usize]
    }

    /// Whether two entries share a key, in one pass over an open-addressing
    /// table of entry indices (`table`, reused between groups); keys are
    /// compared only when their hashes are equal, which is rarely for
    /// different keys. `None` when the probes exceed `budget`.
    fn duplicate_by_hash(&self, table: &mut Vec<u32>, budget: usize) -> Option<bool> {
        let n = self.keys.len();
        // At most half full; a power of two, indexed by the hash's top bits
        // after a multiply (the key-group hash's low bits are alike within
        // a group).
        let bits = (2 * n).next_power_of_two().trailing_zeros().max(4);
        let mask = (1usize << bits) - 1;
        table.clear();
        table.resize(1 << bits, u32::MAX);
        let mut probes = 0usize;
        for (i, e) in self.keys.iter().enumerate() {
            let mut slot = (e.0.wrapping_mul(0x9e37_79b1) >> (32 - bits)) as usize;
            loop {
                let t = table[slot];
                if t == u32::MAX {
                    table[slot] = i as u32;
                    break;
                }
                let other = &self.keys[t as usize];
                if other.0 == e.0 && self.key(other) == self.key(e) {
                    return Some(true);
                }
                probes += 1;
                if probes > budget {
                    return None;
                }
                slot = (slot + 1) & mask;
            }
        }
        Some(false)
    }

    /// Whether two entries share a key, by sorting the keys.
    fn duplicate_by_sorting(&self) -> bool {
        let mut keys: Vec<&[u8]> = self.keys.iter().map(|e| self.key(e)).collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    }

    fn encode(mut self, meta: &StateMeta, kg: u32, timers: bool, table: &mut Vec<u32>) -> Result<Vec<u8>, String> {
        self.check_unique_keys(meta, kg, timers, table)?;
        let mut buf = std::mem::take(&mut self.encoded);
        let mut value = Vec::new();
        for (k, mut elems) in self.lists {
            elems.sort_by_key(|(p, _)| *p);
            if elems.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(format!(
                    "state '{}': two list elements of one key have the same position",
                    meta.name
                ));
            }
            value.clear();
            for (_, e) in &elems {
                put_bytes(&mut value, e);
            }
            snapshot_codec::put_entry(&mut buf, &k, &value);
        }
        for (k, m) in &self.maps {
            snapshot_codec::put_map(&mut buf, k, m.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
        }
        Ok(buf)
    }
}

fn kg_range(source: &ParquetSource, rg: usize, col: usize) -> Option<(u32, u32)> {
    use parquet::file::statistics::Statistics;
    let g = source.metadata.row_group(rg);
    // The Arrow column index equals the leaf index for the flat leading columns.
    let leaf = g
        .columns()
        .iter()
        .position(|c| c.column_path().string() == COL_KEY_GROUP)
        .unwrap_or(col);
    match g.column(leaf).statistics()? {
        Statistics::Int32(s) => {
            let (a, b) = (s.min_opt()?, s.max_opt()?);
            Some((u32::try_from(*a).ok()?, u32::try_from(*b).ok()?))
        }
        Statistics::Int64(s) => {
            let (a, b) = (s.min_opt()?, s.max_opt()?);
            Some((u32::try_from(*a).ok()?, u32::try_from(*b).ok()?))
        }
        _ => None,
    }
}

fn first_state_name(storage: &dyn Storage, source: &ParquetSource) -> Result<String, String> {
    let n = source.metadata.num_row_groups();
    for rg in 0..n {
        if source.metadata.row_group(rg).num_rows() == 0 {
            continue;
        }
        let mut name = None;
        source.read(storage, &[rg], 1, None, &mut |_, batch| {
            if name.is_none() {
                if let Some(a) = batch.column_by_name(COL_STATE) {
                    let d = Decoder::new(a).map_err(|e| format!("column '{COL_STATE}': {e}"))?;
                    if batch.num_rows() > 0 {
                        name = d.str_at(0).map(str::to_string);
                    }
                }
            }
            Ok(())
        })?;
        return name.ok_or_else(|| format!("column '{COL_STATE}' is missing or null"));
    }
    Err("the file has no rows and no Cairn metadata saying which state it holds".into())
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    fn meta() -> StateMeta {
        StateMeta {
            name: "count".into(),
            kind: StateKind::Value,
            value_type: "u64".into(),
            ttl: None,
            shapes: None,
        }
    }

    #[test]
    fn values_are_encoded_as_they_come_and_duplicate_keys_are_refused() {
        let mut p = Pending::default();
        let keys: Vec<Vec<u8>> = (0u32..500)
            .map(|i| i.to_le_bytes().repeat(1 + i as usize % 3))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            p.add_value(k, &[i as u8]);
        }
        let encoded = p.encode(&meta(), 7, false, &mut Vec::new()).unwrap();
        let mut got = Vec::new();
        snapshot_codec::decode_group("count", StateKind::Value, &encoded, &mut |d| {
            if let snapshot_codec::Decoded::Entry { key, value } = d {
                got.push((key.to_vec(), value.to_vec()));
            }
            Ok(())
        })
        .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), vec![i as u8]))
            .collect();
        assert_eq!(got, want);

        let mut p = Pending::default();
        for k in &keys {
            p.add_value(k, b"v");
        }
        p.add_value(&keys[321], b"again");
        let e = p.encode(&meta(), 7, false, &mut Vec::new()).unwrap_err();
        assert!(e.contains("key group 7: two rows hold a value for the same key"), "{e}");
        // Hashes that are all alike (worst case) or alike in their low bits
        // (the key-group hash within a group) only cost key compares.
        for hash in [|_: usize| 7u32, |i: usize| (i as u32) << 7 | 5] {
            let mut p = Pending::default();
            for (i, k) in keys.iter().enumerate() {
                p.add_value_hashed(k, b"v", hash(i));
            }
            assert!(p.encode(&meta(), 7, false, &mut Vec::new()).is_ok());
            let mut p = Pending::default();
            for (i, k) in keys.iter().enumerate().chain([(321, &keys[321])]) {
                p.add_value_hashed(k, b"v", hash(i));
            }
            assert!(p.encode(&meta(), 7, false, &mut Vec::new()).is_err());
        }
        let mut p = Pending::default();
        p.add_value(b"t", &[]);
        p.add_value(b"t", &[]);
        assert!(p
            .encode(&meta(), 3, true, &mut Vec::new())
            .unwrap_err()
            .contains("a timer appears twice"));
    }

    #[test]
    fn keys_sharing_one_hash_are_checked_by_sorting_past_the_probe_budget() {
        // A crafted file's keys may all share one hash: probing each against
        // all the others would be 50,000² / 2 compares.
        let keys: Vec<[u8; 8]> = (0u64..50_000).map(|i| (i * 7919).to_be_bytes()).collect();
        let pending = |extra: Option<usize>| {
            let mut p = Pending::default();
            for k in keys.iter().chain(extra.map(|i| &keys[i])) {
                p.add_value_hashed(k, b"v", 0x5eed);
            }
            p
        };
        let unique = pending(None);
        let budget = probe_budget(keys.len());
        assert_eq!(
            unique.duplicate_by_hash(&mut Vec::new(), budget),
            None,
            "the budget runs out"
        );
        assert!(!unique.duplicate_by_sorting());
        assert!(unique.encode(&meta(), 1, false, &mut Vec::new()).is_ok());
        let twice = pending(Some(49_999));
        assert!(twice.duplicate_by_sorting());
        let e = twice.encode(&meta(), 1, false, &mut Vec::new()).unwrap_err();
        assert!(e.contains("two rows hold a value for the same key"), "{e}");
        // Well-spread hashes stay within the budget.
        let mut spread = Pending::default();
        for k in &keys {
            spread.add_value(k, b"v");
        }
        assert_eq!(spread.duplicate_by_hash(&mut Vec::new(), budget), Some(false));
    }
}
