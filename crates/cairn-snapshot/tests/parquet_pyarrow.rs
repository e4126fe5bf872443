//! Interoperability of the Parquet subset with pyarrow (both directions).
//!
//! Needs a Python with pyarrow: `$CAIRN_PYTHON` if set, else `python3`. When
//! none is found the test prints a loud skip message and passes, unless
//! `CAIRN_REQUIRE_PYARROW=1`, in which case it fails.
// `x % n != 0` keeps the workspace MSRV (1.85; `is_multiple_of` is newer).
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::path::Path;
use std::process::Command;

use cairn_snapshot::parquet::{ColumnData, ColumnDef, ColumnType, ParquetFile, ParquetWriter, RowGroupBuilder};
use common::TempDir;

/// A Python interpreter that can import pyarrow, or `None` after reporting why.
fn python_with_pyarrow() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("CAIRN_PYTHON") {
        candidates.push(p);
    }
    candidates.push("python3".to_string());
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import pyarrow"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.clone());
        }
    }
    let msg = format!(
        "pyarrow is not available (tried {candidates:?}); install it (python3 -m pip install pyarrow) or point CAIRN_PYTHON at a python that has it"
    );
    if std::env::var("CAIRN_REQUIRE_PYARROW").as_deref() == Ok("1") {
        panic!("CAIRN_REQUIRE_PYARROW=1 but {msg}");
    }
    eprintln!("\n**************** SKIPPED: {msg} ****************\n");
    None
}

fn run_python(py: &str, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn schema() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("id", ColumnType::Int32, false),
        ColumnDef::new("big", ColumnType::Int64, true),
        ColumnDef::new("name", ColumnType::Utf8, true),
        ColumnDef::new("raw", ColumnType::Binary, false),
    ]
}

#[test]
fn pyarrow_reads_what_cairn_writes_with_page_checksums() {
    let Some(py) = python_with_pyarrow() else {
        return;
    };
    let dir = TempDir::new("pq-pyarrow");
    let path = dir.path().join("t.parquet");
    let mut w = ParquetWriter::new(Vec::new(), schema(), vec![("cairn.test".into(), "{\"v\":1}".into())]).unwrap();
    let mut b = RowGroupBuilder::new(&schema());
    let mut id = 0;
    for rows in [5usize, 3000, 1] {
        for _ in 0..rows {
            b.push_i32(0, Some(id));
            b.push_i64(1, (id % 3 != 0).then_some(i64::from(id) << 33));
            let name = format!("n{id}-ü");
            b.push_bytes(2, (id % 7 != 0).then_some(name.as_bytes()));
            b.push_bytes(3, Some(&id.to_le_bytes()));
            id += 1;
        }
        w.write_row_group(&mut b).unwrap();
    }
    let (bytes, _) = w.finish().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let script = r#"
import sys, pyarrow.parquet as pq, pyarrow as pa
f = pq.ParquetFile(sys.argv[1], page_checksum_verification=True)
assert f.metadata.num_rows == 3006, f.metadata.num_rows
assert f.metadata.num_row_groups == 3
assert f.metadata.metadata[b'cairn.test'] == b'{"v":1}'
t = pq.read_table(sys.argv[1], page_checksum_verification=True)
assert t.schema.field('id').type == pa.int32() and not t.schema.field('id').nullable
assert t.schema.field('big').type == pa.int64()
assert t.schema.field('name').type == pa.string(), t.schema
assert t.schema.field('raw').type == pa.binary()
d = t.to_pydict()
assert d['id'] == list(range(3006))
assert d['big'][0] is None and d['big'][1] == 1 << 33 and d['big'][2] == 2 << 33
assert d['name'][0] is None and d['name'][8] == 'n8-ü'
assert d['raw'][258] == (258).to_bytes(4, 'little')
st = f.metadata.row_group(1).column(0).statistics
assert st.min == 5 and st.max == 3004, (st.min, st.max)
print("ok")
"#;
    assert_eq!(run_python(&py, script, &[&path]).trim(), "ok");

    // A corrupted page body is caught by pyarrow's checksum verification too.
    let mut bad = bytes.clone();
    let mid = bytes.len() / 2;
    bad[mid] ^= 0x04;
    let bad_path = dir.path().join("bad.parquet");
    std::fs::write(&bad_path, &bad).unwrap();
    let script = r#"
import sys, pyarrow.parquet as pq
try:
    pq.read_table(sys.argv[1], page_checksum_verification=True)
    print("read")
except Exception as e:
    print("error:", e)
"#;
    let out = run_python(&py, script, &[&bad_path]);
    assert!(out.starts_with("error"), "pyarrow did not notice the corruption: {out}");
}

#[test]
fn cairn_reads_what_pyarrow_writes_in_the_subset() {
    let Some(py) = python_with_pyarrow() else {
        return;
    };
    let dir = TempDir::new("pq-pyarrow-in");
    let path = dir.path().join("in.parquet");
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
n = 10000
t = pa.table({
    'id': pa.array(range(n), pa.int32()),
    'big': pa.array([None if i % 4 == 0 else i * 1000003 for i in range(n)], pa.int64()),
    'name': pa.array([None if i % 5 == 0 else 'x%d' % i for i in range(n)], pa.string()),
    'raw': pa.array([bytes([i % 256]) * (i % 3) for i in range(n)], pa.binary()),
})
pq.write_table(t, sys.argv[1], use_dictionary=False, compression='NONE', write_page_checksum=True,
               data_page_version='1.0', row_group_size=4000, write_statistics=True,
               metadata_collector=None)
print("ok")
"#;
    assert_eq!(run_python(&py, script, &[&path]).trim(), "ok");
    let bytes = std::fs::read(&path).unwrap();
    let f = ParquetFile::parse_named(&bytes, "in.parquet").unwrap();
    assert_eq!(f.num_row_groups(), 3);
    let names: Vec<&str> = f.schema().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "big", "name", "raw"]);
    assert_eq!(f.schema()[2].ty, ColumnType::Utf8);
    let mut base = 0usize;
    for rg in 0..f.num_row_groups() {
        let n = f.row_group_num_rows(rg) as usize;
        let ColumnData::Int32(ids) = f.read_column(rg, 0).unwrap() else {
            panic!()
        };
        let ColumnData::Int64(big) = f.read_column(rg, 1).unwrap() else {
            panic!()
        };
        let ColumnData::Bytes(name) = f.read_column(rg, 2).unwrap() else {
            panic!()
        };
        let ColumnData::Bytes(raw) = f.read_column(rg, 3).unwrap() else {
            panic!()
        };
        for r in 0..n {
            let i = base + r;
            assert_eq!(ids[r], Some(i as i32));
            assert_eq!(big[r], (i % 4 != 0).then_some(i as i64 * 1000003));
            assert_eq!(
                name.get(r),
                (i % 5 != 0).then(|| format!("x{i}")).as_deref().map(str::as_bytes)
            );
            assert_eq!(raw.get(r), Some(&vec![(i % 256) as u8; i % 3][..]));
        }
        base += n;
    }
    assert_eq!(base, 10000);
}
