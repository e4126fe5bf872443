//! The behaviour every Storage must have (local files, the in-memory store,
//! the scheme router), put-if-absent under racing writers, and
//! FaultInjectingStorage semantics.

mod common;

use std::io::Write;

use cairn_snapshot::storage::{write_file, FaultInjectingStorage, FaultTiming, LocalFileStorage, OpKind, Storage};
use cairn_snapshot::{InMemoryStorage, SnapshotError, StorageRouter};
use common::TempDir;

fn conformance(s: &dyn Storage, root: &std::path::Path) {
    let d = root.join("a/b");
    s.create_dir_all(&d).unwrap();
    assert!(s.exists(&d).unwrap());
    let f = d.join("f.bin");
    let mut w = s.create(&f).unwrap();
    w.write_all(b"hello world").unwrap();
    assert_eq!(w.finish().unwrap(), 11);
    assert_eq!(s.read(&f).unwrap(), b"hello world");
    assert_eq!(s.size(&f).unwrap(), 11);
    assert_eq!(s.read_range(&f, 6, 5).unwrap(), b"world");
    assert!(s.read_range(&f, 6, 6).is_err());
    assert!(s.read_range(&f, u64::MAX, 2).is_err());
    assert_eq!(write_file(s, &d.join("g"), b"x").unwrap(), 1);
    let names: Vec<_> = s.list(&d).unwrap().into_iter().map(|e| (e.name, e.is_dir)).collect();
    assert_eq!(names, vec![("f.bin".to_string(), false), ("g".to_string(), false)]);
    assert!(s.list(&root.join("a")).unwrap()[0].is_dir);
    // missing things
    assert!(matches!(
        s.read(&d.join("nope")),
        Err(SnapshotError::MissingFile { .. })
    ));
    assert!(matches!(
        s.list(&d.join("nope")),
        Err(SnapshotError::MissingFile { .. })
    ));
    assert!(!s.exists(&d.join("nope")).unwrap());
    assert!(!s.exists(&f.join("under-a-file")).unwrap());
    // atomic publish replaces content and leaves no temporary files
    s.write_atomic(&d.join("m"), b"one").unwrap();
    s.write_atomic(&d.join("m"), b"two").unwrap();
    assert_eq!(s.read(&d.join("m")).unwrap(), b"two");
    assert_eq!(s.list(&d).unwrap().len(), 3);
    // put-if-absent publishes once and never overwrites
    assert!(s.put_if_absent(&d.join("fence"), b"attempt-1").unwrap());
    assert!(!s.put_if_absent(&d.join("fence"), b"attempt-2").unwrap());
    assert_eq!(s.read(&d.join("fence")).unwrap(), b"attempt-1");
    assert!(!s.put_if_absent(&d.join("m"), b"three").unwrap());
    assert_eq!(s.read(&d.join("m")).unwrap(), b"two");
    assert_eq!(s.list(&d).unwrap().len(), 4, "no temporary files are left behind");
    s.delete_file(&d.join("fence")).unwrap();
    // deletes are idempotent
    s.delete_file(&f).unwrap();
    s.delete_file(&f).unwrap();
    assert!(!s.exists(&f).unwrap());
    s.delete_dir_all(&root.join("a")).unwrap();
    s.delete_dir_all(&root.join("a")).unwrap();
    assert!(!s.exists(&root.join("a")).unwrap());
}

#[test]
fn local_storage_conformance() {
    let tmp = TempDir::new("storage");
    conformance(&LocalFileStorage::new(), tmp.path());
}

#[test]
fn in_memory_storage_conformance() {
    conformance(&InMemoryStorage::new(), std::path::Path::new("/mem"));
}

#[test]
fn router_conformance_for_plain_paths_and_file_uris() {
    let tmp = TempDir::new("storage-router");
    let router = StorageRouter::local_only();
    conformance(&router, tmp.path());
    let uri = std::path::PathBuf::from(format!("file://{}", tmp.path().display()));
    conformance(&router, &uri);
}

#[test]
fn router_conformance_for_a_registered_scheme() {
    let router = StorageRouter::local_only().with_scheme("mem", std::sync::Arc::new(InMemoryStorage::new()));
    conformance(&router, std::path::Path::new("mem://bucket/prefix"));
}

/// Racing writers of one fence: exactly one wins, every time.
fn put_if_absent_race(s: &(dyn Storage + Sync), dir: &std::path::Path) {
    for round in 0..50 {
        let path = dir.join(format!("fence-{round}"));
        let winners: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let path = path.clone();
                    scope.spawn(move || s.put_if_absent(&path, format!("writer {t}").as_bytes()).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "round {round}: {winners:?}");
        let content = String::from_utf8(s.read(&path).unwrap()).unwrap();
        let winner = winners.iter().position(|w| *w).unwrap();
        assert_eq!(
            content,
            format!("writer {winner}"),
            "the winner's content is what was published"
        );
    }
}

#[test]
fn put_if_absent_has_exactly_one_winner() {
    let tmp = TempDir::new("storage-race");
    put_if_absent_race(&LocalFileStorage::new(), tmp.path());
    put_if_absent_race(&InMemoryStorage::new(), std::path::Path::new("/race"));
}

#[test]
fn fault_wrapper_without_faults_is_transparent() {
    let tmp = TempDir::new("storage-fi");
    let s = FaultInjectingStorage::new(LocalFileStorage::new());
    conformance(&s, tmp.path());
    assert!(s.count(OpKind::WriteAtomic) == 2 && !s.log().is_empty());
}

#[test]
fn faults_before_and_after() {
    let tmp = TempDir::new("storage-fault");
    let s = FaultInjectingStorage::new(LocalFileStorage::new());
    let p = tmp.path().join("m");
    s.fail_nth(OpKind::WriteAtomic, 2, FaultTiming::Before);
    s.write_atomic(&p, b"1").unwrap();
    let e = s.write_atomic(&p, b"2").unwrap_err();
    assert!(!e.is_user_error() && e.to_string().contains("injected"));
    assert_eq!(std::fs::read(&p).unwrap(), b"1", "Before: not performed");
    s.fail_nth(OpKind::WriteAtomic, 1, FaultTiming::After);
    assert!(s.write_atomic(&p, b"3").is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"3", "After: performed");
    s.write_atomic(&p, b"4").unwrap();

    s.fail_nth(OpKind::Finish, 1, FaultTiming::Before);
    let mut w = s.create(&tmp.path().join("f")).unwrap();
    w.write_all(b"x").unwrap();
    assert!(w.finish().is_err());
    s.fail_nth(OpKind::Read, 1, FaultTiming::Before);
    s.clear_faults();
    assert_eq!(s.read(&p).unwrap(), b"4");
}
