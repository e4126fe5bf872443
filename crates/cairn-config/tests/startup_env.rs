//! `CAIRN_CONF_DIR` handling; alone in its binary because it sets a process-wide variable.

use cairn_config::{options, parse_startup_args, CONF_DIR_ENV};

#[test]
fn conf_dir_env_var_is_read() {
    let dir = std::env::temp_dir().join(format!("cairn-config-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "parallelism:\n  default: 6\nexecution.checkpointing.interval: 1 min\n",
    )
    .unwrap();
    std::env::set_var(CONF_DIR_ENV, &dir);
    let o = parse_startup_args(["-Dparallelism.default=7".to_string()]).unwrap();
    assert_eq!(o.config.get(&options::PARALLELISM_DEFAULT), 7);
    assert!(o.config.checkpointing_enabled());
    std::env::remove_var(CONF_DIR_ENV);
    let o = parse_startup_args(Vec::<String>::new()).unwrap();
    assert!(o.config.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
