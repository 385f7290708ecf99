//! Handshake text: the Gnutella 0.6 header blocks (0.6 draft §2.2 "Connection", CRLF lines ending in an
//! empty line, case-insensitive names) and the legacy 0.4 lines (`GNUTELLA CONNECT/0.4\n\n`,
//! `GNUTELLA OK\n\n`).

use std::fmt::Write as _;

use super::DecodeError;

/// Cap on one handshake block (start line plus headers).
pub const MAX_HANDSHAKE: usize = 8 * 1024;
/// Cap on the number of headers in one block.
pub const MAX_HEADERS: usize = 64;

/// The first line of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `GNUTELLA CONNECT/<major>.<minor>` (0.6 and up).
    Connect {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// `GNUTELLA/<major>.<minor> <code> <reason>`.
    Response {
        /// Status code.
        code: u16,
        /// Reason text.
        reason: String,
    },
    /// `GNUTELLA CONNECT/0.4` (legacy, no headers).
    Connect04,
    /// `GNUTELLA OK` (legacy 0.4 answer; not valid for 0.6).
    Ok04,
}

/// One handshake block: start line and headers (names kept as sent, looked up case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// First line.
    pub start: StartLine,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
}

impl Block {
    /// A block with no headers.
    pub fn new(start: StartLine) -> Block {
        Block {
            start,
            headers: Vec::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Block {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` says `True` (any case).
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Whether header `name` says `False` (any case).
    pub fn is_false(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    }

    /// Whether a comma-separated header lists `token` (any case), e.g. `Accept-Encoding: deflate`.
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Decodes a block from the start of `buf`. `Ok(None)`: more bytes needed. 0.6 blocks end with an empty
    /// CRLF line; the 0.4 lines end with `\n\n`. Bare LF line ends are accepted too.
    pub fn decode(buf: &[u8]) -> Result<Option<(Block, usize)>, DecodeError> {
        let end = find_blank_line(buf);
        let Some((text_end, used)) = end else {
            if buf.len() > MAX_HANDSHAKE {
                return Err(DecodeError::TooLarge {
                    ptype: 0,
                    max: MAX_HANDSHAKE,
                    len: buf.len(),
                });
            }
            return Ok(None);
        };
        if used > MAX_HANDSHAKE {
            return Err(DecodeError::TooLarge {
                ptype: 0,
                max: MAX_HANDSHAKE,
                len: used,
            });
        }
        let text = std::str::from_utf8(&buf[..text_end])
            .map_err(|_| DecodeError::Invalid("handshake is not UTF-8"))?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().unwrap_or("");
        let start = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation line: belongs to the previous header.
                let (_, v) = headers
                    .last_mut()
                    .ok_or(DecodeError::Invalid("continuation without header"))?;
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            let (n, v) = line
                .split_once(':')
                .ok_or(DecodeError::Invalid("header line without colon"))?;
            if headers.len() >= MAX_HEADERS {
                return Err(DecodeError::Invalid("too many handshake headers"));
            }
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Ok(Some((Block { start, headers }, used)))
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        match &self.start {
            StartLine::Connect04 => return b"GNUTELLA CONNECT/0.4\n\n".to_vec(),
            StartLine::Ok04 => return b"GNUTELLA OK\n\n".to_vec(),
            StartLine::Connect { major, minor } => {
                let _ = write!(s, "GNUTELLA CONNECT/{major}.{minor}\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "GNUTELLA/0.6 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Finds the end of the header text and the end of the blank line.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lim = buf.len().min(MAX_HANDSHAKE + 4);
    let b = &buf[..lim];
    for i in 0..b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
    }
    None
}

fn parse_version(v: &str) -> Option<(u16, u16)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_start(line: &str) -> Result<StartLine, DecodeError> {
    let line = line.trim();
    if line.eq_ignore_ascii_case("GNUTELLA OK") {
        return Ok(StartLine::Ok04);
    }
    let upper = line.to_ascii_uppercase();
    if let Some(v) = upper.strip_prefix("GNUTELLA CONNECT/") {
        let (major, minor) =
            parse_version(v.trim()).ok_or(DecodeError::Invalid("handshake version"))?;
        return Ok(if (major, minor) == (0, 4) {
            StartLine::Connect04
        } else {
            StartLine::Connect { major, minor }
        });
    }
    if let Some(rest) = upper.strip_prefix("GNUTELLA/") {
        let mut parts = rest.splitn(2, ' ');
        parse_version(parts.next().unwrap_or(""))
            .ok_or(DecodeError::Invalid("handshake version"))?;
        let tail = parts.next().unwrap_or("").trim();
        let (code, _) = tail.split_once(' ').unwrap_or((tail, ""));
        let code: u16 = code
            .parse()
            .map_err(|_| DecodeError::Invalid("handshake status code"))?;
        // Keep the reason as sent (not upper-cased).
        let reason = line.splitn(3, ' ').nth(2).unwrap_or("").trim().to_owned();
        return Ok(StartLine::Response { code, reason });
    }
    Err(DecodeError::Invalid("handshake start line"))
}

/// Cap on a `GIV` line.
pub const MAX_GIV: usize = 1024;

/// A parsed `GIV <index>:<servent GUID hex>/<file name>\n\n` (the first line a pushed connection sends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Giv {
    /// File index from the Push.
    pub index: u32,
    /// The firewalled servent's GUID.
    pub servent: super::Guid,
    /// File name (may be hidden as `file`, like gtk-gnutella does).
    pub name: String,
}

impl Giv {
    /// Decodes a GIV block from the start of `buf`: `Ok(None)` until the blank line has arrived.
    pub fn decode(buf: &[u8]) -> Result<Option<(Giv, usize)>, DecodeError> {
        let Some(end) = buf.windows(2).position(|w| w == b"\n\n") else {
            if buf.len() > MAX_GIV {
                return Err(DecodeError::TooLarge {
                    ptype: 0,
                    max: MAX_GIV,
                    len: buf.len(),
                });
            }
            return Ok(None);
        };
        if end > MAX_GIV {
            return Err(DecodeError::TooLarge {
                ptype: 0,
                max: MAX_GIV,
                len: end,
            });
        }
        let line = std::str::from_utf8(&buf[..end])
            .map_err(|_| DecodeError::Invalid("GIV line is not UTF-8"))?
            .trim_end_matches('\r');
        let rest = line
            .strip_prefix("GIV ")
            .ok_or(DecodeError::Invalid("GIV keyword"))?;
        let (idx, rest) = rest
            .split_once(':')
            .ok_or(DecodeError::Invalid("GIV index"))?;
        let (guid, name) = rest
            .split_once('/')
            .ok_or(DecodeError::Invalid("GIV name"))?;
        let index = idx
            .trim()
            .parse()
            .map_err(|_| DecodeError::Invalid("GIV index"))?;
        let servent =
            super::Guid::from_hex(guid).ok_or(DecodeError::Invalid("GIV servent GUID"))?;
        Ok(Some((
            Giv {
                index,
                servent,
                name: name.to_owned(),
            },
            end + 2,
        )))
    }

    /// The wire form.
    pub fn encode(&self) -> String {
        format!(
            "GIV {}:{}/{}\n\n",
            self.index,
            self.servent.to_hex(),
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn giv_line_is_parsed_exactly() {
        let raw = b"GIV 1:328c00000000000000000000ffa0f14d/file\n\nGET";
        let (g, n) = Giv::decode(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 3);
        assert_eq!(g.index, 1);
        assert_eq!(g.servent.to_hex(), "328C00000000000000000000FFA0F14D");
        assert_eq!(g.name, "file");
        assert_eq!(Giv::decode(g.encode().as_bytes()).unwrap().unwrap().0, g);
        assert_eq!(Giv::decode(b"GIV 1:abc").unwrap(), None);
        assert!(Giv::decode(b"GIV x:328c00000000000000000000ffa0f14d/f\n\n").is_err());
        assert!(Giv::decode(b"GIV 1:nothex/f\n\n").is_err());
        assert!(Giv::decode(b"HELLO\n\n").is_err());
        assert!(Giv::decode(&vec![b'a'; MAX_GIV + 10]).is_err());
    }

    #[test]
    fn connect_block_parses_case_insensitively() {
        let raw = b"GNUTELLA CONNECT/0.6\r\nuser-agent: gtk-gnutella/1.2.3\r\nX-ULTRAPEER: true\r\nAccept-Encoding: deflate\r\n\r\nrest";
        let (b, n) = Block::decode(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 4);
        assert_eq!(b.start, StartLine::Connect { major: 0, minor: 6 });
        assert!(b.is_true("X-Ultrapeer"));
        assert!(b.lists("accept-encoding", "DEFLATE"));
        assert_eq!(b.get("User-Agent"), Some("gtk-gnutella/1.2.3"));
    }

    #[test]
    fn response_and_legacy_lines() {
        let (b, _) = Block::decode(
            b"GNUTELLA/0.6 503 Shielded leaf\r\nX-Try-Ultrapeers: 1.2.3.4:6346\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            b.start,
            StartLine::Response {
                code: 503,
                reason: "Shielded leaf".into()
            }
        );
        assert_eq!(
            Block::decode(b"GNUTELLA OK\n\n").unwrap().unwrap().0.start,
            StartLine::Ok04
        );
        assert_eq!(
            Block::decode(b"GNUTELLA CONNECT/0.4\n\n")
                .unwrap()
                .unwrap()
                .0
                .start,
            StartLine::Connect04
        );
        assert_eq!(
            Block::decode(b"GNUTELLA CONNECT/0.7\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .start,
            StartLine::Connect { major: 0, minor: 7 }
        );
        assert!(Block::decode(b"HELLO\r\n\r\n").is_err());
        assert_eq!(
            Block::decode(b"GNUTELLA CONNECT/0.6\r\nA: b\r\n").unwrap(),
            None
        );
    }

    #[test]
    fn oversized_handshake_is_refused() {
        let mut raw = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        while raw.len() <= MAX_HANDSHAKE + 10 {
            raw.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(Block::decode(&raw).is_err());
    }

    proptest! {
        #[test]
        fn block_round_trip(code in 100u16..600, hs in proptest::collection::vec(("[A-Za-z][A-Za-z-]{0,15}", "[ -~]{0,30}"), 0..10)) {
            let mut b = Block::new(StartLine::Response { code, reason: "OK".into() });
            for (n, v) in hs { b = b.header(&n, v.trim()); }
            let wire = b.encode();
            let (back, n) = Block::decode(&wire).unwrap().unwrap();
            prop_assert_eq!(n, wire.len());
            prop_assert_eq!(back, b);
        }

        #[test]
        fn arbitrary_text_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Block::decode(&b);
            let mut t = b"GNUTELLA/0.6 ".to_vec();
            t.extend_from_slice(&b);
            t.extend_from_slice(b"\r\n\r\n");
            let _ = Block::decode(&t);
        }
    }
}
