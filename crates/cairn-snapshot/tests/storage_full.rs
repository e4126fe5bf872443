//! A full disk is named for what it is, with the path of the file that did
//! not fit, through every write path of a state file.

mod common;

use std::io::ErrorKind;

use cairn_snapshot::storage::{FaultInjectingStorage, FaultTiming, LocalFileStorage, OpKind, Storage};
use cairn_snapshot::{SnapshotError, StateFileWriter};
use common::TempDir;

fn assert_storage_full(e: &SnapshotError, path: &std::path::Path) {
    assert!(e.is_storage_full(), "{e:?}");
    assert!(!e.is_user_error(), "a full disk is not the user's input: {e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("storage is full"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains("<state file>"), "{msg}");
}

#[test]
fn a_full_disk_when_a_state_file_is_made_durable_names_the_file() {
    let tmp = TempDir::new("full-finish");
    let storage = FaultInjectingStorage::new(LocalFileStorage::new());
    storage.fail_nth_with(OpKind::Finish, 1, FaultTiming::Before, ErrorKind::StorageFull);
    let path = tmp.path().join("op-1-0.state");
    let mut w = StateFileWriter::create(&storage, &path).unwrap();
    w.begin_section("count", Some(0)).unwrap();
    w.write_section_bytes(b"some state").unwrap();
    let e = w.finish_durable().unwrap_err();
    assert_storage_full(&e, &path);
}

#[test]
fn a_full_disk_when_a_state_file_is_created_names_the_file() {
    let tmp = TempDir::new("full-create");
    let storage = FaultInjectingStorage::new(LocalFileStorage::new());
    storage.fail_nth_with(OpKind::Create, 1, FaultTiming::Before, ErrorKind::StorageFull);
    let path = tmp.path().join("op-1-0.state");
    let e = StateFileWriter::create(&storage, &path).err().expect("create fails");
    assert_storage_full(&e, &path);
}

/// A writer that fails like a full disk after `room` bytes.
struct FullAfter {
    room: usize,
}

impl std::io::Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn enospc_while_writing_sections_or_the_index_names_the_file() {
    let path = std::path::PathBuf::from("/chk/job/chk-7/op-1-0.state");
    for room in [0, 20, 40] {
        let result = StateFileWriter::with_path(FullAfter { room }, path.clone()).and_then(|mut w| {
            w.begin_section("count", Some(3))?;
            w.write_section_bytes(&[7u8; 30])?;
            w.finish().map(|_| ())
        });
        let e = result.expect_err("the disk is full");
        assert_storage_full(&e, &path);
    }
}

#[test]
fn other_storage_failures_keep_their_generic_message() {
    let tmp = TempDir::new("other-io");
    let storage = FaultInjectingStorage::new(LocalFileStorage::new());
    storage.fail_nth(OpKind::Finish, 1, FaultTiming::Before);
    let path = tmp.path().join("x.state");
    let w = StateFileWriter::create(&storage, &path).unwrap();
    let e = w.finish_durable().unwrap_err();
    assert!(!e.is_storage_full());
    assert!(e.to_string().starts_with("storage failure"), "{e}");
    let _ = storage.inner().delete_file(&path);
}
