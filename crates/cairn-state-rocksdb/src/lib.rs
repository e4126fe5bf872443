//! Cairn's RocksDB keyed state backend (`state.backend.type: rocksdb`): state
//! beyond memory, on local disk, with bounded memory.
//!
//! Built only with the crate's `rocksdb` feature (the `cairn` crate's
//! `rocksdb` feature turns it on); it links Debian's `librocksdb-dev`
//! (RocksDB 7.8) instead of building RocksDB from source (see
//! `.cargo/config.toml`). Without the feature the crate is empty, so a
//! workspace build needs nothing but the Rust toolchain.
//!
//! - [`keys`]: row layout (key group first; map entries as rows);
//! - [`write_cache`]: hot value/list rows in memory, written out in batches;
//! - [`settings`]: Flink's `state.backend.rocksdb.*` keys, the memory budget;
//! - [`local_dir`]: working directories, removed when the job ends;
//! - `backend`, `snapshot`, `factory`: the backend, its snapshots, the job's
//!   factory with the shared block cache.
#![cfg(feature = "rocksdb")]

mod backend;
mod factory;
pub mod files;
pub mod keys;
pub mod local_dir;
pub mod settings;
mod snapshot;
pub mod write_cache;

pub use backend::RocksDbKeyedStateBackend;
pub use factory::RocksDbBackendFactory;
pub use settings::{JobShape, MemoryPlan, RocksDbSettings};
