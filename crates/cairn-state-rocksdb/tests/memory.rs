//! Memory stays within the configured budget while state grows far beyond
//! it: the write cache never exceeds its share, and what RocksDB reports
//! (block cache, memtables, table readers) plus the write cache stays within
//! the instance's budget.
#![cfg(feature = "rocksdb")]

use cairn_state::backend::{BackendContext, KeyedStateBackend};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{StateKind, StateMeta};
use cairn_state_rocksdb::{JobShape, MemoryPlan, RocksDbBackendFactory, RocksDbSettings};

#[test]
fn state_far_beyond_the_budget_keeps_memory_within_it() {
    let budget: u64 = 16 << 20;
    let shape = JobShape {
        slots: 1,
        keyed_subtasks: 1,
    };
    let memory = MemoryPlan::managed(budget, shape, 0.5, 0.25, 64 << 20, 2);
    let f = RocksDbBackendFactory::new(
        RocksDbSettings {
            local_dir: std::env::temp_dir().join("cairn-rocksdb-memory-test"),
            memory,
            background_jobs: 2,
        },
        &format!("{:032x}", 0x3e3_u64),
    )
    .unwrap();
    let mut b = f
        .open(&BackendContext {
            job_id: format!("{:032x}", 0x3e3_u64),
            operator_id: "00000000000000000000000000000001".into(),
            uid: "memory".into(),
            subtask: 0,
            key_groups: KeyGroupRange {
                start: 0,
                end_exclusive: 128,
            },
            attempt: 0,
        })
        .unwrap();
    let s = b
        .register(&StateMeta {
            name: "payload".into(),
            kind: StateKind::Value,
            value_type: "bytes".into(),
            ttl: None,
            shapes: None,
        })
        .unwrap();
    // 64 MiB of incompressible values: four times the budget.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = vec![0u8; 128];
    let mut peak = 0;
    for i in 0..(64u64 << 20) / 128 {
        for v in value.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        }
        b.put(s, (i % 128) as u32, &i.to_be_bytes(), &value).unwrap();
        assert!(
            b.write_cache_bytes() as u64 <= memory.instance_write_cache + 1024,
            "the write cache holds {} bytes, more than its {}",
            b.write_cache_bytes(),
            memory.instance_write_cache
        );
        if i % 20_000 == 0 {
            let used = b.memory_usage().unwrap() + b.write_cache_bytes() as u64;
            peak = peak.max(used);
            assert!(
                used <= budget + budget / 4,
                "{used} bytes in use after {i} writes, budget {budget}"
            );
        }
    }
    let mut out = Vec::new();
    assert!(b.get(s, 7, &7u64.to_be_bytes(), &mut out).unwrap());
    assert_eq!(out.len(), 128);
    assert!(
        peak > budget / 4,
        "the test reached a meaningful share of the budget ({peak})"
    );
}
