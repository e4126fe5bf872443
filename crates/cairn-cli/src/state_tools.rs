//! The offline state commands: `cairn savepoint inspect | check | rewrite |
//! reseal`, `cairn fsck`, `cairn gc`. Their arguments (clap) and output;
//! the logic is `cairn_state_processor::tools`, which needs no running job.
//!
//! Exit codes follow the CLI's: 0 ok, 1 the check or operation failed (the
//! report says why), 2 usage error.
//!
//! Long work (inspect's scan of keyed state, rewrite, reseal, fsck, gc)
//! draws a progress bar on stderr when stderr is a terminal, unless
//! `--quiet` or `--json`; stdout carries only the report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_state_processor::tools;
use cairn_state_processor::{Options, ProgressFn, SpaError};
use clap::{Args, Subcommand};

use crate::progress::Progress;
use crate::CliError;

/// The progress bar of one offline command, fed from the library's worker threads.
struct Bar {
    bar: Option<Arc<Mutex<Progress>>>,
}

impl Bar {
    /// A bar for `command`, drawn when stderr is a terminal and neither
    /// `--quiet` nor `--json` was given.
    fn new(command: &'static str, quiet: bool) -> Bar {
        let on = !quiet && crate::progress::enabled();
        Bar {
            bar: on.then(|| Arc::new(Mutex::new(Progress::with(command, true)))),
        }
    }

    /// The callback to give the library (`None` when nothing is drawn).
    fn callback(&self, command: &'static str) -> Option<ProgressFn> {
        let bar = self.bar.clone()?;
        Some(Arc::new(move |p: cairn_state_processor::Progress| {
            let mut b = bar.lock().unwrap_or_else(|e| e.into_inner());
            b.update_units(&format!("{command}: {}", p.phase), p.done, p.total, p.unit, p.bytes);
        }))
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.lock().unwrap_or_else(|e| e.into_inner()).finish();
        }
    }
}

/// `cairn savepoint <tool>`.
#[derive(Subcommand, Debug)]
pub enum SavepointTool {
    /// Operators, uids, states (kind, stored type), keys, entries and bytes per state
    Inspect {
        /// A savepoint or retained checkpoint directory, or its _metadata
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// No progress bar on stderr
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        memory: Memory,
    },
    /// Whether a snapshot restores into a job, without starting it
    #[command(
        long_about = "Whether a savepoint or retained checkpoint restores into a job, without \
                      starting it: which state maps to which operator, what would be dropped (and \
                      whether -n is needed), new operators that start empty, max-parallelism and \
                      parallelism problems, and stored types that do not decode into the job's types. \
                      The job binary is run with --cairn-plan-json: it prints its plan and exits \
                      (within 60 s, or the seconds CAIRN_PLAN_TIMEOUT gives; a binary that takes \
                      longer or prints more than a plan is stopped). \
                      Exit code 0 only when a restore would succeed."
    )]
    Check {
        /// A savepoint or retained checkpoint directory, or its _metadata
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        memory: Memory,
        /// The job binary and its own arguments (after --)
        #[arg(last = true, required = true, value_name = "BINARY [ARGS]...")]
        job: Vec<String>,
    },
    /// Write a new, self-contained canonical savepoint with changes
    #[command(
        long_about = "Writes a new, self-contained canonical savepoint: a new max parallelism \
                      (every key is rehashed into its new key group), renamed or dropped operators. The \
                      input is not changed."
    )]
    Rewrite {
        /// The savepoint or retained checkpoint to read
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// The directory to write the new savepoint into (must not hold a _metadata)
        #[arg(value_name = "OUT")]
        output: PathBuf,
        /// The new max parallelism (number of key groups)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32768))]
        max_parallelism: Option<u32>,
        /// Rename an operator's uid (repeatable)
        #[arg(long = "rename-uid", value_name = "OLD=NEW", value_parser = rename)]
        renames: Vec<(String, String)>,
        /// Drop an operator's state (repeatable)
        #[arg(long = "drop-uid", value_name = "UID")]
        drops: Vec<String>,
        /// No progress bar on stderr
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        memory: Memory,
    },
    /// Record new sizes and checksums after other tools rewrote the Parquet files
    #[command(
        long_about = "After a savepoint's Parquet files were rewritten with other tools (pyarrow, \
                      DuckDB, Spark), records their new sizes and checksums in _metadata, so the \
                      savepoint restores. Each file must still have the canonical schema."
    )]
    Reseal {
        /// The savepoint directory, or its _metadata
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Print the changed files as JSON
        #[arg(long)]
        json: bool,
        /// No progress bar on stderr
        #[arg(long, short)]
        quiet: bool,
    },
}

/// The memory budget of offline work.
#[derive(Args, Debug, Clone, Copy)]
pub struct Memory {
    /// About how much memory keyed state in flight may take, in bytes
    #[arg(long = "memory", value_name = "BYTES", default_value_t = 512 << 20)]
    pub bytes: u64,
}

impl Memory {
    fn options(self) -> Options {
        Options {
            memory_bytes: self.bytes.max(1 << 20),
            ..Options::default()
        }
    }
}

/// `cairn fsck`.
#[derive(Args, Debug)]
pub struct FsckArgs {
    /// A checkpoint directory, a job directory, or one snapshot
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

/// `cairn gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// A job's checkpoint directory (<checkpoint dir>/<job id>)
    #[arg(value_name = "JOB_DIR")]
    pub job_dir: PathBuf,
    /// Delete (without it, only lists what would be deleted)
    #[arg(long)]
    pub delete: bool,
    /// Also when a checkpoint seems to be in progress, deleting it too (stop the job first)
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

fn rename(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            // A uid a job could not have been given by mistake: blank, or
            // holding a line break or other control character.
            if new.trim().is_empty() || new.chars().any(char::is_control) {
                return Err(format!(
                    "the new uid {new:?} is blank or holds control characters; give a uid as the job's .uid(\"...\") names it"
                ));
            }
            Ok((old.to_string(), new.to_string()))
        }
        _ => Err(format!("'{s}' is not OLD=NEW (two uids joined by '=')")),
    }
}

fn failed(command: &'static str, e: SpaError) -> CliError {
    match e {
        SpaError::Usage(m) => CliError::usage(command, m),
        other => CliError::Failed(other.to_string()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v).map_err(|e| CliError::Failed(format!("cannot render the report as JSON: {e}")))
}

/// Print a report; a report that says "no" ends the command with exit code 1.
fn report(text: String, code: i32) -> Result<(), CliError> {
    println!("{}", text.trim_end());
    match code {
        0 => Ok(()),
        code => Err(CliError::Reported(code)),
    }
}

/// Run `cairn savepoint <tool>`.
pub fn savepoint(tool: SavepointTool) -> Result<(), CliError> {
    match tool {
        SavepointTool::Inspect {
            path,
            json: as_json,
            quiet,
            memory,
        } => {
            let bar = Bar::new("inspect", quiet || as_json);
            let options = Options {
                progress: bar.callback("inspect"),
                ..memory.options()
            };
            let r = tools::inspect(&path, options).map_err(|e| failed("savepoint inspect", e))?;
            drop(bar);
            report(if as_json { json(&r)? } else { r.render() }, 0)
        }
        SavepointTool::Check {
            path,
            json: as_json,
            memory,
            job,
        } => {
            let (bin, args) = job.split_first().ok_or_else(|| {
                CliError::usage(
                    "savepoint check",
                    "give the job binary after --: cairn savepoint check <PATH> -- <BINARY> [ARGS]...",
                )
            })?;
            let plan = tools::plan_of_binary(bin.as_ref(), args).map_err(|e| failed("savepoint check", e))?;
            let r = tools::check(&path, &plan, memory.options()).map_err(|e| failed("savepoint check", e))?;
            report(if as_json { json(&r)? } else { r.render() }, r.exit_code())
        }
        SavepointTool::Rewrite {
            input,
            output,
            max_parallelism,
            renames,
            drops,
            quiet,
            memory,
        } => {
            let changes = tools::Rewrite {
                max_parallelism,
                renames,
                drops,
            };
            let bar = Bar::new("rewrite", quiet);
            let options = Options {
                progress: bar.callback("rewrite"),
                ..memory.options()
            };
            let done =
                tools::rewrite(&input, &output, &changes, options).map_err(|e| failed("savepoint rewrite", e))?;
            for note in &done.notes {
                eprintln!("note: {note}");
            }
            let dir = done.dir;
            drop(bar);
            report(format!("wrote {}", dir.display()), 0)
        }
        SavepointTool::Reseal {
            path,
            json: as_json,
            quiet,
        } => {
            let bar = Bar::new("reseal", quiet || as_json);
            let files = tools::reseal_with(&path, bar.callback("reseal").as_ref())
                .map_err(|e| failed("savepoint reseal", e))?;
            drop(bar);
            if as_json {
                return report(json(&files)?, 0);
            }
            if files.is_empty() {
                return report("no file changed; _metadata is up to date".into(), 0);
            }
            let text = files
                .iter()
                .map(|f| {
                    format!(
                        "{}: {} -> {} bytes, CRC-32 {} -> {}",
                        f.path, f.old_size, f.new_size, f.old_crc32, f.new_crc32
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            report(text, 0)
        }
    }
}

/// Run `cairn fsck`.
pub fn fsck(args: FsckArgs) -> Result<(), CliError> {
    let bar = Bar::new("fsck", args.quiet || args.json);
    let r = tools::fsck_with(&args.path, bar.callback("fsck").as_ref()).map_err(|e| failed("fsck", e))?;
    drop(bar);
    report(if args.json { json(&r)? } else { r.render() }, r.exit_code())
}

/// Run `cairn gc`.
pub fn gc(args: GcArgs) -> Result<(), CliError> {
    let bar = Bar::new("gc", args.quiet || args.json);
    let r = tools::gc_with(&args.job_dir, !args.delete, args.force, bar.callback("gc").as_ref())
        .map_err(|e| failed("gc", e))?;
    drop(bar);
    if args.json {
        return report(json(&r)?, 0);
    }
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut s: String = r.deleted.iter().map(|d| format!("{verb} {d}\n")).collect();
    for k in &r.skipped {
        s += &format!("skipped {k}\n");
    }
    s += &format!(
        "{} path(s), {} bytes{}",
        r.deleted.len(),
        r.bytes,
        if r.dry_run {
            " (dry run: pass --delete to delete)"
        } else {
            ""
        }
    );
    report(s, 0)
}
