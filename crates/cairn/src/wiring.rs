//! What a job is wired to, chosen from its configuration: the keyed state
//! backend (`state.backend.type`) and the storage of checkpoints and
//! savepoints (from their locations' schemes). Optional parts (RocksDB,
//! object storage) come with cargo features; asking for one a build lacks is
//! an error that says how to get it.

use std::sync::Arc;

use cairn_config::{options, Configuration, StateBackendType};
use cairn_runtime::JobError;
use cairn_snapshot::{Storage, StorageRouter};
use cairn_state::{HeapBackendFactory, StateBackendFactory};

use crate::error::CairnError;

/// The keyed state backend factory `state.backend.type` names.
pub fn state_backends(config: &Configuration) -> Result<Arc<dyn StateBackendFactory>, CairnError> {
    match config.get(&options::STATE_BACKEND_TYPE) {
        StateBackendType::HashMap => Ok(Arc::new(HeapBackendFactory)),
        other => Err(CairnError::Job(JobError::Setup(format!(
            "state.backend.type is {other:?}, but this job binary was built without that backend: build it with \
             Cairn's `rocksdb` feature (cairn = {{ features = [\"rocksdb\"] }}, which links Debian's librocksdb-dev), \
             or set state.backend.type: hashmap"
        )))),
    }
}

/// The storage checkpoints and savepoints go through: local files, plus
/// the object stores this build supports.
pub fn storage(_config: &Configuration) -> Result<Arc<dyn Storage>, CairnError> {
    Ok(StorageRouter::local_only().shared())
}
