//! `StreamEnv`: where a job is declared (sources, configuration, restore
//! flags) and executed.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_config::{options, parse_startup_args, startup_help, Configuration, StartupOptions};
use cairn_graph::{Edge, GraphSettings, JobGraph, NodeId, NodeKind, NodeSpec, Partitioning};
use cairn_operators::collector::SidePorts;
use cairn_runtime::job::{JobSpec, NodeCode, NodeLogic};
use cairn_runtime::output::{port_factory, PortFactory};
use cairn_runtime::source::{SourceAdapter, SourceLogic};
use cairn_runtime::time::{system_clock, SharedClock};
use cairn_runtime::{Source, WatermarkStrategy};
use cairn_snapshot::LoadedSnapshot;
use cairn_state::canonical::KeyCodec;

use crate::error::CairnError;
use crate::execution::JobHandle;
use crate::stream::DataStream;
use crate::Data;

/// Builds and runs a job. Cheap to clone: clones share the job being built.
#[derive(Clone)]
pub struct StreamEnv {
    pub(crate) inner: Rc<RefCell<EnvInner>>,
}

pub(crate) struct EnvInner {
    pub graph: JobGraph,
    pub nodes: Vec<NodeLogic>,
    pub side_ports: Vec<SidePorts>,
    pub edge_keys: Vec<Option<Arc<dyn Any + Send + Sync>>>,
    pub config: Configuration,
    pub startup: StartupOptions,
    pub progress: bool,
    /// Processing time of the job's tasks.
    pub clock: SharedClock,
    /// Serve the REST API: jobs started as binaries (`from_args`) do, so that
    /// `cairn list` finds them; embedded jobs only when a `rest.*` key is set.
    pub serve_rest: bool,
}

/// What a finished job reports.
#[derive(Clone, Debug)]
pub struct JobResult {
    pub job_id: String,
    pub job_name: String,
    pub elapsed: Duration,
    /// Records emitted by the sources.
    pub source_records: u64,
    /// Statistics of every checkpoint and savepoint attempted, oldest first.
    pub checkpoints: Vec<cairn_coordinator::control::CheckpointStats>,
    /// The savepoint written by a stop with savepoint.
    pub savepoint: Option<std::path::PathBuf>,
    /// How many times the job restarted after failures.
    pub restarts: u32,
    /// The job's checkpoint directory (`<execution.checkpointing.dir>/<job id>`).
    pub checkpoint_dir: Option<std::path::PathBuf>,
}

impl Default for StreamEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamEnv {
    /// An environment with default configuration.
    pub fn new() -> Self {
        Self::with_startup(StartupOptions::default())
    }

    /// An environment with the given configuration.
    pub fn with_config(config: Configuration) -> Self {
        Self::with_startup(StartupOptions {
            config,
            ..Default::default()
        })
    }

    /// An environment from the process's arguments: `--config FILE`,
    /// `-D key=value`, `-p N`, `-s PATH`, `-n`, `--claim-mode MODE`; anything
    /// else is left for the job in [`StreamEnv::user_args`]. `--help` prints
    /// the flags and exits. Installs the job binary's log subscriber
    /// (stderr, `RUST_LOG`, see [`crate::logging`]).
    pub fn from_args() -> Result<Self, CairnError> {
        crate::logging::install_log_subscriber();
        let program = std::env::args().next().unwrap_or_else(|| "job".into());
        let startup = parse_startup_args(std::env::args().skip(1))?;
        if startup.help_requested {
            println!("{}", startup_help(&program));
            std::process::exit(0);
        }
        let env = Self::with_startup(startup);
        env.inner.borrow_mut().serve_rest = true;
        Ok(env)
    }

    /// An environment from explicit startup options (what `from_args` parses).
    pub fn with_startup(startup: StartupOptions) -> Self {
        StreamEnv {
            inner: Rc::new(RefCell::new(EnvInner {
                graph: JobGraph::new(),
                nodes: Vec::new(),
                side_ports: Vec::new(),
                edge_keys: Vec::new(),
                config: startup.config.clone(),
                startup,
                progress: false,
                clock: system_clock(),
                serve_rest: false,
            })),
        }
    }

    /// Arguments the startup flags did not consume.
    pub fn user_args(&self) -> Vec<String> {
        self.inner.borrow().startup.user_args.clone()
    }

    /// A copy of the configuration.
    pub fn config(&self) -> Configuration {
        self.inner.borrow().config.clone()
    }

    /// Set a configuration key from code (validated like `-D`).
    pub fn set_config(&self, key: &str, value: &str) -> Result<(), CairnError> {
        self.inner.borrow_mut().config.set(key, value)?;
        Ok(())
    }

    /// Default parallelism of every operator.
    pub fn set_parallelism(&self, parallelism: u32) -> Result<(), CairnError> {
        self.inner
            .borrow_mut()
            .config
            .set_option(&options::PARALLELISM_DEFAULT, parallelism)?;
        Ok(())
    }

    /// Default max parallelism (number of key groups) of keyed operators.
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> Result<(), CairnError> {
        self.inner
            .borrow_mut()
            .config
            .set_option(&options::MAX_PARALLELISM, Some(max_parallelism))?;
        Ok(())
    }

    /// Replace the processing-time clock (TTL, processing-time timers and
    /// windows, `current_processing_time`). The system clock is the default;
    /// tests inject a [`cairn_runtime::time::ManualClock`] to decide the time
    /// instead of waiting for it (Flink's `TtlTimeProvider` idea).
    pub fn set_clock(&self, clock: SharedClock) {
        self.inner.borrow_mut().clock = clock;
    }

    /// Log progress (records/s from the sources, once a second) at `info`
    /// while the job runs (otherwise at `debug`).
    pub fn show_progress(&self, on: bool) {
        self.inner.borrow_mut().progress = on;
    }

    /// Add a source (no watermarks).
    pub fn source<T: Data, S: Source<T>>(&self, source: S) -> DataStream<T> {
        self.source_with_watermarks(source, WatermarkStrategy::no_watermarks())
    }

    /// Add a source whose records get timestamps and watermarks by `strategy`.
    pub fn source_with_watermarks<T: Data, S: Source<T>>(
        &self,
        source: S,
        strategy: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        let proto = crate::stream::Prototype::new(source);
        let factory = Arc::new(move || {
            let source = proto.get();
            Box::new(SourceAdapter::new(source, strategy.clone())) as Box<dyn SourceLogic>
        });
        let id = self.add_node(
            NodeSpec {
                name: format!("Source: {}", short_type_name::<S>()),
                uid: None,
                kind: NodeKind::Source,
                parallelism: None,
                max_parallelism: None,
                stateful: true,
                keyed: false,
                chaining_disabled: false,
            },
            NodeCode::Source(factory),
            port_factory::<T>(),
        );
        DataStream::new(self.clone(), id, 0)
    }

    /// A bounded source of the given elements (parallelism 1).
    pub fn from_collection<T: Data>(&self, items: Vec<T>) -> DataStream<T> {
        self.source(crate::collection::CollectionSource::new(items))
            .set_parallelism(1)
    }

    pub(crate) fn add_node(&self, spec: NodeSpec, code: NodeCode, main_port: PortFactory) -> NodeId {
        let mut inner = self.inner.borrow_mut();
        let id = inner.graph.add_node(spec);
        inner.nodes.push(NodeLogic {
            code,
            ports: vec![main_port],
            key_codec: None,
        });
        inner.side_ports.push(Arc::new(Mutex::new(Vec::new())));
        id
    }

    pub(crate) fn add_edge(
        &self,
        from: NodeId,
        port: usize,
        to: NodeId,
        input: usize,
        partitioning: Partitioning,
        key: Option<Arc<dyn Any + Send + Sync>>,
    ) {
        let mut inner = self.inner.borrow_mut();
        inner.graph.add_edge(Edge {
            source: from,
            source_port: port,
            target: to,
            target_input: input,
            partitioning,
        });
        inner.edge_keys.push(key);
    }

    /// Record the key codec of a keyed node (for canonical savepoints).
    pub(crate) fn set_key_codec(&self, node: NodeId, codec: KeyCodec) {
        self.inner.borrow_mut().nodes[node.0].key_codec = Some(codec);
    }

    pub(crate) fn side_ports(&self, node: NodeId) -> SidePorts {
        self.inner.borrow().side_ports[node.0].clone()
    }

    /// Register a consumed side output of `node`; returns its port.
    pub(crate) fn add_side_port(&self, node: NodeId, tag: &str, port: PortFactory) -> usize {
        let mut inner = self.inner.borrow_mut();
        let ports = inner.side_ports[node.0].clone();
        let mut tags = ports.lock().expect("side port registry");
        if let Some(i) = tags.iter().position(|t| t == tag) {
            return i + 1;
        }
        tags.push(tag.to_string());
        inner.nodes[node.0].ports.push(port);
        tags.len()
    }

    pub(crate) fn with_node<R>(&self, node: NodeId, f: impl FnOnce(&mut NodeSpec) -> R) -> R {
        f(self.inner.borrow_mut().graph.node_mut(node))
    }

    /// Validate the job and build what the runtime runs. With a snapshot to
    /// restore, operators without an explicit max parallelism take the
    /// snapshot's (their key groups must not change).
    pub fn build(&self, job_name: &str, snapshot: Option<&LoadedSnapshot>) -> Result<JobSpec, CairnError> {
        let config = self.inner.borrow().config.clone();
        let job_id = cairn_snapshot::layout::JobId::generate().to_string();
        self.build_with(job_name, &config, &job_id, snapshot)
    }

    /// [`StreamEnv::build`] with a given configuration and job id: a worker
    /// builds the graph its coordinator runs.
    pub fn build_with(
        &self,
        job_name: &str,
        config: &Configuration,
        job_id: &str,
        snapshot: Option<&LoadedSnapshot>,
    ) -> Result<JobSpec, CairnError> {
        let inner = self.inner.borrow();
        let settings = GraphSettings {
            default_parallelism: config.get(&options::PARALLELISM_DEFAULT),
            max_parallelism: config.get(&options::MAX_PARALLELISM),
            auto_generate_uids: config.get(&options::AUTO_GENERATE_UIDS),
        };
        let mut graph = inner.graph.resolve(job_name, settings)?;
        if let (Some(snap), None) = (snapshot, settings.max_parallelism) {
            let mut adopted = inner.graph.clone();
            for node in &graph.nodes {
                let spec = &mut adopted.nodes[node.id.0];
                if spec.max_parallelism.is_none() && node.keyed {
                    if let Some(op) = snap
                        .metadata
                        .operators
                        .iter()
                        .find(|o| o.operator_id == node.operator_id)
                    {
                        spec.max_parallelism = Some(op.max_parallelism);
                    }
                }
            }
            graph = adopted.resolve(job_name, settings)?;
        }
        Ok(JobSpec {
            backends: crate::wiring::state_backends(config, &graph, job_id)?,
            graph,
            nodes: inner.nodes.clone(),
            edge_keys: inner.edge_keys.clone(),
            config: Arc::new(config.clone()),
            job_id: job_id.to_string(),
            clock: inner.clock.clone(),
            transport: Arc::new(cairn_runtime::channel::LocalTransport),
        })
    }

    /// Run the job to the end (bounded input), until it is stopped, or until
    /// it fails for good or is cancelled.
    ///
    /// With `--mode worker` (`cairn.cluster.mode: worker`) the process is a
    /// worker of the coordinator at `--coordinator host:port` instead: it
    /// runs the subtasks the coordinator deploys to it until it is stopped.
    pub fn execute(&self, job_name: &str) -> Result<JobResult, CairnError> {
        let config = self.config();
        let cluster = cairn_cluster::ClusterSettings::from_config(&config);
        if cluster.mode == cairn_cluster::ClusterMode::Worker {
            let log = self.inner.borrow().progress;
            cairn_cluster::worker::run_worker(cluster, &WorkerBuilder { env: self, job_name }, log)?;
            return Ok(JobResult {
                job_id: String::new(),
                job_name: job_name.to_string(),
                elapsed: Duration::ZERO,
                source_records: 0,
                checkpoints: Vec::new(),
                savepoint: None,
                restarts: 0,
                checkpoint_dir: None,
            });
        }
        let result = self.execute_async(job_name)?.wait();
        if cluster.mode == cairn_cluster::ClusterMode::Coordinator && config.get(&options::CLUSTER_LINGER) {
            match &result {
                Ok(r) => tracing::info!(
                    job_id = %r.job_id,
                    "the job ended; waiting to be terminated (cairn.cluster.linger-after-end)"
                ),
                Err(e) => {
                    tracing::warn!("the job ended: {e}; waiting to be terminated (cairn.cluster.linger-after-end)")
                }
            }
            linger();
        }
        result
    }

    /// Start the job in the background; the handle controls and awaits it.
    /// Returns once the job runs: a job that cannot start (configuration,
    /// checkpoint directory, restore) returns that error at once.
    pub fn execute_async(&self, job_name: &str) -> Result<JobHandle, CairnError> {
        if self.inner.borrow().startup.print_plan_json {
            let plan = crate::plan::job_plan(self, job_name)?;
            let json = serde_json::to_string_pretty(&plan).expect("the plan serializes");
            println!("{json}");
            std::process::exit(0);
        }
        let (restore_path, allow_non_restored_state, claim_mode, progress, serve_rest, storage) = {
            let inner = self.inner.borrow();
            (
                inner.startup.restore_path.clone(),
                inner.startup.allow_non_restored_state,
                inner.startup.claim_mode,
                inner.progress,
                inner.serve_rest || cairn_rest_server::rest_requested(&inner.config),
                crate::wiring::storage(&inner.config)?,
            )
        };
        let snapshot = match &restore_path {
            Some(p) => Some(crate::execution::load(&*storage, p)?),
            None => None,
        };
        let spec = self.build(job_name, snapshot.as_ref())?;
        let cluster = cairn_cluster::ClusterSettings::from_config(&spec.config);
        let launcher: Option<Arc<dyn cairn_coordinator::controller::AttemptLauncher>> = match cluster.mode {
            cairn_cluster::ClusterMode::Local => None,
            cairn_cluster::ClusterMode::Worker => {
                return Err(CairnError::Job(cairn_cluster::cluster_error(
                    "a worker (--mode worker) runs with StreamEnv::execute, not execute_async",
                )))
            }
            cairn_cluster::ClusterMode::Coordinator => Some(
                cairn_cluster::coordinator::RemoteLauncher::start(
                    cluster,
                    &spec.job_id,
                    job_name,
                    cairn_cluster::worker::config_entries(&spec.config),
                    progress,
                )
                .map_err(|e| CairnError::Job(cairn_cluster::cluster_error(e)))?,
            ),
        };
        let handle = crate::execution::start(crate::execution::Launch {
            job_name: job_name.to_string(),
            spec,
            snapshot,
            restore_path,
            allow_non_restored_state,
            claim_mode,
            progress,
            serve_rest,
            storage,
            launcher,
        })?;
        Ok(handle)
    }
}

/// The last path segment of a type's name, for default operator names.
pub(crate) fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// A job error as a worker reports it (configuration and graph errors as
/// configuration errors).
fn job_error(e: CairnError) -> cairn_runtime::JobError {
    use cairn_runtime::error::{SetupError, SetupErrorKind};
    match e {
        CairnError::Job(e) => e,
        other => cairn_runtime::JobError::Setup(SetupError::new(SetupErrorKind::Config, other.to_string())),
    }
}

/// Wait to be terminated.
fn linger() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Builds what a worker runs from this environment's graph.
struct WorkerBuilder<'a> {
    env: &'a StreamEnv,
    job_name: &'a str,
}

impl cairn_cluster::worker::JobBuilder for WorkerBuilder<'_> {
    fn storage(&self, config: &Configuration) -> Result<Arc<dyn cairn_snapshot::Storage>, cairn_runtime::JobError> {
        crate::wiring::storage(config).map_err(job_error)
    }

    fn build(
        &self,
        config: &Configuration,
        job_id: &str,
        snapshot: Option<&LoadedSnapshot>,
    ) -> Result<JobSpec, cairn_runtime::JobError> {
        self.env
            .build_with(self.job_name, config, job_id, snapshot)
            .map_err(job_error)
    }
}
