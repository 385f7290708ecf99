//! The one stats record format of p2p-lab.
//!
//! Every node (Napster server and client, Gnutella servent, KaZaA node, tracker, BitTorrent peer) counts the
//! messages and bytes it sends and receives **by message type**, its transfers and its errors in a [`Stats`]
//! handle, and writes a [`StatsSnapshot`] as JSON on exit and on request (SIGUSR1, see [`crate::daemon`]).
//! The lab reads these files to compare the systems on the same figures, so the field names here are a
//! contract: add fields, never rename them, and bump [`SCHEMA_VERSION`] if a meaning changes.
//!
//! Message-type names are the protocol's own short names (`"query"`, `"queryhit"`, `"200"`, `"announce"`,
//! `"piece"`, ...). The `control` flag of a message type says whether it is signalling (searches, pings,
//! announces) or payload (file bytes), so the lab can report "control messages and bytes per search".
//!
//! Overlay links: a node calls [`Stats::link_up`] when an overlay connection is established (Gnutella
//! servent link, KaZaA ON→SN or SN↔SN session, Napster client↔server session, BitTorrent peer wire) and
//! [`Stats::link_down`] when it closes; file transfers (HTTP downloads, Napster GET/SEND) are not overlay
//! links. The snapshot lists the links held now ([`StatsSnapshot::neighbours`]) and every link held at
//! some time since the start ([`StatsSnapshot::neighbours_seen`], at most [`MAX_NEIGHBOURS_SEEN`]). For an
//! outgoing link the address is the one dialled (the remote's listening address), so a reader can build
//! the undirected overlay from the out-links alone; for an incoming link it is the remote socket address.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the JSON layout written by [`Stats::write_json`].
pub const SCHEMA_VERSION: u32 = 1;

/// Counters for one message type, in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounters {
    /// Messages of this type received.
    pub in_count: u64,
    /// Bytes received in messages of this type, headers included (what crossed the wire).
    pub in_bytes: u64,
    /// Messages of this type sent.
    pub out_count: u64,
    /// Bytes sent in messages of this type, headers included.
    pub out_bytes: u64,
}

/// Counters for file transfers (uploads serve our files, downloads fetch others').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCounters {
    /// Upload requests accepted (a range request counts once).
    pub uploads_started: u64,
    /// Uploads that sent every byte they promised.
    pub uploads_completed: u64,
    /// Uploads cut short (peer went away, I/O error).
    pub uploads_failed: u64,
    /// Requests refused because every upload slot was busy (HTTP 503, queue full...).
    pub uploads_refused: u64,
    /// File payload bytes sent.
    pub upload_bytes: u64,
    /// Downloads started (one per file, however many sources).
    pub downloads_started: u64,
    /// Downloads finished and verified.
    pub downloads_completed: u64,
    /// Downloads that gave up or failed verification.
    pub downloads_failed: u64,
    /// File payload bytes received (including bytes later thrown away as corrupt).
    pub download_bytes: u64,
}

/// Which side opened an overlay link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkDir {
    /// We dialled the remote (its listening address is the key).
    Out,
    /// The remote dialled us (its socket address is the key).
    In,
}

impl LinkDir {
    /// `"out"` or `"in"`, as written in [`Neighbour::dir`].
    pub fn as_str(self) -> &'static str {
        match self {
            LinkDir::Out => "out",
            LinkDir::In => "in",
        }
    }
}

/// One overlay link of a node, as written in the stats file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Outgoing: the address we dialled (the remote's listening address); incoming: the remote socket
    /// address.
    pub addr: String,
    /// `"out"` (we dialled) or `"in"` (the remote dialled us).
    pub dir: String,
    /// The remote's role as this node knows it: `ultrapeer`, `leaf`, `classic`, `supernode`,
    /// `ordinary`, `server`, `client`, `peer`, ...
    pub kind: String,
}

/// Links held at once that a record keeps; beyond it [`Stats::link_up`] is counted, not stored (nodes
/// cap their connections far below this).
pub const MAX_NEIGHBOURS: usize = 65_536;

/// Distinct links remembered in [`StatsSnapshot::neighbours_seen`]; later ones are only counted in
/// [`StatsSnapshot::neighbours_unrecorded`].
pub const MAX_NEIGHBOURS_SEEN: usize = 1024;

/// What a node writes as JSON: the shared record format of the lab.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Layout version, [`SCHEMA_VERSION`].
    pub schema: u32,
    /// System: `napster`, `gnutella`, `kazaa`, `bittorrent`, `tracker`, ...
    pub proto: String,
    /// Role in that system: `server`, `client`, `ultrapeer`, `leaf`, `supernode`, `ordinary`, `seeder`, ...
    pub role: String,
    /// A name for this node (nick, servent GUID, peer id, listen address), unique within a lab run.
    pub node: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Time since start when the snapshot was taken, in milliseconds.
    pub uptime_ms: u64,
    /// Per message type counters, keyed by the protocol's name for the type.
    pub messages: BTreeMap<String, MessageCounters>,
    /// Sum over the message types marked as control (signalling) traffic.
    pub control: MessageCounters,
    /// File transfers.
    pub transfers: TransferCounters,
    /// Errors by kind (`decode`, `timeout`, `bad_range`, `hash_mismatch`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Current values (open connections, peers, shared files, pending searches...).
    pub gauges: BTreeMap<String, i64>,
    /// Protocol-specific extras (choke decisions, per-peer bytes, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The overlay links held when the snapshot was taken, sorted by address.
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
    /// Every overlay link held at some time since the start (distinct address and direction, first
    /// [`MAX_NEIGHBOURS_SEEN`]), sorted by address: the union over the node's life.
    #[serde(default)]
    pub neighbours_seen: Vec<Neighbour>,
    /// Links not stored because a bound ([`MAX_NEIGHBOURS`], [`MAX_NEIGHBOURS_SEEN`]) was reached.
    #[serde(default)]
    pub neighbours_unrecorded: u64,
}

impl StatsSnapshot {
    /// Reads a snapshot written by [`Stats::write_json`].
    pub fn read_json(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// Total messages and bytes over every type.
    pub fn total(&self) -> MessageCounters {
        let mut t = MessageCounters::default();
        for c in self.messages.values() {
            add(&mut t, c);
        }
        t
    }
}

fn add(t: &mut MessageCounters, c: &MessageCounters) {
    t.in_count += c.in_count;
    t.in_bytes += c.in_bytes;
    t.out_count += c.out_count;
    t.out_bytes += c.out_bytes;
}

#[derive(Default)]
struct State {
    messages: HashMap<Cow<'static, str>, (MessageCounters, bool)>,
    transfers: TransferCounters,
    errors: HashMap<Cow<'static, str>, u64>,
    gauges: BTreeMap<String, i64>,
    extra: BTreeMap<String, serde_json::Value>,
    /// Links held now, by remote address.
    links: BTreeMap<String, Neighbour>,
    /// Links held at some time, by (remote address, direction).
    seen: BTreeMap<(String, &'static str), Neighbour>,
    unrecorded: u64,
}

struct Inner {
    proto: String,
    role: Mutex<String>,
    node: Mutex<String>,
    started_unix_ms: u64,
    started: Instant,
    state: Mutex<State>,
}

/// An overlay link held in the record until this guard is dropped ([`Stats::link_guard`]).
#[must_use = "the link is taken down when the guard is dropped"]
pub struct LinkGuard {
    stats: Stats,
    addr: String,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        self.stats.link_down(&self.addr);
    }
}

/// A cheap-to-clone handle on one node's counters. All methods take `&self`.
///
/// Message types are counted as *control* traffic unless [`Stats::msg_in_data`]/[`Stats::msg_out_data`]
/// is used (file payload carried inside the protocol, e.g. BitTorrent `piece`).
#[derive(Clone)]
pub struct Stats(Arc<Inner>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("proto", &self.0.proto)
            .finish_non_exhaustive()
    }
}

impl Stats {
    /// A new, zeroed record for a node of system `proto` in role `role`, named `node`.
    pub fn new(proto: &str, role: &str, node: &str) -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Stats(Arc::new(Inner {
            proto: proto.to_owned(),
            role: Mutex::new(role.to_owned()),
            node: Mutex::new(node.to_owned()),
            started_unix_ms,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters inconsistent in a way that matters.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the role (a Gnutella servent becoming a leaf, a KaZaA node promoted to supernode).
    pub fn set_role(&self, role: &str) {
        *self.0.role.lock().unwrap_or_else(|e| e.into_inner()) = role.to_owned();
    }

    /// Changes the node name (e.g. once the listen address or nick is known).
    pub fn set_node(&self, node: &str) {
        *self.0.node.lock().unwrap_or_else(|e| e.into_inner()) = node.to_owned();
    }

    fn msg(&self, kind: impl Into<Cow<'static, str>>, bytes: usize, out: bool, control: bool) {
        self.msgs(kind, 1, bytes, out, control)
    }

    fn msgs(
        &self,
        kind: impl Into<Cow<'static, str>>,
        count: u64,
        bytes: usize,
        out: bool,
        control: bool,
    ) {
        let kind = kind.into();
        let mut st = self.state();
        let entry = match st.messages.get_mut(kind.as_ref()) {
            Some(e) => e,
            None => st
                .messages
                .entry(kind)
                .or_insert((MessageCounters::default(), control)),
        };
        if out {
            entry.0.out_count += count;
            entry.0.out_bytes += bytes as u64;
        } else {
            entry.0.in_count += count;
            entry.0.in_bytes += bytes as u64;
        }
    }

    /// Counts one received control message of type `kind` that took `bytes` on the wire.
    pub fn msg_in(&self, kind: impl Into<Cow<'static, str>>, bytes: usize) {
        self.msg(kind, bytes, false, true)
    }

    /// Counts one sent control message of type `kind` that took `bytes` on the wire.
    pub fn msg_out(&self, kind: impl Into<Cow<'static, str>>, bytes: usize) {
        self.msg(kind, bytes, true, true)
    }

    /// Counts `count` sent control messages of type `kind` that took `bytes` on the wire together (a
    /// batch written at once), under one lock acquisition instead of one per message.
    pub fn msg_out_many(&self, kind: impl Into<Cow<'static, str>>, count: u64, bytes: usize) {
        self.msgs(kind, count, bytes, true, true)
    }

    /// Counts one received message that carries file payload (not control traffic).
    pub fn msg_in_data(&self, kind: impl Into<Cow<'static, str>>, bytes: usize) {
        self.msg(kind, bytes, false, false)
    }

    /// Counts one sent message that carries file payload (not control traffic).
    pub fn msg_out_data(&self, kind: impl Into<Cow<'static, str>>, bytes: usize) {
        self.msg(kind, bytes, true, false)
    }

    /// Counts one error of kind `kind`.
    pub fn error(&self, kind: impl Into<Cow<'static, str>>) {
        let kind = kind.into();
        let mut st = self.state();
        match st.errors.get_mut(kind.as_ref()) {
            Some(n) => *n += 1,
            None => {
                st.errors.insert(kind, 1);
            }
        }
    }

    /// Applies `f` to the transfer counters under the lock.
    pub fn transfers(&self, f: impl FnOnce(&mut TransferCounters)) {
        f(&mut self.state().transfers)
    }

    /// Sets a gauge (current value) such as `connections` or `shared_files`.
    pub fn set_gauge(&self, name: &str, value: i64) {
        self.state().gauges.insert(name.to_owned(), value);
    }

    /// Adds `delta` to a gauge.
    pub fn add_gauge(&self, name: &str, delta: i64) {
        *self.state().gauges.entry(name.to_owned()).or_insert(0) += delta;
    }

    /// Sets a protocol-specific extra value.
    pub fn set_extra(&self, key: &str, value: serde_json::Value) {
        self.state().extra.insert(key.to_owned(), value);
    }

    /// An overlay link to `addr` is up (see the module doc for which address). `kind` is the remote's
    /// role as we know it. A second `link_up` for the same address replaces the first.
    pub fn link_up(&self, addr: impl std::fmt::Display, dir: LinkDir, kind: &str) {
        let n = Neighbour {
            addr: addr.to_string(),
            dir: dir.as_str().to_owned(),
            kind: kind.to_owned(),
        };
        let mut st = self.state();
        let key = (n.addr.clone(), dir.as_str());
        if st.seen.len() < MAX_NEIGHBOURS_SEEN || st.seen.contains_key(&key) {
            st.seen.insert(key, n.clone());
        } else {
            st.unrecorded += 1;
        }
        if st.links.len() < MAX_NEIGHBOURS || st.links.contains_key(&n.addr) {
            st.links.insert(n.addr.clone(), n);
        } else {
            st.unrecorded += 1;
        }
    }

    /// The overlay link to `addr` is down (no-op when there is none).
    pub fn link_down(&self, addr: impl std::fmt::Display) {
        self.state().links.remove(&addr.to_string());
    }

    /// [`Stats::link_up`], and a guard that calls [`Stats::link_down`] when dropped, for a connection
    /// with many ways to end. (A newer link to the same address is taken down with it: nodes hold one
    /// link per remote address.)
    pub fn link_guard(&self, addr: impl std::fmt::Display, dir: LinkDir, kind: &str) -> LinkGuard {
        let addr = addr.to_string();
        self.link_up(&addr, dir, kind);
        LinkGuard {
            stats: self.clone(),
            addr,
        }
    }

    /// A consistent copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let st = self.state();
        let mut messages = BTreeMap::new();
        let mut control = MessageCounters::default();
        for (k, (c, is_control)) in &st.messages {
            messages.insert(k.to_string(), *c);
            if *is_control {
                add(&mut control, c);
            }
        }
        StatsSnapshot {
            schema: SCHEMA_VERSION,
            proto: self.0.proto.clone(),
            role: self
                .0
                .role
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            node: self
                .0
                .node
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            started_unix_ms: self.0.started_unix_ms,
            uptime_ms: self.0.started.elapsed().as_millis() as u64,
            messages,
            control,
            transfers: st.transfers,
            errors: st.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            gauges: st.gauges.clone(),
            extra: st.extra.clone(),
            neighbours: st.links.values().cloned().collect(),
            neighbours_seen: st.seen.values().cloned().collect(),
            neighbours_unrecorded: st.unrecorded,
        }
    }

    /// Writes the snapshot as pretty JSON to `path`, atomically (temporary file + rename), so a reader
    /// never sees half a file.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let snap = self.snapshot();
        let json = serde_json::to_vec_pretty(&snap).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_counts_as_many_messages() {
        let s = Stats::new("napster", "server", "n1");
        s.msg_out("201", 50);
        s.msg_out_many("201", 3, 150);
        let snap = s.snapshot();
        assert_eq!(snap.messages["201"].out_count, 4);
        assert_eq!(snap.messages["201"].out_bytes, 200);
        assert_eq!(snap.control.out_count, 4);
    }

    #[test]
    fn counts_by_type_and_direction() {
        let s = Stats::new("gnutella", "leaf", "n1");
        s.msg_in("query", 40);
        s.msg_in("query", 60);
        s.msg_out("queryhit", 100);
        s.msg_out_data("piece", 16_397);
        s.error("decode");
        s.error("decode");
        s.transfers(|t| {
            t.uploads_started += 1;
            t.upload_bytes += 5;
        });
        s.set_gauge("connections", 3);
        s.add_gauge("connections", -1);
        let snap = s.snapshot();
        assert_eq!(snap.messages["query"].in_count, 2);
        assert_eq!(snap.messages["query"].in_bytes, 100);
        assert_eq!(snap.messages["queryhit"].out_bytes, 100);
        assert_eq!(
            snap.control.out_count, 1,
            "payload messages are not control traffic"
        );
        assert_eq!(snap.total().out_count, 2);
        assert_eq!(snap.errors["decode"], 2);
        assert_eq!(snap.transfers.upload_bytes, 5);
        assert_eq!(snap.gauges["connections"], 2);
        assert_eq!(snap.schema, SCHEMA_VERSION);
    }

    #[test]
    fn links_come_and_go_and_the_union_stays() {
        let s = Stats::new("gnutella", "leaf", "n1");
        let up: std::net::SocketAddr = "127.0.0.1:6346".parse().unwrap();
        s.link_up(up, LinkDir::Out, "ultrapeer");
        s.link_up("127.0.0.1:50000", LinkDir::In, "leaf");
        let snap = s.snapshot();
        assert_eq!(
            snap.neighbours,
            vec![
                Neighbour {
                    addr: "127.0.0.1:50000".into(),
                    dir: "in".into(),
                    kind: "leaf".into()
                },
                Neighbour {
                    addr: "127.0.0.1:6346".into(),
                    dir: "out".into(),
                    kind: "ultrapeer".into()
                },
            ]
        );
        s.link_down(up);
        s.link_down("127.0.0.9:1");
        let snap = s.snapshot();
        assert_eq!(snap.neighbours.len(), 1);
        assert_eq!(snap.neighbours[0].addr, "127.0.0.1:50000");
        assert_eq!(
            snap.neighbours_seen.len(),
            2,
            "the union keeps the link that went down"
        );
        // The same link again is one entry, with the kind learnt last.
        s.link_up(up, LinkDir::Out, "leaf");
        let snap = s.snapshot();
        assert_eq!(snap.neighbours.len(), 2);
        assert_eq!(snap.neighbours_seen.len(), 2);
        assert!(snap
            .neighbours_seen
            .iter()
            .any(|n| n.addr == "127.0.0.1:6346" && n.kind == "leaf"));
        assert_eq!(snap.neighbours_unrecorded, 0);
    }

    #[test]
    fn a_guard_takes_its_link_down_when_dropped() {
        let s = Stats::new("kazaa", "supernode", "n1");
        {
            let _g = s.link_guard("127.0.0.1:1214", LinkDir::Out, "supernode");
            assert_eq!(s.snapshot().neighbours.len(), 1);
        }
        let snap = s.snapshot();
        assert!(snap.neighbours.is_empty());
        assert_eq!(snap.neighbours_seen[0].kind, "supernode");
    }

    #[test]
    fn the_union_is_bounded() {
        let s = Stats::new("napster", "server", "n1");
        for port in 0..(MAX_NEIGHBOURS_SEEN + 10) {
            let a = format!("127.0.0.1:{port}");
            s.link_up(&a, LinkDir::In, "client");
            s.link_down(&a);
        }
        let snap = s.snapshot();
        assert!(snap.neighbours.is_empty());
        assert_eq!(snap.neighbours_seen.len(), MAX_NEIGHBOURS_SEEN);
        assert_eq!(snap.neighbours_unrecorded, 10);
    }

    #[test]
    fn an_old_file_without_neighbours_still_parses() {
        let mut v = serde_json::to_value(Stats::new("tracker", "server", "t").snapshot()).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["neighbours", "neighbours_seen", "neighbours_unrecorded"] {
            assert!(o.remove(k).is_some(), "{k} written");
        }
        let back: StatsSnapshot = serde_json::from_value(v).unwrap();
        assert!(back.neighbours.is_empty() && back.neighbours_seen.is_empty());
    }

    #[test]
    fn json_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let s = Stats::new("tracker", "server", "t");
        s.msg_in("announce", 300);
        s.set_extra("torrents", serde_json::json!(7));
        s.link_up("127.0.0.1:6969", LinkDir::Out, "server");
        s.write_json(&path).unwrap();
        let back = StatsSnapshot::read_json(&path).unwrap();
        assert_eq!(back.messages["announce"].in_bytes, 300);
        assert_eq!(back.extra["torrents"], serde_json::json!(7));
        assert_eq!(back.proto, "tracker");
        assert_eq!(back.neighbours, back.neighbours_seen);
        assert_eq!(back.neighbours[0].kind, "server");
        assert!(!dir.path().join("stats.json.tmp").exists());
    }
}
