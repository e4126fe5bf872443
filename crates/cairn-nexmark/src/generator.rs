//! The Nexmark event generator: event number `n` is a pure function of `n`
//! and the configuration, so a parallel source, the plain-Rust oracles and
//! the Flink benchmark job (`benches/nexmark-flink`, a line-by-line port of
//! [`event`]) all see exactly the same events.
//!
//! The mix and the id spaces follow the Nexmark specification as Beam's and
//! Flink's suites implement it: out of every 50 events 1 is a person, 3 are
//! auctions and 46 are bids; people and auctions get consecutive ids from
//! 1000; an auction's seller and a bid's bidder are mostly "hot" people (3 in
//! 4), a bid's auction is the latest hot auction half of the time, otherwise
//! one of the 100 auctions in flight (or one of the next 10, not yet
//! created); prices are log-uniform from $1 to $1M; auctions close after a
//! random time of up to twice the time 100 auctions take to be created;
//! `extra` pads people to about 200 bytes, auctions to 500 and bids to 100.
//! What differs: the random numbers come from SplitMix64 seeded by the event
//! number (not `java.util.Random`), so that any event can be made alone, and
//! the event time is `base_time + n * 1000 / event_rate` ms.
//!
//! [`NexmarkSource`] reads `0..events` as strided splits (split `k` of `s`
//! makes events `k, k + s, k + 2s, ...`), so every split moves through event
//! time at the same pace and per-split watermarks stay close together.

use std::time::Duration;

use cairn::connectors::split::{SourceSplit, SplitPoll, SplitSet, SplitsState};
use cairn::prelude::*;
use cairn::runtime::SplitProgress;
use serde::{Deserialize, Serialize};

use crate::model::{Auction, Bid, Event, Person};

/// People and auctions get ids from here on.
pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
/// Categories are `FIRST_CATEGORY_ID .. FIRST_CATEGORY_ID + NUM_CATEGORIES`.
pub const FIRST_CATEGORY_ID: u64 = 10;
pub const NUM_CATEGORIES: u64 = 5;
/// Events per person, auction and bid out of every [`PROPORTION_DENOMINATOR`].
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
/// Auctions open at once; bids go to one of them (or to the next few).
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
/// People who sell and bid at a time.
const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// Bids and auctions may name ids this far ahead of the last one created.
const AUCTION_ID_LEAD: u64 = 10;
const PERSON_ID_LEAD: u64 = 10;
/// 1 in `ratio` picks a random id, the rest the hot one.
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_BIDDER_RATIO: u64 = 4;
const AVG_PERSON_BYTES: u64 = 200;
const AVG_AUCTION_BYTES: u64 = 500;
const AVG_BID_BYTES: u64 = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// What the generator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkConfig {
    /// Number of events (`0..events`).
    pub events: u64,
    /// Event-time rate: events per second of event time.
    pub event_rate: u64,
    /// Event time of event 0 (epoch ms).
    pub base_time_ms: i64,
    /// Seed of the random choices.
    pub seed: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 10_000_000,
            // Beam's default first event rate.
            event_rate: 10_000,
            // 2023-11-14T22:13:20Z.
            base_time_ms: 1_700_000_000_000,
            seed: 0,
        }
    }
}

impl NexmarkConfig {
    /// `events` events with the other settings at their defaults.
    pub fn with_events(events: u64) -> Self {
        NexmarkConfig {
            events,
            ..Default::default()
        }
    }

    /// Event time of event `n`.
    pub fn timestamp(&self, n: u64) -> i64 {
        let offset = u128::from(n) * 1000 / u128::from(self.event_rate.max(1));
        self.base_time_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Every event, in event-number order (for oracles and tests).
    pub fn all_events(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.events).map(move |n| event(self, n))
    }
}

/// SplitMix64: small, fast, and the same in Java (with `>>>` and wrapping
/// `long` arithmetic).
struct Rng(u64);

impl Rng {
    fn for_event(seed: u64, n: u64) -> Self {
        Rng(mix(n ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix_state(self.0)
    }

    /// Uniform-enough in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: u64) -> u64 {
        (self.next() >> 1) % bound.max(1)
    }

    /// `len` characters, each a space with probability 1/13, else a
    /// uniform lowercase letter. One random number makes four: each 16-bit
    /// quarter, scaled to `0..13 * 26`, picks a space below 26 and otherwise
    /// a letter by its remainder modulo 26 (a multiply and a shift instead of
    /// two random numbers and two divisions per character).
    fn string(&mut self, len: u64) -> String {
        let mut s = String::with_capacity(len as usize);
        let mut bits = 0u64;
        for i in 0..len {
            if i % 4 == 0 {
                bits = self.next();
            }
            let v = ((bits & 0xffff) * 338) >> 16;
            bits >>= 16;
            s.push(if v < 26 {
                ' '
            } else {
                char::from(b'a' + ((v - 26) % 26) as u8)
            });
        }
        s
    }

    /// Padding that brings a record of `current` bytes to about `desired`.
    fn extra(&mut self, current: u64, desired: u64) -> String {
        if current >= desired {
            return String::new();
        }
        let delta = desired - current;
        let len = delta * 8 / 10 + self.below(delta * 4 / 10 + 1);
        self.string(len)
    }

    /// Cents, log-uniform by decade over $1 .. $1M.
    fn price(&mut self) -> u64 {
        let lo = 100 * 10u64.pow(self.below(6) as u32);
        lo + self.below(9 * lo)
    }
}

/// The SplitMix64 output function.
fn mix_state(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A well-mixed 64-bit function of `x` (also the checksums' mixer).
pub fn mix(x: u64) -> u64 {
    mix_state(x.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// Ids of the people created before event `n` (0-based): the last one.
fn last_base0_person_id(n: u64) -> u64 {
    n / PROPORTION_DENOMINATOR
}

/// The last auction created at or before event `n` (0-based), for auction and bid events.
fn last_base0_auction_id(n: u64) -> u64 {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = n % PROPORTION_DENOMINATOR;
    let within = offset.saturating_sub(PERSON_PROPORTION).min(AUCTION_PROPORTION - 1);
    if offset < PERSON_PROPORTION {
        // A person event: the last auction is the previous epoch's last one.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else {
        epoch * AUCTION_PROPORTION + within
    }
}

/// A random active person (perhaps one not created yet).
fn next_base0_person_id(n: u64, rng: &mut Rng) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// A random auction in flight (perhaps one not created yet).
fn next_base0_auction_id(n: u64, rng: &mut Rng) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// Event `n` under `config`.
pub fn event(config: &NexmarkConfig, n: u64) -> Event {
    let mut rng = Rng::for_event(config.seed, n);
    let ts = config.timestamp(n);
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        Event::Person(person(n, ts, &mut rng))
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        Event::Auction(auction(config, n, ts, &mut rng))
    } else {
        Event::Bid(bid(n, ts, &mut rng))
    }
}

fn person(n: u64, ts: i64, rng: &mut Rng) -> Person {
    let id = FIRST_PERSON_ID + last_base0_person_id(n);
    let name = format!(
        "{} {}",
        FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize],
        LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize]
    );
    let email_address = format!("{}@{}.com", rng.string(7), rng.string(5));
    let credit_card = format!(
        "{:04} {:04} {:04} {:04}",
        rng.below(10_000),
        rng.below(10_000),
        rng.below(10_000),
        rng.below(10_000)
    );
    let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize].to_string();
    let state = US_STATES[rng.below(US_STATES.len() as u64) as usize].to_string();
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len() + 8;
    let extra = rng.extra(size as u64, AVG_PERSON_BYTES);
    Person {
        id,
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time: ts,
        extra,
    }
}

fn auction(config: &NexmarkConfig, n: u64, ts: i64, rng: &mut Rng) -> Auction {
    let id = FIRST_AUCTION_ID + last_base0_auction_id(n);
    let seller_base0 = if rng.below(HOT_SELLER_RATIO) > 0 {
        last_base0_person_id(n) / HOT_SELLER_RATIO * HOT_SELLER_RATIO
    } else {
        next_base0_person_id(n, rng)
    };
    let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
    let initial_bid = rng.price();
    let reserve = initial_bid + rng.price();
    // Up to twice the time the next NUM_IN_FLIGHT_AUCTIONS auctions take to appear.
    let horizon_events = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
    let horizon_ms = config.timestamp(n + horizon_events) - ts;
    let expires = ts + 1 + rng.below((horizon_ms.max(1) as u64) * 2) as i64;
    let item_name = rng.string(20);
    let description = rng.string(100);
    let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8 + 8;
    let extra = rng.extra(size as u64, AVG_AUCTION_BYTES);
    Auction {
        id,
        item_name,
        description,
        initial_bid,
        reserve,
        date_time: ts,
        expires,
        seller: FIRST_PERSON_ID + seller_base0,
        category,
        extra,
    }
}

fn bid(n: u64, ts: i64, rng: &mut Rng) -> Bid {
    let auction_base0 = if rng.below(HOT_AUCTION_RATIO) > 0 {
        last_base0_auction_id(n) / HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
    } else {
        next_base0_auction_id(n, rng)
    };
    let bidder_base0 = if rng.below(HOT_BIDDER_RATIO) > 0 {
        last_base0_person_id(n) / HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
    } else {
        next_base0_person_id(n, rng)
    };
    let price = rng.price();
    let channel = CHANNELS[rng.below(CHANNELS.len() as u64) as usize].to_string();
    let url = format!("https://www.nexmark.com/{}/item.htm?query=1", rng.string(5));
    let size = 8 + 8 + 8 + channel.len() + url.len() + 8;
    let extra = rng.extra(size as u64, AVG_BID_BYTES);
    Bid {
        auction: FIRST_AUCTION_ID + auction_base0,
        bidder: FIRST_PERSON_ID + bidder_base0,
        price,
        channel,
        url,
        date_time: ts,
        extra,
    }
}

/// Split `first` of `stride`: events `first, first + stride, ...` below
/// `end`; `next` is the next one to make. Its id is `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct NexmarkSplit {
    first: u64,
    stride: u64,
    next: u64,
    end: u64,
}

impl SourceSplit for NexmarkSplit {
    type Id = u64;
    fn id(&self) -> u64 {
        self.first
    }
    fn is_finished(&self) -> bool {
        self.next >= self.end
    }
}

const SPLIT_TABLE: &str = "nexmark-split-table";

/// The parallel, checkpointable Nexmark source. Records carry their event
/// time as timestamp; use it with a watermark strategy such as
/// `WatermarkStrategy::for_monotonous_timestamps()` (each split's times
/// never go back).
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    config: NexmarkConfig,
    splits: Option<u32>,
    run: Option<SplitSet<NexmarkSplit>>,
}

impl NexmarkSource {
    pub fn new(config: NexmarkConfig) -> Self {
        NexmarkSource {
            config,
            splits: None,
            run: None,
        }
    }

    /// Cut the events into `splits` strided splits when the job first starts
    /// (default: the parallelism of that start).
    pub fn splits(mut self, splits: u32) -> Self {
        self.splits = Some(splits.max(1));
        self
    }
}

impl Source<Event> for NexmarkSource {
    fn open(&mut self, ctx: &mut SourceContext<'_>) -> OpResult {
        let mut set = SplitSet::open(SPLIT_TABLE, ctx)?;
        if !set.restored() {
            let stride = u64::from(self.splits.unwrap_or(ctx.info.parallelism).max(1));
            let p = u64::from(ctx.info.parallelism.max(1));
            for first in (0..stride).filter(|k| k % p == u64::from(ctx.info.subtask)) {
                let split = NexmarkSplit {
                    first,
                    stride,
                    next: first,
                    end: self.config.events,
                };
                if !split.is_finished() {
                    set.add(split);
                }
            }
        }
        self.run = Some(set);
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<StreamRecord<Event>>, max: usize) -> OpResult<SourceStatus> {
        let config = self.config;
        let set = self.run.as_mut().ok_or("nexmark source polled before open")?;
        let polled = set.poll(out, max, |split, _, out, quota| {
            for _ in 0..quota {
                if split.is_finished() {
                    break;
                }
                let e = event(&config, split.next);
                let timestamp = e.date_time();
                out.push(StreamRecord { value: e, timestamp });
                split.next += split.stride;
            }
            Ok(if split.is_finished() {
                SplitPoll::Finished
            } else {
                SplitPoll::More
            })
        })?;
        Ok(match polled.state {
            SplitsState::Empty => SourceStatus::Finished,
            SplitsState::Active => SourceStatus::More,
            SplitsState::Idle(d) => SourceStatus::Pending(d.max(Duration::from_millis(1))),
        })
    }

    fn snapshot_state(&mut self, ctx: &mut SourceContext<'_>, _checkpoint_id: u64) -> OpResult {
        self.run
            .as_ref()
            .ok_or("nexmark source snapshot before open")?
            .snapshot(ctx.state)
    }

    fn split_progress(&mut self) -> Option<&mut SplitProgress> {
        self.run.as_mut().map(|set| set.progress())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_1_person_3_auctions_46_bids_per_50() {
        let config = NexmarkConfig::with_events(5_000);
        let (mut p, mut a, mut b) = (0, 0, 0);
        for e in config.all_events() {
            match e {
                Event::Person(_) => p += 1,
                Event::Auction(_) => a += 1,
                Event::Bid(_) => b += 1,
            }
        }
        assert_eq!((p, a, b), (100, 300, 4_600));
    }

    #[test]
    fn ids_are_consecutive_and_references_point_near_existing_ids() {
        let config = NexmarkConfig::with_events(20_000);
        let (mut next_person, mut next_auction) = (FIRST_PERSON_ID, FIRST_AUCTION_ID);
        for e in config.all_events() {
            match e {
                Event::Person(p) => {
                    assert_eq!(p.id, next_person);
                    next_person += 1;
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, next_auction);
                    next_auction += 1;
                    assert!(a.seller < next_person + PERSON_ID_LEAD, "{a:?}");
                    assert!(a.expires > a.date_time && a.reserve > a.initial_bid);
                    assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + NUM_CATEGORIES).contains(&a.category));
                }
                Event::Bid(b) => {
                    assert!(b.auction < next_auction + AUCTION_ID_LEAD, "{b:?}");
                    assert!(b.bidder < next_person + PERSON_ID_LEAD, "{b:?}");
                    assert!((100..100_000_000).contains(&b.price), "{b:?}");
                }
            }
        }
    }

    #[test]
    fn events_are_pure_functions_of_their_number_and_seed() {
        let config = NexmarkConfig::with_events(1_000);
        assert_eq!(event(&config, 777), event(&config, 777));
        let other = NexmarkConfig { seed: 1, ..config };
        assert_ne!(event(&config, 777), event(&other, 777));
        // Time advances by event number only.
        assert_eq!(config.timestamp(0), config.base_time_ms);
        assert_eq!(config.timestamp(10_000), config.base_time_ms + 1_000);
    }

    #[test]
    fn records_are_about_the_standard_sizes() {
        let config = NexmarkConfig::with_events(50_000);
        let (mut bytes, mut count) = ([0u64; 3], [0u64; 3]);
        for e in config.all_events() {
            let (i, len) = match &e {
                Event::Person(p) => (0, p.extra.len() + p.name.len() + p.email_address.len() + 40),
                Event::Auction(a) => (1, a.extra.len() + a.item_name.len() + a.description.len() + 56),
                Event::Bid(b) => (2, b.extra.len() + b.url.len() + b.channel.len() + 32),
            };
            bytes[i] += len as u64;
            count[i] += 1;
        }
        let avg: Vec<u64> = (0..3).map(|i| bytes[i] / count[i]).collect();
        for (got, want) in avg.iter().zip([AVG_PERSON_BYTES, AVG_AUCTION_BYTES, AVG_BID_BYTES]) {
            assert!(got.abs_diff(want) * 10 <= want, "average sizes {avg:?}");
        }
    }

    #[test]
    fn strings_are_one_space_in_13_and_letters_evenly() {
        let mut rng = Rng::for_event(0, 42);
        let (mut spaces, mut letters, mut total) = (0u64, [0u64; 26], 0u64);
        for len in 0..2_000u64 {
            let s = rng.string(len % 41);
            assert_eq!(s.len() as u64, len % 41);
            for c in s.bytes() {
                total += 1;
                match c {
                    b' ' => spaces += 1,
                    b'a'..=b'z' => letters[usize::from(c - b'a')] += 1,
                    other => panic!("unexpected character {other:#x} in {s:?}"),
                }
            }
        }
        // 40,000 characters: 1/13 are spaces (about 3,077), each letter
        // 12/13 * 1/26 (about 1,420); allow several standard deviations.
        assert!(
            spaces.abs_diff(total / 13) * 10 < total / 13,
            "{spaces} spaces in {total}"
        );
        let per_letter = (total - spaces) / 26;
        for (i, n) in letters.iter().enumerate() {
            assert!(
                n.abs_diff(per_letter) * 5 < per_letter,
                "letter {} appears {n} times, expected about {per_letter}",
                char::from(b'a' + i as u8)
            );
        }
    }
}
