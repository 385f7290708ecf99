//! The tokio shell: sockets, timers and tasks around the sans-I/O [`crate::protocol`] state machines.
//!
//! - [`run_supernode`]: accepts sessions, links to `--peer` SNs (announcing itself with a 0x01 entry,
//!   since "an SN believes a peer that says it is one", kazaa.md §1), and runs one actor task that owns
//!   the [`Supernode`] and carries out its actions;
//! - [`OnClient`]: an ordinary node's session to its SN: register (0x02, 0x22s) and search (0x06 → 0x07
//!   waves → 0x08).
//!
//! - [`http`]: the ON's `/.hash=` file server (through `common::http`).
//!
//! - [`get`]: multi-source downloads by hash, re-search, push to firewalled sources.
//!
//! Not written yet (see the README): HTTP on the SN's binary port (a `GET `/`GIVE` opening there is
//! answered `501 Not Implemented`; SNs share nothing).

pub mod get;
pub mod http;
pub mod session;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::stats::{LinkDir, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::frame::CLIENT_HELLO_LEN;
use crate::codec::message::{FileMeta, Neighbour, NodeEntry, Query, Reply};
use crate::codec::{Frame, Message, Packet};
use crate::protocol::supernode::{Action, Supernode, SupernodeConfig};
use crate::protocol::ConnId;
use session::{SessionReader, SessionWriter};

/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one connection before it is dropped as too slow.
pub const OUTBOX_LEN: usize = 1024;
/// Events queued for the actor.
pub const EVENTS_LEN: usize = 4096;
/// Delay between attempts to (re)link to a peer SN.
pub const RELINK_DELAY: Duration = Duration::from_secs(1);
/// How often the actor ticks (search deadlines).
pub const TICK: Duration = Duration::from_millis(200);

/// How long an SN's connect-back to a child may take (reachability for promotion).
pub const CONNECT_BACK_TIMEOUT: Duration = Duration::from_secs(3);
/// giFT's keep-alive period (kazaa.md §2): an ON pings its SN after this long without a frame from it.
pub const PING_INTERVAL: Duration = Duration::from_secs(120);
/// giFT's keep-alive timeout: no frame this long after our ping means the SN is gone.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// When an ON pings its SN (`0x50`) and how long it waits for a sign of life after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before a ping.
    pub interval: Duration,
    /// Wait for any frame after the ping before the session counts as dead.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: PING_INTERVAL,
            timeout: PING_TIMEOUT,
        }
    }
}

enum Event {
    ConnectBack(ConnId, SocketAddrV4, bool),
    Child(ConnId, SocketAddrV4, mpsc::Sender<Frame>),
    Peer(ConnId, SocketAddrV4, mpsc::Sender<Frame>),
    Msg(ConnId, Packet),
    Down(ConnId),
}

fn v4(a: SocketAddr) -> io::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "FastTrack carries IPv4 only",
        )),
    }
}

/// Runs an SN on `listener` until `shutdown`.
pub async fn run_supernode(
    listener: TcpListener,
    cfg: SupernodeConfig,
    peers: Vec<SocketAddr>,
    stats: Stats,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let network = cfg.network.clone();
    let me = cfg.addr;
    let (ev_tx, ev_rx) = mpsc::channel(EVENTS_LEN);
    let actor = tokio::spawn(actor(
        Supernode::new(cfg),
        ev_rx,
        ev_tx.clone(),
        stats.clone(),
        shutdown.clone(),
    ));
    let ids = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    for p in peers {
        let p = v4(p)?;
        let (ev_tx, stats, shutdown, ids, network) = (
            ev_tx.clone(),
            stats.clone(),
            shutdown.clone(),
            ids.clone(),
            network.clone(),
        );
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                let conn = ConnId(ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                let span = tracing::info_span!("sn_link", conn = conn.0, peer = %p);
                let r = link(
                    p,
                    me,
                    conn,
                    &network,
                    ev_tx.clone(),
                    stats.clone(),
                    shutdown.clone(),
                )
                .instrument(span)
                .await;
                if let Err(e) = r {
                    tracing::debug!(peer = %p, error = %e, "link to peer SN failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RELINK_DELAY) => {}
                }
            }
        });
    }
    loop {
        let (stream, from) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let conn = ConnId(ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let span = tracing::info_span!("session", conn = conn.0, %from);
        let (ev_tx, stats, shutdown, network) = (
            ev_tx.clone(),
            stats.clone(),
            shutdown.clone(),
            network.clone(),
        );
        tokio::spawn(
            async move {
                if let Err(e) =
                    inbound(stream, from, conn, &network, ev_tx, stats.clone(), shutdown).await
                {
                    stats.error("session");
                    tracing::debug!(error = %e, "session ended with an error");
                }
            }
            .instrument(span),
        );
    }
    drop(ev_tx);
    let _ = actor.await;
    Ok(())
}

async fn actor(
    mut sn: Supernode,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    stats: Stats,
    shutdown: CancellationToken,
) {
    let mut out: HashMap<ConnId, mpsc::Sender<Frame>> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let actions = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => sn.tick(Instant::now()),
            ev = rx.recv() => match ev {
                None => break,
                Some(Event::ConnectBack(c, addr, ok)) => sn.connect_back_done(c, addr, ok),
                Some(Event::Child(c, addr, tx)) => {
                    out.insert(c, tx);
                    sn.child_connected(c, addr)
                }
                Some(Event::Peer(c, addr, tx)) => {
                    out.insert(c, tx);
                    sn.peer_connected(c, addr);
                    Vec::new()
                }
                Some(Event::Msg(c, p)) => {
                    if sn.is_peer(c) { sn.peer_message(c, p, Instant::now()) } else { sn.child_message(c, p, Instant::now()) }
                }
                Some(Event::Down(c)) => {
                    out.remove(&c);
                    sn.disconnected(c)
                }
            },
        };
        for a in actions {
            match a {
                Action::Send { conn, packet } => {
                    let (msg_type, payload) = packet.encode();
                    if let Some(tx) = out.get(&conn) {
                        if tx.try_send(Frame::Message { msg_type, payload }).is_err() {
                            // A full outbox means a stalled peer: drop it rather than buffer without bound.
                            stats.error("outbox_full");
                            out.remove(&conn);
                        }
                    }
                }
                Action::Close { conn, reason } => {
                    tracing::debug!(conn = conn.0, reason, "closing");
                    out.remove(&conn);
                }
                Action::ConnectBack { conn, addr } => {
                    let (tx, stats) = (tx.clone(), stats.clone());
                    tokio::spawn(async move {
                        // A bare TCP connect says "the port accepts inbound"; the ON's HTTP server
                        // sees a connection that closes without a request.
                        let ok =
                            tokio::time::timeout(CONNECT_BACK_TIMEOUT, TcpStream::connect(addr))
                                .await
                                .is_ok_and(|r| r.is_ok());
                        tracing::debug!(conn = conn.0, %addr, ok, "connect-back");
                        if !ok {
                            // A child that cannot be reached (NAT, firewall): not an SN candidate.
                            stats.error("connect_back_failed");
                        }
                        let _ = tx.send(Event::ConnectBack(conn, addr, ok)).await;
                    });
                }
            }
        }
        stats.set_gauge("children", sn.index().child_count() as i64);
        stats.set_gauge("files", sn.index().file_count() as i64);
    }
}

fn msg_name(msg_type: u16, payload: &[u8]) -> &'static str {
    Packet::decode(msg_type, payload)
        .map(|p| p.message.name())
        .unwrap_or("invalid")
}

async fn writer_task(mut w: SessionWriter, mut rx: mpsc::Receiver<Frame>, stats: Stats) {
    while let Some(f) = rx.recv().await {
        let name = match &f {
            Frame::Ping => "ping",
            Frame::Pong => "pong",
            Frame::Message { msg_type, payload } => msg_name(*msg_type, payload),
        };
        match w.send_frame(&f).await {
            Ok(n) => stats.msg_out(name, n),
            Err(_) => break,
        }
    }
}

/// Reads packets into the actor until the stream ends; answers pings.
async fn pump(
    mut r: SessionReader,
    conn: ConnId,
    tx: mpsc::Sender<Frame>,
    ev: mpsc::Sender<Event>,
    stats: Stats,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let result = loop {
        let f = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            f = r.next_frame() => f,
        };
        match f {
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Some(Frame::Ping)) => {
                stats.msg_in("ping", 1);
                let _ = tx.try_send(Frame::Pong);
            }
            Ok(Some(Frame::Pong)) => stats.msg_in("pong", 1),
            Ok(Some(Frame::Message { msg_type, payload })) => {
                match Packet::decode(msg_type, &payload) {
                    Ok(p) => {
                        stats.msg_in(p.message.name(), payload.len() + 5);
                        if ev.send(Event::Msg(conn, p)).await.is_err() {
                            break Ok(());
                        }
                    }
                    Err(e) => {
                        // Bad input is logged and counted; the session goes on (the frame boundary is intact).
                        stats.error("decode");
                        tracing::debug!(msg_type, error = %e, "undecodable message");
                    }
                }
            }
        }
    };
    let _ = ev.send(Event::Down(conn)).await;
    result
}

async fn inbound(
    mut stream: TcpStream,
    from: SocketAddr,
    conn: ConnId,
    network: &str,
    ev: mpsc::Sender<Event>,
    stats: Stats,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut hello = [0u8; CLIENT_HELLO_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut hello))
        .await
        .map_err(|_| io::ErrorKind::TimedOut)??;
    if &hello[..4] == b"GET " || &hello[..4] == b"GIVE" {
        stream
            .write_all(b"HTTP/1.0 501 Not Implemented\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let seed: u32 = rand::random();
    let (peer, mut r, w) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        session::accept(stream, hello, seed, network),
    )
    .await
    .map_err(|_| io::ErrorKind::TimedOut)??;
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, r.next_frame())
        .await
        .map_err(|_| io::ErrorKind::TimedOut)??;
    let (tx, rx) = mpsc::channel(OUTBOX_LEN);
    tokio::spawn(writer_task(w, rx, stats.clone()));
    // The first message counts like any other: 0x4B, 4 header bytes and the body.
    let first = match first {
        Some(Frame::Message { msg_type, payload }) => Packet::decode(msg_type, &payload)
            .ok()
            .map(|p| (p, payload.len() + 5)),
        _ => None,
    };
    // The session is an overlay link from here on: a peer SN or a child, as its first message says.
    let _link;
    match first {
        Some((
            Packet {
                route: None,
                message: Message::SnNeighbours(n),
            },
            len,
        )) if !n.is_empty() => {
            _link = stats.link_guard(from, LinkDir::In, "supernode");
            stats.msg_in("sn_neighbours", len);
            tracing::info!(peer_sn = %n[0].addr, "supernode link up");
            ev.send(Event::Peer(conn, n[0].addr, tx.clone()))
                .await
                .map_err(|_| io::ErrorKind::BrokenPipe)?;
        }
        other => {
            _link = stats.link_guard(from, LinkDir::In, "ordinary");
            tracing::info!(addr = %peer.addr, "child logged in");
            ev.send(Event::Child(conn, peer.addr, tx.clone()))
                .await
                .map_err(|_| io::ErrorKind::BrokenPipe)?;
            if let Some((p, len)) = other {
                stats.msg_in(p.message.name(), len);
                ev.send(Event::Msg(conn, p))
                    .await
                    .map_err(|_| io::ErrorKind::BrokenPipe)?;
            }
        }
    }
    pump(r, conn, tx, ev, stats, shutdown).await
}

#[allow(clippy::too_many_arguments)]
async fn link(
    peer: SocketAddrV4,
    me: SocketAddrV4,
    conn: ConnId,
    network: &str,
    ev: mpsc::Sender<Event>,
    stats: Stats,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer))
        .await
        .map_err(|_| io::ErrorKind::TimedOut)??;
    let (_, r, mut w) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        session::connect(stream, rand::random(), network),
    )
    .await
    .map_err(|_| io::ErrorKind::TimedOut)??;
    let hello = Packet::plain(Message::SnNeighbours(vec![Neighbour {
        addr: me,
        unknown: [0; 19],
        hops: 0,
    }]));
    let n = w.send(&hello).await?;
    stats.msg_out("sn_neighbours", n);
    let (tx, rx) = mpsc::channel(OUTBOX_LEN);
    tokio::spawn(writer_task(w, rx, stats.clone()));
    let _link = stats.link_guard(peer, LinkDir::Out, "supernode");
    ev.send(Event::Peer(conn, peer, tx.clone()))
        .await
        .map_err(|_| io::ErrorKind::BrokenPipe)?;
    tracing::info!("linked to peer supernode");
    pump(r, conn, tx, ev, stats, shutdown).await
}

/// What an ON's SN told it while the session is held.
#[derive(Debug, Clone)]
pub enum OnEvent {
    /// Short 0x0D: connect to `requester` and send `GIVE <push_id>`.
    Push {
        /// Push id.
        push_id: u32,
        /// Where to connect.
        requester: SocketAddrV4,
    },
    /// 0x15: the SN reached us at this address.
    Reachable(SocketAddrV4),
    /// 0x00: a fresh node list.
    NodeList(Vec<NodeEntry>),
}

/// What an ON learnt at login.
#[derive(Debug, Clone, Default)]
pub struct LoginInfo {
    /// The node list received.
    pub nodes: Vec<NodeEntry>,
    /// The external IP the SN reported.
    pub external_ip: Option<std::net::Ipv4Addr>,
}

/// An ordinary node's session to its SN.
pub struct OnClient {
    r: SessionReader,
    w: SessionWriter,
    /// The SN.
    pub sn: SocketAddrV4,
    /// Round trip of the connect + handshake (the probe figure).
    pub rtt: Duration,
    /// Login information gathered so far.
    pub login: LoginInfo,
    next_search: crate::protocol::ordinary::SearchIds,
    /// Keep-alive used by [`OnClient::hold`].
    pub keepalive: Keepalive,
    /// Our 0x02, sent again after the SN's 0x2C.
    user_info: Message,
    /// Our network name, the answer to the SN's 0x1D.
    network: String,
}

impl OnClient {
    /// Connects, handshakes, and sends the user info (bandwidth 0xD1, "infinite") and shares; every
    /// message is counted in `stats`.
    pub async fn connect(
        sn: SocketAddr,
        network: &str,
        http: SocketAddrV4,
        user: &str,
        shares: &[FileMeta],
        stats: Option<&Stats>,
    ) -> io::Result<OnClient> {
        Self::connect_with_bandwidth(sn, network, http, user, 0xD1, shares, stats).await
    }

    /// [`OnClient::connect`] declaring `bandwidth` in the 0x02
    /// ([`crate::protocol::promotion::bandwidth_byte`]).
    pub async fn connect_with_bandwidth(
        sn: SocketAddr,
        network: &str,
        http: SocketAddrV4,
        user: &str,
        bandwidth: u8,
        shares: &[FileMeta],
        stats: Option<&Stats>,
    ) -> io::Result<OnClient> {
        let start = Instant::now();
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(sn))
            .await
            .map_err(|_| io::ErrorKind::TimedOut)??;
        let (peer, mut r, mut w) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            session::connect(stream, rand::random(), network),
        )
        .await
        .map_err(|_| io::ErrorKind::TimedOut)??;
        let rtt = start.elapsed();
        r.stats = stats.cloned();
        w.stats = stats.cloned();
        let user_info = Message::UserInfo {
            addr: http,
            bandwidth,
            user: user.to_owned(),
        };
        w.send(&Packet::plain(user_info.clone())).await?;
        for f in shares {
            w.send(&Packet::plain(Message::Share(f.clone()))).await?;
        }
        Ok(OnClient {
            r,
            w,
            sn: peer.addr,
            rtt,
            login: LoginInfo::default(),
            next_search: Default::default(),
            keepalive: Keepalive::default(),
            user_info,
            network: network.to_owned(),
        })
    }

    fn note(&mut self, m: &Message) {
        match m {
            Message::NodeList(n) => self.login.nodes = n.clone(),
            Message::ExternalIp(ip) => self.login.external_ip = Some(*ip),
            _ => {}
        }
    }

    /// Sends `query` (its search id is replaced) and collects the waves until 0x08 or `timeout`.
    pub async fn search(&mut self, query: Query, timeout: Duration) -> io::Result<Vec<Reply>> {
        self.search_each(query, timeout, |_| {}).await
    }

    /// [`OnClient::search`], calling `on_wave` with each wave as it arrives (the local SN's first, the
    /// farther SNs' later), so a caller can show results before the 0x08.
    pub async fn search_each(
        &mut self,
        mut query: Query,
        timeout: Duration,
        mut on_wave: impl FnMut(&Reply),
    ) -> io::Result<Vec<Reply>> {
        query.search_id = self.next_search.next_id();
        let id = query.search_id;
        self.w.send(&Packet::plain(Message::Query(query))).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waves = Vec::new();
        loop {
            let f = match tokio::time::timeout_at(deadline, self.r.next_frame()).await {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no end of results from the supernode",
                    ))
                }
                Ok(f) => f?,
            };
            match f {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(Frame::Ping) => {
                    self.w.send_frame(&Frame::Pong).await?;
                }
                Some(Frame::Pong) => {}
                Some(Frame::Message { msg_type, payload }) => {
                    let Ok(p) = Packet::decode(msg_type, &payload) else {
                        continue;
                    };
                    self.note(&p.message);
                    match p.message {
                        Message::Reply(r) if r.search_id == id => {
                            on_wave(&r);
                            waves.push(r);
                        }
                        Message::QueryEnd { search_id } if search_id == id => return Ok(waves),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Reads until the login burst's 0x1D arrived (node list and external IP are then known).
    pub async fn wait_login(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let f = tokio::time::timeout_at(deadline, self.r.next_frame())
                .await
                .map_err(|_| io::ErrorKind::TimedOut)??;
            match f {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(Frame::Ping) => {
                    self.w.send_frame(&Frame::Pong).await?;
                }
                Some(Frame::Message { msg_type, payload }) => {
                    if let Ok(p) = Packet::decode(msg_type, &payload) {
                        self.note(&p.message);
                        if matches!(p.message, Message::NetworkName(_)) {
                            return Ok(());
                        }
                    }
                }
                Some(Frame::Pong) => {}
            }
        }
    }

    /// The client's side of the login burst (kazaa.md §2 step 4): echo the SN's 0x26 protocol
    /// version, send our 0x02 again after its 0x2C (with the external IP it saw when ours is
    /// 0.0.0.0), and answer its 0x1D with our network name.
    async fn answer_login(&mut self, m: &Message) -> io::Result<()> {
        let reply = match m {
            Message::ProtocolVersion(v) => Message::ProtocolVersion(*v),
            Message::ExternalIp(ip) => match &self.user_info {
                Message::UserInfo {
                    addr,
                    bandwidth,
                    user,
                } if addr.ip().is_unspecified() => Message::UserInfo {
                    addr: SocketAddrV4::new(*ip, addr.port()),
                    bandwidth: *bandwidth,
                    user: user.clone(),
                },
                other => other.clone(),
            },
            Message::NetworkName(_) => Message::NetworkName(self.network.clone()),
            _ => return Ok(()),
        };
        self.w.send(&Packet::plain(reply)).await.map(|_| ())
    }

    /// Keeps the session open, answering pings, until the SN closes it or `shutdown`.
    /// A 0x0D relayed by the SN (push id, requester), a 0x15 connect-back confirmation and node lists
    /// go to `on_event`. After `keepalive.interval` without a frame from the SN it sends a `0x50` ping;
    /// if nothing (the `0x52` pong or any other frame) arrives within `keepalive.timeout`, the SN is
    /// gone (a half-open connection never ends by itself) and this returns `TimedOut`.
    pub async fn hold(
        &mut self,
        shutdown: &CancellationToken,
        mut on_event: impl FnMut(OnEvent),
    ) -> io::Result<()> {
        let ka = self.keepalive;
        let mut next_ping = tokio::time::Instant::now() + ka.interval;
        let mut pinged = false;
        loop {
            let f = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                f = self.r.next_frame() => f?,
                _ = tokio::time::sleep_until(next_ping) => {
                    if pinged {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer to a keep-alive ping",
                        ));
                    }
                    self.w.send_frame(&Frame::Ping).await?;
                    pinged = true;
                    next_ping = tokio::time::Instant::now() + ka.timeout;
                    continue;
                }
            };
            pinged = false;
            next_ping = tokio::time::Instant::now() + ka.interval;
            match f {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(Frame::Ping) => {
                    self.w.send_frame(&Frame::Pong).await?;
                }
                Some(Frame::Message { msg_type, payload }) => {
                    if let Ok(p) = Packet::decode(msg_type, &payload) {
                        self.note(&p.message);
                        self.answer_login(&p.message).await?;
                        match p.message {
                            Message::PushRelay { push_id, requester } => {
                                on_event(OnEvent::Push { push_id, requester })
                            }
                            Message::Reachability(addr) => on_event(OnEvent::Reachable(addr)),
                            Message::NodeList(n) => on_event(OnEvent::NodeList(n)),
                            _ => {}
                        }
                    }
                }
                Some(Frame::Pong) => {}
            }
        }
    }

    /// Asks the SN to have a firewalled source connect back (long 0x0D).
    pub async fn push_request(&mut self, m: Message) -> io::Result<()> {
        self.w.send(&Packet::plain(m)).await.map(|_| ())
    }
}
