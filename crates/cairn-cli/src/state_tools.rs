//! The offline state commands: `cairn savepoint inspect | check | rewrite |
//! reseal`, `cairn fsck`, `cairn gc`. Argument parsing only; the logic is
//! `cairn_state_processor::tools`. Kept apart from the job-control commands
//! so it moves as one piece when the CLI's parser changes.

use std::path::{Path, PathBuf};

use cairn_state_processor::tools;
use cairn_state_processor::Options;

/// Subcommands of `cairn savepoint` handled here.
pub const SAVEPOINT_SUBCOMMANDS: [&str; 4] = ["inspect", "check", "rewrite", "reseal"];

pub const HELP: &str = "\
Usage: cairn savepoint inspect <path> [--json]
       cairn savepoint check <path> [--json] -- <job binary> [job args...]
       cairn savepoint rewrite <in> <out> [--max-parallelism N] [--rename-uid OLD=NEW]... [--drop-uid UID]...
       cairn savepoint reseal <savepoint>
       cairn fsck <checkpoint dir | job dir | snapshot> [--json]
       cairn gc <job dir> [--delete] [--force] [--json]

inspect  operators, uids, states (kind, stored type), keys, entries and bytes per state
check    whether the snapshot restores into the job, without starting it: which state
         maps where, what would be dropped (and whether -n is needed), new operators,
         max-parallelism and parallelism problems, stored types that do not decode.
         The job binary is run with --cairn-plan-json (it prints its plan and exits).
         Exit code 0 only when a restore would succeed.
rewrite  a new, self-contained canonical savepoint: new max parallelism (keys are
         rehashed), renamed or dropped operators
reseal   after editing a savepoint's Parquet files with other tools (pyarrow, DuckDB),
         record their new sizes and checksums in _metadata
fsck     verify every checksum and reference; list orphaned files (exit 1 on corruption)
gc       delete files no retained checkpoint references (dry run unless --delete)

Options:
  --memory <bytes>   memory budget for keyed state in flight (default 512 MiB)
";

fn usage(msg: impl Into<String>) -> (i32, String) {
    (2, format!("{}\n\n{HELP}", msg.into()))
}

struct Parsed {
    positional: Vec<String>,
    json: bool,
    delete: bool,
    force: bool,
    max_parallelism: Option<u32>,
    renames: Vec<(String, String)>,
    drops: Vec<String>,
    options: Options,
    job: Vec<String>,
}

fn parse(argv: Vec<String>) -> Result<Parsed, (i32, String)> {
    let mut p = Parsed {
        positional: Vec::new(),
        json: false,
        delete: false,
        force: false,
        max_parallelism: None,
        renames: Vec::new(),
        drops: Vec::new(),
        options: Options::default(),
        job: Vec::new(),
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| usage(format!("{name} needs a value")));
        match a.as_str() {
            "--" => {
                p.job = it.by_ref().collect();
                break;
            }
            "--json" => p.json = true,
            "--delete" => p.delete = true,
            "--force" => p.force = true,
            "--max-parallelism" => {
                let v = value("--max-parallelism")?;
                p.max_parallelism = Some(
                    v.parse()
                        .map_err(|_| usage(format!("--max-parallelism {v}: not a number")))?,
                );
            }
            "--rename-uid" => {
                let v = value("--rename-uid")?;
                let (a, b) = v
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--rename-uid {v}: write OLD=NEW")))?;
                p.renames.push((a.to_string(), b.to_string()));
            }
            "--drop-uid" => p.drops.push(value("--drop-uid")?),
            "--memory" => {
                let v = value("--memory")?;
                p.options.memory_bytes = v
                    .parse()
                    .map_err(|_| usage(format!("--memory {v}: not a number of bytes")))?;
            }
            "-h" | "--help" => return Err((0, HELP.to_string())),
            s if s.starts_with('-') => return Err(usage(format!("unknown option '{s}'"))),
            _ => p.positional.push(a),
        }
    }
    Ok(p)
}

fn one(p: &Parsed, what: &str) -> Result<PathBuf, (i32, String)> {
    match p.positional.as_slice() {
        [x] => Ok(PathBuf::from(x)),
        [] => Err(usage(format!("{what}: give a path"))),
        _ => Err(usage(format!("{what}: too many arguments"))),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Run one offline state command; (exit code, text for stdout or stderr).
/// Exit codes: 0 ok, 1 the check or operation failed, 2 usage error.
pub fn run(command: &str, argv: Vec<String>) -> (i32, String) {
    let p = match parse(argv) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let fail = |e: cairn_state_processor::SpaError| {
        let code = if matches!(e, cairn_state_processor::SpaError::Usage(_)) {
            2
        } else {
            1
        };
        (code, format!("error: {e}"))
    };
    match command {
        "inspect" => {
            let path = match one(&p, "inspect") {
                Ok(x) => x,
                Err(e) => return e,
            };
            match tools::inspect(&path, p.options) {
                Ok(r) if p.json => (0, print_json(&r)),
                Ok(r) => (0, r.render()),
                Err(e) => fail(e),
            }
        }
        "check" => {
            let path = match one(&p, "check") {
                Ok(x) => x,
                Err(e) => return e,
            };
            let Some((bin, args)) = p.job.split_first() else {
                return usage(
                    "check: give the job binary after --: cairn savepoint check <path> -- <job binary> [args]",
                );
            };
            let plan = match tools::plan_of_binary(Path::new(bin), args) {
                Ok(plan) => plan,
                Err(e) => return (2, format!("error: {e}")),
            };
            match tools::check(&path, &plan, p.options) {
                Ok(r) => (r.exit_code(), if p.json { print_json(&r) } else { r.render() }),
                Err(e) => fail(e),
            }
        }
        "rewrite" => {
            let [input, output] = p.positional.as_slice() else {
                return usage("rewrite: give <in> and <out>");
            };
            let changes = tools::Rewrite {
                max_parallelism: p.max_parallelism,
                renames: p.renames.clone(),
                drops: p.drops.clone(),
            };
            match tools::rewrite(Path::new(input), Path::new(output), &changes, p.options) {
                Ok(dir) => (0, format!("wrote {}", dir.display())),
                Err(e) => fail(e),
            }
        }
        "reseal" => {
            let path = match one(&p, "reseal") {
                Ok(x) => x,
                Err(e) => return e,
            };
            match tools::reseal(&path) {
                Ok(files) if p.json => (0, print_json(&files)),
                Ok(files) if files.is_empty() => (0, "no file changed; _metadata is up to date".into()),
                Ok(files) => (
                    0,
                    files
                        .iter()
                        .map(|f| {
                            format!(
                                "{}: {} -> {} bytes, CRC-32 {} -> {}",
                                f.path, f.old_size, f.new_size, f.old_crc32, f.new_crc32
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                Err(e) => fail(e),
            }
        }
        "fsck" => {
            let path = match one(&p, "fsck") {
                Ok(x) => x,
                Err(e) => return e,
            };
            match tools::fsck(&path) {
                Ok(r) => (r.exit_code(), if p.json { print_json(&r) } else { r.render() }),
                Err(e) => fail(e),
            }
        }
        "gc" => {
            let path = match one(&p, "gc") {
                Ok(x) => x,
                Err(e) => return e,
            };
            match tools::gc(&path, !p.delete, p.force) {
                Ok(r) if p.json => (0, print_json(&r)),
                Ok(r) => {
                    let verb = if r.dry_run { "would delete" } else { "deleted" };
                    let mut s: String = r.deleted.iter().map(|d| format!("{verb} {d}\n")).collect();
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
                    (0, s)
                }
                Err(e) => fail(e),
            }
        }
        other => usage(format!("unknown state command '{other}'")),
    }
}
