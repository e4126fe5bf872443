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
        other => Err(CairnError::Job(JobError::setup(
            cairn_runtime::SetupErrorKind::Config,
            format!(
                "state.backend.type is {other:?}, but this job binary was built without that backend: build it with \
             Cairn's `rocksdb` feature (cairn = {{ features = [\"rocksdb\"] }}, which links Debian's librocksdb-dev), \
             or set state.backend.type: hashmap"
            ),
        ))),
    }
}

/// The storage checkpoints and savepoints go through: local files, plus
/// the object stores this build supports (`s3://` with the `s3` feature).
pub fn storage(config: &Configuration) -> Result<Arc<dyn Storage>, CairnError> {
    let router = StorageRouter::local_only();
    #[cfg(feature = "s3")]
    let router = router.with_scheme("s3", Arc::new(s3_storage(config)?));
    // A location no storage serves fails the start, not the first checkpoint.
    for (key, location) in [
        (options::CHECKPOINTS_DIR.key(), config.get(&options::CHECKPOINTS_DIR)),
        (options::SAVEPOINT_DIR.key(), config.get(&options::SAVEPOINT_DIR)),
    ] {
        if let Some(location) = location {
            router.check_location(&location).map_err(|e| {
                CairnError::Job(JobError::Setup(
                    cairn_runtime::SetupError::new(
                        cairn_runtime::SetupErrorKind::CheckpointStorage,
                        format!("{key}: {e}"),
                    )
                    .with_source(e),
                ))
            })?;
        }
    }
    Ok(router.shared())
}

/// The S3 settings of `config` (Flink's `s3.*` keys).
#[cfg(feature = "s3")]
pub fn s3_settings(config: &Configuration) -> cairn_storage_s3::S3Settings {
    cairn_storage_s3::S3Settings {
        endpoint: config.get(&options::S3_ENDPOINT),
        access_key: config.get(&options::S3_ACCESS_KEY),
        secret_key: config.get(&options::S3_SECRET_KEY),
        region: config.get(&options::S3_REGION),
        path_style_access: config.get(&options::S3_PATH_STYLE_ACCESS),
    }
}

#[cfg(feature = "s3")]
fn s3_storage(config: &Configuration) -> Result<cairn_storage_s3::S3Storage, CairnError> {
    cairn_storage_s3::S3Storage::new(s3_settings(config)).map_err(|e| {
        CairnError::Job(JobError::setup(
            cairn_runtime::SetupErrorKind::CheckpointStorage,
            format!("cannot start the S3 client: {e}"),
        ))
    })
}
