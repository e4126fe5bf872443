//! The workload: what the chaos job reads and computes, shared by the job
//! (`cairn-chaos-job`) and the plain-Rust oracle, so both agree on inputs,
//! keys and line formats (but not on how the results are computed).
//!
//! Two pipelines run in one job:
//!
//! - **generator**: `GeneratorSource` (two splits, one per source subtask,
//!   rate-limited) → `key_by(gen_key)` → running count and sum per key in
//!   keyed `ValueState`, one output line per event, plus a per-key total from
//!   an event-time timer at the end of input → sink `gen`; and the same
//!   events → `key_by(window_key)` → tumbling event-time windows (count, sum,
//!   min and max index per window, from the window's list state) → sink
//!   `windows`.
//! - **files**: `FileSource` over generated files (two subtasks) → throttle →
//!   parse → `key_by(file_key)` → running count and sum per key, plus a
//!   per-key total at the end of input → sink `files`.
//!
//! Every key of the running pipelines is fed by exactly one source subtask
//! (generator keys are confined to one split, file keys to one file), so each
//! key sees its records in a fixed order and even the running sums are
//! deterministic. Window results do not depend on order at all.

use std::path::Path;

/// Splits of the generator (and its parallelism).
pub const GEN_SPLITS: u64 = 2;
/// Parallelism of the file source; input file names are chosen so that each
/// subtask owns the same number of files.
pub const FILE_SOURCE_PARALLELISM: u32 = 2;
/// Number of window keys (window keys mix both generator splits).
pub const WINDOW_KEYS: u64 = 64;
/// Values are reduced modulo this, so sums stay readable and never overflow.
pub const VALUE_MOD: u64 = 1_000_000;
/// Output directories (one `FileSink` each) under the job's `--out`.
pub const SINKS: [&str; 3] = ["gen", "windows", "files"];

/// The deterministic input and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Generator events in total (a multiple of [`GEN_SPLITS`]).
    pub events: u64,
    /// Running-count keys per generator split.
    pub keys: u64,
    /// Seed of the generator's values and of the file contents.
    pub data_seed: u64,
    /// Tumbling event-time window size (event time is the index within the split, in ms).
    pub window_ms: u64,
    /// Input files (a multiple of [`FILE_SOURCE_PARALLELISM`]).
    pub files: u32,
    /// Lines per input file.
    pub lines: u64,
    /// Running-count keys per input file.
    pub file_keys: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            events: 100_000,
            keys: 500,
            data_seed: 7,
            window_ms: 1_000,
            files: 4,
            lines: 12_500,
            file_keys: 100,
        }
    }
}

impl Workload {
    /// Round sizes up so that splits and files divide evenly.
    pub fn normalized(mut self) -> Self {
        self.events = self.events.max(GEN_SPLITS).div_ceil(GEN_SPLITS) * GEN_SPLITS;
        self.keys = self.keys.max(1);
        self.window_ms = self.window_ms.max(1);
        let p = FILE_SOURCE_PARALLELISM;
        self.files = self.files.max(p).div_ceil(p) * p;
        self.file_keys = self.file_keys.max(1);
        self
    }

    /// Events per generator split.
    pub fn half(&self) -> u64 {
        self.events / GEN_SPLITS
    }

    /// Split of generator event `index` (`GeneratorSource` cuts `0..events`
    /// into [`GEN_SPLITS`] equal contiguous ranges).
    pub fn gen_split(&self, index: u64) -> u64 {
        index / self.half()
    }

    /// Running-count key of generator event `index`: confined to its split.
    pub fn gen_key(&self, index: u64) -> u64 {
        self.gen_split(index) * self.keys + index % self.keys
    }

    /// Event time of generator event `index`: its position in its split (ms),
    /// so both source subtasks advance event time at the same pace.
    pub fn gen_timestamp(&self, index: u64) -> i64 {
        (index % self.half()) as i64
    }

    /// Window key of generator event `index` (mixes both splits).
    pub fn window_key(&self, index: u64) -> u64 {
        index % WINDOW_KEYS
    }

    /// Start of the tumbling window holding event time `ts` (>= 0).
    pub fn window_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.window_ms as i64)
    }

    /// Value of line `line` of input file `file`.
    pub fn file_value(&self, file: u32, line: u64) -> u64 {
        splitmix64(self.data_seed ^ (u64::from(file) << 40) ^ line) % VALUE_MOD
    }

    /// Running-count key of a file line: confined to its file.
    pub fn file_key(&self, file: u32, line: u64) -> u64 {
        u64::from(file) * self.file_keys + line % self.file_keys
    }

    /// Text of line `line` of input file `file`.
    pub fn file_line(&self, file: u32, line: u64) -> String {
        format!("{file} {line} {}", self.file_value(file, line))
    }

    /// Name of input file `file`: `in-<file>-<salt>.txt`, with the smallest
    /// salt that makes file source subtask `file % 2` its owner, so the
    /// subtasks have equal work and finish together.
    pub fn file_name(&self, file: u32) -> String {
        let want = file % FILE_SOURCE_PARALLELISM;
        (0u32..)
            .map(|salt| format!("in-{file:04}-{salt}.txt"))
            .find(|name| cairn::connectors::file::file_owner(name, FILE_SOURCE_PARALLELISM) == want)
            .expect("some salt hashes to every subtask")
    }

    /// Write the input files into `dir` (created; existing files with the
    /// same content are kept).
    pub fn write_input(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for file in 0..self.files {
            let path = dir.join(self.file_name(file));
            let mut text = String::with_capacity(self.lines as usize * 20);
            for line in 0..self.lines {
                text.push_str(&self.file_line(file, line));
                text.push('\n');
            }
            if std::fs::read(&path).ok().as_deref() == Some(text.as_bytes()) {
                continue;
            }
            let tmp = dir.join(format!(".{}.tmp", self.file_name(file)));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// The job's command-line flags for this workload.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (k, v) in [
            ("--events", self.events),
            ("--keys", self.keys),
            ("--data-seed", self.data_seed),
            ("--window-ms", self.window_ms),
            ("--files", u64::from(self.files)),
            ("--lines", self.lines),
            ("--file-keys", self.file_keys),
        ] {
            a.push(k.to_string());
            a.push(v.to_string());
        }
        a
    }

    /// Apply one workload flag; false if `flag` is not a workload flag.
    pub fn set_flag(&mut self, flag: &str, value: &str) -> Result<bool, String> {
        let n = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: not a non-negative integer ({e})"))
        };
        match flag {
            "--events" => self.events = n()?,
            "--keys" => self.keys = n()?,
            "--data-seed" => self.data_seed = n()?,
            "--window-ms" => self.window_ms = n()?,
            "--files" => self.files = u32::try_from(n()?).map_err(|_| format!("{flag} {value}: too large"))?,
            "--lines" => self.lines = n()?,
            "--file-keys" => self.file_keys = n()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Output line of the generator pipeline's running count, one per event.
pub fn gen_running_line(key: u64, index: u64, count: u64, sum: u64) -> String {
    format!("g {key} {index} {count} {sum}")
}

/// Output line of a generator key's total, at the end of input.
pub fn gen_total_line(key: u64, count: u64, sum: u64) -> String {
    format!("G {key} {count} {sum}")
}

/// Output line of one fired window.
pub fn window_line(key: u64, start: i64, count: u64, sum: u64, min_index: u64, max_index: u64) -> String {
    format!("w {key} {start} {count} {sum} {min_index} {max_index}")
}

/// Output line of the file pipeline's running count, one per input line.
pub fn file_running_line(key: u64, file: u32, line: u64, count: u64, sum: u64) -> String {
    format!("f {key} {file} {line} {count} {sum}")
}

/// Output line of a file key's total, at the end of input.
pub fn file_total_line(key: u64, count: u64, sum: u64) -> String {
    format!("F {key} {count} {sum}")
}

/// SplitMix64's finaliser.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_their_split_and_file() {
        let w = Workload::default().normalized();
        for i in [0, 1, w.half() - 1, w.half(), w.events - 1] {
            assert_eq!(w.gen_key(i) / w.keys, w.gen_split(i));
        }
        assert_eq!(w.file_key(3, 7) / w.file_keys, 3);
    }

    #[test]
    fn file_names_are_balanced() {
        let w = Workload {
            files: 8,
            ..Workload::default()
        };
        let mut per = [0; FILE_SOURCE_PARALLELISM as usize];
        let mut names: Vec<String> = (0..w.files).map(|f| w.file_name(f)).collect();
        for n in &names {
            per[cairn::connectors::file::file_owner(n, FILE_SOURCE_PARALLELISM) as usize] += 1;
        }
        assert_eq!(per, [4, 4]);
        let sorted = {
            let mut s = names.clone();
            s.sort();
            s
        };
        assert_eq!(names, sorted, "names sort in file order");
        names.dedup();
        assert_eq!(names.len(), 8);
    }

    #[test]
    fn normalized_rounds_up() {
        let w = Workload {
            events: 7,
            files: 3,
            ..Workload::default()
        }
        .normalized();
        assert_eq!((w.events, w.files), (8, 4));
    }
}
