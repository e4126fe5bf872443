//! A deliberately small HTTP/1.1 server side: one request per connection
//! (`Connection: close`), `Content-Length` bodies only, strict limits on the
//! size of the head and the body. Everything that does not fit is refused
//! with a 4xx/5xx [`ApiError`] rather than guessed at.

use std::io::{self, BufRead, Read, Write};

use crate::error::ApiError;

/// Largest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body (JSON requests are tiny; this leaves ample room).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 100;

/// A parsed request.
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
        })
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
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

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (or timed out) before sending anything.
    Closed,
    /// The connection failed mid-request; nothing can be answered.
    Io(io::Error),
    /// The request is malformed or too large; answer with this error.
    Bad(ApiError),
}

impl From<ApiError> for ReadError {
    fn from(e: ApiError) -> Self {
        ReadError::Bad(e)
    }
}

/// Reads one line of the head, counting it against the head budget.
fn read_head_line<R: BufRead>(reader: &mut R, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let mut limited = reader.take(*budget as u64 + 1);
    let n = match limited.read_until(b'\n', &mut line) {
        Ok(n) => n,
        Err(e) => return Err(ReadError::Io(e)),
    };
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(ApiError::new(
            431,
            "HEADERS_TOO_LARGE",
            format!("the request line and headers exceed {MAX_HEAD_BYTES} bytes"),
        )
        .into());
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        // EOF in the middle of a line.
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of the request head",
        )));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ApiError::bad_request("BAD_HTTP", "the request head is not valid UTF-8").into())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads one request. `continue_to` receives `100 Continue` when the client
/// asks for it before sending its body.
pub fn read_request<R: BufRead, W: Write>(reader: &mut R, continue_to: &mut W) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    // Tolerate empty lines before the request line (RFC 9112 2.2).
    let request_line = loop {
        match read_head_line(reader, &mut budget) {
            Ok(None) => return Err(ReadError::Closed),
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Err(ReadError::Io(e))
                if budget == MAX_HEAD_BYTES
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                return Err(ReadError::Closed)
            }
            Err(e) => return Err(e),
        }
    };
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => {
            return Err(ApiError::bad_request(
                "BAD_HTTP",
                format!(
                    "malformed request line '{}'; expected 'METHOD /path HTTP/1.1'",
                    truncate(&request_line, 200)
                ),
            )
            .into())
        }
    };
    if !is_token(method) {
        return Err(ApiError::bad_request("BAD_HTTP", format!("malformed method '{}'", truncate(method, 50))).into());
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => {
            return Err(ApiError::new(
                505,
                "HTTP_VERSION_NOT_SUPPORTED",
                format!("{} is not supported; use HTTP/1.1", truncate(v, 20)),
            )
            .into())
        }
        _ => return Err(ApiError::bad_request("BAD_HTTP", "malformed request line: missing HTTP version").into()),
    }
    if !target.starts_with('/') {
        return Err(ApiError::bad_request(
            "BAD_HTTP",
            format!(
                "request target '{}' must be a path starting with '/'",
                truncate(target, 200)
            ),
        )
        .into());
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = match read_head_line(reader, &mut budget)? {
            Some(l) => l,
            None => {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the headers",
                )))
            }
        };
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            return Err(ApiError::bad_request("BAD_HTTP", "folded header lines are not accepted").into());
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(
                ApiError::bad_request("BAD_HTTP", format!("malformed header line '{}'", truncate(&line, 100))).into(),
            );
        };
        if !is_token(name) {
            return Err(
                ApiError::bad_request("BAD_HTTP", format!("malformed header name '{}'", truncate(name, 100))).into(),
            );
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ApiError::new(431, "HEADERS_TOO_LARGE", format!("more than {MAX_HEADERS} headers")).into());
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(ApiError::new(
            411,
            "LENGTH_REQUIRED",
            "chunked or other transfer encodings are not supported; send the body with a Content-Length",
        )
        .into());
    }
    let mut length: Option<usize> = None;
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        let n: usize = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse().unwrap_or(usize::MAX)
        } else {
            return Err(
                ApiError::bad_request("BAD_HTTP", format!("invalid Content-Length '{}'", truncate(v, 30))).into(),
            );
        };
        if length.is_some_and(|l| l != n) {
            return Err(ApiError::bad_request("BAD_HTTP", "conflicting Content-Length headers").into());
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            "PAYLOAD_TOO_LARGE",
            format!("the request body has {length} bytes; at most {MAX_BODY_BYTES} are accepted"),
        )
        .into());
    }
    let (segments, query) = parse_target(target)?;
    if length > 0
        && headers
            .iter()
            .any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case("100-continue"))
    {
        let _ = continue_to.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        let _ = continue_to.flush();
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(ReadError::Io)?;
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        segments,
        query,
        headers,
        body,
    })
}

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

/// Decoded query parameters, in order.
pub type QueryParams = Vec<(String, String)>;

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

    /// A plain-text response (Prometheus' text format version 0.0.4).
    pub fn prometheus(text: String) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: text.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The body parsed as JSON (tests, client code).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The standard reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Writes a response and asks the client to close the connection.
/// `head_only` leaves out the body (answers to `HEAD`).
pub fn write_response<W: Write>(w: &mut W, response: &Response, head_only: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (n, v) in &response.headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !head_only {
        w.write_all(&response.body)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(raw: &[u8]) -> Result<Request, ReadError> {
        let mut sink = Vec::new();
        read_request(&mut Cursor::new(raw.to_vec()), &mut sink)
    }

    fn bad(raw: &[u8]) -> ApiError {
        match read(raw) {
            Err(ReadError::Bad(e)) => e,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_post_with_body_query_and_headers() {
        let r = read(
            b"POST /jobs/abc/savepoints?mode=x&a=b%20c&plus=1+2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}extra",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.segments, vec!["jobs", "abc", "savepoints"]);
        assert_eq!(r.query_param("mode"), Some("x"));
        assert_eq!(r.query_param("a"), Some("b c"));
        assert_eq!(r.query_param("plus"), Some("1 2"));
        assert_eq!(r.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(r.body, b"{\"a\":1}");
        assert_eq!(r.path(), "/jobs/abc/savepoints");
    }

    #[test]
    fn decodes_segments_after_splitting() {
        let r = read(b"GET /a%2Fb//c/ HTTP/1.0\n\n").unwrap();
        assert_eq!(r.segments, vec!["a/b", "c"]);
        assert!(r.body.is_empty());
    }

    #[test]
    fn empty_connection_is_closed_not_bad() {
        assert!(matches!(read(b""), Err(ReadError::Closed)));
        assert!(matches!(read(b"\r\n"), Err(ReadError::Closed)));
    }

    #[test]
    fn refuses_malformed_requests() {
        assert_eq!(bad(b"GARBAGE\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /x\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET x HTTP/1.1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"G(T /x HTTP/1.1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /x HTTP/2.0\r\n\r\n").status, 505);
        assert_eq!(bad(b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /%zz HTTP/1.1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /%00 HTTP/1.1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"GET /%ff HTTP/1.1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(bad(b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n").code, "BAD_HTTP");
        assert_eq!(
            bad(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").code,
            "BAD_HTTP"
        );
        let e = bad(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((e.status, e.code), (411, "LENGTH_REQUIRED"));
    }

    #[test]
    fn refuses_oversized_heads_and_bodies() {
        let e = bad(format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1).as_bytes());
        assert_eq!((e.status, e.code), (413, "PAYLOAD_TOO_LARGE"));
        let mut big = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        big.extend(b"\r\n\r\n");
        let e = bad(&big);
        assert_eq!((e.status, e.code), (431, "HEADERS_TOO_LARGE"));
        let mut many = b"GET /x HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(bad(&many).status, 431);
    }

    #[test]
    fn truncated_body_is_an_io_error() {
        assert!(matches!(
            read(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Err(ReadError::Io(_))
        ));
        assert!(matches!(read(b"GET /x HTTP/1.1\r\nHost: x"), Err(ReadError::Io(_))));
    }

    #[test]
    fn answers_expect_continue() {
        let mut sink = Vec::new();
        let raw = b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
        let r = read_request(&mut Cursor::new(raw.to_vec()), &mut sink).unwrap();
        assert_eq!(r.body, b"{}");
        assert_eq!(sink, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        let r = Response::json(404, &serde_json::json!({"errors": ["x"]})).with_header("Allow", "GET");
        write_response(&mut out, &r, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 17\r\n"), "{text}");
        assert!(text.contains("Allow: GET\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"errors\":[\"x\"]}\n"), "{text}");
        let mut out = Vec::new();
        write_response(&mut out, &r, true).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("\r\n\r\n"));
    }
}
