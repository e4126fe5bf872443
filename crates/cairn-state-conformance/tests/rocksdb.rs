//! The RocksDB backend against every conformance property: with Cairn's write
//! cache (a small one, so rows are evicted and written out mid-test) and
//! without it (every access goes to RocksDB).

use cairn_state::backend::{BackendContext, KeyedStateBackend, StateBackendFactory};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state_rocksdb::{JobShape, MemoryPlan, RocksDbBackendFactory, RocksDbSettings};

fn factory(write_cache: u64) -> impl Fn(KeyGroupRange) -> Box<dyn KeyedStateBackend> {
    let shape = JobShape {
        slots: 1,
        keyed_subtasks: 1,
    };
    let mut memory = MemoryPlan::managed(64 << 20, shape, 0.5, 0.0, 64 << 20, 2);
    memory.instance_write_cache = write_cache;
    let settings = RocksDbSettings {
        local_dir: std::env::temp_dir().join("cairn-conformance"),
        memory,
        background_jobs: 2,
    };
    let job = format!("{:032x}", std::process::id());
    let f = RocksDbBackendFactory::new(settings, &job).expect("RocksDB factory");
    move |range| {
        f.create(&BackendContext {
            job_id: job.clone(),
            operator_id: "0123456789abcdef0123456789abcdef".into(),
            uid: "conformance".into(),
            subtask: 0,
            key_groups: range,
            attempt: 0,
        })
        .expect("RocksDB backend")
    }
}

mod cached {
    // 64 KiB: the larger properties overflow it many times.
    cairn_state_conformance::backend_conformance_tests!(super::factory(64 << 10));
}

mod uncached {
    cairn_state_conformance::backend_conformance_tests!(super::factory(0));
}
