//! Every Nexmark query, run as a Cairn job at parallelism 2 on a short
//! stream, against its plain-Rust oracle. Some runs also take checkpoints
//! every few milliseconds, so state is snapshotted while windows, joins and
//! timers are in flight.

use std::collections::BTreeMap;

use cairn::coordinator::control::SnapshotStatus;
use cairn::prelude::*;
use cairn_nexmark::generator::NexmarkConfig;
use cairn_nexmark::model::Bid;
use cairn_nexmark::oracle::{self, Events};
use cairn_nexmark::queries::{self, Streams};
use cairn_nexmark::signature::{checksum_of, ChecksumSink};

/// 40 s of event time at 1,000 events/s: four 10 s windows, 20 slides,
/// about 2,400 auctions and 800 people.
fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: 40_000,
        event_rate: 1_000,
        ..Default::default()
    }
}

fn env(checkpoints: bool) -> (StreamEnv, Option<std::path::PathBuf>) {
    let env = StreamEnv::new();
    env.set_parallelism(2).unwrap();
    let dir = checkpoints.then(|| {
        let d = std::env::temp_dir().join(format!("cairn-nexmark-test-{}-{}", std::process::id(), unique()));
        env.set_config("execution.checkpointing.interval", "20ms").unwrap();
        env.set_config("execution.checkpointing.dir", d.to_str().unwrap())
            .unwrap();
        d
    });
    (env, dir)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Run `query` over the test stream and collect its results.
fn run<O: Data>(checkpoints: bool, query: impl FnOnce(&Streams) -> DataStream<O>) -> Vec<O> {
    let (env, dir) = env(checkpoints);
    let events = queries::events(&env, config());
    let streams = queries::split(&events);
    let (sink, collected) = CollectSink::new();
    query(&streams).sink(sink).uid("collect");
    let result = env.execute("nexmark test").expect("the job runs");
    if checkpoints {
        assert!(
            result.checkpoints.iter().any(|c| c.status == SnapshotStatus::Completed),
            "the run took no checkpoint"
        );
    }
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
    collected.values()
}

/// Equal results, or a short report of where they first differ.
#[track_caller]
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{} results, {} expected; first difference at {at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        got.get(at),
        want.get(at)
    );
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Results per key, in arrival order (which the query fixes per key).
fn per_key<T, K: Ord>(v: Vec<T>, key: impl Fn(&T) -> K) -> BTreeMap<K, Vec<T>> {
    let mut m: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for t in v {
        m.entry(key(&t)).or_default().push(t);
    }
    m
}

fn oracle_events() -> Events {
    Events::generate(&config())
}

#[test]
fn q0_passes_every_bid_through() {
    let got = run(false, |s| queries::q0(&s.bids));
    let want = oracle::q0(&oracle_events());
    assert_eq!(got.len(), 36_800);
    let key = |b: &Bid| (b.date_time, b.auction, b.bidder, b.price);
    let (mut got, mut want) = (got, want);
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_same(&got, &want);
}

#[test]
fn q1_converts_prices() {
    let got = sorted(run(false, |s| queries::q1(&s.bids)));
    assert_same(&got, &oracle::q1(&oracle_events()));
}

#[test]
fn q2_selects_auctions() {
    let got = sorted(run(false, |s| queries::q2(&s.bids)));
    let want = oracle::q2(&oracle_events());
    assert!(!want.is_empty());
    assert_same(&got, &want);
}

#[test]
fn q3_joins_local_sellers_with_their_auctions() {
    let got = sorted(run(true, |s| queries::q3(&s.persons, &s.auctions)));
    let want = oracle::q3(&oracle_events());
    assert!(want.len() > 10, "too few results to mean anything: {}", want.len());
    assert_same(&got, &want);
}

#[test]
fn winning_bids_are_the_highest_valid_bids() {
    let got = sorted(run(true, |s| queries::winning_bids(&s.auctions, &s.bids)));
    let want = oracle::winners(&oracle_events());
    assert!(want.len() > 100, "{}", want.len());
    assert_same(&got, &want);
}

#[test]
fn q4_averages_closing_prices_per_category_in_closing_order() {
    let got = per_key(run(true, |s| queries::q4(&s.auctions, &s.bids)), |o| o.category);
    let want = oracle::q4(&oracle_events());
    assert_eq!(want.len(), 5);
    let flat = |m: BTreeMap<u64, Vec<_>>| m.into_iter().collect::<Vec<_>>();
    assert_same(&flat(got), &flat(want));
}

#[test]
fn q5_finds_the_hottest_auctions_per_sliding_window() {
    let got = sorted(run(true, |s| queries::q5(&s.bids)));
    let want = oracle::q5(&oracle_events());
    // One window end per 2 s slide of the 40 s run, plus the windows still open at its end.
    assert!(want.len() >= 20, "{}", want.len());
    assert_same(&got, &want);
}

#[test]
fn q6_averages_each_sellers_last_ten_closing_prices() {
    let got = per_key(run(true, |s| queries::q6(&s.auctions, &s.bids)), |o| o.seller);
    let want = oracle::q6(&oracle_events());
    assert!(
        want.values().any(|v| v.len() > 10),
        "no seller closed more than 10 auctions"
    );
    let flat = |m: BTreeMap<u64, Vec<_>>| m.into_iter().collect::<Vec<_>>();
    assert_same(&flat(got), &flat(want));
}

#[test]
fn q7_finds_the_highest_bid_per_window() {
    let got = sorted(run(true, |s| queries::q7(&s.bids)));
    let want = oracle::q7(&oracle_events());
    assert_eq!(want.len(), 4);
    assert_same(&got, &want);
}

#[test]
fn q8_finds_new_people_who_sell_in_their_first_window() {
    let got = sorted(run(true, |s| queries::q8(&s.persons, &s.auctions)));
    let want = oracle::q8(&oracle_events());
    assert!(want.len() > 10, "{}", want.len());
    assert_same(&got, &want);
}

#[test]
fn q11_counts_bids_per_session() {
    let got = sorted(run(true, |s| queries::q11(&s.bids)));
    let want = oracle::q11(&oracle_events());
    assert!(want.len() > 100, "{}", want.len());
    assert_same(&got, &want);
}

#[test]
fn q12_processing_time_windows_count_every_bid_once() {
    let got = run(false, |s| queries::q12(&s.bids));
    let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
    for c in &got {
        assert_eq!(c.end - c.start, queries::WINDOW_MS, "{c:?}");
        assert_eq!(c.start.rem_euclid(queries::WINDOW_MS), 0, "{c:?}");
        *totals.entry(c.bidder).or_default() += c.count;
    }
    assert_eq!(totals, oracle::q12_totals(&oracle_events()));
}

#[test]
fn the_checksum_sink_signs_what_the_oracle_signs() {
    let (env, _) = env(false);
    let events = queries::events(&env, config());
    let streams = queries::split(&events);
    let (sink, checksum) = ChecksumSink::new();
    queries::q7(&streams.bids).sink(sink).uid("sign");
    env.execute("nexmark checksum").unwrap();
    let want = oracle::q7(&oracle_events());
    assert_eq!((checksum.records(), checksum.sum()), checksum_of(&want));
}
