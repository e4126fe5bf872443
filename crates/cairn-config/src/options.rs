//! Every option Cairn knows, with Flink's keys, deprecated keys and defaults.
//!
//! Cairn-specific options and deliberate differences from Flink say so in their description.

use std::path::PathBuf;
use std::time::Duration;

use crate::option::{AnyOption, ConfigOption};
use crate::value::{
    CheckpointingMode, ClaimMode, ExternalizedCheckpointRetention, FromConfigStr, MemorySize, RestartStrategyType,
    StateBackendType, TimerServiceFactory,
};

/// Upper bound for `pipeline.max-parallelism` (the number of key groups), as in Flink.
pub const MAX_PARALLELISM_UPPER_BOUND: u32 = 32_768;

fn checkpoint_interval_check(v: &Option<Duration>) -> Result<(), String> {
    match v {
        Some(d) if d.is_zero() => {
            Err("must be longer than 0 ms; to disable checkpointing leave the key unset".to_string())
        }
        _ => Ok(()),
    }
}

/// Largest accepted duration of every duration option: a year. Longer waits are not useful
/// and would overflow time arithmetic (an `Instant` plus a duration).
pub const MAX_DURATION: &str = "365 d";

/// Largest accepted count for options Flink declares as a Java `int`.
pub const MAX_INT: &str = "2147483647";

fn parse_max_parallelism(s: &str) -> Result<Option<u32>, String> {
    if s.trim() == "-1" {
        return Ok(None);
    }
    u32::from_config_str(s).map(Some)
}

/// A directory on this machine (backends keep their working files there).
fn local_dir_check(v: &Option<PathBuf>) -> Result<(), String> {
    match v.as_ref().map(|p| p.to_string_lossy().into_owned()) {
        Some(p) if p.contains("://") => Err(format!(
            "'{p}' is not a local directory: remote schemes are not supported here; give a local path"
        )),
        _ => Ok(()),
    }
}

// ---- pipeline ---------------------------------------------------------------------------------

/// `parallelism.default`: parallelism of operators that do not set their own.
pub static PARALLELISM_DEFAULT: ConfigOption<u32> = ConfigOption::new(
    "parallelism.default",
    "1",
    "Parallelism of operators that do not set one.",
)
.with_range("1", "32768");

/// `pipeline.max-parallelism`: number of key groups; `None` (or `-1`) means derived from the
/// parallelism as `min(max(next_power_of_two(1.5 * parallelism), 128), 32768)`.
pub static MAX_PARALLELISM: ConfigOption<Option<u32>> = ConfigOption::optional(
    "pipeline.max-parallelism",
    "Maximum parallelism = number of key groups, 1..=32768. Unset or -1: derived from the \
     parallelism. Cannot change across a restore.",
)
.with_parser(parse_max_parallelism)
.with_optional_range("1", "32768")
.with_range_note("or -1 for the default");

/// `pipeline.auto-generate-uids`.
pub static AUTO_GENERATE_UIDS: ConfigOption<bool> = ConfigOption::new(
    "pipeline.auto-generate-uids",
    "false",
    "Whether stateful operators without a uid get a generated one. Cairn's default is false \
     (Flink's is true): a stateful operator without a uid is an error, because generated ids \
     break savepoint compatibility when the job changes.",
);

/// `pipeline.name`.
pub static PIPELINE_NAME: ConfigOption<Option<String>> =
    ConfigOption::optional("pipeline.name", "Name of the job, shown in the REST API and logs.");

// ---- checkpointing ----------------------------------------------------------------------------

/// `execution.checkpointing.interval`: unset means checkpointing is disabled.
pub static CHECKPOINTING_INTERVAL: ConfigOption<Option<Duration>> = ConfigOption::optional(
    "execution.checkpointing.interval",
    "Time between the starts of two periodic checkpoints. Unset: checkpointing is disabled.",
)
.with_check(checkpoint_interval_check)
.with_optional_range("1 ms", MAX_DURATION);

/// `execution.checkpointing.mode`.
pub static CHECKPOINTING_MODE: ConfigOption<CheckpointingMode> = ConfigOption::new(
    "execution.checkpointing.mode",
    "EXACTLY_ONCE",
    "EXACTLY_ONCE aligns barriers at operators with several inputs; AT_LEAST_ONCE does not.",
);

/// `execution.checkpointing.timeout`.
pub static CHECKPOINTING_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "execution.checkpointing.timeout",
    "10 min",
    "A checkpoint not complete after this time is aborted.",
)
.with_range("1 ms", MAX_DURATION);

/// `execution.checkpointing.min-pause`.
pub static CHECKPOINTING_MIN_PAUSE: ConfigOption<Duration> = ConfigOption::new(
    "execution.checkpointing.min-pause",
    "0 ms",
    "Minimum time between the end of one checkpoint and the start of the next.",
)
.with_range("0 ms", MAX_DURATION);

/// `execution.checkpointing.max-concurrent-checkpoints`.
pub static CHECKPOINTING_MAX_CONCURRENT: ConfigOption<u32> = ConfigOption::new(
    "execution.checkpointing.max-concurrent-checkpoints",
    "1",
    "How many checkpoints may be in progress at once.",
)
.with_range("1", MAX_INT);

/// `execution.checkpointing.tolerable-failed-checkpoints`.
pub static CHECKPOINTING_TOLERABLE_FAILURES: ConfigOption<u32> = ConfigOption::new(
    "execution.checkpointing.tolerable-failed-checkpoints",
    "0",
    "Consecutive checkpoint failures tolerated before the job fails over.",
)
.with_range("0", MAX_INT);

/// `execution.checkpointing.dir` (alias `state.checkpoints.dir`).
pub static CHECKPOINTS_DIR: ConfigOption<Option<PathBuf>> = ConfigOption::optional(
    "execution.checkpointing.dir",
    "Directory for checkpoints: <dir>/<job-id>/chk-<n>/.",
)
.with_aliases(&["state.checkpoints.dir"]);

/// `execution.checkpointing.savepoint-dir` (alias `state.savepoints.dir`).
pub static SAVEPOINT_DIR: ConfigOption<Option<PathBuf>> = ConfigOption::optional(
    "execution.checkpointing.savepoint-dir",
    "Default directory for savepoints when the trigger names none.",
)
.with_aliases(&["state.savepoints.dir"]);

/// `execution.checkpointing.num-retained` (alias `state.checkpoints.num-retained`).
pub static CHECKPOINTS_NUM_RETAINED: ConfigOption<u32> = ConfigOption::new(
    "execution.checkpointing.num-retained",
    "1",
    "Number of latest completed checkpoints kept.",
)
.with_aliases(&["state.checkpoints.num-retained"])
.with_range("1", MAX_INT);

/// `execution.checkpointing.externalized-checkpoint-retention`.
pub static EXTERNALIZED_CHECKPOINT_RETENTION: ConfigOption<ExternalizedCheckpointRetention> = ConfigOption::new(
    "execution.checkpointing.externalized-checkpoint-retention",
    "NO_EXTERNALIZED_CHECKPOINTS",
    "What happens to retained checkpoints when the job is cancelled: \
         RETAIN_ON_CANCELLATION keeps them, DELETE_ON_CANCELLATION deletes them, \
         NO_EXTERNALIZED_CHECKPOINTS (Flink 2's default) deletes them whenever the job ends.",
);

/// `execution.checkpointing.incremental` (alias `state.backend.incremental`).
pub static CHECKPOINTING_INCREMENTAL: ConfigOption<bool> = ConfigOption::new(
    "execution.checkpointing.incremental",
    "false",
    "Incremental checkpoints: upload only files not in the last completed checkpoint (rocksdb backend).",
)
.with_aliases(&["state.backend.incremental"]);

/// `execution.checkpointing.unaligned.enabled` (alias `execution.checkpointing.unaligned`).
pub static CHECKPOINTING_UNALIGNED: ConfigOption<bool> = ConfigOption::new(
    "execution.checkpointing.unaligned.enabled",
    "false",
    "Unaligned checkpoints (EXACTLY_ONCE only): a barrier overtakes the records queued in front \
     of it, the task snapshots at once, and the overtaken records are stored with the checkpoint \
     (channel state). Savepoints stay aligned.",
)
.with_aliases(&["execution.checkpointing.unaligned"]);

/// `execution.checkpointing.aligned-checkpoint-timeout` (alias `execution.checkpointing.alignment-timeout`).
pub static CHECKPOINTING_ALIGNED_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "execution.checkpointing.aligned-checkpoint-timeout",
    "0 ms",
    "With unaligned checkpoints enabled: 0 starts every checkpoint unaligned; a positive value \
     starts it aligned and switches a task to unaligned once this much time has passed since \
     the checkpoint was triggered and the task is not aligned yet.",
)
.with_aliases(&["execution.checkpointing.alignment-timeout"])
.with_range("0 ms", MAX_DURATION);

/// `execution.checkpointing.unaligned.max-subtasks-per-channel-state-file`.
pub static CHECKPOINTING_MAX_SUBTASKS_PER_CHANNEL_STATE_FILE: ConfigOption<u32> = ConfigOption::new(
    "execution.checkpointing.unaligned.max-subtasks-per-channel-state-file",
    "5",
    "Accepted for Flink compatibility; Cairn writes one channel-state file per subtask (as if \
     this were 1), so the value changes nothing.",
)
.with_range("1", MAX_INT);

// ---- network: buffer debloating -----------------------------------------------------------------

/// `taskmanager.network.memory.buffer-debloat.enabled`.
pub static BUFFER_DEBLOAT_ENABLED: ConfigOption<bool> = ConfigOption::new(
    "taskmanager.network.memory.buffer-debloat.enabled",
    "false",
    "Buffer debloating: each receiver keeps what is in flight on each input channel to what it \
     processes in about `.target` (fewer credits, smaller batches), so barriers stay fast and \
     unaligned checkpoints small.",
);

/// `taskmanager.network.memory.buffer-debloat.target`.
pub static BUFFER_DEBLOAT_TARGET: ConfigOption<Duration> = ConfigOption::new(
    "taskmanager.network.memory.buffer-debloat.target",
    "1 s",
    "How long the data in flight towards a receiver should take it to process (debloating).",
)
.with_range("1 ms", MAX_DURATION);

/// `taskmanager.network.memory.buffer-debloat.period`.
pub static BUFFER_DEBLOAT_PERIOD: ConfigOption<Duration> = ConfigOption::new(
    "taskmanager.network.memory.buffer-debloat.period",
    "200 ms",
    "How often a receiver recomputes its throughput and what it lets be in flight.",
)
.with_range("1 ms", MAX_DURATION);

/// `taskmanager.network.memory.buffer-debloat.samples`.
pub static BUFFER_DEBLOAT_SAMPLES: ConfigOption<u32> = ConfigOption::new(
    "taskmanager.network.memory.buffer-debloat.samples",
    "20",
    "Over how many periods a receiver averages its throughput before it sets a new in-flight \
     limit (debloating).",
)
.with_range("1", MAX_INT);

/// `taskmanager.network.memory.buffer-debloat.threshold-percentages`.
pub static BUFFER_DEBLOAT_THRESHOLD_PERCENTAGES: ConfigOption<u32> = ConfigOption::new(
    "taskmanager.network.memory.buffer-debloat.threshold-percentages",
    "25",
    "The smallest change, in percent of the records now allowed in flight, that a receiver \
     applies (debloating); smaller ones are ignored so credits do not churn.",
)
.with_range("0", "100");

// ---- state backend ----------------------------------------------------------------------------

/// `state.backend.type` (alias `state.backend`).
pub static STATE_BACKEND_TYPE: ConfigOption<StateBackendType> = ConfigOption::new(
    "state.backend.type",
    "hashmap",
    "Keyed state backend: hashmap (in memory) or rocksdb (on local disk; needs the `rocksdb` cargo feature).",
)
.with_aliases(&["state.backend"]);

/// `state.backend.rocksdb.localdir`.
pub static ROCKSDB_LOCAL_DIR: ConfigOption<Option<PathBuf>> = ConfigOption::optional(
    "state.backend.rocksdb.localdir",
    "Directory of the RocksDB working files; unset: the system temporary directory. Each job \
         uses its own subdirectory, removed when the job ends.",
)
.with_check(local_dir_check);

/// `state.backend.rocksdb.memory.managed`.
pub static ROCKSDB_MEMORY_MANAGED: ConfigOption<bool> = ConfigOption::new(
    "state.backend.rocksdb.memory.managed",
    "true",
    "All RocksDB instances of the job share one memory budget (block cache, write buffers and \
         Cairn's write cache): taskmanager.memory.managed.size, or \
         state.backend.rocksdb.memory.fixed-per-slot per slot.",
);

/// `state.backend.rocksdb.memory.fixed-per-slot`.
pub static ROCKSDB_MEMORY_FIXED_PER_SLOT: ConfigOption<Option<MemorySize>> = ConfigOption::optional(
    "state.backend.rocksdb.memory.fixed-per-slot",
    "Memory budget of RocksDB per slot (a job has as many slots as its largest operator \
         parallelism); overrides the managed memory size.",
)
.with_optional_range("1 mb", "1 tb");

/// `taskmanager.memory.managed.size`.
pub static MANAGED_MEMORY_SIZE: ConfigOption<MemorySize> = ConfigOption::new(
    "taskmanager.memory.managed.size",
    "512 mb",
    "Memory budget of the job's RocksDB state (a job process is one task manager). Cairn's \
         default is a fixed size instead of Flink's fraction.",
)
.with_range("1 mb", "1 tb");

/// `state.backend.rocksdb.memory.partitioned-index-filters`.
pub static ROCKSDB_PARTITIONED_INDEX_FILTERS: ConfigOption<bool> = ConfigOption::new(
    "state.backend.rocksdb.memory.partitioned-index-filters",
    "true",
    "Index and bloom filter blocks of each SST file are split into small partitions under a \
         pinned top-level index, so a lookup caches only the partitions it needs. Flink's default \
         is false; with one filter block per file, a file of millions of keys has a filter larger \
         than a block cache shard, which is then read from the file on every lookup.",
);

/// `state.backend.rocksdb.memory.write-buffer-ratio`.
pub static ROCKSDB_WRITE_BUFFER_RATIO: ConfigOption<f64> = ConfigOption::new(
    "state.backend.rocksdb.memory.write-buffer-ratio",
    "0.5",
    "Share of the managed budget for write buffers (memtables); the rest is block cache and \
         write cache.",
)
.with_range("0.01", "0.99");

/// `state.backend.rocksdb.block.cache-size`.
pub static ROCKSDB_BLOCK_CACHE_SIZE: ConfigOption<MemorySize> = ConfigOption::new(
    "state.backend.rocksdb.block.cache-size",
    "8 mb",
    "Block cache of each RocksDB instance when memory is not managed.",
)
.with_range("1 mb", "1 tb");

/// `state.backend.rocksdb.writebuffer.size`.
pub static ROCKSDB_WRITE_BUFFER_SIZE: ConfigOption<MemorySize> = ConfigOption::new(
    "state.backend.rocksdb.writebuffer.size",
    "64 mb",
    "Size of one memtable (per state); with managed memory at most the instance's share.",
)
.with_range("1 mb", "1 tb");

/// `state.backend.rocksdb.writebuffer.count`.
pub static ROCKSDB_WRITE_BUFFER_COUNT: ConfigOption<u32> = ConfigOption::new(
    "state.backend.rocksdb.writebuffer.count",
    "2",
    "Memtables per state (one filling while others flush). At least 1.",
)
.with_range("1", "64");

/// `state.backend.rocksdb.thread.num`.
pub static ROCKSDB_THREAD_NUM: ConfigOption<u32> = ConfigOption::new(
    "state.backend.rocksdb.thread.num",
    "2",
    "Background flush and compaction jobs of each RocksDB instance. At least 1.",
)
.with_range("1", "64");

/// `state.backend.rocksdb.timer-service.factory`.
pub static ROCKSDB_TIMER_SERVICE_FACTORY: ConfigOption<TimerServiceFactory> = ConfigOption::new(
    "state.backend.rocksdb.timer-service.factory",
    "ROCKSDB",
    "Where the timers of the rocksdb backend live: ROCKSDB (not bounded by memory) or HEAP.",
);

/// `state.backend.rocksdb.timer-service.cache-size`.
pub static ROCKSDB_TIMER_CACHE_SIZE: ConfigOption<u32> = ConfigOption::new(
    "state.backend.rocksdb.timer-service.cache-size",
    "128",
    "Timers of each key group kept in memory (the earliest ones) with ROCKSDB timers. At least 1.",
)
.with_range("1", MAX_INT);

/// `state.backend.rocksdb.write-cache.ratio` (Cairn-specific).
pub static ROCKSDB_WRITE_CACHE_RATIO: ConfigOption<f64> = ConfigOption::new(
    "state.backend.rocksdb.write-cache.ratio",
    "0.25",
    "Cairn-specific. Share of the managed budget for the write cache, which keeps recently \
         used values of value and list states in memory and writes them to RocksDB when full \
         and at every snapshot. 0 disables it.",
)
.with_range("0.0", "0.9");

// ---- restart strategy -------------------------------------------------------------------------

/// `restart-strategy.type` (alias `restart-strategy`). Unset: see
/// [`crate::effective_restart_strategy`].
pub static RESTART_STRATEGY_TYPE: ConfigOption<Option<RestartStrategyType>> = ConfigOption::optional(
    "restart-strategy.type",
    "none|off|disable, fixed-delay|fixeddelay, failure-rate|failurerate, \
         exponential-delay|exponentialdelay. Unset: exponential-delay if checkpointing is \
         enabled, else none.",
)
.with_aliases(&["restart-strategy"]);

/// `restart-strategy.fixed-delay.attempts`.
pub static FIXED_DELAY_ATTEMPTS: ConfigOption<u32> = ConfigOption::new(
    "restart-strategy.fixed-delay.attempts",
    "1",
    "fixed-delay: restarts before the job is declared failed.",
)
.with_range("0", MAX_INT);

/// `restart-strategy.fixed-delay.delay`.
pub static FIXED_DELAY_DELAY: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.fixed-delay.delay",
    "1 s",
    "fixed-delay: time between two restart attempts.",
)
.with_range("0 ms", MAX_DURATION);

/// `restart-strategy.failure-rate.max-failures-per-interval`.
pub static FAILURE_RATE_MAX_FAILURES: ConfigOption<u32> = ConfigOption::new(
    "restart-strategy.failure-rate.max-failures-per-interval",
    "1",
    "failure-rate: restarts allowed within one interval before the job fails.",
)
.with_range("1", MAX_INT);

/// `restart-strategy.failure-rate.failure-rate-interval`.
pub static FAILURE_RATE_INTERVAL: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.failure-rate.failure-rate-interval",
    "1 min",
    "failure-rate: the interval over which failures are counted.",
)
.with_range("1 ms", MAX_DURATION);

/// `restart-strategy.failure-rate.delay`.
pub static FAILURE_RATE_DELAY: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.failure-rate.delay",
    "1 s",
    "failure-rate: time between two restart attempts.",
)
.with_range("0 ms", MAX_DURATION);

/// `restart-strategy.exponential-delay.initial-backoff`.
pub static EXP_DELAY_INITIAL_BACKOFF: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.exponential-delay.initial-backoff",
    "1 s",
    "exponential-delay: delay before the first restart.",
)
.with_range("1 ms", MAX_DURATION);

/// `restart-strategy.exponential-delay.max-backoff`.
pub static EXP_DELAY_MAX_BACKOFF: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.exponential-delay.max-backoff",
    "1 min",
    "exponential-delay: upper bound of the delay.",
)
.with_range("1 ms", MAX_DURATION);

/// `restart-strategy.exponential-delay.backoff-multiplier`.
pub static EXP_DELAY_BACKOFF_MULTIPLIER: ConfigOption<f64> = ConfigOption::new(
    "restart-strategy.exponential-delay.backoff-multiplier",
    "1.5",
    "exponential-delay: factor applied to the delay after each failure.",
)
.with_range("1.0", "1000.0");

/// `restart-strategy.exponential-delay.reset-backoff-threshold`.
pub static EXP_DELAY_RESET_BACKOFF_THRESHOLD: ConfigOption<Duration> = ConfigOption::new(
    "restart-strategy.exponential-delay.reset-backoff-threshold",
    "1 h",
    "exponential-delay: after running this long without failure the delay and the attempt \
     count are reset.",
)
.with_range("1 ms", MAX_DURATION);

/// `restart-strategy.exponential-delay.jitter-factor`.
pub static EXP_DELAY_JITTER_FACTOR: ConfigOption<f64> = ConfigOption::new(
    "restart-strategy.exponential-delay.jitter-factor",
    "0.1",
    "exponential-delay: random +/- fraction applied to each delay.",
)
.with_range("0.0", "1.0");

/// `restart-strategy.exponential-delay.attempts-before-reset-backoff`; Flink's default is
/// `Integer.MAX_VALUE` (documented as "infinite").
pub static EXP_DELAY_ATTEMPTS_BEFORE_RESET: ConfigOption<u32> = ConfigOption::new(
    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
    "2147483647",
    "exponential-delay: restarts allowed before the backoff is reset; the default \
     2147483647 means unlimited.",
)
.with_range("1", MAX_INT);

// ---- object storage (s3:// locations) --------------------------------------------------------

/// `s3.endpoint`.
pub static S3_ENDPOINT: ConfigOption<Option<String>> = ConfigOption::optional(
    "s3.endpoint",
    "Endpoint of the S3 service for s3:// checkpoint and savepoint locations (e.g. \
     http://127.0.0.1:9000 for an S3-compatible server); unset: AWS_ENDPOINT_URL, else AWS.",
);

/// `s3.access-key`.
pub static S3_ACCESS_KEY: ConfigOption<Option<String>> = ConfigOption::optional(
    "s3.access-key",
    "Access key for s3:// locations; unset: AWS_ACCESS_KEY_ID and the usual AWS credential sources.",
);

/// `s3.secret-key`.
pub static S3_SECRET_KEY: ConfigOption<Option<String>> = ConfigOption::optional(
    "s3.secret-key",
    "Secret key for s3:// locations; unset: AWS_SECRET_ACCESS_KEY and the usual AWS credential sources.",
);

/// `s3.region` (Cairn-specific; Flink takes it from the AWS environment).
pub static S3_REGION: ConfigOption<Option<String>> = ConfigOption::optional(
    "s3.region",
    "Cairn-specific. Region of the S3 buckets; unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.",
);

/// `s3.path.style.access`.
pub static S3_PATH_STYLE_ACCESS: ConfigOption<bool> = ConfigOption::new(
    "s3.path.style.access",
    "false",
    "Address buckets as endpoint/bucket/key instead of bucket.endpoint/key (most S3-compatible \
     servers need true).",
);

// ---- REST ---------------------------------------------------------------------------------

/// `rest.address`.
pub static REST_ADDRESS: ConfigOption<String> = ConfigOption::new(
    "rest.address",
    "127.0.0.1",
    "Address clients use to reach the REST server.",
);

/// `rest.port`.
pub static REST_PORT: ConfigOption<u16> = ConfigOption::new(
    "rest.port",
    "8081",
    "Port of the REST server. If it is busy, the next free port up to 8180 is taken (and \
     logged). 0: any free port.",
)
.with_range("0", "65535");

/// `rest.bind-address`.
pub static REST_BIND_ADDRESS: ConfigOption<Option<String>> = ConfigOption::optional(
    "rest.bind-address",
    "Address the REST server binds to; unset: rest.address.",
);

/// `rest.auth-token` (alias `rest.auth.token`, Cairn-specific). The environment variable
/// `CAIRN_REST_TOKEN` is read when the key is unset.
pub static REST_AUTH_TOKEN: ConfigOption<Option<String>> = ConfigOption::optional(
    "rest.auth-token",
    "Cairn-specific. Bearer token that mutating REST calls (POST, PATCH) and live state queries must present; \
     unset: the CAIRN_REST_TOKEN environment variable, else none. Required when the server \
     binds to a non-loopback address.",
)
.with_aliases(&["rest.auth.token"]);

/// `rest.idleness-timeout`: how long an idle keep-alive connection stays open.
pub static REST_IDLENESS_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "rest.idleness-timeout",
    "60 s",
    "An idle keep-alive connection to the REST server is closed after this time.",
)
.with_range("1 ms", MAX_DURATION);

/// `rest.server.request-timeout` (Cairn-specific): the request-read deadline.
pub static REST_REQUEST_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "rest.server.request-timeout",
    "10 s",
    "Cairn-specific. A request's head must arrive within this time, and its body within this \
     time after the head; slower requests are dropped, so slow clients never hold the server.",
)
.with_range("1 ms", MAX_DURATION);

/// `rest.server.max-content-length`: the largest request body.
pub static REST_MAX_CONTENT_LENGTH: ConfigOption<crate::MemorySize> = ConfigOption::new(
    "rest.server.max-content-length",
    "1 mb",
    "Largest request body the REST server reads (larger ones get 413).",
)
.with_range("1 kb", "1 gb");

/// `rest.allowed-path-roots` (Cairn-specific), a comma-separated list of directories; see
/// [`crate::Configuration::allowed_path_roots`].
pub static REST_ALLOWED_PATH_ROOTS: ConfigOption<Option<String>> = ConfigOption::optional(
    "rest.allowed-path-roots",
    "Cairn-specific. Comma-separated directories under which REST requests may name paths \
     (savepoint targets, disposal), besides execution.checkpointing.savepoint-dir and \
     execution.checkpointing.dir.",
)
.with_aliases(&["rest.allowed-paths"]);

// ---- state recovery (restore) -----------------------------------------------------------------

/// `execution.state-recovery.path` (alias `execution.savepoint.path`); what `-s` sets.
pub static SAVEPOINT_PATH: ConfigOption<Option<PathBuf>> = ConfigOption::optional(
    "execution.state-recovery.path",
    "Savepoint or retained checkpoint (directory or its _metadata) to restore from. Set by -s.",
)
.with_aliases(&["execution.savepoint.path"]);

/// `execution.state-recovery.ignore-unclaimed-state` (alias
/// `execution.savepoint.ignore-unclaimed-state`); what `-n` sets.
pub static SAVEPOINT_IGNORE_UNCLAIMED_STATE: ConfigOption<bool> = ConfigOption::new(
    "execution.state-recovery.ignore-unclaimed-state",
    "false",
    "Allow a restore that drops state matching no operator. Set by -n.",
)
.with_aliases(&["execution.savepoint.ignore-unclaimed-state"]);

/// `execution.state-recovery.claim-mode` (alias `execution.savepoint-restore-mode`); what
/// `--claim-mode` sets.
pub static RESTORE_CLAIM_MODE: ConfigOption<ClaimMode> = ConfigOption::new(
    "execution.state-recovery.claim-mode",
    "NO_CLAIM",
    "CLAIM: the job owns the restored snapshot and may delete it; NO_CLAIM: it never touches \
     it. Set by --claim-mode.",
)
.with_aliases(&["execution.savepoint-restore-mode"]);

// ---- distributed execution (coordinator and workers) ------------------------------------------

// Checks of a `String` option take `&String`.
#[allow(clippy::ptr_arg)]
fn cluster_mode_check(v: &String) -> Result<(), String> {
    match v.as_str() {
        "local" | "coordinator" | "worker" => Ok(()),
        _ => Err("must be local, coordinator or worker".to_string()),
    }
}

/// `cairn.cluster.mode` (Cairn-specific; the startup flag `--mode`).
pub static CLUSTER_MODE: ConfigOption<String> = ConfigOption::new(
    "cairn.cluster.mode",
    "local",
    "Cairn-specific. How the job binary runs: local (every task in this process), coordinator \
     (builds the graph, waits for task slots, deploys subtasks to workers, runs checkpoints and the \
     REST API) or worker (offers task slots to the coordinator at jobmanager.rpc.address and runs \
     the subtasks it is given). The startup flag --mode sets it.",
)
.with_check(cluster_mode_check);

/// `cairn.cluster.linger-after-end` (Cairn-specific).
pub static CLUSTER_LINGER: ConfigOption<bool> = ConfigOption::new(
    "cairn.cluster.linger-after-end",
    "false",
    "Cairn-specific. A coordinator whose job ended (finished, stopped with a savepoint, cancelled, \
     failed) waits to be terminated instead of exiting, so that a Kubernetes Deployment does not \
     start the job again before the upgrade script changed it (deploy/kubernetes).",
);

/// `jobmanager.rpc.address`.
pub static JOBMANAGER_RPC_ADDRESS: ConfigOption<String> = ConfigOption::new(
    "jobmanager.rpc.address",
    "localhost",
    "Host of the coordinator's control endpoint (gRPC), as workers reach it. The startup flag \
     --coordinator host:port sets it and jobmanager.rpc.port.",
);

/// `jobmanager.rpc.port`.
pub static JOBMANAGER_RPC_PORT: ConfigOption<u16> = ConfigOption::new(
    "jobmanager.rpc.port",
    "6123",
    "Port of the coordinator's control endpoint (gRPC).",
)
.with_range("0", "65535");

/// `jobmanager.bind-host`.
pub static JOBMANAGER_BIND_HOST: ConfigOption<String> = ConfigOption::new(
    "jobmanager.bind-host",
    "0.0.0.0",
    "Address the coordinator's control endpoint binds to.",
);

/// `taskmanager.numberOfTaskSlots`.
pub static TASK_SLOTS: ConfigOption<u32> = ConfigOption::new(
    "taskmanager.numberOfTaskSlots",
    "1",
    "Task slots a worker offers. A slot runs one subtask of every operator (slot sharing, as in \
     Flink), so a job of parallelism N needs N slots over all workers.",
)
.with_range("1", "65536");

/// `taskmanager.host`.
pub static TASKMANAGER_HOST: ConfigOption<Option<String>> = ConfigOption::optional(
    "taskmanager.host",
    "Address other workers use to reach this worker's data port; unset: the local address of \
     its connection to the coordinator.",
);

/// `taskmanager.bind-host`.
pub static TASKMANAGER_BIND_HOST: ConfigOption<String> = ConfigOption::new(
    "taskmanager.bind-host",
    "0.0.0.0",
    "Address a worker's data port binds to.",
);

/// `taskmanager.data.port`.
pub static TASKMANAGER_DATA_PORT: ConfigOption<u16> = ConfigOption::new(
    "taskmanager.data.port",
    "0",
    "Port on which a worker receives records from other workers (0: any free port).",
)
.with_range("0", "65535");

/// `heartbeat.interval`.
pub static HEARTBEAT_INTERVAL: ConfigOption<Duration> = ConfigOption::new(
    "heartbeat.interval",
    "10 s",
    "How often coordinator and workers send each other heartbeats (workers send their metrics with them).",
)
.with_range("1 ms", MAX_DURATION);

/// `heartbeat.timeout`.
pub static HEARTBEAT_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "heartbeat.timeout",
    "50 s",
    "A worker not heard of for this long is lost: the job restarts from its latest checkpoint on \
     the remaining or replacement workers; a worker that has not heard of its coordinator for this \
     long cancels its tasks and registers again.",
)
.with_range("1 ms", MAX_DURATION);

/// `slot.request.timeout`.
pub static SLOT_REQUEST_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "slot.request.timeout",
    "5 min",
    "How long the coordinator waits for enough task slots before an attempt fails.",
)
.with_range("1 ms", MAX_DURATION);

// ---- Cairn runtime ----------------------------------------------------------------------------

/// `cairn.runtime.batch-size` (Cairn-specific).
pub static RUNTIME_BATCH_SIZE: ConfigOption<u32> = ConfigOption::new(
    "cairn.runtime.batch-size",
    "1024",
    "Cairn-specific. Records per batch sent between tasks.",
)
.with_range("1", "65536");

/// `execution.buffer-timeout.enabled`.
pub static BUFFER_TIMEOUT_ENABLED: ConfigOption<bool> = ConfigOption::new(
    "execution.buffer-timeout.enabled",
    "true",
    "Whether partly filled output batches are sent after execution.buffer-timeout.interval. When \
     false, a batch leaves only when it is full (cairn.runtime.batch-size records, or fewer when \
     the receiver debloats) or when a watermark, barrier or end of input follows it: the most \
     throughput, with no bound on latency.",
);

/// `execution.buffer-timeout.interval`.
pub static BUFFER_TIMEOUT_INTERVAL: ConfigOption<Duration> = ConfigOption::new(
    "execution.buffer-timeout.interval",
    "100 ms",
    "How long a partly filled output batch may wait for more records before it is sent. Batches \
     that fill up leave at once, and watermarks, barriers and end of input send what waits \
     before them. 0 ms sends after every input batch: the least latency, the smallest batches \
     through a key_by.",
)
.with_range("0 ms", MAX_DURATION);

/// `cairn.runtime.channel-capacity` (Cairn-specific).
pub static RUNTIME_CHANNEL_CAPACITY: ConfigOption<u32> = ConfigOption::new(
    "cairn.runtime.channel-capacity",
    "16",
    "Cairn-specific. Batches buffered per channel between two tasks; each slot is allocated when the channel is created.",
)
.with_range("1", "4096");

// ---- live state queries ----------------------------------------------------------------------

/// `cairn.queryable-state.timeout` (Cairn-specific).
pub static QUERYABLE_STATE_TIMEOUT: ConfigOption<Duration> = ConfigOption::new(
    "cairn.queryable-state.timeout",
    "10 s",
    "Cairn-specific. How long a live state query waits for the subtask that owns the key. The \
     subtask answers between two batches, so only a long batch or backpressure makes it wait; \
     slower answers get 503.",
)
.with_range("1 ms", MAX_DURATION);

static ALL: &[&dyn AnyOption] = &[
    &PARALLELISM_DEFAULT,
    &MAX_PARALLELISM,
    &AUTO_GENERATE_UIDS,
    &PIPELINE_NAME,
    &CHECKPOINTING_INTERVAL,
    &CHECKPOINTING_MODE,
    &CHECKPOINTING_TIMEOUT,
    &CHECKPOINTING_MIN_PAUSE,
    &CHECKPOINTING_MAX_CONCURRENT,
    &CHECKPOINTING_TOLERABLE_FAILURES,
    &CHECKPOINTS_DIR,
    &SAVEPOINT_DIR,
    &CHECKPOINTS_NUM_RETAINED,
    &EXTERNALIZED_CHECKPOINT_RETENTION,
    &CHECKPOINTING_INCREMENTAL,
    &CHECKPOINTING_UNALIGNED,
    &CHECKPOINTING_ALIGNED_TIMEOUT,
    &CHECKPOINTING_MAX_SUBTASKS_PER_CHANNEL_STATE_FILE,
    &BUFFER_DEBLOAT_ENABLED,
    &BUFFER_DEBLOAT_TARGET,
    &BUFFER_DEBLOAT_PERIOD,
    &BUFFER_DEBLOAT_SAMPLES,
    &BUFFER_DEBLOAT_THRESHOLD_PERCENTAGES,
    &STATE_BACKEND_TYPE,
    &ROCKSDB_LOCAL_DIR,
    &ROCKSDB_MEMORY_MANAGED,
    &ROCKSDB_MEMORY_FIXED_PER_SLOT,
    &MANAGED_MEMORY_SIZE,
    &ROCKSDB_WRITE_BUFFER_RATIO,
    &ROCKSDB_PARTITIONED_INDEX_FILTERS,
    &ROCKSDB_BLOCK_CACHE_SIZE,
    &ROCKSDB_WRITE_BUFFER_SIZE,
    &ROCKSDB_WRITE_BUFFER_COUNT,
    &ROCKSDB_THREAD_NUM,
    &ROCKSDB_TIMER_SERVICE_FACTORY,
    &ROCKSDB_TIMER_CACHE_SIZE,
    &ROCKSDB_WRITE_CACHE_RATIO,
    &RESTART_STRATEGY_TYPE,
    &FIXED_DELAY_ATTEMPTS,
    &FIXED_DELAY_DELAY,
    &FAILURE_RATE_MAX_FAILURES,
    &FAILURE_RATE_INTERVAL,
    &FAILURE_RATE_DELAY,
    &EXP_DELAY_INITIAL_BACKOFF,
    &EXP_DELAY_MAX_BACKOFF,
    &EXP_DELAY_BACKOFF_MULTIPLIER,
    &EXP_DELAY_RESET_BACKOFF_THRESHOLD,
    &EXP_DELAY_JITTER_FACTOR,
    &EXP_DELAY_ATTEMPTS_BEFORE_RESET,
    &S3_ENDPOINT,
    &S3_ACCESS_KEY,
    &S3_SECRET_KEY,
    &S3_REGION,
    &S3_PATH_STYLE_ACCESS,
    &REST_ADDRESS,
    &REST_PORT,
    &REST_BIND_ADDRESS,
    &REST_AUTH_TOKEN,
    &REST_ALLOWED_PATH_ROOTS,
    &REST_IDLENESS_TIMEOUT,
    &REST_REQUEST_TIMEOUT,
    &REST_MAX_CONTENT_LENGTH,
    &SAVEPOINT_PATH,
    &SAVEPOINT_IGNORE_UNCLAIMED_STATE,
    &RESTORE_CLAIM_MODE,
    &CLUSTER_MODE,
    &CLUSTER_LINGER,
    &JOBMANAGER_RPC_ADDRESS,
    &JOBMANAGER_RPC_PORT,
    &JOBMANAGER_BIND_HOST,
    &TASK_SLOTS,
    &TASKMANAGER_HOST,
    &TASKMANAGER_BIND_HOST,
    &TASKMANAGER_DATA_PORT,
    &HEARTBEAT_INTERVAL,
    &HEARTBEAT_TIMEOUT,
    &SLOT_REQUEST_TIMEOUT,
    &BUFFER_TIMEOUT_ENABLED,
    &BUFFER_TIMEOUT_INTERVAL,
    &RUNTIME_BATCH_SIZE,
    &RUNTIME_CHANNEL_CAPACITY,
    &QUERYABLE_STATE_TIMEOUT,
];

/// Every known option, in declaration order.
pub fn all() -> &'static [&'static dyn AnyOption] {
    ALL
}

/// Looks up a key: returns the option and whether `key` was one of its aliases.
pub fn lookup(key: &str) -> Option<(&'static dyn AnyOption, bool)> {
    for opt in ALL {
        if opt.key() == key {
            return Some((*opt, false));
        }
        if opt.aliases().contains(&key) {
            return Some((*opt, true));
        }
    }
    None
}
