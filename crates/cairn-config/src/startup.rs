//! Startup arguments of job binaries (`StreamEnv::from_args()`), Flink-style.

use std::path::{Path, PathBuf};

use crate::configuration::{Configuration, ValueOrigin};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::options;
use crate::value::{ClaimMode, FromConfigStr};

/// Environment variable naming a directory whose `config.yaml` is read when `--config` is
/// not given.
pub const CONF_DIR_ENV: &str = "CAIRN_CONF_DIR";

/// The hidden startup flag that makes a job binary print its plan as JSON
/// and exit (`cairn savepoint check` uses it).
pub const PLAN_JSON_FLAG: &str = "--cairn-plan-json";

/// The result of [`parse_startup_args`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartupOptions {
    /// Defaults < config file < `-D` < flags (`-p`, `-s`, `-n`, `--claim-mode`).
    pub config: Configuration,
    /// `-s` / `--fromSavepoint`, or `execution.state-recovery.path` from file or `-D`.
    pub restore_path: Option<PathBuf>,
    /// `-n`, or `execution.state-recovery.ignore-unclaimed-state`.
    pub allow_non_restored_state: bool,
    /// `--claim-mode`, or `execution.state-recovery.claim-mode`; default `NoClaim`.
    pub claim_mode: ClaimMode,
    /// Arguments not recognised, in order, plus everything after `--`.
    pub user_args: Vec<String>,
    /// `-h` / `--help` was given.
    pub help_requested: bool,
    /// `--cairn-plan-json` (hidden): print the resolved plan as JSON and
    /// exit without running (what `cairn savepoint check` asks a job binary).
    pub print_plan_json: bool,
}

/// Parses startup arguments (without argv\[0\]). Reads `--config <file>`, or else
/// `$CAIRN_CONF_DIR/config.yaml` if the variable is set and the file exists.
pub fn parse_startup_args<I: IntoIterator<Item = String>>(args: I) -> Result<StartupOptions, ConfigError> {
    let conf_dir = std::env::var_os(CONF_DIR_ENV).map(PathBuf::from);
    parse_startup_args_with_conf_dir(args, conf_dir.as_deref())
}

/// [`parse_startup_args`] with the configuration directory given explicitly instead of read
/// from `CAIRN_CONF_DIR` (`None`: no directory).
pub fn parse_startup_args_with_conf_dir<I: IntoIterator<Item = String>>(
    args: I,
    conf_dir: Option<&Path>,
) -> Result<StartupOptions, ConfigError> {
    let mut config_file: Option<PathBuf> = None;
    let mut dynamic: Vec<(String, String, String)> = Vec::new(); // key, value, origin
    let mut flags: Vec<(&'static str, String, String)> = Vec::new(); // key, value, origin
    let mut user_args = Vec::new();
    let mut help_requested = false;
    let mut print_plan_json = false;

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            user_args.extend(it.by_ref());
            break;
        }
        if arg == "-h" || arg == "--help" {
            help_requested = true;
            continue;
        }
        if arg == PLAN_JSON_FLAG {
            print_plan_json = true;
            continue;
        }
        if let Some(prop) = arg.strip_prefix("-D").filter(|p| !p.is_empty()) {
            dynamic.push(split_dynamic(prop, &format!("-D{prop}"))?);
            continue;
        }
        if arg == "-D" {
            let prop = take_value(&mut it, "-D", "-D <key>=<value>")?;
            dynamic.push(split_dynamic(&prop, &format!("-D {prop}"))?);
            continue;
        }
        // `--flag=value` forms (long flags only).
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-s" | "--fromSavepoint" | "--from-savepoint" => {
                let v = value_of(inline, &mut it, &name, "<savepoint-or-checkpoint-path>")?;
                flags.push((options::SAVEPOINT_PATH.key(), v.clone(), format!("{name} {v}")));
            }
            "-n" | "--allowNonRestoredState" | "--allow-non-restored-state" => {
                let v = match inline {
                    Some(v) => {
                        bool::from_config_str(&v).map_err(|why| flag_error(&name, &v, &why))?;
                        v
                    }
                    None => "true".to_string(),
                };
                flags.push((options::SAVEPOINT_IGNORE_UNCLAIMED_STATE.key(), v, name.clone()));
            }
            "--claim-mode" | "--claimMode" | "-cm" | "-rm" | "--restoreMode" => {
                let v = value_of(inline, &mut it, &name, "CLAIM|NO_CLAIM")?;
                if v.eq_ignore_ascii_case("legacy") {
                    return Err(flag_error(
                        &name,
                        &v,
                        "LEGACY restore mode is not supported; use CLAIM or NO_CLAIM",
                    ));
                }
                ClaimMode::from_config_str(&v).map_err(|why| flag_error(&name, &v, &why))?;
                flags.push((options::RESTORE_CLAIM_MODE.key(), v.clone(), format!("{name} {v}")));
            }
            "-p" | "--parallelism" => {
                let v = value_of(inline, &mut it, &name, "<n>")?;
                options::PARALLELISM_DEFAULT
                    .parse(&v)
                    .map_err(|why| flag_error(&name, &v, &why))?;
                flags.push((options::PARALLELISM_DEFAULT.key(), v.clone(), format!("{name} {v}")));
            }
            "--mode" => {
                let v = value_of(inline, &mut it, &name, "local|coordinator|worker")?;
                options::CLUSTER_MODE
                    .parse(&v)
                    .map_err(|why| flag_error(&name, &v, &why))?;
                flags.push((options::CLUSTER_MODE.key(), v.clone(), format!("{name} {v}")));
            }
            "--coordinator" => {
                let v = value_of(inline, &mut it, &name, "<host:port>")?;
                let (host, port) = v
                    .rsplit_once(':')
                    .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    .ok_or_else(|| flag_error(&name, &v, "expected host:port, e.g. coordinator:6123"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
                flags.push((options::JOBMANAGER_RPC_ADDRESS.key(), host, format!("{name} {v}")));
                flags.push((
                    options::JOBMANAGER_RPC_PORT.key(),
                    port.to_string(),
                    format!("{name} {v}"),
                ));
            }
            "--config" => {
                let v = value_of(inline, &mut it, &name, "<config.yaml>")?;
                config_file = Some(PathBuf::from(v.strip_prefix("file://").unwrap_or(&v)));
            }
            _ => user_args.push(arg),
        }
    }

    let mut config = match (&config_file, conf_dir) {
        (Some(file), _) => Configuration::from_yaml_file(file)?,
        (None, Some(dir)) => {
            let file = dir.join("config.yaml");
            if file.is_file() {
                Configuration::from_yaml_file(&file)?
            } else {
                Configuration::new()
            }
        }
        (None, None) => Configuration::new(),
    };
    for (key, value, origin) in dynamic {
        config.set_from(&key, &value, ValueOrigin::new(origin))?;
    }
    for (key, value, origin) in flags {
        config.set_from(key, &value, ValueOrigin::new(origin))?;
    }

    Ok(StartupOptions {
        restore_path: config.get(&options::SAVEPOINT_PATH),
        allow_non_restored_state: config.get(&options::SAVEPOINT_IGNORE_UNCLAIMED_STATE),
        claim_mode: config.get(&options::RESTORE_CLAIM_MODE),
        config,
        user_args,
        help_requested,
        print_plan_json,
    })
}

fn flag_error(flag: &str, value: &str, why: &str) -> ConfigError {
    ConfigError::new(
        ConfigErrorKind::InvalidFlag,
        format!("invalid value '{value}' for {flag}: {why}"),
    )
    .with_origin(flag)
}

fn missing_value(flag: &str, usage: &str) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidFlag, format!("{flag} needs a value: {usage}")).with_origin(flag)
}

/// The next argument as the flag's value; an argument that looks like another flag is not
/// taken (numbers such as `-1` are).
fn take_value(it: &mut impl Iterator<Item = String>, flag: &str, usage: &str) -> Result<String, ConfigError> {
    match it.next() {
        Some(v) if looks_like_flag(&v) => Err(ConfigError::new(
            ConfigErrorKind::InvalidFlag,
            format!("{flag} needs a value but is followed by the flag '{v}': {usage}"),
        )
        .with_origin(flag)),
        Some(v) => Ok(v),
        None => Err(missing_value(flag, usage)),
    }
}

fn value_of(
    inline: Option<String>,
    it: &mut impl Iterator<Item = String>,
    flag: &str,
    placeholder: &str,
) -> Result<String, ConfigError> {
    let usage = format!("{flag} {placeholder}");
    match inline {
        Some(v) if v.trim().is_empty() => Err(missing_value(flag, &usage)),
        Some(v) => Ok(v),
        None => take_value(it, flag, &usage),
    }
}

fn looks_like_flag(s: &str) -> bool {
    s.len() > 1 && s.starts_with('-') && s.parse::<f64>().is_err()
}

fn split_dynamic(prop: &str, origin: &str) -> Result<(String, String, String), ConfigError> {
    match prop.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string(), origin.to_string())),
        _ => Err(ConfigError::new(
            ConfigErrorKind::InvalidFlag,
            "expected -D <key>=<value>, e.g. -D execution.checkpointing.interval=10s",
        )
        .with_origin(origin)),
    }
}

/// Usage text listing every startup flag.
pub fn startup_help(program: &str) -> String {
    format!(
        "Usage: {program} [OPTIONS] [--] [JOB ARGUMENTS...]

Options:
  --config <file.yaml>           Read this configuration file (default: $CAIRN_CONF_DIR/config.yaml
                                 if CAIRN_CONF_DIR is set and the file exists)
  -D <key>=<value>, -D<key>=<value>
                                 Set a configuration option; repeatable; overrides the file
  -p, --parallelism <n>          Default parallelism (parallelism.default), at least 1
  -s, --fromSavepoint <path>     Restore from a savepoint or retained checkpoint
                                 (directory or its _metadata)
  -n, --allowNonRestoredState, --allow-non-restored-state
                                 Allow restoring when some state maps to no operator
  --claim-mode <CLAIM|NO_CLAIM>  Who owns the restored snapshot (default NO_CLAIM);
                                 also accepted: -rm/--restoreMode, -cm/--claimMode
  --mode <local|coordinator|worker>
                                 Run every task here (default), as the coordinator of
                                 workers, or as a worker (cairn.cluster.mode)
  --coordinator <host:port>      The coordinator a worker registers with
                                 (jobmanager.rpc.address and jobmanager.rpc.port)
  -h, --help                     Print this help
  --                             Pass every following argument to the job unchanged

Long flags also accept --flag=value. Unrecognised arguments are passed to the job.
Precedence: defaults < config file < -D < -p/-s/-n/--claim-mode/--mode/--coordinator.
"
    )
}
