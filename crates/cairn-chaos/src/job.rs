//! The job the harness kills: a real Cairn job over bounded, deterministic
//! input with keyed state, timers, event-time windows and exactly-once file
//! sinks (see [`crate::workload`] for what it computes).
//!
//! ```text
//! cairn-chaos-job [-p N] [-s CHECKPOINT] [-D key=value]... -- --out DIR --input DIR
//!                 [--rate EVENTS_PER_S] [--file-rate LINES_PER_S] [--sink-rate LINES_PER_S]
//!                 [--part-bytes B] [workload flags]
//! ```
//!
//! It prints two markers on stderr for the harness, once per process:
//! `CHAOS first-record` when a running-count function processes its first
//! record, and `CHAOS end-of-input` when the first end-of-input timer fires.

#[cfg(feature = "kafka")]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn::connectors::file::{FileSink, FileSource};
use cairn::prelude::*;

use crate::workload::{
    file_running_line, file_total_line, gen_running_line, gen_total_line, window_line, Workload,
    FILE_SOURCE_PARALLELISM, GEN_SPLITS, VALUE_MOD,
};

/// Marker printed (stderr) when the first record is processed.
pub const MARK_FIRST_RECORD: &str = "CHAOS first-record";
/// Marker printed (stderr) when the first end-of-input timer fires.
pub const MARK_END_OF_INPUT: &str = "CHAOS end-of-input";

static FIRST_RECORD: AtomicBool = AtomicBool::new(false);
static END_OF_INPUT: AtomicBool = AtomicBool::new(false);

fn mark(flag: &AtomicBool, text: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("{text}");
    }
}

/// Print [`MARK_FIRST_RECORD`] (once per process).
pub fn mark_first_record() {
    mark(&FIRST_RECORD, MARK_FIRST_RECORD);
}

/// Print [`MARK_END_OF_INPUT`] (once per process).
pub fn mark_end_of_input() {
    mark(&END_OF_INPUT, MARK_END_OF_INPUT);
}

/// The job's own flags (after the engine's startup flags).
#[derive(Clone, Debug)]
pub struct JobArgs {
    pub out: PathBuf,
    pub input: PathBuf,
    /// Generator events per second per source subtask (0: unlimited).
    pub rate: u64,
    /// Input lines per second per file source subtask (0: unlimited).
    pub file_rate: u64,
    /// Lines per second per subtask of the `gen` sink (0: unlimited): a
    /// throttled sink, so the generator pipeline runs under backpressure.
    pub sink_rate: u64,
    /// Roll the `gen` sink's part files at this size too (0: only at checkpoints).
    pub part_bytes: u64,
    pub workload: Workload,
    /// Run the Kafka-in, Kafka-out pipeline instead of the others.
    #[cfg(feature = "kafka")]
    pub kafka: Option<crate::kafka::KafkaWorkload>,
}

impl JobArgs {
    /// Parse `--flag value` pairs.
    pub fn parse(args: &[String]) -> Result<JobArgs, String> {
        let mut out = None;
        let mut input = None;
        let mut rate = 0;
        let mut file_rate = 0;
        let mut sink_rate = 0;
        let mut part_bytes = 0;
        let mut workload = Workload::default();
        #[cfg(feature = "kafka")]
        let mut kafka: BTreeMap<String, String> = BTreeMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let n = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("{flag} {value}: not a non-negative integer ({e})"))
            };
            match flag.as_str() {
                "--out" => out = Some(PathBuf::from(value)),
                "--input" => input = Some(PathBuf::from(value)),
                "--rate" => rate = n()?,
                "--file-rate" => file_rate = n()?,
                "--sink-rate" => sink_rate = n()?,
                "--part-bytes" => part_bytes = n()?,
                #[cfg(feature = "kafka")]
                f if f.starts_with("--kafka-") => {
                    kafka.insert(f.to_string(), value.clone());
                }
                _ => {
                    if !workload.set_flag(flag, value)? {
                        return Err(format!("unknown flag {flag}"));
                    }
                }
            }
        }
        #[cfg(feature = "kafka")]
        let kafka = if kafka.is_empty() {
            None
        } else {
            let get = |k: &str| {
                kafka
                    .get(k)
                    .cloned()
                    .ok_or_else(|| format!("{k} is required with the other --kafka-* flags"))
            };
            let num = |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|e| format!("{k}: {e}")) };
            Some(crate::kafka::KafkaWorkload {
                bootstrap: get("--kafka-bootstrap")?,
                input: get("--kafka-input")?,
                output: get("--kafka-output")?,
                prefix: get("--kafka-prefix")?,
                events: num("--kafka-events")?,
                keys: num("--kafka-keys")?.max(1),
            })
        };
        Ok(JobArgs {
            #[cfg(feature = "kafka")]
            kafka,
            out: out.ok_or("--out DIR is required")?,
            input: input.ok_or("--input DIR is required")?,
            rate,
            file_rate,
            sink_rate,
            part_bytes,
            workload: workload.normalized(),
        })
    }
}

/// Running count and sum per generator key; a total at the end of input.
#[derive(Clone, Default)]
struct RunningGen {
    totals: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, String> for RunningGen {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        mark(&FIRST_RECORD, MARK_FIRST_RECORD);
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (mut count, mut sum) = state.value(ctx)?.unwrap_or((0, 0));
        count += 1;
        sum += e.value % VALUE_MOD;
        state.update(ctx, &(count, sum))?;
        if count == 1 {
            ctx.register_event_time_timer(i64::MAX)?;
        }
        let key = *ctx.key();
        ctx.collect(gen_running_line(key, e.index, count, sum));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        mark(&END_OF_INPUT, MARK_END_OF_INPUT);
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (count, sum) = state.value(ctx)?.unwrap_or((0, 0));
        let key = *ctx.key();
        ctx.collect(gen_total_line(key, count, sum));
        Ok(())
    }
}

/// A parsed input line.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
struct FileRecord {
    file: u32,
    line: u64,
    value: u64,
}

fn parse_line(text: &str) -> FileRecord {
    let mut it = text.split(' ').map(|s| s.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten(), it.next().flatten()) {
        (Some(file), Some(line), Some(value)) if file <= u64::from(u32::MAX) => FileRecord {
            file: file as u32,
            line,
            value,
        },
        // Shows up as a mismatch rather than hiding the bad line.
        _ => FileRecord {
            file: u32::MAX,
            line: u64::MAX,
            value: 0,
        },
    }
}

/// Running count and sum per file key; a total at the end of input.
#[derive(Clone, Default)]
struct RunningFiles {
    totals: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, FileRecord, String> for RunningFiles {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.totals = Some(ctx.value_state(ValueStateDescriptor::new("totals"))?);
        Ok(())
    }

    fn process_element(&mut self, r: FileRecord, ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        mark(&FIRST_RECORD, MARK_FIRST_RECORD);
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (mut count, mut sum) = state.value(ctx)?.unwrap_or((0, 0));
        count += 1;
        sum += r.value;
        state.update(ctx, &(count, sum))?;
        if count == 1 {
            ctx.register_event_time_timer(i64::MAX)?;
        }
        let key = *ctx.key();
        ctx.collect(file_running_line(key, r.file, r.line, count, sum));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, u64, String>) -> OpResult {
        mark(&END_OF_INPUT, MARK_END_OF_INPUT);
        let state = self.totals.as_ref().ok_or("state not registered")?;
        let (count, sum) = state.value(ctx)?.unwrap_or((0, 0));
        let key = *ctx.key();
        ctx.collect(file_total_line(key, count, sum));
        Ok(())
    }
}

/// Count, sum, min and max index of a window's events.
#[derive(Clone, Default)]
struct WindowStats;

impl ProcessWindowFunction<u64, GeneratedEvent, String> for WindowStats {
    fn process(
        &mut self,
        key: &u64,
        window: &TimeWindow,
        elements: Vec<GeneratedEvent>,
        out: &mut WindowCollector<'_, String>,
    ) -> OpResult {
        let count = elements.len() as u64;
        let sum = elements.iter().map(|e| e.value % VALUE_MOD).sum();
        let min = elements.iter().map(|e| e.index).min().unwrap_or(0);
        let max = elements.iter().map(|e| e.index).max().unwrap_or(0);
        out.collect(window_line(*key, window.start, count, sum, min, max));
        Ok(())
    }
}

/// Passes records through at most `rate` per second (per subtask), so the file
/// pipeline lasts as long as the rate-limited generator.
#[derive(Clone)]
pub struct Throttle {
    rate: u64,
    started: Option<Instant>,
    seen: u64,
}

impl Throttle {
    /// At most `rate` records per second (0: unlimited).
    pub fn new(rate: u64) -> Self {
        Throttle {
            rate,
            started: None,
            seen: 0,
        }
    }
}

impl<T: Data> ProcessFunction<T, T> for Throttle {
    fn process_element(&mut self, line: T, ctx: &mut ProcessContext<'_, T>) -> OpResult {
        if self.rate > 0 {
            let started = *self.started.get_or_insert_with(Instant::now);
            self.seen += 1;
            if self.seen % 32 == 0 {
                let due = started + Duration::from_secs_f64(self.seen as f64 / self.rate as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        ctx.collect(line);
        Ok(())
    }
}

/// Build and run the job (the `cairn-chaos-job` binary's main).
pub fn run() -> Result<(), CairnError> {
    let env = StreamEnv::from_args()?;
    let args = JobArgs::parse(&env.user_args()).map_err(|e| {
        CairnError::from(cairn::runtime::JobError::setup(
            cairn::runtime::SetupErrorKind::Config,
            format!("cairn-chaos-job: {e}"),
        ))
    })?;
    env.show_progress(true);
    #[cfg(feature = "kafka")]
    if let Some(k) = &args.kafka {
        crate::kafka::build(&env, k, args.rate);
        let result = env.execute("cairn chaos job (kafka)")?;
        eprintln!(
            "CHAOS finished job {} ({} source records, {} checkpoints attempted)",
            result.job_id,
            result.source_records,
            result.checkpoints.len()
        );
        return Ok(());
    }
    let w = args.workload.clone();

    // Generator pipeline: running counts and windows.
    let mut gen = GeneratorSource::new(w.events, w.keys)
        .seed(w.data_seed)
        .splits(GEN_SPLITS as u32);
    if args.rate > 0 {
        gen = gen.rate(args.rate);
    }
    let wt = w.clone();
    let events = env
        .source_with_watermarks(
            gen,
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(move |e: &GeneratedEvent, _| wt.gen_timestamp(e.index)),
        )
        .set_parallelism(GEN_SPLITS as u32)
        .uid("chaos-generator")
        .name("generator");
    let wk = w.clone();
    let mut gen_sink = FileSink::lines(args.out.join("gen"));
    if args.part_bytes > 0 {
        gen_sink = gen_sink.max_part_size(args.part_bytes);
    }
    let mut running = events
        .key_by(move |e: &GeneratedEvent| wk.gen_key(e.index))
        .process(RunningGen::default())
        .uid("chaos-gen-running")
        .name("running count (generator)");
    if args.sink_rate > 0 {
        // Chained into the sink's task: the keyed edge in front of it backs up.
        running = running
            .process(Throttle {
                rate: args.sink_rate,
                started: None,
                seen: 0,
            })
            .uid("chaos-gen-sink-throttle")
            .name("throttle (sink)");
    }
    running.sink(gen_sink).uid("chaos-gen-sink").name("sink gen");
    let ww = w.clone();
    events
        .key_by(move |e: &GeneratedEvent| ww.window_key(e.index))
        .window(TumblingEventTimeWindows::of(Duration::from_millis(w.window_ms)))
        .process(WindowStats)
        .uid("chaos-gen-windows")
        .name("window stats")
        .sink(FileSink::lines(args.out.join("windows")))
        .uid("chaos-windows-sink")
        .name("sink windows");

    // File pipeline: running counts over generated files.
    let wf = w.clone();
    env.source(FileSource::new(&args.input).suffix(".txt"))
        .set_parallelism(FILE_SOURCE_PARALLELISM)
        .uid("chaos-files")
        .name("files")
        .process(Throttle {
            rate: args.file_rate,
            started: None,
            seen: 0,
        })
        .set_parallelism(FILE_SOURCE_PARALLELISM)
        .uid("chaos-throttle")
        .name("throttle")
        .map(|l: String| parse_line(&l))
        .set_parallelism(FILE_SOURCE_PARALLELISM)
        .name("parse")
        .key_by(move |r: &FileRecord| wf.file_key(r.file, r.line))
        .process(RunningFiles::default())
        .uid("chaos-files-running")
        .name("running count (files)")
        .sink(FileSink::lines(args.out.join("files")))
        .uid("chaos-files-sink")
        .name("sink files");

    let result = env.execute("cairn chaos job")?;
    eprintln!(
        "CHAOS finished job {} ({} source records, {} checkpoints attempted)",
        result.job_id,
        result.source_records,
        result.checkpoints.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_flags() {
        let r = parse_line("3 17 999");
        assert_eq!((r.file, r.line, r.value), (3, 17, 999));
        assert_eq!(parse_line("x").file, u32::MAX);
        let args: Vec<String> = ["--out", "o", "--input", "i", "--rate", "5", "--events", "9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = JobArgs::parse(&args).unwrap();
        assert_eq!(a.rate, 5);
        assert_eq!(a.workload.events, 10);
        assert!(JobArgs::parse(&args[..2]).is_err());
    }
}
