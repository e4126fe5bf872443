//! The one core every keyed operator runs on: the subtask's keyed state with
//! its current key, the timers, the outputs, the operator's event time and
//! operator state. Keyed process functions, keyed two-input operators and
//! windows differ only in what they do with a record or a fired timer.

use cairn_state::keygroup::{key_bytes, key_group_for_bytes};
use cairn_state::{codec, KeyedStateAccess, OperatorStateStore, SnapshotRequest};

use crate::collector::{Outputs, SidePorts};
use crate::keyed::{Key, KeyedContext, KeyedOpenContext};
use crate::timers::{TimeDomain, Timer, TimerService, TimerSettings};
use cairn_runtime::error::OpResult;
use cairn_runtime::operator::{Emitter, OpenContext, OperatorSnapshot, SubtaskInfo};
#[cfg(doc)]
use cairn_runtime::record::BatchKeys;

/// What a keyed operator holds once open.
pub(crate) struct KeyedCore<O> {
    pub info: SubtaskInfo,
    pub state: KeyedStateAccess,
    pub timers: TimerService,
    pub out: Outputs<O>,
    /// The operator's event time (the minimum over its inputs).
    pub watermark: i64,
    /// Operator state (broadcast state of keyed broadcast operators).
    pub operator_state: OperatorStateStore,
    key_buf: Vec<u8>,
    /// Keys staged by [`KeyedCore::stage_key`]: their bytes, back to back.
    staged_bytes: Vec<u8>,
    /// (end offset in `staged_bytes`, key group) per staged key.
    staged: Vec<(usize, u32)>,
}

impl<O: Send + 'static> KeyedCore<O> {
    /// Take the keyed state out of `ctx` and open the timers; `not_keyed`
    /// says, for an operator that got no keyed state, what the user must do.
    pub fn open(
        mut ctx: OpenContext,
        side_ports: &SidePorts,
        not_keyed: impl FnOnce(&str) -> String,
    ) -> OpResult<Self> {
        let mut state = ctx.keyed.take().ok_or_else(|| not_keyed(&ctx.info.operator_name))?;
        let timers = TimerService::open(&mut state, TimerSettings::from_config(&ctx.config))?;
        Ok(KeyedCore {
            info: ctx.info,
            state,
            timers,
            out: Outputs::new(side_ports),
            watermark: i64::MIN,
            operator_state: ctx.operator_state,
            key_buf: Vec::with_capacity(32),
            staged_bytes: Vec::with_capacity(1024),
            staged: Vec::with_capacity(64),
        })
    }

    /// The context a user function registers its keyed state in.
    pub fn open_context(&mut self) -> KeyedOpenContext<'_> {
        KeyedOpenContext {
            info: &self.info,
            state: &mut self.state,
        }
    }

    /// A batch starts: TTL decisions use processing time now.
    pub fn begin_batch(&mut self) {
        self.state
            .set_processing_time(self.info.processing_time().max(0) as u64);
    }

    /// Make `key` the current key of keyed state and timers.
    pub fn set_key<K: Key>(&mut self, key: &K) -> OpResult {
        key_bytes(key, &mut self.key_buf)?;
        let kg = key_group_for_bytes(&self.key_buf, self.info.max_parallelism);
        self.state.set_current_key(&self.key_buf, kg);
        Ok(())
    }

    /// Encode and hash `key` ahead of its record and let the backend fetch
    /// its state (see [`KeyedStateAccess::prefetch`]); records staged
    /// together have their cache misses overlap. Then
    /// [`KeyedCore::set_staged_key`] makes each the current key in order.
    #[inline]
    pub fn stage_key<K: Key>(&mut self, key: &K) -> OpResult {
        let start = self.staged_bytes.len();
        key_bytes(key, &mut self.key_buf)?;
        self.staged_bytes.extend_from_slice(&self.key_buf);
        let kg = key_group_for_bytes(&self.key_buf, self.info.max_parallelism);
        self.state.prefetch(&self.staged_bytes[start..], kg);
        self.staged.push((self.staged_bytes.len(), kg));
        Ok(())
    }

    /// Make `key` current from the encoded key and key group its sender
    /// computed ([`BatchKeys`]), without encoding and hashing it again.
    pub fn set_carried_key<K: Key>(&mut self, key: &K, bytes: &[u8], key_group: u32) -> OpResult {
        self.check_carried(key, bytes, key_group)?;
        self.state.set_current_key(bytes, key_group);
        Ok(())
    }

    /// [`KeyedCore::stage_key`] from the encoded key and key group its
    /// sender computed ([`BatchKeys`]).
    #[inline]
    pub fn stage_carried_key<K: Key>(&mut self, key: &K, bytes: &[u8], key_group: u32) -> OpResult {
        self.check_carried(key, bytes, key_group)?;
        self.state.prefetch(bytes, key_group);
        self.staged_bytes.extend_from_slice(bytes);
        self.staged.push((self.staged_bytes.len(), key_group));
        Ok(())
    }

    /// Debug builds (every test) check that a carried key is the record's
    /// own: a wiring mistake would otherwise file state under wrong keys.
    #[inline]
    fn check_carried<K: Key>(&mut self, key: &K, bytes: &[u8], key_group: u32) -> OpResult {
        if cfg!(debug_assertions) {
            key_bytes(key, &mut self.key_buf)?;
            let own = key_group_for_bytes(&self.key_buf, self.info.max_parallelism);
            if self.key_buf != bytes || own != key_group {
                return Err(format!(
                    "operator '{}' got a record whose carried key is not its own (this is a Cairn bug)",
                    self.info.operator_name
                )
                .into());
            }
        }
        Ok(())
    }

    /// Make the `i`-th staged key current (what [`KeyedCore::set_key`] does).
    #[inline]
    pub fn set_staged_key(&mut self, i: usize) {
        let start = if i == 0 { 0 } else { self.staged[i - 1].0 };
        let (end, kg) = self.staged[i];
        self.state.set_current_key(&self.staged_bytes[start..end], kg);
    }

    /// Forget the staged keys.
    #[inline]
    pub fn clear_staged(&mut self) {
        self.staged_bytes.clear();
        self.staged.clear();
    }

    /// The context of one record of the current key.
    pub fn context<'a, K>(&'a mut self, key: &'a K, timestamp: i64) -> KeyedContext<'a, K, O> {
        self.context_and_operator_state(key, timestamp).0
    }

    /// [`KeyedCore::context`] plus read access to the operator state
    /// (keyed broadcast operators read broadcast state beside keyed state).
    pub fn context_and_operator_state<'a, K>(
        &'a mut self,
        key: &'a K,
        timestamp: i64,
    ) -> (KeyedContext<'a, K, O>, &'a OperatorStateStore) {
        let ctx = KeyedContext {
            key,
            state: &mut self.state,
            timers: &mut self.timers,
            out: &mut self.out,
            timestamp,
            watermark: self.watermark,
            domain: None,
            info: &self.info,
        };
        (ctx, &self.operator_state)
    }

    /// The next due timer of `domain` at `time`, made the current key.
    pub fn pop_due(&mut self, domain: TimeDomain, time: i64) -> OpResult<Option<Timer>> {
        let Some(t) = self.timers.pop_due(&mut self.state, domain, time)? else {
            return Ok(None);
        };
        self.state.set_current_key(&t.key, t.key_group);
        Ok(Some(t))
    }

    /// Fire every due timer of `domain`, calling `on_timer` with the timer's
    /// timestamp, its key's context and the operator state.
    pub fn fire<K: Key>(
        &mut self,
        domain: TimeDomain,
        time: i64,
        mut on_timer: impl FnMut(i64, KeyedContext<'_, K, O>, &OperatorStateStore) -> OpResult,
    ) -> OpResult {
        self.begin_batch();
        while let Some(t) = self.pop_due(domain, time)? {
            let key: K = codec::decode_key("timer key", &t.key)?;
            let ctx = KeyedContext {
                key: &key,
                state: &mut self.state,
                timers: &mut self.timers,
                out: &mut self.out,
                timestamp: t.timestamp,
                watermark: self.watermark,
                domain: Some(domain),
                info: &self.info,
            };
            on_timer(t.timestamp, ctx, &self.operator_state)?;
        }
        Ok(())
    }

    /// Hand what the operator emitted to the task.
    pub fn flush(&mut self, out: &mut Emitter) {
        self.out.flush(out);
    }

    /// The earliest pending processing-time timer.
    pub fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing_time()
    }

    /// The synchronous part of a snapshot: keyed state (timers included) and
    /// operator state.
    pub fn snapshot(&mut self, request: &SnapshotRequest) -> OpResult<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            keyed: Some(self.state.backend_mut().snapshot(request)?),
            operator_state: self.operator_state.to_entries(),
        })
    }

    /// Tell the backend a checkpoint completed (it may reuse its files).
    pub fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> OpResult {
        Ok(self.state.backend_mut().notify_checkpoint_complete(checkpoint_id)?)
    }

    /// Tell the backend a checkpoint was aborted.
    pub fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> OpResult {
        Ok(self.state.backend_mut().notify_checkpoint_aborted(checkpoint_id)?)
    }
}
