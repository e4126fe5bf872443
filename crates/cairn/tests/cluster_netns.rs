//! A job on several hosts: the coordinator and the workers are separate
//! processes of one job binary (examples/cluster_keyed_count.rs), each in a
//! network namespace of its own (tests/netns), talking gRPC for control and
//! framed TCP for records across veth links. Checkpoints go to an
//! S3-compatible server (moto, on a host of the test network) when the
//! build has the `s3` feature and moto is installed, else to a shared
//! directory. Each test checks what a user cares about: the output equals
//! the single-process output, a killed worker or a cut link costs no record
//! and duplicates none, and rescaling by savepoint keeps every key's state.

mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netns::{wait_until, Net, Process};

const RPC_PORT: &str = "6123";

/// Where `cargo test` built a binary of this workspace (`examples/<name>` or `<name>`).
fn built(relative: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(relative);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --workspace` builds it (or build it with cargo build)",
        path.display()
    );
    path
}

fn job_binary() -> PathBuf {
    built("examples/cluster_keyed_count")
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "cairn-cluster-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn s(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // Job processes a test started through the CLI are in the registry.
        for pid in registered_pids(&self.path("home")) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn registered_pids(home: &Path) -> Vec<u32> {
    std::fs::read_dir(home.join("jobs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|json| {
            // `"pid": 1234,` in the registry entry.
            let rest = json.split("\"pid\"").nth(1)?;
            rest.trim_start_matches([':', ' '])
                .split([',', '\n', '}'])
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

/// Committed `key,count,sum` lines of the file sink: the counts per key.
fn committed(out: &Path) -> BTreeMap<u64, Vec<u64>> {
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap_or_default().lines() {
            let mut f = line.split(',');
            let (k, n) = (f.next().unwrap(), f.next().unwrap());
            per_key.entry(k.parse().unwrap()).or_default().push(n.parse().unwrap());
        }
    }
    for v in per_key.values_mut() {
        v.sort_unstable();
    }
    per_key
}

/// Each key's final totals: (count, sum) on its line with the highest
/// count. Deterministic, unlike the sums along the way (two sources
/// interleave a key's events differently on every run).
fn final_totals(out: &Path) -> BTreeMap<u64, (u64, u64)> {
    let mut totals: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap_or_default().lines() {
            let f: Vec<u64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            let t = totals.entry(f[0]).or_default();
            if f[1] > t.0 {
                *t = (f[1], f[2]);
            }
        }
    }
    totals
}

/// Every key's counts are exactly 1..=n: nothing lost, nothing twice.
#[track_caller]
fn assert_exactly_once(per_key: &BTreeMap<u64, Vec<u64>>, keys: u64, each: Option<u64>) {
    assert_eq!(per_key.len() as u64, keys, "every key has output");
    for (k, counts) in per_key {
        let want: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, &want, "key {k}: counts are not exactly 1..=n");
        if let Some(n) = each {
            assert_eq!(counts.len() as u64, n, "key {k}: not every event was counted");
        }
    }
}

/// Where checkpoints go: an S3 bucket on a moto server running on host
/// `host` of `net` (with the `s3` feature and moto installed), else a
/// shared directory.
struct Checkpoints {
    keys: Vec<String>,
    on_s3: bool,
    _moto: Option<Process>,
}

fn checkpoints(net: &Net, host: usize, dir: &Dir) -> Checkpoints {
    let moto = std::env::var("CAIRN_MOTO_SERVER").ok().filter(|_| cfg!(feature = "s3"));
    if std::env::var("CAIRN_REQUIRE_S3").as_deref() == Ok("1") && cfg!(feature = "s3") {
        assert!(moto.is_some(), "CAIRN_REQUIRE_S3=1 but CAIRN_MOTO_SERVER is not set");
    }
    let Some(moto) = moto else {
        eprintln!("checkpoints in a shared directory (no S3 test server in this build)");
        return Checkpoints {
            keys: vec![
                format!("execution.checkpointing.dir={}", dir.s("checkpoints")),
                format!("execution.checkpointing.savepoint-dir={}", dir.s("savepoints")),
            ],
            on_s3: false,
            _moto: None,
        };
    };
    let ip = net.hosts[host].ip.clone();
    let server = net.spawn(
        host,
        Path::new(&moto),
        &["-H".into(), ip.clone(), "-p".into(), "5000".into()],
        &dir.path("moto.log"),
        &[],
    );
    // Create the bucket from inside the test network (moto takes an
    // unsigned PUT as CreateBucket), with moto's own Python.
    let python = moto_python(Path::new(&moto));
    let script = format!(
        "import time, urllib.request\n\
         for _ in range(300):\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen(urllib.request.Request('http://{ip}:5000/cairn', method='PUT'), timeout=2)\n\
         \x20       break\n\
         \x20   except Exception:\n\
         \x20       time.sleep(0.2)\n\
         else:\n\
         \x20   raise SystemExit('moto did not answer')\n"
    );
    let ok = Command::new("ip")
        .args(["netns", "exec", &net.hosts[host].ns])
        .arg(&python)
        .args(["-c", &script])
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot create the bucket on moto in the test network");
    Checkpoints {
        keys: vec![
            "execution.checkpointing.dir=s3://cairn/checkpoints".into(),
            "execution.checkpointing.savepoint-dir=s3://cairn/savepoints".into(),
            format!("s3.endpoint=http://{ip}:5000"),
            "s3.access-key=testing".into(),
            "s3.secret-key=testing".into(),
            "s3.path.style.access=true".into(),
        ],
        on_s3: true,
        _moto: Some(server),
    }
}

/// The Python that runs moto: the launcher's `#!` interpreter (`.ci/services/moto.sh`
/// writes a launcher script), else the `python` beside `moto_server` in its venv.
fn moto_python(moto: &Path) -> PathBuf {
    let first = std::fs::read_to_string(moto)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_default();
    match first.strip_prefix("#!") {
        Some(interpreter) if !interpreter.contains(' ') => PathBuf::from(interpreter.trim()),
        _ => moto.with_file_name("python"),
    }
}

/// Startup flags: `-D` for each key.
fn flags(keys: &[String]) -> Vec<String> {
    keys.iter().flat_map(|k| ["-D".to_string(), k.clone()]).collect()
}

struct Cluster {
    net: Net,
    dir: Dir,
    checkpoints: Checkpoints,
    coordinator: Option<Process>,
    workers: Vec<Option<Process>>,
    /// -D keys every process gets.
    common: Vec<String>,
    job_args: Vec<String>,
}

impl Cluster {
    /// Host 0 is the coordinator, hosts 1..=workers the workers, the last the S3 server.
    fn new(tag: &str, workers: usize, keys: &[&str], job_args: &[String]) -> Option<Cluster> {
        if !netns::available() {
            return None;
        }
        let net = Net::new(workers + 2);
        let dir = Dir::new(tag);
        let checkpoints = checkpoints(&net, workers + 1, &dir);
        let mut common: Vec<String> = vec![
            "heartbeat.interval=300ms".into(),
            "execution.checkpointing.interval=400ms".into(),
            "restart-strategy.type=fixed-delay".into(),
            "restart-strategy.fixed-delay.attempts=20".into(),
            "restart-strategy.fixed-delay.delay=300ms".into(),
            "slot.request.timeout=120s".into(),
        ];
        common.extend(checkpoints.keys.iter().cloned());
        common.extend(keys.iter().map(|k| k.to_string()));
        Some(Cluster {
            net,
            dir,
            checkpoints,
            coordinator: None,
            workers: (0..workers).map(|_| None).collect(),
            common,
            job_args: job_args.to_vec(),
        })
    }

    fn coordinator_args(&self, p: u32) -> Vec<String> {
        let mut args = vec!["--mode".into(), "coordinator".into(), "-p".into(), p.to_string()];
        let mut keys = self.common.clone();
        keys.push(format!("jobmanager.rpc.port={RPC_PORT}"));
        keys.push("rest.port=0".into());
        args.extend(flags(&keys));
        args.push("--".into());
        args.extend(self.job_args.iter().cloned());
        args
    }

    fn start_coordinator(&mut self, p: u32) {
        let args = self.coordinator_args(p);
        let home = self.dir.s("home");
        self.coordinator = Some(self.net.spawn(
            0,
            &job_binary(),
            &args,
            &self.dir.path("coordinator.log"),
            &[("CAIRN_HOME", &home)],
        ));
    }

    fn start_worker(&mut self, i: usize) {
        let mut args = vec![
            "--mode".into(),
            "worker".into(),
            "--coordinator".into(),
            format!("{}:{RPC_PORT}", self.net.hosts[0].ip),
        ];
        args.extend(flags(&self.common));
        args.push("--".into());
        args.extend(self.job_args.iter().cloned());
        let log = self.dir.path(&format!("worker-{i}.log"));
        self.workers[i] = Some(self.net.spawn(i + 1, &job_binary(), &args, &log, &[]));
    }

    fn coordinator_log(&self) -> String {
        self.coordinator.as_ref().map(Process::output).unwrap_or_default()
    }

    fn worker_log(&self, i: usize) -> String {
        self.workers[i].as_ref().map(Process::output).unwrap_or_default()
    }

    /// Wait for the coordinator to exit successfully (the bounded job finished).
    fn wait_finished(&mut self, timeout: Duration) {
        let c = self.coordinator.as_mut().unwrap();
        wait_until("the job to finish", timeout, || c.exited().is_some());
        let status = c.exited().unwrap();
        assert!(
            status.success(),
            "the coordinator failed ({status}):\n{}",
            self.coordinator_log()
        );
    }

    /// The index of a worker running tasks of attempt 0.
    fn busy_worker(&self) -> usize {
        (0..self.workers.len())
            .find(|i| self.worker_log(*i).contains("attempt 0 runs"))
            .unwrap_or_else(|| panic!("no worker runs tasks:\n{}", self.coordinator_log()))
    }

    fn out(&self) -> PathBuf {
        self.dir.path("out")
    }
}

fn job_args(dir: &Dir, count: u64, keys: u64, rate: u64) -> Vec<String> {
    vec![dir.s("out"), count.to_string(), keys.to_string(), rate.to_string()]
}

/// The same keyed job on one process and on a coordinator with two
/// workers on other hosts gives the same output, exactly once; records
/// crossed the hosts; checkpoints went to the object store.
#[test]
fn a_keyed_job_on_two_workers_equals_the_single_process_run() {
    let (count, keys) = (30_000, 40);
    let tag = Dir::new("args");
    let args = job_args(&tag, count, keys, 0);
    let Some(mut c) = Cluster::new("equal", 2, &["heartbeat.timeout=20s"], &[]) else {
        return;
    };
    c.job_args = job_args(&c.dir, count, keys, 0);
    c.start_coordinator(2);
    c.start_worker(0);
    c.start_worker(1);
    c.wait_finished(Duration::from_secs(300));
    let log = c.coordinator_log();
    assert!(
        log.contains("Deployed attempt 0 (4 tasks) to worker-1 (slots [0]), worker-2 (slots [1])"),
        "{log}"
    );
    assert!(log.contains("checkpoint 1 completed"), "{log}");
    if c.checkpoints.on_s3 {
        assert!(
            log.contains("path=s3://cairn/checkpoints/"),
            "checkpoints are on the object store:\n{log}"
        );
    }
    for i in 0..2 {
        let w = c.worker_log(i);
        let sent: u64 = w
            .lines()
            .find_map(|l| l.split(" sent ").nth(1)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("worker {i} did not report what it sent:\n{w}"));
        assert!(sent > 0, "records crossed from worker {i} to the other host:\n{w}");
    }
    let distributed = final_totals(&c.out());
    assert_exactly_once(&committed(&c.out()), keys, Some(count / keys));

    // The same job in one process.
    let single_out = tag.path("out");
    let mut local = vec!["-p".to_string(), "2".into()];
    local.extend(flags(&[
        "execution.checkpointing.interval=400ms".into(),
        format!("execution.checkpointing.dir={}", tag.s("checkpoints")),
        "rest.port=0".into(),
    ]));
    local.push("--".into());
    local.extend(args);
    let status = Command::new(job_binary())
        .args(&local)
        .env("CAIRN_HOME", tag.path("home"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_exactly_once(&committed(&single_out), keys, Some(count / keys));
    let single = final_totals(&single_out);
    assert_eq!(distributed, single, "every key's totals equal the single-process run's");
}

/// SIGKILL of a worker that runs tasks: the coordinator notices at once
/// (its session breaks), the job restarts from its latest checkpoint on the
/// remaining workers (one was spare), and the file output is exactly once.
#[test]
fn a_killed_worker_fails_over_from_the_latest_checkpoint_exactly_once() {
    let (count, keys) = (40_000, 25);
    let Some(mut c) = Cluster::new("kill", 3, &["heartbeat.timeout=20s"], &[]) else {
        return;
    };
    c.job_args = job_args(&c.dir, count, keys, 2_000);
    c.start_coordinator(2);
    for i in 0..3 {
        c.start_worker(i);
        // In order, so that the first two run the tasks and the third is spare.
        wait_until("the worker to register", Duration::from_secs(60), || {
            c.coordinator_log().contains(&format!("Worker worker-{} ", i + 1))
        });
    }
    wait_until("a completed checkpoint", Duration::from_secs(120), || {
        c.coordinator_log().contains("checkpoint 2 completed")
    });
    let victim = c.busy_worker();
    c.workers[victim].as_mut().unwrap().kill();
    c.wait_finished(Duration::from_secs(300));
    let log = c.coordinator_log();
    assert!(
        log.contains("is lost: its session broke") || log.contains("is lost: its session ended"),
        "{log}"
    );
    assert!(log.contains("restored the job from a retained checkpoint"), "{log}");
    assert!(log.contains("Deployed attempt 1"), "{log}");
    assert_exactly_once(&committed(&c.out()), keys, Some(count / keys));
}

/// `persisted_data_bytes` of the coordinator's completed unaligned checkpoints.
fn unaligned_persisted_bytes(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("checkpoint ") && l.contains(" completed") && l.contains("unaligned=true"))
        .filter_map(|l| l.split("persisted_data_bytes=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// Unaligned checkpoints across hosts: a slow keyed operator keeps records
/// queued on the channels from the other worker, the barriers overtake them
/// (announced on the priority lane over the data connection) and the
/// checkpoints store them as channel state; a SIGKILL of a worker then
/// restores that state on the remaining workers, and the output is still
/// exactly once.
#[test]
fn unaligned_checkpoints_across_workers_store_in_flight_records_and_fail_over_exactly_once() {
    let (count, keys) = (16_000, 20);
    let Some(mut c) = Cluster::new(
        "unaligned",
        3,
        &[
            "heartbeat.timeout=20s",
            "execution.checkpointing.unaligned.enabled=true",
            // Small channels: a few batches queue in front of the slow operator.
            "cairn.runtime.batch-size=16",
        ],
        &[],
    ) else {
        return;
    };
    c.job_args = job_args(&c.dir, count, keys, 0);
    // 400 µs per event on the keyed operator: the unthrottled sources run ahead of it.
    c.job_args.push("400".into());
    c.start_coordinator(2);
    for i in 0..3 {
        c.start_worker(i);
        wait_until("the worker to register", Duration::from_secs(60), || {
            c.coordinator_log().contains(&format!("Worker worker-{} ", i + 1))
        });
    }
    wait_until(
        "an unaligned checkpoint with records in flight",
        Duration::from_secs(180),
        || unaligned_persisted_bytes(&c.coordinator_log()).iter().any(|b| *b > 0),
    );
    let victim = c.busy_worker();
    c.workers[victim].as_mut().unwrap().kill();
    c.wait_finished(Duration::from_secs(400));
    let log = c.coordinator_log();
    eprintln!(
        "channel state of the unaligned checkpoints (bytes): {:?}",
        unaligned_persisted_bytes(&log)
    );
    assert!(log.contains("restored the job from a retained checkpoint"), "{log}");
    assert!(log.contains("Deployed attempt 1"), "{log}");
    assert_exactly_once(&committed(&c.out()), keys, Some(count / keys));
}

/// A link cut for a moment: the job stalls and goes on over the same
/// connections (TCP retransmits; heartbeats are well within their timeout),
/// without a restart, exactly once.
#[test]
fn a_short_link_outage_stalls_and_recovers_without_a_restart() {
    let (count, keys) = (30_000, 20);
    let Some(mut c) = Cluster::new("blip", 2, &["heartbeat.timeout=60s"], &[]) else {
        return;
    };
    c.job_args = job_args(&c.dir, count, keys, 1_500);
    c.start_coordinator(2);
    c.start_worker(0);
    c.start_worker(1);
    wait_until("a completed checkpoint", Duration::from_secs(120), || {
        c.coordinator_log().contains("checkpoint 2 completed")
    });
    let victim = c.busy_worker();
    c.net.link_down(victim + 1);
    std::thread::sleep(Duration::from_secs(2));
    c.net.link_up(victim + 1);
    c.wait_finished(Duration::from_secs(300));
    let log = c.coordinator_log();
    assert!(
        !log.contains("job failed, restarting"),
        "no failover was needed:\n{log}"
    );
    assert_exactly_once(&committed(&c.out()), keys, Some(count / keys));
}

/// A link cut for longer than heartbeat.timeout: the coordinator declares
/// the worker lost and fails over to the spare; the cut-off worker cancels
/// its tasks (no zombie commits) and, when the link is back, registers again.
#[test]
fn a_long_link_outage_fails_over_to_the_remaining_workers() {
    let (count, keys) = (40_000, 20);
    let Some(mut c) = Cluster::new("cut", 3, &["heartbeat.timeout=3s"], &[]) else {
        return;
    };
    c.job_args = job_args(&c.dir, count, keys, 1_500);
    c.start_coordinator(2);
    for i in 0..3 {
        c.start_worker(i);
        wait_until("the worker to register", Duration::from_secs(60), || {
            c.coordinator_log().contains(&format!("Worker worker-{} ", i + 1))
        });
    }
    wait_until("a completed checkpoint", Duration::from_secs(120), || {
        c.coordinator_log().contains("checkpoint 2 completed")
    });
    let victim = c.busy_worker();
    c.net.link_down(victim + 1);
    wait_until(
        "the cut-off worker to be declared lost",
        Duration::from_secs(120),
        || c.coordinator_log().contains("is lost: no heartbeat"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !c.worker_log(victim).contains("no heartbeat from the coordinator") {
        assert!(
            std::time::Instant::now() < deadline,
            "the cut-off worker did not cancel its tasks:\n{}",
            c.worker_log(victim)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.net.link_up(victim + 1);
    c.wait_finished(Duration::from_secs(300));
    let log = c.coordinator_log();
    assert!(log.contains("restored the job from a retained checkpoint"), "{log}");
    assert_exactly_once(&committed(&c.out()), keys, Some(count / keys));
}

/// Runs the `cairn` CLI on host `i` (where the coordinator runs: `cairn
/// rescale` starts the new coordinator there).
fn cli(c: &Cluster, host: usize, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.net.hosts[host].ns])
        .arg(built("cairn"))
        .args(args)
        .env("CAIRN_HOME", c.dir.path("home"))
        .env_remove("CAIRN_REST_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The job id on the line `cairn rescale` prints.
fn rescaled_to(out: &str) -> String {
    out.lines()
        .find(|l| l.contains(" rescaled to parallelism "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no rescale line in\n{out}"))
        .to_string()
}

/// The log of the coordinator `cairn rescale` started for job `jid`.
fn relaunched_log(c: &Cluster, jid: &str) -> String {
    std::fs::read_dir(c.dir.path("home/logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|l| l.contains(jid))
        .unwrap_or_default()
}

/// `cairn rescale` of a distributed job, 2 -> 4 -> 3 workers: each stops
/// the job with a savepoint on the object store and starts the coordinator
/// again at the new parallelism; the workers register with it. Every key's
/// counts go on from where they were, exactly once.
#[test]
fn rescaling_two_four_three_workers_by_savepoint_keeps_every_keys_state() {
    let keys = 24;
    let Some((mut c, jid)) = unbounded_on_two_workers("rescale", 4, keys, 300) else {
        return;
    };
    c.start_worker(2);
    c.start_worker(3);
    let mut previous = jid;
    for (p, workers) in [(4u32, 4usize), (3, 3)] {
        let (ok, out) = cli(
            &c,
            0,
            &["rescale", &previous[..8], "-p", &p.to_string(), "-t", "native"],
        );
        assert!(ok, "{out}\n--- coordinator:\n{}", c.coordinator_log());
        if c.checkpoints.on_s3 {
            assert!(out.contains("Path: s3://cairn/savepoints/"), "{out}");
        }
        let next = rescaled_to(&out);
        assert_eq!(registered_jid(&c, Some(&previous)), next);
        // The stop committed everything before its savepoint, exactly once;
        // what comes now is the rescaled job's.
        let before = committed(&c.out());
        wait_until("the rescaled job's deployment", Duration::from_secs(120), || {
            relaunched_log(&c, &next).contains("Deployed attempt 0")
        });
        let log = relaunched_log(&c, &next);
        let line = log.lines().find(|l| l.contains("Deployed attempt 0")).unwrap();
        assert_eq!(line.matches("(slots [").count(), workers, "{line}");
        assert_exactly_once(&before, keys, None);
        wait_until("counts continuing after the rescale", Duration::from_secs(120), || {
            let now = committed(&c.out());
            before
                .iter()
                .all(|(k, n)| now.get(k).is_some_and(|m| m.len() > n.len() + 2))
        });
        previous = next;
    }
    // Three workers run the job; the fourth is idle and can go.
    let idle = (0..4)
        .find(|i| {
            let log = c.worker_log(*i);
            let last = log.rfind(&format!("job {previous}")).unwrap_or(0);
            !log[last..].contains("runs")
        })
        .expect("an idle worker");
    c.workers[idle].as_mut().unwrap().kill();
    let (ok, out) = cli(&c, 0, &["cancel", &previous[..8]]);
    assert!(ok, "{out}");
    wait_until("the job to end", Duration::from_secs(60), || {
        !c.dir.path(&format!("home/jobs/{previous}.json")).exists()
    });
    let all = committed(&c.out());
    assert_exactly_once(&all, keys, None);
}

/// Live state queries of a job on two workers (`cairn state get`, through
/// the coordinator's REST API): the worker running the subtask that owns
/// the key answers, for keys of both subtasks; the value is the key's
/// running totals, never behind what the job already committed for it; an
/// unknown uid, state or malformed key is a clear error.
#[test]
fn live_state_queries_are_answered_by_the_worker_that_owns_the_key() {
    let keys = 8;
    let Some((c, jid)) = unbounded_on_two_workers("query", 2, keys, 200) else {
        return;
    };
    let mut subtasks = BTreeSet::new();
    for key in 0..keys {
        let before = committed(&c.out())[&key].len() as u64;
        let (ok, out) = cli(
            &c,
            0,
            &[
                "state",
                "get",
                &jid[..8],
                "running-totals",
                "totals",
                &key.to_string(),
                "--json",
            ],
        );
        assert!(
            ok,
            "{out}
--- coordinator:
{}",
            c.coordinator_log()
        );
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let count = answer["value"][0]
            .as_u64()
            .unwrap_or_else(|| panic!("a count: {answer}"));
        assert!(
            count >= before,
            "key {key}: live count {count}, committed {before} before: {answer}"
        );
        subtasks.insert(answer["subtask"].as_u64().unwrap());
    }
    assert_eq!(
        subtasks.len(),
        2,
        "keys of both workers' subtasks answered: {subtasks:?}"
    );
    for (args, expect) in [
        (vec!["nope", "totals", "1"], "no operator with uid 'nope'"),
        (vec!["running-totals", "nope", "1"], "no state queryable as 'nope'"),
        (vec!["events", "totals", "1"], "has no queryable state"),
        (vec!["running-totals", "totals", "\"a\""], "not a key of operator"),
    ] {
        let mut all = vec!["state", "get", &jid[..8]];
        all.extend(args.iter().copied());
        let (ok, out) = cli(&c, 0, &all);
        assert!(!ok && out.contains(expect), "{all:?}: expected '{expect}' in:\n{out}");
    }
    let (ok, out) = cli(&c, 0, &["cancel", &jid[..8]]);
    assert!(ok, "{out}");
}

/// An endless job at `rate` events per second per source subtask over
/// `keys` keys, parallelism 2 on the first two of `workers` hosts, once
/// every key has output; with its job id. `None` without network namespaces.
fn unbounded_on_two_workers(tag: &str, workers: usize, keys: u64, rate: u64) -> Option<(Cluster, String)> {
    let mut c = Cluster::new(tag, workers, &["heartbeat.timeout=20s"], &[])?;
    c.job_args = job_args(&c.dir, 1 << 40, keys, rate);
    c.start_coordinator(2);
    c.start_worker(0);
    c.start_worker(1);
    wait_until("output of every key", Duration::from_secs(120), || {
        committed(&c.out()).len() as u64 == keys
    });
    let jid = registered_jid(&c, None);
    Some((c, jid))
}

/// The job id of the one job registered, other than `not`.
fn registered_jid(c: &Cluster, not: Option<&str>) -> String {
    let mut found = String::new();
    wait_until("a registered job", Duration::from_secs(60), || {
        let ids: Vec<String> = std::fs::read_dir(c.dir.path("home/jobs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(String::from))
            .filter(|id| Some(id.as_str()) != not)
            .collect();
        match ids.as_slice() {
            [one] => {
                found = one.clone();
                true
            }
            _ => false,
        }
    });
    found
}
