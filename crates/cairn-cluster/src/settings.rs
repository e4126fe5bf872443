//! The cluster settings of a job binary, from its configuration.

use std::time::Duration;

use cairn_config::{options, Configuration};

/// How the job binary runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterMode {
    /// Every task in this process.
    Local,
    /// Builds the graph, deploys subtasks to workers, runs checkpoints and REST.
    Coordinator,
    /// Offers task slots to a coordinator and runs what it is given.
    Worker,
}

/// Everything the coordinator and workers read from configuration.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub mode: ClusterMode,
    /// The coordinator's control endpoint as workers reach it.
    pub coordinator_host: String,
    pub coordinator_port: u16,
    /// Where the coordinator's control endpoint binds.
    pub coordinator_bind_host: String,
    pub slots: u32,
    /// The address other workers use for this worker's data port.
    pub data_host: Option<String>,
    pub data_bind_host: String,
    pub data_port: u16,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub slot_request_timeout: Duration,
}

impl ClusterSettings {
    /// Read from `config`.
    pub fn from_config(config: &Configuration) -> Self {
        let mode = match config.get(&options::CLUSTER_MODE).as_str() {
            "coordinator" => ClusterMode::Coordinator,
            "worker" => ClusterMode::Worker,
            _ => ClusterMode::Local,
        };
        ClusterSettings {
            mode,
            coordinator_host: config.get(&options::JOBMANAGER_RPC_ADDRESS),
            coordinator_port: config.get(&options::JOBMANAGER_RPC_PORT),
            coordinator_bind_host: config.get(&options::JOBMANAGER_BIND_HOST),
            slots: config.get(&options::TASK_SLOTS).max(1),
            data_host: config.get(&options::TASKMANAGER_HOST),
            data_bind_host: config.get(&options::TASKMANAGER_BIND_HOST),
            data_port: config.get(&options::TASKMANAGER_DATA_PORT),
            heartbeat_interval: config.get(&options::HEARTBEAT_INTERVAL),
            heartbeat_timeout: config.get(&options::HEARTBEAT_TIMEOUT),
            slot_request_timeout: config.get(&options::SLOT_REQUEST_TIMEOUT),
        }
    }

    /// `host:port` of the coordinator, brackets around IPv6 hosts.
    pub fn coordinator_authority(&self) -> String {
        authority(&self.coordinator_host, self.coordinator_port)
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
