//! Restoring a job from a savepoint or retained checkpoint: state is matched to
//! operators by operator id (the uid's hash); keyed state is read by key group
//! for each new subtask's range (rescaling moves whole key groups); operator
//! list state is redistributed (split evenly, union, broadcast).
//!
//! Both savepoint formats restore here: native/checkpoint state files
//! (sections read by byte range) and canonical Parquet files (`ParquetV1` in
//! `_metadata`: rows turned back into the backend encoding by
//! `cairn_state::canonical`, only row groups of the subtask's key groups read).
//!
//! Unaligned checkpoints also hold channel state (`ChannelStateV1`): the
//! in-flight messages each subtask had not processed, replayed before any
//! new input. At the same parallelism a subtask gets its own; rescaled, the
//! records are redistributed as Flink does (by key group on keyed edges,
//! round robin on forward and rebalance edges); in-flight records of a
//! broadcast edge whose target changed parallelism are refused with a
//! pointer to savepoints (always aligned).

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use cairn_graph::{Partitioning, ResolvedGraph};
use cairn_snapshot::layout::resolve_ref;
use cairn_snapshot::parquet::ParquetFooter;
use cairn_snapshot::{FileFormat, LoadedSnapshot, OperatorSnapshot, StateFileRef, Storage, SubtaskSnapshot};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::operator_state::{redistribute, OperatorStateEntry};
use cairn_state::{FileSetRestore, KeyedStateBackend, OperatorStateStore, StateError, UploadedFile};

use cairn_runtime::channel_state::{channel_section, decode_channel_index, ChannelIndexEntry, CHANNELS_SECTION};
use cairn_runtime::error::{BoxError, JobError, SetupError, SetupErrorKind};
use cairn_runtime::job::{backend_context, edge_ordinal, JobSpec, RestoredChannelState, SubtaskRestore};
use cairn_runtime::snapshot_io::{
    canonical_content, canonical_keyed_overlaps, decode_backend_files, decode_keyed_states, decode_operator_entries,
    keyed_section, read_canonical_footer, read_canonical_operator_entries, restore_canonical_keyed, CanonicalContent,
    SnapshotIoError, BACKEND_FILES_SECTION, KEYED_STATES_SECTION, OPERATOR_SECTION,
};
use cairn_runtime::upload::download_file;

/// One channel's entry in a channel-state file of the snapshot, matched to
/// the edge of the new job it belongs to.
struct ChannelStateEntry {
    /// Old subtask that captured it.
    old_subtask: u32,
    /// Index of its file among that subtask's files.
    file: usize,
    entry: ChannelIndexEntry,
    partitioning: Partitioning,
    /// Either end of the edge changed its parallelism.
    rescaled: bool,
}

/// Read the index of every channel-state file of the matched operators and
/// match each channel to an edge of the new job, refusing what cannot be
/// redistributed (Flink's rules): an edge that no longer exists, and a
/// broadcast edge whose target changed its parallelism (every subtask saw
/// every record, each at its own position; there is no way to split that).
fn load_channel_state(
    snapshot: &LoadedSnapshot,
    storage: &dyn Storage,
    graph: &ResolvedGraph,
    matched: &HashMap<usize, usize>,
) -> Result<HashMap<usize, Vec<ChannelStateEntry>>, JobError> {
    let mut out: HashMap<usize, Vec<ChannelStateEntry>> = HashMap::new();
    for (&node, &op_idx) in matched {
        let op = &snapshot.metadata.operators[op_idx];
        let n = &graph.nodes[node];
        for sub in &op.subtasks {
            for (fi, file) in sub.files.iter().enumerate() {
                if file.format != FileFormat::ChannelStateV1 {
                    continue;
                }
                let named = |what: String| channel_state_err(snapshot, file, op, sub.subtask_index, what);
                let incompatible = |what: String| {
                    channel_state_err_kind(
                        snapshot,
                        file,
                        op,
                        sub.subtask_index,
                        SetupErrorKind::IncompatibleState,
                        what,
                    )
                };
                let index = read_channel_section(snapshot, storage, file, op, sub.subtask_index, CHANNELS_SECTION)?;
                let index = decode_channel_index(&index).map_err(&named)?;
                for (i, entry) in index.into_iter().enumerate() {
                    if entry.section != channel_section(i) {
                        return Err(named(format!(
                            "index entry {i} names section '{}', expected '{}'",
                            entry.section,
                            channel_section(i)
                        )));
                    }
                    let d = &entry.channel;
                    let edge = graph.edges.iter().enumerate().find(|(ei, e)| {
                        e.target.0 == node
                            && e.target_input == d.input
                            && graph.nodes[e.source.0].operator_id == d.source_operator_id
                            && edge_ordinal(graph, *ei) == d.edge_ordinal
                    });
                    let Some((_, edge)) = edge else {
                        return Err(incompatible(format!(
                            "it holds in-flight records for {d}, but in this job no such edge leads to operator '{}' (its topology changed). Restore the old job, take a savepoint (savepoints are always aligned, without in-flight records) and change the job from that",
                            n.name
                        )));
                    };
                    let old_source = snapshot.metadata.operator(&d.source_operator_id).map(|o| o.parallelism);
                    let target_rescaled = op.parallelism != n.parallelism;
                    let rescaled = target_rescaled || old_source != Some(graph.nodes[edge.source.0].parallelism);
                    if target_rescaled && edge.partitioning == Partitioning::Broadcast {
                        return Err(incompatible(format!(
                            "checkpoint {} is an unaligned checkpoint with in-flight records on a broadcast edge into operator '{}' (uid '{}'), which had parallelism {} and now has {}. In-flight broadcast records cannot be redistributed (as in Flink): restore at parallelism {}, take a savepoint (savepoints are always aligned) and rescale from that savepoint",
                            snapshot.metadata.checkpoint_id, n.name, n.uid, op.parallelism, n.parallelism, op.parallelism
                        )));
                    }
                    out.entry(node).or_default().push(ChannelStateEntry {
                        old_subtask: sub.subtask_index,
                        file: fi,
                        entry,
                        partitioning: edge.partitioning,
                        rescaled,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn channel_state_err(
    snapshot: &LoadedSnapshot,
    file: &StateFileRef,
    op: &OperatorSnapshot,
    subtask: u32,
    what: String,
) -> JobError {
    channel_state_err_kind(snapshot, file, op, subtask, SetupErrorKind::Restore, what)
}

fn channel_state_err_kind(
    snapshot: &LoadedSnapshot,
    file: &StateFileRef,
    op: &OperatorSnapshot,
    subtask: u32,
    kind: SetupErrorKind,
    what: String,
) -> JobError {
    restore_err_kind(
        snapshot,
        kind,
        format!(
            "channel state '{}' of operator uid '{}', subtask {}: {what}",
            file.path,
            op.uid,
            subtask + 1
        ),
    )
}

/// One section of a channel-state file, checksum verified; a failure keeps
/// its `SnapshotError` as the cause.
fn read_channel_section(
    snapshot: &LoadedSnapshot,
    storage: &dyn Storage,
    file: &StateFileRef,
    op: &OperatorSnapshot,
    subtask: u32,
    name: &str,
) -> Result<Vec<u8>, JobError> {
    let section =
        file.sections.iter().find(|s| s.name == name).ok_or_else(|| {
            channel_state_err(snapshot, file, op, subtask, format!("the '{name}' section is missing"))
        })?;
    snapshot.read_section(storage, file, section).map_err(|e| {
        restore_failed(
            snapshot,
            format!(
                "channel state '{}' of operator uid '{}', subtask {}: {e}",
                file.path,
                op.uid,
                subtask + 1
            ),
            e,
        )
    })
}

/// What a restore will do, checked before the job starts.
pub struct RestorePlan<'a> {
    snapshot: &'a LoadedSnapshot,
    storage: &'a dyn Storage,
    spec: &'a JobSpec,
    /// graph node index -> index in the snapshot's operators
    matched: HashMap<usize, usize>,
    /// uids of snapshot operators that map to no operator (dropped with -n)
    pub dropped: Vec<String>,
    /// redistributed operator state per node: one list per new subtask
    operator_state: HashMap<usize, Vec<Vec<OperatorStateEntry>>>,
    /// channel state per node (unaligned checkpoints), matched to edges
    channel_state: HashMap<usize, Vec<ChannelStateEntry>>,
}

fn restore_err(snapshot: &LoadedSnapshot, what: String) -> JobError {
    restore_err_kind(snapshot, SetupErrorKind::Restore, what)
}

fn restore_err_kind(snapshot: &LoadedSnapshot, kind: SetupErrorKind, what: String) -> JobError {
    JobError::Setup(SetupError::new(
        kind,
        format!("cannot restore from {}: {what}", snapshot.dir.display()),
    ))
}

/// A restore failure that keeps its cause (a `SnapshotError`, a `StateError`).
fn restore_failed(snapshot: &LoadedSnapshot, what: String, cause: impl Into<BoxError>) -> JobError {
    JobError::Setup(
        SetupError::new(
            SetupErrorKind::Restore,
            format!("cannot restore from {}: {what}", snapshot.dir.display()),
        )
        .with_source(cause),
    )
}

impl<'a> RestorePlan<'a> {
    /// Match the snapshot's operators to the graph and check compatibility.
    pub fn new(
        snapshot: &'a LoadedSnapshot,
        storage: &'a dyn Storage,
        spec: &'a JobSpec,
        allow_non_restored_state: bool,
    ) -> Result<Self, JobError> {
        let graph = &spec.graph;
        let mut matched = HashMap::new();
        let mut dropped = Vec::new();
        for (i, op) in snapshot.metadata.operators.iter().enumerate() {
            let has_state = op.subtasks.iter().any(|s| !s.files.is_empty());
            match graph.nodes.iter().find(|n| n.operator_id == op.operator_id) {
                Some(n) => {
                    if n.keyed && op.max_parallelism != n.max_parallelism && has_state {
                        return Err(restore_err_kind(
                            snapshot,
                            SetupErrorKind::IncompatibleState,
                            format!(
                                "operator '{}' (uid '{}') was snapshotted with max parallelism {} but the job now has {}. Keyed state is split into max-parallelism key groups, so this number can never change for a job's state: remove the explicit max parallelism (it is then taken from the snapshot) or set it back to {}",
                                n.name, n.uid, op.max_parallelism, n.max_parallelism, op.max_parallelism
                            ),
                        ));
                    }
                    matched.insert(n.id.0, i);
                }
                None if has_state => dropped.push(op.uid.clone()),
                None => {}
            }
        }
        if !dropped.is_empty() && !allow_non_restored_state {
            return Err(restore_err_kind(
                snapshot,
                SetupErrorKind::UnclaimedState,
                format!(
                    "state of operator(s) with uid {} maps to no operator in this job. If the operator was removed on purpose, start with --allow-non-restored-state (-n) to drop that state; otherwise give the operator its old uid back",
                    dropped.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let channel_state = load_channel_state(snapshot, storage, graph, &matched)?;
        let mut plan = RestorePlan {
            snapshot,
            storage,
            spec,
            matched,
            dropped,
            operator_state: HashMap::new(),
            channel_state,
        };
        plan.load_operator_state(graph)?;
        Ok(plan)
    }

    fn load_operator_state(&mut self, graph: &ResolvedGraph) -> Result<(), JobError> {
        let reader = self.reader();
        for (&node, &op_idx) in &self.matched {
            let op = &self.snapshot.metadata.operators[op_idx];
            let old = reader.operator_entries(op)?;
            let p = graph.nodes[node].parallelism as usize;
            self.operator_state.insert(node, redistribute(&old, p));
        }
        Ok(())
    }

    /// Reads state out of the snapshot.
    fn reader(&self) -> StateReader<'a> {
        StateReader {
            snapshot: self.snapshot,
            storage: self.storage,
        }
    }

    /// The restored state of every subtask of every operator that has state
    /// in the snapshot, read by several threads at once (one subtask per
    /// thread at a time, at most one thread per core), as each Flink task
    /// restores its own state: restoring is CPU-bound (decoding and
    /// inserting entries), so one thread would leave the disk idle.
    pub fn restore_all(&self, attempt: u32) -> HashMap<(usize, u32), Result<SubtaskRestore, JobError>> {
        let graph = &self.spec.graph;
        let mut jobs: Vec<(usize, u32, KeyGroupRange, bool)> = Vec::new();
        for &node in self.matched.keys() {
            let n = &graph.nodes[node];
            for s in 0..n.parallelism {
                let range = KeyGroupRange::for_subtask(n.max_parallelism, n.parallelism, s);
                jobs.push((node, s, range, n.keyed));
            }
        }
        // Keyed subtasks first: they take longest.
        jobs.sort_by_key(|j| !j.3);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(jobs.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(HashMap::with_capacity(jobs.len()));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(node, s, range, keyed)) = jobs.get(i) else {
                        break;
                    };
                    let restored = self.subtask(node, s, range, keyed, attempt);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert((node, s), restored);
                });
            }
        });
        results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The restored state of one new subtask.
    pub fn subtask(
        &self,
        node: usize,
        subtask: u32,
        range: KeyGroupRange,
        keyed: bool,
        attempt: u32,
    ) -> Result<SubtaskRestore, JobError> {
        let Some(&op_idx) = self.matched.get(&node) else {
            return Ok(SubtaskRestore::default());
        };
        let op = &self.snapshot.metadata.operators[op_idx];
        let entries = self
            .operator_state
            .get(&node)
            .and_then(|v| v.get(subtask as usize))
            .cloned()
            .unwrap_or_default();
        let operator_state =
            OperatorStateStore::from_entries(entries).map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let mut backend = None;
        if keyed {
            let ctx = backend_context(self.spec, node, subtask, attempt);
            let mut b = self.spec.backends.create(&ctx).map_err(|e| {
                let message = format!(
                    "cannot create the {} state backend of uid '{}': {e}",
                    self.spec.backends.name(),
                    op.uid
                );
                JobError::Setup(SetupError::new(SetupErrorKind::StateBackend, message).with_source(e))
            })?;
            self.reader().restore_keyed(op, range, &mut *b, subtask)?;
            backend = Some(b);
        }
        Ok(SubtaskRestore {
            keyed: backend,
            operator_state,
            channel_state: self.channel_state(node, op, subtask)?,
        })
    }

    /// The in-flight records new subtask `subtask` replays, by Flink's
    /// rules for rescaling channel state: at the same parallelism each
    /// subtask gets its own; otherwise keyed edges give every subtask the
    /// records of its key groups from each old subtask whose key groups
    /// overlap its own (RANGE), and forward and rebalance edges give it the
    /// channel state of old subtasks `subtask`, `subtask + p`, ... (ROUND_ROBIN).
    fn channel_state(
        &self,
        node: usize,
        op: &OperatorSnapshot,
        subtask: u32,
    ) -> Result<Vec<RestoredChannelState>, JobError> {
        let mut out = Vec::new();
        let Some(entries) = self.channel_state.get(&node) else {
            return Ok(out);
        };
        let n = &self.spec.graph.nodes[node];
        let range = KeyGroupRange::for_subtask(n.max_parallelism, n.parallelism, subtask);
        for e in entries {
            let (take, key_groups) = if op.parallelism == n.parallelism {
                (e.old_subtask == subtask, None)
            } else if e.partitioning == Partitioning::KeyGroups {
                let old = KeyGroupRange::for_subtask(op.max_parallelism, op.parallelism, e.old_subtask);
                (!old.intersect(&range).is_empty(), Some(range))
            } else {
                (e.old_subtask % n.parallelism == subtask, None)
            };
            if !take {
                continue;
            }
            let sub = op
                .subtasks
                .iter()
                .find(|s| s.subtask_index == e.old_subtask)
                .expect("entries come from the snapshot's subtasks");
            let file = &sub.files[e.file];
            out.push(RestoredChannelState {
                channel: e.entry.channel.clone(),
                messages: read_channel_section(self.snapshot, self.storage, file, op, e.old_subtask, &e.entry.section)?,
                rescaled: e.rescaled,
                key_groups,
                tier: e.entry.tier,
            });
        }
        Ok(out)
    }

    /// The checkpoint id the snapshot was taken at.
    pub fn checkpoint_id(&self) -> u64 {
        self.snapshot.metadata.checkpoint_id
    }
}

/// Reads the state of a loaded snapshot: operator state per old subtask,
/// keyed state of any key-group range into any backend that can restore.
/// Restore uses it, and so do offline tools (the State Processor API).
#[derive(Clone, Copy)]
pub struct StateReader<'a> {
    pub snapshot: &'a LoadedSnapshot,
    pub storage: &'a dyn Storage,
}

impl<'a> StateReader<'a> {
    /// The operator state entries of each old subtask of `op`, in subtask order.
    pub fn operator_entries(&self, op: &OperatorSnapshot) -> Result<Vec<Vec<OperatorStateEntry>>, JobError> {
        let mut old: Vec<Vec<OperatorStateEntry>> = Vec::new();
        for sub in &op.subtasks {
            let mut entries = Vec::new();
            for file in &sub.files {
                match file.format {
                    FileFormat::ParquetV1 => {
                        entries.extend(self.canonical_operator_entries(op, file)?);
                        continue;
                    }
                    FileFormat::ParquetV2 => {
                        entries.extend(self.canonical_v2_operator_entries(op, file)?);
                        continue;
                    }
                    _ => {}
                }
                if let Some(section) = file.sections.iter().find(|s| s.name == OPERATOR_SECTION) {
                    let bytes = self
                        .snapshot
                        .read_section(self.storage, file, section)
                        .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
                    entries.extend(
                        decode_operator_entries(&file.path, &bytes)
                            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?,
                    );
                }
            }
            old.push(entries);
        }
        Ok(old)
    }

    /// Restore the keyed state of `op` in key groups `range` into `b`
    /// (`subtask`, 0-based, names the new subtask in errors): state files and
    /// canonical files group by group, a backend's own files as the file sets
    /// of the old subtasks whose key groups overlap.
    pub fn restore_keyed(
        &self,
        op: &OperatorSnapshot,
        range: KeyGroupRange,
        b: &mut dyn KeyedStateBackend,
        subtask: u32,
    ) -> Result<(), JobError> {
        let mut file_sets = Vec::new();
        for sub in &op.subtasks {
            let old_range = KeyGroupRange::for_subtask(op.max_parallelism, op.parallelism, sub.subtask_index);
            for file in &sub.files {
                match file.format {
                    FileFormat::ParquetV1 => self.restore_canonical_keyed(op, file, range, b)?,
                    FileFormat::ParquetV2 => self.restore_canonical_v2(op, file, range, b)?,
                    FileFormat::BackendFile => {}    // listed by the subtask's state file
                    FileFormat::ChannelStateV1 => {} // replayed by the task, not keyed state
                    FileFormat::CairnStateV1 => match self.file_set(op, sub, file, old_range, range)? {
                        Some(Some(set)) => file_sets.push(set),
                        Some(None) => {}
                        None => self.restore_state_file(op, file, range, b)?,
                    },
                }
            }
        }
        if !file_sets.is_empty() {
            let snapshot = self.snapshot;
            let storage = self.storage;
            let fetch = |f: &UploadedFile, local: &Path| -> Result<(), StateError> {
                let remote = resolve_ref(&snapshot.dir, &f.path).map_err(|e| StateError::Restore(e.to_string()))?;
                download_file(storage, &remote, local, f.size, f.crc32).map_err(|e| StateError::Restore(e.to_string()))
            };
            b.restore_files(&file_sets, &fetch).map_err(|e| {
                restore_failed(
                    self.snapshot,
                    format!("operator uid '{}', subtask {}: {e}", op.uid, subtask + 1),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Open a canonical v2 file of `op`.
    pub fn open_canonical_v2(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
    ) -> Result<cairn_canonical::CanonicalFile, JobError> {
        let path = self
            .snapshot
            .resolve(file)
            .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
        cairn_canonical::open(self.storage, &path, file.size).map_err(|e| {
            restore_err(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
            )
        })
    }

    fn canonical_v2_operator_entries(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
    ) -> Result<Vec<OperatorStateEntry>, JobError> {
        match self.open_canonical_v2(op, file)? {
            cairn_canonical::CanonicalFile::Keyed(_) => Ok(Vec::new()),
            cairn_canonical::CanonicalFile::Operator(src) => {
                cairn_canonical::read_operator_file(self.storage, &src, Some(file.crc32)).map_err(|e| {
                    restore_err(
                        self.snapshot,
                        format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
                    )
                })
            }
        }
    }

    fn restore_canonical_v2(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
        range: KeyGroupRange,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<(), JobError> {
        let cairn_canonical::CanonicalFile::Keyed(k) = self.open_canonical_v2(op, file)? else {
            return Ok(());
        };
        if !k.overlaps(range) {
            return Ok(());
        }
        k.for_each_group(
            self.storage,
            range,
            Some(op.max_parallelism),
            Some(file.crc32),
            &mut |meta, kg, bytes, keys| {
                backend
                    .restore_group_of(meta, kg, bytes, keys)
                    .map_err(|e| format!("state '{}', key group {kg}: {e}", meta.name))
            },
        )
        .map_err(|e| {
            restore_err(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
            )
        })
    }

    /// The backend files an old subtask's state file lists: `None` for a
    /// state file of logical key groups, `Some(None)` for files whose key
    /// groups do not overlap `range`.
    fn file_set(
        &self,
        op: &OperatorSnapshot,
        sub: &SubtaskSnapshot,
        file: &StateFileRef,
        old_range: KeyGroupRange,
        range: KeyGroupRange,
    ) -> Result<Option<Option<FileSetRestore>>, JobError> {
        let Some(section) = file.sections.iter().find(|s| s.name == BACKEND_FILES_SECTION) else {
            return Ok(None);
        };
        if old_range.intersect(&range).is_empty() {
            return Ok(Some(None));
        }
        let read = |name: &str| -> Result<Vec<u8>, JobError> {
            let s =
                file.sections.iter().find(|s| s.name == name).ok_or_else(|| {
                    restore_err(self.snapshot, format!("{}: the '{name}' section is missing", file.path))
                })?;
            self.snapshot
                .read_section(self.storage, file, s)
                .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))
        };
        let _ = section; // found above; read through `read`
        let manifest = decode_backend_files(&file.path, &read(BACKEND_FILES_SECTION)?)
            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let states = decode_keyed_states(&file.path, &read(KEYED_STATES_SECTION)?)
            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for (name, path) in manifest.files {
            let r = sub.files.iter().find(|f| f.path == path).ok_or_else(|| {
                restore_err(
                    self.snapshot,
                    format!(
                        "operator uid '{}': backend file '{path}' is listed in {} but not in _metadata",
                        op.uid, file.path
                    ),
                )
            })?;
            files.push(UploadedFile {
                name,
                path,
                size: r.size,
                crc32: r.crc32,
            });
        }
        Ok(Some(Some(FileSetRestore {
            backend: manifest.backend,
            states,
            key_groups: old_range,
            files,
        })))
    }

    /// Restore the key groups of `range` from a state file of logical key groups.
    fn restore_state_file(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
        range: KeyGroupRange,
        b: &mut dyn KeyedStateBackend,
    ) -> Result<(), JobError> {
        let in_range: Vec<_> = file
            .sections
            .iter()
            .filter(|s| s.key_group.is_some_and(|kg| range.contains(kg)))
            .collect();
        if in_range.is_empty() {
            return Ok(());
        }
        let metas_section = file
            .sections
            .iter()
            .find(|s| s.name == KEYED_STATES_SECTION)
            .ok_or_else(|| {
                restore_err(
                    self.snapshot,
                    format!("{}: keyed sections without their state list", file.path),
                )
            })?;
        let bytes = self
            .snapshot
            .read_section(self.storage, file, metas_section)
            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let metas =
            decode_keyed_states(&file.path, &bytes).map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        for section in in_range {
            let meta = metas
                .iter()
                .find(|m| keyed_section(&m.name) == section.name)
                .ok_or_else(|| {
                    restore_err(
                        self.snapshot,
                        format!("{}: section '{}' names no known state", file.path, section.name),
                    )
                })?;
            let data = self
                .snapshot
                .read_section(self.storage, file, section)
                .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
            let kg = section.key_group.expect("filtered on key group");
            b.restore_group(meta, kg, &data).map_err(|e| {
                restore_failed(
                    self.snapshot,
                    format!("operator uid '{}', state '{}': {e}", op.uid, meta.name),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Read, verify and parse the footer of a canonical file.
    fn canonical_footer(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
    ) -> Result<(PathBuf, ParquetFooter), JobError> {
        let path = self
            .snapshot
            .resolve(file)
            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let footer = read_canonical_footer(self.storage, &path, file.size)
            .map_err(|e| restore_failed(self.snapshot, format!("operator uid '{}': {e}", op.uid), e))?;
        Ok((path, footer))
    }

    /// Read a whole canonical file and check it against `_metadata` (size, CRC-32).
    fn canonical_bytes(&self, op: &OperatorSnapshot, file: &StateFileRef, path: &Path) -> Result<Vec<u8>, JobError> {
        let bytes = self
            .storage
            .read(path)
            .map_err(|e| restore_failed(self.snapshot, e.to_string(), e))?;
        let crc = cairn_snapshot::checksum::crc32(&bytes);
        if bytes.len() as u64 != file.size || crc != file.crc32 {
            return Err(restore_err(
                self.snapshot,
                format!(
                    "file '{}' of operator uid '{}' changed since the snapshot was loaded ({} bytes, CRC-32 {crc:08x}; _metadata says {} bytes, {:08x})",
                    file.path,
                    op.uid,
                    bytes.len(),
                    file.size,
                    file.crc32
                ),
            ));
        }
        Ok(bytes)
    }

    fn canonical_operator_entries(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
    ) -> Result<Vec<OperatorStateEntry>, JobError> {
        let named = |e: SnapshotIoError| {
            restore_failed(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
                e,
            )
        };
        let (path, footer) = self.canonical_footer(op, file)?;
        if canonical_content(&file.path, &footer).map_err(named)? != CanonicalContent::Operator {
            return Ok(Vec::new());
        }
        let bytes = self.canonical_bytes(op, file, &path)?;
        read_canonical_operator_entries(&bytes, &file.path).map_err(named)
    }

    fn restore_canonical_keyed(
        &self,
        op: &OperatorSnapshot,
        file: &StateFileRef,
        range: KeyGroupRange,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<(), JobError> {
        let named = |e: SnapshotIoError| {
            restore_failed(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
                e,
            )
        };
        let (path, footer) = self.canonical_footer(op, file)?;
        if canonical_content(&file.path, &footer).map_err(named)? != CanonicalContent::Keyed
            || !canonical_keyed_overlaps(&file.path, &footer, range).map_err(named)?
        {
            return Ok(());
        }
        let bytes = self.canonical_bytes(op, file, &path)?;
        restore_canonical_keyed(&bytes, &file.path, range, backend).map_err(named)
    }
}
