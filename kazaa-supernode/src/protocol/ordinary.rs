//! The ordinary node's side (`shared/protocols/kazaa.md` §1 "Node list", §5 "An ON probes about 5 SNs at
//! start-up and picks one by workload, RTT and IP-prefix match", "SN hopping"; §4 and §7 case 15 for
//! pollution). Sans-I/O: time and RNG are passed in.
//!
//! Re-created choices (README): the cache keeps at most [`MAX_NODE_CACHE`] SNs, freshest first; a probe
//! round takes the [`PROBE_COUNT`] best cached SNs not in back-off; the winner minimises
//! `load% × 10 + rtt_ms` (a 10 % load difference is worth 100 ms), with a shared /24 prefix breaking
//! ties; an SN that failed is skipped for [`FAILED_BACKOFF`]; hopping moves to the best other SN.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use common::hash::UuHash;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::codec::message::{NodeEntry, SearchResult, MAX_NODE_LIST_ENTRIES};
use crate::codec::tag::code;

/// SNs probed per round.
pub const PROBE_COUNT: usize = 5;
/// SNs cached (one full node list).
pub const MAX_NODE_CACHE: usize = MAX_NODE_LIST_ENTRIES;
/// How long a failed SN is skipped.
pub const FAILED_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    load: u8,
    seen: Instant,
    failed_at: Option<Instant>,
}

/// The ON's cache of SNs.
#[derive(Debug, Clone, Default)]
pub struct NodeCache {
    nodes: BTreeMap<SocketAddrV4, Cached>,
}

/// One probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The SN.
    pub addr: SocketAddrV4,
    /// Its round-trip time (connect + hello/reply).
    pub rtt: Duration,
    /// The load it reported.
    pub load: u8,
}

impl NodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bootstrap SNs (load unknown = 50).
    pub fn bootstrap(&mut self, addrs: &[SocketAddrV4], now: Instant) {
        for &a in addrs {
            self.nodes.entry(a).or_insert(Cached {
                load: 50,
                seen: now,
                failed_at: None,
            });
        }
        self.trim();
    }

    /// Merges a received 0x00 list: entries are `last_seen` minutes old.
    pub fn merge(&mut self, list: &[NodeEntry], now: Instant) {
        for e in list.iter().take(MAX_NODE_LIST_ENTRIES) {
            let seen = now
                .checked_sub(Duration::from_secs(u64::from(e.last_seen) * 60))
                .unwrap_or(now);
            let c = self.nodes.entry(e.addr).or_insert(Cached {
                load: e.load,
                seen,
                failed_at: None,
            });
            c.load = e.load;
            c.seen = c.seen.max(seen);
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.nodes.len() > MAX_NODE_CACHE {
            let oldest = self
                .nodes
                .iter()
                .min_by_key(|(a, c)| (c.seen, **a))
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.nodes.remove(&a);
            }
        }
    }

    /// SNs cached.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every cached SN, freshest first.
    pub fn addrs(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<_> = self.nodes.iter().map(|(a, c)| (*a, c.seen)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(a, _)| a).collect()
    }

    /// Whether `addr` is cached.
    pub fn contains(&self, addr: SocketAddrV4) -> bool {
        self.nodes.contains_key(&addr)
    }

    fn usable(&self, now: Instant) -> Vec<(SocketAddrV4, Cached)> {
        self.nodes
            .iter()
            .filter(|(_, c)| {
                c.failed_at
                    .is_none_or(|t| now.duration_since(t) >= FAILED_BACKOFF)
            })
            .map(|(a, c)| (*a, *c))
            .collect()
    }

    /// Up to [`PROBE_COUNT`] SNs to probe, excluding `except`: freshest first, then least loaded;
    /// equal ones in random order so ONs spread out.
    pub fn probe_candidates(
        &self,
        now: Instant,
        except: Option<SocketAddrV4>,
        rng: &mut impl Rng,
    ) -> Vec<SocketAddrV4> {
        let mut v: Vec<_> = self
            .usable(now)
            .into_iter()
            .filter(|(a, _)| Some(*a) != except)
            .collect();
        v.shuffle(rng);
        v.sort_by_key(|(_, c)| (std::cmp::Reverse(c.seen), c.load));
        v.into_iter().take(PROBE_COUNT).map(|(a, _)| a).collect()
    }

    /// Records an SN that failed (refused, timed out, dropped us).
    pub fn mark_failed(&mut self, addr: SocketAddrV4, now: Instant) {
        if let Some(c) = self.nodes.get_mut(&addr) {
            c.failed_at = Some(now);
        }
    }

    /// Records a successful probe or session.
    pub fn mark_alive(&mut self, addr: SocketAddrV4, load: u8, now: Instant) {
        let c = self.nodes.entry(addr).or_insert(Cached {
            load,
            seen: now,
            failed_at: None,
        });
        c.load = load;
        c.seen = now;
        c.failed_at = None;
        self.trim();
    }
}

/// The probe score: lower is better.
pub fn probe_score(p: &Probe) -> u64 {
    u64::from(p.load.min(100)) * 10 + p.rtt.as_millis() as u64
}

/// The SN to connect to among `probes` (ties go to a shared /24 with `me`, then the lower address).
pub fn choose_supernode(probes: &[Probe], me: Option<SocketAddrV4>) -> Option<SocketAddrV4> {
    let prefix = |a: &SocketAddrV4| a.ip().octets()[..3].to_vec();
    probes
        .iter()
        .min_by_key(|p| {
            let same = me.is_some_and(|m| prefix(&m) == prefix(&p.addr));
            (probe_score(p), !same, p.addr)
        })
        .map(|p| p.addr)
}

/// Hands out 16-bit search ids, never 0.
#[derive(Debug, Clone, Default)]
pub struct SearchIds {
    next: u16,
}

impl SearchIds {
    /// The next id.
    pub fn next_id(&mut self) -> u16 {
        self.next = self.next.wrapping_add(1).max(1);
        self.next
    }
}

/// All results for one ContentHash: one "version" of a file as Kazaa's result list grouped them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The hash.
    pub hash: UuHash,
    /// Its size.
    pub size: u64,
    /// Names it was shared under.
    pub names: Vec<String>,
    /// Distinct sources (HTTP address, username, answering SN order kept).
    pub sources: Vec<(SocketAddrV4, String)>,
}

/// Groups results by hash. A decoy with the same name but other bytes is a different hash, so it is a
/// separate version and its sources are never mixed in.
pub fn group_by_hash(results: &[SearchResult]) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    for r in results {
        let name = r
            .tags
            .iter()
            .find(|t| t.kind == code::FILENAME)
            .map(|t| t.as_text())
            .unwrap_or_default();
        let v = match out.iter_mut().position(|v| v.hash == r.hash) {
            Some(i) => &mut out[i],
            None => {
                out.push(Version {
                    hash: r.hash,
                    size: r.size,
                    names: Vec::new(),
                    sources: Vec::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        if !name.is_empty() && !v.names.contains(&name) {
            v.names.push(name);
        }
        if !v.sources.iter().any(|(a, u)| *a == r.addr && *u == r.user) {
            v.sources.push((r.addr, r.user.clone()));
        }
    }
    out
}

/// The sources to download from when pinned to a trusted hash (from a `sig2dat` link): only that
/// version's, with the size it must have.
pub fn pinned_sources(
    results: &[SearchResult],
    trusted: &UuHash,
    length: Option<u64>,
) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = results
        .iter()
        .filter(|r| &r.hash == trusted && length.is_none_or(|n| n == r.size))
        .map(|r| r.addr)
        .collect();
    v.dedup();
    v
}

/// Whether a result's source must be reached by push (private address or port 0, §2).
pub fn is_firewalled(addr: &SocketAddrV4) -> bool {
    addr.port() == 0
        || addr.ip().is_unspecified()
        || (addr.ip().is_private() && !addr.ip().is_loopback())
}
