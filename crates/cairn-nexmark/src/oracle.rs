//! Each query's result computed with no engine: plain loops and maps over
//! the whole event sequence, written from the query definitions rather than
//! from the streaming code, so the tests compare two independent answers.
//!
//! Results whose order the query fixes (q4 and q6 per key) are returned as
//! sequences per key; the others as sorted vectors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::generator::NexmarkConfig;
use crate::model::{Auction, Bid, Event, Person};
use crate::queries::{
    bid_counts, q2_selects, to_euro_cents, window_start, AuctionCount, BidderCount, Q1Out, Q2Out, Q3Out, Q4Out, Q6Out,
    Q7Out, Q8Out, RankedBid, Winner, Q3_CATEGORY, Q3_STATES, Q6_LAST, SLIDE_MS, WINDOW_MS,
};

/// The events of a run, split by kind, in event-number order.
pub struct Events {
    pub persons: Vec<Person>,
    pub auctions: Vec<Auction>,
    pub bids: Vec<Bid>,
}

impl Events {
    pub fn generate(config: &NexmarkConfig) -> Self {
        let mut e = Events {
            persons: Vec::new(),
            auctions: Vec::new(),
            bids: Vec::new(),
        };
        for event in config.all_events() {
            match event {
                Event::Person(p) => e.persons.push(p),
                Event::Auction(a) => e.auctions.push(a),
                Event::Bid(b) => e.bids.push(b),
            }
        }
        e
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

pub fn q0(e: &Events) -> Vec<Bid> {
    e.bids.clone()
}

pub fn q1(e: &Events) -> Vec<Q1Out> {
    sorted(
        e.bids
            .iter()
            .map(|b| Q1Out {
                auction: b.auction,
                bidder: b.bidder,
                price: to_euro_cents(b.price),
                date_time: b.date_time,
            })
            .collect(),
    )
}

pub fn q2(e: &Events) -> Vec<Q2Out> {
    sorted(
        e.bids
            .iter()
            .filter(|b| q2_selects(b.auction))
            .map(|b| Q2Out {
                auction: b.auction,
                price: b.price,
            })
            .collect(),
    )
}

/// Every (local seller, category-10 auction) pair.
pub fn q3(e: &Events) -> Vec<Q3Out> {
    let local: HashMap<u64, &Person> = e
        .persons
        .iter()
        .filter(|p| Q3_STATES.contains(&p.state.as_str()))
        .map(|p| (p.id, p))
        .collect();
    sorted(
        e.auctions
            .iter()
            .filter(|a| a.category == Q3_CATEGORY)
            .filter_map(|a| {
                local.get(&a.seller).map(|p| Q3Out {
                    name: p.name.clone(),
                    city: p.city.clone(),
                    state: p.state.clone(),
                    auction: a.id,
                })
            })
            .collect(),
    )
}

/// Each auction with a valid bid, with its highest valid price.
pub fn winners(e: &Events) -> Vec<Winner> {
    let mut by_auction: HashMap<u64, Vec<&Bid>> = HashMap::new();
    for b in &e.bids {
        by_auction.entry(b.auction).or_default().push(b);
    }
    sorted(
        e.auctions
            .iter()
            .filter_map(|a| {
                let price = by_auction
                    .get(&a.id)?
                    .iter()
                    .filter(|b| bid_counts(a.date_time, a.expires, a.reserve, b.date_time, b.price))
                    .map(|b| b.price)
                    .max()?;
                Some(Winner {
                    auction: a.id,
                    category: a.category,
                    seller: a.seller,
                    price,
                    expires: a.expires,
                })
            })
            .collect(),
    )
}

/// Winners per `key`, in closing order (expiry, then auction id).
fn closing_order(winners: Vec<Winner>, key: impl Fn(&Winner) -> u64) -> BTreeMap<u64, Vec<Winner>> {
    let mut by: BTreeMap<u64, Vec<Winner>> = BTreeMap::new();
    for w in winners {
        by.entry(key(&w)).or_default().push(w);
    }
    for v in by.values_mut() {
        v.sort_by_key(|w| (w.expires, w.auction));
    }
    by
}

/// Per category, the running averages in closing order.
pub fn q4(e: &Events) -> BTreeMap<u64, Vec<Q4Out>> {
    closing_order(winners(e), |w| w.category)
        .into_iter()
        .map(|(category, ws)| {
            let (mut sum, mut n) = (0, 0);
            let out = ws
                .iter()
                .map(|w| {
                    sum += w.price;
                    n += 1;
                    Q4Out {
                        category,
                        average_price: sum / n,
                    }
                })
                .collect();
            (category, out)
        })
        .collect()
}

/// Per window end, the auctions tied for the most bids.
pub fn q5(e: &Events) -> Vec<AuctionCount> {
    let mut counts: HashMap<(i64, u64), u64> = HashMap::new();
    for b in &e.bids {
        // Every window [s, s + WINDOW_MS) with s a multiple of the slide and s <= t.
        let last_start = b.date_time - b.date_time.rem_euclid(SLIDE_MS);
        let mut s = last_start;
        while s > b.date_time - WINDOW_MS {
            *counts.entry((s + WINDOW_MS, b.auction)).or_default() += 1;
            s -= SLIDE_MS;
        }
    }
    let mut top: BTreeMap<i64, (u64, Vec<u64>)> = BTreeMap::new();
    for ((end, auction), n) in counts {
        let t = top.entry(end).or_insert((0, Vec::new()));
        if n > t.0 {
            *t = (n, vec![auction]);
        } else if n == t.0 {
            t.1.push(auction);
        }
    }
    sorted(
        top.into_iter()
            .flat_map(|(window_end, (count, auctions))| {
                auctions.into_iter().map(move |auction| AuctionCount {
                    window_end,
                    auction,
                    count,
                })
            })
            .collect(),
    )
}

/// Per seller, the averages of the last [`Q6_LAST`] prices, in closing order.
pub fn q6(e: &Events) -> BTreeMap<u64, Vec<Q6Out>> {
    closing_order(winners(e), |w| w.seller)
        .into_iter()
        .map(|(seller, ws)| {
            let prices: Vec<u64> = ws.iter().map(|w| w.price).collect();
            let out = (0..prices.len())
                .map(|i| {
                    let last = &prices[(i + 1).saturating_sub(Q6_LAST)..=i];
                    Q6Out {
                        seller,
                        average_price: last.iter().sum::<u64>() / last.len() as u64,
                    }
                })
                .collect();
            (seller, out)
        })
        .collect()
}

/// Per 10 s tumbling window, its best bid.
pub fn q7(e: &Events) -> Vec<Q7Out> {
    let mut best: BTreeMap<i64, RankedBid> = BTreeMap::new();
    for b in &e.bids {
        let r = RankedBid::of(b);
        let end = window_start(b.date_time) + WINDOW_MS;
        best.entry(end)
            .and_modify(|cur| {
                if r.beats(cur) {
                    *cur = r
                }
            })
            .or_insert(r);
    }
    best.into_iter()
        .map(|(window_end, bid)| Q7Out { window_end, bid })
        .collect()
}

/// People with an auction in the window they joined.
pub fn q8(e: &Events) -> Vec<Q8Out> {
    let sellers: BTreeSet<(u64, i64)> = e
        .auctions
        .iter()
        .map(|a| (a.seller, window_start(a.date_time)))
        .collect();
    sorted(
        e.persons
            .iter()
            .filter(|p| sellers.contains(&(p.id, window_start(p.date_time))))
            .map(|p| Q8Out {
                person: p.id,
                name: p.name.clone(),
                window_start: window_start(p.date_time),
            })
            .collect(),
    )
}

/// Sessions per bidder: bids closer than the gap (or exactly at it) join.
pub fn q11(e: &Events) -> Vec<BidderCount> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for b in &e.bids {
        times.entry(b.bidder).or_default().push(b.date_time);
    }
    let mut out = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        let mut session: Option<BidderCount> = None;
        for t in ts {
            match &mut session {
                Some(s) if t <= s.end => {
                    s.count += 1;
                    s.end = s.end.max(t + WINDOW_MS);
                }
                _ => {
                    out.extend(session.take());
                    session = Some(BidderCount {
                        bidder,
                        count: 1,
                        start: t,
                        end: t + WINDOW_MS,
                    });
                }
            }
        }
        out.extend(session);
    }
    sorted(out)
}

/// Bids per bidder over the whole run (q12's windows add up to these).
pub fn q12_totals(e: &Events) -> BTreeMap<u64, u64> {
    let mut totals = BTreeMap::new();
    for b in &e.bids {
        *totals.entry(b.bidder).or_default() += 1;
    }
    totals
}
