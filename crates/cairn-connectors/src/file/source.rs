//! The file source: every line of every regular file in one directory.
//!
//! Each file is a split ([`SplitSet`]): a subtask reads the files it holds
//! interleaved (at most [`OPEN_FILES`] at a time, in name order), keeping
//! each file's line order. The split table is union operator state
//! `file-source-files`: per file, the byte offset of the next unread line and
//! whether it is finished. A file found by listing the directory belongs to
//! subtask [`file_owner`] (a stable hash of its name, so subtasks agree
//! without talking to each other); on restore the unfinished files of the
//! table are dealt evenly over the new subtasks, finished ones are remembered
//! and never read again.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, SplitProgress, StreamRecord, NO_TIMESTAMP};
use cairn_state::hash::murmur3_x86_32;
use serde::{Deserialize, Serialize};

use crate::split::{SourceSplit, SplitPoll, SplitSet, SplitsState};

const FILES_STATE: &str = "file-source-files";

/// Files a subtask reads at the same time (the rest wait their turn): bounds
/// open file handles while no file waits behind another for long.
pub const OPEN_FILES: usize = 16;

/// The subtask (of `parallelism`) that reads the newly listed file named
/// `relative_path`: `murmur3_x86_32(relative_path, 0) % parallelism`. Stable
/// across releases because subtasks of one run must agree on it.
pub fn file_owner(relative_path: &str, parallelism: u32) -> u32 {
    murmur3_x86_32(relative_path.as_bytes(), 0) % parallelism.max(1)
}

/// Read position of one file, as kept in snapshots (the encoding of every
/// release: a split of the table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileProgress {
    /// File name relative to the source directory.
    path: String,
    /// Byte offset of the next unread line.
    offset: u64,
    /// The file was read to its end.
    done: bool,
}

impl SourceSplit for FileProgress {
    type Id = String;
    fn id(&self) -> String {
        self.path.clone()
    }
    fn is_finished(&self) -> bool {
        self.done
    }
}

/// Reads lines (UTF-8, without the line terminator) of the regular files in a
/// directory, without timestamps (add a [`cairn_runtime::WatermarkStrategy`]
/// with a timestamp assigner for event time; watermarks are kept per file).
///
/// Hidden files (names starting with `.` or `_`) are ignored, so the source
/// can read a [`super::FileSink`]'s output directory. A file is read once:
/// move finished files into the directory (write elsewhere, then rename), as
/// data appended after the source reached a file's end is not read.
#[derive(Clone, Debug)]
pub struct FileSource {
    dir: PathBuf,
    suffix: Option<String>,
    monitor: Option<Duration>,
    skip_invalid: bool,
    run: Run,
}

/// Per-subtask running state; a clone (for another subtask) starts empty.
#[derive(Debug, Default)]
struct Run {
    subtask: u32,
    parallelism: u32,
    files: Option<SplitSet<FileProgress, BufReader<File>>>,
    next_scan: Option<Instant>,
    line: Vec<u8>,
    skipped: u64,
}

impl Clone for Run {
    fn clone(&self) -> Self {
        Run::default()
    }
}

impl FileSource {
    /// Read the files in `dir` once (bounded).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSource {
            dir: dir.into(),
            suffix: None,
            monitor: None,
            skip_invalid: false,
            run: Run::default(),
        }
    }

    /// Only read files whose name ends with `suffix` (e.g. `".csv"`).
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = Some(suffix.into());
        self
    }

    /// Keep watching the directory, listing it every `interval` once all
    /// known files are read, and read new files in name order. The source
    /// never finishes (unbounded).
    pub fn monitor(mut self, interval: Duration) -> Self {
        self.monitor = Some(interval);
        self
    }

    /// Skip lines that are not valid UTF-8 instead of failing the job.
    pub fn skip_invalid_lines(mut self) -> Self {
        self.skip_invalid = true;
        self
    }

    /// Lines skipped by [`FileSource::skip_invalid_lines`] in this subtask.
    pub fn skipped_lines(&self) -> u64 {
        self.run.skipped
    }

    fn wanted(&self, name: &str) -> bool {
        !name.starts_with('.')
            && !name.starts_with('_')
            && match &self.suffix {
                Some(s) => name.ends_with(s.as_str()),
                None => true,
            }
    }

    /// List the directory and take this subtask's new files, in name order.
    /// True if it took any.
    fn scan(&mut self) -> OpResult<bool> {
        let files = self.run.files.as_ref().ok_or("file source used before open")?;
        let entries = std::fs::read_dir(&self.dir).map_err(|e| dir_error(&self.dir, e))?;
        let mut new = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| dir_error(&self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                return Err(format!(
                    "file source: a file name in '{}' is not valid UTF-8 ({:?}); rename it or move it out",
                    self.dir.display(),
                    entry.file_name()
                )
                .into());
            };
            if !self.wanted(&name)
                || files.is_known(&name)
                || file_owner(&name, self.run.parallelism) != self.run.subtask
            {
                continue;
            }
            // Follows symlinks; directories and special files are skipped.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => new.push(name),
                Ok(_) => {}
                // Removed between listing and now: it was never read.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(format!("file source: cannot read '{}': {e}", entry.path().display()).into()),
            }
        }
        new.sort();
        let took = !new.is_empty();
        let files = self.run.files.as_mut().ok_or("file source used before open")?;
        for path in new {
            files.add(FileProgress {
                path,
                offset: 0,
                done: false,
            });
        }
        Ok(took)
    }
}

/// Open `file` of `dir` at its recorded offset.
fn open_at(dir: &Path, file: &FileProgress) -> OpResult<BufReader<File>> {
    let path = dir.join(&file.path);
    let offset = file.offset;
    let mut f = File::open(&path).map_err(|e| {
        format!(
            "file source: cannot open '{}' (to read from byte offset {offset}): {e}; \
             files must stay in the directory until they are read",
            path.display()
        )
    })?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if offset > len {
        return Err(format!(
            "file source: '{}' is {len} bytes but the restored position is byte offset {offset}; \
             the file was replaced or truncated after the snapshot",
            path.display()
        )
        .into());
    }
    if offset > 0 {
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("file source: cannot seek in '{}': {e}", path.display()))?;
    }
    Ok(BufReader::new(f))
}

/// How lines are read: the parts of the source a file's turn needs.
struct LineReader<'a> {
    dir: &'a Path,
    skip_invalid: bool,
    line: &'a mut Vec<u8>,
    skipped: &'a mut u64,
}

impl LineReader<'_> {
    /// Up to `quota` lines of `file`, opening it first if needed.
    fn read(
        &mut self,
        file: &mut FileProgress,
        reader: &mut Option<BufReader<File>>,
        out: &mut Vec<StreamRecord<String>>,
        quota: usize,
    ) -> OpResult<SplitPoll> {
        if reader.is_none() {
            *reader = Some(open_at(self.dir, file)?);
        }
        let r = reader.as_mut().ok_or("file source: lost a reader")?;
        let mut produced = 0;
        while produced < quota {
            self.line.clear();
            let n = r.read_until(b'\n', self.line).map_err(|e| {
                format!(
                    "file source: cannot read '{}' at byte offset {}: {e}",
                    self.dir.join(&file.path).display(),
                    file.offset
                )
            })?;
            if n == 0 {
                file.done = true;
                *reader = None;
                return Ok(SplitPoll::Finished);
            }
            let mut line = &self.line[..];
            if let Some(l) = line.strip_suffix(b"\n") {
                line = l.strip_suffix(b"\r").unwrap_or(l);
            }
            match std::str::from_utf8(line) {
                Ok(s) => {
                    out.push(StreamRecord {
                        value: s.to_string(),
                        timestamp: NO_TIMESTAMP,
                    });
                    produced += 1;
                }
                Err(e) if !self.skip_invalid => {
                    return Err(format!(
                        "file source: '{}': the line at byte offset {} is not valid UTF-8 ({e}); \
                         fix the file or use skip_invalid_lines()",
                        self.dir.join(&file.path).display(),
                        file.offset
                    )
                    .into());
                }
                Err(_) => *self.skipped += 1,
            }
            file.offset += n as u64;
        }
        Ok(SplitPoll::More)
    }
}

fn dir_error(dir: &Path, e: std::io::Error) -> String {
    if e.kind() == ErrorKind::NotFound {
        format!(
            "file source: directory '{}' does not exist; create it or pass an existing directory",
            dir.display()
        )
    } else {
        format!("file source: cannot list directory '{}': {e}", dir.display())
    }
}

impl Source<String> for FileSource {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        self.run = Run {
            subtask: ctx.info.subtask,
            parallelism: ctx.info.parallelism.max(1),
            files: Some(SplitSet::open(FILES_STATE, ctx)?.with_concurrency(OPEN_FILES)),
            ..Run::default()
        };
        self.scan()?;
        if let Some(interval) = self.monitor {
            self.run.next_scan = Some(Instant::now() + interval);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<String>>, max: usize) -> OpResult<SourceStatus> {
        let mut produced = 0;
        loop {
            let files = self.run.files.as_mut().ok_or("file source polled before open")?;
            let mut lines = LineReader {
                dir: &self.dir,
                skip_invalid: self.skip_invalid,
                line: &mut self.run.line,
                skipped: &mut self.run.skipped,
            };
            let polled = files.poll(out, max - produced, |file, reader, out, quota| {
                lines.read(file, reader, out, quota)
            })?;
            produced += polled.records;
            match polled.state {
                SplitsState::Active => return Ok(SourceStatus::More),
                SplitsState::Idle(d) => return Ok(SourceStatus::Pending(d)),
                SplitsState::Empty => {}
            }
            // Every known file is read.
            let Some(interval) = self.monitor else {
                return Ok(SourceStatus::Finished);
            };
            let now = Instant::now();
            if self.run.next_scan.is_none_or(|t| now >= t) {
                let took = self.scan()?;
                self.run.next_scan = Some(now + interval);
                if took && produced < max {
                    continue;
                }
            }
            if produced > 0 {
                return Ok(SourceStatus::More);
            }
            let wait = self
                .run
                .next_scan
                .map_or(interval, |t| t.saturating_duration_since(now));
            return Ok(SourceStatus::Pending(wait.max(Duration::from_millis(1))));
        }
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        // Finished files stay in the table so that a restore never reads them again.
        self.run
            .files
            .as_ref()
            .ok_or("file source snapshot before open")?
            .snapshot(ctx.state)
    }

    fn split_progress(&mut self) -> Option<&mut SplitProgress> {
        self.run.files.as_mut().map(|f| f.progress())
    }
}
