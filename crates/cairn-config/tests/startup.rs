//! Startup-argument parsing: every flag form, precedence, passthrough, errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_config::{
    options, parse_startup_args_with_conf_dir, startup_help, ClaimMode, ConfigErrorKind, StartupOptions,
};

fn parse(args: &[&str]) -> Result<StartupOptions, cairn_config::ConfigError> {
    parse_startup_args_with_conf_dir(args.iter().map(|s| s.to_string()), None)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn no_args() {
    let o = parse(&[]).unwrap();
    assert!(o.config.is_empty());
    assert_eq!(o.restore_path, None);
    assert!(!o.allow_non_restored_state);
    assert_eq!(o.claim_mode, ClaimMode::NoClaim);
    assert!(o.user_args.is_empty());
    assert!(!o.help_requested);
}

#[test]
fn savepoint_flag_forms() {
    for args in [
        &["-s", "/sp/savepoint-1"][..],
        &["--fromSavepoint", "/sp/savepoint-1"][..],
        &["--fromSavepoint=/sp/savepoint-1"][..],
        &["--from-savepoint", "file:///sp/savepoint-1"][..],
        &["-D", "execution.savepoint.path=/sp/savepoint-1"][..],
        &["-Dexecution.state-recovery.path=/sp/savepoint-1"][..],
    ] {
        let o = parse(args).unwrap();
        assert_eq!(o.restore_path, Some(PathBuf::from("/sp/savepoint-1")), "{args:?}");
        assert_eq!(
            o.config.get(&options::SAVEPOINT_PATH),
            Some(PathBuf::from("/sp/savepoint-1"))
        );
    }
}

#[test]
fn allow_non_restored_state_forms() {
    for args in [
        &["-n"][..],
        &["--allowNonRestoredState"][..],
        &["--allow-non-restored-state"][..],
        &["--allow-non-restored-state=true"][..],
        &["-D", "execution.savepoint.ignore-unclaimed-state=true"][..],
    ] {
        assert!(parse(args).unwrap().allow_non_restored_state, "{args:?}");
    }
    assert!(
        !parse(&["--allow-non-restored-state=false"])
            .unwrap()
            .allow_non_restored_state
    );
    let e = parse(&["--allow-non-restored-state=maybe"]).unwrap_err();
    assert!(e.to_string().contains("--allow-non-restored-state"), "{e}");
}

#[test]
fn claim_mode_forms() {
    for args in [
        &["--claim-mode", "CLAIM"][..],
        &["--claim-mode", "claim"][..],
        &["--claim-mode=Claim"][..],
        &["-rm", "claim"][..],
        &["--restoreMode", "claim"][..],
        &["--restoreMode=claim"][..],
        &["-cm", "CLAIM"][..],
        &["-D", "execution.savepoint-restore-mode=CLAIM"][..],
    ] {
        assert_eq!(parse(args).unwrap().claim_mode, ClaimMode::Claim, "{args:?}");
    }
    assert_eq!(parse(&["-rm", "no_claim"]).unwrap().claim_mode, ClaimMode::NoClaim);
    let e = parse(&["--claim-mode", "sometimes"]).unwrap_err();
    assert!(e.to_string().contains("--claim-mode"), "{e}");
    assert!(e.to_string().contains("CLAIM, NO_CLAIM"), "{e}");
    let e = parse(&["-rm", "legacy"]).unwrap_err();
    assert!(e.to_string().contains("LEGACY"), "{e}");
}

#[test]
fn parallelism_forms_and_errors() {
    for args in [&["-p", "4"][..], &["--parallelism", "4"][..], &["--parallelism=4"][..]] {
        assert_eq!(
            parse(args).unwrap().config.get(&options::PARALLELISM_DEFAULT),
            4,
            "{args:?}"
        );
    }
    let e = parse(&["-p", "0"]).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::InvalidFlag);
    assert!(e.to_string().starts_with("-p: "), "{e}");
    assert!(e.to_string().contains("between 1 and 32768"), "{e}");
    let e = parse(&["-p", "many"]).unwrap_err();
    assert!(e.to_string().contains("-p") && e.to_string().contains("'many'"), "{e}");
    let e = parse(&["-p", "-1"]).unwrap_err();
    assert!(e.to_string().contains("negative"), "{e}");
}

#[test]
fn missing_values_name_the_flag() {
    for (args, flag) in [
        (&["-s"][..], "-s"),
        (&["--fromSavepoint"][..], "--fromSavepoint"),
        (&["-p"][..], "-p"),
        (&["--claim-mode"][..], "--claim-mode"),
        (&["-D"][..], "-D"),
        (&["--config"][..], "--config"),
        (&["--parallelism="][..], "--parallelism"),
        (&["-s", "-n"][..], "-s"),
    ] {
        let e = parse(args).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::InvalidFlag, "{args:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{flag} needs a value")), "{args:?}: {msg}");
    }
}

#[test]
fn dynamic_properties_both_forms_repeatable() {
    let o = parse(&[
        "-D",
        "execution.checkpointing.interval=10 s",
        "-Dstate.backend.type=rocksdb",
        "-D",
        "rest.port=9999",
        "-Drest.port=9090",
    ])
    .unwrap();
    assert_eq!(o.config.checkpoint_interval(), Some(Duration::from_secs(10)));
    assert_eq!(
        o.config.get(&options::STATE_BACKEND_TYPE),
        cairn_config::StateBackendType::RocksDb
    );
    assert_eq!(o.config.get(&options::REST_PORT), 9090, "later -D wins");
}

#[test]
fn dynamic_property_errors() {
    let e = parse(&["-D", "execution.checkpointing.interval=abc"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "-D execution.checkpointing.interval=abc: invalid value 'abc' for 'execution.checkpointing.interval': not a duration; use e.g. '10 s', '500 ms', '1 min'"
    );
    let e = parse(&["-Dparallelism.defualt=2"]).unwrap_err();
    assert!(e.to_string().contains("did you mean 'parallelism.default'"), "{e}");
    assert!(e.to_string().starts_with("-Dparallelism.defualt=2: "), "{e}");
    let e = parse(&["-D", "novalue"]).unwrap_err();
    assert!(e.to_string().contains("-D <key>=<value>"), "{e}");
    let e = parse(&["-D=1"]).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::InvalidFlag);
}

#[test]
fn user_args_and_double_dash_passthrough() {
    let o = parse(&[
        "--input",
        "in.txt",
        "-p",
        "2",
        "positional",
        "--",
        "-p",
        "9",
        "-s",
        "x",
        "--help",
    ])
    .unwrap();
    assert_eq!(
        o.user_args,
        vec!["--input", "in.txt", "positional", "-p", "9", "-s", "x", "--help"]
    );
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 2);
    assert_eq!(o.restore_path, None);
    assert!(!o.help_requested);
}

#[test]
fn help_flags() {
    assert!(parse(&["-h"]).unwrap().help_requested);
    assert!(parse(&["--help"]).unwrap().help_requested);
    let text = startup_help("wordcount");
    for flag in [
        "Usage: wordcount",
        "--config",
        "-D <key>=<value>",
        "-p, --parallelism",
        "-s, --fromSavepoint",
        "-n, --allowNonRestoredState",
        "--allow-non-restored-state",
        "--claim-mode",
        "--restoreMode",
        "-h, --help",
        "--  ",
    ] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn precedence_file_then_dynamic_then_flags() {
    let dir = temp_dir("precedence");
    let file = write(
        &dir,
        "job.yaml",
        "parallelism.default: 2\nrest.port: 1000\npipeline.name: from-file\nexecution.savepoint.path: /from/file\n",
    );
    let f = file.to_str().unwrap();
    // -p given before -D on the command line still wins over -D.
    let o = parse(&[
        "-p",
        "8",
        "--config",
        f,
        "-Dparallelism.default=4",
        "-D",
        "rest.port=2000",
        "-s",
        "/from/flag",
        "-Dexecution.savepoint.path=/from/dynamic",
    ])
    .unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 8);
    assert_eq!(o.config.get(&options::REST_PORT), 2000);
    assert_eq!(o.config.get(&options::PIPELINE_NAME).as_deref(), Some("from-file"));
    assert_eq!(o.restore_path, Some(PathBuf::from("/from/flag")));
    assert_eq!(o.config.origin(&options::PARALLELISM_DEFAULT).unwrap().source, "-p 8");
    assert_eq!(
        o.config.origin(&options::PIPELINE_NAME).unwrap().to_string(),
        format!("{f}:3")
    );

    let o = parse(&["--config", f, "-Dparallelism.default=4"]).unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 4);
    let o = parse(&[&format!("--config={f}")]).unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 2);
    assert_eq!(o.restore_path, Some(PathBuf::from("/from/file")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn conf_dir_is_used_only_without_config_flag() {
    let dir = temp_dir("confdir");
    write(&dir, "config.yaml", "parallelism.default: 3\n");
    let other = write(&dir, "other.yaml", "parallelism.default: 5\n");
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = parse_startup_args_with_conf_dir(args(&[]), Some(&dir)).unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 3);
    let o = parse_startup_args_with_conf_dir(args(&["--config", other.to_str().unwrap()]), Some(&dir)).unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 5);
    // a conf dir without config.yaml is fine
    let empty = temp_dir("confdir-empty");
    let o = parse_startup_args_with_conf_dir(args(&[]), Some(&empty)).unwrap();
    assert!(o.config.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn missing_or_bad_config_file() {
    let e = parse(&["--config", "/definitely/not/here.yaml"]).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Io);
    assert!(e.to_string().contains("/definitely/not/here.yaml"), "{e}");
    let dir = temp_dir("badfile");
    let f = write(&dir, "c.yaml", "execution.checkpointing.mode: sometimes\n");
    let e = parse(&["--config", f.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains(":1: invalid value 'sometimes'"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
