//! LocalFileStorage behaviour (a conformance list any Storage should pass)
//! and FaultInjectingStorage semantics.

mod common;

use std::io::Write;

use cairn_snapshot::storage::{write_file, FaultInjectingStorage, FaultTiming, LocalFileStorage, OpKind, Storage};
use cairn_snapshot::SnapshotError;
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
