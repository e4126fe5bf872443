//! Snapshots of the RocksDB backend.
//!
//! The synchronous part writes the write cache out and takes a RocksDB
//! checkpoint (memtables flushed, SST files hard-linked into a directory of
//! the job): processing then goes on. The checkpoint directory is opened
//! read-only on the writer thread and read as logical key groups (the
//! format every backend restores: state files and canonical savepoints).

use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, ReadOptions, DB};

use cairn_state::backend::{GroupVisitor, KeyedStateSnapshot};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::snapshot_codec;
use cairn_state::{StateError, StateKind};

use crate::backend::{cf_options, db_options, JobResources, StateColumn};
use crate::keys::{self, group_bound, group_prefix};
use crate::local_dir::OwnedDir;

/// A consistent copy (hard links) of one instance, read as key groups.
pub(crate) struct LogicalSnapshot {
    // The database (opened while visiting) closes before the directory goes.
    dir: OwnedDir,
    states: Vec<StateColumn>,
    range: KeyGroupRange,
    resources: Arc<JobResources>,
}

impl LogicalSnapshot {
    pub fn new(dir: OwnedDir, states: Vec<StateColumn>, range: KeyGroupRange, resources: Arc<JobResources>) -> Self {
        LogicalSnapshot {
            dir,
            states,
            range,
            resources,
        }
    }

    fn open(&self) -> Result<DB, StateError> {
        let memory = self.resources.settings.memory;
        // Reads of a snapshot use their own small cache: they must not evict
        // the running instances' blocks.
        let cache = rocksdb::Cache::new_lru_cache(8 << 20)
            .map_err(|e| StateError::Backend(format!("RocksDB snapshot cache: {e}")))?;
        let cfs = self
            .states
            .iter()
            .map(|s| ColumnFamilyDescriptor::new(&s.cf, cf_options(&memory, &cache)));
        let mut opts: Options = db_options(&self.resources.settings);
        opts.create_if_missing(false);
        DB::open_cf_descriptors_read_only(&opts, self.dir.path(), cfs, false).map_err(|e| {
            StateError::Backend(format!(
                "RocksDB snapshot in {}: opening failed: {e}",
                self.dir.path().display()
            ))
        })
    }
}

impl KeyedStateSnapshot for LogicalSnapshot {
    fn for_each_group(&self, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        self.for_each_group_in(self.range, visit)
    }

    fn for_each_group_in(&self, range: KeyGroupRange, visit: &mut GroupVisitor<'_>) -> Result<(), StateError> {
        let range = range.intersect(&self.range);
        if self.states.is_empty() || range.is_empty() {
            return Ok(());
        }
        let db = self.open()?;
        let fail = |what: &str, e: rocksdb::Error| {
            StateError::Backend(format!(
                "RocksDB snapshot in {}: {what} failed: {e}",
                self.dir.path().display()
            ))
        };
        let mut buf = Vec::new();
        for s in &self.states {
            let cf = db
                .cf_handle(&s.cf)
                .ok_or_else(|| StateError::Backend(format!("RocksDB snapshot: column family '{}' is missing", s.cf)))?;
            let mut ro = ReadOptions::default();
            ro.fill_cache(false);
            ro.set_iterate_upper_bound(group_bound(range.end_exclusive));
            let mut it = db.raw_iterator_cf_opt(cf, ro);
            it.seek(group_prefix(range.start));
            let mut group: Option<u32> = None;
            // Map state: the entries of the key being collected.
            let mut map_key: Vec<u8> = Vec::new();
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let flush_map = |buf: &mut Vec<u8>, key: &[u8], entries: &mut Vec<(Vec<u8>, Vec<u8>)>| {
                if !entries.is_empty() {
                    snapshot_codec::put_map(buf, key, entries.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
                    entries.clear();
                }
            };
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                let kg = keys::row_key_group(k).ok_or_else(|| corrupt_row(&s.meta.name))?;
                if group != Some(kg) {
                    if let Some(g) = group {
                        flush_map(&mut buf, &map_key, &mut entries);
                        visit(&s.meta, g, &buf)?;
                        buf.clear();
                    }
                    group = Some(kg);
                }
                if s.meta.kind == StateKind::Map {
                    let (key, user_key) = keys::split_map_row(k).ok_or_else(|| corrupt_row(&s.meta.name))?;
                    if key != map_key.as_slice() {
                        flush_map(&mut buf, &map_key, &mut entries);
                        map_key.clear();
                        map_key.extend_from_slice(key);
                    }
                    entries.push((user_key.to_vec(), v.to_vec()));
                } else {
                    snapshot_codec::put_entry(&mut buf, keys::value_row_key(k), v);
                }
                it.next();
            }
            it.status().map_err(|e| fail("reading", e))?;
            if let Some(g) = group {
                flush_map(&mut buf, &map_key, &mut entries);
                visit(&s.meta, g, &buf)?;
                buf.clear();
            }
        }
        Ok(())
    }
}

fn corrupt_row(state: &str) -> StateError {
    StateError::Backend(format!("RocksDB snapshot: a row of state '{state}' is malformed"))
}
