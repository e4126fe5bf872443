//! Job discovery on one machine: every job process that serves REST writes
//! `<home>/jobs/<job-id>.json` (job id, name, pid, address, port, start
//! time, its control socket, the binary and arguments it was started with)
//! and removes it when the job ends. `<home>` is `$CAIRN_HOME`, else
//! `~/.cairn`. The jobs directory is owner-only (mode 0700): it also holds
//! each job's trusted control socket `<job-id>.sock`. Readers skip entries
//! they cannot parse and delete entries whose process is gone, so a crashed
//! job leaves nothing behind for long.

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
    /// The job's trusted control socket (owner-only), if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The job binary (absolute), for restarting it from a savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
    /// The arguments the binary was started with (startup flags and the
    /// job's own arguments), as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The working directory the job was started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
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

/// A job that ended: its registry entry and how it ended, kept under
/// `<home>/history/<job-id>.json` for the dashboard (restoring it later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedJob {
    #[serde(flatten)]
    pub entry: RegistryEntry,
    /// Flink's name of the final status (`FINISHED`, `CANCELED`, `FAILED`).
    pub state: String,
    #[serde(rename = "end-time")]
    pub end_time_ms: u64,
    /// The last savepoint the job wrote (a stop's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<PathBuf>,
    /// Its latest retained checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<PathBuf>,
}

/// How many ended jobs the history keeps.
pub const HISTORY_LIMIT: usize = 50;

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

    /// Where job `jid` listens for trusted local control.
    pub fn socket_path(&self, jid: &str) -> PathBuf {
        self.jobs_dir().join(format!("{jid}.sock"))
    }

    /// Creates the jobs directory, owner-only (0700), so that only this user
    /// can reach the control sockets in it.
    pub fn ensure_jobs_dir(&self) -> std::io::Result<PathBuf> {
        let dir = self.jobs_dir();
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
            if mode != 0o700 {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(dir)
    }

    /// Writes (atomically) the entry of a job; returns its file.
    pub fn register(&self, entry: &RegistryEntry) -> std::io::Result<PathBuf> {
        if !is_job_id(&entry.jid) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{}' is not a job id (32 lowercase hex digits)", entry.jid),
            ));
        }
        let dir = self.ensure_jobs_dir()?;
        let path = self.entry_path(&entry.jid);
        let tmp = dir.join(format!(".{}.{}.tmp", entry.jid, std::process::id()));
        let mut bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// `<home>/history`, where ended jobs are recorded.
    pub fn history_dir(&self) -> PathBuf {
        self.home.join("history")
    }

    /// Records how a job ended (atomically), keeping the newest
    /// [`HISTORY_LIMIT`] records.
    pub fn record_ended(&self, ended: &EndedJob) -> std::io::Result<()> {
        if !is_job_id(&ended.entry.jid) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a job id"));
        }
        let dir = self.history_dir();
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.{}.tmp", ended.entry.jid, std::process::id()));
        let bytes = serde_json::to_vec_pretty(ended).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join(format!("{}.json", ended.entry.jid)))?;
        let all = self.history();
        for old in all.iter().skip(HISTORY_LIMIT) {
            let _ = std::fs::remove_file(dir.join(format!("{}.json", old.entry.jid)));
        }
        Ok(())
    }

    /// The ended jobs, newest first.
    pub fn history(&self) -> Vec<EndedJob> {
        let Ok(dir) = std::fs::read_dir(self.history_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<EndedJob> = dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<EndedJob>(&b).ok())
            .filter(|e| is_job_id(&e.entry.jid))
            .collect();
        out.sort_by(|a, b| (b.end_time_ms, &b.entry.jid).cmp(&(a.end_time_ms, &a.entry.jid)));
        out
    }

    /// Removes a job's entry but not its socket (a server that still
    /// answers its last clients; missing is fine).
    pub fn remove_entry(&self, jid: &str) {
        if is_job_id(jid) {
            let _ = std::fs::remove_file(self.entry_path(jid));
        }
    }

    /// Removes a job's entry and its socket (missing is fine).
    pub fn unregister(&self, jid: &str) {
        if is_job_id(jid) {
            let _ = std::fs::remove_file(self.entry_path(jid));
            let _ = std::fs::remove_file(self.socket_path(jid));
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
                let _ = std::fs::remove_file(self.socket_path(stem));
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
            socket: None,
            program: None,
            args: Vec::new(),
            cwd: None,
        }
    }

    #[test]
    fn history_keeps_the_newest() {
        let home = std::env::temp_dir().join(format!("cairn-registry-hist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let r = Registry::new(&home);
        for i in 0..(HISTORY_LIMIT as u64 + 3) {
            let mut e = entry(&format!("{i:032x}"), 1, i);
            e.program = Some("/bin/job".into());
            r.record_ended(&EndedJob {
                entry: e,
                state: "FINISHED".into(),
                end_time_ms: 1000 + i,
                last_savepoint: Some("/sp/x".into()),
                last_checkpoint: None,
            })
            .unwrap();
        }
        let h = r.history();
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].end_time_ms, 1000 + HISTORY_LIMIT as u64 + 2);
        assert_eq!(h[0].entry.program.as_deref(), Some(Path::new("/bin/job")));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn old_entries_without_socket_still_parse_and_the_dir_is_private() {
        let old = r#"{"jid":"aaaa0000000000000000000000000000","name":"n","pid":1,"address":"127.0.0.1","port":1,"start-time":0}"#;
        let e: RegistryEntry = serde_json::from_str(old).unwrap();
        assert_eq!((e.socket, e.program, e.args.len()), (None, None, 0));
        let home = std::env::temp_dir().join(format!("cairn-registry-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let r = Registry::new(&home);
        std::fs::create_dir_all(r.jobs_dir()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(r.jobs_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
            r.ensure_jobs_dir().unwrap();
            let mode = std::fs::metadata(r.jobs_dir()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        assert_eq!(
            r.socket_path("aaaa0000000000000000000000000000"),
            home.join("jobs/aaaa0000000000000000000000000000.sock")
        );
        let _ = std::fs::remove_dir_all(&home);
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
