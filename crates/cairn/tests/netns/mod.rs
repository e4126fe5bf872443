//! Hosts for multi-process tests: Linux network namespaces joined by veth
//! pairs to a bridge in a hub namespace, made by the test and removed when
//! it ends. Nothing is added to the machine's own namespace, and no packet
//! can leave: the hub has no route out. Needs root and `ip` (iproute2);
//! without them the tests skip, unless `CAIRN_REQUIRE_NETNS=1` (set by
//! `.ci/services/netns.sh`) makes that a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The subnet of every test network (private to its namespaces).
const SUBNET: &str = "10.213.0";

/// One host: a namespace with `eth0` at `ip`.
pub struct Host {
    pub ns: String,
    pub ip: String,
    /// The veth end in the hub (down = the host's link is cut).
    hub_end: String,
}

/// A process started on a host; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// The process id (of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test network of hosts.
pub struct Net {
    hub: String,
    pub hosts: Vec<Host>,
    pids: Mutex<Vec<u32>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this machine can make namespaces; says why not when it cannot
/// (and fails when `CAIRN_REQUIRE_NETNS=1`).
pub fn available() -> bool {
    let required = std::env::var("CAIRN_REQUIRE_NETNS").as_deref() == Ok("1");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if root && has_ip {
        return true;
    }
    let why = if !has_ip {
        "no `ip` command (iproute2)"
    } else {
        "not root"
    };
    assert!(
        !required,
        "CAIRN_REQUIRE_NETNS=1 but network namespaces cannot be made: {why}"
    );
    eprintln!("SKIPPED: multi-host test needs network namespaces ({why})");
    false
}

impl Net {
    /// `n` hosts on one bridge: 10.213.0.1 .. 10.213.0.n.
    pub fn new(n: usize) -> Net {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("cairn-{tag}-hub");
        let mut net = Net {
            hub: hub.clone(),
            hosts: Vec::new(),
            pids: Mutex::new(Vec::new()),
        };
        ip(&["netns", "add", &hub]).expect("a hub namespace");
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]).unwrap();
        ip(&["-n", &hub, "link", "set", "br0", "up"]).unwrap();
        for i in 0..n {
            let ns = format!("cairn-{tag}-h{i}");
            // Interface names are at most 15 bytes.
            let hub_end = format!("v{}h{i}", tag.chars().rev().take(8).collect::<String>());
            let host_ip = format!("{SUBNET}.{}", i + 1);
            ip(&["netns", "add", &ns]).unwrap();
            net.hosts.push(Host {
                ns: ns.clone(),
                ip: host_ip.clone(),
                hub_end: hub_end.clone(),
            });
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &hub_end, "netns", &hub,
            ])
            .unwrap();
            ip(&["-n", &ns, "addr", "add", &format!("{host_ip}/24"), "dev", "eth0"]).unwrap();
            ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap();
            ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();
            ip(&["-n", &hub, "link", "set", &hub_end, "master", "br0"]).unwrap();
            ip(&["-n", &hub, "link", "set", &hub_end, "up"]).unwrap();
        }
        net
    }

    /// Start `program args` on host `i`, output to `log`.
    pub fn spawn(&self, i: usize, program: &Path, args: &[String], log: &Path, env: &[(&str, &str)]) -> Process {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.pids.lock().unwrap().push(child.id());
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Cut host `i`'s link (its packets are dropped until `link_up`).
    pub fn link_down(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &self.hosts[i].hub_end, "down"]).unwrap();
    }

    pub fn link_up(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &self.hosts[i].hub_end, "up"]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Processes first: a namespace lives on while a process is in it.
        for pid in self.pids.lock().unwrap().drain(..) {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}

/// Wait until `f` holds, failing after `timeout` with `what`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
