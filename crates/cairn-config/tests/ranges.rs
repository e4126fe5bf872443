//! Every numeric option has a documented valid range, checked when the value is set (so at
//! startup, for `-D` and configuration files): both bounds are accepted, the values just
//! outside are refused with an error naming the key, the range and the value.

use std::time::Duration;

use cairn_config::{options, parse_startup_args, AnyOption, ConfigErrorKind, Configuration, FromConfigStr, MemorySize};

fn is_numeric(opt: &dyn AnyOption) -> bool {
    matches!(opt.type_name(), "integer" | "float" | "duration" | "memory size")
}

/// Values just below `min` and just above `max`, where the type can spell them.
fn outside(opt: &dyn AnyOption, min: &str, max: &str) -> Vec<String> {
    let mut v = Vec::new();
    match opt.type_name() {
        "integer" => {
            let lo: i128 = min.parse().unwrap();
            let hi: i128 = max.parse().unwrap();
            if lo > 0 {
                v.push((lo - 1).to_string());
            }
            v.push((hi + 1).to_string());
            // The value from the defect report: a 32 GB channel allocation.
            v.push("1000000000000".to_string());
        }
        "float" => {
            let lo: f64 = min.parse().unwrap();
            let hi: f64 = max.parse().unwrap();
            v.push(format!("{}", lo - 0.001));
            v.push(format!("{}", hi + 0.001));
        }
        "duration" => {
            let lo = Duration::from_config_str(min).unwrap();
            let hi = Duration::from_config_str(max).unwrap();
            if !lo.is_zero() {
                v.push(format!("{} us", lo.as_micros() - 1));
            }
            v.push(format!("{} ms", hi.as_millis() + 1));
        }
        "memory size" => {
            let lo = MemorySize::from_config_str(min).unwrap().bytes();
            let hi = MemorySize::from_config_str(max).unwrap().bytes();
            if lo > 0 {
                v.push(format!("{} bytes", lo - 1));
            }
            v.push(format!("{} bytes", hi + 1));
        }
        other => panic!("{} has a range but type {other}", opt.key()),
    }
    v
}

#[test]
fn every_numeric_option_declares_a_range_that_holds_its_default() {
    let mut numeric = 0;
    for opt in options::all() {
        if !is_numeric(*opt) {
            assert!(opt.range().is_none(), "{} is not numeric but has a range", opt.key());
            continue;
        }
        numeric += 1;
        let range = opt
            .range()
            .unwrap_or_else(|| panic!("numeric option {} has no documented range", opt.key()));
        opt.validate(range.min)
            .unwrap_or_else(|e| panic!("{}: lower bound {} refused: {e}", opt.key(), range.min));
        opt.validate(range.max)
            .unwrap_or_else(|e| panic!("{}: upper bound {} refused: {e}", opt.key(), range.max));
        if let Some(d) = opt.default_text() {
            opt.validate(d)
                .unwrap_or_else(|e| panic!("{}: default {d} outside its range: {e}", opt.key()));
        }
    }
    assert!(numeric >= 20, "only {numeric} numeric options found");
}

#[test]
fn values_outside_every_numeric_range_fail_naming_key_range_and_value() {
    for opt in options::all().iter().filter(|o| is_numeric(**o)) {
        let range = opt.range().expect("checked above");
        for bad in outside(*opt, range.min, range.max) {
            let mut conf = Configuration::new();
            let err = conf
                .set(opt.key(), &bad)
                .expect_err(&format!("{}={bad} was accepted", opt.key()));
            assert_eq!(err.kind(), ConfigErrorKind::InvalidValue, "{err}");
            let msg = err.to_string();
            for needle in [opt.key(), &bad, range.min, range.max] {
                assert!(
                    msg.contains(needle),
                    "{}={bad}: message lacks '{needle}': {msg}",
                    opt.key()
                );
            }
            assert!(conf.is_empty(), "{}={bad} was stored", opt.key());
        }
    }
}

#[test]
fn a_huge_channel_capacity_is_refused_at_startup() {
    let err = parse_startup_args(["-D", "cairn.runtime.channel-capacity=1000000000"].map(String::from)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cairn.runtime.channel-capacity"), "{msg}");
    assert!(msg.contains("1000000000"), "{msg}");
    assert!(msg.contains("between 1 and 4096"), "{msg}");
    assert!(msg.starts_with("-D cairn.runtime.channel-capacity=1000000000"), "{msg}");
}

#[test]
fn ranges_are_checked_in_configuration_files_with_their_line() {
    let err = Configuration::from_yaml_str(
        "parallelism.default: 2\ncairn:\n  runtime:\n    batch-size: 100000000\n",
        "config.yaml",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("config.yaml:4:"), "{msg}");
    assert!(
        msg.contains("'cairn.runtime.batch-size'") && msg.contains("between 1 and 65536"),
        "{msg}"
    );
}

#[test]
fn typed_sets_from_code_are_range_checked_too() {
    let mut conf = Configuration::new();
    let err = conf
        .set_option(&options::RUNTIME_CHANNEL_CAPACITY, 1_000_000_000)
        .unwrap_err();
    assert!(err.to_string().contains("between 1 and 4096"), "{err}");
    let err = conf.set_option(&options::MAX_PARALLELISM, Some(40_000)).unwrap_err();
    assert!(err.to_string().contains("-1 for the default"), "{err}");
    conf.set_option(&options::MAX_PARALLELISM, None).unwrap();
    conf.set("pipeline.max-parallelism", "-1").unwrap();
}

#[test]
fn every_range_is_listed_in_the_configuration_docs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    for opt in options::all() {
        let Some(range) = opt.range() else { continue };
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", opt.key())))
            .unwrap_or_else(|| panic!("no table row for {}", opt.key()));
        let text = format!("{}..={}", range.min, range.max);
        assert!(
            row.contains(&text),
            "row of {} lacks its range {text}: {row}",
            opt.key()
        );
    }
}
