//! The supernode state machine (`shared/protocols/kazaa.md` §1 "SN–SN links", "Queries, up to x results,
//! result waves", §2 message table, §4 "Push"). Sans-I/O: the node layer feeds it connection events and
//! decoded packets with the current time, and carries out the [`Action`]s it returns.
//!
//! Re-created behaviour (no published authority; see the crate README):
//! - a child's 0x06 is answered first from the local index, as one 0x07 headed by this SN; if fewer than
//!   "up to x" were found it is forwarded to at most `fanout` linked SNs as a broadcast 0xC00A
//!   (9-byte header: origin SN, 2 zero bytes, hops = 1) under an id this SN allocates, with the
//!   remaining count in the first two "unknown" bytes;
//! - an SN that receives a forwarded query drops duplicates by (origin, search id), answers from its
//!   index with a unicast 0x8007 headed by itself back toward the origin, forwards further while
//!   hops < `hop_limit`, and sends one unicast 0x8008 upstream once everything below it ended;
//! - replies travel back along the reverse path; the origin relays each wave to the child unchanged
//!   (so the child sees one 0x07 per answering SN), stops at "up to x", and sends one 0x08 when all
//!   links ended, the count was reached or `search_timeout` passed;
//! - push: a child's long 0x0D addressed to this SN is relayed to the target child as the short form;
//!   addressed to another SN it goes as a unicast 0x800D to that SN if linked, else along the reverse
//!   path of that SN's result waves (each SN remembers on which link an SN's 0x8007 arrived, the way
//!   Gnutella routes PUSH back along QueryHits); with no route it is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

use super::index::{ChildInfo, ShareIndex};
use super::ConnId;
use crate::codec::message::{
    code, size_to_float, NodeEntry, Query, Reply, Stats, MAX_HOPS, MAX_NODE_LIST_ENTRIES,
};
use crate::codec::{Message, Packet, Route};

/// Kazaa 2.6's protocol version number (0x26 carries it).
pub const PROTOCOL_VERSION: u32 = 0x22;
/// How long (origin, search id) pairs are remembered for duplicate suppression.
pub const DUPLICATE_MEMORY: Duration = Duration::from_secs(60);
/// Most searches tracked at once (relayed and originated); new ones beyond this are answered locally only.
pub const MAX_TRACKED_SEARCHES: usize = 4096;
/// Most (origin, id) pairs remembered.
pub const MAX_SEEN: usize = 16_384;
/// How long the link an SN's result wave arrived on is remembered as the way to it (push routing).
pub const ROUTE_MEMORY: Duration = Duration::from_secs(600);
/// Most SNs remembered that way.
pub const MAX_ROUTES: usize = 4096;

/// Tunables.
#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// This SN's address as peers and results name it.
    pub addr: SocketAddrV4,
    /// Network name ("KaZaA").
    pub network: String,
    /// Children accepted (documented default 100–150; the demo uses ~10).
    pub max_children: usize,
    /// Files indexed per child (Kazaa SNs clipped at 51–69).
    pub max_shares_per_child: usize,
    /// Linked SNs a query is forwarded to (Kazaa's config: 6–10).
    pub fanout: usize,
    /// Hops a forwarded query may travel (giFT: packets over 6 hops are dropped).
    pub hop_limit: u8,
    /// How long a search waits for its links before 0x08.
    pub search_timeout: Duration,
    /// RNG seed (choice of links when there are more than `fanout`).
    pub seed: u64,
}

impl SupernodeConfig {
    /// Defaults for an SN at `addr`.
    pub fn new(addr: SocketAddrV4) -> Self {
        SupernodeConfig {
            addr,
            network: crate::codec::frame::NETWORK_KAZAA.to_owned(),
            max_children: 100,
            max_shares_per_child: 100,
            fanout: 6,
            hop_limit: MAX_HOPS,
            search_timeout: Duration::from_secs(5),
            seed: 0,
        }
    }
}

/// What the node layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a packet on a connection.
    Send {
        /// Where.
        conn: ConnId,
        /// What.
        packet: Packet,
    },
    /// Close a connection.
    Close {
        /// Which.
        conn: ConnId,
        /// Why (for the log).
        reason: &'static str,
    },
    /// Try a TCP connection to a child's advertised address and report the outcome with
    /// [`Supernode::connect_back_done`] (reachability, one of the promotion criteria; README).
    ConnectBack {
        /// The child.
        conn: ConnId,
        /// Its advertised ip:port.
        addr: SocketAddrV4,
    },
}

#[derive(Debug)]
struct Origin {
    child: ConnId,
    child_search_id: u16,
    remaining: u16,
    waiting: BTreeSet<ConnId>,
    deadline: Instant,
}

#[derive(Debug)]
struct Relay {
    upstream: ConnId,
    remaining: u16,
    waiting: BTreeSet<ConnId>,
    deadline: Instant,
}

/// Counters for the trace and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupernodeCounters {
    /// Forwarded queries dropped as duplicates.
    pub duplicates: u64,
    /// Forwarded queries not sent further because of the hop limit.
    pub hop_limited: u64,
    /// Queries answered (local or forwarded).
    pub queries: u64,
}

/// The SN.
#[derive(Debug)]
pub struct Supernode {
    cfg: SupernodeConfig,
    index: ShareIndex,
    peers: BTreeMap<ConnId, SocketAddrV4>,
    origins: HashMap<u16, Origin>,
    relays: HashMap<(SocketAddrV4, u16), Relay>,
    seen: HashMap<(SocketAddrV4, u16), Instant>,
    seen_order: VecDeque<((SocketAddrV4, u16), Instant)>,
    next_id: u16,
    rng: StdRng,
    counters: SupernodeCounters,
    /// Answering SN → (link its last wave arrived on, when): the reverse path for pushes.
    routes: HashMap<SocketAddrV4, (ConnId, Instant)>,
}

fn send(conn: ConnId, route: Option<Route>, message: Message) -> Action {
    Action::Send {
        conn,
        packet: Packet { route, message },
    }
}

impl Supernode {
    /// A fresh SN.
    pub fn new(cfg: SupernodeConfig) -> Self {
        Supernode {
            index: ShareIndex::new(cfg.max_shares_per_child),
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            peers: BTreeMap::new(),
            origins: HashMap::new(),
            relays: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            next_id: 1,
            counters: SupernodeCounters::default(),
            routes: HashMap::new(),
        }
    }

    /// The index (for stats and tests).
    pub fn index(&self) -> &ShareIndex {
        &self.index
    }

    /// Counters.
    pub fn counters(&self) -> SupernodeCounters {
        self.counters
    }

    /// Whether `conn` is a link to another SN.
    pub fn is_peer(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// This SN's address.
    pub fn addr(&self) -> SocketAddrV4 {
        self.cfg.addr
    }

    /// Load in percent of `max_children`, as the node list carries it.
    pub fn load(&self) -> u8 {
        let max = self.cfg.max_children.max(1);
        (self.index.child_count() * 100 / max).min(100) as u8
    }

    /// The node list this SN hands out: itself and its linked SNs, at most 200 entries.
    pub fn node_list(&self) -> Vec<NodeEntry> {
        let mut v = vec![NodeEntry {
            addr: self.cfg.addr,
            last_seen: 0,
            load: self.load(),
        }];
        // Linked SNs' loads are not known here; 50 % says "unknown" without ranking them first or last.
        v.extend(self.peers.values().map(|&addr| NodeEntry {
            addr,
            last_seen: 0,
            load: 50,
        }));
        v.truncate(MAX_NODE_LIST_ENTRIES);
        v
    }

    /// The 0x09 this SN sends: its own children and files (it knows no global figures).
    pub fn stats(&self) -> Stats {
        let (mantissa, exponent) = size_to_float(self.index.total_size());
        Stats {
            users: self.index.child_count() as u32,
            files: self.index.file_count() as u32,
            mantissa,
            exponent,
            ..Stats::default()
        }
    }

    /// A child finished the handshake from `observed`. Returns the login burst (§2 step 4: protocol
    /// version, node list, external IP, stats, network name), or a close when the SN is full.
    pub fn child_connected(&mut self, conn: ConnId, observed: SocketAddrV4) -> Vec<Action> {
        if self.index.child_count() >= self.cfg.max_children {
            return vec![Action::Close {
                conn,
                reason: "supernode full",
            }];
        }
        self.index.set_child(
            conn,
            ChildInfo {
                addr: SocketAddrV4::new(*observed.ip(), 0),
                bandwidth: 0,
                user: String::new(),
            },
        );
        vec![
            send(conn, None, Message::ProtocolVersion(PROTOCOL_VERSION)),
            send(conn, None, Message::NodeList(self.node_list())),
            send(conn, None, Message::ExternalIp(*observed.ip())),
            send(conn, None, Message::Stats(self.stats())),
            send(conn, None, Message::NetworkName(self.cfg.network.clone())),
        ]
    }

    /// The outcome of an [`Action::ConnectBack`]: when the SN reached the child at the address it still
    /// advertises, the child is told so with a 0x15 carrying that address.
    pub fn connect_back_done(&mut self, conn: ConnId, addr: SocketAddrV4, ok: bool) -> Vec<Action> {
        match self.index.child(conn) {
            Some(c) if ok && c.addr == addr => vec![send(conn, None, Message::Reachability(addr))],
            _ => Vec::new(),
        }
    }

    /// A linked SN's session is up.
    pub fn peer_connected(&mut self, conn: ConnId, addr: SocketAddrV4) {
        self.peers.insert(conn, addr);
    }

    /// A session ended (child or peer).
    pub fn disconnected(&mut self, conn: ConnId) -> Vec<Action> {
        self.index.remove_child(conn);
        self.origins.retain(|_, o| o.child != conn);
        self.relays.retain(|_, r| r.upstream != conn);
        self.routes.retain(|_, (via, _)| *via != conn);
        let mut out = Vec::new();
        if self.peers.remove(&conn).is_some() {
            self.link_ended(conn, &mut out);
        }
        out
    }

    fn link_ended(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let ids: Vec<u16> = self
            .origins
            .iter()
            .filter(|(_, o)| o.waiting.contains(&conn))
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.end_from_link(id, conn, out);
        }
        let keys: Vec<_> = self
            .relays
            .iter()
            .filter(|(_, r)| r.waiting.contains(&conn))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.relay_end_from_link(key, conn, out);
        }
    }

    /// Periodic work: searches past their deadline end, old duplicate records are forgotten.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let expired: Vec<u16> = self
            .origins
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            self.finish_origin(id, &mut out);
        }
        let expired: Vec<_> = self
            .relays
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.finish_relay(key, &mut out);
        }
        while let Some(&(key, at)) = self.seen_order.front() {
            if now.duration_since(at) < DUPLICATE_MEMORY && self.seen_order.len() <= MAX_SEEN {
                break;
            }
            self.seen_order.pop_front();
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
        out
    }

    fn remember(&mut self, key: (SocketAddrV4, u16), now: Instant) -> bool {
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        self.seen_order.push_back((key, now));
        if self.seen_order.len() > MAX_SEEN {
            if let Some((old, at)) = self.seen_order.pop_front() {
                if self.seen.get(&old) == Some(&at) {
                    self.seen.remove(&old);
                }
            }
        }
        true
    }

    /// A packet from a child.
    pub fn child_message(&mut self, conn: ConnId, packet: Packet, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if packet.route.is_some() {
            out.push(Action::Close {
                conn,
                reason: "routed packet from a child",
            });
            return out;
        }
        match packet.message {
            Message::UserInfo {
                addr,
                bandwidth,
                user,
            } => {
                let observed = self
                    .index
                    .child(conn)
                    .map(|c| *c.addr.ip())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                // An ON that does not know its address sends 0.0.0.0; advertise the one we saw.
                let ip = if addr.ip().is_unspecified() {
                    observed
                } else {
                    *addr.ip()
                };
                let advertised = SocketAddrV4::new(ip, addr.port());
                self.index.set_child(
                    conn,
                    ChildInfo {
                        addr: advertised,
                        bandwidth,
                        user,
                    },
                );
                // Port 0 says "firewalled": nothing to probe. A repeated 0x02 (§2: the client sends it
                // again after 0x2C) probes again, which is harmless and catches a changed port.
                if advertised.port() != 0 {
                    out.push(Action::ConnectBack {
                        conn,
                        addr: advertised,
                    });
                }
            }
            Message::Share(file) => {
                if let Err(e) = self.index.share(conn, file) {
                    tracing::debug!(?conn, error = %e, "share not indexed");
                }
            }
            Message::Unshare(file) => {
                self.index.unshare(conn, &file.hash);
            }
            Message::Query(q) => self.child_query(conn, q, now, &mut out),
            Message::PushRequest {
                push_id,
                requester,
                target,
                target_sn,
                target_user,
            } => {
                if target_sn == self.cfg.addr {
                    if let Some(child) = self.index.child_by_addr(target, &target_user) {
                        out.push(send(child, None, Message::PushRelay { push_id, requester }));
                    }
                } else if let Some(peer) = self.next_hop(target_sn, now) {
                    let route = Route::Unicast {
                        src: self.cfg.addr,
                        dst: target_sn,
                        hops: 1,
                    };
                    let m = Message::PushRequest {
                        push_id,
                        requester,
                        target,
                        target_sn,
                        target_user,
                    };
                    out.push(send(peer, Some(route), m));
                }
            }
            Message::NetworkName(_) | Message::ProtocolVersion(_) | Message::Unknown { .. } => {}
            other => tracing::debug!(?conn, msg = other.name(), "ignored from child"),
        }
        out
    }

    /// Remembers that `sn`'s waves arrive on `link`.
    fn learn_route(&mut self, sn: SocketAddrV4, link: ConnId, now: Instant) {
        if sn == self.cfg.addr {
            return;
        }
        if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&sn) {
            self.routes
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < ROUTE_MEMORY);
            if self.routes.len() >= MAX_ROUTES {
                return;
            }
        }
        self.routes.insert(sn, (link, now));
    }

    /// The link toward SN `sn`: a direct link, else the one its last result wave came in on.
    fn next_hop(&self, sn: SocketAddrV4, now: Instant) -> Option<ConnId> {
        if let Some((&peer, _)) = self.peers.iter().find(|(_, a)| **a == sn) {
            return Some(peer);
        }
        self.routes
            .get(&sn)
            .filter(|(via, t)| {
                now.saturating_duration_since(*t) < ROUTE_MEMORY && self.peers.contains_key(via)
            })
            .map(|(via, _)| *via)
    }

    fn alloc_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX as u32 {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.origins.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn pick_links(&mut self, except: Option<ConnId>) -> Vec<ConnId> {
        let mut links: Vec<ConnId> = self
            .peers
            .keys()
            .copied()
            .filter(|c| Some(*c) != except)
            .collect();
        if links.len() > self.cfg.fanout {
            links.shuffle(&mut self.rng);
            links.truncate(self.cfg.fanout);
            links.sort();
        }
        links
    }

    fn child_query(&mut self, conn: ConnId, q: Query, now: Instant, out: &mut Vec<Action>) {
        self.counters.queries += 1;
        let child_id = q.search_id;
        let local = self.index.search(
            &q,
            usize::from(q.max_results),
            &self.cfg.network,
            Some(conn),
        );
        let remaining = q.max_results - local.len() as u16;
        if !local.is_empty() {
            let reply = Reply {
                sn: self.cfg.addr,
                search_id: child_id,
                results: local,
            };
            out.push(send(conn, None, Message::Reply(reply)));
        }
        let links = if remaining > 0 && self.origins.len() < MAX_TRACKED_SEARCHES {
            self.pick_links(None)
        } else {
            Vec::new()
        };
        let id = if links.is_empty() {
            None
        } else {
            self.alloc_id()
        };
        let Some(id) = id else {
            out.push(send(
                conn,
                None,
                Message::QueryEnd {
                    search_id: child_id,
                },
            ));
            return;
        };
        self.remember((self.cfg.addr, id), now);
        let [hi, lo] = remaining.to_be_bytes();
        let fwd = Message::ForwardQuery {
            code: code::FORWARD_QUERY,
            unknown: [hi, lo, 0, 0],
            query: Query {
                max_results: 0,
                search_id: id,
                ..q
            },
        };
        let route = Route::Broadcast {
            src: self.cfg.addr,
            unknown: [0, 0],
            hops: 1,
        };
        for &l in &links {
            out.push(send(l, Some(route), fwd.clone()));
        }
        self.origins.insert(
            id,
            Origin {
                child: conn,
                child_search_id: child_id,
                remaining,
                waiting: links.into_iter().collect(),
                deadline: now + self.cfg.search_timeout,
            },
        );
    }

    /// A packet from a linked SN.
    pub fn peer_message(&mut self, conn: ConnId, packet: Packet, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (packet.route, packet.message) {
            (
                Some(Route::Broadcast { src, hops, .. }),
                Message::ForwardQuery { unknown, query, .. },
            ) => {
                self.forwarded_query(conn, src, hops, unknown, query, now, &mut out);
            }
            (Some(Route::Unicast { dst, hops, src }), Message::Reply(reply)) => {
                self.learn_route(src, conn, now);
                if dst == self.cfg.addr {
                    self.origin_reply(conn, reply, &mut out);
                } else if hops < MAX_HOPS {
                    let key = (dst, reply.search_id);
                    if let Some(relay) = self.relays.get_mut(&key) {
                        let n = reply.results.len().min(usize::from(relay.remaining));
                        relay.remaining -= n as u16;
                        let mut reply = reply;
                        reply.results.truncate(n);
                        if n > 0 {
                            let up = relay.upstream;
                            out.push(send(
                                up,
                                Some(Route::Unicast {
                                    src,
                                    dst,
                                    hops: hops + 1,
                                }),
                                Message::Reply(reply),
                            ));
                        }
                    }
                }
            }
            (Some(Route::Unicast { dst, .. }), Message::QueryEnd { search_id }) => {
                if dst == self.cfg.addr {
                    self.end_from_link(search_id, conn, &mut out);
                } else {
                    self.relay_end_from_link((dst, search_id), conn, &mut out);
                }
            }
            (
                Some(Route::Unicast { dst, hops, src }),
                Message::PushRequest {
                    push_id,
                    requester,
                    target,
                    target_sn,
                    target_user,
                },
            ) => {
                if dst == self.cfg.addr {
                    if let Some(child) = self.index.child_by_addr(target, &target_user) {
                        out.push(send(child, None, Message::PushRelay { push_id, requester }));
                    }
                } else if hops < MAX_HOPS {
                    if let Some(peer) = self.next_hop(dst, now).filter(|&p| p != conn) {
                        let m = Message::PushRequest {
                            push_id,
                            requester,
                            target,
                            target_sn,
                            target_user,
                        };
                        out.push(send(
                            peer,
                            Some(Route::Unicast {
                                src,
                                dst,
                                hops: hops + 1,
                            }),
                            m,
                        ));
                    }
                }
            }
            (
                _,
                Message::NodeList(_)
                | Message::Stats(_)
                | Message::NetworkName(_)
                | Message::ProtocolVersion(_),
            ) => {}
            (_, m) => tracing::debug!(?conn, msg = m.name(), "ignored from peer"),
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn forwarded_query(
        &mut self,
        conn: ConnId,
        origin: SocketAddrV4,
        hops: u8,
        unknown: [u8; 4],
        q: Query,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let key = (origin, q.search_id);
        let back = Route::Unicast {
            src: self.cfg.addr,
            dst: origin,
            hops: 1,
        };
        let end = Message::QueryEnd {
            search_id: q.search_id,
        };
        if origin == self.cfg.addr || !self.remember(key, now) || self.relays.contains_key(&key) {
            self.counters.duplicates += 1;
            out.push(send(conn, Some(back), end));
            return;
        }
        self.counters.queries += 1;
        let mut remaining = u16::from_be_bytes([unknown[0], unknown[1]]);
        let local = self
            .index
            .search(&q, usize::from(remaining), &self.cfg.network, None);
        remaining -= local.len() as u16;
        if !local.is_empty() {
            let reply = Reply {
                sn: self.cfg.addr,
                search_id: q.search_id,
                results: local,
            };
            out.push(send(conn, Some(back), Message::Reply(reply)));
        }
        let mut links = Vec::new();
        if remaining > 0 && self.relays.len() < MAX_TRACKED_SEARCHES {
            if hops >= self.cfg.hop_limit.min(MAX_HOPS) {
                self.counters.hop_limited += 1;
            } else {
                links = self.pick_links(Some(conn));
            }
        }
        if links.is_empty() {
            out.push(send(conn, Some(back), end));
            return;
        }
        let [hi, lo] = remaining.to_be_bytes();
        let fwd = Message::ForwardQuery {
            code: code::FORWARD_QUERY,
            unknown: [hi, lo, 0, 0],
            query: q,
        };
        for &l in &links {
            out.push(send(
                l,
                Some(Route::Broadcast {
                    src: origin,
                    unknown: [0, 0],
                    hops: hops + 1,
                }),
                fwd.clone(),
            ));
        }
        self.relays.insert(
            key,
            Relay {
                upstream: conn,
                remaining,
                waiting: links.into_iter().collect(),
                deadline: now + self.cfg.search_timeout,
            },
        );
    }

    fn origin_reply(&mut self, conn: ConnId, mut reply: Reply, out: &mut Vec<Action>) {
        let id = reply.search_id;
        let Some(o) = self.origins.get_mut(&id) else {
            return;
        };
        if !o.waiting.contains(&conn) {
            return;
        }
        let n = reply.results.len().min(usize::from(o.remaining));
        reply.results.truncate(n);
        o.remaining -= n as u16;
        reply.search_id = o.child_search_id;
        let (child, done) = (o.child, o.remaining == 0);
        if n > 0 {
            out.push(send(child, None, Message::Reply(reply)));
        }
        if done {
            self.finish_origin(id, out);
        }
    }

    fn end_from_link(&mut self, id: u16, conn: ConnId, out: &mut Vec<Action>) {
        let Some(o) = self.origins.get_mut(&id) else {
            return;
        };
        o.waiting.remove(&conn);
        if o.waiting.is_empty() {
            self.finish_origin(id, out);
        }
    }

    fn finish_origin(&mut self, id: u16, out: &mut Vec<Action>) {
        if let Some(o) = self.origins.remove(&id) {
            out.push(send(
                o.child,
                None,
                Message::QueryEnd {
                    search_id: o.child_search_id,
                },
            ));
        }
    }

    fn relay_end_from_link(
        &mut self,
        key: (SocketAddrV4, u16),
        conn: ConnId,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.relays.get_mut(&key) else {
            return;
        };
        r.waiting.remove(&conn);
        if r.waiting.is_empty() {
            self.finish_relay(key, out);
        }
    }

    fn finish_relay(&mut self, key: (SocketAddrV4, u16), out: &mut Vec<Action>) {
        if let Some(r) = self.relays.remove(&key) {
            let route = Route::Unicast {
                src: self.cfg.addr,
                dst: key.0,
                hops: 1,
            };
            out.push(send(
                r.upstream,
                Some(route),
                Message::QueryEnd { search_id: key.1 },
            ));
        }
    }
}
