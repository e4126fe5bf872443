//! The heap backend's map of one (state, key group): a hash map cut into
//! pages, each behind an `Arc`.
//!
//! A snapshot clones the page pointers (O(pages), not O(entries)); a later
//! write to a page still shared with a snapshot copies that page only, not
//! the whole key group. With pages of a few hundred entries, the first write
//! after a snapshot costs a few kilobytes of copying instead of the group's
//! size, and a snapshot in flight doubles the memory of the pages written
//! while it is written, not of every group touched.
//!
//! A key is hashed once ([`HashedKey`], [`key_hash`]): bits 32 and up of the
//! hash choose its page, and the page's table ([`PageTable`]) mixes all of
//! them again for the slot.

use std::sync::Arc;

use crate::heap::SmallBytes;
use crate::page_table::{key_hash, HashedKey, PageTable};

/// Pages split (their number doubles) when they hold this many entries on average.
pub(crate) const PAGE_ENTRIES: usize = 512;

type Page<V> = PageTable<V>;

/// A page owned by the live map (written without atomics or checks), or
/// shared with snapshots (copied, or taken back, on the first write).
#[derive(Debug)]
enum Slot<V> {
    Owned(Page<V>),
    Shared(Arc<Page<V>>),
}

impl<V> Slot<V> {
    #[inline]
    fn page(&self) -> &Page<V> {
        match self {
            Slot::Owned(p) => p,
            Slot::Shared(p) => p,
        }
    }
}

/// A paged copy-on-write hash map from key bytes to `V`.
#[derive(Debug)]
pub(crate) struct Paged<V> {
    /// A power-of-two number of pages.
    pages: Vec<Slot<V>>,
    len: usize,
}

impl<V> Default for Paged<V> {
    fn default() -> Self {
        Paged {
            pages: vec![Slot::Owned(Page::default())],
            len: 0,
        }
    }
}

#[inline]
fn page_of(hash: u64, pages: usize) -> usize {
    ((hash >> 32) as usize) & (pages - 1)
}

/// The page of `slot`, owned by the live map (copied when a snapshot still
/// holds it; taken back without a copy once no snapshot does).
#[inline]
fn owned<V: Clone>(slot: &mut Slot<V>) -> &mut Page<V> {
    if let Slot::Shared(shared) = slot {
        let shared = std::mem::take(shared);
        let page = Arc::try_unwrap(shared).unwrap_or_else(|still_shared| (*still_shared).clone());
        *slot = Slot::Owned(page);
    }
    match slot {
        Slot::Owned(p) => p,
        Slot::Shared(_) => unreachable!("made owned above"),
    }
}

impl<V: Clone> Paged<V> {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn page(&self, hash: u64) -> &Page<V> {
        self.pages[page_of(hash, self.pages.len())].page()
    }

    #[inline]
    pub fn get(&self, key: HashedKey<'_>) -> Option<&V> {
        let h = key.hash();
        self.page(h).get(h, key.bytes())
    }

    /// The value of `key` and a hint to its slot for [`Paged::insert_hinted`].
    #[inline]
    pub fn get_indexed(&self, key: HashedKey<'_>) -> Option<(&V, usize)> {
        let h = key.hash();
        self.page(h).get_indexed(h, key.bytes())
    }

    #[inline]
    pub fn contains_key(&self, key: HashedKey<'_>) -> bool {
        let h = key.hash();
        self.page(h).contains(h, key.bytes())
    }

    /// Start fetching the slots the key of `hash` would be in, without
    /// waiting for them (see [`PageTable::touch`]).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.page(hash).touch(hash);
    }

    /// A read-only view sharing every page, for a snapshot: O(pages). The
    /// pages this map owned become shared; each is copied (or taken back,
    /// once the snapshot is gone) on its first write.
    pub fn share(&mut self) -> Paged<V> {
        let pages = self
            .pages
            .iter_mut()
            .map(|slot| {
                if let Slot::Owned(page) = slot {
                    let page = std::mem::take(page);
                    *slot = Slot::Shared(Arc::new(page));
                }
                match slot {
                    Slot::Shared(p) => Slot::Shared(p.clone()),
                    Slot::Owned(_) => unreachable!("made shared above"),
                }
            })
            .collect();
        Paged { pages, len: self.len }
    }

    /// The value of `key` for writing; a shared page is copied only when
    /// the key is in it.
    #[inline]
    pub fn get_mut(&mut self, key: HashedKey<'_>) -> Option<&mut V> {
        let (h, key) = (key.hash(), key.bytes());
        let i = page_of(h, self.pages.len());
        if let Slot::Shared(p) = &self.pages[i] {
            if !p.contains(h, key) {
                return None;
            }
        }
        owned(&mut self.pages[i]).get_mut(h, key)
    }

    /// Make room before inserting a key that may be new.
    #[inline]
    fn reserve_one(&mut self, hash: u64, key: &[u8]) {
        if self.len >= self.pages.len() * PAGE_ENTRIES && !self.page(hash).contains(hash, key) {
            self.grow();
        }
    }

    /// Set `key` to `value` (one lookup).
    #[inline]
    pub fn insert(&mut self, key: HashedKey<'_>, value: V) {
        let (h, key) = (key.hash(), key.bytes());
        self.reserve_one(h, key);
        let i = page_of(h, self.pages.len());
        if owned(&mut self.pages[i]).insert(h, key, value) {
            self.len += 1;
        }
    }

    /// [`Paged::insert`] after a read of the same key gave `hint`: when the
    /// key's page is owned and the hinted slot still holds the key, the value
    /// is replaced there without a probe (a read-modify-write finds its key
    /// once); otherwise as `insert`.
    #[inline]
    pub fn insert_hinted(&mut self, key: HashedKey<'_>, value: V, hint: usize) {
        let i = page_of(key.hash(), self.pages.len());
        if let Slot::Owned(page) = &mut self.pages[i] {
            if let Some(v) = page.get_mut_at(hint, key.bytes()) {
                *v = value;
                return;
            }
        }
        self.insert(key, value)
    }

    /// The value of `key` for writing, inserting `make()` first when absent
    /// (one lookup).
    #[inline]
    pub fn get_or_insert_with(&mut self, key: HashedKey<'_>, make: impl FnOnce() -> V) -> &mut V {
        let (h, key) = (key.hash(), key.bytes());
        self.reserve_one(h, key);
        let i = page_of(h, self.pages.len());
        // Writing either way: a shared page is copied.
        let (value, inserted) = owned(&mut self.pages[i]).get_or_insert_with(h, key, make);
        if inserted {
            self.len += 1;
        }
        value
    }

    /// Remove `key`; a shared page is copied only when the key is in it.
    pub fn remove(&mut self, key: HashedKey<'_>) -> Option<V> {
        let (h, key) = (key.hash(), key.bytes());
        if !self.page(h).contains(h, key) {
            return None;
        }
        let i = page_of(h, self.pages.len());
        let removed = owned(&mut self.pages[i]).remove(h, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Every entry, page by page (no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&SmallBytes, &V)> {
        self.pages.iter().flat_map(|p| p.page().iter())
    }

    /// Make room for `additional` more entries at once: a restore that
    /// knows a group's size creates its pages (and their tables) once
    /// instead of doubling them and rehashing every entry on the way.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len + additional;
        let pages = want.div_ceil(PAGE_ENTRIES).next_power_of_two().max(1);
        if pages > self.pages.len() {
            self.regrow(pages, want);
        } else {
            let per_page = want / self.pages.len() + 1;
            for slot in &mut self.pages {
                if let Slot::Owned(page) = slot {
                    page.reserve(per_page.saturating_sub(page.len()));
                }
            }
        }
    }

    /// Double the pages (they are full on average).
    fn grow(&mut self) {
        self.regrow(self.pages.len() * 2, self.len);
    }

    /// Spread the entries over `n` pages sized for `entries` in all. Entries
    /// of pages no snapshot shares move; the others are copied (the snapshot
    /// keeps its page).
    fn regrow(&mut self, n: usize, entries: usize) {
        let per_page = entries / n + 1;
        let mut pages: Vec<Page<V>> = (0..n).map(|_| PageTable::with_capacity(per_page)).collect();
        for slot in self.pages.drain(..) {
            let owned = match slot {
                Slot::Owned(p) => Ok(p),
                Slot::Shared(p) => Arc::try_unwrap(p),
            };
            match owned {
                Ok(page) => {
                    for (k, v) in page.into_entries() {
                        let h = key_hash(&k);
                        pages[page_of(h, n)].insert_new(h, k, v);
                    }
                }
                Err(shared) => {
                    for (k, v) in shared.iter() {
                        let h = key_hash(k);
                        pages[page_of(h, n)].insert_new(h, k.clone(), v.clone());
                    }
                }
            }
        }
        self.pages = pages.into_iter().map(Slot::Owned).collect();
    }

    /// Number of pages (for tests).
    #[cfg(test)]
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Entries of page `i` and their longest probe (for tests).
    #[cfg(test)]
    pub fn page_fill(&self, i: usize) -> (usize, usize) {
        let page = self.pages[i].page();
        (page.len(), page.longest_probe())
    }

    /// Whether page `i` is shared with a snapshot (for tests).
    #[cfg(test)]
    pub fn page_shared(&self, i: usize) -> bool {
        matches!(&self.pages[i], Slot::Shared(p) if Arc::strong_count(p) > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 4] {
        i.to_le_bytes()
    }

    #[test]
    fn grows_into_pages_and_keeps_every_entry() {
        let mut m: Paged<u32> = Paged::default();
        for i in 0..5_000 {
            m.insert(HashedKey::new(&key(i)), i);
        }
        assert_eq!(m.len(), 5_000);
        assert!(m.page_count() >= 8, "{} pages", m.page_count());
        for i in 0..5_000 {
            assert_eq!(m.get(HashedKey::new(&key(i))), Some(&i));
        }
        assert_eq!(m.iter().count(), 5_000);
        assert_eq!(m.remove(HashedKey::new(&key(7))), Some(7));
        assert_eq!(m.remove(HashedKey::new(&key(7))), None);
        assert_eq!(m.len(), 4_999);
        *m.get_or_insert_with(HashedKey::new(&key(7)), || 70) += 1;
        assert_eq!(m.get(HashedKey::new(&key(7))), Some(&71));
    }

    #[test]
    fn reserving_creates_the_pages_once_and_keeps_every_entry() {
        let mut m: Paged<u32> = Paged::default();
        m.insert(HashedKey::new(&key(1)), 1);
        m.reserve(10_000);
        let pages = m.page_count();
        assert_eq!(pages, 10_001usize.div_ceil(PAGE_ENTRIES).next_power_of_two());
        for i in 0..10_001 {
            m.insert(HashedKey::new(&key(i)), i);
        }
        assert_eq!(m.page_count(), pages, "no page split after the reserve");
        assert_eq!(m.len(), 10_001);
        assert!((0..10_001).all(|i| m.get(HashedKey::new(&key(i))) == Some(&i)));
        // Reserving while a snapshot shares the pages leaves it whole.
        let snapshot = m.share();
        m.reserve(50_000);
        assert!(m.page_count() > pages);
        assert_eq!(snapshot.iter().count(), 10_001);
        assert!((0..10_001)
            .all(|i| m.get(HashedKey::new(&key(i))) == Some(&i) && snapshot.get(HashedKey::new(&key(i))) == Some(&i)));
    }

    #[test]
    fn a_write_after_a_clone_copies_one_page_and_leaves_the_clone_as_it_was() {
        let mut m: Paged<u32> = Paged::default();
        for i in 0..4_000 {
            m.insert(HashedKey::new(&key(i)), i);
        }
        let pages = m.page_count();
        let snapshot = m.share();
        assert!((0..pages).all(|p| m.page_shared(p)));
        *m.get_mut(HashedKey::new(&key(1))).unwrap() = 1_000_000;
        m.insert(HashedKey::new(&key(2)), 2_000_000);
        let private = (0..pages).filter(|&p| !m.page_shared(p)).count();
        assert!((1..=2).contains(&private), "{private} of {pages} pages copied");
        // Reading, or writing an absent key's removal, copies nothing.
        assert_eq!(m.get_mut(HashedKey::new(&key(999_999))), None);
        assert_eq!(m.remove(HashedKey::new(&key(999_999))), None);
        assert_eq!((0..pages).filter(|&p| !m.page_shared(p)).count(), private);
        assert_eq!(snapshot.get(HashedKey::new(&key(1))), Some(&1));
        assert_eq!(snapshot.get(HashedKey::new(&key(2))), Some(&2));
        assert_eq!(m.get(HashedKey::new(&key(1))), Some(&1_000_000));
        // Growing while shared copies the shared pages and leaves the snapshot whole.
        for i in 4_000..20_000 {
            m.insert(HashedKey::new(&key(i)), i);
        }
        assert_eq!(snapshot.len(), 4_000);
        assert_eq!(snapshot.iter().count(), 4_000);
        assert_eq!(m.len(), 20_000);
        assert_eq!(m.get(HashedKey::new(&key(1))), Some(&1_000_000));
        assert_eq!(snapshot.get(HashedKey::new(&key(1))), Some(&1));
    }

    #[test]
    fn keys_crafted_to_share_a_fixed_hash_spread_over_every_page() {
        let keys = crate::table_hash::fx_flood(50_000);
        let mut m: Paged<usize> = Paged::default();
        for (i, k) in keys.iter().enumerate() {
            m.insert(HashedKey::new(k), i);
        }
        assert_eq!(m.len(), keys.len());
        assert!(keys
            .iter()
            .enumerate()
            .all(|(i, k)| m.get(HashedKey::new(k)) == Some(&i)));
        assert!(m.page_count() >= 64, "{} pages", m.page_count());
        for p in 0..m.page_count() {
            let (entries, probe) = m.page_fill(p);
            // Under the fixed hash all 50,000 would be in one page, each
            // probing past all the others before it.
            assert!(entries > 0 && entries < 2_000, "page {p}: {entries} entries");
            assert!(probe < 512, "page {p}: a probe of {probe} slots");
        }
    }
}
