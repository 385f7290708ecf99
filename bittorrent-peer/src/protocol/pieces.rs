//! Piece verification bookkeeping (BEP 3: "verify each piece's SHA-1 before announcing it"): incremental
//! hashing of in-order blocks so most pieces never need a read-back, and strikes against peers that sent
//! data for pieces that failed the check.

use std::collections::HashMap;

use common::hash::Sha1Digest;
use sha1::{Digest, Sha1};

use crate::protocol::picker::PeerKey;

/// Hash failures a peer may take part in before it is banned.
pub const BAN_STRIKES: u32 = 2;

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
    counts: HashMap<PeerKey, u32>,
    /// Pieces that failed verification.
    pub failed_pieces: u64,
}

impl Strikes {
    /// A piece failed: each contributor gets a strike (the sole contributor of a bad piece gets two,
    /// since nobody else can be to blame). Returns the peers to ban now.
    pub fn piece_failed(&mut self, contributors: &[PeerKey]) -> Vec<PeerKey> {
        self.failed_pieces += 1;
        let weight = if contributors.len() == 1 { 2 } else { 1 };
        let mut ban = Vec::new();
        for &p in contributors {
            let c = self.counts.entry(p).or_insert(0);
            *c += weight;
            if *c >= BAN_STRIKES {
                ban.push(p);
            }
        }
        ban
    }

    /// Strikes of a peer.
    pub fn strikes(&self, peer: PeerKey) -> u32 {
        self.counts.get(&peer).copied().unwrap_or(0)
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
    fn sole_sender_of_a_bad_piece_is_banned_shared_blame_takes_two() {
        let mut s = Strikes::default();
        assert_eq!(s.piece_failed(&[1, 2]), Vec::<PeerKey>::new());
        assert_eq!(s.piece_failed(&[2, 3]), vec![2]);
        assert_eq!(s.piece_failed(&[7]), vec![7]);
        assert_eq!(s.strikes(1), 1);
        assert_eq!(s.failed_pieces, 3);
    }
}
