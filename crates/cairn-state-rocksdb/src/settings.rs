//! The backend's settings, read from the job configuration (Flink's
//! `state.backend.rocksdb.*` keys), and how the memory budget is divided.

use std::path::PathBuf;

use cairn_config::{options, Configuration};
use cairn_state::StateError;

/// What the factory needs to know about the job to divide its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobShape {
    /// Slots the job needs: its largest operator parallelism (Flink's slot
    /// sharing puts one subtask of every operator in a slot).
    pub slots: u32,
    /// Keyed operator subtasks, each one RocksDB instance.
    pub keyed_subtasks: u32,
}

/// Settings of every RocksDB instance of one job.
#[derive(Clone, Debug, PartialEq)]
pub struct RocksDbSettings {
    /// Parent of the job's working directory.
    pub local_dir: PathBuf,
    /// Memory of each instance.
    pub memory: MemoryPlan,
    /// Background flush and compaction jobs per instance.
    pub background_jobs: u32,
}

/// How much memory an instance may use, and whether the block cache is one
/// cache shared by the job's instances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The job's budget when memory is managed (`None`: unmanaged).
    pub job_budget: Option<u64>,
    /// Capacity of the block cache (shared by the job when managed, else per instance).
    pub block_cache: u64,
    /// Memtable budget of one instance (RocksDB flushes when it is reached),
    /// `None` when unmanaged (only the per-memtable limits apply).
    pub instance_write_buffers: Option<u64>,
    /// Size of one memtable.
    pub write_buffer_size: u64,
    /// Memtables per state.
    pub write_buffer_count: u32,
    /// Bytes of Cairn's write cache per instance (0: off).
    pub instance_write_cache: u64,
    /// Index and filter blocks in small partitions under a pinned top level
    /// (`memory.partitioned-index-filters`).
    pub partitioned_index_filters: bool,
}

fn config_err(msg: String) -> StateError {
    StateError::Backend(msg)
}

impl RocksDbSettings {
    /// Read from `config` for a job of `shape`.
    pub fn from_config(config: &Configuration, shape: JobShape) -> Result<Self, StateError> {
        let configured = config.get(&options::ROCKSDB_LOCAL_DIR);
        let local_dir = configured.unwrap_or_else(std::env::temp_dir);
        let write_buffer_size = config.get(&options::ROCKSDB_WRITE_BUFFER_SIZE).bytes();
        let write_buffer_count = config.get(&options::ROCKSDB_WRITE_BUFFER_COUNT);
        let wb_ratio = config.get(&options::ROCKSDB_WRITE_BUFFER_RATIO);
        let wc_ratio = config.get(&options::ROCKSDB_WRITE_CACHE_RATIO);
        let partitioned_index_filters = config.get(&options::ROCKSDB_PARTITIONED_INDEX_FILTERS);
        let memory = if config.get(&options::ROCKSDB_MEMORY_MANAGED)
            || config.get(&options::ROCKSDB_MEMORY_FIXED_PER_SLOT).is_some()
        {
            if wb_ratio + wc_ratio >= 0.95 {
                return Err(config_err(format!(
                    "state.backend.rocksdb.memory.write-buffer-ratio ({wb_ratio}) plus \
                     state.backend.rocksdb.write-cache.ratio ({wc_ratio}) leave no memory for the block cache; \
                     keep their sum below 0.95"
                )));
            }
            let budget = match config.get(&options::ROCKSDB_MEMORY_FIXED_PER_SLOT) {
                Some(per_slot) => per_slot.bytes().saturating_mul(shape.slots.max(1) as u64),
                None => config.get(&options::MANAGED_MEMORY_SIZE).bytes(),
            };
            MemoryPlan {
                partitioned_index_filters,
                ..MemoryPlan::managed(budget, shape, wb_ratio, wc_ratio, write_buffer_size, write_buffer_count)
            }
        } else {
            MemoryPlan {
                job_budget: None,
                block_cache: config.get(&options::ROCKSDB_BLOCK_CACHE_SIZE).bytes(),
                instance_write_buffers: None,
                write_buffer_size,
                write_buffer_count,
                // One memtable's worth, unless the cache is switched off.
                instance_write_cache: if wc_ratio > 0.0 { write_buffer_size } else { 0 },
                partitioned_index_filters,
            }
        };
        Ok(RocksDbSettings {
            local_dir,
            memory,
            background_jobs: config.get(&options::ROCKSDB_THREAD_NUM),
        })
    }
}

impl MemoryPlan {
    /// Divide a job's `budget`: `wb_ratio` of it for memtables and
    /// `wc_ratio` for write caches, both split evenly across the job's
    /// instances; the rest is one block cache the instances share (it also
    /// holds index and filter blocks, so they are bounded too).
    pub fn managed(
        budget: u64,
        shape: JobShape,
        wb_ratio: f64,
        wc_ratio: f64,
        write_buffer_size: u64,
        write_buffer_count: u32,
    ) -> Self {
        let instances = shape.keyed_subtasks.max(1) as u64;
        let write_buffers = (budget as f64 * wb_ratio) as u64 / instances;
        let write_cache = (budget as f64 * wc_ratio) as u64 / instances;
        let block_cache = budget - (budget as f64 * (wb_ratio + wc_ratio)) as u64;
        let per_instance = write_buffers.max(1 << 20);
        MemoryPlan {
            job_budget: Some(budget),
            block_cache: block_cache.max(1 << 20),
            instance_write_buffers: Some(per_instance),
            // A memtable is at most a quarter of the instance's share: several
            // states' memtables fit, one can fill while another flushes, and
            // a snapshot's synchronous flush has at most that much to write.
            write_buffer_size: write_buffer_size.min(per_instance / 4).max(256 << 10),
            write_buffer_count: write_buffer_count.max(2),
            instance_write_cache: write_cache,
            partitioned_index_filters: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Configuration {
        let mut c = Configuration::new();
        for (k, v) in pairs {
            c.set(k, v).unwrap();
        }
        c
    }

    const SHAPE: JobShape = JobShape {
        slots: 2,
        keyed_subtasks: 4,
    };

    #[test]
    fn managed_budget_is_divided_and_never_exceeded() {
        let s = RocksDbSettings::from_config(&config(&[("taskmanager.memory.managed.size", "400 mb")]), SHAPE).unwrap();
        let m = s.memory;
        assert_eq!(m.job_budget, Some(400 << 20));
        let total = m.block_cache + 4 * (m.instance_write_buffers.unwrap() + m.instance_write_cache);
        assert!(total <= 400 << 20, "{total}");
        assert_eq!(m.instance_write_buffers, Some(50 << 20));
        assert_eq!(m.instance_write_cache, 25 << 20);
        assert_eq!(m.write_buffer_size, 25 << 19);
    }

    #[test]
    fn fixed_per_slot_overrides_the_managed_size() {
        let s = RocksDbSettings::from_config(
            &config(&[("state.backend.rocksdb.memory.fixed-per-slot", "100 mb")]),
            SHAPE,
        )
        .unwrap();
        assert_eq!(s.memory.job_budget, Some(200 << 20));
    }

    #[test]
    fn unmanaged_uses_the_per_instance_sizes() {
        let s = RocksDbSettings::from_config(
            &config(&[
                ("state.backend.rocksdb.memory.managed", "false"),
                ("state.backend.rocksdb.block.cache-size", "16 mb"),
            ]),
            SHAPE,
        )
        .unwrap();
        assert_eq!(s.memory.job_budget, None);
        assert_eq!(s.memory.block_cache, 16 << 20);
        assert_eq!(s.memory.write_buffer_size, 64 << 20);
    }

    #[test]
    fn ratios_that_leave_no_block_cache_are_refused_naming_both_keys() {
        let e = RocksDbSettings::from_config(
            &config(&[
                ("state.backend.rocksdb.memory.write-buffer-ratio", "0.7"),
                ("state.backend.rocksdb.write-cache.ratio", "0.3"),
            ]),
            SHAPE,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("write-buffer-ratio") && e.contains("write-cache.ratio"),
            "{e}"
        );
    }

    #[test]
    fn partitioned_index_filters_are_on_by_default_and_off_when_configured_managed_or_not() {
        let plan = |pairs: &[(&str, &str)]| RocksDbSettings::from_config(&config(pairs), SHAPE).unwrap().memory;
        assert!(plan(&[]).partitioned_index_filters);
        let off = ("state.backend.rocksdb.memory.partitioned-index-filters", "false");
        assert!(!plan(&[off]).partitioned_index_filters);
        assert!(!plan(&[off, ("state.backend.rocksdb.memory.managed", "false")]).partitioned_index_filters);
    }
}
