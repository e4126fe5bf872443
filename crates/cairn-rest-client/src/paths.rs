//! Validation of paths that arrive in requests (savepoint target directories,
//! savepoints to dispose of).
//!
//! A path is accepted only if it is absolute, contains no `..`, and — after
//! resolving symbolic links in the part that exists — lies inside one of the
//! allowed roots: `execution.checkpointing.savepoint-dir`,
//! `execution.checkpointing.dir` and the directories listed in
//! `rest.allowed-path-roots` (alias `rest.allowed-paths`). With no root
//! configured, no path is accepted. The validated path returned is the
//! resolved one, so what was checked is what is used.
//!
//! Requests over a job's trusted Unix socket come from the job's own user,
//! who may name any absolute path, as with Flink's CLI: [`check_trusted`].

use std::path::{Component, Path, PathBuf};

use cairn_config::{options, Configuration};

use crate::error::ApiError;

/// The directories request paths must stay in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedRoots {
    /// Absolute, lexically normalised, as configured (for messages).
    configured: Vec<PathBuf>,
}

/// Whether a path must already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existence {
    /// It may be created later (savepoint target directories).
    MayBeMissing,
    /// It must exist (savepoints to dispose of).
    MustExist,
}

impl AllowedRoots {
    /// The roots a job's configuration allows.
    pub fn from_config(config: &Configuration) -> AllowedRoots {
        let mut roots = Vec::new();
        roots.extend(config.get(&options::SAVEPOINT_DIR));
        roots.extend(config.get(&options::CHECKPOINTS_DIR));
        roots.extend(config.allowed_path_roots());
        AllowedRoots::new(roots)
    }

    /// Explicit roots; relative ones are taken relative to the working directory.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> AllowedRoots {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let mut configured: Vec<PathBuf> = Vec::new();
        for r in roots {
            let abs = if r.is_absolute() { r } else { cwd.join(r) };
            let Some(norm) = lexical_normalise(&abs) else { continue };
            if !configured.contains(&norm) {
                configured.push(norm);
            }
        }
        AllowedRoots { configured }
    }

    /// The configured roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.configured
    }

    fn describe(&self) -> String {
        if self.configured.is_empty() {
            "none is configured; set execution.checkpointing.savepoint-dir, execution.checkpointing.dir or \
             rest.allowed-path-roots (alias rest.allowed-paths)"
                .to_string()
        } else {
            let list: Vec<String> = self.configured.iter().map(|p| p.display().to_string()).collect();
            format!(
                "allowed: {} (execution.checkpointing.savepoint-dir, execution.checkpointing.dir, rest.allowed-path-roots)",
                list.join(", ")
            )
        }
    }

    /// Validates `raw`, the value of request field `field`. Returns the
    /// resolved path (symbolic links in its existing part resolved).
    pub fn check(&self, field: &str, raw: &str, existence: Existence) -> Result<PathBuf, ApiError> {
        let path = syntax_check(field, raw)?;
        let resolved = resolve_existing_prefix(&path).map_err(|e| {
            ApiError::bad_request(
                "INVALID_PATH",
                format!("field '{field}': cannot resolve '{}': {e}", path.display()),
            )
        })?;
        if existence == Existence::MustExist && !resolved.exists() {
            return Err(ApiError::new(
                404,
                "PATH_NOT_FOUND",
                format!("field '{field}': '{}' does not exist", path.display()),
            ));
        }
        for root in &self.configured {
            let root_resolved = resolve_existing_prefix(root).unwrap_or_else(|_| root.clone());
            if resolved.starts_with(&root_resolved) {
                return Ok(resolved);
            }
        }
        Err(ApiError::new(
            403,
            "PATH_NOT_ALLOWED",
            format!(
                "field '{field}': '{}' is outside the directories requests may name; {}",
                path.display(),
                self.describe()
            ),
        ))
    }

    /// Whether `path` (already resolved) is one of the roots themselves.
    pub fn is_root(&self, path: &Path) -> bool {
        self.configured
            .iter()
            .any(|r| resolve_existing_prefix(r).unwrap_or_else(|_| r.clone()) == path)
    }
}

/// Validates a path from a trusted (same-user, Unix socket) request: any
/// absolute local path. Symbolic links and `..` in the part that exists are
/// resolved by the file system; `..` in a part that does not exist yet is
/// refused (it cannot be resolved safely). Returns the resolved path.
pub fn check_trusted(field: &str, raw: &str, existence: Existence) -> Result<PathBuf, ApiError> {
    let invalid = |why: String| ApiError::bad_request("INVALID_PATH", format!("field '{field}': {why}"));
    if raw.trim().is_empty() {
        return Err(invalid("the path is empty".into()));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid("the path contains control characters".into()));
    }
    let local = match raw.strip_prefix("file://") {
        Some(rest) => rest,
        None if raw.contains("://") => {
            return Err(invalid(format!(
                "'{raw}' uses a scheme other than file://; only local paths are supported"
            )))
        }
        None => raw,
    };
    let p = Path::new(local);
    if !p.is_absolute() {
        return Err(invalid(format!("'{raw}' is not an absolute path")));
    }
    // The longest existing ancestor, canonicalised; the rest appended.
    let mut existing = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            // A trailing `..` or `.` of a missing path.
            _ => {
                return Err(ApiError::bad_request(
                    "PATH_TRAVERSAL",
                    format!("field '{field}': '{raw}' has '..' in a part that does not exist; give a normalised path"),
                ))
            }
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).map_err(|e| {
        ApiError::bad_request(
            "INVALID_PATH",
            format!("field '{field}': cannot resolve '{}': {e}", existing.display()),
        )
    })?;
    for name in rest.into_iter().rev() {
        if name == ".." {
            return Err(ApiError::bad_request(
                "PATH_TRAVERSAL",
                format!("field '{field}': '{raw}' has '..' in a part that does not exist; give a normalised path"),
            ));
        }
        if name != "." {
            resolved.push(name);
        }
    }
    if existence == Existence::MustExist && !resolved.exists() {
        return Err(ApiError::new(
            404,
            "PATH_NOT_FOUND",
            format!("field '{field}': '{}' does not exist", p.display()),
        ));
    }
    Ok(resolved)
}

/// Checks the form of a path: a local absolute path (an optional `file://`
/// prefix is stripped), no `..`, no control characters; returns it normalised
/// (`.` and repeated separators removed).
pub fn syntax_check(field: &str, raw: &str) -> Result<PathBuf, ApiError> {
    let invalid = |why: String| ApiError::bad_request("INVALID_PATH", format!("field '{field}': {why}"));
    if raw.trim().is_empty() {
        return Err(invalid("the path is empty".into()));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid("the path contains control characters".into()));
    }
    let local = match raw.strip_prefix("file://") {
        Some(rest) => rest,
        None if raw.contains("://") => {
            return Err(invalid(format!(
                "'{raw}' uses a scheme other than file://; only local paths are supported"
            )))
        }
        None => raw,
    };
    let p = Path::new(local);
    if !p.is_absolute() {
        return Err(invalid(format!("'{raw}' is not an absolute path")));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(ApiError::bad_request(
            "PATH_TRAVERSAL",
            format!("field '{field}': '{raw}' contains '..'; give a normalised absolute path"),
        ));
    }
    lexical_normalise(p).ok_or_else(|| invalid(format!("'{raw}' is not a valid path")))
}

/// Removes `.` components and repeated separators; `None` if the path has `..`.
fn lexical_normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => return None,
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// Canonicalises the longest existing ancestor of an absolute, `..`-free
/// path and appends the rest, so symbolic links cannot lead outside a root.
fn resolve_existing_prefix(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::symlink_metadata(&existing) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break,
            },
            Err(e) => return Err(e),
        }
    }
    let mut resolved = std::fs::canonicalize(&existing)?;
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "cairn-rest-paths-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(std::fs::canonicalize(p).unwrap())
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn syntax() {
        assert_eq!(syntax_check("f", "/a/./b//c/").unwrap(), PathBuf::from("/a/b/c"));
        assert_eq!(syntax_check("f", "file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(syntax_check("f", "relative/x").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "/a\n/b").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "s3://bucket/x").unwrap_err().code, "INVALID_PATH");
        let e = syntax_check("target-directory", "/a/../etc").unwrap_err();
        assert_eq!((e.status, e.code), (400, "PATH_TRAVERSAL"));
        assert!(e.message.contains("target-directory"), "{}", e.message);
        assert_eq!(syntax_check("f", "/a/b/..").unwrap_err().code, "PATH_TRAVERSAL");
    }

    #[test]
    fn roots_from_config() {
        let mut c = Configuration::new();
        c.set("state.savepoints.dir", "file:///data/sp").unwrap();
        c.set("execution.checkpointing.dir", "/data/chk").unwrap();
        c.set("rest.allowed-paths", "/x, /y/./z").unwrap();
        let r = AllowedRoots::from_config(&c);
        let want: Vec<PathBuf> = ["/data/sp", "/data/chk", "/x", "/y/z"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(r.roots(), &want[..]);
    }

    #[test]
    fn inside_and_outside_roots() {
        let t = Tmp::new("roots");
        let root = t.0.join("sp");
        std::fs::create_dir_all(&root).unwrap();
        let roots = AllowedRoots::new([root.clone()]);
        let ok = roots
            .check("f", &format!("{}/new/dir", root.display()), Existence::MayBeMissing)
            .unwrap();
        assert_eq!(ok, root.join("new/dir"));
        assert_eq!(
            roots
                .check("f", &root.display().to_string(), Existence::MustExist)
                .unwrap(),
            root
        );
        assert!(roots.is_root(&root));
        let e = roots.check("f", "/etc/passwd", Existence::MayBeMissing).unwrap_err();
        assert_eq!((e.status, e.code), (403, "PATH_NOT_ALLOWED"));
        assert!(e.message.contains(&root.display().to_string()), "{}", e.message);
        // A sibling whose name merely starts with the root's.
        let e = roots
            .check("f", &format!("{}-evil/x", root.display()), Existence::MayBeMissing)
            .unwrap_err();
        assert_eq!(e.code, "PATH_NOT_ALLOWED");
        let e = roots
            .check("f", &format!("{}/missing", root.display()), Existence::MustExist)
            .unwrap_err();
        assert_eq!((e.status, e.code), (404, "PATH_NOT_FOUND"));
        let none = AllowedRoots::default();
        let e = none.check("f", "/tmp/x", Existence::MayBeMissing).unwrap_err();
        assert!(e.message.contains("none is configured"), "{}", e.message);
    }

    #[test]
    fn trusted_paths_may_be_anywhere() {
        let t = Tmp::new("trusted");
        let a = t.0.join("a");
        std::fs::create_dir_all(&a).unwrap();
        assert_eq!(
            check_trusted("f", &format!("{}/new/x", a.display()), Existence::MayBeMissing).unwrap(),
            a.join("new/x")
        );
        // `..` through existing directories is resolved by the file system.
        assert_eq!(
            check_trusted("f", &format!("{}/a/../a/y", t.0.display()), Existence::MayBeMissing).unwrap(),
            a.join("y")
        );
        let e = check_trusted("f", &format!("{}/missing/../x", t.0.display()), Existence::MayBeMissing).unwrap_err();
        assert_eq!(e.code, "PATH_TRAVERSAL");
        assert_eq!(
            check_trusted("f", "rel", Existence::MayBeMissing).unwrap_err().code,
            "INVALID_PATH"
        );
        assert_eq!(
            check_trusted("f", "s3://b/x", Existence::MayBeMissing)
                .unwrap_err()
                .code,
            "INVALID_PATH"
        );
        let e = check_trusted("f", &format!("{}/nope", t.0.display()), Existence::MustExist).unwrap_err();
        assert_eq!((e.status, e.code), (404, "PATH_NOT_FOUND"));
        assert_eq!(
            check_trusted("f", &format!("file://{}", a.display()), Existence::MustExist).unwrap(),
            a
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_cannot_escape() {
        let t = Tmp::new("link");
        let root = t.0.join("root");
        let outside = t.0.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = AllowedRoots::new([root.clone()]);
        let e = roots
            .check("f", &format!("{}/link/x", root.display()), Existence::MayBeMissing)
            .unwrap_err();
        assert_eq!(e.code, "PATH_NOT_ALLOWED");
        // A root that is itself reached through a link works.
        std::os::unix::fs::symlink(&root, t.0.join("alias")).unwrap();
        let roots = AllowedRoots::new([t.0.join("alias")]);
        assert_eq!(
            roots
                .check("f", &format!("{}/a", root.display()), Existence::MayBeMissing)
                .unwrap(),
            root.join("a")
        );
    }
}
