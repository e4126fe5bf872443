//! The state-file container, format version 1 (spec: `docs/formats/state-file.md`).
//!
//! ```text
//! header   : magic "CAIRN-SF" (8) | version u16 LE | 6 reserved zero bytes
//! sections : caller bytes, back to back
//! index    : count u32 | per section: name_len u16, name, has_kg u8, kg u32,
//!            offset u64, len u64, crc32 u32
//! trailer  : index_offset u64 | crc32 u32 of every byte before it | "SFND"
//! ```
//! All integers little-endian.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::{crc32, ChecksummingWriter};
use crate::error::{Result, SnapshotError};
use crate::storage::{Storage, StorageWriter};

/// Magic bytes at the start of every state file.
pub const STATE_FILE_MAGIC: [u8; 8] = *b"CAIRN-SF";
/// Magic bytes at the very end of every state file.
pub const STATE_FILE_END_MAGIC: [u8; 4] = *b"SFND";
/// The state-file format version this build writes (and the newest it reads).
pub const STATE_FILE_VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: u64 = 16;
/// Trailer length in bytes.
pub const TRAILER_LEN: u64 = 16;

/// Where one section lives inside a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    /// Section name chosen by the writer (for keyed state: the state name).
    pub name: String,
    /// Key group of the section's entries, if the section is keyed.
    pub key_group: Option<u32>,
    /// Absolute byte offset of the section's first byte in the file.
    pub offset: u64,
    /// Section length in bytes.
    pub len: u64,
    /// CRC-32 of the section's bytes, so a section read alone can be verified.
    pub crc32: u32,
}

/// What a finished state file contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFileInfo {
    /// Total size in bytes.
    pub size: u64,
    /// CRC-32 of the whole file (every byte).
    pub crc32: u32,
    /// Sections in file order.
    pub sections: Vec<SectionInfo>,
}

impl StateFileInfo {
    /// A metadata reference to this file at `path` (relative to the `_metadata` directory).
    pub fn to_file_ref(&self, path: impl Into<String>) -> crate::metadata::StateFileRef {
        crate::metadata::StateFileRef {
            path: path.into(),
            size: self.size,
            crc32: self.crc32,
            sections: self.sections.clone(),
            format: crate::metadata::FileFormat::CairnStateV1,
        }
    }
}

struct OpenSection {
    name: String,
    key_group: Option<u32>,
    offset: u64,
    hasher: crc32fast::Hasher,
}

/// Writes a state file. Call [`StateFileWriter::begin_section`], write the
/// section's bytes through [`Write`], repeat, then [`StateFileWriter::finish`].
pub struct StateFileWriter<W: Write> {
    /// Where the file goes, for error messages (unknown for plain writers).
    path: PathBuf,
    out: ChecksummingWriter<W>,
    sections: Vec<SectionInfo>,
    seen: BTreeSet<(String, Option<u32>)>,
    current: Option<OpenSection>,
}

impl<W: Write> StateFileWriter<W> {
    /// Starts a state file on `writer` (writes the header). Errors name the
    /// file only as "a state file"; [`StateFileWriter::create`] knows its path.
    pub fn new(writer: W) -> Result<Self> {
        Self::with_path(writer, PathBuf::from("a state file being written"))
    }

    /// Starts a state file on `writer` that goes to `path` (named in errors).
    pub fn with_path(writer: W, path: PathBuf) -> Result<Self> {
        let mut out = ChecksummingWriter::new(writer);
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&STATE_FILE_MAGIC);
        header[8..10].copy_from_slice(&STATE_FILE_VERSION.to_le_bytes());
        out.write_all(&header)
            .map_err(|e| SnapshotError::io("write", path.clone(), e))?;
        Ok(StateFileWriter {
            path,
            out,
            sections: Vec::new(),
            seen: BTreeSet::new(),
            current: None,
        })
    }

    /// Writes bytes of the open section; a failure names the file.
    pub fn write_section_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
            .map_err(|e| SnapshotError::io("write", self.path.clone(), e))
    }

    /// Closes the current section (if any) and opens a new one. A (name,
    /// key_group) pair may appear once per file.
    pub fn begin_section(&mut self, name: &str, key_group: Option<u32>) -> Result<()> {
        if name.is_empty() || name.len() > u16::MAX as usize {
            return Err(SnapshotError::protocol(
                "state file section",
                format!(
                    "section name must be 1..=65535 bytes of UTF-8, got {} bytes",
                    name.len()
                ),
            ));
        }
        if !self.seen.insert((name.to_string(), key_group)) {
            return Err(SnapshotError::protocol(
                "state file section",
                format!("section '{name}' (key group {key_group:?}) was already written to this file; write each (name, key group) once"),
            ));
        }
        self.close_section();
        self.current = Some(OpenSection {
            name: name.to_string(),
            key_group,
            offset: self.out.bytes_written(),
            hasher: crc32fast::Hasher::new(),
        });
        Ok(())
    }

    fn close_section(&mut self) {
        if let Some(s) = self.current.take() {
            self.sections.push(SectionInfo {
                name: s.name,
                key_group: s.key_group,
                offset: s.offset,
                len: self.out.bytes_written() - s.offset,
                crc32: s.hasher.finalize(),
            });
        }
    }

    /// Writes the index and trailer. Returns the inner writer (not yet made
    /// durable: call `finish` on a [`StorageWriter`]) and the file's description.
    pub fn finish(mut self) -> Result<(W, StateFileInfo)> {
        self.close_section();
        let index_offset = self.out.bytes_written();
        let mut index = Vec::new();
        index.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for s in &self.sections {
            index.extend_from_slice(&(s.name.len() as u16).to_le_bytes());
            index.extend_from_slice(s.name.as_bytes());
            index.push(u8::from(s.key_group.is_some()));
            index.extend_from_slice(&s.key_group.unwrap_or(0).to_le_bytes());
            index.extend_from_slice(&s.offset.to_le_bytes());
            index.extend_from_slice(&s.len.to_le_bytes());
            index.extend_from_slice(&s.crc32.to_le_bytes());
        }
        index.extend_from_slice(&index_offset.to_le_bytes());
        let path = &self.path;
        let io_err = |e| SnapshotError::io("write", path.clone(), e);
        self.out.write_all(&index).map_err(io_err)?;
        let body_crc = self.out.crc32();
        self.out.write_all(&body_crc.to_le_bytes()).map_err(io_err)?;
        self.out.write_all(&STATE_FILE_END_MAGIC).map_err(io_err)?;
        self.out.flush().map_err(io_err)?;
        let (w, size, crc) = self.out.into_parts();
        Ok((
            w,
            StateFileInfo {
                size,
                crc32: crc,
                sections: self.sections,
            },
        ))
    }
}

impl StateFileWriter<Box<dyn StorageWriter>> {
    /// Creates `path` through `storage` and starts a state file in it.
    pub fn create(storage: &dyn Storage, path: &Path) -> Result<Self> {
        StateFileWriter::with_path(storage.create(path)?, path.to_path_buf())
    }

    /// Finishes the file and makes it durable (fsync). Tasks must call this
    /// before acknowledging a checkpoint.
    pub fn finish_durable(self) -> Result<StateFileInfo> {
        let (w, info) = self.finish()?;
        let size = w.finish()?;
        if size != info.size {
            return Err(SnapshotError::corrupt(
                PathBuf::from("state file"),
                format!(
                    "{size} bytes are on storage after writing {}; the file changed while it was written",
                    info.size
                ),
            ));
        }
        Ok(info)
    }
}

impl<W: Write> Write for StateFileWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(cur) = self.current.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no section is open: call begin_section before writing state bytes",
            ));
        };
        let n = self.out.write(buf)?;
        cur.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A verified state file held in memory.
#[derive(Debug, Clone)]
pub struct StateFileReader {
    path: PathBuf,
    bytes: Vec<u8>,
    sections: Vec<SectionInfo>,
    version: u16,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(SnapshotError::corrupt(
                self.path,
                "state-file section index is truncated",
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

impl StateFileReader {
    /// Reads and verifies a state file (magic, version, CRC, index).
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<Self> {
        let bytes = storage.read(path)?;
        Self::from_bytes(path, bytes)
    }

    /// Verifies `bytes` as a state file; `path` is used in error messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let len = bytes.len() as u64;
        if len < HEADER_LEN + 4 + TRAILER_LEN {
            return Err(SnapshotError::corrupt(
                path,
                format!("{len} bytes is too short to be a Cairn state file"),
            ));
        }
        // Integrity before interpretation: a damaged version field must read as
        // damage, not as a version from the future.
        let n = bytes.len();
        let has_magic = bytes[..8] == STATE_FILE_MAGIC;
        let has_end = bytes[n - 4..] == STATE_FILE_END_MAGIC;
        if !has_magic && !has_end {
            return Err(SnapshotError::corrupt(
                path,
                "not a Cairn state file (magic bytes 'CAIRN-SF' missing)",
            ));
        }
        if !has_end {
            return Err(SnapshotError::corrupt(
                path,
                "end marker 'SFND' missing (file truncated?)",
            ));
        }
        let recorded = le_u32(&bytes[n - 8..n - 4]);
        let actual = crc32(&bytes[..n - 8]);
        if recorded != actual {
            return Err(SnapshotError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: recorded,
                actual,
            });
        }
        if !has_magic {
            return Err(SnapshotError::corrupt(
                path,
                "not a Cairn state file (magic bytes 'CAIRN-SF' missing)",
            ));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version == 0 || version > STATE_FILE_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                path: path.to_path_buf(),
                format: "state-file",
                found: u32::from(version),
                supported: u32::from(STATE_FILE_VERSION),
            });
        }
        if bytes[10..16].iter().any(|b| *b != 0) {
            return Err(SnapshotError::corrupt(path, "reserved header bytes are not zero"));
        }
        let index_offset = le_u64(&bytes[n - 16..n - 8]);
        let index_end = (n - 16) as u64;
        if index_offset < HEADER_LEN || index_offset > index_end {
            return Err(SnapshotError::corrupt(
                path,
                format!("section index offset {index_offset} is out of range"),
            ));
        }
        let mut cur = Cursor {
            path,
            buf: &bytes[index_offset as usize..n - 16],
            pos: 0,
        };
        let count = cur.u32()?;
        let mut sections = Vec::new();
        let mut expected_offset = HEADER_LEN;
        for _ in 0..count {
            let name_len = cur.u16()? as usize;
            let name = std::str::from_utf8(cur.take(name_len)?)
                .map_err(|_| SnapshotError::corrupt(path, "section name is not UTF-8"))?
                .to_string();
            let has_kg = cur.u8()?;
            let kg = cur.u32()?;
            let offset = cur.u64()?;
            let slen = cur.u64()?;
            let crc = cur.u32()?;
            if has_kg > 1 {
                return Err(SnapshotError::corrupt(path, "bad key-group flag in index"));
            }
            if offset != expected_offset || !matches!(offset.checked_add(slen), Some(e) if e <= index_offset) {
                return Err(SnapshotError::corrupt(
                    path,
                    format!("section '{name}' has an impossible position {offset}+{slen}"),
                ));
            }
            expected_offset = offset + slen;
            sections.push(SectionInfo {
                name,
                key_group: (has_kg == 1).then_some(kg),
                offset,
                len: slen,
                crc32: crc,
            });
        }
        if cur.pos != cur.buf.len() || expected_offset != index_offset {
            return Err(SnapshotError::corrupt(
                path,
                "section index does not account for the file's bytes",
            ));
        }
        Ok(StateFileReader {
            path: path.to_path_buf(),
            bytes,
            sections,
            version,
        })
    }

    /// Format version of the file.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The file's path (as opened).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sections in file order.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The bytes of section (name, key_group), or `None` if the file has no such section.
    pub fn section(&self, name: &str, key_group: Option<u32>) -> Option<&[u8]> {
        self.sections
            .iter()
            .find(|s| s.name == name && s.key_group == key_group)
            .map(|s| &self.bytes[s.offset as usize..(s.offset + s.len) as usize])
    }

    /// Sections that belong to key groups in `range` (inclusive start, exclusive end).
    pub fn sections_in_key_groups(&self, range: std::ops::Range<u32>) -> impl Iterator<Item = &SectionInfo> {
        self.sections
            .iter()
            .filter(move |s| s.key_group.is_some_and(|kg| range.contains(&kg)))
    }
}

/// Reads one section of a state file by byte range (without reading the rest
/// of the file) and verifies it against the section's recorded CRC. Use with
/// the [`SectionInfo`]s recorded in `_metadata` to restore only owned key groups.
pub fn read_section(storage: &dyn Storage, path: &Path, section: &SectionInfo) -> Result<Vec<u8>> {
    let bytes = storage.read_range(path, section.offset, section.len)?;
    let actual = crc32(&bytes);
    if actual != section.crc32 {
        return Err(SnapshotError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: section.crc32,
            actual,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, StateFileInfo) {
        let mut w = StateFileWriter::new(Vec::new()).unwrap();
        w.begin_section("counts", Some(3)).unwrap();
        w.write_all(b"hello").unwrap();
        w.begin_section("counts", Some(4)).unwrap();
        w.begin_section("op-list", None).unwrap();
        w.write_all(b"xyz").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn roundtrip() {
        let (bytes, info) = sample();
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(info.crc32, crc32(&bytes));
        assert_eq!(info.sections.len(), 3);
        let r = StateFileReader::from_bytes(Path::new("f"), bytes).unwrap();
        assert_eq!(r.section("counts", Some(3)), Some(&b"hello"[..]));
        assert_eq!(r.section("counts", Some(4)), Some(&b""[..]));
        assert_eq!(r.section("op-list", None), Some(&b"xyz"[..]));
        assert_eq!(r.section("counts", None), None);
        assert_eq!(r.sections(), &info.sections[..]);
        assert_eq!(r.sections_in_key_groups(0..4).count(), 1);
    }

    #[test]
    fn write_without_section_fails() {
        let mut w = StateFileWriter::new(Vec::new()).unwrap();
        assert!(w.write_all(b"x").is_err());
    }

    #[test]
    fn duplicate_section_rejected() {
        let mut w = StateFileWriter::new(Vec::new()).unwrap();
        w.begin_section("a", Some(1)).unwrap();
        assert!(w.begin_section("a", Some(1)).is_err());
        assert!(w.begin_section("", None).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (bytes, _) = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                StateFileReader::from_bytes(Path::new("f"), b).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let (bytes, _) = sample();
        for n in 0..bytes.len() {
            assert!(StateFileReader::from_bytes(Path::new("f"), bytes[..n].to_vec()).is_err());
        }
    }

    #[test]
    fn newer_version_is_refused_by_name() {
        // A file from a future release: intact checksum, version 2.
        let (mut bytes, _) = sample();
        bytes[8] = 2;
        let n = bytes.len();
        let crc = crc32(&bytes[..n - 8]);
        bytes[n - 8..n - 4].copy_from_slice(&crc.to_le_bytes());
        let e = StateFileReader::from_bytes(Path::new("dir/x.state"), bytes).unwrap_err();
        assert!(matches!(e, SnapshotError::UnsupportedVersion { found: 2, .. }));
        assert!(e.to_string().contains("dir/x.state"));
    }
}
