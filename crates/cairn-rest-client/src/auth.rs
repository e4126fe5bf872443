//! Bearer-token authentication of mutating calls.
//!
//! The token comes from `rest.auth-token` (alias `rest.auth.token`) or, when
//! that is unset, from the environment variable `CAIRN_REST_TOKEN`. When a
//! token is configured, every mutating call (`POST`, `PATCH`, `PUT`,
//! `DELETE`) must send `Authorization: Bearer <token>`. A server bound to a
//! non-loopback address refuses to start without one.

use std::net::{IpAddr, ToSocketAddrs};

use cairn_config::{options, Configuration};

use crate::error::ApiError;

/// Environment variable holding the REST token (server and CLI).
pub const TOKEN_ENV: &str = "CAIRN_REST_TOKEN";

/// The configured token: `rest.auth-token`, else `$CAIRN_REST_TOKEN`;
/// blank values count as unset.
pub fn configured_token(config: &Configuration) -> Option<String> {
    config
        .get(&options::REST_AUTH_TOKEN)
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether a method changes something and so needs the token.
pub fn is_mutating(method: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "PUT" | "DELETE")
}

/// Checks an `Authorization` header against the expected token.
pub fn check_bearer(expected: &str, header: Option<&str>) -> Result<(), ApiError> {
    let Some(value) = header else {
        return Err(ApiError::new(
            401,
            "UNAUTHORIZED",
            "this call changes the job and needs 'Authorization: Bearer <token>' (the token of rest.auth-token or CAIRN_REST_TOKEN)",
        ));
    };
    let presented = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(401, "UNAUTHORIZED", "the bearer token is wrong")),
        None => Err(ApiError::new(
            401,
            "UNAUTHORIZED",
            "the Authorization header must have the form 'Bearer <token>'",
        )),
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Whether every address `host` names is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    match (h, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        assert!(check_bearer("s3cret", Some("Bearer s3cret")).is_ok());
        assert!(check_bearer("s3cret", Some("bearer  s3cret ")).is_ok());
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0"),
            Some("s3cret"),
            Some("Bearer s3cre"),
        ] {
            let e = check_bearer("s3cret", bad).unwrap_err();
            assert_eq!((e.status, e.code), (401, "UNAUTHORIZED"), "{bad:?}");
        }
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_from_config() {
        let mut c = Configuration::new();
        c.set("rest.auth.token", " t0k ").unwrap();
        assert_eq!(configured_token(&c).as_deref(), Some("t0k"));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("::1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("0.0.0.0"));
        assert!(!is_loopback_host("::"));
        assert!(!is_loopback_host("10.1.2.3"));
    }

    #[test]
    fn mutating_methods() {
        assert!(is_mutating("POST") && is_mutating("PATCH") && is_mutating("DELETE"));
        assert!(!is_mutating("GET") && !is_mutating("HEAD"));
    }
}
