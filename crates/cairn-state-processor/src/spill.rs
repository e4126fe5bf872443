//! Spill files: records tagged with their key group, written while keys are
//! regrouped (rehashed into new key groups, or bootstrap input keyed), then
//! read back one bucket of key groups at a time. A bucket that turns out too
//! large for memory is split again, so memory stays bounded.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cairn_state::keygroup::KeyGroupRange;

use crate::chunks::EXPANSION;
use crate::SpaError;

/// One spilled record: a key group, a small tag and three byte strings.
pub struct Record {
    pub kg: u32,
    pub tag: u32,
    pub a: Vec<u8>,
    pub b: Vec<u8>,
    pub c: Vec<u8>,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> SpaError {
    SpaError::Snapshot(format!("spill file {}: {what}: {e}", path.display()))
}

/// A directory of spill files, removed when dropped.
pub struct SpillDir {
    dir: PathBuf,
    next: std::sync::atomic::AtomicU64,
}

impl SpillDir {
    pub fn new(parent: &Path) -> Result<Self, SpaError> {
        let mut rng = cairn_snapshot::layout::IdGenerator::from_entropy();
        let dir = parent.join(format!("cairn-spill-{}-{}", std::process::id(), rng.hex(8)));
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "create", e))?;
        Ok(SpillDir {
            dir,
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn fresh(&self) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("{n}.spill"))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bucket: a key-group range and the file of its records.
pub struct Bucket {
    pub range: KeyGroupRange,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Writes records into buckets by key group.
pub struct Spiller<'d> {
    dir: &'d SpillDir,
    buckets: Vec<(KeyGroupRange, PathBuf, BufWriter<File>, u64)>,
}

fn put(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())?;
    w.write_all(b)
}

impl<'d> Spiller<'d> {
    /// Buckets for `ranges` (disjoint, ascending).
    pub fn new(dir: &'d SpillDir, ranges: &[KeyGroupRange]) -> Result<Self, SpaError> {
        let mut buckets = Vec::with_capacity(ranges.len());
        for r in ranges {
            let path = dir.fresh();
            let f = File::create(&path).map_err(|e| io(&path, "create", e))?;
            buckets.push((*r, path, BufWriter::with_capacity(64 * 1024, f), 0));
        }
        Ok(Spiller { dir, buckets })
    }

    pub fn push(&mut self, kg: u32, tag: u32, a: &[u8], b: &[u8], c: &[u8]) -> Result<(), SpaError> {
        let i = self
            .buckets
            .partition_point(|(r, ..)| r.end_exclusive <= kg)
            .min(self.buckets.len().saturating_sub(1));
        let (r, path, w, n) = self
            .buckets
            .get_mut(i)
            .ok_or_else(|| SpaError::Snapshot("no spill bucket (a Cairn bug)".into()))?;
        if !r.contains(kg) {
            return Err(SpaError::Snapshot(format!(
                "key group {kg} is in no spill bucket (a Cairn bug)"
            )));
        }
        (|| -> std::io::Result<()> {
            w.write_all(&kg.to_le_bytes())?;
            w.write_all(&tag.to_le_bytes())?;
            put(w, a)?;
            put(w, b)?;
            put(w, c)
        })()
        .map_err(|e| io(path, "write", e))?;
        *n += 28 + (a.len() + b.len() + c.len()) as u64;
        Ok(())
    }

    /// Close the files; buckets too large for `budget` are split until they
    /// fit or hold a single key group.
    pub fn finish(self, budget: u64) -> Result<Vec<Bucket>, SpaError> {
        let dir = self.dir;
        let mut out = Vec::new();
        for (range, path, mut w, bytes) in self.buckets {
            w.flush().map_err(|e| io(&path, "write", e))?;
            drop(w);
            split_to_fit(dir, Bucket { range, path, bytes }, budget, &mut out)?;
        }
        Ok(out)
    }
}

fn split_to_fit(dir: &SpillDir, b: Bucket, budget: u64, out: &mut Vec<Bucket>) -> Result<(), SpaError> {
    if b.bytes == 0 {
        let _ = std::fs::remove_file(&b.path);
        return Ok(());
    }
    if b.bytes * EXPANSION <= budget || b.range.end_exclusive - b.range.start <= 1 {
        out.push(b);
        return Ok(());
    }
    let mid = b.range.start + (b.range.end_exclusive - b.range.start) / 2;
    let halves = [
        KeyGroupRange {
            start: b.range.start,
            end_exclusive: mid,
        },
        KeyGroupRange {
            start: mid,
            end_exclusive: b.range.end_exclusive,
        },
    ];
    let mut s = Spiller::new(dir, &halves)?;
    read(&b.path, &mut |r| s.push(r.kg, r.tag, &r.a, &r.b, &r.c))?;
    let _ = std::fs::remove_file(&b.path);
    for h in s.finish(u64::MAX)? {
        split_to_fit(dir, h, budget, out)?;
    }
    Ok(())
}

/// Read every record of a spill file, in the order written.
pub fn read(path: &Path, visit: &mut dyn FnMut(Record) -> Result<(), SpaError>) -> Result<(), SpaError> {
    let f = File::open(path).map_err(|e| io(path, "open", e))?;
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut head = [0u8; 8];
    loop {
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io(path, "read", e)),
        }
        let kg = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let tag = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let mut get = || -> Result<Vec<u8>, SpaError> {
            let mut n = [0u8; 8];
            r.read_exact(&mut n).map_err(|e| io(path, "read", e))?;
            let n = u64::from_le_bytes(n) as usize;
            let mut v = vec![0u8; n];
            r.read_exact(&mut v).map_err(|e| io(path, "read", e))?;
            Ok(v)
        };
        let (a, b, c) = (get()?, get()?, get()?);
        visit(Record { kg, tag, a, b, c })?;
    }
}
