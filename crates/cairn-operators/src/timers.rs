//! Per-key timers in event time and processing time. Timers are de-duplicated
//! per (time, key, namespace), fire in time order, and are kept in the keyed
//! state backend too (as internal states) so they are snapshotted by key group
//! and survive rescaling like any other keyed state.

use std::collections::BTreeSet;

use cairn_state::codec::{get_bytes, put_bytes};
use cairn_state::{KeyedStateAccess, StateError, StateId, StateKind, StateMeta};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// One timer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub timestamp: i64,
    pub key: Vec<u8>,
    pub namespace: Vec<u8>,
    pub key_group: u32,
}

impl Timer {
    /// A timer of the access's current key.
    fn of_current_key(access: &KeyedStateAccess, timestamp: i64, namespace: &[u8]) -> Self {
        Timer {
            timestamp,
            key: access.current_key_bytes().to_vec(),
            namespace: namespace.to_vec(),
            key_group: access.current_key_group(),
        }
    }
}

/// Name of the internal state holding event-time timers.
pub const EVENT_TIMERS_STATE: &str = "_timers/event";
/// Name of the internal state holding processing-time timers.
pub const PROCESSING_TIMERS_STATE: &str = "_timers/processing";

/// The timers of one keyed operator subtask.
pub struct TimerService {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
    event_state: StateId,
    processing_state: StateId,
    buf: Vec<u8>,
}

fn timer_meta(name: &str) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind: StateKind::Value,
        value_type: "timer".into(),
        ttl: None,
    }
}

/// Backend key of a timer: order-preserving timestamp, then key and namespace.
fn encode(t: &Timer, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&((t.timestamp as u64) ^ (1 << 63)).to_be_bytes());
    put_bytes(buf, &t.key);
    buf.extend_from_slice(&t.namespace);
}

fn decode(kg: u32, bytes: &[u8]) -> Option<Timer> {
    let ts = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let (key, ns) = get_bytes(&bytes[8..])?;
    Some(Timer {
        timestamp: ts as i64,
        key: key.to_vec(),
        namespace: ns.to_vec(),
        key_group: kg,
    })
}

impl TimerService {
    /// Register the timer states and load any restored timers.
    pub fn open(access: &mut KeyedStateAccess) -> Result<Self, StateError> {
        let backend = access.backend_mut();
        let event_state = backend.register(&timer_meta(EVENT_TIMERS_STATE))?;
        let processing_state = backend.register(&timer_meta(PROCESSING_TIMERS_STATE))?;
        let mut svc = TimerService {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            event_state,
            processing_state,
            buf: Vec::new(),
        };
        let mut bad = 0usize;
        for (state, set) in [(event_state, &mut svc.event), (processing_state, &mut svc.processing)] {
            backend.for_each_key(state, &mut |kg, k| match decode(kg, k) {
                Some(t) => {
                    set.insert(t);
                }
                None => bad += 1,
            })?;
        }
        if bad > 0 {
            return Err(StateError::Restore(format!("{bad} restored timers are corrupt")));
        }
        Ok(svc)
    }

    fn parts(&mut self, domain: TimeDomain) -> (&mut BTreeSet<Timer>, StateId, &mut Vec<u8>) {
        match domain {
            TimeDomain::EventTime => (&mut self.event, self.event_state, &mut self.buf),
            TimeDomain::ProcessingTime => (&mut self.processing, self.processing_state, &mut self.buf),
        }
    }

    /// Register a timer for the access's current key and `namespace`.
    pub fn register(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &[u8],
    ) -> Result<(), StateError> {
        let t = Timer::of_current_key(access, timestamp, namespace);
        let (set, state, buf) = self.parts(domain);
        if set.contains(&t) {
            return Ok(());
        }
        encode(&t, buf);
        access.backend_mut().put(state, t.key_group, buf, &[])?;
        set.insert(t);
        Ok(())
    }

    /// Delete a timer of the current key (no-op when absent).
    pub fn delete(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        timestamp: i64,
        namespace: &[u8],
    ) -> Result<(), StateError> {
        let t = Timer::of_current_key(access, timestamp, namespace);
        let (set, state, buf) = self.parts(domain);
        if set.remove(&t) {
            encode(&t, buf);
            access.backend_mut().remove(state, t.key_group, buf)?;
        }
        Ok(())
    }

    /// Remove and return the earliest timer due at `time`, if any.
    pub fn pop_due(
        &mut self,
        access: &mut KeyedStateAccess,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Option<Timer>, StateError> {
        let (set, state, buf) = self.parts(domain);
        match set.first() {
            Some(t) if t.timestamp <= time => {
                let t = set.pop_first().expect("first exists");
                encode(&t, buf);
                access.backend_mut().remove(state, t.key_group, buf)?;
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    /// The earliest processing-time timer.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing.first().map(|t| t.timestamp)
    }

    /// Number of pending timers in a domain.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len(),
            TimeDomain::ProcessingTime => self.processing.len(),
        }
    }
}
