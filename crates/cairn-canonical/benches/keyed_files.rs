//! CPU cost of canonical keyed state files on one thread: `CAIRN_BENCH_KEYS`
//! keys (default 1,000,000; `u64` keys) with two `ValueState<u64>` (a count
//! and a sum, as the counting job), snapshotted from the heap backend, written
//! as canonical v2 files and read back into encoded groups (what a restore
//! hands the backend). Rows per CPU second of the one thread, the file size,
//! and the native encoding's size for comparison.
//!
//!     cargo bench -p cairn-canonical --bench keyed_files
//!
//! `CAIRN_BENCH_DIR` is where the files go (default: the system temp dir);
//! `CAIRN_BENCH_COMPRESSION` picks the codec (`zstd`, `snappy`, `none`);
//! `CAIRN_BENCH_ROUNDS` repeats the write and the read (for a profiler);
//! `CAIRN_BENCH_KEEP` keeps the files;
//! `CAIRN_BENCH_STRING_KEYS=1` uses `String` keys (`user-<n>`) and sums that
//! look random (data that compresses less than counters).
//! A benchmark program, not a test: it asserts nothing and prints what it
//! measured.

use std::time::Instant;

use cairn_canonical::{open, write_keyed_snapshot, CanonicalFile, WriteOptions};
use cairn_snapshot::LocalFileStorage;
use cairn_state::canonical::key_codec_for;
use cairn_state::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
use cairn_state::{HeapKeyedStateBackend, KeyedStateAccess, SnapshotRequest, ValueStateDescriptor};

/// CPU seconds of this process so far (user + system, from `/proc`; Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks are 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: u64 = std::env::var("CAIRN_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let max_p = 128;
    let range = KeyGroupRange {
        start: 0,
        end_exclusive: max_p,
    };
    let string_keys = std::env::var_os("CAIRN_BENCH_STRING_KEYS").is_some();
    let mut access = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(range)));
    let count = access.value_state(ValueStateDescriptor::<u64>::new("count"))?;
    let sum = access.value_state(ValueStateDescriptor::<u64>::new("sum"))?;
    let mut kb = Vec::new();
    for k in 0..keys {
        if string_keys {
            key_bytes(&format!("user-{k}"), &mut kb)?;
        } else {
            key_bytes(&k, &mut kb)?;
        }
        access.set_current_key(&kb, key_group_for_bytes(&kb, max_p));
        count.update(&mut access, &(k % 7 + 1))?;
        let s = if string_keys {
            k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24
        } else {
            k * 3
        };
        sum.update(&mut access, &s)?;
    }
    let dir = std::env::var("CAIRN_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("cairn-keyed-files-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let storage = LocalFileStorage::new();
    let codec = if string_keys {
        key_codec_for::<String>()
    } else {
        key_codec_for::<u64>()
    };
    let mut options = WriteOptions::default();
    if let Ok(name) = std::env::var("CAIRN_BENCH_COMPRESSION") {
        options = options.with_compression_name(&name)?;
    }
    let rows = 2 * keys;
    let snapshot = access.backend_mut().snapshot(&SnapshotRequest::checkpoint(1))?;
    let groups = snapshot.key_groups().ok_or("heap snapshots are key groups")?;
    let mut native_bytes = 0usize;
    let t = Instant::now();
    groups.for_each_group(&mut |_, _, encoded| {
        native_bytes += encoded.len();
        Ok(())
    })?;
    let native_s = t.elapsed().as_secs_f64();
    println!(
        "native encoding keys={keys} rows={rows} seconds={native_s:.3} rows_per_s={:.0} bytes_mib={:.1}",
        rows as f64 / native_s,
        native_bytes as f64 / (1 << 20) as f64
    );
    let rounds: u32 = std::env::var("CAIRN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut files = Vec::new();
    for _ in 0..rounds {
        files = write_keyed_snapshot(&storage, &dir, "bench", groups, Some(&codec), &options, &mut |_| {})?;
    }
    let write_s = t.elapsed().as_secs_f64() / f64::from(rounds);
    let write_cpu = (cpu_seconds() - cpu) / f64::from(rounds);
    let size: u64 = files.iter().map(|f| f.size).sum();
    println!(
        "canonical write keys={keys} rows={rows} seconds={write_s:.3} cpu_seconds={write_cpu:.2} rows_per_cpu_s={:.0} size_mib={:.1} file_mib_s={:.0}",
        rows as f64 / write_cpu,
        size as f64 / (1 << 20) as f64,
        size as f64 / (1 << 20) as f64 / write_s
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut restored = 0usize;
    for f in std::iter::repeat_n(&files, rounds as usize).flatten() {
        let CanonicalFile::Keyed(file) = open(&storage, &dir.join(&f.path), f.size)? else {
            return Err("a keyed file".into());
        };
        file.for_each_group(&storage, range, Some(max_p), Some(f.crc32), &mut |_, _, encoded, _| {
            restored += encoded.len();
            Ok(())
        })?;
    }
    let read_s = t.elapsed().as_secs_f64() / f64::from(rounds);
    let read_cpu = (cpu_seconds() - cpu) / f64::from(rounds);
    println!(
        "canonical read keys={keys} rows={rows} seconds={read_s:.3} cpu_seconds={read_cpu:.2} rows_per_cpu_s={:.0} file_mib_s={:.0} groups_mib={:.1}",
        rows as f64 / read_cpu,
        size as f64 / (1 << 20) as f64 / read_s,
        restored as f64 / f64::from(rounds) / (1 << 20) as f64
    );
    if std::env::var_os("CAIRN_BENCH_KEEP").is_none() {
        std::fs::remove_dir_all(&dir)?;
    } else {
        println!("files kept in {}", dir.display());
    }
    Ok(())
}
