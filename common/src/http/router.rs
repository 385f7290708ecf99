//! How a protocol crate plugs its URLs into the server: the [`Router`] trait and what it returns.
//!
//! The server never turns a requested name into a path itself. A router resolves the request through
//! [`crate::library`] / [`crate::safe_path`] and answers either "serve this file" ([`FileReply`]) or "reply
//! with this status" ([`Reply`]). Extra headers (Gnutella's `X-Gnutella-Content-URN`, `X-Alt`; KaZaA's
//! `X-Kazaa-*` and one `X-KazaaTag` per tag) travel with either answer, and the server adds them to every
//! reply it makes for that request, including its own 416 and 503.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// Longest body a [`Reply`] may carry: replies are error pages and small documents, not files.
pub const MAX_REPLY_BODY: usize = 64 * 1024;

/// What the router sees of a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `GET`, `HEAD`, ... (the server answers anything but GET and HEAD with 405 before routing).
    pub method: Method,
    /// The request target as sent: path and query, still percent-encoded (e.g. `/get/3/a%20b.mp3`,
    /// `/uri-res/N2R?urn:sha1:...`).
    pub target: String,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Request headers (names case-insensitive, repeated names kept).
    pub headers: HeaderMap,
    /// The remote peer.
    pub peer: SocketAddr,
}

impl RequestInfo {
    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query part of the target (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Extra response headers, in order; a name may repeat (KaZaA sends one `X-KazaaTag` per tag).
#[derive(Debug, Clone, Default)]
pub struct ExtraHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl ExtraHeaders {
    /// No extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header, keeping any earlier one of the same name. Names and values that are not valid HTTP
    /// (control characters, newlines) are dropped with a warning rather than corrupting the reply.
    pub fn push(&mut self, name: &str, value: impl AsRef<str>) -> &mut Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            (Ok(n), Ok(v)) => self.0.push((n, v)),
            _ => tracing::warn!(header = name, "dropping an invalid extra header"),
        }
        self
    }

    /// Builder form of [`ExtraHeaders::push`].
    pub fn with(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.push(name, value);
        self
    }

    pub(crate) fn apply(&self, map: &mut HeaderMap) {
        for (n, v) in &self.0 {
            map.append(n.clone(), v.clone());
        }
    }
}

/// "Serve this file": the server opens it, answers Range/HEAD, takes an upload slot and streams it.
#[derive(Debug, Clone)]
pub struct FileReply {
    /// The resolved path, already checked by the router to be inside the shared folder.
    pub path: PathBuf,
    /// The same file already opened by the router (e.g. with [`crate::safe_path::SharedRoot::open_file`],
    /// which checks the opened descriptor): served instead of opening `path` again, so nothing can be
    /// swapped in between the check and the open. `path` is then only used in logs.
    pub opened: Option<Arc<File>>,
    /// The size the router indexed, if it knows it. When the file on disk no longer has this size it was
    /// changed after indexing, so hashes the router advertised would lie: the server answers 404.
    pub size: Option<u64>,
    /// `Content-Type`; `application/octet-stream` when `None`.
    pub content_type: Option<String>,
    /// Headers added to every reply for this request (200, 206, 416, 503, 404).
    pub headers: ExtraHeaders,
    /// Close the connection after this reply (`Connection: close`; KaZaA transfers are not persistent).
    pub close: bool,
}

impl FileReply {
    /// Serve `file`, already opened from `path` (see [`FileReply::opened`]).
    pub fn opened(file: File, path: impl Into<PathBuf>) -> Self {
        FileReply {
            opened: Some(Arc::new(file)),
            ..FileReply::new(path)
        }
    }

    /// Serve `path`, size taken from the file, no extra headers.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileReply {
            path: path.into(),
            opened: None,
            size: None,
            content_type: None,
            headers: ExtraHeaders::new(),
            close: false,
        }
    }
}

/// "Reply with this": a status (optionally with the protocol's own reason phrase), headers and a small body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// A reason phrase other than the standard one, e.g. Gnutella's `Bad Path` or `Missing Host Header`.
    pub reason: Option<String>,
    /// Extra headers.
    pub headers: ExtraHeaders,
    /// Body (truncated to [`MAX_REPLY_BODY`]); `Content-Type: text/plain` unless the headers say otherwise.
    pub body: Bytes,
    /// Close the connection after this reply.
    pub close: bool,
}

impl Reply {
    /// A reply with the standard reason phrase and the phrase as its body.
    pub fn status(status: StatusCode) -> Self {
        Reply {
            status,
            reason: None,
            headers: ExtraHeaders::new(),
            body: Bytes::from(format!(
                "{} {}\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )),
            close: false,
        }
    }

    /// A reply with a protocol-specific reason phrase (`400 Bad Path`), also used as the body.
    pub fn with_reason(status: StatusCode, reason: &str) -> Self {
        Reply {
            reason: Some(reason.to_owned()),
            body: Bytes::from(format!("{} {reason}\r\n", status.as_u16())),
            ..Reply::status(status)
        }
    }

    /// 404 Not Found.
    pub fn not_found() -> Self {
        Reply::status(StatusCode::NOT_FOUND)
    }

    /// 400 Bad Request with the given reason phrase.
    pub fn bad_request(reason: &str) -> Self {
        Reply::with_reason(StatusCode::BAD_REQUEST, reason)
    }
}

/// What a router decides for a request.
#[derive(Debug, Clone)]
pub enum Route {
    /// Serve a file.
    File(FileReply),
    /// Reply with a status and a small body.
    Reply(Reply),
}

/// A protocol crate's URL space. Called once per request, on the connection's task: keep it quick (index
/// and hash-table lookups, no disk scans).
pub trait Router: Send + Sync + 'static {
    /// Decides what to do with a GET or HEAD request.
    fn route(&self, req: &RequestInfo) -> Route;
}

impl<F> Router for F
where
    F: Fn(&RequestInfo) -> Route + Send + Sync + 'static,
{
    fn route(&self, req: &RequestInfo) -> Route {
        self(req)
    }
}
