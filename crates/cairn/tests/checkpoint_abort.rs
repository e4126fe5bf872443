//! Aborted and unfinished checkpoints leave nothing behind: a job cancelled
//! while checkpoints are in flight (uploads still writing, acknowledgements
//! on their way) keeps only complete checkpoints in its retained directory,
//! and every file there is referenced by a retained checkpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::config::Configuration;
use cairn::coordinator::control::JobStatus;
use cairn::prelude::*;
use cairn::snapshot::layout::resolve_ref;
use cairn::snapshot::{load_snapshot, verify_files, LocalFileStorage};

const DEADLINE: Duration = Duration::from_secs(60);

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-abort-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, u64> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }
    fn process_element(&mut self, _e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, u64>) -> OpResult {
        let c = self.count.as_ref().unwrap();
        let n = c.value(ctx)?.unwrap_or(0) + 1;
        c.update(ctx, &n)?;
        ctx.collect(n);
        Ok(())
    }
}

/// Every file below `dir`, as paths relative to `base`.
fn files_below(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_below(&p, base, out);
        } else {
            out.insert(p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The retained directory holds only complete checkpoints (plus `shared/`,
/// `taskowned/` and the coordinator's `fence/`), and every file in it is
/// referenced by one of them.
fn assert_only_complete_checkpoints(job_dir: &Path, round: usize) {
    let storage = LocalFileStorage::new();
    let mut referenced = BTreeSet::new();
    let mut present = BTreeSet::new();
    files_below(job_dir, job_dir, &mut present);
    for e in std::fs::read_dir(job_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("chk-") {
            assert!(
                ["shared", "taskowned", "fence"].contains(&name.as_str()),
                "round {round}: unexpected entry {name} in {}",
                job_dir.display()
            );
            continue;
        }
        let chk = e.path();
        assert!(
            chk.join("_metadata").is_file(),
            "round {round}: {name} has no _metadata: a partial checkpoint was left behind ({:?})",
            std::fs::read_dir(&chk)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
        let snap = load_snapshot(&storage, &chk).unwrap();
        verify_files(&storage, &chk, &snap.metadata).unwrap();
        referenced.insert(format!("{name}/_metadata"));
        referenced.insert(format!("{name}/_claim"));
        for (_, _, f) in snap.metadata.files() {
            let abs = resolve_ref(&chk, &f.path).unwrap();
            let rel = abs.strip_prefix(job_dir).unwrap().to_string_lossy().replace('\\', "/");
            referenced.insert(rel);
        }
    }
    let stray: Vec<&String> = present
        .iter()
        .filter(|p| !referenced.contains(*p) && !p.starts_with("fence/"))
        .collect();
    assert!(
        stray.is_empty(),
        "round {round}: files no retained checkpoint references: {stray:?}"
    );
}

#[test]
fn cancelling_during_checkpoints_leaves_only_complete_checkpoints() {
    for round in 0..12 {
        let dir = temp_dir("cancel");
        let mut config = Configuration::new();
        config.set("parallelism.default", "2").unwrap();
        config.set("execution.checkpointing.interval", "20ms").unwrap();
        config.set("execution.checkpointing.num-retained", "2").unwrap();
        config
            .set(
                "execution.checkpointing.externalized-checkpoint-retention",
                "RETAIN_ON_CANCELLATION",
            )
            .unwrap();
        config
            .set("execution.checkpointing.dir", dir.join("checkpoints").to_str().unwrap())
            .unwrap();
        let env = StreamEnv::with_config(config);
        env.source(GeneratorSource::new(1 << 40, 1000).seed(3).splits(4).rate(20_000))
            .uid("events")
            .key_by(|e: &GeneratedEvent| e.key)
            .process(Count::default())
            .uid("count")
            .sink(FileSink::new(dir.join("out"), |n: &u64| n.to_string()))
            .uid("sink");
        let handle = env.execute_async("cancel during checkpoints").unwrap();
        let client = handle.client();
        // Cancel at a different point of the checkpoint cycle each round.
        let started = Instant::now();
        while client.checkpoints().counts.completed < 1 {
            assert!(started.elapsed() < DEADLINE, "round {round}: no checkpoint completed");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(100 + (round as u64 * 37) % 800));
        client.cancel().unwrap();
        assert!(handle.wait().is_err(), "a cancelled job ends with Cancelled");
        assert_eq!(client.info().status, JobStatus::Cancelled);
        let job_dir = dir.join("checkpoints").join(client.info().job_id);
        assert_only_complete_checkpoints(&job_dir, round);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
