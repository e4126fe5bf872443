//! Restoring a job from a savepoint or retained checkpoint: state is matched to
//! operators by operator id (the uid's hash); keyed state is read by key group
//! for each new subtask's range (rescaling moves whole key groups); operator
//! list state is redistributed (split evenly, union, broadcast).
//!
//! Both savepoint formats restore here: native/checkpoint state files
//! (sections read by byte range) and canonical Parquet files (`ParquetV1` in
//! `_metadata`: rows turned back into the backend encoding by
//! `cairn_state::canonical`, only row groups of the subtask's key groups read).

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use cairn_graph::ResolvedGraph;
use cairn_snapshot::parquet::ParquetFooter;
use cairn_snapshot::{FileFormat, LoadedSnapshot, OperatorSnapshot, StateFileRef, Storage};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::operator_state::{redistribute, OperatorStateEntry};
use cairn_state::{HeapKeyedStateBackend, KeyedStateBackend, OperatorStateStore};

use cairn_runtime::error::JobError;
use cairn_runtime::job::SubtaskRestore;
use cairn_runtime::snapshot_io::{
    canonical_content, canonical_keyed_overlaps, decode_keyed_states, decode_operator_entries, keyed_section,
    read_canonical_footer, read_canonical_operator_entries, restore_canonical_keyed, CanonicalContent,
    KEYED_STATES_SECTION, OPERATOR_SECTION,
};

/// What a restore will do, checked before the job starts.
pub struct RestorePlan<'a> {
    snapshot: &'a LoadedSnapshot,
    storage: &'a dyn Storage,
    /// graph node index -> index in the snapshot's operators
    matched: HashMap<usize, usize>,
    /// uids of snapshot operators that map to no operator (dropped with -n)
    pub dropped: Vec<String>,
    /// redistributed operator state per node: one list per new subtask
    operator_state: HashMap<usize, Vec<Vec<OperatorStateEntry>>>,
}

fn restore_err(snapshot: &LoadedSnapshot, what: String) -> JobError {
    JobError::Setup(format!("cannot restore from {}: {what}", snapshot.dir.display()))
}

impl<'a> RestorePlan<'a> {
    /// Match the snapshot's operators to the graph and check compatibility.
    pub fn new(
        snapshot: &'a LoadedSnapshot,
        storage: &'a dyn Storage,
        graph: &ResolvedGraph,
        allow_non_restored_state: bool,
    ) -> Result<Self, JobError> {
        let mut matched = HashMap::new();
        let mut dropped = Vec::new();
        for (i, op) in snapshot.metadata.operators.iter().enumerate() {
            let has_state = op.subtasks.iter().any(|s| !s.files.is_empty());
            match graph.nodes.iter().find(|n| n.operator_id == op.operator_id) {
                Some(n) => {
                    if n.keyed && op.max_parallelism != n.max_parallelism && has_state {
                        return Err(restore_err(
                            snapshot,
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
            return Err(restore_err(
                snapshot,
                format!(
                    "state of operator(s) with uid {} maps to no operator in this job. If the operator was removed on purpose, start with --allow-non-restored-state (-n) to drop that state; otherwise give the operator its old uid back",
                    dropped.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let mut plan = RestorePlan {
            snapshot,
            storage,
            matched,
            dropped,
            operator_state: HashMap::new(),
        };
        plan.load_operator_state(graph)?;
        Ok(plan)
    }

    fn load_operator_state(&mut self, graph: &ResolvedGraph) -> Result<(), JobError> {
        for (&node, &op_idx) in &self.matched {
            let op = &self.snapshot.metadata.operators[op_idx];
            let mut old: Vec<Vec<OperatorStateEntry>> = Vec::new();
            for sub in &op.subtasks {
                let mut entries = Vec::new();
                for file in &sub.files {
                    if file.format == FileFormat::ParquetV1 {
                        entries.extend(self.canonical_operator_entries(op, file)?);
                        continue;
                    }
                    if let Some(section) = file.sections.iter().find(|s| s.name == OPERATOR_SECTION) {
                        let bytes = self
                            .snapshot
                            .read_section(self.storage, file, section)
                            .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
                        entries.extend(
                            decode_operator_entries(&bytes)
                                .map_err(|e| restore_err(self.snapshot, format!("{}: {e}", file.path)))?,
                        );
                    }
                }
                old.push(entries);
            }
            let p = graph.nodes[node].parallelism as usize;
            self.operator_state.insert(node, redistribute(&old, p));
        }
        Ok(())
    }

    /// The restored state of one new subtask.
    pub fn subtask(
        &self,
        node: usize,
        subtask: u32,
        range: KeyGroupRange,
        keyed: bool,
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
            OperatorStateStore::from_entries(entries).map_err(|e| restore_err(self.snapshot, e.to_string()))?;
        let mut backend = None;
        if keyed {
            let mut b = HeapKeyedStateBackend::new(range);
            for sub in &op.subtasks {
                for file in &sub.files {
                    if file.format == FileFormat::ParquetV1 {
                        self.restore_canonical_keyed(op, file, range, &mut b)?;
                        continue;
                    }
                    let in_range: Vec<_> = file
                        .sections
                        .iter()
                        .filter(|s| s.key_group.is_some_and(|kg| range.contains(kg)))
                        .collect();
                    if in_range.is_empty() {
                        continue;
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
                        .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
                    let metas = decode_keyed_states(&bytes)
                        .map_err(|e| restore_err(self.snapshot, format!("{}: {e}", file.path)))?;
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
                            .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
                        let kg = section.key_group.expect("filtered on key group");
                        b.restore_group(meta, kg, &data).map_err(|e| {
                            restore_err(
                                self.snapshot,
                                format!("operator uid '{}', state '{}': {e}", op.uid, meta.name),
                            )
                        })?;
                    }
                }
            }
            backend = Some(b);
        }
        Ok(SubtaskRestore {
            keyed: backend,
            operator_state,
        })
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
            .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
        let footer = read_canonical_footer(self.storage, &path, file.size)
            .map_err(|e| restore_err(self.snapshot, format!("operator uid '{}': {e}", op.uid)))?;
        Ok((path, footer))
    }

    /// Read a whole canonical file and check it against `_metadata` (size, CRC-32).
    fn canonical_bytes(&self, op: &OperatorSnapshot, file: &StateFileRef, path: &Path) -> Result<Vec<u8>, JobError> {
        let bytes = self
            .storage
            .read(path)
            .map_err(|e| restore_err(self.snapshot, e.to_string()))?;
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
        let named = |e: String| {
            restore_err(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
            )
        };
        let (path, footer) = self.canonical_footer(op, file)?;
        if canonical_content(&footer).map_err(named)? != CanonicalContent::Operator {
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
        backend: &mut HeapKeyedStateBackend,
    ) -> Result<(), JobError> {
        let named = |e: String| {
            restore_err(
                self.snapshot,
                format!("file '{}', operator uid '{}': {e}", file.path, op.uid),
            )
        };
        let (path, footer) = self.canonical_footer(op, file)?;
        if canonical_content(&footer).map_err(named)? != CanonicalContent::Keyed
            || !canonical_keyed_overlaps(&footer, range).map_err(named)?
        {
            return Ok(());
        }
        let bytes = self.canonical_bytes(op, file, &path)?;
        restore_canonical_keyed(&bytes, &file.path, range, backend).map_err(named)
    }

    /// The checkpoint id the snapshot was taken at.
    pub fn checkpoint_id(&self) -> u64 {
        self.snapshot.metadata.checkpoint_id
    }
}
