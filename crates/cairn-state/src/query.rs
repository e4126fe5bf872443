//! Live state queries (Flink's Queryable State): which keyed states of a
//! subtask answer queries, and reading one key's current value as JSON.
//!
//! A query runs on the subtask's own thread between two batches (the task
//! serves its query mailbox there), so it sees the state as of a batch
//! boundary and never races the operator. It only reads: it does not make
//! the key current, does not restart TTL clocks and does not remove expired
//! entries (they are not shown), so a query never changes what the job
//! computes or what its next snapshot holds.

use serde::Serialize;
use serde_json::Value;

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{self, get_bytes};
use crate::descriptor::{StateKind, StateTtlConfig};
use crate::error::StateError;

/// A state a subtask answers queries for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueryableState {
    /// The name queries use (`queryable("name")`).
    pub name: String,
    /// The state's own (descriptor) name, as snapshots record it.
    pub state: String,
    pub kind: StateKind,
    /// The value type (`std::any::type_name`), for messages.
    pub value_type: String,
}

/// A queryable state as the subtask's state access holds it.
#[derive(Clone, Debug)]
pub(crate) struct QueryableSlot {
    pub info: QueryableState,
    pub id: StateId,
    pub ttl: Option<StateTtlConfig>,
}

/// Add `slot` to `slots`: a state registered again replaces itself; two
/// states under one queryable name are an error naming both.
pub(crate) fn add(slots: &mut Vec<QueryableSlot>, slot: QueryableSlot) -> Result<(), StateError> {
    if let Some(other) = slots
        .iter()
        .find(|s| s.info.name == slot.info.name && s.info.state != slot.info.state)
    {
        return Err(StateError::Usage(format!(
            "states '{}' and '{}' are both queryable as '{}'; give each its own queryable name",
            other.info.state, slot.info.state, slot.info.name
        )));
    }
    slots.retain(|s| s.info.state != slot.info.state);
    slots.push(slot);
    Ok(())
}

fn expired(raw: &[u8], ttl: Option<StateTtlConfig>, now_ms: u64, state: &str) -> Result<bool, StateError> {
    let Some(ttl) = ttl else { return Ok(false) };
    let ts = raw
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| StateError::Codec {
            state: state.to_string(),
            detail: "TTL timestamp missing".into(),
        })?;
    Ok(ts.saturating_add(ttl.ttl_ms) <= now_ms)
}

/// The value codec's bytes as JSON (the conventions of canonical savepoints:
/// `docs/formats/savepoint-canonical.md`).
fn json(state: &str, bytes: &[u8]) -> Result<Value, StateError> {
    let codec_error = |detail: String| StateError::Codec {
        state: state.to_string(),
        detail,
    };
    let mut text = Vec::with_capacity(bytes.len() * 2);
    codec::msgpack_to_json(bytes, &mut text).map_err(codec_error)?;
    serde_json::from_slice(&text).map_err(|e| codec_error(e.to_string()))
}

/// Read `slot`'s value for the key `key` (key bytes, no namespace) in key
/// group `kg`: a value as JSON, a list as an array, a map as an array of
/// `[user key, value]` pairs in user-key byte order; `None` when the key has
/// nothing live.
pub(crate) fn read(
    backend: &mut dyn KeyedStateBackend,
    slot: &QueryableSlot,
    key: &[u8],
    kg: u32,
    now_ms: u64,
) -> Result<Option<Value>, StateError> {
    let name = slot.info.state.as_str();
    let payload = |raw: &[u8]| -> Vec<u8> {
        match slot.ttl {
            Some(_) => raw[8..].to_vec(),
            None => raw.to_vec(),
        }
    };
    match slot.info.kind {
        StateKind::Value => {
            let mut raw = Vec::new();
            if !backend.get(slot.id, kg, key, &mut raw)? || expired(&raw, slot.ttl, now_ms, name)? {
                return Ok(None);
            }
            json(name, &payload(&raw)).map(Some)
        }
        StateKind::List => {
            let mut raw = Vec::new();
            if !backend.get(slot.id, kg, key, &mut raw)? {
                return Ok(None);
            }
            let mut rest: &[u8] = &raw;
            let mut items = Vec::new();
            while !rest.is_empty() {
                let (elem, r) = get_bytes(rest).ok_or_else(|| StateError::Codec {
                    state: name.to_string(),
                    detail: "list element framing is corrupt".into(),
                })?;
                rest = r;
                if !expired(elem, slot.ttl, now_ms, name)? {
                    items.push(json(name, &payload(elem))?);
                }
            }
            Ok((!items.is_empty()).then_some(Value::Array(items)))
        }
        StateKind::Map => {
            let mut raw: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            backend.map_entries(slot.id, kg, key, &mut |k, v| raw.push((k.to_vec(), v.to_vec())))?;
            let mut entries = Vec::with_capacity(raw.len());
            for (k, v) in raw {
                if !expired(&v, slot.ttl, now_ms, name)? {
                    entries.push(Value::Array(vec![json(name, &k)?, json(name, &payload(&v))?]));
                }
            }
            Ok((!entries.is_empty()).then_some(Value::Array(entries)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use crate::canonical::key_codec_for;
    use crate::keygroup::{key_bytes, key_group_for_bytes};
    use crate::{
        HeapKeyedStateBackend, KeyGroupRange, KeyedStateAccess, ListStateDescriptor, MapStateDescriptor, StateError,
        StateKind, StateTtlConfig, ValueStateDescriptor,
    };

    const MAX_PARALLELISM: u32 = 128;

    fn access(range: KeyGroupRange) -> KeyedStateAccess {
        KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(range)))
    }

    fn key(k: &str) -> (Vec<u8>, u32) {
        let mut b = Vec::new();
        key_bytes(&k, &mut b).unwrap();
        let kg = key_group_for_bytes(&b, MAX_PARALLELISM);
        (b, kg)
    }

    fn set(a: &mut KeyedStateAccess, k: &str) {
        let (b, kg) = key(k);
        a.set_current_key(&b, kg);
    }

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Profile {
        name: String,
        visits: u32,
    }

    #[test]
    fn values_lists_and_maps_answer_as_json_and_absent_keys_as_none() {
        let mut a = access(KeyGroupRange::all(MAX_PARALLELISM));
        let profile = a
            .value_state(ValueStateDescriptor::<Profile>::new("profile").queryable("profiles"))
            .unwrap();
        let seen = a
            .list_state(ListStateDescriptor::<u64>::new("seen").queryable("seen"))
            .unwrap();
        let tags = a
            .map_state(MapStateDescriptor::<String, i32>::new("tags").queryable("tags"))
            .unwrap();
        let hidden = a.value_state(ValueStateDescriptor::<u64>::new("hidden")).unwrap();
        set(&mut a, "alice");
        profile
            .update(
                &mut a,
                &Profile {
                    name: "Alice".into(),
                    visits: 3,
                },
            )
            .unwrap();
        seen.add(&mut a, &7).unwrap();
        seen.add(&mut a, &9).unwrap();
        tags.put(&mut a, &"b".into(), &2).unwrap();
        tags.put(&mut a, &"a".into(), &-1).unwrap();
        hidden.update(&mut a, &1).unwrap();
        // Queries leave the current key alone.
        set(&mut a, "bob");

        let (alice, kg) = key("alice");
        assert_eq!(
            a.query("profiles", &alice, kg).unwrap(),
            Some(json!({"name": "Alice", "visits": 3}))
        );
        assert_eq!(a.query("seen", &alice, kg).unwrap(), Some(json!([7, 9])));
        assert_eq!(a.query("tags", &alice, kg).unwrap(), Some(json!([["a", -1], ["b", 2]])));
        assert_eq!(a.current_key_bytes(), key("bob").0.as_slice());

        let (carol, kg) = key("carol");
        for name in ["profiles", "seen", "tags"] {
            assert_eq!(a.query(name, &carol, kg).unwrap(), None, "{name}");
        }
        let err = a.query("hidden", &alice, kg).unwrap_err().to_string();
        assert!(
            err.contains("no state is queryable as 'hidden'") && err.contains("profiles, seen, tags"),
            "{err}"
        );
        let names: BTreeMap<String, (String, StateKind)> = a
            .queryable_states()
            .into_iter()
            .map(|q| (q.name, (q.state, q.kind)))
            .collect();
        assert_eq!(names["profiles"], ("profile".to_string(), StateKind::Value));
        assert_eq!(names["tags"], ("tags".to_string(), StateKind::Map));
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn one_queryable_name_for_two_states_is_refused_and_registering_again_is_not() {
        let mut a = access(KeyGroupRange::all(MAX_PARALLELISM));
        a.value_state(ValueStateDescriptor::<u64>::new("count").queryable("n"))
            .unwrap();
        a.value_state(ValueStateDescriptor::<u64>::new("count").queryable("n"))
            .unwrap();
        let Err(err) = a.value_state(ValueStateDescriptor::<u64>::new("total").queryable("n")) else {
            panic!("two states under one queryable name were accepted");
        };
        assert!(
            matches!(&err, StateError::Usage(m) if m.contains("'count' and 'total' are both queryable as 'n'")),
            "{err}"
        );
        assert_eq!(a.queryable_states().len(), 1);
    }

    #[test]
    fn a_key_group_of_another_subtask_is_refused() {
        let (b, kg) = key("alice");
        let other = if kg < 64 {
            KeyGroupRange::new(64, 128)
        } else {
            KeyGroupRange::new(0, 64)
        };
        let mut a = access(other);
        a.value_state(ValueStateDescriptor::<u64>::new("count").queryable("count"))
            .unwrap();
        let err = a.query("count", &b, kg).unwrap_err().to_string();
        assert!(
            err.contains(&format!("key group {kg} belongs to another subtask")),
            "{err}"
        );
    }

    #[test]
    fn expired_entries_are_not_shown_and_stay_for_the_operator_to_expire() {
        let mut a = access(KeyGroupRange::all(MAX_PARALLELISM));
        let ttl = StateTtlConfig::new(Duration::from_millis(1000));
        let v = a
            .value_state(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl).queryable("v"))
            .unwrap();
        let l = a
            .list_state(ListStateDescriptor::<u64>::new("l").with_ttl(ttl).queryable("l"))
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        set(&mut a, "old");
        a.set_processing_time(now - 10_000);
        v.update(&mut a, &1).unwrap();
        l.add(&mut a, &1).unwrap();
        a.set_processing_time(now);
        l.add(&mut a, &2).unwrap();
        let (old, kg) = key("old");
        assert_eq!(a.query("v", &old, kg).unwrap(), None);
        assert_eq!(a.query("l", &old, kg).unwrap(), Some(json!([2])));
        // The query removed nothing: the raw entry is still in the backend.
        let mut raw = Vec::new();
        let id = a.backend_mut().registered().iter().position(|m| m.name == "v").unwrap();
        assert!(a.backend_mut().get(id as crate::StateId, kg, &old, &mut raw).unwrap());
    }

    #[test]
    fn keys_written_as_json_give_the_bytes_the_stream_hashes() {
        let codec = key_codec_for::<(String, u32)>();
        let mut out = Vec::new();
        codec.key_bytes_from_json(br#"["a",7]"#, &mut out).unwrap();
        let mut expected = Vec::new();
        key_bytes(&("a".to_string(), 7u32), &mut expected).unwrap();
        assert_eq!(out, expected);
        // And back: the JSON the key codec renders is what a query accepts.
        let mut json = Vec::new();
        codec.key_json(&expected, &mut json).unwrap();
        codec.key_bytes_from_json(&json, &mut out).unwrap();
        assert_eq!(out, expected);

        let err = codec.key_bytes_from_json(b"alice", &mut out).unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");
        let err = codec.key_bytes_from_json(br#""alice""#, &mut out).unwrap_err();
        assert!(err.contains("does not decode as (alloc::string::String, u32)"), "{err}");
        let err = key_codec_for::<u64>().key_bytes_from_json(b"-1", &mut out).unwrap_err();
        assert!(err.contains("does not decode as u64"), "{err}");
    }
}
