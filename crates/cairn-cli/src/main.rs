//! `cairn`: operate Cairn jobs, modelled on Flink's `bin/flink`.
//!
//! Jobs are found through the registry under `$CAIRN_HOME/jobs` (default
//! `~/.cairn/jobs`) that every job serving REST writes, so no port is ever
//! needed on one machine; `-m host:port` talks to a REST server directly.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 job not found
//! or not reachable.

mod args;
mod commands;
mod format;

use std::fmt;

/// What went wrong, and so which exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad command line (exit 2).
    Usage { command: &'static str, message: String },
    /// The operation failed (exit 1).
    Failed(String),
    /// No such job, or its REST server cannot be reached (exit 3).
    NotFound(String),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage { .. } => 2,
            CliError::NotFound(_) => 3,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage { message, .. } | CliError::Failed(message) | CliError::NotFound(message) => {
                f.write_str(message)
            }
        }
    }
}

const MAIN_HELP: &str = "\
cairn: operate Cairn jobs (modelled on Flink's bin/flink)

Usage: cairn <command> [options]

Commands:
  list                                  List the jobs running on this machine
  info <jobId>                          Show a job's status, operators and checkpoints
  run [options] -- <job binary> [args]  Start a job binary in the background
  savepoint <jobId> [targetDirectory]   Trigger a savepoint
  savepoint --dispose <path>            Delete a savepoint
  checkpoint <jobId> [--full]           Trigger a checkpoint
  stop <jobId> [--savepoint-path <dir>] Stop a job with a savepoint
  cancel <jobId> [-s <dir>]             Cancel a job, optionally after a savepoint
  help [command]                        Show help for a command

Job ids may be abbreviated to a unique prefix. Jobs are found through
$CAIRN_HOME/jobs (default ~/.cairn/jobs), where every job serving its REST API
registers; '-m <host:port>' talks to a REST server directly instead.
Calls that change a job send $CAIRN_REST_TOKEN as a bearer token when it is set.

Exit codes: 0 ok, 1 the operation failed, 2 usage error,
            3 job not found or not reachable.
";

fn help_of(command: &str) -> Option<&'static str> {
    Some(match command {
        "list" => commands::LIST_HELP,
        "info" => commands::INFO_HELP,
        "run" => commands::RUN_HELP,
        "savepoint" => commands::SAVEPOINT_HELP,
        "checkpoint" => commands::CHECKPOINT_HELP,
        "stop" => commands::STOP_HELP,
        "cancel" => commands::CANCEL_HELP,
        _ => return None,
    })
}

fn run(mut argv: Vec<String>) -> Result<(), CliError> {
    if argv.is_empty() {
        print!("{MAIN_HELP}");
        return Err(CliError::Usage {
            command: "",
            message: "no command given".into(),
        });
    }
    let command = argv.remove(0);
    match command.as_str() {
        "-h" | "--help" => {
            print!("{MAIN_HELP}");
            Ok(())
        }
        "-v" | "--version" | "version" => {
            println!("cairn {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "help" => match argv.first() {
            None => {
                print!("{MAIN_HELP}");
                Ok(())
            }
            Some(c) => match help_of(c) {
                Some(h) => {
                    print!("{h}");
                    Ok(())
                }
                None => Err(CliError::Usage {
                    command: "",
                    message: format!("unknown command '{c}'"),
                }),
            },
        },
        "list" => commands::list(argv),
        "info" => commands::info(argv),
        "run" => commands::run(argv),
        "savepoint" => commands::savepoint(argv),
        "checkpoint" => commands::checkpoint(argv),
        "stop" => commands::stop(argv),
        "cancel" => commands::cancel(argv),
        other => Err(CliError::Usage {
            command: "",
            message: format!(
                "unknown command '{other}'; the commands are list, info, run, savepoint, checkpoint, stop, cancel"
            ),
        }),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(argv) {
        Ok(()) => 0,
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
