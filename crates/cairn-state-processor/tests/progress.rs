//! Long offline work reports its progress (what `cairn savepoint rewrite`,
//! `reseal`, `inspect`, `cairn fsck` and `cairn gc` draw as a bar): units
//! done never exceed the total, never go back, and end at the total; bytes
//! are the bytes actually handled.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn::prelude::*;
use cairn::state::KeyedStateAccess;
use cairn_state_processor::tools::{self, Rewrite};
use cairn_state_processor::{
    KeyedStateBootstrapFunction, OperatorTransformation, Options, Progress, ProgressFn, SavepointWriter,
};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-spa-progress-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One `count` value per key.
#[derive(Clone, Default)]
struct Counts {
    count: Option<ValueState<u64>>,
}

impl KeyedStateBootstrapFunction<u64, u64> for Counts {
    fn open(&mut self, state: &mut KeyedStateAccess) -> Result<(), cairn::state::StateError> {
        self.count = Some(state.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, v: u64, ctx: &mut cairn_state_processor::BootstrapContext<'_, u64>) -> OpResult {
        self.count.as_ref().ok_or("not opened")?.update(ctx, &(v * 2))?;
        Ok(())
    }
}

/// A bootstrapped savepoint of 5,000 keys at max parallelism 64, parallelism 4.
fn savepoint(dir: &Path) -> PathBuf {
    let t = OperatorTransformation::bootstrap_with((0..5_000u64).collect::<Vec<_>>())
        .set_parallelism(4)
        .key_by(|k: &u64| *k)
        .transform(Counts::default());
    SavepointWriter::new(64).with_operator("counts", t).write(dir).unwrap()
}

/// Records every report.
fn recorder() -> (ProgressFn, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (Arc::new(move |p| s.lock().unwrap().push(p)), seen)
}

/// Reports of `phase`, checked for order; returns the last one.
fn last_of(seen: &[Progress], phase: &str) -> Progress {
    let of: Vec<&Progress> = seen.iter().filter(|p| p.phase == phase).collect();
    assert!(!of.is_empty(), "no '{phase}' progress in {seen:?}");
    let mut done = 0;
    for p in &of {
        assert!(p.done >= done, "progress went back: {of:?}");
        assert!(p.done <= p.total, "more done than the total: {p:?}");
        done = p.done;
    }
    *of[of.len() - 1]
}

fn files_of(dir: &Path) -> (u64, u64) {
    let snap = cairn::snapshot::load_snapshot(&cairn::snapshot::LocalFileStorage::new(), dir).unwrap();
    let files: Vec<u64> = snap.metadata.files().map(|(_, _, f)| f.size).collect();
    (files.len() as u64, files.iter().sum())
}

#[test]
fn fsck_and_reseal_count_every_file_and_its_bytes() {
    let dir = temp_dir("fsck");
    let sp = savepoint(&dir.join("sp"));
    let (files, bytes) = files_of(&sp);
    assert!(files >= 4, "one keyed file per subtask at least");

    let (f, seen) = recorder();
    let report = tools::fsck_with(&sp, Some(&f)).unwrap();
    assert_eq!(report.exit_code(), 0);
    let last = last_of(&seen.lock().unwrap(), "verifying");
    assert_eq!(
        (last.unit, last.done, last.total, last.bytes),
        ("files", files, files, bytes)
    );

    let (f, seen) = recorder();
    assert!(tools::reseal_with(&sp, Some(&f)).unwrap().is_empty());
    let last = last_of(&seen.lock().unwrap(), "resealing");
    assert_eq!((last.done, last.total, last.bytes), (files, files, bytes));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_and_rewrite_count_key_groups() {
    let dir = temp_dir("rewrite");
    let sp = savepoint(&dir.join("sp"));

    let (f, seen) = recorder();
    let options = Options {
        progress: Some(f),
        ..Options::default()
    };
    let report = tools::inspect(&sp, options).unwrap();
    let last = last_of(&seen.lock().unwrap(), "reading");
    assert_eq!((last.unit, last.done, last.total), ("key groups", 64, 64));
    let counted: u64 = report.stats.iter().map(|s| s.bytes).sum();
    assert_eq!(last.bytes, counted, "bytes are the state's bytes inspect counted");

    // Rehashing reads the 64 old key groups and writes the 256 new ones.
    let (f, seen) = recorder();
    let options = Options {
        progress: Some(f),
        memory_bytes: 1 << 20,
        ..Options::default()
    };
    let changes = Rewrite {
        max_parallelism: Some(256),
        ..Default::default()
    };
    let out = tools::rewrite(&sp, &dir.join("out"), &changes, options).unwrap();
    let last = last_of(&seen.lock().unwrap(), "rewriting");
    assert_eq!((last.done, last.total), (64 + 256, 64 + 256));
    let (_, written) = files_of(&out.dir);
    assert!(
        last.bytes > 0 && last.bytes <= written,
        "{last:?} vs {written} bytes written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gc_verifies_then_lists_what_it_would_delete() {
    let dir = temp_dir("gc");
    let job = dir.join("0123456789abcdef0123456789abcdef");
    let chk = savepoint(&job.join("chk-1"));
    let (files, _) = files_of(&chk);
    std::fs::create_dir_all(job.join("shared")).unwrap();
    std::fs::write(job.join("shared").join("orphan.sst"), b"no checkpoint references this").unwrap();

    let (f, seen) = recorder();
    let r = tools::gc_with(&job, true, false, Some(&f)).unwrap();
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    let seen = seen.lock().unwrap();
    let verified = last_of(&seen, "verifying");
    assert_eq!((verified.done, verified.total), (files, files));
    let listed = last_of(&seen, "listing");
    assert_eq!((listed.done, listed.total, listed.bytes), (1, 1, 29));
    assert!(
        job.join("shared").join("orphan.sst").exists(),
        "a dry run deletes nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
