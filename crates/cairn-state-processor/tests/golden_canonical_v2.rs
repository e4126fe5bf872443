//! Golden fixture of canonical savepoint format version 2 (invariant 5): the
//! savepoint under `tests/golden/canonical-v2/` (its `_metadata`, version 3,
//! and its Parquet files) is committed and must keep restoring forever. It is
//! never rewritten: `CAIRN_REGEN_GOLDEN=1` only creates it when it
//! is missing. Spec: `docs/formats/savepoint-canonical.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use cairn_state::keygroup::KeyGroupRange;
use cairn_state::{
    HeapKeyedStateBackend, KeyedStateAccess, KeyedStateBackend, ListState, ListStateDescriptor, MapState,
    MapStateDescriptor, StateError, ValueState, ValueStateDescriptor,
};
use cairn_state_processor::{
    BootstrapContext, BroadcastBootstrapContext, BroadcastStateBootstrapFunction, Collector,
    KeyedStateBootstrapFunction, KeyedStateReaderFunction, OperatorTransformation, ReaderContext, SavepointReader,
    SavepointWriter,
};
use serde::{Deserialize, Serialize};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/canonical-v2")
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Tier {
    Free,
    Paid(u32),
    Team { seats: u16 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    name: String,
    score: f64,
    tier: Tier,
    tags: Vec<String>,
    ratio: Option<f32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Event {
    user: u64,
    i: u32,
}

fn profile(user: u64) -> Profile {
    Profile {
        name: format!("user-{user}"),
        score: user as f64 * 0.5,
        tier: match user % 3 {
            0 => Tier::Free,
            1 => Tier::Paid(user as u32),
            _ => Tier::Team { seats: 3 },
        },
        tags: (0..user % 3).map(|t| format!("t{t}")).collect(),
        ratio: (user.is_multiple_of(2)).then_some(0.25),
    }
}

#[derive(Clone, Default)]
struct Writer {
    profile: Option<ValueState<Profile>>,
    recent: Option<ListState<u32>>,
    seen: Option<MapState<String, i64>>,
}

impl KeyedStateBootstrapFunction<u64, Event> for Writer {
    fn open(&mut self, s: &mut KeyedStateAccess) -> Result<(), StateError> {
        self.profile = Some(s.value_state(ValueStateDescriptor::new("profile"))?);
        self.recent = Some(s.list_state(ListStateDescriptor::new("recent"))?);
        self.seen = Some(s.map_state(MapStateDescriptor::new("seen"))?);
        Ok(())
    }
    fn process_element(&mut self, e: Event, ctx: &mut BootstrapContext<'_, u64>) -> cairn_runtime::OpResult {
        self.profile.as_ref().unwrap().update(ctx, &profile(e.user))?;
        self.recent.as_ref().unwrap().add(ctx, &e.i)?;
        self.seen
            .as_ref()
            .unwrap()
            .put(ctx, &format!("m{}", e.i % 2), &i64::from(e.i))?;
        ctx.register_event_time_timer(1_000 + i64::from(e.i))?;
        Ok(())
    }
}

struct Rules;

impl BroadcastStateBootstrapFunction<(String, u32)> for Rules {
    fn process_element(
        &mut self,
        v: (String, u32),
        ctx: &mut BroadcastBootstrapContext<'_>,
    ) -> cairn_runtime::OpResult {
        ctx.put("rules", &v.0, &v.1)
    }
}

fn events() -> Vec<Event> {
    (0..40u64)
        .flat_map(|u| (0..(u % 3 + 1) as u32).map(move |i| Event { user: u, i }))
        .collect()
}

static REGEN: Once = Once::new();

fn regenerate_if_asked() {
    REGEN.call_once(|| {
        if std::env::var("CAIRN_REGEN_GOLDEN").as_deref() != Ok("1") {
            return;
        }
        let dir = golden_dir();
        // Fixtures are never rewritten: this only creates a missing one (a new format
        // version gets a new fixture directory).
        assert!(
            !dir.exists(),
            "{} exists: golden fixtures are never rewritten; a new format version gets a new fixture",
            dir.display()
        );
        SavepointWriter::new(128)
            .with_operator(
                "users",
                OperatorTransformation::bootstrap_with(events())
                    .set_parallelism(2)
                    .key_by(|e: &Event| e.user)
                    .transform(Writer::default()),
            )
            .with_operator(
                "rules",
                OperatorTransformation::bootstrap_with(vec![("a".to_string(), 1u32), ("b".to_string(), 2)])
                    .transform_broadcast(Rules),
            )
            .write(&dir)
            .unwrap();
        eprintln!("regenerated golden fixture in {}", dir.display());
    });
}

#[derive(Clone, Default)]
struct Reader {
    profile: Option<ValueState<Profile>>,
    recent: Option<ListState<u32>>,
    seen: Option<MapState<String, i64>>,
}

type Row = (u64, Profile, Vec<u32>, Vec<(String, i64)>, Vec<i64>);

impl KeyedStateReaderFunction for Reader {
    type Key = u64;
    type Out = Row;
    fn open(&mut self, s: &mut KeyedStateAccess) -> Result<(), StateError> {
        self.profile = Some(s.value_state(ValueStateDescriptor::new("profile"))?);
        self.recent = Some(s.list_state(ListStateDescriptor::new("recent"))?);
        self.seen = Some(s.map_state(MapStateDescriptor::new("seen"))?);
        Ok(())
    }
    fn read_key(&mut self, k: &u64, ctx: &mut ReaderContext<'_>, out: &mut Collector<Row>) -> cairn_runtime::OpResult {
        let p = self.profile.as_ref().unwrap().value(ctx)?.ok_or("no profile")?;
        let r = self.recent.as_ref().unwrap().get(ctx)?;
        let s = self.seen.as_ref().unwrap().entries(ctx)?;
        out.collect((*k, p, r, s, ctx.registered_event_time_timers().to_vec()));
        Ok(())
    }
}

#[test]
fn golden_canonical_v2_restores() {
    regenerate_if_asked();
    let r = SavepointReader::read(golden_dir()).expect("golden canonical v2 fixture must exist and verify");
    assert_eq!(r.metadata().format_version, 3);
    let rows = r.read_keyed_state("users", Reader::default()).unwrap();
    assert_eq!(rows.len(), 40);
    let mut want: BTreeMap<u64, Row> = BTreeMap::new();
    for e in events() {
        let w = want
            .entry(e.user)
            .or_insert_with(|| (e.user, profile(e.user), Vec::new(), Vec::new(), Vec::new()));
        w.2.push(e.i);
        w.3.retain(|(k, _)| *k != format!("m{}", e.i % 2));
        w.3.push((format!("m{}", e.i % 2), i64::from(e.i)));
        w.4.push(1_000 + i64::from(e.i));
    }
    for row in rows {
        let mut w = want[&row.0].clone();
        w.3.sort();
        let mut got = row;
        got.3.sort();
        assert_eq!(got, w);
    }
    let rules: Vec<(String, u32)> = r.read_broadcast_state("rules", "rules").unwrap();
    assert_eq!(rules, vec![("a".to_string(), 1), ("b".to_string(), 2)]);
    // Restore a rescaled range straight into a backend, as a job does.
    let op = r.operator("users").unwrap();
    let range = KeyGroupRange::for_subtask(128, 3, 1);
    let mut b = HeapKeyedStateBackend::new(range);
    cairn_coordinator::restore::StateReader {
        snapshot: r.snapshot(),
        storage: &**r.storage(),
    }
    .restore_keyed(op, range, &mut b, 1)
    .unwrap();
    let mut keys = 0;
    let id = b.registered().iter().position(|m| m.name == "profile").unwrap() as u32;
    b.for_each_key(id, &mut |kg, _| {
        assert!(range.contains(kg));
        keys += 1;
    })
    .unwrap();
    assert!(keys > 0 && keys < 40);
}
