//! The short kill -9 run of the Kafka-in, Kafka-out job (cargo feature `kafka`, a broker
//! from `CAIRN_KAFKA_BOOTSTRAP`): killed at random moments and restarted from the latest
//! retained checkpoint, its output topic read with `isolation.level=read_committed` must
//! equal the failure-free output exactly. The long run is in docs/failure-testing.md.
#![cfg(feature = "kafka")]

use std::path::PathBuf;

use cairn_chaos::kafka::KafkaWorkload;
use cairn_chaos::{ChaosConfig, JobCommand, XorShift};

fn broker() -> Option<String> {
    match std::env::var("CAIRN_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var_os("CAIRN_REQUIRE_KAFKA").is_none(),
                "CAIRN_REQUIRE_KAFKA is set but CAIRN_KAFKA_BOOTSTRAP is not: start a broker with .ci/kafka/broker.sh"
            );
            eprintln!("SKIPPED: no Kafka broker (CAIRN_KAFKA_BOOTSTRAP is not set); see .ci/kafka/broker.sh");
            None
        }
    }
}

#[test]
fn kill9_short_run_kafka_in_kafka_out_keeps_output_exactly_once() {
    let Some(bootstrap) = broker() else { return };
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(XorShift::seed_from_entropy);
    let job = JobCommand::new(env!("CARGO_BIN_EXE_cairn-chaos-job"));
    let work: PathBuf = std::env::temp_dir().join(format!("cairn-chaos-test-kafka-{}", std::process::id()));
    let mut cfg = ChaosConfig::short(job, work.clone(), seed);
    cfg.kafka = Some(KafkaWorkload {
        bootstrap,
        input: String::new(),
        output: String::new(),
        prefix: String::new(),
        events: 40_000,
        keys: 200,
    });
    // About 2 s per round at 10,000 records/s per source subtask.
    cfg.rate = 10_000;
    let report = cairn_chaos::run(&cfg).expect("the harness runs");
    eprintln!("{report}");
    assert!(
        report.failure.is_none(),
        "kill -9 run (kafka) failed (replay with CAIRN_CHAOS_SEED={seed}):\n{report}"
    );
    assert_eq!(report.reference_matched, Some(true), "failure-free run = oracle");
    assert!(report.kills >= cfg.kills, "{report}");
    assert!(report.restarts_from_checkpoint >= 1, "{report}");
    let _ = std::fs::remove_dir_all(&work);
}
