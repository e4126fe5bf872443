//! Startup arguments end to end: `parse_startup_args` then
//! `StreamEnv::with_startup`, checked through what a running job observes.
// `x % n == 0` reads plainly and keeps the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use cairn::config::parse_startup_args;
use cairn::prelude::*;
use cairn::state::keygroup::{key_group_for_key, subtask_for_key_group};
use common::assert_contains_all;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Emits (key, subtask, parallelism, max parallelism).
#[derive(Clone)]
struct WhereAmI;

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u32, u32, u32)> for WhereAmI {
    fn process_element(
        &mut self,
        e: GeneratedEvent,
        ctx: &mut KeyedContext<'_, u64, (u64, u32, u32, u32)>,
    ) -> OpResult {
        let i = ctx.info();
        let row = (e.key, i.subtask, i.parallelism, i.max_parallelism);
        ctx.collect(row);
        Ok(())
    }
}

/// Run a keyed job on `env`; returns the rows the keyed operator emitted.
fn run_keyed(env: &StreamEnv) -> Vec<(u64, u32, u32, u32)> {
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(3000, 100))
        .uid("gen")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(WhereAmI)
        .uid("where")
        .sink(sink);
    env.execute("startup").unwrap();
    let rows = out.values();
    assert_eq!(rows.len(), 3000);
    rows
}

fn subtasks(rows: &[(u64, u32, u32, u32)]) -> BTreeSet<u32> {
    rows.iter().map(|r| r.1).collect()
}

#[test]
fn dash_p_sets_the_parallelism() {
    let opts = parse_startup_args(args(&["-p", "3", "rest", "--", "-p", "9"])).unwrap();
    assert_eq!(opts.user_args, args(&["rest", "-p", "9"]));
    let env = StreamEnv::with_startup(opts);
    assert_eq!(env.user_args(), args(&["rest", "-p", "9"]));
    let rows = run_keyed(&env);
    assert_eq!(subtasks(&rows), BTreeSet::from([0, 1, 2]));
    assert!(rows.iter().all(|r| r.2 == 3 && r.3 == 128));
}

#[test]
fn dash_d_sets_any_key() {
    let opts = parse_startup_args(args(&["-D", "parallelism.default=2", "-Dpipeline.max-parallelism=9"])).unwrap();
    let env = StreamEnv::with_startup(opts);
    let rows = run_keyed(&env);
    assert_eq!(subtasks(&rows), BTreeSet::from([0, 1]));
    for (k, s, p, mp) in rows {
        assert_eq!((p, mp), (2, 9));
        assert_eq!(s, subtask_for_key_group(9, 2, key_group_for_key(&k, 9).unwrap()));
    }
}

/// A fresh path under the system temp dir for this test.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-config-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn a_config_file_sets_parallelism_and_max_parallelism_and_flags_win() {
    let path = temp_file(
        "good.yaml",
        "parallelism:\n  default: 3\npipeline:\n  max-parallelism: 7\n",
    );
    let file = path.to_str().unwrap();

    let env = StreamEnv::with_startup(parse_startup_args(args(&["--config", file])).unwrap());
    let rows = run_keyed(&env);
    assert_eq!(subtasks(&rows), BTreeSet::from([0, 1, 2]));
    for (k, s, p, mp) in rows {
        assert_eq!((p, mp), (3, 7));
        assert_eq!(s, subtask_for_key_group(7, 3, key_group_for_key(&k, 7).unwrap()));
    }

    // -p overrides the file; the file's max parallelism still applies.
    let env = StreamEnv::with_startup(parse_startup_args(args(&["--config", file, "-p", "2"])).unwrap());
    let rows = run_keyed(&env);
    assert_eq!(subtasks(&rows), BTreeSet::from([0, 1]));
    assert!(rows.iter().all(|r| r.2 == 2 && r.3 == 7));
}

#[test]
fn bad_values_name_the_key() {
    let err = parse_startup_args(args(&["-D", "parallelism.default=two"]))
        .unwrap_err()
        .to_string();
    assert_contains_all(&err, &["parallelism.default", "two"]);

    let err = parse_startup_args(args(&["-p", "0"])).unwrap_err().to_string();
    assert_contains_all(&err, &["-p", "0"]);

    let path = temp_file("bad.yaml", "pipeline:\n  max-parallelism: lots\n");
    let err = parse_startup_args(args(&["--config", path.to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert_contains_all(&err, &["pipeline.max-parallelism", "lots"]);

    let err = parse_startup_args(args(&["-D", "no.such.key=1"]))
        .unwrap_err()
        .to_string();
    assert_contains_all(&err, &["no.such.key"]);
}

#[test]
fn a_missing_config_file_is_named() {
    let err = parse_startup_args(args(&["--config", "/nonexistent/cairn/config.yaml"]))
        .unwrap_err()
        .to_string();
    assert_contains_all(&err, &["/nonexistent/cairn/config.yaml"]);
}

/// A job binary built without the `rocksdb` feature refuses
/// `state.backend.type: rocksdb` at startup and says how to enable it.
#[cfg(not(feature = "rocksdb"))]
#[test]
fn rocksdb_without_the_feature_fails_at_startup_saying_how_to_enable_it() {
    let startup = parse_startup_args(args(&["-D", "state.backend.type=rocksdb"])).unwrap();
    let env = StreamEnv::with_startup(startup);
    let (sink, out) = CollectSink::new();
    env.source(GeneratorSource::new(10, 2))
        .uid("gen")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(WhereAmI)
        .uid("where")
        .sink(sink);
    let err = env.execute("no rocksdb").unwrap_err().to_string();
    assert_contains_all(
        &err,
        &[
            "rocksdb",
            "--features cairn/rocksdb",
            "librocksdb-dev",
            "state.backend.type: hashmap",
        ],
    );
    assert!(out.values().is_empty(), "nothing ran");
}

/// With the feature, the same flag runs the job on RocksDB.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_from_a_startup_flag_runs_the_job() {
    let startup = parse_startup_args(args(&["-D", "state.backend.type=rocksdb", "-p", "2"])).unwrap();
    let rows = run_keyed(&StreamEnv::with_startup(startup));
    let keys: BTreeSet<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(keys.len(), 100);
}
