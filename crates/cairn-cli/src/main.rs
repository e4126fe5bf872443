//! `cairn`: operate Cairn jobs, modelled on Flink's `bin/flink`.
//!
//! Jobs are found through the registry under `$CAIRN_HOME/jobs` (default
//! `~/.cairn/jobs`) that every job serving REST writes; the CLI talks to a
//! job over its owner-only Unix socket there (trusted: any path may be
//! named, as with Flink's CLI), else over TCP. `-m host:port` (or `-m` a
//! socket path) talks to one server directly.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 job not found
//! or not reachable, 141 the output's reader left (as SIGPIPE would end it).

mod commands;
#[cfg(feature = "dashboard")]
mod dashboard;
mod format;
mod progress;
#[cfg(feature = "state-tools")]
mod state_tools;

use std::fmt;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// What went wrong, and so which exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad command line (exit 2).
    Usage { command: &'static str, message: String },
    /// The operation failed (exit 1).
    Failed(String),
    /// No such job, or its REST server cannot be reached (exit 3).
    NotFound(String),
    /// The command printed its report, which says no (a check that would
    /// fail, a corrupt file found): exit with this code, print nothing more.
    Reported(i32),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage { .. } => 2,
            CliError::NotFound(_) => 3,
            CliError::Reported(code) => *code,
        }
    }

    /// A usage error of `command`.
    pub fn usage(command: &'static str, message: impl Into<String>) -> CliError {
        CliError::Usage {
            command,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage { message, .. } | CliError::Failed(message) | CliError::NotFound(message) => {
                f.write_str(message)
            }
            CliError::Reported(code) => write!(f, "exit code {code}"),
        }
    }
}

/// A reader that stops early (`cairn list | head -1`) is not a failure of the command:
/// printing to a closed pipe ends the process quietly with the status a shell reports
/// for a writer stopped by SIGPIPE (128 + 13), as other Unix tools end, instead of a
/// panic message and exit 101. Rust ignores SIGPIPE, so the write fails and `print!`
/// panics; sockets keep reporting a broken pipe as an error.
fn end_quietly_when_stdout_is_closed() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_stdout(message) {
            std::process::exit(STOPPED_BY_SIGPIPE);
        }
        default_hook(info);
    }));
}

/// The exit status of a writer stopped by SIGPIPE.
const STOPPED_BY_SIGPIPE: i32 = 128 + 13;

/// Whether a panic message is std's (or clap_complete's) report of a write to a stdout
/// whose reader has gone.
fn is_closed_stdout(message: &str) -> bool {
    let broken_pipe = message.contains("Broken pipe") || message.contains("BrokenPipe");
    let stdout_write =
        message.starts_with("failed printing to stdout") || message.starts_with("failed to write completion file");
    broken_pipe && stdout_write
}

const AFTER_HELP: &str = "\
Job ids may be abbreviated to a unique prefix. Jobs are found through
$CAIRN_HOME/jobs (default ~/.cairn/jobs), where every job serving its REST API
registers and listens on an owner-only control socket; '-m <host:port>' talks
to a REST server over TCP instead. Calls over TCP that change a job send
$CAIRN_REST_TOKEN as a bearer token when it is set.

Exit codes: 0 ok, 1 the operation failed, 2 usage error,
            3 job not found or not reachable.";

/// cairn: operate Cairn jobs (modelled on Flink's bin/flink)
#[derive(Parser, Debug)]
#[command(name = "cairn", version, after_help = AFTER_HELP, arg_required_else_help = true, disable_version_flag = true)]
struct Cli {
    /// Print the version
    #[arg(short = 'v', long, visible_short_alias = 'V', action = clap::ArgAction::Version)]
    version: Option<bool>,

    #[command(subcommand)]
    command: Command,
}

/// The savepoint format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatType {
    /// Portable across backends and Cairn versions (Parquet per operator).
    Canonical,
    /// The state backend's own, faster format.
    Native,
}

impl FormatType {
    pub fn wire(self) -> &'static str {
        match self {
            FormatType::Canonical => "CANONICAL",
            FormatType::Native => "NATIVE",
        }
    }
}

/// Where to find the job: the registry, or one server.
#[derive(Args, Debug, Clone, Default)]
pub struct Address {
    /// Talk to this REST server (host:port) or control socket (a path)
    /// instead of looking the job up in the registry
    #[arg(short = 'm', long = "address", value_name = "HOST:PORT|SOCKET")]
    pub address: Option<String>,
}

/// A job id or a unique prefix of it.
fn job_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{s}' is not a job id; give the job id (32 hex digits) or a unique prefix of it, as 'cairn list' shows"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// The longest `--timeout`: a year, as the longest duration option.
const MAX_TIMEOUT_SECONDS: u64 = 365 * 24 * 3600;

fn positive_seconds(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_TIMEOUT_SECONDS).contains(n))
        .ok_or_else(|| format!("'{s}' is not a number of seconds between 1 and {MAX_TIMEOUT_SECONDS}"))
}

fn parallelism(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=32768).contains(n))
        .ok_or_else(|| format!("'{s}' is not a parallelism: give a whole number from 1 to 32768"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the jobs running on this machine
    #[command(
        long_about = "Lists the jobs running on this machine (registered under $CAIRN_HOME/jobs, \
                            default ~/.cairn/jobs) with their start time, id, name, state and REST address."
    )]
    List {
        #[command(flatten)]
        address: Address,
    },
    /// Show a job's status, operators and checkpoints
    Info {
        #[arg(value_parser = job_id, value_name = "JOB_ID")]
        job: String,
        /// Print the REST API's job details as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        address: Address,
    },
    /// Start a job binary in the background
    #[command(
        long_about = "Starts a job binary in the background (its own process group, output to \
                      $CAIRN_HOME/logs/), waits until the job runs, and prints its job id. A job that cannot \
                      start (bad configuration, unusable checkpoint directory, failed restore) makes the \
                      command print why and exit 1, at once. The options are passed to the job binary, which \
                      understands them itself. Without -D rest.port=..., the job's REST API takes port 8081 or \
                      the next free one."
    )]
    Run(RunArgs),
    /// Trigger a savepoint, or dispose of one
    #[command(
        long_about = "Triggers a savepoint and waits for it, printing its path. Without a target directory \
                      the job's execution.checkpointing.savepoint-dir is used. Over the job's control socket \
                      (the default) any directory may be named; over TCP (-m host:port) only directories \
                      inside the job's allowed roots.\n\nWith --dispose, deletes a savepoint directory: only a \
                      directory holding the _metadata of a Cairn savepoint. Without -m this needs no running \
                      job and no configuration; with -m the server's allowed roots apply.\n\nThe \
                      subcommands inspect, check, rewrite and reseal work on savepoints and retained \
                      checkpoints offline, without a running job."
    )]
    Savepoint(SavepointArgs),
    /// Trigger a checkpoint and wait for it
    Checkpoint {
        #[arg(value_parser = job_id, value_name = "JOB_ID")]
        job: String,
        /// A full checkpoint, even if checkpoints are incremental
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        address: Address,
    },
    /// Stop a job atomically with a savepoint
    #[command(
        long_about = "Stops a job atomically with a savepoint: no record is processed after the \
                            savepoint, sinks commit, the job finishes. Without --savepoint-path the job's \
                            execution.checkpointing.savepoint-dir is used."
    )]
    Stop {
        #[arg(value_parser = job_id, value_name = "JOB_ID")]
        job: String,
        /// Parent directory of the savepoint
        #[arg(
            short = 'p',
            long = "savepoint-path",
            visible_alias = "savepointPath",
            value_name = "DIR"
        )]
        savepoint_path: Option<String>,
        /// Advance event time to the end first, so all timers fire
        #[arg(short = 'd', long)]
        drain: bool,
        /// Savepoint format
        #[arg(short = 't', long = "type", value_enum, default_value = "canonical")]
        format: FormatType,
        #[command(flatten)]
        address: Address,
    },
    /// Rescale a job: stop it with a savepoint, start it again at a new parallelism
    #[command(
        long_about = "Rescales a job by savepoint: stops it atomically with a savepoint (no record is \
                      processed after it, sinks commit), then starts the same binary with the same \
                      arguments again from that savepoint with parallelism N, and prints the new job id. \
                      Sinks stay exactly once: what the stopped job committed is not written again. The job \
                      must be in this machine's registry (the binary and its arguments are read from there); \
                      for a distributed job that is its coordinator, and the workers register with the new \
                      one. A parallelism above an operator's max parallelism is refused before anything stops."
    )]
    Rescale {
        #[arg(value_parser = job_id, value_name = "JOB_ID")]
        job: String,
        /// The new default parallelism
        #[arg(short = 'p', long = "parallelism", value_name = "N", value_parser = parallelism)]
        parallelism: u32,
        /// Parent directory of the savepoint (default: the job's execution.checkpointing.savepoint-dir)
        #[arg(long = "savepoint-path", visible_alias = "savepointPath", value_name = "DIR")]
        savepoint_path: Option<String>,
        /// Savepoint format
        #[arg(short = 't', long = "type", value_enum, default_value = "canonical")]
        format: FormatType,
        /// How long to wait for the restarted job to register, in seconds
        #[arg(long, default_value = "60", value_parser = positive_seconds)]
        timeout: u64,
    },
    /// Cancel a job, optionally after a savepoint
    Cancel {
        #[arg(value_parser = job_id, value_name = "JOB_ID")]
        job: String,
        /// Take a savepoint into DIR, then cancel
        #[arg(
            short = 's',
            long = "with-savepoint",
            visible_alias = "withSavepoint",
            value_name = "DIR"
        )]
        with_savepoint: Option<String>,
        /// With -s: savepoint format
        #[arg(short = 't', long = "type", value_enum, requires = "with_savepoint")]
        format: Option<FormatType>,
        #[command(flatten)]
        address: Address,
    },
    /// Serve the web UI over every job registered on this machine
    #[cfg(feature = "dashboard")]
    #[command(
        long_about = "Serves the web UI over every job registered on this machine: the job list, each \
                            job's graph, metrics and checkpoints, the actions, and restoring a job binary it \
                            has seen from a savepoint or retained checkpoint. Listens on 127.0.0.1 and prints \
                            the address with its session token; calls that change a job need that token."
    )]
    Dashboard {
        /// Port (0: any free port)
        #[arg(long, default_value_t = 8090)]
        port: u16,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Session token instead of a random one ($CAIRN_DASHBOARD_TOKEN)
        #[arg(long)]
        token: Option<String>,
    },
    /// Verify a snapshot's checksums and references; list orphaned files
    #[cfg(feature = "state-tools")]
    #[command(long_about = "Verifies every file's size and checksum and every reference of the \
                      snapshots under PATH (a checkpoint directory, a job directory, or one savepoint or \
                      checkpoint), and lists files no complete snapshot references. Exit code 1 when a \
                      file is corrupt or missing; orphans alone are not an error.")]
    Fsck(state_tools::FsckArgs),
    /// Delete files no retained checkpoint of a job references (dry run by default)
    #[cfg(feature = "state-tools")]
    #[command(long_about = "Deletes what no complete checkpoint of a job directory references: \
                      unreferenced shared files and the leftovers of aborted checkpoints. Lists only, \
                      unless --delete. Refuses while a checkpoint seems to be in progress (unless \
                      --force) and when fsck finds a problem.")]
    Gc(state_tools::GcArgs),
    /// Read the live state of a running job
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Restore from a savepoint or retained checkpoint
    #[arg(
        short = 's',
        long = "fromSavepoint",
        visible_alias = "from-savepoint",
        value_name = "PATH"
    )]
    pub from_savepoint: Option<String>,
    /// Allow state that maps to no operator to be dropped
    #[arg(
        short = 'n',
        long = "allowNonRestoredState",
        visible_alias = "allow-non-restored-state"
    )]
    pub allow_non_restored_state: bool,
    /// Who owns the restored snapshot (default NO_CLAIM)
    #[arg(long = "claim-mode", visible_aliases = ["claimMode", "restoreMode"], value_name = "CLAIM|NO_CLAIM")]
    pub claim_mode: Option<String>,
    /// Default parallelism
    #[arg(short = 'p', long, value_name = "N")]
    pub parallelism: Option<String>,
    /// Set a configuration option (repeatable)
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub dynamic: Vec<String>,
    /// Read this configuration file
    #[arg(long, value_name = "FILE.yaml")]
    pub config: Option<String>,
    /// How long to wait for the job to run, in seconds (1 to 31536000)
    #[arg(long, default_value = "60", value_parser = positive_seconds)]
    pub timeout: u64,
    /// The job binary and its own arguments
    #[arg(trailing_var_arg = true, required = true, value_name = "BINARY [ARGS]...")]
    pub program: Vec<String>,
}

/// `cairn state ...`.
#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// The current value of one key of a queryable state
    #[command(long_about = "Prints the current value of KEY in the state an operator marked \
                      queryable (queryable(\"NAME\") on its state descriptor), read by the subtask that \
                      owns the key between two batches. KEY is JSON: a string key is written in quotes \
                      ('\"alice\"'), a number as is (42), a tuple as an array ('[\"a\",1]'). Prints null \
                      when the key has no value.")]
    Get(StateGetArgs),
}

/// `cairn state get`.
#[derive(Args, Debug)]
pub struct StateGetArgs {
    #[arg(value_parser = job_id, value_name = "JOB_ID")]
    pub job: String,
    /// The operator's uid
    #[arg(value_name = "UID")]
    pub uid: String,
    /// The state's queryable name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The key, as JSON
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,
    /// Print the whole answer (operator, state, kind, subtask, value) as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub address: Address,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SavepointArgs {
    #[cfg(feature = "state-tools")]
    #[command(subcommand)]
    pub tool: Option<state_tools::SavepointTool>,
    /// The job (not with --dispose)
    #[arg(value_parser = job_id, value_name = "JOB_ID", required_unless_present = "dispose", conflicts_with = "dispose")]
    pub job: Option<String>,
    /// Parent directory of the savepoint
    #[arg(value_name = "TARGET_DIRECTORY", conflicts_with = "dispose")]
    pub target: Option<String>,
    /// Savepoint format [default: canonical]
    #[arg(short = 't', long = "type", value_enum, conflicts_with = "dispose")]
    pub format: Option<FormatType>,
    /// Print the trigger id and return without waiting
    #[arg(long, conflicts_with = "dispose")]
    pub detached: bool,
    /// Dispose of the savepoint at PATH
    #[arg(short = 'd', long, value_name = "PATH")]
    pub dispose: Option<String>,
    /// With --dispose: a configuration option (accepted for compatibility; not needed)
    #[arg(short = 'D', value_name = "KEY=VALUE", requires = "dispose")]
    pub dynamic: Vec<String>,
    /// With --dispose: a configuration file (accepted for compatibility; not needed)
    #[arg(long, value_name = "FILE.yaml", requires = "dispose")]
    pub config: Option<String>,
    #[command(flatten)]
    pub address: Address,
}

/// Flink's single-dash long options, rewritten to the long forms.
fn legacy_spellings(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_separator = false;
    for a in args {
        if after_separator {
            out.push(a);
            continue;
        }
        if a == "--" {
            after_separator = true;
        }
        out.push(match a.as_str() {
            "-cm" | "-rm" => "--claim-mode".to_string(),
            "-dcp" => "--detached".to_string(),
            "-full" => "--full".to_string(),
            _ => a,
        });
    }
    out
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::List { address } => commands::list(address),
        Command::Info { job, json, address } => commands::info(&job, json, address),
        Command::Run(args) => commands::run(args),
        #[cfg(feature = "state-tools")]
        Command::Savepoint(SavepointArgs { tool: Some(tool), .. }) => state_tools::savepoint(tool),
        Command::Savepoint(args) => commands::savepoint(args),
        Command::Checkpoint { job, full, address } => commands::checkpoint(&job, full, address),
        Command::Stop {
            job,
            savepoint_path,
            drain,
            format,
            address,
        } => commands::stop(&job, savepoint_path, drain, format, address),
        Command::Rescale {
            job,
            parallelism,
            savepoint_path,
            format,
            timeout,
        } => commands::rescale(
            &job,
            parallelism,
            savepoint_path,
            format,
            std::time::Duration::from_secs(timeout),
        ),
        Command::Cancel {
            job,
            with_savepoint,
            format,
            address,
        } => commands::cancel(&job, with_savepoint, format, address),
        #[cfg(feature = "dashboard")]
        Command::Dashboard { port, bind, token } => dashboard::run(
            &bind,
            port,
            token.or_else(|| std::env::var("CAIRN_DASHBOARD_TOKEN").ok()),
        ),
        #[cfg(feature = "state-tools")]
        Command::Fsck(args) => state_tools::fsck(args),
        #[cfg(feature = "state-tools")]
        Command::Gc(args) => state_tools::gc(args),
        Command::State {
            command: StateCommand::Get(args),
        } => commands::state_get(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Log events (the CLI's own and its libraries') to stderr, filtered by
/// `RUST_LOG` (default: warnings and errors only; the CLI's results are its
/// regular output). `RUST_LOG=debug cairn ...` shows every REST call.
fn install_log_subscriber() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() {
    end_quietly_when_stdout_is_closed();
    install_log_subscriber();
    let argv = legacy_spellings(std::env::args());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        // Help and version print and exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    let code = match run(cli) {
        Ok(()) => 0,
        Err(CliError::Reported(code)) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let CliError::Usage { command, .. } = &e {
                if command.is_empty() {
                    eprintln!("Run 'cairn --help' for usage.");
                } else {
                    eprintln!("Run 'cairn {command} --help' for usage.");
                }
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn legacy_options_are_rewritten_before_the_separator_only() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            legacy_spellings(v(&["cairn", "run", "-cm", "CLAIM", "--", "job", "-cm"]).into_iter()),
            v(&["cairn", "run", "--claim-mode", "CLAIM", "--", "job", "-cm"])
        );
    }
}
