//! The Configuration API: set/get, validation of every type, ranges, merge, entries.

use std::path::PathBuf;
use std::time::Duration;

use cairn_config::{
    options, ClaimMode, ConfigErrorKind, Configuration, ExternalizedCheckpointRetention, StateBackendType,
};

fn set_err(key: &str, value: &str) -> String {
    let mut c = Configuration::new();
    let e = c.set(key, value).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::InvalidValue, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("'{key}'")), "message must name the key: {msg}");
    assert!(
        msg.contains(&format!("'{}'", value.trim())),
        "message must name the value: {msg}"
    );
    msg
}

#[test]
fn defaults() {
    let c = Configuration::new();
    assert_eq!(c.get(&options::PARALLELISM_DEFAULT), 1);
    assert_eq!(c.get(&options::MAX_PARALLELISM), None);
    assert!(!c.get(&options::AUTO_GENERATE_UIDS));
    assert_eq!(c.get(&options::PIPELINE_NAME), None);
    assert_eq!(c.get(&options::CHECKPOINTING_INTERVAL), None);
    assert!(!c.checkpointing_enabled());
    assert_eq!(c.get(&options::CHECKPOINTING_TIMEOUT), Duration::from_secs(600));
    assert_eq!(c.get(&options::CHECKPOINTING_MIN_PAUSE), Duration::ZERO);
    assert_eq!(c.get(&options::CHECKPOINTING_MAX_CONCURRENT), 1);
    assert_eq!(c.get(&options::CHECKPOINTING_TOLERABLE_FAILURES), 0);
    assert_eq!(c.get(&options::CHECKPOINTS_NUM_RETAINED), 1);
    assert_eq!(
        c.get(&options::EXTERNALIZED_CHECKPOINT_RETENTION),
        ExternalizedCheckpointRetention::NoExternalizedCheckpoints
    );
    assert!(!c.get(&options::CHECKPOINTING_INCREMENTAL));
    assert_eq!(c.get(&options::STATE_BACKEND_TYPE), StateBackendType::HashMap);
    assert_eq!(c.get(&options::REST_ADDRESS), "127.0.0.1");
    assert_eq!(c.get(&options::REST_PORT), 8081);
    assert_eq!(c.get(&options::RESTORE_CLAIM_MODE), ClaimMode::NoClaim);
    assert!(!c.get(&options::SAVEPOINT_IGNORE_UNCLAIMED_STATE));
    assert_eq!(c.get(&options::RUNTIME_BATCH_SIZE), 1024);
    assert_eq!(c.get(&options::RUNTIME_CHANNEL_CAPACITY), 16);
    assert_eq!(c.get_optional(&options::PARALLELISM_DEFAULT), None);
    assert!(!c.contains(&options::PARALLELISM_DEFAULT));
}

#[test]
fn set_get_optional_contains() {
    let mut c = Configuration::new();
    c.set("parallelism.default", " 8 ").unwrap();
    assert_eq!(c.get(&options::PARALLELISM_DEFAULT), 8);
    assert_eq!(c.get_optional(&options::PARALLELISM_DEFAULT), Some(8));
    assert!(c.contains(&options::PARALLELISM_DEFAULT));
    assert!(c.remove(&options::PARALLELISM_DEFAULT));
    assert_eq!(c.get(&options::PARALLELISM_DEFAULT), 1);
}

#[test]
fn set_alias_stores_canonical() {
    let mut c = Configuration::new();
    c.set("state.checkpoints.dir", "file:///x/y").unwrap();
    assert_eq!(
        c.entries().collect::<Vec<_>>(),
        vec![("execution.checkpointing.dir", "file:///x/y")]
    );
    assert_eq!(c.get(&options::CHECKPOINTS_DIR), Some(PathBuf::from("/x/y")));
}

#[test]
fn set_unknown_key() {
    let mut c = Configuration::new();
    let e = c.set("execution.checkpointing.intervall", "1 s").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    assert_eq!(
        e.to_string(),
        "code: unknown configuration key 'execution.checkpointing.intervall' (did you mean 'execution.checkpointing.interval'?)"
    );
}

#[test]
fn bad_integers() {
    assert!(set_err("parallelism.default", "four").contains("not a whole number"));
    assert!(set_err("parallelism.default", "0").contains("must be between 1 and 32768"));
    assert!(set_err("parallelism.default", "-3").contains("must not be negative"));
    assert!(set_err("rest.port", "70000").contains("maximum is 65535"));
    assert!(set_err("cairn.runtime.batch-size", "0").contains("between 1 and 65536"));
    assert!(set_err("cairn.runtime.channel-capacity", "0").contains("between 1 and 4096"));
    assert!(set_err("execution.checkpointing.max-concurrent-checkpoints", "0").contains("between 1 and 2147483647"));
    assert!(set_err("execution.checkpointing.num-retained", "0").contains("between 1 and 2147483647"));
}

#[test]
fn max_parallelism_range_and_minus_one() {
    let mut c = Configuration::new();
    c.set("pipeline.max-parallelism", "-1").unwrap();
    assert_eq!(c.get(&options::MAX_PARALLELISM), None);
    c.set("pipeline.max-parallelism", "32768").unwrap();
    assert_eq!(c.get(&options::MAX_PARALLELISM), Some(32768));
    c.set("pipeline.max-parallelism", "1").unwrap();
    assert_eq!(c.get(&options::MAX_PARALLELISM), Some(1));
    let m = set_err("pipeline.max-parallelism", "32769");
    assert!(m.contains("between 1 and 32768"), "{m}");
    assert!(set_err("pipeline.max-parallelism", "0").contains("between 1 and 32768"));
}

#[test]
fn bad_booleans() {
    let m = set_err("pipeline.auto-generate-uids", "yes");
    assert!(m.contains("use 'true' or 'false'"), "{m}");
    let mut c = Configuration::new();
    c.set("pipeline.auto-generate-uids", "True").unwrap();
    assert!(c.get(&options::AUTO_GENERATE_UIDS));
}

#[test]
fn bad_durations() {
    let m = set_err("execution.checkpointing.interval", "abc");
    assert!(m.contains("not a duration; use e.g. '10 s', '500 ms', '1 min'"), "{m}");
    let m = set_err("execution.checkpointing.timeout", "10 fortnights");
    assert!(m.contains("unknown time unit 'fortnights'"), "{m}");
    let m = set_err("execution.checkpointing.interval", "0");
    assert!(m.contains("leave the key unset"), "{m}");
    assert!(set_err("execution.checkpointing.timeout", "0 s").contains("between 1 ms and 365 d"));
}

#[test]
fn durations_in_all_unit_spellings_via_set() {
    let cases = [
        ("100", 100),
        ("100ms", 100),
        ("100 milli", 100),
        ("100 millis", 100),
        ("100 millisecond", 100),
        ("100 milliseconds", 100),
        ("3s", 3_000),
        ("3 sec", 3_000),
        ("3 secs", 3_000),
        ("3 second", 3_000),
        ("3 seconds", 3_000),
        ("2min", 120_000),
        ("2 minute", 120_000),
        ("2 minutes", 120_000),
        ("1h", 3_600_000),
        ("1 hour", 3_600_000),
        ("2 hours", 7_200_000),
        ("1d", 86_400_000),
        ("1 day", 86_400_000),
        ("2 days", 172_800_000),
    ];
    for (text, ms) in cases {
        let mut c = Configuration::new();
        c.set("execution.checkpointing.min-pause", text).unwrap();
        assert_eq!(
            c.get(&options::CHECKPOINTING_MIN_PAUSE),
            Duration::from_millis(ms),
            "{text}"
        );
    }
}

#[test]
fn bad_enums_list_accepted_values() {
    let m = set_err("execution.checkpointing.mode", "exactly-once");
    assert!(m.contains("EXACTLY_ONCE, AT_LEAST_ONCE"), "{m}");
    let m = set_err("state.backend.type", "lsm");
    assert!(m.contains("hashmap, rocksdb"), "{m}");
    let m = set_err("restart-strategy.type", "sometimes");
    assert!(m.contains("fixed-delay") && m.contains("exponential-delay"), "{m}");
    let m = set_err("execution.checkpointing.externalized-checkpoint-retention", "KEEP");
    assert!(m.contains("RETAIN_ON_CANCELLATION"), "{m}");
    let m = set_err("execution.state-recovery.claim-mode", "LEGACY");
    assert!(m.contains("CLAIM, NO_CLAIM"), "{m}");
}

#[test]
fn bad_floats_and_paths() {
    assert!(set_err("restart-strategy.exponential-delay.backoff-multiplier", "x").contains("not a number"));
    assert!(set_err("restart-strategy.exponential-delay.backoff-multiplier", "0.5").contains("between 1.0 and 1000.0"));
    assert!(set_err("restart-strategy.exponential-delay.jitter-factor", "1.5").contains("between 0.0 and 1.0"));
    assert!(set_err("state.backend.rocksdb.localdir", "s3://bucket/rocksdb").contains("not supported"));
    assert!(set_err("state.backend.rocksdb.memory.write-buffer-ratio", "1.5").contains("between 0.01 and 0.99"));
    assert!(set_err("state.backend.rocksdb.writebuffer.size", "10 kb").contains("between 1 mb and 1 tb"));
    assert!(set_err("taskmanager.memory.managed.size", "lots").contains("memory size"));
}

#[test]
fn set_option_from_code_checks_ranges_and_none_unsets() {
    let mut c = Configuration::new();
    c.set_option(&options::CHECKPOINTING_INTERVAL, Some(Duration::from_secs(90)))
        .unwrap();
    assert_eq!(
        c.entries().collect::<Vec<_>>(),
        vec![("execution.checkpointing.interval", "90 s")]
    );
    assert!(c.checkpointing_enabled());
    c.set_option(&options::CHECKPOINTING_INTERVAL, None).unwrap();
    assert!(!c.checkpointing_enabled());
    assert!(c.is_empty());
    let e = c.set_option(&options::PARALLELISM_DEFAULT, 0).unwrap_err();
    assert!(e.to_string().contains("'parallelism.default'"), "{e}");
    assert!(e.to_string().contains("between 1 and 32768"), "{e}");
    c.set_option(&options::STATE_BACKEND_TYPE, StateBackendType::RocksDb)
        .unwrap();
    assert_eq!(c.get(&options::STATE_BACKEND_TYPE), StateBackendType::RocksDb);
    c.set_option(&options::SAVEPOINT_DIR, Some(PathBuf::from("/sp")))
        .unwrap();
    assert_eq!(c.get(&options::SAVEPOINT_DIR), Some(PathBuf::from("/sp")));
}

#[test]
fn merge_other_wins_and_entries_are_sorted() {
    let mut a = Configuration::new();
    a.set("rest.port", "1").unwrap();
    a.set("parallelism.default", "2").unwrap();
    let mut b = Configuration::new();
    b.set("rest.port", "3").unwrap();
    b.set("cairn.runtime.batch-size", "10").unwrap();
    a.merge(&b);
    assert_eq!(
        a.entries().collect::<Vec<_>>(),
        vec![
            ("cairn.runtime.batch-size", "10"),
            ("parallelism.default", "2"),
            ("rest.port", "3"),
        ]
    );
}

#[test]
fn allowed_path_roots_split() {
    let mut c = Configuration::new();
    assert!(c.allowed_path_roots().is_empty());
    c.set("rest.allowed-path-roots", " /data/sp , file:///mnt/chk,, ")
        .unwrap();
    assert_eq!(
        c.allowed_path_roots(),
        vec![PathBuf::from("/data/sp"), PathBuf::from("/mnt/chk")]
    );
}

#[test]
fn error_is_std_error() {
    let mut c = Configuration::new();
    let e = c.set("nope", "1").unwrap_err();
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("'nope'"));
}
