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
//!
//! Object-store URIs (`s3://bucket/prefix`) are accepted in the same places:
//! their form is checked here (a bucket, no `..`, `.` or empty segments), a
//! root that is a URI allows the URIs below it, and whether the object exists
//! is for the job's storage to say.

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
            let norm = if is_uri(&r) {
                PathBuf::from(r.to_string_lossy().trim_end_matches('/'))
            } else {
                let abs = if r.is_absolute() { r } else { cwd.join(r) };
                let Some(norm) = lexical_normalise(&abs) else { continue };
                norm
            };
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
        if is_uri(&path) {
            let uri = path.to_string_lossy();
            let inside = |root: &PathBuf| {
                let root = root.to_string_lossy();
                is_uri(Path::new(root.as_ref()))
                    && (uri == root || uri.strip_prefix(root.as_ref()).is_some_and(|r| r.starts_with('/')))
            };
            if self.configured.iter().any(inside) {
                return Ok(path);
            }
            return Err(self.not_allowed(field, &path));
        }
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
        for root in self.configured.iter().filter(|r| !is_uri(r)) {
            let root_resolved = resolve_existing_prefix(root).unwrap_or_else(|_| root.clone());
            if resolved.starts_with(&root_resolved) {
                return Ok(resolved);
            }
        }
        Err(self.not_allowed(field, &path))
    }

    fn not_allowed(&self, field: &str, path: &Path) -> ApiError {
        ApiError::new(
            403,
            "PATH_NOT_ALLOWED",
            format!(
                "field '{field}': '{}' is outside the directories requests may name; {}",
                path.display(),
                self.describe()
            ),
        )
    }

    /// Whether `path` (already resolved) is one of the roots themselves.
    pub fn is_root(&self, path: &Path) -> bool {
        self.configured.iter().any(|r| {
            if is_uri(r) {
                r == path
            } else {
                resolve_existing_prefix(r).unwrap_or_else(|_| r.clone()) == path
            }
        })
    }
}

/// Validates a path from a trusted (same-user, Unix socket) request: any
/// absolute local path. Symbolic links and `..` in the part that exists are
/// resolved by the file system; `..` in a part that does not exist yet is
/// refused (it cannot be resolved safely). Returns the resolved path.
pub fn check_trusted(field: &str, raw: &str, existence: Existence) -> Result<PathBuf, ApiError> {
    let p = match named(field, raw)? {
        Named::Remote(uri) => return Ok(uri),
        Named::Local(p) => p,
    };
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
/// (`.` and repeated separators removed). An object-store URI is returned in
/// its checked form.
pub fn syntax_check(field: &str, raw: &str) -> Result<PathBuf, ApiError> {
    let p = match named(field, raw)? {
        Named::Remote(uri) => return Ok(uri),
        Named::Local(p) => p,
    };
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(ApiError::bad_request(
            "PATH_TRAVERSAL",
            format!("field '{field}': '{raw}' contains '..'; give a normalised absolute path"),
        ));
    }
    lexical_normalise(p).ok_or_else(|| invalid_path(field, format!("'{raw}' is not a valid path")))
}

/// What a request's path names.
enum Named<'a> {
    /// An absolute local path (`file://` stripped).
    Local(&'a Path),
    /// An object-store URI in checked form (lower-case scheme, no trailing `/`).
    Remote(PathBuf),
}

fn invalid_path(field: &str, why: String) -> ApiError {
    ApiError::bad_request("INVALID_PATH", format!("field '{field}': {why}"))
}

/// Whether `path` is a URI of a scheme other than `file`.
fn is_uri(path: &Path) -> bool {
    path.to_string_lossy().contains("://")
}

/// The checks every request path gets: not empty, no control characters,
/// absolute if local, a well-formed URI otherwise.
fn named<'a>(field: &str, raw: &'a str) -> Result<Named<'a>, ApiError> {
    if raw.trim().is_empty() {
        return Err(invalid_path(field, "the path is empty".into()));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid_path(field, "the path contains control characters".into()));
    }
    let local = match raw.strip_prefix("file://") {
        Some(rest) => rest,
        None if raw.contains("://") => return remote_uri(field, raw).map(Named::Remote),
        None => raw,
    };
    let p = Path::new(local);
    if !p.is_absolute() {
        return Err(invalid_path(field, format!("'{raw}' is not an absolute path")));
    }
    Ok(Named::Local(p))
}

/// `scheme://bucket/key...` with a valid scheme, a bucket, and no `..`, `.`
/// or empty segments (object stores do not resolve them, so they would name
/// a different object than the user meant).
fn remote_uri(field: &str, raw: &str) -> Result<PathBuf, ApiError> {
    let (scheme, rest) = raw.split_once("://").unwrap_or((raw, ""));
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(invalid_path(
            field,
            format!("'{raw}' is not a valid URI; give a local absolute path or e.g. s3://bucket/prefix"),
        ));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(invalid_path(
            field,
            format!("'{raw}' names no bucket; give e.g. s3://bucket/prefix"),
        ));
    }
    for segment in rest.split('/') {
        if segment == ".." {
            return Err(ApiError::bad_request(
                "PATH_TRAVERSAL",
                format!("field '{field}': '{raw}' contains '..'; object stores do not resolve it"),
            ));
        }
        if segment.is_empty() || segment == "." {
            return Err(invalid_path(
                field,
                format!("'{raw}' has an empty or '.' segment; give a normalised URI"),
            ));
        }
    }
    Ok(PathBuf::from(format!("{}://{rest}", scheme.to_ascii_lowercase())))
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
        assert_eq!(
            syntax_check("f", "S3://bucket/x/").unwrap(),
            PathBuf::from("s3://bucket/x")
        );
        assert_eq!(syntax_check("f", "s3://").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "s3://b//x").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "s3://b/./x").unwrap_err().code, "INVALID_PATH");
        assert_eq!(syntax_check("f", "s3://b/../x").unwrap_err().code, "PATH_TRAVERSAL");
        assert_eq!(syntax_check("f", "1x://b/x").unwrap_err().code, "INVALID_PATH");
        let e = syntax_check("target-directory", "/a/../etc").unwrap_err();
        assert_eq!((e.status, e.code), (400, "PATH_TRAVERSAL"));
        assert!(e.message.contains("target-directory"), "{}", e.message);
        assert_eq!(syntax_check("f", "/a/b/..").unwrap_err().code, "PATH_TRAVERSAL");
    }

    #[test]
    fn uri_roots_allow_the_uris_below_them() {
        let mut c = Configuration::new();
        c.set("execution.checkpointing.savepoint-dir", "s3://bucket/sp/")
            .unwrap();
        let r = AllowedRoots::from_config(&c);
        assert_eq!(r.roots(), &[PathBuf::from("s3://bucket/sp")][..]);
        let ok = r.check("target-directory", "s3://bucket/sp/manual", Existence::MayBeMissing);
        assert_eq!(ok.unwrap(), PathBuf::from("s3://bucket/sp/manual"));
        for outside in ["s3://bucket/spx/y", "s3://other/sp/y", "gs://bucket/sp/y", "/bucket/sp"] {
            let e = r
                .check("target-directory", outside, Existence::MayBeMissing)
                .unwrap_err();
            assert_eq!((e.status, e.code), (403, "PATH_NOT_ALLOWED"), "{outside}");
        }
        assert!(r.is_root(Path::new("s3://bucket/sp")));
        assert!(!r.is_root(Path::new("s3://bucket/sp/manual")));
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
            check_trusted("f", "s3://b/x", Existence::MustExist).unwrap(),
            PathBuf::from("s3://b/x")
        );
        assert_eq!(
            check_trusted("f", "s3://b/../x", Existence::MayBeMissing)
                .unwrap_err()
                .code,
            "PATH_TRAVERSAL"
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
