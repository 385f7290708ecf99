//! An in-memory Gnutella network (quinn's `Pair`, scaled up): N [`Servent`]s wired by virtual links on a
//! virtual clock. Every descriptor is encoded and decoded on its way, so the codec is exercised too.
//! Delivery goes in rounds: each [`Net::step`] delivers everything queued before it, so a flood advances one
//! hop per step, like a breadth-first search.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::Descriptor;

use super::handshake::{Link, PeerKind, Role};
use super::servent::{ConnId, Event, Servent};

/// The network.
#[derive(Debug)]
pub struct Net {
    /// The servents, by index.
    pub nodes: Vec<Servent>,
    /// (node, conn) → (peer node, peer conn).
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Virtual time.
    pub now: Instant,
    /// Descriptors delivered, by payload type.
    pub delivered: BTreeMap<u8, u64>,
    /// Bytes delivered, by payload type.
    pub delivered_bytes: BTreeMap<u8, u64>,
    /// Events each node produced (other than closes, which the net handles).
    pub events: Vec<Vec<Event>>,
    next_conn: ConnId,
}

impl Net {
    /// An empty network at time `now`.
    pub fn new(now: Instant) -> Net {
        Net {
            nodes: Vec::new(),
            links: BTreeMap::new(),
            now,
            delivered: BTreeMap::new(),
            delivered_bytes: BTreeMap::new(),
            events: Vec::new(),
            next_conn: 1,
        }
    }

    /// Adds a servent; returns its index.
    pub fn add(&mut self, s: Servent) -> usize {
        self.nodes.push(s);
        self.events.push(Vec::new());
        self.nodes.len() - 1
    }

    fn kind_of(&self, i: usize) -> PeerKind {
        let s = &self.nodes[i];
        match (s.config().classic, s.role()) {
            (true, _) => PeerKind::Classic,
            (false, Role::Ultrapeer) => PeerKind::Ultrapeer,
            (false, Role::Leaf) => PeerKind::Leaf,
        }
    }

    /// Whether `a` and `b` are linked.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.links.iter().any(|(&(x, _), &(y, _))| x == a && y == b)
    }

    /// Links `a` and `b` as if a handshake had succeeded; returns (a's conn id, b's conn id).
    pub fn connect(&mut self, a: usize, b: usize) -> (ConnId, ConnId) {
        let (ca, cb) = (self.next_conn, self.next_conn + 1);
        self.next_conn += 2;
        let link = |peer: PeerKind, addr: SocketAddr| Link {
            peer,
            become_leaf: false,
            deflate_in: false,
            deflate_out: false,
            user_agent: None,
            listen_addr: Some(addr),
            guid: None,
            try_hosts: Vec::new(),
            ggep: true,
            max_ttl: None,
            bye_packet: true,
            remote_ip: None,
        };
        let la = link(self.kind_of(b), SocketAddr::V4(self.nodes[b].config().addr));
        let lb = link(self.kind_of(a), SocketAddr::V4(self.nodes[a].config().addr));
        self.links.insert((a, ca), (b, cb));
        self.links.insert((b, cb), (a, ca));
        let now = self.now;
        self.nodes[a].add_connection(now, ca, &la);
        self.nodes[b].add_connection(now, cb, &lb);
        (ca, cb)
    }

    /// Cuts the link that `node` knows as `conn`, on both sides.
    pub fn disconnect(&mut self, node: usize, conn: ConnId) {
        if let Some((p, pc)) = self.links.remove(&(node, conn)) {
            self.links.remove(&(p, pc));
            self.nodes[p].remove_connection(pc);
        }
        self.nodes[node].remove_connection(conn);
    }

    /// The conn id `a` uses for its link to `b`.
    pub fn conn_between(&self, a: usize, b: usize) -> Option<ConnId> {
        self.links
            .iter()
            .find(|(&(x, _), &(y, _))| x == a && y == b)
            .map(|(&(_, c), _)| c)
    }

    /// Delivers everything queued now; returns how many descriptors moved.
    pub fn step(&mut self) -> usize {
        let mut moved = Vec::new();
        for (&(i, c), &(j, cj)) in &self.links {
            while let Some(o) = self.nodes[i].poll_transmit(c) {
                moved.push((j, cj, o.wire));
            }
        }
        let n = moved.len();
        for (j, cj, wire) in moved {
            let (d, used) = Descriptor::decode(&wire)
                .expect("our own encoding decodes")
                .expect("a whole frame");
            debug_assert_eq!(used, wire.len());
            *self.delivered.entry(d.msg.payload_type()).or_default() += 1;
            *self
                .delivered_bytes
                .entry(d.msg.payload_type())
                .or_default() += wire.len() as u64;
            if self.links.contains_key(&(j, cj)) {
                let now = self.now;
                self.nodes[j].handle_descriptor(now, cj, d);
            }
        }
        for i in 0..self.nodes.len() {
            while self.nodes[i].poll_dirty().is_some() {}
            while let Some(e) = self.nodes[i].poll_event() {
                match e {
                    Event::Close { conn, .. } => {
                        // Let the Bye go out first, then cut the link.
                        let mut last = Vec::new();
                        while let Some(o) = self.nodes[i].poll_transmit(conn) {
                            last.push(o);
                        }
                        if let Some(&(p, pc)) = self.links.get(&(i, conn)) {
                            for o in last {
                                *self.delivered.entry(o.desc.msg.payload_type()).or_default() += 1;
                                let now = self.now;
                                self.nodes[p].handle_descriptor(now, pc, o.desc);
                            }
                        }
                        self.disconnect(i, conn);
                        self.events[i].push(e);
                    }
                    e => self.events[i].push(e),
                }
            }
        }
        n
    }

    /// Steps until nothing moves (at most `max_steps`); returns descriptors delivered.
    pub fn run(&mut self, max_steps: usize) -> usize {
        let mut total = 0;
        for _ in 0..max_steps {
            let n = self.step();
            total += n;
            if n == 0 {
                break;
            }
        }
        total
    }

    /// Advances the clock and runs every servent's timer.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for s in &mut self.nodes {
            s.handle_timeout(now);
        }
    }

    /// Clears the delivery counters (e.g. after the overlay settles, before measuring a search).
    pub fn reset_counters(&mut self) {
        self.delivered.clear();
        self.delivered_bytes.clear();
    }

    /// Breadth-first hop distances from `src` over the current links.
    pub fn distances(&self, src: usize) -> Vec<Option<usize>> {
        let mut dist = vec![None; self.nodes.len()];
        dist[src] = Some(0);
        let mut q = std::collections::VecDeque::from([src]);
        while let Some(u) = q.pop_front() {
            for (&(x, _), &(y, _)) in &self.links {
                if x == u && dist[y].is_none() {
                    dist[y] = Some(dist[u].unwrap_or(0) + 1);
                    q.push_back(y);
                }
            }
        }
        dist
    }
}
