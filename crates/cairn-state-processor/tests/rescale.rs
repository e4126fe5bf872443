//! Offline rewrites that change where state lives: the max parallelism
//! (every key rehashed into new key groups) and uids, checked key by key
//! against an oracle by restoring real jobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn_state_processor::{Options, SavepointReader, SavepointWriter};

const KEYS: u64 = 3_000;

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

fn make_env(parallelism: u32, max_parallelism: Option<u32>, restore: Option<&Path>) -> StreamEnv {
    let mut config = Configuration::new();
    config.set("parallelism.default", &parallelism.to_string()).unwrap();
    if let Some(m) = max_parallelism {
        config.set("pipeline.max-parallelism", &m.to_string()).unwrap();
    }
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        ..Default::default()
    })
}

/// Counts records per key; the count is what the oracle checks.
#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, u64, (u64, u64, u32)> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, key: u64, ctx: &mut KeyedContext<'_, u64, (u64, u64, u32)>) -> OpResult {
        let c = self.count.as_ref().ok_or("not opened")?;
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, &n)?;
        let max_p = ctx.info().max_parallelism;
        ctx.collect((key, n, max_p));
        Ok(())
    }
}

fn job(env: &StreamEnv, keys: Vec<u64>, uid: &str) -> Collected<(u64, u64, u32)> {
    counted(env.from_collection(keys).uid("keys"), uid)
}

/// The first run: keys from a paced generator, stopped with a savepoint while it runs.
fn first_job(env: &StreamEnv, uid: &str) -> Collected<(u64, u64, u32)> {
    let src = env
        .source(GeneratorSource::new(100_000_000, KEYS).seed(11).rate(40_000))
        .uid("events")
        .map(|e: GeneratedEvent| e.key);
    counted(src, uid)
}

fn counted(src: DataStream<u64>, uid: &str) -> Collected<(u64, u64, u32)> {
    let (sink, out) = CollectSink::new();
    src.key_by(|k: &u64| *k)
        .process(Count::default())
        .uid(uid)
        .sink(sink)
        .set_parallelism(1);
    out
}

fn wait_finished(client: &JobClient) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client.info().status.is_terminal() {
        assert!(Instant::now() < deadline, "the job did not finish: {:?}", client.info());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn savepoint_while_running(env: &StreamEnv, target: &Path, name: &str) -> PathBuf {
    let job = env.execute_async(name).unwrap();
    let client = job.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.metrics().source_records < 3 * KEYS {
        assert!(
            Instant::now() < deadline,
            "the job did not get going: {:?}",
            client.info()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format: SnapshotFormat::Native,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .expect("savepoint accepted");
    let location = match client.wait_operation(&op, Duration::from_secs(120)) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    };
    job.wait().unwrap();
    wait_finished(&client);
    location
}

#[test]
fn change_max_parallelism_128_to_1024_then_restore_at_700_keeps_every_key() {
    let dir = temp_dir("maxp");
    let env = make_env(4, Some(128), None);
    let out1 = first_job(&env, "counter");
    let sp = savepoint_while_running(&env, &dir, "count, max parallelism 128");
    let mut oracle: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, n, max_p) in out1.values() {
        assert_eq!(max_p, 128);
        let e = oracle.entry(k).or_insert(0);
        *e = (*e).max(n);
    }
    assert!(
        oracle.len() as u64 > KEYS / 2,
        "most keys were counted before the savepoint"
    );

    // Rewrite with a small memory budget, so keys go through spill files in
    // several buckets and several ranges of old key groups.
    let options = Options {
        memory_bytes: 32 << 10,
        parallelism: 2,
        ..Options::default()
    };
    let reader = SavepointReader::read_with(
        cairn::snapshot::StorageRouter::local_only().shared(),
        &sp,
        options.clone(),
    )
    .unwrap();
    let rewritten = SavepointWriter::from_reader(reader)
        .unwrap()
        .change_max_parallelism(1024)
        // The second run reads other input: its source starts fresh.
        .remove_operator("events")
        .write(dir.join("max-1024"))
        .unwrap();
    let r = SavepointReader::read(&rewritten).unwrap();
    let op = r.operator("counter").unwrap();
    assert_eq!(op.max_parallelism, 1024);
    assert!(
        op.subtasks.iter().map(|s| s.files.len()).sum::<usize>() > 4,
        "the small budget split the work into several buckets"
    );

    // Restore at parallelism 700 (max parallelism comes from the savepoint):
    // one more record per key shows each key's restored count.
    let env = make_env(700, None, Some(&rewritten));
    let out2 = job(&env, (0..KEYS).collect(), "counter");
    env.execute("count, max parallelism 1024, parallelism 700").unwrap();
    let got = out2.values();
    assert_eq!(got.len() as u64, KEYS);
    for (k, n, max_p) in got {
        assert_eq!(max_p, 1024);
        assert_eq!(n, oracle.get(&k).copied().unwrap_or(0) + 1, "key {k}");
    }

    // A job that still says max parallelism 128 is refused.
    let env = make_env(2, Some(128), Some(&rewritten));
    job(&env, vec![1], "counter");
    let e = env.execute("old max parallelism").unwrap_err().to_string();
    assert!(e.contains("max parallelism 1024"), "{e}");
}

#[test]
fn rename_uid_moves_state_to_the_renamed_operator() {
    let dir = temp_dir("rename");
    let env = make_env(2, None, None);
    let out1 = first_job(&env, "old-counter");
    let sp = savepoint_while_running(&env, &dir, "count");
    let before: BTreeMap<u64, u64> =
        out1.values()
            .into_iter()
            .map(|(k, n, _)| (k, n))
            .fold(BTreeMap::new(), |mut m, (k, n)| {
                let e = m.entry(k).or_insert(0);
                *e = (*e).max(n);
                m
            });
    let renamed = SavepointWriter::from_existing(&sp)
        .unwrap()
        .rename_uid("old-counter", "new-counter")
        .remove_operator("events")
        .write(dir.join("renamed"))
        .unwrap();
    let env = make_env(3, None, Some(&renamed));
    let out2 = job(&env, (0..50).collect(), "new-counter");
    env.execute("count, renamed").unwrap();
    for (k, n, _) in out2.values() {
        assert_eq!(n, before.get(&k).copied().unwrap_or(0) + 1, "key {k}");
    }
    // Unknown uids are named.
    let e = SavepointWriter::from_existing(&sp)
        .unwrap()
        .rename_uid("nope", "x")
        .remove_operator("also-nope")
        .write(dir.join("bad"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'") && e.contains("'also-nope'"), "{e}");
}
