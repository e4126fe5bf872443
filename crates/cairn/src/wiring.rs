//! What a job is wired to, chosen from its configuration: the keyed state
//! backend (`state.backend.type`) and the storage of checkpoints and
//! savepoints (from their locations' schemes). Optional parts (RocksDB,
//! object storage) come with cargo features; asking for one a build lacks is
//! an error that says how to get it.

use std::sync::Arc;

use cairn_config::{options, Configuration, StateBackendType};
use cairn_graph::ResolvedGraph;
use cairn_runtime::JobError;
use cairn_snapshot::{Storage, StorageRouter};
use cairn_state::{HeapBackendFactory, StateBackendFactory};

use crate::error::CairnError;

/// The keyed state backend factory `state.backend.type` names. A RocksDB
/// factory creates the job's local directory at once, so a directory that
/// cannot be written fails the job before it starts.
pub fn state_backends(
    config: &Configuration,
    graph: &ResolvedGraph,
    job_id: &str,
) -> Result<Arc<dyn StateBackendFactory>, CairnError> {
    match config.get(&options::STATE_BACKEND_TYPE) {
        StateBackendType::HashMap => Ok(Arc::new(HeapBackendFactory)),
        StateBackendType::RocksDb => rocksdb(config, graph, job_id),
    }
}

#[cfg(feature = "rocksdb")]
fn rocksdb(
    config: &Configuration,
    graph: &ResolvedGraph,
    job_id: &str,
) -> Result<Arc<dyn StateBackendFactory>, CairnError> {
    let shape = cairn_state_rocksdb::JobShape {
        slots: graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1),
        keyed_subtasks: graph.nodes.iter().filter(|n| n.keyed).map(|n| n.parallelism).sum(),
    };
    let factory = cairn_state_rocksdb::RocksDbBackendFactory::from_config(config, shape, job_id).map_err(|e| {
        CairnError::Job(JobError::setup(
            cairn_runtime::SetupErrorKind::StateBackend,
            format!("state.backend.type: rocksdb: {e}"),
        ))
    })?;
    Ok(Arc::new(factory))
}

#[cfg(not(feature = "rocksdb"))]
fn rocksdb(
    _config: &Configuration,
    _graph: &ResolvedGraph,
    _job_id: &str,
) -> Result<Arc<dyn StateBackendFactory>, CairnError> {
    Err(CairnError::Job(JobError::setup(
        cairn_runtime::SetupErrorKind::Config,
        "state.backend.type is 'rocksdb', but this job binary was built without Cairn's RocksDB backend. \
         Enable the `rocksdb` feature of the `cairn` crate (`cargo build --features cairn/rocksdb`, or \
         `cairn = { ..., features = [\"rocksdb\"] }` in Cargo.toml) with Debian's librocksdb-dev and libclang-dev \
         installed (`apt-get install librocksdb-dev libclang-dev`), or set state.backend.type: hashmap",
    )))
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
