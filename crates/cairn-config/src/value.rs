//! Value types and their Flink-compatible text syntax.
//!
//! Parsing errors are short phrases that say what is accepted (for example
//! `not a duration; use e.g. '10 s', '500 ms', '1 min'`); the caller adds the key, the value
//! and the origin.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Parses a configuration value from its text form.
pub trait FromConfigStr: Sized {
    /// Parses `s` (already trimmed by the caller, but implementations trim again).
    /// The error says what is wrong and what is accepted.
    fn from_config_str(s: &str) -> Result<Self, String>;

    /// A short human name for the type, used in docs and help ("duration", "integer").
    fn type_name() -> &'static str;
}

/// Renders a value in the text form that [`FromConfigStr`] reads back.
pub trait ToConfigString {
    /// The text form.
    fn to_config_string(&self) -> String;

    /// `true` for values meaning "not set" (`None`); setting such a value removes the key.
    fn is_unset(&self) -> bool {
        false
    }
}

fn parse_unsigned(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty; a whole number is required".to_string());
    }
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.starts_with('-') {
        return Err("must not be negative".to_string());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.is_empty() {
        return Err("not a whole number; use digits only, e.g. '4'".to_string());
    }
    digits
        .parse::<u64>()
        .map_err(|_| format!("too large; the maximum is {}", u64::MAX))
}

macro_rules! unsigned_impl {
    ($t:ty) => {
        impl FromConfigStr for $t {
            fn from_config_str(s: &str) -> Result<Self, String> {
                let v = parse_unsigned(s)?;
                <$t>::try_from(v).map_err(|_| format!("too large; the maximum is {}", <$t>::MAX))
            }
            fn type_name() -> &'static str {
                "integer"
            }
        }
        impl ToConfigString for $t {
            fn to_config_string(&self) -> String {
                self.to_string()
            }
        }
    };
}
unsigned_impl!(u16);
unsigned_impl!(u32);
unsigned_impl!(u64);

impl FromConfigStr for i64 {
    fn from_config_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not a whole number; use e.g. '42' or '-1'".to_string());
        }
        let text = if neg { format!("-{digits}") } else { digits.to_string() };
        text.parse::<i64>()
            .map_err(|_| format!("out of range; accepted is {} to {}", i64::MIN, i64::MAX))
    }
    fn type_name() -> &'static str {
        "integer"
    }
}
impl ToConfigString for i64 {
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

impl FromConfigStr for f64 {
    fn from_config_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err("not a number; use e.g. '1.5'".to_string()),
        }
    }
    fn type_name() -> &'static str {
        "float"
    }
}
impl ToConfigString for f64 {
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

impl FromConfigStr for bool {
    fn from_config_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if t.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err("not a boolean; use 'true' or 'false'".to_string())
        }
    }
    fn type_name() -> &'static str {
        "boolean"
    }
}
impl ToConfigString for bool {
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

impl FromConfigStr for String {
    fn from_config_str(s: &str) -> Result<Self, String> {
        Ok(s.trim().to_string())
    }
    fn type_name() -> &'static str {
        "string"
    }
}
impl ToConfigString for String {
    fn to_config_string(&self) -> String {
        self.clone()
    }
}

/// Paths: a local path, optionally written as a `file://` URI (the prefix is
/// stripped), or a URI of another scheme such as `s3://bucket/prefix`, which
/// the job checks against the storages it was built with when it starts.
impl FromConfigStr for PathBuf {
    fn from_config_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let p = t.strip_prefix("file://").unwrap_or(t);
        if p.is_empty() {
            return Err("empty path; give a directory such as '/var/lib/cairn'".to_string());
        }
        if let Some(rest) = p.split_once("://").map(|(_, rest)| rest) {
            if rest.trim_matches('/').is_empty() {
                return Err(format!(
                    "'{p}' names no location after the scheme; give e.g. 's3://bucket/prefix'"
                ));
            }
        }
        Ok(PathBuf::from(p))
    }
    fn type_name() -> &'static str {
        "path"
    }
}
impl ToConfigString for PathBuf {
    fn to_config_string(&self) -> String {
        self.to_string_lossy().into_owned()
    }
}

impl<T: ToConfigString> ToConfigString for Option<T> {
    fn to_config_string(&self) -> String {
        match self {
            Some(v) => v.to_config_string(),
            None => String::new(),
        }
    }
    fn is_unset(&self) -> bool {
        self.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

const DURATION_HINT: &str = "use e.g. '10 s', '500 ms', '1 min'";

/// Splits `10 s` / `10s` / `10` into the number and the (lowercased) unit.
fn split_number_unit(s: &str) -> Option<(&str, String)> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let (num, rest) = t.split_at(end);
    Some((num, rest.trim().to_ascii_lowercase()))
}

/// Nanoseconds per unit, for every unit spelling Flink accepts.
fn time_unit_nanos(unit: &str) -> Option<u128> {
    const MS: u128 = 1_000_000;
    Some(match unit {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => MS,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000 * MS,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * 1000 * MS,
        "h" | "hour" | "hours" => 3600 * 1000 * MS,
        "d" | "day" | "days" => 86_400 * 1000 * MS,
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1000,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        _ => return None,
    })
}

/// Flink duration syntax: a whole number and an optional unit, with optional whitespace in
/// between. A bare number is milliseconds. Units: ms/milli/millis/millisecond(s),
/// s/sec/secs/second(s), m/min/mins/minute(s), h/hour(s), d/day(s) (and µs/us, ns forms).
impl FromConfigStr for Duration {
    fn from_config_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(format!("durations must not be negative; {DURATION_HINT}"));
        }
        let Some((num, unit)) = split_number_unit(t) else {
            return Err(format!("not a duration; {DURATION_HINT}"));
        };
        let Some(per_unit) = time_unit_nanos(&unit) else {
            return Err(format!(
                "unknown time unit '{unit}'; use ms, s, min, h or d ({DURATION_HINT})"
            ));
        };
        let n: u128 = num
            .parse()
            .map_err(|_| format!("duration too large; {DURATION_HINT}"))?;
        let nanos = n
            .checked_mul(per_unit)
            .ok_or_else(|| "duration too large".to_string())?;
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| "duration too large".to_string())?;
        Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
    }
    fn type_name() -> &'static str {
        "duration"
    }
}

impl ToConfigString for Duration {
    fn to_config_string(&self) -> String {
        format_duration(*self)
    }
}

/// Formats with the largest unit that represents the duration exactly: `10 min`, `500 ms`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0 ms".to_string();
    }
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "min"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (per, name) in UNITS {
        if nanos % per == 0 {
            return format!("{} {name}", nanos / per);
        }
    }
    format!("{nanos} ns")
}

// ---------------------------------------------------------------------------------------------
// Memory sizes

/// A number of bytes, written the Flink way: `64 mb`, `1g`, `512 kb`, `100` (bytes).
/// Units are powers of 1024: b/bytes, k/kb/kibibytes, m/mb/mebibytes, g/gb/gibibytes,
/// t/tb/tebibytes (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromConfigStr for MemorySize {
    fn from_config_str(s: &str) -> Result<Self, String> {
        const HINT: &str = "use e.g. '64 mb', '1 gb', '512 kb'";
        let Some((num, unit)) = split_number_unit(s) else {
            return Err(format!("not a memory size; {HINT}"));
        };
        let mult: u64 = match unit.as_str() {
            "" | "b" | "bytes" => 1,
            "k" | "kb" | "kibibytes" => 1 << 10,
            "m" | "mb" | "mebibytes" => 1 << 20,
            "g" | "gb" | "gibibytes" => 1 << 30,
            "t" | "tb" | "tebibytes" => 1 << 40,
            other => return Err(format!("unknown memory unit '{other}'; {HINT}")),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .map(MemorySize)
            .ok_or_else(|| "memory size too large".to_string())
    }
    fn type_name() -> &'static str {
        "memory size"
    }
}

impl ToConfigString for MemorySize {
    fn to_config_string(&self) -> String {
        let b = self.0;
        for (shift, name) in [(40, "tb"), (30, "gb"), (20, "mb"), (10, "kb")] {
            if b != 0 && b % (1u64 << shift) == 0 {
                return format!("{} {name}", b >> shift);
            }
        }
        format!("{b} bytes")
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_config_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Enums

macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $type_name:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $main:literal $(| $alt:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling (the one Flink documents).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( $name::$variant => $main ),+
                }
            }
        }

        impl FromConfigStr for $name {
            fn from_config_str(s: &str) -> Result<Self, String> {
                let t = s.trim();
                $(
                    if t.eq_ignore_ascii_case($main) $(|| t.eq_ignore_ascii_case($alt))* {
                        return Ok($name::$variant);
                    }
                )+
                let accepted: &[&str] = &[$($main $(, $alt)*),+];
                Err(format!("accepted values (case-insensitive): {}", accepted.join(", ")))
            }
            fn type_name() -> &'static str {
                $type_name
            }
        }

        impl ToConfigString for $name {
            fn to_config_string(&self) -> String {
                self.as_str().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// `execution.checkpointing.mode`: whether multi-input operators align barriers.
    CheckpointingMode, "enum" {
        /// Align barriers: every record is reflected in state exactly once.
        ExactlyOnce => "EXACTLY_ONCE",
        /// Do not align: after a failure some records may be reflected twice.
        AtLeastOnce => "AT_LEAST_ONCE",
    }
}

config_enum! {
    /// `execution.checkpointing.externalized-checkpoint-retention`.
    ExternalizedCheckpointRetention, "enum" {
        /// Retained checkpoints are deleted when the job stops (Flink 2's default).
        NoExternalizedCheckpoints => "NO_EXTERNALIZED_CHECKPOINTS",
        /// Retained checkpoints are deleted on cancel, kept on failure.
        DeleteOnCancellation => "DELETE_ON_CANCELLATION",
        /// Retained checkpoints are kept on cancel and on failure.
        RetainOnCancellation => "RETAIN_ON_CANCELLATION",
    }
}

config_enum! {
    /// `state.backend.type`.
    StateBackendType, "enum" {
        /// State on the heap, in hash maps.
        HashMap => "hashmap",
        /// State in RocksDB on local disk (needs the `rocksdb` cargo feature of `cairn`).
        RocksDb => "rocksdb",
    }
}

config_enum! {
    /// `state.backend.rocksdb.timer-service.factory`.
    TimerServiceFactory, "enum" {
        /// Timers in RocksDB, a small head of each key group's timers in memory.
        RocksDb => "ROCKSDB",
        /// Every timer in memory (mirrored in RocksDB for snapshots).
        Heap => "HEAP",
    }
}

config_enum! {
    /// `restart-strategy.type`.
    RestartStrategyType, "enum" {
        /// Never restart: a failure fails the job.
        NoRestart => "disable" | "none" | "off",
        /// A fixed number of attempts with a fixed delay.
        FixedDelay => "fixed-delay" | "fixeddelay",
        /// Restart while the failure rate stays below a limit.
        FailureRate => "failure-rate" | "failurerate",
        /// Restart with exponentially growing delays.
        ExponentialDelay => "exponential-delay" | "exponentialdelay",
    }
}

config_enum! {
    /// How a restored job treats the files of the snapshot it starts from
    /// (`execution.state-recovery.claim-mode`, `--claim-mode`). Defaults to `NoClaim`.
    #[derive(Default)]
    ClaimMode, "enum" {
        /// The job takes ownership of the snapshot and may delete it once it is subsumed.
        Claim => "CLAIM",
        /// The snapshot stays the user's; the first checkpoint after restore is a full one.
        #[default]
        NoClaim => "NO_CLAIM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<Duration, String> {
        Duration::from_config_str(s)
    }

    #[test]
    fn duration_units_all_spellings() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("0", ms(0)),
            ("250", ms(250)),
            ("5 ms", ms(5)),
            ("5ms", ms(5)),
            ("5 milli", ms(5)),
            ("5 millis", ms(5)),
            ("5 millisecond", ms(5)),
            ("5 milliseconds", ms(5)),
            ("10s", ms(10_000)),
            ("10 s", ms(10_000)),
            ("10 sec", ms(10_000)),
            ("10 secs", ms(10_000)),
            ("10 second", ms(10_000)),
            ("10 seconds", ms(10_000)),
            ("2min", ms(120_000)),
            ("2 min", ms(120_000)),
            ("2 m", ms(120_000)),
            ("2 minute", ms(120_000)),
            ("2 minutes", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1 hour", ms(3_600_000)),
            ("3 hours", ms(3 * 3_600_000)),
            ("1d", ms(86_400_000)),
            ("1 day", ms(86_400_000)),
            ("2 days", ms(2 * 86_400_000)),
            ("  7   S  ", ms(7_000)),
            ("1 MIN", ms(60_000)),
            ("3 us", Duration::from_micros(3)),
            ("3 ns", Duration::from_nanos(3)),
        ] {
            assert_eq!(d(text), Ok(want), "parsing {text:?}");
        }
    }

    #[test]
    fn duration_errors_say_what_is_accepted() {
        let e = d("abc").unwrap_err();
        assert!(e.contains("not a duration") && e.contains("10 s"), "{e}");
        let e = d("10 parsecs").unwrap_err();
        assert!(e.contains("unknown time unit 'parsecs'"), "{e}");
        let e = d("-5 s").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = d("1.5 s").unwrap_err();
        assert!(e.contains("unknown time unit '.5 s'"), "{e}");
        assert!(d("").is_err());
        assert!(d("99999999999999999999999 d").is_err());
    }

    #[test]
    fn duration_round_trips() {
        for text in ["10 min", "500 ms", "1 h", "2 d", "0 ms", "1500 ms", "7 s"] {
            let v = d(text).unwrap();
            assert_eq!(format_duration(v), text);
            assert_eq!(d(&format_duration(v)).unwrap(), v);
        }
    }

    #[test]
    fn integers() {
        assert_eq!(u32::from_config_str(" 42 "), Ok(42));
        assert!(u32::from_config_str("-1").unwrap_err().contains("negative"));
        assert!(u32::from_config_str("4x").unwrap_err().contains("whole number"));
        assert!(u32::from_config_str("4294967296").unwrap_err().contains("maximum"));
        assert!(u16::from_config_str("70000").unwrap_err().contains("65535"));
        assert_eq!(u64::from_config_str("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(i64::from_config_str("-7"), Ok(-7));
        assert!(i64::from_config_str("-").is_err());
        assert!(i64::from_config_str("99999999999999999999").is_err());
    }

    #[test]
    fn bools_floats_strings() {
        assert_eq!(bool::from_config_str("TRUE"), Ok(true));
        assert_eq!(bool::from_config_str("False"), Ok(false));
        assert!(bool::from_config_str("yes").unwrap_err().contains("'true' or 'false'"));
        assert_eq!(f64::from_config_str("1.5"), Ok(1.5));
        assert!(f64::from_config_str("NaN").is_err());
        assert!(f64::from_config_str("fast").is_err());
        assert_eq!(String::from_config_str(" x "), Ok("x".to_string()));
    }

    #[test]
    fn paths() {
        assert_eq!(
            PathBuf::from_config_str("file:///tmp/chk"),
            Ok(PathBuf::from("/tmp/chk"))
        );
        assert_eq!(PathBuf::from_config_str("rel/dir"), Ok(PathBuf::from("rel/dir")));
        assert_eq!(
            PathBuf::from_config_str("s3://bucket/x"),
            Ok(PathBuf::from("s3://bucket/x"))
        );
        assert!(PathBuf::from_config_str("s3://")
            .unwrap_err()
            .contains("names no location"));
        assert!(PathBuf::from_config_str("").is_err());
        assert!(PathBuf::from_config_str("file://").is_err());
    }

    #[test]
    fn memory_sizes() {
        let m = MemorySize::from_config_str;
        assert_eq!(m("100"), Ok(MemorySize(100)));
        assert_eq!(m("64 mb"), Ok(MemorySize(64 << 20)));
        assert_eq!(m("1g"), Ok(MemorySize(1 << 30)));
        assert_eq!(m("2 KB"), Ok(MemorySize(2048)));
        assert!(m("1 zb").unwrap_err().contains("unknown memory unit"));
        assert_eq!(MemorySize(64 << 20).to_config_string(), "64 mb");
        assert_eq!(MemorySize(1000).to_config_string(), "1000 bytes");
    }

    #[test]
    fn enums_case_insensitive_with_alternatives() {
        assert_eq!(
            CheckpointingMode::from_config_str("at_least_once"),
            Ok(CheckpointingMode::AtLeastOnce)
        );
        assert_eq!(
            RestartStrategyType::from_config_str("OFF"),
            Ok(RestartStrategyType::NoRestart)
        );
        assert_eq!(
            RestartStrategyType::from_config_str("fixeddelay"),
            Ok(RestartStrategyType::FixedDelay)
        );
        let e = StateBackendType::from_config_str("lsm").unwrap_err();
        assert!(e.contains("hashmap, rocksdb"), "{e}");
        assert_eq!(
            StateBackendType::from_config_str("RocksDB"),
            Ok(StateBackendType::RocksDb)
        );
        assert_eq!(ClaimMode::from_config_str("no_claim"), Ok(ClaimMode::NoClaim));
        assert_eq!(ClaimMode::default(), ClaimMode::NoClaim);
    }
}
