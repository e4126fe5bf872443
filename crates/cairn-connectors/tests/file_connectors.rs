//! File source and exactly-once file sink: end-to-end jobs through
//! `StreamEnv`, and the checkpoint protocol driven through the `Source` and
//! `Sink` traits (the runtime has no way to crash a job on cue yet).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn::connectors::file::{file_owner, FileSink, FileSource};
use cairn::prelude::*;
use cairn::runtime::SubtaskInfo;
use cairn::state::operator_state::{redistribute, OperatorStateEntry};
use cairn::state::OperatorStateStore;

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-file-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn info(subtask: u32, parallelism: u32, attempt: u32) -> SubtaskInfo {
    SubtaskInfo {
        job_id: "0".repeat(32),
        operator_name: "files".into(),
        uid: "files".into(),
        operator_id: "files".into(),
        subtask,
        parallelism,
        max_parallelism: 128,
        attempt,
        clock: cairn::runtime::time::system_clock(),
    }
}

/// Writes `files` (name -> line count) with lines `<name>:<i>`; returns all
/// lines per file in order.
fn write_files(dir: &Path, files: &[(&str, usize)]) -> BTreeMap<String, Vec<String>> {
    let mut all = BTreeMap::new();
    for (name, n) in files {
        let lines: Vec<String> = (0..*n).map(|i| format!("{name}:{i}")).collect();
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(dir.join(name), text).unwrap();
        all.insert(name.to_string(), lines);
    }
    all
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Visible files' lines and the names of hidden files in `dir`.
fn read_output(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut hidden = Vec::new();
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        if name.starts_with('.') {
            hidden.push(name);
        } else {
            let text = fs::read_to_string(dir.join(&name)).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    (lines, hidden)
}

fn run_read_job(dir: &Path, parallelism: u32) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism).unwrap();
    let (sink, got) = CollectSink::new();
    env.source(FileSource::new(dir)).uid("files").sink(sink).uid("collect");
    env.execute("read files").unwrap();
    got.values()
}

/// The lines of `got` that belong to file `name`, in emission order.
fn of_file<'a>(got: &'a [String], name: &str) -> Vec<&'a String> {
    got.iter().filter(|l| l.starts_with(&format!("{name}:"))).collect()
}

#[test]
fn bounded_read_at_parallelism_1_emits_every_line_each_file_in_order() {
    let dir = temp_dir("p1");
    let files = write_files(&dir, &[("b.log", 40), ("a.log", 25), ("c.log", 1)]);
    // Ignored: hidden files, `_` files and directories.
    fs::write(dir.join(".hidden"), "no\n").unwrap();
    fs::write(dir.join("_SUCCESS"), "no\n").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub").join("x"), "no\n").unwrap();

    let got = run_read_job(&dir, 1);
    let expected: Vec<String> = files.values().flatten().cloned().collect();
    assert_eq!(sorted(got.clone()), sorted(expected));
    for (name, lines) in &files {
        assert_eq!(
            of_file(&got, name),
            lines.iter().collect::<Vec<_>>(),
            "order within {name}"
        );
    }
}

#[test]
fn one_subtask_reads_its_files_interleaved_so_none_waits_for_another_to_end() {
    let dir = temp_dir("interleaved");
    let files = write_files(&dir, &[("a", 1_000), ("b", 1_000), ("c", 1_000)]);
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut src = FileSource::new(&dir);
    src.open(&mut SourceContext {
        info: &i,
        state: &mut store,
    })
    .unwrap();
    let mut out = Vec::new();
    src.poll(&mut out, 300).unwrap();
    let got: Vec<String> = out.into_iter().map(|r| r.value).collect();
    for name in files.keys() {
        assert_eq!(of_file(&got, name).len(), 100, "{name} got its share of the first poll");
    }
}

#[test]
fn bounded_read_at_parallelism_3_emits_every_line_exactly_once() {
    let dir = temp_dir("p3");
    let names: Vec<String> = (0..12).map(|i| format!("f{i:02}.txt")).collect();
    let specs: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 300)).collect();
    let files = write_files(&dir, &specs);
    // The files really are spread over the subtasks.
    let owners: BTreeSet<u32> = names.iter().map(|n| file_owner(n, 3)).collect();
    assert!(owners.len() > 1, "test files should hash to several subtasks");

    let got = run_read_job(&dir, 3);
    assert_eq!(got.len(), 12 * 300);
    let expected: Vec<String> = files.values().flatten().cloned().collect();
    assert_eq!(sorted(got.clone()), sorted(expected));
    // Each file is read by one subtask in order, and the collect sink is
    // chained to it, so lines of one file keep their relative order.
    for (name, lines) in &files {
        assert_eq!(
            of_file(&got, name),
            lines.iter().collect::<Vec<_>>(),
            "order within {name}"
        );
    }
}

#[test]
fn suffix_filter_and_line_endings() {
    let dir = temp_dir("suffix");
    fs::write(dir.join("a.csv"), "1,2\r\n3,4\n\nlast-without-newline").unwrap();
    fs::write(dir.join("b.txt"), "skip me\n").unwrap();
    let env = StreamEnv::new();
    let (sink, got) = CollectSink::new();
    env.source(FileSource::new(&dir).suffix(".csv"))
        .uid("files")
        .sink(sink)
        .uid("collect");
    env.execute("suffix").unwrap();
    assert_eq!(got.values(), vec!["1,2", "3,4", "", "last-without-newline"]);
}

#[test]
fn missing_directory_fails_the_job_naming_the_path() {
    let dir = temp_dir("missing").join("does-not-exist");
    let env = StreamEnv::new();
    let (sink, _got) = CollectSink::new();
    env.source(FileSource::new(&dir)).uid("files").sink(sink).uid("collect");
    let err = env.execute("missing").unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn invalid_utf8_fails_naming_file_and_offset_or_is_skipped() {
    let dir = temp_dir("utf8");
    fs::write(dir.join("bad.txt"), b"ok\n\xff\xfe\nafter\n").unwrap();
    let mut store = OperatorStateStore::new();
    let i = info(0, 1, 0);

    let mut strict = FileSource::new(&dir);
    strict
        .open(&mut SourceContext {
            info: &i,
            state: &mut store,
        })
        .unwrap();
    let mut out = Vec::new();
    let err = strict.poll(&mut out, 100).unwrap_err().to_string();
    assert!(err.contains("bad.txt") && err.contains("byte offset 3"), "{err}");

    let mut lenient = FileSource::new(&dir).skip_invalid_lines();
    lenient
        .open(&mut SourceContext {
            info: &i,
            state: &mut store,
        })
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lenient.poll(&mut out, 100).unwrap() != SourceStatus::Finished {
        assert!(
            Instant::now() < deadline,
            "the source never finished: {} records",
            out.len()
        );
    }
    let values: Vec<String> = out.into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec!["ok", "after"]);
    assert_eq!(lenient.skipped_lines(), 1);
}

/// Polls until the source reports `Finished` or `Pending`.
fn drain(src: &mut FileSource, max: usize) -> (Vec<String>, SourceStatus) {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = src.poll(&mut out, max).unwrap();
        if status != SourceStatus::More {
            return (out.into_iter().map(|r| r.value).collect(), status);
        }
        assert!(
            Instant::now() < deadline,
            "the source keeps reporting More: {} records",
            out.len()
        );
    }
}

#[test]
fn monitor_mode_picks_up_files_added_while_running() {
    let dir = temp_dir("monitor");
    let first = write_files(&dir, &[("001.txt", 3)]);
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    // Interval zero: list the directory whenever the known files are read.
    let mut src = FileSource::new(&dir).monitor(Duration::ZERO);
    src.open(&mut SourceContext {
        info: &i,
        state: &mut store,
    })
    .unwrap();
    let (got, status) = drain(&mut src, 2);
    assert_eq!(got, first["001.txt"]);
    assert!(matches!(status, SourceStatus::Pending(_)), "unbounded: {status:?}");

    let later = write_files(&dir, &[("003.txt", 2), ("002.txt", 2)]);
    let (got, status) = drain(&mut src, 10);
    let expected: Vec<String> = later.values().flatten().cloned().collect();
    assert_eq!(got, expected, "new files in name order, old ones not re-read");
    assert!(matches!(status, SourceStatus::Pending(_)));

    // A restored monitoring source does not read finished files again.
    src.snapshot_state(
        &mut SourceContext {
            info: &i,
            state: &mut store,
        },
        1,
    )
    .unwrap();
    let mut restored_store = OperatorStateStore::from_entries(store.to_entries()).unwrap();
    let mut again = FileSource::new(&dir).monitor(Duration::ZERO);
    again
        .open(&mut SourceContext {
            info: &i,
            state: &mut restored_store,
        })
        .unwrap();
    write_files(&dir, &[("004.txt", 1)]);
    let (got, _) = drain(&mut again, 10);
    assert_eq!(got, vec!["004.txt:0"]);
}

#[test]
fn source_restore_mid_file_continues_at_the_next_line() {
    let dir = temp_dir("restore");
    let files = write_files(&dir, &[("a", 7), ("b", 5)]);
    let all: Vec<String> = files.values().flatten().cloned().collect();
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut src = FileSource::new(&dir);
    src.open(&mut SourceContext {
        info: &i,
        state: &mut store,
    })
    .unwrap();
    let mut before = Vec::new();
    assert_eq!(src.poll(&mut before, 4).unwrap(), SourceStatus::More);
    src.snapshot_state(
        &mut SourceContext {
            info: &i,
            state: &mut store,
        },
        1,
    )
    .unwrap();
    let snapshot = store.to_entries();
    // Records after the barrier are lost with the crash and replayed.
    let mut lost = Vec::new();
    src.poll(&mut lost, 3).unwrap();
    drop(src);

    let mut restored_store = OperatorStateStore::from_entries(snapshot).unwrap();
    let mut src = FileSource::new(&dir);
    src.open(&mut SourceContext {
        info: &info(0, 1, 1),
        state: &mut restored_store,
    })
    .unwrap();
    let (after, status) = drain(&mut src, 3);
    assert_eq!(status, SourceStatus::Finished);
    let mut combined: Vec<String> = before.into_iter().map(|r| r.value).collect();
    combined.extend(after);
    assert_eq!(sorted(combined.clone()), sorted(all), "no loss, no duplicate");
    for (name, lines) in &files {
        assert_eq!(
            of_file(&combined, name),
            lines.iter().collect::<Vec<_>>(),
            "order within {name}"
        );
    }
}

#[test]
fn source_restore_after_rescaling_from_2_to_3_subtasks_is_exactly_once() {
    let dir = temp_dir("rescale");
    let names: Vec<String> = (0..9).map(|i| format!("part{i}")).collect();
    let specs: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 5)).collect();
    let files = write_files(&dir, &specs);
    let all: Vec<String> = files.values().flatten().cloned().collect();

    // Two subtasks read a little (stopping mid-file), then snapshot.
    let mut emitted = Vec::new();
    let mut snapshots: Vec<Vec<OperatorStateEntry>> = Vec::new();
    for s in 0..2 {
        let i = info(s, 2, 0);
        let mut store = OperatorStateStore::new();
        let mut src = FileSource::new(&dir);
        src.open(&mut SourceContext {
            info: &i,
            state: &mut store,
        })
        .unwrap();
        let mut out = Vec::new();
        src.poll(&mut out, 7).unwrap();
        emitted.extend(out.into_iter().map(|r| r.value));
        src.snapshot_state(
            &mut SourceContext {
                info: &i,
                state: &mut store,
            },
            3,
        )
        .unwrap();
        snapshots.push(store.to_entries());
    }
    assert!(emitted.len() > 7 && emitted.len() < all.len(), "stopped mid-way");

    let mut readers: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut shares = Vec::new();
    for (s, entries) in redistribute(&snapshots, 3).into_iter().enumerate() {
        let i = info(s as u32, 3, 1);
        let mut store = OperatorStateStore::from_entries(entries).unwrap();
        let mut src = FileSource::new(&dir);
        src.open(&mut SourceContext {
            info: &i,
            state: &mut store,
        })
        .unwrap();
        let (out, status) = drain(&mut src, 4);
        assert_eq!(status, SourceStatus::Finished);
        let mine: BTreeSet<&str> = out.iter().map(|l| l.split(':').next().unwrap()).collect();
        for f in &mine {
            readers.entry(f.to_string()).or_default().push(s as u32);
        }
        shares.push(mine.len());
        emitted.extend(out);
    }
    assert_eq!(sorted(emitted), sorted(all));
    // Every unfinished file went to exactly one subtask, and the shares are even.
    assert!(readers.values().all(|r| r.len() == 1), "{readers:?}");
    assert!(
        shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1,
        "{shares:?}"
    );
}

#[test]
fn file_sink_without_checkpoints_writes_every_record_once_in_visible_parts() {
    let out_dir = temp_dir("sink-out");
    let env = StreamEnv::new();
    env.set_parallelism(3).unwrap();
    env.source(GeneratorSource::new(5_000, 10))
        .uid("gen")
        .sink(FileSink::new(&out_dir, |e: &GeneratedEvent| format!("{},{}", e.index, e.key)).max_part_size(4096))
        .uid("files-out");
    env.execute("write files").unwrap();

    let (lines, hidden) = read_output(&out_dir);
    assert!(hidden.is_empty(), "no in-progress or pending files left: {hidden:?}");
    let expected: Vec<String> = (0..5_000u64).map(|i| format!("{},{}", i, i % 10)).collect();
    assert_eq!(sorted(lines), sorted(expected));
    let parts = fs::read_dir(&out_dir).unwrap().count();
    assert!(parts > 3, "size rolling made several parts, got {parts}");

    // Round trip: the file source reads the sink's output.
    let got = run_read_job(&out_dir, 2);
    assert_eq!(got.len(), 5_000);
}

// ----- two-phase commit, driven through the Sink trait -----

fn open_sink(dir: &Path, i: &SubtaskInfo, store: &mut OperatorStateStore) -> FileSink<String> {
    let mut sink = FileSink::<String>::lines(dir);
    sink.open(&mut SinkContext {
        info: i,
        state: store,
        checkpointing: true,
    })
    .unwrap();
    sink
}

fn write(sink: &mut FileSink<String>, values: &[&str]) {
    let batch = values
        .iter()
        .map(|v| StreamRecord {
            value: v.to_string(),
            timestamp: 0,
        })
        .collect();
    sink.write_batch(batch).unwrap();
}

fn snapshot(sink: &mut FileSink<String>, i: &SubtaskInfo, store: &mut OperatorStateStore, id: u64) {
    sink.snapshot_state(
        &mut SinkContext {
            info: i,
            state: store,
            checkpointing: true,
        },
        id,
    )
    .unwrap();
}

#[test]
fn pre_committed_parts_become_visible_only_when_the_checkpoint_completes() {
    let dir = temp_dir("2pc");
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut sink = open_sink(&dir, &i, &mut store);
    write(&mut sink, &["a", "b"]);
    let (visible, hidden) = read_output(&dir);
    assert!(visible.is_empty());
    assert_eq!(hidden, vec![".part-0-0.inprogress"]);

    snapshot(&mut sink, &i, &mut store, 1);
    let (visible, hidden) = read_output(&dir);
    assert!(visible.is_empty(), "staged, not committed");
    assert_eq!(hidden, vec![".part-0-0.pending-1"]);

    write(&mut sink, &["c"]);
    sink.notify_checkpoint_complete(1).unwrap();
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["a", "b"], "only checkpoint 1's records");
    assert_eq!(hidden, vec![".part-0-1.inprogress"]);

    // A checkpoint with nothing new adds no empty part.
    snapshot(&mut sink, &i, &mut store, 2);
    snapshot(&mut sink, &i, &mut store, 3);
    sink.notify_checkpoint_complete(3).unwrap();
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["a", "b", "c"]);
    assert!(hidden.is_empty(), "{hidden:?}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn crash_between_pre_commit_and_commit_is_repaired_on_restore() {
    let dir = temp_dir("crash");
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut sink = open_sink(&dir, &i, &mut store);
    write(&mut sink, &["1", "2"]);
    snapshot(&mut sink, &i, &mut store, 1);
    sink.notify_checkpoint_complete(1).unwrap();
    write(&mut sink, &["3"]);
    snapshot(&mut sink, &i, &mut store, 2);
    // Checkpoint 2 completes (its state is what the runtime restores) but the
    // task dies before the notification arrives.
    let checkpoint_2 = store.to_entries();
    write(&mut sink, &["4"]);
    snapshot(&mut sink, &i, &mut store, 3); // never completes
    write(&mut sink, &["5"]);
    drop(sink);
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["1", "2"]);
    assert_eq!(
        hidden,
        vec![".part-0-1.pending-2", ".part-0-2.pending-3", ".part-0-3.inprogress"]
    );

    let restored_info = info(0, 1, 1);
    let mut restored = OperatorStateStore::from_entries(checkpoint_2).unwrap();
    let mut sink = open_sink(&dir, &restored_info, &mut restored);
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["1", "2", "3"], "checkpoint 2 committed on open");
    assert!(hidden.is_empty(), "failed attempt's files deleted: {hidden:?}");

    // Replayed records go to a new part number; nothing is duplicated.
    write(&mut sink, &["4", "5"]);
    snapshot(&mut sink, &restored_info, &mut restored, 3);
    sink.notify_checkpoint_complete(3).unwrap();
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["1", "2", "3", "4", "5"]);
    assert!(hidden.is_empty());
    assert!(
        dir.join("part-0-4").exists(),
        "part numbers continue past the failed attempt's"
    );
}

#[test]
fn commit_is_idempotent() {
    let dir = temp_dir("idem");
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut sink = open_sink(&dir, &i, &mut store);
    write(&mut sink, &["x"]);
    snapshot(&mut sink, &i, &mut store, 1);
    let entries = store.to_entries();
    sink.notify_checkpoint_complete(1).unwrap();
    sink.notify_checkpoint_complete(1).unwrap();
    // Restoring checkpoint 1 after its commit already happened commits again.
    let mut restored = OperatorStateStore::from_entries(entries.clone()).unwrap();
    drop(open_sink(&dir, &info(0, 1, 1), &mut restored));
    let mut restored = OperatorStateStore::from_entries(entries).unwrap();
    drop(open_sink(&dir, &info(0, 1, 2), &mut restored));
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["x"]);
    assert!(hidden.is_empty());
}

#[test]
fn missing_pending_file_without_final_file_is_an_error() {
    let dir = temp_dir("lost");
    let i = info(0, 1, 0);
    let mut store = OperatorStateStore::new();
    let mut sink = open_sink(&dir, &i, &mut store);
    write(&mut sink, &["x"]);
    snapshot(&mut sink, &i, &mut store, 1);
    fs::remove_file(dir.join(".part-0-0.pending-1")).unwrap();
    let err = sink.notify_checkpoint_complete(1).unwrap_err().to_string();
    assert!(
        err.contains(".part-0-0.pending-1") && err.contains("checkpoint 1"),
        "{err}"
    );
}

#[test]
fn sink_rescale_from_2_to_1_commits_every_old_subtasks_parts() {
    let dir = temp_dir("sink-rescale");
    let mut snapshots = Vec::new();
    for s in 0..2 {
        let i = info(s, 2, 0);
        let mut store = OperatorStateStore::new();
        let mut sink = open_sink(&dir, &i, &mut store);
        write(&mut sink, &[&format!("s{s}-a")]);
        snapshot(&mut sink, &i, &mut store, 7);
        snapshots.push(store.to_entries());
        write(&mut sink, &[&format!("s{s}-lost")]);
        sink.snapshot_state(
            &mut SinkContext {
                info: &i,
                state: &mut store,
                checkpointing: true,
            },
            8,
        )
        .unwrap();
    }
    let mut entries = redistribute(&snapshots, 1);
    let mut store = OperatorStateStore::from_entries(entries.remove(0)).unwrap();
    let mut sink = open_sink(&dir, &info(0, 1, 1), &mut store);
    let (visible, hidden) = read_output(&dir);
    assert_eq!(sorted(visible), vec!["s0-a", "s1-a"]);
    assert!(hidden.is_empty(), "strays of the removed subtask cleaned: {hidden:?}");
    write(&mut sink, &["new"]);
    sink.end_input(&mut SinkContext {
        info: &info(0, 1, 1),
        state: &mut store,
        checkpointing: true,
    })
    .unwrap();
    // With checkpoints, end of input does not commit: the final checkpoint does.
    assert_eq!(read_output(&dir).0.len(), 2);
}

#[test]
fn end_input_without_checkpointing_finalizes() {
    let dir = temp_dir("no-ckpt");
    let i = info(1, 2, 0);
    let mut store = OperatorStateStore::new();
    let mut sink = FileSink::new(&dir, |n: &u32| n.to_string());
    sink.open(&mut SinkContext {
        info: &i,
        state: &mut store,
        checkpointing: false,
    })
    .unwrap();
    sink.write_batch((0..3).map(|v| StreamRecord { value: v, timestamp: 0 }).collect())
        .unwrap();
    sink.end_input(&mut SinkContext {
        info: &i,
        state: &mut store,
        checkpointing: false,
    })
    .unwrap();
    sink.close().unwrap();
    let (visible, hidden) = read_output(&dir);
    assert_eq!(visible, vec!["0", "1", "2"]);
    assert!(hidden.is_empty());
    assert!(dir.join("part-1-0").exists());
}

// ----- with the runtime's checkpoints -----

fn checkpointed_env(checkpoint_dir: &Path, parallelism: u32, restore: Option<PathBuf>) -> StreamEnv {
    let base = StreamEnv::new();
    base.set_parallelism(parallelism).unwrap();
    // Periodic checkpoints far apart: the final checkpoint at the end of input does the work.
    base.set_config("execution.checkpointing.interval", "1h").unwrap();
    base.set_config("execution.checkpointing.dir", checkpoint_dir.to_str().unwrap())
        .unwrap();
    StreamEnv::with_startup(cairn::config::StartupOptions {
        config: base.config(),
        restore_path: restore,
        ..Default::default()
    })
}

fn copy_job(env: &StreamEnv, input: &Path, output: &Path) {
    env.source(FileSource::new(input))
        .uid("files-in")
        .map(|l: String| format!("copied {l}"))
        .sink(FileSink::lines(output))
        .uid("files-out");
}

#[test]
fn checkpointed_copy_job_restored_at_a_new_parallelism_writes_every_line_once() {
    let input = temp_dir("ckpt-in");
    let output = temp_dir("ckpt-out");
    let checkpoints = temp_dir("ckpt-chk");
    let first_files: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    let specs: Vec<(&str, usize)> = first_files.iter().map(|n| (n.as_str(), 50)).collect();
    let first = write_files(&input, &specs);

    let env = checkpointed_env(&checkpoints, 2, None);
    copy_job(&env, &input, &output);
    let result = env.execute("copy, first run").unwrap();
    let (visible, hidden) = read_output(&output);
    assert!(
        hidden.is_empty(),
        "the final checkpoint committed everything: {hidden:?}"
    );
    let expected_first: Vec<String> = first.values().flatten().map(|l| format!("copied {l}")).collect();
    assert_eq!(sorted(visible), sorted(expected_first.clone()));

    let last = result
        .checkpoints
        .iter()
        .rfind(|c| c.status == cairn::coordinator::control::SnapshotStatus::Completed)
        .expect("a completed final checkpoint")
        .id;
    let chk = checkpoints.join(&result.job_id).join(format!("chk-{last}"));

    // New files arrive; the restored job (3 subtasks) reads only those.
    let later_files: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    let specs: Vec<(&str, usize)> = later_files.iter().map(|n| (n.as_str(), 40)).collect();
    let later = write_files(&input, &specs);
    let env = checkpointed_env(&checkpoints, 3, Some(chk));
    copy_job(&env, &input, &output);
    env.execute("copy, restored").unwrap();

    let (visible, hidden) = read_output(&output);
    assert!(hidden.is_empty(), "{hidden:?}");
    let mut expected = expected_first;
    expected.extend(later.values().flatten().map(|l| format!("copied {l}")));
    assert_eq!(sorted(visible), sorted(expected), "every input line exactly once");
}
