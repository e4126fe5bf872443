//! A Kafka partition as a source split: its identity and read position.

use cairn_connectors::split::SourceSplit;
use serde::{Deserialize, Serialize};

/// One partition of one topic, as kept in the source's state (`kafka-source-splits`,
/// see docs/connectors.md): the next offset to read and, for a bounded source, the
/// offset to stop before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPartitionSplit {
    pub topic: String,
    pub partition: i32,
    /// The offset of the next record to read.
    pub next_offset: i64,
    /// Bounded: the partition is read up to (excluding) this offset.
    pub stop_offset: Option<i64>,
}

impl SourceSplit for KafkaPartitionSplit {
    type Id = (String, i32);

    fn id(&self) -> (String, i32) {
        (self.topic.clone(), self.partition)
    }

    fn is_finished(&self) -> bool {
        self.stop_offset.is_some_and(|stop| self.next_offset >= stop)
    }
}
