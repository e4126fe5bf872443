//! Checkpoints and savepoints on S3-compatible object storage (a real moto
//! server): checkpoints and retention, restore from a retained checkpoint and
//! from a savepoint at another parallelism against a per-key oracle, savepoint
//! relocation, disposal (also through the REST API, as the CLI does), claim
//! mode, and fencing of a zombie coordinator.
//! Needs the `s3` feature; skipped with a message when no moto server is
//! installed (CI installs one and requires it).
#![cfg(feature = "s3")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::config::{ClaimMode, Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn::snapshot::fence::Fence;
use cairn::snapshot::layout::find_latest_checkpoint;
use cairn::snapshot::{load_snapshot, Storage};
use cairn_rest_client::{HttpClient, Registry};
use cairn_storage_s3::test_server::MotoServer;
use cairn_storage_s3::S3Storage;
use serde_json::json;

const KEYS: u64 = 64;
const DEADLINE: Duration = Duration::from_secs(90);

static BUCKETS: AtomicU64 = AtomicU64::new(0);

/// A fresh bucket on the shared moto server, or `None` (skip) without one.
fn bucket() -> Option<(Arc<MotoServer>, S3Storage, String)> {
    let server = MotoServer::shared()?;
    let name = format!(
        "cairn-e2e-{}-{}",
        std::process::id(),
        BUCKETS.fetch_add(1, Ordering::Relaxed)
    );
    let storage = server.storage_with_bucket(&name);
    Some((server, storage, format!("s3://{name}")))
}

#[derive(Clone, Default)]
struct CountAndSum {
    count: Option<ValueState<u64>>,
    sum: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, (u64, u64, u64)> for CountAndSum {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        self.sum = Some(ctx.value_state(ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, (u64, u64, u64)>) -> OpResult {
        let (c, s) = (self.count.as_ref().unwrap(), self.sum.as_ref().unwrap());
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        let m = s.value(ctx)?.unwrap_or(0) + e.value % 1000;
        c.update(ctx, &n)?;
        s.update(ctx, &m)?;
        ctx.collect((e.key, n, m));
        Ok(())
    }
}

fn generator(n: u64, rate: Option<u64>) -> GeneratorSource {
    let g = GeneratorSource::new(n, KEYS).seed(11).splits(4);
    match rate {
        Some(r) => g.rate(r),
        None => g,
    }
}

fn oracle(n: u64) -> BTreeMap<u64, (u64, u64)> {
    let g = generator(n, None);
    let mut m = BTreeMap::new();
    for i in 0..n {
        let e = g.event(i);
        let v = m.entry(e.key).or_insert((0, 0));
        v.0 += 1;
        v.1 += e.value % 1000;
    }
    m
}

/// The latest (count, sum) each key reached in `updates`.
fn final_per_key(updates: &[(u64, u64, u64)]) -> BTreeMap<u64, (u64, u64)> {
    let mut m = BTreeMap::new();
    for (k, c, s) in updates {
        let e = m.entry(*k).or_insert((0, 0));
        if *c >= e.0 {
            *e = (*c, *s);
        }
    }
    m
}

fn config(endpoint: &str, p: u32, extra: &[(&str, &str)]) -> Configuration {
    let mut c = Configuration::new();
    c.set("parallelism.default", &p.to_string()).unwrap();
    c.set("s3.endpoint", endpoint).unwrap();
    c.set("s3.access-key", "testing").unwrap();
    c.set("s3.secret-key", "testing").unwrap();
    c.set("s3.path.style.access", "true").unwrap();
    for (k, v) in extra {
        c.set(k, v).unwrap();
    }
    c
}

fn env(config: Configuration, restore: Option<&Path>, claim: ClaimMode) -> StreamEnv {
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        claim_mode: claim,
        ..Default::default()
    })
}

fn counting_job(env: &StreamEnv, source: GeneratorSource) -> Collected<(u64, u64, u64)> {
    let (sink, out) = CollectSink::new();
    env.source(source)
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .process(CountAndSum::default())
        .uid("counter")
        .sink(sink);
    out
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn savepoint(client: &JobClient, target: &str, then: AfterSavepoint) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(PathBuf::from(target)),
                format: SnapshotFormat::Native,
                then,
            },
            None,
        )
        .expect("savepoint accepted");
    match client.wait_operation(&op, DEADLINE) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

/// Checkpoint ids under `job_dir` that are complete (have `_metadata`).
fn complete_checkpoints(storage: &S3Storage, job_dir: &Path) -> Vec<u64> {
    let Ok(entries) = storage.list(job_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = entries
        .iter()
        .filter_map(|e| cairn::snapshot::layout::parse_checkpoint_dir_name(&e.name))
        .filter(|id| {
            storage
                .exists(&job_dir.join(format!("chk-{id}")).join("_metadata"))
                .unwrap()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn checkpoints_on_s3_are_retained_and_restore_exactly_once() {
    let Some((server, storage, root)) = bucket() else {
        return;
    };
    let chk = format!("{root}/checkpoints");
    let n = 40_000;
    let extra = [
        ("execution.checkpointing.interval", "50ms"),
        ("execution.checkpointing.dir", chk.as_str()),
        ("execution.checkpointing.num-retained", "2"),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION",
        ),
    ];
    // Run 1: checkpoints to S3, cancelled part-way.
    let env1 = env(config(server.endpoint(), 2, &extra), None, ClaimMode::NoClaim);
    let out1 = counting_job(&env1, generator(n, Some(10_000)));
    let job = env1.execute_async("s3 run 1").unwrap();
    let client = job.client();
    wait_until("three checkpoints completed", || {
        client.checkpoints().counts.completed >= 3
    });
    client.cancel().unwrap();
    assert!(job.wait().is_err());
    let job_dir = PathBuf::from(&chk).join(client.info().job_id);
    let retained = complete_checkpoints(&storage, &job_dir);
    assert_eq!(retained.len(), 2, "num-retained 2 on S3: {retained:?}");
    let latest = find_latest_checkpoint(&storage, &job_dir)
        .unwrap()
        .latest
        .expect("a latest checkpoint");
    let snapshot = load_snapshot(&storage, &latest.dir).unwrap();
    cairn::snapshot::verify_files(&storage, &snapshot.dir, &snapshot.metadata).unwrap();
    // Updates the checkpoint covers, per key, from run 1's output.
    let before = final_per_key(&out1.values());

    // Run 2: restore from the retained checkpoint on S3 at parallelism 3 and finish.
    let env2 = env(
        config(server.endpoint(), 3, &extra),
        Some(&latest.dir),
        ClaimMode::NoClaim,
    );
    let out2 = counting_job(&env2, generator(n, None));
    let result = env2.execute("s3 run 2").unwrap();
    assert!(result
        .checkpoints
        .iter()
        .all(|c| c.id > snapshot.metadata.checkpoint_id));
    let after = final_per_key(&out2.values());
    assert_eq!(after, oracle(n), "every key's final state equals the failure-free run");
    for (k, (c, _)) in &before {
        assert!(after[k].0 >= *c, "key {k} went back in time");
    }
}

#[test]
fn savepoints_on_s3_rescale_relocate_and_dispose() {
    let Some((server, storage, root)) = bucket() else {
        return;
    };
    let sp_root = format!("{root}/savepoints");
    let n = 30_000;
    // Run 1 at parallelism 2, stopped with a savepoint on S3.
    let env1 = env(config(server.endpoint(), 2, &[]), None, ClaimMode::NoClaim);
    let _out1 = counting_job(&env1, generator(n, Some(8_000)));
    let job = env1.execute_async("s3 savepoint run 1").unwrap();
    let client = job.client();
    wait_until("records flowed", || client.metrics().source_records >= 2_000);
    let sp = savepoint(&client, &sp_root, AfterSavepoint::Stop { drain: false });
    job.wait().unwrap();
    let sp_text = sp.to_string_lossy().into_owned();
    assert!(sp_text.starts_with(&format!("{sp_root}/savepoint-")), "{sp_text}");
    assert!(storage.exists(&sp.join("_metadata")).unwrap());

    // Relocate: copy every object of the savepoint to another prefix.
    let moved = PathBuf::from(format!("{root}/moved/sp"));
    copy_tree(&storage, &sp, &moved);

    // Run 2: restore the relocated savepoint at parallelism 3 and finish.
    let env2 = env(config(server.endpoint(), 3, &[]), Some(&moved), ClaimMode::NoClaim);
    let out2 = counting_job(&env2, generator(n, None));
    env2.execute("s3 savepoint run 2").unwrap();
    assert_eq!(final_per_key(&out2.values()), oracle(n));

    // Dispose of the original; the relocated copy stays.
    cairn::snapshot::dispose::dispose_savepoint(&storage, &sp).unwrap();
    assert!(!storage.exists(&sp).unwrap(), "disposed savepoint objects remain");
    assert!(storage.exists(&moved.join("_metadata")).unwrap());
}

/// What the `cairn` CLI does, over a job's REST API: savepoints to S3 over
/// TCP inside the configured savepoint directory (and refused outside it),
/// to any S3 location over the job's trusted socket, and disposal of an S3
/// savepoint through the job's own storage.
#[test]
fn savepoints_on_s3_through_the_rest_api() {
    let Some((server, storage, root)) = bucket() else {
        return;
    };
    let home = std::env::temp_dir().join(format!("cairn-s3-rest-home-{}", std::process::id()));
    std::env::set_var("CAIRN_HOME", &home);
    let sp_root = format!("{root}/savepoints");
    let extra = [
        ("execution.checkpointing.savepoint-dir", sp_root.as_str()),
        ("rest.port", "0"),
    ];
    let env1 = env(config(server.endpoint(), 2, &extra), None, ClaimMode::NoClaim);
    let _out = counting_job(&env1, generator(1 << 40, Some(4_000)));
    let job = env1.execute_async("s3 rest savepoints").unwrap();
    let jid = job.job_id().to_string();
    let tcp = HttpClient::new(job.rest_address().expect("REST served").to_string());
    let socket = HttpClient::unix(Registry::new(home.clone()).socket_path(&jid));
    let client = job.client();
    wait_until("records flowed", || client.metrics().source_records >= 1_000);

    let trigger = |http: &HttpClient, target: &str| {
        http.post(
            &format!("/jobs/{jid}/savepoints"),
            &json!({ "target-directory": target, "formatType": "NATIVE" }),
        )
        .unwrap()
    };
    let outside = format!("{root}/elsewhere");
    let refused = trigger(&tcp, &outside);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.error_message().contains(&outside),
        "{}",
        refused.error_message()
    );

    let completed = |http: &HttpClient, target: &str| -> PathBuf {
        let r = trigger(http, target);
        assert_eq!(r.status, 202, "{}", r.text());
        let tid = r.json()["request-id"].as_str().unwrap().to_string();
        let mut location = None;
        wait_until("the savepoint completed", || {
            let v = http.get(&format!("/jobs/{jid}/savepoints/{tid}")).unwrap().json();
            assert_ne!(v["status"]["id"], "FAILED", "{v}");
            location = v["operation"]["location"].as_str().map(PathBuf::from);
            v["status"]["id"] == "COMPLETED"
        });
        location.expect("a completed savepoint has a location")
    };
    let over_tcp = completed(&tcp, &format!("{sp_root}/manual"));
    let text = over_tcp.to_string_lossy().into_owned();
    assert!(text.starts_with(&format!("{sp_root}/manual/savepoint-")), "{text}");
    assert!(storage.exists(&over_tcp.join("_metadata")).unwrap());
    let over_socket = completed(&socket, &outside);
    assert!(over_socket.starts_with(&outside), "{}", over_socket.display());
    assert!(storage.exists(&over_socket.join("_metadata")).unwrap());

    // Disposal goes through the job's storage: the objects are gone.
    let r = tcp
        .post("/savepoint-disposal", &json!({ "savepoint-path": text }))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!storage.exists(&over_tcp).unwrap(), "disposed savepoint objects remain");
    assert!(storage.exists(&over_socket.join("_metadata")).unwrap());

    client.cancel().unwrap();
    let _ = job.wait();
    let _ = std::fs::remove_dir_all(&home);
}

fn copy_tree(storage: &S3Storage, from: &Path, to: &Path) {
    for e in storage.list(from).unwrap() {
        if e.is_dir {
            copy_tree(storage, &from.join(&e.name), &to.join(&e.name));
        } else {
            let bytes = storage.read(&from.join(&e.name)).unwrap();
            storage.write_atomic(&to.join(&e.name), &bytes).unwrap();
        }
    }
}

#[test]
fn claim_mode_on_s3_deletes_the_restored_checkpoint_once_subsumed() {
    let Some((server, storage, root)) = bucket() else {
        return;
    };
    let chk = format!("{root}/checkpoints");
    let extra = [
        ("execution.checkpointing.interval", "50ms"),
        ("execution.checkpointing.dir", chk.as_str()),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION",
        ),
    ];
    let env1 = env(config(server.endpoint(), 2, &extra), None, ClaimMode::NoClaim);
    let _o = counting_job(&env1, generator(u64::MAX / 4, Some(5_000)));
    let job = env1.execute_async("claim run 1").unwrap();
    let client = job.client();
    wait_until("a checkpoint completed", || client.checkpoints().counts.completed >= 1);
    client.cancel().unwrap();
    assert!(job.wait().is_err());
    let job_dir = PathBuf::from(&chk).join(client.info().job_id);
    let latest = find_latest_checkpoint(&storage, &job_dir).unwrap().latest.unwrap();

    let env2 = env(
        config(server.endpoint(), 2, &extra),
        Some(&latest.dir),
        ClaimMode::Claim,
    );
    let _o2 = counting_job(&env2, generator(u64::MAX / 4, Some(5_000)));
    let job2 = env2.execute_async("claim run 2").unwrap();
    let client2 = job2.client();
    wait_until("the claimed checkpoint was deleted", || {
        !storage.exists(&latest.dir.join("_metadata")).unwrap()
    });
    client2.cancel().unwrap();
    assert!(job2.wait().is_err());
}

#[test]
fn a_zombie_coordinator_is_fenced_out_of_an_s3_job_directory() {
    let Some((_server, storage, root)) = bucket() else {
        return;
    };
    let job_dir = PathBuf::from(format!("{root}/checkpoints/0123456789abcdef0123456789abcdef"));
    let old = Fence::acquire(&storage, &job_dir).unwrap();
    old.claim(&storage, &job_dir.join("chk-1")).unwrap();
    let new = Fence::acquire(&storage, &job_dir).unwrap();
    assert!(new.epoch() > old.epoch());
    let e = old.check(&storage, "completing checkpoint 1").unwrap_err().to_string();
    assert!(e.contains("newer coordinator"), "{e}");
    assert!(
        old.claim(&storage, &job_dir.join("chk-2")).is_err(),
        "the zombie cannot claim"
    );
    let next = new.next_free_id(&storage, 1).unwrap();
    assert_eq!(next, 2, "the new coordinator numbers above every claim");
    new.claim(&storage, &job_dir.join(format!("chk-{next}"))).unwrap();
}

#[test]
fn a_bad_s3_location_fails_the_start_naming_it() {
    // (A build without the `s3` feature names the feature: cairn-snapshot's
    // location tests.) A location naming no bucket is refused at once.
    let Some((server, _storage, _root)) = bucket() else {
        return;
    };
    let extra = [
        ("execution.checkpointing.interval", "1s"),
        ("execution.checkpointing.dir", "s3:///no-bucket"),
    ];
    let env = env(config(server.endpoint(), 1, &extra), None, ClaimMode::NoClaim);
    let _o = counting_job(&env, generator(10, None));
    let err = match env.execute("bad bucket") {
        Ok(_) => panic!("a job with an unusable checkpoint location must not run"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no bucket") && err.contains("s3:///no-bucket"), "{err}");
}
