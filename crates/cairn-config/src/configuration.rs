//! The configuration map, YAML loading and key validation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::option::{AnyOption, ConfigOption};
use crate::options;
use crate::value::ToConfigString;

/// Where a value came from: a file (with line), a flag, `-D`, or code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueOrigin {
    /// The file name, `-D key=value`, `-p`, `code`...
    pub source: String,
    /// 1-based line in `source`, when it is a file and the line could be found.
    pub line: Option<usize>,
}

impl ValueOrigin {
    /// An origin without line.
    pub fn new(source: impl Into<String>) -> Self {
        ValueOrigin {
            source: source.into(),
            line: None,
        }
    }
}

impl fmt::Display for ValueOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.source),
            None => f.write_str(&self.source),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: String,
    origin: ValueOrigin,
}

/// A job's configuration: canonical key -> raw value (validated on insertion), plus where each
/// value came from. Unset keys read as their option's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    entries: BTreeMap<String, Entry>,
}

impl Configuration {
    /// An empty configuration: every option at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a YAML file (nested maps and/or flat dotted keys). Errors name the file and line.
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(ConfigErrorKind::Io, format!("cannot read configuration file: {e}"))
                .with_origin(origin.clone())
        })?;
        Self::from_yaml_str(&text, &origin)
    }

    /// Parses YAML text; `origin` names it in errors (usually the file name).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let doc: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            ConfigError::new(ConfigErrorKind::Syntax, format!("invalid YAML: {e}"))
                .with_origin(origin)
                .with_line(line)
        })?;
        crate::yaml_tags::reject_tags(text, origin)?;
        let mut leaves = Vec::new();
        match doc {
            yaml_serde::Value::Null => {}
            yaml_serde::Value::Mapping(map) => {
                flatten(&map, &mut Vec::new(), &mut leaves).map_err(|e| e.with_origin(origin))?
            }
            _ => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Syntax,
                    "the document must be a map of keys to values, e.g. 'parallelism.default: 4'",
                )
                .with_origin(origin))
            }
        }

        let mut config = Configuration::new();
        // canonical key -> (key as written, line)
        let mut seen: HashMap<&'static str, (String, Option<usize>)> = HashMap::new();
        for leaf in leaves {
            let line = locate(text, &leaf.path);
            let key = leaf.path.join(".");
            let (opt, _) = resolve_key(&key).map_err(|e| e.with_origin(origin).with_line(line))?;
            if let Some((first_key, first_line)) = seen.get(opt.key()) {
                let first_at = first_line.map(|l| format!(" on line {l}")).unwrap_or_default();
                let how = if *first_key == key {
                    format!("'{key}' is set twice (first{first_at})")
                } else {
                    format!(
                        "'{key}' and '{first_key}'{first_at} both set option '{}' \
                         (one is an alias of the other)",
                        opt.key()
                    )
                };
                return Err(
                    ConfigError::new(ConfigErrorKind::DuplicateKey, format!("{how}; keep only one"))
                        .with_origin(origin)
                        .with_line(line),
                );
            }
            seen.insert(opt.key(), (key.clone(), line));
            config.set_from(
                &key,
                &leaf.value,
                ValueOrigin {
                    source: origin.to_string(),
                    line,
                },
            )?;
        }
        Ok(config)
    }

    /// Sets a value given as text, as from code. See [`Configuration::set_from`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set_from(key, value, ValueOrigin::new("code"))
    }

    /// Sets a value given as text: the key must be known (an alias is stored under the
    /// canonical key) and the value must parse and pass the option's checks. Errors carry
    /// `origin`.
    pub fn set_from(&mut self, key: &str, value: &str, origin: ValueOrigin) -> Result<(), ConfigError> {
        let key = key.trim();
        let value = value.trim();
        let with_origin = |e: ConfigError| e.with_origin(origin.source.clone()).with_line(origin.line);
        let (opt, via_alias) = resolve_key(key).map_err(with_origin)?;
        if let Err(why) = opt.validate(value) {
            let named = if via_alias {
                format!("'{key}' (alias of '{}')", opt.key())
            } else {
                format!("'{key}'")
            };
            return Err(with_origin(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("invalid value '{value}' for {named}: {why}"),
            )));
        }
        self.entries.insert(
            opt.key().to_string(),
            Entry {
                value: value.to_string(),
                origin,
            },
        );
        Ok(())
    }

    /// Sets a typed value from code. The option's range check applies; `None` for an
    /// optional option removes the key.
    pub fn set_option<T: ToConfigString>(&mut self, opt: &ConfigOption<T>, value: T) -> Result<(), ConfigError> {
        if let Err(why) = opt.check(&value) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!(
                    "invalid value '{}' for '{}': {why}",
                    value.to_config_string(),
                    opt.key()
                ),
            ));
        }
        if value.is_unset() {
            self.entries.remove(opt.key());
        } else {
            self.entries.insert(
                opt.key().to_string(),
                Entry {
                    value: value.to_config_string(),
                    origin: ValueOrigin::new("code"),
                },
            );
        }
        Ok(())
    }

    /// The value if set, else the option's default.
    pub fn get<T>(&self, opt: &ConfigOption<T>) -> T {
        self.get_optional(opt).unwrap_or_else(|| opt.default_value())
    }

    /// The value only if explicitly set (defaults are not consulted).
    pub fn get_optional<T>(&self, opt: &ConfigOption<T>) -> Option<T> {
        let entry = self.entries.get(opt.key())?;
        // Values were validated when set; a value that no longer parses reads as unset.
        opt.parse(&entry.value).ok()
    }

    /// Whether the option is explicitly set.
    pub fn contains<T>(&self, opt: &ConfigOption<T>) -> bool {
        self.entries.contains_key(opt.key())
    }

    /// Unsets an option; returns whether it was set.
    pub fn remove<T>(&mut self, opt: &ConfigOption<T>) -> bool {
        self.entries.remove(opt.key()).is_some()
    }

    /// Where the option's value came from, if it is set.
    pub fn origin<T>(&self, opt: &ConfigOption<T>) -> Option<&ValueOrigin> {
        self.entries.get(opt.key()).map(|e| &e.origin)
    }

    /// Copies every entry of `other` into `self`; `other`'s values win.
    pub fn merge(&mut self, other: &Configuration) {
        for (k, v) in &other.entries {
            self.entries.insert(k.clone(), v.clone());
        }
    }

    /// Explicitly set entries as (canonical key, raw value), sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e.value.as_str()))
    }

    /// Number of explicitly set entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is explicitly set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The checkpoint interval, `None` when checkpointing is disabled.
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        self.get(&options::CHECKPOINTING_INTERVAL)
    }

    /// Whether periodic checkpointing is enabled (`execution.checkpointing.interval` set).
    pub fn checkpointing_enabled(&self) -> bool {
        self.checkpoint_interval().is_some()
    }

    /// `rest.allowed-path-roots` split on commas, trimmed, empty items dropped, `file://`
    /// stripped.
    pub fn allowed_path_roots(&self) -> Vec<PathBuf> {
        self.get(&options::REST_ALLOWED_PATH_ROOTS)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| PathBuf::from(p.strip_prefix("file://").unwrap_or(p)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Resolves a key to its option, with an "unknown key" error carrying a suggestion.
fn resolve_key(key: &str) -> Result<(&'static dyn AnyOption, bool), ConfigError> {
    if let Some(found) = options::lookup(key) {
        return Ok(found);
    }
    let mut msg = format!("unknown configuration key '{key}'");
    if let Some(s) = suggest(key) {
        msg.push_str(&format!(" (did you mean '{s}'?)"));
    } else {
        msg.push_str("; see docs/configuration.md for the supported keys");
    }
    Err(ConfigError::new(ConfigErrorKind::UnknownKey, msg))
}

/// The known key (canonical or alias, reported as canonical) closest to `key`, if close.
pub(crate) fn suggest(key: &str) -> Option<&'static str> {
    let limit = (key.chars().count() / 4).clamp(2, 6);
    let mut best: Option<(usize, &'static str)> = None;
    for opt in options::all() {
        for candidate in std::iter::once(opt.key()).chain(opt.aliases().iter().copied()) {
            let d = edit_distance(key, candidate);
            if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, opt.key()));
            }
        }
    }
    best.map(|(_, k)| k)
}

/// Levenshtein distance over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

struct Leaf {
    /// The YAML keys leading to the value; joined with '.' they form the config key.
    path: Vec<String>,
    value: String,
}

fn flatten(map: &yaml_serde::Mapping, prefix: &mut Vec<String>, out: &mut Vec<Leaf>) -> Result<(), ConfigError> {
    use yaml_serde::Value;
    for (k, v) in map {
        let seg = match k {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Syntax,
                    format!(
                        "keys must be plain text; found a non-text key under '{}'",
                        display_prefix(prefix)
                    ),
                ))
            }
        };
        prefix.push(seg);
        let key = prefix.join(".");
        let scalar = match v {
            Value::Mapping(inner) => {
                flatten(inner, prefix, out)?;
                prefix.pop();
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Syntax,
                    format!("'{key}' has no value; give one or remove the key"),
                ))
            }
            Value::Sequence(_) => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Syntax,
                    format!("'{key}' is a list, but no Cairn option takes a list; give a single value"),
                ))
            }
            Value::Tagged(t) => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Syntax,
                    format!("'{key}' has a YAML tag '{}', which is not supported", t.tag),
                ))
            }
        };
        out.push(Leaf {
            path: prefix.clone(),
            value: scalar,
        });
        prefix.pop();
    }
    Ok(())
}

fn display_prefix(prefix: &[String]) -> String {
    if prefix.is_empty() {
        "the top level".to_string()
    } else {
        prefix.join(".")
    }
}

/// Best-effort 1-based line of a leaf: finds each path segment as a `segment:` key after the
/// previous one. yaml_serde's values carry no positions, so this scans the text.
fn locate(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut line, mut col) = (0usize, 0usize);
    for seg in path {
        let (l, c) = find_key(&lines, line, col, seg)?;
        line = l;
        col = c;
    }
    Some(line + 1)
}

fn find_key(lines: &[&str], start_line: usize, start_col: usize, seg: &str) -> Option<(usize, usize)> {
    let candidates = [seg.to_string(), format!("\"{seg}\""), format!("'{seg}'")];
    for (i, full) in lines.iter().enumerate().skip(start_line) {
        if full.trim_start().starts_with('#') {
            continue;
        }
        let from = if i == start_line { start_col } else { 0 };
        let Some(line) = full.get(from..) else {
            continue;
        };
        for cand in &candidates {
            let mut search = 0;
            while let Some(pos) = line[search..].find(cand.as_str()) {
                let at = search + pos;
                let end = at + cand.len();
                let before_ok = line[..at]
                    .chars()
                    .next_back()
                    .is_none_or(|c| c.is_whitespace() || c == '{' || c == ',');
                let after_ok = line[end..].trim_start().starts_with(':');
                if before_ok && after_ok {
                    return Some((i, from + end));
                }
                search = end;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("parallelism.defualt"), Some("parallelism.default"));
        assert_eq!(suggest("state.checkpoint.dir"), Some("execution.checkpointing.dir"));
        assert_eq!(suggest("completely.unrelated.thing"), None);
    }

    #[test]
    fn locate_nested_and_flat() {
        let text = "# comment\nparallelism.default: 2\nexecution:\n  checkpointing:\n    mode: AT_LEAST_ONCE\n    interval: 10 s\n";
        assert_eq!(locate(text, &["parallelism.default".into()]), Some(2));
        let p: Vec<String> = ["execution", "checkpointing", "interval"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(locate(text, &p), Some(6));
        let flow = "execution: {checkpointing: {interval: 10s}}\n";
        assert_eq!(locate(flow, &p), Some(1));
    }
}
