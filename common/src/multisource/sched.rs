//! The block scheduler: which source fetches which block, and what happens when a fetch ends.
//!
//! Sans-I/O: no tokio, no clock reads. The driver passes `now` in and carries out the decisions. Invariants:
//! - a block is `done` only once its bytes were written to the partial file by exactly one fetch;
//! - at most [`MAX_FETCHERS_PER_BLOCK`] sources fetch the same block (two only in the endgame);
//! - a source fetches at most one block at a time (HTTP/1.1 without pipelining);
//! - a dead source never gets a block again; a waiting source gets one only after its `until`.

use std::time::{Duration, Instant};

/// Index of a source in the scheduler, in the order sources were added.
pub(crate) type SourceId = usize;

/// Two fetchers at most for one block: the original and one endgame duplicate.
pub(crate) const MAX_FETCHERS_PER_BLOCK: usize = 2;

/// Weight of the newest sample in a source's rate estimate.
const RATE_EWMA_ALPHA: f64 = 0.5;

/// Where a source stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Status {
    /// Ready for a block.
    Idle,
    /// Fetching `block` since `since`.
    Busy { block: usize, since: Instant },
    /// Not to be used before `until`: remotely queued (`503`) when `queued`, else backing off after a failure.
    Waiting { until: Instant, queued: bool },
    /// Never used again.
    Dead,
}

/// How a fetch ended badly, as far as the scheduler cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connection refused or dropped, timeout, stall, short body: may be transient; counts toward the
    /// source's failure limit.
    Transient,
    /// `503` (+ `Retry-After`): the source is alive and has queued us; keep it and come back later.
    Queued(Duration),
    /// The source answered with the wrong range, length or content URN, does not have the file or ignores
    /// ranges: it is dropped at once.
    Fatal,
    /// We stopped the fetch ourselves (the other endgame fetcher won): no fault of the source.
    Cancelled,
}

#[derive(Clone, Debug)]
pub(crate) struct SourceSlot {
    pub(crate) status: Status,
    /// Consecutive transient failures.
    pub(crate) failures: u32,
    /// Bytes per second over recent blocks; `None` until the first block is done.
    pub(crate) rate: Option<f64>,
    /// Blocks this source supplied to the file (current contents).
    pub(crate) blocks_supplied: u64,
}

/// Scheduler settings (a subset of the download configuration).
#[derive(Clone, Debug)]
pub(crate) struct SchedConfig {
    pub(crate) max_active: usize,
    pub(crate) max_failures: u32,
    pub(crate) backoff: Duration,
    pub(crate) slow_factor: f64,
}

/// Who supplied a block's current bytes: a source, or an earlier run (resumed from the state file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Supplier {
    Resumed,
    Source(SourceId),
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    size: u64,
    block_size: u64,
    done: Vec<bool>,
    done_count: usize,
    /// Sources fetching each block right now.
    fetchers: Vec<Vec<SourceId>>,
    supplier: Vec<Option<Supplier>>,
    /// Lowest block index that may still be missing.
    cursor: usize,
    pub(crate) sources: Vec<SourceSlot>,
    /// A source barred from every block for the current verification round (it is the suspect).
    suspended: Option<SourceId>,
    cfg: SchedConfig,
}

impl Scheduler {
    /// A scheduler for `size` bytes in blocks of `block_size`; `done` marks blocks already on disk.
    pub(crate) fn new(size: u64, block_size: u64, done: Vec<bool>, cfg: SchedConfig) -> Self {
        let n = block_count(size, block_size);
        debug_assert_eq!(done.len(), n);
        let done_count = done.iter().filter(|d| **d).count();
        let supplier = done
            .iter()
            .map(|d| d.then_some(Supplier::Resumed))
            .collect();
        Scheduler {
            size,
            block_size,
            done,
            done_count,
            fetchers: vec![Vec::new(); n],
            supplier,
            cursor: 0,
            sources: Vec::new(),
            suspended: None,
            cfg,
        }
    }

    pub(crate) fn block_count(&self) -> usize {
        self.done.len()
    }

    pub(crate) fn done_count(&self) -> usize {
        self.done_count
    }

    pub(crate) fn done(&self) -> &[bool] {
        &self.done
    }

    pub(crate) fn all_done(&self) -> bool {
        self.done_count == self.done.len()
    }

    /// Byte range of block `b`.
    pub(crate) fn range(&self, b: usize) -> std::ops::Range<u64> {
        let start = b as u64 * self.block_size;
        start..(start + self.block_size).min(self.size)
    }

    /// Bytes in finished blocks.
    pub(crate) fn bytes_done(&self) -> u64 {
        let mut n = self.done_count as u64 * self.block_size;
        if let Some(true) = self.done.last() {
            let last = self.range(self.done.len() - 1);
            n -= self.block_size - (last.end - last.start);
        }
        n
    }

    pub(crate) fn add_source(&mut self) -> SourceId {
        self.sources.push(SourceSlot {
            status: Status::Idle,
            failures: 0,
            rate: None,
            blocks_supplied: 0,
        });
        self.sources.len() - 1
    }

    /// Sources that are not dead (they may be busy, idle, queued or backing off).
    pub(crate) fn live_sources(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| s.status != Status::Dead)
            .count()
    }

    /// Live sources that may fetch now or later in this round (the suspended suspect does not count).
    pub(crate) fn usable_sources(&self) -> usize {
        (0..self.sources.len())
            .filter(|&s| self.sources[s].status != Status::Dead && self.suspended != Some(s))
            .count()
    }

    fn busy_count(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| matches!(s.status, Status::Busy { .. }))
            .count()
    }

    fn best_rate(&self) -> Option<f64> {
        self.sources
            .iter()
            .filter(|s| s.status != Status::Dead)
            .filter_map(|s| s.rate)
            .fold(None, |m, r| Some(m.map_or(r, |m: f64| m.max(r))))
    }

    fn is_slow(&self, sid: SourceId) -> bool {
        match (self.sources[sid].rate, self.best_rate()) {
            (Some(r), Some(best)) => r * self.cfg.slow_factor < best,
            _ => false,
        }
    }

    /// Hands out blocks to every source that can take one now. Returns `(source, block)` pairs to start.
    ///
    /// Order: the lowest missing block nobody fetches. When there is none left (the endgame), an idle source
    /// that is not much slower than the best duplicates the in-flight block that has run longest; the first
    /// copy to finish wins and the other is cancelled. A much slower source is not handed one of the last
    /// blocks while faster sources are around, so it cannot hold up the tail.
    pub(crate) fn assign(&mut self, now: Instant) -> Vec<(SourceId, usize)> {
        let mut out = Vec::new();
        let mut busy = self.busy_count();
        for sid in 0..self.sources.len() {
            if busy >= self.cfg.max_active {
                break;
            }
            match self.sources[sid].status {
                Status::Idle => {}
                Status::Waiting { until, .. } if until <= now => {
                    self.sources[sid].status = Status::Idle;
                }
                _ => continue,
            }
            if self.suspended == Some(sid) {
                continue;
            }
            if let Some(b) = self.pick(sid) {
                self.fetchers[b].push(sid);
                self.sources[sid].status = Status::Busy {
                    block: b,
                    since: now,
                };
                busy += 1;
                out.push((sid, b));
            }
        }
        out
    }

    fn pick(&mut self, sid: SourceId) -> Option<usize> {
        while self.cursor < self.done.len() && self.done[self.cursor] {
            self.cursor += 1;
        }
        let unassigned: Vec<usize> = (self.cursor..self.done.len())
            .filter(|&b| !self.done[b] && self.fetchers[b].is_empty())
            .take(self.sources.len() + 1)
            .collect();
        let slow = self.is_slow(sid);
        if let Some(&b) = unassigned.first() {
            let fast_live = (0..self.sources.len())
                .filter(|&s| s != sid && self.sources[s].status != Status::Dead && !self.is_slow(s))
                .count();
            if slow && unassigned.len() <= fast_live {
                return None;
            }
            return Some(b);
        }
        if slow {
            return None;
        }
        // Endgame: duplicate the block that has been in flight longest.
        let mut best: Option<(Instant, usize)> = None;
        for b in self.cursor..self.done.len() {
            let f = &self.fetchers[b];
            if self.done[b] || f.is_empty() || f.len() >= MAX_FETCHERS_PER_BLOCK || f.contains(&sid)
            {
                continue;
            }
            let since = f
                .iter()
                .filter_map(|&s| match self.sources[s].status {
                    Status::Busy { since, .. } => Some(since),
                    _ => None,
                })
                .min();
            if let Some(since) = since {
                if best.is_none_or(|(t, _)| since < t) {
                    best = Some((since, b));
                }
            }
        }
        best.map(|(_, b)| b)
    }

    fn release(&mut self, sid: SourceId, block: usize) {
        self.fetchers[block].retain(|&s| s != sid);
    }

    /// `sid` delivered block `block` (`bytes` long, in `elapsed`) and it is on disk. Returns the other sources
    /// still fetching that block: the driver cancels them (they get [`Failure::Cancelled`]).
    pub(crate) fn block_done(
        &mut self,
        sid: SourceId,
        block: usize,
        bytes: u64,
        elapsed: Duration,
    ) -> Vec<SourceId> {
        self.release(sid, block);
        let slot = &mut self.sources[sid];
        slot.status = Status::Idle;
        slot.failures = 0;
        let sample = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        slot.rate = Some(match slot.rate {
            Some(r) => r * (1.0 - RATE_EWMA_ALPHA) + sample * RATE_EWMA_ALPHA,
            None => sample,
        });
        if !self.done[block] {
            self.done[block] = true;
            self.done_count += 1;
            if let Some(Supplier::Source(old)) = self.supplier[block] {
                self.sources[old].blocks_supplied -= 1;
            }
            self.supplier[block] = Some(Supplier::Source(sid));
            self.sources[sid].blocks_supplied += 1;
        }
        std::mem::take(&mut self.fetchers[block])
    }

    /// A fetch by `sid` of `block` failed. Returns true if the source is now dead.
    pub(crate) fn block_failed(
        &mut self,
        sid: SourceId,
        block: usize,
        why: Failure,
        now: Instant,
    ) -> bool {
        self.release(sid, block);
        let cfg = self.cfg.clone();
        let slot = &mut self.sources[sid];
        if slot.status == Status::Dead {
            return true;
        }
        slot.status = match why {
            Failure::Cancelled => Status::Idle,
            Failure::Queued(d) => Status::Waiting {
                until: now + d,
                queued: true,
            },
            Failure::Fatal => Status::Dead,
            Failure::Transient => {
                slot.failures += 1;
                if slot.failures >= cfg.max_failures {
                    Status::Dead
                } else {
                    // Exponential backoff: backoff, 2x, 4x...
                    Status::Waiting {
                        until: now + cfg.backoff * (1u32 << (slot.failures - 1).min(6)),
                        queued: false,
                    }
                }
            }
        };
        slot.status == Status::Dead
    }

    /// Marks a source dead from outside (e.g. it was proven to supply wrong bytes).
    pub(crate) fn kill(&mut self, sid: SourceId) {
        self.sources[sid].status = Status::Dead;
    }

    /// Who supplied each block of the current file, with how many blocks, fewest first.
    pub(crate) fn suppliers(&self) -> Vec<(Supplier, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for s in self.supplier.iter().flatten() {
            *m.entry(*s).or_insert(0usize) += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|&(s, n)| (n, s));
        v
    }

    /// Starts a verification round against `suspect`: every block it supplied becomes missing again, and
    /// the suspect (if a source) may not fetch until [`Scheduler::end_round`]. Returns the reopened blocks.
    pub(crate) fn reopen(&mut self, suspect: Supplier) -> Vec<usize> {
        let mut blocks = Vec::new();
        for b in 0..self.done.len() {
            if self.supplier[b] == Some(suspect) {
                self.done[b] = false;
                self.done_count -= 1;
                self.supplier[b] = None;
                blocks.push(b);
            }
        }
        if let Supplier::Source(s) = suspect {
            self.sources[s].blocks_supplied = 0;
            self.suspended = Some(s);
        }
        self.cursor = 0;
        blocks
    }

    pub(crate) fn end_round(&mut self) {
        self.suspended = None;
    }

    /// Sources by state: (busy, queued or backing off, dead, idle).
    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        let (mut a, mut q, mut d, mut i) = (0, 0, 0, 0);
        for s in &self.sources {
            match s.status {
                Status::Busy { .. } => a += 1,
                Status::Waiting { .. } => q += 1,
                Status::Dead => d += 1,
                Status::Idle => i += 1,
            }
        }
        (a, q, d, i)
    }
}

/// Number of blocks of `block_size` needed for `size` bytes (at least one, even for an empty file, so
/// the download has something to verify).
pub(crate) fn block_count(size: u64, block_size: u64) -> usize {
    size.div_ceil(block_size).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> SchedConfig {
        SchedConfig {
            max_active: 8,
            max_failures: 3,
            backoff: Duration::from_secs(1),
            slow_factor: 8.0,
        }
    }

    fn sched(blocks: usize, sources: usize) -> Scheduler {
        let mut s = Scheduler::new(blocks as u64 * 10, 10, vec![false; blocks], cfg());
        for _ in 0..sources {
            s.add_source();
        }
        s
    }

    #[test]
    fn two_sources_take_different_blocks_in_order() {
        let t = Instant::now();
        let mut s = sched(4, 2);
        assert_eq!(s.assign(t), vec![(0, 0), (1, 1)]);
        assert!(s.assign(t).is_empty(), "a busy source gets nothing more");
        assert!(s.block_done(0, 0, 10, Duration::from_millis(10)).is_empty());
        assert_eq!(s.assign(t), vec![(0, 2)]);
    }

    #[test]
    fn endgame_duplicates_the_oldest_block_and_cancels_the_loser() {
        let t = Instant::now();
        let mut s = sched(2, 2);
        assert_eq!(s.assign(t), vec![(0, 0), (1, 1)]);
        s.block_done(0, 0, 10, Duration::from_millis(10));
        let later = t + Duration::from_secs(1);
        assert_eq!(
            s.assign(later),
            vec![(0, 1)],
            "idle source duplicates block 1"
        );
        assert_eq!(s.block_done(0, 1, 10, Duration::from_millis(10)), vec![1]);
        assert!(s.all_done());
        assert!(!s.block_failed(1, 1, Failure::Cancelled, later));
        assert_eq!(s.sources[1].status, Status::Idle);
        assert_eq!(s.sources[0].blocks_supplied, 2);
    }

    #[test]
    fn failed_block_goes_to_another_source_and_repeat_failures_kill() {
        let t = Instant::now();
        let mut s = sched(3, 2);
        s.assign(t);
        assert!(!s.block_failed(1, 1, Failure::Transient, t));
        s.block_done(0, 0, 10, Duration::from_millis(1));
        assert_eq!(s.assign(t), vec![(0, 1)], "block 1 moves to source 0");
        let mut now = t;
        for _ in 0..2 {
            now += Duration::from_secs(100);
            s.sources[1].status = Status::Busy {
                block: 2,
                since: now,
            };
            s.fetchers[2].push(1);
            s.block_failed(1, 2, Failure::Transient, now);
        }
        assert_eq!(s.sources[1].status, Status::Dead);
        assert_eq!(s.live_sources(), 1);
    }

    #[test]
    fn queued_source_waits_without_penalty() {
        let t = Instant::now();
        let mut s = sched(3, 1);
        s.assign(t);
        s.block_failed(0, 0, Failure::Queued(Duration::from_secs(5)), t);
        assert_eq!(s.sources[0].failures, 0);
        assert!(s.assign(t + Duration::from_secs(4)).is_empty());
        assert_eq!(s.assign(t + Duration::from_secs(5)), vec![(0, 0)]);
    }

    #[test]
    fn slow_source_is_kept_off_the_last_blocks() {
        let t = Instant::now();
        let mut s = sched(5, 2);
        s.assign(t);
        s.block_done(0, 0, 10, Duration::from_millis(1)); // fast: 10 kB/s
        s.block_done(1, 1, 10, Duration::from_secs(1)); // slow: 10 B/s
                                                        // Three blocks left, one fast source: the slow one still gets one while plenty remain...
        assert_eq!(s.assign(t), vec![(0, 2), (1, 3)]);
        s.block_done(0, 2, 10, Duration::from_millis(1));
        assert_eq!(s.assign(t), vec![(0, 4)]);
        s.block_failed(1, 3, Failure::Cancelled, t);
        // ...but not one of the last: block 3 waits for the fast source.
        assert!(s.assign(t).is_empty());
        s.block_done(0, 4, 10, Duration::from_millis(1));
        assert_eq!(s.assign(t), vec![(0, 3)]);
        // And it never duplicates in the endgame.
        assert!(s.assign(t).is_empty());
    }

    #[test]
    fn reopen_refetches_only_the_suspects_blocks_from_others() {
        let t = Instant::now();
        let mut s = sched(3, 2);
        s.assign(t);
        s.block_done(0, 0, 10, Duration::from_millis(1));
        s.block_done(1, 1, 10, Duration::from_millis(1));
        s.assign(t);
        s.block_done(0, 2, 10, Duration::from_millis(1));
        assert_eq!(
            s.suppliers(),
            vec![(Supplier::Source(1), 1), (Supplier::Source(0), 2)]
        );
        assert_eq!(s.reopen(Supplier::Source(1)), vec![1]);
        assert_eq!(s.assign(t), vec![(0, 1)], "the suspect is suspended");
        s.block_done(0, 1, 10, Duration::from_millis(1));
        assert!(s.all_done());
        s.end_round();
        assert_eq!(s.suppliers(), vec![(Supplier::Source(0), 3)]);
    }

    #[test]
    fn block_ranges_cover_the_file() {
        let s = Scheduler::new(25, 10, vec![false; 3], cfg());
        assert_eq!(s.range(0), 0..10);
        assert_eq!(s.range(2), 20..25);
        assert_eq!(block_count(0, 10), 1);
        let s = Scheduler::new(25, 10, vec![true, false, true], cfg());
        assert_eq!(s.bytes_done(), 15);
    }

    /// The scheduler's invariants, checked after every step of the random runs below.
    fn check_invariants(s: &Scheduler) {
        assert_eq!(s.done_count, s.done.iter().filter(|d| **d).count());
        for (b, f) in s.fetchers.iter().enumerate() {
            assert!(
                f.len() <= MAX_FETCHERS_PER_BLOCK,
                "block {b} has fetchers {f:?}"
            );
            for &sid in f {
                assert_eq!(
                    f.iter().filter(|&&x| x == sid).count(),
                    1,
                    "duplicate fetcher on block {b}"
                );
                assert!(
                    matches!(s.sources[sid].status, Status::Busy { block, .. } if block == b),
                    "fetcher {sid} of block {b} is {:?}",
                    s.sources[sid].status
                );
            }
        }
        for (sid, src) in s.sources.iter().enumerate() {
            if let Status::Busy { block, .. } = src.status {
                assert!(s.fetchers[block].contains(&sid));
            }
            let supplied = s
                .supplier
                .iter()
                .filter(|x| **x == Some(Supplier::Source(sid)))
                .count() as u64;
            assert_eq!(src.blocks_supplied, supplied, "source {sid}");
        }
        let busy = s
            .sources
            .iter()
            .filter(|x| matches!(x.status, Status::Busy { .. }))
            .count();
        assert!(busy <= s.cfg.max_active);
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Done(usize, u64),
        Fail(usize, u8),
        Tick(u64),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (any::<usize>(), 1u64..2000).prop_map(|(i, ms)| Ev::Done(i, ms)),
            2 => (any::<usize>(), 0u8..4).prop_map(|(i, k)| Ev::Fail(i, k)),
            1 => (0u64..5000).prop_map(Ev::Tick),
        ]
    }

    proptest! {
        /// Any interleaving of completions, failures and time keeps the invariants, and once sources stop
        /// failing every block gets done (unless every source died).
        #[test]
        fn random_runs_keep_invariants_and_finish(
            blocks in 1usize..40,
            nsrc in 1usize..5,
            max_active in 1usize..4,
            events in proptest::collection::vec(ev(), 0..300),
        ) {
            let cfg = SchedConfig {
                max_active,
                max_failures: 3,
                backoff: Duration::from_millis(100),
                slow_factor: 8.0,
            };
            let mut s = Scheduler::new(blocks as u64 * 10, 10, vec![false; blocks], cfg);
            for _ in 0..nsrc {
                s.add_source();
            }
            let mut now = Instant::now();
            let mut busy: Vec<(SourceId, usize)> = Vec::new();
            for e in events {
                busy.extend(s.assign(now));
                check_invariants(&s);
                match e {
                    Ev::Tick(ms) => now += Duration::from_millis(ms),
                    Ev::Done(..) | Ev::Fail(..) if busy.is_empty() => {}
                    Ev::Done(i, ms) => {
                        let (sid, b) = busy.swap_remove(i % busy.len());
                        for other in s.block_done(sid, b, 10, Duration::from_millis(ms)) {
                            let k = busy.iter().position(|&x| x == (other, b)).expect("loser is busy");
                            busy.swap_remove(k);
                            s.block_failed(other, b, Failure::Cancelled, now);
                        }
                    }
                    Ev::Fail(i, k) => {
                        let (sid, b) = busy.swap_remove(i % busy.len());
                        let why = match k {
                            0 => Failure::Transient,
                            1 => Failure::Queued(Duration::from_millis(300)),
                            2 => Failure::Fatal,
                            _ => Failure::Cancelled,
                        };
                        s.block_failed(sid, b, why, now);
                    }
                }
                check_invariants(&s);
            }
            // From here on every fetch succeeds.
            for _ in 0..10_000 {
                if s.all_done() || s.live_sources() == 0 {
                    break;
                }
                busy.extend(s.assign(now));
                if let Some((sid, b)) = busy.pop() {
                    for other in s.block_done(sid, b, 10, Duration::from_millis(5)) {
                        let k = busy.iter().position(|&x| x == (other, b)).expect("loser is busy");
                        busy.swap_remove(k);
                        s.block_failed(other, b, Failure::Cancelled, now);
                    }
                } else {
                    now += Duration::from_secs(1);
                }
                check_invariants(&s);
            }
            prop_assert!(s.all_done() || s.live_sources() == 0, "stuck with live sources");
        }
    }
}
