//! Throughput of canonical savepoint writing beside the native state file:
//! rows only (CPU), canonical Parquet, native state file, for
//! `CAIRN_BENCH_KEYS` keys (default 1,000,000) of a value and a list state.
//!
//!     cargo bench -p cairn-runtime --bench canonical_throughput
//!
//! Set `CAIRN_BENCH_DIR` to a directory on the disk to measure (default: the
//! system temp dir). A benchmark program, not a test: it asserts nothing and
//! prints what it measured.

use std::time::Instant;

use cairn_runtime::operator::OperatorSnapshot;
use cairn_runtime::snapshot_io::{write_canonical_file, write_snapshot_file};
use cairn_snapshot::LocalFileStorage;
use cairn_state::canonical::key_codec_for;
use cairn_state::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
use cairn_state::{HeapKeyedStateBackend, KeyedStateAccess, ListStateDescriptor, ValueStateDescriptor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Stats {
    count: u64,
    sum: f64,
    name: String,
}

fn main() {
    let n: usize = std::env::var("CAIRN_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let max_p = 128;
    let mut a = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(KeyGroupRange {
        start: 0,
        end_exclusive: max_p,
    })));
    let v = a.value_state(ValueStateDescriptor::<Stats>::new("stats")).unwrap();
    let l = a.list_state(ListStateDescriptor::<u64>::new("recent")).unwrap();
    let mut kb = Vec::new();
    for i in 0..n {
        key_bytes(&format!("user-{i:08}"), &mut kb).unwrap();
        let kg = key_group_for_bytes(&kb, max_p);
        a.set_current_key(&kb, kg);
        v.update(
            &mut a,
            &Stats {
                count: i as u64,
                sum: i as f64 * 1.5,
                name: format!("name number {i}"),
            },
        )
        .unwrap();
        for j in 0..3u64 {
            l.add(&mut a, &(i as u64 * 10 + j)).unwrap();
        }
    }
    let dir = std::env::var("CAIRN_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("cairn-canonical-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let storage = LocalFileStorage::new();
    let codec = key_codec_for::<String>();
    // CPU only: rows into a row-group builder, no file.
    {
        let snap = a
            .backend_mut()
            .snapshot(&cairn_state::SnapshotRequest::checkpoint(1))
            .unwrap();
        let snap = snap.key_groups().expect("heap snapshots are key groups");
        let schema = cairn_runtime::snapshot_io::keyed_schema();
        let mut b = cairn_snapshot::parquet::RowGroupBuilder::new(&schema);
        let mut conv = cairn_state::canonical::RowsFromGroups::new();
        let mut bytes = 0usize;
        let t = Instant::now();
        snap.for_each_group(&mut |meta, kg, enc| {
            conv.rows(meta, kg, enc, Some(&codec), &mut |r| {
                b.push_bytes(0, Some(meta.name.as_bytes()));
                b.push_i32(1, Some(r.key_group as i32));
                b.push_bytes(2, r.key_json);
                b.push_bytes(3, Some(r.key_bytes));
                b.push_bytes(4, Some(r.namespace));
                b.push_bytes(5, r.user_key_json);
                b.push_i32(6, r.position);
                b.push_bytes(7, Some(r.value_json));
                b.push_i64(8, r.ttl_timestamp_ms);
                if b.num_rows() >= 65536 {
                    bytes += b.buffered_bytes();
                    b.clear();
                }
                Ok(())
            })
            .map_err(cairn_state::StateError::Backend)
        })
        .unwrap();
        let el = t.elapsed();
        bytes += b.buffered_bytes();
        println!(
            "rows only: {:.1} MB in {:.2?}: {:.0} MB/s",
            bytes as f64 / 1e6,
            el,
            bytes as f64 / 1e6 / el.as_secs_f64()
        );
    }
    for round in 0..2 {
        let snap = OperatorSnapshot {
            keyed: Some(
                a.backend_mut()
                    .snapshot(&cairn_state::SnapshotRequest::checkpoint(1))
                    .unwrap(),
            ),
            operator_state: Vec::new(),
        };
        let t = Instant::now();
        let files = write_canonical_file(&storage, &dir, &format!("canonical-{round}"), snap, Some(&codec)).unwrap();
        let el = t.elapsed();
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        println!(
            "canonical: {} rows, {:.1} MB in {:.2?}: {:.0} MB/s ({:.2} M rows/s)",
            n * 4,
            bytes as f64 / 1e6,
            el,
            bytes as f64 / 1e6 / el.as_secs_f64(),
            (n * 4) as f64 / 1e6 / el.as_secs_f64()
        );
        let snap = OperatorSnapshot {
            keyed: Some(
                a.backend_mut()
                    .snapshot(&cairn_state::SnapshotRequest::checkpoint(1))
                    .unwrap(),
            ),
            operator_state: Vec::new(),
        };
        let t = Instant::now();
        let f = write_snapshot_file(&storage, &dir, &format!("native-{round}.state"), snap)
            .unwrap()
            .unwrap();
        let el = t.elapsed();
        println!(
            "native:    {:.1} MB in {:.2?}: {:.0} MB/s",
            f.size as f64 / 1e6,
            el,
            f.size as f64 / 1e6 / el.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
