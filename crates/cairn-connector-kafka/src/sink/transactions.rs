//! Exactly-once through Kafka transactions and the two-phase-commit sink contract.
//!
//! Each subtask `s` writes through transactional producers with the stable ids
//! `<prefix>-<s>-<slot>`. Records between two barriers go into one transaction; at the
//! barrier of checkpoint `c` the transaction is flushed (every record acknowledged) and
//! *pre-committed*: the sink also commits, inside the transaction, the offset `c` for
//! partition 0 of the marker topic to the consumer group `<prefix>-<s>` (the *marker*),
//! and records the transaction in its state. Records after the barrier go into the next
//! transaction, on another slot. When checkpoint `c` completes, the pending transactions
//! up to `c` are committed in order, so the marker of stream `s` is the last checkpoint
//! whose records are committed.
//!
//! librdkafka cannot resume another process's transaction (Flink's Java client does this
//! by reflection), and starting a producer with the same id aborts it. So the state keeps
//! each pre-committed transaction's records too. After a restore, the subtask that owns a
//! stream first fences its transactional ids (`init_transactions`: lingering transactions
//! of the failed attempt are aborted), then reads the stream's marker (a stable read: it
//! waits for transactions being completed): a pending transaction whose checkpoint is at
//! or below the marker was committed; any other is written again from the state in a new
//! transaction with the same marker and committed. Either way each record is committed
//! exactly once. A commit that fails because the broker aborted the transaction (e.g.
//! `transaction.timeout.ms` passed) is recovered the same way.
//!
//! Streams are owned by subtask `stream % parallelism`, so after a rescale the ids of
//! subtasks that no longer exist are fenced too.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_operators::SinkContext;
use cairn_state::DistributionMode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::record::WalRecord;
use super::{check_health, flush, send};
use crate::client::{ClientSettings, Context};
use crate::error::KafkaConnectorError;

/// Union list state: one entry per stream (old subtask) with the number of slots it used.
const STREAMS_STATE: &str = "kafka-sink-streams";
/// Union list state: the pre-committed, not yet committed transactions with their records.
const PENDING_STATE: &str = "kafka-sink-transactions";
/// Slots every stream is fenced with at least (one pending, one open).
const MIN_SLOTS: u32 = 2;
/// More pending transactions than this (checkpoints that never complete) fail the job.
const MAX_SLOTS: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StreamInfo {
    stream: u32,
    slots: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingTxn {
    stream: u32,
    transactional_id: String,
    checkpoint: u64,
    records: Vec<WalRecord>,
}

struct Slot {
    slot: u32,
    id: String,
    producer: BaseProducer<Context>,
}

struct Pending {
    slot: Slot,
    checkpoint: u64,
    records: Vec<WalRecord>,
}

/// One subtask's transactional producers.
pub(super) struct Transactions {
    uid: String,
    prefix: String,
    subtask: u32,
    default_topic: Option<String>,
    marker_topic: String,
    /// The consumer whose group is this subtask's marker group (for its group metadata).
    marker: BaseConsumer<Context>,
    base: BTreeMap<String, String>,
    free: Vec<Slot>,
    slots: u32,
    current: Option<(Slot, Vec<WalRecord>)>,
    pending: Vec<Pending>,
}

fn marker_group(prefix: &str, stream: u32) -> String {
    format!("{prefix}-{stream}")
}

fn transactional_id(prefix: &str, stream: u32, slot: u32) -> String {
    format!("{prefix}-{stream}-{slot}")
}

impl Transactions {
    pub fn open(
        settings: &ClientSettings,
        ctx: &mut SinkContext<'_>,
        uid: &str,
        prefix: &str,
        marker_topic: &str,
        default_topic: Option<&str>,
    ) -> Result<Self, KafkaConnectorError> {
        let subtask = ctx.info.subtask;
        let parallelism = ctx.info.parallelism.max(1);
        let streams: Vec<StreamInfo> = ctx.state.list(STREAMS_STATE).map_err(state_error)?;
        let mut restored: Vec<PendingTxn> = ctx.state.list(PENDING_STATE).map_err(state_error)?;
        let mut txns = Transactions {
            uid: uid.to_string(),
            prefix: prefix.to_string(),
            subtask,
            default_topic: default_topic.map(str::to_string),
            marker_topic: marker_topic.to_string(),
            marker: marker_consumer(settings, &marker_group(prefix, subtask))?,
            base: settings.properties.clone(),
            free: Vec::new(),
            slots: 0,
            current: None,
            pending: Vec::new(),
        };
        // Fence every id of the streams this subtask owns: lingering transactions of
        // the failed attempt are aborted (or, if their commit had begun, completed).
        let mut slots_of: BTreeMap<u32, u32> = BTreeMap::new();
        slots_of.insert(subtask, MIN_SLOTS);
        for s in &streams {
            if s.stream % parallelism == subtask {
                // One more than the snapshot saw: the transaction begun after its barrier
                // may have needed a new slot.
                let e = slots_of.entry(s.stream).or_insert(MIN_SLOTS);
                *e = (*e).max(s.slots + 1).min(MAX_SLOTS);
            }
        }
        for p in &restored {
            if p.stream % parallelism == subtask {
                slots_of.entry(p.stream).or_insert(MIN_SLOTS);
            }
        }
        // In parallel: fencing an id whose transaction is still open waits for the
        // broker to abort it.
        let wanted: Vec<(u32, u32)> = slots_of
            .iter()
            .flat_map(|(&stream, &slots)| (0..slots).map(move |slot| (stream, slot)))
            .collect();
        let made: Vec<Result<Slot, KafkaConnectorError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = wanted
                .iter()
                .map(|&(stream, slot)| {
                    let t = &txns;
                    scope.spawn(move || t.new_slot(settings, stream, slot))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(KafkaConnectorError::Config {
                            what: "fencing a transactional id panicked".into(),
                            fix: "this is a bug in the Kafka sink".into(),
                        })
                    })
                })
                .collect()
        });
        for ((stream, _), slot) in wanted.iter().zip(made) {
            let slot = slot?;
            if *stream == subtask {
                txns.free.push(slot);
            }
        }
        txns.slots = slots_of.get(&subtask).copied().unwrap_or(MIN_SLOTS);
        txns.free.reverse();
        // Commit (or find committed) what the restored checkpoint pre-committed.
        restored.retain(|p| p.stream % parallelism == subtask);
        restored.sort_by_key(|p| (p.checkpoint, p.stream));
        let own_last = restored
            .iter()
            .filter(|p| p.stream == subtask)
            .map(|p| p.checkpoint)
            .max()
            .unwrap_or(0);
        for p in restored {
            let committed = txns.marker_of(settings, p.stream)?;
            if committed.is_some_and(|m| m >= p.checkpoint) {
                continue;
            }
            txns.write_again(settings, p.stream, p.checkpoint, &p.records)?;
        }
        txns.rebase_marker(settings, own_last)?;
        Ok(txns)
    }

    /// Set this subtask's marker to `last`, the newest restored checkpoint whose
    /// transaction is now committed (0: none). Checkpoint ids count on from the restored
    /// snapshot, not from the marker: a job started afresh, or restored from an older
    /// savepoint, numbers its checkpoints again from below a marker an earlier run left,
    /// and a pending transaction of its own would then look committed when it is not.
    /// After this, the marker says something only about this run's checkpoints, and a
    /// second restore of the same snapshot still finds its transactions committed.
    fn rebase_marker(&mut self, settings: &ClientSettings, last: u64) -> Result<(), KafkaConnectorError> {
        if self.marker_of(settings, self.subtask)? == Some(last) {
            return Ok(());
        }
        self.write_again(settings, self.subtask, last, &[])
    }

    /// A producer for `<prefix>-<stream>-<slot>`, initialised (which fences the id).
    fn new_slot(&self, settings: &ClientSettings, stream: u32, slot: u32) -> Result<Slot, KafkaConnectorError> {
        let id = transactional_id(&self.prefix, stream, slot);
        let mut s = settings.clone();
        s.properties = self.base.clone();
        let config = s.client_config(
            &[
                ("client.id", format!("cairn-{}-{}", self.uid, self.subtask)),
                ("linger.ms", "5".into()),
            ],
            &[("transactional.id", id.clone()), ("enable.idempotence", "true".into())],
        )?;
        let producer: BaseProducer<Context> = config
            .create_with_context(Context::default())
            .map_err(|e| settings.error(format!("creating the transactional producer '{id}'"), e))?;
        producer
            .init_transactions(settings.timeout)
            .map_err(|e| settings.error(format!("initialising transactions of transactional.id '{id}'"), e))?;
        Ok(Slot { slot, id, producer })
    }

    /// The last checkpoint committed by stream `stream` (its marker), if any.
    fn marker_of(&self, settings: &ClientSettings, stream: u32) -> Result<Option<u64>, KafkaConnectorError> {
        let group = marker_group(&self.prefix, stream);
        let consumer = marker_consumer(settings, &group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.marker_topic, 0);
        let got = consumer
            .committed_offsets(tpl, settings.timeout)
            .map_err(|e| settings.error(format!("reading the transaction marker of consumer group '{group}'"), e))?;
        Ok(match got.find_partition(&self.marker_topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
            _ => None,
        })
    }

    /// Commit `records` of stream `stream`'s checkpoint `checkpoint` in a new transaction.
    fn write_again(
        &mut self,
        settings: &ClientSettings,
        stream: u32,
        checkpoint: u64,
        records: &[WalRecord],
    ) -> Result<(), KafkaConnectorError> {
        let slot = self.take_slot(settings)?;
        let result = (|| {
            slot.producer
                .begin_transaction()
                .map_err(|e| settings.error(format!("beginning a transaction of '{}'", slot.id), e))?;
            for r in records {
                send(&slot.producer, settings, self.default_topic.as_deref(), r)?;
            }
            self.add_marker(settings, &slot, stream, checkpoint)?;
            flush(&slot.producer, settings, &self.uid)?;
            slot.producer
                .commit_transaction(settings.timeout)
                .map_err(|e| settings.error(format!("committing the transaction of '{}'", slot.id), e))
        })();
        self.free.push(slot);
        result
    }

    fn add_marker(
        &self,
        settings: &ClientSettings,
        slot: &Slot,
        stream: u32,
        checkpoint: u64,
    ) -> Result<(), KafkaConnectorError> {
        let group = marker_group(&self.prefix, stream);
        let consumer;
        let cgm = if stream == self.subtask {
            self.marker.group_metadata()
        } else {
            consumer = marker_consumer(settings, &group)?;
            consumer.group_metadata()
        }
        .ok_or_else(|| KafkaConnectorError::Config {
            what: format!("no group metadata for consumer group '{group}'"),
            fix: "this is a bug in the Kafka sink".into(),
        })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.marker_topic, 0, Offset::Offset(checkpoint as i64))
            .map_err(|e| settings.error("recording the transaction marker", e))?;
        slot.producer
            .send_offsets_to_transaction(&tpl, &cgm, settings.timeout)
            .map_err(|e| {
                settings.error(
                    format!(
                        "recording checkpoint {checkpoint} in consumer group '{group}' (topic '{}') within the transaction of '{}'",
                        self.marker_topic, slot.id
                    ),
                    e,
                )
            })
    }

    fn take_slot(&mut self, settings: &ClientSettings) -> Result<Slot, KafkaConnectorError> {
        if let Some(s) = self.free.pop() {
            return Ok(s);
        }
        if self.slots >= MAX_SLOTS {
            return Err(KafkaConnectorError::Config {
                what: format!(
                    "kafka sink '{}': {MAX_SLOTS} transactions are pre-committed and waiting for their checkpoints to complete",
                    self.uid
                ),
                fix: "checkpoints keep failing; see why in the checkpoint statistics".into(),
            });
        }
        let slot = self.slots;
        self.slots += 1;
        self.new_slot(settings, self.subtask, slot)
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn write(&mut self, settings: &ClientSettings, records: Vec<WalRecord>) -> Result<(), KafkaConnectorError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let slot = self.take_slot(settings)?;
            slot.producer
                .begin_transaction()
                .map_err(|e| settings.error(format!("beginning a transaction of '{}'", slot.id), e))?;
            self.current = Some((slot, Vec::new()));
        }
        let Some((slot, wal)) = self.current.as_mut() else {
            return Ok(());
        };
        for r in &records {
            send(&slot.producer, settings, self.default_topic.as_deref(), r)?;
        }
        slot.producer.poll(Duration::ZERO);
        check_health(&slot.producer, settings, &self.uid)?;
        wal.extend(records);
        Ok(())
    }

    /// The barrier of `checkpoint`: flush and mark the open transaction, and write every
    /// pending one into the state.
    pub fn pre_commit(
        &mut self,
        settings: &ClientSettings,
        ctx: &mut SinkContext<'_>,
        checkpoint: u64,
    ) -> Result<(), KafkaConnectorError> {
        if let Some((slot, records)) = self.current.take() {
            flush(&slot.producer, settings, &self.uid)?;
            self.add_marker(settings, &slot, self.subtask, checkpoint)?;
            self.pending.push(Pending {
                slot,
                checkpoint,
                records,
            });
        }
        let pending: Vec<PendingTxn> = self
            .pending
            .iter()
            .map(|p| PendingTxn {
                stream: self.subtask,
                transactional_id: p.slot.id.clone(),
                checkpoint: p.checkpoint,
                records: p.records.clone(),
            })
            .collect();
        ctx.state
            .set_list(PENDING_STATE, DistributionMode::Union, &pending)
            .map_err(state_error)?;
        ctx.state
            .set_list(
                STREAMS_STATE,
                DistributionMode::Union,
                &[StreamInfo {
                    stream: self.subtask,
                    slots: self.slots,
                }],
            )
            .map_err(state_error)?;
        Ok(())
    }

    /// Checkpoint `checkpoint` completed: commit the pending transactions up to it, in order.
    pub fn commit_up_to(&mut self, settings: &ClientSettings, checkpoint: u64) -> Result<(), KafkaConnectorError> {
        while self.pending.first().is_some_and(|p| p.checkpoint <= checkpoint) {
            let p = self.pending.remove(0);
            match p.slot.producer.commit_transaction(settings.timeout) {
                Ok(()) => self.free.push(p.slot),
                Err(e) => {
                    // The transaction is gone (aborted by the broker, or the producer was
                    // fenced): write it again from the state, on a fresh producer.
                    eprintln!(
                        "kafka sink '{}': committing the transaction of '{}' (checkpoint {}) failed: {e}; writing its {} records again",
                        self.uid,
                        p.slot.id,
                        p.checkpoint,
                        p.records.len()
                    );
                    let slot_no = p.slot.slot;
                    drop(p.slot);
                    let fresh = self.new_slot(settings, self.subtask, slot_no)?;
                    self.free.push(fresh);
                    self.write_again(settings, self.subtask, p.checkpoint, &p.records)?;
                }
            }
        }
        Ok(())
    }

    /// Without checkpoints: commit what was written (end of input).
    pub fn commit_current(&mut self, settings: &ClientSettings) -> Result<(), KafkaConnectorError> {
        if let Some((slot, _)) = self.current.take() {
            flush(&slot.producer, settings, &self.uid)?;
            slot.producer
                .commit_transaction(settings.timeout)
                .map_err(|e| settings.error(format!("committing the transaction of '{}'", slot.id), e))?;
            self.free.push(slot);
        }
        Ok(())
    }

    /// Abort the open transaction (its records will be written again after a restore);
    /// pre-committed ones stay for the next attempt to commit.
    pub fn close(self) {
        if let Some((slot, _)) = self.current {
            let _ = slot.producer.abort_transaction(Duration::from_secs(5));
        }
    }
}

fn marker_consumer(settings: &ClientSettings, group: &str) -> Result<BaseConsumer<Context>, KafkaConnectorError> {
    let mut s = settings.clone();
    s.properties.remove("transactional.id");
    let config = s.client_config(
        &[],
        &[
            ("group.id", group.to_string()),
            ("enable.auto.commit", "false".into()),
            ("isolation.level", "read_committed".into()),
        ],
    );
    // The user's group.id belongs to no consumer here: replace it rather than conflict.
    let config = match config {
        Ok(c) => c,
        Err(_) => {
            s.properties.remove("group.id");
            s.properties.remove("isolation.level");
            s.client_config(
                &[],
                &[
                    ("group.id", group.to_string()),
                    ("enable.auto.commit", "false".into()),
                    ("isolation.level", "read_committed".into()),
                ],
            )?
        }
    };
    config
        .create_with_context(Context::default())
        .map_err(|e| settings.error(format!("creating the marker consumer of group '{group}'"), e))
}

fn state_error(e: cairn_state::StateError) -> KafkaConnectorError {
    KafkaConnectorError::Config {
        what: format!("the Kafka sink's state cannot be read or written: {e}"),
        fix: "restore a snapshot written by this sink".into(),
    }
}
