//! Golden fixture of the source split state as released before split tables
//! (invariant 5): savepoints whose generator state is the split-evenly list
//! `generator-splits` (with the empty placeholder an idle subtask wrote) and
//! whose file source state is the union list `file-source-files`. Current code
//! must keep restoring them: every event not yet read is read exactly once.
//!
//! The fixture under `tests/golden/source-state-v1/` was produced by the code
//! of that release (see its README) and is never rewritten: newer code writes
//! other state, so regenerating would not pin the old encoding any more.
//! `CAIRN_REGEN_GOLDEN=1` creates it only when it is missing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::connectors::file::FileSource;
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;

/// Generator events of the fixture job (2 splits of 3000: the default split
/// count at its first parallelism, 2).
const EVENTS: u64 = 6_000;
const KEYS: u64 = 10;
const FILES: usize = 3;
const LINES: usize = 3_000;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/source-state-v1")
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-golden-sources-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn file_line(file: usize, line: usize) -> String {
    format!("file{file}:{line}")
}

/// Everything the fixture job emits over its whole input, as its output lines.
fn full_output() -> Vec<String> {
    let mut all: Vec<String> = (0..EVENTS).map(|i| format!("g {i}")).collect();
    for f in 0..FILES {
        all.extend((0..LINES).map(|l| format!("f {}", file_line(f, l))));
    }
    all.sort();
    all
}

fn env(parallelism: u32, restore: Option<PathBuf>) -> StreamEnv {
    let mut config = Configuration::new();
    config.set("parallelism.default", &parallelism.to_string()).unwrap();
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore,
        ..Default::default()
    })
}

/// The fixture job: a rate-limited generator (default split count) and a
/// throttled file source, both turned into lines and collected.
fn job(env: &StreamEnv, input: &Path, rate: Option<u64>) -> Collected<String> {
    let mut generator = GeneratorSource::new(EVENTS, KEYS).seed(5);
    if let Some(r) = rate {
        generator = generator.rate(r);
    }
    let generated = env
        .source(generator)
        .uid("generator")
        .map(|e: GeneratedEvent| format!("g {}", e.index));
    let throttled = rate.is_some();
    let lines = env.source(FileSource::new(input)).uid("files").map(move |l: String| {
        if throttled {
            // Slows the file source down (backpressure) so the savepoints
            // catch it in the middle of its files.
            std::thread::sleep(Duration::from_micros(300));
        }
        format!("f {l}")
    });
    let (sink, out) = CollectSink::new();
    generated.union(&[lines]).sink(sink).uid("collect");
    out
}

fn wait_for_records(client: &JobClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.metrics().source_records < n {
        assert!(Instant::now() < deadline, "the job did not reach {n} records");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_with_savepoint(client: &JobClient, target: &Path, format: SnapshotFormat) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .unwrap();
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// One run, stopped with a savepoint after `records` source records; returns
/// the savepoint and the run's output.
fn run_and_stop(
    parallelism: u32,
    restore: Option<PathBuf>,
    input: &Path,
    target: &Path,
    records: u64,
    format: SnapshotFormat,
) -> (PathBuf, Vec<String>) {
    let env = env(parallelism, restore);
    let out = job(&env, input, Some(1_000));
    let handle = env.execute_async("golden source state").unwrap();
    let client = handle.client();
    wait_for_records(&client, records);
    let sp = stop_with_savepoint(&client, target, format);
    handle.wait().unwrap();
    (sp, out.values())
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut sorted = lines.to_vec();
    sorted.sort();
    let mut text = sorted.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

/// Produces the fixture: p2 -> savepoint -> p3 (subtask 0 holds no generator
/// split and writes the placeholder) -> native savepoint -> p3 -> canonical
/// savepoint. `before-*.txt` hold what the runs emitted before each one.
fn create_fixture(dir: &Path) {
    let work = temp_dir("create");
    let input = dir.join("input");
    fs::create_dir_all(&input).unwrap();
    for f in 0..FILES {
        let text: String = (0..LINES).map(|l| format!("{}\n", file_line(f, l))).collect();
        fs::write(input.join(format!("file{f}.txt")), text).unwrap();
    }
    let (sp1, o1) = run_and_stop(2, None, &input, &work, 600, SnapshotFormat::Native);
    let (sp2, o2) = run_and_stop(3, Some(sp1), &input, &work, 500, SnapshotFormat::Native);
    let (sp3, o3) = run_and_stop(3, Some(sp2.clone()), &input, &work, 500, SnapshotFormat::Canonical);
    copy_dir(&sp2, &dir.join("native-p3"));
    copy_dir(&sp3, &dir.join("canonical-p3"));
    let mut before = o1;
    before.extend(o2);
    write_lines(&dir.join("before-native-p3.txt"), &before);
    before.extend(o3);
    write_lines(&dir.join("before-canonical-p3.txt"), &before);
    let _ = fs::remove_dir_all(&work);
    eprintln!("created golden fixture in {}", dir.display());
}

fn fixture() -> PathBuf {
    let dir = golden_dir();
    if !dir.join("native-p3").exists() && std::env::var("CAIRN_REGEN_GOLDEN").as_deref() == Ok("1") {
        create_fixture(&dir);
    }
    assert!(
        dir.join("native-p3").join("_metadata").is_file(),
        "golden fixture missing: {}",
        dir.display()
    );
    dir
}

/// Restore savepoint `name` of the fixture at `parallelism`, run to the end,
/// and check that the runs before it and this one together emitted every
/// event exactly once.
fn restore_and_finish(name: &str, parallelism: u32) {
    let dir = fixture();
    let work = temp_dir(name);
    // Restore from a copy: the fixture is never touched.
    let sp = work.join(name);
    copy_dir(&dir.join(name), &sp);
    let before: Vec<String> = fs::read_to_string(dir.join(format!("before-{name}.txt")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let env = env(parallelism, Some(sp));
    let out = job(&env, &dir.join("input"), None);
    env.execute("restored golden source state").unwrap();
    let after = out.values();
    assert!(
        after.iter().any(|l| l.starts_with("g ")) && after.iter().any(|l| l.starts_with("f ")),
        "both sources had input left in the fixture"
    );
    let mut all = before;
    all.extend(after);
    all.sort();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for l in &all {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let twice: Vec<&&str> = counts.iter().filter(|(_, c)| **c > 1).map(|(l, _)| l).take(5).collect();
    assert!(twice.is_empty(), "emitted twice: {twice:?}");
    assert_eq!(all, full_output(), "every event exactly once over all runs");
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn native_v1_source_state_with_an_idle_placeholder_restores_at_parallelism_2() {
    restore_and_finish("native-p3", 2);
}

#[test]
fn canonical_v1_source_state_restores_at_parallelism_4() {
    restore_and_finish("canonical-p3", 4);
}
