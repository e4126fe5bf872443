//! Printing and discarding sinks.

use std::fmt::Debug;
use std::io::Write;

use cairn_operators::{Sink, SinkContext};
use cairn_runtime::{OpResult, StreamRecord};

/// Prints each record as `prefix> {record:?}` (prefix = subtask number when
/// parallel, like Flink's print sink).
#[derive(Clone, Debug, Default)]
pub struct PrintSink {
    prefix: Option<String>,
    subtask: Option<u32>,
}

impl PrintSink {
    /// A print sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefix every line with `prefix`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        PrintSink {
            prefix: Some(prefix.into()),
            subtask: None,
        }
    }
}

impl<T: Debug + Send + 'static> Sink<T> for PrintSink {
    fn open(&mut self, ctx: &mut SinkContext<'_>) -> OpResult {
        if ctx.info.parallelism > 1 {
            self.subtask = Some(ctx.info.subtask + 1);
        }
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for r in batch {
            let res = match (&self.prefix, self.subtask) {
                (Some(p), Some(s)) => writeln!(out, "{p}:{s}> {:?}", r.value),
                (Some(p), None) => writeln!(out, "{p}> {:?}", r.value),
                (None, Some(s)) => writeln!(out, "{s}> {:?}", r.value),
                (None, None) => writeln!(out, "{:?}", r.value),
            };
            // A closed stdout (e.g. piped into `head`) ends printing, not the job.
            if res.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Drops every record (for benchmarks).
#[derive(Clone, Debug, Default)]
pub struct DiscardSink;

impl<T: Send + 'static> Sink<T> for DiscardSink {
    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        drop(batch);
        Ok(())
    }
}
