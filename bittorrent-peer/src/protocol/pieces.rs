//! Piece verification bookkeeping (BEP 3: "verify each piece's SHA-1 before announcing it"): incremental
//! hashing of in-order blocks so most pieces never need a read-back, and strikes against peers that sent
//! data for pieces that failed the check.

use std::collections::HashMap;

use common::hash::Sha1Digest;
use sha1::{Digest, Sha1};

use crate::protocol::picker::PeerKey;

/// Hash failures a peer may take part in before it is banned ("banned after repeated failures"): a
/// peer that shares a bad piece with others may be innocent, so one or two failures are forgiven.
pub const BAN_FAILURES: u32 = 3;
/// Bad pieces a peer may send alone before it is banned: nobody else can be to blame for those, but a
/// single one may still be a bit flip on the way, so the ban waits for the second.
pub const BAN_SOLE_FAILURES: u32 = 2;

/// Running SHA-1 of pieces whose blocks arrive in order.
#[derive(Default)]
pub struct PieceHashers {
    running: HashMap<u32, (Sha1, u32)>,
}

impl std::fmt::Debug for PieceHashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PieceHashers")
            .field("running", &self.running.len())
            .finish()
    }
}

impl PieceHashers {
    /// Feeds a block; the hasher only advances when `begin` is exactly where it stopped.
    pub fn feed(&mut self, index: u32, begin: u32, data: &[u8]) {
        let e = self
            .running
            .entry(index)
            .or_insert_with(|| (Sha1::new(), 0));
        if e.1 == begin {
            e.0.update(data);
            e.1 += data.len() as u32;
        }
    }

    /// The digest if the whole piece (`len` bytes) went through in order; `None` means the caller must
    /// hash the piece from storage. The state is dropped either way.
    pub fn finish(&mut self, index: u32, len: u32) -> Option<Sha1Digest> {
        let (h, upto) = self.running.remove(&index)?;
        (upto == len).then(|| Sha1Digest(h.finalize().into()))
    }

    /// Forgets a piece (failed or abandoned).
    pub fn forget(&mut self, index: u32) {
        self.running.remove(&index);
    }
}

/// Strikes against peers that contributed to pieces failing their hash.
#[derive(Debug, Default)]
pub struct Strikes {
    /// Per peer: (failed pieces it took part in, failed pieces it sent alone).
    counts: HashMap<PeerKey, (u32, u32)>,
    /// Pieces that failed verification.
    pub failed_pieces: u64,
}

impl Strikes {
    /// A piece failed: each contributor takes part in one more failure (and the sole contributor of a
    /// bad piece in one more failure of its own). Returns the peers to ban now: those at
    /// [`BAN_FAILURES`] failures, or at [`BAN_SOLE_FAILURES`] pieces they sent alone (once each).
    pub fn piece_failed(&mut self, contributors: &[PeerKey]) -> Vec<PeerKey> {
        self.failed_pieces += 1;
        let alone = contributors.len() == 1;
        let mut ban = Vec::new();
        for &p in contributors {
            let c = self.counts.entry(p).or_insert((0, 0));
            let over = |c: &(u32, u32)| c.0 >= BAN_FAILURES || c.1 >= BAN_SOLE_FAILURES;
            let before = over(c);
            c.0 += 1;
            if alone {
                c.1 += 1;
            }
            // Only when the limit is crossed: later failures of a peer still connected (its
            // pipelined blocks keep arriving until the ban closes it) do not ban it again.
            if over(c) && !before {
                ban.push(p);
            }
        }
        ban
    }

    /// Failed pieces a peer took part in.
    pub fn strikes(&self, peer: PeerKey) -> u32 {
        self.counts.get(&peer).map_or(0, |c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_blocks_hash_without_readback() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut h = PieceHashers::default();
        h.feed(3, 0, &data[..16384]);
        h.feed(3, 16384, &data[16384..32768]);
        h.feed(3, 32768, &data[32768..]);
        assert_eq!(h.finish(3, 40_000), Some(crate::metainfo::sha1(&data)));
        h.feed(4, 16384, &data[..10]);
        assert_eq!(h.finish(4, 40_000), None, "out of order: caller re-reads");
    }

    #[test]
    fn banned_only_after_repeated_failures() {
        let mut s = Strikes::default();
        let none = Vec::<PeerKey>::new();
        // A sole sender is forgiven one bad piece, not two.
        assert_eq!(s.piece_failed(&[7]), none);
        assert_eq!(s.piece_failed(&[7]), vec![7]);
        assert_eq!(s.piece_failed(&[7]), none, "banned once");
        // Shared blame: banned at the third failure taken part in.
        assert_eq!(s.piece_failed(&[1, 2]), none);
        assert_eq!(s.piece_failed(&[2, 3]), none);
        assert_eq!(s.piece_failed(&[2, 4]), vec![2]);
        // One bad piece alone plus two shared also makes three.
        assert_eq!(s.piece_failed(&[5]), none);
        assert_eq!(s.piece_failed(&[5, 6]), none);
        assert_eq!(s.piece_failed(&[5, 6]), vec![5]);
        assert_eq!(s.strikes(1), 1);
        assert_eq!(s.strikes(6), 2);
        assert_eq!(s.failed_pieces, 9);
    }
}
