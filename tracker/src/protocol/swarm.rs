//! The swarm state of a BEP 3 tracker, sans I/O: which peers are in which torrent, and the counters BEP 48
//! scrape reports. Time (`now`) and randomness (`rng`) are passed in, so every rule is unit-testable.
//!
//! Rules (BEP 3 "Trackers", and what real trackers do):
//! - A peer is its address: IP and announced port, as in opentracker. Its peer id is not part of its
//!   identity (see "Identity" below).
//! - A reply lists up to `numwant` peers (capped by [`Config::max_peers`]) chosen at random, never the
//!   requester itself (its address, or the BEP 7 address it names), and no seeders to a peer known to be a
//!   seeder (`left == 0`): they have nothing to give each other.
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
//!   held, an announce of a peer the torrent does not hold yet is refused ([`Refusal::Full`], the client
//!   retries after its interval) instead of evicting anyone: peers already listed keep re-announcing and
//!   stopping, and the room comes back as peers stop or expire. A BEP 7 second address is not stored then.
//! - BEP 7: each torrent keeps its IPv4 and IPv6 peers apart. A dual-stack peer that names its other address
//!   (`ipv4=` / `ipv6=`, [`Announce::alt_addr`]) is listed under both families but counted once (the second
//!   entry is marked "alt"); a peer that announces separately over each family (as BEP 7 now recommends)
//!   has an entry, and a count, per family. An alt address never overrides a peer that announced from that
//!   address itself (its entry is left alone), and `stopped` removes an alt entry only, so naming somebody
//!   else's address can neither evict nor recount that peer.
//!
//! Identity: entries are keyed by (IP, port), like opentracker, so nobody can move or evict a peer without
//! sending from its IP (clients behind one NAT can stop each other's entries by naming the port, as with
//! opentracker; the BEP 15 connection id and TCP make the source IP hard to forge; with
//! `--trust-ip`, the `ip` parameter can name any address, which is why that option is off by default). The
//! BEP 3 `key` is therefore not needed to protect an entry and is not kept. A client that changes its port
//! (or IP) appears as a new peer, and its old entry is listed until it expires (one peer timeout), as in
//! opentracker; a client that restarts with a new peer id on the same address keeps its one entry (its new
//! id replaces the old one in the id table below).
//!
//! Storage (the per-peer and per-torrent bytes are most of a tracker's memory, see `docs/BENCHMARKS.md`):
//! - An IPv4 peer is 8 bytes (4 IP, 2 port, 2 for the seeder and alt flags and a 14-bit last-seen time),
//!   an IPv6 peer 20; each family's list is sorted by address (binary search, no index), grows by an eighth
//!   rounded up to the allocator's own 16-byte granularity, and shrinks once a quarter is unused.
//! - Last-seen times are in units of [`Config::peer_timeout`] / 4096 (at least one second: one second up to
//!   a 68-minute timeout) kept modulo 2^14, so a peer's age is exact as long as the store is swept at least
//!   once every 2^14 - 4096 units (three timeouts); [`Tracker::expire`] is that sweep, and if it was not
//!   called for that long, the next call catches up from the latest time it saw (no peer outlives its
//!   timeout because of the wrap).
//! - Full 20-byte peer ids are only needed for the BEP 3 dictionary form with `peer id`. With
//!   [`PeerIds::OnDemand`] (the default) a torrent keeps them, in arrays parallel to its peer lists, from
//!   the first announce that asks for that form ([`Announce::want_peer_ids`]) on; peers that have not
//!   announced since then are listed without `peer id` (as with `no_peer_id=1`) until their next announce,
//!   at most one interval. Compact-only swarms keep no ids. With [`PeerIds::Always`] every torrent keeps
//!   them from its first announce, so every dictionary reply is complete, at 21 bytes more per peer and
//!   the optional box (about 96 bytes) per torrent. The table goes when the swarm is empty.
//! - A torrent entry is 64 bytes (info-hash, counters, the IPv4 list's pointer and length, one optional box
//!   for the rarer parts: IPv6 list, alt counts, id table). Entries sit in 1024-entry chunks found through a
//!   hash table of 4-byte positions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::codec::http::{PeerEntry, ScrapeCounts};
use crate::codec::{Event, InfoHash, PeerId};

/// Above this fraction of [`Config::max_torrents`], empty torrents kept only for their counters are evicted.
pub const KEEP_EMPTY_FRACTION: f64 = 0.9;

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
    /// Cap on peers per torrent (per address family); peers beyond it still get peer lists but are not stored.
    pub max_peers_per_torrent: usize,
    /// Cap on peers over all torrents: beyond it an announce of a peer not held yet is refused
    /// ([`Refusal::Full`]); held peers still re-announce and stop (module doc).
    pub max_peers_total: usize,
    /// `None`: open mode, any info-hash. `Some`: only these (an allow-list).
    pub allow_list: Option<std::collections::HashSet<InfoHash>>,
    /// Allow a scrape without info-hashes to list every torrent.
    pub scrape_all: bool,
    /// Which torrents keep full peer ids for the dictionary form (module doc, "Storage").
    pub peer_ids: PeerIds,
}

/// When a torrent keeps the full 20-byte peer ids that the BEP 3 dictionary form lists as `peer id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerIds {
    /// From the first announce that asks for the dictionary form; peers not heard from since then are
    /// listed without `peer id` for at most one interval. Compact-only swarms pay nothing.
    #[default]
    OnDemand,
    /// For every torrent from its first announce: complete dictionary replies, 21 bytes more per peer.
    Always,
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
            peer_ids: PeerIds::OnDemand,
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
}

/// An announce as the state machine needs it, whatever the transport.
#[derive(Clone, Copy, Debug)]
pub struct Announce {
    /// Torrent.
    pub info_hash: InfoHash,
    /// Peer id (kept only for swarms that ask for the dictionary form, module doc).
    pub peer_id: PeerId,
    /// Where other peers reach it (source IP, announced port): its identity.
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
}

/// Counters returned with every announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SwarmCounts {
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// An address as stored in a peer entry: IP then port, both big-endian, so that byte order is (IP, port)
/// order and a list sorted by these bytes is searched with a plain binary search.
trait PackedAddr: Copy + Ord + Default + std::fmt::Debug {
    /// `None` for an address of the other family.
    fn pack(a: SocketAddr) -> Option<Self>;
    fn unpack(self) -> SocketAddr;
}

/// An IPv4 address and port.
type V4 = [u8; 6];
/// An IPv6 address and port.
type V6 = [u8; 18];

impl PackedAddr for V4 {
    fn pack(a: SocketAddr) -> Option<Self> {
        match a.ip().to_canonical() {
            IpAddr::V4(ip) => {
                let mut b = [0u8; 6];
                b[..4].copy_from_slice(&ip.octets());
                b[4..].copy_from_slice(&a.port().to_be_bytes());
                Some(b)
            }
            IpAddr::V6(_) => None,
        }
    }
    fn unpack(self) -> SocketAddr {
        let [a, b, c, d, p0, p1] = self;
        SocketAddr::new(
            Ipv4Addr::new(a, b, c, d).into(),
            u16::from_be_bytes([p0, p1]),
        )
    }
}

impl PackedAddr for V6 {
    fn pack(a: SocketAddr) -> Option<Self> {
        match a.ip().to_canonical() {
            IpAddr::V6(ip) => {
                let mut b = [0u8; 18];
                b[..16].copy_from_slice(&ip.octets());
                b[16..].copy_from_slice(&a.port().to_be_bytes());
                Some(b)
            }
            IpAddr::V4(_) => None,
        }
    }
    fn unpack(self) -> SocketAddr {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&self[..16]);
        SocketAddr::new(
            Ipv6Addr::from(ip).into(),
            u16::from_be_bytes([self[16], self[17]]),
        )
    }
}

/// Bit of a peer's stamp set for a seeder.
const SEEDER: u16 = 1 << 15;
/// Bit of a peer's stamp set for a BEP 7 second address (listed, not counted).
const ALT: u16 = 1 << 14;
/// The rest of a stamp: last announce, in clock units modulo 2^14 (module doc, "Storage").
const TIME_MASK: u16 = ALT - 1;
/// Clock units a peer timeout spans at most: a quarter of the stamp's range, so that ages stay exact for
/// three timeouts between sweeps.
const TIMEOUT_UNITS_MAX: u64 = (TIME_MASK as u64 + 1) / 4;

/// One peer: its address and its stamp (little-endian `last_seen | SEEDER | ALT`), byte-aligned, so 8 bytes
/// for IPv4 and 20 for IPv6.
#[derive(Clone, Copy, Debug, Default)]
struct Peer<A> {
    addr: A,
    stamp: [u8; 2],
}

impl<A: PackedAddr> Peer<A> {
    fn bits(&self) -> u16 {
        u16::from_le_bytes(self.stamp)
    }
    fn seeder(&self) -> bool {
        self.bits() & SEEDER != 0
    }
    fn alt(&self) -> bool {
        self.bits() & ALT != 0
    }
    fn time(&self) -> u16 {
        self.bits() & TIME_MASK
    }
}

fn stamp(units: u32, seeder: bool, alt: bool) -> u16 {
    (units as u16 & TIME_MASK) | if seeder { SEEDER } else { 0 } | if alt { ALT } else { 0 }
}

/// Age in clock units of a stamp's `time` at `now` (exact while the sweep rule of the module doc holds).
fn age(now: u32, time: u16) -> u32 {
    now.wrapping_sub(u32::from(time)) & u32::from(TIME_MASK)
}

/// Whether a stamp is a counted seeder.
fn counted_seeder(bits: u16) -> bool {
    bits & SEEDER != 0 && bits & ALT == 0
}

/// Full peer ids of one family, parallel to its list (`None`: not announced since the table started).
type Ids = Vec<Option<PeerId>>;

/// The peers of one family in one torrent, sorted by address.
#[derive(Debug)]
struct PeerList<A> {
    /// `peers[..len]` are held; the rest is room to grow (a boxed slice and a u32 length: 8 bytes less
    /// than a `Vec` in every torrent entry).
    peers: Box<[Peer<A>]>,
    len: u32,
    /// Counted (non-[`ALT`]) seeders.
    seeders: u32,
}

/// Capacity of a list that needs room for `n` entries of `size` bytes: what glibc's malloc gives anyway
/// (chunks of 16-byte multiples with 8 bytes of header, 24 usable at least), so no request leaves bytes of
/// its chunk unused.
fn rounded_capacity(n: usize, size: usize) -> usize {
    let usable = ((n * size + 8).div_ceil(16) * 16 - 8).max(24);
    usable / size
}

impl<A: PackedAddr> PeerList<A> {
    fn new() -> Self {
        PeerList {
            peers: Box::new([]),
            len: 0,
            seeders: 0,
        }
    }

    fn held(&self) -> &[Peer<A>] {
        &self.peers[..self.len as usize]
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn find(&self, a: &A) -> Result<usize, usize> {
        self.held().binary_search_by(|p| p.addr.cmp(a))
    }

    fn get(&self, a: SocketAddr) -> Option<u16> {
        let a = A::pack(a)?;
        self.find(&a).ok().map(|i| self.peers[i].bits())
    }

    fn account(&mut self, bits: u16, add: bool) {
        if counted_seeder(bits) {
            if add {
                self.seeders += 1;
            } else {
                self.seeders -= 1;
            }
        }
    }

    /// Moves the held entries into a slice of `cap` entries.
    fn resize(&mut self, cap: usize) {
        let mut v = Vec::with_capacity(cap);
        v.extend_from_slice(self.held());
        v.resize(cap, Peer::default());
        self.peers = v.into_boxed_slice();
    }

    fn insert_at(&mut self, i: usize, p: Peer<A>, ids: Option<&mut Ids>, id: PeerId) {
        let len = self.len();
        if len == self.peers.len() {
            // Grow by an eighth: most torrents hold a handful of peers, doubling would leave a third of
            // every list unused on average; the copies are of a few hundred bytes.
            let want = len + (len / 8).max(1);
            self.resize(rounded_capacity(want, size_of::<Peer<A>>()));
        }
        self.peers.copy_within(i..len, i + 1);
        self.peers[i] = p;
        self.len += 1;
        self.account(p.bits(), true);
        if let Some(ids) = ids {
            ids.insert(i, Some(id));
        }
    }

    fn set_bits(&mut self, i: usize, bits: u16) {
        let old = self.peers[i].bits();
        self.account(old, false);
        self.account(bits, true);
        self.peers[i].stamp = bits.to_le_bytes();
    }

    fn remove_at(&mut self, i: usize, ids: Option<&mut Ids>) -> Peer<A> {
        let len = self.len();
        let p = self.peers[i];
        self.peers.copy_within(i + 1..len, i);
        self.len -= 1;
        self.account(p.bits(), false);
        if let Some(ids) = ids {
            ids.remove(i);
        }
        self.shrink();
        p
    }

    /// Gives room back once more than a quarter (and 8 entries) of the list is unused.
    fn shrink(&mut self) {
        let len = self.len();
        if self.peers.len() > len + len / 4 + 8 {
            self.resize(rounded_capacity(len + len / 8, size_of::<Peer<A>>()));
        }
    }

    /// Removes entries older than `timeout` units at `now` (all of them for `None`), keeping the order;
    /// returns the entries and the alt entries removed.
    fn expire(
        &mut self,
        now: u32,
        timeout: Option<u32>,
        mut ids: Option<&mut Ids>,
    ) -> (usize, u32) {
        let len = self.len();
        let (mut w, mut alts) = (0, 0);
        for r in 0..len {
            let p = self.peers[r];
            if timeout.is_some_and(|t| age(now, p.time()) <= t) {
                self.peers[w] = p;
                if let Some(ids) = ids.as_deref_mut() {
                    ids[w] = ids[r];
                }
                w += 1;
            } else {
                self.account(p.bits(), false);
                alts += u32::from(p.alt());
            }
        }
        self.len = w as u32;
        if let Some(ids) = ids {
            ids.truncate(w);
        }
        self.shrink();
        (len - w, alts)
    }

    /// Appends up to `n` random peers for a requester at `skip` to `out`, skipping those addresses and,
    /// for a seeder, other seeders.
    ///
    /// Selection starts at a random position and walks the list circularly: O(n) rather than
    /// O(swarm), and every peer is equally likely to be included.
    fn select(
        &self,
        rng: &mut impl Rng,
        n: usize,
        skip: [Option<A>; 2],
        seeder: bool,
        ids: Option<&Ids>,
        out: &mut Vec<PeerEntry>,
    ) {
        let len = self.len();
        if len == 0 || n == 0 {
            return;
        }
        let start = rng.gen_range(0..len);
        let mut taken = 0;
        for k in 0..len {
            let i = (start + k) % len;
            let p = &self.peers[i];
            if (seeder && p.seeder()) || skip.contains(&Some(p.addr)) {
                continue;
            }
            out.push(PeerEntry {
                addr: p.addr.unpack(),
                peer_id: ids.and_then(|ids| ids[i]),
            });
            taken += 1;
            if taken == n {
                break;
            }
        }
    }
}

/// The rarer parts of a torrent, boxed so that a compact-only, IPv4-only swarm pays one word for them.
#[derive(Debug)]
struct Extra {
    v6: PeerList<V6>,
    /// [`ALT`] entries (listed, not counted) of the IPv4 and the IPv6 list.
    alts: [u32; 2],
    /// Full peer ids of the IPv4 and IPv6 lists, kept once a client of this swarm asked for them.
    ids: Option<[Ids; 2]>,
}

/// One torrent: its info-hash, counters and peers, 64 bytes.
#[derive(Debug)]
struct Torrent {
    hash: InfoHash,
    /// Seconds since the tracker's epoch.
    last_activity: u32,
    /// `completed` events (saturating: u32 keeps the entry at 64 bytes).
    downloaded: u32,
    v4: PeerList<V4>,
    extra: Option<Box<Extra>>,
}

/// The parts of a torrent one family's operation needs: its list, its alt count, its id array.
macro_rules! family {
    ($t:expr, v4) => {{
        let Torrent { v4, extra, .. } = $t;
        match extra.as_deref_mut() {
            Some(Extra { alts, ids, .. }) => {
                (v4, Some(&mut alts[0]), ids.as_mut().map(|i| &mut i[0]))
            }
            None => (v4, None, None),
        }
    }};
    ($t:expr, v6) => {{
        let e = $t.extra_mut();
        let Extra { v6, alts, ids } = e;
        (v6, Some(&mut alts[1]), ids.as_mut().map(|i| &mut i[1]))
    }};
}

impl Torrent {
    fn new(hash: InfoHash, now: u32) -> Torrent {
        Torrent {
            hash,
            last_activity: now,
            downloaded: 0,
            v4: PeerList::new(),
            extra: None,
        }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(|| {
            Box::new(Extra {
                v6: PeerList::new(),
                alts: [0, 0],
                ids: None,
            })
        })
    }

    fn len(&self) -> usize {
        self.v4.len() + self.extra.as_ref().map_or(0, |e| e.v6.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn counts(&self) -> SwarmCounts {
        let (len6, s6, alts) = self.extra.as_ref().map_or((0, 0, 0), |e| {
            (e.v6.len, e.v6.seeders, e.alts[0] + e.alts[1])
        });
        let complete = self.v4.seeders + s6;
        SwarmCounts {
            complete,
            incomplete: self.v4.len + len6 - alts - complete,
        }
    }

    /// The stamp of the entry at `a`, if any.
    fn get(&self, a: SocketAddr) -> Option<u16> {
        self.v4
            .get(a)
            .or_else(|| self.extra.as_ref().and_then(|e| e.v6.get(a)))
    }

    /// Whether an entry is held at `a` (counted or alt).
    fn holds(&self, a: SocketAddr) -> bool {
        self.get(a).is_some()
    }

    /// Stores `bits` at `a` (a counted entry, or an [`ALT`] one, which never replaces a counted entry);
    /// returns new entries stored (0 or 1). With an id table, the entry's id becomes `id`.
    fn upsert(&mut self, cap: usize, a: SocketAddr, bits: u16, id: PeerId) -> usize {
        fn go<A: PackedAddr>(
            (list, alts, ids): (&mut PeerList<A>, Option<&mut u32>, Option<&mut Ids>),
            cap: usize,
            a: A,
            bits: u16,
            id: PeerId,
        ) -> usize {
            let alt = bits & ALT != 0;
            match list.find(&a) {
                Ok(i) => {
                    let was_alt = list.peers[i].alt();
                    if alt && !was_alt {
                        // Someone announced from this address itself: a BEP 7 claim leaves it alone.
                        return 0;
                    }
                    list.set_bits(i, bits);
                    if was_alt && !alt {
                        if let Some(alts) = alts {
                            *alts -= 1;
                        }
                    }
                    if let Some(ids) = ids {
                        ids[i] = Some(id);
                    }
                    0
                }
                Err(i) if list.len() < cap => {
                    list.insert_at(
                        i,
                        Peer {
                            addr: a,
                            stamp: bits.to_le_bytes(),
                        },
                        ids,
                        id,
                    );
                    if alt {
                        if let Some(alts) = alts {
                            *alts += 1;
                        }
                    }
                    1
                }
                Err(_) => 0,
            }
        }
        if let Some(p) = V4::pack(a) {
            if bits & ALT != 0 {
                // The alt count lives in the box.
                self.extra_mut();
            }
            go(family!(self, v4), cap, p, bits, id)
        } else if let Some(p) = V6::pack(a) {
            go(family!(self, v6), cap, p, bits, id)
        } else {
            0
        }
    }

    /// Removes the entry at `a` (only if it is an alt entry when `only_alt`); returns entries removed.
    fn remove(&mut self, a: SocketAddr, only_alt: bool) -> usize {
        fn go<A: PackedAddr>(
            (list, alts, ids): (&mut PeerList<A>, Option<&mut u32>, Option<&mut Ids>),
            a: A,
            only_alt: bool,
        ) -> usize {
            match list.find(&a) {
                Ok(i) if !only_alt || list.peers[i].alt() => {
                    if list.remove_at(i, ids).alt() {
                        if let Some(alts) = alts {
                            *alts -= 1;
                        }
                    }
                    1
                }
                _ => 0,
            }
        }
        let n = if let Some(p) = V4::pack(a) {
            go(family!(self, v4), p, only_alt)
        } else if let (Some(p), true) = (V6::pack(a), self.extra.is_some()) {
            go(family!(self, v6), p, only_alt)
        } else {
            0
        };
        self.trim();
        n
    }

    /// Starts the table of full peer ids (module doc).
    fn start_ids(&mut self) {
        let len4 = self.v4.len();
        let e = self.extra_mut();
        if e.ids.is_none() {
            e.ids = Some([vec![None; len4], vec![None; e.v6.len()]]);
        }
    }

    /// Drops the id table of an empty swarm and the box when nothing in it is in use; trims id arrays.
    fn trim(&mut self) {
        let empty = self.is_empty();
        if let Some(e) = &mut self.extra {
            if empty {
                e.ids = None;
            }
            if let Some(ids) = &mut e.ids {
                for v in ids {
                    if v.capacity() > 2 * v.len() + 8 {
                        v.shrink_to_fit();
                    }
                }
            }
            if e.v6.len == 0 && e.alts == [0, 0] && e.ids.is_none() {
                self.extra = None;
            }
        }
    }

    /// Removes entries older than `timeout` units at `now` (all for `None`); returns how many.
    fn expire(&mut self, now: u32, timeout: Option<u32>) -> usize {
        let (l4, a4, i4) = family!(self, v4);
        let (mut n, a) = l4.expire(now, timeout, i4);
        if let Some(a4) = a4 {
            *a4 -= a;
        }
        if self.extra.is_some() {
            let (l6, a6, i6) = family!(self, v6);
            let (n6, a) = l6.expire(now, timeout, i6);
            if let Some(a6) = a6 {
                *a6 -= a;
            }
            n += n6;
        }
        if n > 0 {
            self.trim();
        }
        n
    }

    /// Up to `n` peers for the requester `me`: of its family only when it asks (BEP 15), else from both
    /// lists in proportion to their sizes.
    fn select(
        &self,
        rng: &mut impl Rng,
        n: usize,
        me: &Announce,
        seeder: bool,
        out: &mut Vec<PeerEntry>,
    ) {
        let len6 = self.extra.as_ref().map_or(0, |e| e.v6.len());
        let (n4, n6) = match me.want_ipv6 {
            Some(true) => (0, n),
            Some(false) => (n, 0),
            None if len6 == 0 => (n, 0),
            None => {
                let n6 = (n * len6).div_ceil(self.len());
                (n - n6, n6)
            }
        };
        let ids = self.extra.as_ref().and_then(|e| e.ids.as_ref());
        let skip4 = [V4::pack(me.addr), me.alt_addr.and_then(V4::pack)];
        self.v4
            .select(rng, n4, skip4, seeder, ids.map(|i| &i[0]), out);
        if let Some(e) = &self.extra {
            let skip6 = [V6::pack(me.addr), me.alt_addr.and_then(V6::pack)];
            e.v6.select(rng, n6, skip6, seeder, ids.map(|i| &i[1]), out);
        }
    }

    fn scrape(&self) -> ScrapeCounts {
        let c = self.counts();
        ScrapeCounts {
            complete: c.complete,
            downloaded: u64::from(self.downloaded),
            incomplete: c.incomplete,
        }
    }
}

/// Entries per chunk of a [`TorrentTable`]: 64 KB, the most a growing table holds unused.
const TORRENT_CHUNK: usize = 1024;

/// The torrents, by info-hash. Entries (64 bytes, info-hash included) sit in fixed-size chunks and a hash
/// table maps info-hashes to 4-byte positions, where a `HashMap<InfoHash, Torrent>` keeps buckets a third
/// empty on average and, while it doubles, the old and the new table (the largest part of a tracker's
/// memory besides the peers). Removal moves the last entry into the hole.
#[derive(Debug)]
struct TorrentTable {
    chunks: Vec<Vec<Torrent>>,
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

    fn at(&self, i: usize) -> &Torrent {
        &self.chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK]
    }

    fn at_mut(&mut self, i: usize) -> &mut Torrent {
        &mut self.chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK]
    }

    fn position(&self, h: &InfoHash) -> Option<usize> {
        self.index
            .find(self.hash(h), |&i| self.at(i as usize).hash == *h)
            .map(|&i| i as usize)
    }

    fn get(&self, h: &InfoHash) -> Option<&Torrent> {
        self.position(h).map(|i| self.at(i))
    }

    fn get_mut(&mut self, h: &InfoHash) -> Option<&mut Torrent> {
        self.position(h).map(|i| self.at_mut(i))
    }

    /// Adds a torrent the table does not hold (the caller checked); returns its position.
    fn insert_new(&mut self, t: Torrent) -> usize {
        let pos = self.len;
        let hash = self.hash(&t.hash);
        match self.chunks.last_mut() {
            Some(c) if c.len() < TORRENT_CHUNK => c.push(t),
            _ => {
                let mut c = Vec::with_capacity(TORRENT_CHUNK);
                c.push(t);
                self.chunks.push(c);
            }
        }
        self.len += 1;
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
        let hash = self.hash(&self.at(i).hash);
        if let Ok(e) = self.index.find_entry(hash, |&j| j as usize == i) {
            e.remove();
        }
        let moved = self.chunks.last_mut().and_then(Vec::pop)?;
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == last {
            return Some(moved);
        }
        let moved_hash = self.hash(&moved.hash);
        if let Some(slot) = self.index.find_mut(moved_hash, |&j| j as usize == last) {
            *slot = i as u32;
        }
        Some(std::mem::replace(self.at_mut(i), moved))
    }

    fn remove(&mut self, h: &InfoHash) -> Option<Torrent> {
        self.position(h).and_then(|i| self.remove_at(i))
    }

    /// Keeps the entries for which `keep` is true.
    fn retain(&mut self, mut keep: impl FnMut(&mut Torrent) -> bool) {
        // Downwards: the entry moved into a hole comes from above, so it was already looked at.
        for i in (0..self.len).rev() {
            if !keep(self.at_mut(i)) {
                self.remove_at(i);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Torrent> + '_ {
        self.chunks.iter().flatten()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Torrent> + '_ {
        self.chunks.iter_mut().flatten()
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
fn rehash(hasher: &std::hash::RandomState, chunks: &[Vec<Torrent>], i: u32) -> u64 {
    let i = i as usize;
    std::hash::BuildHasher::hash_one(hasher, chunks[i / TORRENT_CHUNK][i % TORRENT_CHUNK].hash)
}

/// All torrents and their swarms.
#[derive(Debug)]
pub struct Tracker {
    cfg: Config,
    torrents: TorrentTable,
    peers_total: usize,
    /// The first `now` seen; times are seconds since it.
    epoch: Option<Instant>,
    /// Seconds per clock unit of the peer stamps, and the peer timeout in units (module doc, "Storage").
    unit: u32,
    timeout_units: u32,
    /// Units at the last sweep, and the latest units seen (the catch-up after a missed sweep).
    swept: u32,
    latest: u32,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: Config) -> Tracker {
        let secs = cfg.peer_timeout.as_secs();
        let unit = secs.div_ceil(TIMEOUT_UNITS_MAX).max(1);
        Tracker {
            unit: u32::try_from(unit).unwrap_or(u32::MAX),
            timeout_units: (secs / unit) as u32,
            cfg,
            torrents: TorrentTable::new(),
            peers_total: 0,
            epoch: None,
            swept: 0,
            latest: 0,
        }
    }

    /// Seconds since the epoch and clock units at `now`. Sweeps first, from the latest time seen, when the
    /// last sweep is so long ago that stamps could wrap (module doc).
    fn clock(&mut self, now: Instant) -> (u32, u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let secs =
            u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX);
        let units = (secs / self.unit).max(self.latest);
        let limit = u32::from(TIME_MASK) - self.timeout_units;
        if units - self.swept >= limit {
            let late = units - self.latest;
            self.sweep(self.latest, self.timeout_units.checked_sub(late));
            self.swept = units;
        }
        self.latest = units;
        (secs, units)
    }

    /// Removes, in every torrent, peers older than `timeout` units at `now` (all for `None`).
    fn sweep(&mut self, now: u32, timeout: Option<u32>) -> usize {
        let mut removed = 0;
        for t in self.torrents.values_mut() {
            removed += t.expire(now, timeout);
        }
        self.peers_total -= removed;
        removed
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
        let (secs, units) = self.clock(now);
        let addr = SocketAddr::new(a.addr.ip().to_canonical(), a.addr.port());
        let alt = a
            .alt_addr
            .map(|x| SocketAddr::new(x.ip().to_canonical(), x.port()))
            .filter(|x| x.is_ipv6() != addr.is_ipv6());
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
            && !pos.is_some_and(|i| self.torrents.at(i).holds(addr))
        {
            return Err(Refusal::Full);
        }
        let cap = self.cfg.max_peers_per_torrent;
        let room = self.cfg.max_peers_total.saturating_sub(self.peers_total);
        let pos = match pos {
            Some(i) => i,
            None => self.torrents.insert_new(Torrent::new(a.info_hash, secs)),
        };
        let t = self.torrents.at_mut(pos);
        t.last_activity = secs;
        if a.event == Event::Stopped {
            let mut n = t.remove(addr, false);
            if let Some(alt) = alt {
                n += t.remove(alt, true);
            }
            self.peers_total -= n;
            return Ok(t.counts());
        }
        let seeder = a.left == 0 || a.event == Event::Completed;
        if a.event == Event::Completed && !t.get(addr).is_some_and(counted_seeder) {
            t.downloaded = t.downloaded.saturating_add(1);
        }
        if a.want_peer_ids || self.cfg.peer_ids == PeerIds::Always {
            t.start_ids();
        }
        let mut added = t.upsert(cap, addr, stamp(units, seeder, false), a.peer_id);
        if let Some(alt) = alt.filter(|_| added < room) {
            added += t.upsert(cap, alt, stamp(units, seeder, true), a.peer_id);
        }
        self.peers_total += added;
        if added == 0 && t.is_empty() {
            // Refused for the per-torrent cap: no ids (or box) kept for nobody.
            t.trim();
        }
        let n = a
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_peers) as usize;
        t.select(rng, n, a, seeder, out);
        Ok(t.counts())
    }

    /// Replaces the allow-list (`None`: open mode), e.g. after the file was edited. Torrents no longer
    /// allowed are dropped at once with their peers.
    pub fn set_allow_list(&mut self, allow: Option<std::collections::HashSet<InfoHash>>) {
        if let Some(list) = &allow {
            let mut dropped = 0;
            self.torrents.retain(|t| {
                let keep = list.contains(&t.hash);
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
        self.torrents.iter().map(|t| (t.hash, t.scrape()))
    }

    /// Number of torrents held.
    pub fn torrent_count(&self) -> usize {
        self.torrents.len()
    }

    /// Number of peers held over all torrents (a dual-stack peer's BEP 7 second address counts too).
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
        let d = downloaded.min(u64::from(u32::MAX)) as u32;
        if let Some(t) = self.torrents.get_mut(&h) {
            t.downloaded = t.downloaded.max(d);
        } else if self.torrents.len() < self.cfg.max_torrents && downloaded > 0 {
            let mut t = Torrent::new(h, self.clock(now).0);
            t.downloaded = d;
            self.torrents.insert_new(t);
        }
    }

    /// Removes peers not heard from within the peer timeout and applies the torrent eviction policy (module
    /// doc). Call it periodically (at least once every three peer timeouts: module doc); returns the number
    /// of peers removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let (_, units) = self.clock(now);
        let removed = self.sweep(units, Some(self.timeout_units));
        self.swept = units;
        self.torrents.retain(|t| !t.is_empty() || t.downloaded > 0);
        let keep = (self.cfg.max_torrents as f64 * KEEP_EMPTY_FRACTION) as usize;
        if self.torrents.len() > keep {
            let mut empty: Vec<(u32, InfoHash)> = self
                .torrents
                .iter()
                .filter(|t| t.is_empty())
                .map(|t| (t.last_activity, t.hash))
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
    use proptest::prelude::{any, prop_oneof, proptest, Just, ProptestConfig, Strategy};
    use proptest::{prop_assert, prop_assert_eq};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, HashMap, HashSet};

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
        // Removal from a big sorted list keeps it right.
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
    /// The id table's length per family of torrent `h` (`None`: no table).
    fn ids_len(t: &Tracker, h: u8) -> Option<usize> {
        let tor = t.torrents.get(&InfoHash([h; 20])).unwrap();
        let ids = tor.extra.as_ref()?.ids.as_ref()?;
        Some(ids[0].len() + ids[1].len())
    }

    #[test]
    fn peers_and_torrents_are_packed() {
        assert_eq!(size_of::<Peer<V4>>(), 8);
        assert_eq!(size_of::<Peer<V6>>(), 20);
        assert_eq!(size_of::<Torrent>(), 64);
        // The cost of `PeerIds::Always` (module doc): 21 bytes per peer, an 80-byte box (96 with malloc's header).
        assert_eq!(size_of::<Option<PeerId>>(), 21);
        assert_eq!(size_of::<Extra>(), 80);
        // Addresses round-trip (mapped IPv4 as IPv4) and sort as (IP, port).
        for a in [
            "10.1.2.3:80",
            "[2001:db8::1]:6881",
            "[::ffff:1.2.3.4]:1",
            "0.0.0.0:65535",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let canon = SocketAddr::new(a.ip().to_canonical(), a.port());
            let back = V4::pack(a)
                .map(V4::unpack)
                .or_else(|| V6::pack(a).map(V6::unpack));
            assert_eq!(back, Some(canon));
        }
        let a = |s: &str| V4::pack(s.parse().unwrap()).unwrap();
        assert!(a("1.2.3.4:65535") < a("1.2.3.5:0"));
        assert!(a("1.2.3.4:255") < a("1.2.3.4:256"));
        let mut l = PeerList::<V4>::new();
        for (i, s) in ["9.9.9.9:1", "1.1.1.1:2", "5.5.5.5:3", "1.1.1.1:1"]
            .iter()
            .enumerate()
        {
            let p = a(s);
            let at = l.find(&p).unwrap_err();
            l.insert_at(
                at,
                Peer {
                    addr: p,
                    stamp: stamp(TIME_MASK.into(), i % 2 == 0, false).to_le_bytes(),
                },
                None,
                PeerId([0; 20]),
            );
        }
        assert!(l.held().windows(2).all(|w| w[0].addr < w[1].addr));
        assert_eq!(l.seeders, 2);
        assert!(l.held().iter().all(|p| p.time() == TIME_MASK && !p.alt()));
    }

    #[test]
    fn lists_take_what_malloc_gives_and_shrink() {
        // glibc chunks: 24, 40, 56, ... usable bytes.
        assert_eq!(rounded_capacity(1, 8), 3);
        assert_eq!(rounded_capacity(4, 8), 5);
        assert_eq!(rounded_capacity(20, 8), 21);
        assert_eq!(rounded_capacity(1, 20), 1);
        assert_eq!(rounded_capacity(2, 20), 2);
        let mut l = PeerList::<V4>::new();
        for i in 0..1000u32 {
            let mut addr = [0u8; 6];
            addr[..4].copy_from_slice(&i.to_be_bytes());
            let at = l.find(&addr).unwrap_err();
            l.insert_at(
                at,
                Peer {
                    addr,
                    stamp: [0, 0],
                },
                None,
                PeerId([0; 20]),
            );
            assert!(
                l.peers.len() <= l.len() + l.len() / 8 + 3,
                "{}",
                l.peers.len()
            );
        }
        while l.len() > 10 {
            l.remove_at(l.len() / 2, None);
            assert!(l.peers.len() <= l.len() + l.len() / 4 + 8);
        }
        assert!(l.held().windows(2).all(|w| w[0].addr < w[1].addr));
    }

    #[test]
    fn a_peer_is_its_address() {
        let (mut t, mut rng, now, mut out) = setup();
        let owner = ann(1, 1, 10, Event::Started);
        t.announce(now, &mut rng, &owner, &mut out).unwrap();
        // Its peer id from another address is another peer: it neither moves nor evicts the owner.
        let other_addr = Announce {
            addr: "10.6.6.6:1".parse().unwrap(),
            ..owner
        };
        t.announce(now, &mut rng, &other_addr, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].addr, owner.addr);
        t.announce(
            now,
            &mut rng,
            &Announce {
                event: Event::Stopped,
                ..other_addr
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(t.peer_count(), 1);
        let watcher = ann(1, 2, 10, Event::Started);
        t.announce(now, &mut rng, &watcher, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].addr, out[0].peer_id),
            (owner.addr, Some(owner.peer_id))
        );
        // A new peer id on the same address is the same peer, and the dictionary form shows the new id.
        let renamed = Announce {
            peer_id: PeerId([7; 20]),
            ..owner
        };
        t.announce(now, &mut rng, &renamed, &mut out).unwrap();
        t.announce(now, &mut rng, &watcher, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, Some(PeerId([7; 20])));
        // Another port is another peer; the old entry stays listed until it expires.
        let moved = Announce {
            addr: SocketAddr::new(owner.addr.ip(), 7000),
            ..renamed
        };
        let later = now + Duration::from_secs(60);
        t.announce(later, &mut rng, &moved, &mut out).unwrap();
        assert_eq!(out.len(), 2, "the old port is listed to the peer too");
        assert_eq!(t.peer_count(), 3);
        let expired = now + t.config().peer_timeout + Duration::from_secs(1);
        t.announce(expired, &mut rng, &watcher, &mut out).unwrap();
        t.announce(expired, &mut rng, &moved, &mut out).unwrap();
        assert_eq!(t.expire(expired), 1);
        t.announce(expired, &mut rng, &watcher, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|p| p.addr).collect::<Vec<_>>(),
            vec![moved.addr]
        );
    }

    #[test]
    fn a_bep7_claim_never_touches_a_peer_at_that_address() {
        let (mut t, mut rng, now, mut out) = setup();
        let v6: SocketAddr = "[2001:db8::7]:6881".parse().unwrap();
        let real = Announce {
            addr: v6,
            ..ann(1, 7, 10, Event::Started)
        };
        t.announce(now, &mut rng, &real, &mut out).unwrap();
        // Someone names the real peer's address as its own IPv6 one, as a seeder, then stops.
        let claim = Announce {
            alt_addr: Some(v6),
            ..ann(1, 1, 0, Event::Started)
        };
        t.announce(now, &mut rng, &claim, &mut out).unwrap();
        let s = t.scrape(&InfoHash([1; 20]));
        assert_eq!(
            (s.complete, s.incomplete),
            (1, 1),
            "the real peer still counts as a leecher"
        );
        t.announce(
            now,
            &mut rng,
            &Announce {
                event: Event::Stopped,
                ..claim
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(t.peer_count(), 1, "the real peer stays");
        let s = t.scrape(&InfoHash([1; 20]));
        assert_eq!((s.complete, s.incomplete), (0, 1));
    }

    #[test]
    fn peer_ids_always_gives_every_id_in_the_first_dictionary_reply() {
        let mut t = Tracker::new(Config {
            peer_ids: PeerIds::Always,
            ..Config::default()
        });
        let (mut rng, now, mut out) = (StdRng::seed_from_u64(7), Instant::now(), Vec::new());
        let compact = |p| Announce {
            want_peer_ids: false,
            ..ann(1, p, 5, Event::Started)
        };
        for p in 1..=3 {
            t.announce(now, &mut rng, &compact(p), &mut out).unwrap();
        }
        assert_eq!(ids_len(&t, 1), Some(3), "ids kept although nobody asked");
        // The first dictionary request of the swarm already lists every peer with its own id.
        t.announce(now, &mut rng, &ann(1, 4, 5, Event::Started), &mut out)
            .unwrap();
        let got: HashSet<_> = out.iter().map(|p| (p.addr, p.peer_id)).collect();
        let want: HashSet<_> = (1..=3)
            .map(|p| (compact(p).addr, Some(PeerId([p; 20]))))
            .collect();
        assert_eq!(got, want);
        // Emptied and refilled, the torrent keeps ids again from its first announce.
        for p in 1..=4 {
            t.announce(now, &mut rng, &ann(1, p, 5, Event::Stopped), &mut out)
                .unwrap();
        }
        assert_eq!(ids_len(&t, 1), None);
        t.announce(now, &mut rng, &compact(5), &mut out).unwrap();
        t.announce(now, &mut rng, &ann(1, 6, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(
            out.iter().map(|p| p.peer_id).collect::<Vec<_>>(),
            [Some(PeerId([5; 20]))]
        );
    }

    #[test]
    fn full_peer_ids_only_for_swarms_that_ask() {
        let (mut t, mut rng, now, mut out) = setup();
        let compact = |p| Announce {
            want_peer_ids: false,
            ..ann(1, p, 5, Event::Started)
        };
        t.announce(now, &mut rng, &compact(1), &mut out).unwrap();
        t.announce(now, &mut rng, &compact(2), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, None, "compact-only swarm keeps no ids");
        assert!(
            t.torrents.get(&InfoHash([1; 20])).unwrap().extra.is_none(),
            "nor a box"
        );
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
        assert_eq!(ids_len(&t, 1), Some(2));
        let later = now + t.config().peer_timeout + Duration::from_secs(1);
        t.announce(later, &mut rng, &compact(2), &mut out).unwrap();
        t.expire(later);
        assert_eq!(ids_len(&t, 1), Some(1), "peer 3 expired");
        t.announce(later, &mut rng, &ann(1, 4, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].peer_id, Some(PeerId([2; 20])));
        // An empty swarm drops its table and box.
        for p in [2, 4] {
            t.announce(later, &mut rng, &ann(1, p, 5, Event::Stopped), &mut out)
                .unwrap();
        }
        assert!(t.torrents.get(&InfoHash([1; 20])).unwrap().extra.is_none());
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
                    let mut t = Torrent::new(k, 0);
                    t.downloaded = step;
                    table.insert_new(t);
                    model.insert(k, step);
                }
                _ => {
                    assert_eq!(table.remove(&k).map(|t| t.downloaded), model.remove(&k));
                }
            }
            if step % 4999 == 0 {
                table.retain(|t| t.hash.0[0] % 7 != 0);
                model.retain(|h, _| h.0[0] % 7 != 0);
            }
        }
        assert_eq!(table.len(), model.len());
        assert_eq!(table.iter().count(), model.len());
        for (k, d) in &model {
            assert_eq!(table.get(k).map(|t| t.downloaded), Some(*d));
        }
        for t in table.iter() {
            assert_eq!(model.get(&t.hash), Some(&t.downloaded));
        }
        let chunks = table.len().div_ceil(TORRENT_CHUNK);
        assert_eq!(table.chunks.len(), chunks, "no empty chunk kept");
        assert!(table.remove_at(table.len()).is_none());
    }

    #[test]
    fn no_peer_outlives_its_timeout_when_sweeps_are_missed() {
        let cfg = Config {
            peer_timeout: Duration::from_secs(100),
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        let (_, mut rng, now, mut out) = setup();
        t.announce(now, &mut rng, &ann(1, 1, 5, Event::Started), &mut out)
            .unwrap();
        // 2^14 s later (the 14-bit stamp has wrapped to the same value) and no sweep in between.
        let wrapped = now + Duration::from_secs(1 << 14);
        t.announce(wrapped, &mut rng, &ann(1, 2, 5, Event::Started), &mut out)
            .unwrap();
        assert!(out.is_empty(), "peer 1 is long gone: {out:?}");
        assert_eq!(t.peer_count(), 1);
        // A peer seen just before a long gap is judged by its real age.
        let a = wrapped + Duration::from_secs(1 << 14) - Duration::from_secs(50);
        t.announce(a, &mut rng, &ann(1, 3, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(t.peer_count(), 1, "peer 2 expired by the catch-up");
        let b = a + Duration::from_secs(90);
        t.announce(b, &mut rng, &ann(1, 4, 5, Event::Started), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "peer 3 is 90 s old");
        assert_eq!(t.expire(b + Duration::from_secs(11)), 1);
        assert_eq!(t.peer_count(), 1);
    }

    #[test]
    fn long_timeouts_use_coarser_units() {
        let cfg = Config {
            peer_timeout: Duration::from_secs(100_000),
            ..Config::default()
        };
        let mut t = Tracker::new(cfg);
        assert_eq!((t.unit, t.timeout_units), (25, 4000));
        let (_, mut rng, now, mut out) = setup();
        t.announce(now, &mut rng, &ann(1, 1, 5, Event::Started), &mut out)
            .unwrap();
        t.expire(now);
        assert_eq!(t.expire(now + Duration::from_secs(99_990)), 0);
        assert_eq!(t.expire(now + Duration::from_secs(100_050)), 1);
    }

    /// Heap bytes of the store as glibc's malloc lays them out (16-byte chunks with an 8-byte header, 32
    /// at least): the torrent chunks and index, every peer list, box and id array.
    fn heap_bytes(t: &Tracker) -> usize {
        fn chunk(n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (n + 8).div_ceil(16).max(2) * 16
            }
        }
        let table = &t.torrents;
        let mut total = table.chunks.iter().map(|c| chunk(c.capacity() * size_of::<Torrent>())).sum::<usize>()
            + chunk(table.chunks.capacity() * size_of::<Vec<Torrent>>())
            // hashbrown: a u32 and a control byte per bucket.
            + chunk(table.index.capacity() * 8 / 7 * 5);
        for tor in table.iter() {
            total += chunk(tor.v4.peers.len() * size_of::<Peer<V4>>());
            if let Some(e) = &tor.extra {
                total +=
                    chunk(size_of::<Extra>()) + chunk(e.v6.peers.len() * size_of::<Peer<V6>>());
                if let Some(ids) = &e.ids {
                    total += ids
                        .iter()
                        .map(|v| chunk(v.capacity() * size_of::<Option<PeerId>>()))
                        .sum::<usize>();
                }
            }
        }
        total
    }

    /// The bench's UDP load at a tenth of its size (1 000 torrents x 20 IPv4 peers, every peer of every
    /// swarm announced once in order): bytes per peer and per torrent against opentracker's 8-byte peers.
    #[test]
    fn bytes_per_peer_and_torrent_at_the_bench_load() {
        let (mut t, mut rng, now, mut out) = setup();
        let (hashes, peers) = (1000u32, 20u16);
        for p in 0..peers {
            for h in 0..hashes {
                let mut a = ann(0, 1, u64::from(p % 4), Event::Started);
                a.info_hash.0[..4].copy_from_slice(&h.to_le_bytes());
                a.addr = SocketAddr::from(([127, 0, 0, 1], 10_000 + p));
                a.want_peer_ids = false;
                a.numwant = Some(0);
                t.announce(now, &mut rng, &a, &mut out).unwrap();
            }
        }
        assert_eq!(t.peer_count(), (hashes * u32::from(peers)) as usize);
        let total = heap_bytes(&t);
        let lists: usize = t
            .torrents
            .iter()
            .map(|x| (x.v4.peers.len() * 8 + 8).div_ceil(16) * 16)
            .sum();
        let per_peer = lists as f64 / t.peer_count() as f64;
        let per_torrent = (total - lists) as f64 / f64::from(hashes);
        println!(
            "heap {total} B: {per_peer:.2} B per peer (lists), {per_torrent:.1} B per torrent"
        );
        // 8-byte entries, 21 of them in a 176-byte chunk; a 64-byte entry plus its index slot.
        assert!(per_peer <= 9.0, "{per_peer}");
        assert!(per_torrent <= 80.0, "{per_torrent}");
    }

    /// The naive model of the store: one map of peers per torrent with exact times.
    #[derive(Clone, Debug)]
    struct MPeer {
        seeder: bool,
        alt: bool,
        seen: u64,
        id: Option<PeerId>,
    }

    #[derive(Debug, Default)]
    struct MTorrent {
        peers: BTreeMap<SocketAddr, MPeer>,
        ids_on: bool,
        downloaded: u32,
        last: u64,
    }

    impl MTorrent {
        fn counts(&self) -> SwarmCounts {
            let counted = self.peers.values().filter(|p| !p.alt);
            let complete = counted.clone().filter(|p| p.seeder).count() as u32;
            SwarmCounts {
                complete,
                incomplete: counted.count() as u32 - complete,
            }
        }
        fn family_len(&self, v6: bool) -> usize {
            self.peers.keys().filter(|a| a.is_ipv6() == v6).count()
        }
    }

    struct Model {
        cfg: Config,
        t: BTreeMap<InfoHash, MTorrent>,
        swept: u64,
    }

    impl Model {
        fn total(&self) -> usize {
            self.t.values().map(|t| t.peers.len()).sum()
        }

        fn sweep(&mut self, now: u64) {
            let timeout = self.cfg.peer_timeout.as_secs();
            for t in self.t.values_mut() {
                t.peers.retain(|_, p| now - p.seen <= timeout);
                t.ids_on &= !t.peers.is_empty();
            }
        }

        fn clock(&mut self, now: u64) {
            let limit = u64::from(TIME_MASK) - self.cfg.peer_timeout.as_secs();
            if now - self.swept >= limit {
                self.sweep(now);
                self.swept = now;
            }
        }

        fn expire(&mut self, now: u64) {
            self.clock(now);
            self.sweep(now);
            self.swept = now;
            self.t
                .retain(|_, t| !t.peers.is_empty() || t.downloaded > 0);
            let keep = (self.cfg.max_torrents as f64 * KEEP_EMPTY_FRACTION) as usize;
            if self.t.len() > keep {
                let mut empty: Vec<(u64, InfoHash)> = self
                    .t
                    .iter()
                    .filter(|(_, t)| t.peers.is_empty())
                    .map(|(h, t)| (t.last, *h))
                    .collect();
                empty.sort_unstable();
                let excess = self.t.len() - keep;
                for (_, h) in empty.into_iter().take(excess) {
                    self.t.remove(&h);
                }
            }
        }

        fn announce(&mut self, now: u64, a: &Announce) -> Result<SwarmCounts, Refusal> {
            self.clock(now);
            let addr = SocketAddr::new(a.addr.ip().to_canonical(), a.addr.port());
            let alt = a
                .alt_addr
                .map(|x| SocketAddr::new(x.ip().to_canonical(), x.port()))
                .filter(|x| x.is_ipv6() != addr.is_ipv6());
            let exists = self.t.contains_key(&a.info_hash);
            if !exists {
                if a.event == Event::Stopped {
                    return Ok(SwarmCounts::default());
                }
                if self.t.len() >= self.cfg.max_torrents {
                    return Err(Refusal::Full);
                }
            }
            let total = self.total();
            if total >= self.cfg.max_peers_total
                && a.event != Event::Stopped
                && !self
                    .t
                    .get(&a.info_hash)
                    .is_some_and(|t| t.peers.contains_key(&addr))
            {
                return Err(Refusal::Full);
            }
            let room = self.cfg.max_peers_total.saturating_sub(total);
            let cap = self.cfg.max_peers_per_torrent;
            let t = self.t.entry(a.info_hash).or_default();
            t.last = now;
            if a.event == Event::Stopped {
                t.peers.remove(&addr);
                if let Some(alt) = alt {
                    if t.peers.get(&alt).is_some_and(|p| p.alt) {
                        t.peers.remove(&alt);
                    }
                }
                t.ids_on &= !t.peers.is_empty();
                return Ok(t.counts());
            }
            let seeder = a.left == 0 || a.event == Event::Completed;
            if a.event == Event::Completed
                && !t.peers.get(&addr).is_some_and(|p| p.seeder && !p.alt)
            {
                t.downloaded = t.downloaded.saturating_add(1);
            }
            t.ids_on |= a.want_peer_ids;
            let id = t.ids_on.then_some(a.peer_id);
            let mut added = 0;
            let entry = |alt| MPeer {
                seeder,
                alt,
                seen: now,
                id,
            };
            if t.peers.contains_key(&addr) || t.family_len(addr.is_ipv6()) < cap {
                added += usize::from(t.peers.insert(addr, entry(false)).is_none());
            }
            if let Some(alt) = alt.filter(|_| added < room) {
                match t.peers.get(&alt) {
                    Some(p) if !p.alt => {}
                    Some(_) => {
                        t.peers.insert(alt, entry(true));
                    }
                    None if t.family_len(alt.is_ipv6()) < cap => {
                        t.peers.insert(alt, entry(true));
                    }
                    None => {}
                }
            }
            t.ids_on &= !t.peers.is_empty();
            Ok(t.counts())
        }
    }

    /// Everything the store holds of a torrent, as the model has it (times aside).
    fn entries(t: &Torrent) -> BTreeMap<SocketAddr, (bool, bool, Option<PeerId>)> {
        let mut m = BTreeMap::new();
        let ids = t.extra.as_ref().and_then(|e| e.ids.as_ref());
        assert!(t.v4.held().windows(2).all(|w| w[0].addr < w[1].addr));
        for (i, p) in t.v4.held().iter().enumerate() {
            m.insert(
                p.addr.unpack(),
                (p.seeder(), p.alt(), ids.and_then(|x| x[0][i])),
            );
        }
        if let Some(e) = &t.extra {
            assert!(e.v6.held().windows(2).all(|w| w[0].addr < w[1].addr));
            for (i, p) in e.v6.held().iter().enumerate() {
                m.insert(
                    p.addr.unpack(),
                    (p.seeder(), p.alt(), ids.and_then(|x| x[1][i])),
                );
            }
        }
        m
    }

    #[derive(Clone, Debug)]
    enum Op {
        Announce {
            h: u8,
            p: u8,
            alt: Option<u8>,
            seeder: bool,
            event: u8,
            numwant: Option<u32>,
            want_ipv6: Option<bool>,
            want_peer_ids: bool,
            id: u8,
        },
        Wait(u64),
        Expire,
    }

    /// Peer addresses of the model run: a few IPv4 and IPv6 hosts, two ports each.
    fn model_addr(p: u8) -> SocketAddr {
        let port = 6881 + u16::from(p % 2);
        match p / 2 % 5 {
            h @ 0..=2 => SocketAddr::new(Ipv4Addr::new(10, 0, 0, h).into(), port),
            3 => SocketAddr::new("2001:db8::3".parse().unwrap(), port),
            _ => SocketAddr::new("::ffff:10.0.0.4".parse().unwrap(), port),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4u8, 0..10u8, proptest::option::of(0..10u8), any::<bool>(), 0..5u8,
                  proptest::option::of(0..6u32), proptest::option::of(any::<bool>()), any::<bool>(), 0..3u8)
                .prop_map(|(h, p, alt, seeder, event, numwant, want_ipv6, want_peer_ids, id)| Op::Announce {
                    h, p, alt, seeder, event, numwant, want_ipv6, want_peer_ids, id,
                }),
            2 => prop_oneof![0..20u64, 25..40u64, 16_000..40_000u64].prop_map(Op::Wait),
            1 => Just(Op::Expire),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The packed store against the naive model: same entries (address, seeder, alt, known id), counts,
        /// totals and torrents after every step, and every reply obeys the selection rules.
        #[test]
        fn store_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..80)) {
            let cfg = Config {
                peer_timeout: Duration::from_secs(30),
                max_peers: 4,
                default_numwant: 3,
                max_torrents: 3,
                max_peers_per_torrent: 4,
                max_peers_total: 9,
                ..Config::default()
            };
            let mut t = Tracker::new(cfg.clone());
            let mut m = Model { cfg, t: BTreeMap::new(), swept: 0 };
            let mut rng = StdRng::seed_from_u64(3);
            let start = Instant::now();
            let mut now = 0u64;
            let mut out = Vec::new();
            for op in ops {
                let at = start + Duration::from_secs(now);
                match op {
                    Op::Wait(s) => now += s,
                    Op::Expire => {
                        t.expire(at);
                        m.expire(now);
                    }
                    Op::Announce { h, p, alt, seeder, event, numwant, want_ipv6, want_peer_ids, id } => {
                        let event = [Event::None, Event::Started, Event::Completed, Event::Stopped, Event::None][usize::from(event)];
                        let a = Announce {
                            info_hash: InfoHash([h; 20]),
                            peer_id: PeerId([id; 20]),
                            addr: model_addr(p),
                            alt_addr: alt.map(model_addr),
                            left: if seeder { 0 } else { 9 },
                            event,
                            numwant,
                            want_ipv6,
                            want_peer_ids,
                        };
                        let got = t.announce(at, &mut rng, &a, &mut out);
                        let want = m.announce(now, &a);
                        prop_assert_eq!(got, want, "{:?}", a);
                        if got.is_err() || event == Event::Stopped {
                            prop_assert!(out.is_empty());
                        } else {
                            // The reply: distinct eligible peers, as many per family as asked and available.
                            let mt = &m.t[&a.info_hash];
                            let me = [Some(SocketAddr::new(a.addr.ip().to_canonical(), a.addr.port())),
                                      a.alt_addr.map(|x| SocketAddr::new(x.ip().to_canonical(), x.port()))];
                            let seeder = a.left == 0 || event == Event::Completed;
                            let eligible: BTreeMap<_, _> = mt.peers.iter()
                                .filter(|(k, p)| !me.contains(&Some(**k)) && (!seeder || !p.seeder))
                                .collect();
                            let n = numwant.unwrap_or(3).min(4) as usize;
                            let (len, len6) = (mt.peers.len(), mt.family_len(true));
                            let (n4, n6) = match want_ipv6 {
                                Some(true) => (0, n),
                                Some(false) => (n, 0),
                                None if len6 == 0 => (n, 0),
                                None => { let n6 = (n * len6).div_ceil(len); (n - n6, n6) }
                            };
                            let avail = |v6: bool| eligible.keys().filter(|k| k.is_ipv6() == v6).count();
                            let got6 = out.iter().filter(|e| e.addr.is_ipv6()).count();
                            prop_assert_eq!(got6, n6.min(avail(true)));
                            prop_assert_eq!(out.len() - got6, n4.min(avail(false)));
                            let distinct: HashSet<_> = out.iter().map(|e| e.addr).collect();
                            prop_assert_eq!(distinct.len(), out.len());
                            for e in &out {
                                let p = eligible.get(&e.addr);
                                prop_assert!(p.is_some(), "{:?} not eligible", e.addr);
                                prop_assert_eq!(e.peer_id, p.unwrap().id);
                            }
                        }
                    }
                }
                prop_assert_eq!(t.peer_count(), m.total());
                prop_assert_eq!(t.torrent_count(), m.t.len());
                for (h, mt) in &m.t {
                    let tor = t.torrents.get(h);
                    prop_assert!(tor.is_some());
                    let tor = tor.unwrap();
                    let want: BTreeMap<_, _> = mt.peers.iter()
                        .map(|(k, p)| (*k, (p.seeder, p.alt, p.id)))
                        .collect();
                    prop_assert_eq!(entries(tor), want);
                    prop_assert_eq!(tor.counts(), mt.counts());
                    prop_assert_eq!(tor.downloaded, mt.downloaded);
                    prop_assert_eq!(tor.extra.as_ref().is_some_and(|e| e.ids.is_some()), mt.ids_on);
                }
            }
        }
    }
}
