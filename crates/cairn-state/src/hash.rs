//! Stable, platform-independent hash functions.
//!
//! Cairn persists hash results (key groups, operator ids) inside checkpoints and savepoints, so
//! these functions must never change behaviour. Both are MurmurHash3 (Austin Appleby's public
//! domain algorithm) and are pinned bit for bit by golden vectors in
//! `tests/keygroup_golden.rs`, generated with an independent implementation (Python `mmh3`).
//! Never replace them with `std::collections::hash_map::DefaultHasher` or anything seeded at
//! random. The specification lives in `docs/key-groups.md`.
//!
//! Multi-byte blocks are always read as little-endian, whatever the host byte order, so results
//! are the same on every platform.

/// MurmurHash3, x86 variant, 32-bit output.
///
/// Used for the key-group hash: `key_group = murmur3_x86_32(key_bytes, 0) % max_parallelism`.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;

    #[inline]
    fn scramble(mut k: u32) -> u32 {
        k = k.wrapping_mul(C1);
        k = k.rotate_left(15);
        k.wrapping_mul(C2)
    }

    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= scramble(k);
        h = h.rotate_left(13);
        h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        h ^= scramble(k);
    }

    // The reference mixes in the length as a 32-bit integer.
    h ^= data.len() as u32;
    fmix32(h)
}

#[inline]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// MurmurHash3, x64 variant, 128-bit output, returned as `(h1, h2)`.
///
/// The reference writes the digest as `h1` then `h2`, each as 8 little-endian bytes.
/// Used for operator ids, see [`operator_id_for_uid`].
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;

    #[inline]
    fn mix_k1(k1: u64) -> u64 {
        k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
    }
    #[inline]
    fn mix_k2(k2: u64) -> u64 {
        k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
    }
    #[inline]
    fn le_u64(bytes: &[u8]) -> u64 {
        // Reads up to 8 bytes as a little-endian integer; missing high bytes are zero.
        bytes
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &b)| acc | (u64::from(b) << (8 * i)))
    }

    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let k1 = le_u64(&block[0..8]);
        let k2 = le_u64(&block[8..16]);

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2);
        h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);

        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1);
        h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(le_u64(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(le_u64(&tail[..tail.len().min(8)]));
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;

    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);

    h1 = fmix64(h1);
    h2 = fmix64(h2);

    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);

    (h1, h2)
}

/// The operator id of a `uid`: MurmurHash3 x64_128 of the uid's UTF-8 bytes with seed 0,
/// written as 32 lowercase hex digits — `h1` as 16 hex digits (most significant first)
/// followed by `h2` as 16 hex digits.
///
/// Operator ids are stored in savepoints and match state to operators on restore, so this
/// mapping is part of the on-disk contract (see `docs/key-groups.md`).
pub fn operator_id_for_uid(uid: &str) -> String {
    let (h1, h2) = murmur3_x64_128(uid.as_bytes(), 0);
    format!("{h1:016x}{h2:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // A few spot checks; the exhaustive golden vectors live in tests/keygroup_golden.rs.
    #[test]
    fn x86_32_known_values() {
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(b"hello", 0), 613_153_351);
    }

    #[test]
    fn x64_128_known_values() {
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
        assert_eq!(
            murmur3_x64_128(b"hello", 0),
            (14_688_674_573_012_802_306, 6_565_844_092_913_065_241)
        );
    }

    #[test]
    fn operator_id_format() {
        let id = operator_id_for_uid("anything");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(operator_id_for_uid(""), "0".repeat(32));
    }
}
