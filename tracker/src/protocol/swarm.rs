//! The swarm state of a BEP 3 tracker, sans I/O: which peers are in which torrent, and the counters BEP 48
//! scrape reports. Time (`now`) and randomness (`rng`) are passed in, so every rule is unit-testable.
//!
//! Rules (BEP 3 "Trackers", and what real trackers do):
//! - A reply lists up to `numwant` peers (capped by [`Config::max_peers`]) chosen at random, never the
//!   requester itself (same peer id or same address), and no seeders to a peer known to be a seeder
//!   (`left == 0`): they have nothing to give each other.
//! - `stopped` removes the peer at once; peers that stop announcing expire after [`Config::peer_timeout`]
//!   (two intervals by default) in [`Tracker::expire`].
//! - `complete`/`incomplete` are the current seeders/leechers; `downloaded` counts `completed` events of
//!   peers not already known as seeders.
//! - Memory is bounded: at most [`Config::max_torrents`] torrents and [`Config::max_peers_per_torrent`]
//!   peers per torrent. Eviction policy: a new torrent arriving when the table is full is refused (the client
//!   sees a failure reason and retries later) rather than pushing out a live swarm, because a flood of fake
//!   info-hashes must not be able to evict real torrents. [`Tracker::expire`] drops torrents whose peers are
//!   all gone; torrents with a non-zero `downloaded` counter are kept for their counter until the table is
//!   more than [`KEEP_EMPTY_FRACTION`] full, and then the least recently active empty ones go first. A flood
//!   therefore fills the table for at most one peer timeout after it stops.
//! - Peers are bounded overall too: at most [`Config::max_peers_total`] over all torrents. When that many are
//!   held, an announce of a peer id the torrent does not hold yet is refused ([`Refusal::Full`], the client
//!   retries after its interval) instead of evicting anyone: peers already listed keep re-announcing and
//!   stopping, and the room comes back as peers stop or expire. A BEP 7 second address is not stored then.
//! - BEP 7: each torrent keeps its IPv4 and IPv6 peers apart (packed 20- and 32-byte entries; the IPv6
//!   list is only allocated when needed). A dual-stack peer that names its other address (`ipv4=` /
//!   `ipv6=`, [`Announce::alt_addr`]) is listed under both families but counted once; a peer that
//!   announces separately over each family (as BEP 7 now recommends) has an entry, and a count, per family.
//! - Peer identity is a 48-bit keyed hash of the peer id (SipHash-1-3 cut to 48 bits, key drawn from the
//!   first `rng`), not the 20-byte id: under a third of the entry's size; without the key nobody can make
//!   two ids collide on purpose, and by chance two peers of one swarm collide with odds of about n²/2⁴⁹
//!   (one in 50 000 for a swarm at the 100 000-peer cap). Full ids are only needed for the BEP 3 dictionary form with `peer id`, so a torrent keeps them
//!   in a side table from the first announce that asks for that form ([`Announce::want_peer_ids`]) on; peers
//!   that have not announced since then are listed without `peer id` (as with `no_peer_id=1`) until their
//!   next announce.
//! - BEP 3 `key`: each entry keeps the 32-bit [`Announce::key`] its peer last announced with from its
//!   address. An announce (or `stopped`) for a known peer id from a *different* IP is refused
//!   ([`Refusal::KeyMismatch`]) unless it carries the same key, so knowing a peer id (dictionary replies hand
//!   them out) is not enough to move or evict another peer. From the same IP anything goes (and the key is
//!   updated: a restarted client draws a new one). A peer that announced without a key (0) has no such
//!   protection, as in opentracker.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use siphasher::sip::SipHasher13;

use crate::codec::http::{PeerEntry, ScrapeCounts};
use crate::codec::{Event, InfoHash, PeerId};

/// Above this fraction of [`Config::max_torrents`], empty torrents kept only for their counters are evicted.
pub const KEEP_EMPTY_FRACTION: f64 = 0.9;
/// Swarms up to this size find peers by a linear scan; bigger ones get a peer-id index (saves memory for the
/// many tiny swarms a tracker mostly holds).
const LINEAR_SCAN_MAX: usize = 24;

/// Tracker policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seconds between re-announces, sent as `interval`.
    pub interval: u32,
    /// Seconds sent as `min interval`.
    pub min_interval: u32,
    /// A peer not heard from for this long is removed (about two intervals).
    pub peer_timeout: Duration,
    /// Cap on peers in one reply, whatever `numwant` says.
    pub max_peers: u32,
    /// Peers sent when the client does not say `numwant`.
    pub default_numwant: u32,
    /// Cap on torrents held.
    pub max_torrents: usize,
    /// Cap on peers per torrent; peers beyond it still get peer lists but are not stored.
    pub max_peers_per_torrent: usize,
    /// Cap on peers over all torrents: beyond it an announce of a peer not held yet is refused
    /// ([`Refusal::Full`]); held peers still re-announce and stop (module doc).
    pub max_peers_total: usize,
    /// `None`: open mode, any info-hash. `Some`: only these (an allow-list).
    pub allow_list: Option<std::collections::HashSet<InfoHash>>,
    /// Allow a scrape without info-hashes to list every torrent.
    pub scrape_all: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: 1800,
            min_interval: 900,
            peer_timeout: Duration::from_secs(2 * 1800 + 60),
            max_peers: 50,
            default_numwant: 50,
            max_torrents: 1_000_000,
            max_peers_per_torrent: 100_000,
            max_peers_total: 10_000_000,
            allow_list: None,
            scrape_all: true,
        }
    }
}

/// Why an announce was refused (sent as `failure reason` or a UDP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Allow-list mode and the info-hash is not on it.
    #[error("torrent not allowed on this tracker")]
    NotAllowed,
    /// The torrent table is full (see the eviction policy in the module doc).
    #[error("tracker is full, try again later")]
    Full,
    /// The peer id is held by another address and the announce's `key` does not match (module doc).
    #[error("peer id in use from another address with a different key")]
    KeyMismatch,
}

/// An announce as the state machine needs it, whatever the transport.
#[derive(Clone, Copy, Debug)]
pub struct Announce {
    /// Torrent.
    pub info_hash: InfoHash,
    /// Peer id.
    pub peer_id: PeerId,
    /// Where other peers reach it (source IP, announced port).
    pub addr: SocketAddr,
    /// BEP 7: the peer's address of the other family, listed too (ignored if of the same family).
    pub alt_addr: Option<SocketAddr>,
    /// Bytes left.
    pub left: u64,
    /// Event.
    pub event: Event,
    /// Peers wanted (`None`: the default).
    pub numwant: Option<u32>,
    /// Only peers of this address family (`Some(true)`: IPv6), for transports whose reply can carry one
    /// family only (BEP 15); `None` for any.
    pub want_ipv6: Option<bool>,
    /// The reply lists peers with their `peer id` (BEP 3 dictionary form): the torrent starts keeping full
    /// peer ids (module doc).
    pub want_peer_ids: bool,
    /// BEP 3 `key` as 32 bits (0: none sent), see the module doc and [`key_bits`].
    pub key: u32,
}

/// The 32 bits kept for a BEP 3 HTTP `key`: its value when it is 1-8 hex digits (what clients send, and
/// the same number a BEP 15 announce of that client carries), otherwise a FNV-1a hash of its bytes.
pub fn key_bits(key: &[u8]) -> u32 {
    if (1..=8).contains(&key.len()) && key.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(v) = u32::from_str_radix(std::str::from_utf8(key).unwrap_or("0"), 16) {
            return v;
        }
    }
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// A peer id as stored: its keyed hash, 48 bits in a u64 (module doc).
type IdHash = u64;
/// Bytes of an [`IdHash`] kept in a peer entry.
const ID_BYTES: usize = 6;
/// The bits of a SipHash output kept as [`IdHash`].
const ID_MASK: u64 = (1 << (8 * ID_BYTES)) - 1;

/// Counters returned with every announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SwarmCounts {
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// An IP address as stored in a peer entry: 4 or 16 bytes, no padding.
trait PackedIp: Copy + std::fmt::Debug {
    fn pack(ip: IpAddr) -> Option<Self>;
    fn unpack(self) -> IpAddr;
}

impl PackedIp for [u8; 4] {
    fn pack(ip: IpAddr) -> Option<Self> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Some(v4.octets()),
            IpAddr::V6(_) => None,
        }
    }
    fn unpack(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

impl PackedIp for [u8; 16] {
    fn pack(ip: IpAddr) -> Option<Self> {
        match ip.to_canonical() {
            IpAddr::V6(v6) => Some(v6.octets()),
            IpAddr::V4(_) => None,
        }
    }
    fn unpack(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
}

/// Bit of [`Peer::stamp`] set for a seeder.
const SEEDER: u32 = 1 << 31;
/// Bit of [`Peer::stamp`] set for a BEP 7 second address (listed, not counted).
const ALT: u32 = 1 << 30;
/// The rest of [`Peer::stamp`]: last announce, seconds since the tracker's epoch (34 years).
const TIME_MASK: u32 = ALT - 1;

/// One peer, packed with byte alignment: 20 bytes for IPv4 and 32 for IPv6, where the 20-byte id,
/// `SocketAddr` and `Instant` would take 72 (peers are most of a tracker's memory).
#[derive(Clone, Copy, Debug)]
struct Peer<A> {
    /// Little-endian [`IdHash`] (its [`ID_BYTES`] low bytes).
    id: [u8; ID_BYTES],
    ip: A,
    port: [u8; 2],
    /// Little-endian `last_seen | SEEDER | ALT`.
    stamp: [u8; 4],
    /// Little-endian BEP 3 `key` (0: none).
    key: [u8; 4],
}

impl<A: PackedIp> Peer<A> {
    fn id(&self) -> IdHash {
        let mut b = [0u8; 8];
        b[..ID_BYTES].copy_from_slice(&self.id);
        u64::from_le_bytes(b)
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.unpack(), u16::from_be_bytes(self.port))
    }
    fn bits(&self) -> u32 {
        u32::from_le_bytes(self.stamp)
    }
    fn set_bits(&mut self, v: u32) {
        self.stamp = v.to_le_bytes();
    }
    fn seeder(&self) -> bool {
        self.bits() & SEEDER != 0
    }
    fn alt(&self) -> bool {
        self.bits() & ALT != 0
    }
    fn last_seen(&self) -> u32 {
        self.bits() & TIME_MASK
    }
    /// An announce from `ip` with `key` may not touch this entry.
    fn conflicts(&self, ip: IpAddr, key: u32) -> bool {
        let held = u32::from_le_bytes(self.key);
        held != 0 && held != key && self.ip.unpack() != ip
    }
}

fn pack_id(id: IdHash) -> [u8; ID_BYTES] {
    let mut b = [0u8; ID_BYTES];
    b.copy_from_slice(&id.to_le_bytes()[..ID_BYTES]);
    b
}

fn stamp(now: u32, seeder: bool, alt: bool) -> u32 {
    (now & TIME_MASK) | if seeder { SEEDER } else { 0 } | if alt { ALT } else { 0 }
}

/// The peers of one family in one torrent.
#[derive(Debug)]
struct PeerList<A> {
    peers: Vec<Peer<A>>,
    /// Peer id -> position in `peers`, only for swarms above [`LINEAR_SCAN_MAX`].
    /// Boxed: most swarms are small and never need one, so the empty case costs one word.
    #[allow(clippy::box_collection)] // the point is the 8-byte `None`, not the heap placement
    index: Option<Box<HashMap<IdHash, u32>>>,
    /// Counted (non-[`ALT`]) seeders.
    seeders: u32,
    /// [`ALT`] entries (listed, not counted).
    alts: u32,
}

impl<A: PackedIp> PeerList<A> {
    fn new() -> Self {
        PeerList {
            peers: Vec::new(),
            index: None,
            seeders: 0,
            alts: 0,
        }
    }

    fn len(&self) -> usize {
        self.peers.len()
    }

    /// Counted peers and counted seeders.
    fn counted(&self) -> (u32, u32) {
        (self.peers.len() as u32 - self.alts, self.seeders)
    }

    fn account(&mut self, bits: u32, add: bool) {
        let (s, a) = (
            u32::from(bits & SEEDER != 0 && bits & ALT == 0),
            u32::from(bits & ALT != 0),
        );
        if add {
            self.seeders += s;
            self.alts += a;
        } else {
            self.seeders -= s;
            self.alts -= a;
        }
    }

    fn find(&self, id: IdHash) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(&id).map(|&i| i as usize),
            None => self.peers.iter().position(|p| p.id() == id),
        }
    }

    fn push(&mut self, p: Peer<A>) {
        self.account(p.bits(), true);
        if self.peers.len() == self.peers.capacity() {
            // Grow by a quarter rather than double, from one: most torrents hold a handful of peers,
            // doubling wastes a third of the list on average and growing by half a fifth; the extra
            // copies are of a few hundred bytes.
            let extra = (self.peers.len() / 4).max(1);
            self.peers.reserve_exact(extra);
        }
        self.peers.push(p);
        let i = self.peers.len() - 1;
        match &mut self.index {
            Some(ix) => {
                ix.insert(p.id(), i as u32);
            }
            None if self.peers.len() > LINEAR_SCAN_MAX => {
                self.index = Some(Box::new(
                    self.peers
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (p.id(), i as u32))
                        .collect(),
                ));
            }
            None => {}
        }
    }

    fn remove_at(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.account(p.bits(), false);
        if let Some(ix) = &mut self.index {
            ix.remove(&p.id());
            if let Some(moved) = self.peers.get(i) {
                ix.insert(moved.id(), i as u32);
            }
            if self.peers.len() <= LINEAR_SCAN_MAX / 2 {
                self.index = None;
            }
        }
        if self.peers.capacity() > 2 * self.peers.len() + 4 {
            self.peers
                .shrink_to(self.peers.len() + self.peers.len() / 2);
        }
    }

    /// Inserts or updates the entry of `id`; returns 1 if a new entry was stored, else 0.
    fn upsert(&mut self, cap: usize, id: IdHash, addr: SocketAddr, bits: u32, key: u32) -> usize {
        let Some(ip) = A::pack(addr.ip()) else {
            return 0;
        };
        let port = addr.port().to_be_bytes();
        match self.find(id) {
            Some(i) => {
                let old = self.peers[i].bits();
                self.account(old, false);
                self.account(bits, true);
                let p = &mut self.peers[i];
                p.ip = ip;
                p.port = port;
                p.set_bits(bits);
                p.key = key.to_le_bytes();
                0
            }
            None if self.peers.len() < cap => {
                self.push(Peer {
                    id: pack_id(id),
                    ip,
                    port,
                    stamp: bits.to_le_bytes(),
                    key: key.to_le_bytes(),
                });
                1
            }
            None => 0,
        }
    }

    /// Removes the entry of `id`; returns 1 if there was one.
    fn remove(&mut self, id: IdHash) -> usize {
        match self.find(id) {
            Some(i) => {
                self.remove_at(i);
                1
            }
            None => 0,
        }
    }

    /// Removes entries last seen more than `timeout` seconds before `now`; returns how many.
    fn expire(&mut self, now: u32, timeout: u32) -> usize {
        let before = self.peers.len();
        let mut i = 0;
        while i < self.peers.len() {
            if now.saturating_sub(self.peers[i].last_seen()) > timeout {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        before - self.peers.len()
    }

    /// Appends up to `n` random peers for the requester `me` to `out`, skipping itself and, for a seeder,
    /// other seeders.
    ///
    /// Selection starts at a random position and walks the list circularly: O(n) rather than
    /// O(swarm), and every peer is equally likely to be included.
    fn select(
        &self,
        rng: &mut impl Rng,
        n: usize,
        me: (IdHash, &Announce),
        seeder: bool,
        ids: Option<&HashMap<IdHash, PeerId>>,
        out: &mut Vec<PeerEntry>,
    ) {
        let (me_id, me) = me;
        let len = self.peers.len();
        if len == 0 || n == 0 {
            return;
        }
        let start = rng.gen_range(0..len);
        let mut taken = 0;
        for k in 0..len {
            let p = &self.peers[(start + k) % len];
            if p.id() == me_id || (seeder && p.seeder()) {
                continue;
            }
            let addr = p.addr();
            if addr == me.addr {
                continue;
            }
            out.push(PeerEntry {
                addr,
                peer_id: ids.and_then(|m| m.get(&p.id()).copied()),
            });
            taken += 1;
            if taken == n {
                break;
            }
        }
    }
}

#[derive(Debug)]
struct Torrent {
    v4: PeerList<[u8; 4]>,
    /// Boxed and optional: most torrents have no IPv6 peer.
    v6: Option<Box<PeerList<[u8; 16]>>>,
    /// Full peer ids by hash, kept once a client of this swarm asked for them (module doc).
    #[allow(clippy::box_collection)] // as `PeerList::index`: the empty case costs one word
    ids: Option<Box<HashMap<IdHash, PeerId>>>,
    /// Seconds since the tracker's epoch.
    last_activity: u32,
    /// `completed` events (saturating: u32 keeps the entry at 64 bytes).
    downloaded: u32,
}

impl Torrent {
    fn new(now: u32) -> Torrent {
        Torrent {
            v4: PeerList::new(),
            v6: None,
            ids: None,
            downloaded: 0,
            last_activity: now,
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.as_ref().map_or(0, |l| l.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn counts(&self) -> SwarmCounts {
        let (n4, s4) = self.v4.counted();
        let (n6, s6) = self.v6.as_ref().map_or((0, 0), |l| l.counted());
        SwarmCounts {
            complete: s4 + s6,
            incomplete: n4 + n6 - s4 - s6,
        }
    }

    /// Whether `id` is known as a counted seeder in either family.
    fn known_seeder(&self, id: IdHash) -> bool {
        let in4 = self
            .v4
            .find(id)
            .is_some_and(|i| self.v4.peers[i].seeder() && !self.v4.peers[i].alt());
        in4 || self.v6.as_ref().is_some_and(|l| {
            l.find(id)
                .is_some_and(|i| l.peers[i].seeder() && !l.peers[i].alt())
        })
    }

    fn v6_mut(&mut self) -> &mut PeerList<[u8; 16]> {
        self.v6.get_or_insert_with(|| Box::new(PeerList::new()))
    }

    /// Stores `addr` for `id` (as a counted entry, or an [`ALT`] one); returns new entries stored.
    fn upsert(&mut self, cap: usize, id: IdHash, addr: SocketAddr, bits: u32, key: u32) -> usize {
        if addr.ip().to_canonical().is_ipv6() {
            self.v6_mut().upsert(cap, id, addr, bits, key)
        } else {
            self.v4.upsert(cap, id, addr, bits, key)
        }
    }

    /// Whether an entry of `id` belongs to another address with another key (module doc, `key`).
    fn key_conflict(&self, id: IdHash, ip: IpAddr, key: u32) -> bool {
        let ip = ip.to_canonical();
        let in4 = self
            .v4
            .find(id)
            .is_some_and(|i| self.v4.peers[i].conflicts(ip, key));
        in4 || self
            .v6
            .as_ref()
            .is_some_and(|l| l.find(id).is_some_and(|i| l.peers[i].conflicts(ip, key)))
    }

    fn remove(&mut self, id: IdHash) -> usize {
        let mut n = self.v4.remove(id);
        if let Some(l) = &mut self.v6 {
            n += l.remove(id);
            if l.len() == 0 {
                self.v6 = None;
            }
        }
        if let Some(ids) = &mut self.ids {
            ids.remove(&id);
        }
        self.trim_ids();
        n
    }

    /// Keeps the side table of full ids in step with the peers held, and no bigger than it needs to be.
    fn trim_ids(&mut self) {
        if self.is_empty() {
            self.ids = None;
        } else if let Some(ids) = &mut self.ids {
            if ids.capacity() > 2 * ids.len() + 8 {
                ids.shrink_to_fit();
            }
        }
    }

    /// Whether `id` has an entry of either family.
    fn holds(&self, id: IdHash) -> bool {
        self.v4.find(id).is_some() || self.v6.as_ref().is_some_and(|l| l.find(id).is_some())
    }

    fn expire(&mut self, now: u32, timeout: u32) -> usize {
        let mut n = self.v4.expire(now, timeout);
        if let Some(l) = &mut self.v6 {
            n += l.expire(now, timeout);
            if l.len() == 0 {
                self.v6 = None;
            }
        }
        if n > 0 {
            if let Some(mut ids) = self.ids.take() {
                ids.retain(|&h, _| self.holds(h));
                self.ids = Some(ids);
            }
            self.trim_ids();
        }
        n
    }

    /// Up to `n` peers for `me`: of its family only when it asks (BEP 15), else from both lists in
    /// proportion to their sizes.
    fn select(
        &self,
        rng: &mut impl Rng,
        n: usize,
        me: (IdHash, &Announce),
        seeder: bool,
        out: &mut Vec<PeerEntry>,
    ) {
        let ids = self.ids.as_deref();
        let len6 = self.v6.as_ref().map_or(0, |l| l.len());
        let (n4, n6) = match me.1.want_ipv6 {
            Some(true) => (0, n),
            Some(false) => (n, 0),
            None if len6 == 0 => (n, 0),
            None => {
                let n6 = (n * len6).div_ceil(self.len());
                (n - n6, n6)
            }
        };
        self.v4.select(rng, n4, me, seeder, ids, out);
        if let Some(l) = &self.v6 {
            l.select(rng, n6, me, seeder, ids, out);
        }
    }
}

/// Entries per chunk of a [`TorrentTable`]: about 90 KB, the most a growing table holds unused.
const TORRENT_CHUNK: usize = 1024;

/// The torrents, by info-hash. Entries (info-hash and [`Torrent`], 88 bytes) sit in fixed-size chunks and
/// a hash table maps info-hashes to 4-byte positions, where a `HashMap<InfoHash, Torrent>` keeps 88-byte
/// buckets a third empty on average and, while it doubles, the old and the new table (the largest part
/// of a tracker's memory besides the peers). Removal moves the last entry into the hole.
#[derive(Debug)]
struct TorrentTable {
    chunks: Vec<Vec<(InfoHash, Torrent)>>,
    len: usize,
    index: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl TorrentTable {
    fn new() -> Self {
        TorrentTable {
            chunks: Vec::new(),
            len: 0,
            index: hashbrown::HashTable::new(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, h: &InfoHash) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, h)
    }

    fn at(&self, i: usize) -> &(InfoHash, Torrent) {
        &self.chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK]
    }

    fn at_mut(&mut self, i: usize) -> &mut (InfoHash, Torrent) {
        &mut self.chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK]
    }

    fn position(&self, h: &InfoHash) -> Option<usize> {
        self.index
            .find(self.hash(h), |&i| self.at(i as usize).0 == *h)
            .map(|&i| i as usize)
    }

    fn get(&self, h: &InfoHash) -> Option<&Torrent> {
        self.position(h).map(|i| &self.at(i).1)
    }

    fn get_mut(&mut self, h: &InfoHash) -> Option<&mut Torrent> {
        self.position(h).map(|i| &mut self.at_mut(i).1)
    }

    /// Adds a torrent the table does not hold (the caller checked); returns its position.
    fn insert_new(&mut self, h: InfoHash, t: Torrent) -> usize {
        let pos = self.len;
        match self.chunks.last_mut() {
            Some(c) if c.len() < TORRENT_CHUNK => c.push((h, t)),
            _ => {
                let mut c = Vec::with_capacity(TORRENT_CHUNK);
                c.push((h, t));
                self.chunks.push(c);
            }
        }
        self.len += 1;
        let hash = self.hash(&h);
        let TorrentTable {
            chunks,
            index,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, pos as u32, |&i| rehash(hasher, chunks, i));
        pos
    }

    /// Removes the entry at `i` (`None` if there is none), moving the last entry into its place.
    fn remove_at(&mut self, i: usize) -> Option<Torrent> {
        if i >= self.len {
            return None;
        }
        let last = self.len - 1;
        let hash = self.hash(&self.at(i).0);
        if let Ok(e) = self.index.find_entry(hash, |&j| j as usize == i) {
            e.remove();
        }
        let moved = self.chunks.last_mut().and_then(Vec::pop)?;
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == last {
            return Some(moved.1);
        }
        let moved_hash = self.hash(&moved.0);
        if let Some(slot) = self.index.find_mut(moved_hash, |&j| j as usize == last) {
            *slot = i as u32;
        }
        Some(std::mem::replace(self.at_mut(i), moved).1)
    }

    fn remove(&mut self, h: &InfoHash) -> Option<Torrent> {
        self.position(h).and_then(|i| self.remove_at(i))
    }

    /// Keeps the entries for which `keep` is true.
    fn retain(&mut self, mut keep: impl FnMut(&InfoHash, &mut Torrent) -> bool) {
        // Downwards: the entry moved into a hole comes from above, so it was already looked at.
        for i in (0..self.len).rev() {
            let (h, t) = self.at_mut(i);
            if !keep(&*h, t) {
                self.remove_at(i);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(InfoHash, Torrent)> + '_ {
        self.chunks.iter().flatten()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Torrent> + '_ {
        self.chunks.iter_mut().flatten().map(|(_, t)| t)
    }

    /// Positions the index has room for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.index.capacity()
    }

    /// Gives back index room after many torrents went (hashbrown never shrinks by itself); the chunks
    /// already went with their last entries.
    fn shrink(&mut self) {
        let len = self.len;
        if self.index.capacity() > 2 * len + 64 {
            let TorrentTable {
                chunks,
                index,
                hasher,
                ..
            } = self;
            index.shrink_to(len + len / 4, |&i| rehash(hasher, chunks, i));
        }
    }
}

/// The hash of the info-hash at position `i`, for the index when it moves its entries.
fn rehash(hasher: &std::hash::RandomState, chunks: &[Vec<(InfoHash, Torrent)>], i: u32) -> u64 {
    let i = i as usize;
    std::hash::BuildHasher::hash_one(hasher, chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK].0)
}

impl Torrent {
    fn scrape(&self) -> ScrapeCounts {
        let c = self.counts();
        ScrapeCounts {
            complete: c.complete,
            downloaded: u64::from(self.downloaded),
            incomplete: c.incomplete,
        }
    }
}

/// All torrents and their swarms.
#[derive(Debug)]
pub struct Tracker {
    cfg: Config,
    torrents: TorrentTable,
    peers_total: usize,
    /// The first `now` seen; peer times are seconds since it.
    epoch: Option<Instant>,
    /// SipHash key of the peer-id hashes, drawn from the first announce's `rng`.
    id_key: Option<(u64, u64)>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: Config) -> Tracker {
        Tracker {
            cfg,
            torrents: TorrentTable::new(),
            peers_total: 0,
            epoch: None,
            id_key: None,
        }
    }

    fn secs(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// The policy in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Handles one announce: updates the swarm and appends the peers to send to `out` (cleared first).
    pub fn announce(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        a: &Announce,
        out: &mut Vec<PeerEntry>,
    ) -> Result<SwarmCounts, Refusal> {
        out.clear();
        if let Some(allow) = &self.cfg.allow_list {
            if !allow.contains(&a.info_hash) {
                return Err(Refusal::NotAllowed);
            }
        }
        let now_secs = self.secs(now);
        let (k0, k1) = *self.id_key.get_or_insert_with(|| (rng.gen(), rng.gen()));
        let id = {
            use std::hash::Hasher;
            let mut h = SipHasher13::new_with_keys(k0, k1);
            h.write(&a.peer_id.0);
            h.finish() & ID_MASK
        };
        let pos = self.torrents.position(&a.info_hash);
        if pos.is_none() {
            if a.event == Event::Stopped {
                // Nothing to remove and nothing worth creating a torrent for.
                return Ok(SwarmCounts::default());
            }
            if self.torrents.len() >= self.cfg.max_torrents {
                return Err(Refusal::Full);
            }
        }
        if self.peers_total >= self.cfg.max_peers_total
            && a.event != Event::Stopped
            && !pos.is_some_and(|i| self.torrents.at(i).1.holds(id))
        {
            return Err(Refusal::Full);
        }
        let cap = self.cfg.max_peers_per_torrent;
        let total_cap = self.cfg.max_peers_total;
        let held = self.peers_total;
        let pos = match pos {
            Some(i) => i,
            None => self
                .torrents
                .insert_new(a.info_hash, Torrent::new(now_secs)),
        };
        let t = &mut self.torrents.at_mut(pos).1;
        if t.key_conflict(id, a.addr.ip(), a.key) {
            return Err(Refusal::KeyMismatch);
        }
        t.last_activity = now_secs;
        if a.event == Event::Stopped {
            self.peers_total -= t.remove(id);
            return Ok(t.counts());
        }
        let seeder = a.left == 0 || a.event == Event::Completed;
        if a.event == Event::Completed && !t.known_seeder(id) {
            t.downloaded = t.downloaded.saturating_add(1);
        }
        let mut added = t.upsert(cap, id, a.addr, stamp(now_secs, seeder, false), a.key);
        if let Some(alt) = a.alt_addr.filter(|_| held + added < total_cap) {
            if alt.ip().to_canonical().is_ipv6() != a.addr.ip().to_canonical().is_ipv6() {
                added += t.upsert(cap, id, alt, stamp(now_secs, seeder, true), a.key);
            }
        }
        self.peers_total += added;
        if a.want_peer_ids && t.ids.is_none() {
            t.ids = Some(Box::default());
        }
        // A peer refused for the per-torrent cap has no entry, so no id either.
        if t.ids.is_some() && t.holds(id) {
            if let Some(ids) = &mut t.ids {
                ids.insert(id, a.peer_id);
            }
        }
        let n = a
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_peers) as usize;
        t.select(rng, n, (id, a), seeder, out);
        Ok(t.counts())
    }

    /// Replaces the allow-list (`None`: open mode), e.g. after the file was edited. Torrents no longer
    /// allowed are dropped at once with their peers.
    pub fn set_allow_list(&mut self, allow: Option<std::collections::HashSet<InfoHash>>) {
        if let Some(list) = &allow {
            let mut dropped = 0;
            self.torrents.retain(|h, t| {
                let keep = list.contains(h);
                if !keep {
                    dropped += t.len();
                }
                keep
            });
            self.peers_total -= dropped;
        }
        self.cfg.allow_list = allow;
    }

    /// Scrape counters of one torrent (zeros if unknown).
    pub fn scrape(&self, h: &InfoHash) -> ScrapeCounts {
        self.torrents
            .get(h)
            .map(Torrent::scrape)
            .unwrap_or_default()
    }

    /// Every torrent's counters (for a full scrape and the stats page), in no particular order.
    pub fn all(&self) -> impl Iterator<Item = (InfoHash, ScrapeCounts)> + '_ {
        self.torrents.iter().map(|(h, t)| (*h, t.scrape()))
    }

    /// Number of torrents held.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    /// Number of peers held over all torrents.
    pub fn peer_count(&self) -> usize {
        self.peers_total
    }

    /// Restores a torrent's `downloaded` counter (from the state file). Ignored when not allowed or full.
    pub fn restore_downloaded(&mut self, now: Instant, h: InfoHash, downloaded: u64) {
        if let Some(allow) = &self.cfg.allow_list {
            if !allow.contains(&h) {
                return;
            }
        }
        if let Some(t) = self.torrents.get_mut(&h) {
            t.downloaded = t.downloaded.max(downloaded.min(u64::from(u32::MAX)) as u32);
        } else if self.torrents.len() < self.cfg.max_torrents && downloaded > 0 {
            let mut t = Torrent::new(self.secs(now));
            t.downloaded = downloaded.min(u64::from(u32::MAX)) as u32;
            self.torrents.insert_new(h, t);
        }
    }

    /// Removes peers not heard from within the peer timeout and applies the torrent eviction policy (module
    /// doc). Call it periodically; returns the number of peers removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = u32::try_from(self.cfg.peer_timeout.as_secs()).unwrap_or(u32::MAX);
        let now_secs = self.secs(now);
        let mut removed = 0;
        for t in self.torrents.values_mut() {
            removed += t.expire(now_secs, timeout);
        }
        self.peers_total -= removed;
        self.torrents
            .retain(|_, t| !t.is_empty() || t.downloaded > 0);
        let keep = (self.cfg.max_torrents as f64 * KEEP_EMPTY_FRACTION) as usize;
        if self.torrents.len() > keep {
            let mut empty: Vec<(u32, InfoHash)> = self
                .torrents
                .iter()
                .filter(|(_, t)| t.is_empty())
                .map(|(h, t)| (t.last_activity, *h))
                .collect();
            empty.sort_unstable();
            let excess = self.torrents.len() - keep;
            for (_, h) in empty.into_iter().take(excess) {
                self.torrents.remove(&h);
            }
        }
        // After a flood expires, give the index back.
        self.torrents.shrink();
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn ann(h: u8, p: u8, left: u64, event: Event) -> Announce {
        Announce {
            info_hash: InfoHash([h; 20]),
            peer_id: PeerId([p; 20]),
            addr: SocketAddr::from(([127, 0, 0, p], 6881)),
            alt_addr: None,
            left,
            event,
            numwant: None,
            want_ipv6: None,
            want_peer_ids: true,
            key: 0,
        }
    }

    fn setup() -> (Tracker, StdRng, Instant, Vec<PeerEntry>) {
        (
            Tracker::new(Config::default()),
            StdRng::seed_from_u64(7),
            Instant::now(),
            Vec::new(),
        )
    }

    #[test]
    fn peers_are_packed() {
        assert_eq!(size_of::<Peer<[u8; 4]>>(), 20);
        assert_eq!(size_of::<Peer<[u8; 16]>>(), 32);
        assert!(size_of::<Torrent>() <= 64, "{}", size_of::<Torrent>());
        // All 48 bits of an id hash survive the packing.
        let mut l = PeerList::<[u8; 4]>::new();
        let addr: SocketAddr = "10.0.0.9:1".parse().unwrap();
        assert_eq!(l.upsert(10, ID_MASK, addr, 0, 0), 1);
        assert_eq!(l.upsert(10, ID_MASK - 1, addr, 0, 0), 1);
        assert_eq!((l.find(ID_MASK), l.find(ID_MASK - 1)), (Some(0), Some(1)));
        let mut l4 = PeerList::<[u8; 4]>::new();
        let mut l6 = PeerList::<[u8; 16]>::new();
        for (i, a) in ["10.1.2.3:80", "[2001:db8::1]:6881", "[::ffff:1.2.3.4]:1"]
            .iter()
            .enumerate()
        {
            let a: SocketAddr = a.parse().unwrap();
            let id = i as IdHash;
            let bits = stamp(TIME_MASK, true, false);
            assert_eq!(
                l4.upsert(10, id, a, bits, 0) + l6.upsert(10, id, a, bits, 0),
                1
            );
            let got = l4
                .peers
                .iter()
                .map(|p| p.addr())
                .chain(l6.peers.iter().map(|p| p.addr()));
            assert!(got
                .clone()
                .any(|g| g == SocketAddr::new(a.ip().to_canonical(), a.port())));
        }
        assert_eq!((l4.len(), l6.len()), (2, 1));
        assert!(l4
            .peers
            .iter()
            .all(|p| p.seeder() && !p.alt() && p.last_seen() == TIME_MASK));
    }

    #[test]
    fn bep7_dual_stack_peer_listed_under_both_families_counted_once() {
        let (mut t, mut rng, now, mut out) = setup();
        let mut dual = ann(1, 1, 10, Event::Started);
        dual.alt_addr = Some("[2001:db8::1]:6881".parse().unwrap());
        t.announce(now, &mut rng, &dual, &mut out).unwrap();
        let c = t
            .announce(now, &mut rng, &ann(1, 2, 0, Event::Started), &mut out)
            .unwrap();
        assert_eq!(
            c,
            SwarmCounts {
                complete: 1,
                incomplete: 1
            },
            "counted once"
        );
        let addrs: HashSet<SocketAddr> = out.iter().map(|p| p.addr).collect();
        assert_eq!(
            addrs,
            HashSet::from([dual.addr, dual.alt_addr.unwrap()]),
            "listed under both families"
        );
        assert_eq!(t.peer_count(), 3, "entries held");
        // An alternative of the same family as the source is ignored.
        let mut same = ann(1, 3, 10, Event::Started);
        same.alt_addr = Some("10.9.9.9:1".parse().unwrap());
        t.announce(now, &mut rng, &same, &mut out).unwrap();
        assert_eq!(t.peer_count(), 4);
        // Stopped removes both entries; completed counts once.
        t.announce(
            now,
            &mut rng,
            &Announce {
                event: Event::Completed,
                left: 0,
                ..dual
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(t.scrape(&InfoHash([1; 20])).downloaded, 1);
        assert_eq!(t.scrape(&InfoHash([1; 20])).complete, 2);
        t.announce(
            now,
            &mut rng,
            &Announce {
                event: Event::Stopped,
                ..dual
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(t.peer_count(), 2);
        let s = t.scrape(&InfoHash([1; 20]));
        assert_eq!((s.complete, s.incomplete), (1, 1));
    }

    #[test]
    fn bep3_key_guards_a_peer_id_against_other_addresses() {
        let (mut t, mut rng, now, mut out) = setup();
        let owner = Announce {
            key: 0xDEAD_BEEF,
            ..ann(1, 1, 10, Event::Started)
        };
        t.announce(now, &mut rng, &owner, &mut out).unwrap();
        let thief = Announce {
            addr: "10.6.6.6:1".parse().unwrap(),
            key: 0x1234,
            ..owner
        };
        // Another address without the key can neither move nor evict the peer.
        assert_eq!(
            t.announce(now, &mut rng, &thief, &mut out),
            Err(Refusal::KeyMismatch)
        );
        let no_key = Announce { key: 0, ..thief };
        assert_eq!(
            t.announce(
                now,
                &mut rng,
                &Announce {
                    event: Event::Stopped,
                    ..no_key
                },
                &mut out
            ),
            Err(Refusal::KeyMismatch)
        );
        assert_eq!(t.peer_count(), 1);
        let other = ann(1, 2, 10, Event::Started);
        t.announce(now, &mut rng, &other, &mut out).unwrap();
        assert_eq!(
            out[0].addr, owner.addr,
            "the owner's address is still listed"
        );
        // The same IP (another port, a new key after a restart) proceeds and updates the key ...
        let restarted = Announce {
            addr: SocketAddr::new(owner.addr.ip(), 7000),
            key: 0x5555,
            ..owner
        };
        t.announce(now, &mut rng, &restarted, &mut out).unwrap();
        // ... so the old key no longer works from elsewhere, the new one does (the peer moved).
        let moved = Announce {
            key: 0xDEAD_BEEF,
            ..thief
        };
        assert_eq!(
            t.announce(now, &mut rng, &moved, &mut out),
            Err(Refusal::KeyMismatch)
        );
        let moved = Announce {
            key: 0x5555,
            ..thief
        };
        t.announce(now, &mut rng, &moved, &mut out).unwrap();
        t.announce(now, &mut rng, &other, &mut out).unwrap();
        assert_eq!(out[0].addr, thief.addr);
        assert_eq!(t.peer_count(), 2);
        // A peer that never sent a key has no protection (as in opentracker).
        let open = ann(1, 3, 10, Event::Started);
        t.announce(now, &mut rng, &open, &mut out).unwrap();
        let takeover = Announce {
            addr: "10.7.7.7:1".parse().unwrap(),
            key: 9,
            ..open
        };
        t.announce(now, &mut rng, &takeover, &mut out).unwrap();
    }

    #[test]
    fn key_bits_reads_hex_and_hashes_the_rest() {
        assert_eq!(key_bits(b"DEADBEEF"), 0xDEAD_BEEF);
        assert_eq!(key_bits(b"1a"), 0x1a);
        assert_ne!(key_bits(b"not hex"), key_bits(b"not hex!"));
        assert_ne!(key_bits(b"123456789"), 0x2345_6789);
    }

    #[test]
    fn global_peer_cap_refuses_new_peers_but_not_held_ones() {
        let mut t = Tracker::new(Config {
            max_peers_total: 3,
            ..Config::default()
        });
        let (_, mut rng, now, mut out) = setup();
        // Three peers over two torrents fill the tracker.
        for (h, p) in [(1, 1), (1, 2), (2, 3)] {
            t.announce(now, &mut rng, &ann(h, p, 5, Event::Started), &mut out)
                .unwrap();
        }
        assert_eq!(t.peer_count(), 3);
        // A new peer, in a held torrent or a new one, is refused; no torrent is created for it.
        for h in [1, 3] {
            assert_eq!(
                t.announce(now, &mut rng, &ann(h, 4, 5, Event::Started), &mut out),
                Err(Refusal::Full)
            );
        }
        assert_eq!((t.peer_count(), t.torrent_count()), (3, 2));
        // Held peers still re-announce (and get peers), and stopping makes room.
        t.announce(now, &mut rng, &ann(1, 1, 0, Event::Completed), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        t.announce(now, &mut rng, &ann(1, 2, 5, Event::Stopped), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(1, 4, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(t.peer_count(), 3);
        // A BEP 7 second address is not stored past the cap either.
        t.announce(now, &mut rng, &ann(1, 4, 5, Event::Stopped), &mut out)
            .unwrap();
        let dual = Announce {
            alt_addr: Some("[2001:db8::5]:6881".parse().unwrap()),
            ..ann(1, 5, 5, Event::Started)
        };
        t.announce(now, &mut rng, &dual, &mut out).unwrap();
        assert_eq!(t.peer_count(), 3);
    }

    #[test]
    fn never_the_requester_and_counts() {
        let (mut t, mut rng, now, mut out) = setup();
        let c = t
            .announce(now, &mut rng, &ann(1, 1, 10, Event::Started), &mut out)
            .unwrap();
        assert!(out.is_empty(), "alone in the swarm");
        assert_eq!(
            c,
            SwarmCounts {
                complete: 0,
                incomplete: 1
            }
        );
        t.announce(now, &mut rng, &ann(1, 2, 0, Event::Started), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, Some(PeerId([1; 20])));
        let c = t
            .announce(now, &mut rng, &ann(1, 1, 10, Event::None), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, Some(PeerId([2; 20])));
        assert_eq!(
            c,
            SwarmCounts {
                complete: 1,
                incomplete: 1
            }
        );
    }

    #[test]
    fn family_filter_for_udp_requesters() {
        let (mut t, mut rng, now, mut out) = setup();
        for p in 1..=3u8 {
            t.announce(now, &mut rng, &ann(1, p, 1, Event::Started), &mut out)
                .unwrap();
        }
        let mut v6 = ann(1, 9, 1, Event::Started);
        v6.addr = "[2001:db8::9]:6881".parse().unwrap();
        t.announce(now, &mut rng, &v6, &mut out).unwrap();
        let mut a = ann(1, 10, 1, Event::Started);
        a.numwant = Some(2);
        a.want_ipv6 = Some(false);
        t.announce(now, &mut rng, &a, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.addr.is_ipv4()));
        a.want_ipv6 = Some(true);
        t.announce(now, &mut rng, &a, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].addr, v6.addr);
    }

    #[test]
    fn full_peer_ids_only_for_swarms_that_ask() {
        let (mut t, mut rng, now, mut out) = setup();
        let compact = |p| Announce {
            want_peer_ids: false,
            key: 0,
            ..ann(1, p, 5, Event::Started)
        };
        t.announce(now, &mut rng, &compact(1), &mut out).unwrap();
        t.announce(now, &mut rng, &compact(2), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, None, "compact-only swarm keeps no ids");
        assert!(t.torrents.get(&InfoHash([1; 20])).unwrap().ids.is_none());
        // The first dictionary request starts the side table; peer 1 is known from its next announce on.
        t.announce(now, &mut rng, &ann(1, 3, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p.peer_id.is_none()));
        t.announce(now, &mut rng, &compact(1), &mut out).unwrap();
        let ids: HashSet<_> = out.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids, HashSet::from([None, Some(PeerId([3; 20]))]));
        t.announce(now, &mut rng, &ann(1, 3, 5, Event::None), &mut out)
            .unwrap();
        let ids: HashSet<_> = out.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids, HashSet::from([None, Some(PeerId([1; 20]))]));
        // Stopped and expiry drop the full ids with the peers; once the table exists every announce fills it.
        t.announce(now, &mut rng, &ann(1, 1, 5, Event::Stopped), &mut out)
            .unwrap();
        assert_eq!(
            t.torrents
                .get(&InfoHash([1; 20]))
                .unwrap()
                .ids
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        let later = now + t.config().peer_timeout + Duration::from_secs(1);
        t.announce(later, &mut rng, &compact(2), &mut out).unwrap();
        t.expire(later);
        let tor = &t.torrents.get(&InfoHash([1; 20])).unwrap();
        assert_eq!(
            (tor.len(), tor.ids.as_ref().unwrap().len()),
            (1, 1),
            "peer 3 expired"
        );
        t.announce(later, &mut rng, &ann(1, 4, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, Some(PeerId([2; 20])));
    }

    #[test]
    fn torrent_table_shrinks_after_expiry() {
        let (mut t, mut rng, now, mut out) = setup();
        for h in 0..2000u32 {
            let mut a = ann(0, 1, 5, Event::Started);
            a.info_hash.0[..4].copy_from_slice(&h.to_le_bytes());
            t.announce(now, &mut rng, &a, &mut out).unwrap();
        }
        let full = t.torrents.capacity();
        assert!(full >= 2000);
        let later = now + t.config().peer_timeout + Duration::from_secs(1);
        t.announce(later, &mut rng, &ann(1, 1, 5, Event::Started), &mut out)
            .unwrap();
        t.expire(later);
        assert_eq!(t.torrent_count(), 1);
        assert!(
            t.torrents.capacity() < full / 4,
            "{}",
            t.torrents.capacity()
        );
    }

    #[test]
    fn torrent_table_matches_a_map_under_inserts_and_removals() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut table = TorrentTable::new();
        let mut model: HashMap<InfoHash, u32> = HashMap::new();
        let key = |k: u32| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&k.to_le_bytes());
            InfoHash(h)
        };
        // Keys from a small range so removals and re-inserts hit; sizes cross several chunks.
        for step in 0..20_000u32 {
            let k = key(rng.gen_range(0..3000));
            match rng.gen_range(0..3) {
                0 | 1 if table.get(&k).is_none() => {
                    let mut t = Torrent::new(0);
                    t.downloaded = step;
                    table.insert_new(k, t);
                    model.insert(k, step);
                }
                _ => {
                    assert_eq!(table.remove(&k).map(|t| t.downloaded), model.remove(&k));
                }
            }
            if step % 4999 == 0 {
                table.retain(|h, _| h.0[0] % 7 != 0);
                model.retain(|h, _| h.0[0] % 7 != 0);
            }
        }
        assert_eq!(table.len(), model.len());
        assert_eq!(table.iter().count(), model.len());
        for (k, d) in &model {
            assert_eq!(table.get(k).map(|t| t.downloaded), Some(*d));
        }
        for (k, t) in table.iter() {
            assert_eq!(model.get(k), Some(&t.downloaded));
        }
        let chunks = table.len().div_ceil(TORRENT_CHUNK);
        assert_eq!(table.chunks.len(), chunks, "no empty chunk kept");
        assert!(table.remove_at(table.len()).is_none());
    }

    #[test]
    fn seeders_get_no_seeders() {
        let (mut t, mut rng, now, mut out) = setup();
        for p in 1..=5 {
            t.announce(now, &mut rng, &ann(1, p, 0, Event::Started), &mut out)
                .unwrap();
        }
        t.announce(now, &mut rng, &ann(1, 9, 5, Event::Started), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(1, 1, 0, Event::None), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "a seeder only learns leechers");
        assert_eq!(out[0].peer_id, Some(PeerId([9; 20])));
        t.announce(now, &mut rng, &ann(1, 9, 5, Event::None), &mut out)
            .unwrap();
        assert_eq!(out.len(), 5, "a leecher learns every seeder");
    }

    #[test]
    fn stopped_removes_at_once_and_completed_counts_once() {
        let (mut t, mut rng, now, mut out) = setup();
        t.announce(now, &mut rng, &ann(1, 1, 10, Event::Started), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(1, 1, 0, Event::Completed), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(1, 1, 0, Event::Completed), &mut out)
            .unwrap();
        let s = t.scrape(&InfoHash([1; 20]));
        assert_eq!((s.complete, s.incomplete, s.downloaded), (1, 0, 1));
        let c = t
            .announce(now, &mut rng, &ann(1, 1, 0, Event::Stopped), &mut out)
            .unwrap();
        assert_eq!(c, SwarmCounts::default());
        assert_eq!(t.peer_count(), 0);
        assert_eq!(t.scrape(&InfoHash([1; 20])).downloaded, 1);
    }

    #[test]
    fn numwant_is_capped_and_selection_is_random() {
        let cfg = Config {
            max_peers: 10,
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut out = Vec::new();
        for p in 0..100u8 {
            t.announce(now, &mut rng, &ann(1, p, 1, Event::Started), &mut out)
                .unwrap();
        }
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let mut a = ann(1, 200, 1, Event::None);
            a.numwant = Some(1000);
            t.announce(now, &mut rng, &a, &mut out).unwrap();
            assert_eq!(out.len(), 10);
            let ids: HashSet<_> = out.iter().map(|p| p.peer_id).collect();
            assert_eq!(ids.len(), 10, "no duplicates in a reply");
            seen.extend(ids);
        }
        assert!(
            seen.len() > 60,
            "random selection reaches most peers: {}",
            seen.len()
        );
        // Removal from an indexed swarm keeps the index right.
        for p in 0..100u8 {
            t.announce(now, &mut rng, &ann(1, p, 1, Event::Stopped), &mut out)
                .unwrap();
        }
        assert_eq!(t.peer_count(), 1);
        let s = t.scrape(&InfoHash([1; 20]));
        assert_eq!((s.complete, s.incomplete), (0, 1));
    }

    #[test]
    fn peers_expire_after_timeout() {
        let (mut t, mut rng, now, mut out) = setup();
        t.announce(now, &mut rng, &ann(1, 1, 1, Event::Started), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(2, 2, 1, Event::Started), &mut out)
            .unwrap();
        let later = now + Duration::from_secs(3000);
        t.announce(later, &mut rng, &ann(1, 3, 1, Event::None), &mut out)
            .unwrap();
        assert_eq!(t.expire(later), 0, "within two intervals");
        let much_later = now + t.config().peer_timeout + Duration::from_secs(1);
        assert_eq!(t.expire(much_later), 2);
        assert_eq!(t.peer_count(), 1);
        assert_eq!(t.torrent_count(), 1, "the torrent with no peers is gone");
    }

    #[test]
    fn allow_list_and_torrent_cap() {
        let cfg = Config {
            allow_list: Some([InfoHash([1; 20]), InfoHash([2; 20])].into()),
            max_torrents: 1,
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut out = Vec::new();
        assert_eq!(
            t.announce(now, &mut rng, &ann(3, 1, 1, Event::Started), &mut out),
            Err(Refusal::NotAllowed)
        );
        t.announce(now, &mut rng, &ann(1, 1, 1, Event::Started), &mut out)
            .unwrap();
        assert_eq!(
            t.announce(now, &mut rng, &ann(2, 1, 1, Event::Started), &mut out),
            Err(Refusal::Full)
        );
        assert_eq!(t.torrent_count(), 1);
    }

    #[test]
    fn allow_list_replaced_at_run_time() {
        let (mut t, mut rng, now, mut out) = setup();
        t.announce(now, &mut rng, &ann(1, 1, 1, Event::Started), &mut out)
            .unwrap();
        t.announce(now, &mut rng, &ann(2, 1, 1, Event::Started), &mut out)
            .unwrap();
        t.set_allow_list(Some([InfoHash([2; 20])].into()));
        assert_eq!((t.torrent_count(), t.peer_count()), (1, 1));
        assert_eq!(
            t.announce(now, &mut rng, &ann(1, 1, 1, Event::None), &mut out),
            Err(Refusal::NotAllowed)
        );
        t.set_allow_list(None);
        assert!(t
            .announce(now, &mut rng, &ann(1, 1, 1, Event::None), &mut out)
            .is_ok());
    }

    #[test]
    fn flood_of_hashes_stays_bounded_and_clears() {
        let cfg = Config {
            max_torrents: 100,
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut refused = 0;
        for i in 0..1000u32 {
            let mut a = ann(0, 1, 1, Event::Started);
            a.info_hash.0[..4].copy_from_slice(&i.to_be_bytes());
            if t.announce(now, &mut rng, &a, &mut out).is_err() {
                refused += 1;
            }
        }
        assert_eq!(t.torrent_count(), 100);
        assert_eq!(refused, 900);
        t.expire(now + t.config().peer_timeout + Duration::from_secs(1));
        assert_eq!(t.torrent_count(), 0);
    }

    #[test]
    fn empty_torrents_with_counters_evicted_oldest_first_when_nearly_full() {
        let cfg = Config {
            max_torrents: 10,
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        let now = Instant::now();
        for i in 0..10u8 {
            t.restore_downloaded(
                now + Duration::from_secs(u64::from(i)),
                InfoHash([i; 20]),
                5,
            );
        }
        assert_eq!(t.torrent_count(), 10);
        t.expire(now + Duration::from_secs(20));
        assert_eq!(t.torrent_count(), 9);
        assert_eq!(
            t.scrape(&InfoHash([0; 20])).downloaded,
            0,
            "oldest went first"
        );
        assert_eq!(t.scrape(&InfoHash([9; 20])).downloaded, 5);
    }
}
