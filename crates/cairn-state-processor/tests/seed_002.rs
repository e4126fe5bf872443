//! The State Processor API examples of seed 002 (the Savepoint chapter),
//! end to end with real jobs:
//! 1. read `StatefulFunctionWithTime`'s keyed state (a value and a list per
//!    key, and its timers) from a savepoint of a running job;
//! 2. bootstrap an `accounts` keyed operator and a `currency` broadcast
//!    operator from data, start a job from that savepoint, check its output;
//! 3. modify an existing savepoint (remove `currency`, add `number`) and
//!    restore a job from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::config::{Configuration, StartupOptions};
use cairn::coordinator::control::{AfterSavepoint, JobClient, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn::state::KeyedStateAccess;
use cairn_state_processor::{
    BroadcastBootstrapContext, BroadcastStateBootstrapFunction, Collector, KeyedStateBootstrapFunction,
    KeyedStateReaderFunction, OperatorBootstrapContext, OperatorTransformation, ReaderContext, SavepointReader,
    SavepointWriter, StateBootstrapFunction,
};
use serde::{Deserialize, Serialize};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cairn-spa-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn make_env(parallelism: u32, restore: Option<&Path>) -> StreamEnv {
    make_env_on(parallelism, restore, "hashmap")
}

/// A job environment on the state backend `backend` ("hashmap", "rocksdb").
fn make_env_on(parallelism: u32, restore: Option<&Path>, backend: &str) -> StreamEnv {
    let mut config = Configuration::new();
    config.set("parallelism.default", &parallelism.to_string()).unwrap();
    config.set("state.backend.type", backend).unwrap();
    StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: restore.map(Path::to_path_buf),
        ..Default::default()
    })
}

fn wait_for_records(client: &JobClient, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.metrics().source_records < n {
        assert!(
            Instant::now() < deadline,
            "the job did not reach {n} records: {:?}",
            client.info()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_with_savepoint(client: &JobClient, target: &Path, format: SnapshotFormat) -> PathBuf {
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(target.to_path_buf()),
                format,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .expect("savepoint accepted");
    match client.wait_operation(&op, Duration::from_secs(60)) {
        Some(OperationStatus::Completed {
            location: Some(location),
            ..
        }) => location,
        other => panic!("savepoint did not complete: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Reading keyed state with timers
// ---------------------------------------------------------------------------

/// What the job emits after each record: the key's state after the update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Emitted {
    key: u64,
    state: u64,
    time: i64,
}

/// The seed's `StatefulFunctionWithTime`: a value (`state`) and a list
/// (`times`) per key; every record also registers an event-time timer that
/// has not fired when the savepoint is taken.
#[derive(Clone, Default)]
struct StatefulFunctionWithTime {
    state: Option<ValueState<u64>>,
    times: Option<ListState<i64>>,
}

impl KeyedProcessFunction<u64, GeneratedEvent, Emitted> for StatefulFunctionWithTime {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.state = Some(ctx.value_state(ValueStateDescriptor::new("state"))?);
        self.times = Some(ctx.list_state(ListStateDescriptor::new("times"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, u64, Emitted>) -> OpResult {
        let v = e.value % 1000 + 1;
        self.state.as_ref().ok_or("not opened")?.update(ctx, &v)?;
        self.times.as_ref().ok_or("not opened")?.add(ctx, &e.timestamp)?;
        ctx.register_event_time_timer(e.timestamp + 1_000_000_000)?;
        ctx.collect(Emitted {
            key: e.key,
            state: v,
            time: e.timestamp,
        });
        Ok(())
    }
}

/// The seed's `KeyedState` output type.
#[derive(Clone, Debug, PartialEq)]
struct KeyedState {
    key: u64,
    value: u64,
    times: Vec<i64>,
    timers: Vec<i64>,
}

/// The seed's `ReaderFunction`.
#[derive(Clone, Default)]
struct ReaderFunction {
    state: Option<ValueState<u64>>,
    times: Option<ListState<i64>>,
}

impl KeyedStateReaderFunction for ReaderFunction {
    type Key = u64;
    type Out = KeyedState;

    fn open(&mut self, state: &mut KeyedStateAccess) -> Result<(), cairn::state::StateError> {
        self.state = Some(state.value_state(ValueStateDescriptor::new("state"))?);
        self.times = Some(state.list_state(ListStateDescriptor::new("times"))?);
        Ok(())
    }

    fn read_key(&mut self, key: &u64, ctx: &mut ReaderContext<'_>, out: &mut Collector<KeyedState>) -> OpResult {
        let value = self.state.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0);
        let times = self.times.as_ref().ok_or("not opened")?.get(ctx)?;
        let timers = ctx.registered_event_time_timers().to_vec();
        out.collect(KeyedState {
            key: *key,
            value,
            times,
            timers,
        });
        Ok(())
    }
}

fn read_keyed_state_of_a_savepoint_taken_while_running(format: SnapshotFormat) {
    read_keyed_state_of_a_savepoint_taken_while_running_on(format, "hashmap");
}

fn read_keyed_state_of_a_savepoint_taken_while_running_on(format: SnapshotFormat, backend: &str) -> PathBuf {
    let target = temp_dir("read");
    let env = make_env_on(2, None, backend);
    let (sink, out) = CollectSink::new();
    env.source_with_watermarks(
        GeneratorSource::new(1_000_000, 50).seed(3).splits(4).rate(4_000),
        WatermarkStrategy::for_monotonous_timestamps(),
    )
    .uid("source-id")
    .key_by(|e: &GeneratedEvent| e.key)
    .process(StatefulFunctionWithTime::default())
    .uid("mapper-id")
    .sink(sink);
    let job = env.execute_async("stateful function with time").unwrap();
    let client = job.client();
    wait_for_records(&client, 2_000);
    let sp = stop_with_savepoint(&client, &target, format);
    job.wait().unwrap();

    // The oracle: what the job emitted, per key, in order.
    let mut oracle: BTreeMap<u64, KeyedState> = BTreeMap::new();
    for e in out.values() {
        let k = oracle.entry(e.key).or_insert(KeyedState {
            key: e.key,
            value: 0,
            times: Vec::new(),
            timers: Vec::new(),
        });
        k.value = e.state;
        k.times.push(e.time);
        k.timers.push(e.time + 1_000_000_000);
    }
    for k in oracle.values_mut() {
        k.timers.sort_unstable();
        k.timers.dedup();
    }
    assert!(oracle.len() >= 40, "most keys were seen before the savepoint");

    let savepoint = SavepointReader::read(&sp).unwrap();
    let ops = savepoint.operators().unwrap();
    let mapper = ops.iter().find(|o| o.uid == "mapper-id").unwrap();
    let kinds: BTreeMap<&str, &str> = mapper
        .states
        .iter()
        .map(|s| (s.name.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(kinds.get("state"), Some(&"value"));
    assert_eq!(kinds.get("times"), Some(&"list"));
    assert_eq!(kinds.get("_timers/event"), Some(&"timers"));
    let state_type = &mapper.states.iter().find(|s| s.name == "state").unwrap().value_type;
    assert_eq!(state_type, "u64", "the stored type is recorded");

    let read = savepoint
        .read_keyed_state("mapper-id", ReaderFunction::default())
        .unwrap();
    let got: BTreeMap<u64, KeyedState> = read.into_iter().map(|k| (k.key, k)).collect();
    assert_eq!(got.len(), oracle.len(), "one output per key");
    for (key, want) in &oracle {
        assert_eq!(got.get(key), Some(want), "key {key}");
    }
    // Operator state of the source (its split table, union list state) reads too;
    // asking for it as another kind says which reader fits.
    let splits: Vec<serde_json::Value> = savepoint
        .read_union_state("source-id", "generator-split-table")
        .unwrap();
    assert!(!splits.is_empty());
    let e = savepoint
        .read_list_state::<serde_json::Value>("source-id", "generator-split-table")
        .unwrap_err();
    assert!(e.to_string().contains("read_union_state"), "{e}");
    let e = savepoint
        .read_keyed_state("no-such-uid", ReaderFunction::default())
        .unwrap_err();
    assert!(e.to_string().contains("'mapper-id'"), "the error lists the uids: {e}");

    // Keys, entries and bytes per state (what `cairn savepoint inspect` shows).
    let stats = savepoint.state_stats().unwrap();
    let of = |name: &str| stats.iter().find(|s| s.uid == "mapper-id" && s.state == name).cloned();
    let state = of("state").expect("stats of 'state'");
    assert_eq!(state.keys, oracle.len() as u64);
    let times = of("times").expect("stats of 'times'");
    assert_eq!(
        times.entries,
        oracle.values().map(|k| k.times.len() as u64).sum::<u64>()
    );
    // Timers: each key once, however many timers it has.
    let timers = of("_timers/event").expect("stats of the event-time timers");
    let with_timers = oracle.values().filter(|k| !k.timers.is_empty()).count() as u64;
    assert_eq!(timers.keys, with_timers);
    assert_eq!(
        timers.entries,
        oracle.values().map(|k| k.timers.len() as u64).sum::<u64>()
    );
    assert!(timers.entries > timers.keys, "keys have several timers here");
    sp
}

#[test]
fn seed_read_keyed_state_with_timers_from_a_canonical_savepoint_of_a_running_job() {
    read_keyed_state_of_a_savepoint_taken_while_running(SnapshotFormat::Canonical);
}

#[test]
fn seed_read_keyed_state_with_timers_from_a_native_savepoint_of_a_running_job() {
    read_keyed_state_of_a_savepoint_taken_while_running(SnapshotFormat::Native);
}

/// RocksDB's native savepoint holds RocksDB's own files: the reader opens
/// them with a RocksDB backend of its own (this crate's `rocksdb` feature).
#[cfg(feature = "rocksdb")]
#[test]
fn seed_read_keyed_state_with_timers_from_a_native_savepoint_of_a_rocksdb_job() {
    let sp = read_keyed_state_of_a_savepoint_taken_while_running_on(SnapshotFormat::Native, "rocksdb");
    let reader = SavepointReader::read(&sp).unwrap();
    assert_eq!(reader.native_backend(), Some("rocksdb"));
    // A memory budget of almost nothing reads a key group at a time from
    // RocksDB into memory (two workers): the same keys, values and timers.
    let whole = reader.read_keyed_state("mapper-id", ReaderFunction::default()).unwrap();
    let tight = cairn_state_processor::Options {
        memory_bytes: 1,
        parallelism: 2,
        ..Default::default()
    };
    let storage = cairn::snapshot::StorageRouter::local_only().shared();
    let by_key_group = SavepointReader::read_with(storage, &sp, tight)
        .unwrap()
        .read_keyed_state("mapper-id", ReaderFunction::default())
        .unwrap();
    let keyed = |v: Vec<KeyedState>| v.into_iter().map(|k| (k.key, k)).collect::<BTreeMap<_, _>>();
    assert!(whole.len() >= 40);
    assert_eq!(keyed(whole), keyed(by_key_group));

    // A reader told to use another backend gets a typed error naming both.
    struct OtherHeap;
    impl cairn::state::StateBackendFactory for OtherHeap {
        fn name(&self) -> &str {
            "other-heap"
        }
        fn create(
            &self,
            ctx: &cairn::state::BackendContext,
        ) -> Result<Box<dyn cairn::state::KeyedStateBackend>, cairn::state::StateError> {
            cairn::state::HeapBackendFactory.create(ctx)
        }
    }
    let options = cairn_state_processor::Options {
        backends: std::sync::Arc::new(OtherHeap),
        ..Default::default()
    };
    let storage = cairn::snapshot::StorageRouter::local_only().shared();
    let reader = SavepointReader::read_with(storage, &sp, options).unwrap();
    let e = reader
        .read_keyed_state("mapper-id", ReaderFunction::default())
        .unwrap_err();
    assert!(
        matches!(&e, cairn_state_processor::SpaError::NativeBackend { backend, .. } if backend == "rocksdb"),
        "{e:?}"
    );
    assert!(e.to_string().contains("'other-heap'"), "{e}");
    // Operator state needs no backend.
    let splits: Vec<serde_json::Value> = reader.read_union_state("source-id", "generator-split-table").unwrap();
    assert!(!splits.is_empty());
}

#[cfg(feature = "rocksdb")]
#[test]
fn seed_read_keyed_state_with_timers_from_a_canonical_savepoint_of_a_rocksdb_job() {
    read_keyed_state_of_a_savepoint_taken_while_running_on(SnapshotFormat::Canonical, "rocksdb");
}

// ---------------------------------------------------------------------------
// 2. Bootstrapping accounts and currency rates, then running a job
// ---------------------------------------------------------------------------

/// The seed's `Account`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Account {
    id: i32,
    amount: f64,
    timestamp: i64,
}

/// The seed's `CurrencyRate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CurrencyRate {
    currency: String,
    rate: f64,
}

/// The seed's `AccountBootstrapper`: the account's total, per id.
#[derive(Clone, Default)]
struct AccountBootstrapper {
    total: Option<ValueState<f64>>,
}

impl KeyedStateBootstrapFunction<i32, Account> for AccountBootstrapper {
    fn open(&mut self, state: &mut KeyedStateAccess) -> Result<(), cairn::state::StateError> {
        self.total = Some(state.value_state(ValueStateDescriptor::new("total"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        value: Account,
        ctx: &mut cairn_state_processor::BootstrapContext<'_, i32>,
    ) -> OpResult {
        assert_eq!(*ctx.current_key(), value.id);
        self.total.as_ref().ok_or("not opened")?.update(ctx, &value.amount)?;
        // Fires once the restored job's event time passes the account's time.
        ctx.register_event_time_timer(value.timestamp)?;
        Ok(())
    }
}

/// The seed's `CurrencyBootstrapFunction`.
struct CurrencyBootstrapFunction;

impl BroadcastStateBootstrapFunction<CurrencyRate> for CurrencyBootstrapFunction {
    fn process_element(&mut self, value: CurrencyRate, ctx: &mut BroadcastBootstrapContext<'_>) -> OpResult {
        ctx.put("rates", &value.currency, &value.rate)
    }
}

/// The job's accounts operator: adds each deposit to the bootstrapped
/// total; the bootstrapped timer reports the total.
#[derive(Clone, Default)]
struct Accounts {
    total: Option<ValueState<f64>>,
}

impl KeyedProcessFunction<i32, (i32, f64), String> for Accounts {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.total = Some(ctx.value_state(ValueStateDescriptor::new("total"))?);
        Ok(())
    }

    fn process_element(&mut self, (id, deposit): (i32, f64), ctx: &mut KeyedContext<'_, i32, String>) -> OpResult {
        let t = self.total.as_ref().ok_or("not opened")?;
        let total = t.value(ctx)?.unwrap_or(0.0) + deposit;
        t.update(ctx, &total)?;
        ctx.collect(format!("deposit {id} {total}"));
        Ok(())
    }

    fn on_timer(&mut self, ts: i64, ctx: &mut KeyedContext<'_, i32, String>) -> OpResult {
        let total = self.total.as_ref().ok_or("not opened")?.value(ctx)?.unwrap_or(0.0);
        ctx.collect(format!("timer {} {ts} {total}", ctx.key()));
        Ok(())
    }
}

/// The job's currency operator: converts amounts with the bootstrapped rates.
#[derive(Clone)]
struct Convert;

impl BroadcastProcessFunction<(String, f64), CurrencyRate, String> for Convert {
    fn process_element(
        &mut self,
        (cur, amount): (String, f64),
        ctx: &mut ReadOnlyBroadcastContext<'_, String>,
    ) -> OpResult {
        let rate: Option<f64> = ctx.broadcast_get("rates", &cur)?;
        ctx.collect(match rate {
            Some(r) => format!("convert {cur} {}", amount * r),
            None => format!("convert {cur} no rate"),
        });
        Ok(())
    }

    fn process_broadcast_element(&mut self, v: CurrencyRate, ctx: &mut BroadcastContext<'_, String>) -> OpResult {
        ctx.broadcast_put("rates", &v.currency, &v.rate)?;
        Ok(())
    }
}

fn accounts() -> Vec<Account> {
    (1..=20)
        .map(|id| Account {
            id,
            amount: f64::from(id) * 100.0,
            timestamp: 1_000 + i64::from(id),
        })
        .collect()
}

fn bootstrap(dir: &Path) -> PathBuf {
    let rates = vec![
        CurrencyRate {
            currency: "EUR".into(),
            rate: 1.25,
        },
        CurrencyRate {
            currency: "GBP".into(),
            rate: 1.5,
        },
    ];
    let transformation = OperatorTransformation::bootstrap_with(accounts())
        .key_by(|acc: &Account| acc.id)
        .transform(AccountBootstrapper::default());
    let broadcast_transformation =
        OperatorTransformation::bootstrap_with(rates).transform_broadcast(CurrencyBootstrapFunction);
    SavepointWriter::new(128)
        .with_operator("accounts", transformation)
        .with_operator("currency", broadcast_transformation)
        .write(dir.join("bootstrapped"))
        .unwrap()
}

/// The job that restores the bootstrapped savepoint: deposits into accounts
/// (with event time advancing past the bootstrapped timers) and conversions.
fn accounts_job(env: &StreamEnv, with_currency: bool) -> Collected<String> {
    let (sink, out) = CollectSink::new();
    // Deposits at event time 2000: past every bootstrapped timer.
    let deposits: Vec<(i32, f64)> = vec![(3, 5.0), (7, 0.5)];
    env.source_with_watermarks(
        cairn::collection::CollectionSource::new(deposits),
        WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|_, _| 2_000),
    )
    .set_parallelism(1)
    .uid("deposits")
    .key_by(|d: &(i32, f64)| d.0)
    .process(Accounts::default())
    .uid("accounts")
    .sink(sink.clone());
    if with_currency {
        let rates = env
            .from_collection(Vec::<CurrencyRate>::new())
            .uid("rate-updates")
            .broadcast_to_all();
        env.from_collection(vec![("EUR".to_string(), 10.0), ("USD".to_string(), 10.0)])
            .uid("payments")
            .connect_broadcast(&rates)
            .process(Convert)
            .uid("currency")
            .sink(sink);
    }
    out
}

#[test]
fn seed_bootstrap_accounts_and_currency_then_start_a_job_from_the_savepoint() {
    let dir = temp_dir("bootstrap");
    let sp = bootstrap(&dir);

    // The savepoint reads back as written.
    let reader = SavepointReader::read(&sp).unwrap();
    let rates: BTreeMap<String, f64> = reader
        .read_broadcast_state("currency", "rates")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        rates,
        BTreeMap::from([("EUR".to_string(), 1.25), ("GBP".to_string(), 1.5)])
    );
    let ops = reader.operators().unwrap();
    let acc = ops.iter().find(|o| o.uid == "accounts").unwrap();
    assert_eq!(acc.max_parallelism, 128);
    assert_eq!(acc.operator_id, cairn::state::hash::operator_id_for_uid("accounts"));

    let env = make_env(3, Some(&sp));
    let out = accounts_job(&env, true);
    env.execute("accounts from a bootstrapped savepoint").unwrap();
    let mut got = out.values();
    got.sort();
    let mut want = vec![
        "convert EUR 12.5".to_string(),
        "convert USD no rate".to_string(),
        "deposit 3 305".to_string(),
        "deposit 7 700.5".to_string(),
    ];
    // Every bootstrapped timer fires once event time ends, with the total.
    for a in accounts() {
        let total = a.amount
            + if a.id == 3 {
                5.0
            } else if a.id == 7 {
                0.5
            } else {
                0.0
            };
        want.push(format!("timer {} {} {total}", a.id, a.timestamp));
    }
    want.sort();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// 3. Modifying a savepoint: remove an operator, add another
// ---------------------------------------------------------------------------

/// The seed's `ModifyProcessFunction` (a `StateBootstrapFunction`).
#[derive(Clone)]
struct ModifyProcessFunction;

impl StateBootstrapFunction<i32> for ModifyProcessFunction {
    fn process_element(&mut self, value: i32, ctx: &mut OperatorBootstrapContext<'_>) -> OpResult {
        ctx.add("numbers", &value)
    }
}

#[test]
fn seed_modify_a_savepoint_remove_currency_add_number_then_restore() {
    let dir = temp_dir("modify");
    let sp = bootstrap(&dir);
    let transformation = OperatorTransformation::bootstrap_with(vec![1, 2, 3]).transform(ModifyProcessFunction);
    let modified = SavepointWriter::from_existing(&sp)
        .unwrap()
        .remove_operator("currency")
        .with_operator("number", transformation)
        .write(dir.join("modified"))
        .unwrap();

    let reader = SavepointReader::read(&modified).unwrap();
    let uids: Vec<String> = reader.operators().unwrap().into_iter().map(|o| o.uid).collect();
    assert_eq!(uids, vec!["accounts".to_string(), "number".to_string()]);
    assert_eq!(
        reader.read_list_state::<i32>("number", "numbers").unwrap(),
        vec![1, 2, 3]
    );
    // The original is untouched.
    assert!(SavepointReader::read(&sp).unwrap().operator("currency").is_ok());

    // A job without the currency operator restores it without -n; the
    // `number` state maps to the job's operator with uid `number`.
    let env = make_env(2, Some(&modified));
    let out = accounts_job(&env, false);
    env.from_collection(vec![0u8])
        .uid("number")
        .map(|x| format!("number {x}"))
        .sink(CollectSink::new().0);
    let r = env.execute("accounts from a modified savepoint");
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.is_empty(), "{e}");
    let got = out.values();
    assert!(got.contains(&"deposit 3 305".to_string()), "{got:?}");
    // Restoring the modified savepoint into the job that still has the
    // currency operator starts it empty (no rates any more).
    let env2 = make_env(2, Some(&modified));
    let out2 = accounts_job(&env2, true);
    env2.from_collection(vec![0u8]).uid("number").sink(CollectSink::new().0);
    env2.execute("with currency, state removed").unwrap();
    assert!(out2.values().contains(&"convert EUR no rate".to_string()));
}
