//! A minimal Parquet writer and reader: the subset Cairn's canonical savepoint
//! format uses (spec: `docs/formats/savepoint-canonical.md`), so that pyarrow,
//! DuckDB or Spark can read savepoints without Cairn's code.
//!
//! Subset: a flat schema (no nesting); physical types INT32, INT64 and
//! BYTE_ARRAY (optionally annotated as a UTF-8 string: `STRING` logical type
//! and `UTF8` converted type); REQUIRED or OPTIONAL columns (definition levels
//! in the RLE/bit-packed hybrid encoding, bit width 1); PLAIN encoding;
//! UNCOMPRESSED; data pages v1 with a CRC-32 in every page header; any number
//! of row groups; file key-value metadata; min/max statistics for integer
//! columns. The reader accepts exactly this subset (plus missing page CRCs,
//! which other writers may omit) and answers anything else, or any damage,
//! with a [`ParquetError`] naming the file, row group and column; it never
//! panics on bad input.
//!
//! Writing: fill a [`RowGroupBuilder`] (values go straight into one PLAIN
//! buffer per column, no allocation per value), hand it to
//! [`ParquetWriter::write_row_group`], repeat, then [`ParquetWriter::finish`].

pub mod thrift;

use std::fmt;
use std::io::{self, Write};

use thrift::{ty, CompactReader, CompactWriter, Struct, Value};

/// First and last four bytes of every Parquet file.
pub const MAGIC: &[u8; 4] = b"PAR1";
/// A data page is cut once its values reach this many bytes.
pub const PAGE_TARGET_BYTES: usize = 1 << 20;
/// `created_by` written into the footer.
pub const CREATED_BY: &str = concat!("cairn version ", env!("CARGO_PKG_VERSION"));

const TYPE_INT32: i32 = 1;
const TYPE_INT64: i32 = 2;
const TYPE_BYTE_ARRAY: i32 = 6;
const REP_REQUIRED: i32 = 0;
const REP_OPTIONAL: i32 = 1;
const CONVERTED_UTF8: i32 = 0;
const ENC_PLAIN: i32 = 0;
const ENC_RLE: i32 = 3;
const CODEC_UNCOMPRESSED: i32 = 0;
const PAGE_DATA: i32 = 0;
const PAGE_INDEX: i32 = 1;
const PAGE_DICTIONARY: i32 = 2;
const PAGE_DATA_V2: i32 = 3;
/// Bit-packed runs are kept to 63 groups so their header is one byte.
const MAX_BITPACKED_GROUPS: usize = 63;
/// Runs of at least this many equal levels are written as RLE runs.
const MIN_RLE_RUN: usize = 16;

/// The logical column types of the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// INT32.
    Int32,
    /// INT64.
    Int64,
    /// BYTE_ARRAY without annotation.
    Binary,
    /// BYTE_ARRAY annotated as a UTF-8 string.
    Utf8,
}

impl ColumnType {
    fn physical(self) -> i32 {
        match self {
            ColumnType::Int32 => TYPE_INT32,
            ColumnType::Int64 => TYPE_INT64,
            ColumnType::Binary | ColumnType::Utf8 => TYPE_BYTE_ARRAY,
        }
    }

    fn is_bytes(self) -> bool {
        matches!(self, ColumnType::Binary | ColumnType::Utf8)
    }
}

/// One column of a flat schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    /// OPTIONAL (may hold nulls) rather than REQUIRED.
    pub nullable: bool,
}

impl ColumnDef {
    /// A column definition.
    pub fn new(name: impl Into<String>, ty: ColumnType, nullable: bool) -> Self {
        ColumnDef {
            name: name.into(),
            ty,
            nullable,
        }
    }
}

/// A position inside a column buffer: rows and value bytes so far.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    rows: usize,
    bytes: usize,
}

/// The buffered values of one column of a row group.
#[derive(Debug, Default)]
struct ColumnBuf {
    /// PLAIN-encoded non-null values, back to back.
    values: Vec<u8>,
    /// One definition level (0 = null, 1 = present) per row; nullable columns only.
    defs: Vec<u8>,
    rows: usize,
    non_null: usize,
    min: i64,
    max: i64,
    /// Start of the page being filled.
    page_start: Mark,
    /// Ends of the completed pages.
    cuts: Vec<Mark>,
}

impl ColumnBuf {
    fn mark(&self) -> Mark {
        Mark {
            rows: self.rows,
            bytes: self.values.len(),
        }
    }

    #[inline]
    fn after_push(&mut self) {
        if self.values.len() - self.page_start.bytes >= PAGE_TARGET_BYTES {
            let m = self.mark();
            self.cuts.push(m);
            self.page_start = m;
        }
    }

    #[inline]
    fn null(&mut self) {
        self.defs.push(0);
        self.rows += 1;
    }

    #[inline]
    fn present(&mut self, nullable: bool) {
        if nullable {
            self.defs.push(1);
        }
        self.rows += 1;
        self.non_null += 1;
    }

    #[inline]
    fn stat(&mut self, v: i64) {
        if self.non_null == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.defs.clear();
        self.rows = 0;
        self.non_null = 0;
        self.page_start = Mark::default();
        self.cuts.clear();
    }
}

/// The kind of value a push brings.
#[derive(Debug, Clone, Copy)]
enum Want {
    I32,
    I64,
    Bytes,
}

/// Buffers the rows of one row group, column by column.
///
/// Push one value into every column per row (in any column order). Misuse (a
/// value of the wrong type, a null into a REQUIRED column, a column index out
/// of range) is remembered and reported by [`ParquetWriter::write_row_group`].
#[derive(Debug)]
pub struct RowGroupBuilder {
    schema: Vec<ColumnDef>,
    cols: Vec<ColumnBuf>,
    misuse: Option<String>,
}

impl RowGroupBuilder {
    /// An empty row group for `schema`.
    pub fn new(schema: &[ColumnDef]) -> Self {
        RowGroupBuilder {
            schema: schema.to_vec(),
            cols: schema.iter().map(|_| ColumnBuf::default()).collect(),
            misuse: None,
        }
    }

    /// The schema this builder was made for.
    pub fn schema(&self) -> &[ColumnDef] {
        &self.schema
    }

    #[inline]
    fn col(&mut self, col: usize, want: Want, present: bool) -> Option<(&mut ColumnBuf, bool)> {
        let ok = match self.schema.get(col) {
            Some(def) => {
                let ok_type = match want {
                    Want::I32 => def.ty == ColumnType::Int32,
                    Want::I64 => def.ty == ColumnType::Int64,
                    Want::Bytes => def.ty.is_bytes(),
                };
                ok_type && (present || def.nullable)
            }
            None => false,
        };
        if !ok {
            self.misuse(col, want, present);
            return None;
        }
        let nullable = self.schema[col].nullable;
        Some((&mut self.cols[col], nullable))
    }

    #[cold]
    fn misuse(&mut self, col: usize, want: Want, present: bool) {
        let msg = match self.schema.get(col) {
            None => format!("column index {col} is out of range"),
            Some(def) if !present && !def.nullable => {
                format!("column '{}' is REQUIRED but a null was pushed", def.name)
            }
            Some(def) => format!("column '{}' is {:?} but a {want:?} value was pushed", def.name, def.ty),
        };
        self.misuse.get_or_insert(msg);
    }

    /// Append an INT32 value (or null) to column `col`.
    #[inline]
    pub fn push_i32(&mut self, col: usize, v: Option<i32>) {
        let Some((c, nullable)) = self.col(col, Want::I32, v.is_some()) else {
            return;
        };
        match v {
            Some(v) => {
                c.stat(i64::from(v));
                c.values.extend_from_slice(&v.to_le_bytes());
                c.present(nullable);
                c.after_push();
            }
            None => c.null(),
        }
    }

    /// Append an INT64 value (or null) to column `col`.
    #[inline]
    pub fn push_i64(&mut self, col: usize, v: Option<i64>) {
        let Some((c, nullable)) = self.col(col, Want::I64, v.is_some()) else {
            return;
        };
        match v {
            Some(v) => {
                c.stat(v);
                c.values.extend_from_slice(&v.to_le_bytes());
                c.present(nullable);
                c.after_push();
            }
            None => c.null(),
        }
    }

    /// Append a BYTE_ARRAY value (or null) to column `col`.
    #[inline]
    pub fn push_bytes(&mut self, col: usize, v: Option<&[u8]>) {
        let Some((c, nullable)) = self.col(col, Want::Bytes, v.is_some()) else {
            return;
        };
        match v {
            Some(v) => match u32::try_from(v.len()) {
                Ok(len) => {
                    c.values.extend_from_slice(&len.to_le_bytes());
                    c.values.extend_from_slice(v);
                    c.present(nullable);
                    c.after_push();
                }
                Err(_) => {
                    let msg = format!("a value of {} bytes does not fit a Parquet BYTE_ARRAY", v.len());
                    self.misuse.get_or_insert(msg);
                }
            },
            None => c.null(),
        }
    }

    /// Append a non-null BYTE_ARRAY value to column `col` by letting `write`
    /// append its bytes straight into the column buffer (no copy). When
    /// `write` fails, nothing is appended and its error is returned.
    #[inline]
    pub fn push_bytes_with<E>(
        &mut self,
        col: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some((c, nullable)) = self.col(col, Want::Bytes, true) else {
            return Ok(());
        };
        let at = c.values.len();
        c.values.extend_from_slice(&[0; 4]);
        if let Err(e) = write(&mut c.values) {
            c.values.truncate(at);
            return Err(e);
        }
        let len = c.values.len() - at - 4;
        match u32::try_from(len) {
            Ok(l) => {
                c.values[at..at + 4].copy_from_slice(&l.to_le_bytes());
                c.present(nullable);
                c.after_push();
            }
            Err(_) => {
                c.values.truncate(at);
                let msg = format!("a value of {len} bytes does not fit a Parquet BYTE_ARRAY");
                self.misuse.get_or_insert(msg);
            }
        }
        Ok(())
    }

    /// Rows buffered (of the first column).
    pub fn num_rows(&self) -> usize {
        self.cols.first().map_or(0, |c| c.rows)
    }

    /// Bytes buffered over all columns.
    pub fn buffered_bytes(&self) -> usize {
        self.cols.iter().map(|c| c.values.len() + c.defs.len()).sum()
    }

    /// Drop everything buffered (keeps the buffers' capacity).
    pub fn clear(&mut self) {
        for c in &mut self.cols {
            c.clear();
        }
        self.misuse = None;
    }
}

/// What the footer records about one column chunk.
#[derive(Debug, Clone)]
struct ChunkWritten {
    offset: u64,
    size: u64,
    num_values: u64,
    nulls: u64,
    min_max: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
struct RowGroupWritten {
    chunks: Vec<ChunkWritten>,
    num_rows: u64,
}

/// Counts bytes on their way to the inner writer.
struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

/// Writes a Parquet file to `W`, one row group at a time.
pub struct ParquetWriter<W: Write> {
    out: Counting<W>,
    schema: Vec<ColumnDef>,
    key_value_metadata: Vec<(String, String)>,
    row_groups: Vec<RowGroupWritten>,
    num_rows: u64,
    levels: Vec<u8>,
    header: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

impl<W: Write> ParquetWriter<W> {
    /// Start a file with `schema` (writes the leading magic).
    pub fn new(out: W, schema: Vec<ColumnDef>, key_value_metadata: Vec<(String, String)>) -> io::Result<Self> {
        if schema.is_empty() {
            return Err(invalid("a Parquet schema needs at least one column"));
        }
        let mut out = Counting { inner: out, pos: 0 };
        out.put(MAGIC)?;
        Ok(ParquetWriter {
            out,
            schema,
            key_value_metadata,
            row_groups: Vec::new(),
            num_rows: 0,
            levels: Vec::new(),
            header: Vec::new(),
        })
    }

    /// Add a key-value pair to the footer (e.g. an index known only at the end).
    pub fn push_key_value(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.key_value_metadata.push((key.into(), value.into()));
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.out.pos
    }

    /// Row groups written so far.
    pub fn num_row_groups(&self) -> usize {
        self.row_groups.len()
    }

    /// Write the builder's rows as one row group and reset the builder. A
    /// builder without rows writes nothing.
    pub fn write_row_group(&mut self, rg: &mut RowGroupBuilder) -> io::Result<()> {
        if rg.schema != self.schema {
            return Err(invalid("the row group was built for another schema"));
        }
        if let Some(m) = rg.misuse.take() {
            rg.clear();
            return Err(invalid(m));
        }
        let rows = rg.num_rows();
        if let Some((i, c)) = rg.cols.iter().enumerate().find(|(_, c)| c.rows != rows) {
            let msg = format!(
                "column '{}' has {} values but column '{}' has {rows}; push one value per column per row",
                self.schema[i].name, c.rows, self.schema[0].name
            );
            rg.clear();
            return Err(invalid(msg));
        }
        if rows == 0 {
            return Ok(());
        }
        let mut chunks = Vec::with_capacity(self.schema.len());
        for (def, col) in self.schema.iter().zip(rg.cols.iter_mut()) {
            let end = col.mark();
            if end.rows > col.page_start.rows {
                col.cuts.push(end);
            }
            let offset = self.out.pos;
            let mut start = Mark::default();
            for &cut in &col.cuts {
                write_page(
                    &mut self.out,
                    &mut self.levels,
                    &mut self.header,
                    def.nullable,
                    &col.defs[start.rows.min(col.defs.len())..cut.rows.min(col.defs.len())],
                    &col.values[start.bytes..cut.bytes],
                    cut.rows - start.rows,
                )?;
                start = cut;
            }
            chunks.push(ChunkWritten {
                offset,
                size: self.out.pos - offset,
                num_values: rows as u64,
                nulls: (rows - col.non_null) as u64,
                min_max: (!def.ty.is_bytes() && col.non_null > 0).then_some((col.min, col.max)),
            });
        }
        rg.clear();
        self.num_rows += rows as u64;
        self.row_groups.push(RowGroupWritten {
            chunks,
            num_rows: rows as u64,
        });
        Ok(())
    }

    /// Write the footer and the trailing magic; returns the writer (flushed)
    /// and the file's size in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let footer = encode_footer(&self.schema, &self.row_groups, self.num_rows, &self.key_value_metadata);
        let len = u32::try_from(footer.len()).map_err(|_| invalid("the Parquet footer exceeds 4 GiB"))?;
        self.out.put(&footer)?;
        self.out.put(&len.to_le_bytes())?;
        self.out.put(MAGIC)?;
        self.out.inner.flush()?;
        Ok((self.out.inner, self.out.pos))
    }
}

fn write_page<W: Write>(
    out: &mut Counting<W>,
    levels: &mut Vec<u8>,
    header: &mut Vec<u8>,
    nullable: bool,
    defs: &[u8],
    values: &[u8],
    num_values: usize,
) -> io::Result<()> {
    levels.clear();
    if nullable {
        levels.extend_from_slice(&[0; 4]);
        encode_levels(defs, levels);
        let n = (levels.len() - 4) as u32;
        levels[..4].copy_from_slice(&n.to_le_bytes());
    }
    let body_len = levels.len() + values.len();
    let body_len =
        i32::try_from(body_len).map_err(|_| invalid(format!("a data page of {body_len} bytes is too big")))?;
    let num_values = i32::try_from(num_values).map_err(|_| invalid("too many values in one data page"))?;
    let mut h = crc32fast::Hasher::new();
    h.update(levels);
    h.update(values);
    let crc = h.finalize();
    header.clear();
    let mut w = CompactWriter::new(header);
    w.i32(1, PAGE_DATA);
    w.i32(2, body_len);
    w.i32(3, body_len);
    w.i32(4, crc as i32);
    w.struct_begin(5);
    w.i32(1, num_values);
    w.i32(2, ENC_PLAIN);
    w.i32(3, ENC_RLE);
    w.i32(4, ENC_RLE);
    w.struct_end();
    w.struct_end();
    out.put(header)?;
    out.put(levels)?;
    out.put(values)
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// RLE/bit-packed hybrid encoding of 0/1 levels (bit width 1), appended to `out`.
fn encode_levels(defs: &[u8], out: &mut Vec<u8>) {
    let n = defs.len();
    let mut i = 0;
    // Bit-packed groups waiting for their run header: (header position, groups).
    let mut pending: Option<(usize, usize)> = None;
    let close = |out: &mut Vec<u8>, pending: &mut Option<(usize, usize)>| {
        if let Some((at, groups)) = pending.take() {
            out[at] = ((groups << 1) | 1) as u8;
        }
    };
    while i < n {
        let v = defs[i];
        let mut j = i + 1;
        while j < n && defs[j] == v && j - i < MIN_RLE_RUN {
            j += 1;
        }
        if j - i >= MIN_RLE_RUN {
            while j < n && defs[j] == v {
                j += 1;
            }
            close(out, &mut pending);
            put_uvarint(out, ((j - i) as u64) << 1);
            out.push(v);
            i = j;
            continue;
        }
        let (at, groups) = match pending {
            Some(p) if p.1 < MAX_BITPACKED_GROUPS => p,
            _ => {
                close(out, &mut pending);
                out.push(0);
                (out.len() - 1, 0)
            }
        };
        let end = (i + 8).min(n);
        let mut byte = 0u8;
        for (k, d) in defs[i..end].iter().enumerate() {
            byte |= (d & 1) << k;
        }
        out.push(byte);
        pending = Some((at, groups + 1));
        i = end;
    }
    close(out, &mut pending);
}

fn encode_footer(
    schema: &[ColumnDef],
    row_groups: &[RowGroupWritten],
    num_rows: u64,
    kv: &[(String, String)],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + row_groups.len() * schema.len() * 64);
    let mut w = CompactWriter::new(&mut buf);
    w.i32(1, 2);
    w.list_begin(2, ty::STRUCT, schema.len() + 1);
    w.elem_struct_begin();
    w.binary(4, b"schema");
    w.i32(5, schema.len() as i32);
    w.struct_end();
    for c in schema {
        w.elem_struct_begin();
        w.i32(1, c.ty.physical());
        w.i32(3, if c.nullable { REP_OPTIONAL } else { REP_REQUIRED });
        w.binary(4, c.name.as_bytes());
        if c.ty == ColumnType::Utf8 {
            w.i32(6, CONVERTED_UTF8);
            w.struct_begin(10);
            w.struct_begin(1);
            w.struct_end();
            w.struct_end();
        }
        w.struct_end();
    }
    w.i64(3, num_rows as i64);
    w.list_begin(4, ty::STRUCT, row_groups.len());
    for (idx, rg) in row_groups.iter().enumerate() {
        w.elem_struct_begin();
        w.list_begin(1, ty::STRUCT, rg.chunks.len());
        for (c, def) in rg.chunks.iter().zip(schema) {
            w.elem_struct_begin();
            w.i64(2, c.offset as i64);
            w.struct_begin(3);
            w.i32(1, def.ty.physical());
            w.list_begin(2, ty::I32, 2);
            w.elem_i32(ENC_PLAIN);
            w.elem_i32(ENC_RLE);
            w.list_begin(3, ty::BINARY, 1);
            w.elem_binary(def.name.as_bytes());
            w.i32(4, CODEC_UNCOMPRESSED);
            w.i64(5, c.num_values as i64);
            w.i64(6, c.size as i64);
            w.i64(7, c.size as i64);
            w.i64(9, c.offset as i64);
            w.struct_begin(12);
            w.i64(3, c.nulls as i64);
            if let Some((min, max)) = c.min_max {
                let (min, max) = match def.ty {
                    ColumnType::Int32 => ((min as i32).to_le_bytes().to_vec(), (max as i32).to_le_bytes().to_vec()),
                    _ => (min.to_le_bytes().to_vec(), max.to_le_bytes().to_vec()),
                };
                w.binary(5, &max);
                w.binary(6, &min);
            }
            w.struct_end();
            w.struct_end();
            w.struct_end();
        }
        let size: u64 = rg.chunks.iter().map(|c| c.size).sum();
        w.i64(2, size as i64);
        w.i64(3, rg.num_rows as i64);
        w.i64(5, rg.chunks.first().map_or(0, |c| c.offset) as i64);
        w.i64(6, size as i64);
        if let Ok(ordinal) = i16::try_from(idx) {
            w.i16(7, ordinal);
        }
        w.struct_end();
    }
    if !kv.is_empty() {
        w.list_begin(5, ty::STRUCT, kv.len());
        for (k, v) in kv {
            w.elem_struct_begin();
            w.binary(1, k.as_bytes());
            w.binary(2, v.as_bytes());
            w.struct_end();
        }
    }
    w.binary(6, CREATED_BY.as_bytes());
    w.list_begin(7, ty::STRUCT, schema.len());
    for _ in schema {
        w.elem_struct_begin();
        w.struct_begin(1);
        w.struct_end();
        w.struct_end();
    }
    w.struct_end();
    buf
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// A Parquet file that is damaged or outside the supported subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetError {
    /// The file, when the caller named it.
    pub file: Option<String>,
    pub row_group: Option<usize>,
    pub column: Option<String>,
    pub message: String,
}

impl ParquetError {
    fn new(message: impl Into<String>) -> Self {
        ParquetError {
            file: None,
            row_group: None,
            column: None,
            message: message.into(),
        }
    }

    /// Name the file in the error.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file.get_or_insert(file.into());
        self
    }
}

impl fmt::Display for ParquetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "Parquet file '{p}'")?,
            None => write!(f, "Parquet file")?,
        }
        if let Some(rg) = self.row_group {
            write!(f, ", row group {rg}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column '{c}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ParquetError {}

/// Where one column chunk lies.
#[derive(Debug, Clone)]
struct ChunkInfo {
    num_values: u64,
    start: u64,
    size: u64,
}

/// One row group as the footer describes it.
#[derive(Debug, Clone)]
struct RowGroupInfo {
    num_rows: u64,
    chunks: Vec<ChunkInfo>,
}

/// A parsed footer: schema, key-value metadata and row-group layout.
#[derive(Debug, Clone)]
pub struct ParquetFooter {
    schema: Vec<ColumnDef>,
    key_value_metadata: Vec<(String, String)>,
    num_rows: u64,
    row_groups: Vec<RowGroupInfo>,
    created_by: Option<String>,
}

impl ParquetFooter {
    /// From the last 8 bytes of a file of `file_len` bytes: the footer's
    /// offset and length.
    pub fn locate(file_len: u64, tail: &[u8]) -> Result<(u64, u64), ParquetError> {
        if file_len < 12 || tail.len() != 8 {
            return Err(ParquetError::new(format!(
                "{file_len} bytes is too short to be a Parquet file"
            )));
        }
        if &tail[4..] != MAGIC {
            return Err(ParquetError::new(
                "the file does not end with 'PAR1' (not Parquet, or truncated)",
            ));
        }
        let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if len + 12 > file_len {
            return Err(ParquetError::new(format!(
                "footer length {len} does not fit a file of {file_len} bytes"
            )));
        }
        Ok((file_len - 8 - len, len))
    }

    /// Parse the footer bytes of a file whose footer starts at
    /// `footer_offset` (column chunks must lie before it).
    pub fn parse(footer: &[u8], footer_offset: u64) -> Result<Self, ParquetError> {
        let mut r = CompactReader::new(footer);
        let fm = r
            .read_struct()
            .map_err(|e| ParquetError::new(format!("footer is not valid: {e}")))?;
        if r.position() != footer.len() {
            return Err(ParquetError::new(format!(
                "footer has {} trailing bytes",
                footer.len() - r.position()
            )));
        }
        parse_file_metadata(&fm, footer_offset).map_err(ParquetError::new)
    }

    /// The columns.
    pub fn schema(&self) -> &[ColumnDef] {
        &self.schema
    }

    /// The file's key-value metadata in file order.
    pub fn key_value_metadata(&self) -> &[(String, String)] {
        &self.key_value_metadata
    }

    /// The value of metadata key `key` (the first one).
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.key_value_metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Row groups.
    pub fn num_row_groups(&self) -> usize {
        self.row_groups.len()
    }

    /// Rows in the whole file.
    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// The writer's `created_by`.
    pub fn created_by(&self) -> Option<&str> {
        self.created_by.as_deref()
    }
}

fn usize_of(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} is negative ({v})"))
}

fn parse_file_metadata(fm: &Struct<'_>, footer_offset: u64) -> Result<ParquetFooter, String> {
    let version = fm.req_int(1, "FileMetaData.version")?;
    if !(1..=2).contains(&version) {
        return Err(format!("unsupported FileMetaData.version {version}"));
    }
    let schema_list = fm
        .list(2, "FileMetaData.schema")?
        .ok_or("required field FileMetaData.schema is missing")?;
    let schema = parse_schema(schema_list)?;
    let num_rows = usize_of(fm.req_int(3, "FileMetaData.num_rows")?, "FileMetaData.num_rows")?;
    let mut row_groups = Vec::new();
    for (i, v) in fm.list(4, "FileMetaData.row_groups")?.unwrap_or(&[]).iter().enumerate() {
        let Value::Struct(rg) = v else {
            return Err(format!("row group {i} is not a struct"));
        };
        row_groups.push(parse_row_group(rg, &schema, footer_offset).map_err(|e| format!("row group {i}: {e}"))?);
    }
    let total: u64 = row_groups.iter().map(|r| r.num_rows).sum();
    if total != num_rows {
        return Err(format!(
            "FileMetaData.num_rows is {num_rows} but the row groups hold {total} rows"
        ));
    }
    let mut key_value_metadata = Vec::new();
    for v in fm.list(5, "FileMetaData.key_value_metadata")?.unwrap_or(&[]) {
        let Value::Struct(kv) = v else {
            return Err("a key-value metadata entry is not a struct".into());
        };
        let k = kv.string(1, "KeyValue.key")?.ok_or("KeyValue.key is missing")?;
        let val = kv.string(2, "KeyValue.value")?.unwrap_or("");
        key_value_metadata.push((k.to_string(), val.to_string()));
    }
    let created_by = fm.string(6, "FileMetaData.created_by")?.map(str::to_string);
    if fm.get(8).is_some() || fm.get(9).is_some() {
        return Err("encrypted Parquet files are not supported".into());
    }
    Ok(ParquetFooter {
        schema,
        key_value_metadata,
        num_rows,
        row_groups,
        created_by,
    })
}

fn parse_schema(list: &[Value<'_>]) -> Result<Vec<ColumnDef>, String> {
    let Some((Value::Struct(root), leaves)) = list.split_first() else {
        return Err("the schema is empty".into());
    };
    let children = root.req_int(5, "root SchemaElement.num_children")?;
    if children != leaves.len() as i64 || root.get(1).is_some() {
        return Err(format!(
            "the schema is not flat: the root has {children} children and {} elements follow; only flat schemas are supported",
            leaves.len()
        ));
    }
    let mut out = Vec::with_capacity(leaves.len());
    for v in leaves {
        let Value::Struct(e) = v else {
            return Err("a SchemaElement is not a struct".into());
        };
        let name = e
            .string(4, "SchemaElement.name")?
            .ok_or("SchemaElement.name is missing")?
            .to_string();
        if e.int(5, "num_children")?.is_some_and(|n| n != 0) {
            return Err(format!("column '{name}' is a group; only flat schemas are supported"));
        }
        let physical = e
            .int(1, "SchemaElement.type")?
            .ok_or_else(|| format!("column '{name}' has no physical type"))?;
        let utf8 = e.int(6, "converted_type")? == Some(i64::from(CONVERTED_UTF8))
            || e.strukt(10, "logicalType")?.is_some_and(|l| l.get(1).is_some());
        let ty = match physical as i32 {
            TYPE_INT32 => ColumnType::Int32,
            TYPE_INT64 => ColumnType::Int64,
            TYPE_BYTE_ARRAY if utf8 => ColumnType::Utf8,
            TYPE_BYTE_ARRAY => ColumnType::Binary,
            other => {
                return Err(format!(
                    "column '{name}' has physical type {other}; supported are INT32, INT64 and BYTE_ARRAY"
                ))
            }
        };
        let nullable = match e.int(3, "repetition_type")? {
            Some(0) => false,
            Some(1) => true,
            Some(other) => {
                return Err(format!(
                    "column '{name}' has repetition {other}; only REQUIRED and OPTIONAL are supported"
                ))
            }
            None => return Err(format!("column '{name}' has no repetition type")),
        };
        out.push(ColumnDef { name, ty, nullable });
    }
    Ok(out)
}

fn parse_row_group(rg: &Struct<'_>, schema: &[ColumnDef], footer_offset: u64) -> Result<RowGroupInfo, String> {
    let num_rows = usize_of(rg.req_int(3, "RowGroup.num_rows")?, "RowGroup.num_rows")?;
    let cols = rg.list(1, "RowGroup.columns")?.ok_or("RowGroup.columns is missing")?;
    if cols.len() != schema.len() {
        return Err(format!("{} column chunks for {} columns", cols.len(), schema.len()));
    }
    let mut chunks = Vec::with_capacity(cols.len());
    for (v, def) in cols.iter().zip(schema) {
        let name = &def.name;
        let Value::Struct(cc) = v else {
            return Err(format!("column '{name}': the chunk is not a struct"));
        };
        if cc.get(1).is_some() {
            return Err(format!("column '{name}': chunks in other files are not supported"));
        }
        let md = cc
            .strukt(3, "ColumnChunk.meta_data")?
            .ok_or_else(|| format!("column '{name}': ColumnChunk.meta_data is missing"))?;
        let t = md.req_int(1, "ColumnMetaData.type")?;
        if t != i64::from(def.ty.physical()) {
            return Err(format!("column '{name}': chunk type {t} does not match the schema"));
        }
        let codec = md.req_int(4, "ColumnMetaData.codec")?;
        if codec != i64::from(CODEC_UNCOMPRESSED) {
            return Err(format!(
                "column '{name}': compression codec {codec} is not supported (write UNCOMPRESSED)"
            ));
        }
        if md.get(11).is_some() {
            return Err(format!(
                "column '{name}': dictionary pages are not supported (write PLAIN encoding)"
            ));
        }
        let num_values = usize_of(md.req_int(5, "ColumnMetaData.num_values")?, "num_values")?;
        if num_values != num_rows {
            return Err(format!(
                "column '{name}': {num_values} values in a row group of {num_rows} rows"
            ));
        }
        let size = usize_of(md.req_int(7, "ColumnMetaData.total_compressed_size")?, "chunk size")?;
        let start = usize_of(md.req_int(9, "ColumnMetaData.data_page_offset")?, "data_page_offset")?;
        if start < MAGIC.len() as u64 || !matches!(start.checked_add(size), Some(e) if e <= footer_offset) {
            return Err(format!(
                "column '{name}': chunk {start}+{size} lies outside the data area"
            ));
        }
        chunks.push(ChunkInfo {
            num_values,
            start,
            size,
        });
    }
    Ok(RowGroupInfo { num_rows, chunks })
}

/// A BYTE_ARRAY column read back: contiguous data, offsets and validity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BytesColumn {
    pub data: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is row `i`'s slice of `data`; `len() + 1` entries.
    pub offsets: Vec<usize>,
    pub validity: Vec<bool>,
}

impl BytesColumn {
    /// Row `i` (`None` when null or out of range).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if !*self.validity.get(i)? {
            return None;
        }
        Some(&self.data[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.validity.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.validity.is_empty()
    }
}

/// The values of one column chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnData {
    Int32(Vec<Option<i32>>),
    Int64(Vec<Option<i64>>),
    Bytes(BytesColumn),
}

impl ColumnData {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Int32(v) => v.len(),
            ColumnData::Int64(v) => v.len(),
            ColumnData::Bytes(b) => b.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed Parquet file held in memory.
#[derive(Debug, Clone)]
pub struct ParquetFile<'a> {
    bytes: &'a [u8],
    name: Option<String>,
    footer: ParquetFooter,
}

impl<'a> ParquetFile<'a> {
    /// Parse and check the framing and footer of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParquetError> {
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(ParquetError::new(
                "the file does not start with 'PAR1' (not a Parquet file)",
            ));
        }
        let (off, len) = ParquetFooter::locate(bytes.len() as u64, &bytes[bytes.len() - 8..])?;
        let footer = ParquetFooter::parse(&bytes[off as usize..(off + len) as usize], off)?;
        Ok(ParquetFile {
            bytes,
            name: None,
            footer,
        })
    }

    /// Like [`ParquetFile::parse`], naming the file in every error.
    pub fn parse_named(bytes: &'a [u8], name: &str) -> Result<Self, ParquetError> {
        let mut f = Self::parse(bytes).map_err(|e| e.in_file(name))?;
        f.name = Some(name.to_string());
        Ok(f)
    }

    /// The footer.
    pub fn footer(&self) -> &ParquetFooter {
        &self.footer
    }

    /// The columns.
    pub fn schema(&self) -> &[ColumnDef] {
        &self.footer.schema
    }

    /// The file's key-value metadata.
    pub fn key_value_metadata(&self) -> &[(String, String)] {
        &self.footer.key_value_metadata
    }

    /// Row groups.
    pub fn num_row_groups(&self) -> usize {
        self.footer.row_groups.len()
    }

    /// Rows of row group `rg` (0 when out of range).
    pub fn row_group_num_rows(&self, rg: usize) -> u64 {
        self.footer.row_groups.get(rg).map_or(0, |r| r.num_rows)
    }

    /// Index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.footer.schema.iter().position(|c| c.name == name)
    }

    /// Read and verify (page CRCs) column `col` of row group `rg`.
    pub fn read_column(&self, rg: usize, col: usize) -> Result<ColumnData, ParquetError> {
        let err = |m: String| ParquetError {
            file: self.name.clone(),
            row_group: Some(rg),
            column: self.footer.schema.get(col).map(|c| c.name.clone()),
            message: m,
        };
        let group = self.footer.row_groups.get(rg).ok_or_else(|| {
            err(format!(
                "row group {rg} does not exist ({} row groups)",
                self.num_row_groups()
            ))
        })?;
        let def = self
            .footer
            .schema
            .get(col)
            .ok_or_else(|| err(format!("column {col} does not exist")))?;
        let chunk = &group.chunks[col];
        read_chunk(self.bytes, def, chunk).map_err(err)
    }
}

enum Sink {
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    Bytes(BytesColumn),
}

fn read_chunk(bytes: &[u8], def: &ColumnDef, chunk: &ChunkInfo) -> Result<ColumnData, String> {
    let n = usize::try_from(chunk.num_values).map_err(|_| "too many values".to_string())?;
    let start = chunk.start as usize;
    let end = (chunk.start + chunk.size) as usize;
    // Keep preallocation bounded by the chunk's size whatever it claims.
    let cap = n.min((chunk.size as usize).saturating_mul(8));
    let mut sink = match def.ty {
        ColumnType::Int32 => Sink::I32(Vec::with_capacity(cap)),
        ColumnType::Int64 => Sink::I64(Vec::with_capacity(cap)),
        ColumnType::Binary | ColumnType::Utf8 => Sink::Bytes(BytesColumn {
            data: Vec::with_capacity(chunk.size as usize),
            offsets: {
                let mut o = Vec::with_capacity(cap + 1);
                o.push(0);
                o
            },
            validity: Vec::with_capacity(cap),
        }),
    };
    let mut got = 0usize;
    let mut pos = start;
    let mut levels = Vec::new();
    while got < n {
        if pos >= end {
            return Err(format!("the column chunk ends after {got} of {n} values"));
        }
        let mut r = CompactReader::new(&bytes[pos..end]);
        let h = r
            .read_struct()
            .map_err(|e| format!("page header at byte {pos} is not valid: {e}"))?;
        pos += r.position();
        let page_type = h.req_int(1, "PageHeader.type")?;
        let uncompressed = h.req_int(2, "PageHeader.uncompressed_page_size")?;
        let compressed = h.req_int(3, "PageHeader.compressed_page_size")?;
        if compressed < 0 || uncompressed != compressed {
            return Err(format!(
                "page at byte {pos} has sizes {compressed}/{uncompressed}; only uncompressed pages are supported"
            ));
        }
        let body_end = pos
            .checked_add(compressed as usize)
            .filter(|e| *e <= end)
            .ok_or_else(|| format!("page at byte {pos} ({compressed} bytes) runs past its column chunk"))?;
        let body = &bytes[pos..body_end];
        pos = body_end;
        if let Some(crc) = h.int(4, "PageHeader.crc")? {
            let actual = crc32fast::hash(body);
            if crc as i32 as u32 != actual {
                return Err(format!(
                    "page CRC mismatch at byte {}: the header says {:08x}, the page's bytes give {actual:08x} (the file is corrupt)",
                    body_end - body.len(),
                    crc as i32 as u32
                ));
            }
        }
        match page_type as i32 {
            PAGE_DATA => {}
            PAGE_INDEX => continue,
            PAGE_DICTIONARY => return Err("dictionary pages are not supported (write PLAIN encoding)".into()),
            PAGE_DATA_V2 => return Err("data pages v2 are not supported (write data page v1)".into()),
            other => return Err(format!("unknown page type {other}")),
        }
        let dph = h
            .strukt(5, "PageHeader.data_page_header")?
            .ok_or("a data page has no data_page_header")?;
        let pn = dph.req_int(1, "DataPageHeader.num_values")?;
        let pn = usize::try_from(pn).map_err(|_| format!("a data page claims {pn} values"))?;
        if pn > n - got {
            return Err(format!("a data page claims {pn} values but only {} remain", n - got));
        }
        let enc = dph.req_int(2, "DataPageHeader.encoding")?;
        if enc != i64::from(ENC_PLAIN) {
            return Err(format!("value encoding {enc} is not supported (write PLAIN)"));
        }
        let mut values = body;
        levels.clear();
        if def.nullable {
            let denc = dph.req_int(3, "DataPageHeader.definition_level_encoding")?;
            if denc != i64::from(ENC_RLE) {
                return Err(format!("definition level encoding {denc} is not supported (write RLE)"));
            }
            if body.len() < 4 {
                return Err("a data page is too short for its definition levels".into());
            }
            let llen = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
            let lend = 4usize
                .checked_add(llen)
                .filter(|e| *e <= body.len())
                .ok_or("definition levels run past the page")?;
            decode_levels(&body[4..lend], pn, &mut levels)?;
            values = &body[lend..];
        } else {
            levels.resize(pn, 1);
        }
        decode_plain(values, &levels, &mut sink)?;
        got += pn;
    }
    if pos != end {
        return Err(format!(
            "the column chunk has {} unread bytes after its last page",
            end - pos
        ));
    }
    Ok(match sink {
        Sink::I32(v) => ColumnData::Int32(v),
        Sink::I64(v) => ColumnData::Int64(v),
        Sink::Bytes(b) => ColumnData::Bytes(b),
    })
}

fn get_uvarint(src: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *src.get(*pos).ok_or("definition levels are truncated")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a definition level run header is too long".into())
}

/// Decode `n` levels of bit width 1 from the RLE/bit-packed hybrid.
fn decode_levels(src: &[u8], n: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let mut pos = 0;
    while out.len() < n {
        let header = get_uvarint(src, &mut pos)?;
        let remaining = n - out.len();
        if header & 1 == 0 {
            let run = header >> 1;
            let v = *src.get(pos).ok_or("definition levels are truncated")?;
            pos += 1;
            if v > 1 {
                return Err(format!("definition level {v} is impossible for a flat column"));
            }
            if run == 0 || run > remaining as u64 {
                return Err(format!(
                    "a definition level run of {run} does not fit the {remaining} remaining values"
                ));
            }
            out.resize(out.len() + run as usize, v);
        } else {
            let groups = header >> 1;
            let bytes = usize::try_from(groups).map_err(|_| "bit-packed run is too long")?;
            let packed = src
                .get(pos..pos.saturating_add(bytes))
                .ok_or("a bit-packed definition level run is truncated")?;
            pos += bytes;
            let vals = bytes.saturating_mul(8);
            if vals == 0 || vals >= remaining + 8 {
                return Err(format!(
                    "a bit-packed run of {vals} levels does not fit the {remaining} remaining values"
                ));
            }
            let take = vals.min(remaining);
            for i in 0..take {
                out.push((packed[i / 8] >> (i % 8)) & 1);
            }
        }
    }
    Ok(())
}

fn decode_plain(values: &[u8], levels: &[u8], sink: &mut Sink) -> Result<(), String> {
    let present = levels.iter().filter(|l| **l == 1).count();
    match sink {
        Sink::I32(out) => {
            if values.len() != present * 4 {
                return Err(format!(
                    "{} value bytes for {present} INT32 values (expected {})",
                    values.len(),
                    present * 4
                ));
            }
            let mut it = values.chunks_exact(4);
            for l in levels {
                out.push(if *l == 1 {
                    it.next().map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                } else {
                    None
                });
            }
        }
        Sink::I64(out) => {
            if values.len() != present * 8 {
                return Err(format!(
                    "{} value bytes for {present} INT64 values (expected {})",
                    values.len(),
                    present * 8
                ));
            }
            let mut it = values.chunks_exact(8);
            for l in levels {
                out.push(if *l == 1 {
                    it.next().map(|b| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        i64::from_le_bytes(a)
                    })
                } else {
                    None
                });
            }
        }
        Sink::Bytes(out) => {
            let mut pos = 0usize;
            for l in levels {
                if *l == 1 {
                    let hdr = values
                        .get(pos..pos + 4)
                        .ok_or("BYTE_ARRAY values are truncated (length)")?;
                    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
                    pos += 4;
                    let v = values
                        .get(pos..pos.saturating_add(len))
                        .ok_or_else(|| format!("a BYTE_ARRAY value of {len} bytes runs past the page"))?;
                    pos += len;
                    out.data.extend_from_slice(v);
                    out.validity.push(true);
                } else {
                    out.validity.push(false);
                }
                out.offsets.push(out.data.len());
            }
            if pos != values.len() {
                return Err(format!(
                    "{} unread value bytes at the end of a page",
                    values.len() - pos
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
