//! The job's plan without running it (`--cairn-plan-json`): the resolved
//! graph plus the keyed states each keyed operator registers. To learn the
//! states, each keyed operator is opened once on an empty in-memory backend
//! that records what is registered (no source runs, no record is processed;
//! user `open` code does run, so it should not have side effects).

use std::sync::{Arc, Mutex};

use cairn_graph::plan::{JobPlan, PlannedOperator, PLAN_VERSION};
use cairn_graph::NodeKind;
use cairn_runtime::job::NodeCode;
use cairn_runtime::operator::{OpenContext, SubtaskInfo};
use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{
    backend::FileFetcher, BackendSnapshot, FileSetRestore, HeapKeyedStateBackend, KeyedStateAccess, KeyedStateBackend,
    OperatorStateStore, SnapshotRequest, StateError, StateId, StateMeta,
};

use crate::env::StreamEnv;
use crate::error::CairnError;

/// A heap backend that remembers every registration.
struct Recording {
    inner: HeapKeyedStateBackend,
    seen: Arc<Mutex<Vec<StateMeta>>>,
}

impl KeyedStateBackend for Recording {
    fn kind(&self) -> &'static str {
        "plan"
    }
    fn key_group_range(&self) -> KeyGroupRange {
        self.inner.key_group_range()
    }
    fn register(&mut self, meta: &StateMeta) -> Result<StateId, StateError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.iter().any(|m| m.name == meta.name) {
            seen.push(meta.clone());
        }
        self.inner.register(meta)
    }
    fn registered(&self) -> &[StateMeta] {
        self.inner.registered()
    }
    fn get(&mut self, s: StateId, kg: u32, k: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        self.inner.get(s, kg, k, out)
    }
    fn put(&mut self, s: StateId, kg: u32, k: &[u8], v: &[u8]) -> Result<(), StateError> {
        self.inner.put(s, kg, k, v)
    }
    fn append(&mut self, s: StateId, kg: u32, k: &[u8], b: &[u8]) -> Result<(), StateError> {
        self.inner.append(s, kg, k, b)
    }
    fn remove(&mut self, s: StateId, kg: u32, k: &[u8]) -> Result<(), StateError> {
        self.inner.remove(s, kg, k)
    }
    fn map_get(&mut self, s: StateId, kg: u32, k: &[u8], uk: &[u8], out: &mut Vec<u8>) -> Result<bool, StateError> {
        self.inner.map_get(s, kg, k, uk, out)
    }
    fn map_put(&mut self, s: StateId, kg: u32, k: &[u8], uk: &[u8], v: &[u8]) -> Result<(), StateError> {
        self.inner.map_put(s, kg, k, uk, v)
    }
    fn map_remove(&mut self, s: StateId, kg: u32, k: &[u8], uk: &[u8]) -> Result<(), StateError> {
        self.inner.map_remove(s, kg, k, uk)
    }
    fn map_entries(
        &mut self,
        s: StateId,
        kg: u32,
        k: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StateError> {
        self.inner.map_entries(s, kg, k, visit)
    }
    fn for_each_key(&mut self, s: StateId, visit: &mut dyn FnMut(u32, &[u8])) -> Result<(), StateError> {
        self.inner.for_each_key(s, visit)
    }
    fn snapshot(&mut self, request: &SnapshotRequest) -> Result<BackendSnapshot, StateError> {
        self.inner.snapshot(request)
    }
    fn restore_group(&mut self, meta: &StateMeta, kg: u32, encoded: &[u8]) -> Result<(), StateError> {
        self.inner.restore_group(meta, kg, encoded)
    }
    fn restore_files(&mut self, parts: &[FileSetRestore], fetch: &FileFetcher<'_>) -> Result<(), StateError> {
        self.inner.restore_files(parts, fetch)
    }
}

/// The plan of the job `env` declares.
pub fn job_plan(env: &StreamEnv, job_name: &str) -> Result<JobPlan, CairnError> {
    let spec = env.build(job_name, None)?;
    let (explicit_default, allow_non_restored_state) = {
        let inner = env.inner.borrow();
        (
            inner.config.get(&cairn_config::options::MAX_PARALLELISM).is_some(),
            inner.startup.allow_non_restored_state,
        )
    };
    let mut operators = Vec::new();
    for node in &spec.graph.nodes {
        let explicit = explicit_default || env.inner.borrow().graph.nodes[node.id.0].max_parallelism.is_some();
        let mut states = Vec::new();
        if node.keyed {
            if let NodeCode::Operator(factory) = &spec.nodes[node.id.0].code {
                let seen = Arc::new(Mutex::new(Vec::new()));
                let backend = Recording {
                    inner: HeapKeyedStateBackend::new(KeyGroupRange {
                        start: 0,
                        end_exclusive: node.max_parallelism,
                    }),
                    seen: seen.clone(),
                };
                let mut op = factory();
                let opened = op.open(OpenContext {
                    info: SubtaskInfo {
                        job_id: spec.job_id.clone(),
                        operator_name: node.name.clone(),
                        uid: node.uid.clone(),
                        operator_id: node.operator_id.clone(),
                        subtask: 0,
                        parallelism: node.parallelism,
                        max_parallelism: node.max_parallelism,
                        attempt: 0,
                        clock: spec.clock.clone(),
                    },
                    config: spec.config.clone(),
                    keyed: Some(KeyedStateAccess::new(Box::new(backend))),
                    operator_state: OperatorStateStore::new(),
                });
                let _ = op.close();
                opened.map_err(|e| {
                    let message = format!(
                        "operator '{}' (uid '{}') failed to open while the plan was made: {e}",
                        node.name, node.uid
                    );
                    CairnError::Job(cairn_runtime::JobError::Setup(
                        cairn_runtime::error::SetupError::new(
                            cairn_runtime::error::SetupErrorKind::OperatorOpen,
                            message,
                        )
                        .with_source(e),
                    ))
                })?;
                states = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            }
        }
        operators.push(PlannedOperator {
            name: node.name.clone(),
            uid: node.uid.clone(),
            uid_generated: node.uid_generated,
            operator_id: node.operator_id.clone(),
            kind: match node.kind {
                NodeKind::Source => "source",
                NodeKind::Operator => "operator",
                NodeKind::Sink => "sink",
            }
            .into(),
            keyed: node.keyed,
            stateful: node.stateful,
            parallelism: node.parallelism,
            max_parallelism: node.max_parallelism,
            max_parallelism_explicit: explicit,
            states,
        });
    }
    Ok(JobPlan {
        cairn_plan_version: PLAN_VERSION,
        job_name: job_name.to_string(),
        allow_non_restored_state,
        operators,
    })
}
