//! The routing servent, sans-I/O (Gnutella 0.6 draft §2.3 "Descriptor routing"; notes §3 and §4).
//!
//! Input: [`Servent::add_connection`], [`Servent::remove_connection`], [`Servent::handle_descriptor`],
//! [`Servent::handle_decode_error`], [`Servent::handle_timeout`], [`Servent::start_search`].
//! Output, to poll after any input: [`Servent::poll_transmit`] per connection (or [`Servent::poll_dirty`] to
//! learn which connections have output), [`Servent::poll_event`] and [`Servent::poll_timeout`].
//! Time is passed in; randomness comes from a seeded RNG; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::codec::ggep::GgepExt;
use crate::codec::message::{
    self as m, hflags, sha1_urn, Bye, Extensions, HitResult, Message, Ping, Pong, Push, Query,
    QueryHit, Trailer, MAX_RESULTS_PER_HIT,
};
use crate::codec::qrp::{self, QrpReceiver, QrpTable};
use crate::codec::{DecodeError, Descriptor, Guid, HARD_TTL_LIMIT};

use super::handshake::{Link, PeerKind, Role};
use super::queue::{OutQueue, Outgoing, Pushed};

/// A connection id, chosen by the shell.
pub type ConnId = u64;

/// Tunables of a servent.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our servent GUID (last 16 bytes of our hits, the Push route key).
    pub guid: Guid,
    /// Starting role (0.6).
    pub role: Role,
    /// Classic 0.4 mode: flood pings and queries to every neighbour, no roles, no QRP, no pong cache.
    pub classic: bool,
    /// The address we advertise in pongs and hits.
    pub addr: SocketAddrV4,
    /// Broadcasts over this hops+TTL are trimmed (gtk-gnutella: 4; classic: 7).
    pub max_ttl: u8,
    /// We cannot accept incoming connections: set the push flag in hits, don't answer firewalled queriers.
    pub firewalled: bool,
    /// Vendor code in our hit trailers.
    pub vendor: [u8; 4],
    /// How long a route (GUID, type) is remembered.
    pub route_lifetime: Duration,
    /// At most this many routes are remembered (oldest evicted first).
    pub max_routes: usize,
    /// Output queue budget per connection, bytes.
    pub queue_bytes: usize,
    /// Queries accepted per connection per second; more are dropped.
    pub max_queries_per_sec: u32,
    /// Pings from one connection closer than this are dropped (pong caching, T).
    pub ping_interval: Duration,
    /// Period of the pong-cache refresh pings to every neighbour (also the keep-alive).
    pub pong_refresh: Duration,
    /// Size of our QRP table.
    pub qrp_table_len: u32,
    /// Entry bits of the QRP patches we send (4 or 8).
    pub qrp_entry_bits: u8,
    /// A link that sent nothing for this long (our refresh pings go out every `pong_refresh`) gets
    /// BYE 406 and is closed.
    pub idle_timeout: Duration,
    /// Leaves we accept (advertised in the pong GGEP `UP`).
    pub max_leaves: u8,
    /// Ultrapeer links we accept (advertised in the pong GGEP `UP`).
    pub max_ultrapeers: u8,
    /// Window over which a connection's offences are counted (kicks below).
    pub kick_window: Duration,
    /// A neighbour re-sending a GUID it already sent us on the same link (a duplicate flood; honest
    /// duplicates arrive over *other* links) is tolerated this many times per window; beyond: BYE 401.
    pub max_dup_repeats: u32,
    /// Descriptors over the hard TTL limit tolerated per window; beyond: BYE 403.
    pub max_over_ttl: u32,
    /// Malformed queries tolerated per window; beyond: BYE 402.
    pub max_bad_queries: u32,
}

/// Queries are relayed only up to this payload size (gtk-gnutella); bigger ones are answered, not relayed.
pub const MAX_FORWARD_QUERY: usize = 256;
/// Hits are relayed only up to this payload size (gtk-gnutella).
pub const MAX_FORWARD_HIT: usize = 16 * 1024;

impl Config {
    /// Defaults for a 0.6 servent in `role`, or a classic one.
    pub fn new(guid: Guid, addr: SocketAddrV4, role: Role, classic: bool) -> Config {
        Config {
            guid,
            role,
            classic,
            addr,
            max_ttl: if classic { 7 } else { 4 },
            firewalled: false,
            vendor: *b"P2PL",
            route_lifetime: Duration::from_secs(600),
            max_routes: 200_000,
            queue_bytes: 512 * 1024,
            max_queries_per_sec: 200,
            ping_interval: Duration::from_secs(1),
            pong_refresh: Duration::from_secs(3),
            qrp_table_len: qrp::DEFAULT_TABLE_LEN,
            qrp_entry_bits: 4,
            idle_timeout: Duration::from_secs(30),
            max_leaves: 64,
            max_ultrapeers: 16,
            kick_window: Duration::from_secs(10),
            max_dup_repeats: 20,
            max_over_ttl: 10,
            max_bad_queries: 10,
        }
    }
}

/// A file we share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFile {
    /// Index used in hits and `/get/<index>/<name>`.
    pub index: u32,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-1, when known.
    pub sha1: Option<[u8; 20]>,
}

/// Something the shell (or the user) must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hit for one of our searches.
    Hit {
        /// The search it answers.
        query: Guid,
        /// The hit.
        hit: QueryHit,
        /// Hops it travelled.
        hops: u8,
    },
    /// A Push addressed to us: connect back and send GIV.
    Push {
        /// The push.
        push: Push,
        /// The connection it came from.
        from: ConnId,
    },
    /// Close this connection once its queue (ending with our Bye, if any) is written.
    Close {
        /// Which.
        conn: ConnId,
        /// Why (logged).
        reason: String,
    },
    /// We changed role (leaf guidance accepted).
    RoleChanged(Role),
}

/// Counters of routing decisions (copied into the stats record by the shell).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Duplicate (GUID, type) arrivals dropped.
    pub duplicates: u64,
    /// Broadcasts whose TTL was trimmed to max_ttl.
    pub ttl_clamped: u64,
    /// Descriptors dropped for hops + TTL over the hard limit (or TTL 0).
    pub ttl_dropped: u64,
    /// Replies or pushes with no route (or a dead one).
    pub no_route: u64,
    /// Queries/pings dropped by rate limits.
    pub rate_limited: u64,
    /// Messages dropped by full output queues.
    pub queue_dropped: u64,
    /// Queries answered with at least one hit.
    pub queries_answered: u64,
    /// Queries forwarded (one per copy sent).
    pub queries_forwarded: u64,
    /// Queries not sent to a neighbour because its QRP table did not match.
    pub qrp_filtered: u64,
    /// Hits routed onward.
    pub hits_routed: u64,
    /// Messages ignored (vendor, unknown, malformed control messages).
    pub ignored: u64,
    /// Queries or hits answered/consumed but too big to relay.
    pub too_big_to_relay: u64,
    /// Links closed with BYE 406 for silence.
    pub idle_closed: u64,
    /// Links closed with BYE 401/402/403/414 for abuse.
    pub kicked: u64,
}

/// What a neighbour can be kicked for (notes §2 Bye codes, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offence {
    /// Re-sent a GUID on the same link (BYE 401).
    DupRepeat = 0,
    /// hops + TTL over the hard limit (BYE 403).
    OverTtl = 1,
    /// A query we could not parse (BYE 402).
    BadQuery = 2,
}

struct Conn {
    kind: PeerKind,
    addr: Option<SocketAddr>,
    queue: OutQueue,
    qrp_in: QrpReceiver,
    last_ping_in: Option<Instant>,
    query_window: (Instant, u32),
    duplicates: u32,
    /// Per [`Offence`]: start of the current window and offences in it.
    strikes: [(Instant, u32); 3],
    closing: bool,
    last_rx: Instant,
    ggep: bool,
    /// The peer's `X-Max-TTL`.
    max_ttl: Option<u8>,
    /// The peer takes Bye messages (`Bye-Packet:`).
    bye_packet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Local,
    Conn(ConnId),
}

/// Bounded, time-limited map (GUID, payload type) → where it came from.
struct RouteTable {
    map: HashMap<(Guid, u8), (Route, Instant)>,
    order: VecDeque<((Guid, u8), Instant)>,
    lifetime: Duration,
    max: usize,
}

impl RouteTable {
    fn expire(&mut self, now: Instant) {
        while let Some(&(k, t)) = self.order.front() {
            if self.order.len() > self.max || now.saturating_duration_since(t) > self.lifetime {
                self.order.pop_front();
                if self.map.get(&k).is_some_and(|&(_, t2)| t2 == t) {
                    self.map.remove(&k);
                }
            } else {
                break;
            }
        }
    }

    /// Inserts; false if already there (a duplicate).
    fn insert(&mut self, now: Instant, k: (Guid, u8), r: Route) -> bool {
        self.expire(now);
        if self.map.contains_key(&k) {
            return false;
        }
        self.map.insert(k, (r, now));
        self.order.push_back((k, now));
        true
    }

    fn get(&self, k: &(Guid, u8)) -> Option<Route> {
        self.map.get(k).map(|&(r, _)| r)
    }
}

/// Pong cache size (LimeWire/BearShare scheme: about 10).
pub const PONG_CACHE: usize = 10;
/// Host cache size.
pub const MAX_HOSTS: usize = 1000;
/// Hosts packed into the GGEP `IPP` of the pong that answers a ping asking for them (`SCP`); gtk-gnutella
/// and LimeWire send about ten.
pub const MAX_IPP_HOSTS: usize = 10;

/// The servent.
pub struct Servent {
    cfg: Config,
    conns: BTreeMap<ConnId, Conn>,
    routes: RouteTable,
    push_routes: HashMap<Guid, (ConnId, Instant)>,
    pong_cache: VecDeque<(Pong, u8)>,
    hosts: VecDeque<SocketAddr>,
    host_set: HashSet<SocketAddr>,
    shares: Vec<SharedFile>,
    table: QrpTable,
    events: VecDeque<Event>,
    dirty: BTreeSet<ConnId>,
    rng: StdRng,
    next_refresh: Instant,
    counters: Counters,
    /// A leaf table changed: the table we send to ultrapeers (ours + our leaves') must be resent.
    up_table_dirty: bool,
    started: Instant,
}

impl std::fmt::Debug for Servent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servent")
            .field("guid", &self.cfg.guid)
            .field("role", &self.cfg.role)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn table_for(cfg: &Config, shares: &[SharedFile]) -> QrpTable {
    QrpTable::build(
        cfg.qrp_table_len,
        shares.iter().map(|s| s.name.as_str()),
        shares.iter().filter_map(|s| s.sha1),
    )
}

impl Servent {
    /// A servent sharing `shares`, with its RNG seeded by `seed`.
    pub fn new(cfg: Config, shares: Vec<SharedFile>, seed: u64, now: Instant) -> Servent {
        let table = table_for(&cfg, &shares);
        Servent {
            routes: RouteTable {
                map: HashMap::new(),
                order: VecDeque::new(),
                lifetime: cfg.route_lifetime,
                max: cfg.max_routes,
            },
            next_refresh: now + cfg.pong_refresh,
            cfg,
            conns: BTreeMap::new(),
            push_routes: HashMap::new(),
            pong_cache: VecDeque::new(),
            hosts: VecDeque::new(),
            host_set: HashSet::new(),
            shares,
            table,
            events: VecDeque::new(),
            dirty: BTreeSet::new(),
            rng: StdRng::seed_from_u64(seed),
            counters: Counters::default(),
            up_table_dirty: false,
            started: now,
        }
    }

    /// Our configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.cfg.role
    }

    /// Routing counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Open connections and what they are.
    pub fn connections(&self) -> impl Iterator<Item = (ConnId, PeerKind)> + '_ {
        self.conns.iter().map(|(&id, c)| (id, c.kind))
    }

    /// Number of connections of `kind`.
    pub fn count(&self, kind: PeerKind) -> usize {
        self.conns.values().filter(|c| c.kind == kind).count()
    }

    /// The QRP table built from our shares.
    pub fn qrp_table(&self) -> &QrpTable {
        &self.table
    }

    /// The host cache (newest last).
    pub fn hosts(&self) -> impl Iterator<Item = &SocketAddr> {
        self.hosts.iter()
    }

    /// Adds hosts (from `X-Try`, a saved cache, the command line). Unspecified addresses and port 0 are
    /// skipped, as is our own address.
    pub fn add_hosts(&mut self, hosts: impl IntoIterator<Item = SocketAddr>) {
        for h in hosts {
            if h.port() == 0 || h.ip().is_unspecified() || h == SocketAddr::V4(self.cfg.addr) {
                continue;
            }
            if self.host_set.insert(h) {
                self.hosts.push_back(h);
                if self.hosts.len() > MAX_HOSTS {
                    if let Some(old) = self.hosts.pop_front() {
                        self.host_set.remove(&old);
                    }
                }
            }
        }
    }

    /// Takes the newest host from the cache (to try connecting to it).
    pub fn take_host(&mut self) -> Option<SocketAddr> {
        let h = self.hosts.pop_back()?;
        self.host_set.remove(&h);
        Some(h)
    }

    /// Replaces our shares (and our QRP table; leaves resend it to their ultrapeers).
    pub fn set_shares(&mut self, shares: Vec<SharedFile>) {
        self.table = table_for(&self.cfg, &shares);
        self.shares = shares;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.send_qrp_if_due(id);
        }
    }

    /// Ultrapeer addresses to suggest in `X-Try-Ultrapeers` (our UP neighbours and cached hosts).
    pub fn try_hosts(&self, max: usize) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .conns
            .values()
            .filter(|c| c.kind != PeerKind::Leaf)
            .filter_map(|c| c.addr)
            .collect();
        v.extend(self.hosts.iter().rev().copied());
        v.dedup();
        v.truncate(max);
        v
    }

    /// A link finished its handshake. `addr` is the peer's listening address if known.
    pub fn add_connection(&mut self, now: Instant, id: ConnId, link: &Link) {
        if link.become_leaf && self.cfg.role == Role::Ultrapeer {
            self.cfg.role = Role::Leaf;
            let others: Vec<ConnId> = self.conns.keys().copied().collect();
            for o in others {
                self.send_bye(o, 203, "Becoming a leaf node");
            }
            self.events.push_back(Event::RoleChanged(Role::Leaf));
        }
        self.conns.insert(
            id,
            Conn {
                kind: link.peer,
                addr: link.listen_addr,
                queue: OutQueue::new(self.cfg.queue_bytes),
                qrp_in: QrpReceiver::default(),
                last_ping_in: None,
                query_window: (now, 0),
                duplicates: 0,
                strikes: [(now, 0); 3],
                closing: false,
                last_rx: now,
                ggep: link.ggep,
                max_ttl: link.max_ttl,
                bye_packet: link.bye_packet,
            },
        );
        self.add_hosts(link.try_hosts.iter().copied());
        if let Some(a) = link.listen_addr {
            // A neighbour is not a candidate for a new connection while we are connected to it.
            if self.host_set.remove(&a) {
                self.hosts.retain(|h| *h != a);
            }
        }
        self.send_qrp_if_due(id);
        let ttl = if self.cfg.classic {
            self.cfg.max_ttl
        } else {
            2
        };
        let guid = Guid::random(&mut self.rng);
        self.routes.insert(now, (guid, m::TYPE_PING), Route::Local);
        self.send(
            id,
            Descriptor {
                guid,
                ttl,
                hops: 0,
                msg: Message::Ping(Ping::default()),
            },
        );
    }

    /// A connection is gone (closed by either side). Its routes die with it.
    pub fn remove_connection(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            if c.kind == PeerKind::Leaf && c.qrp_in.table().is_some() {
                self.up_table_dirty = true;
            }
        }
        self.dirty.remove(&id);
    }

    /// The next descriptor to write on `id`.
    pub fn poll_transmit(&mut self, id: ConnId) -> Option<Outgoing> {
        self.conns.get_mut(&id)?.queue.pop()
    }

    /// A connection that received output since the last call (so the shell can wake its writer).
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        self.dirty.pop_first()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Servent::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_refresh
    }

    /// Periodic work: expire routes, refresh the pong cache by pinging every neighbour (keep-alive too).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.routes.expire(now);
        let life = self.cfg.route_lifetime;
        self.push_routes
            .retain(|_, (_, t)| now.saturating_duration_since(*t) <= life);
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + self.cfg.pong_refresh;
        let idle = self.cfg.idle_timeout;
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && now.saturating_duration_since(c.last_rx) > idle)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            self.counters.idle_closed += 1;
            self.send_bye(id, 406, "No reply to alive pings");
        }
        if self.cfg.classic {
            // Classic servents only keep their links alive (TTL 1 pings are never relayed).
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                let guid = Guid::random(&mut self.rng);
                self.routes.insert(now, (guid, m::TYPE_PING), Route::Local);
                self.send(
                    id,
                    Descriptor {
                        guid,
                        ttl: 1,
                        hops: 0,
                        msg: Message::Ping(Ping::default()),
                    },
                );
            }
            return;
        }
        if self.up_table_dirty && self.cfg.role == Role::Ultrapeer {
            self.up_table_dirty = false;
            let ups: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.kind == PeerKind::Ultrapeer)
                .map(|(&id, _)| id)
                .collect();
            for id in ups {
                self.send_qrp_if_due(id);
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let guid = Guid::random(&mut self.rng);
            self.routes.insert(now, (guid, m::TYPE_PING), Route::Local);
            self.send(
                id,
                Descriptor {
                    guid,
                    ttl: 2,
                    hops: 0,
                    msg: Message::Ping(Ping::default()),
                },
            );
        }
    }

    /// Counts an offence of `id`; past the configured number per window the link gets its Bye.
    fn offence(&mut self, now: Instant, id: ConnId, o: Offence) {
        let (limit, code, reason) = match o {
            Offence::DupRepeat => (self.cfg.max_dup_repeats, 401, "Too many duplicates"),
            Offence::OverTtl => (self.cfg.max_over_ttl, 403, "Hops + TTL over limit"),
            Offence::BadQuery => (self.cfg.max_bad_queries, 402, "Too many bad queries"),
        };
        let window = self.cfg.kick_window;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let s = &mut c.strikes[o as usize];
        if now.saturating_duration_since(s.0) >= window {
            *s = (now, 0);
        }
        s.1 += 1;
        if s.1 > limit {
            self.counters.kicked += 1;
            self.send_bye(id, code, reason);
        }
    }

    /// A descriptor of type `ptype` from `id` had a payload we could not parse: it is ignored, and a
    /// neighbour that keeps sending malformed queries is kicked (BYE 402). Framing errors go to
    /// [`Servent::handle_decode_error`].
    pub fn handle_bad_payload(&mut self, now: Instant, id: ConnId, ptype: u8, e: &DecodeError) {
        if e.is_fatal() {
            self.handle_decode_error(id, e);
            return;
        }
        self.counters.ignored += 1;
        if ptype == m::TYPE_QUERY {
            self.offence(now, id, Offence::BadQuery);
        }
    }

    /// A frame from `id` could not be decoded. Fatal errors (oversized) answer BYE 400 and close.
    pub fn handle_decode_error(&mut self, id: ConnId, e: &DecodeError) {
        if let DecodeError::TooLarge { ptype, .. } = e {
            let reason = format!("Too large {} message", m::type_name(*ptype));
            self.send_bye(id, 400, &reason);
        } else {
            self.counters.ignored += 1;
        }
    }

    /// Starts a search; returns its GUID. Hits arrive as [`Event::Hit`].
    pub fn start_search(
        &mut self,
        now: Instant,
        criteria: &str,
        sha1: Option<[u8; 20]>,
        ttl: u8,
    ) -> Guid {
        let guid = Guid::random(&mut self.rng);
        self.routes.insert(now, (guid, m::TYPE_QUERY), Route::Local);
        let mut q = Query::new(criteria, self.cfg.firewalled);
        if let Some(s) = sha1 {
            q.ext.huge.push(sha1_urn(&s));
        }
        let d = Descriptor {
            guid,
            ttl: ttl.clamp(1, self.cfg.max_ttl),
            hops: 0,
            msg: Message::Query(q),
        };
        self.broadcast_query(None, &d);
        guid
    }

    /// Handles one descriptor received on `from`.
    pub fn handle_descriptor(&mut self, now: Instant, from: ConnId, mut d: Descriptor) {
        let Some(c) = self.conns.get(&from) else {
            return;
        };
        if c.closing {
            return;
        }
        let kind = c.kind;
        if let Some(c) = self.conns.get_mut(&from) {
            c.last_rx = now;
        }
        // Trim broadcasts to max_ttl first (gtk-gnutella's route_message), then apply the hard limit, so a
        // TTL of 200 is clamped while a message that already travelled too far is dropped.
        if matches!(d.msg, Message::Query(_) | Message::Ping(_)) {
            self.clamp(&mut d);
        }
        if d.ttl == 0 || d.ttl as u16 + d.hops as u16 > HARD_TTL_LIMIT as u16 {
            self.counters.ttl_dropped += 1;
            if d.ttl != 0 {
                self.offence(now, from, Offence::OverTtl);
            }
            return;
        }
        // A leaf never relays: a query, ping or push from a leaf that already travelled is bogus, and the
        // leaf is kicked (gtk-gnutella: BYE 414). Replies (pongs from its cache, hits) legitimately carry hops.
        if kind == PeerKind::Leaf && d.hops > 0 {
            match d.msg {
                Message::QueryHit(_) => {}
                Message::Pong(_) => {
                    self.counters.ignored += 1;
                    return;
                }
                Message::Query(_) | Message::Ping(_) | Message::Push(_) => {
                    self.counters.ignored += 1;
                    self.counters.kicked += 1;
                    self.send_bye(from, 414, "Leaf relayed traffic");
                    return;
                }
                _ => {
                    self.counters.ignored += 1;
                    return;
                }
            }
        }
        let msg = std::mem::replace(&mut d.msg, Message::Ping(Ping::default()));
        match msg {
            Message::Bye(b) => {
                if d.ttl == 1 && d.hops == 0 {
                    self.events.push_back(Event::Close {
                        conn: from,
                        reason: format!(
                            "peer said BYE {} {}",
                            b.code,
                            b.reason.lines().next().unwrap_or("")
                        ),
                    });
                    if let Some(c) = self.conns.get_mut(&from) {
                        c.closing = true;
                        c.queue.clear();
                    }
                } else {
                    self.counters.ignored += 1;
                }
            }
            Message::Qrp(u) => {
                if self.cfg.role != Role::Ultrapeer || self.cfg.classic {
                    self.counters.ignored += 1;
                    return;
                }
                let r = self
                    .conns
                    .get_mut(&from)
                    .map(|c| c.qrp_in.handle(&u))
                    .unwrap_or(Ok(false));
                match r {
                    Err(e) => self.send_bye(from, 413, &format!("QRP error: {e}")),
                    Ok(true) if kind == PeerKind::Leaf => self.up_table_dirty = true,
                    Ok(_) => {}
                }
            }
            Message::Vendor(_) | Message::Unknown { .. } => self.counters.ignored += 1,
            Message::Ping(p) => self.on_ping(now, from, d, p),
            Message::Pong(p) => self.on_pong(now, from, d, p),
            Message::Query(q) => self.on_query(now, from, d, q),
            Message::QueryHit(h) => self.on_hit(now, from, d, h),
            Message::Push(p) => self.on_push(now, from, d, p),
        }
    }

    fn send(&mut self, id: ConnId, mut desc: Descriptor) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        if c.closing {
            return false;
        }
        // A peer that announced X-Max-TTL gets broadcasts no longer than that (it would trim them anyway).
        if let (Some(max), Message::Query(_) | Message::Ping(_)) = (c.max_ttl, &desc.msg) {
            desc.ttl = desc.ttl.min(max);
        }
        let wire = desc.to_bytes();
        match c.queue.push(Outgoing { desc, wire }) {
            Pushed::Queued => {}
            Pushed::QueuedDropping(n) => self.counters.queue_dropped += n as u64,
            Pushed::DroppedNew => {
                self.counters.queue_dropped += 1;
                return false;
            }
            Pushed::Overflow => {
                self.send_bye(id, 502, "Send queue overflow");
                return false;
            }
        }
        self.dirty.insert(id);
        true
    }

    /// Queues our Bye (TTL 1, hops 0) after emptying the queue, and asks the shell to close after it.
    pub fn send_bye(&mut self, id: ConnId, code: u16, reason: &str) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing {
            return;
        }
        c.queue.clear();
        c.closing = true;
        if !c.bye_packet {
            // gtk-gnutella sends Bye only to peers that said `Bye-Packet:`; the others are just closed.
            self.events.push_back(Event::Close {
                conn: id,
                reason: format!("closing ({code} {reason}) without a Bye: the peer takes none"),
            });
            return;
        }
        let desc = Descriptor {
            guid: Guid::random(&mut self.rng),
            ttl: 1,
            hops: 0,
            msg: Message::Bye(Bye {
                code,
                reason: reason.to_owned(),
            }),
        };
        let wire = desc.to_bytes();
        c.queue.push(Outgoing { desc, wire });
        self.dirty.insert(id);
        self.events.push_back(Event::Close {
            conn: id,
            reason: format!("sent BYE {code} {reason}"),
        });
    }

    fn send_qrp_if_due(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        // Leaves send their table to their ultrapeers; ultrapeers to each other (last-hop QRP).
        if self.cfg.classic || c.kind != PeerKind::Ultrapeer {
            return;
        }
        // An ultrapeer speaks for its leaves: the table it gives other ultrapeers covers theirs too.
        let updates = if self.cfg.role == Role::Ultrapeer {
            let mut t = self.table.clone();
            for c in self.conns.values().filter(|c| c.kind == PeerKind::Leaf) {
                if let Some(lt) = c.qrp_in.table() {
                    t.merge(lt);
                }
            }
            t.to_updates(self.cfg.qrp_entry_bits, qrp::DEFAULT_INFINITY)
        } else {
            self.table
                .to_updates(self.cfg.qrp_entry_bits, qrp::DEFAULT_INFINITY)
        };
        for u in updates {
            let guid = Guid::random(&mut self.rng);
            self.send(
                id,
                Descriptor {
                    guid,
                    ttl: 1,
                    hops: 0,
                    msg: Message::Qrp(u),
                },
            );
        }
    }

    /// A (GUID, type) seen before arrived on `from`. Honest duplicates come over another link; the same
    /// link repeating itself is a duplicate flood (BYE 401 past the limit).
    fn duplicate(&mut self, now: Instant, from: ConnId, key: (Guid, u8)) {
        self.counters.duplicates += 1;
        if let Some(c) = self.conns.get_mut(&from) {
            c.duplicates += 1;
        }
        if self.routes.get(&key) == Some(Route::Conn(from)) {
            self.offence(now, from, Offence::DupRepeat);
        }
    }

    /// Trims a broadcast to max_ttl (notes §3). Returns false if it must not go further.
    fn clamp(&mut self, d: &mut Descriptor) {
        if d.ttl as u16 + d.hops as u16 > self.cfg.max_ttl as u16 {
            d.ttl = self.cfg.max_ttl.saturating_sub(d.hops).max(1);
            self.counters.ttl_clamped += 1;
        }
    }

    fn relayed(d: &Descriptor) -> Option<Descriptor> {
        (d.ttl > 1).then(|| Descriptor {
            guid: d.guid,
            ttl: d.ttl - 1,
            hops: d.hops.saturating_add(1),
            msg: d.msg.clone(),
        })
    }

    /// Our pong; with GGEP `DU` (uptime), `VC` (vendor) and, as an ultrapeer, `UP` (version, free leaf
    /// slots, free ultrapeer slots) for peers that said `GGEP:`.
    fn our_pong(&self, now: Instant, ggep: bool) -> Pong {
        let mut exts = Vec::new();
        if ggep {
            exts.push(GgepExt::int(
                "DU",
                now.saturating_duration_since(self.started).as_secs(),
            ));
            let mut vc = self.cfg.vendor.to_vec();
            vc.push(0x01);
            exts.push(GgepExt::new("VC", vc));
            if self.cfg.role == Role::Ultrapeer && !self.cfg.classic {
                let leaves = self.count(PeerKind::Leaf).min(255) as u8;
                let ups = self.count(PeerKind::Ultrapeer).min(255) as u8;
                exts.push(GgepExt::new(
                    "UP",
                    vec![
                        0,
                        self.cfg.max_leaves.saturating_sub(leaves),
                        self.cfg.max_ultrapeers.saturating_sub(ups),
                    ],
                ));
            }
        }
        Pong {
            ggep: exts,
            port: self.cfg.addr.port(),
            ip: *self.cfg.addr.ip(),
            files: self.shares.len() as u32,
            kbytes: (self.shares.iter().map(|s| s.size).sum::<u64>() / 1024) as u32,
        }
    }

    fn on_ping(&mut self, now: Instant, from: ConnId, mut d: Descriptor, p: Ping) {
        if self.cfg.classic {
            if !self
                .routes
                .insert(now, (d.guid, m::TYPE_PING), Route::Conn(from))
            {
                self.duplicate(now, from, (d.guid, m::TYPE_PING));
                return;
            }
        } else {
            let interval = self.cfg.ping_interval;
            let c = self.conns.get_mut(&from).expect("checked by caller");
            if c.last_ping_in
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
            {
                self.counters.rate_limited += 1;
                return;
            }
            c.last_ping_in = Some(now);
        }
        let reply_ttl = d.hops.saturating_add(1);
        let ggep = self.conns.get(&from).is_some_and(|c| c.ggep);
        let mut pongs = vec![(self.our_pong(now, ggep), 0u8)];
        if ggep && p.ggep.iter().any(|e| e.id == b"SCP") {
            // The pinger asks for hosts (GGEP SCP): pack the freshest of our host cache into IPP.
            let peer = self.conns.get(&from).and_then(|c| c.addr);
            let packed: Vec<SocketAddrV4> = self
                .hosts
                .iter()
                .rev()
                .filter(|&&h| Some(h) != peer)
                .filter_map(|h| match h {
                    SocketAddr::V4(v4) => Some(*v4),
                    SocketAddr::V6(_) => None,
                })
                .take(MAX_IPP_HOSTS)
                .collect();
            if !packed.is_empty() {
                pongs[0].0.ggep.push(GgepExt::ipp(&packed));
            }
        }
        if !self.cfg.classic && d.ttl >= 2 {
            // Pong caching: answer from the cache instead of forwarding the ping; the crawler ping
            // (TTL 2, hops 0) also gets our neighbours.
            let peer = self.conns.get(&from).and_then(|c| c.addr);
            for (pong, hops) in &self.pong_cache {
                let a = SocketAddr::V4(SocketAddrV4::new(pong.ip, pong.port));
                if Some(a) != peer && pongs.len() < PONG_CACHE {
                    let mut p = pong.clone();
                    if !ggep {
                        p.ggep.clear();
                    }
                    pongs.push((p, hops.saturating_add(1)));
                }
            }
        }
        for (pong, hops) in pongs {
            self.send(
                from,
                Descriptor {
                    guid: d.guid,
                    ttl: reply_ttl.max(1),
                    hops,
                    msg: Message::Pong(pong),
                },
            );
        }
        if self.cfg.classic {
            self.clamp(&mut d);
            d.msg = Message::Ping(p);
            if let Some(r) = Self::relayed(&d) {
                let ids: Vec<ConnId> = self.conns.keys().copied().filter(|&i| i != from).collect();
                for id in ids {
                    self.send(id, r.clone());
                }
            }
        }
    }

    fn on_pong(&mut self, now: Instant, from: ConnId, d: Descriptor, p: Pong) {
        let addr = SocketAddr::V4(SocketAddrV4::new(p.ip, p.port));
        self.add_hosts([addr]);
        for ext in p.ggep.iter().filter(|e| e.id == b"IPP") {
            self.add_hosts(ext.as_ipp().into_iter().map(SocketAddr::V4));
        }
        if self.cfg.classic {
            match self.routes.get(&(d.guid, m::TYPE_PING)) {
                Some(Route::Local) => {}
                Some(Route::Conn(c)) if c != from && self.conns.contains_key(&c) => {
                    let mut d = d;
                    d.msg = Message::Pong(p);
                    if let Some(r) = Self::relayed(&d) {
                        self.send(c, r);
                    }
                }
                _ => self.counters.no_route += 1,
            }
            return;
        }
        let _ = now;
        if addr == SocketAddr::V4(self.cfg.addr) {
            return;
        }
        self.pong_cache
            .retain(|(q, _)| (q.ip, q.port) != (p.ip, p.port));
        self.pong_cache.push_back((p, d.hops));
        while self.pong_cache.len() > PONG_CACHE {
            self.pong_cache.pop_front();
        }
    }

    fn matching_shares(&self, q: &Query) -> Vec<&SharedFile> {
        let sha1s = q.ext.sha1s();
        let ws = qrp::words(&q.criteria);
        self.shares
            .iter()
            .filter(|s| {
                if s.sha1.is_some_and(|h| sha1s.contains(&h)) {
                    return true;
                }
                let name = s.name.to_lowercase();
                !ws.is_empty() && ws.iter().all(|w| name.contains(w.as_str()))
            })
            .collect()
    }

    fn hits_for(&self, q: &Query) -> Vec<QueryHit> {
        if self.cfg.firewalled && q.querier_firewalled() {
            return Vec::new();
        }
        let found = self.matching_shares(q);
        let flags = if self.cfg.firewalled { hflags::PUSH } else { 0 };
        found
            .chunks(MAX_RESULTS_PER_HIT)
            .map(|chunk| QueryHit {
                port: self.cfg.addr.port(),
                ip: *self.cfg.addr.ip(),
                speed: 1000,
                results: chunk
                    .iter()
                    .map(|s| {
                        let mut ext = Extensions::default();
                        if let Some(h) = &s.sha1 {
                            ext.huge.push(sha1_urn(h));
                        }
                        if s.size > u32::MAX as u64 {
                            ext.ggep.push(GgepExt::int("LF", s.size));
                        }
                        HitResult {
                            index: s.index,
                            size: s.size.min(u32::MAX as u64) as u32,
                            name: s.name.clone(),
                            ext,
                        }
                    })
                    .collect(),
                // No GGEP BH: browse-host is not served, so it is not advertised.
                trailer: Some(Trailer::new(self.cfg.vendor, flags, &[])),
                servent: self.cfg.guid,
            })
            .collect()
    }

    fn on_query(&mut self, now: Instant, from: ConnId, mut d: Descriptor, q: Query) {
        if !self
            .routes
            .insert(now, (d.guid, m::TYPE_QUERY), Route::Conn(from))
        {
            self.duplicate(now, from, (d.guid, m::TYPE_QUERY));
            return;
        }
        let max_q = self.cfg.max_queries_per_sec;
        let c = self.conns.get_mut(&from).expect("checked by caller");
        if now.saturating_duration_since(c.query_window.0) >= Duration::from_secs(1) {
            c.query_window = (now, 0);
        }
        c.query_window.1 += 1;
        if c.query_window.1 > max_q {
            self.counters.rate_limited += 1;
            return;
        }
        self.clamp(&mut d);
        let hits = self.hits_for(&q);
        if !hits.is_empty() {
            self.counters.queries_answered += 1;
        }
        let hit_ttl = d.hops.saturating_add(5).min(HARD_TTL_LIMIT);
        for h in hits {
            self.send(
                from,
                Descriptor {
                    guid: d.guid,
                    ttl: hit_ttl,
                    hops: 0,
                    msg: Message::QueryHit(h),
                },
            );
        }
        d.msg = Message::Query(q);
        self.broadcast_query(Some(from), &d);
    }

    /// Sends a query on: the originator's copy (`from == None`) or a relayed one.
    fn broadcast_query(&mut self, from: Option<ConnId>, d: &Descriptor) {
        if self.cfg.role == Role::Leaf && !self.cfg.classic && from.is_some() {
            return;
        }
        let Message::Query(q) = &d.msg else {
            return;
        };
        if from.is_some() && q.payload_len() > MAX_FORWARD_QUERY {
            self.counters.too_big_to_relay += 1;
            return;
        }
        // The originator sends its own copy with the TTL as is; a relay decrements.
        let next = match from {
            None => Some(d.clone()),
            Some(_) => Self::relayed(d),
        };
        let mut targets = Vec::new();
        for (&id, c) in &self.conns {
            if Some(id) == from || c.closing {
                continue;
            }
            match c.kind {
                PeerKind::Classic => {
                    if let Some(n) = &next {
                        targets.push((id, n.clone()));
                    }
                }
                PeerKind::Ultrapeer => {
                    let Some(n) = &next else { continue };
                    // Last-hop QRP between ultrapeers: filter only when this copy arrives with TTL 1.
                    if n.ttl == 1 && self.cfg.role == Role::Ultrapeer {
                        if let Some(t) = c.qrp_in.table() {
                            if !t.matches(q) {
                                self.counters.qrp_filtered += 1;
                                continue;
                            }
                        }
                    }
                    targets.push((id, n.clone()));
                }
                PeerKind::Leaf => {
                    if self.cfg.role != Role::Ultrapeer {
                        continue;
                    }
                    // Leaves get a query only when their table matches, whatever its TTL.
                    match c.qrp_in.table() {
                        Some(t) if t.matches(q) => targets.push((
                            id,
                            Descriptor {
                                guid: d.guid,
                                ttl: 1,
                                hops: if from.is_some() {
                                    d.hops.saturating_add(1)
                                } else {
                                    0
                                },
                                msg: d.msg.clone(),
                            },
                        )),
                        _ => self.counters.qrp_filtered += 1,
                    }
                }
            }
        }
        for (id, n) in targets {
            if self.send(id, n) {
                self.counters.queries_forwarded += 1;
            }
        }
    }

    fn on_hit(&mut self, now: Instant, from: ConnId, d: Descriptor, h: QueryHit) {
        if h.servent != self.cfg.guid {
            self.push_routes.insert(h.servent, (from, now));
        }
        match self.routes.get(&(d.guid, m::TYPE_QUERY)) {
            Some(Route::Local) => self.events.push_back(Event::Hit {
                query: d.guid,
                hit: h,
                hops: d.hops,
            }),
            Some(Route::Conn(c)) if c != from && self.conns.contains_key(&c) => {
                let mut d = d;
                d.msg = Message::QueryHit(h);
                if d.to_bytes().len() - crate::codec::HEADER_LEN > MAX_FORWARD_HIT {
                    self.counters.too_big_to_relay += 1;
                    return;
                }
                match Self::relayed(&d) {
                    Some(r) => {
                        if self.send(c, r) {
                            self.counters.hits_routed += 1;
                        }
                    }
                    None => self.counters.ttl_dropped += 1,
                }
            }
            _ => self.counters.no_route += 1,
        }
    }

    fn on_push(&mut self, now: Instant, from: ConnId, d: Descriptor, p: Push) {
        if !self
            .routes
            .insert(now, (d.guid, m::TYPE_PUSH), Route::Conn(from))
        {
            self.duplicate(now, from, (d.guid, m::TYPE_PUSH));
            return;
        }
        if p.servent == self.cfg.guid {
            self.events.push_back(Event::Push { push: p, from });
            return;
        }
        match self.push_routes.get(&p.servent) {
            Some(&(c, _)) if c != from && self.conns.contains_key(&c) => {
                let mut d = d;
                d.msg = Message::Push(p);
                if let Some(r) = Self::relayed(&d) {
                    self.send(c, r);
                }
            }
            _ => self.counters.no_route += 1,
        }
    }

    /// Sends a Push for a file on a firewalled servent, routed by its GUID. Returns false without a route.
    pub fn send_push(&mut self, servent: Guid, index: u32, ip: Ipv4Addr, port: u16) -> bool {
        let Some(&(c, _)) = self.push_routes.get(&servent) else {
            return false;
        };
        let guid = Guid::random(&mut self.rng);
        let ttl = self.cfg.max_ttl.max(HARD_TTL_LIMIT.min(7));
        self.send(
            c,
            Descriptor {
                guid,
                ttl,
                hops: 0,
                msg: Message::Push(Push {
                    servent,
                    index,
                    ip,
                    port,
                    ggep: Vec::new(),
                }),
            },
        )
    }
}
