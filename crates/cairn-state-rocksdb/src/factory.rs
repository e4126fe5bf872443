//! Builds the RocksDB backends of one job; owns what they share: the block
//! cache (managed memory) and the job's local directory.

use std::path::Path;
use std::sync::Arc;

use rocksdb::Cache;

use cairn_config::Configuration;
use cairn_state::backend::{BackendContext, KeyedStateBackend, StateBackendFactory};
use cairn_state::StateError;

use crate::backend::{JobResources, RocksDbKeyedStateBackend};
use crate::local_dir::JobDir;
use crate::settings::{JobShape, MemoryPlan, RocksDbSettings};

/// `state.backend.type: rocksdb`.
pub struct RocksDbBackendFactory {
    resources: Arc<JobResources>,
}

impl RocksDbBackendFactory {
    /// Create the job's local directory (failing at once, naming it, when it
    /// cannot be written) and the shared resources.
    pub fn new(settings: RocksDbSettings, job_id: &str) -> Result<Self, StateError> {
        let job_dir = JobDir::create(&settings.local_dir, job_id)?;
        let shared_cache = match settings.memory.job_budget {
            Some(_) => Some(
                Cache::new_lru_cache(usize::try_from(settings.memory.block_cache).unwrap_or(usize::MAX))
                    .map_err(|e| StateError::Backend(format!("RocksDB block cache: {e}")))?,
            ),
            None => None,
        };
        Ok(RocksDbBackendFactory {
            resources: Arc::new(JobResources {
                settings,
                shared_cache,
                job_dir,
            }),
        })
    }

    /// [`RocksDbBackendFactory::new`] with settings read from `config`.
    pub fn from_config(config: &Configuration, shape: JobShape, job_id: &str) -> Result<Self, StateError> {
        Self::new(RocksDbSettings::from_config(config, shape)?, job_id)
    }

    /// The job's working directory (removed when the factory and every
    /// backend it built are gone).
    pub fn job_dir(&self) -> &Path {
        self.resources.job_dir.path()
    }

    /// How memory is divided.
    pub fn memory(&self) -> MemoryPlan {
        self.resources.settings.memory
    }

    /// Bytes in the job's shared block cache (managed memory only).
    pub fn shared_cache_usage(&self) -> Option<usize> {
        self.resources.shared_cache.as_ref().map(Cache::get_usage)
    }

    /// A backend with its concrete type (tests and tools).
    pub fn open(&self, ctx: &BackendContext) -> Result<RocksDbKeyedStateBackend, StateError> {
        RocksDbKeyedStateBackend::open(self.resources.clone(), ctx)
    }
}

impl StateBackendFactory for RocksDbBackendFactory {
    fn name(&self) -> &str {
        "rocksdb"
    }

    fn create(&self, ctx: &BackendContext) -> Result<Box<dyn KeyedStateBackend>, StateError> {
        Ok(Box::new(self.open(ctx)?))
    }

    fn state_in_memory(&self) -> bool {
        false
    }
}
