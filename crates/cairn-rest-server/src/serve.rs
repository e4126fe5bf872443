//! Starting a job's REST server: binding (with the port fallback), the
//! owner-only control socket next to the job's registry entry, registration
//! for `cairn list`, and the lingering shutdown that lets `cairn stop` read
//! how the job ended.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_config::{options, Configuration};
use cairn_coordinator::control::JobClient;
use cairn_http::server::Options;
use cairn_http::HttpServer;
use cairn_rest_client::auth::{configured_token, is_loopback_host};
use cairn_rest_client::{Registry, RegistryEntry};
use cairn_snapshot::Storage;

use crate::api::{Api, Topology};

/// The highest port tried when the configured one is busy.
pub const LAST_FALLBACK_PORT: u16 = 8180;

/// Why [`serve`] could not start a server.
#[derive(Debug)]
pub enum RestError {
    /// The REST configuration is unusable (names the key and what to do).
    Config(String),
    /// No port could be bound.
    Bind(String),
    /// Another I/O failure (registry, threads).
    Io(String),
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestError::Config(m) => write!(f, "REST configuration error: {m}"),
            RestError::Bind(m) => write!(f, "cannot start the REST server: {m}"),
            RestError::Io(m) => write!(f, "REST server failure: {m}"),
        }
    }
}

impl std::error::Error for RestError {}

/// How [`serve_with`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to register the job (and put its control socket); `None`: not
    /// registered, no socket.
    pub registry: Option<Registry>,
    /// On shutdown, how long to keep answering while the final status of a
    /// stop- or cancel-with-savepoint has not been read by any client.
    pub linger: Duration,
    /// The job graph for the plan.
    pub topology: Topology,
    /// The connection guards (timeouts, limits).
    pub http: Options,
    /// The job's storage, which disposals go through; `None`: local files.
    pub storage: Option<Arc<dyn Storage>>,
}

impl Default for ServeOptions {
    /// Registered under `$CAIRN_HOME` (or `~/.cairn`), lingering up to 5 s.
    fn default() -> Self {
        ServeOptions {
            registry: Registry::from_env().ok(),
            linger: Duration::from_secs(5),
            topology: Topology::default(),
            http: Options::default(),
            storage: None,
        }
    }
}

/// A running REST server; stops on [`RestServer::shutdown`] or drop.
pub struct RestServer {
    addr: SocketAddr,
    api: Arc<Api>,
    http: Option<HttpServer>,
    registered: Option<(Registry, String)>,
    linger: Duration,
}

impl std::fmt::Debug for RestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer").field("addr", &self.addr).finish()
    }
}

/// Whether the configuration asks for a REST server (some `rest.*` key set).
pub fn rest_requested(config: &Configuration) -> bool {
    cairn_rest_client::launch::rest_requested(config)
}

/// Starts the REST server of the job behind `client`, registered for
/// discovery under `$CAIRN_HOME` (or `~/.cairn`). See [`serve_with`].
pub fn serve(client: JobClient, config: &Configuration) -> Result<RestServer, RestError> {
    serve_with(client, config, ServeOptions::default())
}

/// Starts the REST server: binds `rest.bind-address` (else `rest.address`,
/// default 127.0.0.1) on `rest.port` (default 8081; if busy, the next free
/// port up to 8180; 0: any free port), and, with a registry, the owner-only
/// control socket `<home>/jobs/<job-id>.sock`. A non-loopback address needs
/// a token (`rest.auth-token` or `CAIRN_REST_TOKEN`).
pub fn serve_with(client: JobClient, config: &Configuration, options: ServeOptions) -> Result<RestServer, RestError> {
    let host = config
        .get(&options::REST_BIND_ADDRESS)
        .unwrap_or_else(|| config.get(&options::REST_ADDRESS));
    let host = host.trim().to_string();
    let token = configured_token(config);
    let loopback = is_loopback_host(&host);
    if !loopback && token.is_none() {
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
    if port != 0 && bound_port != port {
        tracing::warn!(
            port,
            bound_port,
            "rest.port {port} is busy; the REST server takes port {bound_port} instead"
        );
    }
    let info = client.info();
    let mut api = Api::new(client.clone(), config, options.topology.clone());
    if let Some(storage) = &options.storage {
        api = api.with_storage(storage.clone());
    }
    let api = Arc::new(api);
    let mut socket: Option<(std::os::unix::net::UnixListener, PathBuf)> = None;
    if let Some(registry) = &options.registry {
        let path = registry.socket_path(&info.job_id);
        match registry
            .ensure_jobs_dir()
            .and_then(|_| cairn_http::server::bind_unix(&path))
        {
            Ok(l) => socket = Some((l, path)),
            Err(e) => tracing::warn!(
                job_id = %info.job_id,
                "the job gets no trusted control socket at {}: {e}; the CLI uses the REST port instead",
                path.display()
            ),
        }
    }
    let socket_path = socket.as_ref().map(|(_, p)| p.clone());
    let request_timeout = config.get(&options::REST_REQUEST_TIMEOUT);
    let http_options = Options {
        local_hosts_only: loopback,
        header_read_timeout: request_timeout,
        body_timeout: request_timeout,
        idle_timeout: config.get(&options::REST_IDLENESS_TIMEOUT),
        max_body_bytes: usize::try_from(config.get(&options::REST_MAX_CONTENT_LENGTH).bytes()).unwrap_or(usize::MAX),
        ..options.http.clone()
    };
    let http = HttpServer::start(api.clone(), Some(listener), socket, http_options)
        .map_err(|e| RestError::Io(e.to_string()))?;
    let mut server = RestServer {
        addr,
        api,
        http: Some(http),
        registered: None,
        linger: options.linger,
    };
    tracing::info!(
        job_id = %info.job_id,
        job_name = %info.name,
        url = %server.url(),
        "REST API and web UI of job '{}' at {}/",
        info.name,
        server.url()
    );
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
            socket: socket_path,
            program: std::env::current_exe().ok(),
            args: std::env::args().skip(1).collect(),
            cwd: std::env::current_dir().ok(),
        };
        match registry.register(&entry) {
            Ok(_) => server.registered = Some((registry, info.job_id)),
            Err(e) => tracing::warn!(
                job_id = %info.job_id,
                "cannot register the job under {} for `cairn list`: {e}",
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

    /// The trusted control socket, if the job has one.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.http
            .as_ref()
            .and_then(|h| h.socket_path().map(|p| p.to_path_buf()))
    }

    /// The API behind the server.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Writes how the job ended into the registry's history (for the
    /// dashboard).
    fn record_ended(&self, registry: &Registry) {
        let client = self.api.client();
        let info = client.info();
        let cps = client.checkpoints();
        let Some(entry) = registry.list().into_iter().find(|e| e.jid == info.job_id) else {
            return;
        };
        let ended = cairn_rest_client::registry::EndedJob {
            entry,
            state: crate::metrics::status_name(info.status).to_string(),
            end_time_ms: info.end_time_ms.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            }),
            last_savepoint: cps.latest_savepoint.and_then(|s| s.external_path),
            last_checkpoint: cps.latest_completed.and_then(|s| s.external_path),
        };
        let _ = registry.record_ended(&ended);
    }

    /// Leaves `cairn list` at once, keeps answering (up to the linger time)
    /// until clients have read the final status of stop- or
    /// cancel-with-savepoint operations, then shuts the server down
    /// gracefully and removes the socket. Idempotent.
    pub fn shutdown(&mut self) {
        let Some(mut http) = self.http.take() else { return };
        if let Some((registry, jid)) = &self.registered {
            self.record_ended(registry);
            registry.remove_entry(jid);
        }
        let deadline = Instant::now() + self.linger;
        while self.api.has_unread_final_status() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        http.shutdown();
        if let Some((registry, jid)) = self.registered.take() {
            registry.unregister(&jid);
        }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes `raw` to a server and reads until it closes the connection (for
/// tests of raw protocol errors; well-formed requests should say
/// `Connection: close`).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}
