//! The expected output computed in plain Rust, without the engine: the
//! independent oracle the failure-free run and every killed-and-restarted run
//! are compared with.

use std::collections::{BTreeMap, HashMap};

use cairn::connectors::GeneratorSource;

use crate::workload::{
    file_running_line, file_total_line, gen_running_line, gen_total_line, window_line, Workload, VALUE_MOD,
};

/// Expected lines per sink directory, sorted.
pub type Output = BTreeMap<String, Vec<String>>;

/// What the job must commit, sink by sink (lines sorted).
pub fn expected_output(w: &Workload) -> Output {
    let mut out = Output::new();
    out.insert("gen".into(), generator_running(w));
    out.insert("windows".into(), generator_windows(w));
    out.insert("files".into(), file_running(w));
    for lines in out.values_mut() {
        lines.sort_unstable();
    }
    out
}

fn generator_value(gen: &GeneratorSource, index: u64) -> u64 {
    gen.event(index).value % VALUE_MOD
}

fn generator(w: &Workload) -> GeneratorSource {
    GeneratorSource::new(w.events, w.keys).seed(w.data_seed)
}

fn generator_running(w: &Workload) -> Vec<String> {
    let gen = generator(w);
    let mut lines = Vec::with_capacity(w.events as usize + 2 * w.keys as usize);
    let mut totals: HashMap<u64, (u64, u64)> = HashMap::new();
    // Each key lives in one split, whose events arrive in index order.
    for index in 0..w.events {
        let key = w.gen_key(index);
        let t = totals.entry(key).or_default();
        t.0 += 1;
        t.1 += generator_value(&gen, index);
        lines.push(gen_running_line(key, index, t.0, t.1));
    }
    for (key, (count, sum)) in totals {
        lines.push(gen_total_line(key, count, sum));
    }
    lines
}

fn generator_windows(w: &Workload) -> Vec<String> {
    let gen = generator(w);
    // (key, start) -> (count, sum, min index, max index)
    let mut windows: HashMap<(u64, i64), (u64, u64, u64, u64)> = HashMap::new();
    for index in 0..w.events {
        let key = w.window_key(index);
        let start = w.window_start(w.gen_timestamp(index));
        let e = windows.entry((key, start)).or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += generator_value(&gen, index);
        e.2 = e.2.min(index);
        e.3 = e.3.max(index);
    }
    windows
        .into_iter()
        .map(|((key, start), (count, sum, min, max))| window_line(key, start, count, sum, min, max))
        .collect()
}

fn file_running(w: &Workload) -> Vec<String> {
    let mut lines = Vec::with_capacity((u64::from(w.files) * w.lines) as usize);
    let mut totals: HashMap<u64, (u64, u64)> = HashMap::new();
    // Each key lives in one file, read in line order.
    for file in 0..w.files {
        for line in 0..w.lines {
            let key = w.file_key(file, line);
            let t = totals.entry(key).or_default();
            t.0 += 1;
            t.1 += w.file_value(file, line);
            lines.push(file_running_line(key, file, line, t.0, t.1));
        }
    }
    for (key, (count, sum)) in totals {
        lines.push(file_total_line(key, count, sum));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_workload_by_hand() {
        let w = Workload {
            events: 4,
            keys: 1,
            data_seed: 1,
            window_ms: 1,
            files: 2,
            lines: 2,
            file_keys: 1,
        };
        let out = expected_output(&w);
        let gen = &out["gen"];
        // 4 running lines + 2 totals (one key per split).
        assert_eq!(gen.len(), 6);
        assert!(gen.iter().any(|l| l.starts_with("g 0 1 2 ")), "{gen:?}");
        assert!(gen.iter().any(|l| l.starts_with("G 1 2 ")), "{gen:?}");
        // Windows of 1 ms: event time 0 and 1 per split; window keys by index.
        assert_eq!(out["windows"].len(), 4);
        assert_eq!(out["files"].len(), 4 + 2);
    }
}
