//! YAML loading: both Flink 2 styles, aliases, unknown and duplicate keys, shapes.

use std::path::PathBuf;
use std::time::Duration;

use cairn_config::{options, CheckpointingMode, ConfigErrorKind, Configuration, StateBackendType};

#[test]
fn nested_maps_are_flattened_to_dotted_keys() {
    let yaml = "
parallelism:
  default: 3
execution:
  checkpointing:
    interval: 10 s
    mode: at_least_once
    num-retained: 5
state:
  backend:
    type: RocksDB
";
    let c = Configuration::from_yaml_str(yaml, "config.yaml").unwrap();
    assert_eq!(c.get(&options::PARALLELISM_DEFAULT), 3);
    assert_eq!(c.get(&options::CHECKPOINTING_INTERVAL), Some(Duration::from_secs(10)));
    assert_eq!(c.get(&options::CHECKPOINTING_MODE), CheckpointingMode::AtLeastOnce);
    assert_eq!(c.get(&options::CHECKPOINTS_NUM_RETAINED), 5);
    assert_eq!(c.get(&options::STATE_BACKEND_TYPE), StateBackendType::RocksDb);
}

#[test]
fn flat_dotted_keys_and_flow_maps() {
    let yaml = "execution.checkpointing.interval: 500 ms\nrest: {port: 9000, address: 0.0.0.0}\npipeline.auto-generate-uids: TRUE\n";
    let c = Configuration::from_yaml_str(yaml, "config.yaml").unwrap();
    assert_eq!(
        c.get(&options::CHECKPOINTING_INTERVAL),
        Some(Duration::from_millis(500))
    );
    assert_eq!(c.get(&options::REST_PORT), 9000);
    assert_eq!(c.get(&options::REST_ADDRESS), "0.0.0.0");
    assert!(c.get(&options::AUTO_GENERATE_UIDS));
}

#[test]
fn mixed_styles_in_one_file() {
    let yaml = "execution:\n  checkpointing.interval: 1 min\nexecution.checkpointing.timeout: 2 min\n";
    let c = Configuration::from_yaml_str(yaml, "c.yaml").unwrap();
    assert_eq!(c.checkpoint_interval(), Some(Duration::from_secs(60)));
    assert_eq!(c.get(&options::CHECKPOINTING_TIMEOUT), Duration::from_secs(120));
}

#[test]
fn empty_document_and_comments_only() {
    assert!(Configuration::from_yaml_str("", "c.yaml").unwrap().is_empty());
    assert!(Configuration::from_yaml_str("# nothing\n", "c.yaml")
        .unwrap()
        .is_empty());
}

#[test]
fn aliases_are_stored_under_the_canonical_key() {
    let yaml = "state.checkpoints.dir: file:///data/chk\nstate.savepoints.dir: /data/sp\nstate.checkpoints.num-retained: 3\nstate.backend.incremental: true\nexecution.savepoint.path: /data/sp/savepoint-abc\nexecution.savepoint-restore-mode: claim\n";
    let c = Configuration::from_yaml_str(yaml, "config.yaml").unwrap();
    assert_eq!(c.get(&options::CHECKPOINTS_DIR), Some(PathBuf::from("/data/chk")));
    assert_eq!(c.get(&options::SAVEPOINT_DIR), Some(PathBuf::from("/data/sp")));
    assert_eq!(c.get(&options::CHECKPOINTS_NUM_RETAINED), 3);
    assert!(c.get(&options::CHECKPOINTING_INCREMENTAL));
    assert_eq!(
        c.get(&options::SAVEPOINT_PATH),
        Some(PathBuf::from("/data/sp/savepoint-abc"))
    );
    assert_eq!(c.get(&options::RESTORE_CLAIM_MODE), cairn_config::ClaimMode::Claim);
    let keys: Vec<&str> = c.entries().map(|(k, _)| k).collect();
    assert!(keys.contains(&"execution.checkpointing.dir"), "{keys:?}");
    assert!(!keys.contains(&"state.checkpoints.dir"), "{keys:?}");
}

#[test]
fn unknown_key_suggests_the_closest_and_names_file_and_line() {
    let yaml = "rest.port: 8081\nparallelism.defualt: 4\n";
    let e = Configuration::from_yaml_str(yaml, "config.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    assert_eq!(e.line(), Some(2));
    assert_eq!(
        e.to_string(),
        "config.yaml:2: unknown configuration key 'parallelism.defualt' (did you mean 'parallelism.default'?)"
    );
}

#[test]
fn unknown_nested_key_without_close_match() {
    let yaml = "execution:\n  checkpointing:\n    frobnicate-everything: 1\n";
    let e = Configuration::from_yaml_str(yaml, "conf.yaml").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("conf.yaml:3: "), "{msg}");
    assert!(msg.contains("'execution.checkpointing.frobnicate-everything'"), "{msg}");
    assert!(msg.contains("docs/configuration.md"), "{msg}");
}

#[test]
fn bad_value_in_file_names_file_line_key_value_and_syntax() {
    let yaml = "execution:\n  checkpointing:\n    interval: abc\n";
    let e = Configuration::from_yaml_str(yaml, "config.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
    let msg = e.to_string();
    assert!(msg.starts_with("config.yaml:3:"), "{msg}");
    assert!(msg.contains("'abc'"), "{msg}");
    assert!(msg.contains("'execution.checkpointing.interval'"), "{msg}");
    assert!(
        msg.contains("not a duration; use e.g. '10 s', '500 ms', '1 min'"),
        "{msg}"
    );
}

#[test]
fn bad_value_via_alias_mentions_both_names() {
    let e = Configuration::from_yaml_str("state.checkpoints.num-retained: 0\n", "c.yaml").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("'state.checkpoints.num-retained' (alias of 'execution.checkpointing.num-retained')"),
        "{msg}"
    );
    assert!(msg.contains("must be between 1 and 2147483647"), "{msg}");
}

#[test]
fn alias_and_canonical_key_in_one_file_is_an_error_naming_both() {
    let yaml = "execution.checkpointing.dir: /a\nparallelism.default: 2\nstate.checkpoints.dir: /b\n";
    let e = Configuration::from_yaml_str(yaml, "config.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::DuplicateKey);
    let msg = e.to_string();
    assert!(msg.starts_with("config.yaml:3:"), "{msg}");
    assert!(msg.contains("'state.checkpoints.dir'"), "{msg}");
    assert!(msg.contains("'execution.checkpointing.dir' on line 1"), "{msg}");
    assert!(msg.contains("keep only one"), "{msg}");
}

#[test]
fn same_key_flat_and_nested_is_an_error() {
    let yaml = "execution.checkpointing.interval: 1 s\nexecution:\n  checkpointing:\n    interval: 2 s\n";
    let e = Configuration::from_yaml_str(yaml, "config.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::DuplicateKey);
    let msg = e.to_string();
    assert!(msg.contains("'execution.checkpointing.interval' is set twice"), "{msg}");
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn same_key_twice_in_one_map_is_a_yaml_error_with_line() {
    let yaml = "rest.port: 1\nrest.port: 2\n";
    let e = Configuration::from_yaml_str(yaml, "config.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert!(e.to_string().starts_with("config.yaml:"), "{e}");
    assert!(e.to_string().contains("duplicate"), "{e}");
}

#[test]
fn lists_nulls_and_non_maps_are_rejected() {
    let e = Configuration::from_yaml_str("rest.address: [a, b]\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("'rest.address' is a list"), "{e}");
    let e = Configuration::from_yaml_str("pipeline.name:\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("'pipeline.name' has no value"), "{e}");
    let e = Configuration::from_yaml_str("- a\n- b\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("must be a map"), "{e}");
    let e = Configuration::from_yaml_str("a: [unclosed\n", "c.yaml").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert!(e.to_string().contains("invalid YAML"), "{e}");
}

#[test]
fn scalars_become_strings() {
    let yaml = "restart-strategy:\n  type: exponential-delay\n  exponential-delay:\n    backoff-multiplier: 2.5\n    jitter-factor: 0\npipeline.name: 12345\n";
    let c = Configuration::from_yaml_str(yaml, "c.yaml").unwrap();
    assert_eq!(c.get(&options::EXP_DELAY_BACKOFF_MULTIPLIER), 2.5);
    assert_eq!(c.get(&options::EXP_DELAY_JITTER_FACTOR), 0.0);
    assert_eq!(c.get(&options::PIPELINE_NAME).as_deref(), Some("12345"));
}

#[test]
fn from_yaml_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("cairn-config-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, "parallelism.default: 7\nrest.port: x\n").unwrap();
    let e = Configuration::from_yaml_file(&file).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:2:", file.display())), "{e}");
    std::fs::write(&file, "parallelism.default: 7\n").unwrap();
    let c = Configuration::from_yaml_file(&file).unwrap();
    assert_eq!(c.get(&options::PARALLELISM_DEFAULT), 7);
    let origin = c.origin(&options::PARALLELISM_DEFAULT).unwrap();
    assert_eq!(origin.line, Some(1));
    let missing = Configuration::from_yaml_file(&dir.join("nope.yaml")).unwrap_err();
    assert_eq!(missing.kind(), ConfigErrorKind::Io);
    assert!(missing.to_string().contains("nope.yaml"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every way of writing a YAML tag is refused, naming the key, the tag and the line
/// (docs/configuration.md: "YAML tags are errors"). The YAML library resolves core-schema
/// tags such as `!!int` silently, so these once loaded as if untagged.
#[test]
fn yaml_tags_are_errors_naming_key_tag_and_line() {
    let cases: &[(&str, usize, &str, &str)] = &[
        // (document, line, key named, tag named)
        ("parallelism.default: !!int 2\n", 1, "'parallelism.default'", "'!!int'"),
        (
            "rest.port: 1\npipeline.name: !!str job\n",
            2,
            "'pipeline.name'",
            "'!!str'",
        ),
        (
            "parallelism.default: !<tag:yaml.org,2002:int> 2\n",
            1,
            "'parallelism.default'",
            "'!<tag:yaml.org,2002:int>'",
        ),
        ("parallelism.default: ! 2\n", 1, "'parallelism.default'", "'!'"),
        ("rest.port: !port 8081\n", 1, "'rest.port'", "'!port'"),
        (
            "execution:\n  checkpointing:\n    interval: !!str 10 s\n",
            3,
            "'execution.checkpointing.interval'",
            "'!!str'",
        ),
        (
            "rest.port: 1\nexecution: !!map\n  checkpointing.interval: 10 s\n",
            2,
            "'execution'",
            "'!!map'",
        ),
        ("rest: {port: !!int 8081}\n", 1, "'rest.port'", "'!!int'"),
        ("!!str parallelism.default: 2\n", 1, "the top level", "'!!str'"),
        (
            "rest.port: 1\nparallelism:\n  !!str default: 2\n",
            3,
            "'parallelism'",
            "'!!str'",
        ),
        (
            "%TAG !e! tag:example.com,2000:\n---\nparallelism.default: !e!n 2\n",
            1,
            "%TAG",
            "'!e!'",
        ),
    ];
    for &(yaml, line, key, tag) in cases {
        let e = Configuration::from_yaml_str(yaml, "config.yaml")
            .expect_err(&format!("a YAML tag must be an error: {yaml:?}"));
        assert_eq!(e.kind(), ConfigErrorKind::Syntax, "{yaml:?}: {e}");
        assert_eq!(e.line(), Some(line), "{yaml:?}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("config.yaml:{line}: ")), "{yaml:?}: {msg}");
        assert!(msg.contains(key), "{yaml:?} should name {key}: {msg}");
        assert!(msg.contains(tag), "{yaml:?} should name {tag}: {msg}");
        assert!(msg.contains("tag"), "{yaml:?}: {msg}");
        assert!(msg.contains("remove"), "{yaml:?} should say what to do: {msg}");
    }
}

/// An exclamation mark that is not a tag (inside text, quotes, block scalars, comments, keys) is
/// just a character.
#[test]
fn exclamation_marks_in_text_are_not_tags() {
    let yaml = "pipeline.name: hello !world\n\
                rest.address: 'it!s'\n\
                # a comment with !!int in it\n\
                execution.checkpointing.dir: \"/data/!!chk\"\n\
                state.savepoints.dir: |\n  /data/!sp\n\
                restart-strategy.type: none # !!str\n";
    let c = Configuration::from_yaml_str(yaml, "c.yaml").unwrap();
    assert_eq!(c.get(&options::PIPELINE_NAME).as_deref(), Some("hello !world"));
    assert_eq!(c.get(&options::REST_ADDRESS), "it!s");
    assert_eq!(c.get(&options::CHECKPOINTS_DIR), Some(PathBuf::from("/data/!!chk")));
    assert_eq!(c.get(&options::SAVEPOINT_DIR), Some(PathBuf::from("/data/!sp")));
    let multi = "pipeline.name: first\n  !second line\n";
    let c = Configuration::from_yaml_str(multi, "c.yaml").unwrap();
    assert_eq!(c.get(&options::PIPELINE_NAME).as_deref(), Some("first !second line"));
}
