//! The control protocol's messages to and from the runtime's types.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_runtime::error::{BoxError, Cancelled};
use cairn_runtime::output::TaskMetrics;
use cairn_runtime::query::{QueryError, StateAnswer};
use cairn_runtime::record::{Barrier, SnapshotType};
use cairn_runtime::task::{TaskCommand, TaskEvent, TaskId};
use cairn_snapshot::StateFileRef;

use crate::proto;

pub fn task_ref(t: TaskId) -> proto::TaskRef {
    proto::TaskRef {
        chain: t.chain as u32,
        subtask: t.subtask,
    }
}

pub fn task_id(t: Option<&proto::TaskRef>) -> Result<TaskId, String> {
    let t = t.ok_or("a message names no task")?;
    Ok(TaskId {
        chain: t.chain as usize,
        subtask: t.subtask,
    })
}

pub fn barrier_msg(b: Barrier) -> proto::Barrier {
    proto::Barrier {
        checkpoint_id: b.checkpoint_id,
        timestamp_ms: b.timestamp_ms,
        snapshot_type: match b.snapshot_type {
            SnapshotType::Checkpoint => 0,
            SnapshotType::Savepoint { terminate: false } => 1,
            SnapshotType::Savepoint { terminate: true } => 2,
        },
    }
}

pub fn barrier(b: &proto::Barrier) -> Barrier {
    Barrier {
        checkpoint_id: b.checkpoint_id,
        timestamp_ms: b.timestamp_ms,
        snapshot_type: match b.snapshot_type {
            0 => SnapshotType::Checkpoint,
            1 => SnapshotType::Savepoint { terminate: false },
            _ => SnapshotType::Savepoint { terminate: true },
        },
    }
}

/// A task command as sent to the worker running the task.
pub fn command_msg(attempt: u32, task: TaskId, cmd: &TaskCommand) -> proto::TaskCommand {
    use proto::task_command::Kind;
    let kind = match cmd {
        TaskCommand::TriggerCheckpoint(b) => Kind::TriggerCheckpoint(barrier_msg(*b)),
        TaskCommand::NotifyCheckpointComplete(id) => Kind::CheckpointComplete(*id),
        TaskCommand::NotifyCheckpointAborted(id) => Kind::CheckpointAborted(*id),
        TaskCommand::Release => Kind::Release(proto::Empty {}),
        TaskCommand::StopSource { drain } => Kind::StopSource(*drain),
    };
    proto::TaskCommand {
        attempt,
        task: Some(task_ref(task)),
        kind: Some(kind),
    }
}

pub fn command(msg: &proto::TaskCommand) -> Result<(TaskId, TaskCommand), String> {
    use proto::task_command::Kind;
    let task = task_id(msg.task.as_ref())?;
    let cmd = match msg.kind.as_ref().ok_or("a task command without a kind")? {
        Kind::TriggerCheckpoint(b) => TaskCommand::TriggerCheckpoint(barrier(b)),
        Kind::CheckpointComplete(id) => TaskCommand::NotifyCheckpointComplete(*id),
        Kind::CheckpointAborted(id) => TaskCommand::NotifyCheckpointAborted(*id),
        Kind::Release(_) => TaskCommand::Release,
        Kind::StopSource(drain) => TaskCommand::StopSource { drain: *drain },
    };
    Ok((task, cmd))
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A task event as a worker reports it.
pub fn event_msg(attempt: u32, event: &TaskEvent) -> proto::TaskEvent {
    use proto::task_event::Kind;
    let (task, kind) = match event {
        TaskEvent::Snapshotted { task, checkpoint_id } => (*task, Kind::Snapshotted(*checkpoint_id)),
        TaskEvent::Acknowledge {
            task,
            checkpoint_id,
            files,
            alignment,
            sync,
            write,
            unaligned,
            persisted_bytes,
        } => (
            *task,
            Kind::Acknowledge(proto::Acknowledge {
                checkpoint_id: *checkpoint_id,
                files: files
                    .iter()
                    .map(|(node, refs)| proto::NodeFiles {
                        node: *node as u32,
                        files_json: serde_json::to_string(refs).unwrap_or_else(|_| "[]".into()),
                    })
                    .collect(),
                alignment_us: micros(*alignment),
                sync_us: micros(*sync),
                write_us: micros(*write),
                unaligned: *unaligned,
                persisted_bytes: *persisted_bytes,
            }),
        ),
        TaskEvent::Decline {
            task,
            checkpoint_id,
            reason,
        } => (
            *task,
            Kind::Decline(proto::Decline {
                checkpoint_id: *checkpoint_id,
                reason: reason.to_string(),
            }),
        ),
        TaskEvent::Finished { task } => (*task, Kind::Finished(proto::Empty {})),
        TaskEvent::Failed { task, op, error } => (
            *task,
            Kind::Failed(proto::Failed {
                op: op.map(|o| o as u32),
                message: error.to_string(),
                cancellation: cairn_runtime::job::is_cancellation(error),
            }),
        ),
        TaskEvent::Exited { task } => (*task, Kind::Exited(proto::Empty {})),
    };
    proto::TaskEvent {
        attempt,
        task: Some(task_ref(task)),
        kind: Some(kind),
    }
}

/// A failure message as the error it was (a cancellation stays one, so
/// the controller does not mistake its echo for a cause).
pub fn failure_error(message: String, cancellation: bool) -> BoxError {
    if cancellation {
        Box::new(Cancelled)
    } else {
        message.into()
    }
}

/// A worker's task event as the controller sees it.
pub fn event(msg: &proto::TaskEvent) -> Result<TaskEvent, String> {
    use proto::task_event::Kind;
    let task = task_id(msg.task.as_ref())?;
    Ok(match msg.kind.as_ref().ok_or("a task event without a kind")? {
        Kind::Snapshotted(id) => TaskEvent::Snapshotted {
            task,
            checkpoint_id: *id,
        },
        Kind::Acknowledge(a) => {
            let mut files = Vec::with_capacity(a.files.len());
            for f in &a.files {
                let refs: Vec<StateFileRef> = serde_json::from_str(&f.files_json)
                    .map_err(|e| format!("an acknowledgement's file list does not parse: {e}"))?;
                files.push((f.node as usize, refs));
            }
            TaskEvent::Acknowledge {
                task,
                checkpoint_id: a.checkpoint_id,
                files,
                alignment: Duration::from_micros(a.alignment_us),
                sync: Duration::from_micros(a.sync_us),
                write: Duration::from_micros(a.write_us),
                unaligned: a.unaligned,
                persisted_bytes: a.persisted_bytes,
            }
        }
        Kind::Decline(d) => TaskEvent::Decline {
            task,
            checkpoint_id: d.checkpoint_id,
            reason: cairn_runtime::error::CheckpointFailure::Declined(d.reason.clone()),
        },
        Kind::Finished(_) => TaskEvent::Finished { task },
        Kind::Failed(f) => TaskEvent::Failed {
            task,
            op: f.op.map(|o| o as usize),
            error: failure_error(f.message.clone(), f.cancellation),
        },
        Kind::Exited(_) => TaskEvent::Exited { task },
    })
}

/// A task's counters for a heartbeat.
pub fn metrics_msg(task: TaskId, m: &TaskMetrics) -> proto::TaskMetrics {
    proto::TaskMetrics {
        task: Some(task_ref(task)),
        records_in: m.records_in.load(Ordering::Relaxed),
        records_out: m.records_out.load(Ordering::Relaxed),
        source_records: m.source_records.load(Ordering::Relaxed),
        backpressure_ns: m.backpressure_ns.load(Ordering::Relaxed),
        idle_ns: m.idle_ns.load(Ordering::Relaxed),
        started_ms: m.started_ms.load(Ordering::Relaxed),
        watermark: m.watermark.load(Ordering::Relaxed),
        operators: m
            .operators
            .iter()
            .map(|o| proto::OperatorCounters {
                node: o.node as u32,
                records_in: o.records_in.load(Ordering::Relaxed),
                records_out: o.records_out.load(Ordering::Relaxed),
            })
            .collect(),
    }
}

/// Copy a heartbeat's counters into the coordinator's mirror of a task.
pub fn apply_metrics(msg: &proto::TaskMetrics, m: &TaskMetrics) {
    m.records_in.store(msg.records_in, Ordering::Relaxed);
    m.records_out.store(msg.records_out, Ordering::Relaxed);
    m.source_records.store(msg.source_records, Ordering::Relaxed);
    m.backpressure_ns.store(msg.backpressure_ns, Ordering::Relaxed);
    m.idle_ns.store(msg.idle_ns, Ordering::Relaxed);
    m.started_ms.store(msg.started_ms, Ordering::Relaxed);
    m.watermark.store(msg.watermark, Ordering::Relaxed);
    for o in &msg.operators {
        if let Some(mine) = m.operators.iter().find(|x| x.node == o.node as usize) {
            mine.records_in.store(o.records_in, Ordering::Relaxed);
            mine.records_out.store(o.records_out, Ordering::Relaxed);
        }
    }
}

/// A worker's answer to a live state query; a failure names `queryable`,
/// the worker's operators with queryable state.
pub fn query_reply(
    request_id: u64,
    result: &Result<StateAnswer, QueryError>,
    queryable: &[String],
) -> proto::StateQueryReply {
    use proto::state_query_reply::Result as R;
    let failure = |kind: u32, message: &str| {
        R::Failure(proto::QueryFailure {
            kind,
            message: message.to_string(),
            queryable: queryable.to_vec(),
        })
    };
    let result = match result {
        Ok(answer) => match serde_json::to_string(answer) {
            Ok(json) => R::AnswerJson(json),
            Err(e) => failure(5, &format!("the answer could not be written as JSON: {e}")),
        },
        Err(QueryError::UnknownOperator(m)) => failure(0, m),
        Err(QueryError::UnknownState(m)) => failure(1, m),
        Err(QueryError::InvalidKey(m)) => failure(2, m),
        Err(QueryError::Unavailable(m)) => failure(3, m),
        Err(QueryError::NotRunning(m)) => failure(4, m),
        Err(QueryError::Failed(m)) => failure(5, m),
        Err(QueryError::NotHere(m)) => failure(6, m),
    };
    proto::StateQueryReply {
        request_id,
        result: Some(result),
    }
}

/// A worker's answer as the coordinator reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerAnswer {
    pub result: Result<StateAnswer, QueryError>,
    /// With a failure: the worker's operators with queryable state.
    pub queryable: Vec<String>,
}

/// The answer a worker sent, back as the query's result.
pub fn query_result(msg: &proto::StateQueryReply) -> WorkerAnswer {
    use proto::state_query_reply::Result as R;
    let queryable = match &msg.result {
        Some(R::Failure(f)) => f.queryable.clone(),
        _ => Vec::new(),
    };
    let result = match &msg.result {
        Some(R::AnswerJson(json)) => serde_json::from_str(json)
            .map_err(|e| QueryError::Failed(format!("a worker's answer could not be read: {e}"))),
        Some(R::Failure(f)) => Err(match f.kind {
            0 => QueryError::UnknownOperator(f.message.clone()),
            1 => QueryError::UnknownState(f.message.clone()),
            2 => QueryError::InvalidKey(f.message.clone()),
            3 => QueryError::Unavailable(f.message.clone()),
            4 => QueryError::NotRunning(f.message.clone()),
            6 => QueryError::NotHere(f.message.clone()),
            _ => QueryError::Failed(f.message.clone()),
        }),
        None => Err(QueryError::Failed("a worker answered a query with nothing".into())),
    };
    WorkerAnswer { result, queryable }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_survive_the_wire() {
        let t = TaskId { chain: 2, subtask: 5 };
        let b = Barrier {
            checkpoint_id: 7,
            timestamp_ms: 99,
            snapshot_type: SnapshotType::Savepoint { terminate: true },
        };
        for cmd in [
            TaskCommand::TriggerCheckpoint(b),
            TaskCommand::NotifyCheckpointComplete(3),
            TaskCommand::NotifyCheckpointAborted(4),
            TaskCommand::Release,
            TaskCommand::StopSource { drain: true },
        ] {
            let (task, back) = command(&command_msg(1, t, &cmd)).unwrap();
            assert_eq!(task, t);
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        let ack = TaskEvent::Acknowledge {
            task: t,
            checkpoint_id: 9,
            files: vec![(
                3,
                vec![StateFileRef {
                    path: "op-x-5".into(),
                    size: 10,
                    crc32: 42,
                    sections: vec![],
                    format: Default::default(),
                }],
            )],
            alignment: Duration::from_millis(2),
            sync: Duration::from_millis(3),
            write: Duration::from_millis(4),
            unaligned: false,
            persisted_bytes: 0,
        };
        match event(&event_msg(1, &ack)).unwrap() {
            TaskEvent::Acknowledge {
                task,
                checkpoint_id,
                files,
                sync,
                ..
            } => {
                assert_eq!((task, checkpoint_id, sync), (t, 9, Duration::from_millis(3)));
                assert_eq!(files[0].1[0].crc32, 42);
            }
            _ => panic!("not an acknowledgement"),
        }
        let cancelled = TaskEvent::Failed {
            task: t,
            op: None,
            error: Box::new(Cancelled),
        };
        match event(&event_msg(1, &cancelled)).unwrap() {
            TaskEvent::Failed { error, .. } => assert!(cairn_runtime::job::is_cancellation(&error)),
            _ => panic!("not a failure"),
        }
        let failed = TaskEvent::Failed {
            task: t,
            op: Some(1),
            error: "boom".into(),
        };
        match event(&event_msg(1, &failed)).unwrap() {
            TaskEvent::Failed { error, op, .. } => {
                assert!(!cairn_runtime::job::is_cancellation(&error));
                assert_eq!((op, error.to_string()), (Some(1), "boom".to_string()));
            }
            _ => panic!("not a failure"),
        }
    }

    /// Every query outcome crosses the session as it was.
    #[test]
    fn query_answers_and_failures_survive_the_trip() {
        let answer = StateAnswer {
            uid: "totals".into(),
            operator: "running totals".into(),
            state: "totals".into(),
            state_name: "totals".into(),
            kind: cairn_state::StateKind::Value,
            value_type: "(u64, u64)".into(),
            key: serde_json::json!(7),
            key_group: 3,
            subtask: 1,
            value: Some(serde_json::json!([2, 9])),
        };
        let ops = vec!["totals".to_string(), "tally".to_string()];
        assert_eq!(
            query_result(&query_reply(1, &Ok(answer.clone()), &ops)).result,
            Ok(answer)
        );
        for e in [
            QueryError::UnknownOperator("a".into()),
            QueryError::UnknownState("b".into()),
            QueryError::InvalidKey("c".into()),
            QueryError::Unavailable("d".into()),
            QueryError::NotRunning("e".into()),
            QueryError::Failed("f".into()),
            QueryError::NotHere("g".into()),
        ] {
            let back = query_result(&query_reply(2, &Err(e.clone()), &ops));
            assert_eq!((back.result, back.queryable), (Err(e), ops.clone()));
        }
    }
}
