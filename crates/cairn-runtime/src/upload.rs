//! Tasks upload their own snapshots. The coordinator registers where snapshot
//! `n` goes (a [`SnapshotDestination`]) before its barrier is injected; each
//! task takes the synchronous part of its operators' snapshots, hands them to
//! the [`SnapshotUploader`] and goes on processing (invariant 3); a pool of
//! writer threads writes state files (or uploads a backend's files) to the
//! job's storage and acknowledges with file references. The coordinator only
//! decides and commits; it never receives state.
//!
//! Aborts are safe against writes in flight: every file a write will create is
//! recorded in the destination's ledger *before* it is created, and when a
//! destination is aborted, whoever finishes last (the abort or the last write
//! in flight) deletes every recorded file and the snapshot's directory. So no
//! file of an aborted checkpoint survives, even one whose acknowledgement was
//! still on its way.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_snapshot::{StateFileRef, Storage};
use cairn_state::canonical::KeyCodec;
use cairn_state::{SnapshotRequest, SnapshotRequestKind};
use crossbeam_channel::{unbounded, Sender};

use crate::channel_state::{write_channel_state, ChannelStateUpload, CHANNEL_STATE_SUFFIX};
use crate::error::CheckpointFailure;
use crate::operator::OperatorSnapshot;
use crate::snapshot_io;
use crate::task::{TaskEvent, TaskId};

/// Snapshot writer threads per job (the machine's cores are shared with tasks).
const WRITER_THREADS: usize = 2;

/// How a snapshot's state is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SnapshotFormat {
    /// Portable across backends and Cairn versions (Parquet per operator).
    Canonical,
    /// The state backend's own, faster format.
    Native,
}

/// Where the files of one snapshot go, and the record of what was written.
#[derive(Debug)]
pub struct SnapshotDestination {
    pub checkpoint_id: u64,
    /// The snapshot's own directory (`chk-<n>` or the savepoint directory).
    pub dir: PathBuf,
    /// The job's `shared/` directory, for files later checkpoints may
    /// reference (checkpoints only; savepoints are self-contained).
    pub shared_dir: Option<PathBuf>,
    pub format: SnapshotFormat,
    /// What backends are asked for.
    pub request: SnapshotRequest,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    aborted: bool,
    /// Writes started and not finished.
    in_flight: usize,
    /// Every file a write created or was about to create.
    files: Vec<PathBuf>,
    cleaned: bool,
}

impl SnapshotDestination {
    /// A checkpoint into `dir`, with shared files in `shared_dir`.
    pub fn checkpoint(checkpoint_id: u64, dir: PathBuf, shared_dir: PathBuf, incremental: bool) -> Self {
        Self::new(
            checkpoint_id,
            dir,
            Some(shared_dir),
            SnapshotFormat::Native,
            SnapshotRequestKind::Checkpoint { incremental },
        )
    }

    /// A savepoint into `dir` (the `savepoint-…` directory itself).
    pub fn savepoint(checkpoint_id: u64, dir: PathBuf, format: SnapshotFormat) -> Self {
        let kind = match format {
            SnapshotFormat::Canonical => SnapshotRequestKind::CanonicalSavepoint,
            SnapshotFormat::Native => SnapshotRequestKind::NativeSavepoint,
        };
        Self::new(checkpoint_id, dir, None, format, kind)
    }

    fn new(
        checkpoint_id: u64,
        dir: PathBuf,
        shared_dir: Option<PathBuf>,
        format: SnapshotFormat,
        kind: SnapshotRequestKind,
    ) -> Self {
        SnapshotDestination {
            checkpoint_id,
            dir,
            shared_dir,
            format,
            request: SnapshotRequest { checkpoint_id, kind },
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a write; `None` once the snapshot was aborted.
    pub fn begin_write(self: &Arc<Self>, storage: &Arc<dyn Storage>) -> Option<WriteTicket> {
        let mut l = self.ledger();
        if l.aborted {
            return None;
        }
        l.in_flight += 1;
        Some(WriteTicket {
            dest: self.clone(),
            storage: storage.clone(),
        })
    }

    /// Abandon the snapshot: every file written for it is deleted, now or by
    /// the last write still in flight.
    pub fn abort(&self, storage: &dyn Storage) {
        let mut l = self.ledger();
        l.aborted = true;
        if l.in_flight == 0 {
            self.clean(&mut l, storage);
        }
    }

    /// Whether the snapshot was aborted.
    pub fn is_aborted(&self) -> bool {
        self.ledger().aborted
    }

    fn clean(&self, l: &mut Ledger, storage: &dyn Storage) {
        if l.cleaned {
            return;
        }
        l.cleaned = true;
        for f in l.files.drain(..) {
            let _ = storage.delete_file(&f);
        }
        let _ = storage.delete_dir_all(&self.dir);
    }
}

/// One write in progress for a destination; dropping it ends the write.
pub struct WriteTicket {
    dest: Arc<SnapshotDestination>,
    storage: Arc<dyn Storage>,
}

impl WriteTicket {
    /// Record that `path` is about to be created (before creating it).
    pub fn intend(&self, path: &Path) {
        self.dest.ledger().files.push(path.to_path_buf());
    }

    /// The destination written to.
    pub fn destination(&self) -> &SnapshotDestination {
        &self.dest
    }

    /// The storage written to.
    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        let mut l = self.dest.ledger();
        l.in_flight -= 1;
        if l.aborted && l.in_flight == 0 {
            self.dest.clean(&mut l, &*self.storage);
        }
    }
}

/// One operator's synchronous snapshot, ready to be written.
pub struct OperatorUpload {
    /// The node's index in the graph.
    pub node: usize,
    pub operator_id: String,
    /// Keyed operators: renders keys for canonical savepoints.
    pub key_codec: Option<KeyCodec>,
    pub snapshot: OperatorSnapshot,
}

/// A task's snapshot for one checkpoint, handed to the writer threads.
pub struct UploadJob {
    pub task: TaskId,
    pub subtask: u32,
    pub destination: Arc<SnapshotDestination>,
    pub operators: Vec<OperatorUpload>,
    /// Unaligned checkpoints: the in-flight messages the task had not
    /// processed at its snapshot.
    pub channel_state: Option<ChannelStateUpload>,
    pub alignment: Duration,
    pub sync: Duration,
    /// Where the acknowledgement (or decline) goes.
    pub events: Sender<TaskEvent>,
}

type PoolJob = Box<dyn FnOnce() + Send>;

/// Follows the destinations registered with an uploader. When tasks run in
/// other processes, their uploaders must know a destination before its
/// barrier reaches them: `registered` returns once they do.
pub trait DestinationListener: Send + Sync {
    fn registered(&self, dest: &SnapshotDestination);
    fn completed(&self, checkpoint_id: u64);
    fn aborted(&self, checkpoint_id: u64);
}

/// The registry of pending snapshots' destinations and the writer threads.
pub struct SnapshotUploader {
    storage: Arc<dyn Storage>,
    destinations: Mutex<HashMap<u64, Arc<SnapshotDestination>>>,
    /// Told about every destination's life (a distributed job's coordinator
    /// forwards them to the workers, whose tasks write the files).
    listener: Mutex<Option<Arc<dyn DestinationListener>>>,
    jobs: Mutex<Option<Sender<PoolJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl SnapshotUploader {
    /// An uploader writing to `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Arc<Self> {
        let (tx, rx) = unbounded::<PoolJob>();
        let threads = (0..WRITER_THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("cairn-snapshot-writer-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .ok()
            })
            .collect();
        Arc::new(SnapshotUploader {
            storage,
            destinations: Mutex::new(HashMap::new()),
            listener: Mutex::new(None),
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            busy: Arc::new((Mutex::new(0), Condvar::new())),
        })
    }

    /// The storage snapshots are written to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<SnapshotDestination>>> {
        self.destinations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot `dest.checkpoint_id` will be written to `dest`.
    pub fn register(&self, dest: Arc<SnapshotDestination>) {
        if let Some(l) = self.listener() {
            l.registered(&dest);
        }
        self.table().insert(dest.checkpoint_id, dest);
    }

    /// Follow destinations with `listener` (replacing any earlier one).
    pub fn set_listener(&self, listener: Option<Arc<dyn DestinationListener>>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
    }

    fn listener(&self) -> Option<Arc<dyn DestinationListener>> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where snapshot `checkpoint_id` goes, while it is pending.
    pub fn destination(&self, checkpoint_id: u64) -> Option<Arc<SnapshotDestination>> {
        self.table().get(&checkpoint_id).cloned()
    }

    /// Snapshot `checkpoint_id` completed: stop tracking it.
    pub fn completed(&self, checkpoint_id: u64) {
        self.table().remove(&checkpoint_id);
        if let Some(l) = self.listener() {
            l.completed(checkpoint_id);
        }
    }

    /// Snapshot `checkpoint_id` was abandoned: delete what was and will be
    /// written for it.
    pub fn abort(&self, checkpoint_id: u64) {
        let dest = self.table().remove(&checkpoint_id);
        if let Some(dest) = dest {
            dest.abort(&*self.storage);
            if let Some(l) = self.listener() {
                l.aborted(checkpoint_id);
            }
        }
    }

    /// Write a task's snapshot on a writer thread; it acknowledges (or
    /// declines) through the job's events when done.
    pub fn submit(self: &Arc<Self>, job: UploadJob) {
        {
            let (count, _) = &*self.busy;
            *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
        // The job holds only what it writes with: were it to hold the
        // uploader, the last reference could drop on a writer thread, which
        // would then have to join itself.
        let (storage, busy) = (self.storage.clone(), self.busy.clone());
        let run: PoolJob = Box::new(move || {
            let events = job.events.clone();
            let (task, checkpoint_id) = (job.task, job.destination.checkpoint_id);
            // A panic while writing declines the snapshot; the count of busy
            // writes must go down either way, or `wait_idle` would hang.
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&storage, job))) {
                let _ = events.send(TaskEvent::Decline {
                    task,
                    checkpoint_id,
                    reason: CheckpointFailure::Other(format!(
                        "writing the snapshot {}",
                        crate::error::panic_message(&*panic)
                    )),
                });
            }
            write_done(&busy);
        });
        let sender = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match sender {
            Some(tx) if !self.threads.lock().unwrap_or_else(|p| p.into_inner()).is_empty() => {
                if let Err(e) = tx.send(run) {
                    (e.into_inner())();
                }
            }
            _ => run(),
        }
    }

    /// Wait until every submitted write finished (before a job reports that
    /// it ended, so no write outlives it).
    pub fn wait_idle(&self) {
        let (count, cv) = &*self.busy;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = cv.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Write one task's snapshot and acknowledge (or decline) it.
fn write(storage: &Arc<dyn Storage>, job: UploadJob) {
    let started = Instant::now();
    let UploadJob {
        task,
        subtask,
        destination,
        operators,
        channel_state,
        alignment,
        sync,
        events,
    } = job;
    let checkpoint_id = destination.checkpoint_id;
    let unaligned = channel_state.is_some();
    let result = match destination.begin_write(storage) {
        None => Err(CheckpointFailure::Other(
            "the snapshot was aborted before its files were written".to_string(),
        )),
        Some(ticket) => write_operators(&ticket, subtask, operators).and_then(|mut files| {
            let persisted = match channel_state {
                Some(cs) => write_task_channel_state(&ticket, subtask, &cs, &mut files)?,
                None => 0,
            };
            Ok((files, persisted))
        }),
    };
    let event = match result {
        Ok((files, persisted_bytes)) => TaskEvent::Acknowledge {
            task,
            checkpoint_id,
            files,
            alignment,
            sync,
            write: started.elapsed(),
            unaligned,
            persisted_bytes,
        },
        Err(reason) => TaskEvent::Decline {
            task,
            checkpoint_id,
            reason,
        },
    };
    let _ = events.send(event);
}

/// One submitted write ended.
fn write_done(busy: &(Mutex<usize>, Condvar)) {
    let (count, cv) = busy;
    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
    *n -= 1;
    if *n == 0 {
        cv.notify_all();
    }
}

impl Drop for SnapshotUploader {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    }
}

/// Write every operator's snapshot; returns the files per node. A storage
/// failure stays typed (a full disk is named as such, with the file).
fn write_operators(
    ticket: &WriteTicket,
    subtask: u32,
    operators: Vec<OperatorUpload>,
) -> Result<Vec<(usize, Vec<StateFileRef>)>, CheckpointFailure> {
    let dest = ticket.destination();
    let mut out = Vec::with_capacity(operators.len());
    for op in operators {
        let stem = format!("op-{}-{subtask}", op.operator_id);
        let files = match dest.format {
            SnapshotFormat::Native => snapshot_io::write_native(ticket, &stem, op.snapshot, op.key_codec.as_ref()),
            SnapshotFormat::Canonical => {
                snapshot_io::write_canonical_v2(ticket, &stem, op.snapshot, op.key_codec.as_ref())
            }
        }
        .map_err(|e| match e {
            snapshot_io::SnapshotIoError::Storage(e) => CheckpointFailure::from(e),
            other => CheckpointFailure::Other(format!(
                "writing the snapshot of operator {} in {}: {other}",
                op.operator_id,
                dest.dir.display()
            )),
        })?;
        out.push((op.node, files));
    }
    Ok(out)
}

/// Write a task's channel state beside its operators' files (under the
/// chain's head node); returns its size.
fn write_task_channel_state(
    ticket: &WriteTicket,
    subtask: u32,
    cs: &ChannelStateUpload,
    files: &mut Vec<(usize, Vec<StateFileRef>)>,
) -> Result<u64, CheckpointFailure> {
    let dest = ticket.destination();
    let name = format!("op-{}-{subtask}{CHANNEL_STATE_SUFFIX}", cs.operator_id);
    ticket.intend(&dest.dir.join(&name));
    let Some(file) = write_channel_state(ticket.storage(), &dest.dir, &name, cs)? else {
        return Ok(0);
    };
    let size = file.size;
    match files.iter_mut().find(|(node, _)| *node == cs.node) {
        Some((_, fs)) => fs.push(file),
        None => files.push((cs.node, vec![file])),
    }
    Ok(size)
}

/// Copy a local file to `target` through `storage`, returning its size and
/// CRC-32 (computed while copying, so the file is read once).
pub fn copy_local_file(
    storage: &dyn Storage,
    local: &Path,
    target: &Path,
) -> Result<(u64, u32), cairn_snapshot::SnapshotError> {
    use cairn_snapshot::SnapshotError;
    let mut input = std::fs::File::open(local).map_err(|e| SnapshotError::io("open", local, e))?;
    let mut w = cairn_snapshot::checksum::ChecksummingWriter::new(storage.create(target)?);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(|e| SnapshotError::io("read", local, e))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])
            .map_err(|e| SnapshotError::io("write", PathBuf::from(storage.display(target)), e))?;
    }
    let (inner, size, crc) = w.into_parts();
    inner.finish()?;
    Ok((size, crc))
}

/// Copy a snapshot file from storage to a local path in ranges, checking its
/// recorded size and CRC-32; errors name the file.
pub fn download_file(
    storage: &dyn Storage,
    remote: &Path,
    local: &Path,
    size: u64,
    crc32: u32,
) -> Result<(), cairn_snapshot::SnapshotError> {
    use cairn_snapshot::SnapshotError;
    const CHUNK: u64 = 8 << 20;
    let actual = storage.size(remote)?;
    if actual != size {
        return Err(SnapshotError::SizeMismatch {
            path: PathBuf::from(storage.display(remote)),
            expected: size,
            actual,
        });
    }
    let mut out = std::fs::File::create(local).map_err(|e| SnapshotError::io("create", local, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0;
    while offset < size {
        let len = CHUNK.min(size - offset);
        let bytes = storage.read_range(remote, offset, len)?;
        hasher.update(&bytes);
        out.write_all(&bytes)
            .map_err(|e| SnapshotError::io("write", local, e))?;
        offset += len;
    }
    let actual = hasher.finalize();
    if actual != crc32 {
        let _ = std::fs::remove_file(local);
        return Err(SnapshotError::ChecksumMismatch {
            path: PathBuf::from(storage.display(remote)),
            expected: crc32,
            actual,
        });
    }
    out.sync_all().map_err(|e| SnapshotError::io("fsync", local, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_snapshot::InMemoryStorage;

    /// Writers racing an abort: whatever the interleaving, nothing written
    /// for the aborted snapshot remains, and writes that start after the
    /// abort are refused.
    #[test]
    fn an_abort_racing_writes_leaves_no_file_behind() {
        for round in 0..200u64 {
            let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
            let dir = PathBuf::from(format!("/job/chk-{round}"));
            let shared = PathBuf::from("/job/shared");
            let dest = Arc::new(SnapshotDestination::checkpoint(
                round,
                dir.clone(),
                shared.clone(),
                true,
            ));
            storage.create_dir_all(&dir).unwrap();
            std::thread::scope(|scope| {
                for w in 0..4u64 {
                    let (dest, storage, dir, shared) = (dest.clone(), storage.clone(), dir.clone(), shared.clone());
                    scope.spawn(move || {
                        // Stagger the writers differently each round.
                        for _ in 0..((round + w) % 5) {
                            std::thread::yield_now();
                        }
                        let Some(ticket) = dest.begin_write(&storage) else {
                            return;
                        };
                        for (i, target) in [dir.join(format!("w{w}.state")), shared.join(format!("{round}-{w}.sst"))]
                            .into_iter()
                            .enumerate()
                        {
                            ticket.intend(&target);
                            if i == 1 {
                                std::thread::yield_now();
                            }
                            cairn_snapshot::storage::write_file(&*storage, &target, b"state").unwrap();
                        }
                    });
                }
                for _ in 0..(round % 7) {
                    std::thread::yield_now();
                }
                dest.abort(&*storage);
            });
            assert!(dest.begin_write(&storage).is_none(), "no write starts after an abort");
            let left = storage.list(Path::new("/job")).map(|e| e.len()).unwrap_or(0);
            let shared_left = storage.list(&shared).map(|e| e.len()).unwrap_or(0);
            assert!(
                !storage.exists(&dir).unwrap() && shared_left == 0,
                "round {round}: {left} entries left in /job, {shared_left} in shared"
            );
        }
    }
}
