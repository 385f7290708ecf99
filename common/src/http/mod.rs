//! The HTTP/1.1 byte-range file server every file-sharing protocol plugs its URLs into (hyper 1.x).
//!
//! Gnutella 0.6 (draft §3 "file transfer": `GET /get/<index>/<name>`, `/uri-res/N2R?urn:sha1:...`) and
//! KaZaA/FastTrack (`GET /.hash=<hex>`) transfer files over plain HTTP with byte ranges. This module does the
//! HTTP part once; a protocol crate supplies a [`Router`] that maps a request to a file or a reply and adds its
//! own headers (`X-Gnutella-Content-URN`, `X-Alt`, `X-Kazaa-*`, repeated `X-KazaaTag`).
//!
//! What the server does (RFC 9110 / 9112):
//! - `GET` and `HEAD` (anything else: `405` with `Allow: GET, HEAD`); `Accept-Ranges: bytes`, `Last-Modified`,
//!   `Content-Length` on every file reply.
//! - One `Range` (`bytes=a-b`, `a-`, `-n`) gives `206` with `Content-Range`; an unsatisfiable one `416` with
//!   `Content-Range: bytes */total`; garbage or several ranges are ignored (`200`, whole file), see [`range`].
//!   `If-Range` is honoured with the `Last-Modified` date (any other validator: whole file).
//! - Persistent connections for HTTP/1.1, close for HTTP/1.0 unless it asks for keep-alive, and
//!   `Connection: close` when the router asks for it (KaZaA).
//! - Upload slots: at most [`HttpConfig::upload_slots`] file bodies at once, else `503` with `Retry-After`.
//!   Optional per-connection and global rate caps ([`crate::ratelimit`]).
//! - Defences: header block capped ([`HttpConfig::max_header_bytes`], hyper answers `431`), slow header senders
//!   cut off ([`HttpConfig::header_read_timeout`]), connections on which nothing moves in either direction
//!   closed ([`HttpConfig::idle_timeout`]: frees the slot of a client that stopped reading), connection count
//!   capped. Each is logged and counted in [`Stats`] errors.
//!
//! Stats: every request is `msg_in("http_request", head bytes)`, every reply `msg_out("http_response", head
//! bytes)` (head sizes are recomputed from the parsed request/built reply, hyper does not expose the raw
//! bytes); file payload goes to `transfers.upload_bytes` and the uploads counters. An upload counts as
//! completed once its last byte is handed to the connection (the socket may still be flushing it), and as
//! failed when the body is dropped before that (peer gone, timeout, read error). A 503 counts as refused.
//! Errors by kind: `http_header_timeout`, `http_idle_timeout`, `http_head_too_large`, `http_malformed`,
//! `http_connection`, `http_range_unsatisfiable`, `http_range_ignored`, `http_file_open`,
//! `http_file_changed`, `http_file_read`, `http_too_many_connections`, `http_accept`.
//!
//! Not done: multipart/byteranges (several ranges are answered with the whole file, as RFC 9110 allows);
//! hyper answers malformed requests (`400`) and oversized heads (`431`) itself, so those replies carry no
//! router headers; no `sendfile` (hyper writes from user-space buffers, see `docs/BENCHMARKS.md`).
//!
//! [`HttpServer::serve`] runs a listening socket; [`HttpServer::serve_connection`] serves one stream that is
//! already established (a Gnutella servent that connected out and wrote `GIV`, or KaZaA's shared port wrapped
//! in [`Prefixed`] so the bytes already read are replayed).

pub mod body;
pub mod io;
pub mod range;
pub mod router;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::body::ReplyBody;
pub use self::io::{IdleTimeout, Prefixed};
pub use self::range::RangeOutcome;
pub use self::router::{
    ExtraHeaders, FileReply, Reply, RequestInfo, Route, Router, MAX_REPLY_BODY,
};

use self::body::FileSource;
use crate::ratelimit::RateLimiter;
use crate::stats::Stats;

/// Smallest header cap hyper accepts (its read buffer cannot be smaller).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Tunables of the server. `Default` suits a lab node; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Concurrent file bodies (upload slots); further GETs get `503`. 0 means no limit.
    pub upload_slots: usize,
    /// `Retry-After` seconds sent with a `503`.
    pub retry_after: Duration,
    /// Cap on the payload rate of each connection, bytes per second.
    pub per_connection_rate: Option<u64>,
    /// Cap shared by every upload of this server (and of any other server given a clone of it).
    pub global_rate: Option<RateLimiter>,
    /// Bytes read from the file per chunk. Large chunks mean fewer syscalls and wakeups.
    pub chunk_size: usize,
    /// Cap on the request head (request line + headers), at least [`MIN_HEADER_BYTES`]; beyond it hyper
    /// answers `431`.
    pub max_header_bytes: usize,
    /// Cap on the number of request headers (beyond it: `431`).
    pub max_headers: usize,
    /// Time a client has to send a whole request head once it started one (slowloris defence).
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved in either direction for this long is closed: idle keep-alive
    /// connections and clients that stopped reading. Must exceed the longest rate-limit wait (a few hundred
    /// milliseconds at any rate above 2 KiB/s).
    pub idle_timeout: Duration,
    /// Cap on open connections; beyond it new ones are closed at once (and logged).
    pub max_connections: usize,
    /// `Server` header value, if any.
    pub server_header: Option<String>,
    /// On shutdown, how long running transfers may finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            upload_slots: 8,
            retry_after: Duration::from_secs(60),
            per_connection_rate: None,
            global_rate: None,
            chunk_size: 256 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            server_header: Some(concat!("p2p-lab/", env!("CARGO_PKG_VERSION")).to_owned()),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Why a connection ended badly (it is also logged and counted; callers mostly just log it).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The client took longer than [`HttpConfig::header_read_timeout`] to send a request head.
    #[error("request head not received in time")]
    HeaderTimeout,
    /// Nothing moved on the connection for [`HttpConfig::idle_timeout`].
    #[error("connection idle too long: {0}")]
    Idle(std::io::Error),
    /// The request head was larger than [`HttpConfig::max_header_bytes`] (the client got `431`).
    #[error("request head too large")]
    HeadTooLarge,
    /// The request was not valid HTTP/1.x (the client got `400`).
    #[error("malformed request: {0}")]
    Malformed(hyper::Error),
    /// Any other connection failure (reset by peer, file read error mid-body, ...).
    #[error("connection failed: {0}")]
    Connection(hyper::Error),
}

impl HttpError {
    fn kind(&self) -> &'static str {
        match self {
            HttpError::HeaderTimeout => "http_header_timeout",
            HttpError::Idle(_) => "http_idle_timeout",
            HttpError::HeadTooLarge => "http_head_too_large",
            HttpError::Malformed(_) => "http_malformed",
            HttpError::Connection(_) => "http_connection",
        }
    }

    fn classify(e: hyper::Error) -> HttpError {
        if e.is_parse_too_large() {
            return HttpError::HeadTooLarge;
        }
        if e.is_parse() {
            return HttpError::Malformed(e);
        }
        if e.is_timeout() {
            return HttpError::HeaderTimeout;
        }
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return HttpError::Idle(std::io::Error::new(io.kind(), io.to_string()));
                }
            }
            src = s.source();
        }
        HttpError::Connection(e)
    }
}

struct Shared {
    router: Box<dyn Router>,
    config: HttpConfig,
    stats: Stats,
    slots: Option<Arc<Semaphore>>,
    connections: Arc<Semaphore>,
}

/// A file server: router, configuration, upload slots and stats, shared by every connection it serves.
/// Cheap to clone.
#[derive(Clone)]
pub struct HttpServer(Arc<Shared>);

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

/// Serves `listener` with `router` until `shutdown` is cancelled (see [`HttpServer::serve`]).
pub async fn serve(
    listener: TcpListener,
    router: impl Router,
    config: HttpConfig,
    stats: Stats,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    HttpServer::new(router, config, stats)
        .serve(listener, shutdown)
        .await
}

impl HttpServer {
    /// A server for `router`; uploads and requests are counted in `stats`.
    pub fn new(router: impl Router, config: HttpConfig, stats: Stats) -> Self {
        let slots =
            (config.upload_slots > 0).then(|| Arc::new(Semaphore::new(config.upload_slots)));
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        HttpServer(Arc::new(Shared {
            router: Box::new(router),
            config,
            stats,
            slots,
            connections,
        }))
    }

    /// Upload slots free right now (`None` when unlimited).
    pub fn free_slots(&self) -> Option<usize> {
        self.0.slots.as_ref().map(|s| s.available_permits())
    }

    /// Accepts connections on `listener` and serves each on its own task until `shutdown` is cancelled; then
    /// stops accepting, lets running replies finish for [`HttpConfig::shutdown_grace`] and cuts the rest.
    /// Connections beyond [`HttpConfig::max_connections`] are closed as soon as they are accepted.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (sock, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(cause = %e, "accept failed");
                    self.0.stats.error("http_accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.0.connections).try_acquire_owned() else {
                tracing::warn!(%peer, "too many HTTP connections, closing a new one");
                self.0.stats.error("http_too_many_connections");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let server = self.clone();
            let token = shutdown.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let _ = server.serve_connection(sock, peer, token).await;
            });
        }
        drop(listener);
        let grace = tokio::time::sleep(self.0.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => {
                    tracing::info!(left = tasks.len(), "cutting HTTP connections still open after the grace period");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
                next = tasks.join_next() => if next.is_none() { break },
            }
        }
        Ok(())
    }

    /// Serves HTTP/1.x on one established stream until the client or the router closes it, it times out,
    /// or `shutdown` is cancelled (the reply in progress is finished first). Logs and counts how it ended.
    ///
    /// Upload slots and the global rate cap are shared with every other connection of this server; the
    /// connection cap of [`HttpServer::serve`] is not applied (the caller owns this stream).
    pub async fn serve_connection<I>(
        &self,
        io: I,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), HttpError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = tracing::info_span!("http", %peer);
        self.serve_connection_inner(io, peer, shutdown)
            .instrument(span)
            .await
    }

    async fn serve_connection_inner<I>(
        &self,
        io: I,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), HttpError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = &self.0.config;
        let stats = &self.0.stats;
        stats.add_gauge("http_connections", 1);
        tracing::debug!("connection open");
        let conn_limit = cfg.per_connection_rate.map(RateLimiter::new);
        let server = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            let conn_limit = conn_limit.clone();
            async move { Ok::<_, Infallible>(server.handle(req, peer, conn_limit).await) }
        });
        let io = TokioIo::new(IdleTimeout::new(io, cfg.idle_timeout));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes.max(MIN_HEADER_BYTES))
            .max_headers(cfg.max_headers)
            // Servents of the era wrote `Content-Length`, not `content-length`; header names are
            // case-insensitive, but a capture should look like the real thing.
            .title_case_headers(true)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let res = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        stats.add_gauge("http_connections", -1);
        match res {
            Ok(()) => {
                tracing::debug!("connection closed");
                Ok(())
            }
            Err(e) => {
                let e = HttpError::classify(e);
                stats.error(e.kind());
                match &e {
                    HttpError::Connection(_) => tracing::debug!(cause = %e, "connection ended"),
                    _ => tracing::info!(cause = %e, "connection closed"),
                }
                Err(e)
            }
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn_limit: Option<RateLimiter>,
    ) -> Response<ReplyBody> {
        let stats = &self.0.stats;
        let info = RequestInfo {
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned()),
            version: req.version(),
            headers: req.headers().clone(),
            peer,
        };
        stats.msg_in("http_request", request_head_len(&info));
        tracing::debug!(method = %info.method, target = %info.target, "request");
        let resp = if info.method != Method::GET && info.method != Method::HEAD {
            let mut r = Reply::status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers.push("Allow", "GET, HEAD");
            self.reply(&info, r)
        } else {
            match self.0.router.route(&info) {
                Route::Reply(r) => self.reply(&info, r),
                Route::File(f) => self.file(&info, f, conn_limit).await,
            }
        };
        stats.msg_out("http_response", response_head_len(&resp));
        tracing::debug!(status = resp.status().as_u16(), "reply");
        resp
    }

    fn base(
        &self,
        status: StatusCode,
        extra: &ExtraHeaders,
        close: bool,
    ) -> http::response::Builder {
        let mut b = Response::builder().status(status);
        if let Some(h) = b.headers_mut() {
            if let Some(s) = &self.0.config.server_header {
                if let Ok(v) = HeaderValue::from_str(s) {
                    h.insert(header::SERVER, v);
                }
            }
            extra.apply(h);
            if close {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        b
    }

    fn reply(&self, info: &RequestInfo, r: Reply) -> Response<ReplyBody> {
        let mut body = r.body;
        body.truncate(MAX_REPLY_BODY);
        let mut b = self.base(r.status, &r.headers, r.close);
        if let Some(reason) = &r.reason {
            match hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()) {
                Ok(p) => b = b.extension(p),
                Err(_) => tracing::warn!(reason, "invalid reason phrase, using the standard one"),
            }
        }
        if let Some(h) = b.headers_mut() {
            if !h.contains_key(header::CONTENT_TYPE) {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let body = if info.method == Method::HEAD {
            ReplyBody::empty()
        } else {
            ReplyBody::bytes(body)
        };
        b.body(body).unwrap_or_else(|e| internal_error(&e))
    }

    async fn file(
        &self,
        info: &RequestInfo,
        f: FileReply,
        conn_limit: Option<RateLimiter>,
    ) -> Response<ReplyBody> {
        let stats = &self.0.stats;
        let cfg = &self.0.config;
        let opened = {
            let path = f.path.clone();
            let file = f.opened.clone();
            tokio::task::spawn_blocking(move || open_regular(&path, file))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let (file, total, mtime) = match opened {
            Ok(x) => x,
            Err(e) => {
                tracing::info!(path = %f.path.display(), cause = %e, "routed file cannot be opened");
                stats.error("http_file_open");
                return self.reply(info, with_headers(Reply::not_found(), &f));
            }
        };
        if let Some(expected) = f.size {
            if expected != total {
                tracing::warn!(path = %f.path.display(), expected, actual = total, "file changed since it was indexed");
                stats.error("http_file_changed");
                return self.reply(info, with_headers(Reply::not_found(), &f));
            }
        }
        let last_modified = mtime.map(httpdate::fmt_http_date);
        let range_header = info.headers.get(header::RANGE).map(HeaderValue::as_bytes);
        let if_range_ok = match info.headers.get(header::IF_RANGE) {
            None => true,
            Some(v) => last_modified
                .as_deref()
                .is_some_and(|lm| v.as_bytes() == lm.as_bytes()),
        };
        let outcome = if if_range_ok {
            range::evaluate(range_header, total)
        } else {
            RangeOutcome::Full
        };
        if range_header.is_some() && outcome == RangeOutcome::Full && if_range_ok {
            tracing::debug!(
                range = ?info.headers.get(header::RANGE),
                "ignoring a Range header we do not serve (garbage or several ranges): 200 with the whole file"
            );
            stats.error("http_range_ignored");
        }
        let Some((offset, len)) = outcome.span(total) else {
            stats.error("http_range_unsatisfiable");
            let mut r = Reply::status(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers = f.headers.clone();
            r.headers
                .push("Content-Range", range::unsatisfied_range(total));
            r.close = f.close;
            return self.reply(info, r);
        };
        let status = match outcome {
            RangeOutcome::Partial { .. } => StatusCode::PARTIAL_CONTENT,
            _ => StatusCode::OK,
        };
        let mut b = self.base(status, &f.headers, f.close);
        if let Some(h) = b.headers_mut() {
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let ct = f
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            if let Ok(v) = HeaderValue::from_str(ct) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Some(lm) = last_modified
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                h.insert(header::LAST_MODIFIED, lm);
            }
            if let RangeOutcome::Partial { start, end } = outcome {
                if let Ok(v) = HeaderValue::from_str(&range::content_range(start, end, total)) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        if info.method == Method::HEAD {
            return b
                .body(ReplyBody::empty())
                .unwrap_or_else(|e| internal_error(&e));
        }
        let permit = match &self.0.slots {
            // Unlimited slots: a private one-permit semaphore, so the body type stays the same.
            None => Arc::new(Semaphore::new(1)).try_acquire_owned().ok(),
            Some(s) => Arc::clone(s).try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            stats.transfers(|t| t.uploads_refused += 1);
            tracing::info!(path = %f.path.display(), "all upload slots busy: 503");
            let mut r = Reply::with_reason(StatusCode::SERVICE_UNAVAILABLE, "Busy");
            r.headers = f.headers.clone();
            r.headers
                .push("Retry-After", cfg.retry_after.as_secs().max(1).to_string());
            r.close = f.close;
            return self.reply(info, r);
        };
        stats.transfers(|t| t.uploads_started += 1);
        tracing::info!(path = %f.path.display(), offset, len, "upload");
        let limits = conn_limit
            .into_iter()
            .chain(cfg.global_rate.clone())
            .collect();
        let src = FileSource {
            file,
            offset,
            len,
            chunk_size: cfg.chunk_size.max(4096),
            limits,
        };
        b.body(ReplyBody::file(src, stats.clone(), permit))
            .unwrap_or_else(|e| internal_error(&e))
    }
}

fn with_headers(mut r: Reply, f: &FileReply) -> Reply {
    r.headers = f.headers.clone();
    r.close = f.close;
    r
}

fn internal_error(e: &http::Error) -> Response<ReplyBody> {
    tracing::error!(cause = %e, "could not build a reply");
    let mut r = Response::new(ReplyBody::empty());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// Opens a regular file (not a directory or device), unless the router did, and returns its size and
/// modification time.
fn open_regular(
    path: &Path,
    opened: Option<Arc<std::fs::File>>,
) -> std::io::Result<(Arc<std::fs::File>, u64, Option<SystemTime>)> {
    let file = match opened {
        Some(f) => f,
        None => Arc::new(std::fs::File::open(path)?),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta.len(), meta.modified().ok()))
}

fn headers_len(h: &HeaderMap) -> usize {
    h.iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum::<usize>()
        + 2
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// Size of the request head as it was on the wire (reconstructed; header order and case do not matter).
fn request_head_len(r: &RequestInfo) -> usize {
    r.method.as_str().len()
        + 1
        + r.target.len()
        + 1
        + version_str(r.version).len()
        + 2
        + headers_len(&r.headers)
}

/// Size of the reply head as hyper writes it (`HTTP/1.1 NNN Reason\r\n`, headers, blank line; hyper's own
/// `date` header included).
fn response_head_len(r: &Response<ReplyBody>) -> usize {
    let reason = r
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|p| p.as_bytes().len())
        .unwrap_or_else(|| r.status().canonical_reason().map_or(0, str::len));
    const DATE: usize = "date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".len();
    "HTTP/1.1 200 ".len() + reason + 2 + headers_len(r.headers()) + DATE
}
