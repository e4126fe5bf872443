//! A minimal HTTP/1.1 client for the REST API (used by the `cairn` CLI, the
//! dashboard and tests): one request per connection, JSON bodies, optional
//! bearer token, over TCP or a job's Unix control socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Largest response body read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// For error responses: the first message of `errors` and the `code`.
    pub fn error_message(&self) -> String {
        let v = self.json();
        let msg = v["errors"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.text().trim().to_string());
        match self.error_code() {
            Some(code) => format!("{msg} [{code}, HTTP {}]", self.status),
            None => format!("{msg} [HTTP {}]", self.status),
        }
    }

    /// The stable error code of an error response (the
    /// [`crate::ERROR_CODE_HEADER`] header).
    pub fn error_code(&self) -> Option<&str> {
        self.header(crate::ERROR_CODE_HEADER)
    }
}

/// `s` percent-encoded for a path segment or a query value: everything but
/// RFC 3986's unreserved characters is escaped (so `/`, `?`, `&`, `=`, `+`
/// and spaces inside uids or JSON keys survive the trip).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket (a job's trusted control socket).
    Unix(PathBuf),
}

impl Endpoint {
    /// `unix:<path>` or an absolute path is a socket; anything else `host:port`.
    pub fn parse(s: &str) -> Endpoint {
        if let Some(p) = s.strip_prefix("unix:") {
            Endpoint::Unix(PathBuf::from(p))
        } else if s.starts_with('/') {
            Endpoint::Unix(PathBuf::from(s))
        } else {
            Endpoint::Tcp(s.to_string())
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream of either kind.
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            #[cfg(unix)]
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct HttpClient {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
}

impl HttpClient {
    /// A client of `host:port`.
    pub fn new(authority: impl Into<String>) -> HttpClient {
        HttpClient::at(Endpoint::Tcp(authority.into()))
    }

    /// A client of the server listening on the Unix socket `path`.
    pub fn unix(path: impl AsRef<Path>) -> HttpClient {
        HttpClient::at(Endpoint::Unix(path.as_ref().to_path_buf()))
    }

    /// A client of `endpoint`.
    pub fn at(endpoint: Endpoint) -> HttpClient {
        HttpClient {
            endpoint,
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> HttpClient {
        self.token = token;
        self
    }

    /// Connect, read and write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    /// `host:port`, or `localhost` for a socket (the `Host` header).
    pub fn authority(&self) -> &str {
        match &self.endpoint {
            Endpoint::Tcp(a) => a,
            Endpoint::Unix(_) => "localhost",
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> io::Result<HttpResponse> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> io::Result<HttpResponse> {
        self.request("POST", path, Some(body))
    }

    /// `PATCH path` without body.
    pub fn patch(&self, path: &str) -> io::Result<HttpResponse> {
        self.request("PATCH", path, None)
    }

    /// Sends one request. Errors are connection failures only; HTTP errors
    /// are responses.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> io::Result<HttpResponse> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.request_bytes(method, path, body)
    }

    /// Sends one request with a raw (JSON) body.
    pub fn request_bytes(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> io::Result<HttpResponse> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: cairn/{}\r\n",
            self.authority(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = &body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method != "GET" && method != "HEAD" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        if let Some(b) = body {
            raw.extend(b);
        }
        let mut stream = self.send(&raw)?;
        if method == "HEAD" {
            read_response_head(&mut stream)
        } else {
            read_response(stream)
        }
    }

    fn connect(&self) -> io::Result<Stream> {
        match &self.endpoint {
            Endpoint::Tcp(authority) => {
                let addrs: Vec<SocketAddr> = authority.to_socket_addrs()?.collect();
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{authority} resolves to no address"));
                for a in addrs {
                    match TcpStream::connect_timeout(&a, self.timeout) {
                        Ok(s) => {
                            s.set_read_timeout(Some(self.timeout))?;
                            s.set_write_timeout(Some(self.timeout))?;
                            let _ = s.set_nodelay(true);
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                Ok(Stream::Unix(s))
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Unix sockets are not available on this platform",
            )),
        }
    }

    fn send(&self, raw: &[u8]) -> io::Result<BufReader<Stream>> {
        let mut stream = self.connect()?;
        stream.write_all(raw)?;
        stream.flush()?;
        Ok(BufReader::new(stream))
    }

    /// Sends raw request bytes and reads the response.
    pub fn exchange(&self, raw: &[u8]) -> io::Result<HttpResponse> {
        read_response(self.send(raw)?)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads a response (skipping `100 Continue`).
pub fn read_response<R: BufRead>(mut reader: R) -> io::Result<HttpResponse> {
    let mut r = read_response_head(&mut reader)?;
    if r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        r.body = read_chunked(&mut reader)?;
        return Ok(r);
    }
    let length = r.header("content-length").and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_RESPONSE_BYTES => return Err(bad(format!("response of {n} bytes is too large"))),
        Some(n) => {
            r.body.resize(n as usize, 0);
            reader.read_exact(&mut r.body)?;
        }
        None => {
            reader.take(MAX_RESPONSE_BYTES).read_to_end(&mut r.body)?;
        }
    }
    Ok(r)
}

/// Reads a `Transfer-Encoding: chunked` body (trailers are skipped).
fn read_chunked<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the connection closed in the middle of a chunked body"));
        }
        let size_hex = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| bad(format!("bad chunk size '{}'", line.trim())))?;
        if body.len() as u64 + size > MAX_RESPONSE_BYTES {
            return Err(bad("chunked response is too large"));
        }
        if size == 0 {
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Reads the status line and headers of a response (skipping `100 Continue`);
/// the body is left unread (answers to `HEAD`).
pub fn read_response_head<R: BufRead>(reader: &mut R) -> io::Result<HttpResponse> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the server closed the connection without answering"));
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let status: u16 = match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
                .parse()
                .map_err(|_| bad(format!("bad status line '{}'", line.trim_end())))?,
            _ => return Err(bad(format!("bad status line '{}'", line.trim_end()))),
        };
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Err(bad("the connection closed in the middle of the response headers"));
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if status == 100 {
            continue;
        }
        return Ok(HttpResponse {
            status,
            headers,
            body: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_encoding_escapes_all_but_unreserved_characters() {
        assert_eq!(super::percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(
            super::percent_encode("[\"a b\",1]/?&=+%é"),
            "%5B%22a%20b%22%2C1%5D%2F%3F%26%3D%2B%25%C3%A9"
        );
    }

    use super::*;
    use std::io::Cursor;

    #[test]
    fn parses_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nCairn-Error-Code: JOB_NOT\r\nContent-Length: 27\r\n\r\n{\"errors\":[\"no such job\"]}\n";
        let r = read_response(Cursor::new(raw.to_vec())).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.error_message(), "no such job [JOB_NOT, HTTP 404]");
        let r = read_response(Cursor::new(b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec())).unwrap();
        assert_eq!(r.text(), "hello");
        assert_eq!(r.error_message(), "hello [HTTP 200]");
        assert!(read_response(Cursor::new(b"".to_vec())).is_err());
        assert!(read_response(Cursor::new(b"SSH-2.0\r\n".to_vec())).is_err());
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            read_response(Cursor::new(chunked.to_vec())).unwrap().text(),
            "hello world"
        );
        assert!(read_response(Cursor::new(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()
        ))
        .is_err());
        assert_eq!(Endpoint::parse("unix:/a/b"), Endpoint::Unix("/a/b".into()));
        assert_eq!(Endpoint::parse("/a/b.sock"), Endpoint::Unix("/a/b.sock".into()));
        assert_eq!(
            Endpoint::parse("127.0.0.1:8081"),
            Endpoint::Tcp("127.0.0.1:8081".into())
        );
    }
}
