//! Hand-written argument parsing: a cursor over the arguments that knows
//! flags (`-x`, `--long`, `--long=value`) from positionals and says clearly
//! what is wrong.

use crate::CliError;

/// One argument as seen by a command's parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// `-x`, `--long` or `--long=value` (the inline value kept aside).
    Flag { name: String, inline: Option<String> },
    /// Anything else (including a lone `-`).
    Positional(String),
    /// `--`: everything after it is positional.
    Separator,
}

/// A cursor over a command's arguments.
pub struct Args {
    items: std::collections::VecDeque<String>,
    command: &'static str,
    after_separator: bool,
}

impl Args {
    pub fn new(items: impl IntoIterator<Item = String>, command: &'static str) -> Args {
        Args {
            items: items.into_iter().collect(),
            command,
            after_separator: false,
        }
    }

    /// The next argument, classified.
    pub fn next_arg(&mut self) -> Option<Arg> {
        let a = self.items.pop_front()?;
        if self.after_separator {
            return Some(Arg::Positional(a));
        }
        if a == "--" {
            self.after_separator = true;
            return Some(Arg::Separator);
        }
        if a.starts_with("--") {
            return Some(match a.split_once('=') {
                Some((n, v)) => Arg::Flag {
                    name: n.to_string(),
                    inline: Some(v.to_string()),
                },
                None => Arg::Flag { name: a, inline: None },
            });
        }
        if a.len() > 1 && a.starts_with('-') {
            return Some(Arg::Flag { name: a, inline: None });
        }
        Some(Arg::Positional(a))
    }

    /// The value of flag `name`: its inline value, else the next argument
    /// (which must not look like a flag).
    pub fn value(&mut self, name: &str, inline: Option<String>, placeholder: &str) -> Result<String, CliError> {
        if let Some(v) = inline {
            if v.is_empty() {
                return Err(self.usage(format!("{name} needs a value: {name} {placeholder}")));
            }
            return Ok(v);
        }
        match self.items.front() {
            Some(v) if !(v.len() > 1 && v.starts_with('-') && v.parse::<f64>().is_err()) => {
                Ok(self.items.pop_front().unwrap_or_default())
            }
            Some(v) => {
                let v = v.clone();
                Err(self.usage(format!(
                    "{name} needs a value but is followed by '{v}': {name} {placeholder}"
                )))
            }
            None => Err(self.usage(format!("{name} needs a value: {name} {placeholder}"))),
        }
    }

    /// Everything not consumed yet, as given.
    pub fn rest(&mut self) -> Vec<String> {
        self.items.drain(..).collect()
    }

    /// A usage error of this command.
    pub fn usage(&self, message: impl Into<String>) -> CliError {
        CliError::Usage {
            command: self.command,
            message: message.into(),
        }
    }

    /// "unknown option" for this command.
    pub fn unknown(&self, flag: &str) -> CliError {
        self.usage(format!("unknown option '{flag}' for 'cairn {}'", self.command))
    }

    /// Refuses a `--flag=value` on a flag that takes no value.
    pub fn no_value(&self, name: &str, inline: &Option<String>) -> Result<(), CliError> {
        match inline {
            Some(_) => Err(self.usage(format!("{name} takes no value"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::new(v.iter().map(|s| s.to_string()), "test")
    }

    #[test]
    fn classifies() {
        let mut a = args(&["-s", "--type=native", "--drain", "job", "-", "--", "-p", "x"]);
        assert_eq!(
            a.next_arg(),
            Some(Arg::Flag {
                name: "-s".into(),
                inline: None
            })
        );
        assert_eq!(
            a.next_arg(),
            Some(Arg::Flag {
                name: "--type".into(),
                inline: Some("native".into())
            })
        );
        assert_eq!(
            a.next_arg(),
            Some(Arg::Flag {
                name: "--drain".into(),
                inline: None
            })
        );
        assert_eq!(a.next_arg(), Some(Arg::Positional("job".into())));
        assert_eq!(a.next_arg(), Some(Arg::Positional("-".into())));
        assert_eq!(a.next_arg(), Some(Arg::Separator));
        assert_eq!(a.next_arg(), Some(Arg::Positional("-p".into())));
        assert_eq!(a.next_arg(), Some(Arg::Positional("x".into())));
        assert_eq!(a.next_arg(), None);
    }

    #[test]
    fn values() {
        let mut a = args(&["/dir", "-1", "--x"]);
        assert_eq!(a.value("-s", None, "<dir>").unwrap(), "/dir");
        assert_eq!(a.value("-p", None, "<n>").unwrap(), "-1");
        let e = a.value("-s", None, "<dir>").unwrap_err();
        assert!(e.to_string().contains("followed by '--x'"), "{e}");
        a.rest();
        assert!(a
            .value("-s", None, "<dir>")
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(a.value("--t", Some(String::new()), "<t>").is_err());
        assert_eq!(a.value("--t", Some("v".into()), "<t>").unwrap(), "v");
    }
}
