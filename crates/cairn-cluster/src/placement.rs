//! Where subtasks run. A task slot runs one subtask of every operator (slot
//! sharing, as in Flink), so a job whose largest parallelism is N needs N
//! slots; subtask `s` of every chain runs on the worker holding slot `s`.
//! Keyed edges then cross workers, forward edges stay inside one.

use std::collections::HashMap;

use cairn_graph::ResolvedGraph;
use cairn_runtime::task::TaskId;

/// The slots a job needs: its largest parallelism.
pub fn slots_needed(graph: &ResolvedGraph) -> u32 {
    graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1)
}

/// Every task of `graph`, in chain order.
pub fn all_tasks(graph: &ResolvedGraph) -> Vec<TaskId> {
    let mut out = Vec::new();
    for (ci, chain) in graph.chains.iter().enumerate() {
        for s in 0..graph.node(chain[0]).parallelism {
            out.push(TaskId { chain: ci, subtask: s });
        }
    }
    out
}

/// Which worker (by index) holds each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// slot -> worker index
    pub slot_owner: HashMap<u32, usize>,
}

impl Placement {
    /// The worker that runs `task`.
    pub fn worker_of(&self, task: TaskId) -> Option<usize> {
        self.slot_owner.get(&task.subtask).copied()
    }
}

/// A text that is equal for two processes exactly when their job graphs
/// are: operators (ids, kinds, parallelism, max parallelism), edges and
/// chains. A worker started with another binary or other job arguments
/// than its coordinator is refused with the first line that differs.
pub fn graph_fingerprint(graph: &ResolvedGraph) -> String {
    let mut lines = Vec::new();
    for n in &graph.nodes {
        lines.push(format!(
            "operator {} uid '{}' {:?} parallelism {} max-parallelism {}",
            n.operator_id, n.uid, n.kind, n.parallelism, n.max_parallelism
        ));
    }
    for e in &graph.edges {
        lines.push(format!(
            "edge {} port {} -> {} input {} {:?}",
            graph.node(e.source).operator_id,
            e.source_port,
            graph.node(e.target).operator_id,
            e.target_input,
            e.partitioning
        ));
    }
    for c in &graph.chains {
        let ids: Vec<&str> = c.iter().map(|n| graph.node(*n).operator_id.as_str()).collect();
        lines.push(format!("chain {}", ids.join(" ")));
    }
    lines.join("\n")
}

/// The first line where two fingerprints differ, for the error message.
pub fn first_difference(ours: &str, theirs: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or("(nothing)"),
            b.get(i).copied().unwrap_or("(nothing)"),
        );
        if x != y {
            return format!("the coordinator has \"{y}\" where this worker has \"{x}\"");
        }
    }
    "they are equal".to_string()
}
