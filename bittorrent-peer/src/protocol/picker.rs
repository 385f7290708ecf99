//! The piece picker (BEP 3 "piece downloading strategy", and the classic mainline policy it describes):
//!
//! 1. **Strict priority**: once a block of a piece is requested, the rest of that piece comes before any
//!    new piece, so complete (verifiable, shareable) pieces appear as soon as possible.
//! 2. **Random first pieces**: until [`RANDOM_FIRST_PIECES`] pieces are complete a new piece is chosen at
//!    random among those the peer has: rare pieces are slow to get, and we need something to trade.
//! 3. **Rarest first** afterwards: the piece the fewest connected peers have (from bitfields and haves).
//!    Ties go to the next piece after the last one started (the cursor starts wherever the random first
//!    pieces left it): equally rare pieces are fetched in file order from a random origin, so a leecher
//!    writes long sequential runs (large writes, one growing extent on disk instead of thousands of
//!    256 KiB islands in a pre-allocated file) while different leechers still start at different places
//!    of a seeder's content.
//! 4. **Endgame**: when every missing block is already requested, the remaining ones are requested from
//!    other peers too; the first copy wins and the others are cancelled ([`Received::cancel`]). A block
//!    is asked of at most [`ENDGAME_COPIES`] peers: with deep pipelines the endgame starts with
//!    megabytes outstanding, and asking every peer for all of it wasted 5-11 % of the bytes received
//!    in an 8-leecher flash crowd (copies already sent when the cancel arrives).
//!
//! The picker only tracks blocks; data goes to storage and the SHA-1 check happens outside. Invariants
//! are listed in `STATE.md`.

use std::collections::BTreeMap;

use rand::Rng;

use crate::codec::peer::{BlockRef, BLOCK_LEN};
use crate::protocol::bitfield::Bitfield;

/// A connection, as the node numbers them.
pub type PeerKey = u64;

/// Pieces fetched at random before rarest-first starts.
pub const RANDOM_FIRST_PIECES: u32 = 4;
/// Most peers a block is requested from at once in endgame (the first requester included).
pub const ENDGAME_COPIES: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Requested,
    Received,
}

#[derive(Clone, Debug)]
struct Slot {
    state: State,
    /// First requester (no allocation outside endgame).
    by: Option<PeerKey>,
    /// Further requesters in endgame.
    extra: Vec<PeerKey>,
}

#[derive(Clone, Debug)]
struct Partial {
    slots: Vec<Slot>,
    free: u32,
    received: u32,
    contributors: Vec<PeerKey>,
}

/// What happened to a received block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A new block; `cancel` lists other peers that were asked for it (endgame) and should get a
    /// `cancel`; `piece_complete` holds the peers who sent the piece's blocks once every block is in.
    New {
        /// Peers to send `cancel` to.
        cancel: Vec<PeerKey>,
        /// `Some(contributors)` when this block completed its piece: verify it now.
        piece_complete: Option<Vec<PeerKey>>,
    },
    /// We already had this block (endgame duplicate or late copy): drop the data.
    Duplicate,
}

/// A block that does not fit the torrent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PickError {
    /// Index, offset or length does not match a block of this torrent.
    #[error("block {0:?} does not exist in this torrent")]
    BadBlock(BlockRef),
    /// A block of a piece we are not downloading.
    #[error("unrequested block {0:?}")]
    Unrequested(BlockRef),
}

/// Block-level download state of one torrent.
#[derive(Debug)]
pub struct Picker {
    num_pieces: u32,
    piece_length: u32,
    total_length: u64,
    have: Bitfield,
    pending: Bitfield,
    availability: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    /// Where the search for a new piece starts: after the last piece started (`None` before the first).
    cursor: Option<u32>,
}

impl Picker {
    /// A picker for a torrent of `total_length` bytes in pieces of `piece_length`; `have` holds the
    /// pieces already verified (resume).
    pub fn new(piece_length: u32, total_length: u64, have: Bitfield) -> Picker {
        let num_pieces = have.len();
        Picker {
            num_pieces,
            piece_length,
            total_length,
            pending: Bitfield::new(num_pieces),
            availability: vec![0; num_pieces as usize],
            have,
            partial: BTreeMap::new(),
            cursor: None,
        }
    }

    /// Verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Length of piece `index`.
    pub fn piece_len(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        self.total_length
            .saturating_sub(start)
            .min(self.piece_length as u64) as u32
    }

    fn blocks_in(&self, index: u32) -> u32 {
        self.piece_len(index).div_ceil(BLOCK_LEN)
    }

    fn block_ref(&self, index: u32, b: u32) -> BlockRef {
        let begin = b * BLOCK_LEN;
        BlockRef {
            index,
            begin,
            len: (self.piece_len(index) - begin).min(BLOCK_LEN),
        }
    }

    /// Number of connected peers that have piece `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability.get(i as usize).copied().unwrap_or(0)
    }

    /// A peer announced a whole set (bitfield / have_all).
    pub fn add_peer_pieces(&mut self, b: &Bitfield) {
        for i in b.iter_ones() {
            self.availability[i as usize] += 1;
        }
    }

    /// A peer left: forget its pieces (its requests are dropped with [`Picker::drop_request`]).
    pub fn remove_peer_pieces(&mut self, b: &Bitfield) {
        for i in b.iter_ones() {
            let a = &mut self.availability[i as usize];
            *a = a.saturating_sub(1);
        }
    }

    /// A peer announced one piece (`have`).
    pub fn add_peer_piece(&mut self, i: u32) {
        if let Some(a) = self.availability.get_mut(i as usize) {
            *a += 1;
        }
    }

    /// Whether the peer has a piece we still need (and is not in verification).
    pub fn interesting(&self, peer_has: &Bitfield) -> bool {
        peer_has
            .iter_ones()
            .any(|i| !self.have.get(i) && !self.pending.get(i))
    }

    /// True when every missing block is already requested or received: duplicate requests are allowed.
    pub fn in_endgame(&self) -> bool {
        let started = self.have.count() + self.pending.count() + self.partial.len() as u32;
        started == self.num_pieces && self.partial.values().all(|p| p.free == 0)
    }

    /// The next block to request from `peer`, whose pieces are `peer_has`; `None` if nothing fits.
    pub fn pick(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        rng: &mut impl Rng,
    ) -> Option<BlockRef> {
        // 1. Strict priority: the started piece closest to completion.
        let best = self
            .partial
            .iter()
            .filter(|(i, p)| p.free > 0 && peer_has.get(**i))
            .min_by_key(|(_, p)| p.free)
            .map(|(i, _)| *i);
        if let Some(i) = best {
            return Some(self.take_free(i, peer));
        }
        // 2./3. A new piece.
        if let Some(i) = self.choose_new_piece(peer_has, rng) {
            self.cursor = Some((i + 1) % self.num_pieces);
            let n = self.blocks_in(i);
            self.partial.insert(
                i,
                Partial {
                    slots: vec![
                        Slot {
                            state: State::Free,
                            by: None,
                            extra: Vec::new()
                        };
                        n as usize
                    ],
                    free: n,
                    received: 0,
                    contributors: Vec::new(),
                },
            );
            return Some(self.take_free(i, peer));
        }
        // 4. Endgame: a block someone else was asked for.
        if !self.in_endgame() {
            return None;
        }
        let mut found = None;
        'outer: for (i, p) in &self.partial {
            if !peer_has.get(*i) {
                continue;
            }
            for (b, s) in p.slots.iter().enumerate() {
                let copies = usize::from(s.by.is_some()) + s.extra.len();
                if s.state == State::Requested
                    && s.by != Some(peer)
                    && !s.extra.contains(&peer)
                    && copies < ENDGAME_COPIES
                {
                    found = Some((*i, b));
                    break 'outer;
                }
            }
        }
        let (i, b) = found?;
        let p = self.partial.get_mut(&i).expect("found above");
        let s = &mut p.slots[b];
        if s.by.is_none() {
            s.by = Some(peer);
        } else {
            s.extra.push(peer);
        }
        Some(self.block_ref(i, b as u32))
    }

    fn take_free(&mut self, i: u32, peer: PeerKey) -> BlockRef {
        let p = self.partial.get_mut(&i).expect("partial exists");
        let b = p
            .slots
            .iter()
            .position(|s| s.state == State::Free)
            .expect("free > 0");
        p.slots[b].state = State::Requested;
        p.slots[b].by = Some(peer);
        p.free -= 1;
        self.block_ref(i, b as u32)
    }

    fn choose_new_piece(&self, peer_has: &Bitfield, rng: &mut impl Rng) -> Option<u32> {
        if self.num_pieces == 0 {
            return None;
        }
        let candidate = |i: u32| {
            peer_has.get(i)
                && !self.have.get(i)
                && !self.pending.get(i)
                && !self.partial.contains_key(&i)
        };
        // Ties (same availability) go to the first candidate after the cursor: file order.
        let start = self
            .cursor
            .unwrap_or_else(|| rng.gen_range(0..self.num_pieces));
        let order = (start..self.num_pieces).chain(0..start);
        if self.have.count() < RANDOM_FIRST_PIECES {
            // Reservoir sampling: uniform among candidates in one pass.
            let mut pick = None;
            for (seen, i) in order.filter(|&i| candidate(i)).enumerate() {
                if rng.gen_range(0..=seen) == 0 {
                    pick = Some(i);
                }
            }
            return pick;
        }
        let mut best: Option<(u32, u32)> = None;
        for i in order {
            if !candidate(i) {
                continue;
            }
            let a = self.availability[i as usize];
            if best.is_none_or(|(ba, _)| a < ba) {
                best = Some((a, i));
                if a <= 1 {
                    break; // nobody else can be rarer among pieces this peer has
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Checks that `block` is a real block of this torrent (index, alignment and length).
    pub fn check_block(&self, block: BlockRef) -> Result<(), PickError> {
        if block.index >= self.num_pieces
            || block.begin % BLOCK_LEN != 0
            || block.begin >= self.piece_len(block.index)
            || self.block_ref(block.index, block.begin / BLOCK_LEN).len != block.len
        {
            return Err(PickError::BadBlock(block));
        }
        Ok(())
    }

    /// Records a block that arrived from `peer`. Validate with [`Picker::check_block`] first.
    pub fn block_received(
        &mut self,
        peer: PeerKey,
        block: BlockRef,
    ) -> Result<Received, PickError> {
        self.check_block(block)?;
        if self.have.get(block.index) || self.pending.get(block.index) {
            return Ok(Received::Duplicate);
        }
        let p = self
            .partial
            .get_mut(&block.index)
            .ok_or(PickError::Unrequested(block))?;
        let s = &mut p.slots[(block.begin / BLOCK_LEN) as usize];
        match s.state {
            State::Received => return Ok(Received::Duplicate),
            // A block whose request was dropped (choke) may still arrive: the data is good, keep it.
            State::Free => p.free -= 1,
            State::Requested => {}
        }
        s.state = State::Received;
        let mut cancel: Vec<PeerKey> = std::mem::take(&mut s.extra);
        if let Some(by) = s.by.take() {
            cancel.push(by);
        }
        cancel.retain(|&k| k != peer);
        p.received += 1;
        if !p.contributors.contains(&peer) {
            p.contributors.push(peer);
        }
        let piece_complete = if p.received as usize == p.slots.len() {
            let p = self.partial.remove(&block.index).expect("present");
            self.pending.set(block.index);
            Some(p.contributors)
        } else {
            None
        };
        Ok(Received::New {
            cancel,
            piece_complete,
        })
    }

    /// A request to `peer` will not be answered (choke, reject, disconnect, timeout): the block becomes
    /// free again unless another peer was also asked for it.
    pub fn drop_request(&mut self, peer: PeerKey, block: BlockRef) {
        let Some(p) = self.partial.get_mut(&block.index) else {
            return;
        };
        let Some(s) = p.slots.get_mut((block.begin / BLOCK_LEN) as usize) else {
            return;
        };
        if s.state != State::Requested {
            return;
        }
        s.extra.retain(|&k| k != peer);
        if s.by == Some(peer) {
            s.by = s.extra.pop();
        }
        if s.by.is_none() {
            s.state = State::Free;
            p.free += 1;
        }
    }

    /// A piece that every block was received for goes back to `partial` (all slots `Received`),
    /// because some of those blocks could not be written to storage: [`Picker::give_back`] then frees
    /// the unwritten ones. `contributors` are the peers returned by `block_received`, kept so a later
    /// hash failure still blames the right peers. Does nothing unless the piece is pending.
    pub fn reopen(&mut self, index: u32, contributors: Vec<PeerKey>) {
        if index >= self.num_pieces || !self.pending.get(index) {
            return;
        }
        self.pending.clear(index);
        let n = self.blocks_in(index);
        self.partial.insert(
            index,
            Partial {
                slots: vec![
                    Slot {
                        state: State::Received,
                        by: None,
                        extra: Vec::new()
                    };
                    n as usize
                ],
                free: 0,
                received: n,
                contributors,
            },
        );
    }

    /// A block the picker counted as received was not stored (write error): it is wanted again. It
    /// stays requested from `still_requested` (endgame copies that were not cancelled), else it is
    /// free for the next `pick`. A block of a pending piece needs [`Picker::reopen`] first.
    pub fn give_back(&mut self, block: BlockRef, still_requested: &[PeerKey]) {
        let Some(p) = self.partial.get_mut(&block.index) else {
            return;
        };
        let Some(s) = p.slots.get_mut((block.begin / BLOCK_LEN) as usize) else {
            return;
        };
        if s.state != State::Received {
            return;
        }
        p.received -= 1;
        match still_requested.split_first() {
            Some((&by, extra)) => {
                s.state = State::Requested;
                s.by = Some(by);
                s.extra = extra.to_vec();
            }
            None => {
                s.state = State::Free;
                p.free += 1;
            }
        }
    }

    /// The piece passed its SHA-1 check and is on disk: it can be announced with `have`.
    pub fn piece_verified(&mut self, index: u32) {
        self.pending.clear(index);
        self.have.set(index);
    }

    /// The piece failed its SHA-1 check: every block is fetched again (from other peers if the node
    /// banned the sender).
    pub fn piece_failed(&mut self, index: u32) {
        self.pending.clear(index);
        self.partial.remove(&index);
    }

    /// Pieces started but not complete (for stats and tests).
    pub fn started_pieces(&self) -> Vec<u32> {
        self.partial.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const PL: u32 = 4 * BLOCK_LEN;

    fn picker(n: u32) -> Picker {
        Picker::new(PL, n as u64 * PL as u64, Bitfield::new(n))
    }

    #[test]
    fn strict_priority_finishes_started_piece_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = picker(10);
        let all = Bitfield::full(10);
        let first = p.pick(1, &all, &mut rng).unwrap();
        for b in 1..4 {
            let next = p.pick(2, &all, &mut rng).unwrap();
            assert_eq!(
                next.index, first.index,
                "same piece until all its blocks are requested"
            );
            assert_eq!(next.begin, b * BLOCK_LEN);
        }
        assert_ne!(p.pick(2, &all, &mut rng).unwrap().index, first.index);
    }

    #[test]
    fn rarest_first_after_random_start() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut have = Bitfield::new(12);
        for i in 0..RANDOM_FIRST_PIECES {
            have.set(i);
        }
        let mut p = Picker::new(PL, 12 * PL as u64, have);
        // Three peers have everything; piece 9 is also with a fourth, piece 6 only with the seed.
        let all = Bitfield::full(12);
        for _ in 0..3 {
            p.add_peer_pieces(&all);
        }
        let mut rare = Bitfield::new(12);
        for i in 4..12 {
            if i != 6 {
                rare.set(i);
            }
        }
        p.add_peer_pieces(&rare);
        assert_eq!(p.availability(6), 3);
        assert_eq!(p.availability(9), 4);
        let got = p.pick(1, &all, &mut rng).unwrap();
        assert_eq!(got.index, 6, "the rarest piece comes first");
    }

    #[test]
    fn random_first_spreads_over_pieces() {
        let all = Bitfield::full(64);
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = picker(64);
            // Piece 0 is the rarest, yet the first pick is random.
            let mut avail = Bitfield::full(64);
            avail.clear(0);
            p.add_peer_pieces(&avail);
            firsts.insert(p.pick(1, &all, &mut rng).unwrap().index);
        }
        assert!(firsts.len() > 5, "first pieces are random, got {firsts:?}");
    }

    #[test]
    fn equally_rare_pieces_come_in_file_order_from_a_random_origin() {
        let n = 64;
        let all = Bitfield::full(n);
        let mut origins = std::collections::HashSet::new();
        for seed in 0..8 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = picker(n);
            p.add_peer_pieces(&all);
            let mut started = Vec::new();
            while let Some(b) = p.pick(1, &all, &mut rng) {
                if started.last() != Some(&b.index) {
                    started.push(b.index);
                }
                if let Received::New {
                    piece_complete: Some(_),
                    ..
                } = p.block_received(1, b).unwrap()
                {
                    p.piece_verified(b.index);
                }
            }
            assert!(p.is_complete());
            // After the random first pieces, each new piece is the next one not yet taken.
            let first = RANDOM_FIRST_PIECES as usize;
            for w in started[first..].windows(2) {
                let mut next = (w[0] + 1) % n;
                while started[..started.iter().position(|x| *x == w[1]).unwrap()].contains(&next) {
                    next = (next + 1) % n;
                }
                assert_eq!(w[1], next, "sequential after {}: {started:?}", w[0]);
            }
            origins.insert(started[first]);
        }
        assert!(origins.len() > 3, "origins differ: {origins:?}");
    }

    #[test]
    fn only_pieces_the_peer_has() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = picker(8);
        let mut has = Bitfield::new(8);
        has.set(5);
        for _ in 0..4 {
            assert_eq!(p.pick(1, &has, &mut rng).unwrap().index, 5);
        }
        assert_eq!(p.pick(1, &has, &mut rng), None);
        assert!(!p.in_endgame());
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut p = picker(2);
        let all = Bitfield::full(2);
        let mut asked = Vec::new();
        while let Some(b) = p.pick(1, &all, &mut rng) {
            asked.push(b);
        }
        assert_eq!(asked.len(), 8);
        assert!(p.in_endgame());
        // Peer 2 gets every outstanding block again, once each.
        let mut dup = Vec::new();
        while let Some(b) = p.pick(2, &all, &mut rng) {
            dup.push(b);
        }
        dup.sort();
        asked.sort();
        assert_eq!(dup, asked);
        // Two copies of each are in flight: a third peer is not asked as well.
        assert_eq!(p.pick(3, &all, &mut rng), None);
        // Peer 2 delivers first: peer 1 must be cancelled; then peer 1's copy is a duplicate.
        let r = p.block_received(2, asked[0]).unwrap();
        assert_eq!(
            r,
            Received::New {
                cancel: vec![1],
                piece_complete: None
            }
        );
        assert_eq!(p.block_received(1, asked[0]).unwrap(), Received::Duplicate);
    }

    #[test]
    fn dropped_requests_are_picked_again_and_failures_refetch() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let b0 = p.pick(1, &all, &mut rng).unwrap();
        p.drop_request(1, b0);
        assert_eq!(p.pick(2, &all, &mut rng), Some(b0));
        let mut blocks = vec![b0];
        while let Some(b) = p.pick(2, &all, &mut rng) {
            if !blocks.contains(&b) {
                blocks.push(b);
            } else {
                break;
            }
        }
        let mut last = None;
        for b in &blocks {
            last = Some(p.block_received(2, *b).unwrap());
        }
        assert_eq!(
            last,
            Some(Received::New {
                cancel: vec![],
                piece_complete: Some(vec![2])
            })
        );
        p.piece_failed(0);
        assert_eq!(
            p.pick(3, &all, &mut rng).map(|b| b.index),
            Some(0),
            "refetched after a bad hash"
        );
    }

    #[test]
    fn bad_blocks_are_refused() {
        let p = Picker::new(PL, PL as u64 + 100, Bitfield::new(2));
        assert!(p
            .check_block(BlockRef {
                index: 1,
                begin: 0,
                len: 100
            })
            .is_ok());
        assert!(p
            .check_block(BlockRef {
                index: 1,
                begin: 0,
                len: BLOCK_LEN
            })
            .is_err());
        assert!(p
            .check_block(BlockRef {
                index: 0,
                begin: 1,
                len: BLOCK_LEN
            })
            .is_err());
        assert!(p
            .check_block(BlockRef {
                index: 2,
                begin: 0,
                len: 100
            })
            .is_err());
    }

    #[test]
    fn completes_a_whole_torrent() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut p = Picker::new(PL, 7 * PL as u64 + 5000, Bitfield::new(8));
        let all = Bitfield::full(8);
        p.add_peer_pieces(&all);
        while let Some(b) = p.pick(1, &all, &mut rng) {
            if let Received::New {
                piece_complete: Some(_),
                ..
            } = p.block_received(1, b).unwrap()
            {
                p.piece_verified(b.index);
            }
        }
        assert!(p.is_complete());
    }
}
