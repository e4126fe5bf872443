//! Reading a job's committed output and comparing it with the expected
//! output, exactly: as sorted multisets of lines, so a lost line and a
//! duplicated line are both found (and named, with the part files holding
//! them).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::oracle::Output;

/// Files in one sink directory by state (the `FileSink`'s naming).
#[derive(Debug, Default, Clone)]
pub struct SinkFiles {
    /// Committed, visible parts: `part-<subtask>-<n>`.
    pub finished: Vec<PathBuf>,
    /// `.part-*.inprogress`.
    pub in_progress: Vec<String>,
    /// `.part-*.pending-<checkpoint>` with the checkpoint id.
    pub pending: Vec<(String, u64)>,
}

/// List a sink directory (missing: empty).
pub fn list_sink(dir: &Path) -> Result<SinkFiles, String> {
    let mut files = SinkFiles::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with("part-") {
            files.finished.push(entry.path());
        } else if name.starts_with(".part-") && name.ends_with(".inprogress") {
            files.in_progress.push(name);
        } else if let Some((_, ckpt)) = name.split_once(".pending-").filter(|_| name.starts_with(".part-")) {
            if let Ok(c) = ckpt.parse() {
                files.pending.push((name.clone(), c));
            }
        }
    }
    files.finished.sort();
    Ok(files)
}

/// The committed lines of one sink directory, sorted. A finished part that
/// does not end with a newline (a partial record) is an error.
pub fn committed_lines(dir: &Path) -> Result<Vec<String>, String> {
    let files = list_sink(dir)?;
    let mut lines = Vec::new();
    for path in &files.finished {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(format!(
                "committed part {} ends with a partial record: {:?}",
                path.display(),
                text.rsplit('\n').next().unwrap_or("")
            ));
        }
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort_unstable();
    Ok(lines)
}

/// Differences between two sorted line lists of one sink.
#[derive(Debug, Default, Clone)]
pub struct SinkDiff {
    pub expected: usize,
    pub actual: usize,
    /// Expected lines that are missing (one entry per missing copy).
    pub missing: Vec<String>,
    /// Lines that are not expected, or more often than expected (duplicates).
    pub extra: Vec<String>,
}

impl SinkDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compare two sorted lists as multisets.
pub fn diff_sorted(expected: &[String], actual: &[String]) -> SinkDiff {
    let mut d = SinkDiff {
        expected: expected.len(),
        actual: actual.len(),
        ..SinkDiff::default()
    };
    let (mut i, mut j) = (0, 0);
    while i < expected.len() || j < actual.len() {
        match (expected.get(i), actual.get(j)) {
            (Some(e), Some(a)) if e == a => {
                i += 1;
                j += 1;
            }
            (Some(e), Some(a)) if e < a => {
                d.missing.push(e.clone());
                i += 1;
            }
            (Some(_), Some(a)) => {
                d.extra.push(a.clone());
                j += 1;
            }
            (Some(e), None) => {
                d.missing.push(e.clone());
                i += 1;
            }
            (None, Some(a)) => {
                d.extra.push(a.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    d
}

/// Compare every sink's committed output under `out_dir` with `expected`.
/// Returns a human-readable description of the differences, or `None` when
/// the output is exactly as expected.
pub fn compare_output(out_dir: &Path, expected: &Output) -> Result<Option<String>, String> {
    let mut report = String::new();
    for (sink, want) in expected {
        let dir = out_dir.join(sink);
        let got = committed_lines(&dir)?;
        let d = diff_sorted(want, &got);
        if d.is_empty() {
            continue;
        }
        let _ = writeln!(
            report,
            "sink '{sink}' ({}): {} lines committed, {} expected: {} missing, {} extra or duplicated",
            dir.display(),
            d.actual,
            d.expected,
            d.missing.len(),
            d.extra.len()
        );
        for l in d.missing.iter().take(8) {
            let _ = writeln!(report, "  missing: {l}");
        }
        for l in d.extra.iter().take(8) {
            let where_ = files_containing(&dir, l).unwrap_or_default().join(", ");
            let _ = writeln!(report, "  extra:   {l}   (in {where_})");
        }
    }
    Ok((!report.is_empty()).then_some(report))
}

/// Names of the finished parts of `dir` holding `line`.
fn files_containing(dir: &Path, line: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for path in list_sink(dir)?.finished {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let n = text.lines().filter(|l| *l == line).count();
        if n > 0 {
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push(if n > 1 { format!("{name} x{n}") } else { name });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn multiset_diff_finds_loss_and_duplicates() {
        let d = diff_sorted(&v(&["a", "b", "c"]), &v(&["a", "b", "b", "d"]));
        assert_eq!(d.missing, v(&["c"]));
        assert_eq!(d.extra, v(&["b", "d"]));
        assert!(diff_sorted(&v(&["a", "a"]), &v(&["a", "a"])).is_empty());
        assert_eq!(diff_sorted(&v(&["a", "a"]), &v(&["a"])).missing, v(&["a"]));
    }

    #[test]
    fn reads_only_committed_parts() {
        let dir = std::env::temp_dir().join(format!("cairn-chaos-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part-0-0"), "x\ny\n").unwrap();
        std::fs::write(dir.join("part-1-0"), "z\n").unwrap();
        std::fs::write(dir.join(".part-0-1.inprogress"), "dropped\n").unwrap();
        std::fs::write(dir.join(".part-1-1.pending-7"), "staged\n").unwrap();
        assert_eq!(committed_lines(&dir).unwrap(), v(&["x", "y", "z"]));
        let files = list_sink(&dir).unwrap();
        assert_eq!(files.in_progress.len(), 1);
        assert_eq!(files.pending, vec![(".part-1-1.pending-7".to_string(), 7)]);
        std::fs::write(dir.join("part-1-2"), "partial").unwrap();
        assert!(committed_lines(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
