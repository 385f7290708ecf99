//! HTTP/1.x front end of the tracker port: `GET /announce` (BEP 3), `GET /scrape` (BEP 48), `GET /stats`
//! (JSON, or an HTML table with `?format=html`, `/stats.html` or `Accept: text/html`).
//!
//! Why not a general HTTP server: an announce is one small request and one small reply, and with a new
//! connection per announce (what most clients and opentracker do) the per-connection cost is the whole
//! cost. So the accept loop accepts in bursts (`accept4` with `SOCK_NONBLOCK`, no extra `fcntl`), reads the
//! request straight away (with `TCP_DEFER_ACCEPT` on the listener it is already there), answers in one
//! `write` and closes: four system
//! calls per request, no task, no registration with the reactor. Only a connection whose request has not
//! arrived yet, is incomplete, wants keep-alive or could not take the whole reply becomes a task (in a
//! `conn` span) that waits for it with [`HEADER_TIMEOUT`] / [`KEEPALIVE_IDLE`]. A semaphore caps those
//! tasks at [`MAX_CONNECTIONS`].
//!
//! Bad input never panics: a head over [`MAX_HEAD_LEN`] bytes gets a bencoded `failure reason` (HTTP 200,
//! so clients show the text), a head that is not HTTP gets one with status 400, then the connection closes
//! after the reply (with a short lingering read so the client sees the reply rather than a reset).

use std::io::{ErrorKind, Read as _};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Shared, HEADER_TIMEOUT, MAX_CONNECTIONS};
use crate::codec::head::{parse_head, write_reply, Head, HeadError, MAX_HEAD_LEN};
use crate::codec::http::write_failure;

/// Connections accepted per readiness event before letting other tasks run.
const ACCEPT_BURST: usize = 64;
/// A keep-alive connection with no new request for this long is closed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// After a reply that ends the connection, unread input is drained for at most this long and this many
/// bytes, so the client reads the reply instead of getting a reset for the bytes it sent.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;
/// Read size of a connection task. An announce head is 300-500 bytes; every kept-alive connection holds
/// this buffer while it waits, so it is sized for one request rather than for throughput.
const READ_CHUNK: usize = 1024;

/// What to do with a connection once everything received so far is answered.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Wait for the next request.
    KeepOpen,
    /// Close once the reply is out.
    Close,
    /// Close once the reply is out, draining unread input first (the reply is an error).
    CloseLingering,
}

/// Answers every complete request at the start of `inbuf` (pipelining), appending the replies to `out`
/// and removing the requests from `inbuf`.
fn answer_all(
    shared: &Shared,
    peer: SocketAddr,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> After {
    let mut used = 0;
    let mut after = After::KeepOpen;
    loop {
        match parse_head(&inbuf[used..]) {
            Ok(Some(head)) => {
                used += head.len;
                answer(shared, peer, &head, out, body);
                if !head.keep_alive {
                    after = After::Close;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                shared.stats.msg_in("invalid", inbuf.len() - used);
                shared.stats.error(match e {
                    HeadError::TooLarge => "head_too_large",
                    HeadError::TooManyHeaders => "too_many_headers",
                    HeadError::Malformed => "bad_http",
                });
                body.clear();
                write_failure(body, &e.to_string());
                // An oversized announce is still a tracker request: 200 so the client shows the reason.
                let status = if e == HeadError::Malformed { 400 } else { 200 };
                write_reply(out, status, "text/plain", body, false, false, false);
                shared.stats.msg_out("error_reply", body.len());
                used = inbuf.len();
                after = After::CloseLingering;
                break;
            }
        }
    }
    inbuf.drain(..used);
    after
}

/// Answers one request.
fn answer(
    shared: &Shared,
    peer: SocketAddr,
    head: &Head<'_>,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    let in_bytes = head.path.len() + head.query.len();
    body.clear();
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        shared.stats.error("bad_method");
        write_failure(body, "only GET is served here");
        write_reply(
            out,
            405,
            "text/plain",
            body,
            head.http10,
            head.keep_alive,
            false,
        );
        return;
    }
    let (status, ctype) = match head.path {
        "/announce" => {
            let o = shared
                .service()
                .http_announce(Instant::now(), peer, head.query, body);
            tracing::trace!(kind = o.kind, error = ?o.error, "announce");
            shared.count(o, in_bytes, body.len());
            (200, "text/plain")
        }
        "/scrape" => {
            let o = shared
                .service()
                .http_scrape(Instant::now(), head.query, body);
            shared.count(o, in_bytes, body.len());
            (200, "text/plain")
        }
        "/stats" | "/stats.html" | "/stats.json" => {
            let html = head.path == "/stats.html"
                || (head.path == "/stats"
                    && (head.query.windows(11).any(|w| w == b"format=html") || head.wants_html));
            shared.stats.msg_in("stats", in_bytes);
            if html {
                body.extend_from_slice(super::stats_html(shared).as_bytes());
            } else {
                let _ = serde_json::to_writer_pretty(&mut *body, &super::stats_json(shared));
            }
            shared.stats.msg_out("stats_reply", body.len());
            let ctype = if html {
                "text/html; charset=utf-8"
            } else {
                "application/json"
            };
            (200, ctype)
        }
        _ => {
            shared.stats.error("not_found");
            write_failure(body, "unknown path: use /announce, /scrape or /stats");
            (404, "text/plain")
        }
    };
    write_reply(
        out,
        status,
        ctype,
        body,
        head.http10,
        head.keep_alive,
        head_only,
    );
}

/// Per-accept-loop scratch buffers, reused for every connection answered on the fast path.
struct Scratch {
    /// Receive buffer, always [`MAX_HEAD_LEN`] + 1 bytes (one more than a head may take, so an oversized
    /// head is seen as such); never re-zeroed.
    recv: Box<[u8]>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    body: Vec<u8>,
}

/// A connection that needs waiting for: what is left to send and what was received but not answered.
struct Pending {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    after: After,
}

/// What the fast path made of a connection.
enum Fresh {
    /// Answered and closed (or gone).
    Done,
    /// Nothing received yet.
    Empty(std::net::TcpStream, SocketAddr),
    /// Needs the slow path.
    Pending(Pending),
}

/// Serves a connection without blocking: reads what is there, answers it, writes the replies.
fn serve_fresh(
    shared: &Shared,
    mut stream: std::net::TcpStream,
    peer: SocketAddr,
    s: &mut Scratch,
) -> Fresh {
    let n = match stream.read(&mut s.recv) {
        Ok(0) => return Fresh::Done,
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => return Fresh::Empty(stream, peer),
        Err(e) => {
            tracing::debug!(%peer, cause = %e, "read failed");
            return Fresh::Done;
        }
    };
    s.inbuf.clear();
    s.out.clear();
    s.inbuf.extend_from_slice(&s.recv[..n]);
    let after = answer_all(shared, peer, &mut s.inbuf, &mut s.out, &mut s.body);
    let mut written = 0;
    if !s.out.is_empty() {
        // When the connection closes right after, `MSG_MORE` holds the reply back for the FIN that `close`
        // queues next, so reply and FIN leave in one segment: one loopback/wire delivery and one ACK fewer
        // per connection (the kernel flushes at close, so nothing waits).
        let flags = if after == After::Close {
            SendFlags::MORE | SendFlags::NOSIGNAL
        } else {
            SendFlags::NOSIGNAL
        };
        match rustix::net::send(&stream, &s.out, flags).map_err(std::io::Error::from) {
            Ok(w) => written = w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(%peer, cause = %e, "write failed");
                return Fresh::Done;
            }
        }
    }
    if written == s.out.len() && after == After::Close {
        return Fresh::Done;
    }
    Fresh::Pending(Pending {
        stream,
        peer,
        inbuf: s.inbuf.clone(),
        out: s.out[written..].to_vec(),
        after,
    })
}

/// The slow path: one task per connection that has to wait.
async fn serve_pending(shared: Arc<Shared>, p: Pending, shutdown: CancellationToken) {
    let Pending {
        stream,
        peer,
        mut inbuf,
        mut out,
        mut after,
    } = p;
    let Ok(mut stream) = tokio::net::TcpStream::from_std(stream) else {
        return;
    };
    let mut body = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                tracing::debug!(cause = %e, "write failed");
                return;
            }
            out.clear();
        }
        match after {
            After::KeepOpen => {}
            After::Close => return,
            After::CloseLingering => {
                let _ = stream.shutdown().await;
                let mut drained = 0;
                let _ = tokio::time::timeout(LINGER, async {
                    while drained < LINGER_BYTES {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => drained += n,
                        }
                    }
                })
                .await;
                return;
            }
        }
        // Idle between requests, the header timeout once a request has started.
        let limit = if inbuf.is_empty() {
            KEEPALIVE_IDLE
        } else {
            HEADER_TIMEOUT
        };
        let room = (MAX_HEAD_LEN + 1).saturating_sub(inbuf.len()).max(1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(limit, stream.read(&mut chunk[..room.min(READ_CHUNK)])) => r,
        };
        match read {
            Err(_) => {
                if !inbuf.is_empty() {
                    shared.stats.error("header_timeout");
                }
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Err(e)) => {
                tracing::debug!(cause = %e, "read failed");
                return;
            }
            Ok(Ok(n)) => inbuf.extend_from_slice(&chunk[..n]),
        }
        after = answer_all(&shared, peer, &mut inbuf, &mut out, &mut body);
    }
}

/// A connection accepted before its request arrived, retried on the accept loop's next wake-ups.
struct Early {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// Connections waiting for their request on the accept loop; more go to tasks.
const EARLY_MAX: usize = 256;
/// How long a connection may wait on the accept loop before it becomes a task. A client sends its request
/// right after the handshake, and the listener's `TCP_DEFER_ACCEPT` (`super::sockopt`) hands connections
/// over once it is in, so this only catches a request split over segments or a client silent past the
/// defer time: retrying the read at the next wake-up costs one `recv`, where a task costs a reactor
/// registration and removal (two `epoll_ctl`), a wake-up and a task.
const EARLY_WAIT: Duration = Duration::from_millis(2);

fn spawn_pending(
    shared: &Arc<Shared>,
    pending: Pending,
    permit: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) {
    let peer = pending.peer;
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(
        async move {
            serve_pending(shared, pending, shutdown).await;
            drop(permit);
        }
        .instrument(tracing::debug_span!("conn", %peer)),
    );
}

fn empty_pending(stream: std::net::TcpStream, peer: SocketAddr) -> Pending {
    Pending {
        stream,
        peer,
        inbuf: Vec::new(),
        out: Vec::new(),
        after: After::KeepOpen,
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` type may close or swap its descriptor
    // while registered; a `std::net::TcpListener` owned by the `AsyncFd` keeps one open descriptor for
    // its whole life, which is exactly the contract of the `unsafe` replacement (forbidden in this crate).
    #[allow(deprecated)]
    let listener = AsyncFd::new(listener.into_std()?)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut scratch = Scratch {
        recv: vec![0u8; MAX_HEAD_LEN + 1].into_boxed_slice(),
        inbuf: Vec::with_capacity(MAX_HEAD_LEN + 1),
        out: Vec::with_capacity(1024),
        body: Vec::with_capacity(1024),
    };
    let mut early: std::collections::VecDeque<Early> = std::collections::VecDeque::new();
    loop {
        // Wait for a free task slot first, so a full server leaves connections in the accept queue.
        let permit: OwnedSemaphorePermit = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            p = slots.clone().acquire_owned() => p?,
        };
        let mut ready = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.readable() => Some(r?),
            _ = tokio::time::sleep(EARLY_WAIT / 2), if !early.is_empty() => None,
        };
        // Connections accepted earlier first: their request has had time to arrive.
        let now = Instant::now();
        for _ in 0..early.len() {
            let Some(e) = early.pop_front() else { break };
            let _span = tracing::debug_span!("conn", peer = %e.peer).entered();
            match serve_fresh(&shared, e.stream, e.peer, &mut scratch) {
                Fresh::Done => {}
                Fresh::Pending(p) => spawn_pending(&shared, p, e.permit, &shutdown),
                Fresh::Empty(stream, peer) if now.duration_since(e.since) >= EARLY_WAIT => {
                    spawn_pending(&shared, empty_pending(stream, peer), e.permit, &shutdown)
                }
                Fresh::Empty(stream, peer) => early.push_back(Early {
                    stream,
                    peer,
                    permit: e.permit,
                    since: e.since,
                }),
            }
        }
        let Some(ready) = ready.as_mut() else {
            continue;
        };
        let mut permit = Some(permit);
        let mut drained = false;
        for _ in 0..ACCEPT_BURST {
            let p = match permit.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            let (fd, addr) = match rustix::net::acceptfrom_with(listener.get_ref().as_fd(), flags) {
                Ok(x) => x,
                Err(Errno::AGAIN) => {
                    ready.clear_ready();
                    drained = true;
                    break;
                }
                Err(Errno::INTR | Errno::CONNABORTED) => {
                    permit = Some(p);
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving.
                    tracing::warn!(cause = %e, "accept failed");
                    shared.stats.error("accept");
                    drained = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            };
            let Some(peer) = addr.and_then(|a| SocketAddr::try_from(a).ok()) else {
                continue;
            };
            let stream = std::net::TcpStream::from(fd);
            let _span = tracing::debug_span!("conn", %peer).entered();
            match serve_fresh(&shared, stream, peer, &mut scratch) {
                Fresh::Done => {}
                Fresh::Pending(pending) => spawn_pending(&shared, pending, p, &shutdown),
                Fresh::Empty(stream, peer) if early.len() < EARLY_MAX => early.push_back(Early {
                    stream,
                    peer,
                    permit: p,
                    since: Instant::now(),
                }),
                Fresh::Empty(stream, peer) => {
                    spawn_pending(&shared, empty_pending(stream, peer), p, &shutdown)
                }
            }
        }
        if !drained {
            // A full burst: let the other tasks (UDP, timers, slow connections) run before accepting more.
            tokio::task::yield_now().await;
        }
    }
}
