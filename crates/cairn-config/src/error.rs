//! The one error type of this crate.

use std::fmt;

/// What went wrong, for callers that want to react differently (e.g. exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The key names no known option (nor an alias of one).
    UnknownKey,
    /// The value does not parse for the option's type, or is out of range.
    InvalidValue,
    /// The same option is set twice in one file (possibly via an alias).
    DuplicateKey,
    /// The YAML document is malformed, or has a shape Cairn does not accept (lists, nulls...).
    Syntax,
    /// A file could not be read.
    Io,
    /// A startup flag is malformed or misses its value.
    InvalidFlag,
}

/// A configuration error: says where (origin and line when known), what, and what is accepted.
///
/// Displayed as `<origin>:<line>: <message>`, `<origin>: <message>` or `<message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    origin: Option<String>,
    line: Option<usize>,
    message: String,
}

impl ConfigErrorKind {
    /// Every code [`ConfigErrorKind::code`] returns (listed in `docs/errors.md`).
    pub const CODES: &'static [&'static str] = &[
        "CONFIG_UNKNOWN_KEY",
        "CONFIG_INVALID_VALUE",
        "CONFIG_DUPLICATE_KEY",
        "CONFIG_SYNTAX",
        "CONFIG_IO",
        "INVALID_FLAG",
    ];

    /// A stable code for programs to branch on.
    pub fn code(self) -> &'static str {
        match self {
            ConfigErrorKind::UnknownKey => "CONFIG_UNKNOWN_KEY",
            ConfigErrorKind::InvalidValue => "CONFIG_INVALID_VALUE",
            ConfigErrorKind::DuplicateKey => "CONFIG_DUPLICATE_KEY",
            ConfigErrorKind::Syntax => "CONFIG_SYNTAX",
            ConfigErrorKind::Io => "CONFIG_IO",
            ConfigErrorKind::InvalidFlag => "INVALID_FLAG",
        }
    }
}

impl ConfigError {
    /// A new error without origin.
    pub fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            origin: None,
            line: None,
            message: message.into(),
        }
    }

    /// Attaches the origin (a file name, `-D key=value`, a flag...) unless one is already set.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        if self.origin.is_none() {
            self.origin = Some(origin.into());
        }
        self
    }

    /// Attaches a 1-based line number unless one is already set.
    pub fn with_line(mut self, line: Option<usize>) -> Self {
        if self.line.is_none() {
            self.line = line;
        }
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The stable code of its kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Where the bad input came from, if known.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The 1-based line in the origin, if known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The message without the origin prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.line) {
            (Some(origin), Some(line)) => write!(f, "{origin}:{line}: {}", self.message),
            (Some(origin), None) => write!(f, "{origin}: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
