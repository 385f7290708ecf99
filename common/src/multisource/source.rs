//! Sources and the HTTP/1.1 range fetch of one block.
//!
//! Every source, whether we dial it or it reached us (Gnutella PUSH → `GIV`, KaZaA `GIVE`), is a
//! [`Connector`] that yields a byte stream; hyper's client connection API (`hyper::client::conn::http1`)
//! then speaks HTTP over it, so both kinds share one code path and keep-alive between the blocks of one
//! source. The request is `GET <path> HTTP/1.1` with `Range: bytes=a-b` (RFC 9110 §14) plus the source's
//! own headers; the answer must be `206` with `Content-Range: bytes a-b/size` exactly, or `200` when the
//! block is the whole file.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

/// A bidirectional byte stream a source is reached over.
pub trait SourceStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> SourceStream for T {}

/// A boxed [`SourceStream`].
pub type BoxStream = Box<dyn SourceStream>;

/// A boxed future, as returned by [`Connector::connect`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How to get a fresh connection to a source. Called for the first block and again whenever the previous
/// connection was closed (by the peer, an error, or our cancelling a request).
pub trait Connector: Send + Sync + fmt::Debug {
    /// Opens a stream to the source.
    fn connect(&self) -> BoxFuture<io::Result<BoxStream>>;
}

/// Dials a TCP address (the ordinary case).
#[derive(Debug, Clone)]
pub struct TcpConnector(pub SocketAddr);

impl Connector for TcpConnector {
    fn connect(&self) -> BoxFuture<io::Result<BoxStream>> {
        let addr = self.0;
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// Streams handed over by the caller: each `connect` takes the next one from a channel. This is the shape
/// of a firewalled source: the caller sends a Gnutella PUSH (or KaZaA push request), accepts the `GIV`/`GIVE`
/// connection, reads the `GIV` line itself and passes the socket here; the downloader then writes its `GET`
/// on it. `connect` waits for the next stream (bounded by the download's connect timeout) and fails once the
/// sending side is dropped and the channel is empty.
pub struct ChannelConnector {
    rx: Arc<Mutex<tokio::sync::mpsc::Receiver<BoxStream>>>,
}

impl fmt::Debug for ChannelConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelConnector")
    }
}

impl ChannelConnector {
    /// A connector and the sender through which the caller supplies connected streams.
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Sender<BoxStream>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            ChannelConnector {
                rx: Arc::new(Mutex::new(rx)),
            },
            tx,
        )
    }
}

impl Connector for ChannelConnector {
    fn connect(&self) -> BoxFuture<io::Result<BoxStream>> {
        let rx = self.rx.clone();
        Box::pin(async move {
            rx.lock().await.recv().await.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "no more pushed connections for this source",
                )
            })
        })
    }
}

/// Where to fetch the content from: a URL, extra request headers, and optionally a connector.
#[derive(Clone)]
pub struct Source {
    /// `http://host:port/path?query`. The path and query are sent in the request line and the authority
    /// as `Host`. For a pushed source the authority is only informative.
    pub url: Uri,
    /// Extra request headers (`X-Gnutella-Content-URN`, `X-Alt`, `X-Kazaa-Username`, ...).
    pub headers: HeaderMap,
    /// How to reach the source; `None` dials the URL's host and port over TCP.
    pub connector: Option<Arc<dyn Connector>>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.url)
            .field("headers", &self.headers.len())
            .field("pushed", &self.connector.is_some())
            .finish()
    }
}

impl Source {
    /// A source reached by dialling the URL (which must be `http://ip:port/...`).
    pub fn http(url: &str) -> Result<Self, SourceError> {
        let url: Uri = url
            .parse()
            .map_err(|_| SourceError::BadUrl(url.to_owned()))?;
        Self::check(&url)?;
        Ok(Source {
            url,
            headers: HeaderMap::new(),
            connector: None,
        })
    }

    /// A source reached through `connector` (a pushed connection); `url` gives the path to request.
    pub fn with_connector(url: &str, connector: Arc<dyn Connector>) -> Result<Self, SourceError> {
        let mut s = Self::http(url)?;
        s.connector = Some(connector);
        Ok(s)
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, SourceError> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SourceError::BadHeader(name.to_owned()))?;
        let v =
            HeaderValue::from_str(value).map_err(|_| SourceError::BadHeader(name.to_owned()))?;
        self.headers.append(n, v);
        Ok(self)
    }

    fn check(url: &Uri) -> Result<(), SourceError> {
        if url.scheme_str() != Some("http") || url.authority().is_none() {
            return Err(SourceError::BadUrl(url.to_string()));
        }
        Ok(())
    }

    /// The connector to use: the given one, or TCP to the URL's `ip:port` (port 80 by default).
    pub(crate) fn connector(&self) -> Result<Arc<dyn Connector>, SourceError> {
        if let Some(c) = &self.connector {
            return Ok(c.clone());
        }
        let auth = self
            .url
            .authority()
            .ok_or_else(|| SourceError::BadUrl(self.url.to_string()))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| SourceError::BadUrl(self.url.to_string()))?;
        Ok(Arc::new(TcpConnector(SocketAddr::new(
            ip,
            auth.port_u16().unwrap_or(80),
        ))))
    }
}

/// A source description we cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not an `http://ip:port/path` URL (host names are not resolved: peers advertise addresses).
    #[error("unusable source URL {0:?} (want http://ip:port/path)")]
    BadUrl(String),
    /// A header name or value that HTTP does not allow.
    #[error("invalid request header {0:?}")]
    BadHeader(String),
}

/// Why one block fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    BadSource(SourceError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("remotely queued (503), retry after {0:?}")]
    Queued(Duration),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("bad Content-Range {got:?} for bytes {start}-{end}")]
    BadRange { got: String, start: u64, end: u64 },
    #[error("source ignores Range (200 for a partial request)")]
    NoRanges,
    #[error("source says it serves {0}, not the content we want")]
    WrongContent(String),
    #[error("body too long: more than {0} bytes")]
    TooLong(u64),
    #[error("body ended after {got} of {want} bytes")]
    Short { got: u64, want: u64 },
}

impl FetchError {
    /// Whether the source should be dropped at once (it is wrong, not unlucky).
    pub(crate) fn is_fatal(&self) -> bool {
        match self {
            FetchError::BadRange { .. }
            | FetchError::NoRanges
            | FetchError::WrongContent(_)
            | FetchError::TooLong(_)
            | FetchError::BadSource(_) => true,
            FetchError::Status(s) => matches!(s.as_u16(), 400..=499),
            _ => false,
        }
    }

    /// The stats error kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            FetchError::Connect(_) | FetchError::BadSource(_) => "download_connect",
            FetchError::Timeout(_) => "download_timeout",
            FetchError::Http(_) | FetchError::Short { .. } => "download_io",
            FetchError::Queued(_) => "download_remote_queued",
            FetchError::Status(_) => "download_status",
            FetchError::BadRange { .. } | FetchError::NoRanges | FetchError::TooLong(_) => {
                "download_bad_range"
            }
            FetchError::WrongContent(_) => "download_wrong_content",
        }
    }
}

/// An open HTTP/1.1 connection to a source, reused for its next block (keep-alive).
pub(crate) struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
}

/// What a fetch needs besides the source.
#[derive(Clone, Debug)]
pub(crate) struct FetchParams {
    pub(crate) size: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) default_retry_after: Duration,
    pub(crate) max_retry_after: Duration,
    /// `urn:sha1:<BASE32>` when the expected hash is a SHA-1: a source announcing another URN is wrong.
    pub(crate) urn: Option<String>,
    /// The download's rate cap, charged for every body chunk received.
    pub(crate) rate_limit: Option<crate::ratelimit::RateLimiter>,
}

/// Extra facts from a response the caller may want (alternate locations).
#[derive(Debug, Default)]
pub(crate) struct ResponseInfo {
    /// Alternate locations named by the response, unless `alt_sink` already took them.
    pub(crate) alt_locs: Vec<String>,
    /// Where alternate locations go as soon as a response head names them (the body of a slow source may
    /// take long, and other sources are what the caller needs then): the event channel and this source's id.
    pub(crate) alt_sink: Option<(tokio::sync::mpsc::Sender<super::Event>, usize)>,
    /// Bytes of the response head, approximately (for message statistics).
    pub(crate) head_bytes: usize,
    pub(crate) status: u16,
}

/// Opens a connection to `source`.
async fn connect(source: &Source, p: &FetchParams) -> Result<Conn, FetchError> {
    let connector = source.connector().map_err(FetchError::BadSource)?;
    let stream = tokio::time::timeout(p.connect_timeout, connector.connect())
        .await
        .map_err(|_| FetchError::Timeout("connecting"))?
        .map_err(FetchError::Connect)?;
    let (sender, conn) =
        tokio::time::timeout(p.connect_timeout, http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| FetchError::Timeout("in the HTTP handshake"))??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(cause = %e, "source connection ended");
        }
    });
    Ok(Conn { sender })
}

/// Fetches `range` from `source`, reusing `conn` when it is still open, and calls `on_chunk` with every
/// body chunk. Returns the connection if it can carry another request, and the outcome.
pub(crate) async fn fetch_range(
    source: &Source,
    conn: Option<Conn>,
    range: std::ops::Range<u64>,
    p: &FetchParams,
    info: &mut ResponseInfo,
    on_chunk: &mut (dyn FnMut(&[u8]) + Send),
) -> (Option<Conn>, Result<(), FetchError>) {
    let mut conn = match conn {
        Some(c) if !c.sender.is_closed() => c,
        _ => match connect(source, p).await {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        },
    };
    let r = request(&mut conn, source, range, p, info, on_chunk).await;
    let reusable = r.is_ok() && !conn.sender.is_closed();
    (reusable.then_some(conn), r)
}

async fn request(
    conn: &mut Conn,
    source: &Source,
    range: std::ops::Range<u64>,
    p: &FetchParams,
    info: &mut ResponseInfo,
    on_chunk: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), FetchError> {
    let want = range.end - range.start;
    tokio::time::timeout(p.stall_timeout, conn.sender.ready())
        .await
        .map_err(|_| FetchError::Timeout("waiting for the connection"))??;
    let path = source
        .url
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut req = Request::get(path);
    if let Some(a) = source.url.authority() {
        req = req.header(http::header::HOST, a.as_str());
    }
    // An empty file has no byte range to ask for: plain GET.
    if want > 0 {
        req = req.header(
            http::header::RANGE,
            format!("bytes={}-{}", range.start, range.end - 1),
        );
    }
    let mut req = req
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::Status(StatusCode::BAD_REQUEST))?;
    for (k, v) in &source.headers {
        req.headers_mut().append(k, v.clone());
    }
    let resp = tokio::time::timeout(p.stall_timeout, conn.sender.send_request(req))
        .await
        .map_err(|_| FetchError::Timeout("waiting for the response"))??;
    let status = resp.status();
    info.status = status.as_u16();
    info.head_bytes = 16
        + resp
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if let (Some(want_urn), Some(got)) = (
        &p.urn,
        resp.headers()
            .get("x-gnutella-content-urn")
            .and_then(|v| v.to_str().ok()),
    ) {
        // The header may list several URNs (sha1, bitprint); ours must be among the sha1 ones if any.
        let sha1s: Vec<&str> = got
            .split(',')
            .map(str::trim)
            .filter(|u| u.len() > 9 && u[..9].eq_ignore_ascii_case("urn:sha1:"))
            .collect();
        if !sha1s.is_empty()
            && !sha1s
                .iter()
                .any(|u| u[9..].eq_ignore_ascii_case(&want_urn[9..]))
        {
            return Err(FetchError::WrongContent(got.to_owned()));
        }
    }
    // Alternate locations are trusted only once the content URN matched (notes §5); a busy (503) source
    // still hands them out, which is what spreads a flash crowd over the mesh.
    for name in ["x-alt", "x-gnutella-alternate-location"] {
        for v in resp.headers().get_all(name) {
            if let Ok(s) = v.to_str() {
                info.alt_locs.push(s.to_owned());
            }
        }
    }
    if let Some((tx, id)) = &info.alt_sink {
        if !info.alt_locs.is_empty() {
            // `try_send` like every event: a caller that lags misses them; the download never waits for it.
            let _ = tx.try_send(super::Event::AltLocations {
                id: *id,
                values: std::mem::take(&mut info.alt_locs),
            });
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let wait = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
            .unwrap_or(p.default_retry_after)
            .min(p.max_retry_after);
        return Err(FetchError::Queued(wait));
    }
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let cr = resp
                .headers()
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if parse_content_range(cr) != Some((range.start, range.end - 1, Some(p.size))) {
                return Err(FetchError::BadRange {
                    got: cr.to_owned(),
                    start: range.start,
                    end: range.end.saturating_sub(1),
                });
            }
        }
        StatusCode::OK if range.start == 0 && want == p.size => {}
        StatusCode::OK => return Err(FetchError::NoRanges),
        s => return Err(FetchError::Status(s)),
    }
    if let Some(len) = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len != want {
            return Err(FetchError::BadRange {
                got: format!("Content-Length: {len}"),
                start: range.start,
                end: range.end.saturating_sub(1),
            });
        }
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    loop {
        let frame = tokio::time::timeout(p.stall_timeout, body.frame())
            .await
            .map_err(|_| FetchError::Timeout("for body bytes (stalled)"))?;
        let Some(frame) = frame else { break };
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            got += data.len() as u64;
            if got > want {
                return Err(FetchError::TooLong(want));
            }
            on_chunk(&data);
            if let Some(limit) = &p.rate_limit {
                limit.acquire(data.len() as u64).await;
            }
        }
    }
    if got != want {
        return Err(FetchError::Short { got, want });
    }
    Ok(())
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `bytes a-b/total` (or `bytes a-b/*`) → `(a, b, total)`. RFC 9110 §14.4.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.trim().split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    if a > b {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a, b, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes 9-0/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn source_urls() {
        assert!(Source::http("http://127.0.0.1:6346/get/1/a.mp3").is_ok());
        assert!(Source::http("ftp://127.0.0.1/x").is_err());
        assert!(Source::http("not a url").is_err());
        let s = Source::http("http://example.com/x").unwrap();
        assert!(s.connector().is_err(), "host names are not resolved");
        assert!(Source::http("http://127.0.0.1/x")
            .unwrap()
            .header("X-Alt", "bad\nvalue")
            .is_err());
    }

    proptest! {
        #[test]
        fn content_range_never_panics(s in ".{0,64}") {
            let _ = parse_content_range(&s);
            let _ = parse_retry_after(&s);
        }

        #[test]
        fn content_range_round_trip(a in 0u64..1 << 40, len in 1u64..1 << 30, extra in 0u64..10) {
            let b = a + len - 1;
            let t = b + 1 + extra;
            prop_assert_eq!(parse_content_range(&format!("bytes {a}-{b}/{t}")), Some((a, b, Some(t))));
        }
    }
}
