//! Typed option declarations.

use crate::value::FromConfigStr;

/// The default of an option: a text value parsed like user input, or "unset" for options
/// whose type is `Option<_>`.
#[derive(Clone, Copy)]
enum DefaultValue<T: 'static> {
    Text(&'static str),
    Unset(fn() -> T),
}

/// A typed configuration option: its canonical key, deprecated/fallback keys (aliases),
/// default, description, parser and range check.
///
/// Options are declared as statics in [`crate::options`]. Options without a default have a
/// type `Option<_>` and are built with [`ConfigOption::optional`].
pub struct ConfigOption<T: 'static> {
    key: &'static str,
    aliases: &'static [&'static str],
    default: DefaultValue<T>,
    description: &'static str,
    parser: fn(&str) -> Result<T, String>,
    check: fn(&T) -> Result<(), String>,
    type_name: fn() -> &'static str,
}

fn no_check<T>(_: &T) -> Result<(), String> {
    Ok(())
}

fn parse_some<T: FromConfigStr>(s: &str) -> Result<Option<T>, String> {
    T::from_config_str(s).map(Some)
}

fn none<T>() -> Option<T> {
    None
}

impl<T: FromConfigStr> ConfigOption<T> {
    /// An option with a default, given in the same text syntax users write.
    pub const fn new(key: &'static str, default: &'static str, description: &'static str) -> Self {
        ConfigOption {
            key,
            aliases: &[],
            default: DefaultValue::Text(default),
            description,
            parser: T::from_config_str,
            check: no_check::<T>,
            type_name: T::type_name,
        }
    }
}

impl<T: FromConfigStr> ConfigOption<Option<T>> {
    /// An option without a default: unset means `None`.
    pub const fn optional(key: &'static str, description: &'static str) -> Self {
        ConfigOption {
            key,
            aliases: &[],
            default: DefaultValue::Unset(none::<T>),
            description,
            parser: parse_some::<T>,
            check: no_check::<Option<T>>,
            type_name: T::type_name,
        }
    }
}

impl<T> ConfigOption<T> {
    /// Adds deprecated or fallback keys; values given under them are stored under the
    /// canonical key.
    pub const fn with_aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Adds a range/validity check run on every set; its error says what is accepted.
    pub const fn with_check(mut self, check: fn(&T) -> Result<(), String>) -> Self {
        self.check = check;
        self
    }

    /// Replaces the parser (for syntaxes beyond the type's own, e.g. `-1` meaning unset).
    pub const fn with_parser(mut self, parser: fn(&str) -> Result<T, String>) -> Self {
        self.parser = parser;
        self
    }

    /// The canonical key.
    pub const fn key(&self) -> &'static str {
        self.key
    }

    /// Deprecated or fallback keys.
    pub const fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }

    /// What the option does.
    pub const fn description(&self) -> &'static str {
        self.description
    }

    /// The default in text form, `None` when unset by default.
    pub fn default_text(&self) -> Option<&'static str> {
        match self.default {
            DefaultValue::Text(t) => Some(t),
            DefaultValue::Unset(_) => None,
        }
    }

    /// The typed default.
    ///
    /// Built-in defaults are checked by this crate's tests; a default that does not parse is a
    /// bug in the declaration, not bad input.
    pub fn default_value(&self) -> T {
        match self.default {
            DefaultValue::Text(text) => match self.parse(text) {
                Ok(v) => v,
                Err(e) => panic!("default '{text}' of option '{}' is invalid: {e}", self.key),
            },
            DefaultValue::Unset(f) => f(),
        }
    }

    /// Parses and checks a value written for this option.
    pub fn parse(&self, text: &str) -> Result<T, String> {
        let v = (self.parser)(text.trim())?;
        (self.check)(&v)?;
        Ok(v)
    }

    /// Runs the range check on a typed value.
    pub fn check(&self, value: &T) -> Result<(), String> {
        (self.check)(value)
    }
}

/// A type-erased view of a [`ConfigOption`], for the registry of known options.
pub trait AnyOption: Sync {
    /// The canonical key.
    fn key(&self) -> &'static str;
    /// Deprecated or fallback keys.
    fn aliases(&self) -> &'static [&'static str];
    /// What the option does.
    fn description(&self) -> &'static str;
    /// The default in text form, `None` when unset by default.
    fn default_text(&self) -> Option<&'static str>;
    /// A short type name ("duration", "integer", "enum", ...).
    fn type_name(&self) -> &'static str;
    /// Parses and checks `text`; the error says what is accepted.
    fn validate(&self, text: &str) -> Result<(), String>;
}

impl<T: 'static> AnyOption for ConfigOption<T> {
    fn key(&self) -> &'static str {
        self.key
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn default_text(&self) -> Option<&'static str> {
        ConfigOption::default_text(self)
    }
    fn type_name(&self) -> &'static str {
        (self.type_name)()
    }
    fn validate(&self, text: &str) -> Result<(), String> {
        self.parse(text).map(|_| ())
    }
}

impl<T> std::fmt::Debug for ConfigOption<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigOption")
            .field("key", &self.key)
            .field("aliases", &self.aliases)
            .field("default", &self.default_text())
            .finish()
    }
}
