//! A job's resolved plan as data: what `--cairn-plan-json` prints and
//! `cairn savepoint check` compares a snapshot with, without running the job.

use cairn_state::StateMeta;
use serde::{Deserialize, Serialize};

/// The version of the plan JSON (`cairn_plan_version`).
pub const PLAN_VERSION: u32 = 1;

/// A job's operators as it would start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    pub cairn_plan_version: u32,
    pub job_name: String,
    /// `-n` was among the job's arguments.
    pub allow_non_restored_state: bool,
    pub operators: Vec<PlannedOperator>,
}

/// One operator of a [`JobPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOperator {
    pub name: String,
    pub uid: String,
    pub uid_generated: bool,
    pub operator_id: String,
    /// `source`, `operator` or `sink`.
    pub kind: String,
    pub keyed: bool,
    pub stateful: bool,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Whether the max parallelism was set (on the operator or with
    /// `pipeline.max-parallelism`); otherwise a restore takes the snapshot's.
    pub max_parallelism_explicit: bool,
    /// The keyed states the operator registers when it opens, with their
    /// traced types (timers included).
    pub states: Vec<StateMeta>,
}
