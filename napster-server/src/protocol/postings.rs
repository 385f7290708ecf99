//! Compressed posting lists for the whole-word search index (notes §2: search matches whole words).
//!
//! A list holds the strictly increasing ids of the files containing one word. Ids are stored as
//! LEB128 varint gaps (a file id is mostly 1–3 bytes instead of 4), and every [`SKIP_EVERY`] entries a skip
//! point remembers where a block starts, so a [`Cursor`] can jump ahead to an id with a binary search over
//! the skips instead of decoding the whole list. Lists only grow: removed files are tombstoned in the file
//! table and dropped from the lists when the index is compacted ([`Postings::rebuild`]).

/// Entries per skip block: a seek decodes at most this many gaps after its binary search.
pub const SKIP_EVERY: u32 = 64;

/// One word's posting list.
#[derive(Debug, Default, Clone)]
pub struct Postings {
    bytes: Vec<u8>,
    /// `(id before the block, byte offset of the block)` for each block of [`SKIP_EVERY`] entries; the
    /// first block's entry is `(0, 0)` and is implicit.
    skips: Vec<(u32, u32)>,
    last: u32,
    len: u32,
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint at `*pos`; lists are only written by [`put_varint`], so a truncated one cannot occur,
/// but a short read still ends the list instead of panicking.
fn get_varint(b: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

impl Postings {
    /// Entries (including tombstoned files not yet compacted away).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `id`; returns false (and stores nothing) unless `id` is above every id already stored.
    pub fn push(&mut self, id: u32) -> bool {
        if self.len > 0 && id <= self.last {
            return false;
        }
        if self.len > 0 && self.len % SKIP_EVERY == 0 {
            self.skips.push((self.last, self.bytes.len() as u32));
        }
        // The first gap is the id itself (it may be 0); later gaps are at least 1.
        let gap = if self.len == 0 { id } else { id - self.last };
        if self.bytes.capacity() == self.bytes.len() {
            // Grow by an eighth, not double: millions of small lists would otherwise carry ~25 % slack.
            self.bytes.reserve_exact(self.bytes.len() / 8 + 8);
        }
        put_varint(&mut self.bytes, gap);
        self.last = id;
        self.len += 1;
        true
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.skips.capacity() * size_of::<(u32, u32)>()
    }

    /// A cursor at the first entry.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            list: self,
            pos: 0,
            prev: 0,
            index: 0,
            cur: None,
        }
    }

    /// All ids, in order (tests, compaction).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut c = self.cursor();
        std::iter::from_fn(move || c.next())
    }

    /// Re-encodes the list through `remap` (`u32::MAX` drops an entry); `remap` must keep order.
    pub fn rebuild(&self, remap: &[u32]) -> Postings {
        let mut out = Postings::default();
        let mut at = RebuildPos::default();
        self.rebuild_chunk(&mut at, remap, u32::MAX, usize::MAX, &mut out);
        out.shrink_to_fit();
        out
    }

    /// One bounded slice of a rebuild (the index's incremental compaction): re-encodes at most `budget`
    /// entries below `end`, starting where `at` stopped, through `remap` (`u32::MAX` or an id past its end
    /// drops an entry) onto `out`, and moves `at` on. Returns the entries read and whether the list is done
    /// below `end`. Entries appended between calls are all at or above `end` (ids only grow), so the
    /// position stays valid.
    pub fn rebuild_chunk(
        &self,
        at: &mut RebuildPos,
        remap: &[u32],
        end: u32,
        budget: usize,
        out: &mut Postings,
    ) -> (usize, bool) {
        let mut c = Cursor {
            list: self,
            pos: at.pos,
            prev: at.prev,
            index: at.index,
            cur: None,
        };
        let mut n = 0;
        while n < budget {
            match c.next() {
                Some(id) if id < end => {
                    if let Some(&m) = remap.get(id as usize).filter(|m| **m != u32::MAX) {
                        out.push(m);
                    }
                    n += 1;
                }
                _ => return (n, true),
            }
        }
        *at = RebuildPos {
            pos: c.pos,
            prev: c.prev,
            index: c.index,
        };
        (n, false)
    }

    /// Drops the growth slack (a list that is complete).
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.skips.shrink_to_fit();
    }
}

/// Where a [`Postings::rebuild_chunk`] stopped (the start of the list by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct RebuildPos {
    pos: usize,
    prev: u32,
    index: u32,
}

/// Walks one list forward.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    list: &'a Postings,
    pos: usize,
    prev: u32,
    /// Entries consumed so far.
    index: u32,
    cur: Option<u32>,
}

impl Cursor<'_> {
    /// The next id, or `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<u32> {
        if self.index >= self.list.len {
            self.cur = None;
            return None;
        }
        let gap = get_varint(&self.list.bytes, &mut self.pos)?;
        let id = if self.index == 0 {
            gap
        } else {
            self.prev.checked_add(gap)?
        };
        self.prev = id;
        self.index += 1;
        self.cur = Some(id);
        Some(id)
    }

    /// The first id at or above `target` (moving forward only; an earlier target returns the current
    /// position's id again), or `None` when the list has none.
    pub fn seek(&mut self, target: u32) -> Option<u32> {
        if let Some(c) = self.cur {
            if c >= target {
                return Some(c);
            }
        }
        // Jump to the last block that starts before `target`, if it lies ahead of us.
        let skips = &self.list.skips;
        let block = skips.partition_point(|&(before, _)| before < target);
        if block > 0 {
            let first_entry = block as u32 * SKIP_EVERY;
            if first_entry > self.index {
                let (before, off) = skips[block - 1];
                self.pos = off as usize;
                self.prev = before;
                self.index = first_entry;
            }
        }
        loop {
            let id = self.next()?;
            if id >= target {
                return Some(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(ids: &[u32]) -> Postings {
        let mut p = Postings::default();
        for &i in ids {
            assert!(p.push(i));
        }
        p
    }

    #[test]
    fn zero_first_and_out_of_order_refused() {
        let mut p = build(&[0, 1, 300, 70_000, u32::MAX]);
        assert_eq!(p.iter().collect::<Vec<_>>(), [0, 1, 300, 70_000, u32::MAX]);
        assert!(!p.push(5));
        assert_eq!(p.len(), 5);
        let mut c = p.cursor();
        assert_eq!(c.seek(2), Some(300));
        assert_eq!(c.seek(2), Some(300));
        assert_eq!(c.seek(300), Some(300));
        assert_eq!(c.seek(301), Some(70_000));
        assert_eq!(c.next(), Some(u32::MAX));
        assert_eq!(c.next(), None);
    }

    proptest! {
        #[test]
        fn round_trip_and_seek(mut ids in proptest::collection::vec(any::<u32>(), 0..600),
                               targets in proptest::collection::vec(any::<u32>(), 0..50)) {
            ids.sort_unstable();
            ids.dedup();
            let p = build(&ids);
            prop_assert_eq!(p.iter().collect::<Vec<_>>(), ids.clone());
            let mut targets = targets;
            targets.sort_unstable();
            let mut c = p.cursor();
            for t in targets {
                let want = ids.iter().copied().find(|&i| i >= t);
                prop_assert_eq!(c.seek(t), want);
            }
        }

        #[test]
        fn dense_lists_seek_across_blocks(n in 1u32..2000, step in 1u32..5, t in 0u32..10_000) {
            let ids: Vec<u32> = (0..n).map(|i| i * step).collect();
            let p = build(&ids);
            let mut c = p.cursor();
            prop_assert_eq!(c.seek(t), ids.iter().copied().find(|&i| i >= t));
        }

        #[test]
        fn rebuild_drops_and_renumbers(mut ids in proptest::collection::vec(0u32..5000, 0..400), keep_mod in 2u32..5) {
            ids.sort_unstable();
            ids.dedup();
            let p = build(&ids);
            let mut remap = vec![u32::MAX; 5000];
            let mut next = 0;
            for (i, r) in remap.iter_mut().enumerate() {
                if i as u32 % keep_mod != 0 {
                    *r = next;
                    next += 1;
                }
            }
            let want: Vec<u32> = ids.iter().filter(|&&i| i % keep_mod != 0).map(|&i| remap[i as usize]).collect();
            prop_assert_eq!(p.rebuild(&remap).iter().collect::<Vec<_>>(), want);
        }

        // A rebuild cut into random slices, with ids at or above `end` appended between slices (as the
        // index does while it compacts), gives what a one-pass rebuild of the part below `end` gives.
        #[test]
        fn chunked_rebuild_equals_one_pass(mut ids in proptest::collection::vec(0u32..3000, 0..400),
                                           end in 0u32..3000, budgets in proptest::collection::vec(1usize..80, 1..40),
                                           appended in proptest::collection::vec(0u32..50, 0..20)) {
            ids.sort_unstable();
            ids.dedup();
            let mut p = build(&ids);
            let remap: Vec<u32> = (0..3000u32).map(|i| if i % 3 == 0 { u32::MAX } else { i / 3 * 2 + i % 3 - 1 }).collect();
            let below: Vec<u32> = ids.iter().copied().filter(|&i| i < end).collect();
            let want = build(&below).rebuild(&remap).iter().collect::<Vec<_>>();
            let mut at = RebuildPos::default();
            let mut out = Postings::default();
            let mut extra = appended.into_iter();
            let mut done = false;
            let mut read = 0;
            for b in budgets.iter().cycle().take(10_000) {
                let (n, d) = p.rebuild_chunk(&mut at, &remap, end, *b, &mut out);
                prop_assert!(n <= *b);
                read += n;
                if d {
                    done = true;
                    break;
                }
                if let Some(x) = extra.next() {
                    p.push(p.last.max(end).max(3000) + x + 1);
                }
            }
            prop_assert!(done);
            prop_assert_eq!(read, below.len());
            prop_assert_eq!(out.iter().collect::<Vec<_>>(), want);
        }
    }
}
