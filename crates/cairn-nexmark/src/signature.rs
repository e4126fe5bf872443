//! Checksums of query results, computed the same way by the Flink jobs in
//! `benches/nexmark-flink`: a record's signature mixes its fields; a run's
//! checksum is the wrapping sum of its records' signatures, so it does not
//! depend on the order in which parallel subtasks deliver them. Equal
//! checksums from both engines say they computed the same result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn::prelude::*;

use crate::generator::mix;

/// A record's contribution to a run's checksum.
pub trait Signature {
    fn signature(&self) -> u64;
}

/// FNV-1a of a string's UTF-8 bytes.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Mixes fields in order into one signature.
pub fn sig(fields: &[u64]) -> u64 {
    fields.iter().fold(0x243f_6a88_85a3_08d3, |h, f| mix(h ^ f))
}

/// A run's record count and checksum, over all subtasks.
#[derive(Clone, Debug, Default)]
pub struct Checksum {
    records: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
}

impl Checksum {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }
}

/// A sink that only counts and signs what it receives (the benchmark's
/// discarding sink). `sign` picks the signature, so q12 can sign by totals.
pub struct ChecksumSink<T> {
    checksum: Checksum,
    sign: fn(&T) -> u64,
}

impl<T> Clone for ChecksumSink<T> {
    fn clone(&self) -> Self {
        ChecksumSink {
            checksum: self.checksum.clone(),
            sign: self.sign,
        }
    }
}

impl<T: Signature> ChecksumSink<T> {
    /// A sink signing records by [`Signature::signature`], and its checksum.
    pub fn new() -> (Self, Checksum) {
        Self::signed_by(|t: &T| t.signature())
    }
}

impl<T> ChecksumSink<T> {
    /// A sink signing records by `sign`, and its checksum.
    pub fn signed_by(sign: fn(&T) -> u64) -> (Self, Checksum) {
        let checksum = Checksum::default();
        (
            ChecksumSink {
                checksum: checksum.clone(),
                sign,
            },
            checksum,
        )
    }
}

impl<T: Send + 'static> Sink<T> for ChecksumSink<T> {
    fn write_batch(&mut self, batch: Vec<StreamRecord<T>>) -> OpResult {
        let mut sum = 0u64;
        for r in &batch {
            sum = sum.wrapping_add((self.sign)(&r.value));
        }
        self.checksum.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.checksum.sum.fetch_add(sum, Ordering::Relaxed);
        Ok(())
    }
}

/// The checksum of records computed without an engine (for oracles).
pub fn checksum_of<'a, T: Signature + 'a>(records: impl IntoIterator<Item = &'a T>) -> (u64, u64) {
    records
        .into_iter()
        .fold((0, 0), |(n, s), r| (n + 1, s.wrapping_add(r.signature())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_and_sig_are_the_documented_functions() {
        // FNV-1a test vectors.
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(sig(&[1, 2]), sig(&[2, 1]));
        assert_eq!(sig(&[]), 0x243f_6a88_85a3_08d3);
    }
}
