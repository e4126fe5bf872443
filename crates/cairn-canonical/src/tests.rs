use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::Array;
use cairn_snapshot::{InMemoryStorage, Storage};
use cairn_state::canonical::key_codec_for;
use cairn_state::keygroup::{key_bytes, key_group_for_bytes, KeyGroupRange};
use cairn_state::{
    HeapKeyedStateBackend, KeyedStateAccess, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor,
    SnapshotRequest, StateTtlConfig, ValueStateDescriptor,
};
use serde::{Deserialize, Serialize};

use super::*;

const MAX_P: u32 = 32;

fn all() -> KeyGroupRange {
    KeyGroupRange {
        start: 0,
        end_exclusive: MAX_P,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Tier {
    Free,
    Paid(u32),
    Custom { seats: u16, note: Option<String> },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    name: String,
    score: f64,
    ratio: f32,
    tags: Vec<String>,
    tier: Tier,
    big: u128,
    pair: (i8, bool),
    by_day: BTreeMap<String, i64>,
}

/// An older version of `Profile`: fewer fields (what a job restored from an
/// old savepoint still holds for keys it did not touch since).
#[derive(Clone, Serialize, Deserialize)]
struct OldProfile {
    name: String,
    score: f64,
}

fn profile(i: u32) -> Profile {
    Profile {
        name: format!("user-{i}"),
        score: f64::from(i) * 1.5,
        ratio: i as f32 / 4.0,
        tags: (0..i % 3).map(|t| format!("t{t}")).collect(),
        tier: match i % 3 {
            0 => Tier::Free,
            1 => Tier::Paid(i),
            _ => Tier::Custom {
                seats: i as u16,
                note: (i.is_multiple_of(2)).then(|| "vip".to_string()),
            },
        },
        big: u128::from(i) << 70,
        pair: (-(i as i8 % 100), i.is_multiple_of(2)),
        by_day: (0..i % 4).map(|d| (format!("d{d}"), i64::from(d) * -7)).collect(),
    }
}

/// A backend with value, list, map (with TTL), opaque and evolved values,
/// and timers, for keys 0..n.
fn fill(n: u32) -> HeapKeyedStateBackend {
    let mut access = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(all())));
    let profiles = access
        .value_state(ValueStateDescriptor::<Profile>::new("profile"))
        .unwrap();
    let counts = access.value_state(ValueStateDescriptor::<u64>::new("count")).unwrap();
    let times = access.list_state(ListStateDescriptor::<i64>::new("times")).unwrap();
    let seen = access
        .map_state(
            MapStateDescriptor::<String, Tier>::new("seen").with_ttl(StateTtlConfig::new(Duration::from_secs(3600))),
        )
        .unwrap();
    let json = access
        .value_state(ValueStateDescriptor::<serde_json::Value>::new("key"))
        .unwrap();
    let old = access
        .value_state(ValueStateDescriptor::<OldProfile>::new("evolved"))
        .unwrap();
    access.set_processing_time(1_000);
    let mut kb = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        key_bytes(&key, &mut kb).unwrap();
        access.set_current_key(&kb, key_group_for_bytes(&kb, MAX_P));
        profiles.update(&mut access, &profile(i)).unwrap();
        counts.update(&mut access, &u64::from(i)).unwrap();
        for t in 0..(i % 4) {
            times.add(&mut access, &(i64::from(t) - 2)).unwrap();
        }
        seen.put(&mut access, &format!("p{i}"), &profile(i).tier).unwrap();
        json.update(&mut access, &serde_json::json!({"n": i, "odd": i % 2 == 1}))
            .unwrap();
        old.update(
            &mut access,
            &OldProfile {
                name: key.clone(),
                score: 0.5,
            },
        )
        .unwrap();
    }
    // The job's type evolved: `evolved` is now declared as a Profile, but the
    // stored values are still the old shape. (Declared on the backend: a
    // typed handle would keep the old objects' type for the state.)
    let b = access.backend_mut();
    b.register(&ValueStateDescriptor::<Profile>::new("evolved").meta())
        .unwrap();
    let timers = b
        .register(&cairn_state::StateMeta {
            name: "_timers/event".into(),
            kind: cairn_state::StateKind::Value,
            value_type: "timer".into(),
            ttl: None,
            shapes: None,
        })
        .unwrap();
    for i in 0..n {
        let key = format!("k{i}");
        key_bytes(&key, &mut kb).unwrap();
        let kg = key_group_for_bytes(&kb, MAX_P);
        let mut tk = Vec::new();
        tk.extend_from_slice(&((i64::from(i) * 10 - 5) as u64 ^ (1 << 63)).to_be_bytes());
        cairn_state::codec::put_bytes(&mut tk, &kb);
        b.put(timers, kg, &tk, &[]).unwrap();
    }
    // Move the backend out of the access.
    let snap = b.snapshot(&SnapshotRequest::checkpoint(1)).unwrap();
    let mut out = HeapKeyedStateBackend::new(all());
    snap.for_each_group(&mut |meta, kg, bytes| out.restore_group(meta, kg, bytes))
        .unwrap();
    out
}

/// Compare two backends' groups, naming the first difference (never printing all).
fn same(a: &BTreeMap<(String, u32), Vec<u8>>, b: &BTreeMap<(String, u32), Vec<u8>>) {
    for (k, v) in a {
        match b.get(k) {
            None => panic!("group {k:?} is missing on the right"),
            Some(w) if w != v => panic!("group {k:?} differs: {} vs {} bytes", v.len(), w.len()),
            Some(_) => {}
        }
    }
    for k in b.keys() {
        assert!(a.contains_key(k), "group {k:?} is missing on the left");
    }
}

/// Every (state, key group) of a backend with its entries, sorted (the heap
/// backend hands entries out in hash order).
fn groups(b: &mut dyn KeyedStateBackend) -> BTreeMap<(String, u32), Vec<u8>> {
    let snap = b.snapshot(&SnapshotRequest::checkpoint(2)).unwrap();
    let mut out = BTreeMap::new();
    snap.for_each_group(&mut |meta, kg, bytes| {
        let mut entries: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
        cairn_state::snapshot_codec::decode_group(&meta.name, meta.kind, bytes, &mut |d| {
            match d {
                cairn_state::snapshot_codec::Decoded::Entry { key, value } => {
                    entries.push((key.to_vec(), Vec::new(), value.to_vec()))
                }
                cairn_state::snapshot_codec::Decoded::MapEntry { key, user_key, value } => {
                    entries.push((key.to_vec(), user_key.to_vec(), value.to_vec()))
                }
            }
            Ok(())
        })?;
        entries.sort();
        let flat = entries.into_iter().flat_map(|(a, b, c)| [a, b, c]).flatten().collect();
        out.insert((meta.name.clone(), kg), flat);
        Ok(())
    })
    .unwrap();
    out
}

fn write(
    storage: &dyn Storage,
    b: &mut HeapKeyedStateBackend,
    options: &WriteOptions,
) -> Vec<cairn_snapshot::StateFileRef> {
    let snap = b.snapshot(&SnapshotRequest::checkpoint(3)).unwrap();
    let snap = snap.key_groups().unwrap();
    let codec = key_codec_for::<String>();
    let mut intended = Vec::new();
    let files = write_keyed_snapshot(
        storage,
        Path::new("/sp"),
        "op-0",
        snap,
        Some(&codec),
        options,
        &mut |p| intended.push(p.to_path_buf()),
    )
    .unwrap();
    assert_eq!(
        intended.len(),
        files.len(),
        "every file was announced before it was created"
    );
    files
}

fn restore(
    storage: &dyn Storage,
    files: &[cairn_snapshot::StateFileRef],
    range: KeyGroupRange,
) -> HeapKeyedStateBackend {
    let mut b = HeapKeyedStateBackend::new(range);
    for f in files {
        let path = PathBuf::from("/sp").join(&f.path);
        match open(storage, &path, f.size).unwrap() {
            CanonicalFile::Keyed(k) => k
                .for_each_group(
                    storage,
                    range,
                    Some(MAX_P),
                    Some(f.crc32),
                    &mut |meta, kg, bytes, keys| b.restore_group_of(meta, kg, bytes, keys).map_err(|e| e.to_string()),
                )
                .unwrap(),
            CanonicalFile::Operator(_) => panic!("a keyed file opened as operator state"),
        }
    }
    b
}

#[test]
fn every_kind_of_state_round_trips_byte_for_byte() {
    let storage = InMemoryStorage::new();
    let mut b = fill(200);
    let files = write(&storage, &mut b, &WriteOptions::default());
    assert_eq!(files.len(), 7, "one file per state");
    assert!(files.iter().all(|f| f.format == cairn_snapshot::FileFormat::ParquetV2));
    let mut back = restore(&storage, &files, all());
    same(&groups(&mut back), &groups(&mut b));
}

#[test]
fn a_rescaled_restore_reads_only_its_key_groups() {
    let storage = InMemoryStorage::new();
    let mut b = fill(300);
    let options = WriteOptions {
        batch_rows: 16,
        row_group_rows: 32,
        ..Default::default()
    };
    let files = write(&storage, &mut b, &options);
    let want = groups(&mut b);
    let mut got = BTreeMap::new();
    for s in 0..3 {
        let range = KeyGroupRange::for_subtask(MAX_P, 3, s);
        let mut part = restore(&storage, &files, range);
        for ((state, kg), bytes) in groups(&mut part) {
            assert!(range.contains(kg));
            got.insert((state, kg), bytes);
        }
    }
    same(&got, &want);
}

#[test]
fn columns_are_typed_and_misfits_are_json() {
    let storage = InMemoryStorage::new();
    let mut b = fill(50);
    let files = write(&storage, &mut b, &WriteOptions::default());
    let find = |slug: &str| files.iter().find(|f| f.path == format!("op-0.{slug}.parquet")).unwrap();
    let open_keyed =
        |f: &cairn_snapshot::StateFileRef| match open(&storage, &PathBuf::from("/sp").join(&f.path), f.size).unwrap() {
            CanonicalFile::Keyed(k) => k,
            CanonicalFile::Operator(_) => unreachable!(),
        };
    let count = open_keyed(find("count"));
    let schema = count.source().schema().clone();
    let ty = |name: &str| {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().to_string())
            .unwrap_or_default()
    };
    assert_eq!(ty("count"), "UInt64", "the value column is named after the state");
    assert_eq!(ty("key"), "Utf8");
    assert_eq!(ty("key_group"), "Int32");
    let profile = open_keyed(find("profile"));
    let t = profile
        .source()
        .schema()
        .field_with_name("profile")
        .unwrap()
        .data_type()
        .to_string();
    for part in [
        "\"score\": Float64",
        "\"ratio\": Float32",
        "\"tags\": List(",
        "\"big\": FixedSizeBinary(16)",
        "\"$variant\": Utf8",
        "\"Paid\": UInt32",
        "\"by_day\": Map(",
    ] {
        assert!(t.contains(part), "{part} in {t}");
    }
    // A state named like a reserved column has its values in `value`; an
    // opaque type (serde_json::Value) has only JSON text.
    let key_state = open_keyed(find("key"));
    assert!(key_state.source().schema().field_with_name("value").is_err());
    // Values of an evolved type do not fit the typed column: JSON, all of them.
    let evolved = open_keyed(find("evolved"));
    let mut json_rows = 0;
    let mut typed_rows = 0;
    evolved
        .source()
        .read(&storage, &[0], 1024, None, &mut |_, batch| {
            let j = batch.column_by_name("value_json").unwrap();
            let t = batch.column_by_name("evolved").unwrap();
            json_rows += j.len() - j.null_count();
            typed_rows += t.len() - t.null_count();
            Ok(())
        })
        .unwrap();
    assert_eq!((json_rows, typed_rows), (50, 0));
    // Statistics let readers skip row groups by key group (and tools by
    // typed key or value); the key's bytes and the state name have none.
    let rg = count.source().metadata.row_group(0);
    let stats = |name: &str| {
        let c = rg.columns().iter().find(|c| c.column_path().string() == name).unwrap();
        c.statistics().is_some_and(|s| s.min_bytes_opt().is_some())
    };
    assert!(stats("key_group") && stats("key") && stats("count"));
    assert!(!stats("key_bytes") && !stats("state"));
}

#[test]
fn a_row_in_the_wrong_key_group_is_refused() {
    let storage = InMemoryStorage::new();
    let mut b = fill(20);
    let files = write(&storage, &mut b, &WriteOptions::default());
    let f = files.iter().find(|f| f.path.ends_with(".count.parquet")).unwrap();
    let CanonicalFile::Keyed(k) = open(&storage, &PathBuf::from("/sp").join(&f.path), f.size).unwrap() else {
        unreachable!()
    };
    // Read with another max parallelism: every key hashes elsewhere.
    let e = k
        .for_each_group(&storage, all(), Some(MAX_P * 2 + 1), None, &mut |_, _, _, _| Ok(()))
        .unwrap_err();
    assert!(e.contains("hash to key group"), "{e}");
}

#[test]
fn a_changed_file_is_caught_while_reading() {
    let storage = InMemoryStorage::new();
    let mut b = fill(20);
    let files = write(&storage, &mut b, &WriteOptions::default());
    let f = &files[0];
    let CanonicalFile::Keyed(k) = open(&storage, &PathBuf::from("/sp").join(&f.path), f.size).unwrap() else {
        unreachable!()
    };
    let e = k
        .for_each_group(&storage, all(), None, Some(f.crc32 ^ 1), &mut |_, _, _, _| Ok(()))
        .unwrap_err();
    assert!(e.contains("changed after it was verified"), "{e}");
}

#[test]
fn snappy_and_uncompressed_files_restore_too() {
    for codec in ["snappy", "none", "zstd(3)"] {
        let storage = InMemoryStorage::new();
        let mut b = fill(40);
        let options = WriteOptions::default().with_compression_name(codec).unwrap();
        let files = write(&storage, &mut b, &options);
        let mut back = restore(&storage, &files, all());
        same(&groups(&mut back), &groups(&mut b));
    }
    assert!(WriteOptions::default().with_compression_name("lzo").is_err());
}

/// Whether the `namespace` column of the file's first row group has a dictionary page.
fn namespace_has_dictionary(storage: &dyn Storage, f: &cairn_snapshot::StateFileRef) -> bool {
    let CanonicalFile::Keyed(k) = open(storage, &PathBuf::from("/sp").join(&f.path), f.size).unwrap() else {
        panic!("a keyed file")
    };
    let g = k.source().metadata.row_group(0);
    let c = g
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "namespace")
        .unwrap();
    c.dictionary_page_offset().is_some()
}

#[test]
fn namespaces_keep_their_dictionary_and_a_file_without_them_is_plain() {
    // Windows: a value per key and window (namespace), few distinct windows.
    let mut b = HeapKeyedStateBackend::new(all());
    let windowed = b
        .register(&ValueStateDescriptor::<u64>::new("windowed").meta())
        .unwrap();
    let plain = b.register(&ValueStateDescriptor::<u64>::new("plain").meta()).unwrap();
    let mut kb = Vec::new();
    for i in 0..500u32 {
        key_bytes(&format!("k{i}"), &mut kb).unwrap();
        let kg = key_group_for_bytes(&kb, MAX_P);
        let mut v = Vec::new();
        cairn_state::codec::encode_into("v", &u64::from(i), &mut v).unwrap();
        for w in 0..(i % 3) {
            let mut composite = kb.clone();
            composite.extend_from_slice(&(u64::from(w) * 60_000).to_be_bytes());
            b.put(windowed, kg, &composite, &v).unwrap();
        }
        b.put(plain, kg, &kb, &v).unwrap();
    }
    let storage = InMemoryStorage::new();
    let files = write(&storage, &mut b, &WriteOptions::default());
    let file = |slug: &str| files.iter().find(|f| f.path == format!("op-0.{slug}.parquet")).unwrap();
    assert!(namespace_has_dictionary(&storage, file("windowed")));
    assert!(!namespace_has_dictionary(&storage, file("plain")));
    let mut back = restore(&storage, &files, all());
    same(&groups(&mut back), &groups(&mut b));
}

#[test]
fn operator_state_round_trips() {
    use cairn_state::OperatorStateStore;
    let mut store = OperatorStateStore::new();
    store
        .set_list("offsets", cairn_state::DistributionMode::SplitEvenly, &[1u64, 2, 3])
        .unwrap();
    store
        .set_list("empty", cairn_state::DistributionMode::Union, &Vec::<u8>::new())
        .unwrap();
    store.broadcast_put("rates", &"EUR".to_string(), &1.1f64).unwrap();
    let entries = store.to_entries();
    let storage = InMemoryStorage::new();
    let f = write_operator_file(
        &storage,
        Path::new("/sp"),
        "op.operator.parquet",
        &entries,
        &WriteOptions::default(),
    )
    .unwrap();
    let CanonicalFile::Operator(src) = open(&storage, Path::new("/sp/op.operator.parquet"), f.size).unwrap() else {
        panic!("not an operator file")
    };
    assert_eq!(read_operator_file(&storage, &src, Some(f.crc32)).unwrap(), entries);
}

/// A bounded mutation loop over the reader (the fuzzing CI runs): flipped
/// bytes, overwritten ranges, truncations and appended junk in real files
/// must give an error or a restore, never a panic, a hang or an abort.
#[test]
fn mutated_files_never_panic_the_reader() {
    let storage = InMemoryStorage::new();
    let mut b = fill(60);
    let options = WriteOptions {
        batch_rows: 16,
        row_group_rows: 40,
        ..Default::default()
    };
    let files = write(&storage, &mut b, &options);
    let originals: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                storage.read(&PathBuf::from("/sp").join(&f.path)).unwrap(),
            )
        })
        .collect();
    let iterations: u64 = std::env::var("CAIRN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = cairn_snapshot::layout::IdGenerator::with_seed(0x5eed);
    let (mut errors, mut restored) = (0u64, 0u64);
    for i in 0..iterations {
        let (name, orig) = &originals[(rng.next_u64() as usize) % originals.len()];
        let mut bytes = orig.clone();
        match rng.next_u64() % 5 {
            0 => {
                for _ in 0..1 + rng.next_u64() % 8 {
                    let at = (rng.next_u64() as usize) % bytes.len();
                    bytes[at] ^= 1 << (rng.next_u64() % 8);
                }
            }
            1 => {
                let at = (rng.next_u64() as usize) % bytes.len();
                let len = ((rng.next_u64() % 64) as usize).min(bytes.len() - at);
                for b in &mut bytes[at..at + len] {
                    *b = rng.next_u64() as u8;
                }
            }
            2 => bytes.truncate((rng.next_u64() as usize) % bytes.len()),
            3 => {
                // Damage the footer, where lengths and offsets live.
                let tail = bytes.len().min(300);
                let at = bytes.len() - 1 - (rng.next_u64() as usize) % tail;
                bytes[at] = rng.next_u64() as u8;
            }
            _ => bytes.extend((0..rng.next_u64() % 32).map(|_| rng.next_u64() as u8)),
        }
        let path = PathBuf::from(format!("/fuzz/{i}-{name}"));
        cairn_snapshot::storage::write_file(&storage, &path, &bytes).unwrap();
        let size = bytes.len() as u64;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
            match open(&storage, &path, size)? {
                CanonicalFile::Keyed(k) => {
                    let mut h = HeapKeyedStateBackend::new(all());
                    k.for_each_group(&storage, all(), Some(MAX_P), None, &mut |m, kg, g, _| {
                        h.restore_group(m, kg, g).map_err(|e| e.to_string())
                    })
                }
                CanonicalFile::Operator(src) => read_operator_file(&storage, &src, None).map(|_| ()),
            }
        }));
        match outcome {
            Ok(Ok(())) => restored += 1,
            Ok(Err(e)) => {
                assert!(!e.is_empty());
                errors += 1;
            }
            Err(p) => panic!(
                "iteration {i} ({name}): the reader panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        }
        let _ = storage.delete_file(&path);
    }
    assert_eq!(errors + restored, iterations);
    assert!(
        errors > iterations / 4,
        "most mutations are detected ({errors} errors, {restored} restored)"
    );
}

/// A snapshot seen only through its encoded groups (what every backend but
/// the heap's typed states gives a writer).
struct EncodedOnly(Box<dyn cairn_state::KeyedStateSnapshot>);

impl cairn_state::KeyedStateSnapshot for EncodedOnly {
    fn for_each_group(
        &self,
        visit: &mut cairn_state::backend::GroupVisitor<'_>,
    ) -> Result<(), cairn_state::StateError> {
        self.0.for_each_group(visit)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Meters(u64);

#[test]
fn value_objects_are_written_as_their_bytes_would_be() {
    // Typed heap states (kept as objects) of every scalar column type, and
    // of types the writer takes through their bytes (a struct, an option, a
    // newtype, JSON text): the files are the same, byte for byte, as from the encoded
    // groups, and restore to the same entries.
    let mut access = KeyedStateAccess::new(Box::new(HeapKeyedStateBackend::new(all())));
    let u = access.value_state(ValueStateDescriptor::<u64>::new("u64")).unwrap();
    let i = access.value_state(ValueStateDescriptor::<i64>::new("i64")).unwrap();
    let u32s = access.value_state(ValueStateDescriptor::<u32>::new("u32")).unwrap();
    let i8s = access.value_state(ValueStateDescriptor::<i8>::new("i8")).unwrap();
    let f = access.value_state(ValueStateDescriptor::<f32>::new("f32")).unwrap();
    let d = access.value_state(ValueStateDescriptor::<f64>::new("f64")).unwrap();
    let b = access.value_state(ValueStateDescriptor::<bool>::new("bool")).unwrap();
    let s = access
        .value_state(ValueStateDescriptor::<String>::new("string"))
        .unwrap();
    let p = access
        .value_state(ValueStateDescriptor::<Profile>::new("profile"))
        .unwrap();
    let o = access
        .value_state(ValueStateDescriptor::<Option<u64>>::new("option"))
        .unwrap();
    let m = access
        .value_state(ValueStateDescriptor::<Meters>::new("meters"))
        .unwrap();
    // No typed column at all: JSON text.
    let j = access
        .value_state(ValueStateDescriptor::<serde_json::Value>::new("json"))
        .unwrap();
    let mut kb = Vec::new();
    for n in 0..300u32 {
        key_bytes(&format!("k{n}"), &mut kb).unwrap();
        access.set_current_key(&kb, key_group_for_bytes(&kb, MAX_P));
        let n64 = u64::from(n);
        // Extremes next to small values: delta-encoded columns wrap.
        let big = if n % 3 == 0 { u64::MAX - n64 } else { n64 << 40 | n64 };
        u.update(&mut access, &big).unwrap();
        let signed = match n % 4 {
            0 => i64::MIN + i64::from(n),
            1 => i64::MAX - i64::from(n),
            _ => i64::from(n) * -1_000_003,
        };
        i.update(&mut access, &signed).unwrap();
        u32s.update(&mut access, &(n * 7)).unwrap();
        i8s.update(&mut access, &(-(n as i8 % 100))).unwrap();
        f.update(&mut access, &(n as f32 / 3.0)).unwrap();
        d.update(&mut access, &(f64::from(n) * -0.25)).unwrap();
        b.update(&mut access, &n.is_multiple_of(3)).unwrap();
        s.update(&mut access, &format!("v{n}é")).unwrap();
        p.update(&mut access, &profile(n)).unwrap();
        o.update(&mut access, &n.is_multiple_of(2).then_some(n64)).unwrap();
        m.update(&mut access, &Meters(n64 * 3)).unwrap();
        j.update(&mut access, &serde_json::json!({"n": n, "tags": ["a", n % 3]}))
            .unwrap();
    }
    let snap = access.backend_mut().snapshot(&SnapshotRequest::checkpoint(1)).unwrap();
    let snap = snap.key_groups().unwrap();
    // The same state again (nothing changed in between), seen encoded.
    let cairn_state::BackendSnapshot::KeyGroups(again) =
        access.backend_mut().snapshot(&SnapshotRequest::checkpoint(2)).unwrap()
    else {
        panic!("the heap backend gives key groups")
    };
    let codec = key_codec_for::<String>();
    let options = WriteOptions::default();
    let (objects, encoded) = (InMemoryStorage::new(), InMemoryStorage::new());
    let files = write_keyed_snapshot(
        &objects,
        Path::new("/sp"),
        "op-0",
        snap,
        Some(&codec),
        &options,
        &mut |_| {},
    )
    .unwrap();
    let files_encoded = write_keyed_snapshot(
        &encoded,
        Path::new("/sp"),
        "op-0",
        &EncodedOnly(again),
        Some(&codec),
        &options,
        &mut |_| {},
    )
    .unwrap();
    // Keys through their MessagePack too: a key codec that knows only the
    // key's shape (as offline tools have it) cannot hand keys as objects.
    let by_shape: cairn_state::canonical::KeyCodec =
        std::sync::Arc::new(crate::keys::ShapeKeyCodec::new(cairn_state::shape::trace::<String>()).unwrap());
    let cairn_state::BackendSnapshot::KeyGroups(third) =
        access.backend_mut().snapshot(&SnapshotRequest::checkpoint(3)).unwrap()
    else {
        panic!("the heap backend gives key groups")
    };
    let keys_encoded = InMemoryStorage::new();
    let files_keys_encoded = write_keyed_snapshot(
        &keys_encoded,
        Path::new("/sp"),
        "op-0",
        &EncodedOnly(third),
        Some(&by_shape),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(files.len(), 12, "one file per state");
    assert_eq!(files, files_encoded, "names, sizes and checksums");
    assert_eq!(files, files_keys_encoded, "names, sizes and checksums");
    for f in &files {
        let path = PathBuf::from("/sp").join(&f.path);
        let written = objects.read(&path).unwrap();
        assert!(written == encoded.read(&path).unwrap(), "{} differs", f.path);
        assert!(
            written == keys_encoded.read(&path).unwrap(),
            "{} differs with keys taken through their bytes",
            f.path
        );
    }
    let mut back = restore(&objects, &files, all());
    same(&groups(&mut back), &groups(access.backend_mut()));
}

#[test]
fn a_file_whose_key_groups_are_interleaved_restores_and_duplicates_across_runs_are_caught() {
    // What a tool may write: each key group's rows in two runs, the first
    // runs in descending key-group order, then the second runs.
    let mut b = fill(400);
    let want = groups(&mut b);
    let snap = b.snapshot(&SnapshotRequest::checkpoint(4)).unwrap();
    let mut halves: Vec<(cairn_state::StateMeta, u32, Vec<u8>, Vec<u8>)> = Vec::new();
    snap.for_each_group(&mut |meta, kg, bytes| {
        if meta.name == "count" {
            let mut entries = Vec::new();
            cairn_state::snapshot_codec::decode_group(&meta.name, meta.kind, bytes, &mut |d| {
                if let cairn_state::snapshot_codec::Decoded::Entry { key, value } = d {
                    entries.push((key.to_vec(), value.to_vec()));
                }
                Ok(())
            })?;
            let (mut first, mut second) = (Vec::new(), Vec::new());
            for (i, (k, v)) in entries.iter().enumerate() {
                let half = if i % 2 == 0 { &mut first } else { &mut second };
                cairn_state::snapshot_codec::put_entry(half, k, v);
            }
            halves.push((meta.clone(), kg, first, second));
        }
        Ok(())
    })
    .unwrap();
    assert!(halves.len() > 4, "several key groups");
    let codec = key_codec_for::<String>();
    let write = |duplicate: bool| {
        let storage = InMemoryStorage::new();
        let meta = &halves[0].0;
        let mut w = KeyedFileWriter::create(
            &storage,
            Path::new("/sp"),
            "mixed.parquet",
            meta,
            Some(&codec),
            &WriteOptions {
                batch_rows: 7,
                row_group_rows: 50,
                ..Default::default()
            },
        )
        .unwrap();
        for (_, kg, first, _) in halves.iter().rev() {
            w.push_group(*kg, first).unwrap();
        }
        for (_, kg, first, second) in &halves {
            w.push_group(*kg, if duplicate && *kg == halves[2].1 { first } else { second })
                .unwrap();
        }
        let f = w.finish().unwrap();
        (storage, f)
    };
    let (storage, f) = write(false);
    let back = groups(&mut restore(&storage, &[f], all()));
    let count_only: BTreeMap<_, _> = want.into_iter().filter(|((s, _), _)| s == "count").collect();
    same(&back, &count_only);
    let (storage, f) = write(true);
    let CanonicalFile::Keyed(k) = open(&storage, &PathBuf::from("/sp").join(&f.path), f.size).unwrap() else {
        unreachable!()
    };
    let e = k
        .for_each_group(&storage, all(), Some(MAX_P), None, &mut |_, _, _, _| Ok(()))
        .unwrap_err();
    assert!(e.contains("two rows hold a value for the same key"), "{e}");
}
