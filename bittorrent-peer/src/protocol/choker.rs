//! The choker (BEP 3 "choking" and the mainline algorithm it describes): tit-for-tat upload slots.
//!
//! - Every [`ROUND`] (10 s) the interested peers are ranked by the rate at which they upload **to us**
//!   (when leeching) or at which we upload **to them** (when seeding), and the best [`UPLOAD_SLOTS`] (4)
//!   are unchoked; every other peer is choked, except the optimistic one.
//! - Every third round ([`OPTIMISTIC_ROUND`], 30 s) one more choked, interested peer is unchoked at
//!   random (new peers weighted [`NEW_PEER_WEIGHT`] times), so newcomers get a first piece and we discover
//!   better partners.
//! - Anti-snubbing: a peer that has unchoked us, that we are interested in, but that sent no block for
//!   [`SNUB_TIME`] (60 s) is *snubbing* us: it is not ranked for a regular slot (only an optimistic unchoke
//!   can serve it). A seed ranks by its own upload and wants nothing, so snubbing does not apply to it.
//! - Between rounds, a free slot is filled at once by a newly interested peer so that a fresh swarm starts
//!   without waiting 10 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::protocol::picker::PeerKey;

/// Regular upload slots.
pub const UPLOAD_SLOTS: usize = 4;
/// Time between choke rounds.
pub const ROUND: Duration = Duration::from_secs(10);
/// Time between optimistic unchoke rotations.
pub const OPTIMISTIC_ROUND: Duration = Duration::from_secs(30);
/// A peer that unchoked us and sent nothing for this long is snubbing us.
pub const SNUB_TIME: Duration = Duration::from_secs(60);
/// A peer connected for less than this is "new" for the optimistic unchoke.
pub const NEW_PEER_TIME: Duration = Duration::from_secs(60);
/// How much more likely a new peer is to be chosen as optimistic unchoke.
pub const NEW_PEER_WEIGHT: u32 = 3;

#[derive(Clone, Debug)]
struct PeerState {
    connected: Instant,
    interested: bool,
    unchoked: bool,
    /// Peer has unchoked us (needed to detect snubbing).
    unchoked_us: bool,
    /// We are interested in the peer: without that, no blocks is no snub.
    am_interested: bool,
    last_block: Option<Instant>,
    since_unchoked_us: Option<Instant>,
    since_am_interested: Option<Instant>,
    down_window: u64,
    up_window: u64,
    down_rate: f64,
    up_rate: f64,
}

/// A choke or unchoke to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Who.
    pub peer: PeerKey,
    /// `true`: send unchoke; `false`: send choke.
    pub unchoke: bool,
}

/// Upload-slot state for one torrent.
#[derive(Debug, Default)]
pub struct Choker {
    peers: BTreeMap<PeerKey, PeerState>,
    next_round: Option<Instant>,
    next_optimistic: Option<Instant>,
    optimistic: Option<PeerKey>,
    /// Decisions made so far (for the stats).
    pub rounds: u64,
}

impl Choker {
    /// An empty choker.
    pub fn new() -> Choker {
        Choker::default()
    }

    /// A new connection (starts choked, not interested).
    pub fn add_peer(&mut self, peer: PeerKey, now: Instant) {
        self.peers.insert(
            peer,
            PeerState {
                connected: now,
                interested: false,
                unchoked: false,
                unchoked_us: false,
                am_interested: false,
                last_block: None,
                since_unchoked_us: None,
                since_am_interested: None,
                down_window: 0,
                up_window: 0,
                down_rate: 0.0,
                up_rate: 0.0,
            },
        );
    }

    /// The connection closed.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        self.peers.remove(&peer);
        if self.optimistic == Some(peer) {
            self.optimistic = None;
        }
    }

    /// The peer sent interested / not interested.
    pub fn set_interested(&mut self, peer: PeerKey, interested: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.interested = interested;
        }
    }

    /// The peer choked or unchoked us.
    pub fn set_unchoked_us(&mut self, peer: PeerKey, unchoked: bool, now: Instant) {
        // A repeated unchoke does not restart the snubbing clock.
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.unchoked_us != unchoked {
                p.unchoked_us = unchoked;
                p.since_unchoked_us = unchoked.then_some(now);
            }
        }
    }

    /// We became interested (or not) in the peer's pieces.
    pub fn set_am_interested(&mut self, peer: PeerKey, interested: bool, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.am_interested != interested {
                p.am_interested = interested;
                p.since_am_interested = interested.then_some(now);
            }
        }
    }

    /// `bytes` of block data arrived from the peer.
    pub fn downloaded(&mut self, peer: PeerKey, bytes: u64, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.down_window += bytes;
            p.last_block = Some(now);
        }
    }

    /// We sent `bytes` of block data to the peer.
    pub fn uploaded(&mut self, peer: PeerKey, bytes: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.up_window += bytes;
        }
    }

    /// Whether the peer currently has an upload slot.
    pub fn is_unchoked(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.unchoked)
    }

    /// Whether the peer is snubbing us at `now` (it matters only while we are leeching).
    pub fn is_snubbing(&self, peer: PeerKey, now: Instant) -> bool {
        self.peers.get(&peer).is_some_and(|p| snubbing(p, now))
    }

    /// The current optimistic unchoke.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// Last measured rates (bytes/s) from and to the peer.
    pub fn rates(&self, peer: PeerKey) -> Option<(f64, f64)> {
        self.peers.get(&peer).map(|p| (p.down_rate, p.up_rate))
    }

    /// When [`Choker::tick`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_round
    }

    /// Runs a round if one is due, otherwise only fills free slots; returns the changes to send.
    pub fn tick(&mut self, now: Instant, seeding: bool, rng: &mut impl Rng) -> Vec<Decision> {
        let before: BTreeMap<PeerKey, bool> =
            self.peers.iter().map(|(k, p)| (*k, p.unchoked)).collect();
        if self.next_round.is_none_or(|t| now >= t) {
            self.round(now, seeding, rng);
        } else {
            self.fill_free_slots(now, seeding);
        }
        self.peers
            .iter()
            .filter(|(k, p)| before.get(k) != Some(&p.unchoked))
            .map(|(k, p)| Decision {
                peer: *k,
                unchoke: p.unchoked,
            })
            .collect()
    }

    fn fill_free_slots(&mut self, now: Instant, seeding: bool) {
        let used = self
            .peers
            .iter()
            .filter(|(k, p)| p.unchoked && Some(**k) != self.optimistic)
            .count();
        let mut free = UPLOAD_SLOTS.saturating_sub(used);
        for p in self.peers.values_mut() {
            if free == 0 {
                break;
            }
            if p.interested && !p.unchoked && (seeding || !snubbing(p, now)) {
                p.unchoked = true;
                free -= 1;
            }
        }
    }

    fn round(&mut self, now: Instant, seeding: bool, rng: &mut impl Rng) {
        self.rounds += 1;
        let secs = match self.next_round {
            Some(t) => (ROUND + now.saturating_duration_since(t)).as_secs_f64(),
            None => ROUND.as_secs_f64(),
        };
        for p in self.peers.values_mut() {
            p.down_rate = p.down_window as f64 / secs;
            p.up_rate = p.up_window as f64 / secs;
            p.down_window = 0;
            p.up_window = 0;
        }
        self.next_round = Some(now + ROUND);
        // Rank interested peers; a leecher leaves out those snubbing it.
        let mut ranked: Vec<(PeerKey, f64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.interested && (seeding || !snubbing(p, now)))
            .map(|(k, p)| (*k, if seeding { p.up_rate } else { p.down_rate }))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let regular: Vec<PeerKey> = ranked.iter().take(UPLOAD_SLOTS).map(|(k, _)| *k).collect();
        // Optimistic unchoke rotates every 30 s, or at once when it left or got a regular slot.
        let rotate = self.next_optimistic.is_none_or(|t| now >= t)
            || self.optimistic.is_none_or(|o| {
                regular.contains(&o) || !self.peers.get(&o).is_some_and(|p| p.interested)
            });
        if rotate {
            let candidates: Vec<(PeerKey, u32)> = self
                .peers
                .iter()
                .filter(|(k, p)| p.interested && !regular.contains(k))
                .map(|(k, p)| {
                    let new = now.saturating_duration_since(p.connected) < NEW_PEER_TIME;
                    (*k, if new { NEW_PEER_WEIGHT } else { 1 })
                })
                .collect();
            let total: u32 = candidates.iter().map(|c| c.1).sum();
            self.optimistic = None;
            if total > 0 {
                let mut r = rng.gen_range(0..total);
                for (k, w) in candidates {
                    if r < w {
                        self.optimistic = Some(k);
                        break;
                    }
                    r -= w;
                }
            }
            self.next_optimistic = Some(now + OPTIMISTIC_ROUND);
        }
        let opt = self.optimistic;
        for (k, p) in self.peers.iter_mut() {
            p.unchoked = regular.contains(k) || Some(*k) == opt;
        }
    }
}

/// No block for [`SNUB_TIME`] while the peer unchoked us and we wanted something from it, counted from
/// the latest of: its last block, its unchoke, our interest.
fn snubbing(p: &PeerState, now: Instant) -> bool {
    p.unchoked_us
        && p.am_interested
        && [p.last_block, p.since_unchoked_us, p.since_am_interested]
            .into_iter()
            .flatten()
            .max()
            .is_some_and(|t| now.saturating_duration_since(t) >= SNUB_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn unchoked(c: &Choker) -> Vec<PeerKey> {
        (0..100).filter(|k| c.is_unchoked(*k)).collect()
    }

    #[test]
    fn four_best_uploaders_plus_one_optimistic() {
        let t0 = base();
        let mut rng = StdRng::seed_from_u64(1);
        let mut c = Choker::new();
        for k in 0..8 {
            c.add_peer(k, t0 - Duration::from_secs(600));
            c.set_interested(k, true);
        }
        c.tick(t0, false, &mut rng);
        // Peers 2..=5 give us the most.
        for (k, bytes) in [(2, 900u64), (3, 800), (4, 700), (5, 600), (0, 10), (1, 5)] {
            c.downloaded(k, bytes * 1000, t0 + Duration::from_secs(5));
        }
        let t1 = t0 + ROUND;
        c.tick(t1, false, &mut rng);
        let on = unchoked(&c);
        assert_eq!(on.len(), 5, "4 regular + 1 optimistic: {on:?}");
        for k in 2..=5 {
            assert!(on.contains(&k));
        }
        let opt = c.optimistic().unwrap();
        assert!(!(2..=5).contains(&opt));
        assert!((c.rates(2).unwrap().0 - 90_000.0).abs() < 1.0);
    }

    /// Peers holding a regular slot (unchoked, not as the optimistic unchoke).
    fn regular(c: &Choker) -> Vec<PeerKey> {
        unchoked(c)
            .into_iter()
            .filter(|k| Some(*k) != c.optimistic())
            .collect()
    }

    /// A start time with room before it (peers "connected ten minutes ago").
    fn base() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// Interested peers connected ten minutes before `t0` (no longer "new").
    fn old_peers(c: &mut Choker, keys: std::ops::Range<PeerKey>, t0: Instant) {
        for k in keys {
            c.add_peer(k, t0 - Duration::from_secs(600));
            c.set_interested(k, true);
        }
    }

    #[test]
    fn seeding_ranks_by_our_upload_not_by_theirs() {
        let t0 = base();
        for seeding in [true, false] {
            let mut rng = StdRng::seed_from_u64(2);
            let mut c = Choker::new();
            old_peers(&mut c, 0..8, t0);
            c.tick(t0, seeding, &mut rng);
            for k in 0..8 {
                // We upload most to 4..8; 0..4 upload most to us.
                c.uploaded(k, (k + 1) * 100_000);
                c.downloaded(k, (8 - k) * 100_000, t0 + Duration::from_secs(1));
            }
            c.tick(t0 + ROUND, seeding, &mut rng);
            let (want, others) = if seeding {
                (vec![4, 5, 6, 7], 0..4)
            } else {
                (vec![0, 1, 2, 3], 4..8)
            };
            assert_eq!(regular(&c), want, "seeding: {seeding}");
            let o = c.optimistic().expect("choked interested peers remain");
            assert!(others.contains(&o), "seeding {seeding}: optimistic {o}");
        }
    }

    #[test]
    fn optimistic_unchoke_rotates_every_third_round_among_choked_interested_peers() {
        let t0 = base();
        let mut rng = StdRng::seed_from_u64(3);
        let mut c = Choker::new();
        old_peers(&mut c, 0..12, t0);
        // Three more peers want nothing from us.
        for k in 12..15 {
            c.add_peer(k, t0 - Duration::from_secs(600));
        }
        let mut t = t0;
        let mut prev = None;
        let mut draws = Vec::new();
        for round in 0..30u64 {
            // Peers 0..4 upload to us the most in every round: they keep the regular slots.
            for k in 0..4 {
                c.downloaded(k, 100_000 * (k + 1), t);
            }
            c.tick(t, false, &mut rng);
            assert_eq!(c.rounds, round + 1);
            let o = c
                .optimistic()
                .expect("8 choked interested peers to draw from");
            assert!((4..12).contains(&o), "round {round}: optimistic {o}");
            let mut want = vec![0, 1, 2, 3, o];
            want.sort_unstable();
            assert_eq!(
                unchoked(&c),
                want,
                "round {round}: 4 regular + 1 optimistic"
            );
            if round % 3 == 0 {
                draws.push(o);
            } else {
                assert_eq!(Some(o), prev, "round {round}: rotated between 30 s marks");
            }
            prev = Some(o);
            t += ROUND;
        }
        // A new draw at each of the 10 marks: the slot moves on and reaches several peers.
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() >= 4, "{draws:?}");
        let moves = draws.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(moves >= 6, "{draws:?}");
    }

    #[test]
    fn new_peers_are_three_times_as_likely_to_be_the_optimistic_unchoke() {
        const DRAWS: u32 = 3000;
        let t0 = base();
        let mut rng = StdRng::seed_from_u64(6);
        let mut counts = [0u32; 8];
        for _ in 0..DRAWS {
            let mut c = Choker::new();
            old_peers(&mut c, 0..7, t0);
            // Connected 5 s ago: new.
            c.add_peer(7, t0 - Duration::from_secs(5));
            c.set_interested(7, true);
            for k in 0..4 {
                c.downloaded(k, 1_000_000, t0);
            }
            c.tick(t0, false, &mut rng);
            counts[c.optimistic().unwrap() as usize] += 1;
        }
        assert_eq!(counts[..4], [0; 4], "regular peers are not drawn");
        // Weights 1, 1, 1 and 3: the new peer expects half the draws, each old one a sixth.
        let share = |k: usize| f64::from(counts[k]) / f64::from(DRAWS);
        assert!((0.45..0.55).contains(&share(7)), "{counts:?}");
        for k in 4..7 {
            assert!((0.13..0.21).contains(&share(k)), "{counts:?}");
        }
    }

    #[test]
    fn a_peer_snubbing_us_for_60s_is_not_ranked_as_a_top_uploader() {
        let t0 = base();
        let mut rng = StdRng::seed_from_u64(4);
        let mut c = Choker::new();
        old_peers(&mut c, 0..5, t0);
        // We want pieces from everyone. Peers 0..4 unchoked us; peer 4 keeps choking us.
        for k in 0..5 {
            c.set_am_interested(k, true, t0);
        }
        for k in 0..4 {
            c.set_unchoked_us(k, true, t0);
        }
        // Peer 0 sends a lot once, then nothing; 1..4 keep sending a little.
        c.downloaded(0, 50_000_000, t0 + Duration::from_secs(1));
        let mut t = t0;
        for _ in 0..=7 {
            for k in 1..4 {
                c.downloaded(k, 10_000, t);
            }
            // A repeated unchoke does not reset the snubbing clock.
            c.set_unchoked_us(0, true, t);
            c.tick(t, false, &mut rng);
            if t == t0 {
                assert_eq!(
                    regular(&c),
                    vec![0, 1, 2, 3],
                    "0 is the top uploader while it sends"
                );
            }
            t += ROUND;
        }
        let t70 = t0 + 7 * ROUND;
        assert!(
            !c.is_snubbing(0, t0 + Duration::from_secs(60)),
            "59 s silent"
        );
        assert!(c.is_snubbing(0, t70), "69 s silent");
        assert!(!c.is_snubbing(4, t70), "a peer choking us is not snubbing");
        // At 70 s peer 0 ties peer 4 at rate 0 but is left out: 1, 2, 3 and 4 get the slots, and
        // only the optimistic unchoke (0 is the one choked interested peer) can serve it.
        assert_eq!(regular(&c), vec![1, 2, 3, 4]);
        assert_eq!(c.optimistic(), Some(0));
        // A seed wants nothing, so snubbing does not count: our upload to 0 ranks it first.
        c.uploaded(0, 1_000_000);
        c.tick(t70 + ROUND, true, &mut rng);
        assert!(regular(&c).contains(&0), "{:?}", regular(&c));
        // No snub while we are not interested, and the clock restarts with our interest.
        let t90 = t70 + 2 * ROUND;
        c.set_am_interested(0, false, t90);
        assert!(!c.is_snubbing(0, t90));
        c.set_am_interested(0, true, t90);
        assert!(!c.is_snubbing(0, t90 + SNUB_TIME - Duration::from_secs(1)));
        assert!(c.is_snubbing(0, t90 + SNUB_TIME));
        // One block ends it.
        c.downloaded(0, 16_384, t90 + SNUB_TIME);
        assert!(!c.is_snubbing(0, t90 + SNUB_TIME));
    }

    #[test]
    fn free_slots_fill_between_rounds_and_uninterested_stay_choked() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let mut c = Choker::new();
        c.tick(t0, false, &mut rng);
        c.add_peer(1, t0);
        c.add_peer(2, t0);
        c.set_interested(1, true);
        let d = c.tick(t0 + Duration::from_millis(10), false, &mut rng);
        assert_eq!(
            d,
            vec![Decision {
                peer: 1,
                unchoke: true
            }]
        );
        assert!(!c.is_unchoked(2));
    }
}
