//! Golden fixture of `_metadata` format version 4 (invariant 5): a retained
//! unaligned checkpoint whose operator `echo` holds channel state (the
//! in-flight records, a watermark and idleness changes of its one input
//! channel, at two tiers: one batch restored earlier and still not
//! processed, then what was in flight; `docs/formats/channel-state.md`).
//! The files under `crates/cairn-snapshot/tests/golden/v4/` are committed
//! and must keep loading and restoring forever; `CAIRN_REGEN_GOLDEN=1` only
//! creates them when missing; they are never rewritten.

use std::path::{Path, PathBuf};
use std::sync::Once;

use cairn::config::{Configuration, StartupOptions};
use cairn::prelude::*;
use cairn::runtime::channel_state::{
    decode_channel_index, decode_channel_messages, write_channel_state, ChannelDescriptor, ChannelLog,
    ChannelStateUpload, TierLog, CHANNELS_SECTION,
};
use cairn::runtime::codec::batch_codec;
use cairn::runtime::record::Message;
use cairn::snapshot::metadata::{encode_metadata, OperatorSnapshot, SnapshotKind, SnapshotMetadata, SubtaskSnapshot};
use cairn::snapshot::{load_snapshot, FileFormat, InMemoryStorage, LocalFileStorage, StateFileReader, Storage};
use cairn::state::hash::operator_id_for_uid;
use serde::{Deserialize, Serialize};

/// The record type of the channel (its field names are part of the bytes:
/// values are MessagePack with named fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    value: i64,
}

fn reading(sensor: &str, value: i64) -> Reading {
    Reading {
        sensor: sensor.into(),
        value,
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-snapshot/tests/golden/v4/job/chk-3")
}

fn channel_file_name() -> String {
    format!("op-{}-0.channel", operator_id_for_uid("echo"))
}

/// The in-flight messages of the fixture, in channel order.
fn golden_messages() -> Vec<Message> {
    let batch = |rs: Vec<(Reading, i64)>| {
        let n = rs.len() as u64;
        let records: Vec<StreamRecord<Reading>> = rs
            .into_iter()
            .map(|(r, ts)| StreamRecord::with_timestamp(r, ts))
            .collect();
        Message::Records(Box::new(records), n, None)
    };
    vec![
        batch(vec![(reading("a", 1), 10), (reading("b", 2), 11)]),
        Message::Watermark(11),
        Message::Idle(true),
        Message::Idle(false),
        batch(vec![(reading("a", 3), 12)]),
    ]
}

fn golden_descriptor() -> ChannelDescriptor {
    ChannelDescriptor {
        input: 0,
        source_operator_id: operator_id_for_uid("readings"),
        edge_ordinal: 0,
        source_subtask: 0,
    }
}

/// The channel-state file's bytes, as the current writer produces them.
fn channel_state_bytes() -> (Vec<u8>, cairn::snapshot::StateFileRef) {
    let codec = batch_codec::<Reading>();
    let mut restored = ChannelLog::default();
    let mut live = ChannelLog::default();
    let mut scratch = Vec::new();
    for (i, m) in golden_messages().iter().enumerate() {
        // The first batch was restored earlier and not processed yet: tier 1.
        let log = if i == 0 { &mut restored } else { &mut live };
        log.log(m, &*codec, &mut scratch).unwrap();
    }
    let upload = ChannelStateUpload {
        node: 1,
        operator_id: operator_id_for_uid("echo"),
        channels: vec![
            TierLog {
                channel: golden_descriptor(),
                tier: 1,
                log: restored,
            },
            TierLog {
                channel: golden_descriptor(),
                tier: 0,
                log: live,
            },
        ],
    };
    let storage = InMemoryStorage::new();
    let dir = Path::new("/chk-3");
    storage.create_dir_all(dir).unwrap();
    let name = channel_file_name();
    let file = write_channel_state(&storage, dir, &name, &upload).unwrap().unwrap();
    (storage.read(&dir.join(&name)).unwrap(), file)
}

fn operator(uid: &str, files: Vec<cairn::snapshot::StateFileRef>) -> OperatorSnapshot {
    OperatorSnapshot {
        operator_id: operator_id_for_uid(uid),
        uid: uid.into(),
        name: uid.into(),
        parallelism: 1,
        max_parallelism: 128,
        subtasks: vec![SubtaskSnapshot {
            subtask_index: 0,
            files,
        }],
    }
}

fn golden_metadata(channel_file: cairn::snapshot::StateFileRef) -> SnapshotMetadata {
    SnapshotMetadata {
        format_version: 4,
        kind: SnapshotKind::Checkpoint,
        job_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        checkpoint_id: 3,
        trigger_timestamp_ms: 1_764_000_000_000,
        completion_timestamp_ms: 1_764_000_000_250,
        cairn_version: "0.1.0".into(),
        operators: vec![operator("readings", vec![]), operator("echo", vec![channel_file])],
    }
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
        std::fs::create_dir_all(&dir).unwrap();
        let (bytes, file) = channel_state_bytes();
        std::fs::write(dir.join(channel_file_name()), bytes).unwrap();
        std::fs::write(dir.join("_metadata"), encode_metadata(&golden_metadata(file)).unwrap()).unwrap();
        eprintln!("regenerated golden fixture in {}", dir.display());
    });
}

#[test]
fn golden_v4_loads_and_its_channel_state_decodes_exactly() {
    regenerate_if_asked();
    let storage = LocalFileStorage::new();
    let snap = load_snapshot(&storage, &golden_dir()).expect("golden v4 fixture must load");
    let m = &snap.metadata;
    assert_eq!(
        (m.format_version, m.kind, m.checkpoint_id),
        (4, SnapshotKind::Checkpoint, 3)
    );
    assert!(m.has_channel_state());
    let file = &m.operators[1].subtasks[0].files[0];
    assert_eq!(file.format, FileFormat::ChannelStateV1);
    assert_eq!(file.path, channel_file_name());
    let bytes = std::fs::read(golden_dir().join(&file.path)).unwrap();
    let reader = StateFileReader::from_bytes(Path::new(&file.path), bytes).unwrap();
    let index = decode_channel_index(reader.section(CHANNELS_SECTION, None).unwrap()).unwrap();
    assert_eq!(index.len(), 2);
    assert!(index.iter().all(|e| e.channel == golden_descriptor()));
    let entries: Vec<(&str, u32, u64, u64)> = index
        .iter()
        .map(|e| (e.section.as_str(), e.tier, e.messages, e.records))
        .collect();
    assert_eq!(entries, vec![("channel/0", 1, 1, 2), ("channel/1", 0, 4, 1)]);
    let codec = batch_codec::<Reading>();
    let mut msgs = decode_channel_messages(reader.section("channel/0", None).unwrap(), &*codec).unwrap();
    msgs.extend(decode_channel_messages(reader.section("channel/1", None).unwrap(), &*codec).unwrap());
    let shown: Vec<String> = msgs
        .into_iter()
        .map(|m| match m {
            Message::Records(b, n, _) => {
                let rs = b.downcast::<Vec<StreamRecord<Reading>>>().unwrap();
                assert_eq!(rs.len() as u64, n);
                rs.iter()
                    .map(|r| format!("{}={}@{}", r.value.sensor, r.value.value, r.timestamp))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shown,
        vec!["a=1@10,b=2@11", "Watermark(11)", "Idle(true)", "Idle(false)", "a=3@12"]
    );
}

/// The writers still produce exactly the committed v4 bytes.
#[test]
fn writer_still_produces_v4_bytes() {
    regenerate_if_asked();
    let (bytes, file) = channel_state_bytes();
    assert_eq!(std::fs::read(golden_dir().join(channel_file_name())).unwrap(), bytes);
    assert_eq!(
        std::fs::read(golden_dir().join("_metadata")).unwrap(),
        encode_metadata(&golden_metadata(file)).unwrap()
    );
}

/// Echoes each reading with its running count per sensor; a sensor's first
/// reading sets an event-time timer at 11 that reports the count then.
#[derive(Clone, Default)]
struct Echo {
    seen: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, Reading, String> for Echo {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.seen = Some(ctx.value_state(ValueStateDescriptor::new("seen"))?);
        Ok(())
    }

    fn process_element(&mut self, r: Reading, ctx: &mut KeyedContext<'_, String, String>) -> OpResult {
        let seen = self.seen.as_ref().ok_or("not opened")?;
        let n = seen.value(ctx)?.unwrap_or(0) + 1;
        seen.update(ctx, &n)?;
        if n == 1 {
            ctx.register_event_time_timer(11)?;
        }
        ctx.collect(format!("{} {} #{n}", r.sensor, r.value));
        Ok(())
    }

    fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, String, String>) -> OpResult {
        let seen = self.seen.as_ref().ok_or("not opened")?;
        let n = seen.value(ctx)?.unwrap_or(0);
        let key = ctx.key().clone();
        ctx.collect(format!("{key} timer after #{n}"));
        Ok(())
    }
}

/// A job restored from the fixture replays its in-flight records first, in
/// order (the restored batch of tier 1, then tier 0), then processes its own
/// input. The stored watermark (11) is not replayed: it described the
/// upstream before the restore, so the timers at 11 fire only when the
/// restarted source's event time passes them (at its end), after every record.
#[test]
fn a_job_restored_from_the_golden_v4_checkpoint_replays_its_in_flight_records_first() {
    regenerate_if_asked();
    let mut config = Configuration::new();
    config.set("parallelism.default", "1").unwrap();
    config.set("restart-strategy.type", "none").unwrap();
    let env = StreamEnv::with_startup(StartupOptions {
        config,
        restore_path: Some(golden_dir()),
        ..Default::default()
    });
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![reading("a", 100), reading("c", 200)])
        .uid("readings")
        .key_by(|r: &Reading| r.sensor.clone())
        .process(Echo::default())
        .uid("echo")
        .sink(sink);
    env.execute("from golden v4")
        .expect("the golden v4 checkpoint restores");
    let got = out.values();
    assert_eq!(
        got[..5],
        ["a 1 #1", "b 2 #1", "a 3 #2", "a 100 #3", "c 200 #1"],
        "records first, in order: {got:?}"
    );
    let mut timers = got[5..].to_vec();
    timers.sort();
    assert_eq!(
        timers,
        ["a timer after #3", "b timer after #1", "c timer after #1"],
        "{got:?}"
    );
}
