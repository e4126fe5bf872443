//! Kafka -> keyed count -> Kafka: the Cairn side of the Kafka benchmark, and the driver
//! that fills the input, produces at a fixed rate and measures end-to-end latency for
//! both Cairn and Flink (`benches/flink-kafka/run.sh` runs everything against one broker).
//!
//! Input record: `"<key> <send time, µs since the epoch>"` on a topic with 2 partitions.
//! The job keeps a count per key in keyed `ValueState` and writes
//! `"<key> <count> <send time>"` to the output topic. Parallelism 2, checkpoints every 1 s.
//!
//! ```text
//! kafka_keyed_count fill    B TOPIC EVENTS KEYS             # input with send time 0
//! kafka_keyed_count cairn   B IN OUT GUARANTEE bounded|unbounded CHECKPOINT_DIR
//! kafka_keyed_count latency B IN OUT RATE SECONDS KEYS      # a job must be running on IN -> OUT
//! ```

/// As a job would run: with the allocator Cairn advises (`cairn::alloc`).
#[global_allocator]
static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::config::{Configuration, StartupOptions};
use cairn::kafka::rdkafka;
use cairn::kafka::{DeliveryGuarantee, KafkaRecord, KafkaSink, KafkaSource};
use cairn::prelude::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, (String, String), String> for Count {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        (key, sent): (String, String),
        ctx: &mut KeyedContext<'_, String, String>,
    ) -> OpResult {
        let state = self.count.as_ref().ok_or("state not registered")?;
        let n = state.value(ctx)?.unwrap_or(0) + 1;
        state.update(ctx, &n)?;
        ctx.collect(format!("{key} {n} {sent}"));
        Ok(())
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn producer(b: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    let mut r = BaseRecord::<(), str>::to(topic).partition(partition).payload(value);
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((_, back)) => {
                r = back;
                p.poll(Duration::from_millis(1));
            }
        }
    }
}

fn fill(b: &str, topic: &str, events: u64, keys: u64) {
    let p = producer(b);
    let started = Instant::now();
    for i in 0..events {
        send(&p, topic, (i % 2) as i32, &format!("k{} 0", i % keys));
        if i % 10_000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    eprintln!(
        "filled {topic} with {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn run_cairn(b: &str, input: &str, output: &str, guarantee: &str, bounded: bool, dir: &str) {
    let mut config = Configuration::new();
    for (k, v) in [
        ("parallelism.default", "2"),
        ("execution.checkpointing.interval", "1s"),
        ("execution.checkpointing.dir", dir),
        ("rest.port", "0"),
    ] {
        config.set(k, v).expect("config");
    }
    let env = StreamEnv::with_startup(StartupOptions {
        config,
        ..Default::default()
    });
    let mut source = KafkaSource::builder(|m: &cairn::kafka::KafkaMessage<'_>| {
        let v = std::str::from_utf8(m.value().unwrap_or_default()).map_err(|e| e.to_string())?;
        let (k, t) = v.split_once(' ').ok_or("no space")?;
        Ok((k.to_string(), t.to_string()))
    })
    .bootstrap_servers(b)
    .topics([input]);
    if bounded {
        source = source.bounded();
    }
    let sink = KafkaSink::builder(|line: &String| KafkaRecord::value(line.as_bytes()))
        .bootstrap_servers(b)
        .topic(output)
        .property("linger.ms", "5")
        .delivery_guarantee(DeliveryGuarantee::parse(guarantee).expect("guarantee"))
        .transactional_id_prefix(&format!("cairn-bench-{}", now_us()));
    env.source(source)
        .uid("kafka-in")
        .key_by(|e: &(String, String)| e.0.clone())
        .process(Count::default())
        .uid("counter")
        .sink(sink)
        .uid("kafka-out");
    let r = env.execute("kafka keyed count").expect("job");
    let secs = r.elapsed.as_secs_f64();
    println!(
        "engine=cairn guarantee={guarantee} events={} seconds={secs:.2} events_per_s={:.0} checkpoints={}",
        r.source_records,
        r.source_records as f64 / secs,
        r.checkpoints.len()
    );
}

/// Produce at `rate` events/s for `seconds`, read the output concurrently and print
/// end-to-end latency percentiles (send to receipt of the job's output record).
fn latency(b: &str, input: &str, output: &str, rate: u64, seconds: u64, keys: u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", format!("bench-latency-{}", now_us()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(output), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let (_, hi) = consumer
            .fetch_watermarks(output, p.id(), Duration::from_secs(10))
            .expect("offsets");
        tpl.add_partition_offset(output, p.id(), Offset::Offset(hi)).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let total = rate * seconds;
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(total as usize);
        let deadline = Instant::now() + Duration::from_secs(seconds + 60);
        while (lat.len() as u64) < total && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                let now = now_us();
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                if let Some(sent) = v.rsplit(' ').next().and_then(|s| s.parse::<i64>().ok()) {
                    if sent > 0 {
                        lat.push(now - sent);
                    }
                }
            }
        }
        lat
    });
    let p = producer(b);
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send(&p, input, (i % 2) as i32, &format!("k{} {}", i % keys, now_us()));
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let produced_s = started.elapsed().as_secs_f64();
    let mut lat = reader.join().expect("reader");
    lat.sort_unstable();
    let q = |f: f64| {
        lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let mut hist = BTreeMap::new();
    hist.insert("p50", q(0.5));
    hist.insert("p90", q(0.9));
    hist.insert("p99", q(0.99));
    hist.insert("p999", q(0.999));
    println!(
        "latency rate={rate} produced={total} in {produced_s:.1}s received={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} p999_ms={:.1} max_ms={:.1}",
        lat.len(),
        hist["p50"],
        hist["p90"],
        hist["p99"],
        hist["p999"],
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n = |i: usize| a[i].parse::<u64>().expect("a number");
    match a.first().map(String::as_str) {
        Some("fill") if a.len() == 5 => fill(&a[1], &a[2], n(3), n(4)),
        Some("cairn") if a.len() == 7 => run_cairn(&a[1], &a[2], &a[3], &a[4], a[5] == "bounded", &a[6]),
        Some("latency") if a.len() == 7 => latency(&a[1], &a[2], &a[3], n(4), n(5), n(6)),
        // `cargo bench` without arguments: nothing to do without a broker.
        _ => eprintln!("usage: see the doc comment of crates/cairn/benches/kafka_keyed_count.rs (run by benches/flink-kafka/run.sh)"),
    }
}
