//! The tokio shell around [`crate::protocol::Server`]: sockets, one task pair per connection, bounded output
//! queues, flood throttling by pausing reads, the login-timeout timer and the metaserver redirect (notes §1).
//!
//! One [`Server`] sits behind a read-write lock that is never held across an `.await`: searches (the
//! bulk of a loaded server's work) run under the shared side, several at once
//! ([`Server::search_shared`]); everything else takes it exclusively. A connection's reader decodes
//! frames as a stream (split or packed frames both work; an oversized header closes only that connection),
//! hands each to the server, then routes every queued [`Transmit`] to the connections' output queues. A
//! queue that is full means its client stopped reading: that client is dropped as dead (OpenNap's
//! `client_queue_length`), and nobody else waits for it. Slow work never runs under the mutex: Argon2 jobs
//! and account-store writes (append + fsync, one batch at a time) run on the blocking pool and report back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use common::stats::{LinkDir, Stats};

use crate::codec::msg::ty;
use crate::codec::{Frame, FrameBatch, HEADER_LEN, MAX_CLIENT_PAYLOAD};
use crate::protocol::accounts::AccountLog;
use crate::protocol::{search_delivered, ConnId, PasswordJob, PersistJob, Server, Transmit};

pub mod client;

/// Items (single frames, or a whole search reply as one batch) one connection may have queued for writing
/// before it is considered dead. A full browse (500 entries) or three full searches fit comfortably.
pub const OUTPUT_QUEUE_FRAMES: usize = 2048;

/// Sockets accepted beyond the protocol's `max_connections`, so the excess clients still get OpenNap's
/// "server is full" message; past this they are dropped at once.
pub const EXTRA_SOCKETS: usize = 64;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 4096;

/// Bytes of encoded frames written to a socket in one call at most.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a writer may take to flush after its connection ended before it is abandoned.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// Stats name of a message type: the decimal type number, as the lab expects.
pub fn type_name(t: u16) -> Cow<'static, str> {
    macro_rules! known {
        ($($n:literal),*) => {
            match t { $($n => Cow::Borrowed(stringify!($n)),)* _ => Cow::Owned(t.to_string()) }
        };
    }
    known!(
        0, 2, 3, 4, 6, 7, 8, 9, 10, 100, 102, 110, 200, 201, 202, 203, 204, 205, 206, 207, 208,
        209, 210, 211, 212, 213, 214, 218, 219, 220, 221, 301, 302, 303, 400, 401, 402, 403, 404,
        405, 406, 407, 408, 409, 410, 500, 501, 600, 601, 603, 604, 605, 607, 608, 617, 618, 621,
        700, 703, 748, 750, 751, 752, 870, 10300
    )
}

/// One item of a connection's output queue.
enum Out {
    Frame(Frame),
    /// Frames encoded by the protocol (a search's results and its 202), written as they are.
    Batch(FrameBatch),
}

struct Shared {
    server: Server,
    conns: HashMap<ConnId, mpsc::Sender<Out>>,
    /// Cancelled to end a connection dropped as dead: its socket is reset and its queue freed at once,
    /// since a writer stuck on a client that stopped reading would otherwise hold both forever.
    kills: HashMap<ConnId, CancellationToken>,
    next_id: u64,
}

/// Forgets a connection whose client stopped reading and ends its task (see [`Shared::kills`]).
fn drop_dead(g: &mut Shared, stats: &Stats, now: std::time::Instant, c: ConnId) {
    warn!(conn = c.0, "output queue full, dropping client");
    stats.error("output_queue_full");
    g.conns.remove(&c);
    if let Some(kill) = g.kills.remove(&c) {
        kill.cancel();
    }
    g.server.on_disconnect(now, c);
}

/// Handle on the running server state, shared by all connection tasks.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<RwLock<Shared>>,
    /// The account store's disk side: only the one persist job out at a time uses it.
    log: Arc<Mutex<AccountLog>>,
    stats: Stats,
}

/// Work to start once the server's lock is released.
#[derive(Default)]
struct Jobs {
    passwords: Vec<PasswordJob>,
    persist: Option<PersistJob>,
}

impl Hub {
    /// Wraps a protocol server whose accounts live in memory only.
    pub fn new(server: Server, stats: Stats) -> Self {
        Hub::with_account_log(server, AccountLog::in_memory(), stats)
    }

    /// Wraps a protocol server; account records go to `log`.
    pub fn with_account_log(server: Server, log: AccountLog, stats: Stats) -> Self {
        Hub {
            inner: Arc::new(RwLock::new(Shared {
                server,
                conns: HashMap::new(),
                kills: HashMap::new(),
                next_id: 1,
            })),
            log: Arc::new(Mutex::new(log)),
            stats,
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Shared> {
        // A panic in one handler must not take the whole server down with a poisoned lock.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `frame` if it is a logged-in user's search, under the shared lock, and queues the reply;
    /// returns the flood pause to apply, or `None` if the frame needs [`Hub::with`].
    fn search(&self, id: ConnId, frame: &Frame) -> Option<Option<std::time::Instant>> {
        let now = Instant::now().into_std();
        let (full, pause) = {
            let g = self.read();
            let batch = g.server.search_shared(now, id, frame)?;
            let full = g
                .conns
                .get(&id)
                .is_some_and(|tx| tx.try_send(Out::Batch(batch)).is_err());
            (full, g.server.read_pause(id, now))
        };
        if full {
            // The client is not reading: drop it, as `route` does.
            let now = Instant::now().into_std();
            let jobs = {
                let mut g = self.lock();
                drop_dead(&mut g, &self.stats, now, id);
                finish(&mut g, &self.stats, now)
            };
            self.spawn_jobs(jobs);
        }
        Some(pause)
    }

    /// Runs `f` on the protocol server, then routes what it queued and starts any password or persist
    /// work it asked for on a blocking thread, so neither an Argon2 check nor an fsync holds the lock other
    /// clients need.
    fn with<R>(&self, f: impl FnOnce(&mut Server, std::time::Instant) -> R) -> R {
        let now = Instant::now().into_std();
        let (r, jobs) = {
            let mut g = self.lock();
            let r = f(&mut g.server, now);
            (r, finish(&mut g, &self.stats, now))
        };
        self.spawn_jobs(jobs);
        r
    }

    fn spawn_jobs(&self, jobs: Jobs) {
        if let Some(job) = jobs.persist {
            let hub = self.clone();
            tokio::spawn(async move {
                let log = hub.log.clone();
                let job = Arc::new(job);
                let records = job.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.write(&records.records).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("account writer failed: {e}")));
                if outcome.is_err() {
                    hub.stats.error("account_store");
                }
                let job = Arc::try_unwrap(job).unwrap_or_else(|j| (*j).clone());
                hub.with(|s, now| s.persist_done(now, job, outcome));
            });
        }
        for job in jobs.passwords {
            let hub = self.clone();
            tokio::spawn(async move {
                let conn = job.conn();
                match tokio::task::spawn_blocking(move || job.run()).await {
                    Ok(outcome) => hub.with(|s, now| s.password_done(now, conn, outcome)),
                    Err(e) => tracing::error!(cause = %e, "password job failed"),
                }
            });
        }
    }

    /// Updates the gauges (users, files, connections) in the stats record.
    pub fn update_gauges(&self) {
        let g = self.read();
        self.stats.set_gauge("users", g.server.users() as i64);
        self.stats
            .set_gauge("shared_files", g.server.files() as i64);
        self.stats
            .set_gauge("connections", g.server.connections() as i64);
    }

    /// Waits (up to `limit`) until every account record queued so far is on disk: the last logout times
    /// at shutdown.
    pub async fn settle_accounts(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let jobs = {
                let now = Instant::now().into_std();
                let mut g = self.lock();
                if g.server.persist_idle() {
                    return;
                }
                finish(&mut g, &self.stats, now)
            };
            self.spawn_jobs(jobs);
            if Instant::now() >= deadline {
                warn!("account store not settled at shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Routes queued output and collects queued password and persist jobs (to start once the lock is released).
fn finish(g: &mut Shared, stats: &Stats, now: std::time::Instant) -> Jobs {
    route(g, stats, now);
    let mut jobs = Jobs::default();
    while let Some(j) = g.server.poll_password_job() {
        jobs.passwords.push(j);
    }
    jobs.persist = g.server.poll_persist();
    jobs
}

fn route(g: &mut Shared, stats: &Stats, now: std::time::Instant) {
    while let Some(t) = g.server.poll_transmit() {
        let (c, item) = match t {
            Transmit::Frame(c, f) => (c, Out::Frame(f)),
            Transmit::Batch(c, b) => (c, Out::Batch(b)),
            Transmit::Close(c) => {
                // Dropping the sender lets the writer flush what is queued, then close.
                g.conns.remove(&c);
                continue;
            }
        };
        let Some(tx) = g.conns.get(&c) else { continue };
        if tx.try_send(item).is_err() {
            // The client is not reading (or its writer is gone): drop it, as OpenNap does.
            drop_dead(g, stats, now, c);
        }
    }
}

/// Accepts clients on `listener` until `shutdown` is cancelled, then waits for the connections to finish.
pub async fn run(
    listener: TcpListener,
    hub: Hub,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let sockets = Arc::new(Semaphore::new(max_connections + EXTRA_SOCKETS));
    let timer_hub = hub.clone();
    let timer_stop = shutdown.clone();
    tracker.spawn(async move {
        // While the index compacts the timer runs every few milliseconds; the gauges need not.
        let mut gauges_at = Instant::now();
        loop {
            let next = timer_hub.read().server.poll_timeout();
            let one_sec = Instant::now() + Duration::from_secs(1);
            let at = next
                .map(Instant::from_std)
                .map_or(one_sec, |t| t.min(one_sec));
            tokio::select! {
                _ = timer_stop.cancelled() => break,
                _ = tokio::time::sleep_until(at) => {}
            }
            timer_hub.with(|s, now| s.handle_timeout(now));
            if gauges_at.elapsed() >= Duration::from_secs(1) {
                gauges_at = Instant::now();
                timer_hub.update_gauges();
            }
        }
    });
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Running out of descriptors must not end the server; back off briefly.
                    warn!(cause = %e, "accept failed");
                    hub.stats.error("accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = sockets.clone().try_acquire_owned() else {
            hub.stats.error("socket_cap");
            drop(stream);
            continue;
        };
        let hub = hub.clone();
        let stop = shutdown.clone();
        let span = info_span!("conn", peer = %addr);
        tracker.spawn(
            async move {
                connection(hub, stream, addr, stop).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    hub.settle_accounts(WRITER_GRACE).await;
    let log = hub.log.clone();
    let folded =
        tokio::task::spawn_blocking(move || log.lock().unwrap_or_else(|e| e.into_inner()).fold())
            .await;
    if let Ok(Err(e)) = folded {
        warn!(cause = %e, "account log not folded into the snapshot at shutdown");
    }
    hub.update_gauges();
    Ok(())
}

async fn connection(hub: Hub, stream: TcpStream, addr: SocketAddr, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE_FRAMES);
    let done = CancellationToken::new();
    let kill = CancellationToken::new();
    let (id, searches) = {
        let now = Instant::now().into_std();
        let mut g = hub.lock();
        let id = ConnId(g.next_id);
        g.next_id += 1;
        g.conns.insert(id, tx);
        g.kills.insert(id, kill.clone());
        g.server.on_connect(now, id, ip);
        let searches = g.server.search_counter(id).unwrap_or_default();
        route(&mut g, &hub.stats, now);
        (id, searches)
    };
    hub.stats.add_gauge("connections_accepted", 1);
    // Every accepted session is a client's link to the index (users, and clients not logged in yet).
    let _link = hub.stats.link_guard(addr, LinkDir::In, "client");
    debug!(conn = id.0, "connected");
    let mut writer = tokio::spawn(
        write_loop(wr, rx, hub.stats.clone(), searches, done.clone())
            .instrument(tracing::Span::current()),
    );
    tokio::select! {
        r = read_loop(&rd, &hub, id) => if let Err(e) = r { debug!(conn = id.0, cause = %e, "read ended") },
        _ = done.cancelled() => {}
        _ = kill.cancelled() => {}
        _ = shutdown.cancelled() => {}
    }
    hub.with(|s, now| s.on_disconnect(now, id));
    {
        let mut g = hub.lock();
        g.conns.remove(&id);
        g.kills.remove(&id);
    }
    if kill.is_cancelled() {
        // Dropped as dead: a reset, not a FIN queued behind data it will never read, and the queue goes
        // with the writer now rather than after the grace period.
        let _ = rd.as_ref().set_zero_linger();
        writer.abort();
    } else if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    debug!(conn = id.0, "closed");
}

#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("peer closed")]
    Eof,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
}

async fn read_loop(rd: &OwnedReadHalf, hub: &Hub, id: ConnId) -> Result<(), ReadEnd> {
    // The buffer exists only while bytes are pending: ten thousand idle users then hold no read buffer.
    let mut buf = BytesMut::new();
    loop {
        loop {
            let (frame, used) = match Frame::decode(&buf) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    hub.stats.error("decode");
                    return Err(e.into());
                }
            };
            buf.advance(used);
            hub.stats.msg_in(type_name(frame.ty), used);
            tracing::trace!(conn = id.0, ty = frame.ty, "frame in");
            let pause = match hub.search(id, &frame) {
                Some(pause) => pause,
                None => hub.with(|s, now| {
                    s.handle_frame(now, id, frame);
                    s.read_pause(id, now)
                }),
            };
            if let Some(until) = pause {
                // Flood control: stop reading (the kernel buffer then pushes back on the client).
                hub.stats.error("flood_throttled");
                tokio::time::sleep_until(Instant::from_std(until)).await;
            }
        }
        if buf.is_empty() && buf.capacity() > 0 {
            buf = BytesMut::new();
        }
        rd.readable().await?;
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK + HEADER_LEN + MAX_CLIENT_PAYLOAD);
        }
        match rd.try_read_buf(&mut buf) {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

async fn write_loop(
    wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    stats: Stats,
    searches: Arc<AtomicU32>,
    done: CancellationToken,
) {
    let mut out = wr;
    // Items queued together are encoded into one buffer and written with one call; the buffer is
    // released when the connection goes idle, so idle users hold no write buffer. Stats are tallied per
    // type locally and recorded once per write: the stats lock is shared by every connection.
    let mut bytes = BytesMut::new();
    let mut tally = OutTally::default();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // A batch that is all there is to write (a search reply on an otherwise quiet connection, the
        // usual case) is written from its own buffer, not copied into `bytes` first.
        let mut lone: Option<FrameBatch> = None;
        while let Some(item) = next {
            if let Some(l) = lone.take() {
                bytes.extend_from_slice(l.as_bytes());
            }
            match item {
                Out::Frame(f) => {
                    let before = bytes.len();
                    if f.encode(&mut bytes).is_err() {
                        stats.error("encode");
                    } else {
                        tally.add(f.ty, bytes.len() - before);
                    }
                }
                Out::Batch(b) => {
                    for (t, n) in b.headers() {
                        tally.add(t, n);
                    }
                    if bytes.is_empty() {
                        lone = Some(b);
                    } else {
                        bytes.extend_from_slice(b.as_bytes());
                    }
                }
            }
            if bytes.len() + lone.as_ref().map_or(0, |l| l.as_bytes().len()) >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        let wire = match &lone {
            Some(l) => l.as_bytes(),
            None => &bytes[..],
        };
        if out.write_all(wire).await.is_err() {
            break;
        }
        // The pending-search count is an atomic shared with the protocol: no second lock per search.
        for _ in 0..tally.flush(&stats) {
            search_delivered(&searches);
        }
        bytes = BytesMut::new();
    }
    let _ = out.shutdown().await;
    done.cancel();
}

/// Frames written since the last flush, by type: (type, count, bytes). A handful of types per write.
#[derive(Default)]
struct OutTally(Vec<(u16, u64, usize)>);

impl OutTally {
    fn add(&mut self, t: u16, wire_len: usize) {
        match self.0.iter_mut().find(|e| e.0 == t) {
            Some(e) => {
                e.1 += 1;
                e.2 += wire_len;
            }
            None => self.0.push((t, 1, wire_len)),
        }
    }

    /// Records the tally in `stats` and returns how many 202s (finished searches) it held.
    fn flush(&mut self, stats: &Stats) -> u64 {
        let mut ends = 0;
        for (t, count, n) in self.0.drain(..) {
            stats.msg_out_many(type_name(t), count, n);
            if t == ty::SEARCH_END {
                ends += count;
            }
        }
        ends
    }
}

/// The metaserver (notes §1): every connection gets one line `host:port\n` naming the real server, then
/// is closed.
pub async fn run_metaserver(
    listener: TcpListener,
    target: SocketAddr,
    stats: Stats,
    shutdown: CancellationToken,
) {
    let line = format!("{}:{}\n", target.ip(), target.port());
    loop {
        let mut stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(cause = %e, "metaserver accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let line = line.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            stats.msg_out("metaserver", line.len());
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = stream.write_all(line.as_bytes()).await;
                let _ = stream.shutdown().await;
                // Drain briefly so the close is a FIN, not an RST, for clients that sent something.
                let mut sink = [0u8; 256];
                let _ = stream.read(&mut sink).await;
            })
            .await;
        });
    }
}

/// Logs the start of a server (kept here so the binary stays a thin CLI).
pub fn log_started(addr: SocketAddr) {
    info!(%addr, "napster server listening");
}
