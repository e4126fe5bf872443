//! The logic of the savepoint commands (`cairn savepoint inspect | check |
//! rewrite | reseal`, `cairn fsck`, `cairn gc`) as functions returning
//! reports; the CLI only parses arguments and prints. Every report renders
//! as text for people and serializes as JSON.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_graph::plan::JobPlan;
use cairn_snapshot::layout::{metadata_path, parse_checkpoint_dir_name, resolve_ref, SHARED_DIR};
use cairn_snapshot::metadata::{decode_metadata, replace_metadata, verify_file, METADATA_FILE_NAME};
use cairn_snapshot::{FileFormat, SnapshotKind, Storage};
use cairn_state::shape::{Shape, VariantContent};
use cairn_state::{StateKind, StateMeta};
use serde::Serialize;

use crate::progress::{ProgressFn, Tracker};
use crate::reader::{state_info, OperatorInfo, SavepointReader, StateStats};
use crate::{Options, SavepointWriter, SpaError};

fn local() -> Arc<dyn Storage> {
    cairn_snapshot::StorageRouter::local_only().shared()
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

/// What `cairn savepoint inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    /// `checkpoint`, or `savepoint (canonical)` / `savepoint (native)`.
    pub kind: String,
    pub job_id: String,
    pub checkpoint_id: u64,
    pub metadata_version: u32,
    pub files: usize,
    pub bytes: u64,
    pub operators: Vec<OperatorInfo>,
    /// Keys, entries and bytes per keyed state.
    pub stats: Vec<StateStats>,
}

/// Inspect a savepoint or checkpoint (reads all keyed state to count keys).
pub fn inspect(path: &Path, options: Options) -> Result<InspectReport, SpaError> {
    let r = SavepointReader::read_with(local(), path, options)?;
    let m = r.metadata();
    let files: Vec<_> = m.files().collect();
    Ok(InspectReport {
        path: r.snapshot().dir.display().to_string(),
        kind: kind_name(&m.kind),
        job_id: m.job_id.clone(),
        checkpoint_id: m.checkpoint_id,
        metadata_version: m.format_version,
        files: files.len(),
        bytes: files.iter().map(|(_, _, f)| f.size).sum(),
        operators: r.operators()?,
        stats: r.state_stats()?,
    })
}

fn kind_name(k: &SnapshotKind) -> String {
    match k {
        SnapshotKind::Checkpoint => "checkpoint".into(),
        SnapshotKind::Savepoint { format } => format!("savepoint ({})", format!("{format:?}").to_lowercase()),
    }
}

impl InspectReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {}\n  job {}, checkpoint {}, _metadata v{}, {} files, {} bytes\n",
            self.kind, self.path, self.job_id, self.checkpoint_id, self.metadata_version, self.files, self.bytes
        );
        for op in &self.operators {
            s += &format!(
                "\noperator uid '{}' (id {}, \"{}\"), parallelism {}, max parallelism {}\n",
                op.uid, op.operator_id, op.name, op.parallelism, op.max_parallelism
            );
            if op.states.is_empty() {
                s += "  (no state)\n";
            }
            for st in &op.states {
                let stats = self.stats.iter().find(|x| x.uid == op.uid && x.state == st.name);
                let counts = match stats {
                    Some(x) => format!("{} keys, {} entries, {} bytes", x.keys, x.entries, x.bytes),
                    None => String::new(),
                };
                s += &format!("  {:<24} {:<14} {:<40} {}\n", st.name, st.kind, st.value_type, counts);
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// What will happen; fine.
    Info,
    /// Restores, but may fail later or lose something; read it.
    Warning,
    /// The restore would fail (or the job would fail on this state).
    Error,
}

/// One finding of `cairn savepoint check`.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// What `cairn savepoint check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub snapshot: String,
    pub job: String,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Whether a restore would succeed (no errors).
    pub fn restores(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// 0 when a restore would succeed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.restores() {
            0
        } else {
            1
        }
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut s = format!("checking {} against job '{}'\n", self.snapshot, self.job);
        for f in &self.findings {
            let tag = match f.severity {
                Severity::Info => "  ok     ",
                Severity::Warning => "  WARN   ",
                Severity::Error => "  ERROR  ",
            };
            s += &format!("{tag}{}\n", f.message);
        }
        s += if self.restores() {
            "result: the snapshot restores into this job\n"
        } else {
            "result: the restore would FAIL\n"
        };
        s
    }
}

/// Check whether the snapshot at `path` restores into the job `plan`
/// describes (the job's `--cairn-plan-json`), without starting it.
pub fn check(path: &Path, plan: &JobPlan, options: Options) -> Result<CheckReport, SpaError> {
    let r = SavepointReader::read_with(local(), path, options)?;
    let mut findings = Vec::new();
    let mut add = |severity, message: String| findings.push(Finding { severity, message });
    let mut dropped = Vec::new();
    let mut matched = BTreeSet::new();
    for op in &r.metadata().operators {
        let has_state = op.subtasks.iter().any(|s| !s.files.is_empty());
        let Some(node) = plan.operators.iter().find(|n| n.operator_id == op.operator_id) else {
            if has_state {
                dropped.push(op.uid.clone());
            }
            continue;
        };
        matched.insert(node.operator_id.clone());
        if !has_state {
            add(Severity::Info, format!("uid '{}': no state in the snapshot", op.uid));
            continue;
        }
        add(
            Severity::Info,
            format!("uid '{}' maps to operator '{}'", op.uid, node.name),
        );
        let stored = r.keyed_states(op)?;
        let keyed_state = !stored.is_empty();
        if keyed_state && node.keyed {
            let job_max = if node.max_parallelism_explicit {
                node.max_parallelism
            } else {
                op.max_parallelism
            };
            if job_max != op.max_parallelism {
                add(
                    Severity::Error,
                    format!(
                        "uid '{}': the snapshot has max parallelism {} but the job sets {}; remove the job's max parallelism (it is then taken from the snapshot), set it back to {}, or rewrite the savepoint with `cairn savepoint rewrite --max-parallelism {}`",
                        op.uid, op.max_parallelism, node.max_parallelism, op.max_parallelism, node.max_parallelism
                    ),
                );
            } else if node.parallelism > job_max {
                add(
                    Severity::Error,
                    format!(
                        "uid '{}': parallelism {} is above the max parallelism {} (the number of key groups); lower the parallelism or rewrite the savepoint with a larger --max-parallelism",
                        op.uid, node.parallelism, job_max
                    ),
                );
            } else if !node.max_parallelism_explicit && node.max_parallelism != op.max_parallelism {
                add(
                    Severity::Info,
                    format!(
                        "uid '{}': max parallelism {} is taken from the snapshot",
                        op.uid, op.max_parallelism
                    ),
                );
            }
        } else if keyed_state && !node.keyed {
            add(
                Severity::Error,
                format!(
                    "uid '{}' holds keyed state but the job's operator '{}' is not keyed; keyed state needs a keyed operator",
                    op.uid, node.name
                ),
            );
        }
        for st in &stored {
            if st.kind == "timers" {
                continue;
            }
            match node.states.iter().find(|m| m.name == st.name) {
                None => add(
                    Severity::Warning,
                    format!(
                        "uid '{}', state '{}': restored but the job does not register it (it is carried along, unused)",
                        op.uid, st.name
                    ),
                ),
                Some(m) => check_state(&op.uid, st, m, &mut add),
            }
        }
    }
    if !dropped.is_empty() {
        let list = dropped.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", ");
        if plan.allow_non_restored_state {
            add(
                Severity::Warning,
                format!("state of uid {list} maps to no operator and is dropped (-n is given)"),
            );
        } else {
            add(
                Severity::Error,
                format!("state of uid {list} maps to no operator in the job: start with -n (--allow-non-restored-state) to drop it, or give the operator its old uid back"),
            );
        }
    }
    for n in &plan.operators {
        if n.stateful && !matched.contains(&n.operator_id) {
            add(
                Severity::Info,
                format!(
                    "operator '{}' (uid '{}') is new to the snapshot and starts empty",
                    n.name, n.uid
                ),
            );
        }
    }
    Ok(CheckReport {
        snapshot: r.snapshot().dir.display().to_string(),
        job: plan.job_name.clone(),
        findings,
    })
}

fn check_state(uid: &str, stored: &crate::StateInfo, job: &StateMeta, add: &mut impl FnMut(Severity, String)) {
    let job_kind = cairn_state::canonical::kind_name(job.kind);
    if stored.kind != job_kind {
        add(
            Severity::Error,
            format!(
                "uid '{uid}', state '{}': stored as {} state, the job registers it as {} state",
                stored.name, stored.kind, job_kind
            ),
        );
        return;
    }
    let (Some(s), Some(j)) = (&stored.shapes, &job.shapes) else {
        add(
            Severity::Warning,
            format!(
                "uid '{uid}', state '{}': the stored type is not recorded; it cannot be checked before the job reads it",
                stored.name
            ),
        );
        return;
    };
    let mut problems = Vec::new();
    compat(&s.value, &j.value, "value", &mut problems);
    if job.kind == StateKind::Map {
        if let (Some(a), Some(b)) = (&s.user_key, &j.user_key) {
            if a != b {
                problems.push((
                    Severity::Error,
                    format!("the map's key type changed ({a} -> {b}); map entries are looked up by their key's bytes"),
                ));
            }
        }
    }
    if problems.is_empty() {
        add(
            Severity::Info,
            format!(
                "uid '{uid}', state '{}': stored type {} decodes as {}",
                stored.name, s.value, j.value
            ),
        );
    }
    for (sev, p) in problems {
        add(sev, format!("uid '{uid}', state '{}': {p}", stored.name));
    }
}

fn int_range(s: &Shape) -> Option<(i128, i128)> {
    Some(match s {
        Shape::I8 => (i8::MIN.into(), i8::MAX.into()),
        Shape::I16 => (i16::MIN.into(), i16::MAX.into()),
        Shape::I32 => (i32::MIN.into(), i32::MAX.into()),
        Shape::I64 => (i64::MIN.into(), i64::MAX.into()),
        Shape::U8 => (0, u8::MAX.into()),
        Shape::U16 => (0, u16::MAX.into()),
        Shape::U32 => (0, u32::MAX.into()),
        Shape::U64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// Whether stored values of shape `s` decode as shape `j` (serde's rules
/// over the value codec), at `path`.
fn compat(s: &Shape, j: &Shape, path: &str, out: &mut Vec<(Severity, String)>) {
    if s == j {
        return;
    }
    let err = |out: &mut Vec<(Severity, String)>, why: String| out.push((Severity::Error, format!("{path}: {why}")));
    match (s, j) {
        (Shape::Opaque(_), _) | (_, Shape::Opaque(_)) => out.push((
            Severity::Warning,
            format!("{path}: {s} vs {j} cannot be compared (serde describes one of them only with data)"),
        )),
        (a, b) if int_range(a).is_some() && int_range(b).is_some() => {
            let ((al, ah), (bl, bh)) = (int_range(a).expect("int"), int_range(b).expect("int"));
            if al < bl || ah > bh {
                out.push((
                    Severity::Warning,
                    format!("{path}: {a} narrowed to {b}: stored values outside {b}'s range will not decode"),
                ));
            }
        }
        (a, Shape::F32 | Shape::F64) if int_range(a).is_some() => {}
        (Shape::F32, Shape::F64) => {}
        (Shape::F64, Shape::F32) => out.push((
            Severity::Warning,
            format!("{path}: f64 narrowed to f32 loses precision"),
        )),
        (Shape::Char, Shape::Str) => {}
        (Shape::Option(a), Shape::Option(b)) => compat(a, b, path, out),
        (a, Shape::Option(b)) => compat(a, b, path, out),
        (Shape::Option(_), b) => err(
            out,
            format!("stored values may be None but the job's type {b} is not an Option"),
        ),
        (Shape::Seq(a), Shape::Seq(b)) => compat(a, b, &format!("{path}[]"), out),
        (Shape::Map { key: ak, value: av }, Shape::Map { key: bk, value: bv }) => {
            compat(ak, bk, &format!("{path} key"), out);
            compat(av, bv, &format!("{path} value"), out);
        }
        (Shape::Tuple(a), Shape::Tuple(b)) => {
            if a.len() != b.len() {
                err(out, format!("a tuple of {} became a tuple of {}", a.len(), b.len()));
            } else {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    compat(x, y, &format!("{path}.{i}"), out);
                }
            }
        }
        (Shape::Struct { fields: a, .. }, Shape::Struct { fields: b, .. }) => {
            for fb in b {
                match a.iter().find(|fa| fa.name == fb.name) {
                    Some(fa) => compat(&fa.shape, &fb.shape, &format!("{path}.{}", fb.name), out),
                    None if matches!(fb.shape, Shape::Option(_)) => {}
                    None => out.push((
                        Severity::Warning,
                        format!(
                            "{path}.{}: a new field that stored values lack; they decode only if it has #[serde(default)]",
                            fb.name
                        ),
                    )),
                }
            }
        }
        (Shape::Enum { variants: a, .. }, Shape::Enum { variants: b, .. }) => {
            for va in a {
                match b.iter().find(|vb| vb.name == va.name) {
                    None => err(
                        out,
                        format!("variant {} was removed; stored values of it will not decode", va.name),
                    ),
                    Some(vb) => match (&va.content, &vb.content) {
                        (VariantContent::Newtype(x), VariantContent::Newtype(y)) => {
                            compat(x, y, &format!("{path}::{}", va.name), out)
                        }
                        (x, y) if x == y => {}
                        _ => err(out, format!("the content of variant {} changed", va.name)),
                    },
                }
            }
        }
        (a, b) => err(out, format!("stored as {a}, the job declares {b}")),
    }
}

// ---------------------------------------------------------------------------
// rewrite, reseal
// ---------------------------------------------------------------------------

/// What `cairn savepoint rewrite` changes.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub max_parallelism: Option<u32>,
    pub renames: Vec<(String, String)>,
    pub drops: Vec<String>,
}

/// What `cairn savepoint rewrite` wrote.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new savepoint's directory.
    pub dir: PathBuf,
    /// What the input held that a savepoint does not carry, for the user
    /// to know (the in-flight records of an unaligned checkpoint).
    pub notes: Vec<String>,
}

/// Write a modified copy of the snapshot at `input` into `output`.
pub fn rewrite(input: &Path, output: &Path, changes: &Rewrite, options: Options) -> Result<Rewritten, SpaError> {
    let reader = SavepointReader::read_with(local(), input, options)?;
    let mut notes = Vec::new();
    let in_flight = reader
        .metadata()
        .files()
        .filter(|(_, _, f)| f.format == FileFormat::ChannelStateV1)
        .count();
    if in_flight > 0 {
        notes.push(format!(
            "the input is an unaligned checkpoint: its in-flight records ({in_flight} channel-state file(s)) are not carried into the savepoint; a job started from it does not see them again"
        ));
    }
    let mut w = SavepointWriter::from_reader(reader)?;
    for uid in &changes.drops {
        w = w.remove_operator(uid);
    }
    // The renames apply at once (uids may be swapped): each goes through a
    // placeholder no operator has, then to its new uid.
    let mut olds = BTreeSet::new();
    let mut news = BTreeSet::new();
    for (old, new) in &changes.renames {
        if !olds.insert(old) {
            return Err(SpaError::Usage(format!(
                "--rename-uid renames uid '{old}' twice; give one new uid"
            )));
        }
        if !news.insert(new) {
            return Err(SpaError::Usage(format!(
                "--rename-uid gives uid '{new}' to two operators; uids must stay unique"
            )));
        }
    }
    // (After the drops: a dropped operator's uid is free.)
    let kept: BTreeSet<&str> = w.uids().collect();
    for (old, new) in &changes.renames {
        if !kept.contains(old.as_str()) {
            return Err(SpaError::Usage(format!(
                "--rename-uid {old}={new}: there is no operator with uid '{old}' (cairn savepoint inspect lists them)"
            )));
        }
        if kept.contains(new.as_str()) && !olds.contains(new) {
            return Err(SpaError::Usage(format!(
                "--rename-uid {old}={new}: uid '{new}' is taken by another operator; rename or drop that one too"
            )));
        }
    }
    let placeholder = |i: usize| format!("\u{0}cairn-rename-{i}");
    for (i, (old, _)) in changes.renames.iter().enumerate() {
        w = w.rename_uid(old, &placeholder(i));
    }
    for (i, (_, new)) in changes.renames.iter().enumerate() {
        w = w.rename_uid(&placeholder(i), new);
    }
    if let Some(m) = changes.max_parallelism {
        w = w.change_max_parallelism(m);
    }
    Ok(Rewritten {
        dir: w.write(output)?,
        notes,
    })
}

/// One file whose `_metadata` entry was updated.
#[derive(Debug, Clone, Serialize)]
pub struct ResealedFile {
    pub path: String,
    pub old_size: u64,
    pub new_size: u64,
    pub old_crc32: String,
    pub new_crc32: String,
}

/// After files of a savepoint were rewritten by other tools (pyarrow,
/// DuckDB), record their new sizes and CRC-32s in `_metadata` (replaced
/// atomically). Only savepoints (checkpoints belong to the engine).
pub fn reseal(dir: &Path) -> Result<Vec<ResealedFile>, SpaError> {
    reseal_with(dir, None)
}

/// [`reseal`], telling `progress` after every file checked.
pub fn reseal_with(dir: &Path, progress: Option<&ProgressFn>) -> Result<Vec<ResealedFile>, SpaError> {
    let storage = local();
    crate::must_exist(&*storage, dir)?;
    let (dir, mp) = cairn_snapshot::metadata::locate_metadata(&*storage, dir)?;
    let bytes = storage.read(&mp)?;
    let mut meta = decode_metadata(&mp, &bytes)?;
    if !meta.kind.is_savepoint() {
        return Err(SpaError::Usage(format!(
            "{} is a checkpoint; only savepoints may be resealed (checkpoints are the engine's)",
            dir.display()
        )));
    }
    let mut changed = Vec::new();
    let tracker = Tracker::new("resealing", "files", progress, meta.files().count() as u64);
    for op in &mut meta.operators {
        let max_parallelism = op.max_parallelism;
        for sub in &mut op.subtasks {
            for f in &mut sub.files {
                let path = resolve_ref(&dir, &f.path)?;
                let size = storage.size(&path)?;
                let mut h = crc32fast::Hasher::new();
                let mut off = 0;
                while off < size {
                    let len = (size - off).min(8 << 20);
                    h.update(&storage.read_range(&path, off, len)?);
                    off += len;
                }
                let crc = h.finalize();
                tracker.step(size);
                if size != f.size || crc != f.crc32 {
                    if f.format != FileFormat::ParquetV2 && f.format != FileFormat::ParquetV1 {
                        return Err(SpaError::Usage(format!(
                            "{} changed but is not a Parquet file: only canonical Parquet files may be edited",
                            f.path
                        )));
                    }
                    // Sealing vouches for the file: it must read back whole
                    // (every row, every key in its key group, no duplicates).
                    validate_edited(&*storage, &path, size, crc, f.format, max_parallelism)
                        .map_err(|e| SpaError::Snapshot(format!("{} cannot be resealed: {e}", path.display())))?;
                    changed.push(ResealedFile {
                        path: f.path.clone(),
                        old_size: f.size,
                        new_size: size,
                        old_crc32: format!("{:08x}", f.crc32),
                        new_crc32: format!("{crc:08x}"),
                    });
                    f.size = size;
                    f.crc32 = crc;
                }
            }
        }
    }
    if !changed.is_empty() {
        replace_metadata(&*storage, &dir, &meta)?;
    }
    Ok(changed)
}

/// Read an edited canonical file as a restore would, rejecting what a
/// restore would reject. The read checks the file's CRC-32 again, so what
/// is sealed is what was read (an edit in between is caught).
fn validate_edited(
    storage: &dyn Storage,
    path: &Path,
    size: u64,
    crc32: u32,
    format: FileFormat,
    max_parallelism: u32,
) -> Result<(), String> {
    if format == FileFormat::ParquetV1 {
        return cairn_runtime::snapshot_io::read_canonical_footer(storage, path, size)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    match cairn_canonical::open(storage, path, size)? {
        cairn_canonical::CanonicalFile::Keyed(file) => {
            let all = cairn_state::keygroup::KeyGroupRange {
                start: 0,
                end_exclusive: max_parallelism.max(1),
            };
            file.for_each_group(
                storage,
                all,
                Some(max_parallelism.max(1)),
                Some(crc32),
                &mut |_, _, _, _| Ok(()),
            )
        }
        cairn_canonical::CanonicalFile::Operator(source) => {
            cairn_canonical::read_operator_file(storage, &source, Some(crc32)).map(|_| ())
        }
    }
}

// ---------------------------------------------------------------------------
// fsck, gc
// ---------------------------------------------------------------------------

/// What `cairn fsck` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Snapshots checked (directories holding `_metadata`).
    pub snapshots: Vec<String>,
    /// Files verified (size, CRC-32, format).
    pub files_checked: usize,
    /// Corrupt or missing files, unreadable `_metadata`: each names the file.
    pub problems: Vec<String>,
    /// Files and directories no complete snapshot references.
    pub orphans: Vec<String>,
    /// Incomplete checkpoints that may still be in progress (newer than the latest complete one).
    pub in_progress: Vec<String>,
    /// What `orphans` and `in_progress` name, as paths (for `gc`; the
    /// strings above are for people).
    #[serde(skip)]
    garbage: Vec<Garbage>,
}

/// A path no complete snapshot references.
#[derive(Debug, Clone)]
struct Garbage {
    path: PathBuf,
    /// A checkpoint directory without `_metadata` (else one file).
    is_dir: bool,
}

impl FsckReport {
    /// 0 when every checksum and reference is fine, 1 otherwise (orphans are not errors).
    pub fn exit_code(&self) -> i32 {
        if self.problems.is_empty() {
            0
        } else {
            1
        }
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "{} snapshot(s), {} file(s) verified\n",
            self.snapshots.len(),
            self.files_checked
        );
        for p in &self.problems {
            s += &format!("  PROBLEM  {p}\n");
        }
        for o in &self.orphans {
            s += &format!("  orphan   {o}\n");
        }
        for o in &self.in_progress {
            s += &format!("  pending  {o} (no _metadata yet: in progress, or left by a crash)\n");
        }
        if self.problems.is_empty() {
            s += "no corruption found\n";
        }
        s
    }
}

/// A snapshot's `_metadata`, decoded (or why not).
type LoadedMeta = Result<cairn_snapshot::SnapshotMetadata, cairn_snapshot::SnapshotError>;

fn load_meta(storage: &dyn Storage, dir: &Path) -> LoadedMeta {
    let mp = metadata_path(dir);
    storage.read(&mp).and_then(|b| decode_metadata(&mp, &b))
}

/// The files `_metadata` lists (0 when it does not decode).
fn file_count(meta: &LoadedMeta) -> u64 {
    meta.as_ref().map_or(0, |m| m.files().count() as u64)
}

/// Verify one snapshot directory; return the absolute paths it references.
fn check_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    meta: LoadedMeta,
    report: &mut FsckReport,
    tracker: &Tracker,
) -> BTreeSet<PathBuf> {
    let mut refs = BTreeSet::new();
    let mp = metadata_path(dir);
    report.snapshots.push(dir.display().to_string());
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(e.to_string());
            return refs;
        }
    };
    for (op, _, f) in meta.files() {
        report.files_checked += 1;
        tracker.step(f.size);
        let path = match resolve_ref(dir, &f.path) {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(format!("{}: {e}", mp.display()));
                continue;
            }
        };
        refs.insert(path.clone());
        if let Err(e) = verify_file(storage, dir, f) {
            report.problems.push(format!("uid '{}': {e}", op.uid));
            continue;
        }
        let structural = match f.format {
            // Channel state is kept in the state-file container too.
            FileFormat::CairnStateV1 | FileFormat::ChannelStateV1 => {
                cairn_snapshot::StateFileReader::open(storage, &path)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            FileFormat::ParquetV2 => cairn_canonical::open(storage, &path, f.size).map(|_| ()),
            FileFormat::ParquetV1 => cairn_runtime::snapshot_io::read_canonical_footer(storage, &path, f.size)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            FileFormat::BackendFile => Ok(()),
        };
        if let Err(e) = structural {
            report
                .problems
                .push(format!("{} (uid '{}'): {e}", path.display(), op.uid));
        }
    }
    refs
}

/// Files below `dir`, recursively.
fn walk(storage: &dyn Storage, dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = storage.list(dir) {
        for e in entries {
            let p = dir.join(&e.name);
            if e.is_dir {
                walk(storage, &p, out);
            } else {
                out.push(p);
            }
        }
    }
}

fn fsck_job_dir(
    storage: &dyn Storage,
    job_dir: &Path,
    report: &mut FsckReport,
    tracker: &Tracker,
) -> Result<(), SpaError> {
    let mut referenced = BTreeSet::new();
    let mut complete = Vec::new();
    let mut incomplete = Vec::new();
    // Shared files first: one that a checkpoint starting after this listing
    // writes is not seen at all, instead of looking unreferenced.
    let mut shared = Vec::new();
    walk(storage, &job_dir.join(SHARED_DIR), &mut shared);
    for e in storage.list(job_dir)? {
        let p = job_dir.join(&e.name);
        if let (true, Some(id)) = (e.is_dir, parse_checkpoint_dir_name(&e.name)) {
            if storage.exists(&metadata_path(&p))? {
                let meta = load_meta(storage, &p);
                tracker.add_total(file_count(&meta));
                complete.push((id, p, meta));
            } else {
                incomplete.push((id, p));
            }
        }
    }
    let mut complete_ids = Vec::new();
    // A shared file's problem shows in every checkpoint that references it:
    // one line, naming them.
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    for (id, p, meta) in complete {
        let mut one = FsckReport::default();
        let refs = check_snapshot(storage, &p, meta, &mut one, tracker);
        // A running job's retention may retire a checkpoint while it is
        // checked: the files it lost then are not corruption.
        if !one.problems.is_empty() && !storage.exists(&metadata_path(&p))? {
            continue;
        }
        report.snapshots.append(&mut one.snapshots);
        report.files_checked += one.files_checked;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for problem in one.problems {
            match problems.iter_mut().find(|(text, _)| *text == problem) {
                Some((_, seen_in)) => seen_in.push(name.clone()),
                None => problems.push((problem, vec![name.clone()])),
            }
        }
        referenced.extend(refs);
        complete_ids.push(id);
    }
    for (problem, seen_in) in problems {
        report
            .problems
            .push(format!("{problem} (referenced by {})", seen_in.join(", ")));
    }
    let complete = complete_ids;
    let latest = complete.iter().max().copied();
    for (id, p) in incomplete {
        // A complete checkpoint may reference files in another's directory
        // (relative references may climb out of their own): never garbage.
        if referenced.iter().any(|r| r.starts_with(&p)) {
            continue;
        }
        // Newer than the latest complete checkpoint: maybe still being
        // written (gc takes it only when forced).
        if latest.is_none_or(|l| id > l) {
            report.in_progress.push(p.display().to_string());
        } else {
            report
                .orphans
                .push(format!("{} (an aborted checkpoint's leftovers)", p.display()));
        }
        report.garbage.push(Garbage { path: p, is_dir: true });
    }
    for f in shared {
        if !referenced.contains(&f) {
            report.orphans.push(f.display().to_string());
            report.garbage.push(Garbage { path: f, is_dir: false });
        }
    }
    Ok(())
}

/// Whether `dir`'s entries look like a job's checkpoint directory.
fn is_job_dir(entries: &[cairn_snapshot::storage::DirEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.is_dir && (parse_checkpoint_dir_name(&e.name).is_some() || e.name == SHARED_DIR))
}

/// Verify every checksum and reference below `path`: a snapshot (directory
/// or `_metadata`), a job's checkpoint directory, or the checkpoint
/// directory holding jobs; list orphaned files.
pub fn fsck(path: &Path) -> Result<FsckReport, SpaError> {
    fsck_with(path, None)
}

/// [`fsck`], telling `progress` after every file verified.
pub fn fsck_with(path: &Path, progress: Option<&ProgressFn>) -> Result<FsckReport, SpaError> {
    let tracker = Tracker::new("verifying", "files", progress, 0);
    let storage = local();
    let storage = &*storage;
    let mut report = FsckReport::default();
    crate::must_exist(storage, path)?;
    let is_meta = path.file_name().is_some_and(|n| n == METADATA_FILE_NAME);
    let snap_dir = match path.parent() {
        Some(p) if is_meta && !p.as_os_str().is_empty() => p.to_path_buf(),
        _ if is_meta => PathBuf::from("."),
        _ => path.to_path_buf(),
    };
    // (A plain file has no `_metadata` below it; it is refused further down.)
    if storage.exists(&metadata_path(&snap_dir)).unwrap_or(false) {
        let meta = load_meta(storage, &snap_dir);
        tracker.add_total(file_count(&meta));
        let readable = meta.is_ok();
        let refs = check_snapshot(storage, &snap_dir, meta, &mut report, &tracker);
        if !readable {
            // Without its _metadata nothing is known to be referenced:
            // calling the state files orphans would invite deleting them.
            return Ok(report);
        }
        let mut files = Vec::new();
        walk(storage, &snap_dir, &mut files);
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if !refs.contains(&f) && name != METADATA_FILE_NAME && name != "_claim" {
                report.orphans.push(f.display().to_string());
            }
        }
        return Ok(report);
    }
    let not_a_snapshot = || {
        SpaError::Usage(format!(
            "{} is neither a snapshot, a job's checkpoint directory nor a checkpoint directory of jobs",
            path.display()
        ))
    };
    let entries = storage.list(path).map_err(|_| not_a_snapshot())?;
    if is_job_dir(&entries) {
        fsck_job_dir(storage, path, &mut report, &tracker)?;
    } else {
        let mut any = false;
        for e in entries.iter().filter(|e| e.is_dir) {
            if cairn_snapshot::layout::validate_hex32("job id", &e.name).is_ok() {
                any = true;
                fsck_job_dir(storage, &path.join(&e.name), &mut report, &tracker)?;
            }
        }
        if !any {
            return Err(not_a_snapshot());
        }
    }
    Ok(report)
}

/// What `cairn gc` deleted (or would delete in a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub deleted: Vec<String>,
    pub bytes: u64,
    /// Garbage left in place, each with why (a name that is not UTF-8, which
    /// storage cannot address; a path that went away meanwhile).
    pub skipped: Vec<String>,
}

/// Delete what no complete checkpoint of `job_dir` references: unreferenced
/// `shared/` files and the leftovers of aborted checkpoints (incomplete ones
/// older than the latest complete one). Refuses while a checkpoint seems to
/// be in progress (its new shared files would look unreferenced) unless
/// `force`, which deletes those too. Corrupt snapshots stop it: nothing is
/// deleted then. Only paths inside `job_dir` are ever deleted.
pub fn gc(job_dir: &Path, dry_run: bool, force: bool) -> Result<GcReport, SpaError> {
    gc_with(job_dir, dry_run, force, None)
}

/// [`gc`], telling `progress` after every file verified, then deleted.
pub fn gc_with(
    job_dir: &Path,
    dry_run: bool,
    force: bool,
    progress: Option<&ProgressFn>,
) -> Result<GcReport, SpaError> {
    let storage = local();
    crate::must_exist(&*storage, job_dir)?;
    let is_snapshot = storage.exists(&metadata_path(job_dir)).unwrap_or(false);
    if is_snapshot || !storage.list(job_dir).is_ok_and(|entries| is_job_dir(&entries)) {
        return Err(SpaError::Usage(format!(
            "{} is not a job's checkpoint directory (<checkpoint dir>/<job id>, holding chk-<n> directories or shared/); gc collects one job's checkpoints",
            job_dir.display()
        )));
    }
    let mut report = FsckReport::default();
    fsck_job_dir(
        &*storage,
        job_dir,
        &mut report,
        &Tracker::new("verifying", "files", progress, 0),
    )?;
    if !report.problems.is_empty() {
        return Err(SpaError::Snapshot(format!(
            "refusing to collect garbage in a job directory with problems (run cairn fsck): {}",
            report.problems.join("; ")
        )));
    }
    if !report.in_progress.is_empty() && !force {
        return Err(SpaError::Usage(format!(
            "{} may be in progress (a running job's new files look unreferenced until its _metadata is written); stop the job first, or pass --force",
            report.in_progress.join(", ")
        )));
    }
    let mut deleted = Vec::new();
    let mut skipped = Vec::new();
    let mut bytes = 0;
    let phase = if dry_run { "listing" } else { "deleting" };
    let tracker = Tracker::new(phase, "files", progress, report.garbage.len() as u64);
    for g in &report.garbage {
        let shown = g.path.display().to_string();
        // fsck found these by listing job_dir; anything else is a Cairn bug
        // that must not cost a byte outside the job's directory.
        if !g.path.starts_with(job_dir) || g.path == job_dir {
            return Err(SpaError::Snapshot(format!(
                "refusing to delete {shown}: it is not inside {} (a Cairn bug; nothing else was deleted after it)",
                job_dir.display()
            )));
        }
        // Storage addresses entries by UTF-8 names: a name that is not
        // (listed with replacement characters) cannot be deleted through it.
        if shown.contains(char::REPLACEMENT_CHARACTER) || !storage.exists(&g.path)? {
            skipped.push(format!(
                "{shown}: not found under this name (a file name that is not UTF-8, or deleted meanwhile); remove it by hand if it is still there"
            ));
            continue;
        }
        let size = if g.is_dir {
            let mut files = Vec::new();
            walk(&*storage, &g.path, &mut files);
            let size = files.iter().filter_map(|f| storage.size(f).ok()).sum::<u64>();
            if !dry_run {
                storage.delete_dir_all(&g.path)?;
            }
            size
        } else {
            let size = storage.size(&g.path).unwrap_or(0);
            if !dry_run {
                storage.delete_file(&g.path)?;
            }
            size
        };
        bytes += size;
        tracker.step(size);
        deleted.push(shown);
    }
    Ok(GcReport {
        dry_run,
        deleted,
        bytes,
        skipped,
    })
}

/// The keyed state info of a state's metadata (for renderers).
pub fn describe_state(meta: StateMeta) -> crate::StateInfo {
    state_info(meta)
}

/// How long a job binary may take to print its plan, unless the
/// environment variable [`PLAN_TIMEOUT_VAR`] gives other seconds.
pub const PLAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The environment variable that sets how many seconds a job binary may
/// take to print its plan (a job that loads much before building its plan).
pub const PLAN_TIMEOUT_VAR: &str = "CAIRN_PLAN_TIMEOUT";

/// The longest [`PLAN_TIMEOUT_VAR`] may ask for (a day).
const MAX_PLAN_TIMEOUT_S: u64 = 86_400;

fn plan_timeout() -> Result<std::time::Duration, SpaError> {
    match std::env::var(PLAN_TIMEOUT_VAR) {
        Err(_) => Ok(PLAN_TIMEOUT),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_PLAN_TIMEOUT_S).contains(s))
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| {
                SpaError::Usage(format!(
                    "{PLAN_TIMEOUT_VAR}='{v}' is not a number of seconds (a whole number from 1 to {MAX_PLAN_TIMEOUT_S})"
                ))
            }),
    }
}

/// The most a job binary may print while asked for its plan (a plan is a
/// few KiB; more means the binary is doing something else).
const PLAN_OUTPUT_LIMIT: u64 = 16 << 20;

/// Ask a job binary for its plan: run `binary --cairn-plan-json args...`
/// (the job prints its resolved plan and exits without running). The flag
/// goes first, where a job never takes it as its own argument (after a
/// `--`). A binary that runs longer than [`PLAN_TIMEOUT`] or prints more
/// than a plan could be is stopped.
pub fn plan_of_binary(binary: &Path, args: &[String]) -> Result<JobPlan, SpaError> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let timeout = plan_timeout()?;
    let cannot = |e: std::io::Error| SpaError::Usage(format!("cannot run the job binary {}: {e}", binary.display()));
    let mut child = Command::new(binary)
        .arg(cairn_config::PLAN_JSON_FLAG)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(cannot)?;
    // Read both pipes at once (a child blocks on a full one), each up to the limit.
    let over_limit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let capture = |pipe: Option<Box<dyn Read + Send>>| {
        let over = over_limit.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(PLAN_OUTPUT_LIMIT + 1).read_to_end(&mut out);
            }
            if out.len() as u64 > PLAN_OUTPUT_LIMIT {
                over.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            out
        })
    };
    let stdout_reader = capture(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr_reader = capture(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(cannot)? {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline || over_limit.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // The pipes close when the binary ends, unless something it started
    // holds them: then take no more than the time left (a second after a stop).
    let until = if status.is_some() {
        deadline
    } else {
        std::time::Instant::now() + std::time::Duration::from_secs(1)
    };
    let join_within = |reader: std::thread::JoinHandle<Vec<u8>>| {
        while !reader.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if reader.is_finished() {
            reader.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let stdout_bytes = join_within(stdout_reader);
    let stderr_bytes = join_within(stderr_reader);
    // (A binary cut off at the limit may end by itself, of the closed pipe.)
    let over = over_limit.load(std::sync::atomic::Ordering::Relaxed);
    let Some(status) = status.filter(|_| !over) else {
        let why = if over {
            format!("printed more than {} MiB", PLAN_OUTPUT_LIMIT >> 20)
        } else {
            format!(
                "did not finish within {} s ({PLAN_TIMEOUT_VAR} sets the seconds)",
                timeout.as_secs()
            )
        };
        return Err(SpaError::Usage(format!(
            "the job binary {} {why} when asked for its plan ({}) and was stopped; is it a Cairn job built with this version (StreamEnv::from_args)?",
            binary.display(),
            cairn_config::PLAN_JSON_FLAG
        )));
    };
    let out = std::process::Output {
        status,
        stdout: stdout_bytes,
        stderr: stderr_bytes,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(SpaError::Usage(format!(
            "the job binary {} exited with {} before printing its plan: {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The plan is the last JSON object printed (a job may log before it).
    let start = stdout
        .find("{\n  \"cairn_plan_version\"")
        .or_else(|| stdout.find('{'))
        .ok_or_else(|| {
            SpaError::Usage(format!(
                "the job binary {} printed no plan; is it a Cairn job built with this version (StreamEnv::from_args)?",
                binary.display()
            ))
        })?;
    let plan: JobPlan = serde_json::from_str(stdout[start..].trim()).map_err(|e| {
        SpaError::Usage(format!(
            "the job binary {} printed a plan that does not parse: {e}",
            binary.display()
        ))
    })?;
    if plan.cairn_plan_version != cairn_graph::plan::PLAN_VERSION {
        return Err(SpaError::Usage(format!(
            "the job binary prints plan version {}, this cairn reads version {}",
            plan.cairn_plan_version,
            cairn_graph::plan::PLAN_VERSION
        )));
    }
    Ok(plan)
}
