//! The server: one thread accepts connections, each connection is answered
//! on its own short-lived thread (at most [`MAX_CONNECTIONS`] at once, with
//! read and write timeouts), one request per connection. Handlers only read
//! published job state or send a request to the job's control loop, so a
//! slow or malicious client can never block or crash the job.

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_config::{options, Configuration};
use cairn_coordinator::control::JobClient;

use crate::api::Api;
use crate::auth::{configured_token, is_loopback_host, is_mutating};
use crate::error::{ApiError, RestError};
use crate::http::{read_request, write_response, ReadError};
use crate::registry::{Registry, RegistryEntry};

/// Most connections answered at once; more get a 503 right away.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The highest port tried when the configured one is busy.
pub const LAST_FALLBACK_PORT: u16 = 8180;

/// How [`serve_with`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to register the job for discovery; `None`: not registered.
    pub registry: Option<Registry>,
    /// On shutdown, how long to keep answering while the final status of a
    /// stop- or cancel-with-savepoint has not been read by any client.
    pub linger: Duration,
    /// Print the listening address and mutating calls on stderr.
    pub log: bool,
}

impl Default for ServeOptions {
    /// Registered under `$CAIRN_HOME` (or `~/.cairn`), lingering up to 5 s, logging.
    fn default() -> Self {
        ServeOptions {
            registry: Registry::from_env().ok(),
            linger: Duration::from_secs(5),
            log: true,
        }
    }
}

struct Shared {
    api: Api,
    stop: AtomicBool,
    active: AtomicUsize,
    log: bool,
}

/// A running REST server; stops on [`RestServer::shutdown`] or drop.
pub struct RestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    registered: Option<(Registry, String)>,
    linger: Duration,
}

/// Whether the configuration asks for a REST server: some `rest.*` key is set
/// explicitly (`-Drest.port=0`, `rest.address`, ...).
pub fn rest_requested(config: &Configuration) -> bool {
    config.entries().any(|(k, _)| k.starts_with("rest."))
}

/// Starts the REST server of the job behind `client`, registered for
/// discovery under `$CAIRN_HOME` (or `~/.cairn`). See [`serve_with`].
pub fn serve(client: JobClient, config: &Configuration) -> Result<RestServer, RestError> {
    serve_with(client, config, ServeOptions::default())
}

/// Starts the REST server: binds `rest.bind-address` (else `rest.address`,
/// default 127.0.0.1) on `rest.port` (default 8081; if busy, the next free
/// port up to 8180; 0: any free port). A non-loopback address needs a token
/// (`rest.auth-token` or `CAIRN_REST_TOKEN`).
pub fn serve_with(client: JobClient, config: &Configuration, options: ServeOptions) -> Result<RestServer, RestError> {
    let host = config
        .get(&options::REST_BIND_ADDRESS)
        .unwrap_or_else(|| config.get(&options::REST_ADDRESS));
    let host = host.trim().to_string();
    let token = configured_token(config);
    if !is_loopback_host(&host) && token.is_none() {
        return Err(RestError::Config(format!(
            "the REST server would listen on '{host}', which is not a loopback address, without a token; \
             set rest.auth-token (or the CAIRN_REST_TOKEN environment variable) so that calls that change \
             the job are authenticated, or set rest.bind-address to 127.0.0.1"
        )));
    }
    let port = config.get(&options::REST_PORT);
    let (listener, bound_port) = bind(&host, port)?;
    let addr = listener
        .local_addr()
        .map_err(|e| RestError::Io(format!("cannot read the bound address: {e}")))?;
    if options.log && port != 0 && bound_port != port {
        eprintln!("rest.port {port} is busy; the REST server takes port {bound_port} instead");
    }
    let shared = Arc::new(Shared {
        api: Api::new(client.clone(), config),
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        log: options.log,
    });
    let accept = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("cairn-rest-accept".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(|e| RestError::Io(format!("cannot start the REST accept thread: {e}")))?
    };
    let info = client.info();
    let mut server = RestServer {
        addr,
        shared,
        accept: Some(accept),
        registered: None,
        linger: options.linger,
    };
    if options.log {
        eprintln!(
            "REST API of job '{}' ({}) listening on {}",
            info.name,
            info.job_id,
            server.url()
        );
    }
    if let Some(registry) = options.registry {
        let start = if info.start_time_ms > 0 {
            info.start_time_ms
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        let entry = RegistryEntry {
            jid: info.job_id.clone(),
            name: info.name.clone(),
            pid: std::process::id(),
            address: client_ip(addr.ip()).to_string(),
            port: addr.port(),
            start_time_ms: start,
        };
        match registry.register(&entry) {
            Ok(_) => server.registered = Some((registry, info.job_id)),
            Err(e) => eprintln!(
                "warning: cannot register job {} under {} for `cairn list`: {e}",
                info.job_id,
                registry.jobs_dir().display()
            ),
        }
    }
    Ok(server)
}

/// The address local clients use for a bound address.
fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn bind(host: &str, port: u16) -> Result<(TcpListener, u16), RestError> {
    let addrs: Vec<SocketAddr> = (host.trim_start_matches('[').trim_end_matches(']'), 0u16)
        .to_socket_addrs()
        .map_err(|e| RestError::Config(format!("rest.bind-address/rest.address '{host}' does not resolve: {e}")))?
        .collect();
    let Some(base) = addrs.first().copied() else {
        return Err(RestError::Config(format!(
            "rest.bind-address/rest.address '{host}' resolves to no address"
        )));
    };
    let last = if port == 0 { 0 } else { port.max(LAST_FALLBACK_PORT) };
    let mut p = port;
    loop {
        match TcpListener::bind(SocketAddr::new(base.ip(), p)) {
            Ok(l) => {
                let bound = l.local_addr().map(|a| a.port()).unwrap_or(p);
                return Ok((l, bound));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && p < last => p += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(RestError::Bind(if port == last {
                    format!("port {port} on {host} is in use; set rest.port to a free port (0: any free port)")
                } else {
                    format!(
                        "ports {port}-{last} on {host} are all in use; set rest.port to a free port (0: any free port)"
                    )
                }))
            }
            Err(e) => return Err(RestError::Bind(format!("cannot listen on {host}:{p}: {e}"))),
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of file descriptors and the like: back off, keep serving.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let e = ApiError::new(
                503,
                "TOO_MANY_CONNECTIONS",
                "too many concurrent requests; retry shortly",
            );
            let _ = write_response(&mut s, &e.response(), false);
            continue;
        }
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cairn-rest-conn".into())
            .spawn(move || {
                answer(&conn_shared, stream);
                conn_shared.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads one request from the connection and answers it.
fn answer(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let (response, head_only) = match read_request(&mut reader, &mut writer) {
        Ok(req) => {
            let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.api.handle(&req)))
                .unwrap_or_else(|_| {
                    ApiError::new(
                        500,
                        "INTERNAL_ERROR",
                        "the server failed while answering this request; this is a bug in Cairn, please report it",
                    )
                    .response()
                });
            if shared.log && is_mutating(&req.method) {
                eprintln!("REST {} {} -> {}", req.method, req.path(), response.status);
            }
            (response, req.method == "HEAD")
        }
        Err(ReadError::Closed) | Err(ReadError::Io(_)) => return,
        Err(ReadError::Bad(e)) => (e.response(), false),
    };
    let _ = write_response(&mut writer, &response, head_only);
    // Close gracefully: without reading what the client still sends (say the
    // body of a refused oversized request), closing would reset the
    // connection and the client might never see the answer.
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    while drained < 4 * 1024 * 1024 {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

impl RestServer {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` for local clients.
    pub fn url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::new(client_ip(self.addr.ip()), self.addr.port())
        )
    }

    /// The API behind the server.
    pub fn api(&self) -> &Api {
        &self.shared.api
    }

    /// Unregisters the job, waits (up to the linger time) until clients have
    /// read the final status of stop- or cancel-with-savepoint operations,
    /// then stops accepting. Idempotent.
    pub fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        if let Some((registry, jid)) = self.registered.take() {
            registry.unregister(&jid);
        }
        let deadline = Instant::now() + self.linger;
        while self.shared.api.has_unread_final_status() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread.
        let wake = SocketAddr::new(client_ip(self.addr.ip()), self.addr.port());
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for RestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer").field("addr", &self.addr).finish()
    }
}

/// Writes `body` to a stream as one request (for tests of raw protocol errors).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw)?;
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}
