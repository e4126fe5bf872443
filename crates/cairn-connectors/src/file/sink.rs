//! The exactly-once file sink.
//!
//! A part file goes through three states, told apart by its name:
//! in-progress `.part-<subtask>-<n>.inprogress` (being written, hidden),
//! pending `.part-<subtask>-<n>.pending-<checkpoint>` (complete and durable,
//! staged by the barrier of that checkpoint, still hidden) and finished
//! `part-<subtask>-<n>` (visible). A pending file becomes finished only once
//! its checkpoint completed, so readers never see records that a restore
//! would replay.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_operators::{Sink, SinkContext};
use cairn_runtime::{OpResult, StreamRecord};
use cairn_state::DistributionMode;
use serde::{Deserialize, Serialize};

/// Staged part files: list state, split evenly on rescale (any subtask can
/// commit any file).
const PENDING_STATE: &str = "file-sink-pending";
/// Part counters per subtask index: union state, so that whichever subtask
/// gets an index after a rescale also knows its used part numbers.
const COUNTER_STATE: &str = "file-sink-counters";

/// A staged part file, as kept in snapshots (names relative to the directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingPart {
    pending: String,
    final_name: String,
    checkpoint: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartCounter {
    subtask: u32,
    next_part: u64,
    checkpoint: u64,
}

type Formatter<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Writes each record as one line (the formatter's output plus `\n`) into part
/// files in a directory, exactly once with checkpoints (two-phase commit) and
/// once at the end of input without them. Give it a `uid`: it is stateful.
pub struct FileSink<T> {
    dir: PathBuf,
    format: Formatter<T>,
    max_part_bytes: Option<u64>,
    run: Run,
}

impl<T> Clone for FileSink<T> {
    fn clone(&self) -> Self {
        FileSink {
            dir: self.dir.clone(),
            format: self.format.clone(),
            max_part_bytes: self.max_part_bytes,
            run: Run::default(),
        }
    }
}

impl<T> std::fmt::Debug for FileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("max_part_bytes", &self.max_part_bytes)
            .finish_non_exhaustive()
    }
}

/// Per-subtask running state; a clone (for another subtask) starts empty.
#[derive(Default)]
struct Run {
    opened: bool,
    subtask: u32,
    checkpointing: bool,
    next_part: u64,
    current: Option<PartWriter>,
    /// Parts rolled by size, complete and durable, waiting for the next barrier.
    closed: Vec<u64>,
    /// Staged parts waiting for their checkpoint to complete.
    pending: Vec<PendingPart>,
}

struct PartWriter {
    part: u64,
    out: BufWriter<File>,
    bytes: u64,
}

impl FileSink<String> {
    /// A sink writing each string as one line.
    pub fn lines(dir: impl Into<PathBuf>) -> Self {
        FileSink::new(dir, |s: &String| s.clone())
    }
}

impl<T> FileSink<T> {
    /// A sink writing `format(record)` as one line per record into `dir`
    /// (created if missing).
    pub fn new(dir: impl Into<PathBuf>, format: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        FileSink {
            dir: dir.into(),
            format: Arc::new(format),
            max_part_bytes: None,
            run: Run::default(),
        }
    }

    /// Also start a new part file once the current one holds `bytes` bytes
    /// (by default only each checkpoint starts a new part).
    pub fn max_part_size(mut self, bytes: u64) -> Self {
        self.max_part_bytes = Some(bytes.max(1));
        self
    }

    fn in_progress_name(&self, part: u64) -> String {
        format!(".part-{}-{part}.inprogress", self.run.subtask)
    }

    fn final_name(&self, part: u64) -> String {
        format!("part-{}-{part}", self.run.subtask)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Flush and fsync the current part and move it to `closed`.
    fn close_current(&mut self) -> OpResult {
        if let Some(w) = self.run.current.take() {
            let path = self.path(&self.in_progress_name(w.part));
            let file = w.out.into_inner().map_err(|e| io_error("flush", &path, e.error()))?;
            file.sync_all().map_err(|e| io_error("fsync", &path, &e))?;
            self.run.closed.push(w.part);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> OpResult {
        std::fs::rename(self.path(from), self.path(to)).map_err(|e| {
            format!(
                "file sink: cannot rename '{}' to '{to}': {e}",
                self.path(from).display()
            )
            .into()
        })
    }

    /// Make a staged part visible. Idempotent: a part whose pending file is
    /// gone but whose final file exists was committed before.
    fn commit(&self, p: &PendingPart) -> OpResult {
        match std::fs::rename(self.path(&p.pending), self.path(&p.final_name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && self.path(&p.final_name).exists() => Ok(()),
            Err(e) => Err(format!(
                "file sink: cannot commit '{}' of checkpoint {} to '{}': {e}; \
                 the part's records are missing from the output unless the file is restored",
                self.path(&p.pending).display(),
                p.checkpoint,
                p.final_name
            )
            .into()),
        }
    }

    fn sync_dir(&self) -> OpResult {
        #[cfg(unix)]
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("fsync directory", &self.dir, &e))?;
        Ok(())
    }

    /// Delete leftovers of a failed attempt and find the next free part number.
    fn clean_up(&mut self, parallelism: u32, restored_checkpoint: Option<u64>) -> OpResult {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error("list directory", &self.dir, &e))?;
        let mut strays = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list directory", &self.dir, &e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(parsed) = PartName::parse(&name) else {
                continue;
            };
            let (subtask, part) = parsed.id();
            if subtask == self.run.subtask {
                self.run.next_part = self.run.next_part.max(part + 1);
            }
            // Subtask 0 also cleans up for indices that no longer exist.
            let ours = subtask == self.run.subtask || (self.run.subtask == 0 && subtask >= parallelism);
            let stray = match parsed {
                PartName::Finished { .. } => false,
                PartName::InProgress { .. } => true,
                // Pending files of later checkpoints were staged by an attempt
                // whose checkpoint never completed; those of the restored one
                // (or earlier) are in some subtask's restored state.
                PartName::Pending { checkpoint, .. } => match restored_checkpoint {
                    Some(r) => checkpoint > r,
                    None => true,
                },
            };
            if ours && stray {
                strays.push(name);
            }
        }
        for name in strays {
            match std::fs::remove_file(self.path(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("delete", &self.path(&name), &e).into()),
            }
        }
        Ok(())
    }
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> String {
    format!("file sink: cannot {what} '{}': {e}", path.display())
}

/// A part file name of any state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartName {
    Finished { subtask: u32, part: u64 },
    InProgress { subtask: u32, part: u64 },
    Pending { subtask: u32, part: u64, checkpoint: u64 },
}

impl PartName {
    fn parse(name: &str) -> Option<PartName> {
        fn ids(s: &str) -> Option<(u32, u64)> {
            let (a, b) = s.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }
        if let Some(rest) = name.strip_prefix("part-") {
            let (subtask, part) = ids(rest)?;
            return Some(PartName::Finished { subtask, part });
        }
        let rest = name.strip_prefix(".part-")?;
        if let Some(ids_str) = rest.strip_suffix(".inprogress") {
            let (subtask, part) = ids(ids_str)?;
            return Some(PartName::InProgress { subtask, part });
        }
        let (ids_str, checkpoint) = rest.split_once(".pending-")?;
        let (subtask, part) = ids(ids_str)?;
        Some(PartName::Pending {
            subtask,
            part,
            checkpoint: checkpoint.parse().ok()?,
        })
    }

    fn id(self) -> (u32, u64) {
        match self {
            PartName::Finished { subtask, part }
            | PartName::InProgress { subtask, part }
            | PartName::Pending { subtask, part, .. } => (subtask, part),
        }
    }
}

impl<T: Send + 'static> Sink<T> for FileSink<T> {
    fn stateful(&self) -> bool {
        true
    }

    fn open(&mut self, ctx: &mut SinkContext<'_>) -> OpResult {
        self.run = Run {
            opened: true,
            subtask: ctx.info.subtask,
            checkpointing: ctx.checkpointing,
            ..Run::default()
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            format!(
                "file sink: cannot create output directory '{}': {e}",
                self.dir.display()
            )
        })?;
        let pending: Vec<PendingPart> = ctx.state.list(PENDING_STATE)?;
        let counters: Vec<PartCounter> = ctx.state.list(COUNTER_STATE)?;
        let restored_checkpoint = counters
            .iter()
            .map(|c| c.checkpoint)
            .chain(pending.iter().map(|p| p.checkpoint))
            .max();
        self.run.next_part = counters
            .iter()
            .filter(|c| c.subtask == self.run.subtask)
            .map(|c| c.next_part)
            .max()
            .unwrap_or(0);
        self.clean_up(ctx.info.parallelism.max(1), restored_checkpoint)?;
        // Restored staged parts belong to a completed checkpoint: commit them.
        for p in &pending {
            self.commit(p)?;
        }
        if !pending.is_empty() {
            self.sync_dir()?;
        }
        ctx.state
            .set_list::<PendingPart>(PENDING_STATE, DistributionMode::SplitEvenly, &[])?;
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        if !self.run.opened {
            return Err("file sink: write before open".into());
        }
        for r in batch {
            if self.run.current.is_none() {
                let part = self.run.next_part;
                self.run.next_part += 1;
                let path = self.path(&self.in_progress_name(part));
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| io_error("create", &path, &e))?;
                self.run.current = Some(PartWriter {
                    part,
                    out: BufWriter::with_capacity(64 * 1024, file),
                    bytes: 0,
                });
            }
            let mut line = (self.format)(&r.value);
            line.push('\n');
            let w = self.run.current.as_mut().ok_or("file sink: no part file")?;
            w.out.write_all(line.as_bytes()).map_err(|e| {
                format!(
                    "file sink: cannot write part {} in '{}': {e}",
                    w.part,
                    self.dir.display()
                )
            })?;
            w.bytes += line.len() as u64;
            if self.max_part_bytes.is_some_and(|max| w.bytes >= max) {
                self.close_current()?;
                if !self.run.checkpointing {
                    self.finish_closed()?;
                }
            }
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut SinkContext<'_>, checkpoint_id: u64) -> OpResult {
        if !self.run.opened {
            return Err("file sink: snapshot before open".into());
        }
        self.close_current()?;
        for part in std::mem::take(&mut self.run.closed) {
            let pending = format!(".part-{}-{part}.pending-{checkpoint_id}", self.run.subtask);
            self.rename(&self.in_progress_name(part), &pending)?;
            self.run.pending.push(PendingPart {
                pending,
                final_name: self.final_name(part),
                checkpoint: checkpoint_id,
            });
        }
        self.sync_dir()?;
        ctx.state
            .set_list(PENDING_STATE, DistributionMode::SplitEvenly, &self.run.pending)?;
        ctx.state.set_list(
            COUNTER_STATE,
            DistributionMode::Union,
            &[PartCounter {
                subtask: self.run.subtask,
                next_part: self.run.next_part,
                checkpoint: checkpoint_id,
            }],
        )?;
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.run.pending)
            .into_iter()
            .partition(|p| p.checkpoint <= checkpoint_id);
        self.run.pending = later;
        for (i, p) in due.iter().enumerate() {
            if let Err(e) = self.commit(p) {
                // Keep what is not committed, to retry with the next checkpoint.
                self.run.pending.extend(due[i..].iter().cloned());
                return Err(e);
            }
        }
        if !due.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn end_input(&mut self, _ctx: &mut SinkContext<'_>) -> OpResult {
        if self.run.checkpointing {
            // The final checkpoint stages and commits the rest.
            if let Some(w) = self.run.current.as_mut() {
                w.out.flush().map_err(|e| io_error("flush", &self.dir, &e))?;
            }
            return Ok(());
        }
        self.close_current()?;
        self.finish_closed()
    }

    fn close(&mut self) -> OpResult {
        // Unstaged data is abandoned; the next attempt's open deletes it.
        self.run.current = None;
        Ok(())
    }
}

impl<T> FileSink<T> {
    /// Without checkpoints: make closed parts visible right away.
    fn finish_closed(&mut self) -> OpResult {
        let closed = std::mem::take(&mut self.run.closed);
        for part in &closed {
            self.rename(&self.in_progress_name(*part), &self.final_name(*part))?;
        }
        if !closed.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }
}
