//! Reading savepoints and retained checkpoints: operators and their states,
//! operator state, and keyed state key by key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use cairn_coordinator::restore::StateReader;
use cairn_runtime::OpResult;
use cairn_snapshot::{load_snapshot, FileFormat, LoadedSnapshot, OperatorSnapshot, SnapshotMetadata, Storage};
use cairn_state::canonical::TIMER_STATE_PREFIX;
use cairn_state::codec::{self, get_bytes};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::operator_state::{DistributionMode, OperatorStateEntry};
use cairn_state::shape::Shape;
use cairn_state::snapshot_codec::Decoded;
use cairn_state::{
    BackendContext, BackendSnapshot, KeyedStateAccess, KeyedStateBackend, SnapshotRequest, StateContext, StateError,
    StateId, StateKind, StateMeta,
};
use serde::de::DeserializeOwned;

use crate::chunks;
use crate::progress::Tracker;
use crate::{Options, SpaError};

/// Name of the internal state holding event-time timers.
const EVENT_TIMERS: &str = "_timers/event";
/// Name of the internal state holding processing-time timers.
const PROCESSING_TIMERS: &str = "_timers/processing";

/// An existing savepoint or retained checkpoint, opened for reading
/// (Flink's `SavepointReader.read`).
pub struct SavepointReader {
    storage: Arc<dyn Storage>,
    snapshot: LoadedSnapshot,
    options: Options,
    /// The backend whose own files hold the keyed state, when the snapshot
    /// is a native savepoint or checkpoint of a file-based backend.
    native_backend: Option<String>,
}

/// One operator of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OperatorInfo {
    pub uid: String,
    pub operator_id: String,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub states: Vec<StateInfo>,
}

/// One state of an operator, as the snapshot records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StateInfo {
    pub name: String,
    /// `value`, `list`, `map`, `timers` (keyed) or `operator-list`,
    /// `union-list`, `broadcast` (operator state).
    pub kind: String,
    /// The stored type: its traced shape when recorded, else the Rust type name.
    pub value_type: String,
    /// The shapes, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shapes: Option<cairn_state::shape::StateShapes>,
}

/// Keys, entries and bytes of one state (`SavepointReader::state_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateStats {
    pub uid: String,
    pub state: String,
    pub kind: String,
    pub keys: u64,
    /// Values, list elements, map entries or timers.
    pub entries: u64,
    /// Bytes of the stored entries (keys and values, as snapshotted).
    pub bytes: u64,
}

/// Collects what a reader function emits.
pub struct Collector<T> {
    items: Vec<T>,
}

impl<T> Collector<T> {
    /// Emit one output.
    pub fn collect(&mut self, item: T) {
        self.items.push(item);
    }
}

/// The state of one key, with its timers, while a reader function reads it.
pub struct ReaderContext<'a> {
    access: &'a mut KeyedStateAccess,
    event: &'a [i64],
    processing: &'a [i64],
}

impl ReaderContext<'_> {
    /// The event-time timers the current key registered (ascending).
    pub fn registered_event_time_timers(&self) -> &[i64] {
        self.event
    }

    /// The processing-time timers the current key registered (ascending).
    pub fn registered_processing_time_timers(&self) -> &[i64] {
        self.processing
    }
}

impl StateContext for ReaderContext<'_> {
    fn state_access(&mut self) -> &mut KeyedStateAccess {
        self.access
    }
}

/// Reads keyed state one key at a time (Flink's `KeyedStateReaderFunction`):
/// `open` registers the states to read (as a job's `open` does) and keeps
/// the handles; `read_key` is called once per key with the state of that
/// key current and may emit any number of outputs. One clone runs per range
/// of key groups, on several threads.
pub trait KeyedStateReaderFunction: Clone + Send + Sync + 'static {
    /// The key type of the keyed stream the state belongs to.
    type Key: DeserializeOwned;
    /// What the function emits.
    type Out: Send;
    /// Register the states to read.
    fn open(&mut self, state: &mut KeyedStateAccess) -> Result<(), StateError>;
    /// Read the state of `key`.
    fn read_key(&mut self, key: &Self::Key, ctx: &mut ReaderContext<'_>, out: &mut Collector<Self::Out>) -> OpResult;
}

fn usage(msg: String) -> SpaError {
    SpaError::Usage(msg)
}

impl SavepointReader {
    /// Open a savepoint or checkpoint (its directory or `_metadata`) on the
    /// local file system, verifying every file's checksum.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SpaError> {
        let storage: Arc<dyn Storage> = cairn_snapshot::StorageRouter::local_only().shared();
        Self::read_with(storage, path.as_ref(), Options::default())
    }

    /// [`SavepointReader::read`] on any storage, with options.
    pub fn read_with(storage: Arc<dyn Storage>, path: &Path, options: Options) -> Result<Self, SpaError> {
        crate::must_exist(&*storage, path)?;
        let snapshot = load_snapshot(&*storage, path)?;
        let native_backend = native_backend(&*storage, &snapshot)?;
        let mut options = options;
        if let Some(backend) = &native_backend {
            if options.backends.name() != backend {
                if let Some(factory) = crate::backends::factory_for(backend, &snapshot, &options)? {
                    options.backends = factory;
                }
            }
        }
        Ok(SavepointReader {
            storage,
            snapshot,
            options,
            native_backend,
        })
    }

    /// The state backend whose own files hold this snapshot's keyed state
    /// (`None`: logical key groups or canonical files, which every backend reads).
    pub fn native_backend(&self) -> Option<&str> {
        self.native_backend.as_deref()
    }

    /// The snapshot's `_metadata`.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.snapshot.metadata
    }

    /// The loaded snapshot (directory and metadata).
    pub fn snapshot(&self) -> &LoadedSnapshot {
        &self.snapshot
    }

    /// The storage read from.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The options work runs with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn state_reader(&self) -> StateReader<'_> {
        StateReader {
            snapshot: &self.snapshot,
            storage: &*self.storage,
        }
    }

    /// The operator with `uid`, or an error listing the uids there are.
    pub fn operator(&self, uid: &str) -> Result<&OperatorSnapshot, SpaError> {
        self.snapshot
            .metadata
            .operators
            .iter()
            .find(|o| o.uid == uid)
            .ok_or_else(|| {
                usage(format!(
                    "the snapshot at {} has no operator with uid '{uid}'; its uids are: {}",
                    self.snapshot.dir.display(),
                    self.uids()
                ))
            })
    }

    fn uids(&self) -> String {
        let u: Vec<String> = self
            .snapshot
            .metadata
            .operators
            .iter()
            .map(|o| format!("'{}'", o.uid))
            .collect();
        if u.is_empty() {
            "(none)".into()
        } else {
            u.join(", ")
        }
    }

    /// Every operator with its states (keyed and operator state).
    pub fn operators(&self) -> Result<Vec<OperatorInfo>, SpaError> {
        self.snapshot
            .metadata
            .operators
            .iter()
            .map(|op| {
                let mut states = self.keyed_states(op)?;
                let mut seen = BTreeSet::new();
                for sub in self.operator_entries(op)? {
                    for e in sub {
                        if seen.insert(e.name.clone()) {
                            states.push(StateInfo {
                                name: e.name.clone(),
                                kind: match e.mode {
                                    DistributionMode::SplitEvenly => "operator-list",
                                    DistributionMode::Union => "union-list",
                                    DistributionMode::Broadcast => "broadcast",
                                }
                                .into(),
                                value_type: "untyped (JSON in canonical savepoints)".into(),
                                shapes: None,
                            });
                        }
                    }
                }
                Ok(OperatorInfo {
                    uid: op.uid.clone(),
                    operator_id: op.operator_id.clone(),
                    name: op.name.clone(),
                    parallelism: op.parallelism,
                    max_parallelism: op.max_parallelism,
                    states,
                })
            })
            .collect()
    }

    /// The keyed states an operator's files record (without reading state).
    pub fn keyed_states(&self, op: &OperatorSnapshot) -> Result<Vec<StateInfo>, SpaError> {
        let mut metas: Vec<StateMeta> = Vec::new();
        for meta in self.keyed_metas(op)? {
            if !metas.iter().any(|m| m.name == meta.name) {
                metas.push(meta);
            }
        }
        Ok(metas.into_iter().map(state_info).collect())
    }

    fn keyed_metas(&self, op: &OperatorSnapshot) -> Result<Vec<StateMeta>, SpaError> {
        let reader = self.state_reader();
        let mut out = Vec::new();
        for sub in &op.subtasks {
            for f in &sub.files {
                match f.format {
                    FileFormat::ParquetV2 => {
                        if let cairn_canonical::CanonicalFile::Keyed(k) = reader.open_canonical_v2(op, f)? {
                            out.push(k.meta().clone());
                        }
                    }
                    FileFormat::CairnStateV1 => {
                        if let Some(s) = f
                            .sections
                            .iter()
                            .find(|s| s.name == cairn_runtime::snapshot_io::KEYED_STATES_SECTION)
                        {
                            let bytes = self.snapshot.read_section(&*self.storage, f, s)?;
                            out.extend(cairn_runtime::snapshot_io::decode_keyed_states(&f.path, &bytes)?);
                        }
                    }
                    FileFormat::ParquetV1 => {
                        let path = self.snapshot.resolve(f)?;
                        let footer = cairn_runtime::snapshot_io::read_canonical_footer(&*self.storage, &path, f.size)?;
                        if let Some(json) = footer.metadata_value(cairn_runtime::snapshot_io::KV_STATES) {
                            out.extend(cairn_state::canonical::states_from_json(json).map_err(SpaError::Snapshot)?);
                        }
                    }
                    // Backend files are listed by the state file; channel state
                    // (an unaligned checkpoint's in-flight records) is not keyed state.
                    FileFormat::BackendFile | FileFormat::ChannelStateV1 => {}
                }
            }
        }
        Ok(out)
    }

    /// The key type's shape of an operator, when its files record it.
    pub fn key_shape(&self, op: &OperatorSnapshot) -> Result<Option<Shape>, SpaError> {
        let reader = self.state_reader();
        for sub in &op.subtasks {
            for f in &sub.files {
                match f.format {
                    FileFormat::ParquetV2 => {
                        if let cairn_canonical::CanonicalFile::Keyed(k) = reader.open_canonical_v2(op, f)? {
                            if let Some(s) = k.key_shape() {
                                return Ok(Some(s.clone()));
                            }
                        }
                    }
                    FileFormat::CairnStateV1 => {
                        if let Some(s) = f
                            .sections
                            .iter()
                            .find(|s| s.name == cairn_runtime::snapshot_io::KEY_SHAPE_SECTION)
                        {
                            let bytes = self.snapshot.read_section(&*self.storage, f, s)?;
                            let shape = serde_json::from_slice(&bytes).map_err(|e| {
                                SpaError::Snapshot(format!("{}: the key shape is not valid: {e}", f.path))
                            })?;
                            return Ok(Some(shape));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// Operator state entries of each old subtask of `op`.
    pub fn operator_entries(&self, op: &OperatorSnapshot) -> Result<Vec<Vec<OperatorStateEntry>>, SpaError> {
        Ok(self.state_reader().operator_entries(op)?)
    }

    fn operator_state(
        &self,
        uid: &str,
        name: &str,
        mode: DistributionMode,
    ) -> Result<Vec<Vec<OperatorStateEntry>>, SpaError> {
        let op = self.operator(uid)?;
        let subs = self.operator_entries(op)?;
        let all: Vec<&OperatorStateEntry> = subs.iter().flatten().collect();
        match all.iter().find(|e| e.name == name) {
            None => {
                let names: BTreeSet<&str> = all.iter().map(|e| e.name.as_str()).collect();
                Err(usage(format!(
                    "operator uid '{uid}' has no operator state '{name}'; it has: {}",
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.into_iter().collect::<Vec<_>>().join(", ")
                    }
                )))
            }
            Some(e) if e.mode != mode => Err(usage(format!(
                "operator state '{name}' of uid '{uid}' is {} state; read it with {}",
                mode_word(e.mode),
                match e.mode {
                    DistributionMode::SplitEvenly => "read_list_state",
                    DistributionMode::Union => "read_union_state",
                    DistributionMode::Broadcast => "read_broadcast_state",
                }
            ))),
            Some(_) => Ok(subs),
        }
    }

    /// The elements of operator list state `name` of operator `uid`, over
    /// all subtasks (Flink's `readListState`).
    pub fn read_list_state<T: DeserializeOwned>(&self, uid: &str, name: &str) -> Result<Vec<T>, SpaError> {
        let subs = self.operator_state(uid, name, DistributionMode::SplitEvenly)?;
        decode_elements(&subs, name)
    }

    /// The elements of union list state `name` of operator `uid`: what every
    /// subtask gets on restore (Flink's `readUnionState`).
    pub fn read_union_state<T: DeserializeOwned>(&self, uid: &str, name: &str) -> Result<Vec<T>, SpaError> {
        let subs = self.operator_state(uid, name, DistributionMode::Union)?;
        decode_elements(&subs, name)
    }

    /// The entries of broadcast state `name` of operator `uid` (every
    /// subtask holds the same; Flink's `readBroadcastState`).
    pub fn read_broadcast_state<K: DeserializeOwned, V: DeserializeOwned>(
        &self,
        uid: &str,
        name: &str,
    ) -> Result<Vec<(K, V)>, SpaError> {
        let subs = self.operator_state(uid, name, DistributionMode::Broadcast)?;
        let first = subs.iter().flatten().find(|e| e.name == name).expect("found above");
        let mut out = Vec::with_capacity(first.elements.len());
        for el in &first.elements {
            let corrupt = || SpaError::Snapshot(format!("broadcast state '{name}': an entry is corrupt"));
            let (k, rest) = get_bytes(el).ok_or_else(corrupt)?;
            let (v, _) = get_bytes(rest).ok_or_else(corrupt)?;
            out.push((codec::decode(name, k)?, codec::decode(name, v)?));
        }
        Ok(out)
    }

    /// The key-group ranges keyed work on `op` runs over, within `within`:
    /// never across two of the snapshot's subtasks, and each small enough
    /// for its share of the memory budget when the backend holds state in
    /// memory.
    pub(crate) fn ranges(&self, op: &OperatorSnapshot, within: &[KeyGroupRange]) -> Vec<KeyGroupRange> {
        let weights = chunks::weights(&self.state_reader(), op);
        let budget = self
            .options
            .backends
            .state_in_memory()
            .then(|| self.options.budget_per_worker());
        let ranges = chunks::split(&weights, within, &chunks::subtask_starts(op), budget);
        chunks::at_least(ranges, self.options.parallelism)
    }

    /// A backend holding the keyed state of `op` in key groups `range`.
    pub(crate) fn restore_range(
        &self,
        op: &OperatorSnapshot,
        range: KeyGroupRange,
    ) -> Result<Box<dyn KeyedStateBackend>, SpaError> {
        if let Some(backend) = self.native_backend.as_deref() {
            if self.options.backends.name() != backend {
                return Err(crate::backends::unavailable(
                    &self.snapshot,
                    backend,
                    &*self.options.backends,
                ));
            }
        }
        let ctx = BackendContext {
            job_id: self.snapshot.metadata.job_id.clone(),
            operator_id: op.operator_id.clone(),
            uid: op.uid.clone(),
            subtask: 0,
            key_groups: range,
            attempt: 0,
        };
        let mut b = self.options.backends.create(&ctx)?;
        self.state_reader().restore_keyed(op, range, &mut *b, 0)?;
        Ok(b)
    }

    /// Read the keyed state of operator `uid` key by key with `function`
    /// (Flink's `readKeyedState`); outputs in key-group order.
    pub fn read_keyed_state<F: KeyedStateReaderFunction>(
        &self,
        uid: &str,
        function: F,
    ) -> Result<Vec<F::Out>, SpaError> {
        let op = self.operator(uid)?;
        let all = [KeyGroupRange {
            start: 0,
            end_exclusive: op.max_parallelism,
        }];
        let ranges = self.ranges(op, &all);
        let tracker = Tracker::new(
            "reading",
            "key groups",
            self.options.progress.as_ref(),
            u64::from(op.max_parallelism),
        );
        let on_disk = !self.options.backends.state_in_memory();
        let weights = if on_disk {
            chunks::weights(&self.state_reader(), op)
        } else {
            Vec::new()
        };
        let parts = chunks::run(&ranges, self.options.parallelism, |_, range| {
            let backend = self.restore_range(op, *range)?;
            let out = if on_disk {
                self.read_on_disk(backend, *range, &weights, &function, &op.uid)?
            } else {
                read_range(backend, function.clone(), &op.uid)?
            };
            tracker.advance(u64::from(range.end_exclusive - range.start), 0);
            Ok(out)
        })?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// [`read_range`] over a backend that keeps state on disk: a memory
    /// budget's share of key groups at a time is copied into a heap backend
    /// by one ordered scan per state, then read there. Reading the disk
    /// backend key by key would make a point lookup per key and state
    /// (index, filter and block per lookup), many times slower.
    fn read_on_disk<F: KeyedStateReaderFunction>(
        &self,
        mut backend: Box<dyn KeyedStateBackend>,
        range: KeyGroupRange,
        weights: &[u64],
        function: &F,
        uid: &str,
    ) -> Result<Vec<F::Out>, SpaError> {
        let snapshot = backend.snapshot(&SnapshotRequest {
            checkpoint_id: 0,
            kind: cairn_state::SnapshotRequestKind::CanonicalSavepoint,
        })?;
        let BackendSnapshot::KeyGroups(groups) = snapshot else {
            return Err(SpaError::Snapshot(format!(
                "uid '{uid}': the '{}' backend has no logical view of its state to read",
                backend.kind()
            )));
        };
        let mut out = Vec::new();
        for chunk in chunks::split(weights, &[range], &[], Some(self.options.budget_per_worker())) {
            let mut heap = cairn_state::HeapKeyedStateBackend::new(chunk);
            groups.for_each_group_in(chunk, &mut |meta, kg, encoded| heap.restore_group(meta, kg, encoded))?;
            out.extend(read_range(Box::new(heap), function.clone(), uid)?);
        }
        Ok(out)
    }

    /// Keys, entries and bytes of every keyed state of every operator
    /// (reads all keyed state, a range of key groups at a time).
    pub fn state_stats(&self) -> Result<Vec<StateStats>, SpaError> {
        let mut out = Vec::new();
        let with_state: Vec<&OperatorSnapshot> = self
            .snapshot
            .metadata
            .operators
            .iter()
            .filter(|op| op.subtasks.iter().any(|s| !s.files.is_empty()))
            .collect();
        let total = with_state.iter().map(|op| u64::from(op.max_parallelism)).sum();
        let tracker = Tracker::new("reading", "key groups", self.options.progress.as_ref(), total);
        for op in with_state {
            let all = [KeyGroupRange {
                start: 0,
                end_exclusive: op.max_parallelism,
            }];
            let ranges = self.ranges(op, &all);
            let parts = chunks::run(&ranges, self.options.parallelism, |_, range| {
                let mut b = self.restore_range(op, *range)?;
                let stats = count(&mut *b, &op.uid)?;
                let bytes = stats.iter().map(|s| s.bytes).sum();
                tracker.advance(u64::from(range.end_exclusive - range.start), bytes);
                Ok(stats)
            })?;
            let mut merged: BTreeMap<String, StateStats> = BTreeMap::new();
            for part in parts {
                for s in part {
                    let m = merged.entry(s.state.clone()).or_insert_with(|| StateStats {
                        uid: s.uid.clone(),
                        state: s.state.clone(),
                        kind: s.kind.clone(),
                        ..Default::default()
                    });
                    m.keys += s.keys;
                    m.entries += s.entries;
                    m.bytes += s.bytes;
                }
            }
            out.extend(merged.into_values());
        }
        Ok(out)
    }
}

fn mode_word(m: DistributionMode) -> &'static str {
    match m {
        DistributionMode::SplitEvenly => "list",
        DistributionMode::Union => "union list",
        DistributionMode::Broadcast => "broadcast",
    }
}

fn decode_elements<T: DeserializeOwned>(subs: &[Vec<OperatorStateEntry>], name: &str) -> Result<Vec<T>, SpaError> {
    let mut out = Vec::new();
    for e in subs.iter().flatten().filter(|e| e.name == name) {
        for el in &e.elements {
            out.push(codec::decode(name, el)?);
        }
    }
    Ok(out)
}

pub(crate) fn state_info(m: StateMeta) -> StateInfo {
    let timers = m.name.starts_with(TIMER_STATE_PREFIX);
    let value_type = match (&m.shapes, timers) {
        (_, true) => "i64 (timestamps)".to_string(),
        (Some(s), _) => match &s.user_key {
            Some(k) => format!("{k} -> {}", s.value),
            None => s.value.to_string(),
        },
        (None, _) if m.value_type.is_empty() => "unknown (not recorded)".into(),
        (None, _) => m.value_type.clone(),
    };
    StateInfo {
        kind: if timers {
            "timers".into()
        } else {
            cairn_state::canonical::kind_name(m.kind).into()
        },
        name: m.name,
        value_type,
        shapes: m.shapes,
    }
}

/// The backend named by the first backend-files manifest of `snapshot`'s
/// state files, if any (all subtasks of a snapshot use one backend).
fn native_backend(storage: &dyn Storage, snapshot: &LoadedSnapshot) -> Result<Option<String>, SpaError> {
    use cairn_runtime::snapshot_io::{decode_backend_files, BACKEND_FILES_SECTION};
    for (_, _, file) in snapshot.metadata.files() {
        if file.format != FileFormat::CairnStateV1 {
            continue;
        }
        if let Some(section) = file.sections.iter().find(|s| s.name == BACKEND_FILES_SECTION) {
            let bytes = snapshot.read_section(storage, file, section)?;
            let manifest = decode_backend_files(&file.path, &bytes).map_err(|e| SpaError::Snapshot(e.to_string()))?;
            return Ok(Some(manifest.backend));
        }
    }
    Ok(None)
}

/// Decode a timer's backend key: (timestamp, key bytes).
pub(crate) fn timer_key(composite: &[u8]) -> Option<(i64, &[u8])> {
    let ts = u64::from_be_bytes(composite.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let (key, _ns) = get_bytes(&composite[8..])?;
    Some((ts as i64, key))
}

/// (key group, key bytes) of every key, in order.
type KeySet = BTreeSet<(u32, Vec<u8>)>;

/// Per key bytes: its event-time and processing-time timers.
type KeyTimers = HashMap<Vec<u8>, (Vec<i64>, Vec<i64>)>;

/// The keys of a backend: (key group, key bytes) in order, with each key's
/// timers. `K` tells where a key ends and its namespace starts.
fn keys_and_timers<K: DeserializeOwned>(
    b: &mut dyn KeyedStateBackend,
    uid: &str,
) -> Result<(KeySet, KeyTimers), SpaError> {
    let metas = b.registered().to_vec();
    let mut keys = BTreeSet::new();
    let mut timers: KeyTimers = HashMap::new();
    let mut bad: Option<String> = None;
    for (i, m) in metas.iter().enumerate() {
        let id = i as StateId;
        if m.name == EVENT_TIMERS || m.name == PROCESSING_TIMERS {
            let event = m.name == EVENT_TIMERS;
            b.for_each_key(id, &mut |kg, composite| match timer_key(composite) {
                Some((ts, key)) => {
                    keys.insert((kg, key.to_vec()));
                    let t = timers.entry(key.to_vec()).or_default();
                    if event {
                        t.0.push(ts);
                    } else {
                        t.1.push(ts);
                    }
                }
                None => {
                    bad.get_or_insert_with(|| format!("uid '{uid}': a timer of key group {kg} is corrupt"));
                }
            })?;
            continue;
        }
        b.for_each_key(id, &mut |kg, composite| {
            match cairn_state::key_encoding::from_prefix::<K>(composite) {
                Ok((_, used)) => {
                    keys.insert((kg, composite[..used].to_vec()));
                }
                Err(e) => {
                    bad.get_or_insert_with(|| {
                        format!(
                            "uid '{uid}', state '{}': a key does not decode as {}: {e} (is the reader function's key type the operator's?)",
                            m.name,
                            std::any::type_name::<K>()
                        )
                    });
                }
            }
        })?;
    }
    if let Some(e) = bad {
        return Err(SpaError::Usage(e));
    }
    for t in timers.values_mut() {
        t.0.sort_unstable();
        t.0.dedup();
        t.1.sort_unstable();
        t.1.dedup();
    }
    Ok((keys, timers))
}

fn read_range<F: KeyedStateReaderFunction>(
    backend: Box<dyn KeyedStateBackend>,
    mut function: F,
    uid: &str,
) -> Result<Vec<F::Out>, SpaError> {
    let mut access = KeyedStateAccess::new(backend);
    access.set_processing_time(cairn_runtime::time::now_ms().max(0) as u64);
    let (keys, timers) = keys_and_timers::<F::Key>(access.backend_mut(), uid)?;
    function
        .open(&mut access)
        .map_err(|e| SpaError::Function(format!("open of the reader function for uid '{uid}': {e}")))?;
    let mut out = Collector { items: Vec::new() };
    let none = (Vec::new(), Vec::new());
    for (kg, kb) in keys {
        let key: F::Key = codec::decode_key("reader key", &kb)?;
        access.set_current_key(&kb, kg);
        let t = timers.get(&kb).unwrap_or(&none);
        let mut ctx = ReaderContext {
            access: &mut access,
            event: &t.0,
            processing: &t.1,
        };
        function
            .read_key(&key, &mut ctx, &mut out)
            .map_err(|e| SpaError::Function(format!("read_key of uid '{uid}' (key group {kg}): {e}")))?;
    }
    Ok(out.items)
}

/// Count keys, entries and bytes per state of a backend.
fn count(b: &mut dyn KeyedStateBackend, uid: &str) -> Result<Vec<StateStats>, SpaError> {
    // The logical view every backend gives (a file backend's checkpoint would be files).
    let request = SnapshotRequest {
        checkpoint_id: 0,
        kind: cairn_state::SnapshotRequestKind::CanonicalSavepoint,
    };
    let snap = b.snapshot(&request)?;
    let BackendSnapshot::KeyGroups(k) = snap else {
        return Err(SpaError::Snapshot(format!(
            "uid '{uid}': the '{}' backend has no logical view of its state to count",
            b.kind()
        )));
    };
    let mut stats: BTreeMap<String, StateStats> = BTreeMap::new();
    k.for_each_group(&mut |meta, _kg, bytes| {
        let s = stats.entry(meta.name.clone()).or_insert_with(|| StateStats {
            uid: uid.to_string(),
            state: meta.name.clone(),
            kind: state_info(meta.clone()).kind,
            ..Default::default()
        });
        s.bytes += bytes.len() as u64;
        let mut last: Option<Vec<u8>> = None;
        // Timers are kept by time, then key: a key with several timers
        // counts once.
        let timers = meta.name.starts_with(TIMER_STATE_PREFIX);
        let mut timer_keys = std::collections::HashSet::new();
        cairn_state::snapshot_codec::decode_group(&meta.name, meta.kind, bytes, &mut |d| {
            match d {
                Decoded::Entry { key, .. } if timers => {
                    let user_key = key.get(8..).and_then(get_bytes).map_or(key, |(k, _)| k);
                    if timer_keys.insert(user_key.to_vec()) {
                        s.keys += 1;
                    }
                    s.entries += 1;
                }
                Decoded::Entry { value, .. } => {
                    s.keys += 1;
                    s.entries += if meta.kind == StateKind::List {
                        count_list(value)
                    } else {
                        1
                    };
                }
                Decoded::MapEntry { key, .. } => {
                    if last.as_deref() != Some(key) {
                        s.keys += 1;
                        last = Some(key.to_vec());
                    }
                    s.entries += 1;
                }
            }
            Ok(())
        })
    })?;
    Ok(stats.into_values().collect())
}

fn count_list(mut value: &[u8]) -> u64 {
    let mut n = 0;
    while let Some((_, rest)) = get_bytes(value) {
        n += 1;
        value = rest;
        if value.is_empty() {
            break;
        }
    }
    n
}
