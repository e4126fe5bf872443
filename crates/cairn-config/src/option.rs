//! Typed option declarations.

use std::time::Duration;

use crate::value::FromConfigStr;

/// The documented valid range of a numeric option, inclusive at both ends, written in the
/// same text syntax users write (`"1"`, `"4096"`, `"365 d"`). Checked on every set, so a
/// value out of range fails at startup with the key, the range and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRange {
    /// Smallest accepted value.
    pub min: &'static str,
    /// Largest accepted value.
    pub max: &'static str,
    /// Other accepted spellings outside the range, e.g. `"or -1 for the default"`.
    pub note: Option<&'static str>,
}

impl std::fmt::Display for ValueRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)?;
        if let Some(note) = self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// Types whose values can be checked against a [`ValueRange`]. `None` (an unset optional
/// option) is always in range.
pub trait RangeValue: FromConfigStr + PartialOrd {
    /// Whether `self` lies within `min..=max` (bounds given as text).
    fn within(&self, range: &ValueRange) -> bool {
        match (Self::from_config_str(range.min), Self::from_config_str(range.max)) {
            (Ok(min), Ok(max)) => *self >= min && *self <= max,
            // A bound that does not parse is a declaration bug; the registry test catches it.
            _ => false,
        }
    }
}

impl RangeValue for u16 {}
impl RangeValue for u32 {}
impl RangeValue for u64 {}
impl RangeValue for i64 {}
impl RangeValue for f64 {}
impl RangeValue for Duration {}
impl RangeValue for crate::MemorySize {}

/// Whether a typed value lies within a range.
type WithinFn<T> = fn(&T, &ValueRange) -> bool;

fn option_within<T: RangeValue>(v: &Option<T>, range: &ValueRange) -> bool {
    v.as_ref().is_none_or(|v| v.within(range))
}

fn plain_within<T: RangeValue>(v: &T, range: &ValueRange) -> bool {
    v.within(range)
}

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
    range: Option<(ValueRange, WithinFn<T>)>,
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
            range: None,
            type_name: T::type_name,
        }
    }
}

impl<T: RangeValue> ConfigOption<T> {
    /// Declares the valid range `min..=max` (inclusive; bounds in the option's text syntax).
    pub const fn with_range(mut self, min: &'static str, max: &'static str) -> Self {
        self.range = Some((ValueRange { min, max, note: None }, plain_within::<T>));
        self
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
            range: None,
            type_name: T::type_name,
        }
    }
}

impl<T: RangeValue> ConfigOption<Option<T>> {
    /// Declares the valid range `min..=max` of a set value (unset is always valid).
    pub const fn with_optional_range(mut self, min: &'static str, max: &'static str) -> Self {
        self.range = Some((ValueRange { min, max, note: None }, option_within::<T>));
        self
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

    /// Adds a note to the declared range naming other accepted values (e.g. `-1`).
    pub const fn with_range_note(mut self, note: &'static str) -> Self {
        if let Some((range, within)) = self.range {
            self.range = Some((
                ValueRange {
                    note: Some(note),
                    ..range
                },
                within,
            ));
        }
        self
    }

    /// The documented valid range, for numeric options.
    pub const fn range(&self) -> Option<ValueRange> {
        match self.range {
            Some((r, _)) => Some(r),
            None => None,
        }
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
        let v = (self.parser)(text.trim()).map_err(|why| match self.range() {
            // A number the type cannot even hold: say what is accepted.
            Some(r) if why.contains("too large") || why.contains("negative") => {
                let note = r.note.map(|n| format!(" ({n})")).unwrap_or_default();
                format!("{why}; accepted are values between {} and {}{note}", r.min, r.max)
            }
            _ => why,
        })?;
        self.check(&v)?;
        Ok(v)
    }

    /// Runs the range check and the option's own check on a typed value.
    pub fn check(&self, value: &T) -> Result<(), String> {
        // The option's own check first: its message can be more specific (e.g. how to
        // disable a feature instead of setting 0).
        (self.check)(value)?;
        if let Some((range, within)) = &self.range {
            if !within(value, range) {
                let note = range.note.map(|n| format!(" ({n})")).unwrap_or_default();
                return Err(format!("must be between {} and {}{note}", range.min, range.max));
            }
        }
        Ok(())
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
    /// The documented valid range; every numeric option (integer, float, duration) has one.
    fn range(&self) -> Option<ValueRange>;
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
    fn range(&self) -> Option<ValueRange> {
        ConfigOption::range(self)
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
