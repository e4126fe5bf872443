//! Transport-free requests and responses, and the [`Handler`] trait.

use std::net::SocketAddr;

use cairn_rest_client::{ApiError, ERROR_CODE_HEADER};

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Over TCP, from this address.
    Tcp(SocketAddr),
    /// Over the owner-only Unix socket, from a process of the server's own
    /// user (checked with the socket's peer credentials): trusted.
    Local,
    /// Built in code (tests, in-process calls): treated like loopback TCP.
    InProcess,
}

impl Peer {
    /// Whether the request comes from the server's own user over its socket.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Peer::Local)
    }

    /// Whether the request comes from this machine.
    pub fn is_loopback(&self) -> bool {
        match self {
            Peer::Tcp(a) => a.ip().is_loopback(),
            Peer::Local | Peer::InProcess => true,
        }
    }
}

/// A request, fully read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target as sent (path and query, still encoded).
    pub target: String,
    /// Percent-decoded path segments, empty segments removed
    /// (`/jobs//x/` gives `["jobs", "x"]`).
    pub segments: Vec<String>,
    /// Percent-decoded query parameters, in order.
    pub query: QueryParams,
    /// Headers with lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Peer,
}

impl Request {
    /// A request built in code (tests, in-process calls).
    pub fn new(method: &str, target: &str, body: &[u8]) -> Result<Request, ApiError> {
        let (segments, query) = parse_target(target)?;
        Ok(Request {
            method: method.to_string(),
            target: target.to_string(),
            segments,
            query,
            headers: Vec::new(),
            body: body.to_vec(),
            peer: Peer::InProcess,
        })
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets who sent it (builder style).
    pub fn with_peer(mut self, peer: Peer) -> Request {
        self.peer = peer;
        self
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The path, re-joined from its decoded segments (for logs).
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body,
        }
    }

    /// A response with any body.
    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// A plain-text response (Prometheus' text format version 0.0.4).
    pub fn prometheus(text: String) -> Response {
        Response::bytes(200, "text/plain; version=0.0.4; charset=utf-8", text.into_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (tests, client code).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The response of an error: Flink's body, the stable code in a header.
pub fn error_response(e: &ApiError) -> Response {
    let r = Response::json(e.status, &e.to_json()).with_header(ERROR_CODE_HEADER, e.code);
    if e.status == 401 {
        r.with_header("WWW-Authenticate", "Bearer realm=\"cairn\"")
    } else {
        r
    }
}

/// Answers requests. Implementations must not panic on bad input (a panic
/// is answered with a 500, and the server keeps serving).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Response;
}

/// Decoded query parameters, in order.
pub type QueryParams = Vec<(String, String)>;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Splits a target into decoded path segments and query parameters.
pub fn parse_target(target: &str) -> Result<(Vec<String>, QueryParams), ApiError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        segments.push(percent_decode(raw, false)?);
    }
    let mut params = Vec::new();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((percent_decode(k, true)?, percent_decode(v, true)?));
    }
    Ok((segments, params))
}

/// Decodes `%XX` escapes (and `+` as space in queries); the result must be
/// UTF-8 without control characters.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => {
                        return Err(ApiError::bad_request(
                            "BAD_HTTP",
                            format!("invalid percent-encoding in '{}'", truncate(s, 100)),
                        ))
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(out)
        .map_err(|_| ApiError::bad_request("BAD_HTTP", format!("'{}' does not decode to UTF-8", truncate(s, 100))))?;
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "BAD_HTTP",
            "control characters are not allowed in the path or query",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decode() {
        let (s, q) = parse_target("/jobs//a%20b/?mode=cancel&x=1+2&flag").unwrap();
        assert_eq!(s, vec!["jobs", "a b"]);
        assert_eq!(
            q,
            vec![
                ("mode".to_string(), "cancel".to_string()),
                ("x".to_string(), "1 2".to_string()),
                ("flag".to_string(), String::new())
            ]
        );
        assert_eq!(parse_target("/a%zz").unwrap_err().code, "BAD_HTTP");
        assert_eq!(parse_target("/a%0a").unwrap_err().code, "BAD_HTTP");
        assert_eq!(parse_target("/a%ff").unwrap_err().code, "BAD_HTTP");
        assert_eq!(parse_target("/x#frag").unwrap().0, vec!["x"]);
    }

    #[test]
    fn errors_have_flinks_shape_and_the_code_in_a_header() {
        let r = error_response(&ApiError::new(404, "JOB_NOT_FOUND", "no job"));
        assert_eq!(r.status, 404);
        assert_eq!(r.body_json(), serde_json::json!({ "errors": ["no job"] }));
        assert_eq!(r.header("cairn-error-code"), Some("JOB_NOT_FOUND"));
        let r = error_response(&ApiError::new(401, "UNAUTHORIZED", "token"));
        assert!(r.header("www-authenticate").is_some());
    }

    #[test]
    fn peers() {
        assert!(Peer::Local.is_trusted() && Peer::Local.is_loopback());
        assert!(!Peer::InProcess.is_trusted());
        assert!(Peer::Tcp("127.0.0.1:1".parse().unwrap()).is_loopback());
        assert!(!Peer::Tcp("10.0.0.1:1".parse().unwrap()).is_loopback());
    }
}
