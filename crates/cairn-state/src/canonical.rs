//! Canonical rows: the backend-independent, self-describing shape of state in
//! canonical savepoints (spec: `docs/formats/savepoint-canonical.md`, canonical
//! format version 1).
//!
//! Keyed state: one row per value, list element or map entry, turned from and
//! back into the [`crate::snapshot_codec`] encoding of one (state, key group)
//! that [`crate::KeyedStateSnapshot::for_each_group`] hands out and
//! [`crate::KeyedStateBackend::restore_group`] takes. Values become JSON text
//! (through [`codec::msgpack_to_json`], without knowing their type); keys keep
//! their canonical bytes ([`crate::key_encoding`]) (what restore uses, so key groups never move) plus a JSON
//! rendering for readers, made by a [`KeyCodec`] that also tells where the key
//! ends and the namespace starts inside the backend key.
//!
//! Operator state: one row per list element or broadcast entry.
//!
//! This module knows nothing about Parquet: the runtime's snapshot I/O puts the
//! rows into files.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, get_bytes, put_bytes};
use crate::descriptor::{StateKind, StateMeta, StateTtlConfig, TtlUpdateType};
use crate::operator_state::{DistributionMode, OperatorStateEntry};
use crate::snapshot_codec::{self, Decoded};

/// The canonical format version this build writes and reads.
pub const CANONICAL_FORMAT_VERSION: u32 = 1;

/// Internal keyed states whose names start with this hold timers: the backend
/// key is `timestamp (8 bytes) ‖ bytes(key) ‖ namespace` and the value is empty.
pub const TIMER_STATE_PREFIX: &str = "_timers/";

/// Renders keys for readers: decodes the key at the start of a backend key
/// (key bytes followed by namespace bytes), appends its JSON text to `out`, and
/// returns how many bytes the key used (the rest is the namespace).
pub trait KeyJson: Send + Sync {
    fn key_json(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String>;

    /// Like [`KeyJson::key_json`], but appends the key in the value codec
    /// (MessagePack with named fields) instead of JSON.
    fn key_msgpack(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut json = Vec::new();
        let used = self.key_json(composite, &mut json)?;
        codec::json_to_msgpack(&json, out)?;
        Ok(used)
    }

    /// Decodes the key at the start of `composite` and shows it to `visit`
    /// as a value of the key type itself, for writers that take objects
    /// (typed columns) without encoding it first; returns how many bytes the
    /// key used and `visit`'s answer. `None` from a codec that does not know
    /// the key type (then use [`KeyJson::key_msgpack`]).
    fn visit_key(
        &self,
        composite: &[u8],
        visit: &mut dyn FnMut(&dyn std::any::Any) -> bool,
    ) -> Option<Result<(usize, bool), String>> {
        let _ = (composite, visit);
        None
    }

    /// The shape of the key type ([`crate::shape`]); opaque when unknown.
    fn key_shape(&self) -> crate::shape::Shape {
        crate::shape::Shape::Opaque("the key codec does not describe its type".into())
    }

    /// The key bytes ([`crate::key_encoding`]) of a key written as JSON text,
    /// with the conventions [`KeyJson::key_json`] writes (live state queries
    /// name keys this way); the message says why a key does not fit.
    fn key_bytes_from_json(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let _ = (json, out);
        Err("this operator's key codec cannot read keys written as JSON".into())
    }

    /// The key type's name, for messages.
    fn key_type_name(&self) -> String {
        "the key type".into()
    }
}

/// A shared [`KeyJson`]; see [`key_codec_for`].
pub type KeyCodec = Arc<dyn KeyJson>;

/// Any `Fn(&[u8]) -> Result<(serde_json::Value, usize), String>` is a key codec too.
impl<F> KeyJson for F
where
    F: Fn(&[u8]) -> Result<(serde_json::Value, usize), String> + Send + Sync,
{
    fn key_json(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let (v, used) = self(composite)?;
        serde_json::to_writer(&mut *out, &v).map_err(|e| e.to_string())?;
        Ok(used)
    }
}

struct EncodedKey<K>(PhantomData<fn() -> K>);

thread_local! {
    static KEY_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<K: Serialize + DeserializeOwned + 'static> KeyJson for EncodedKey<K> {
    fn key_json(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let (key, used): (K, usize) = crate::key_encoding::from_prefix(composite)
            .map_err(|e| format!("key bytes do not decode as {}: {e}", std::any::type_name::<K>()))?;
        // Through the value codec, so keys follow the same JSON conventions as values.
        KEY_SCRATCH.with(|s| {
            let mut mp = s.borrow_mut();
            mp.clear();
            codec::append("key", &key, &mut mp).map_err(|e| e.to_string())?;
            codec::msgpack_to_json(&mp, out)
        })?;
        Ok(used)
    }

    fn key_msgpack(&self, composite: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let (key, used): (K, usize) = crate::key_encoding::from_prefix(composite)
            .map_err(|e| format!("key bytes do not decode as {}: {e}", std::any::type_name::<K>()))?;
        codec::append("key", &key, out).map_err(|e| e.to_string())?;
        Ok(used)
    }

    fn visit_key(
        &self,
        composite: &[u8],
        visit: &mut dyn FnMut(&dyn std::any::Any) -> bool,
    ) -> Option<Result<(usize, bool), String>> {
        Some(
            crate::key_encoding::from_prefix::<K>(composite)
                .map(|(key, used)| (used, visit(&key)))
                .map_err(|e| format!("key bytes do not decode as {}: {e}", std::any::type_name::<K>())),
        )
    }

    fn key_shape(&self) -> crate::shape::Shape {
        crate::shape::trace::<K>()
    }

    fn key_bytes_from_json(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut mp = Vec::with_capacity(json.len());
        codec::json_to_msgpack(json, &mut mp).map_err(|e| format!("not JSON: {e}"))?;
        let key: K = rmp_serde::from_slice(&mp)
            .map_err(|e| format!("does not decode as {}: {e}", std::any::type_name::<K>()))?;
        crate::keygroup::key_bytes(&key, out).map_err(|e| e.to_string())
    }

    fn key_type_name(&self) -> String {
        std::any::type_name::<K>().to_string()
    }
}

/// The key codec of key type `K` (keys use [`crate::key_encoding`], see `docs/key-groups.md`).
pub fn key_codec_for<K: Serialize + DeserializeOwned + 'static>() -> KeyCodec {
    Arc::new(EncodedKey::<K>(PhantomData))
}

/// One keyed-state row, borrowed from the converter's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRow<'a> {
    pub key_group: u32,
    /// The key as JSON text; `None` without a key codec.
    pub key_json: Option<&'a [u8]>,
    /// The key's canonical bytes (without a key codec: the whole backend key).
    pub key_bytes: &'a [u8],
    /// Namespace bytes; empty when none.
    pub namespace: &'a [u8],
    /// Map state: the user key as JSON text.
    pub user_key_json: Option<&'a [u8]>,
    /// List state: the element's index.
    pub position: Option<i32>,
    /// The value as JSON text (timers: the timestamp).
    pub value_json: &'a [u8],
    /// States with a TTL: when the value was last written (epoch ms).
    pub ttl_timestamp_ms: Option<i64>,
}

/// Turns encoded (state, key group) groups into [`KeyedRow`]s, reusing its
/// buffers from group to group.
#[derive(Default)]
pub struct RowsFromGroups {
    last_composite: Vec<u8>,
    have_last: bool,
    key_json: Vec<u8>,
    key_len: usize,
    value: Vec<u8>,
    user_key: Vec<u8>,
}

fn state_err(meta: &StateMeta, kg: u32, what: impl std::fmt::Display) -> String {
    format!("state '{}' (key group {kg}): {what}", meta.name)
}

fn ttl_split<'b>(meta: &StateMeta, kg: u32, raw: &'b [u8]) -> Result<(Option<i64>, &'b [u8]), String> {
    if meta.ttl.is_none() {
        return Ok((None, raw));
    }
    let ts = raw
        .get(..8)
        .ok_or_else(|| state_err(meta, kg, "a value is shorter than its TTL timestamp"))?;
    let ts = u64::from_le_bytes(ts.try_into().expect("8 bytes"));
    let ts = i64::try_from(ts).map_err(|_| state_err(meta, kg, format!("TTL timestamp {ts} is out of range")))?;
    Ok((Some(ts), &raw[8..]))
}

impl RowsFromGroups {
    /// A converter with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Split `composite` into key and namespace and render the key (cached
    /// for consecutive rows of the same key).
    fn key(&mut self, composite: &[u8], codec: Option<&KeyCodec>) -> Result<(), String> {
        if self.have_last && self.last_composite == composite {
            return Ok(());
        }
        self.key_json.clear();
        self.key_len = match codec {
            Some(c) => c.key_json(composite, &mut self.key_json)?,
            None => composite.len(),
        };
        if self.key_len > composite.len() {
            return Err(format!(
                "the key codec used {} of {} bytes",
                self.key_len,
                composite.len()
            ));
        }
        self.last_composite.clear();
        self.last_composite.extend_from_slice(composite);
        self.have_last = true;
        Ok(())
    }

    /// Visit the rows of one encoded group of state `meta`, key group `kg`.
    /// Errors name the state and key group.
    pub fn rows(
        &mut self,
        meta: &StateMeta,
        kg: u32,
        encoded: &[u8],
        key_codec: Option<&KeyCodec>,
        visit: &mut dyn FnMut(&KeyedRow<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.have_last = false;
        let timers = meta.name.starts_with(TIMER_STATE_PREFIX);
        let mut result = Ok(());
        let decoded = snapshot_codec::decode_group(&meta.name, meta.kind, encoded, &mut |d| {
            let r = self.one(meta, kg, timers, d, key_codec, visit);
            match r {
                Ok(()) => Ok(()),
                Err(e) => {
                    result = Err(e);
                    Err(crate::StateError::Restore(String::new()))
                }
            }
        });
        result?;
        decoded.map_err(|e| state_err(meta, kg, e))
    }

    fn one(
        &mut self,
        meta: &StateMeta,
        kg: u32,
        timers: bool,
        d: Decoded<'_>,
        codec: Option<&KeyCodec>,
        visit: &mut dyn FnMut(&KeyedRow<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        match d {
            Decoded::Entry { key, value } if timers => {
                let ts = key
                    .get(..8)
                    .ok_or_else(|| state_err(meta, kg, "a timer entry is shorter than its timestamp"))?;
                let ts = (u64::from_be_bytes(ts.try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
                let (user_key, ns) =
                    get_bytes(&key[8..]).ok_or_else(|| state_err(meta, kg, "a timer entry's key is truncated"))?;
                if !value.is_empty() {
                    return Err(state_err(meta, kg, "a timer entry has a value"));
                }
                self.key(user_key, codec).map_err(|e| state_err(meta, kg, e))?;
                self.value.clear();
                codec::write_json_i64(&mut self.value, ts);
                visit(&KeyedRow {
                    key_group: kg,
                    key_json: codec.map(|_| &self.key_json[..]),
                    key_bytes: user_key,
                    namespace: ns,
                    user_key_json: None,
                    position: None,
                    value_json: &self.value,
                    ttl_timestamp_ms: None,
                })
            }
            Decoded::Entry { key, value } => {
                self.key(key, codec).map_err(|e| state_err(meta, kg, e))?;
                let (key_bytes, namespace) = key.split_at(self.key_len);
                let key_json = codec.map(|_| &self.key_json[..]);
                if meta.kind == StateKind::List {
                    let mut rest = value;
                    let mut position = 0i32;
                    while !rest.is_empty() {
                        let (elem, r) =
                            get_bytes(rest).ok_or_else(|| state_err(meta, kg, "list element framing is corrupt"))?;
                        rest = r;
                        let (ttl, payload) = ttl_split(meta, kg, elem)?;
                        self.value.clear();
                        codec::msgpack_to_json(payload, &mut self.value)
                            .map_err(|e| state_err(meta, kg, format!("a list element is not valid: {e}")))?;
                        visit(&KeyedRow {
                            key_group: kg,
                            key_json,
                            key_bytes,
                            namespace,
                            user_key_json: None,
                            position: Some(position),
                            value_json: &self.value,
                            ttl_timestamp_ms: ttl,
                        })?;
                        position = position
                            .checked_add(1)
                            .ok_or_else(|| state_err(meta, kg, "a list has more than 2^31 elements"))?;
                    }
                    Ok(())
                } else {
                    let (ttl, payload) = ttl_split(meta, kg, value)?;
                    self.value.clear();
                    codec::msgpack_to_json(payload, &mut self.value)
                        .map_err(|e| state_err(meta, kg, format!("a value is not valid: {e}")))?;
                    visit(&KeyedRow {
                        key_group: kg,
                        key_json,
                        key_bytes,
                        namespace,
                        user_key_json: None,
                        position: None,
                        value_json: &self.value,
                        ttl_timestamp_ms: ttl,
                    })
                }
            }
            Decoded::MapEntry { key, user_key, value } => {
                self.key(key, codec).map_err(|e| state_err(meta, kg, e))?;
                let (key_bytes, namespace) = key.split_at(self.key_len);
                let (ttl, payload) = ttl_split(meta, kg, value)?;
                self.user_key.clear();
                codec::msgpack_to_json(user_key, &mut self.user_key)
                    .map_err(|e| state_err(meta, kg, format!("a map user key is not valid: {e}")))?;
                self.value.clear();
                codec::msgpack_to_json(payload, &mut self.value)
                    .map_err(|e| state_err(meta, kg, format!("a map value is not valid: {e}")))?;
                visit(&KeyedRow {
                    key_group: kg,
                    key_json: codec.map(|_| &self.key_json[..]),
                    key_bytes,
                    namespace,
                    user_key_json: Some(&self.user_key),
                    position: None,
                    value_json: &self.value,
                    ttl_timestamp_ms: ttl,
                })
            }
        }
    }
}

/// One keyed-state row read back (the columns restore needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowIn<'a> {
    pub key_bytes: &'a [u8],
    pub namespace: &'a [u8],
    pub user_key_json: Option<&'a [u8]>,
    pub position: Option<i32>,
    pub value_json: Option<&'a [u8]>,
    pub ttl_timestamp_ms: Option<i64>,
}

/// Collects the rows of one (state, key group) and encodes them for
/// [`crate::KeyedStateBackend::restore_group`]. Rows may come in any order;
/// list elements are ordered by `position`.
pub struct GroupFromRows<'m> {
    meta: &'m StateMeta,
    timers: bool,
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    lists: BTreeMap<Vec<u8>, Vec<(i32, Vec<u8>)>>,
    maps: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
    rows: u64,
}

impl<'m> GroupFromRows<'m> {
    /// An empty group of state `meta`.
    pub fn new(meta: &'m StateMeta) -> Self {
        GroupFromRows {
            meta,
            timers: meta.name.starts_with(TIMER_STATE_PREFIX),
            values: BTreeMap::new(),
            lists: BTreeMap::new(),
            maps: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Rows added so far.
    pub fn len(&self) -> u64 {
        self.rows
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn err(&self, what: impl std::fmt::Display) -> String {
        format!("state '{}': {what}", self.meta.name)
    }

    fn payload(&self, row: &RowIn<'_>, what: &str) -> Result<Vec<u8>, String> {
        let json = row
            .value_json
            .ok_or_else(|| self.err(format!("a {what} row has no value")))?;
        let mut out = Vec::with_capacity(json.len() + 8);
        match (self.meta.ttl.is_some(), row.ttl_timestamp_ms) {
            (true, Some(ts)) => {
                let ts = u64::try_from(ts).map_err(|_| self.err(format!("ttl_timestamp_ms {ts} is negative")))?;
                out.extend_from_slice(&ts.to_le_bytes());
            }
            (true, None) => return Err(self.err("the state has a TTL but a row has no ttl_timestamp_ms")),
            (false, Some(_)) => {
                return Err(self
                    .err("a row has a ttl_timestamp_ms but the state has no TTL (its metadata in the file says so)"))
            }
            (false, None) => {}
        }
        codec::json_to_msgpack(json, &mut out)
            .map_err(|e| self.err(format!("the {what} JSON {} is not valid: {e}", preview(json))))?;
        Ok(out)
    }

    /// Add one row.
    pub fn push(&mut self, row: &RowIn<'_>) -> Result<(), String> {
        let mut composite = Vec::with_capacity(row.key_bytes.len() + row.namespace.len() + 10);
        if self.timers {
            let json = row
                .value_json
                .ok_or_else(|| self.err("a timer row has no timestamp value"))?;
            let ts: i64 = std::str::from_utf8(json)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    self.err(format!(
                        "a timer row's value {} is not an integer timestamp",
                        preview(json)
                    ))
                })?;
            composite.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
            put_bytes(&mut composite, row.key_bytes);
            composite.extend_from_slice(row.namespace);
            if self.values.insert(composite, Vec::new()).is_some() {
                return Err(self.err("a timer appears twice"));
            }
            self.rows += 1;
            return Ok(());
        }
        composite.extend_from_slice(row.key_bytes);
        composite.extend_from_slice(row.namespace);
        match self.meta.kind {
            StateKind::Value => {
                if row.position.is_some() || row.user_key_json.is_some() {
                    return Err(self.err("a value-state row has a position or user key"));
                }
                let v = self.payload(row, "value")?;
                if self.values.insert(composite, v).is_some() {
                    return Err(self.err("two rows hold a value for the same key and namespace"));
                }
            }
            StateKind::List => {
                let pos = row
                    .position
                    .ok_or_else(|| self.err("a list-state row has no position"))?;
                let v = self.payload(row, "list element")?;
                self.lists.entry(composite).or_default().push((pos, v));
            }
            StateKind::Map => {
                let uk = row
                    .user_key_json
                    .ok_or_else(|| self.err("a map-state row has no user_key"))?;
                let mut k = Vec::with_capacity(uk.len());
                codec::json_to_msgpack(uk, &mut k)
                    .map_err(|e| self.err(format!("the user_key JSON {} is not valid: {e}", preview(uk))))?;
                let v = self.payload(row, "map value")?;
                if self.maps.entry(composite).or_default().insert(k, v).is_some() {
                    return Err(self.err("a map user key appears twice for the same key and namespace"));
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The [`crate::snapshot_codec`] encoding of the rows added.
    pub fn encode(self) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        match self.meta.kind {
            StateKind::Value => {
                for (k, v) in &self.values {
                    snapshot_codec::put_entry(&mut buf, k, v);
                }
            }
            StateKind::List if self.timers => {
                return Err(self.err("timer states must be value states"));
            }
            StateKind::List => {
                let mut value = Vec::new();
                for (k, mut elems) in self.lists {
                    elems.sort_by_key(|(p, _)| *p);
                    if elems.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(format!(
                            "state '{}': two list elements of one key have the same position",
                            self.meta.name
                        ));
                    }
                    value.clear();
                    for (_, e) in &elems {
                        put_bytes(&mut value, e);
                    }
                    snapshot_codec::put_entry(&mut buf, &k, &value);
                }
            }
            StateKind::Map => {
                for (k, m) in &self.maps {
                    snapshot_codec::put_map(&mut buf, k, m.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
                }
            }
        }
        Ok(buf)
    }
}

fn preview(json: &[u8]) -> String {
    let s = String::from_utf8_lossy(json);
    if s.chars().count() > 80 {
        format!("'{}…'", s.chars().take(80).collect::<String>())
    } else {
        format!("'{s}'")
    }
}

// ---------------------------------------------------------------------------
// State metadata as JSON
// ---------------------------------------------------------------------------

/// The JSON form of one state's metadata in canonical files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateMetaJson {
    name: String,
    /// "value" | "list" | "map"
    kind: String,
    /// Rust type name, informative only.
    #[serde(default)]
    value_type: String,
    /// null or {"ttl_ms": u64, "update_type": "on_create_and_write" | "on_read_and_write"}
    #[serde(default)]
    ttl: Option<TtlJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TtlJson {
    ttl_ms: u64,
    update_type: String,
}

/// The canonical name of a state kind.
pub fn kind_name(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
    }
}

/// States' metadata as a JSON array (for a file's key-value metadata).
pub fn states_to_json(metas: &[StateMeta]) -> String {
    let v: Vec<StateMetaJson> = metas
        .iter()
        .map(|m| StateMetaJson {
            name: m.name.clone(),
            kind: kind_name(m.kind).into(),
            value_type: m.value_type.clone(),
            ttl: m.ttl.map(|t| TtlJson {
                ttl_ms: t.ttl_ms,
                update_type: match t.update_type {
                    TtlUpdateType::OnCreateAndWrite => "on_create_and_write".into(),
                    TtlUpdateType::OnReadAndWrite => "on_read_and_write".into(),
                },
            }),
        })
        .collect();
    serde_json::to_string(&v).expect("state metadata serializes")
}

/// Parse [`states_to_json`] output.
pub fn states_from_json(json: &str) -> Result<Vec<StateMeta>, String> {
    let v: Vec<StateMetaJson> = serde_json::from_str(json).map_err(|e| format!("the state list is not valid: {e}"))?;
    v.into_iter()
        .map(|m| {
            let kind = match m.kind.as_str() {
                "value" => StateKind::Value,
                "list" => StateKind::List,
                "map" => StateKind::Map,
                other => return Err(format!("state '{}' has unknown kind '{other}'", m.name)),
            };
            let ttl = match m.ttl {
                None => None,
                Some(t) => Some(StateTtlConfig {
                    ttl_ms: t.ttl_ms,
                    update_type: match t.update_type.as_str() {
                        "on_create_and_write" => TtlUpdateType::OnCreateAndWrite,
                        "on_read_and_write" => TtlUpdateType::OnReadAndWrite,
                        other => return Err(format!("state '{}' has unknown TTL update type '{other}'", m.name)),
                    },
                }),
            };
            Ok(StateMeta {
                name: m.name,
                kind,
                value_type: m.value_type,
                ttl,
                shapes: None,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Operator state rows
// ---------------------------------------------------------------------------

/// The canonical name of a distribution mode.
pub fn mode_name(mode: DistributionMode) -> &'static str {
    match mode {
        DistributionMode::SplitEvenly => "split_evenly",
        DistributionMode::Union => "union",
        DistributionMode::Broadcast => "broadcast",
    }
}

/// Parse [`mode_name`] output.
pub fn mode_from_name(name: &str) -> Option<DistributionMode> {
    match name {
        "split_evenly" => Some(DistributionMode::SplitEvenly),
        "union" => Some(DistributionMode::Union),
        "broadcast" => Some(DistributionMode::Broadcast),
        _ => None,
    }
}

/// One operator-state row. A state without elements is one row with neither
/// position nor value, so that it still exists after restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorRow<'a> {
    pub state: &'a str,
    pub mode: DistributionMode,
    /// Element index (lists) or entry index (broadcast).
    pub position: Option<i32>,
    /// Broadcast state: the entry's key as JSON text.
    pub key_json: Option<&'a [u8]>,
    /// The element or entry value as JSON text.
    pub value_json: Option<&'a [u8]>,
}

/// Visit the rows of operator state entries.
pub fn operator_rows(
    entries: &[OperatorStateEntry],
    visit: &mut dyn FnMut(&OperatorRow<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut key = Vec::new();
    let mut value = Vec::new();
    for e in entries {
        let err = |what: String| format!("operator state '{}': {what}", e.name);
        if e.elements.is_empty() {
            visit(&OperatorRow {
                state: &e.name,
                mode: e.mode,
                position: None,
                key_json: None,
                value_json: None,
            })?;
        }
        for (i, el) in e.elements.iter().enumerate() {
            let position = Some(i32::try_from(i).map_err(|_| err("more than 2^31 elements".into()))?);
            value.clear();
            if e.mode == DistributionMode::Broadcast {
                let (k, rest) = get_bytes(el).ok_or_else(|| err("a broadcast entry is corrupt".into()))?;
                let (v, _) = get_bytes(rest).ok_or_else(|| err("a broadcast entry is corrupt".into()))?;
                key.clear();
                codec::msgpack_to_json(k, &mut key).map_err(|x| err(format!("a broadcast key is not valid: {x}")))?;
                codec::msgpack_to_json(v, &mut value)
                    .map_err(|x| err(format!("a broadcast value is not valid: {x}")))?;
                visit(&OperatorRow {
                    state: &e.name,
                    mode: e.mode,
                    position,
                    key_json: Some(&key),
                    value_json: Some(&value),
                })?;
            } else {
                codec::msgpack_to_json(el, &mut value).map_err(|x| err(format!("an element is not valid: {x}")))?;
                visit(&OperatorRow {
                    state: &e.name,
                    mode: e.mode,
                    position,
                    key_json: None,
                    value_json: Some(&value),
                })?;
            }
        }
    }
    Ok(())
}

/// Rebuild operator state entries from rows (in any order; elements are
/// ordered by position; states keep the order of their first row).
pub fn operator_entries_from_rows<'a>(
    rows: impl IntoIterator<Item = OperatorRow<'a>>,
) -> Result<Vec<OperatorStateEntry>, String> {
    let mut order: Vec<(String, DistributionMode)> = Vec::new();
    let mut elems: BTreeMap<String, Vec<(i32, Vec<u8>)>> = BTreeMap::new();
    for r in rows {
        let err = |what: String| format!("operator state '{}': {what}", r.state);
        match order.iter().find(|(n, _)| n == r.state) {
            Some((_, m)) if *m != r.mode => {
                return Err(err(format!(
                    "rows disagree on the mode ({} and {})",
                    mode_name(*m),
                    mode_name(r.mode)
                )))
            }
            Some(_) => {}
            None => order.push((r.state.to_string(), r.mode)),
        }
        let list = elems.entry(r.state.to_string()).or_default();
        let (Some(pos), Some(value)) = (r.position, r.value_json) else {
            if r.position.is_some() || r.value_json.is_some() || r.key_json.is_some() {
                return Err(err("a row has a position or value but not both".into()));
            }
            continue;
        };
        let mut el = Vec::new();
        if r.mode == DistributionMode::Broadcast {
            let k = r.key_json.ok_or_else(|| err("a broadcast row has no key".into()))?;
            let mut kb = Vec::new();
            codec::json_to_msgpack(k, &mut kb)
                .map_err(|e| err(format!("key JSON {} is not valid: {e}", preview(k))))?;
            let mut vb = Vec::new();
            codec::json_to_msgpack(value, &mut vb)
                .map_err(|e| err(format!("value JSON {} is not valid: {e}", preview(value))))?;
            put_bytes(&mut el, &kb);
            put_bytes(&mut el, &vb);
        } else {
            if r.key_json.is_some() {
                return Err(err("a list row has a key".into()));
            }
            codec::json_to_msgpack(value, &mut el)
                .map_err(|e| err(format!("value JSON {} is not valid: {e}", preview(value))))?;
        }
        list.push((pos, el));
    }
    let mut out = Vec::with_capacity(order.len());
    for (name, mode) in order {
        let mut list = elems.remove(&name).unwrap_or_default();
        list.sort_by_key(|(p, _)| *p);
        if list.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(format!("operator state '{name}': two elements have the same position"));
        }
        out.push(OperatorStateEntry {
            name,
            mode,
            elements: list.into_iter().map(|(_, e)| e).collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
