// `x % n != 0` keeps the workspace MSRV (1.85; `is_multiple_of` is newer).
#![allow(clippy::manual_is_multiple_of)]

use super::*;

fn schema() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("a", ColumnType::Int32, false),
        ColumnDef::new("b", ColumnType::Int64, true),
        ColumnDef::new("c", ColumnType::Utf8, true),
        ColumnDef::new("d", ColumnType::Binary, false),
        ColumnDef::new("e", ColumnType::Int32, true),
    ]
}

fn row(i: usize) -> (i32, Option<i64>, Option<String>, Vec<u8>, Option<i32>) {
    (
        i as i32 - 3,
        (i % 3 != 0).then_some(i as i64 * 1_000_000_007),
        (i % 5 != 1).then(|| format!("s{i}")),
        vec![i as u8; i % 4],
        (i % 17 > 3).then_some(-(i as i32)),
    )
}

fn write_rows(groups: &[usize], kv: Vec<(String, String)>) -> Vec<u8> {
    let mut w = ParquetWriter::new(Vec::new(), schema(), kv).unwrap();
    let mut b = RowGroupBuilder::new(&schema());
    let mut i = 0;
    for &n in groups {
        for _ in 0..n {
            let (a, bb, c, d, e) = row(i);
            b.push_i32(0, Some(a));
            b.push_i64(1, bb);
            b.push_bytes(2, c.as_deref().map(str::as_bytes));
            b.push_bytes_with(3, |buf| {
                buf.extend_from_slice(&d);
                Ok::<(), ()>(())
            })
            .unwrap();
            b.push_i32(4, e);
            i += 1;
        }
        assert_eq!(b.num_rows(), n);
        w.write_row_group(&mut b).unwrap();
        assert_eq!(b.num_rows(), 0, "the builder is reset");
    }
    let (bytes, n) = w.finish().unwrap();
    assert_eq!(n, bytes.len() as u64);
    bytes
}

fn check_rows(bytes: &[u8], groups: &[usize]) {
    let f = ParquetFile::parse(bytes).unwrap();
    assert_eq!(f.schema(), &schema()[..]);
    let non_empty: Vec<usize> = groups.iter().copied().filter(|n| *n > 0).collect();
    assert_eq!(f.num_row_groups(), non_empty.len());
    let mut i = 0;
    for (rg, &n) in non_empty.iter().enumerate() {
        assert_eq!(f.row_group_num_rows(rg), n as u64);
        let cols: Vec<ColumnData> = (0..5).map(|c| f.read_column(rg, c).unwrap()).collect();
        for r in 0..n {
            let (a, b, c, d, e) = row(i);
            let ColumnData::Int32(ca) = &cols[0] else { panic!() };
            assert_eq!(ca[r], Some(a));
            let ColumnData::Int64(cb) = &cols[1] else { panic!() };
            assert_eq!(cb[r], b);
            let ColumnData::Bytes(cc) = &cols[2] else { panic!() };
            assert_eq!(cc.get(r), c.as_deref().map(str::as_bytes));
            let ColumnData::Bytes(cd) = &cols[3] else { panic!() };
            assert_eq!(cd.get(r), Some(&d[..]));
            let ColumnData::Int32(ce) = &cols[4] else { panic!() };
            assert_eq!(ce[r], e);
            i += 1;
        }
    }
}

#[test]
fn round_trip_all_types_nulls_and_many_row_groups() {
    let groups = [1, 7, 0, 100, 1000, 3];
    let kv = vec![("k".to_string(), "v".to_string()), ("json".into(), "{\"x\":1}".into())];
    let bytes = write_rows(&groups, kv.clone());
    check_rows(&bytes, &groups);
    let f = ParquetFile::parse(&bytes).unwrap();
    assert_eq!(f.key_value_metadata(), &kv[..]);
    assert_eq!(f.footer().metadata_value("json"), Some("{\"x\":1}"));
    assert_eq!(f.footer().num_rows(), 1111);
    assert_eq!(f.footer().created_by(), Some(CREATED_BY));
}

#[test]
fn empty_file_has_schema_and_no_row_groups() {
    let bytes = write_rows(&[], vec![]);
    let f = ParquetFile::parse(&bytes).unwrap();
    assert_eq!(f.num_row_groups(), 0);
    assert_eq!(f.schema().len(), 5);
    assert!(f.read_column(0, 0).is_err());
}

#[test]
fn large_columns_are_split_into_pages() {
    let s = vec![
        ColumnDef::new("v", ColumnType::Binary, true),
        ColumnDef::new("n", ColumnType::Int64, false),
    ];
    let mut w = ParquetWriter::new(Vec::new(), s.clone(), vec![]).unwrap();
    let mut b = RowGroupBuilder::new(&s);
    let big = vec![7u8; 10_000];
    for i in 0..1000 {
        b.push_bytes(0, (i % 9 != 0).then_some(&big[..i % 100 * 100]));
        b.push_i64(1, Some(i as i64));
    }
    assert!(b.buffered_bytes() > 3 * PAGE_TARGET_BYTES);
    w.write_row_group(&mut b).unwrap();
    let (bytes, _) = w.finish().unwrap();
    // More than one page header in the chunk.
    let f = ParquetFile::parse(&bytes).unwrap();
    let ColumnData::Bytes(v) = f.read_column(0, 0).unwrap() else {
        panic!()
    };
    assert_eq!(v.len(), 1000);
    for i in 0..1000 {
        assert_eq!(v.get(i), (i % 9 != 0).then_some(&big[..i % 100 * 100]));
    }
    let ColumnData::Int64(n) = f.read_column(0, 1).unwrap() else {
        panic!()
    };
    assert_eq!(n, (0..1000).map(Some).collect::<Vec<_>>());
    let chunk = &f.footer.row_groups[0].chunks[0];
    assert!(chunk.size > 3 * PAGE_TARGET_BYTES as u64);
}

#[test]
fn definition_levels_round_trip_for_every_pattern() {
    let mut patterns: Vec<Vec<u8>> = vec![vec![], vec![1], vec![0], vec![1; 1000], vec![0; 1000]];
    patterns.push((0..1000).map(|i| (i % 2) as u8).collect());
    patterns.push((0..1000).map(|i| u8::from(i % 37 < 20)).collect());
    patterns.push((0..5003).map(|i| u8::from((i * 7919) % 13 < 6)).collect());
    for n in 0..40 {
        patterns.push((0..n).map(|i| u8::from(i % 3 == 0)).collect());
        let mut p = vec![1u8; n];
        p.extend(vec![0u8; 17]);
        p.extend((0..n).map(|i| (i % 2) as u8));
        patterns.push(p);
    }
    for p in patterns {
        let mut enc = Vec::new();
        encode_levels(&p, &mut enc);
        let mut dec = Vec::new();
        decode_levels(&enc, p.len(), &mut dec).unwrap();
        assert_eq!(dec, p);
    }
    // All present compresses to a couple of bytes.
    let mut enc = Vec::new();
    encode_levels(&vec![1; 100_000], &mut enc);
    assert!(enc.len() <= 4, "{enc:?}");
}

#[test]
fn misuse_is_reported_not_written() {
    let mut w = ParquetWriter::new(Vec::new(), schema(), vec![]).unwrap();
    let mut b = RowGroupBuilder::new(&schema());
    b.push_i32(0, None); // REQUIRED
    assert!(w.write_row_group(&mut b).unwrap_err().to_string().contains("REQUIRED"));
    b.push_i64(0, Some(1)); // wrong type
    assert!(w.write_row_group(&mut b).unwrap_err().to_string().contains("'a'"));
    b.push_i32(0, Some(1)); // other columns missing
    assert!(w.write_row_group(&mut b).is_err());
    b.push_i32(9, Some(1));
    assert!(w.write_row_group(&mut b).is_err());
    assert_eq!(w.num_row_groups(), 0);
}

#[test]
fn a_flipped_bit_in_a_page_is_found_and_named() {
    let bytes = write_rows(&[50, 50], vec![]);
    let f = ParquetFile::parse(&bytes).unwrap();
    // The last byte of row group 1, column 'd' page body.
    let chunk = &f.footer.row_groups[1].chunks[3];
    let at = (chunk.start + chunk.size - 1) as usize;
    let mut bad = bytes.clone();
    bad[at] ^= 0x10;
    let f = ParquetFile::parse_named(&bad, "dir/x.parquet").unwrap();
    let e = f.read_column(1, 3).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("CRC"), "{msg}");
    assert!(
        msg.contains("dir/x.parquet") && msg.contains("row group 1") && msg.contains("column 'd'"),
        "{msg}"
    );
    assert!(f.read_column(0, 3).is_ok(), "other chunks still read");
}

#[test]
fn malformed_files_give_errors_never_panics() {
    let bytes = write_rows(&[3, 20], vec![("k".into(), "v".into())]);
    let read_all = |b: &[u8]| -> Result<(), ParquetError> {
        let f = ParquetFile::parse(b)?;
        for rg in 0..f.num_row_groups() {
            for c in 0..f.schema().len() {
                f.read_column(rg, c)?;
            }
        }
        Ok(())
    };
    read_all(&bytes).unwrap();
    for n in 0..bytes.len() {
        assert!(read_all(&bytes[..n]).is_err(), "truncation to {n} bytes went unnoticed");
    }
    let mut detected = 0;
    for i in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if read_all(&b).is_err() {
                detected += 1;
            }
        }
    }
    // Flips in statistics, key-value text or the created_by string may go
    // unnoticed here (the whole-file CRC in _metadata covers them); most are found.
    assert!(detected > bytes.len() * 3 / 2, "{detected} of {}", bytes.len() * 3);
    // Pseudo-random garbage with valid magic.
    let mut seed = 12345u64;
    for len in [12usize, 13, 40, 200, 1000] {
        for _ in 0..50 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            b[..4].copy_from_slice(MAGIC);
            let n = b.len();
            b[n - 4..].copy_from_slice(MAGIC);
            let flen = ((seed >> 40) as u32) % (len as u32);
            b[n - 8..n - 4].copy_from_slice(&flen.to_le_bytes());
            let _ = read_all(&b);
        }
    }
}

#[test]
fn unsupported_features_are_named() {
    assert!(ParquetFile::parse(b"PAR1").unwrap_err().to_string().contains("PAR1"));
    assert!(ParquetFile::parse(b"hello world, not parquet")
        .unwrap_err()
        .to_string()
        .contains("not a Parquet file"));
}
