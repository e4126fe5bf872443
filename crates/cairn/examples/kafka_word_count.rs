//! Kafka in, keyed state, exactly-once Kafka out: counts words of the lines in an input
//! topic and writes `<word> <count>` (key: the word) to an output topic, in Kafka
//! transactions committed with each checkpoint. Needs the cargo feature `kafka`.
//!
//! ```text
//! cargo run --release --features kafka --example kafka_word_count -- \
//!     -D execution.checkpointing.interval=1s -D execution.checkpointing.dir=/tmp/cairn-wc \
//!     -- --bootstrap-servers 127.0.0.1:9092 --input lines --output counts \
//!        [--group word-count] [--bounded] [--delivery-guarantee exactly-once] \
//!        [--property key=value]...
//! ```
//!
//! Read the output as a consumer with `isolation.level=read_committed`: it sees each
//! count exactly once, also after failures and restores (`-s <checkpoint>`).

/// The allocator Cairn advises for jobs (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use cairn::kafka::{DeliveryGuarantee, KafkaRecord, KafkaSink, KafkaSource};
use cairn::prelude::*;

/// Counts each word in keyed `ValueState` and emits its new count.
#[derive(Clone, Default)]
struct CountWords {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for CountWords {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(&mut self, word: String, ctx: &mut KeyedContext<'_, String, (String, u64)>) -> OpResult {
        let count = self.count.as_ref().ok_or("count state not registered")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        ctx.collect((word, n));
        Ok(())
    }
}

struct Args {
    bootstrap: String,
    input: String,
    output: String,
    group: Option<String>,
    bounded: bool,
    guarantee: DeliveryGuarantee,
    properties: Vec<(String, String)>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        bootstrap: String::new(),
        input: String::new(),
        output: String::new(),
        group: None,
        bounded: false,
        guarantee: DeliveryGuarantee::ExactlyOnce,
        properties: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--bounded" {
            a.bounded = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?.clone();
        match flag.as_str() {
            "--bootstrap-servers" => a.bootstrap = value,
            "--input" => a.input = value,
            "--output" => a.output = value,
            "--group" => a.group = Some(value),
            "--delivery-guarantee" => a.guarantee = DeliveryGuarantee::parse(&value).map_err(|e| e.to_string())?,
            "--property" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--property {value}: expected key=value"))?;
                a.properties.push((k.to_string(), v.to_string()));
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    for (name, v) in [
        ("--bootstrap-servers", &a.bootstrap),
        ("--input", &a.input),
        ("--output", &a.output),
    ] {
        if v.is_empty() {
            return Err(format!("{name} is required"));
        }
    }
    Ok(a)
}

fn main() -> Result<(), CairnError> {
    let env = StreamEnv::from_args()?;
    let args = parse_args(&env.user_args()).map_err(|e| {
        CairnError::from(cairn::runtime::JobError::setup(
            cairn::runtime::SetupErrorKind::Config,
            format!("kafka_word_count: {e}"),
        ))
    })?;
    let props = || args.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut source = KafkaSource::strings()
        .bootstrap_servers(&args.bootstrap)
        .topics([&args.input])
        .properties(props());
    if let Some(g) = &args.group {
        source = source.group_id(g);
    }
    if args.bounded {
        source = source.bounded();
    }
    let sink =
        KafkaSink::builder(|(word, n): &(String, u64)| KafkaRecord::value(format!("{word} {n}")).key(word.as_bytes()))
            .bootstrap_servers(&args.bootstrap)
            .topic(&args.output)
            .properties(props())
            .delivery_guarantee(args.guarantee);
    env.source(source)
        .uid("lines")
        .flat_map(|line: String| {
            line.split_whitespace()
                .map(|w| w.to_lowercase())
                .collect::<Vec<String>>()
        })
        .key_by(|w: &String| w.clone())
        .process(CountWords::default())
        .uid("word-counts")
        .sink(sink)
        .uid("counts-out");
    let r = env.execute("kafka word count")?;
    eprintln!(
        "kafka_word_count: job {} read {} lines in {:.1} s",
        r.job_id,
        r.source_records,
        r.elapsed.as_secs_f64()
    );
    Ok(())
}
