//! Job discovery on one machine: every job process that serves REST writes
//! `<home>/jobs/<job-id>.json` (job id, name, pid, address, port, start
//! time) and removes it when the job ends. `<home>` is `$CAIRN_HOME`, else
//! `~/.cairn`. Readers skip entries they cannot parse and delete entries whose
//! process is gone, so a crashed job leaves nothing behind for long.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable naming Cairn's home directory.
pub const HOME_ENV: &str = "CAIRN_HOME";

/// One running job's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The job id (32 lowercase hex digits).
    pub jid: String,
    pub name: String,
    /// The process serving the job.
    pub pid: u32,
    /// Where local clients reach the REST server.
    pub address: String,
    pub port: u16,
    /// Milliseconds since the Unix epoch.
    #[serde(rename = "start-time")]
    pub start_time_ms: u64,
}

impl RegistryEntry {
    /// `host:port`, with brackets around IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }
}

/// Why a job id (prefix) did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No registered job id starts with it.
    NotFound,
    /// Several do; their ids.
    Ambiguous(Vec<String>),
}

/// The registry under a Cairn home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    home: PathBuf,
}

impl Registry {
    /// The registry under `home`.
    pub fn new(home: impl Into<PathBuf>) -> Registry {
        Registry { home: home.into() }
    }

    /// `$CAIRN_HOME`, else `$HOME/.cairn`.
    pub fn from_env() -> Result<Registry, String> {
        if let Some(h) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
            return Ok(Registry::new(PathBuf::from(h)));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => Ok(Registry::new(PathBuf::from(h).join(".cairn"))),
            None => Err(format!(
                "cannot find Cairn's home directory: set {HOME_ENV} (or HOME, for ~/.cairn)"
            )),
        }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/jobs`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.home.join("jobs")
    }

    /// `<home>/logs`, where `cairn run` writes job output.
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    fn entry_path(&self, jid: &str) -> PathBuf {
        self.jobs_dir().join(format!("{jid}.json"))
    }

    /// Writes (atomically) the entry of a job; returns its file.
    pub fn register(&self, entry: &RegistryEntry) -> std::io::Result<PathBuf> {
        if !is_job_id(&entry.jid) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{}' is not a job id (32 lowercase hex digits)", entry.jid),
            ));
        }
        let dir = self.jobs_dir();
        std::fs::create_dir_all(&dir)?;
        let path = self.entry_path(&entry.jid);
        let tmp = dir.join(format!(".{}.{}.tmp", entry.jid, std::process::id()));
        let mut bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Removes a job's entry (missing is fine).
    pub fn unregister(&self, jid: &str) {
        if is_job_id(jid) {
            let _ = std::fs::remove_file(self.entry_path(jid));
        }
    }

    /// The entries of jobs whose process is alive, sorted by start time.
    /// Entries of dead processes are deleted.
    pub fn list(&self) -> Vec<RegistryEntry> {
        let Ok(dir) = std::fs::read_dir(self.jobs_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in dir.flatten() {
            let path = item.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if !is_job_id(stem) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(entry) = serde_json::from_slice::<RegistryEntry>(&bytes) else {
                continue;
            };
            if entry.jid != stem {
                continue;
            }
            if !pid_alive(entry.pid) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            out.push(entry);
        }
        out.sort_by(|a, b| (a.start_time_ms, &a.jid).cmp(&(b.start_time_ms, &b.jid)));
        out
    }

    /// The live job whose id is `prefix` or starts with it.
    pub fn resolve(&self, prefix: &str) -> Result<RegistryEntry, ResolveError> {
        resolve_prefix(self.list(), prefix, |e| &e.jid)
    }
}

/// Picks the one item whose id equals `prefix` or starts with it.
pub fn resolve_prefix<T>(items: Vec<T>, prefix: &str, id: impl Fn(&T) -> &str) -> Result<T, ResolveError> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        return Err(ResolveError::NotFound);
    }
    let mut matching: Vec<T> = items.into_iter().filter(|i| id(i).starts_with(&prefix)).collect();
    if let Some(pos) = matching.iter().position(|i| id(i) == prefix) {
        return Ok(matching.swap_remove(pos));
    }
    match matching.len() {
        0 => Err(ResolveError::NotFound),
        1 => Ok(matching.remove(0)),
        _ => Err(ResolveError::Ambiguous(
            matching.iter().map(|i| id(i).to_string()).collect(),
        )),
    }
}

/// 32 lowercase hex digits.
pub fn is_job_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a process with this id exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(true)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cairn-registry-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn entry(jid: &str, pid: u32, start: u64) -> RegistryEntry {
        RegistryEntry {
            jid: jid.into(),
            name: format!("job {start}"),
            pid,
            address: "127.0.0.1".into(),
            port: 8081,
            start_time_ms: start,
        }
    }

    #[test]
    fn register_list_prune_resolve() {
        let home = tmp("list");
        let r = Registry::new(&home);
        assert!(r.list().is_empty());
        let me = std::process::id();
        let a = entry("aaaa0000000000000000000000000000", me, 2);
        let b = entry("aaab0000000000000000000000000000", me, 1);
        let dead = entry("dddd0000000000000000000000000000", 0, 3);
        for e in [&a, &b, &dead] {
            r.register(e).unwrap();
        }
        std::fs::write(r.jobs_dir().join("garbage.json"), b"{").unwrap();
        std::fs::write(r.jobs_dir().join("eeee0000000000000000000000000000.json"), b"not json").unwrap();
        assert_eq!(r.list(), vec![b.clone(), a.clone()]);
        assert!(
            !r.jobs_dir().join(format!("{}.json", dead.jid)).exists(),
            "dead entry pruned"
        );
        assert!(
            r.jobs_dir().join("garbage.json").exists(),
            "unknown files are left alone"
        );

        assert_eq!(r.resolve("aaaa").unwrap(), a);
        assert_eq!(r.resolve("AAAB").unwrap(), b);
        assert_eq!(r.resolve(&a.jid).unwrap(), a);
        assert_eq!(
            r.resolve("aaa"),
            Err(ResolveError::Ambiguous(vec![b.jid.clone(), a.jid.clone()]))
        );
        assert_eq!(r.resolve("f"), Err(ResolveError::NotFound));
        assert_eq!(r.resolve(""), Err(ResolveError::NotFound));

        r.unregister(&a.jid);
        assert_eq!(r.list(), vec![b.clone()]);
        assert!(r.register(&entry("../../etc/passwd", me, 0)).is_err());
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn urls() {
        let mut e = entry("aaaa0000000000000000000000000000", 1, 0);
        assert_eq!(e.url(), "http://127.0.0.1:8081");
        e.address = "::1".into();
        assert_eq!(e.authority(), "[::1]:8081");
    }

    #[test]
    fn liveness() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn job_ids() {
        assert!(is_job_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_job_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_job_id("0123"));
    }
}
