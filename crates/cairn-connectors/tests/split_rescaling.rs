//! Split-based sources across rescales, as a user drives them: a
//! rate-limited generator with two splits, a keyed running count, an
//! exactly-once file sink and 200 ms checkpoints.
//!
//! 1. run at the first parallelism, cancel (checkpoints retained);
//! 2. restore the latest checkpoint at the second, stop with a canonical savepoint;
//! 3. restore that at the third parallelism: stop with a savepoint (unbounded) or
//!    run to the end (bounded).
//!
//! After every restore each split must advance (the test waits, with a deadline, until
//! the committed output holds an event of every split beyond anything written before the
//! restore), and the committed output at the end must be exactly the failure-free output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn::runtime::JobError;

const SPLITS: u64 = 2;
/// Running-count keys per split (keys never span splits, so each key's counts
/// follow its split's order and the expected output is exact).
const KEYS: u64 = 7;
const WAIT: Duration = Duration::from_secs(90);

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-split-rescaling-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The generator's splits of `0..count`: split `s` is `[s*count/SPLITS, (s+1)*count/SPLITS)`.
fn split_start(count: u64, s: u64) -> u64 {
    (u128::from(s) * u128::from(count) / u128::from(SPLITS)) as u64
}

fn split_of(count: u64, index: u64) -> u64 {
    (0..SPLITS).rfind(|s| split_start(count, *s) <= index).unwrap()
}

/// One output line: (split, index, key, running count of the key).
type Line = (u64, u64, u64, u64);

fn parse(line: &str) -> Line {
    let f: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    (f[0], f[1], f[2], f[3])
}

/// What a failure-free run writes for event `index`.
fn expected_line(count: u64, index: u64) -> Line {
    let s = split_of(count, index);
    let offset = index - split_start(count, s);
    (s, index, s * KEYS + offset % KEYS, offset / KEYS + 1)
}

#[derive(Clone, Default)]
struct RunningCount {
    count: Option<ValueState<u64>>,
    total: u64,
}

impl KeyedProcessFunction<u64, GeneratedEvent, Line> for RunningCount {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Line>) -> OpResult {
        let state = self.count.as_ref().ok_or("not opened")?;
        let n = state.value(ctx)?.unwrap_or(0) + 1;
        state.update(ctx, &n)?;
        let s = split_of(self.total, e.index);
        ctx.collect((s, e.index, *ctx.key(), n));
        Ok(())
    }
}

struct Scenario {
    dir: PathBuf,
    count: u64,
}

impl Scenario {
    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    fn env(&self, parallelism: u32, restore: Option<PathBuf>) -> StreamEnv {
        let mut config = Configuration::new();
        let set = |c: &mut Configuration, k: &str, v: &str| c.set(k, v).unwrap();
        set(&mut config, "parallelism.default", &parallelism.to_string());
        set(&mut config, "execution.checkpointing.interval", "200ms");
        set(
            &mut config,
            "execution.checkpointing.dir",
            self.dir.join("checkpoints").to_str().unwrap(),
        );
        set(
            &mut config,
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION",
        );
        set(&mut config, "restart-strategy.type", "none");
        StreamEnv::with_startup(StartupOptions {
            config,
            restore_path: restore,
            ..Default::default()
        })
    }

    fn build(&self, env: &StreamEnv, rate: u64) {
        let count = self.count;
        env.source(GeneratorSource::new(count, 1).seed(9).splits(SPLITS as u32).rate(rate))
            .uid("events")
            .key_by(move |e: &GeneratedEvent| {
                let s = split_of(count, e.index);
                s * KEYS + (e.index - split_start(count, s)) % KEYS
            })
            .process(RunningCount {
                count: None,
                total: count,
            })
            .uid("counts")
            .sink(FileSink::new(self.out(), |l: &Line| {
                format!("{} {} {} {}", l.0, l.1, l.2, l.3)
            }))
            .uid("files");
    }

    /// Highest index per split over the given output files.
    fn max_per_split(&self, committed_only: bool) -> BTreeMap<u64, u64> {
        let mut max = BTreeMap::new();
        for line in self.lines(committed_only) {
            let (s, i, _, _) = parse(&line);
            let m = max.entry(s).or_insert(i);
            *m = (*m).max(i);
        }
        max
    }

    /// Lines of the committed part files, or of every file the sink wrote.
    fn lines(&self, committed_only: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let Ok(entries) = fs::read_dir(self.out()) else {
            return lines;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if committed_only && !name.starts_with("part-") {
                continue;
            }
            // A file may be renamed away between listing and reading.
            if let Ok(text) = fs::read_to_string(&path) {
                lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
        }
        lines
    }

    /// Wait until the committed output holds, for every split that has events
    /// left, an event beyond `before` (what was written before the restore).
    fn wait_until_every_split_advanced(&self, client: &JobClient, before: &BTreeMap<u64, u64>, step: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.max_per_split(true);
            let stuck: Vec<u64> = (0..SPLITS)
                .filter(|s| {
                    let last = split_start(self.count, s + 1) - 1;
                    let done = before.get(s) == Some(&last);
                    !done && now.get(s).copied() <= before.get(s).copied()
                })
                .collect();
            if stuck.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: split(s) {stuck:?} did not advance beyond {before:?} (committed so far: {now:?}); job: {:?}",
                client.info()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn latest_checkpoint(&self, job_id: &str) -> PathBuf {
        fs::read_dir(self.dir.join("checkpoints").join(job_id))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("_metadata").is_file())
            .max_by_key(|p| {
                p.file_name().unwrap().to_str().unwrap()["chk-".len()..]
                    .parse::<u64>()
                    .unwrap()
            })
            .expect("a retained checkpoint")
    }

    /// The committed output is exactly a failure-free run's: per split a
    /// gap-free prefix of its events (all of them when `bounded`), each once,
    /// each line as computed without failures.
    fn assert_failure_free_output(&self, bounded: bool) {
        let mut per_split: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for line in self.lines(true) {
            let l = parse(&line);
            assert_eq!(l, expected_line(self.count, l.1), "line {line:?}");
            per_split.entry(l.0).or_default().push(l.1);
        }
        for s in 0..SPLITS {
            let mut got = per_split.remove(&s).unwrap_or_default();
            got.sort_unstable();
            let start = split_start(self.count, s);
            let end = if bounded {
                split_start(self.count, s + 1)
            } else {
                start + got.len() as u64
            };
            let dup = got.windows(2).find(|w| w[0] == w[1]);
            assert!(
                dup.is_none(),
                "split {s}: event {:?} committed twice",
                dup.map(|w| w[0])
            );
            assert!(!got.is_empty(), "split {s}: nothing committed");
            let missing = (start..end).find(|i| got.binary_search(i).is_err());
            assert!(
                got.len() as u64 == end - start && missing.is_none(),
                "split {s}: committed {} events of [{start}, {end}); first missing {missing:?}",
                got.len()
            );
        }
    }
}

fn trigger(client: &JobClient, target: &Path, format: SnapshotFormat) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .expect("savepoint accepted");
    match client.wait_operation(&op, WAIT) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("stop with savepoint did not complete: {other:?}"),
    }
}

/// The three steps at parallelisms `p`; `bounded` sizes the input so the last step finishes it.
fn run_three_steps(tag: &str, p: [u32; 3], bounded: bool) {
    let count = if bounded { 2 * 40_000 } else { 1 << 40 };
    let sc = Scenario {
        dir: temp_dir(tag),
        count,
    };
    let rate = 2_000;

    // 1. Run, then cancel; the checkpoints stay.
    let env = sc.env(p[0], None);
    sc.build(&env, rate);
    let handle = env.execute_async("splits, step 1").unwrap();
    let client = handle.client();
    sc.wait_until_every_split_advanced(&client, &BTreeMap::new(), "step 1");
    client.cancel().unwrap();
    assert!(matches!(handle.wait(), Err(CairnError::Job(JobError::Cancelled))));
    let chk = sc.latest_checkpoint(&client.info().job_id);

    // 2. Restore the latest checkpoint, then stop with a canonical savepoint.
    let before = sc.max_per_split(false);
    let env = sc.env(p[1], Some(chk));
    sc.build(&env, rate);
    let handle = env.execute_async("splits, step 2").unwrap();
    let client = handle.client();
    sc.wait_until_every_split_advanced(&client, &before, "step 2 (restored checkpoint)");
    let savepoint = trigger(&client, &sc.dir.join("savepoints"), SnapshotFormat::Canonical);
    handle.wait().unwrap();

    // 3. Restore the savepoint.
    let before = sc.max_per_split(false);
    let env = sc.env(p[2], Some(savepoint));
    sc.build(&env, if bounded { 40_000 } else { rate });
    let handle = env.execute_async("splits, step 3").unwrap();
    let client = handle.client();
    sc.wait_until_every_split_advanced(&client, &before, "step 3 (restored savepoint)");
    if bounded {
        let result = handle.wait().unwrap();
        assert!(result.savepoint.is_none());
    } else {
        trigger(&client, &sc.dir.join("savepoints"), SnapshotFormat::Native);
        handle.wait().unwrap();
    }
    sc.assert_failure_free_output(bounded);
    let _ = fs::remove_dir_all(&sc.dir);
}

#[test]
fn unbounded_p2_cancel_p3_canonical_savepoint_p2_every_split_advances_exactly_once() {
    run_three_steps("p2-p3-p2", [2, 3, 2], false);
}

#[test]
fn unbounded_p1_p4_p2_every_split_advances_exactly_once() {
    run_three_steps("p1-p4-p2", [1, 4, 2], false);
}

#[test]
fn bounded_p2_p3_p2_finishes_with_the_failure_free_output() {
    run_three_steps("bounded", [2, 3, 2], true);
}
