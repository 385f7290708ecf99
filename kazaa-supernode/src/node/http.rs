//! The ON's HTTP side (`shared/protocols/kazaa.md` §4): `GET /.hash=<40 hex>` with `Range`, answered
//! through `common::http` (206/404/400, upload slots with `503` + `Retry-After`, `Connection: close`)
//! with `X-Kazaa-Username`, `X-Kazaa-Network`, `X-Kazaa-IP`, `X-Kazaa-SupernodeIP` and one
//! `X-KazaaTag` per tag — the hash as `3==<base64>`; the filename is never sent (giFT).
//!
//! Before a file is served, the requester passes the participation-level upload queue
//! ([`crate::protocol::upload_queue`]): when the slots are busy or owed to better-placed waiters it
//! gets `503` + `Retry-After` + `X-Kazaa-QueuePosition`, and the next free slot goes to the waiting
//! requester with the highest `X-Kazaa-XferUid` level.

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::hash::UuHash;
use common::http::{ExtraHeaders, FileReply, HttpServer, Reply, RequestInfo, Route, Router};
use common::library::Library;
use common::stats::Stats;
use http::{Method, StatusCode};

use crate::codec::tag::code;
use crate::protocol::upload_queue::{parse_level, Admission, PeerKey, UploadQueue};

/// Header carrying a queued requester's place in line (re-created; 1 = next).
pub const QUEUE_POSITION_HEADER: &str = "X-Kazaa-QueuePosition";
/// Header carrying the requester's participation level (0–1000), read by the uploader's queue.
pub const PARTICIPATION_HEADER: &str = "X-Kazaa-XferUid";

/// The upload queue in front of an [`HttpServer`]'s slots.
pub struct QueueGate {
    queue: Mutex<UploadQueue>,
    retry_after: Duration,
    server: OnceLock<HttpServer>,
    stats: Stats,
}

impl QueueGate {
    /// A gate telling queued requesters to come back after `retry_after`; a waiter silent for twice
    /// that (plus 2 s of slack) loses its place.
    pub fn new(retry_after: Duration, stats: Stats) -> Arc<Self> {
        Arc::new(QueueGate {
            queue: Mutex::new(UploadQueue::new(retry_after * 2 + Duration::from_secs(2))),
            retry_after,
            server: OnceLock::new(),
            stats,
        })
    }

    /// The server whose free slots the gate hands out (set once, after the server is built).
    pub fn attach(&self, server: HttpServer) {
        let _ = self.server.set(server);
    }

    fn admit(&self, req: &RequestInfo) -> Admission {
        let free = self
            .server
            .get()
            .and_then(HttpServer::free_slots)
            .unwrap_or(usize::MAX);
        let key = PeerKey::new(
            req.peer.ip(),
            req.header("X-Kazaa-Username").unwrap_or_default(),
        );
        let level = parse_level(req.header(PARTICIPATION_HEADER));
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request(key, level, free, Instant::now())
    }
}

/// Routes `/.hash=` requests to the shared folder.
pub struct KazaaRouter {
    lib: Option<Arc<Library>>,
    user: String,
    network: String,
    me: SocketAddrV4,
    sn: Arc<Mutex<Option<SocketAddrV4>>>,
    gate: Option<Arc<QueueGate>>,
}

impl KazaaRouter {
    /// A router for `lib` (`None`: nothing shared), advertising `me` and (once known) the SN in `sn`.
    pub fn new(
        lib: Option<Arc<Library>>,
        user: &str,
        network: &str,
        me: SocketAddrV4,
        sn: Arc<Mutex<Option<SocketAddrV4>>>,
    ) -> Self {
        KazaaRouter {
            lib,
            user: user.to_owned(),
            network: network.to_owned(),
            me,
            sn,
            gate: None,
        }
    }

    /// Puts `gate` in front of every file GET.
    pub fn with_queue(mut self, gate: Arc<QueueGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn headers(&self) -> ExtraHeaders {
        let mut h = ExtraHeaders::new();
        h.push("X-Kazaa-Username", &self.user);
        h.push("X-Kazaa-Network", &self.network);
        h.push("X-Kazaa-IP", self.me.to_string());
        let sn = *self.sn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sn) = sn {
            h.push("X-Kazaa-SupernodeIP", sn.to_string());
        }
        h
    }
}

impl Router for KazaaRouter {
    fn route(&self, req: &RequestInfo) -> Route {
        let path = req.path();
        let Some(rest) = path.strip_prefix("/.hash=") else {
            let mut r = Reply::bad_request("Bad Request");
            r.headers = self.headers();
            r.close = true;
            return Route::Reply(r);
        };
        let lib = self.lib.as_deref();
        let found = UuHash::from_hex(rest).and_then(|h| lib?.by_uuhash(&h).map(|f| (h, f)));
        let (Some(lib), Some((hash, file))) = (lib, found) else {
            let mut r = Reply::not_found();
            r.headers = self.headers();
            r.close = true;
            return Route::Reply(r);
        };
        if let (Some(gate), true) = (&self.gate, req.method == Method::GET) {
            let place = match gate.admit(req) {
                Admission::Go => None,
                Admission::Queued { position, .. } => Some(Some(position)),
                Admission::Full => Some(None),
            };
            if let Some(position) = place {
                gate.stats.transfers(|t| t.uploads_refused += 1);
                tracing::info!(peer = %req.peer, ?position, "upload queued: 503");
                let mut r = Reply::with_reason(StatusCode::SERVICE_UNAVAILABLE, "Busy");
                r.headers = self.headers();
                r.headers
                    .push("Retry-After", gate.retry_after.as_secs().max(1).to_string());
                if let Some(p) = position {
                    r.headers.push(QUEUE_POSITION_HEADER, p.to_string());
                }
                r.close = true;
                return Route::Reply(r);
            }
        }
        match lib.open_file(file) {
            Ok((fd, p)) => {
                let mut reply = FileReply::opened(fd, p);
                reply.size = Some(file.size);
                let mut h = self.headers();
                h.push(
                    "X-KazaaTag",
                    format!("{}={}", code::HASH, hash.to_sig2dat()),
                );
                reply.headers = h;
                reply.close = true;
                Route::File(reply)
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared file not served");
                Route::Reply(Reply::not_found())
            }
        }
    }
}
