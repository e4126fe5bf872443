//! cairn-rest-client: what the `cairn` CLI needs to talk to running jobs,
//! without any engine crate.
//!
//! * [`client`]: a small HTTP/1.1 client over TCP or a Unix socket.
//! * [`registry`]: job discovery on one machine (`<CAIRN_HOME>/jobs/<id>.json`
//!   and each job's trusted control socket next to it).
//! * [`paths`]: the rules for paths named in requests (allowed roots for TCP,
//!   any absolute path over the trusted socket).
//! * [`auth`]: bearer tokens and loopback checks.
//! * [`launch`]: starting a job binary in the background, as `cairn run` does.
//! * [`error`]: [`ApiError`], the error a request gets back (status, stable
//!   code, message), shared by server and client.

pub mod auth;
pub mod client;
pub mod error;
pub mod launch;
pub mod paths;
pub mod registry;

pub use client::{Endpoint, HttpClient, HttpResponse};
pub use error::{ApiError, ERROR_CODE_HEADER};
pub use registry::{Registry, RegistryEntry, ResolveError};

/// `n` random lowercase hex digits (trigger ids, log names), from the OS.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        // No /dev/urandom: hash the time, the pid and a counter.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.write_u32(std::process::id());
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_has_the_length_and_alphabet() {
        for n in [0, 1, 6, 32, 33] {
            let h = super::random_hex(n);
            assert_eq!(h.len(), n);
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(super::random_hex(32), super::random_hex(32));
    }
}
