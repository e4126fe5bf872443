//! S3Storage against a real S3-compatible server (moto): the behaviour every
//! Storage must have, conditional puts under racing writers, large objects
//! in parts, and a bucket/key layout that other tools can read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_snapshot::storage::write_file;
use cairn_snapshot::{SnapshotError, Storage};
use cairn_storage_s3::test_server::MotoServer;
use cairn_storage_s3::S3Storage;

static N: AtomicU64 = AtomicU64::new(0);

fn storage() -> Option<(std::sync::Arc<MotoServer>, S3Storage, PathBuf)> {
    let server = MotoServer::shared()?;
    let bucket = format!(
        "conformance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let s = server.storage_with_bucket(&bucket);
    Some((server, s, PathBuf::from(format!("s3://{bucket}/prefix"))))
}

#[test]
fn s3_storage_behaves_like_every_storage() {
    let Some((_server, s, root)) = storage() else { return };
    let d = root.join("a/b");
    s.create_dir_all(&d).unwrap();
    let f = d.join("f.bin");
    let mut w = s.create(&f).unwrap();
    w.write_all(b"hello world").unwrap();
    assert_eq!(w.finish().unwrap(), 11);
    assert!(s.exists(&d).unwrap(), "a directory with an object below it exists");
    assert_eq!(s.read(&f).unwrap(), b"hello world");
    assert_eq!(s.size(&f).unwrap(), 11);
    assert_eq!(s.read_range(&f, 6, 5).unwrap(), b"world");
    assert!(s.read_range(&f, 6, 6).is_err());
    assert!(s.read_range(&f, u64::MAX, 2).is_err());
    assert_eq!(write_file(&s, &d.join("g"), b"x").unwrap(), 1);
    let names: Vec<_> = s.list(&d).unwrap().into_iter().map(|e| (e.name, e.is_dir)).collect();
    assert_eq!(names, vec![("f.bin".to_string(), false), ("g".to_string(), false)]);
    assert!(s.list(&root.join("a")).unwrap()[0].is_dir);
    assert!(matches!(
        s.read(&d.join("nope")),
        Err(SnapshotError::MissingFile { .. })
    ));
    assert!(matches!(
        s.list(&d.join("nope")),
        Err(SnapshotError::MissingFile { .. })
    ));
    assert!(!s.exists(&d.join("nope")).unwrap());
    s.write_atomic(&d.join("m"), b"one").unwrap();
    s.write_atomic(&d.join("m"), b"two").unwrap();
    assert_eq!(s.read(&d.join("m")).unwrap(), b"two");
    assert!(s.put_if_absent(&d.join("fence"), b"attempt-1").unwrap());
    assert!(!s.put_if_absent(&d.join("fence"), b"attempt-2").unwrap());
    assert_eq!(s.read(&d.join("fence")).unwrap(), b"attempt-1");
    assert!(!s.put_if_absent(&d.join("m"), b"three").unwrap());
    assert_eq!(s.read(&d.join("m")).unwrap(), b"two");
    s.delete_file(&f).unwrap();
    s.delete_file(&f).unwrap();
    assert!(!s.exists(&f).unwrap());
    s.delete_dir_all(&root.join("a")).unwrap();
    s.delete_dir_all(&root.join("a")).unwrap();
    assert!(!s.exists(&root.join("a")).unwrap());
    assert_eq!(s.display(&f), f.display().to_string());
}

#[test]
fn conditional_puts_have_exactly_one_winner() {
    let Some((_server, s, root)) = storage() else { return };
    for round in 0..10 {
        let path = root.join(format!("fence-{round}"));
        let winners: Vec<bool> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let (s, path) = (&s, path.clone());
                    scope.spawn(move || s.put_if_absent(&path, format!("writer {t}").as_bytes()).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "round {round}: {winners:?}");
        let winner = winners.iter().position(|w| *w).unwrap();
        assert_eq!(s.read(&path).unwrap(), format!("writer {winner}").as_bytes());
    }
}

#[test]
fn large_objects_go_up_in_parts_and_read_back_by_range() {
    let Some((_server, s, root)) = storage() else { return };
    let path = root.join("big.sst");
    let data: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut w = s.create(&path).unwrap();
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), data.len() as u64);
    assert_eq!(s.size(&path).unwrap(), data.len() as u64);
    let mid = (17u64 << 20) + 3;
    assert_eq!(
        s.read_range(&path, mid, 1000).unwrap(),
        &data[mid as usize..mid as usize + 1000]
    );
    assert_eq!(s.read(&path).unwrap(), data);
}

#[test]
fn bad_locations_are_named() {
    let s = S3Storage::new(Default::default()).unwrap();
    let e = s.read(Path::new("s3:///no-bucket")).unwrap_err().to_string();
    assert!(e.contains("no bucket"), "{e}");
}
