//! Live state queries: routing a query to the subtask that owns the key, and
//! the mailbox through which that subtask answers it.
//!
//! Every task whose operators registered queryable state gets a bounded
//! query mailbox. A query is parsed here (the key's JSON into its bytes with
//! the operator's key codec, then its key group and the owning subtask, as
//! records are routed) and put into that subtask's mailbox; the task serves
//! its mailbox between two batches, on its own thread, so the answer is the
//! state as of a batch boundary and nothing races the operator. A query
//! waits for at most the batch in progress (or a send blocked by
//! backpressure), bounded by the caller's timeout; a task serves at most
//! [`QUERIES_PER_TURN`] queries between two batches, so queries cannot
//! stall processing either.

use std::sync::Arc;
use std::time::Duration;

use cairn_state::canonical::KeyCodec;
use cairn_state::keygroup::{key_group_for_bytes, subtask_for_key_group};
use cairn_state::{QueryableState, StateKind};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Queries one subtask may have waiting; more are refused (busy) rather
/// than queued without bound.
pub const QUERY_MAILBOX_CAPACITY: usize = 256;

/// Queries a task answers between two batches at most.
pub const QUERIES_PER_TURN: usize = 32;

/// What a subtask answers: the value as JSON (`None`: the key has nothing
/// live), or why it could not read it.
pub type QueryReply = Result<Option<Value>, String>;

/// One query in a task's mailbox.
pub struct StateQuery {
    /// The node (operator) of the task's chain whose state is read.
    pub node: usize,
    /// The queryable name.
    pub state: String,
    /// The key's bytes and key group.
    pub key: Vec<u8>,
    pub key_group: u32,
    pub reply: Sender<QueryReply>,
}

/// Creates a task's query mailbox.
pub fn mailbox() -> (Sender<StateQuery>, Receiver<StateQuery>) {
    bounded(QUERY_MAILBOX_CAPACITY)
}

/// An operator with queryable state, as queries find it.
pub struct QueryableOperator {
    pub node: usize,
    pub uid: String,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Parses keys written as JSON; `None` if the node has no key codec.
    pub key_codec: Option<KeyCodec>,
    /// What its subtasks registered as queryable (the union; every subtask
    /// runs the same `open`).
    pub states: Vec<QueryableState>,
    /// Each subtask's mailbox, by subtask index.
    pub mailboxes: Vec<Option<Sender<StateQuery>>>,
}

/// Where the queries of one running attempt of a job go.
#[derive(Default)]
pub struct QueryRoutes {
    pub operators: Vec<QueryableOperator>,
    /// Every operator uid of the job (for messages about unknown uids).
    pub uids: Vec<String>,
    /// This process runs only some of the job's subtasks (a worker): a key
    /// whose subtask runs elsewhere gets [`QueryError::NotHere`].
    pub partial: bool,
    /// The job's tasks run in other processes, which answer its queries
    /// (the coordinator of workers).
    pub remote: Option<Arc<dyn RemoteQueries>>,
}

/// Answers the queries of a job whose tasks run in other processes.
pub trait RemoteQueries: Send + Sync {
    fn query(&self, uid: &str, state: &str, key_json: &str, timeout: Duration) -> Result<StateAnswer, QueryError>;
}

/// Why a query got no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// No operator with this uid, or it has no queryable state.
    UnknownOperator(String),
    /// The operator has no state queryable under this name.
    UnknownState(String),
    /// The key is not JSON, or does not decode as the operator's key type.
    InvalidKey(String),
    /// The owning subtask cannot answer now (busy, backpressured, ended).
    Unavailable(String),
    /// The job is not running (no attempt serves queries).
    NotRunning(String),
    /// The subtask could not read the state (a corrupt value, a backend failure).
    Failed(String),
    /// The subtask that owns the key (or every subtask of the operator)
    /// runs in another process; only a worker's partial routes say this.
    NotHere(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::UnknownOperator(m)
            | QueryError::UnknownState(m)
            | QueryError::InvalidKey(m)
            | QueryError::Unavailable(m)
            | QueryError::NotRunning(m)
            | QueryError::Failed(m)
            | QueryError::NotHere(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for QueryError {}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateAnswer {
    pub uid: String,
    pub operator: String,
    /// The queryable name.
    pub state: String,
    /// The state's descriptor name (as snapshots record it).
    pub state_name: String,
    pub kind: StateKind,
    pub value_type: String,
    /// The key as given, parsed.
    pub key: Value,
    pub key_group: u32,
    /// The subtask (0-based) that owns the key and answered.
    pub subtask: u32,
    /// The current value; `null` when the key has none.
    pub value: Option<Value>,
}

fn list(names: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = names.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

impl std::fmt::Debug for QueryRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.operators
                    .iter()
                    .map(|o| (&o.uid, o.states.iter().map(|s| &s.name).collect::<Vec<_>>())),
            )
            .finish()
    }
}

/// The error for a uid that names no operator with queryable state;
/// `in_job`: the job has an operator with that uid (it has none queryable).
pub fn unknown_operator(uid: &str, in_job: bool, queryable: &[String]) -> QueryError {
    let queryable = list(queryable.iter().map(|u| format!("'{u}'")));
    QueryError::UnknownOperator(if in_job {
        format!(
            "operator '{uid}' has no queryable state (mark a state descriptor queryable(\"name\") to query it); \
             operators with queryable state: {queryable}"
        )
    } else {
        format!("the job has no operator with uid '{uid}'; operators with queryable state: {queryable}")
    })
}

impl QueryRoutes {
    /// The uids of the operators with queryable state that run here.
    pub fn queryable_uids(&self) -> Vec<String> {
        self.operators.iter().map(|o| o.uid.clone()).collect()
    }

    /// Whether the job has an operator with this uid (queryable or not).
    pub fn has_uid(&self, uid: &str) -> bool {
        self.uids.iter().any(|u| u == uid)
    }

    /// Queries waiting in the mailbox of subtask `subtask` of operator `uid`
    /// (`None`: no such queryable operator or subtask).
    pub fn waiting(&self, uid: &str, subtask: u32) -> Option<usize> {
        let op = self.operators.iter().find(|o| o.uid == uid)?;
        op.mailboxes.get(subtask as usize)?.as_ref().map(Sender::len)
    }

    /// Read `key_json`'s value of the state queryable as `state` in the
    /// operator `uid`, waiting up to `timeout` for the owning subtask.
    pub fn query(&self, uid: &str, state: &str, key_json: &str, timeout: Duration) -> Result<StateAnswer, QueryError> {
        if let Some(remote) = &self.remote {
            return remote.query(uid, state, key_json, timeout);
        }
        let Some(op) = self.operators.iter().find(|o| o.uid == uid) else {
            if self.partial && self.has_uid(uid) {
                return Err(QueryError::NotHere(format!(
                    "no subtask of operator '{uid}' that serves queries runs here"
                )));
            }
            return Err(unknown_operator(uid, self.has_uid(uid), &self.queryable_uids()));
        };
        let Some(info) = op.states.iter().find(|s| s.name == state) else {
            let names = list(op.states.iter().map(|s| format!("'{}'", s.name)));
            let hint = match op.states.iter().find(|s| s.state == state) {
                Some(s) => format!(" (state '{state}' is queryable as '{}')", s.name),
                None => String::new(),
            };
            return Err(QueryError::UnknownState(format!(
                "operator '{uid}' has no state queryable as '{state}'{hint}; its queryable states: {names}"
            )));
        };
        let codec = op.key_codec.as_ref().ok_or_else(|| {
            QueryError::Failed(format!(
                "operator '{uid}' has no key codec; its keys cannot be read from JSON"
            ))
        })?;
        let key: Value = serde_json::from_str(key_json).map_err(|e| {
            QueryError::InvalidKey(format!(
                "the key '{}' is not JSON ({e}); write the key as JSON: a string in quotes (\"alice\"), a number as is (42), a tuple as an array ([\"a\",1])",
                truncate(key_json, 200)
            ))
        })?;
        let mut bytes = Vec::new();
        codec
            .key_bytes_from_json(key_json.as_bytes(), &mut bytes)
            .map_err(|e| {
                QueryError::InvalidKey(format!(
                    "the key {} is not a key of operator '{uid}' (key type {}): {e}",
                    truncate(&key.to_string(), 200),
                    codec.key_type_name()
                ))
            })?;
        let key_group = key_group_for_bytes(&bytes, op.max_parallelism);
        let subtask = subtask_for_key_group(op.max_parallelism, op.parallelism, key_group);
        let unavailable = |why: &str| {
            QueryError::Unavailable(format!(
                "subtask {} of operator '{uid}', which owns the key, {why}",
                subtask + 1
            ))
        };
        let mailbox = match op.mailboxes.get(subtask as usize).and_then(Option::as_ref) {
            Some(m) => m,
            None if self.partial => {
                return Err(QueryError::NotHere(format!(
                    "subtask {} of operator '{uid}', which owns the key, runs elsewhere",
                    subtask + 1
                )))
            }
            None => return Err(unavailable("serves no queries")),
        };
        let (reply, answer) = bounded(1);
        let query = StateQuery {
            node: op.node,
            state: state.to_string(),
            key: bytes,
            key_group,
            reply,
        };
        match mailbox.try_send(query) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(unavailable(&format!(
                    "has {QUERY_MAILBOX_CAPACITY} queries waiting already; try again"
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(unavailable("has ended (the job is restarting or finishing); try again"))
            }
        }
        let value = match answer.recv_timeout(timeout) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(QueryError::Failed(format!(
                    "subtask {} of operator '{uid}' could not read state '{}': {e}",
                    subtask + 1,
                    info.state
                )))
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(unavailable(&format!(
                    "did not answer within {} ms (it answers between two batches: a long batch or backpressure \
                     delays it); try again, or raise cairn.queryable-state.timeout",
                    timeout.as_millis()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(unavailable(
                    "ended before answering (the job is restarting or finishing); try again",
                ))
            }
        };
        Ok(StateAnswer {
            uid: uid.to_string(),
            operator: op.name.clone(),
            state: state.to_string(),
            state_name: info.state.clone(),
            kind: info.kind,
            value_type: info.value_type.clone(),
            key,
            key_group,
            subtask,
            value,
        })
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
