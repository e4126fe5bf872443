//! Serving a [`Handler`] with hyper.
//!
//! The tokio runtime is a current-thread runtime on the server's own thread
//! (plus a small pool for handler calls), so nothing async reaches the
//! engine. Every connection is guarded:
//!
//! * the request head must arrive within [`Options::header_read_timeout`]
//!   (hyper's header timer) and be at most [`Options::max_head_bytes`]
//!   (`431` otherwise; more than 100 headers too);
//! * the body (`Content-Length` or chunked) must arrive within
//!   [`Options::body_timeout`] after the head (`408`) and be at most
//!   [`Options::max_body_bytes`] (`413`), so every request is read completely
//!   within a fixed deadline or dropped;
//! * an idle keep-alive connection is closed after [`Options::idle_timeout`],
//!   a client that stops reading its answer after
//!   [`Options::write_stall_timeout`];
//! * at most [`Options::max_connections`] connections are served at once;
//!   more get `503` at once.
//!
//! Slow or malicious clients therefore cost a little memory each and never
//! a thread: hundreds of them do not delay anyone else's request. Requests
//! on the Unix socket are accepted only from the socket owner's user
//! ([`Peer::Local`]). On a server that listens on loopback only, a `Host`
//! header naming another machine is refused (DNS rebinding), and every
//! mutating request from a browser must come from the same origin.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use cairn_rest_client::ApiError;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;

use crate::message::{error_response, parse_target, Handler, Peer, Request, Response};

/// How a server guards itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// The request line and headers must arrive within this.
    pub header_read_timeout: Duration,
    /// The body must arrive within this after the head.
    pub body_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// A client that reads none of its answer for this long is dropped.
    pub write_stall_timeout: Duration,
    /// Largest request head (at least 8 KiB).
    pub max_head_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most connections served at once (TCP and socket together).
    pub max_connections: usize,
    /// Refuse `Host` headers that name another machine (for servers that
    /// listen on loopback only).
    pub local_hosts_only: bool,
    /// How long [`HttpServer::shutdown`] lets requests in flight finish.
    pub shutdown_grace: Duration,
}

/// The name kept for the limits.
pub type Limits = Options;

impl Default for Options {
    fn default() -> Self {
        Options {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            local_hosts_only: true,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// A running server; stops (gracefully) on [`HttpServer::shutdown`] or drop.
pub struct HttpServer {
    tcp: Option<SocketAddr>,
    socket: Option<PathBuf>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("tcp", &self.tcp)
            .field("socket", &self.socket)
            .finish()
    }
}

/// Binds an owner-only Unix socket at `path`: a stale socket left by a dead
/// process is replaced; a live one is an error. The file gets mode 0600.
#[cfg(unix)]
pub fn bind_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl HttpServer {
    /// Serves `handler` on the given listeners (at least one) until shut down.
    pub fn start(
        handler: Arc<dyn Handler>,
        tcp: Option<std::net::TcpListener>,
        #[cfg(unix)] unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
        options: Options,
    ) -> Result<HttpServer, ServerError> {
        let tcp_addr = match &tcp {
            Some(l) => Some(
                l.local_addr()
                    .map_err(|e| ServerError(format!("cannot read the bound address: {e}")))?,
            ),
            None => None,
        };
        if let Some(l) = &tcp {
            l.set_nonblocking(true)
                .map_err(|e| ServerError(format!("cannot configure the listener: {e}")))?;
        }
        #[cfg(unix)]
        let (unix_listener, socket_path, owner) = match unix {
            Some((l, p)) => {
                use std::os::unix::fs::MetadataExt;
                l.set_nonblocking(true)
                    .map_err(|e| ServerError(format!("cannot configure the socket {}: {e}", p.display())))?;
                let owner = std::fs::metadata(&p)
                    .map_err(|e| ServerError(format!("cannot read the socket {}: {e}", p.display())))?
                    .uid();
                (Some(l), Some(p), owner)
            }
            None => (None, None, 0),
        };
        #[cfg(not(unix))]
        let socket_path: Option<PathBuf> = None;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(16)
            .thread_name("cairn-http-handler")
            .build()
            .map_err(|e| ServerError(format!("cannot start the HTTP runtime: {e}")))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("cairn-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let shared = Arc::new(Shared {
                        handler,
                        options,
                        slots: Arc::new(Semaphore::new(0)),
                    });
                    shared.slots.add_permits(shared.options.max_connections);
                    let graceful = Arc::new(GracefulShutdown::new());
                    let mut tasks = Vec::new();
                    if let Some(l) = tcp {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => tasks.push(tokio::spawn(accept_tcp(
                                l,
                                shared.clone(),
                                graceful.clone(),
                                stop_rx.clone(),
                            ))),
                            Err(e) => tracing::error!("cannot use the TCP listener: {e}"),
                        }
                    }
                    #[cfg(unix)]
                    if let Some(l) = unix_listener {
                        match tokio::net::UnixListener::from_std(l) {
                            Ok(l) => tasks.push(tokio::spawn(accept_unix(
                                l,
                                owner,
                                shared.clone(),
                                graceful.clone(),
                                stop_rx.clone(),
                            ))),
                            Err(e) => tracing::error!("cannot use the Unix socket: {e}"),
                        }
                    }
                    let mut stop_rx = stop_rx;
                    while !*stop_rx.borrow() {
                        if stop_rx.changed().await.is_err() {
                            break;
                        }
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                    // Accepting stopped; let requests in flight finish.
                    let grace = shared.options.shutdown_grace;
                    if let Ok(g) = Arc::try_unwrap(graceful) {
                        let _ = tokio::time::timeout(grace, g.shutdown()).await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| ServerError(format!("cannot start the HTTP server thread: {e}")))?;
        Ok(HttpServer {
            tcp: tcp_addr,
            socket: socket_path,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound TCP address, if it listens on TCP.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The Unix socket, if it listens on one.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// Stops accepting, lets requests in flight finish (up to the grace
    /// time), closes idle connections, removes the socket file. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    handler: Arc<dyn Handler>,
    options: Options,
    slots: Arc<Semaphore>,
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(stream, Peer::Tcp(addr), &shared, &graceful).await;
            }
            // Out of file descriptors and the like: back off, keep serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(unix)]
async fn accept_unix(
    listener: tokio::net::UnixListener,
    owner: u32,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                // Only the socket owner's processes are trusted.
                match stream.peer_cred() {
                    Ok(c) if c.uid() == owner => serve_connection(stream, Peer::Local, &shared, &graceful).await,
                    _ => drop(stream),
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn serve_connection<S>(mut stream: S, peer: Peer, shared: &Arc<Shared>, graceful: &GracefulShutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        // Over the cap: answer at once and close, never queue.
        let e = ApiError::new(
            503,
            "TOO_MANY_CONNECTIONS",
            "too many concurrent connections; retry shortly",
        );
        let r = error_response(&e);
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}: {}\r\nConnection: close\r\n\r\n",
            r.content_type,
            r.body.len(),
            cairn_rest_client::ERROR_CODE_HEADER,
            e.code
        );
        tokio::spawn(async move {
            let write = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&r.body).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
        });
        return;
    };
    let options = &shared.options;
    let io = TokioIo::new(StallGuard::new(
        stream,
        options.idle_timeout,
        options.write_stall_timeout,
    ));
    let conn_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| answer(conn_shared.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(options.max_head_bytes.max(8192))
        // No `pipeline_flush`: with it hyper never flushes its automatic
        // 400/431 answers to malformed heads (the wire test shows it).
        .serve_connection(io, service);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = watched.await;
        drop(permit);
    });
}

fn to_hyper(r: Response, close: bool) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(r.status)
        .header(hyper::header::CONTENT_TYPE, r.content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff");
    for (n, v) in &r.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    if close {
        b = b.header(hyper::header::CONNECTION, "close");
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap_or_else(|_| {
        let mut fallback = hyper::Response::new(Full::new(Bytes::from_static(b"{\"errors\":[\"internal error\"]}\n")));
        *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>, close: bool) -> hyper::Response<Full<Bytes>> {
    to_hyper(error_response(&ApiError::new(status, code, message)), close)
}

/// The host part of a `Host` header or an origin (`http://h:p`).
fn host_of(s: &str) -> &str {
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split('/').next().unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    s.rsplit_once(':').map_or(s, |(h, _)| h)
}

/// Whether a `Host` names this machine: an IP literal, `localhost` or a
/// `*.localhost` name.
fn is_local_host_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h.parse::<std::net::IpAddr>().is_ok() || h == "localhost" || h.ends_with(".localhost")
}

async fn answer(
    shared: Arc<Shared>,
    peer: Peer,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let options = &shared.options;
    let (parts, body) = req.into_parts();
    let max = options.max_body_bytes;
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = tokio::time::timeout(options.body_timeout, read_body(body, max, declared)).await;
    let body = match read {
        Err(_) => {
            return Ok(refuse(
                408,
                "REQUEST_TIMEOUT",
                format!(
                    "the request body did not arrive within {}s",
                    options.body_timeout.as_secs()
                ),
                true,
            ))
        }
        Ok(Err(BodyError::TooLarge(size))) => {
            let size = size.map_or_else(|| format!("more than {max}"), |n| n.to_string());
            return Ok(refuse(
                413,
                "PAYLOAD_TOO_LARGE",
                format!("the request body has {size} bytes; at most {max} are accepted"),
                true,
            ));
        }
        Ok(Err(BodyError::Http(e))) => {
            return Ok(refuse(
                400,
                "BAD_HTTP",
                format!("cannot read the request body: {e}"),
                true,
            ))
        }
        Ok(Ok(bytes)) => bytes,
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let (segments, query) = match parse_target(&target) {
        Ok(x) => x,
        Err(e) => return Ok(to_hyper(error_response(&e), false)),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = Request {
        method: parts.method.as_str().to_string(),
        target,
        segments,
        query,
        headers,
        body,
        peer,
    };
    if let Some(refused) = check_origin(options, &request) {
        return Ok(refused);
    }
    let handler = shared.handler.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&request)))
    })
    .await;
    Ok(match outcome {
        Ok(Ok(r)) => to_hyper(r, false),
        _ => refuse(
            500,
            "INTERNAL_ERROR",
            "the server failed while answering this request; this is a bug in Cairn, please report it",
            false,
        ),
    })
}

/// How much of a refused body is still read (and dropped) before the `413`:
/// a client that sends its whole body before reading the answer would
/// otherwise see a reset connection instead of the error.
const DRAIN_LIMIT: u64 = 16 << 20;

enum BodyError {
    /// Over the limit; the size when the client declared it.
    TooLarge(Option<u64>),
    Http(hyper::Error),
}

/// Reads a body of at most `max` bytes. A larger one is drained up to
/// [`DRAIN_LIMIT`] so the refusal reaches the client.
async fn read_body(mut body: Incoming, max: usize, declared: Option<u64>) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n.min(max as u64) as usize));
    let mut seen: u64 = 0;
    let mut too_large = declared.is_some_and(|n| n > max as u64);
    if too_large && declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(BodyError::TooLarge(declared));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Http)?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if seen > max as u64 {
            too_large = true;
        }
        if seen > DRAIN_LIMIT {
            break;
        }
        if !too_large {
            bytes.extend_from_slice(&data);
        }
    }
    if too_large {
        return Err(BodyError::TooLarge(declared));
    }
    Ok(bytes)
}

/// DNS-rebinding and cross-site request checks (see the module docs).
fn check_origin(options: &Options, request: &Request) -> Option<hyper::Response<Full<Bytes>>> {
    if request.peer.is_trusted() {
        return None;
    }
    let host = request.header("host").map(host_of);
    if options.local_hosts_only {
        if let Some(h) = host.filter(|h| !is_local_host_name(h)) {
            return Some(refuse(
                403,
                "HOST_NOT_ALLOWED",
                format!(
                    "this server listens on loopback only and does not answer requests for host '{h}'; use 127.0.0.1 or localhost"
                ),
                false,
            ));
        }
    }
    let mutating = !matches!(request.method.as_str(), "GET" | "HEAD" | "OPTIONS");
    if mutating {
        if let Some(origin) = request.header("origin") {
            let authority = origin
                .split_once("://")
                .map_or(origin, |(_, r)| r)
                .trim_end_matches('/');
            let same = request
                .header("host")
                .is_some_and(|h| h.eq_ignore_ascii_case(authority));
            if !same {
                return Some(refuse(
                    403,
                    "CROSS_ORIGIN",
                    format!("requests that change a job must come from this server's own pages, not from {origin}"),
                    false,
                ));
            }
        }
    }
    None
}

/// Closes a connection whose reads stay pending longer than `idle` or whose
/// writes stay pending longer than `write`.
struct StallGuard<S> {
    inner: S,
    idle: Duration,
    write: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, idle: Duration, write: Duration) -> StallGuard<S> {
        StallGuard {
            inner,
            idle,
            write,
            read_timer: None,
            write_timer: None,
        }
    }
}

fn stalled(timer: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
    t.as_mut().poll(cx).is_ready()
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending if stalled(&mut this.read_timer, this.idle, cx) => {
                Poll::Ready(Err(timed_out("idle connection closed")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending if stalled(&mut this.write_timer, this.write, cx) => {
                Poll::Ready(Err(timed_out("the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending if stalled(&mut this.write_timer, this.write, cx) => {
                Poll::Ready(Err(timed_out("the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("127.0.0.1:8081"), "127.0.0.1");
        assert_eq!(host_of("http://localhost:8081"), "localhost");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
        assert!(is_local_host_name("127.0.0.1") && is_local_host_name("::1") && is_local_host_name("localhost"));
        assert!(is_local_host_name("app.localhost") && is_local_host_name("10.1.2.3"));
        assert!(!is_local_host_name("evil.example.com"));
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use std::io::{Read, Write};

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, r: &Request) -> Response {
            Response::json(200, &serde_json::json!({ "path": r.path() }))
        }
    }

    fn start() -> (HttpServer, SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = HttpServer::start(Arc::new(Echo), Some(l), None, Options::default()).unwrap();
        let a = s.tcp_address().unwrap();
        (s, a)
    }

    fn raw(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn malformed_requests_get_a_status() {
        let (_s, a) = start();
        let r = raw(a, b"GARBAGE\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        let r = raw(a, b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        let big = format!(
            "GET /x HTTP/1.1\r\nHost: localhost\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        let r = raw(a, big.as_bytes());
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let many: String = (0..120).map(|i| format!("X-{i}: y\r\n")).collect();
        let r = raw(
            a,
            format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // Pipelined requests are all answered, in order.
        let r = raw(
            a,
            b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let (first, second) = (r.find("\"/a\"").unwrap(), r.find("\"/b\"").unwrap());
        assert!(first < second, "{r}");
        // Another machine's name is refused on a loopback server.
        let r = raw(
            a,
            b"GET /x HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 403") && r.contains("HOST_NOT_ALLOWED"), "{r}");
        // A cross-site POST is refused; a same-origin one is served.
        let r = raw(
            a,
            b"POST /x HTTP/1.1\r\nHost: localhost:1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 403") && r.contains("CROSS_ORIGIN"), "{r}");
        let r = raw(
            a,
            b"POST /x HTTP/1.1\r\nHost: localhost:1\r\nOrigin: http://localhost:1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // Chunked bodies are read; oversized ones refused.
        let r = raw(
            a,
            b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let mut huge =
            b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..20 {
            huge.extend(format!("{:x}\r\n", 65536).as_bytes());
            huge.extend(std::iter::repeat_n(b'x', 65536));
            huge.extend(b"\r\n");
        }
        huge.extend(b"0\r\n\r\n");
        let r = raw(a, &huge);
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    }
}
