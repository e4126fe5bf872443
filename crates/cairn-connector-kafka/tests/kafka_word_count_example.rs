//! The example job `kafka_word_count` (crates/cairn/examples), run as a user runs it:
//! its binary, with the standard job flags and its own, against the real broker. Its
//! output, read with `read_committed`, holds every running count of every word once.
//! The binary is built by `cargo test --workspace --features cairn/kafka` (examples are
//! built with the tests); built alone: `cargo build -p cairn --features kafka --example
//! kafka_word_count`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn example_binary() -> Option<PathBuf> {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/kafka_word_count
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("examples").join("kafka_word_count");
    if bin.is_file() {
        return Some(bin);
    }
    let msg = format!(
        "the example binary {} is not built: run `cargo build -p cairn --features kafka --example kafka_word_count` \
         (or the whole workspace's tests with --features cairn/kafka)",
        bin.display()
    );
    assert!(std::env::var_os("CAIRN_REQUIRE_KAFKA").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// Run the example with `args`; it must end by itself.
fn run(bin: &PathBuf, args: &[String]) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the example") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kafka_word_count did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    (status.success(), stderr)
}

#[test]
fn kafka_word_count_counts_every_word_once_per_occurrence_exactly_once() {
    let Some(b) = broker() else { return };
    let Some(bin) = example_binary() else { return };
    let input = unique("cairn-wc-lines");
    let output = unique("cairn-wc-counts");
    create_topic(&b, &input, 2);
    create_topic(&b, &output, 2);
    let lines: Vec<String> = (0..400u32)
        .map(|i| format!("w{} W{}  w{}", i % 7, i % 5, i % 3))
        .collect();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        for w in line.split_whitespace() {
            *total.entry(w.to_lowercase()).or_default() += 1;
        }
    }
    for p in 0..2 {
        let part: Vec<(String, Option<i64>)> = lines.iter().skip(p).step_by(2).map(|l| (l.clone(), None)).collect();
        produce(&b, &input, p as i32, &part);
    }
    let dir = temp_dir("word-count");
    let args: Vec<String> = [
        "-p",
        "2",
        "-D",
        "execution.checkpointing.interval=200ms",
        "-D",
        &format!("execution.checkpointing.dir={}", dir.display()),
        "-D",
        "rest.port=0",
        "--",
        "--bootstrap-servers",
        &b,
        "--input",
        &input,
        "--output",
        &output,
        "--bounded",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, stderr) = run(&bin, &args);
    assert!(ok, "kafka_word_count failed:\n{stderr}");
    assert!(stderr.contains("read 400 lines"), "{stderr}");

    // Every (word, n) for n in 1..=count once, keyed by the word.
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in read_all(&b, &output, "read_committed") {
        let (word, n) = r.value.split_once(' ').expect("'<word> <count>'");
        assert_eq!(r.key.as_deref(), Some(word.as_bytes()), "the key is the word");
        got.entry(word.to_string()).or_default().push(n.parse().unwrap());
    }
    let want: BTreeMap<String, Vec<u64>> = total.iter().map(|(w, c)| (w.clone(), (1..=*c).collect())).collect();
    for counts in got.values_mut() {
        counts.sort_unstable();
    }
    assert_eq!(got, want);

    // A flag missing: a clear error, not a hang.
    let (ok, stderr) = run(
        &bin,
        &[
            "--".into(),
            "--bootstrap-servers".into(),
            b.clone(),
            "--input".into(),
            input,
        ],
    );
    assert!(!ok && stderr.contains("--output is required"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
