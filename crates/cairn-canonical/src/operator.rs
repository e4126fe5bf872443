//! Operator-state files of canonical format v2: list, union list and
//! broadcast state of one operator subtask, one row per element or entry.
//! Operator state has no registered types (it is named when it is used), so
//! its keys and values are JSON text, as in format v1.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cairn_snapshot::{StateFileRef, Storage};
use cairn_state::canonical::{mode_from_name, mode_name, operator_entries_from_rows, operator_rows, OperatorRow};
use cairn_state::operator_state::OperatorStateEntry;

use crate::decode::Decoder;
use crate::io::{FileWriter, ParquetSource, WriteOptions};
use crate::{kv_base, CONTENT_OPERATOR};

pub const COL_STATE: &str = "state";
pub const COL_MODE: &str = "mode";
pub const COL_POSITION: &str = "position";
pub const COL_KEY_JSON: &str = "key_json";
pub const COL_VALUE_JSON: &str = "value_json";

/// Write `entries` to `dir/rel`.
pub fn write_operator_file(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    entries: &[OperatorStateEntry],
    options: &WriteOptions,
) -> Result<StateFileRef, String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(COL_STATE, DataType::Utf8, false),
        Field::new(COL_MODE, DataType::Utf8, false),
        Field::new(COL_POSITION, DataType::Int32, true),
        Field::new(COL_KEY_JSON, DataType::Utf8, true),
        Field::new(COL_VALUE_JSON, DataType::Utf8, true),
    ]));
    let mut file = FileWriter::create(storage, dir, rel, schema.clone(), options)?;
    let (mut st, mut mo, mut po, mut ke, mut va) = (
        StringBuilder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut n = 0usize;
    let flush = |st: &mut StringBuilder,
                 mo: &mut StringBuilder,
                 po: &mut Int32Builder,
                 ke: &mut StringBuilder,
                 va: &mut StringBuilder,
                 file: &mut FileWriter|
     -> Result<(), String> {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(st.finish()),
            Arc::new(mo.finish()),
            Arc::new(po.finish()),
            Arc::new(ke.finish()),
            Arc::new(va.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?;
        file.write(&batch)
    };
    let text = |b: Option<&[u8]>| -> Result<Option<String>, String> {
        b.map(|b| String::from_utf8(b.to_vec()).map_err(|_| "JSON is not UTF-8".to_string()))
            .transpose()
    };
    let mut failure = None;
    operator_rows(entries, &mut |r| {
        st.append_value(r.state);
        mo.append_value(mode_name(r.mode));
        po.append_option(r.position);
        ke.append_option(text(r.key_json)?);
        va.append_option(text(r.value_json)?);
        n += 1;
        if n >= options.batch_rows.max(1) {
            n = 0;
            if let Err(e) = flush(&mut st, &mut mo, &mut po, &mut ke, &mut va, &mut file) {
                failure = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    })
    .map_err(|e| failure.take().unwrap_or(e))?;
    flush(&mut st, &mut mo, &mut po, &mut ke, &mut va, &mut file)?;
    file.finish(kv_base(CONTENT_OPERATOR))
}

/// One row read: state, mode, position, key JSON, value JSON.
type OwnedRow = (String, String, Option<i32>, Option<String>, Option<String>);

/// Read the operator state entries of an operator-state file.
pub fn read_operator_file(
    storage: &dyn Storage,
    source: &ParquetSource,
    verify: Option<u32>,
) -> Result<Vec<OperatorStateEntry>, String> {
    let all: Vec<usize> = (0..source.metadata.num_row_groups()).collect();
    let mut owned: Vec<OwnedRow> = Vec::new();
    source.read(storage, &all, 8192, verify, &mut |rg, batch| {
        let col = |name: &str| -> Result<Option<Decoder<'_>>, String> {
            match batch.column_by_name(name) {
                Some(a) => Decoder::new(a).map(Some).map_err(|e| format!("column '{name}': {e}")),
                None => Ok(None),
            }
        };
        let state = col(COL_STATE)?.ok_or_else(|| format!("column '{COL_STATE}' is missing"))?;
        let mode = col(COL_MODE)?.ok_or_else(|| format!("column '{COL_MODE}' is missing"))?;
        let pos = col(COL_POSITION)?;
        let key = col(COL_KEY_JSON)?;
        let val = col(COL_VALUE_JSON)?;
        for row in 0..batch.num_rows() {
            let at = |what: &str| format!("row group {rg}, row {row}: {what}");
            let s = state.str_at(row).ok_or_else(|| at("state is null"))?;
            let m = mode.str_at(row).ok_or_else(|| at("mode is null"))?;
            let p = match pos.as_ref().and_then(|c| c.int_at(row)) {
                Some(p) => Some(i32::try_from(p).map_err(|_| at("position is out of range"))?),
                None => None,
            };
            owned.push((
                s.to_string(),
                m.to_string(),
                p,
                key.as_ref().and_then(|c| c.str_at(row)).map(str::to_string),
                val.as_ref().and_then(|c| c.str_at(row)).map(str::to_string),
            ));
        }
        Ok(())
    })?;
    let mut rows = Vec::with_capacity(owned.len());
    for (i, (s, m, p, k, v)) in owned.iter().enumerate() {
        let mode = mode_from_name(m).ok_or_else(|| {
            format!("row {i}: operator state '{s}': mode '{m}' is not one of split_evenly, union, broadcast")
        })?;
        rows.push(OperatorRow {
            state: s,
            mode,
            position: *p,
            key_json: k.as_deref().map(str::as_bytes),
            value_json: v.as_deref().map(str::as_bytes),
        });
    }
    operator_entries_from_rows(rows)
}
