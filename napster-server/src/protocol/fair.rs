//! A queue that is fair between sources: password work (Argon2 checks and hashes, notes §6 "one misbehaving
//! client never affects others") waits here per source IP and is handed out round-robin, so one IP
//! keeping many registrations in flight only queues behind itself, and a registered user's login from
//! another IP gets the next free slot.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Items every source together may have waiting, whatever the per-source cap: keeps memory bounded
/// when many sources each queue their share.
pub const MAX_WAITING_TOTAL: usize = 4096;

/// Per-source FIFO queues served round-robin, at most `per_source` items per source and
/// [`MAX_WAITING_TOTAL`] in all.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Sources with items waiting, in the order they will be served next.
    turn: VecDeque<K>,
    len: usize,
    per_source: usize,
    /// The source served last (popped, or started without waiting: [`FairQueue::served`]); it does not
    /// go again while another source waits.
    last: Option<K>,
}

impl<K: Hash + Eq + Copy, T> FairQueue<K, T> {
    /// An empty queue allowing `per_source` waiting items per source.
    pub fn new(per_source: usize) -> Self {
        FairQueue {
            queues: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
            per_source,
            last: None,
        }
    }

    /// Whether an item from `source` would be accepted now.
    pub fn has_room(&self, source: K) -> bool {
        self.len < MAX_WAITING_TOTAL
            && self.queues.get(&source).map_or(0, VecDeque::len) < self.per_source
    }

    /// Queues `item` behind `source`'s earlier ones, or gives it back when `source` (or the whole
    /// queue) is full.
    pub fn push(&mut self, source: K, item: T) -> Result<(), T> {
        if !self.has_room(source) {
            return Err(item);
        }
        let q = self.queues.entry(source).or_default();
        if q.is_empty() {
            self.turn.push_back(source);
        }
        q.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The oldest item of the source whose turn it is; that source then goes to the back of the line.
    pub fn pop(&mut self) -> Option<T> {
        if self.turn.len() > 1 && self.turn.front() == self.last.as_ref() {
            self.turn.rotate_left(1);
        }
        let source = self.turn.pop_front()?;
        self.last = Some(source);
        let q = self.queues.get_mut(&source)?;
        let item = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&source);
        } else {
            self.turn.push_back(source);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Records that `source` was just served without waiting here (a free slot took its item at once),
    /// so another waiting source goes next.
    pub fn served(&mut self, source: K) {
        self.last = Some(source);
    }

    /// Keeps only the items `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for q in self.queues.values_mut() {
            q.retain(&mut keep);
        }
        self.queues.retain(|_, q| !q.is_empty());
        let queues = &self.queues;
        self.turn.retain(|k| queues.contains_key(k));
        self.len = self.queues.values().map(VecDeque::len).sum();
    }

    /// Items waiting, all sources together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_take_turns_and_each_is_capped_on_its_own() {
        let mut q = FairQueue::new(3);
        for i in 0..3 {
            q.push('a', i).unwrap();
        }
        assert_eq!(q.push('a', 3), Err(3), "a's own cap");
        q.push('b', 10).unwrap();
        q.push('b', 11).unwrap();
        assert_eq!(q.len(), 5);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![0, 10, 1, 11, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_source_just_served_without_waiting_goes_after_the_others() {
        let mut q = FairQueue::new(8);
        q.served('a');
        q.push('a', 1).unwrap();
        q.push('a', 2).unwrap();
        q.push('b', 10).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![10, 1, 2]);
    }

    #[test]
    fn retain_drops_items_and_empty_sources() {
        let mut q = FairQueue::new(4);
        q.push(1u8, 1).unwrap();
        q.push(1u8, 2).unwrap();
        q.push(2u8, 3).unwrap();
        q.retain(|&x| x != 1 && x != 3);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn the_total_is_bounded_whatever_the_sources() {
        let mut q = FairQueue::new(usize::MAX);
        for i in 0..MAX_WAITING_TOTAL {
            q.push(i as u32, i).unwrap();
        }
        assert!(!q.has_room(u32::MAX));
        assert!(q.push(u32::MAX, 0).is_err());
    }
}
