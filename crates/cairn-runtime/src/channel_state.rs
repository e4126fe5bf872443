//! Channel state of unaligned checkpoints: the in-flight messages a task had
//! not processed when it snapshotted, logged per input channel while it
//! captures them, written as one checksummed state-file container per
//! subtask beside its operator state, and decoded on restore so the task
//! replays them, in order, before it reads new input.
//!
//! File layout (spec: `docs/formats/channel-state.md`): a state-file
//! container with a `channels` section (JSON index: per channel, its section
//! and which upstream it comes from) and one `channel/<i>` section per
//! channel with messages. A message is a tag byte and its payload:
//!
//! ```text
//! 0  records    LEB128 length, then the batch in the edge's record codec (codec.rs)
//! 1  watermark  i64 little-endian
//! 2  idleness   u8: 1 idle, 0 active
//! ```
//!
//! Barriers and end-of-input are never channel state: a barrier ends the
//! capture of its channel, and an upstream that ended before the checkpoint
//! ends again after a restore.

use std::io::Write;
use std::path::Path;

use cairn_snapshot::{FileFormat, SnapshotError, StateFileRef, StateFileWriter, Storage};
use cairn_state::codec::{get_bytes, put_bytes};
use serde::{Deserialize, Serialize};

use crate::codec::BatchCodec;
use crate::error::OpResult;
use crate::record::Message;

/// Section holding the JSON index of a channel-state file.
pub const CHANNELS_SECTION: &str = "channels";
/// File name suffix of channel-state files.
pub const CHANNEL_STATE_SUFFIX: &str = ".channel";

const TAG_RECORDS: u8 = 0;
const TAG_WATERMARK: u8 = 1;
const TAG_IDLE: u8 = 2;

/// Section name of channel `i` of a channel-state file.
pub fn channel_section(i: usize) -> String {
    format!("channel/{i}")
}

/// Which upstream an input channel comes from; stable across restarts of
/// the same job, so restored channel state finds its channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelDescriptor {
    /// The logical input (0, or 1 for two-input operators) it feeds.
    pub input: usize,
    /// Operator id of the node that sends on it.
    pub source_operator_id: String,
    /// Among the edges from that node to this input, which one (0 unless a
    /// stream is connected to the same operator twice).
    pub edge_ordinal: u32,
    /// The sending subtask.
    pub source_subtask: u32,
}

impl std::fmt::Display for ChannelDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "input {} from operator {} subtask {}",
            self.input,
            self.source_operator_id,
            self.source_subtask + 1
        )?;
        if self.edge_ordinal > 0 {
            write!(f, " (edge {})", self.edge_ordinal + 1)?;
        }
        Ok(())
    }
}

/// One entry of the `channels` index: the messages of one channel at one
/// tier (a channel has an entry per tier it holds messages of).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelIndexEntry {
    pub section: String,
    #[serde(flatten)]
    pub channel: ChannelDescriptor,
    /// Replay order across channels: every message of a higher tier is
    /// replayed before any of a lower one. 0: records that were in flight;
    /// t + 1: records restored at tier t that were still not processed at
    /// this snapshot (a restore can move a key to another channel, so what
    /// was restored must stay ahead of what came after it, checkpoint after
    /// checkpoint).
    #[serde(default)]
    pub tier: u32,
    pub messages: u64,
    pub records: u64,
}

/// The messages logged for one channel.
#[derive(Clone, Debug, Default)]
pub struct ChannelLog {
    bytes: Vec<u8>,
    messages: u64,
    records: u64,
}

impl ChannelLog {
    /// Append `msg`; barriers and end-of-input are not channel state.
    pub fn log(&mut self, msg: &Message, codec: &dyn BatchCodec, scratch: &mut Vec<u8>) -> OpResult {
        match msg {
            Message::Records(batch, _, _) => {
                scratch.clear();
                self.records += codec.encode(batch, scratch)?;
                self.bytes.push(TAG_RECORDS);
                put_bytes(&mut self.bytes, scratch);
            }
            Message::Watermark(wm) => {
                self.bytes.push(TAG_WATERMARK);
                self.bytes.extend_from_slice(&wm.to_le_bytes());
            }
            Message::Idle(idle) => {
                self.bytes.push(TAG_IDLE);
                self.bytes.push(u8::from(*idle));
            }
            Message::Barrier(_) | Message::EndOfInput { .. } => return Ok(()),
        }
        self.messages += 1;
        Ok(())
    }

    /// Bytes logged.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// The logged messages of one channel at one tier.
pub struct TierLog {
    pub channel: ChannelDescriptor,
    pub tier: u32,
    pub log: ChannelLog,
}

/// A task's channel state for one checkpoint, ready to be written.
pub struct ChannelStateUpload {
    /// The chain's head node (whose inputs these are) and its operator id.
    pub node: usize,
    pub operator_id: String,
    pub channels: Vec<TierLog>,
}

impl ChannelStateUpload {
    /// Whether no channel holds anything (then no file is written).
    pub fn is_empty(&self) -> bool {
        self.channels.iter().all(|c| c.log.is_empty())
    }
}

/// Write `upload` to `dir/name` (durable when this returns); `None` when
/// every channel is empty. The reference has format `channel_state_v1`.
/// Storage errors keep their kind (a full disk is `STORAGE_FULL`, with the path).
pub fn write_channel_state(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    upload: &ChannelStateUpload,
) -> Result<Option<StateFileRef>, SnapshotError> {
    if upload.is_empty() {
        return Ok(None);
    }
    let path = dir.join(name);
    let write = |e: std::io::Error| SnapshotError::io("write", &path, e);
    let mut w = StateFileWriter::create(storage, &path)?;
    let mut index = Vec::new();
    for (i, c) in upload.channels.iter().filter(|c| !c.log.is_empty()).enumerate() {
        let section = channel_section(i);
        w.begin_section(&section, None)?;
        w.write_all(&c.log.bytes).map_err(write)?;
        index.push(ChannelIndexEntry {
            section,
            channel: c.channel.clone(),
            tier: c.tier,
            messages: c.log.messages,
            records: c.log.records,
        });
    }
    let json = serde_json::to_vec(&index).map_err(|e| SnapshotError::Protocol {
        context: "channel-state index".into(),
        reason: format!("cannot encode it: {e}"),
    })?;
    w.begin_section(CHANNELS_SECTION, None)?;
    w.write_all(&json).map_err(write)?;
    let info = w.finish_durable()?;
    let mut r = info.to_file_ref(name);
    r.format = FileFormat::ChannelStateV1;
    Ok(Some(r))
}

/// Parse the `channels` index section.
pub fn decode_channel_index(bytes: &[u8]) -> Result<Vec<ChannelIndexEntry>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the '{CHANNELS_SECTION}' index is not valid: {e}"))
}

/// Decode one channel's section into the messages to replay, in order.
pub fn decode_channel_messages(bytes: &[u8], codec: &dyn BatchCodec) -> Result<Vec<Message>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((&tag, tail)) = rest.split_first() {
        let at = out.len();
        let msg = match tag {
            TAG_RECORDS => {
                let (batch, tail) = get_bytes(tail).ok_or_else(|| format!("message {at}: records are truncated"))?;
                rest = tail;
                let batch = codec.decode(batch).map_err(|e| format!("message {at}: {e}"))?;
                let n = codec.count(&batch);
                Message::Records(batch, n, None)
            }
            TAG_WATERMARK => {
                let b: [u8; 8] = tail
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("message {at}: watermark is truncated"))?;
                rest = &tail[8..];
                Message::Watermark(i64::from_le_bytes(b))
            }
            TAG_IDLE => {
                let (&b, tail) = tail
                    .split_first()
                    .ok_or_else(|| format!("message {at}: idleness is truncated"))?;
                rest = tail;
                Message::Idle(b != 0)
            }
            other => return Err(format!("message {at}: unknown tag {other}")),
        };
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::batch_codec;
    use crate::record::StreamRecord;
    use cairn_snapshot::{InMemoryStorage, StateFileReader};

    fn descriptor(subtask: u32) -> ChannelDescriptor {
        ChannelDescriptor {
            input: 0,
            source_operator_id: "00112233445566778899aabbccddeeff".into(),
            edge_ordinal: 0,
            source_subtask: subtask,
        }
    }

    #[test]
    fn logged_messages_are_written_and_read_back_in_order() {
        let codec = batch_codec::<String>();
        let mut scratch = Vec::new();
        let mut a = ChannelLog::default();
        a.log(&Message::Watermark(5), &*codec, &mut scratch).unwrap();
        let batch: Vec<StreamRecord<String>> = vec![StreamRecord::with_timestamp("x".into(), 3)];
        a.log(
            &Message::Records(Box::new(batch.clone()), 1, None),
            &*codec,
            &mut scratch,
        )
        .unwrap();
        a.log(
            &Message::Barrier(crate::record::Barrier {
                checkpoint_id: 1,
                timestamp_ms: 0,
                snapshot_type: crate::record::SnapshotType::Checkpoint,
            }),
            &*codec,
            &mut scratch,
        )
        .unwrap();
        a.log(&Message::Idle(true), &*codec, &mut scratch).unwrap();
        let upload = ChannelStateUpload {
            node: 1,
            operator_id: "x".into(),
            channels: vec![
                TierLog {
                    channel: descriptor(0),
                    tier: 0,
                    log: ChannelLog::default(),
                },
                TierLog {
                    channel: descriptor(1),
                    tier: 2,
                    log: a,
                },
            ],
        };
        let storage = InMemoryStorage::new();
        let dir = Path::new("/chk-1");
        storage.create_dir_all(dir).unwrap();
        let r = write_channel_state(&storage, dir, "op-x-0.channel", &upload)
            .unwrap()
            .unwrap();
        assert_eq!(r.format, FileFormat::ChannelStateV1);
        let bytes = storage.read(&dir.join("op-x-0.channel")).unwrap();
        let reader = StateFileReader::from_bytes(Path::new("op-x-0.channel"), bytes).unwrap();
        let index = decode_channel_index(reader.section(CHANNELS_SECTION, None).unwrap()).unwrap();
        assert_eq!(index.len(), 1, "empty channels are left out");
        assert_eq!(
            (
                index[0].channel.source_subtask,
                index[0].tier,
                index[0].messages,
                index[0].records
            ),
            (1, 2, 3, 1)
        );
        let msgs = decode_channel_messages(reader.section(&index[0].section, None).unwrap(), &*codec).unwrap();
        assert_eq!(msgs.len(), 3);
        assert!(matches!(msgs[0], Message::Watermark(5)));
        match &msgs[1] {
            Message::Records(b, 1, None) => assert_eq!(b.downcast_ref::<Vec<StreamRecord<String>>>().unwrap(), &batch),
            _ => panic!("records expected"),
        }
        assert!(matches!(msgs[2], Message::Idle(true)));
        let empty = ChannelStateUpload {
            node: 1,
            operator_id: "x".into(),
            channels: vec![TierLog {
                channel: descriptor(0),
                tier: 0,
                log: ChannelLog::default(),
            }],
        };
        assert!(write_channel_state(&storage, dir, "none", &empty).unwrap().is_none());
    }

    #[test]
    fn damaged_channel_sections_are_errors() {
        let codec = batch_codec::<u32>();
        assert!(decode_channel_messages(&[9], &*codec)
            .unwrap_err()
            .contains("unknown tag 9"));
        assert!(decode_channel_messages(&[1, 0, 0], &*codec)
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_channel_messages(&[0, 5, 1], &*codec)
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_channel_messages(&[2], &*codec)
            .unwrap_err()
            .contains("truncated"));
    }
}
