//! The tokio shell around [`Servent`]: sockets, handshakes, per-direction deflate, timers, connection
//! maintenance, the host cache file, HTTP uploads and push connect-back, and downloads ([`Node::download`]:
//! `common::multisource` fed by hits, the `X-Alt` of sources (notes §5) and `urn:sha1:` re-queries). The only
//! module that uses tokio.
//!
//! One port carries everything, as on the real network: a connection starting with `GNUTELLA` is a Gnet
//! link, `GET `/`HEAD` is an HTTP transfer (handed to `common::http` with the bytes already read).
//!
//! Concurrency: the servent sits behind one `std::sync::Mutex`, never held across an `.await`. Each link
//! has a reader (socket → servent) and a writer task (servent queue → socket) woken by a `Notify` when
//! [`Servent::poll_dirty`] names its connection. After any input, `Inner::pump` moves dirty flags and
//! events out of the servent.

pub mod deflate;
pub mod http;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::stats::{LinkDir, Stats};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, trace, warn, Instrument};

use crate::codec::altloc::{format_x_alt, parse_alt_locs};
use crate::codec::handshake::Block;
use crate::codec::message::type_name;
use crate::codec::{Descriptor, Frame, Guid};
use crate::protocol::handshake::{
    Capacity, ClientStart, HandshakeConfig, HandshakeError, Link, PeerKind, Role,
    ServerAwaitConnect, ServerReply,
};
use crate::protocol::mesh::Mesh;
use crate::protocol::servent::{Config, ConnId, Event, Servent, SharedFile};

/// The historical Gnutella port.
pub const DEFAULT_PORT: u16 = 6346;
/// Time allowed for a whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the host cache file in the data directory.
pub const HOST_CACHE_FILE: &str = "gnutella-hosts.txt";
/// Messages written per wake-up of a writer (bounds the time the servent lock is held).
const WRITE_BATCH: usize = 256;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Starting role.
    pub role: Role,
    /// Classic 0.4 flooding mode.
    pub classic: bool,
    /// Bootstrap peers (always retried while we are short of links).
    pub peers: Vec<SocketAddr>,
    /// Shared folder.
    pub share: Option<PathBuf>,
    /// State directory (host cache, library hash cache).
    pub data_dir: Option<PathBuf>,
    /// Offer and use deflate on links.
    pub deflate: bool,
    /// Override max TTL (default 4 for 0.6, 7 classic).
    pub max_ttl: Option<u8>,
    /// Outgoing ultrapeer (or classic) links to keep; a leaf keeps `leaf_links` ultrapeers instead.
    pub up_links: usize,
    /// Ultrapeers a leaf keeps.
    pub leaf_links: usize,
    /// Most ultrapeer (or classic) links accepted in total.
    pub max_ultrapeers: usize,
    /// Most leaves an ultrapeer accepts.
    pub max_leaves: usize,
    /// Pretend we cannot accept connections (push flag in hits).
    pub firewalled: bool,
    /// Accept leaf guidance (become a leaf when a full ultrapeer says so).
    pub accept_guidance: bool,
    /// RNG seed (GUIDs); random when `None`.
    pub seed: Option<u64>,
    /// Cap shared by all our uploads (`--upload-rate`); `None`: unlimited.
    pub upload_rate: Option<common::ratelimit::RateLimiter>,
    /// Cap shared by all our downloads (`--download-rate`); `None`: unlimited.
    pub download_rate: Option<common::ratelimit::RateLimiter>,
    /// Files uploaded at once; further requests get `503` with `Retry-After` and `X-Alt`.
    pub upload_slots: usize,
    /// `Retry-After` of that `503`. Short, because a slot frees after every block a downloader fetches
    /// (the default of `common::http`, 60 s, left a flash crowd waiting a minute per busy answer).
    pub busy_retry_after: Duration,
}

/// Upload slots of a node unless told otherwise.
pub const DEFAULT_UPLOAD_SLOTS: usize = 8;
/// `Retry-After` of a busy node unless told otherwise.
pub const DEFAULT_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Least time between two `urn:sha1:` re-queries of one download (LowOnSources).
pub const REQUERY_INTERVAL: Duration = Duration::from_secs(5);
/// TTL of a re-query for more sources.
pub const REQUERY_TTL: u8 = 4;
/// Re-queries one download sends at most (a query costs the whole overlay; gtk-gnutella rations them too).
pub const MAX_REQUERIES: u32 = 4;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            role: Role::Ultrapeer,
            classic: false,
            peers: Vec::new(),
            share: None,
            data_dir: None,
            deflate: true,
            max_ttl: None,
            up_links: 3,
            leaf_links: 2,
            max_ultrapeers: 16,
            max_leaves: 64,
            firewalled: false,
            accept_guidance: false,
            seed: None,
            upload_rate: None,
            download_rate: None,
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            busy_retry_after: DEFAULT_BUSY_RETRY_AFTER,
        }
    }
}

struct ConnCtl {
    notify: Arc<Notify>,
    closing: Arc<AtomicBool>,
    remote: SocketAddr,
    key: SocketAddr,
}

struct Inner {
    servent: Mutex<Servent>,
    conns: Mutex<HashMap<ConnId, ConnCtl>>,
    linked: Mutex<HashSet<SocketAddr>>,
    cfg: NodeConfig,
    stats: Stats,
    events: broadcast::Sender<Event>,
    next_id: AtomicU64,
    local: SocketAddr,
    shutdown: CancellationToken,
    http: Option<common::http::HttpServer>,
    library: Option<Arc<common::library::Library>>,
    user_agent: String,
    /// Downloads waiting for a pushed connection, by the firewalled servent's GUID.
    givs: Mutex<HashMap<Guid, tokio::sync::mpsc::Sender<common::multisource::BoxStream>>>,
    /// Alternate locations by SHA-1, shared with the HTTP router.
    mesh: Arc<Mutex<Mesh>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    Instant::now()
}

/// Scans the shared folder (SHA-1 of every file) with `common::library`.
fn open_library(
    share: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<common::library::Library> {
    use common::library::{LibraryConfig, Progress};
    let mut lc = LibraryConfig::new(share)
        .kinds(common::hash::HashKinds {
            sha1: true,
            ..Default::default()
        })
        .progress(Progress::Hidden);
    if let Some(d) = data_dir {
        lc = lc.data_dir(d.join("gnutella-library"));
    }
    Ok(common::library::Library::open(lc)?)
}

impl Node {
    /// Starts a node on `listener`: scans the share, loads the host cache and spawns the accept,
    /// maintenance and timer tasks. They stop when `shutdown` is cancelled.
    pub async fn start(
        listener: TcpListener,
        cfg: NodeConfig,
        stats: Stats,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Node> {
        let local = listener.local_addr()?;
        let library = match cfg.share.clone() {
            Some(dir) => {
                let dd = cfg.data_dir.clone();
                let lib = tokio::task::spawn_blocking(move || open_library(&dir, dd.as_deref()))
                    .await??;
                Some(Arc::new(lib))
            }
            None => None,
        };
        let shares: Vec<SharedFile> = library
            .iter()
            .flat_map(|l| l.files())
            .map(|f| SharedFile {
                index: f.index,
                name: f.name().to_owned(),
                size: f.size,
                sha1: f.hashes.sha1.map(|d| d.0),
            })
            .collect();
        stats.set_gauge("shared_files", shares.len() as i64);
        let seed = cfg.seed.unwrap_or_else(|| rand::thread_rng().next_u64());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let guid = Guid::random(&mut rng);
        let addr = match local {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, a.port()),
        };
        let mut scfg = Config::new(guid, addr, cfg.role, cfg.classic);
        if let Some(t) = cfg.max_ttl {
            scfg.max_ttl = t.clamp(1, crate::codec::HARD_TTL_LIMIT);
        }
        scfg.firewalled = cfg.firewalled;
        scfg.max_leaves = cfg.max_leaves.min(255) as u8;
        scfg.max_ultrapeers = cfg.max_ultrapeers.min(255) as u8;
        let mut servent = Servent::new(scfg, shares, rng.next_u64(), now());
        if let Some(d) = &cfg.data_dir {
            if let Ok(text) = std::fs::read_to_string(d.join(HOST_CACHE_FILE)) {
                servent.add_hosts(text.lines().filter_map(|l| l.trim().parse().ok()));
            }
        }
        let role_name = if cfg.classic {
            "classic"
        } else {
            match cfg.role {
                Role::Ultrapeer => "ultrapeer",
                Role::Leaf => "leaf",
            }
        };
        stats.set_role(role_name);
        stats.set_node(&local.to_string());
        stats.set_extra("servent_guid", serde_json::json!(guid.to_hex()));
        let mesh = Arc::new(Mutex::new(Mesh::new()));
        let http = library.as_ref().map(|l| {
            common::http::HttpServer::new(
                http::GnutellaRouter::new(Arc::clone(l), Arc::clone(&mesh), addr),
                common::http::HttpConfig {
                    server_header: Some(format!("p2p-lab-gnutella/{}", env!("CARGO_PKG_VERSION"))),
                    upload_slots: cfg.upload_slots,
                    retry_after: cfg.busy_retry_after,
                    global_rate: cfg.upload_rate.clone(),
                    ..Default::default()
                },
                stats.clone(),
            )
        });
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            servent: Mutex::new(servent),
            conns: Mutex::new(HashMap::new()),
            linked: Mutex::new(HashSet::new()),
            cfg,
            stats,
            events,
            next_id: AtomicU64::new(1),
            local,
            shutdown,
            http,
            library,
            givs: Mutex::new(HashMap::new()),
            mesh,
            user_agent: format!("p2p-lab-gnutella/{}", env!("CARGO_PKG_VERSION")),
        });
        let node = Node { inner };
        let span = tracing::error_span!("node", proto = "gnutella", %local);
        tokio::spawn(accept_loop(Arc::clone(&node.inner), listener).instrument(span.clone()));
        tokio::spawn(maintain_loop(Arc::clone(&node.inner)).instrument(span.clone()));
        tokio::spawn(timer_loop(Arc::clone(&node.inner)).instrument(span));
        Ok(node)
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Our servent GUID.
    pub fn guid(&self) -> Guid {
        self.inner.servent().config().guid
    }

    /// Events (hits for our searches, pushes, role changes).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Open Gnet links.
    pub fn connection_count(&self) -> usize {
        self.inner.conns().len()
    }

    /// Starts a search; hits arrive as [`Event::Hit`] through [`Node::subscribe`].
    pub fn search(&self, criteria: &str, sha1: Option<[u8; 20]>, ttl: u8) -> Guid {
        let g = self
            .inner
            .servent()
            .start_search(now(), criteria, sha1, ttl);
        self.inner.pump();
        g
    }

    /// Waits until at least `n` links are up, or `timeout`.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < end {
            if self.connection_count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.connection_count() >= n
    }

    /// Says BYE 200 to every link, waits briefly for the queues to drain, saves the host cache and copies
    /// the routing counters into the stats.
    pub async fn close(&self) {
        {
            let mut s = self.inner.servent();
            let ids: Vec<ConnId> = s.connections().map(|(id, _)| id).collect();
            for id in ids {
                s.send_bye(id, 200, "Shutting down");
            }
        }
        self.inner.pump();
        let end = tokio::time::Instant::now() + Duration::from_secs(1);
        while !self.inner.conns().is_empty() && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.save_hosts();
        self.inner.copy_counters();
    }
}

/// Runs a node until `shutdown` is cancelled, then closes it cleanly.
pub async fn run(
    listener: TcpListener,
    cfg: NodeConfig,
    stats: Stats,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The node's own tasks get their own token: on shutdown they must still write our Byes.
    let tasks = CancellationToken::new();
    let node = Node::start(listener, cfg, stats, tasks.clone()).await?;
    shutdown.cancelled().await;
    node.close().await;
    tasks.cancel();
    Ok(())
}

impl Inner {
    fn servent(&self) -> MutexGuard<'_, Servent> {
        self.servent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<ConnId, ConnCtl>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn linked(&self) -> MutexGuard<'_, HashSet<SocketAddr>> {
        self.linked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves output notifications and events out of the servent.
    fn pump(self: &Arc<Self>) {
        let (dirty, events) = {
            let mut s = self.servent();
            let d: Vec<ConnId> = std::iter::from_fn(|| s.poll_dirty()).collect();
            let e: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
            (d, e)
        };
        {
            let conns = self.conns();
            for id in dirty {
                if let Some(c) = conns.get(&id) {
                    c.notify.notify_one();
                }
            }
        }
        for e in events {
            match &e {
                Event::Close { conn, reason } => {
                    debug!(conn, %reason, "closing link");
                    if let Some(c) = self.conns().get(conn) {
                        c.closing.store(true, Ordering::SeqCst);
                        c.notify.notify_one();
                    }
                }
                Event::Push { push, from } => {
                    let from_ip = self.conns().get(from).map(|c| c.remote.ip());
                    tokio::spawn(push_connect_back(Arc::clone(self), push.clone(), from_ip));
                }
                Event::RoleChanged(r) => {
                    info!(role = ?r, "role changed");
                    self.stats.set_role(match r {
                        Role::Ultrapeer => "ultrapeer",
                        Role::Leaf => "leaf",
                    });
                }
                Event::Hit { hit, .. } => {
                    // Every reachable responder is a location of what it offers: our uploads of the same
                    // file will name it in `X-Alt`.
                    let a = SocketAddrV4::new(hit.ip, hit.port);
                    if !hit.firewalled() {
                        let t = now();
                        let mut mesh = self.mesh.lock().unwrap_or_else(|e| e.into_inner());
                        for h in hit.results.iter().flat_map(|r| r.ext.sha1s()) {
                            mesh.add(t, h, a);
                        }
                    }
                }
            }
            let _ = self.events.send(e);
        }
    }

    fn handshake_config(&self) -> HandshakeConfig {
        let s = self.servent();
        HandshakeConfig {
            user_agent: self.user_agent.clone(),
            classic: self.cfg.classic,
            role: s.role(),
            guid: s.config().guid,
            listen: self.local,
            deflate: self.cfg.deflate,
            max_ttl: s.config().max_ttl,
            require_leaf_deflate: self.cfg.deflate,
        }
    }

    fn save_hosts(&self) {
        let Some(d) = &self.cfg.data_dir else { return };
        let text: String = {
            let s = self.servent();
            s.hosts().map(|h| format!("{h}\n")).collect()
        };
        let tmp = d.join(format!("{HOST_CACHE_FILE}.tmp"));
        let res = std::fs::create_dir_all(d)
            .and_then(|_| std::fs::write(&tmp, text))
            .and_then(|_| std::fs::rename(&tmp, d.join(HOST_CACHE_FILE)));
        if let Err(e) = res {
            warn!(cause = %e, "cannot save the host cache");
        }
    }

    fn copy_counters(&self) {
        let s = self.servent();
        let c = s.counters();
        self.stats.set_extra(
            "routing",
            serde_json::json!({
                "duplicates": c.duplicates,
                "ttl_clamped": c.ttl_clamped,
                "ttl_dropped": c.ttl_dropped,
                "no_route": c.no_route,
                "rate_limited": c.rate_limited,
                "queue_dropped": c.queue_dropped,
                "queries_answered": c.queries_answered,
                "queries_forwarded": c.queries_forwarded,
                "qrp_filtered": c.qrp_filtered,
                "hits_routed": c.hits_routed,
                "ignored": c.ignored,
                "idle_closed": c.idle_closed,
                "kicked": c.kicked,
            }),
        );
        self.stats
            .set_gauge("connections", s.connections().count() as i64);
        self.stats
            .set_gauge("ultrapeers", s.count(PeerKind::Ultrapeer) as i64);
        self.stats
            .set_gauge("leaves", s.count(PeerKind::Leaf) as i64);
        self.stats.set_gauge("host_cache", s.hosts().count() as i64);
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    warn!(cause = %e, "accept failed");
                    inner.stats.error("accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let inner = Arc::clone(&inner);
        let span = info_span!("conn", %peer, dir = "in");
        tokio::spawn(
            async move {
                if let Err(e) = incoming(Arc::clone(&inner), sock, peer).await {
                    debug!(cause = %e, "incoming connection ended");
                }
            }
            .instrument(span),
        );
    }
}

/// Reads until a whole handshake block is buffered.
async fn read_block(sock: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Block> {
    loop {
        if let Some((b, n)) = Block::decode(buf)? {
            buf.advance(n);
            return Ok(b);
        }
        if sock.read_buf(buf).await? == 0 {
            anyhow::bail!("connection closed during the handshake");
        }
    }
}

async fn incoming(inner: Arc<Inner>, mut sock: TcpStream, peer: SocketAddr) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while buf.len() < 4 {
            if sock.read_buf(&mut buf).await? == 0 {
                anyhow::bail!("closed before saying anything");
            }
        }
        Ok(())
    })
    .await;
    first??;
    if buf.starts_with(b"GIV ") {
        return take_giv(inner, sock, buf).await;
    }
    if buf.starts_with(b"GET ") || buf.starts_with(b"HEAD") {
        let Some(http) = inner.http.clone() else {
            sock.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        };
        let io = common::http::Prefixed::new(buf.freeze(), sock);
        http.serve_connection(io, peer, inner.shutdown.clone())
            .await?;
        return Ok(());
    }
    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let req = read_block(&mut sock, &mut buf).await?;
        let (cap, tries) = {
            let s = inner.servent();
            let ups = s.count(PeerKind::Ultrapeer) + s.count(PeerKind::Classic);
            (
                Capacity {
                    ultrapeer_slot: ups < inner.cfg.max_ultrapeers,
                    leaf_slot: s.count(PeerKind::Leaf) < inner.cfg.max_leaves,
                },
                s.try_hosts(10),
            )
        };
        let server = ServerAwaitConnect::new(inner.handshake_config());
        match server.handle(&req, cap, &tries, Some(peer.ip()))? {
            ServerReply::Done(resp, link) => {
                if !cap.ultrapeer_slot {
                    anyhow::bail!("classic servent full");
                }
                sock.write_all(&resp.encode()).await?;
                Ok(link)
            }
            ServerReply::Reject(resp, e) => {
                sock.write_all(&resp.encode()).await?;
                Err(e.into())
            }
            ServerReply::Accept(next, resp) => {
                sock.write_all(&resp.encode()).await?;
                let ack = read_block(&mut sock, &mut buf).await?;
                Ok(next.handle(&ack)?)
            }
        }
    })
    .await;
    let link = match hs {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            inner.stats.error("handshake");
            return Err(e);
        }
        Err(_) => {
            inner.stats.error("handshake_timeout");
            anyhow::bail!("handshake timed out");
        }
    };
    let key = link.listen_addr.unwrap_or(peer);
    if !inner.linked().insert(key) {
        anyhow::bail!("already linked to {key}");
    }
    run_link(inner, sock, peer, key, LinkDir::In, link, buf).await
}

async fn outgoing(inner: Arc<Inner>, target: SocketAddr) -> anyhow::Result<()> {
    let mut sock = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(target)).await??;
    let _ = sock.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (client, hello) = ClientStart::begin(inner.handshake_config());
        sock.write_all(&hello.encode()).await?;
        let resp = read_block(&mut sock, &mut buf).await?;
        let may_become_leaf = inner.cfg.accept_guidance && inner.conns().is_empty();
        match client.handle(&resp, may_become_leaf) {
            Ok((ack, link)) => {
                if let Some(ack) = ack {
                    sock.write_all(&ack.encode()).await?;
                }
                Ok(link)
            }
            Err(HandshakeError::Rejected {
                code,
                reason,
                try_hosts,
            }) => {
                inner.servent().add_hosts(try_hosts);
                anyhow::bail!("{target} rejected us: {code} {reason}")
            }
            Err(e) => Err(e.into()),
        }
    })
    .await;
    let link = match hs {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            inner.stats.error("handshake");
            return Err(e);
        }
        Err(_) => {
            inner.stats.error("handshake_timeout");
            anyhow::bail!("handshake with {target} timed out");
        }
    };
    run_link(inner, sock, target, target, LinkDir::Out, link, buf).await
}

/// The remote's role as written in the stats file's neighbour list.
fn kind_name(k: PeerKind) -> &'static str {
    match k {
        PeerKind::Ultrapeer => "ultrapeer",
        PeerKind::Leaf => "leaf",
        PeerKind::Classic => "classic",
    }
}

/// Runs an established link until either side closes it. `remote` is the address dialled (outgoing)
/// or the remote socket (incoming): the key of the link in the stats file's neighbour list.
async fn run_link(
    inner: Arc<Inner>,
    sock: TcpStream,
    remote: SocketAddr,
    key: SocketAddr,
    dir: LinkDir,
    link: Link,
    leftover: BytesMut,
) -> anyhow::Result<()> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let notify = Arc::new(Notify::new());
    let closing = Arc::new(AtomicBool::new(false));
    let cancel = inner.shutdown.child_token();
    info!(id, peer = ?link.peer, ua = link.user_agent.as_deref().unwrap_or("?"), deflate_in = link.deflate_in, deflate_out = link.deflate_out, max_ttl = ?link.max_ttl, bye = link.bye_packet, remote_ip = ?link.remote_ip, "link up");
    inner.conns().insert(
        id,
        ConnCtl {
            notify: Arc::clone(&notify),
            closing: Arc::clone(&closing),
            remote,
            key,
        },
    );
    inner.servent().add_connection(now(), id, &link);
    inner.stats.add_gauge("connections", 1);
    inner.stats.link_up(remote, dir, kind_name(link.peer));
    inner.pump();
    let (rd, wr) = sock.into_split();
    let writer = tokio::spawn(
        write_loop(
            Arc::clone(&inner),
            id,
            wr,
            link.deflate_out,
            notify,
            closing,
            cancel.clone(),
        )
        .in_current_span(),
    );
    let r = read_loop(&inner, id, rd, link.deflate_in, leftover, &cancel).await;
    if let Err(e) = &r {
        debug!(id, cause = %e, "reader ended");
    }
    // Let the writer finish its Bye, then tear down.
    if let Some(c) = inner.conns().get(&id) {
        c.closing.store(true, Ordering::SeqCst);
        c.notify.notify_one();
    }
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        cancel.cancel();
    }
    inner.servent().remove_connection(id);
    if let Some(c) = inner.conns().remove(&id) {
        inner.linked().remove(&c.key);
    }
    inner.stats.add_gauge("connections", -1);
    inner.stats.link_down(remote);
    inner.pump();
    info!(id, "link down");
    r
}

async fn read_loop(
    inner: &Arc<Inner>,
    id: ConnId,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    deflate_in: bool,
    leftover: BytesMut,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut inflater = deflate_in.then(deflate::Inflater::default);
    let mut raw = leftover;
    let mut plain: Vec<u8> = Vec::new();
    loop {
        // Move raw bytes into the plain buffer (inflating in bounded steps), decoding frames as we go.
        loop {
            match &mut inflater {
                Some(inf) if !raw.is_empty() => {
                    let used = inf.feed(&raw, &mut plain)?;
                    raw.advance(used);
                }
                Some(_) => {}
                None => {
                    plain.extend_from_slice(&raw);
                    raw.clear();
                }
            }
            let mut off = 0;
            let mut descs = Vec::new();
            let mut fatal = None;
            loop {
                match Frame::decode(&plain[off..]) {
                    Ok(Some((f, n))) => {
                        off += n;
                        inner.stats.msg_in(type_name(f.header.ptype), n);
                        trace!(
                            id,
                            kind = type_name(f.header.ptype),
                            ttl = f.header.ttl,
                            hops = f.header.hops,
                            "in"
                        );
                        descs.push((f.header.ptype, Descriptor::from_frame(&f)));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        fatal = Some(e);
                        break;
                    }
                }
            }
            plain.drain(..off);
            if !descs.is_empty() || fatal.is_some() {
                let t = now();
                let mut s = inner.servent();
                for (ptype, d) in descs {
                    match d {
                        Ok(d) => s.handle_descriptor(t, id, d),
                        Err(e) => {
                            inner.stats.error("decode");
                            s.handle_bad_payload(t, id, ptype, &e);
                        }
                    }
                }
                if let Some(e) = &fatal {
                    inner.stats.error("too_large");
                    s.handle_decode_error(id, e);
                }
                drop(s);
                inner.pump();
                if let Some(e) = fatal {
                    anyhow::bail!("{e}");
                }
            }
            if raw.is_empty() || inflater.is_none() {
                break;
            }
        }
        if inner
            .conns()
            .get(&id)
            .is_some_and(|c| c.closing.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = rd.read_buf(&mut raw) => r?,
        };
        if n == 0 {
            return Ok(());
        }
    }
}

async fn write_loop(
    inner: Arc<Inner>,
    id: ConnId,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    deflate_out: bool,
    notify: Arc<Notify>,
    closing: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut deflater = deflate_out.then(deflate::Deflater::default);
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = notify.notified() => {}
        }
        loop {
            plain.clear();
            let mut sent_bye = false;
            {
                let mut s = inner.servent();
                for _ in 0..WRITE_BATCH {
                    let Some(o) = s.poll_transmit(id) else { break };
                    let kind = type_name(o.desc.msg.payload_type());
                    inner.stats.msg_out(kind, o.wire.len());
                    trace!(id, kind, ttl = o.desc.ttl, hops = o.desc.hops, "out");
                    sent_bye |= kind == "bye";
                    plain.extend_from_slice(&o.wire);
                }
            }
            if plain.is_empty() {
                break;
            }
            let out: &[u8] = match &mut deflater {
                Some(d) => {
                    wire.clear();
                    if d.compress_flush(&plain, &mut wire).is_err() {
                        return;
                    }
                    &wire
                }
                None => &plain,
            };
            if wr.write_all(out).await.is_err() {
                cancel.cancel();
                return;
            }
            if sent_bye {
                // The sender closes right after its Bye (notes §2).
                let _ = wr.shutdown().await;
                cancel.cancel();
                return;
            }
        }
        if closing.load(Ordering::SeqCst) {
            let _ = wr.shutdown().await;
            cancel.cancel();
            return;
        }
    }
}

async fn maintain_loop(inner: Arc<Inner>) {
    let mut last_try: HashMap<SocketAddr, Instant> = HashMap::new();
    let mut last_save = now();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (want, have) = {
            let s = inner.servent();
            let want = if s.role() == Role::Leaf && !inner.cfg.classic {
                inner.cfg.leaf_links
            } else {
                inner.cfg.up_links
            };
            let have = s.count(PeerKind::Ultrapeer) + s.count(PeerKind::Classic);
            (want, have)
        };
        // Attempts still connecting or handshaking: a failed one (already dropped from `linked`) or one that
        // became a link no longer holds back the next attempt, so a dead bootstrap peer cannot keep us
        // from the host cache.
        let pending = {
            let up: HashSet<SocketAddr> = inner.conns().values().map(|c| c.key).collect();
            let linked = inner.linked();
            last_try
                .iter()
                .filter(|(a, t)| {
                    now().saturating_duration_since(**t) < HANDSHAKE_TIMEOUT
                        && linked.contains(*a)
                        && !up.contains(*a)
                })
                .count()
                .min(want)
        };
        let mut missing = want.saturating_sub(have + pending.min(1));
        let mut candidates: Vec<SocketAddr> = inner.cfg.peers.clone();
        let mut keep = Vec::new();
        while missing > 0 {
            let from_cache = candidates.is_empty();
            let next = candidates.pop().or_else(|| inner.servent().take_host());
            let Some(target) = next else { break };
            if target == inner.local {
                continue;
            }
            if inner.linked().contains(&target) {
                // Still a good host to remember (and to hand out in X-Try); just not a new link.
                if from_cache {
                    keep.push(target);
                }
                continue;
            }
            if last_try
                .get(&target)
                .is_some_and(|t| now().saturating_duration_since(*t) < Duration::from_secs(3))
            {
                if from_cache {
                    keep.push(target);
                }
                continue;
            }
            last_try.insert(target, now());
            missing -= 1;
            inner.linked().insert(target);
            let inner2 = Arc::clone(&inner);
            let span = info_span!("conn", peer = %target, dir = "out");
            tokio::spawn(
                async move {
                    if let Err(e) = outgoing(Arc::clone(&inner2), target).await {
                        debug!(cause = %e, "outgoing link failed");
                    }
                    // Failed or finished: the target may be tried again later.
                    let still = inner2.conns().values().any(|c| c.key == target);
                    if !still {
                        inner2.linked().remove(&target);
                    }
                }
                .instrument(span),
            );
        }
        inner.servent().add_hosts(keep);
        last_try.retain(|_, t| now().saturating_duration_since(*t) < Duration::from_secs(60));
        if now().saturating_duration_since(last_save) > Duration::from_secs(30) {
            last_save = now();
            inner.save_hosts();
            inner.copy_counters();
        }
    }
}

async fn timer_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        inner.servent().handle_timeout(now());
        inner.pump();
    }
}

/// A firewalled servent answered our Push: hand the socket to the download waiting for it.
async fn take_giv(inner: Arc<Inner>, mut sock: TcpStream, mut buf: BytesMut) -> anyhow::Result<()> {
    use crate::codec::handshake::Giv;
    let giv = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some((g, n)) = Giv::decode(&buf)? {
                buf.advance(n);
                return anyhow::Ok(g);
            }
            if sock.read_buf(&mut buf).await? == 0 {
                anyhow::bail!("closed before the end of the GIV line");
            }
        }
    })
    .await??;
    inner.stats.msg_in("giv", giv.encode().len());
    let tx = inner
        .givs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&giv.servent)
        .cloned();
    let Some(tx) = tx else {
        inner.stats.error("giv_unexpected");
        anyhow::bail!("GIV from {} that no download asked for", giv.servent);
    };
    let stream: common::multisource::BoxStream = if buf.is_empty() {
        Box::new(sock)
    } else {
        Box::new(common::http::Prefixed::new(buf.freeze(), sock))
    };
    debug!(servent = %giv.servent, index = giv.index, "pushed connection arrived");
    tx.send(stream)
        .await
        .map_err(|_| anyhow::anyhow!("the download waiting for this GIV is gone"))
}

/// Reaches a firewalled source: each connection attempt sends a Push (routed by servent GUID) and waits
/// for the GIV connection it provokes.
struct PushConnector {
    inner: Arc<Inner>,
    servent: Guid,
    index: u32,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<common::multisource::BoxStream>>>,
}

impl std::fmt::Debug for PushConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PushConnector({})", self.servent)
    }
}

impl common::multisource::Connector for PushConnector {
    fn connect(
        &self,
    ) -> common::multisource::BoxFuture<std::io::Result<common::multisource::BoxStream>> {
        let inner = Arc::clone(&self.inner);
        let (servent, index, rx) = (self.servent, self.index, Arc::clone(&self.rx));
        Box::pin(async move {
            let (ip, port) = match inner.local {
                SocketAddr::V4(a) => (*a.ip(), a.port()),
                SocketAddr::V6(a) => (std::net::Ipv4Addr::LOCALHOST, a.port()),
            };
            let routed = inner.servent().send_push(servent, index, ip, port);
            inner.pump();
            if !routed {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "no push route to the firewalled servent",
                ));
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.lock().await.recv()).await {
                Ok(Some(s)) => Ok(s),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no GIV after the push",
                )),
            }
        })
    }
}

/// One source of a file, as a search hit named it.
#[derive(Clone, Debug)]
pub struct HitSource {
    /// Responder address.
    pub addr: SocketAddrV4,
    /// File index on the responder.
    pub index: u32,
    /// File name.
    pub name: String,
    /// Responder's servent GUID (the Push route key).
    pub servent: Guid,
    /// The responder is firewalled: reach it with a Push.
    pub firewalled: bool,
}

/// Percent-encodes a file name for a `/get/<index>/<name>` URL (everything but RFC 3986 unreserved bytes).
pub fn encode_name(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Block size of a download of `size` bytes: about eight blocks (so several sources share even a small
/// file), between 64 KiB and 1 MiB.
fn block_size_for(size: u64) -> u32 {
    (size / 8).clamp(64 * 1024, 1 << 20) as u32
}

/// What a finished download used besides the sources it started with.
#[derive(Clone, Debug)]
pub struct DownloadOutcome {
    /// The multisource report (per-source bytes included).
    pub report: common::multisource::DownloadReport,
    /// Sources it started with.
    pub initial_sources: usize,
    /// Sources learned from `X-Alt` / `X-Gnutella-Alternate-Location` replies while it ran.
    pub from_alt: usize,
    /// Sources learned from hits of `urn:sha1:` re-queries.
    pub from_requery: usize,
    /// Re-queries sent.
    pub requeries: u32,
}

/// The download's bookkeeping of sources, so none is added twice.
struct SourceSet {
    urn: String,
    me: SocketAddrV4,
    /// Reachable sources already added (by address).
    direct: HashSet<SocketAddrV4>,
    /// Firewalled sources already added (by servent GUID).
    pushed: HashSet<Guid>,
    /// What we tell each source in `X-Alt`: every reachable location we know.
    alts: Vec<SocketAddrV4>,
}

impl Node {
    fn mesh(&self) -> MutexGuard<'_, Mesh> {
        self.inner.mesh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A source for a host that has the file, fetched by URN (`/uri-res/N2R?urn:sha1:...`), telling it the
    /// other locations we know (`X-Alt`), as gtk-gnutella's downloads do, so the mesh spreads.
    fn direct_source(
        &self,
        set: &mut SourceSet,
        a: SocketAddrV4,
    ) -> anyhow::Result<Option<common::multisource::Source>> {
        if a == set.me || !set.direct.insert(a) {
            return Ok(None);
        }
        let url = format!("http://{a}/uri-res/N2R?{}", set.urn);
        self.finish_source(common::multisource::Source::http(&url)?, set, Some(a))
            .map(Some)
    }

    fn finish_source(
        &self,
        src: common::multisource::Source,
        set: &SourceSet,
        itself: Option<SocketAddrV4>,
    ) -> anyhow::Result<common::multisource::Source> {
        let mut src = src.header("X-Gnutella-Content-URN", &set.urn)?;
        let others: Vec<SocketAddrV4> = set
            .alts
            .iter()
            .copied()
            .filter(|o| Some(*o) != itself)
            .collect();
        if !others.is_empty() {
            src = src.header("X-Alt", &format_x_alt(&others))?;
        }
        Ok(src)
    }

    /// A source for one search hit: reachable ones by index, firewalled ones through Push/GIV.
    fn hit_source(
        &self,
        set: &mut SourceSet,
        s: &HitSource,
    ) -> anyhow::Result<Option<common::multisource::Source>> {
        use common::multisource::Source;
        if !s.firewalled {
            if s.addr == set.me || !set.direct.insert(s.addr) {
                return Ok(None);
            }
            let url = format!("http://{}/get/{}/{}", s.addr, s.index, encode_name(&s.name));
            return self
                .finish_source(Source::http(&url)?, set, Some(s.addr))
                .map(Some);
        }
        if s.servent == self.guid() || !set.pushed.insert(s.servent) {
            return Ok(None);
        }
        let url = format!("http://{}/get/{}/{}", s.addr, s.index, encode_name(&s.name));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        self.inner
            .givs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.servent, tx);
        let c = PushConnector {
            inner: Arc::clone(&self.inner),
            servent: s.servent,
            index: s.index,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        self.finish_source(Source::with_connector(&url, Arc::new(c))?, set, None)
            .map(Some)
    }

    /// Downloads a file with `common::multisource`, verified against `sha1`, from every search hit in `hits`
    /// (firewalled ones through a Push and the GIV connection it provokes) and every host in `direct`
    /// (fetched by URN). While it runs, the alternate locations sources name (`X-Alt`) are added as
    /// sources, and when the downloader runs low on sources and `requery` is set, a `urn:sha1:` query
    /// (at most one per [`REQUERY_INTERVAL`], repeated while no new source turns up, at most
    /// [`MAX_REQUERIES`]) looks for more. Capped by the node's `--download-rate`.
    pub async fn download(
        &self,
        hits: &[HitSource],
        direct: &[SocketAddrV4],
        size: u64,
        sha1: [u8; 20],
        dest: PathBuf,
        requery: bool,
    ) -> anyhow::Result<DownloadOutcome> {
        use common::multisource::{Download, DownloadConfig, Event as DlEvent, ExpectedHash};
        let mut set = SourceSet {
            urn: crate::codec::message::sha1_urn(&sha1),
            me: self.inner.servent().config().addr,
            direct: HashSet::new(),
            pushed: HashSet::new(),
            alts: Vec::new(),
        };
        {
            // Everything we start with also goes into the mesh: our own uploads name it in `X-Alt`.
            let now = now();
            let mut mesh = self.mesh();
            for a in direct
                .iter()
                .chain(hits.iter().filter(|h| !h.firewalled).map(|h| &h.addr))
            {
                if *a != set.me {
                    mesh.add(now, sha1, *a);
                }
            }
        }
        // Known addresses first, so each source's X-Alt names all the others.
        for a in direct
            .iter()
            .chain(hits.iter().filter(|h| !h.firewalled).map(|h| &h.addr))
        {
            if *a != set.me && !set.alts.contains(a) {
                set.alts.push(*a);
            }
        }
        let mut list = Vec::new();
        for h in hits {
            if let Some(src) = self.hit_source(&mut set, h)? {
                list.push(src);
            }
        }
        for a in direct {
            if let Some(src) = self.direct_source(&mut set, *a)? {
                list.push(src);
            }
        }
        let initial_sources = list.len();
        let cfg = DownloadConfig {
            block_size: block_size_for(size),
            no_source_timeout: if requery {
                REQUERY_INTERVAL * 2
            } else {
                Duration::from_secs(5)
            },
            rate_limit: self.inner.cfg.download_rate.clone(),
            ..Default::default()
        };
        let (dl, adder, mut events) = Download::new(
            dest,
            size,
            ExpectedHash::Sha1(common::hash::Sha1Digest(sha1)),
            cfg,
            self.inner.stats.clone(),
        );
        let mut node_events = self.subscribe();
        let run = dl.run(list);
        tokio::pin!(run);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut low = false;
        let mut last_requery: Option<Instant> = None;
        let mut requery_guids: HashSet<Guid> = HashSet::new();
        let (mut from_alt, mut from_requery, mut requeries) = (0usize, 0usize, 0u32);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(ev) = events.recv() => match ev {
                    DlEvent::AltLocations { values, .. } => {
                        let alts: Vec<SocketAddrV4> = values.iter().flat_map(|v| parse_alt_locs(v)).collect();
                        for a in alts {
                            if a == set.me {
                                continue;
                            }
                            self.mesh().add(now(), sha1, a);
                            if !set.alts.contains(&a) {
                                set.alts.push(a);
                            }
                            if let Some(src) = self.direct_source(&mut set, a)? {
                                debug!(alt = %a, "source learned from X-Alt");
                                if adder.try_add(src) {
                                    from_alt += 1;
                                    low = false;
                                }
                            }
                        }
                    }
                    DlEvent::LowOnSources { live } => {
                        debug!(live, "low on sources");
                        low = true;
                    }
                    DlEvent::SourceFailed { url, dead: true, .. } => {
                        if let Some(a) = parse_alt_locs(&url).first() {
                            self.mesh().remove(&sha1, a);
                        }
                    }
                    _ => {}
                },
                Ok(ev) = node_events.recv(), if requery => {
                    let Event::Hit { query, hit, .. } = ev else { continue };
                    if !requery_guids.contains(&query) {
                        continue;
                    }
                    for r in &hit.results {
                        if r.file_size() != size || !r.ext.sha1s().contains(&sha1) {
                            continue;
                        }
                        let hs = HitSource {
                            addr: SocketAddrV4::new(hit.ip, hit.port),
                            index: r.index,
                            name: r.name.clone(),
                            servent: hit.servent,
                            firewalled: hit.firewalled(),
                        };
                        if let Some(src) = self.hit_source(&mut set, &hs)? {
                            debug!(source = %hs.addr, "source found by re-query");
                            if adder.try_add(src) {
                                from_requery += 1;
                                low = false;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    // Still low (no source added since): ask again, within the ration.
                    if requery
                        && low
                        && requeries < MAX_REQUERIES
                        && last_requery.is_none_or(|t| t.elapsed() >= REQUERY_INTERVAL)
                    {
                        last_requery = Some(Instant::now());
                        requeries += 1;
                        requery_guids.insert(self.search("", Some(sha1), REQUERY_TTL));
                        info!(urn = %set.urn, "re-query for more sources");
                    }
                }
            }
        };
        {
            let mut givs = self.inner.givs.lock().unwrap_or_else(|e| e.into_inner());
            for g in &set.pushed {
                givs.remove(g);
            }
        }
        Ok(DownloadOutcome {
            report: result?,
            initial_sources,
            from_alt,
            from_requery,
            requeries,
        })
    }
}

/// Whether we may connect back to `ip` for a Push: a routable address, or the address of a peer we are
/// connected to (gtk-gnutella's rule, so a Push cannot aim us at an arbitrary host).
fn push_target_allowed(ip: IpAddr, from_ip: Option<IpAddr>, connected: &[IpAddr]) -> bool {
    let private = match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(_) => true,
    };
    !private || Some(ip) == from_ip || connected.contains(&ip)
}

/// A Push named us: connect back and write `GIV <index>:<guid hex>/<name>\n\n`, then serve the GET that follows
/// on that socket.
async fn push_connect_back(
    inner: Arc<Inner>,
    push: crate::codec::message::Push,
    from_ip: Option<IpAddr>,
) {
    let connected: Vec<IpAddr> = inner.conns().values().map(|c| c.remote.ip()).collect();
    let ip = IpAddr::V4(push.ip);
    if !push_target_allowed(ip, from_ip, &connected) {
        warn!(%ip, "ignoring a Push to an address we have no business connecting to");
        inner.stats.error("push_refused");
        return;
    }
    let (Some(lib), Some(http)) = (inner.library.clone(), inner.http.clone()) else {
        return;
    };
    let Some(file) = lib.get(push.index) else {
        inner.stats.error("push_unknown_index");
        return;
    };
    let name = file.name().to_owned();
    let target = SocketAddr::new(ip, push.port);
    let res = async {
        let mut sock =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(target)).await??;
        let giv = format!("GIV {}:{}/{}\n\n", push.index, push.servent.to_hex(), name);
        sock.write_all(giv.as_bytes()).await?;
        inner.stats.msg_out("giv", giv.len());
        http.serve_connection(sock, target, inner.shutdown.clone())
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = res {
        debug!(cause = %e, %target, "push connect-back failed");
        inner.stats.error("push_connect_back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_targets_must_make_sense() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(push_target_allowed(lo, Some(lo), &[]));
        assert!(!push_target_allowed(other, Some(lo), &[lo]));
        assert!(push_target_allowed(other, None, &[other]));
        assert!(push_target_allowed("8.8.8.8".parse().unwrap(), None, &[]));
    }
}
