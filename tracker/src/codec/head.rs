//! The HTTP/1.x framing the tracker port needs (RFC 9112 §2-3, §9.3), pure: find a request head in the
//! bytes received so far and write a complete reply.
//!
//! A tracker port serves three `GET`s (`/announce`, `/scrape`, `/stats`) with tiny replies, so the framing is
//! small: the head is parsed by `httparse` (bounded to [`MAX_HEAD_LEN`] bytes and [`MAX_HEADERS`] fields),
//! and only what the tracker acts on is kept: method, target, version, whether the connection stays open
//! (`Connection: close` / `keep-alive`, HTTP/1.0 closing by default), whether a browser asked for HTML
//! (`Accept`), and whether a body follows (a tracker request has none: such a connection is closed after the
//! reply rather than parsing the body as the next request). Replies are written in one buffer, head and
//! body together, so each leaves in a single `write`.

use std::io::Write as _;

use thiserror::Error;

/// Largest request head accepted (request line, fields and the blank line); a longer one gets a bencoded
/// `failure reason` and the connection is closed.
pub const MAX_HEAD_LEN: usize = 8192;
/// Most header fields in one request (clients send fewer than 10).
pub const MAX_HEADERS: usize = 32;

/// Why the bytes received cannot be a request the tracker serves. The `Display` text is sent back as the
/// bencoded `failure reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    /// No complete head within [`MAX_HEAD_LEN`] bytes.
    #[error("request head too large (at most {MAX_HEAD_LEN} bytes)")]
    TooLarge,
    /// More than [`MAX_HEADERS`] fields.
    #[error("too many header fields (at most {MAX_HEADERS})")]
    TooManyHeaders,
    /// Not an HTTP/1.x request head.
    #[error("malformed HTTP request")]
    Malformed,
}

/// A parsed request head; borrows the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// Bytes the head took, blank line included (where the next request starts).
    pub len: usize,
    /// `GET`, `HEAD`, ...
    pub method: &'a str,
    /// The request target's path, without the query.
    pub path: &'a str,
    /// The query string (after `?`, empty if none).
    pub query: &'a [u8],
    /// HTTP/1.0 (else 1.1).
    pub http10: bool,
    /// The connection stays open after the reply.
    pub keep_alive: bool,
    /// `Accept` names `text/html` (a browser).
    pub wants_html: bool,
    /// A body follows (`Content-Length` above 0 or `Transfer-Encoding`): the tracker does not read it, so
    /// the connection must close after the reply.
    pub has_body: bool,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Looks for a complete request head at the start of `buf`: `Ok(None)` means more bytes are needed (and
/// `buf` is still under [`MAX_HEAD_LEN`]).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_LEN {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD_LEN {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut wants_html = false;
    let mut has_body = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("accept") {
            wants_html |= h
                .value
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_body |= h.value.trim_ascii() != b"0";
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q.as_bytes()),
        None => (target, &b""[..]),
    };
    Ok(Some(Head {
        len,
        method,
        path,
        query,
        http10,
        keep_alive: keep_alive && !has_body,
        wants_html,
        has_body,
    }))
}

/// Status line text for the codes the tracker sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Appends a complete reply (status line, `Content-Type`, `Content-Length`, `Connection` when it differs
/// from the version's default, blank line, body) to `out`. `head_only` answers a `HEAD` (no body bytes).
pub fn write_reply(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    http10: bool,
    keep_alive: bool,
    head_only: bool,
) {
    out.reserve(96 + body.len());
    let _ = write!(
        out,
        "HTTP/1.{} {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        if http10 { 0 } else { 1 },
        reason(status),
        body.len()
    );
    if keep_alive && http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    } else if !keep_alive && !http10 {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn announce_head() {
        let buf = b"GET /announce?info_hash=a&port=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\nGET /";
        let h = parse_head(buf).unwrap().unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/announce");
        assert_eq!(h.query, b"info_hash=a&port=1");
        assert!(h.keep_alive && !h.http10 && !h.wants_html && !h.has_body);
        assert_eq!(&buf[h.len..], b"GET /");
    }

    #[test]
    fn connection_rules() {
        fn p(s: &str) -> Head<'_> {
            parse_head(s.as_bytes()).unwrap().unwrap()
        }
        assert!(!p("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(p("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!p("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n").keep_alive);
        let b = p("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert!(b.has_body && !b.keep_alive);
        assert!(!p("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
        assert!(p("GET /stats HTTP/1.1\r\nAccept: Text/HTML,*/*\r\n\r\n").wants_html);
    }

    #[test]
    fn partial_too_large_and_malformed() {
        assert_eq!(parse_head(b"GET /announce?x=1 HTTP/1.1\r\nHo"), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_LEN, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00"),
            Err(HeadError::Malformed)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn reply_framing() {
        let mut out = Vec::new();
        write_reply(
            &mut out,
            200,
            "text/plain",
            b"d1:ai1ee",
            false,
            false,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nd1:ai1ee"
        );
        out.clear();
        write_reply(&mut out, 404, "text/plain", b"xy", true, true, true);
        assert_eq!(
            out,
            b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(buf in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            match parse_head(&buf) {
                Ok(Some(h)) => prop_assert!(h.len <= buf.len() && h.len <= MAX_HEAD_LEN),
                Ok(None) => prop_assert!(buf.len() < MAX_HEAD_LEN),
                Err(_) => {}
            }
        }

        #[test]
        fn written_request_heads_parse_back(
            path in "/[a-z]{0,12}", query in "[a-z0-9=&%]{0,40}", close in any::<bool>(), html in any::<bool>(),
        ) {
            let mut req = format!("GET {path}?{query} HTTP/1.1\r\nHost: t\r\n");
            if close { req.push_str("Connection: close\r\n"); }
            if html { req.push_str("Accept: text/html\r\n"); }
            req.push_str("\r\n");
            let h = parse_head(req.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(h.len, req.len());
            prop_assert_eq!(h.path, path.as_str());
            prop_assert_eq!(h.query, query.as_bytes());
            prop_assert_eq!(h.keep_alive, !close);
            prop_assert_eq!(h.wants_html, html);
        }
    }
}
