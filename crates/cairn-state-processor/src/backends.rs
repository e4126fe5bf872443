//! Which state backend offline work restores keyed state into. Logical key
//! groups and canonical files go into the heap backend; a native savepoint
//! or checkpoint of a file-based backend (RocksDB) holds that backend's own
//! files, which only that backend opens, so the reader switches to it when
//! this crate was built with it, and otherwise says so.

use std::sync::Arc;

use cairn_snapshot::LoadedSnapshot;
use cairn_state::StateBackendFactory;

use crate::{Options, SpaError};

/// A factory for `backend` when this build has one and the caller left the
/// default (heap) backend in place; `None` otherwise (the caller's choice is
/// kept, and restoring explains the mismatch).
pub(crate) fn factory_for(
    backend: &str,
    snapshot: &LoadedSnapshot,
    options: &Options,
) -> Result<Option<Arc<dyn StateBackendFactory>>, SpaError> {
    if options.backends.name() != cairn_state::HeapBackendFactory.name() {
        return Ok(None);
    }
    match backend {
        #[cfg(feature = "rocksdb")]
        "rocksdb" => rocksdb_factory(snapshot, options).map(Some),
        _ => {
            let _ = snapshot;
            Ok(None)
        }
    }
}

/// RocksDB instances for the reader: under the spill directory, in the
/// reader's memory budget, one instance per worker.
#[cfg(feature = "rocksdb")]
fn rocksdb_factory(snapshot: &LoadedSnapshot, options: &Options) -> Result<Arc<dyn StateBackendFactory>, SpaError> {
    use cairn_config::Configuration;
    use cairn_state_rocksdb::{JobShape, RocksDbBackendFactory};
    let mut config = Configuration::new();
    let set = |config: &mut Configuration, k: &str, v: String| {
        config
            .set(k, &v)
            .map_err(|e| SpaError::Usage(format!("RocksDB setting {k}={v}: {e}")))
    };
    set(
        &mut config,
        "state.backend.rocksdb.localdir",
        options.spill_dir.display().to_string(),
    )?;
    set(
        &mut config,
        "taskmanager.memory.managed.size",
        format!("{}mb", (options.memory_bytes >> 20).max(64)),
    )?;
    let workers = u32::try_from(options.parallelism.max(1)).unwrap_or(u32::MAX);
    let shape = JobShape {
        slots: workers,
        keyed_subtasks: workers,
    };
    let job = format!("spa-{}-{}", std::process::id(), snapshot.metadata.job_id);
    let factory = RocksDbBackendFactory::from_config(&config, shape, &job).map_err(|e| SpaError::NativeBackend {
        path: snapshot.dir.clone(),
        backend: "rocksdb".into(),
        reason: format!(
            "cannot open a RocksDB working directory under {}: {e}",
            options.spill_dir.display()
        ),
    })?;
    Ok(Arc::new(factory))
}

/// Why the keyed state of `snapshot` cannot be restored with `factory`.
pub(crate) fn unavailable(snapshot: &LoadedSnapshot, backend: &str, factory: &dyn StateBackendFactory) -> SpaError {
    let built_without = cfg!(not(feature = "rocksdb")) && backend == "rocksdb";
    let reason = if built_without {
        "this build of the state processor has no RocksDB (build it, or the cairn CLI, with the cargo feature \
         `rocksdb`), or take a canonical savepoint of the job (`cairn savepoint --type canonical`), which needs no backend"
            .to_string()
    } else {
        format!(
            "the reader was given the '{}' backend, which cannot open them; pass the '{backend}' backend's factory in \
             Options::backends, or take a canonical savepoint of the job (`cairn savepoint --type canonical`)",
            factory.name()
        )
    };
    SpaError::NativeBackend {
        path: snapshot.dir.clone(),
        backend: backend.to_string(),
        reason,
    }
}
