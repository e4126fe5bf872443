//! Writing savepoints: bootstrapped from data, or a modified copy of an
//! existing one. The output is always a self-contained canonical savepoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_canonical::keys::ShapeKeyCodec;
use cairn_operators::timers::{TimeDomain, TimerService};
use cairn_runtime::OpResult;
use cairn_snapshot::metadata::{write_metadata, SavepointFormat, SnapshotKind, SnapshotMetadata, CAIRN_VERSION};
use cairn_snapshot::{FileFormat, OperatorSnapshot as OpMeta, StateFileRef, Storage, SubtaskSnapshot};
use cairn_state::canonical::{key_codec_for, KeyCodec, TIMER_STATE_PREFIX};
use cairn_state::codec;
use cairn_state::hash::operator_id_for_uid;
use cairn_state::keygroup::{check_parallelism, key_bytes, key_group_for_bytes, KeyGroupRange};
use cairn_state::operator_state::{redistribute, OperatorStateEntry};
use cairn_state::snapshot_codec::Decoded;
use cairn_state::{
    HeapKeyedStateBackend, KeyedStateAccess, KeyedStateBackend, OperatorStateStore, SnapshotRequest, StateContext,
    StateError, StateMeta,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chunks;
use crate::progress::Tracker;
use crate::reader::{timer_key, SavepointReader};
use crate::spill::{self, SpillDir, Spiller};
use crate::{Options, SpaError};

// ---------------------------------------------------------------------------
// Bootstrap functions (Flink's names)
// ---------------------------------------------------------------------------

/// Writes keyed state from bounded input, one element at a time, with the
/// element's key current (Flink's `KeyedStateBootstrapFunction`). One clone
/// runs per range of key groups.
pub trait KeyedStateBootstrapFunction<K, IN>: Clone + Send + Sync + 'static {
    /// Register the states to write (keep the handles).
    fn open(&mut self, state: &mut KeyedStateAccess) -> Result<(), StateError>;
    /// Write the state of one element's key.
    fn process_element(&mut self, value: IN, ctx: &mut BootstrapContext<'_, K>) -> OpResult;
}

/// The context of one element of a keyed bootstrap.
pub struct BootstrapContext<'a, K> {
    key: &'a K,
    access: &'a mut KeyedStateAccess,
    timers: &'a mut TimerService,
}

impl<K> BootstrapContext<'_, K> {
    /// The current key (Flink's `getCurrentKey`).
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// Register an event-time timer for the current key; it fires once a job
    /// restored from the savepoint reaches that time.
    pub fn register_event_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self.timers.register(self.access, TimeDomain::EventTime, time, &[])?)
    }

    /// Register a processing-time timer for the current key.
    pub fn register_processing_time_timer(&mut self, time: i64) -> OpResult {
        Ok(self
            .timers
            .register(self.access, TimeDomain::ProcessingTime, time, &[])?)
    }
}

impl<K> StateContext for BootstrapContext<'_, K> {
    fn state_access(&mut self) -> &mut KeyedStateAccess {
        self.access
    }
}

/// Writes broadcast state from bounded input (Flink's
/// `BroadcastStateBootstrapFunction`); every subtask of the job gets it.
pub trait BroadcastStateBootstrapFunction<IN>: Send + 'static {
    fn process_element(&mut self, value: IN, ctx: &mut BroadcastBootstrapContext<'_>) -> OpResult;
}

/// Broadcast state being bootstrapped.
pub struct BroadcastBootstrapContext<'a> {
    store: &'a mut OperatorStateStore,
}

impl BroadcastBootstrapContext<'_> {
    /// Put `key -> value` into broadcast state `name`.
    pub fn put<K: Serialize, V: Serialize>(&mut self, name: &str, key: &K, value: &V) -> OpResult {
        Ok(self.store.broadcast_put(name, key, value)?)
    }
}

/// Writes operator (non-keyed) list state from bounded input (Flink's
/// `StateBootstrapFunction`); input is dealt round-robin over the
/// transformation's parallelism, one clone per subtask.
pub trait StateBootstrapFunction<IN>: Clone + Send + 'static {
    fn process_element(&mut self, value: IN, ctx: &mut OperatorBootstrapContext<'_>) -> OpResult;
    /// All input of this subtask was processed: last chance to write state.
    fn snapshot_state(&mut self, _ctx: &mut OperatorBootstrapContext<'_>) -> OpResult {
        Ok(())
    }
}

/// The operator state of one bootstrapped subtask.
pub struct OperatorBootstrapContext<'a> {
    store: &'a mut OperatorStateStore,
    subtask: u32,
    parallelism: u32,
}

impl OperatorBootstrapContext<'_> {
    /// The subtask's operator state.
    pub fn operator_state(&mut self) -> &mut OperatorStateStore {
        self.store
    }

    /// Append `value` to list state `name` (split evenly on restore).
    pub fn add<T: Serialize + DeserializeOwned>(&mut self, name: &str, value: &T) -> OpResult {
        self.push(name, cairn_state::DistributionMode::SplitEvenly, value)
    }

    /// Append `value` to union list state `name` (every subtask gets all on restore).
    pub fn add_union<T: Serialize + DeserializeOwned>(&mut self, name: &str, value: &T) -> OpResult {
        self.push(name, cairn_state::DistributionMode::Union, value)
    }

    fn push<T: Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
        mode: cairn_state::DistributionMode,
        value: &T,
    ) -> OpResult {
        let mut list: Vec<T> = self.store.list(name)?;
        list.push(codec::decode(name, &{
            let mut b = Vec::new();
            codec::encode_into(name, value, &mut b)?;
            b
        })?);
        Ok(self.store.set_list(name, mode, &list)?)
    }

    /// This subtask's index (0-based).
    pub fn subtask(&self) -> u32 {
        self.subtask
    }

    /// The transformation's parallelism.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }
}

// ---------------------------------------------------------------------------
// Transformations
// ---------------------------------------------------------------------------

/// Where bootstrapping starts (Flink's `OperatorTransformation`).
pub struct OperatorTransformation;

impl OperatorTransformation {
    /// Bootstrap from bounded input.
    pub fn bootstrap_with<T, I>(data: I) -> BootstrapInput<T>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
        T: Send + 'static,
    {
        BootstrapInput {
            data: Box::new(data.into_iter()),
            parallelism: None,
        }
    }
}

type Input<T> = Box<dyn Iterator<Item = T> + Send>;

/// Bounded input, not yet transformed.
pub struct BootstrapInput<T> {
    data: Input<T>,
    parallelism: Option<u32>,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> BootstrapInput<T> {
    /// The parallelism recorded for the operator (how many subtasks' files
    /// it has; a job may restore it at any parallelism).
    pub fn set_parallelism(mut self, parallelism: u32) -> Self {
        self.parallelism = Some(parallelism);
        self
    }

    /// Key the input: the transformation then writes keyed state.
    pub fn key_by<K, F>(self, key: F) -> KeyedBootstrapInput<T, K>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&T) -> K + Send + 'static,
    {
        KeyedBootstrapInput {
            data: self.data,
            parallelism: self.parallelism,
            key: Box::new(key),
        }
    }

    /// Write operator list state with `function` (Flink's `transform` with a
    /// `StateBootstrapFunction`).
    pub fn transform<F: StateBootstrapFunction<T>>(self, function: F) -> BootstrapTransformation {
        let parallelism = self.parallelism.unwrap_or(1).max(1);
        let data = self.data;
        BootstrapTransformation {
            parallelism,
            keyed: false,
            run: Box::new(move |job: &BootstrapJob<'_>| {
                let mut stores: Vec<(F, OperatorStateStore)> = (0..parallelism)
                    .map(|_| (function.clone(), OperatorStateStore::new()))
                    .collect();
                for (i, v) in data.enumerate() {
                    let sub = (i % parallelism as usize) as u32;
                    let (f, store) = &mut stores[sub as usize];
                    let mut ctx = OperatorBootstrapContext {
                        store,
                        subtask: sub,
                        parallelism,
                    };
                    f.process_element(v, &mut ctx)
                        .map_err(|e| SpaError::Function(format!("bootstrap of uid '{}': {e}", job.uid)))?;
                }
                let mut out = Vec::new();
                for (sub, (mut f, mut store)) in stores.into_iter().enumerate() {
                    let mut ctx = OperatorBootstrapContext {
                        store: &mut store,
                        subtask: sub as u32,
                        parallelism,
                    };
                    f.snapshot_state(&mut ctx)
                        .map_err(|e| SpaError::Function(format!("bootstrap of uid '{}': {e}", job.uid)))?;
                    out.push(job.operator_files(sub as u32, &store.to_entries())?);
                }
                Ok(out)
            }),
        }
    }

    /// Write broadcast state with `function` (Flink's `transform` with a
    /// `BroadcastStateBootstrapFunction`).
    pub fn transform_broadcast<F: BroadcastStateBootstrapFunction<T>>(
        self,
        mut function: F,
    ) -> BootstrapTransformation {
        let data = self.data;
        BootstrapTransformation {
            parallelism: 1,
            keyed: false,
            run: Box::new(move |job: &BootstrapJob<'_>| {
                let mut store = OperatorStateStore::new();
                for v in data {
                    let mut ctx = BroadcastBootstrapContext { store: &mut store };
                    function
                        .process_element(v, &mut ctx)
                        .map_err(|e| SpaError::Function(format!("bootstrap of uid '{}': {e}", job.uid)))?;
                }
                Ok(vec![job.operator_files(0, &store.to_entries())?])
            }),
        }
    }
}

/// Keyed bounded input.
pub struct KeyedBootstrapInput<T, K> {
    data: Input<T>,
    parallelism: Option<u32>,
    key: Box<dyn Fn(&T) -> K + Send>,
}

impl<T, K> KeyedBootstrapInput<T, K>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
{
    /// Write keyed state with `function` (Flink's `transform` with a
    /// `KeyedStateBootstrapFunction`).
    pub fn transform<F: KeyedStateBootstrapFunction<K, T>>(self, function: F) -> BootstrapTransformation {
        let KeyedBootstrapInput { data, parallelism, key } = self;
        BootstrapTransformation {
            parallelism: parallelism.unwrap_or(0),
            keyed: true,
            run: Box::new(move |job: &BootstrapJob<'_>| {
                let max_p = job.max_parallelism;
                let p = job.parallelism;
                let dir = SpillDir::new(&job.options.spill_dir)?;
                let ranges: Vec<KeyGroupRange> = (0..p).map(|s| KeyGroupRange::for_subtask(max_p, p, s)).collect();
                let mut spiller = Spiller::new(&dir, &ranges)?;
                let mut kb = Vec::new();
                let mut elem = Vec::new();
                for v in data {
                    let k = key(&v);
                    key_bytes(&k, &mut kb).map_err(|e| {
                        SpaError::Usage(format!("bootstrap of uid '{}': the key does not encode: {e}", job.uid))
                    })?;
                    let kg = key_group_for_bytes(&kb, max_p);
                    codec::encode_into("bootstrap input", &v, &mut elem)?;
                    spiller.push(kg, 0, &kb, &[], &elem)?;
                }
                let budget = job.options.budget_per_worker();
                let buckets = spiller.finish(budget)?;
                let codec = key_codec_for::<K>();
                let files = chunks::run(&buckets, job.options.parallelism, |i, b| {
                    let mut access = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(b.range)));
                    let mut f = function.clone();
                    f.open(&mut access).map_err(|e| {
                        SpaError::Function(format!("open of the bootstrap function of uid '{}': {e}", job.uid))
                    })?;
                    let mut timers =
                        TimerService::open(&mut access, cairn_operators::timers::TimerSettings::default())?;
                    spill::read(&b.path, &mut |r| {
                        let k: K = codec::decode_key("bootstrap key", &r.a)?;
                        let v: T = codec::decode("bootstrap input", &r.c)?;
                        access.set_current_key(&r.a, r.kg);
                        let mut ctx = BootstrapContext {
                            key: &k,
                            access: &mut access,
                            timers: &mut timers,
                        };
                        f.process_element(v, &mut ctx)
                            .map_err(|e| SpaError::Function(format!("bootstrap of uid '{}': {e}", job.uid)))
                    })?;
                    let files = job.keyed_files(access.backend_mut(), &format!("b{i}"), Some(&codec))?;
                    Ok((b.range, files))
                })?;
                Ok(job.by_subtask(files))
            }),
        }
    }
}

/// What an operator's state is made from (Flink's `BootstrapTransformation`).
pub struct BootstrapTransformation {
    /// 0: decided by the writer.
    parallelism: u32,
    keyed: bool,
    run: Box<BootstrapRun>,
}

/// Writes an operator's files; the files of each subtask.
type BootstrapRun = dyn FnOnce(&BootstrapJob<'_>) -> Result<Vec<Vec<StateFileRef>>, SpaError> + Send;

/// What a transformation writes into.
struct BootstrapJob<'a> {
    uid: String,
    operator_id: String,
    storage: &'a dyn Storage,
    dir: &'a Path,
    max_parallelism: u32,
    parallelism: u32,
    options: &'a Options,
}

impl BootstrapJob<'_> {
    fn stem(&self, subtask: u32) -> String {
        format!("op-{}-{subtask}", self.operator_id)
    }

    fn operator_files(&self, subtask: u32, entries: &[OperatorStateEntry]) -> Result<Vec<StateFileRef>, SpaError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let rel = format!("{}.operator.parquet", self.stem(subtask));
        Ok(vec![cairn_canonical::write_operator_file(
            self.storage,
            self.dir,
            &rel,
            entries,
            &self.options.write,
        )
        .map_err(SpaError::Snapshot)?])
    }

    /// Snapshot `backend` into canonical files named after `part`.
    fn keyed_files(
        &self,
        backend: &mut dyn KeyedStateBackend,
        part: &str,
        codec: Option<&KeyCodec>,
    ) -> Result<Vec<StateFileRef>, SpaError> {
        let snap = backend.snapshot(&SnapshotRequest {
            checkpoint_id: 0,
            kind: cairn_state::SnapshotRequestKind::CanonicalSavepoint,
        })?;
        let groups = snap
            .key_groups()
            .ok_or_else(|| SpaError::Snapshot("the backend gave no logical key groups (a Cairn bug)".into()))?;
        let stem = format!("op-{}-{part}", self.operator_id);
        cairn_canonical::write_keyed_snapshot(
            self.storage,
            self.dir,
            &stem,
            groups,
            codec,
            &self.options.write,
            &mut |_| {},
        )
        .map_err(SpaError::Snapshot)
    }

    /// Files of key-group ranges, grouped by the subtask owning each range.
    fn by_subtask(&self, parts: Vec<(KeyGroupRange, Vec<StateFileRef>)>) -> Vec<Vec<StateFileRef>> {
        let mut out: Vec<Vec<StateFileRef>> = vec![Vec::new(); self.parallelism as usize];
        for (range, files) in parts {
            let sub = (0..self.parallelism)
                .find(|s| KeyGroupRange::for_subtask(self.max_parallelism, self.parallelism, *s).contains(range.start))
                .unwrap_or(0);
            out[sub as usize].extend(files);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

enum Planned {
    /// An operator of the existing savepoint, under its (possibly new) uid.
    Existing { index: usize, uid: String },
    /// A bootstrapped operator.
    New {
        uid: String,
        transformation: BootstrapTransformation,
    },
}

impl Planned {
    fn uid(&self) -> &str {
        match self {
            Planned::Existing { uid, .. } | Planned::New { uid, .. } => uid,
        }
    }
}

/// Builds a new savepoint (Flink's `SavepointWriter`). Problems (unknown
/// uids, duplicates, an impossible max parallelism) are reported by
/// [`SavepointWriter::write`], each naming what to fix.
pub struct SavepointWriter {
    base: Option<SavepointReader>,
    max_parallelism: Option<u32>,
    planned: Vec<Planned>,
    problems: Vec<String>,
    options: Options,
}

impl SavepointWriter {
    /// A new, empty savepoint whose keyed state has `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        let mut w = SavepointWriter {
            base: None,
            max_parallelism: Some(max_parallelism),
            planned: Vec::new(),
            problems: Vec::new(),
            options: Options::default(),
        };
        if let Err(e) = check_parallelism(1, max_parallelism) {
            w.problems.push(format!("max parallelism {max_parallelism}: {e}"));
        }
        w
    }

    /// A copy of the savepoint or checkpoint at `path` to modify.
    pub fn from_existing(path: impl AsRef<Path>) -> Result<Self, SpaError> {
        Self::from_reader(SavepointReader::read(path)?)
    }

    /// A copy of an opened snapshot to modify (its storage and options are used).
    pub fn from_reader(base: SavepointReader) -> Result<Self, SpaError> {
        let planned = base
            .metadata()
            .operators
            .iter()
            .enumerate()
            .map(|(index, op)| Planned::Existing {
                index,
                uid: op.uid.clone(),
            })
            .collect();
        Ok(SavepointWriter {
            options: base.options().clone(),
            base: Some(base),
            max_parallelism: None,
            planned,
            problems: Vec::new(),
        })
    }

    /// Work with these options (memory, threads, output compression).
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Add an operator whose state `transformation` makes; an existing
    /// operator with the same uid is replaced.
    pub fn with_operator(mut self, uid: impl Into<String>, transformation: BootstrapTransformation) -> Self {
        let uid = uid.into();
        self.planned.retain(|p| p.uid() != uid);
        self.planned.push(Planned::New { uid, transformation });
        self
    }

    /// Drop the state of the operator with `uid`.
    pub fn remove_operator(mut self, uid: &str) -> Self {
        let before = self.planned.len();
        self.planned.retain(|p| p.uid() != uid);
        if self.planned.len() == before {
            self.problems
                .push(format!("remove_operator: there is no operator with uid '{uid}'"));
        }
        self
    }

    /// The uids the savepoint would have, as planned so far.
    pub fn uids(&self) -> impl Iterator<Item = &str> {
        self.planned.iter().map(Planned::uid)
    }

    /// Give the operator with uid `old` the uid `new` (its state then maps
    /// to the operator with uid `new` on restore).
    pub fn rename_uid(mut self, old: &str, new: &str) -> Self {
        if self.planned.iter().any(|p| p.uid() == new) {
            self.problems.push(format!(
                "rename_uid: uid '{new}' is already taken; remove that operator first"
            ));
            return self;
        }
        match self.planned.iter_mut().find(|p| p.uid() == old) {
            Some(Planned::Existing { uid, .. }) | Some(Planned::New { uid, .. }) => *uid = new.to_string(),
            None => self
                .problems
                .push(format!("rename_uid: there is no operator with uid '{old}'")),
        }
        self
    }

    /// Give keyed state `max_parallelism` key groups: every key moves to the
    /// key group its hash gives under the new number (what Flink cannot do).
    pub fn change_max_parallelism(mut self, max_parallelism: u32) -> Self {
        if let Err(e) = check_parallelism(1, max_parallelism) {
            self.problems
                .push(format!("change_max_parallelism({max_parallelism}): {e}"));
        }
        self.max_parallelism = Some(max_parallelism);
        self
    }

    /// Write the savepoint into directory `path` (created; it must not
    /// hold a snapshot already) on local files. Returns the directory.
    pub fn write(self, path: impl AsRef<Path>) -> Result<PathBuf, SpaError> {
        let storage: Arc<dyn Storage> = match &self.base {
            Some(b) => b.storage().clone(),
            None => cairn_snapshot::StorageRouter::local_only().shared(),
        };
        self.write_to(storage, path.as_ref())
    }

    /// [`SavepointWriter::write`] on any storage.
    pub fn write_to(self, storage: Arc<dyn Storage>, dir: &Path) -> Result<PathBuf, SpaError> {
        if !self.problems.is_empty() {
            return Err(SpaError::Usage(self.problems.join("; ")));
        }
        let mut uids = std::collections::BTreeSet::new();
        for p in &self.planned {
            if !uids.insert(p.uid().to_string()) {
                return Err(SpaError::Usage(format!("two operators would have uid '{}'", p.uid())));
            }
        }
        // `..` would put the files somewhere else than the checks below
        // looked (`new/..` is the current directory), and a cleanup there
        // would delete what is not this write's.
        if dir.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(SpaError::Usage(format!(
                "{}: name the savepoint directory without '..'",
                storage.display(dir)
            )));
        }
        let meta_path = cairn_snapshot::layout::metadata_path(dir);
        if storage.exists(&meta_path).unwrap_or(false) {
            return Err(SpaError::Usage(format!(
                "{} already holds a snapshot; write the new savepoint into a new directory",
                storage.display(dir)
            )));
        }
        let existed = storage.exists(dir)?;
        if existed && !storage.list(dir).is_ok_and(|entries| entries.is_empty()) {
            return Err(SpaError::Usage(format!(
                "{} is not an empty directory; write the new savepoint into a new or empty directory (its files would mix with what is there)",
                storage.display(dir)
            )));
        }
        if let Some(base) = &self.base {
            let input = &base.snapshot().dir;
            if absolute(dir).starts_with(absolute(input)) {
                return Err(SpaError::Usage(format!(
                    "{} is inside the savepoint being read ({}); write the new savepoint outside it",
                    storage.display(dir),
                    storage.display(input)
                )));
            }
        }
        storage.create_dir_all(dir)?;
        let written = self.write_files(&*storage, dir);
        // Leave no half-written savepoint behind: the directory was new or
        // empty, so what is in it is this write's, unless another writer
        // completed a savepoint there meanwhile (then its `_metadata` is there).
        if written.is_err() && !storage.exists(&meta_path).unwrap_or(true) {
            if existed {
                // Empty it, but keep it (it may be a link, or the user's mount point).
                for e in storage.list(dir).unwrap_or_default() {
                    let p = dir.join(&e.name);
                    let _ = if e.is_dir {
                        storage.delete_dir_all(&p)
                    } else {
                        storage.delete_file(&p)
                    };
                }
            } else {
                let _ = storage.delete_dir_all(dir);
            }
        }
        written
    }

    /// The body of [`SavepointWriter::write_to`], into a new or empty `dir`.
    fn write_files(self, storage: &dyn Storage, dir: &Path) -> Result<PathBuf, SpaError> {
        let base_max = self.base.as_ref().and_then(|b| {
            b.metadata()
                .operators
                .iter()
                .find(|o| o.subtasks.iter().any(|s| !s.files.is_empty()))
                .map(|o| o.max_parallelism)
        });
        let default_max = self.max_parallelism.or(base_max).unwrap_or(128);
        // Progress counts the key groups of existing operators' keyed state,
        // once read and, when rehashed, once more written.
        let mut units = 0u64;
        if let Some(base) = &self.base {
            for p in &self.planned {
                if let Planned::Existing { index, .. } = p {
                    let op = &base.metadata().operators[*index];
                    units += copy_units(base, op, self.max_parallelism)?;
                }
            }
        }
        let tracker = Tracker::new("rewriting", "key groups", self.options.progress.as_ref(), units);
        let mut operators = Vec::new();
        for p in self.planned {
            operators.push(match p {
                Planned::Existing { index, uid } => {
                    let base = self.base.as_ref().expect("existing operators come from a base");
                    let op = &base.metadata().operators[index];
                    copy_operator(
                        base,
                        op,
                        &uid,
                        self.max_parallelism,
                        storage,
                        dir,
                        &self.options,
                        &tracker,
                    )?
                }
                Planned::New { uid, transformation } => {
                    let operator_id = operator_id_for_uid(&uid);
                    let parallelism = match transformation.parallelism {
                        0 => default_max.min(4),
                        n => n.min(default_max),
                    };
                    let job = BootstrapJob {
                        uid: uid.clone(),
                        operator_id: operator_id.clone(),
                        storage,
                        dir,
                        max_parallelism: default_max,
                        parallelism,
                        options: &self.options,
                    };
                    let keyed = transformation.keyed;
                    let files = (transformation.run)(&job)?;
                    let parallelism = if keyed { parallelism } else { files.len().max(1) as u32 };
                    OpMeta {
                        operator_id,
                        uid: uid.clone(),
                        name: format!("bootstrap: {uid}"),
                        parallelism,
                        max_parallelism: default_max.max(parallelism),
                        subtasks: subtasks(files, parallelism),
                    }
                }
            });
        }
        let (job_id, checkpoint_id) = match &self.base {
            Some(b) => (b.metadata().job_id.clone(), b.metadata().checkpoint_id),
            None => (cairn_snapshot::layout::JobId::generate().to_string(), 0),
        };
        let now = cairn_runtime::time::now_ms().max(0) as u64;
        let mut meta = SnapshotMetadata {
            format_version: cairn_snapshot::metadata::METADATA_VERSION,
            kind: SnapshotKind::Savepoint {
                format: SavepointFormat::Canonical,
            },
            job_id,
            checkpoint_id,
            trigger_timestamp_ms: now,
            completion_timestamp_ms: now,
            cairn_version: CAIRN_VERSION.to_string(),
            operators,
        };
        meta.format_version = meta.version_needed();
        write_metadata(storage, dir, &meta)?;
        Ok(dir.to_path_buf())
    }
}

/// `path` made absolute with its symbolic links resolved as far as it exists
/// (the rest appended as given), to compare where two paths really are.
fn absolute(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn subtasks(files: Vec<Vec<StateFileRef>>, parallelism: u32) -> Vec<SubtaskSnapshot> {
    let mut out: Vec<SubtaskSnapshot> = (0..parallelism)
        .map(|s| SubtaskSnapshot {
            subtask_index: s,
            files: Vec::new(),
        })
        .collect();
    for (i, f) in files.into_iter().enumerate() {
        let i = i.min(out.len().saturating_sub(1));
        if let Some(s) = out.get_mut(i) {
            s.files.extend(f);
        }
    }
    out
}

/// The progress units of copying `op`: its key groups when it has keyed
/// state, and the new max parallelism's too when its keys are rehashed.
fn copy_units(base: &SavepointReader, op: &OpMeta, new_max: Option<u32>) -> Result<u64, SpaError> {
    if base.keyed_states(op)?.is_empty() {
        return Ok(0);
    }
    let rehash = new_max.filter(|m| *m != op.max_parallelism).unwrap_or(0);
    Ok(u64::from(op.max_parallelism) + u64::from(rehash))
}

fn size_of(files: &[StateFileRef]) -> u64 {
    files.iter().map(|f| f.size).sum()
}

fn width(range: &KeyGroupRange) -> u64 {
    u64::from(range.end_exclusive.saturating_sub(range.start))
}

/// Copy an operator of the base snapshot under `uid` (canonical v2 files
/// byte for byte; other formats re-encoded), rehashing its keys when the
/// max parallelism changes.
#[allow(clippy::too_many_arguments)]
fn copy_operator(
    base: &SavepointReader,
    op: &OpMeta,
    uid: &str,
    new_max: Option<u32>,
    storage: &dyn Storage,
    dir: &Path,
    options: &Options,
    tracker: &Tracker,
) -> Result<OpMeta, SpaError> {
    let operator_id = operator_id_for_uid(uid);
    let has_keyed = !base.keyed_states(op)?.is_empty();
    let rehash = new_max.filter(|m| *m != op.max_parallelism && has_keyed);
    let max_parallelism = rehash.unwrap_or(op.max_parallelism).max(1);
    let parallelism = op.parallelism.min(max_parallelism);
    let mut files: Vec<Vec<StateFileRef>> = vec![Vec::new(); parallelism as usize];
    // Operator state, per old subtask, redistributed if the parallelism shrank.
    let old_entries = base.operator_entries(op)?;
    let entries = if parallelism == op.parallelism {
        old_entries
    } else {
        redistribute(&old_entries, parallelism as usize)
    };
    let job = BootstrapJob {
        uid: uid.to_string(),
        operator_id: operator_id.clone(),
        storage,
        dir,
        max_parallelism,
        parallelism,
        options,
    };
    for (s, e) in entries.iter().enumerate() {
        files[s].extend(job.operator_files(s as u32, e)?);
    }
    let key_codec: Option<KeyCodec> = base
        .key_shape(op)?
        .and_then(ShapeKeyCodec::new)
        .map(|c| Arc::new(c) as KeyCodec);
    match rehash {
        None => {
            let canonical = op
                .subtasks
                .iter()
                .flat_map(|s| &s.files)
                .all(|f| matches!(f.format, FileFormat::ParquetV2));
            if canonical {
                for sub in &op.subtasks {
                    let mut copied = 0;
                    for f in &sub.files {
                        if let cairn_canonical::CanonicalFile::Keyed(_) =
                            base.state_reader().open_canonical_v2(op, f)?
                        {
                            files[sub.subtask_index as usize].push(copy_file(base, f, storage, dir)?);
                            copied += f.size;
                        }
                    }
                    if has_keyed {
                        let old = KeyGroupRange::for_subtask(op.max_parallelism, op.parallelism, sub.subtask_index);
                        tracker.advance(width(&old), copied);
                    }
                }
            } else if has_keyed {
                let within: Vec<KeyGroupRange> = (0..parallelism)
                    .map(|s| KeyGroupRange::for_subtask(max_parallelism, parallelism, s))
                    .collect();
                let ranges = base.ranges(op, &within);
                let parts = chunks::run(&ranges, options.parallelism, |i, range| {
                    let mut b = base.restore_range(op, *range)?;
                    let out = job.keyed_files(&mut *b, &format!("r{i}"), key_codec.as_ref())?;
                    tracker.advance(width(range), size_of(&out));
                    Ok((*range, out))
                })?;
                for (s, f) in job.by_subtask(parts).into_iter().enumerate() {
                    files[s].extend(f);
                }
            }
        }
        Some(new_max) => {
            let codec = key_codec.ok_or_else(|| {
                SpaError::Usage(format!(
                    "cannot change the max parallelism of uid '{}': its snapshot does not record its key type, which rehashing keys needs (take a new savepoint with this version of Cairn first)",
                    op.uid
                ))
            })?;
            for (s, f) in rehash_keys(base, op, &job, new_max, &codec, tracker)?
                .into_iter()
                .enumerate()
            {
                files[s].extend(f);
            }
        }
    }
    Ok(OpMeta {
        operator_id,
        uid: uid.to_string(),
        name: op.name.clone(),
        parallelism,
        max_parallelism,
        subtasks: subtasks(files, parallelism),
    })
}

/// Copy one file byte for byte, checking its CRC-32.
fn copy_file(
    base: &SavepointReader,
    f: &StateFileRef,
    storage: &dyn Storage,
    dir: &Path,
) -> Result<StateFileRef, SpaError> {
    let from = base.snapshot().resolve(f)?;
    let name = Path::new(&f.path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| f.path.clone());
    let mut to_rel = name.clone();
    let mut n = 2;
    while storage.exists(&dir.join(&to_rel))? {
        to_rel = format!("{n}-{name}");
        n += 1;
    }
    let mut w = cairn_snapshot::checksum::ChecksummingWriter::new(storage.create(&dir.join(&to_rel))?);
    let mut offset = 0;
    while offset < f.size {
        let len = (f.size - offset).min(8 << 20);
        let bytes = base.storage().read_range(&from, offset, len)?;
        std::io::Write::write_all(&mut w, &bytes).map_err(|e| SpaError::Snapshot(format!("writing {to_rel}: {e}")))?;
        offset += len;
    }
    let (inner, size, crc32) = w.into_parts();
    inner.finish()?;
    if crc32 != f.crc32 || size != f.size {
        return Err(SpaError::Snapshot(format!(
            "{} changed while it was copied (CRC-32 {crc32:08x}, _metadata says {:08x})",
            f.path, f.crc32
        )));
    }
    Ok(StateFileRef {
        path: to_rel,
        ..f.clone()
    })
}

/// Move every key of `op` to its key group under `new_max`: read a range
/// of old key groups at a time, spill entries by new key group, then build
/// each bucket of new key groups in memory and write it.
fn rehash_keys(
    base: &SavepointReader,
    op: &OpMeta,
    job: &BootstrapJob<'_>,
    new_max: u32,
    codec: &KeyCodec,
    tracker: &Tracker,
) -> Result<Vec<Vec<StateFileRef>>, SpaError> {
    let options = job.options;
    let dir = SpillDir::new(&options.spill_dir)?;
    let p = job.parallelism;
    let new_ranges: Vec<KeyGroupRange> = (0..p).map(|s| KeyGroupRange::for_subtask(new_max, p, s)).collect();
    let mut spiller = Spiller::new(&dir, &new_ranges)?;
    let mut metas: Vec<StateMeta> = Vec::new();
    let old = base.ranges(
        op,
        &[KeyGroupRange {
            start: 0,
            end_exclusive: op.max_parallelism,
        }],
    );
    let mut mp = Vec::new();
    for range in old {
        let mut b = base.restore_range(op, range)?;
        // The logical view every backend gives (a file backend's checkpoint would be files).
        let snap = b.snapshot(&SnapshotRequest {
            checkpoint_id: 0,
            kind: cairn_state::SnapshotRequestKind::CanonicalSavepoint,
        })?;
        let groups = snap
            .key_groups()
            .ok_or_else(|| SpaError::Snapshot(format!("uid '{}': the backend gave no logical key groups", op.uid)))?;
        let mut failure: Option<SpaError> = None;
        groups
            .for_each_group(&mut |meta, kg, bytes| {
                let si = match metas.iter().position(|m| m.name == meta.name) {
                    Some(i) => i,
                    None => {
                        metas.push(meta.clone());
                        metas.len() - 1
                    }
                } as u32;
                let timers = meta.name.starts_with(TIMER_STATE_PREFIX);
                cairn_state::snapshot_codec::decode_group(&meta.name, meta.kind, bytes, &mut |d| {
                    let step = (|| -> Result<(), SpaError> {
                        let (composite, user_key, value, tag) = match d {
                            Decoded::Entry { key, value } => (key, &[][..], value, 0),
                            Decoded::MapEntry { key, user_key, value } => (key, user_key, value, 1),
                        };
                        let key_part = if timers {
                            timer_key(composite)
                                .ok_or_else(|| {
                                    SpaError::Snapshot(format!(
                                        "uid '{}': a timer of key group {kg} is corrupt",
                                        op.uid
                                    ))
                                })?
                                .1
                        } else {
                            mp.clear();
                            let used = codec.key_msgpack(composite, &mut mp).map_err(|e| {
                                SpaError::Snapshot(format!(
                                    "uid '{}', state '{}': a key does not decode: {e}",
                                    op.uid, meta.name
                                ))
                            })?;
                            &composite[..used]
                        };
                        let new_kg = key_group_for_bytes(key_part, new_max);
                        spiller.push(new_kg, si * 2 + tag, composite, user_key, value)
                    })();
                    step.map_err(|e| {
                        failure = Some(e);
                        StateError::Backend(String::new())
                    })
                })
            })
            .map_err(|e| failure.take().unwrap_or_else(|| SpaError::Snapshot(e.to_string())))?;
        drop(b);
        tracker.advance(width(&range), 0);
    }
    let budget = options.budget_per_worker();
    let buckets = spiller.finish(budget)?;
    let parts = chunks::run(&buckets, options.parallelism, |i, bucket| {
        let mut b = HeapKeyedStateBackend::new(bucket.range);
        let ids = metas.iter().map(|m| b.register(m)).collect::<Result<Vec<_>, _>>()?;
        spill::read(&bucket.path, &mut |r| {
            let id = ids[(r.tag / 2) as usize];
            if r.tag % 2 == 1 {
                b.map_put(id, r.kg, &r.a, &r.b, &r.c)?;
            } else {
                b.put(id, r.kg, &r.a, &r.c)?;
            }
            Ok(())
        })?;
        let out = job.keyed_files(&mut b, &format!("k{i}"), Some(codec))?;
        tracker.advance(width(&bucket.range), size_of(&out));
        Ok((bucket.range, out))
    })?;
    Ok(job.by_subtask(parts))
}
