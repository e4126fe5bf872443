//! The file source: every line of every regular file in one directory.
//!
//! Each file belongs to one subtask, chosen by a stable hash of its name, so
//! the assignment survives restarts. The read position of every file (byte
//! offset of the next unread line, and whether it is finished) is union
//! operator state: on restore every subtask sees the whole table and keeps the
//! files that hash to it, which makes rescaling work without coordination.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_runtime::{OpResult, Source, SourceContext, SourceStatus, StreamRecord, NO_TIMESTAMP};
use cairn_state::hash::murmur3_x86_32;
use cairn_state::DistributionMode;
use serde::{Deserialize, Serialize};

const FILES_STATE: &str = "file-source-files";

/// The subtask (of `parallelism`) that reads the file named `relative_path`:
/// `murmur3_x86_32(relative_path, 0) % parallelism`. Stable across releases
/// because positions in snapshots depend on it.
pub fn file_owner(relative_path: &str, parallelism: u32) -> u32 {
    murmur3_x86_32(relative_path.as_bytes(), 0) % parallelism.max(1)
}

/// Read position of one file, as kept in snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileProgress {
    /// File name relative to the source directory.
    path: String,
    /// Byte offset of the next unread line.
    offset: u64,
    /// The file was read to its end.
    done: bool,
}

/// Reads lines (UTF-8, without the line terminator) of the regular files in a
/// directory, in file-name order per subtask, without timestamps (add a
/// [`cairn_runtime::WatermarkStrategy`] with a timestamp assigner for event
/// time).
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
    /// This subtask's files by name, with their positions.
    files: BTreeMap<String, (u64, bool)>,
    reader: Option<(String, BufReader<File>)>,
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

    /// List the directory and add this subtask's new files.
    fn scan(&mut self) -> OpResult {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| dir_error(&self.dir, e))?;
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
                || self.run.files.contains_key(&name)
                || file_owner(&name, self.run.parallelism) != self.run.subtask
            {
                continue;
            }
            // Follows symlinks; directories and special files are skipped.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => {
                    self.run.files.insert(name, (0, false));
                }
                Ok(_) => {}
                // Removed between listing and now: it was never read.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(format!("file source: cannot read '{}': {e}", entry.path().display()).into()),
            }
        }
        Ok(())
    }

    /// Open the first unfinished file at its recorded offset. False if none.
    fn open_next(&mut self) -> OpResult<bool> {
        let Some((name, &(offset, _))) = self.run.files.iter().find(|(_, p)| !p.1) else {
            return Ok(false);
        };
        let path = self.dir.join(name);
        let mut file = File::open(&path).map_err(|e| {
            format!(
                "file source: cannot open '{}' (to read from byte offset {offset}): {e}; \
                 files must stay in the directory until they are read",
                path.display()
            )
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if offset > len {
            return Err(format!(
                "file source: '{}' is {len} bytes but the restored position is byte offset {offset}; \
                 the file was replaced or truncated after the snapshot",
                path.display()
            )
            .into());
        }
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| format!("file source: cannot seek in '{}': {e}", path.display()))?;
        }
        self.run.reader = Some((name.clone(), BufReader::new(file)));
        Ok(true)
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
            ..Run::default()
        };
        // Union state: every subtask's table; keep the files that are ours now.
        let restored: Vec<FileProgress> = ctx.state.list(FILES_STATE)?;
        for p in restored {
            if file_owner(&p.path, self.run.parallelism) == self.run.subtask {
                self.run.files.insert(p.path, (p.offset, p.done));
            }
        }
        self.scan()?;
        if let Some(interval) = self.monitor {
            self.run.next_scan = Some(Instant::now() + interval);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<String>>, max: usize) -> OpResult<SourceStatus> {
        let mut produced = 0;
        while produced < max {
            if self.run.reader.is_none() && !self.open_next()? {
                let Some(interval) = self.monitor else {
                    return Ok(SourceStatus::Finished);
                };
                let now = Instant::now();
                let due = match self.run.next_scan {
                    Some(t) => now >= t,
                    None => true,
                };
                if due {
                    self.scan()?;
                    self.run.next_scan = Some(now + interval);
                    if self.open_next()? {
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
            let Some((name, reader)) = self.run.reader.as_mut() else {
                continue;
            };
            let pos = self
                .run
                .files
                .get_mut(name.as_str())
                .ok_or("file source: lost a file")?;
            self.run.line.clear();
            let n = reader.read_until(b'\n', &mut self.run.line).map_err(|e| {
                format!(
                    "file source: cannot read '{}' at byte offset {}: {e}",
                    self.dir.join(name.as_str()).display(),
                    pos.0
                )
            })?;
            if n == 0 {
                pos.1 = true;
                self.run.reader = None;
                continue;
            }
            let start = pos.0;
            let mut line = &self.run.line[..];
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
                        "file source: '{}': the line at byte offset {start} is not valid UTF-8 ({e}); \
                         fix the file or use skip_invalid_lines()",
                        self.dir.join(name.as_str()).display()
                    )
                    .into());
                }
                Err(_) => self.run.skipped += 1,
            }
            pos.0 = start + n as u64;
        }
        Ok(SourceStatus::More)
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        // Finished files stay in the table so that a restore never reads them again.
        let table: Vec<FileProgress> = self
            .run
            .files
            .iter()
            .map(|(path, &(offset, done))| FileProgress {
                path: path.clone(),
                offset,
                done,
            })
            .collect();
        ctx.state.set_list(FILES_STATE, DistributionMode::Union, &table)?;
        Ok(())
    }
}
