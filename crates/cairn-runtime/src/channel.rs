//! Channels between tasks, behind a transport seam. One channel connects one
//! sending subtask to one receiving subtask of an edge and has three lanes:
//!
//! - the **data lane** carries the in-order messages (records, watermarks,
//!   idleness, in-band barriers, end of input);
//! - the **credit lane** (receiver to sender) carries grants: the sender
//!   sends a data message only with a credit, so it never blocks in a send,
//!   and the receiver decides how much may be in flight (initially the
//!   channel capacity; less with buffer debloating, which can also ask for
//!   smaller batches). This is credit-based flow control: backpressure is
//!   the absence of credits;
//! - the receiving task's **priority lane** (one per receiving task, shared
//!   by its input channels) carries events that overtake data: a barrier's
//!   announcement with its sequence number.
//!
//! Sequence numbers make the lanes independent of each other's timing: the
//! sender counts data messages per channel (the announcement of a barrier
//! says "the barrier is data message number `seq`"), the receiver counts
//! what it read, so it knows exactly which messages precede a barrier even
//! when the announcement and the data arrive in any order.
//!
//! [`LocalTransport`] connects tasks of one process with crossbeam channels.
//! A remote transport gives the tasks the same endpoint types (crossbeam
//! channels the task can select on) fed by its own network threads, which
//! encode records with the edge's [`BatchCodec`] and carry the lanes over
//! the wire; the credit and sequence rules above stay as they are.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError, TrySendError};

use crate::codec::BatchCodec;
use crate::error::{BoxError, Cancelled, OpResult};
use crate::record::{Barrier, Message};

/// A grant on a channel's credit lane: more credits, and the largest batch
/// (in records) the receiver wants per message (0: no limit beyond
/// `cairn.runtime.batch-size`). Every grant carries the current batch limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub credits: u32,
    pub batch_records: u32,
}

/// An event on a receiving task's priority lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorityEvent {
    /// Barrier `barrier` is data message number `seq` (0-based) of input
    /// channel `channel` of the receiving task.
    Announce { channel: usize, barrier: Barrier, seq: u64 },
}

/// Which channel a transport is asked to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId {
    /// Index of the edge in the job graph.
    pub edge: usize,
    pub source_subtask: u32,
    pub target_subtask: u32,
}

/// Which receiving task a priority lane belongs to: (chain, subtask).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaneId {
    pub chain: usize,
    pub subtask: u32,
}

/// The sender's ends of one channel.
pub struct SenderEnds {
    pub data: Sender<Message>,
    pub credits: Receiver<Grant>,
    /// Credits the sender starts with.
    pub initial_credits: u32,
}

/// The receiver's ends of one channel.
pub struct ReceiverEnds {
    pub data: Receiver<Message>,
    pub credits: Sender<Grant>,
    /// The most messages that can ever be in flight.
    pub capacity: u32,
    /// Credits the sender starts with.
    pub initial_credits: u32,
}

/// Connects tasks. Implementations decide where the lanes run (threads of
/// one process, or sockets between hosts); tasks see only the endpoints.
pub trait Transport: Send + Sync {
    /// Connect channel `id` for at most `capacity` messages in flight,
    /// starting with `initial_credits`; `codec` encodes the edge's records
    /// for transports that leave the process.
    fn channel(
        &self,
        id: ChannelId,
        capacity: u32,
        initial_credits: u32,
        codec: &Arc<dyn BatchCodec>,
    ) -> (SenderEnds, ReceiverEnds);
    /// The priority lane of receiving task `lane`.
    fn priority_lane(&self, lane: LaneId) -> (Sender<PriorityEvent>, Receiver<PriorityEvent>);
}

/// Channels between tasks of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalTransport;

impl Transport for LocalTransport {
    fn channel(
        &self,
        _id: ChannelId,
        capacity: u32,
        initial_credits: u32,
        _codec: &Arc<dyn BatchCodec>,
    ) -> (SenderEnds, ReceiverEnds) {
        let capacity = capacity.max(1);
        let initial_credits = initial_credits.clamp(1, capacity);
        // Credits keep the data lane within `capacity`; the bound is a safety net.
        let (data_tx, data_rx) = bounded(capacity as usize);
        let (credit_tx, credit_rx) = unbounded();
        (
            SenderEnds {
                data: data_tx,
                credits: credit_rx,
                initial_credits,
            },
            ReceiverEnds {
                data: data_rx,
                credits: credit_tx,
                capacity,
                initial_credits,
            },
        )
    }

    fn priority_lane(&self, _lane: LaneId) -> (Sender<PriorityEvent>, Receiver<PriorityEvent>) {
        unbounded()
    }
}

/// The sending side of one channel as an output port uses it: messages are
/// queued, never blocking, and leave as credits allow.
pub struct OutputChannel {
    data: Sender<Message>,
    credit_lane: Receiver<Grant>,
    priority: Sender<PriorityEvent>,
    /// This channel's index among the receiving task's input channels.
    index: usize,
    credits: u32,
    /// The receiver's largest wanted batch (records), if it limits them.
    batch_limit: Option<u32>,
    /// Data messages sent so far.
    sent: u64,
    /// Messages waiting for credits, in order.
    pending: VecDeque<Message>,
}

impl OutputChannel {
    /// The output side of a channel that is input channel `index` of the
    /// receiving task, whose priority lane is `priority`.
    pub fn new(ends: SenderEnds, priority: Sender<PriorityEvent>, index: usize) -> Self {
        OutputChannel {
            data: ends.data,
            credit_lane: ends.credits,
            priority,
            index,
            credits: ends.initial_credits,
            batch_limit: None,
            sent: 0,
            pending: VecDeque::new(),
        }
    }

    /// Queue `msg`; it is sent at once when a credit is there.
    pub fn enqueue(&mut self, msg: Message) -> OpResult {
        if self.pending.is_empty() {
            if self.credits == 0 {
                self.take_credits()?;
            }
            if self.credits > 0 {
                return match self.try_send(msg)? {
                    None => Ok(()),
                    Some(back) => {
                        self.pending.push_back(back);
                        Ok(())
                    }
                };
            }
        }
        self.pending.push_back(msg);
        Ok(())
    }

    /// Announce `barrier` on the receiver's priority lane, then queue it in
    /// line behind every message queued before it.
    pub fn emit_barrier(&mut self, barrier: Barrier) -> OpResult {
        let seq = self.sent + self.pending.len() as u64;
        // A receiver that is gone has read everything it ever will.
        let _ = self.priority.send(PriorityEvent::Announce {
            channel: self.index,
            barrier,
            seq,
        });
        self.enqueue(Message::Barrier(barrier))
    }

    /// Take granted credits and send what is queued; returns whether
    /// messages are still waiting for credits.
    pub fn pump(&mut self) -> OpResult<bool> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        self.take_credits()?;
        while self.credits > 0 {
            let Some(msg) = self.pending.pop_front() else { break };
            if let Some(back) = self.try_send(msg)? {
                self.pending.push_front(back);
                break;
            }
        }
        if !self.pending.is_empty() && self.credits == 0 {
            // The receiver may have granted while we sent.
            self.take_credits()?;
            if self.credits > 0 {
                return self.pump();
            }
        }
        Ok(!self.pending.is_empty())
    }

    /// Messages waiting for credits.
    pub fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// Data messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The largest batch (records) the receiver wants per message, when it
    /// limits them (buffer debloating behind a slow receiver).
    pub fn batch_limit(&mut self) -> Option<u32> {
        // Credits are consumed by sending; a limit is taken as soon as it is granted.
        let _ = self.take_credits();
        self.batch_limit
    }

    /// The lane credits arrive on (to wait for them).
    pub fn credit_lane(&self) -> &Receiver<Grant> {
        &self.credit_lane
    }

    fn take_credits(&mut self) -> OpResult {
        loop {
            match self.credit_lane.try_recv() {
                Ok(g) => {
                    self.credits = self.credits.saturating_add(g.credits);
                    self.batch_limit = (g.batch_records > 0).then_some(g.batch_records);
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    // The receiver is gone: nothing queued will ever be read.
                    return if self.pending.is_empty() && self.credits > 0 {
                        Ok(())
                    } else {
                        Err(Box::new(Cancelled) as BoxError)
                    };
                }
            }
        }
    }

    /// Send with a credit; gives the message back when the lane is full
    /// (only if a transport grants more than it buffers).
    fn try_send(&mut self, msg: Message) -> OpResult<Option<Message>> {
        match self.data.try_send(msg) {
            Ok(()) => {
                self.credits -= 1;
                self.sent += 1;
                Ok(None)
            }
            Err(TrySendError::Full(m)) => {
                self.credits = 0;
                Ok(Some(m))
            }
            Err(TrySendError::Disconnected(_)) => Err(Box::new(Cancelled)),
        }
    }
}

/// The receiving side of one channel: reads count positions and grant
/// credits, keeping what is in flight plus what the task holds unprocessed
/// (read ahead, restored, the rest of a sliced batch) at `target`, so
/// memory stays bounded by the capacity even while an unaligned checkpoint
/// reads ahead.
pub struct InputChannel {
    data: Receiver<Message>,
    credit_lane: Sender<Grant>,
    capacity: u32,
    /// The largest batch (records) asked of the sender; 0: no limit.
    batch_records: u32,
    /// Credits the sender holds plus messages in the data lane.
    outstanding: u32,
    /// How many messages may be in flight (debloating lowers it).
    target: u32,
    /// Messages of this channel the task holds unprocessed.
    held: u32,
    /// Credits kept outstanding however much is held: 1 while a capture
    /// still needs messages in front of its barrier (they must be able to
    /// come), else 0.
    floor: u32,
    /// Data messages read so far.
    read: u64,
}

/// The sender of a channel is gone without ending its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderGone;

impl InputChannel {
    /// The receiving side of a channel.
    pub fn new(ends: ReceiverEnds) -> Self {
        InputChannel {
            data: ends.data,
            credit_lane: ends.credits,
            capacity: ends.capacity,
            batch_records: 0,
            outstanding: ends.initial_credits,
            target: ends.initial_credits,
            held: 0,
            floor: 0,
            read: 0,
        }
    }

    /// Read the next data message if one is there, granting its credit back
    /// (or fewer, while debloating shrinks what is in flight). `keep`: the
    /// task holds the message unprocessed (read ahead), so it counts as held
    /// until [`InputChannel::release`]; barriers are never held.
    pub fn try_read(&mut self, keep: bool) -> Result<Option<Message>, SenderGone> {
        match self.data.try_recv() {
            Ok(msg) => {
                self.read += 1;
                self.outstanding = self.outstanding.saturating_sub(1);
                if keep && !matches!(msg, Message::Barrier(_)) {
                    self.held += 1;
                }
                self.grant_up_to_target();
                Ok(Some(msg))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(SenderGone),
        }
    }

    /// The task holds one more message of this channel unprocessed.
    pub fn hold(&mut self) {
        self.held += 1;
    }

    /// The task processed (or dropped) a message it held.
    pub fn release(&mut self) {
        self.held = self.held.saturating_sub(1);
        self.grant_up_to_target();
    }

    /// Keep at least `floor` credits outstanding whatever is held.
    pub fn set_floor(&mut self, floor: u32) {
        if self.floor != floor {
            self.floor = floor;
            self.grant_up_to_target();
        }
    }

    /// Let `target` messages be in flight (clamped to 1..=capacity).
    pub fn set_target(&mut self, target: u32) {
        self.target = target.clamp(1, self.capacity);
        self.grant_up_to_target();
    }

    /// Ask the sender for batches of at most `records` (`None`: no limit);
    /// told at once, with no credit if none is due.
    pub fn set_batch_limit(&mut self, records: Option<u32>) {
        let records = records.map_or(0, |r| r.max(1));
        if records != self.batch_records {
            self.batch_records = records;
            if !self.grant_up_to_target() {
                let _ = self.credit_lane.send(Grant {
                    credits: 0,
                    batch_records: records,
                });
            }
        }
    }

    /// The batch limit asked of the sender, if any.
    pub fn batch_limit(&self) -> Option<u32> {
        (self.batch_records > 0).then_some(self.batch_records)
    }

    /// Grant what keeps in flight plus held at the target; whether a grant was sent.
    fn grant_up_to_target(&mut self) -> bool {
        let target = self.target.saturating_sub(self.held).max(self.floor);
        if self.outstanding < target {
            let credits = target - self.outstanding;
            // A sender that is gone needs no credits.
            if self
                .credit_lane
                .send(Grant {
                    credits,
                    batch_records: self.batch_records,
                })
                .is_ok()
            {
                self.outstanding = target;
                return true;
            }
        }
        false
    }

    /// Data messages read so far.
    pub fn read_count(&self) -> u64 {
        self.read
    }

    /// The most messages the sender may ever have in flight.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Messages the sender may have in flight now.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The data lane (to wait for messages).
    pub fn data_lane(&self) -> &Receiver<Message> {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SnapshotType;

    fn pair(capacity: u32) -> (OutputChannel, InputChannel, Receiver<PriorityEvent>) {
        let codec = crate::codec::batch_codec::<u64>();
        let t = LocalTransport;
        let (s, r) = t.channel(
            ChannelId {
                edge: 0,
                source_subtask: 0,
                target_subtask: 0,
            },
            capacity,
            capacity,
            &codec,
        );
        let (ptx, prx) = t.priority_lane(LaneId { chain: 0, subtask: 0 });
        (OutputChannel::new(s, ptx, 3), InputChannel::new(r), prx)
    }

    fn wm(n: i64) -> Message {
        Message::Watermark(n)
    }

    fn watermark_of(m: Message) -> i64 {
        match m {
            Message::Watermark(n) => n,
            _ => panic!("expected a watermark"),
        }
    }

    #[test]
    fn a_sender_without_credits_queues_instead_of_blocking() {
        let (mut out, mut inp, _p) = pair(2);
        for i in 0..5 {
            out.enqueue(wm(i)).unwrap();
        }
        assert_eq!(out.sent(), 2, "two credits, two messages sent");
        assert_eq!(out.backlog(), 3);
        assert!(out.pump().unwrap(), "no credits came back yet");
        assert_eq!(watermark_of(inp.try_read(false).unwrap().unwrap()), 0);
        assert!(out.pump().unwrap());
        assert_eq!(out.sent(), 3, "one read, one credit, one more sent");
        let mut got = vec![];
        while got.len() < 4 {
            if let Some(m) = inp.try_read(false).unwrap() {
                got.push(watermark_of(m));
            }
            out.pump().unwrap();
        }
        assert_eq!(got, vec![1, 2, 3, 4], "order is kept through the queue");
        assert_eq!(out.backlog(), 0);
        assert_eq!(inp.read_count(), 5);
    }

    #[test]
    fn an_announcement_names_the_barrier_position_counting_queued_messages() {
        let (mut out, mut inp, prio) = pair(1);
        out.enqueue(wm(0)).unwrap();
        out.enqueue(wm(1)).unwrap();
        let b = Barrier {
            checkpoint_id: 9,
            timestamp_ms: 0,
            snapshot_type: SnapshotType::Checkpoint,
        };
        out.emit_barrier(b).unwrap();
        assert_eq!(
            prio.try_recv().unwrap(),
            PriorityEvent::Announce {
                channel: 3,
                barrier: b,
                seq: 2
            },
            "announced at once although one message is still queued"
        );
        let mut n = 0;
        loop {
            out.pump().unwrap();
            match inp.try_read(false).unwrap() {
                Some(Message::Barrier(got)) => {
                    assert_eq!((got, inp.read_count() - 1), (b, 2));
                    break;
                }
                Some(_) => n += 1,
                None => {}
            }
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn debloating_withholds_credits_and_raising_the_target_grants_at_once() {
        let (mut out, mut inp, _p) = pair(4);
        inp.set_target(1);
        for i in 0..8 {
            out.enqueue(wm(i)).unwrap();
        }
        assert_eq!(
            out.sent(),
            4,
            "the first four credits were given before the target dropped"
        );
        for _ in 0..4 {
            inp.try_read(false).unwrap().unwrap();
            out.pump().unwrap();
        }
        // Outstanding credits fell to the target of 1: one message in flight.
        assert_eq!(out.sent(), 5);
        inp.try_read(false).unwrap().unwrap();
        out.pump().unwrap();
        assert_eq!(out.sent(), 6, "one in flight at a time");
        inp.set_target(4);
        out.pump().unwrap();
        assert_eq!(out.sent(), 8, "a higher target grants the difference immediately");
    }

    #[test]
    fn held_messages_count_against_the_credits_and_a_floor_keeps_one_coming() {
        let (mut out, mut inp, _p) = pair(4);
        for i in 0..12 {
            out.enqueue(wm(i)).unwrap();
        }
        // Read ahead (kept) four messages: no credit comes back for them.
        for _ in 0..4 {
            inp.try_read(true).unwrap().unwrap();
        }
        out.pump().unwrap();
        assert_eq!(out.sent(), 4, "four held: the channel is full");
        // A capture still needs messages in front of its barrier: one at a time.
        inp.set_floor(1);
        out.pump().unwrap();
        assert_eq!(out.sent(), 5);
        inp.try_read(true).unwrap().unwrap();
        out.pump().unwrap();
        assert_eq!(out.sent(), 6, "held five, still one credit");
        inp.set_floor(0);
        // Processing held messages gives their credits back, up to the target.
        for _ in 0..5 {
            inp.release();
        }
        out.pump().unwrap();
        assert_eq!(out.sent(), 9, "nothing held: four in flight again (one unread)");
    }

    #[test]
    fn a_batch_limit_reaches_the_sender_with_or_without_credits() {
        let (mut out, mut inp, _p) = pair(2);
        assert_eq!(out.batch_limit(), None);
        inp.set_batch_limit(Some(16));
        assert_eq!(out.batch_limit(), Some(16), "told at once, no credit due");
        assert_eq!(inp.batch_limit(), Some(16));
        out.enqueue(wm(0)).unwrap();
        inp.try_read(false).unwrap().unwrap();
        out.pump().unwrap();
        assert_eq!(out.batch_limit(), Some(16), "grants carry the limit");
        inp.set_batch_limit(None);
        assert_eq!(out.batch_limit(), None, "and its removal");
    }

    #[test]
    fn a_vanished_receiver_fails_a_sender_with_queued_messages() {
        let (mut out, inp, _p) = pair(1);
        out.enqueue(wm(0)).unwrap();
        out.enqueue(wm(1)).unwrap();
        drop(inp);
        assert!(out.pump().is_err());
    }

    /// Credits under concurrency: a sender and a receiver on two threads,
    /// with the receiver changing its target while messages flow. Nothing
    /// is lost, reordered or duplicated, and the pair never stalls.
    #[test]
    fn credits_keep_order_and_bound_under_concurrency() {
        for round in 0..20u32 {
            let capacity = 1 + round % 5;
            let (mut out, mut inp, _p) = pair(capacity);
            const N: i64 = 5_000;
            let sender = std::thread::spawn(move || {
                let mut next = 0;
                while next < N || out.backlog() > 0 {
                    if next < N && out.backlog() < 3 {
                        out.enqueue(wm(next)).unwrap();
                        next += 1;
                    } else if out.pump().unwrap() {
                        std::thread::yield_now();
                    }
                }
                out
            });
            let mut expect = 0;
            let mut reads = 0u64;
            while expect < N {
                match inp.try_read(false).unwrap() {
                    Some(m) => {
                        assert_eq!(watermark_of(m), expect, "round {round}");
                        expect += 1;
                        reads += 1;
                        if reads % 97 == 0 {
                            inp.set_target((reads / 97) as u32 % (capacity + 1));
                        }
                    }
                    None => std::thread::yield_now(),
                }
            }
            let out = sender.join().unwrap();
            assert_eq!(out.sent(), N as u64);
            assert!(inp.try_read(false).unwrap().is_none());
        }
    }
}
