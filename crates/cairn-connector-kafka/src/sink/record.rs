//! Records as the sink writes them, and as exactly-once keeps them in its snapshots until
//! their transaction is committed.

use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record to write: value, key, headers, timestamp and optionally its topic (the
/// per-record topic selector; else the sink's topic) and partition (else Kafka's
/// partitioner: by key hash, or sticky without a key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaRecord {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Epoch ms; default: the stream record's timestamp if it has one, else the producer's clock.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaRecord {
    /// A record with this value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        KafkaRecord {
            value: Some(value.into()),
            ..KafkaRecord::default()
        }
    }
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
    pub fn header(mut self, key: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.headers.push((key.into(), value));
        self
    }
}

/// Bytes serialised as one binary value (not a sequence of numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A record as kept in the exactly-once sink's state (`kafka-sink-transactions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalRecord {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl From<KafkaRecord> for WalRecord {
    fn from(r: KafkaRecord) -> Self {
        WalRecord {
            topic: r.topic,
            partition: r.partition,
            key: r.key.map(Bytes),
            value: r.value.map(Bytes),
            timestamp: r.timestamp,
            headers: r.headers.into_iter().map(|(k, v)| (k, v.map(Bytes))).collect(),
        }
    }
}

impl WalRecord {
    pub fn headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: v.as_ref().map(|b| b.0.as_slice()),
            });
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_state_codec_with_bytes_as_binary() {
        let r = WalRecord::from(
            KafkaRecord::value(vec![0u8, 159, 255])
                .key("k")
                .topic("t")
                .partition(2)
                .timestamp(42)
                .header("h", None)
                .header("g", Some(vec![1, 2])),
        );
        let mut bytes = Vec::new();
        cairn_state::codec::encode_into("record", &r, &mut bytes).unwrap();
        // MessagePack bin 8 (0xc4) for the value, not an array of integers.
        assert!(bytes.windows(2).any(|w| w == [0xc4, 3]), "{bytes:?}");
        let back: WalRecord = cairn_state::codec::decode("record", &bytes).unwrap();
        assert_eq!(back, r);
    }
}
