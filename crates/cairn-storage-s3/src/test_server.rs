//! A real S3-compatible server for tests: `moto_server` (PyPI `moto[server]`)
//! started on a free loopback port, one per test process, stopped when the
//! process's last user drops it. `.ci/run` installs moto and sets
//! `CAIRN_MOTO_SERVER` (and `CAIRN_REQUIRE_S3=1`, making its absence a
//! failure); elsewhere tests that need it are skipped with a message.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::{S3Settings, S3Storage};

/// A running moto server.
pub struct MotoServer {
    child: Mutex<Child>,
    endpoint: String,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }
}

static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());

impl MotoServer {
    /// The process's server, started on first use; `None` (after saying
    /// why) when moto is not installed and not required.
    pub fn shared() -> Option<Arc<MotoServer>> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.upgrade() {
            return Some(s);
        }
        let required = std::env::var("CAIRN_REQUIRE_S3").as_deref() == Ok("1");
        let Ok(program) = std::env::var("CAIRN_MOTO_SERVER") else {
            assert!(!required, "CAIRN_REQUIRE_S3=1 but CAIRN_MOTO_SERVER is not set");
            eprintln!(
                "SKIPPED: no S3 test server; install moto[server] from PyPI and set CAIRN_MOTO_SERVER to its moto_server"
            );
            return None;
        };
        let server = Arc::new(Self::start(&program));
        *slot = Arc::downgrade(&server);
        Some(server)
    }

    fn start(program: &str) -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let server = MotoServer {
            child: Mutex::new(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The server's endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Settings that reach this server.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            access_key: Some("testing".into()),
            secret_key: Some("testing".into()),
            region: Some("us-east-1".into()),
            path_style_access: true,
        }
    }

    /// Create `bucket` (idempotent) and return a storage for this server.
    pub fn storage_with_bucket(&self, bucket: &str) -> S3Storage {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // moto takes an unsigned PUT of the bucket as CreateBucket.
            let created = (|| -> std::io::Result<bool> {
                let mut c = TcpStream::connect(&addr)?;
                write!(
                    c,
                    "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                let mut reply = String::new();
                c.read_to_string(&mut reply)?;
                Ok(reply.starts_with("HTTP/1.1 2") || reply.starts_with("HTTP/1.0 2"))
            })();
            if created.unwrap_or(false) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cannot create bucket {bucket} on moto at {addr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        S3Storage::new(self.settings()).expect("an S3 storage")
    }
}
