//! Parquet files on Cairn's [`Storage`]: written through a checksumming,
//! fsyncing writer; read by byte ranges (the footer, then one row group at
//! a time), so memory stays at about one row group whatever the file size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::{Buf, Bytes};
use cairn_snapshot::checksum::ChecksummingWriter;
use cairn_snapshot::{FileFormat, StateFileRef, Storage, StorageWriter};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};

/// How canonical files are written.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Page compression (readers accept snappy and zstd, and none).
    pub compression: Compression,
    /// Rows converted before they are handed to the Parquet encoder.
    pub batch_rows: usize,
    /// A row group is closed at this many rows...
    pub row_group_rows: usize,
    /// ... or when its encoded pages reach about this many bytes.
    pub row_group_bytes: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1 is valid")),
            batch_rows: 8192,
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 << 20,
        }
    }
}

impl WriteOptions {
    /// Parse a codec name: `zstd`, `zstd(<level>)`, `snappy` or `none`.
    pub fn with_compression_name(mut self, name: &str) -> Result<Self, String> {
        let lower = name.trim().to_ascii_lowercase();
        self.compression = match lower.as_str() {
            "none" | "uncompressed" => Compression::UNCOMPRESSED,
            "snappy" => Compression::SNAPPY,
            "zstd" => Compression::ZSTD(ZstdLevel::try_new(1).expect("valid")),
            other => match other.strip_prefix("zstd(").and_then(|r| r.strip_suffix(')')) {
                Some(level) => {
                    let l: i32 = level
                        .parse()
                        .map_err(|_| format!("compression '{name}': the zstd level must be an integer"))?;
                    Compression::ZSTD(ZstdLevel::try_new(l).map_err(|e| format!("compression '{name}': {e}"))?)
                }
                None => {
                    return Err(format!(
                        "compression '{name}' is not known: use zstd, zstd(<1-22>), snappy or none"
                    ))
                }
            },
        };
        Ok(self)
    }

    /// The writer properties; `plain` columns get no dictionary (see
    /// [`FileWriter::without_dictionary`]).
    fn properties(&self, plain: &[&str], schema: &arrow_schema::Schema) -> WriterProperties {
        use crate::keyed::{
            COL_KEY, COL_KEY_BYTES, COL_KEY_GROUP, COL_NAMESPACE, COL_STATE, COL_USER_KEY_JSON, COL_VALUE_JSON,
        };
        use arrow_schema::DataType;
        use parquet::basic::Encoding;
        use parquet::file::properties::EnabledStatistics;
        use parquet::schema::types::ColumnPath;
        let mut b = WriterProperties::builder()
            // Statistics per column chunk (row group) are what readers prune
            // with (key groups, typed keys and values); per-page statistics
            // on every column cost more than they save.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            // A dictionary pays for columns of few distinct values (counts,
            // names, namespaces); one of many distinct values (sums, ids)
            // gives up on it at this size and continues without it, instead of
            // interning a whole row group's values first.
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("cairn version {}", env!("CARGO_PKG_VERSION")));
        // Keys are unique within a file: a dictionary only costs time
        // before the writer falls back to plain encoding.
        for c in [COL_KEY_BYTES, COL_KEY] {
            b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
        }
        // Nobody prunes on the bytes of keys, namespaces, the state name or
        // JSON text; their min and max are comparisons of every value.
        for c in [
            COL_KEY_BYTES,
            COL_NAMESPACE,
            COL_STATE,
            COL_VALUE_JSON,
            COL_USER_KEY_JSON,
        ] {
            b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
        }
        for c in plain {
            b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
        }
        // Delta encodings where they beat plain bytes through zstd: the
        // lengths of namespaces (all zero without windows: next to nothing,
        // where plain is 4 bytes a row), and integer keys and values (ids,
        // sums, timestamps: bit-packed differences, where plain is 8 bytes a
        // row of which zstd keeps about half; the fallback of columns with a
        // dictionary once they give it up). The key group stays a
        // dictionary (runs of one value). Measured: a sixth less CPU and an
        // eighth smaller files for integer keys and values, no change in
        // time for string keys. Every Parquet reader (pyarrow, DuckDB,
        // Spark) reads both.
        for f in schema.fields() {
            let name = f.name().as_str();
            let encoding = match f.data_type() {
                DataType::Binary if name == COL_NAMESPACE => Encoding::DELTA_LENGTH_BYTE_ARRAY,
                t if t.is_integer() && name != COL_KEY_GROUP => Encoding::DELTA_BINARY_PACKED,
                _ => continue,
            };
            b = b.set_column_encoding(ColumnPath::from(name), encoding);
        }
        b.build()
    }
}

/// The dictionary page size at which a column gives its dictionary up and
/// continues without it (8,192 distinct `u64` values).
const DICTIONARY_PAGE_BYTES: usize = 64 << 10;

type Sink = ChecksummingWriter<Box<dyn StorageWriter>>;

/// A Parquet file being written to storage. The Parquet writer is made at
/// the first batch, so that a caller can tune a column from what the file
/// holds ([`FileWriter::without_dictionary`]).
pub struct FileWriter {
    path: PathBuf,
    rel: String,
    state: WriterState,
    row_group_bytes: usize,
    rows: u64,
}

enum WriterState {
    /// Created on storage; nothing written yet.
    Pending {
        sink: Sink,
        schema: SchemaRef,
        options: WriteOptions,
        plain: Vec<&'static str>,
    },
    Writing(Box<ArrowWriter<Sink>>),
    /// Only while switching from `Pending` to `Writing`, or after an error.
    Gone,
}

impl FileWriter {
    /// Create `dir/rel` with `schema`.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        rel: &str,
        schema: SchemaRef,
        options: &WriteOptions,
    ) -> Result<Self, String> {
        let path = dir.join(rel);
        let w = storage.create(&path).map_err(|e| e.to_string())?;
        Ok(FileWriter {
            path,
            rel: rel.to_string(),
            state: WriterState::Pending {
                sink: ChecksummingWriter::new(w),
                schema,
                options: options.clone(),
                plain: Vec::new(),
            },
            row_group_bytes: options.row_group_bytes,
            rows: 0,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `column` without a dictionary. Only before the first batch
    /// (afterwards the column's encoding is set and this does nothing).
    pub fn without_dictionary(&mut self, column: &'static str) {
        if let WriterState::Pending { plain, .. } = &mut self.state {
            plain.push(column);
        }
    }

    /// Whether no batch was written yet.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, WriterState::Pending { .. })
    }

    /// The Parquet writer, made on first use.
    fn writer(&mut self) -> Result<&mut ArrowWriter<Sink>, String> {
        if let WriterState::Pending { .. } = self.state {
            let WriterState::Pending {
                sink,
                schema,
                options,
                plain,
            } = std::mem::replace(&mut self.state, WriterState::Gone)
            else {
                unreachable!("matched above")
            };
            let properties = options.properties(&plain, &schema);
            let writer = ArrowWriter::try_new(sink, schema, Some(properties))
                .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
            self.state = WriterState::Writing(Box::new(writer));
        }
        match &mut self.state {
            WriterState::Writing(w) => Ok(w),
            _ => Err(format!(
                "writing {}: the writer failed before (a Cairn bug to write on)",
                self.path.display()
            )),
        }
    }

    /// Append a batch; closes the row group once it is large enough.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.rows += batch.num_rows() as u64;
        let row_group_bytes = self.row_group_bytes;
        let named = |e: parquet::errors::ParquetError, path: &Path| format!("writing {}: {e}", path.display());
        let path = self.path.clone();
        let writer = self.writer()?;
        writer.write(batch).map_err(|e| named(e, &path))?;
        if writer.in_progress_size() >= row_group_bytes {
            writer.flush().map_err(|e| named(e, &path))?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Write the footer with `kv` metadata, make the file durable (fsync)
    /// and describe it for `_metadata`.
    pub fn finish(mut self, kv: Vec<(String, String)>) -> Result<StateFileRef, String> {
        // A file without rows still gets its schema.
        self.writer()?;
        let WriterState::Writing(mut writer) = std::mem::replace(&mut self.state, WriterState::Gone) else {
            unreachable!("made above")
        };
        let named = |e: parquet::errors::ParquetError| format!("writing {}: {e}", self.path.display());
        for (k, v) in kv {
            writer.append_key_value_metadata(KeyValue::new(k, v));
        }
        // Flushes the last row group and writes the footer.
        let sink = writer.into_inner().map_err(named)?;
        let (mut inner, size, crc32) = sink.into_parts();
        inner
            .flush()
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        let durable = inner.finish().map_err(|e| e.to_string())?;
        if durable != size {
            return Err(format!(
                "{}: {durable} bytes are on storage but {size} were written",
                self.path.display()
            ));
        }
        Ok(StateFileRef {
            path: self.rel,
            size,
            crc32,
            sections: Vec::new(),
            format: FileFormat::ParquetV2,
        })
    }
}

/// Byte ranges of a file held in memory, served to the Parquet reader.
#[derive(Clone)]
struct Sparse {
    len: u64,
    ranges: Arc<Vec<(u64, Bytes)>>,
}

impl Sparse {
    fn find(&self, start: u64, len: u64) -> parquet::errors::Result<Bytes> {
        for (off, b) in self.ranges.iter() {
            if start >= *off && start + len <= off + b.len() as u64 {
                let s = (start - off) as usize;
                return Ok(b.slice(s..s + len as usize));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}..{} were not loaded (a Cairn bug)",
            start + len
        )))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        for (off, b) in self.ranges.iter() {
            if start >= *off && start <= off + b.len() as u64 {
                return Ok(b.slice((start - off) as usize..).reader());
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "offset {start} was not loaded (a Cairn bug)"
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.find(start, length as u64)
    }
}

/// A Parquet file on storage whose footer was read.
pub struct ParquetSource {
    pub path: PathBuf,
    pub size: u64,
    pub metadata: Arc<ParquetMetaData>,
    arrow: ArrowReaderMetadata,
    footer_start: u64,
    footer: Bytes,
}

impl ParquetSource {
    /// Read and parse the footer of `path` (`size` bytes). Errors say what
    /// is wrong with the file.
    pub fn open(storage: &dyn Storage, path: &Path, size: u64) -> Result<Self, String> {
        if size < 12 {
            return Err(format!("{size} bytes is too short to be a Parquet file"));
        }
        let tail = storage.read_range(path, size - 8, 8).map_err(|e| e.to_string())?;
        match &tail[4..8] {
            b"PAR1" => {}
            b"PARE" => return Err("the file is an encrypted Parquet file, which Cairn does not read".into()),
            _ => return Err("the file does not end with the Parquet magic 'PAR1' (not Parquet, or truncated)".into()),
        }
        let meta_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
        if meta_len + 12 > size {
            return Err(format!(
                "the footer claims {meta_len} bytes of metadata in a file of {size} bytes (truncated?)"
            ));
        }
        let footer_start = size - 8 - meta_len;
        let footer = Bytes::from(
            storage
                .read_range(path, footer_start, meta_len)
                .map_err(|e| e.to_string())?,
        );
        let metadata = Arc::new(
            contained("the footer", || ParquetMetaDataReader::decode_metadata(&footer))?
                .map_err(|e| format!("the footer is not valid: {e}"))?,
        );
        // Column chunks must lie inside the data part of the file (the
        // parquet crate asserts, i.e. panics, on negative offsets).
        for (rg, g) in metadata.row_groups().iter().enumerate() {
            for c in g.columns() {
                let start = c.dictionary_page_offset().unwrap_or_else(|| c.data_page_offset());
                let len = c.compressed_size();
                if start < 0 || len < 0 || (start as u64).saturating_add(len as u64) > footer_start {
                    return Err(format!(
                        "row group {rg}: column '{}' claims bytes {start}..+{len}, outside the file's data (corrupt file)",
                        c.column_path()
                    ));
                }
            }
        }
        let arrow = contained("the schema", || {
            ArrowReaderMetadata::try_new(metadata.clone(), ArrowReaderOptions::new())
        })?
        .map_err(|e| format!("the schema cannot be read as Arrow: {e}"))?;
        Ok(ParquetSource {
            path: path.to_path_buf(),
            size,
            metadata,
            arrow,
            footer_start,
            footer,
        })
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        self.arrow.schema()
    }

    /// A key-value metadata entry.
    pub fn kv(&self, key: &str) -> Option<&str> {
        self.metadata
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_deref())
    }

    /// The byte range of a row group's column chunks.
    fn row_group_range(&self, rg: usize) -> (u64, u64) {
        let g = self.metadata.row_group(rg);
        let mut start = u64::MAX;
        let mut end = 0;
        for c in g.columns() {
            let (s, l) = c.byte_range();
            start = start.min(s);
            end = end.max(s + l);
        }
        if start == u64::MAX {
            (0, 0)
        } else {
            (start, end)
        }
    }

    /// Decode the row groups `selected` (ascending), calling `visit` with
    /// each batch and its row group. With `verify` (the whole file's
    /// recorded CRC-32), every byte of the file is read in order and checked
    /// at the end, so a file that changed since it was verified is caught.
    pub fn read(
        &self,
        storage: &dyn Storage,
        selected: &[usize],
        batch_rows: usize,
        verify: Option<u32>,
        visit: &mut dyn FnMut(usize, RecordBatch) -> Result<(), String>,
    ) -> Result<(), String> {
        self.read_columns(storage, selected, None, batch_rows, verify, visit)
    }

    /// [`Self::read`] decoding only the top-level columns `columns`
    /// (indices into [`Self::schema`]; all with `None`). The bytes of the
    /// other columns are still read, and verified with `verify`.
    pub fn read_columns(
        &self,
        storage: &dyn Storage,
        selected: &[usize],
        columns: Option<&[usize]>,
        batch_rows: usize,
        verify: Option<u32>,
        visit: &mut dyn FnMut(usize, RecordBatch) -> Result<(), String>,
    ) -> Result<(), String> {
        let projection =
            columns.map(|c| ProjectionMask::roots(self.metadata.file_metadata().schema_descr(), c.iter().copied()));
        let mut verifier = verify.map(|expected| Verifier {
            hasher: crc32fast::Hasher::new(),
            hashed: 0,
            expected,
        });
        for &rg in selected {
            let (start, end) = self.row_group_range(rg);
            if end > self.footer_start {
                return Err(format!("row group {rg} overlaps the footer (corrupt file)"));
            }
            if let Some(v) = &mut verifier {
                v.advance(storage, &self.path, start)?;
            }
            let data = Bytes::from(
                storage
                    .read_range(&self.path, start, end - start)
                    .map_err(|e| e.to_string())?,
            );
            if let Some(v) = &mut verifier {
                if v.hashed == start {
                    v.hasher.update(&data);
                    v.hashed = end;
                }
            }
            let sparse = Sparse {
                len: self.size,
                ranges: Arc::new(vec![(start, data), (self.footer_start, self.footer.clone())]),
            };
            let mut reader = contained(&format!("row group {rg}"), || {
                let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(sparse, self.arrow.clone())
                    .with_row_groups(vec![rg])
                    .with_batch_size(batch_rows.max(1));
                match &projection {
                    Some(p) => builder.with_projection(p.clone()).build(),
                    None => builder.build(),
                }
            })?
            .map_err(|e| format!("row group {rg}: {e}"))?;
            // A damaged page can end a column early without an error from
            // the decoder: every row the footer counts must arrive.
            let expected_rows = self.metadata.row_group(rg).num_rows().max(0) as u64;
            let mut rows = 0u64;
            while let Some(batch) = contained(&format!("row group {rg}"), || reader.next())? {
                let batch = batch.map_err(|e| format!("row group {rg}: {e}"))?;
                rows += batch.num_rows() as u64;
                visit(rg, batch)?;
            }
            if rows != expected_rows {
                return Err(format!(
                    "row group {rg} holds {rows} rows where the footer records {expected_rows} (corrupt file)"
                ));
            }
        }
        if let Some(mut v) = verifier {
            v.advance(storage, &self.path, self.size)?;
            let actual = v.hasher.finalize();
            if actual != v.expected {
                return Err(format!(
                    "the file changed after it was verified: CRC-32 {actual:08x}, _metadata records {:08x}",
                    v.expected
                ));
            }
        }
        Ok(())
    }
}

/// Run a decoding step of the parquet crate, turning a panic on corrupt
/// input (it asserts in places) into an error naming `what`: a damaged file
/// must give an error, never take the process down.
fn contained<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} cannot be decoded (corrupt file): {msg}")
    })
}

/// Hashes a file in order while it is read.
struct Verifier {
    hasher: crc32fast::Hasher,
    hashed: u64,
    expected: u32,
}

impl Verifier {
    /// Hash the bytes up to `upto` not hashed yet.
    fn advance(&mut self, storage: &dyn Storage, path: &Path, upto: u64) -> Result<(), String> {
        while self.hashed < upto {
            let len = (upto - self.hashed).min(8 << 20);
            self.hasher
                .update(&storage.read_range(path, self.hashed, len).map_err(|e| e.to_string())?);
            self.hashed += len;
        }
        Ok(())
    }
}
