//! Savepoints as data for tools that do not know Cairn: DuckDB answers
//! `SELECT key, count FROM ...` on typed columns (no casts, no JSON), pyarrow
//! reads the same; a savepoint whose files pyarrow and DuckDB rewrote with
//! their default settings (snappy, dictionary pages) restores after
//! `cairn savepoint reseal`, key for key; and `cairn savepoint inspect`
//! and `cairn fsck` run on it through the CLI's code.
//!
//! Needs a python with pyarrow and duckdb (`CAIRN_PYTHON`); with
//! `CAIRN_REQUIRE_PYARROW=1` (CI) their absence fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn_state_processor::tools;
use serde::{Deserialize, Serialize};

const KEYS: u64 = 500;

fn python() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("CAIRN_PYTHON") {
        candidates.push(p);
    }
    candidates.push("python3".into());
    for py in &candidates {
        if Command::new(py)
            .args(["-c", "import pyarrow, duckdb"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(py.clone());
        }
    }
    let msg = format!("pyarrow and duckdb are not available (tried {candidates:?}); install them (pip install pyarrow duckdb) or set CAIRN_PYTHON");
    if std::env::var("CAIRN_REQUIRE_PYARROW").as_deref() == Ok("1") {
        panic!("CAIRN_REQUIRE_PYARROW=1 but {msg}");
    }
    eprintln!("\n**************** SKIPPED: {msg} ****************\n");
    None
}

fn run_py(py: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    score: f64,
    tags: Vec<String>,
}

#[derive(Clone, Default)]
struct Tracker {
    count: Option<ValueState<u64>>,
    profile: Option<ValueState<Profile>>,
    seen: Option<MapState<String, i64>>,
}

impl KeyedProcessFunction<String, GeneratedEvent, (String, u64)> for Tracker {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        self.profile = Some(ctx.value_state(ValueStateDescriptor::new("profile"))?);
        self.seen = Some(ctx.map_state(MapStateDescriptor::new("seen"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, String, (String, u64)>) -> OpResult {
        let c = self.count.as_ref().ok_or("not opened")?;
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, &n)?;
        let key = ctx.key().clone();
        self.profile.as_ref().ok_or("not opened")?.update(
            ctx,
            &Profile {
                name: key.clone(),
                score: n as f64 / 2.0,
                tags: vec![format!("t{}", n % 3)],
            },
        )?;
        self.seen
            .as_ref()
            .ok_or("not opened")?
            .put(ctx, &format!("m{}", e.value % 4), &e.timestamp)?;
        ctx.collect((key, n));
        Ok(())
    }
}

fn make_env(parallelism: u32, restore: Option<&Path>) -> StreamEnv {
    let mut config = Configuration::new();
    config.set("parallelism.default", &parallelism.to_string()).unwrap();
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        ..Default::default()
    })
}

fn tracker_job(env: &StreamEnv, events: DataStream<GeneratedEvent>) -> Collected<(String, u64)> {
    let (sink, out) = CollectSink::new();
    events
        .key_by(|e: &GeneratedEvent| format!("user-{}", e.key))
        .process(Tracker::default())
        .uid("tracker")
        .sink(sink)
        .set_parallelism(1);
    let _ = env;
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-spa-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A canonical savepoint of a running tracker job, and each key's count.
fn savepoint(dir: &Path) -> (PathBuf, BTreeMap<String, u64>) {
    let env = make_env(2, None);
    let events = env
        .source(GeneratorSource::new(50_000_000, KEYS).seed(5).rate(20_000))
        .uid("events");
    let out = tracker_job(&env, events);
    let job = env.execute_async("tracker").unwrap();
    let client = job.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.metrics().source_records < 4 * KEYS {
        assert!(Instant::now() < deadline, "the job did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(dir.to_path_buf()),
                format: SnapshotFormat::Canonical,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .unwrap();
    let sp = match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed { location: Some(l), .. }) => l,
        other => panic!("savepoint did not complete: {other:?}"),
    };
    job.wait().unwrap();
    let mut counts = BTreeMap::new();
    for (k, n) in out.values() {
        let e = counts.entry(k).or_insert(0);
        *e = n.max(*e);
    }
    (sp, counts)
}

const QUERY: &str = r#"
import sys, duckdb, pyarrow.parquet as pq, pyarrow as pa, glob, json
sp = sys.argv[1]
files = sorted(glob.glob(sp + "/*.count.parquet"))
assert files, "no count files"
con = duckdb.connect()
types = dict(con.execute(f"DESCRIBE SELECT key, count FROM read_parquet({files!r})").fetchall() and
             [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT key, count FROM read_parquet({files!r})").fetchall()])
rows = con.execute(f"SELECT key, count FROM read_parquet({files!r}) ORDER BY key").fetchall()
top = con.execute(f"SELECT key, count FROM read_parquet({files!r}) WHERE count >= 3 ORDER BY count DESC, key LIMIT 3").fetchall()
prof = con.execute(f"SELECT key, profile.score, profile.tags[1] FROM read_parquet({sorted(glob.glob(sp + '/*.profile.parquet'))!r}) ORDER BY key LIMIT 2").fetchall()
t = pa.concat_tables([pq.read_table(f) for f in files])
print(json.dumps({"types": types, "rows": rows, "top": top, "prof": prof,
                  "pyarrow": sorted(zip(t.column("key").to_pylist(), t.column("count").to_pylist())),
                  "arrow_type": str(t.schema.field("count").type)}))
"#;

/// pyarrow rewrites half of the files with its defaults, DuckDB the other half.
const REWRITE: &str = r#"
import sys, glob, duckdb, pyarrow.parquet as pq
sp = sys.argv[1]
files = sorted(glob.glob(sp + "/*.parquet"))
for i, f in enumerate(files):
    if i % 2 == 0:
        pq.write_table(pq.read_table(f), f)            # pyarrow defaults: snappy, dictionary
    else:
        tmp = f + ".duck"
        duckdb.sql(f"COPY (SELECT * FROM read_parquet('{f}')) TO '{tmp}' (FORMAT parquet)")
        import os; os.replace(tmp, f)
meta = pq.read_metadata(files[0])
print(meta.row_group(0).column(0).compression, len(files))
"#;

#[test]
fn duckdb_and_pyarrow_query_typed_columns_and_their_rewrites_restore() {
    let Some(py) = python() else { return };
    let dir = temp_dir("external");
    let (sp, counts) = savepoint(&dir);
    let sp_s = sp.to_str().unwrap();

    let out: serde_json::Value = serde_json::from_str(&run_py(&py, QUERY, &[sp_s])).unwrap();
    assert_eq!(out["types"]["count"], "UBIGINT", "{out}");
    assert_eq!(out["types"]["key"], "VARCHAR", "{out}");
    assert_eq!(out["arrow_type"], "uint64");
    let rows: BTreeMap<String, u64> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, counts, "DuckDB reads every key's count");
    let py_rows: BTreeMap<String, u64> = out["pyarrow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(py_rows, counts, "pyarrow reads the same");
    let p0 = &out["prof"][0];
    let k0 = p0[0].as_str().unwrap();
    assert_eq!(
        p0[1].as_f64().unwrap(),
        counts[k0] as f64 / 2.0,
        "struct fields are typed: {out}"
    );

    // Rewritten by pyarrow and DuckDB with their defaults, resealed, restored.
    let codec = run_py(&py, REWRITE, &[sp_s]);
    assert!(codec.starts_with("SNAPPY"), "pyarrow wrote snappy: {codec}");
    let before = tools::fsck(&sp).unwrap();
    assert_eq!(before.exit_code(), 1, "fsck sees the changed files before the reseal");
    let resealed = tools::reseal(&sp).unwrap();
    assert!(!resealed.is_empty());
    assert_eq!(tools::fsck(&sp).unwrap().exit_code(), 0);
    let report = tools::inspect(&sp, Default::default()).unwrap();
    let count_stats = report.stats.iter().find(|s| s.state == "count").unwrap();
    assert_eq!(count_stats.keys, counts.len() as u64);

    let env = make_env(3, Some(&sp));
    let probe = env
        .from_collection(
            (0..KEYS)
                .map(|k| GeneratedEvent {
                    index: k,
                    key: k,
                    value: 0,
                    timestamp: 0,
                })
                .collect(),
        )
        .uid("probe");
    let out = tracker_job(&env, probe);
    let r = StreamEnv::execute(&env, "tracker from rewritten files");
    // The old source's state has no operator now.
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("'events'") && e.contains("-n"), "{e}");
    let env = StreamEnv::with_startup(StartupOptions {
        config: {
            let mut c = Configuration::new();
            c.set("parallelism.default", "3").unwrap();
            c
        },
        restore_path: Some(sp.clone()),
        allow_non_restored_state: true,
        ..Default::default()
    });
    let probe = env
        .from_collection(
            (0..KEYS)
                .map(|k| GeneratedEvent {
                    index: k,
                    key: k,
                    value: 0,
                    timestamp: 0,
                })
                .collect(),
        )
        .uid("probe");
    let out2 = tracker_job(&env, probe);
    env.execute("tracker from rewritten files, -n").unwrap();
    drop(out);
    for (k, n) in out2.values() {
        assert_eq!(n, counts.get(&k).copied().unwrap_or(0) + 1, "key {k}");
    }
}

/// Integer keys and values of many distinct values are written with Parquet's
/// delta encodings (and empty namespaces as delta lengths): DuckDB and
/// pyarrow read them, extremes included, and find the encodings there.
#[test]
fn duckdb_and_pyarrow_read_delta_encoded_integer_columns() {
    use cairn_state::canonical::key_codec_for;
    use cairn_state::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
    use cairn_state::{HeapKeyedStateBackend, KeyedStateAccess, SnapshotRequest, ValueStateDescriptor};
    let Some(py) = python() else { return };
    let max_p = 128;
    let mut access = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(KeyGroupRange::new(0, max_p))));
    let total = access.value_state(ValueStateDescriptor::<u64>::new("total")).unwrap();
    let delta = access.value_state(ValueStateDescriptor::<i64>::new("delta")).unwrap();
    let (mut key_sum, mut total_sum, mut delta_sum) = (0u128, 0u128, 0i128);
    let mut kb = Vec::new();
    for k in 0..20_000u64 {
        key_bytes(&k, &mut kb).unwrap();
        access.set_current_key(&kb, key_group_for_bytes(&kb, max_p));
        let t = if k % 7 == 0 { u64::MAX - k } else { k * 1_000_003 };
        let d = if k % 5 == 0 {
            i64::MIN + k as i64
        } else {
            -(k as i64) * 31
        };
        total.update(&mut access, &t).unwrap();
        delta.update(&mut access, &d).unwrap();
        (key_sum, total_sum, delta_sum) = (
            key_sum + u128::from(k),
            total_sum + u128::from(t),
            delta_sum + i128::from(d),
        );
    }
    let snap = access.backend_mut().snapshot(&SnapshotRequest::checkpoint(1)).unwrap();
    let dir = temp_dir("delta");
    let files = cairn_canonical::write_keyed_snapshot(
        &cairn_snapshot::LocalFileStorage::new(),
        &dir,
        "op-0",
        snap.key_groups().unwrap(),
        Some(&key_codec_for::<u64>()),
        &cairn_canonical::WriteOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(files.len(), 2);
    let script = r#"
import sys, duckdb, pyarrow.parquet as pq
for f, col in [(sys.argv[1], "total"), (sys.argv[2], "delta")]:
    enc = {c: set() for c in ("namespace", "key", col)}
    md = pq.ParquetFile(f).metadata
    for g in range(md.num_row_groups):
        for i in range(md.num_columns):
            c = md.row_group(g).column(i)
            if c.path_in_schema in enc:
                enc[c.path_in_schema].update(c.encodings)
    assert "DELTA_LENGTH_BYTE_ARRAY" in enc["namespace"], enc
    assert "DELTA_BINARY_PACKED" in enc["key"] and "DELTA_BINARY_PACKED" in enc[col], enc
    n, keys, values = duckdb.connect().execute(f"SELECT count(*), sum(key::HUGEINT), sum({col}::HUGEINT) FROM '{f}'").fetchone()
    t = pq.read_table(f)
    assert sum(t.column("key").to_pylist()) == keys and sum(t.column(col).to_pylist()) == values
    print(n, keys, values)
"#;
    let out = run_py(
        &py,
        script,
        &[
            dir.join(&files[0].path).to_str().unwrap(),
            dir.join(&files[1].path).to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("20000 {key_sum} {total_sum}"),
            format!("20000 {key_sum} {delta_sum}")
        ],
        "DuckDB's (and pyarrow's) sums of the key and value columns"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
