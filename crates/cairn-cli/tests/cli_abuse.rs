//! A job's control plane under abuse: 200 slow connections that never finish
//! their request do not stop `cairn list`, `savepoint` or `stop` from being
//! answered, over the socket or over TCP; the token is required off
//! loopback.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{example, Home};

fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
        .trim()
}

/// Whether the server still holds the connection open (no answer, no close).
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => false,
        Ok(_) => false, // an answer: the request was not held
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn two_hundred_slow_connections_do_not_block_the_cli() {
    let job = example("cli_demo_job");
    let h = Home::new("abuse");
    let sp = h.path("savepoints");
    let s = |p: &PathBuf| p.display().to_string();
    let o = h.expect(
        0,
        &[
            "run",
            "-D",
            "rest.port=0",
            "-D",
            // Longer than the whole test: the slow clients are dropped only at the end.
            "rest.server.request-timeout=10 min",
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(&sp)),
            "--",
            &s(&job),
            &s(&h.path("out")),
            "200",
            "5",
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path(&format!("home/jobs/{jid}.json"))).unwrap()).unwrap();
    let authority = format!("{}:{}", entry["address"].as_str().unwrap(), entry["port"]);

    // 200 clients that start a request and never finish it.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut c = TcpStream::connect(&authority).unwrap();
            c.write_all(format!("GET /jobs/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ").as_bytes())
                .unwrap();
            c
        })
        .collect();
    // The server holds them (it read what they sent and waits for more).
    assert!(
        slow.iter_mut().all(still_open),
        "the slow connections were answered or closed"
    );

    // Over the trusted socket (the default) ...
    let o = h.expect(0, &["list"]);
    assert!(o.contains(&jid) && o.contains("(RUNNING)"), "{o}");
    let o = h.expect(0, &["savepoint", &jid[..8]]);
    let p1 = PathBuf::from(after(&o, "Savepoint completed. Path: "));
    assert!(p1.join("_metadata").is_file(), "{o}");
    // ... and over TCP, next to the slow clients.
    let o = h.expect(0, &["list", "-m", &authority]);
    assert!(o.contains(&jid), "{o}");
    let o = h.expect(0, &["savepoint", &jid[..8], "-m", &authority]);
    assert!(PathBuf::from(after(&o, "Savepoint completed. Path: "))
        .join("_metadata")
        .is_file());
    let o = h.expect(0, &["info", &jid[..8], "-m", &authority]);
    assert!(o.contains("State:       RUNNING"), "{o}");

    // All of that happened while every slow client was still connected.
    assert!(
        slow.iter_mut().all(still_open),
        "slow connections were dropped before the commands ran"
    );

    let o = h.expect(0, &["stop", &jid[..8]]);
    assert!(o.contains(&format!("Job {jid} stopped")), "{o}");
    drop(slow);
}

#[test]
fn the_token_is_required_off_loopback() {
    // A non-loopback address of this machine, if it has one.
    let Some(ip) = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
                .map(String::from)
        })
    else {
        eprintln!("SKIPPED the_token_is_required_off_loopback: this machine has no non-loopback IPv4 address");
        return;
    };
    let job = example("cli_demo_job");
    let h = Home::new("token");
    let s = |p: &PathBuf| p.display().to_string();
    // Without a token a non-loopback server does not start.
    let (code, _, err) = h.cairn(&[
        "run",
        "-D",
        "rest.port=0",
        "-D",
        "rest.bind-address=0.0.0.0",
        "--",
        &s(&job),
        &s(&h.path("o1")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("without a token"), "{err}");
    let o = h.expect(
        0,
        &[
            "run",
            "-D",
            "rest.port=0",
            "-D",
            "rest.bind-address=0.0.0.0",
            "-D",
            "rest.auth-token=s3cret-token",
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(&h.path("sp"))),
            "--",
            &s(&job),
            &s(&h.path("o2")),
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path(&format!("home/jobs/{jid}.json"))).unwrap()).unwrap();
    let remote = format!("{ip}:{}", entry["port"]);
    let raw = |req: String| -> String {
        let mut c = TcpStream::connect(&remote).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    // From the network: reads are open, changes need the token.
    let r = raw(format!(
        "GET /jobs/{jid}/status HTTP/1.1\r\nHost: {remote}\r\nConnection: close\r\n\r\n"
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let post = |auth: &str| {
        raw(format!(
            "POST /jobs/{jid}/savepoints HTTP/1.1\r\nHost: {remote}\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ))
    };
    let r = post("");
    assert!(r.starts_with("HTTP/1.1 401") && r.contains("UNAUTHORIZED"), "{r}");
    let r = post("Authorization: Bearer wrong\r\n");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = post("Authorization: Bearer s3cret-token\r\n");
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    // The CLI over TCP needs it too; over the owner-only socket it does not.
    let (code, _, err) = h.cairn(&["checkpoint", &jid[..8], "-m", &remote]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CAIRN_REST_TOKEN"), "{err}");
    let o = h.expect(0, &["cancel", &jid[..8]]);
    assert!(o.contains("Cancelled job"), "{o}");
}
