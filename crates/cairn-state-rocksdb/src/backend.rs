//! The RocksDB keyed state backend: one RocksDB instance per keyed operator
//! subtask, one column family per state, rows keyed by key group first
//! ([`crate::keys`]), Cairn's write cache in front of value and list states
//! ([`crate::write_cache`]).
//!
//! Writes skip RocksDB's write-ahead log: a subtask's state is recovered from
//! checkpoints, never from its local files, and every snapshot flushes the
//! memtables first (RocksDB's checkpoint does), so a snapshot holds every
//! write made before it.

use std::path::Path;
use std::sync::Arc;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, LogLevel,
    MergeOperands, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use cairn_state::backend::{
    BackendContext, BackendSnapshot, FileFetcher, FileSetRestore, KeyedStateBackend, SnapshotRequest,
    SnapshotRequestKind, StateId,
};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::snapshot_codec::{self, Decoded};
use cairn_state::{StateError, StateKind, StateMeta};

use crate::files::{self, Descriptor, RocksDbFileSnapshot, SharedTracker, DESCRIPTOR_FILE};
use crate::keys::{self, group_bound, group_prefix, map_prefix, map_row, prefix_successor, value_row};
use crate::local_dir::{JobDir, OwnedDir, LOCAL_DIR_HINT};
use crate::settings::{MemoryPlan, RocksDbSettings};
use crate::snapshot::LogicalSnapshot;
use crate::write_cache::{Cached, WriteCache, WriteOut};

/// Name of the merge operator that appends list elements.
const LIST_APPEND: &str = "cairn-list-append";

/// What every instance of one job shares.
pub(crate) struct JobResources {
    pub settings: RocksDbSettings,
    /// The job's block cache when memory is managed.
    pub shared_cache: Option<Cache>,
    pub job_dir: JobDir,
}

/// One registered state and its column family.
#[derive(Clone, Debug)]
pub(crate) struct StateColumn {
    pub meta: StateMeta,
    pub cf: String,
}

/// Column family name of a state ("default" stays unused).
pub(crate) fn cf_name(state: &str) -> String {
    format!("s/{state}")
}

/// Appends merge operands to the existing value: list state elements are
/// self-framed by the typed layer, so a list is the concatenation of its adds.
fn list_append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let total = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// Options of one instance (the database as a whole).
pub(crate) fn db_options(settings: &RocksDbSettings) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(settings.background_jobs.min(i32::MAX as u32) as i32);
    if let Some(w) = settings.memory.instance_write_buffers {
        o.set_db_write_buffer_size(usize::try_from(w).unwrap_or(usize::MAX));
    }
    o.set_paranoid_checks(true);
    // A snapshot flushes every state's memtable: in one flush job, one
    // MANIFEST write, instead of one after another.
    o.set_atomic_flush(true);
    o.set_log_level(LogLevel::Warn);
    o.set_keep_log_file_num(2);
    o.set_max_log_file_size(1 << 20);
    o.set_stats_dump_period_sec(0);
    o
}

/// Options of one state's column family.
pub(crate) fn cf_options(memory: &MemoryPlan, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index and filter blocks live in the block cache, so they count against
    // the budget; level-0 ones are pinned (they are read on every lookup).
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // A missing key (a new key, a timer check) costs no data block read.
    table.set_bloom_filter(10.0, false);
    if memory.partitioned_index_filters {
        // One filter (and index) block per file grows with the file: at millions of
        // keys it outgrows a shard of the block cache and is read from the file on
        // every lookup of a new key. Partitions of a few KiB are cached one by one;
        // the small top level of each file stays pinned.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
    }
    table.set_format_version(5);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    o.set_write_buffer_size(usize::try_from(memory.write_buffer_size).unwrap_or(usize::MAX));
    o.set_max_write_buffer_number(memory.write_buffer_count.min(i32::MAX as u32) as i32);
    o.set_merge_operator_associative(LIST_APPEND, list_append);
    // A bloom filter over the memtable's keys: a read of a new key (every
    // first access of a key) does not search the skip list.
    o.set_memtable_prefix_bloom_ratio(0.1);
    o.set_memtable_whole_key_filtering(true);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_level_compaction_dynamic_level_bytes(true);
    o
}

/// Keyed state of one subtask in a RocksDB instance on local disk.
pub struct RocksDbKeyedStateBackend {
    // Field order matters: the database closes before its directory goes.
    db: DB,
    states: Vec<StateColumn>,
    metas: Vec<StateMeta>,
    range: KeyGroupRange,
    cf_opts: Options,
    block_cache: Cache,
    write: WriteOptions,
    cache: WriteCache,
    row: Vec<u8>,
    /// Files earlier checkpoints uploaded, for incremental checkpoints.
    tracker: SharedTracker,
    /// Who this instance serves, for error messages.
    label: String,
    dir: OwnedDir,
    resources: Arc<JobResources>,
}

impl RocksDbKeyedStateBackend {
    /// Open an empty instance for `target` in a fresh directory.
    pub(crate) fn open(resources: Arc<JobResources>, ctx: &BackendContext) -> Result<Self, StateError> {
        let short_id = ctx.operator_id.get(..8).unwrap_or(&ctx.operator_id);
        let dir = resources
            .job_dir
            .subdir(&format!("op-{short_id}-{}-a{}", ctx.subtask, ctx.attempt))?;
        let label = format!("operator uid '{}', subtask {}", ctx.uid, ctx.subtask);
        let memory = resources.settings.memory;
        let block_cache = match &resources.shared_cache {
            Some(c) => c.clone(),
            None => Cache::new_lru_cache(usize::try_from(memory.block_cache).unwrap_or(usize::MAX))
                .map_err(|e| StateError::Backend(format!("RocksDB block cache for {label}: {e}")))?,
        };
        let path = dir.path().join("db");
        let db = DB::open(&db_options(&resources.settings), &path).map_err(|e| open_err(&label, &path, &e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        // Write-outs are sorted: each insert starts where the last one ended.
        write.set_memtable_insert_hint_per_batch(true);
        Ok(RocksDbKeyedStateBackend {
            db,
            states: Vec::new(),
            metas: Vec::new(),
            range: ctx.key_groups,
            cf_opts: cf_options(&memory, &block_cache),
            block_cache,
            write,
            cache: WriteCache::new(memory.instance_write_cache),
            row: Vec::with_capacity(64),
            tracker: SharedTracker::default(),
            label,
            dir,
            resources,
        })
    }

    /// The instance's working directory.
    pub fn local_path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes held by the write cache.
    pub fn write_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Memory RocksDB reports for this instance: memtables, table readers
    /// (outside the block cache) and the (possibly shared) block cache.
    pub fn memory_usage(&self) -> Result<u64, StateError> {
        let mut total = self.block_cache.get_usage() as u64;
        for prop in ["rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem"] {
            for s in &self.states {
                let cf = self.cf(&s.cf)?;
                total += self
                    .db
                    .property_int_value_cf(cf, prop)
                    .map_err(|e| self.err("reading memory usage", &e))?
                    .unwrap_or(0);
            }
        }
        Ok(total)
    }

    fn err(&self, what: &str, e: &rocksdb::Error) -> StateError {
        db_err(&self.label, self.dir.path(), what, e)
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StateError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StateError::Backend(format!("RocksDB of {}: column family '{name}' is missing", self.label)))
    }

    #[inline]
    fn check(&self, state: StateId, kg: u32, map: bool) -> Result<usize, StateError> {
        let s = self.states.get(state as usize).ok_or_else(|| unknown(state))?;
        if !self.range.contains(kg) {
            return Err(StateError::Usage(format!(
                "key group {kg} is outside this subtask's key groups {}..{}",
                self.range.start, self.range.end_exclusive
            )));
        }
        match (s.meta.kind == StateKind::Map, map) {
            (true, false) => Err(wrong_kind(&s.meta.name, "a map state")),
            (false, true) => Err(wrong_kind(&s.meta.name, "not a map state")),
            _ => Ok(state as usize),
        }
    }

    /// Write the cache's dirty rows (of `only` state, or all) to RocksDB.
    fn write_out(&mut self, only: Option<usize>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let (db, states, cache) = (&self.db, &self.states, &mut self.cache);
        let mut missing = None;
        cache.write_out(only, &mut |state, w| {
            let Some(cf) = db.cf_handle(&states[state].cf) else {
                missing = Some(state);
                return;
            };
            match w {
                WriteOut::Put(k, v) => batch.put_cf(cf, k, v),
                WriteOut::Delete(k) => batch.delete_cf(cf, k),
                WriteOut::Merge(k, v) => batch.merge_cf(cf, k, v),
            }
        });
        if let Some(s) = missing {
            return Err(StateError::Backend(format!(
                "RocksDB of {}: column family of state '{}' is missing",
                self.label, self.states[s].meta.name
            )));
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.write)
                .map_err(|e| self.err("writing the write cache out", &e))?;
        }
        Ok(())
    }

    #[inline]
    fn maybe_evict(&mut self) -> Result<(), StateError> {
        if self.cache.over_limit() {
            self.write_out(None)?;
            self.cache.evict_clean();
        } else if self.cache.dirty_over_limit() {
            self.write_out(None)?;
        }
        Ok(())
    }

    fn db_get(&self, state: usize, row: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StateError> {
        let cf = self.cf(&self.states[state].cf)?;
        self.db.get_pinned_cf(cf, row).map_err(|e| self.err("reading", &e))
    }

    /// Visit the rows of `cf` in `[lower, upper)` in order until `visit` says stop.
    fn scan(
        &self,
        cf_name: &str,
        lower: &[u8],
        upper: Option<Vec<u8>>,
        fill_cache: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let cf = self.cf(cf_name)?;
        let mut ro = ReadOptions::default();
        ro.fill_cache(fill_cache);
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u);
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        it.seek(lower);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !visit(k, v) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| self.err("scanning", &e))
    }
}

fn open_err(label: &str, path: &Path, e: &rocksdb::Error) -> StateError {
    db_err(label, path, "opening", e)
}

fn db_err(label: &str, path: &Path, what: &str, e: &rocksdb::Error) -> StateError {
    let s = e.to_string();
    let hint = if s.contains("No space left") || s.contains("Permission denied") || s.contains("Read-only file system")
    {
        format!("; {LOCAL_DIR_HINT}")
    } else {
        String::new()
    };
    StateError::Backend(format!(
        "RocksDB of {label} in {}: {what} failed: {s}{hint}",
        path.display()
    ))
}

fn unknown(state: StateId) -> StateError {
    StateError::Usage(format!("state id {state} was never registered with this backend"))
}

fn wrong_kind(name: &str, what: &str) -> StateError {
    StateError::Usage(format!("state '{name}' is {what}; use the matching state handle"))
}

impl KeyedStateBackend for RocksDbKeyedStateBackend {
    fn kind(&self) -> &'static str {
        "rocksdb"
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError> {
        if let Some(i) = self.states.iter().position(|s| s.meta.name == meta.name) {
            let existing = &self.states[i].meta;
            if existing.kind != meta.kind {
                return Err(StateError::Conflict {
                    state: meta.name.clone(),
                    detail: format!(
                        "registered as {:?} state and again as {:?} state; give each state its own name",
                        existing.kind, meta.kind
                    ),
                });
            }
            // A restored state learns its TTL and type from the registering code.
            self.states[i].meta.ttl = meta.ttl;
            self.states[i].meta.value_type = meta.value_type.clone();
            self.metas[i] = self.states[i].meta.clone();
            return Ok(i as StateId);
        }
        let cf = cf_name(&meta.name);
        if self.db.cf_handle(&cf).is_none() {
            self.db.create_cf(&cf, &self.cf_opts).map_err(|e| {
                db_err(
                    &self.label,
                    self.dir.path(),
                    &format!("creating state '{}'", meta.name),
                    &e,
                )
            })?;
        }
        self.states.push(StateColumn { meta: meta.clone(), cf });
        self.metas.push(meta.clone());
        let id = self.states.len() - 1;
        self.cache.register(id, meta.kind != StateKind::Map);
        Ok(id as StateId)
    }

    fn registered(&self) -> &[StateMeta] {
        &self.metas
    }

    #[inline]
    fn get(&mut self, state: StateId, kg: u32, key: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        let s = self.check(state, kg, false)?;
        let mut row = std::mem::take(&mut self.row);
        value_row(kg, key, &mut row);
        let result = self.get_row(s, &row, out);
        self.row = row;
        result
    }

    #[inline]
    fn put(&mut self, state: StateId, kg: u32, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let s = self.check(state, kg, false)?;
        value_row(kg, key, &mut self.row);
        if self.cache.caches(s) {
            self.cache.put(s, &self.row, value);
            return self.maybe_evict();
        }
        let cf = self.cf(&self.states[s].cf)?;
        self.db
            .put_cf_opt(cf, &self.row, value, &self.write)
            .map_err(|e| self.err("writing", &e))
    }

    fn append(&mut self, state: StateId, kg: u32, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let s = self.check(state, kg, false)?;
        value_row(kg, key, &mut self.row);
        if self.cache.append(s, &self.row, bytes) {
            return self.maybe_evict();
        }
        let cf = self.cf(&self.states[s].cf)?;
        self.db
            .merge_cf_opt(cf, &self.row, bytes, &self.write)
            .map_err(|e| self.err("appending", &e))
    }

    fn remove(&mut self, state: StateId, kg: u32, key: &[u8]) -> Result<(), StateError> {
        let st = self.states.get(state as usize).ok_or_else(|| unknown(state))?;
        let is_map = st.meta.kind == StateKind::Map;
        let s = self.check(state, kg, is_map)?;
        if is_map {
            // Delete the key's rows one by one (no range tombstones, which
            // would slow every later read of the range).
            let mut prefix = Vec::new();
            map_prefix(kg, key, &mut prefix);
            let upper = prefix_successor(&prefix);
            let mut batch = WriteBatch::default();
            let cf = self.cf(&self.states[s].cf)?;
            self.scan(&self.states[s].cf, &prefix, upper, true, &mut |k, _| {
                batch.delete_cf(cf, k);
                true
            })?;
            return self
                .db
                .write_opt(batch, &self.write)
                .map_err(|e| self.err("removing a map", &e));
        }
        value_row(kg, key, &mut self.row);
        if self.cache.caches(s) {
            self.cache.set(s, &self.row, Cached::Absent, true);
            return self.maybe_evict();
        }
        let cf = self.cf(&self.states[s].cf)?;
        self.db
            .delete_cf_opt(cf, &self.row, &self.write)
            .map_err(|e| self.err("removing", &e))
    }

    fn map_get(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        user_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        let s = self.check(state, kg, true)?;
        map_row(kg, key, user_key, &mut self.row);
        match self.db_get(s, &self.row)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn map_put(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let s = self.check(state, kg, true)?;
        map_row(kg, key, user_key, &mut self.row);
        let cf = self.cf(&self.states[s].cf)?;
        self.db
            .put_cf_opt(cf, &self.row, value, &self.write)
            .map_err(|e| self.err("writing a map entry", &e))
    }

    fn map_remove(&mut self, state: StateId, kg: u32, key: &[u8], user_key: &[u8]) -> Result<(), StateError> {
        let s = self.check(state, kg, true)?;
        map_row(kg, key, user_key, &mut self.row);
        let cf = self.cf(&self.states[s].cf)?;
        self.db
            .delete_cf_opt(cf, &self.row, &self.write)
            .map_err(|e| self.err("removing a map entry", &e))
    }

    fn map_entries(
        &mut self,
        state: StateId,
        kg: u32,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        let s = self.check(state, kg, true)?;
        let mut prefix = Vec::new();
        map_prefix(kg, key, &mut prefix);
        let upper = prefix_successor(&prefix);
        let n = prefix.len();
        self.scan(&self.states[s].cf, &prefix, upper, true, &mut |k, v| {
            visit(&k[n..], v);
            true
        })
    }

    fn for_each_key(&mut self, state: StateId, visit: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError> {
        let s = self.states.get(state as usize).ok_or_else(|| unknown(state))?;
        let is_map = s.meta.kind == StateKind::Map;
        let cf = s.cf.clone();
        self.write_out(Some(state as usize))?;
        let lower = group_prefix(self.range.start);
        let upper = group_bound(self.range.end_exclusive);
        let mut last: Option<Vec<u8>> = None;
        let mut bad = false;
        self.scan(&cf, &lower, Some(upper), false, &mut |k, _| {
            let kg = keys::row_key_group(k).unwrap_or(0);
            if is_map {
                match keys::split_map_row(k) {
                    Some((key, _)) => {
                        if last.as_deref() != Some(key) {
                            visit(kg, key);
                            last = Some(key.to_vec());
                        }
                    }
                    None => bad = true,
                }
            } else {
                visit(kg, keys::value_row_key(k));
            }
            true
        })?;
        if bad {
            return Err(StateError::Backend(format!(
                "RocksDB of {}: a row of map state '{}' is malformed",
                self.label, self.states[state as usize].meta.name
            )));
        }
        Ok(())
    }

    fn snapshot(&mut self, request: &SnapshotRequest) -> Result<BackendSnapshot, StateError> {
        let metas = self.metas.clone();
        match request.kind {
            SnapshotRequestKind::CanonicalSavepoint => {
                let dir = self.checkpoint("canonical")?;
                Ok(BackendSnapshot::KeyGroups(Box::new(LogicalSnapshot::new(
                    dir,
                    self.states.clone(),
                    self.range,
                    self.resources.clone(),
                ))))
            }
            SnapshotRequestKind::Checkpoint { incremental } => {
                let dir = self.checkpoint(&format!("chk-{}", request.checkpoint_id))?;
                let tracked = incremental.then(|| (request.checkpoint_id, self.tracker.clone()));
                Ok(BackendSnapshot::Files(Box::new(RocksDbFileSnapshot::new(
                    dir, metas, tracked,
                )?)))
            }
            SnapshotRequestKind::NativeSavepoint => {
                let dir = self.checkpoint(&format!("savepoint-{}", request.checkpoint_id))?;
                Ok(BackendSnapshot::Files(Box::new(RocksDbFileSnapshot::new(
                    dir, metas, None,
                )?)))
            }
        }
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), StateError> {
        files::lock(&self.tracker).complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<(), StateError> {
        files::lock(&self.tracker).abort(checkpoint_id);
        Ok(())
    }

    fn restore_files(&mut self, parts: &[FileSetRestore], fetch: &FileFetcher<'_>) -> Result<(), StateError> {
        self.restore_from_files(parts, fetch)
    }

    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError> {
        let id = self.register(meta)?;
        let s = self.check(id, kg, meta.kind == StateKind::Map)?;
        let cf = self.cf(&self.states[s].cf)?;
        let mut batch = WriteBatch::default();
        let mut row = Vec::new();
        snapshot_codec::decode_group(&meta.name, meta.kind, encoded, &mut |d| {
            match (d, meta.kind) {
                (Decoded::Entry { key, value }, StateKind::Value | StateKind::List) => {
                    value_row(kg, key, &mut row);
                    batch.put_cf(cf, &row, value);
                }
                (Decoded::MapEntry { key, user_key, value }, StateKind::Map) => {
                    map_row(kg, key, user_key, &mut row);
                    batch.put_cf(cf, &row, value);
                }
                _ => {
                    return Err(StateError::Restore(format!(
                        "state '{}': snapshot entries do not match its kind {:?}",
                        meta.name, meta.kind
                    )))
                }
            }
            Ok(())
        })?;
        self.db
            .write_opt(batch, &self.write)
            .map_err(|e| self.err("restoring", &e))?;
        self.cache.invalidate(s);
        Ok(())
    }

    fn supports_ordered_scan(&self) -> bool {
        true
    }

    fn scan_from(
        &mut self,
        state: StateId,
        kg: u32,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let s = self.check(state, kg, false)?;
        if self.cache.caches(s) {
            // Scanned states live in RocksDB only, so scans see every row.
            self.write_out(Some(s))?;
            self.cache.stop_caching(s);
        }
        let mut lower = Vec::with_capacity(from.len() + 2);
        value_row(kg, from, &mut lower);
        let upper = group_bound(kg + 1);
        self.scan(&self.states[s].cf, &lower, Some(upper), true, &mut |k, v| {
            visit(keys::value_row_key(k), v)
        })
    }
}

impl RocksDbKeyedStateBackend {
    fn get_row(&mut self, s: usize, row: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        if self.cache.caches(s) {
            match self.cache.get(s, row) {
                Some(Cached::Value(v)) => {
                    out.clear();
                    out.extend_from_slice(v);
                    return Ok(true);
                }
                Some(Cached::Absent) => return Ok(false),
                Some(Cached::Appends(a)) => {
                    let a = a.clone();
                    out.clear();
                    if let Some(v) = self.db_get(s, row)? {
                        out.extend_from_slice(&v);
                    }
                    out.extend_from_slice(&a);
                    self.cache.set(s, row, Cached::Value(out.as_slice().into()), true);
                    self.maybe_evict()?;
                    return Ok(true);
                }
                None => {}
            }
            let found = match self.db_get(s, row)? {
                Some(v) => {
                    out.clear();
                    out.extend_from_slice(&v);
                    true
                }
                None => false,
            };
            let cached = if found {
                Cached::Value(out.as_slice().into())
            } else {
                Cached::Absent
            };
            self.cache.set(s, row, cached, false);
            self.maybe_evict()?;
            return Ok(found);
        }
        match self.db_get(s, row)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Write the cache out and take a RocksDB checkpoint (hard links of the
    /// SST files after a memtable flush) into a fresh directory of the job,
    /// with Cairn's descriptor beside RocksDB's files.
    pub(crate) fn checkpoint(&mut self, what: &str) -> Result<OwnedDir, StateError> {
        self.write_out(None)?;
        let dir = self.resources.job_dir.reserve(what);
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir.path()))
            .map_err(|e| self.err("taking a checkpoint", &e))?;
        let descriptor = serde_json::to_vec_pretty(&Descriptor::new(self.range, &self.states))
            .map_err(|e| StateError::Backend(format!("encoding {DESCRIPTOR_FILE}: {e}")))?;
        let path = dir.path().join(DESCRIPTOR_FILE);
        std::fs::write(&path, descriptor).map_err(|e| crate::local_dir::local_err("write", &path, &e))?;
        Ok(dir)
    }

    /// Restore from the files of old subtasks: download them, open the one
    /// overlapping this instance most in place (dropping its rows outside
    /// this instance's key groups with range deletions) and copy the
    /// overlapping key groups of the others into it.
    fn restore_from_files(&mut self, parts: &[FileSetRestore], fetch: &FileFetcher<'_>) -> Result<(), StateError> {
        let mut downloaded = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let what = format!(
                "files of the old subtask with key groups {}..{}",
                part.key_groups.start, part.key_groups.end_exclusive
            );
            if part.backend != "rocksdb" {
                return Err(StateError::Restore(format!(
                    "{what} were written by the '{}' state backend, which RocksDB cannot read; restore with \
                     state.backend.type: {}, or from a canonical savepoint",
                    part.backend, part.backend
                )));
            }
            let dir = self.dir.path().join(format!("restore-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| crate::local_dir::local_err("create", &dir, &e))?;
            for f in &part.files {
                if f.name.contains('/') || f.name.starts_with('.') {
                    return Err(StateError::Restore(format!(
                        "{what}: file name '{}' is not a plain name",
                        f.name
                    )));
                }
                fetch(f, &dir.join(&f.name))
                    .map_err(|e| StateError::Restore(format!("{what}: file '{}' ({}): {e}", f.name, f.path)))?;
            }
            let desc_path = dir.join(DESCRIPTOR_FILE);
            let bytes = std::fs::read(&desc_path)
                .map_err(|e| StateError::Restore(format!("{what}: {DESCRIPTOR_FILE} is missing or unreadable: {e}")))?;
            let desc = Descriptor::parse(&bytes, &what)?;
            let recorded = KeyGroupRange {
                start: desc.key_groups[0],
                end_exclusive: desc.key_groups[1],
            };
            if recorded != part.key_groups {
                return Err(StateError::Restore(format!(
                    "{what}: {DESCRIPTOR_FILE} says the files hold key groups {}..{}; the snapshot's metadata and \
                     its files disagree, so nothing is restored",
                    recorded.start, recorded.end_exclusive
                )));
            }
            let _ = std::fs::remove_file(&desc_path);
            downloaded.push((dir, desc, part));
        }
        let overlap = |r: &KeyGroupRange| r.intersect(&self.range).len();
        let base = if self.states.is_empty() {
            (0..downloaded.len()).max_by_key(|&i| overlap(&downloaded[i].2.key_groups))
        } else {
            None
        };
        if let Some(b) = base {
            let (dir, _, _) = &downloaded[b];
            let names = DB::list_cf(&Options::default(), dir).map_err(|e| self.err("listing restored states", &e))?;
            let cfs = names
                .iter()
                .filter(|n| n.as_str() != "default")
                .map(|n| ColumnFamilyDescriptor::new(n, self.cf_opts.clone()));
            let db = DB::open_cf_descriptors(&db_options(&self.resources.settings), dir, cfs)
                .map_err(|e| self.err("opening restored files", &e))?;
            self.db = db;
            // Rows outside this instance's key groups: range deletions.
            for name in names.iter().filter(|n| n.as_str() != "default") {
                let cf = self.cf(name)?;
                if self.range.start > 0 {
                    self.db
                        .delete_range_cf_opt(cf, &[][..], &group_prefix(self.range.start)[..], &self.write)
                        .map_err(|e| self.err("dropping key groups below the range", &e))?;
                }
                self.db
                    .delete_range_cf_opt(
                        cf,
                        &group_bound(self.range.end_exclusive)[..],
                        &[0xffu8; 3][..],
                        &self.write,
                    )
                    .map_err(|e| self.err("dropping key groups above the range", &e))?;
            }
        }
        for (i, (dir, desc, part)) in downloaded.iter().enumerate() {
            if Some(i) != base {
                self.copy_key_groups(dir, desc, part)?;
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        for (_, desc, part) in &downloaded {
            for d in &desc.column_families {
                let meta = part.states.iter().find(|m| m.name == d.state).ok_or_else(|| {
                    StateError::Restore(format!("state '{}' has files but no metadata in the snapshot", d.state))
                })?;
                if d.column_family != cf_name(&meta.name) {
                    return Err(StateError::Restore(format!(
                        "state '{}' is in column family '{}', which this build does not expect",
                        d.state, d.column_family
                    )));
                }
                let id = self.register(meta)?;
                self.cache.invalidate(id as usize);
            }
        }
        // The restored files belong to the snapshot restored from: the next
        // checkpoint uploads everything once.
        files::lock(&self.tracker).reset();
        Ok(())
    }

    /// Copy the rows of the key groups both `part` and this instance hold
    /// from a downloaded snapshot into this instance.
    fn copy_key_groups(&mut self, dir: &Path, desc: &Descriptor, part: &FileSetRestore) -> Result<(), StateError> {
        let common = part.key_groups.intersect(&self.range);
        if common.is_empty() {
            return Ok(());
        }
        let cache = Cache::new_lru_cache(8 << 20).map_err(|e| StateError::Backend(format!("RocksDB cache: {e}")))?;
        let memory = self.resources.settings.memory;
        let cfs = desc
            .column_families
            .iter()
            .map(|d| ColumnFamilyDescriptor::new(&d.column_family, cf_options(&memory, &cache)));
        let mut opts = db_options(&self.resources.settings);
        opts.create_if_missing(false);
        let src = DB::open_cf_descriptors_read_only(&opts, dir, cfs, false)
            .map_err(|e| db_err(&self.label, dir, "opening restored files", &e))?;
        for d in &desc.column_families {
            if self.db.cf_handle(&d.column_family).is_none() {
                self.db
                    .create_cf(&d.column_family, &self.cf_opts)
                    .map_err(|e| self.err("creating a restored state", &e))?;
            }
            let from = src.cf_handle(&d.column_family).ok_or_else(|| {
                StateError::Restore(format!("restored files lack column family '{}'", d.column_family))
            })?;
            let to = self.cf(&d.column_family)?;
            let mut ro = ReadOptions::default();
            ro.fill_cache(false);
            ro.set_iterate_upper_bound(group_bound(common.end_exclusive));
            let mut it = src.raw_iterator_cf_opt(from, ro);
            it.seek(group_prefix(common.start));
            let mut batch = WriteBatch::default();
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                batch.put_cf(to, k, v);
                if batch.size_in_bytes() > 4 << 20 {
                    let full = std::mem::take(&mut batch);
                    self.db
                        .write_opt(full, &self.write)
                        .map_err(|e| self.err("restoring", &e))?;
                }
                it.next();
            }
            it.status()
                .map_err(|e| db_err(&self.label, dir, "reading restored files", &e))?;
            self.db
                .write_opt(batch, &self.write)
                .map_err(|e| self.err("restoring", &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::JobShape;

    /// Filter blocks in the block cache after lookups of missing keys in one file
    /// written with `partitioned`: (filter blocks, top-level filter blocks).
    fn cached_filters(partitioned: bool) -> (u64, u64) {
        let dir = std::env::temp_dir().join(format!("cairn-rocksdb-partitions-{}-{partitioned}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let shape = JobShape {
            slots: 1,
            keyed_subtasks: 1,
        };
        let memory = MemoryPlan {
            partitioned_index_filters: partitioned,
            ..MemoryPlan::managed(16 << 20, shape, 0.5, 0.25, 64 << 20, 2)
        };
        let settings = RocksDbSettings {
            local_dir: dir.clone(),
            memory,
            background_jobs: 1,
        };
        let cache = Cache::new_lru_cache(1 << 20).unwrap();
        let db = DB::open_cf_descriptors(
            &db_options(&settings),
            &dir,
            [ColumnFamilyDescriptor::new("s", cf_options(&memory, &cache))],
        )
        .unwrap();
        let cf = db.cf_handle("s").unwrap();
        for i in 0u64..50_000 {
            db.put_cf(cf, i.to_be_bytes(), i.to_le_bytes()).unwrap();
        }
        db.flush_cf(cf).unwrap();
        for i in 50_000u64..50_100 {
            assert!(db.get_cf(cf, i.to_be_bytes()).unwrap().is_none());
        }
        let stats = db
            .property_value_cf(cf, "rocksdb.block-cache-entry-stats")
            .unwrap()
            .unwrap();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
        let count = |role: &str| {
            stats
                .split_once(&format!(" {role}("))
                .map_or(0, |(_, rest)| rest.split(',').next().unwrap().parse().unwrap())
        };
        (count("FilterBlock"), count("FilterMetaBlock"))
    }

    #[test]
    fn partitioned_index_filters_cut_each_files_filter_into_cached_partitions_only_when_configured() {
        // 50k keys: a filter of about 60 KiB, whole or in 4 KiB partitions.
        let (whole, no_top) = cached_filters(false);
        let (partitions, top) = cached_filters(true);
        assert_eq!(no_top, 0, "unpartitioned filters have no top level");
        assert!(
            top >= 1 && partitions > 4 * whole,
            "{partitions} partitions over {top} top levels, {whole} whole"
        );
    }
}
