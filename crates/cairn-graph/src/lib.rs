//! The logical job graph: operators with their names, uids, operator ids and
//! parallelism, the edges between them, validation (uids, parallelism), and
//! the chaining plan. It holds no operator code: the API crate pairs each node
//! with its logic, and the runtime runs the pair.

pub mod plan;

use std::collections::HashMap;
use std::fmt;

use cairn_state::hash::operator_id_for_uid;
use cairn_state::keygroup::{check_parallelism, default_max_parallelism};

/// Index of a node in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

/// How records of an edge are distributed over the target's subtasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Forward if parallelism matches, else rebalance (the default edge).
    Auto,
    /// Subtask i sends to subtask i; parallelism must match.
    Forward,
    /// By key group of the record's key (`key_by`).
    KeyGroups,
    /// Round-robin over all target subtasks.
    Rebalance,
    /// Every record to every target subtask.
    Broadcast,
}

/// An edge from one output port of `source` to one input of `target`.
#[derive(Clone, Debug)]
pub struct Edge {
    pub source: NodeId,
    /// 0 is the main output; side outputs are numbered from 1.
    pub source_port: usize,
    pub target: NodeId,
    /// 0 for the first input, 1 for the second input of two-input operators.
    pub target_input: usize,
    pub partitioning: Partitioning,
}

/// A node as the API declares it.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub uid: Option<String>,
    pub kind: NodeKind,
    pub parallelism: Option<u32>,
    pub max_parallelism: Option<u32>,
    /// Holds state that snapshots must capture (so needs a stable uid).
    pub stateful: bool,
    /// Holds keyed state (so its max parallelism fixes its key groups).
    pub keyed: bool,
    /// May not be chained to its predecessor (`start_new_chain`).
    pub chaining_disabled: bool,
}

/// The settings resolution needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct GraphSettings {
    pub default_parallelism: u32,
    pub max_parallelism: Option<u32>,
    pub auto_generate_uids: bool,
}

/// A node after resolution: every field is decided.
#[derive(Clone, Debug)]
pub struct ResolvedNode {
    pub id: NodeId,
    pub name: String,
    pub uid: String,
    /// Whether the uid was generated from the topology.
    pub uid_generated: bool,
    /// 32 lowercase hex digits: the hash of the uid (see docs/key-groups.md).
    pub operator_id: String,
    pub kind: NodeKind,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub stateful: bool,
    pub keyed: bool,
}

/// A validated graph ready to run.
#[derive(Clone, Debug)]
pub struct ResolvedGraph {
    pub name: String,
    pub nodes: Vec<ResolvedNode>,
    pub edges: Vec<Edge>,
    /// Chains of nodes that run in one task, in topological order.
    pub chains: Vec<Vec<NodeId>>,
}

/// What is wrong with a job's graph, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    DuplicateUid {
        uid: String,
        first: String,
        second: String,
    },
    MissingUid {
        operator: String,
    },
    BadParallelism {
        operator: String,
        detail: String,
    },
    ForwardParallelismMismatch {
        from: String,
        to: String,
        from_parallelism: u32,
        to_parallelism: u32,
    },
    Empty,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::DuplicateUid { uid, first, second } => write!(
                f,
                "operators '{first}' and '{second}' both have uid '{uid}'; uids must be unique within a job because state is matched to operators by uid. Give one of them a different .uid(\"...\")"
            ),
            GraphError::MissingUid { operator } => write!(
                f,
                "stateful operator '{operator}' has no uid. Its state could not be matched to it after a code change, so Cairn refuses to run it: add .uid(\"some-stable-id\") right after the operator, or set pipeline.auto-generate-uids: true to accept ids derived from the job's topology (they change when the job's shape changes)"
            ),
            GraphError::BadParallelism { operator, detail } => write!(f, "operator '{operator}': {detail}"),
            GraphError::ForwardParallelismMismatch { from, to, from_parallelism, to_parallelism } => write!(
                f,
                "forward edge from '{from}' (parallelism {from_parallelism}) to '{to}' (parallelism {to_parallelism}): a forward edge needs equal parallelism; use rebalance() or give both the same parallelism"
            ),
            GraphError::Empty => write!(f, "the job has no operators; add a source and a sink before execute()"),
        }
    }
}

impl std::error::Error for GraphError {}

/// A job's topology under construction.
#[derive(Clone, Debug, Default)]
pub struct JobGraph {
    pub nodes: Vec<NodeSpec>,
    pub edges: Vec<Edge>,
}

impl JobGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a node, returning its id.
    pub fn add_node(&mut self, spec: NodeSpec) -> NodeId {
        self.nodes.push(spec);
        NodeId(self.nodes.len() - 1)
    }

    /// Add an edge.
    pub fn add_edge(&mut self, edge: Edge) {
        self.edges.push(edge);
    }

    /// The node with `id`.
    pub fn node_mut(&mut self, id: NodeId) -> &mut NodeSpec {
        &mut self.nodes[id.0]
    }

    /// Validate and decide every uid, parallelism and chain.
    pub fn resolve(&self, name: &str, settings: GraphSettings) -> Result<ResolvedGraph, GraphError> {
        if self.nodes.is_empty() {
            return Err(GraphError::Empty);
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut seen: HashMap<String, String> = HashMap::new();
        // Nodes are created in topological order (an edge always points to a
        // later node), so generated uids only depend on what came before.
        let mut generated: Vec<String> = Vec::with_capacity(self.nodes.len());
        for (i, spec) in self.nodes.iter().enumerate() {
            let parallelism = spec.parallelism.unwrap_or(settings.default_parallelism);
            let max_parallelism = spec
                .max_parallelism
                .or(settings.max_parallelism)
                .unwrap_or_else(|| default_max_parallelism(parallelism));
            if spec.keyed || spec.max_parallelism.is_some() {
                check_parallelism(parallelism, max_parallelism).map_err(|e| GraphError::BadParallelism {
                    operator: spec.name.clone(),
                    detail: e.to_string(),
                })?;
            } else if parallelism == 0 {
                return Err(GraphError::BadParallelism {
                    operator: spec.name.clone(),
                    detail: "parallelism must be at least 1".into(),
                });
            }
            let auto_uid = {
                let mut basis = format!("{}|{:?}|{}", i, spec.kind, spec.name);
                for e in self.edges.iter().filter(|e| e.target.0 == i) {
                    basis.push_str(&format!(
                        "|{}:{}:{}",
                        generated[e.source.0], e.source_port, e.target_input
                    ));
                }
                format!("auto-{}", &operator_id_for_uid(&basis)[..16])
            };
            generated.push(auto_uid.clone());
            let (uid, uid_generated) = match &spec.uid {
                Some(u) => (u.clone(), false),
                None if spec.stateful && !settings.auto_generate_uids => {
                    return Err(GraphError::MissingUid {
                        operator: spec.name.clone(),
                    })
                }
                None => (auto_uid, true),
            };
            if let Some(first) = seen.insert(uid.clone(), spec.name.clone()) {
                return Err(GraphError::DuplicateUid {
                    uid,
                    first,
                    second: spec.name.clone(),
                });
            }
            nodes.push(ResolvedNode {
                id: NodeId(i),
                name: spec.name.clone(),
                operator_id: operator_id_for_uid(&uid),
                uid,
                uid_generated,
                kind: spec.kind,
                parallelism,
                max_parallelism,
                stateful: spec.stateful,
                keyed: spec.keyed,
            });
        }
        let mut edges = self.edges.clone();
        for e in &mut edges {
            let (from, to) = (&nodes[e.source.0], &nodes[e.target.0]);
            match e.partitioning {
                Partitioning::Auto => {
                    e.partitioning = if from.parallelism == to.parallelism {
                        Partitioning::Forward
                    } else {
                        Partitioning::Rebalance
                    }
                }
                Partitioning::Forward if from.parallelism != to.parallelism => {
                    return Err(GraphError::ForwardParallelismMismatch {
                        from: from.name.clone(),
                        to: to.name.clone(),
                        from_parallelism: from.parallelism,
                        to_parallelism: to.parallelism,
                    })
                }
                _ => {}
            }
        }
        let chains = plan_chains(&self.nodes, &edges);
        Ok(ResolvedGraph {
            name: name.to_string(),
            nodes,
            edges,
            chains,
        })
    }
}

/// A node joins its predecessor's chain when the single edge between them is
/// forward, the predecessor has no other consumers, and the node has no other
/// inputs: then records can pass by function call instead of a channel.
fn plan_chains(nodes: &[NodeSpec], edges: &[Edge]) -> Vec<Vec<NodeId>> {
    let mut chain_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut chains: Vec<Vec<NodeId>> = Vec::new();
    for (i, spec) in nodes.iter().enumerate() {
        let inputs: Vec<&Edge> = edges.iter().filter(|e| e.target.0 == i).collect();
        let joins = match inputs.as_slice() {
            [e] if e.partitioning == Partitioning::Forward && e.source_port == 0 && !spec.chaining_disabled => {
                let consumers = edges.iter().filter(|o| o.source == e.source).count();
                let tail = chain_of[e.source.0].map(|c| *chains[c].last().expect("non-empty chain"));
                consumers == 1 && tail == Some(e.source)
            }
            _ => false,
        };
        if joins {
            let c = chain_of[inputs[0].source.0].expect("predecessor has a chain");
            chains[c].push(NodeId(i));
            chain_of[i] = Some(c);
        } else {
            chains.push(vec![NodeId(i)]);
            chain_of[i] = Some(chains.len() - 1);
        }
    }
    chains
}

impl ResolvedGraph {
    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> &ResolvedNode {
        &self.nodes[id.0]
    }

    /// Edges into `id`.
    pub fn inputs_of(&self, id: NodeId) -> impl Iterator<Item = (usize, &Edge)> {
        self.edges.iter().enumerate().filter(move |(_, e)| e.target == id)
    }

    /// Edges out of `id`.
    pub fn outputs_of(&self, id: NodeId) -> impl Iterator<Item = (usize, &Edge)> {
        self.edges.iter().enumerate().filter(move |(_, e)| e.source == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, uid: Option<&str>, kind: NodeKind, stateful: bool) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            uid: uid.map(String::from),
            kind,
            parallelism: None,
            max_parallelism: None,
            stateful,
            keyed: stateful,
            chaining_disabled: false,
        }
    }

    fn settings(auto: bool) -> GraphSettings {
        GraphSettings {
            default_parallelism: 2,
            max_parallelism: None,
            auto_generate_uids: auto,
        }
    }

    fn edge(a: usize, b: usize, p: Partitioning) -> Edge {
        Edge {
            source: NodeId(a),
            source_port: 0,
            target: NodeId(b),
            target_input: 0,
            partitioning: p,
        }
    }

    fn three(uid: Option<&str>) -> JobGraph {
        let mut g = JobGraph::new();
        g.add_node(spec("src", Some("src"), NodeKind::Source, false));
        g.add_node(spec("count", uid, NodeKind::Operator, true));
        g.add_node(spec("print", None, NodeKind::Sink, false));
        g.add_edge(edge(0, 1, Partitioning::KeyGroups));
        g.add_edge(edge(1, 2, Partitioning::Auto));
        g
    }

    #[test]
    fn stateful_operator_without_uid_is_refused_with_the_fix() {
        let err = three(None).resolve("j", settings(false)).unwrap_err().to_string();
        assert!(
            err.contains("'count'") && err.contains(".uid(") && err.contains("pipeline.auto-generate-uids"),
            "{err}"
        );
    }

    #[test]
    fn auto_generated_uids_are_stable_and_opt_in() {
        let a = three(None).resolve("j", settings(true)).unwrap();
        let b = three(None).resolve("j", settings(true)).unwrap();
        assert!(a.nodes[1].uid_generated);
        assert_eq!(a.nodes[1].uid, b.nodes[1].uid);
        assert_ne!(a.nodes[1].uid, a.nodes[2].uid);
    }

    #[test]
    fn duplicate_uids_fail_naming_both_operators() {
        let mut g = three(Some("src"));
        g.nodes[1].name = "counter".into();
        let err = g.resolve("j", settings(false)).unwrap_err().to_string();
        assert!(
            err.contains("'src'") && err.contains("'counter'") && err.contains("uid 'src'"),
            "{err}"
        );
    }

    #[test]
    fn operator_ids_hash_the_uid_and_chains_follow_forward_edges() {
        let g = three(Some("count")).resolve("j", settings(false)).unwrap();
        assert_eq!(g.nodes[1].operator_id, operator_id_for_uid("count"));
        assert_eq!(g.nodes[1].max_parallelism, 128);
        assert_eq!(g.chains, vec![vec![NodeId(0)], vec![NodeId(1), NodeId(2)]]);
        assert_eq!(g.edges[1].partitioning, Partitioning::Forward);
    }

    #[test]
    fn parallelism_above_max_parallelism_is_refused() {
        let mut g = three(Some("count"));
        g.nodes[1].parallelism = Some(8);
        g.nodes[1].max_parallelism = Some(4);
        let err = g.resolve("j", settings(false)).unwrap_err().to_string();
        assert!(err.contains("'count'") && err.contains("max"), "{err}");
    }

    #[test]
    fn explicit_forward_with_different_parallelism_is_refused() {
        let mut g = three(Some("count"));
        g.edges[1].partitioning = Partitioning::Forward;
        g.nodes[2].parallelism = Some(1);
        let err = g.resolve("j", settings(false)).unwrap_err().to_string();
        assert!(err.contains("forward edge"), "{err}");
    }
}
