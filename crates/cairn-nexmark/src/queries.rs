//! Nexmark queries q0-q8, q11 and q12 as Cairn DataStream jobs. Each
//! function adds one query to a job and returns its result stream; the
//! benchmark and the tests put a sink behind it.
//!
//! The queries follow the Nexmark definitions (Beam's and Flink's suites).
//! Where a definition leaves an order or a tie open, the choice here makes
//! the result a deterministic function of the events, so the oracles in
//! [`crate::oracle`] can check it exactly and the Flink version of each query
//! (`benches/nexmark-flink`, the same algorithm) must produce the same
//! checksum:
//! - q4 and q6 handle closed auctions in the order they closed (expiry time,
//!   then auction id), released by event-time timers, so running averages
//!   do not depend on how two subtasks' outputs interleave;
//! - q5 emits every auction tied for the most bids in a window; q7 the
//!   highest bid, ties broken by earlier time, then lower auction id, then
//!   lower bidder id.

use std::time::Duration;

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::generator::{NexmarkConfig, NexmarkSource};
use crate::model::{Auction, Bid, Event, Person};
use crate::signature::{fnv, sig, Signature};

/// Window length of q5 (sliding), q7 and q8 (tumbling), q11's session gap
/// and q12's processing-time windows: 10 s, as in the Nexmark suites.
pub const WINDOW_MS: i64 = 10_000;
/// q5's slide.
pub const SLIDE_MS: i64 = 2_000;
/// q3 looks for people in these states...
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];
/// ...selling in this category.
pub const Q3_CATEGORY: u64 = 10;
/// q6 averages each seller's last this many closed auctions.
pub const Q6_LAST: usize = 10;

/// The queries, by name.
pub const QUERIES: [&str; 11] = ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q11", "q12"];

/// The Nexmark source with event-time watermarks (each split's event times
/// never go back).
pub fn events(env: &StreamEnv, config: NexmarkConfig) -> DataStream<Event> {
    env.source_with_watermarks(
        NexmarkSource::new(config),
        WatermarkStrategy::for_monotonous_timestamps(),
    )
    .uid("nexmark-source")
    .name("Nexmark source")
}

/// Side output of [`split`] with the people.
pub fn persons_tag() -> OutputTag<Person> {
    OutputTag::new("persons")
}

/// Side output of [`split`] with the auctions.
pub fn auctions_tag() -> OutputTag<Auction> {
    OutputTag::new("auctions")
}

/// Bids on the main output, people and auctions on side outputs (records
/// nobody reads are dropped where they are made).
#[derive(Clone, Debug, Default)]
pub struct SplitEvents;

impl ProcessFunction<Event, Bid> for SplitEvents {
    fn process_element(&mut self, value: Event, ctx: &mut ProcessContext<'_, Bid>) -> OpResult {
        match value {
            Event::Bid(b) => ctx.collect(b),
            Event::Person(p) => ctx.output(&persons_tag(), p),
            Event::Auction(a) => ctx.output(&auctions_tag(), a),
        }
        Ok(())
    }
}

/// The three kinds of event as streams of their own.
pub struct Streams {
    pub persons: DataStream<Person>,
    pub auctions: DataStream<Auction>,
    pub bids: DataStream<Bid>,
}

/// Split the events by kind.
pub fn split(events: &DataStream<Event>) -> Streams {
    let bids = events.process(SplitEvents).uid("nexmark-split").name("Split events");
    Streams {
        persons: bids.side_output(&persons_tag()),
        auctions: bids.side_output(&auctions_tag()),
        bids,
    }
}

// ---------------------------------------------------------------------------
// q0-q2: stateless
// ---------------------------------------------------------------------------

/// q0, pass-through: every bid.
pub fn q0(bids: &DataStream<Bid>) -> DataStream<Bid> {
    bids.map(|b| b).name("q0: pass through")
}

/// q1's result: a bid with its price in euro cents.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q1Out {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub date_time: i64,
}

/// Dollars to euros as Nexmark defines it (0.908), in integer cents.
pub fn to_euro_cents(dollar_cents: u64) -> u64 {
    dollar_cents * 908 / 1000
}

/// q1, currency conversion.
pub fn q1(bids: &DataStream<Bid>) -> DataStream<Q1Out> {
    bids.map(|b| Q1Out {
        auction: b.auction,
        bidder: b.bidder,
        price: to_euro_cents(b.price),
        date_time: b.date_time,
    })
    .name("q1: to euros")
}

/// q2's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q2Out {
    pub auction: u64,
    pub price: u64,
}

/// q2 selects bids on these auctions.
pub fn q2_selects(auction: u64) -> bool {
    auction % 123 == 0
}

/// q2, selection: bids on every 123rd auction.
pub fn q2(bids: &DataStream<Bid>) -> DataStream<Q2Out> {
    bids.filter(|b| q2_selects(b.auction))
        .name("q2: select auctions")
        .map(|b| Q2Out {
            auction: b.auction,
            price: b.price,
        })
        .name("q2: project")
}

// ---------------------------------------------------------------------------
// q3: local item suggestion (incremental join)
// ---------------------------------------------------------------------------

/// q3's result: who sells what where.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q3Out {
    pub name: String,
    pub city: String,
    pub state: String,
    pub auction: u64,
}

/// What q3 keeps of a person.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SellerInfo {
    /// In one of [`Q3_STATES`]; otherwise the rest is empty.
    local: bool,
    name: String,
    city: String,
    state: String,
}

/// Joins people (input 1) with their auctions (input 2) by person id as
/// either side arrives; auctions seen before their seller wait in state.
/// Every person reaches the join, so auctions of people outside the states
/// are dropped instead of waiting forever.
#[derive(Clone, Default)]
pub struct LocalItemJoin {
    seller: Option<ValueState<SellerInfo>>,
    waiting: Option<ListState<u64>>,
}

impl KeyedCoProcessFunction<u64, Person, Auction, Q3Out> for LocalItemJoin {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.seller = Some(ctx.value_state(ValueStateDescriptor::new("seller"))?);
        self.waiting = Some(ctx.list_state(ListStateDescriptor::new("waiting-auctions"))?);
        Ok(())
    }

    fn process_element1(&mut self, p: Person, ctx: &mut KeyedCoContext<'_, u64, Q3Out>) -> OpResult {
        let (seller, waiting) = (
            self.seller.as_ref().ok_or("not open")?,
            self.waiting.as_ref().ok_or("not open")?,
        );
        let local = Q3_STATES.contains(&p.state.as_str());
        let info = if local {
            SellerInfo {
                local,
                name: p.name,
                city: p.city,
                state: p.state,
            }
        } else {
            SellerInfo {
                local,
                name: String::new(),
                city: String::new(),
                state: String::new(),
            }
        };
        if local {
            for auction in waiting.get(ctx)? {
                ctx.collect(Q3Out {
                    name: info.name.clone(),
                    city: info.city.clone(),
                    state: info.state.clone(),
                    auction,
                });
            }
        }
        waiting.clear(ctx)?;
        seller.update(ctx, &info)?;
        Ok(())
    }

    fn process_element2(&mut self, a: Auction, ctx: &mut KeyedCoContext<'_, u64, Q3Out>) -> OpResult {
        let (seller, waiting) = (
            self.seller.as_ref().ok_or("not open")?,
            self.waiting.as_ref().ok_or("not open")?,
        );
        match seller.value(ctx)? {
            Some(info) if info.local => ctx.collect(Q3Out {
                name: info.name,
                city: info.city,
                state: info.state,
                auction: a.id,
            }),
            Some(_) => {}
            None => waiting.add(ctx, &a.id)?,
        }
        Ok(())
    }
}

/// q3, local item suggestion: people in OR, ID or CA who sell in category 10.
pub fn q3(persons: &DataStream<Person>, auctions: &DataStream<Auction>) -> DataStream<Q3Out> {
    let auctions = auctions.filter(|a| a.category == Q3_CATEGORY).name("q3: category");
    persons
        .key_by(|p: &Person| p.id)
        .connect(&auctions.key_by(|a: &Auction| a.seller))
        .process(LocalItemJoin::default())
        .uid("q3-join")
        .name("q3: join sellers")
}

// ---------------------------------------------------------------------------
// Winning bids (q4, q6)
// ---------------------------------------------------------------------------

/// A closed auction and the price it sold for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Winner {
    pub auction: u64,
    pub category: u64,
    pub seller: u64,
    pub price: u64,
    /// When it closed (its expiry time).
    pub expires: i64,
}

/// What the winning-bid join keeps of an auction.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct OpenAuction {
    date_time: i64,
    expires: i64,
    reserve: u64,
    category: u64,
    seller: u64,
}

/// A bid seen before its auction.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct EarlyBid {
    price: u64,
    date_time: i64,
}

/// Whether a bid at `date_time` for `price` counts for the auction: made
/// while it was open, at or above the reserve.
pub fn bid_counts(auction_date_time: i64, expires: i64, reserve: u64, date_time: i64, price: u64) -> bool {
    date_time >= auction_date_time && date_time < expires && price >= reserve
}

/// Joins auctions (input 1) with their bids (input 2) by auction id and
/// emits each auction's highest valid bid when event time passes its expiry.
/// Bids that arrive before their auction wait until event time passes them
/// (by then a valid auction would have arrived).
#[derive(Clone, Default)]
pub struct WinningBids {
    auction: Option<ValueState<OpenAuction>>,
    best: Option<ValueState<u64>>,
    early: Option<ListState<EarlyBid>>,
}

/// The winning-bid join's states: the auction, its best price, early bids.
type WinningBidStates<'a> = (
    &'a ValueState<OpenAuction>,
    &'a ValueState<u64>,
    &'a ListState<EarlyBid>,
);

impl WinningBids {
    fn states(&self) -> Result<WinningBidStates<'_>, &'static str> {
        match (&self.auction, &self.best, &self.early) {
            (Some(a), Some(b), Some(e)) => Ok((a, b, e)),
            _ => Err("winning bids used before open"),
        }
    }
}

impl KeyedCoProcessFunction<u64, Auction, Bid, Winner> for WinningBids {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.auction = Some(ctx.value_state(ValueStateDescriptor::new("auction"))?);
        self.best = Some(ctx.value_state(ValueStateDescriptor::new("best-price"))?);
        self.early = Some(ctx.list_state(ListStateDescriptor::new("early-bids"))?);
        Ok(())
    }

    fn process_element1(&mut self, a: Auction, ctx: &mut KeyedCoContext<'_, u64, Winner>) -> OpResult {
        let (auction, best, early) = self.states()?;
        let open = OpenAuction {
            date_time: a.date_time,
            expires: a.expires,
            reserve: a.reserve,
            category: a.category,
            seller: a.seller,
        };
        auction.update(ctx, &open)?;
        ctx.register_event_time_timer(a.expires)?;
        let waiting = early.get(ctx)?;
        if !waiting.is_empty() {
            let top = waiting
                .iter()
                .filter(|b| bid_counts(open.date_time, open.expires, open.reserve, b.date_time, b.price))
                .map(|b| b.price)
                .max();
            if let Some(price) = top {
                best.update(ctx, &price)?;
            }
            early.clear(ctx)?;
        }
        Ok(())
    }

    fn process_element2(&mut self, b: Bid, ctx: &mut KeyedCoContext<'_, u64, Winner>) -> OpResult {
        let (auction, best, early) = self.states()?;
        match auction.value(ctx)? {
            Some(open) => {
                if bid_counts(open.date_time, open.expires, open.reserve, b.date_time, b.price)
                    && best.value(ctx)?.is_none_or(|p| b.price > p)
                {
                    best.update(ctx, &b.price)?;
                }
            }
            None => {
                early.add(
                    ctx,
                    &EarlyBid {
                        price: b.price,
                        date_time: b.date_time,
                    },
                )?;
                ctx.register_event_time_timer(b.date_time)?;
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedCoContext<'_, u64, Winner>) -> OpResult {
        let (auction, best, early) = self.states()?;
        match auction.value(ctx)? {
            Some(open) if timestamp >= open.expires => {
                if let Some(price) = best.value(ctx)? {
                    ctx.collect(Winner {
                        auction: *ctx.key(),
                        category: open.category,
                        seller: open.seller,
                        price,
                        expires: open.expires,
                    });
                }
                auction.clear(ctx)?;
                best.clear(ctx)?;
                early.clear(ctx)?;
            }
            Some(_) => {}
            None => {
                // Event time passed these bids and their auction never came.
                let left: Vec<EarlyBid> = early
                    .get(ctx)?
                    .into_iter()
                    .filter(|b| b.date_time > timestamp)
                    .collect();
                early.update(ctx, &left)?;
            }
        }
        Ok(())
    }
}

/// The closed auctions with their winning prices.
pub fn winning_bids(auctions: &DataStream<Auction>, bids: &DataStream<Bid>) -> DataStream<Winner> {
    auctions
        .key_by(|a: &Auction| a.id)
        .connect(&bids.key_by(|b: &Bid| b.auction))
        .process(WinningBids::default())
        .uid("winning-bids")
        .name("winning bids")
}

/// Keeps winners of one key until event time passes their expiry, then
/// hands them over in closing order (expiry, then auction id).
fn release_closed<C: cairn::state::StateContext>(
    buffer: &ListState<Winner>,
    ctx: &mut C,
    timestamp: i64,
) -> Result<Vec<Winner>, cairn::state::StateError> {
    let (mut due, left): (Vec<Winner>, Vec<Winner>) =
        buffer.get(ctx)?.into_iter().partition(|w| w.expires <= timestamp);
    buffer.update(ctx, &left)?;
    due.sort_by_key(|w| (w.expires, w.auction));
    Ok(due)
}

/// q4's result: the running average closing price of a category.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q4Out {
    pub category: u64,
    pub average_price: u64,
}

/// Running average of winning prices per category, in closing order.
#[derive(Clone, Default)]
pub struct CategoryAverage {
    buffer: Option<ListState<Winner>>,
    total: Option<ValueState<(u64, u64)>>,
}

impl KeyedProcessFunction<u64, Winner, Q4Out> for CategoryAverage {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.buffer = Some(ctx.list_state(ListStateDescriptor::new("closing"))?);
        self.total = Some(ctx.value_state(ValueStateDescriptor::new("sum-and-count"))?);
        Ok(())
    }

    fn process_element(&mut self, w: Winner, ctx: &mut KeyedContext<'_, u64, Q4Out>) -> OpResult {
        ctx.register_event_time_timer(w.expires)?;
        self.buffer.as_ref().ok_or("not open")?.add(ctx, &w)?;
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedContext<'_, u64, Q4Out>) -> OpResult {
        let (buffer, total) = (
            self.buffer.as_ref().ok_or("not open")?,
            self.total.as_ref().ok_or("not open")?,
        );
        let due = release_closed(buffer, ctx, timestamp)?;
        if due.is_empty() {
            return Ok(());
        }
        let (mut sum, mut count) = total.value(ctx)?.unwrap_or((0, 0));
        for w in due {
            sum += w.price;
            count += 1;
            ctx.collect(Q4Out {
                category: w.category,
                average_price: sum / count,
            });
        }
        total.update(ctx, &(sum, count))?;
        Ok(())
    }
}

/// q4, average closing price per category.
pub fn q4(auctions: &DataStream<Auction>, bids: &DataStream<Bid>) -> DataStream<Q4Out> {
    winning_bids(auctions, bids)
        .key_by(|w: &Winner| w.category)
        .process(CategoryAverage::default())
        .uid("q4-average")
        .name("q4: average per category")
}

/// q6's result: the average closing price of a seller's last auctions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q6Out {
    pub seller: u64,
    pub average_price: u64,
}

/// Average of each seller's last [`Q6_LAST`] winning prices, in closing order.
#[derive(Clone, Default)]
pub struct SellerAverage {
    buffer: Option<ListState<Winner>>,
    last: Option<ValueState<Vec<u64>>>,
}

impl KeyedProcessFunction<u64, Winner, Q6Out> for SellerAverage {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.buffer = Some(ctx.list_state(ListStateDescriptor::new("closing"))?);
        self.last = Some(ctx.value_state(ValueStateDescriptor::new("last-prices"))?);
        Ok(())
    }

    fn process_element(&mut self, w: Winner, ctx: &mut KeyedContext<'_, u64, Q6Out>) -> OpResult {
        ctx.register_event_time_timer(w.expires)?;
        self.buffer.as_ref().ok_or("not open")?.add(ctx, &w)?;
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedContext<'_, u64, Q6Out>) -> OpResult {
        let (buffer, last) = (
            self.buffer.as_ref().ok_or("not open")?,
            self.last.as_ref().ok_or("not open")?,
        );
        let due = release_closed(buffer, ctx, timestamp)?;
        if due.is_empty() {
            return Ok(());
        }
        let mut prices = last.value(ctx)?.unwrap_or_default();
        for w in due {
            if prices.len() == Q6_LAST {
                prices.remove(0);
            }
            prices.push(w.price);
            ctx.collect(Q6Out {
                seller: w.seller,
                average_price: prices.iter().sum::<u64>() / prices.len() as u64,
            });
        }
        last.update(ctx, &prices)?;
        Ok(())
    }
}

/// q6, average selling price by seller (last 10 closed auctions).
pub fn q6(auctions: &DataStream<Auction>, bids: &DataStream<Bid>) -> DataStream<Q6Out> {
    winning_bids(auctions, bids)
        .key_by(|w: &Winner| w.seller)
        .process(SellerAverage::default())
        .uid("q6-average")
        .name("q6: average per seller")
}

// ---------------------------------------------------------------------------
// q5, q7: windows
// ---------------------------------------------------------------------------

/// Counts a window's records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: &T, acc: &mut u64) {
        *acc += 1;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Bids of one auction in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AuctionCount {
    pub window_end: i64,
    pub auction: u64,
    pub count: u64,
}

/// q5's result: an auction with the most bids in the window ending at `window_end`.
pub type Q5Out = AuctionCount;

/// Per window, the auctions tied for the most bids, emitted when event
/// time passes the window.
#[derive(Clone, Default)]
pub struct HottestAuctions {
    top: Option<ValueState<(u64, Vec<u64>)>>,
}

impl KeyedProcessFunction<i64, AuctionCount, Q5Out> for HottestAuctions {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.top = Some(ctx.value_state(ValueStateDescriptor::new("top"))?);
        Ok(())
    }

    fn process_element(&mut self, c: AuctionCount, ctx: &mut KeyedContext<'_, i64, Q5Out>) -> OpResult {
        let top = self.top.as_ref().ok_or("not open")?;
        let (max, mut auctions) = top.value(ctx)?.unwrap_or((0, Vec::new()));
        if c.count > max {
            top.update(ctx, &(c.count, vec![c.auction]))?;
            ctx.register_event_time_timer(c.window_end - 1)?;
        } else if c.count == max {
            auctions.push(c.auction);
            top.update(ctx, &(max, auctions))?;
        }
        Ok(())
    }

    fn on_timer(&mut self, _timestamp: i64, ctx: &mut KeyedContext<'_, i64, Q5Out>) -> OpResult {
        let top = self.top.as_ref().ok_or("not open")?;
        if let Some((count, mut auctions)) = top.value(ctx)? {
            let window_end = *ctx.key();
            auctions.sort_unstable();
            for auction in auctions {
                ctx.collect(AuctionCount {
                    window_end,
                    auction,
                    count,
                });
            }
            top.clear(ctx)?;
        }
        Ok(())
    }
}

/// q5, hot items: the auctions with the most bids in each 10 s window,
/// sliding by 2 s.
pub fn q5(bids: &DataStream<Bid>) -> DataStream<Q5Out> {
    bids.key_by(|b: &Bid| b.auction)
        .window(SlidingEventTimeWindows::of(
            Duration::from_millis(WINDOW_MS as u64),
            Duration::from_millis(SLIDE_MS as u64),
        ))
        .aggregate_with_window(Count, |auction: &u64, w: &TimeWindow, count| AuctionCount {
            window_end: w.end,
            auction: *auction,
            count,
        })
        .uid("q5-count")
        .name("q5: bids per auction and window")
        .key_by(|c: &AuctionCount| c.window_end)
        .process(HottestAuctions::default())
        .uid("q5-top")
        .name("q5: hottest auctions")
}

/// A bid as q7 ranks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RankedBid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub date_time: i64,
}

impl RankedBid {
    pub fn of(b: &Bid) -> Self {
        RankedBid {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
        }
    }

    /// Higher price, then earlier, then lower auction id, then lower bidder id.
    pub fn beats(&self, other: &RankedBid) -> bool {
        (other.price, self.date_time, self.auction, self.bidder)
            < (self.price, other.date_time, other.auction, other.bidder)
    }
}

/// Keeps the best bid.
#[derive(Clone, Copy, Debug, Default)]
pub struct MaxBid;

impl AggregateFunction<Bid> for MaxBid {
    type Acc = Option<RankedBid>;
    type Out = Option<RankedBid>;
    fn create_accumulator(&self) -> Option<RankedBid> {
        None
    }
    fn add(&self, b: &Bid, acc: &mut Option<RankedBid>) {
        let r = RankedBid::of(b);
        if acc.is_none_or(|best| r.beats(&best)) {
            *acc = Some(r);
        }
    }
    fn get_result(&self, acc: &Option<RankedBid>) -> Option<RankedBid> {
        *acc
    }
    fn merge(&self, a: Option<RankedBid>, b: Option<RankedBid>) -> Option<RankedBid> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if y.beats(&x) { y } else { x }),
            (x, None) => x,
            (None, y) => y,
        }
    }
}

/// q7's result: the highest bid of the 10 s window ending at `window_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q7Out {
    pub window_end: i64,
    pub bid: RankedBid,
}

/// The best of each window's per-key bests, emitted when event time passes it.
#[derive(Clone, Default)]
pub struct HighestOfWindow {
    best: Option<ValueState<RankedBid>>,
}

impl KeyedProcessFunction<i64, Q7Out, Q7Out> for HighestOfWindow {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.best = Some(ctx.value_state(ValueStateDescriptor::new("best"))?);
        Ok(())
    }

    fn process_element(&mut self, c: Q7Out, ctx: &mut KeyedContext<'_, i64, Q7Out>) -> OpResult {
        let best = self.best.as_ref().ok_or("not open")?;
        match best.value(ctx)? {
            None => {
                best.update(ctx, &c.bid)?;
                ctx.register_event_time_timer(c.window_end - 1)?;
            }
            Some(b) if c.bid.beats(&b) => best.update(ctx, &c.bid)?,
            Some(_) => {}
        }
        Ok(())
    }

    fn on_timer(&mut self, _timestamp: i64, ctx: &mut KeyedContext<'_, i64, Q7Out>) -> OpResult {
        let best = self.best.as_ref().ok_or("not open")?;
        if let Some(bid) = best.value(ctx)? {
            let window_end = *ctx.key();
            ctx.collect(Q7Out { window_end, bid });
            best.clear(ctx)?;
        }
        Ok(())
    }
}

/// q7, highest bid per 10 s tumbling window: the best bid per auction and
/// window first (in parallel), then the best of those per window.
pub fn q7(bids: &DataStream<Bid>) -> DataStream<Q7Out> {
    bids.key_by(|b: &Bid| b.auction)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(WINDOW_MS as u64)))
        .aggregate_with_window(MaxBid, |_: &u64, w: &TimeWindow, best: Option<RankedBid>| {
            best.map(|bid| Q7Out { window_end: w.end, bid })
        })
        .uid("q7-per-auction")
        .name("q7: highest bid per auction and window")
        .flat_map(|best| best)
        .name("q7: non-empty")
        .key_by(|c: &Q7Out| c.window_end)
        .process(HighestOfWindow::default())
        .uid("q7-per-window")
        .name("q7: highest bid per window")
}

// ---------------------------------------------------------------------------
// q8: window join
// ---------------------------------------------------------------------------

/// Start of the 10 s tumbling window holding `ts`.
pub fn window_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(WINDOW_MS)
}

/// q8's result: a person who opened an auction in the window they joined.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q8Out {
    pub person: u64,
    pub name: String,
    pub window_start: i64,
}

/// What q8 keeps of a new person.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NewPerson {
    name: String,
    window_start: i64,
    reported: bool,
}

/// Joins people (input 1) and auctions by seller (input 2) within 10 s
/// tumbling windows; state ends with the window.
#[derive(Clone, Default)]
pub struct NewSellerJoin {
    person: Option<ValueState<NewPerson>>,
    /// Windows in which this seller opened auctions before the person came.
    auction_windows: Option<ValueState<Vec<i64>>>,
}

impl KeyedCoProcessFunction<u64, Person, Auction, Q8Out> for NewSellerJoin {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.person = Some(ctx.value_state(ValueStateDescriptor::new("person"))?);
        self.auction_windows = Some(ctx.value_state(ValueStateDescriptor::new("auction-windows"))?);
        Ok(())
    }

    fn process_element1(&mut self, p: Person, ctx: &mut KeyedCoContext<'_, u64, Q8Out>) -> OpResult {
        let (person, windows) = (
            self.person.as_ref().ok_or("not open")?,
            self.auction_windows.as_ref().ok_or("not open")?,
        );
        let ws = window_start(p.date_time);
        let reported = windows.value(ctx)?.unwrap_or_default().contains(&ws);
        if reported {
            ctx.collect(Q8Out {
                person: p.id,
                name: p.name.clone(),
                window_start: ws,
            });
        }
        windows.clear(ctx)?;
        person.update(
            ctx,
            &NewPerson {
                name: p.name,
                window_start: ws,
                reported,
            },
        )?;
        ctx.register_event_time_timer(ws + WINDOW_MS - 1)?;
        Ok(())
    }

    fn process_element2(&mut self, a: Auction, ctx: &mut KeyedCoContext<'_, u64, Q8Out>) -> OpResult {
        let (person, windows) = (
            self.person.as_ref().ok_or("not open")?,
            self.auction_windows.as_ref().ok_or("not open")?,
        );
        let ws = window_start(a.date_time);
        match person.value(ctx)? {
            Some(mut p) => {
                if p.window_start == ws && !p.reported {
                    ctx.collect(Q8Out {
                        person: a.seller,
                        name: p.name.clone(),
                        window_start: ws,
                    });
                    p.reported = true;
                    person.update(ctx, &p)?;
                }
            }
            None => {
                let mut seen = windows.value(ctx)?.unwrap_or_default();
                if !seen.contains(&ws) {
                    seen.push(ws);
                    windows.update(ctx, &seen)?;
                    ctx.register_event_time_timer(ws + WINDOW_MS - 1)?;
                }
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedCoContext<'_, u64, Q8Out>) -> OpResult {
        let (person, windows) = (
            self.person.as_ref().ok_or("not open")?,
            self.auction_windows.as_ref().ok_or("not open")?,
        );
        if person
            .value(ctx)?
            .is_some_and(|p| p.window_start + WINDOW_MS - 1 <= timestamp)
        {
            person.clear(ctx)?;
        }
        if let Some(seen) = windows.value(ctx)? {
            let left: Vec<i64> = seen.into_iter().filter(|w| w + WINDOW_MS - 1 > timestamp).collect();
            if left.is_empty() {
                windows.clear(ctx)?;
            } else {
                windows.update(ctx, &left)?;
            }
        }
        Ok(())
    }
}

/// q8, monitor new users: people who opened an auction within the 10 s
/// tumbling window in which they joined.
pub fn q8(persons: &DataStream<Person>, auctions: &DataStream<Auction>) -> DataStream<Q8Out> {
    persons
        .key_by(|p: &Person| p.id)
        .connect(&auctions.key_by(|a: &Auction| a.seller))
        .process(NewSellerJoin::default())
        .uid("q8-join")
        .name("q8: join new sellers")
}

// ---------------------------------------------------------------------------
// q11, q12: sessions and processing-time windows
// ---------------------------------------------------------------------------

/// Bids of one bidder in one window (q11: session, q12: processing time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BidderCount {
    pub bidder: u64,
    pub count: u64,
    pub start: i64,
    pub end: i64,
}

fn bidder_count(bidder: &u64, w: &TimeWindow, count: u64) -> BidderCount {
    BidderCount {
        bidder: *bidder,
        count,
        start: w.start,
        end: w.end,
    }
}

/// q11, user sessions: bids per bidder per session (10 s gap).
pub fn q11(bids: &DataStream<Bid>) -> DataStream<BidderCount> {
    bids.key_by(|b: &Bid| b.bidder)
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate_with_window(Count, bidder_count)
        .uid("q11-sessions")
        .name("q11: bids per session")
}

/// q12, processing-time windows: bids per bidder per 10 s of wall-clock time.
pub fn q12(bids: &DataStream<Bid>) -> DataStream<BidderCount> {
    bids.key_by(|b: &Bid| b.bidder)
        .window(TumblingProcessingTimeWindows::of(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate_with_window(Count, bidder_count)
        .uid("q12-windows")
        .name("q12: bids per processing-time window")
}

// ---------------------------------------------------------------------------
// Signatures (checksums shared with the Flink jobs)
// ---------------------------------------------------------------------------

impl Signature for Bid {
    fn signature(&self) -> u64 {
        sig(&[
            self.auction,
            self.bidder,
            self.price,
            self.date_time as u64,
            fnv(&self.channel),
            fnv(&self.url),
            fnv(&self.extra),
        ])
    }
}

impl Signature for Q1Out {
    fn signature(&self) -> u64 {
        sig(&[self.auction, self.bidder, self.price, self.date_time as u64])
    }
}

impl Signature for Q2Out {
    fn signature(&self) -> u64 {
        sig(&[self.auction, self.price])
    }
}

impl Signature for Q3Out {
    fn signature(&self) -> u64 {
        sig(&[fnv(&self.name), fnv(&self.city), fnv(&self.state), self.auction])
    }
}

impl Signature for Winner {
    fn signature(&self) -> u64 {
        sig(&[
            self.auction,
            self.category,
            self.seller,
            self.price,
            self.expires as u64,
        ])
    }
}

impl Signature for Q4Out {
    fn signature(&self) -> u64 {
        sig(&[self.category, self.average_price])
    }
}

impl Signature for AuctionCount {
    fn signature(&self) -> u64 {
        sig(&[self.window_end as u64, self.auction, self.count])
    }
}

impl Signature for Q6Out {
    fn signature(&self) -> u64 {
        sig(&[self.seller, self.average_price])
    }
}

impl Signature for Q7Out {
    fn signature(&self) -> u64 {
        let b = &self.bid;
        sig(&[self.window_end as u64, b.auction, b.bidder, b.price, b.date_time as u64])
    }
}

impl Signature for Q8Out {
    fn signature(&self) -> u64 {
        sig(&[self.person, fnv(&self.name), self.window_start as u64])
    }
}

impl Signature for BidderCount {
    /// Session results are whole records; processing-time windows (q12)
    /// differ from run to run, so the benchmark signs q12 by
    /// [`BidderCount::total_signature`] instead.
    fn signature(&self) -> u64 {
        sig(&[self.bidder, self.count, self.start as u64, self.end as u64])
    }
}

impl BidderCount {
    /// Adds up to the same sum however the bids were cut into windows.
    pub fn total_signature(&self) -> u64 {
        self.count.wrapping_mul(sig(&[self.bidder]))
    }
}
