//! HTTP/1.1 front end (hyper): `GET /announce` (BEP 3), `GET /scrape` (BEP 48), `GET /stats` (JSON, or an
//! HTML table with `?format=html` or `Accept: text/html`). One task per connection in a `conn` span; a
//! semaphore caps connections; hyper refuses request heads above [`super::MAX_HTTP_HEAD`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Shared, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_HTTP_HEAD};
use crate::codec::http::write_failure;

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            p = slots.clone().acquire_owned() => p?,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving.
                    tracing::warn!(cause = %e, "accept failed");
                    shared.stats.error("accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // No TCP_NODELAY: each reply leaves in one writev and the previous one is always acknowledged by
        // the next request, so Nagle never holds a reply back; skipping it saves a syscall per connection.
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, peer, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(MAX_HTTP_HEAD)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!(cause = %e, "connection ended with an error");
                    },
                    _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn handle(shared: &Shared, peer: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let uri = req.uri();
    let query = uri.query().unwrap_or("").as_bytes();
    let in_bytes = uri.path().len() + query.len();
    let mut out = Vec::with_capacity(256);
    match uri.path() {
        "/announce" => {
            let o = shared
                .service()
                .http_announce(Instant::now(), peer, query, &mut out);
            tracing::trace!(kind = o.kind, error = ?o.error, "announce");
            shared.count(o, in_bytes, out.len());
            reply(StatusCode::OK, "text/plain", out)
        }
        "/scrape" => {
            let o = shared.service().http_scrape(query, &mut out);
            shared.count(o, in_bytes, out.len());
            reply(StatusCode::OK, "text/plain", out)
        }
        "/stats" | "/stats.html" | "/stats.json" => {
            let html = uri.path() == "/stats.html"
                || (uri.path() == "/stats"
                    && (uri.query().is_some_and(|q| q.contains("format=html"))
                        || req
                            .headers()
                            .get(ACCEPT)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|a| a.contains("text/html"))));
            shared.stats.msg_in("stats", in_bytes);
            let body = if html {
                super::stats_html(shared).into_bytes()
            } else {
                serde_json::to_vec_pretty(&super::stats_json(shared)).unwrap_or_default()
            };
            shared.stats.msg_out("stats_reply", body.len());
            let ctype = if html {
                "text/html; charset=utf-8"
            } else {
                "application/json"
            };
            reply(StatusCode::OK, ctype, body)
        }
        _ => {
            shared.stats.error("not_found");
            write_failure(&mut out, "unknown path: use /announce, /scrape or /stats");
            reply(StatusCode::NOT_FOUND, "text/plain", out)
        }
    }
}
