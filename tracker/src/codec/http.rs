//! HTTP tracker wire format: BEP 3 "Trackers" (announce query and reply), BEP 23 compact peer lists,
//! BEP 7 `peers6`, BEP 48 scrape.
//!
//! Decoding works on the raw query string (the part after `?`), percent-decoding each value into a fixed
//! buffer, so an announce allocates nothing. `info_hash` and `peer_id` are raw 20-byte values, percent-encoded
//! byte by byte (BEP 3); every other field is validated strictly and a bad one becomes a [`QueryError`] whose
//! `Display` text is sent back as the bencoded `failure reason`.
//!
//! Encoding uses a small hand-written bencode writer (dictionary keys written in sorted order, as bencode
//! requires), because the reply is the hot path; the tests check every reply shape against `bendy`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use super::{Event, InfoHash, PeerId};

/// Longest query string accepted. Real announces are about 300 bytes; a scrape of
/// [`MAX_SCRAPE_HASHES`] hashes is about 4 KiB.
pub const MAX_QUERY_LEN: usize = 4096;
/// Largest `numwant` accepted at all; anything above is a client bug or an attack and gets a failure reply.
/// (Accepted values are then capped by the tracker's `--max-peers`.)
pub const MAX_NUMWANT: u32 = 10_000;
/// Most info-hashes one scrape may ask about.
pub const MAX_SCRAPE_HASHES: usize = 64;
/// Longest `key` or `trackerid` value kept (clients send 8 hex digits; trackers ids are short).
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest decimal number field (`u64::MAX` has 20 digits).
const MAX_NUMBER_LEN: usize = 20;
/// Longest `ip` field (an IPv6 address with an IPv4 tail is 45 characters).
const MAX_IP_LEN: usize = 64;

/// Why a query string was refused. The `Display` text is what the client sees as `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The query string is longer than [`MAX_QUERY_LEN`].
    #[error("query string too long ({len} bytes, at most {max})")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// [`MAX_QUERY_LEN`].
        max: usize,
    },
    /// A required field is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A 20-byte field decoded to another length.
    #[error("{field} must be 20 bytes, got {len}")]
    BadLength {
        /// `info_hash` or `peer_id`.
        field: &'static str,
        /// Decoded length (saturates just above the limit).
        len: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in {0}")]
    BadEscape(&'static str),
    /// A number field that is not a decimal number.
    #[error("{0} is not a number")]
    NotNumeric(&'static str),
    /// A number outside the field's range (`port` 0 or above 65535, `numwant` above [`MAX_NUMWANT`]).
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// `event` is none of started, completed, stopped, paused or empty.
    #[error("unknown event")]
    UnknownEvent,
    /// `ip` is not an IPv4 or IPv6 address.
    #[error("bad ip")]
    BadIp,
    /// BEP 7 `ipv4` / `ipv6` is not an address or endpoint of that family.
    #[error("bad {0}")]
    BadAltIp(&'static str),
    /// `key` or `trackerid` longer than [`MAX_TOKEN_LEN`].
    #[error("{0} too long")]
    TokenTooLong(&'static str),
    /// More than [`MAX_SCRAPE_HASHES`] info-hashes in one scrape.
    #[error("too many info_hash values (at most {max})")]
    TooManyHashes {
        /// [`MAX_SCRAPE_HASHES`].
        max: usize,
    },
}

/// A short opaque value (`key`, `trackerid`) kept inline, without allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    len: u8,
    buf: [u8; MAX_TOKEN_LEN],
}

impl Token {
    /// Wraps `bytes`, or `None` if longer than [`MAX_TOKEN_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Token> {
        if bytes.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_TOKEN_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(Token {
            len: bytes.len() as u8,
            buf,
        })
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A BEP 3 announce, as the query string carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// The peer's listening port.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing; 0 means a seeder.
    pub left: u64,
    /// `started`, `completed`, `stopped` or none.
    pub event: Event,
    /// Peers wanted, if said.
    pub numwant: Option<u32>,
    /// BEP 23: `compact=0` asks for the dictionary form; anything else (or absence) allows compact.
    pub compact: bool,
    /// `no_peer_id=1`: the dictionary form without `peer id`.
    pub no_peer_id: bool,
    /// The address the peer claims (`ip`); the tracker decides whether to believe it.
    pub ip: Option<IpAddr>,
    /// `key`: lets a peer prove identity across IP changes.
    pub key: Option<Token>,
    /// `trackerid` echoed from an earlier reply.
    pub trackerid: Option<Token>,
}

/// BEP 7 "IP announce parameters": another address of the announcing peer, of the family it did not
/// connect over (`ipv6=` from an IPv4 connection, `ipv4=` from an IPv6 one). Each is an address or an
/// endpoint (RFC 2732: `[2001:db8::1]:6881`, `10.0.0.1:6881`); without a port the `port` parameter applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AltAddrs {
    /// `ipv4=`.
    pub ipv4: Option<(Ipv4Addr, Option<u16>)>,
    /// `ipv6=`.
    pub ipv6: Option<(Ipv6Addr, Option<u16>)>,
}

fn decode_endpoint(field: &'static str, v: &[u8]) -> Result<(IpAddr, Option<u16>), QueryError> {
    let bad = QueryError::BadAltIp(field);
    let mut buf = [0u8; MAX_IP_LEN];
    let s = match pct_decode(v, &mut buf) {
        Ok(n) => &buf[..n],
        Err(_) => return Err(bad),
    };
    let s = std::str::from_utf8(s).map_err(|_| bad.clone())?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(bad);
        }
        return Ok((a.ip(), Some(a.port())));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| bad)
}

/// A BEP 48 scrape: the info-hashes asked about (empty means "all torrents", if the tracker allows it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScrapeRequest {
    /// The torrents, in request order, duplicates kept.
    pub info_hashes: Vec<InfoHash>,
}

/// Splits a query string into raw `(key, value)` pairs (still percent-encoded).
fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `src` into `dst` (`+` is a space, as in HTML forms). Returns the decoded length, or
/// `Err(Some(len))` when it would exceed `dst` (`len` saturating at `dst.len() + 1`), `Err(None)` on a bad escape.
fn pct_decode(src: &[u8], dst: &mut [u8]) -> Result<usize, Option<usize>> {
    let mut i = 0;
    let mut n = 0;
    while i < src.len() {
        let b = match src[i] {
            b'%' => {
                let hi = src.get(i + 1).copied().and_then(hex_val).ok_or(None)?;
                let lo = src.get(i + 2).copied().and_then(hex_val).ok_or(None)?;
                i += 3;
                (hi << 4) | lo
            }
            b'+' => {
                i += 1;
                b' '
            }
            b => {
                i += 1;
                b
            }
        };
        if n == dst.len() {
            return Err(Some(n + 1));
        }
        dst[n] = b;
        n += 1;
    }
    Ok(n)
}

fn decode_20(field: &'static str, v: &[u8]) -> Result<[u8; 20], QueryError> {
    let mut out = [0u8; 20];
    match pct_decode(v, &mut out) {
        Ok(20) => Ok(out),
        Ok(len) | Err(Some(len)) => Err(QueryError::BadLength { field, len }),
        Err(None) => Err(QueryError::BadEscape(field)),
    }
}

fn decode_small<'b>(
    field: &'static str,
    v: &[u8],
    buf: &'b mut [u8],
) -> Result<&'b [u8], QueryError> {
    match pct_decode(v, buf) {
        Ok(n) => Ok(&buf[..n]),
        Err(Some(_)) => Err(QueryError::NotNumeric(field)),
        Err(None) => Err(QueryError::BadEscape(field)),
    }
}

fn decode_u64(field: &'static str, v: &[u8]) -> Result<u64, QueryError> {
    let mut buf = [0u8; MAX_NUMBER_LEN + 1];
    let s = decode_small(field, v, &mut buf)?;
    if s.is_empty() || s.len() > MAX_NUMBER_LEN || !s.iter().all(u8::is_ascii_digit) {
        return Err(QueryError::NotNumeric(field));
    }
    let mut n: u64 = 0;
    for &d in s {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(QueryError::OutOfRange(field))?;
    }
    Ok(n)
}

fn decode_token(field: &'static str, v: &[u8]) -> Result<Token, QueryError> {
    let mut buf = [0u8; MAX_TOKEN_LEN];
    match pct_decode(v, &mut buf) {
        Ok(n) => Ok(Token::new(&buf[..n]).expect("fits by construction")),
        Err(Some(_)) => Err(QueryError::TokenTooLong(field)),
        Err(None) => Err(QueryError::BadEscape(field)),
    }
}

impl AnnounceRequest {
    /// Parses the query string of `GET /announce?...`. Unknown keys are ignored (clients send many
    /// extensions: `supportcrypto`, `corrupt`, `redundant`, ...); a repeated key keeps its last value.
    pub fn parse(query: &[u8]) -> Result<AnnounceRequest, QueryError> {
        Self::parse_with_alt(query).map(|(a, _)| a)
    }

    /// [`AnnounceRequest::parse`], plus the BEP 7 `ipv4=` / `ipv6=` addresses.
    pub fn parse_with_alt(query: &[u8]) -> Result<(AnnounceRequest, AltAddrs), QueryError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong {
                len: query.len(),
                max: MAX_QUERY_LEN,
            });
        }
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut uploaded = None;
        let mut downloaded = None;
        let mut left = None;
        let mut event = Event::None;
        let mut numwant = None;
        let mut compact = true;
        let mut no_peer_id = false;
        let mut ip = None;
        let mut key = None;
        let mut trackerid = None;
        let mut alt = AltAddrs::default();
        for (k, v) in pairs(query) {
            match k {
                b"info_hash" => info_hash = Some(InfoHash(decode_20("info_hash", v)?)),
                b"peer_id" => peer_id = Some(PeerId(decode_20("peer_id", v)?)),
                b"port" => {
                    let p = decode_u64("port", v)?;
                    if p == 0 || p > u64::from(u16::MAX) {
                        return Err(QueryError::OutOfRange("port"));
                    }
                    port = Some(p as u16);
                }
                b"uploaded" => uploaded = Some(decode_u64("uploaded", v)?),
                b"downloaded" => downloaded = Some(decode_u64("downloaded", v)?),
                b"left" => left = Some(decode_u64("left", v)?),
                b"numwant" => {
                    let n = decode_u64("numwant", v)?;
                    if n > u64::from(MAX_NUMWANT) {
                        return Err(QueryError::OutOfRange("numwant"));
                    }
                    numwant = Some(n as u32);
                }
                b"compact" => compact = v != b"0",
                b"no_peer_id" => no_peer_id = v != b"0",
                b"event" => {
                    let mut buf = [0u8; 16];
                    let e = match pct_decode(v, &mut buf) {
                        Ok(n) => &buf[..n],
                        Err(_) => return Err(QueryError::UnknownEvent),
                    };
                    event = match e {
                        b"started" => Event::Started,
                        b"completed" => Event::Completed,
                        b"stopped" => Event::Stopped,
                        // BEP 21 partial seeds announce `paused`; for peer selection it is a regular announce.
                        b"" | b"empty" | b"paused" => Event::None,
                        _ => return Err(QueryError::UnknownEvent),
                    };
                }
                b"ip" => {
                    let mut buf = [0u8; MAX_IP_LEN];
                    let s = match pct_decode(v, &mut buf) {
                        Ok(n) => &buf[..n],
                        Err(_) => return Err(QueryError::BadIp),
                    };
                    let s = std::str::from_utf8(s).map_err(|_| QueryError::BadIp)?;
                    ip = Some(s.parse::<IpAddr>().map_err(|_| QueryError::BadIp)?);
                }
                b"ipv4" => match decode_endpoint("ipv4", v)? {
                    (IpAddr::V4(ip), port) => alt.ipv4 = Some((ip, port)),
                    _ => return Err(QueryError::BadAltIp("ipv4")),
                },
                b"ipv6" => match decode_endpoint("ipv6", v)? {
                    (IpAddr::V6(ip), port) => alt.ipv6 = Some((ip, port)),
                    _ => return Err(QueryError::BadAltIp("ipv6")),
                },
                b"key" => key = Some(decode_token("key", v)?),
                b"trackerid" => trackerid = Some(decode_token("trackerid", v)?),
                _ => {}
            }
        }
        let req = AnnounceRequest {
            info_hash: info_hash.ok_or(QueryError::Missing("info_hash"))?,
            peer_id: peer_id.ok_or(QueryError::Missing("peer_id"))?,
            port: port.ok_or(QueryError::Missing("port"))?,
            // BEP 3 makes these required, but several clients omit them on `stopped`; absent means 0.
            uploaded: uploaded.unwrap_or(0),
            downloaded: downloaded.unwrap_or(0),
            left: left.ok_or(QueryError::Missing("left"))?,
            event,
            numwant,
            compact,
            no_peer_id,
            ip,
            key,
            trackerid,
        };
        Ok((req, alt))
    }

    /// Writes this announce as a query string (what a client sends); used by tests and the load generator.
    pub fn write_query(&self, out: &mut String) {
        let _ = write!(out, "info_hash=");
        pct_encode(&self.info_hash.0, out);
        let _ = write!(out, "&peer_id=");
        pct_encode(&self.peer_id.0, out);
        let _ = write!(
            out,
            "&port={}&uploaded={}&downloaded={}&left={}",
            self.port, self.uploaded, self.downloaded, self.left
        );
        match self.event {
            Event::None => {}
            Event::Started => out.push_str("&event=started"),
            Event::Completed => out.push_str("&event=completed"),
            Event::Stopped => out.push_str("&event=stopped"),
        }
        if let Some(n) = self.numwant {
            let _ = write!(out, "&numwant={n}");
        }
        out.push_str(if self.compact {
            "&compact=1"
        } else {
            "&compact=0"
        });
        if self.no_peer_id {
            out.push_str("&no_peer_id=1");
        }
        if let Some(ip) = self.ip {
            let _ = write!(out, "&ip={ip}");
        }
        if let Some(k) = &self.key {
            out.push_str("&key=");
            pct_encode(k.as_bytes(), out);
        }
        if let Some(t) = &self.trackerid {
            out.push_str("&trackerid=");
            pct_encode(t.as_bytes(), out);
        }
    }
}

/// Percent-encodes every byte that is not unreserved (RFC 3986), as clients do for `info_hash`.
pub fn pct_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl ScrapeRequest {
    /// Parses the query string of `GET /scrape?info_hash=...&info_hash=...` (BEP 48). Other keys are ignored.
    pub fn parse(query: &[u8]) -> Result<ScrapeRequest, QueryError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong {
                len: query.len(),
                max: MAX_QUERY_LEN,
            });
        }
        let mut info_hashes = Vec::new();
        for (k, v) in pairs(query) {
            if k == b"info_hash" {
                if info_hashes.len() == MAX_SCRAPE_HASHES {
                    return Err(QueryError::TooManyHashes {
                        max: MAX_SCRAPE_HASHES,
                    });
                }
                info_hashes.push(InfoHash(decode_20("info_hash", v)?));
            }
        }
        Ok(ScrapeRequest { info_hashes })
    }
}

/// One peer in a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// Where to reach it.
    pub addr: SocketAddr,
    /// Its id (sent only in the dictionary form without `no_peer_id`; `None` when the tracker does not
    /// hold it, and then the entry goes without `peer id`).
    pub peer_id: Option<PeerId>,
}

/// How the peer list is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerForm {
    /// BEP 23: `peers` is a string of 6-byte IPv4 entries, BEP 7 `peers6` of 18-byte IPv6 entries.
    Compact,
    /// BEP 3: `peers` is a list of dictionaries (`ip`, `peer id`, `port`), IPv4 and IPv6 alike.
    Dict {
        /// Include `peer id` (false when the client sent `no_peer_id=1`).
        with_peer_id: bool,
    },
}

/// Everything in a successful announce reply.
#[derive(Clone, Copy, Debug)]
pub struct AnnounceReply<'a> {
    /// Seconds the client should wait before re-announcing.
    pub interval: u32,
    /// Seconds the client must wait at least.
    pub min_interval: Option<u32>,
    /// Seeders.
    pub complete: u32,
    /// Leechers.
    pub incomplete: u32,
    /// `tracker id` the client should echo as `trackerid`.
    pub tracker_id: Option<&'a [u8]>,
    /// `warning message`: the announce worked but something should be said.
    pub warning: Option<&'a str>,
    /// The peers.
    pub peers: &'a [PeerEntry],
    /// How to write them.
    pub form: PeerForm,
}

/// Scrape counters of one torrent (BEP 48).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScrapeCounts {
    /// Seeders now.
    pub complete: u32,
    /// Completed downloads ever (`completed` events).
    pub downloaded: u64,
    /// Leechers now.
    pub incomplete: u32,
}

fn push_uint(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_int(out: &mut Vec<u8>, v: u64) {
    out.push(b'i');
    push_uint(out, v);
    out.push(b'e');
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    push_uint(out, b.len() as u64);
    out.push(b':');
    out.extend_from_slice(b);
}

/// Writes an IP address's text form into a stack buffer (no allocation).
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends the bencoded announce reply to `out`. Keys are written in bencode's sorted order.
pub fn write_announce(out: &mut Vec<u8>, r: &AnnounceReply<'_>) {
    out.push(b'd');
    out.extend_from_slice(b"8:complete");
    push_int(out, u64::from(r.complete));
    out.extend_from_slice(b"10:incomplete");
    push_int(out, u64::from(r.incomplete));
    out.extend_from_slice(b"8:interval");
    push_int(out, u64::from(r.interval));
    if let Some(m) = r.min_interval {
        out.extend_from_slice(b"12:min interval");
        push_int(out, u64::from(m));
    }
    out.extend_from_slice(b"5:peers");
    match r.form {
        PeerForm::Compact => {
            let v4 = r.peers.iter().filter(|p| p.addr.is_ipv4()).count();
            push_uint(out, 6 * v4 as u64);
            out.push(b':');
            for p in r.peers {
                if let SocketAddr::V4(a) = p.addr {
                    out.extend_from_slice(&a.ip().octets());
                    out.extend_from_slice(&a.port().to_be_bytes());
                }
            }
            let v6 = r.peers.len() - v4;
            if v6 > 0 {
                out.extend_from_slice(b"6:peers6");
                push_uint(out, 18 * v6 as u64);
                out.push(b':');
                for p in r.peers {
                    if let SocketAddr::V6(a) = p.addr {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                }
            }
        }
        PeerForm::Dict { with_peer_id } => {
            out.push(b'l');
            for p in r.peers {
                out.push(b'd');
                out.extend_from_slice(b"2:ip");
                let mut t = IpText {
                    buf: [0; 48],
                    len: 0,
                };
                let _ = write!(t, "{}", p.addr.ip());
                push_bytes(out, &t.buf[..t.len]);
                if let (true, Some(id)) = (with_peer_id, &p.peer_id) {
                    out.extend_from_slice(b"7:peer id");
                    push_bytes(out, &id.0);
                }
                out.extend_from_slice(b"4:port");
                push_int(out, u64::from(p.addr.port()));
                out.push(b'e');
            }
            out.push(b'e');
        }
    }
    if let Some(t) = r.tracker_id {
        out.extend_from_slice(b"10:tracker id");
        push_bytes(out, t);
    }
    if let Some(w) = r.warning {
        out.extend_from_slice(b"15:warning message");
        push_bytes(out, w.as_bytes());
    }
    out.push(b'e');
}

/// Appends a bencoded failure reply (`d14:failure reason...e`) to `out`.
pub fn write_failure(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(b"d14:failure reason");
    push_bytes(out, reason.as_bytes());
    out.push(b'e');
}

/// Appends a BEP 48 scrape reply to `out`. `files` must be sorted by info-hash with no duplicates (bencode
/// dictionaries are sorted); [`sort_scrape`] does that.
pub fn write_scrape(out: &mut Vec<u8>, files: &[(InfoHash, ScrapeCounts)]) {
    out.extend_from_slice(b"d5:filesd");
    for (h, c) in files {
        push_bytes(out, &h.0);
        out.extend_from_slice(b"d8:complete");
        push_int(out, u64::from(c.complete));
        out.extend_from_slice(b"10:downloaded");
        push_int(out, c.downloaded);
        out.extend_from_slice(b"10:incomplete");
        push_int(out, u64::from(c.incomplete));
        out.push(b'e');
    }
    out.extend_from_slice(b"ee");
}

/// Sorts scrape entries and drops repeated info-hashes, as [`write_scrape`] needs.
pub fn sort_scrape(files: &mut Vec<(InfoHash, ScrapeCounts)>) {
    files.sort_by_key(|a| a.0);
    files.dedup_by(|a, b| a.0 == b.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bendy::encoding::{AsString, Encoder, SingleItemEncoder};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    #[test]
    fn bep3_announce_parses_raw_percent_encoded_hash() {
        let q =
            b"info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=-qB4250-abcdefghijkl\
&port=6881&uploaded=0&downloaded=0&left=727955456&event=started&numwant=200&compact=1&no_peer_id=1\
&supportcrypto=1&key=ABCD";
        let a = AnnounceRequest::parse(q).unwrap();
        assert_eq!(
            a.info_hash.0,
            [
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
                0xef, 0x12, 0x34, 0x56, 0x78, 0x9a
            ]
        );
        assert_eq!(&a.peer_id.0, b"-qB4250-abcdefghijkl");
        assert_eq!(a.port, 6881);
        assert_eq!(a.left, 727_955_456);
        assert_eq!(a.event, Event::Started);
        assert_eq!(a.numwant, Some(200));
        assert!(a.compact && a.no_peer_id);
        assert_eq!(a.key.unwrap().as_bytes(), b"ABCD");
    }

    #[test]
    fn bad_fields_give_specific_errors() {
        let ok = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0";
        assert!(AnnounceRequest::parse(ok.as_bytes()).is_ok());
        let cases: &[(&str, QueryError)] = &[
            (
                "peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0",
                QueryError::Missing("info_hash"),
            ),
            (
                "info_hash=aaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0",
                QueryError::BadLength {
                    field: "info_hash",
                    len: 4,
                },
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0",
                QueryError::BadLength {
                    field: "info_hash",
                    len: 21,
                },
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaa%G1&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0",
                QueryError::BadEscape("info_hash"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=x&left=0",
                QueryError::NotNumeric("port"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=65536&left=0",
                QueryError::OutOfRange("port"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=0&left=0",
                QueryError::OutOfRange("port"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=-1",
                QueryError::NotNumeric("left"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&numwant=99999",
                QueryError::OutOfRange("numwant"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=99999999999999999999",
                QueryError::OutOfRange("left"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&event=bogus",
                QueryError::UnknownEvent,
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&ip=example.com",
                QueryError::BadIp,
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&ipv6=10.0.0.1",
                QueryError::BadAltIp("ipv6"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&ipv4=%5B::1%5D:80",
                QueryError::BadAltIp("ipv4"),
            ),
            (
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&ipv4=1.2.3.4:0",
                QueryError::BadAltIp("ipv4"),
            ),
        ];
        for (q, want) in cases {
            assert_eq!(
                AnnounceRequest::parse(q.as_bytes()).unwrap_err(),
                *want,
                "{q}"
            );
        }
        let long = format!("{ok}&pad={}", "x".repeat(MAX_QUERY_LEN));
        assert!(matches!(
            AnnounceRequest::parse(long.as_bytes()),
            Err(QueryError::TooLong { .. })
        ));
    }

    #[test]
    fn bep7_ipv4_ipv6_parameters() {
        let base = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&left=0";
        let alt = |extra: &str| {
            AnnounceRequest::parse_with_alt(format!("{base}{extra}").as_bytes())
                .unwrap()
                .1
        };
        assert_eq!(alt(""), AltAddrs::default());
        assert_eq!(
            alt("&ipv6=2001%3Adb8%3A%3A1"),
            AltAddrs {
                ipv4: None,
                ipv6: Some(("2001:db8::1".parse().unwrap(), None))
            }
        );
        assert_eq!(
            alt("&ipv6=%5B2001:db8::1%5D:7000&ipv4=10.1.2.3:7001").ipv6,
            Some(("2001:db8::1".parse().unwrap(), Some(7000)))
        );
        assert_eq!(
            alt("&ipv4=10.1.2.3:7001").ipv4,
            Some(("10.1.2.3".parse().unwrap(), Some(7001)))
        );
        assert_eq!(
            alt("&ipv6=[::1]").ipv6,
            Some((Ipv6Addr::LOCALHOST, None)),
            "a bracketed address without port"
        );
    }

    #[test]
    fn bep48_scrape_many_hashes_and_limit() {
        let mut q = String::new();
        for i in 0..3u8 {
            q.push_str("info_hash=");
            pct_encode(&[i; 20], &mut q);
            q.push('&');
        }
        let s = ScrapeRequest::parse(q.as_bytes()).unwrap();
        assert_eq!(
            s.info_hashes,
            vec![InfoHash([0; 20]), InfoHash([1; 20]), InfoHash([2; 20])]
        );
        assert!(ScrapeRequest::parse(b"").unwrap().info_hashes.is_empty());
        let many = "info_hash=aaaaaaaaaaaaaaaaaaaa&".repeat(MAX_SCRAPE_HASHES + 1);
        assert_eq!(
            ScrapeRequest::parse(many.as_bytes()).unwrap_err(),
            QueryError::TooManyHashes {
                max: MAX_SCRAPE_HASHES
            }
        );
    }

    /// The oracle: the same reply built with bendy, which sorts dictionary keys itself.
    fn bendy_announce(r: &AnnounceReply<'_>) -> Vec<u8> {
        let mut e = Encoder::new();
        e.emit_and_sort_dict(|e| {
            e.emit_pair(b"complete", r.complete)?;
            e.emit_pair(b"incomplete", r.incomplete)?;
            e.emit_pair(b"interval", r.interval)?;
            if let Some(m) = r.min_interval {
                e.emit_pair(b"min interval", m)?;
            }
            match r.form {
                PeerForm::Compact => {
                    let mut v4 = Vec::new();
                    let mut v6 = Vec::new();
                    for p in r.peers {
                        match p.addr {
                            SocketAddr::V4(a) => {
                                v4.extend_from_slice(&a.ip().octets());
                                v4.extend_from_slice(&a.port().to_be_bytes());
                            }
                            SocketAddr::V6(a) => {
                                v6.extend_from_slice(&a.ip().octets());
                                v6.extend_from_slice(&a.port().to_be_bytes());
                            }
                        }
                    }
                    e.emit_pair(b"peers", AsString(&v4))?;
                    if !v6.is_empty() {
                        e.emit_pair(b"peers6", AsString(&v6))?;
                    }
                }
                PeerForm::Dict { with_peer_id } => {
                    e.emit_pair_with(b"peers", |e: SingleItemEncoder| {
                        e.emit_list(|l| {
                            for p in r.peers {
                                l.emit_with(|e| {
                                    e.emit_unsorted_dict(|d| {
                                        d.emit_pair(b"port", p.addr.port())?;
                                        if let (true, Some(id)) = (with_peer_id, &p.peer_id) {
                                            d.emit_pair(b"peer id", AsString(&id.0[..]))?;
                                        }
                                        d.emit_pair(b"ip", p.addr.ip().to_string())
                                    })
                                })?;
                            }
                            Ok(())
                        })
                    })?;
                }
            }
            if let Some(t) = r.tracker_id {
                e.emit_pair(b"tracker id", AsString(t))?;
            }
            if let Some(w) = r.warning {
                e.emit_pair(b"warning message", w)?;
            }
            Ok(())
        })
        .unwrap();
        e.get_output().unwrap()
    }

    fn arb_peer() -> impl Strategy<Value = PeerEntry> {
        let v4 = (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port)));
        let v6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        });
        (prop_oneof![v4, v6], proptest::option::of(any::<[u8; 20]>())).prop_map(|(addr, id)| {
            PeerEntry {
                addr,
                peer_id: id.map(PeerId),
            }
        })
    }

    proptest! {
        #[test]
        fn announce_reply_matches_bendy(
            peers in proptest::collection::vec(arb_peer(), 0..20),
            interval in any::<u32>(), min in proptest::option::of(any::<u32>()),
            complete in any::<u32>(), incomplete in any::<u32>(),
            tid in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            warning in proptest::option::of("[ -~]{0,30}"),
            form in prop_oneof![Just(PeerForm::Compact), Just(PeerForm::Dict { with_peer_id: true }),
                                Just(PeerForm::Dict { with_peer_id: false })],
        ) {
            let r = AnnounceReply {
                interval, min_interval: min, complete, incomplete, tracker_id: tid.as_deref(),
                warning: warning.as_deref(), peers: &peers, form,
            };
            let mut ours = Vec::new();
            write_announce(&mut ours, &r);
            prop_assert_eq!(ours, bendy_announce(&r));
        }

        #[test]
        fn scrape_and_failure_match_bendy(
            files in proptest::collection::vec((any::<[u8; 20]>(), any::<u32>(), any::<u64>(), any::<u32>()), 0..10),
            reason in "[ -~]{0,40}",
        ) {
            let mut files: Vec<(InfoHash, ScrapeCounts)> = files.into_iter().map(|(h, c, d, i)|
                (InfoHash(h), ScrapeCounts { complete: c, downloaded: d, incomplete: i })).collect();
            sort_scrape(&mut files);
            let mut ours = Vec::new();
            write_scrape(&mut ours, &files);
            let mut e = Encoder::new();
            e.emit_dict(|mut d| d.emit_pair_with(b"files", |e| e.emit_unsorted_dict(|d| {
                for (h, c) in &files {
                    d.emit_pair_with(&h.0, |e| e.emit_unsorted_dict(|d| {
                        d.emit_pair(b"incomplete", c.incomplete)?;
                        d.emit_pair(b"downloaded", c.downloaded)?;
                        d.emit_pair(b"complete", c.complete)
                    }))?;
                }
                Ok(())
            }))).unwrap();
            prop_assert_eq!(ours, e.get_output().unwrap());

            let mut ours = Vec::new();
            write_failure(&mut ours, &reason);
            let mut e = Encoder::new();
            e.emit_dict(|mut d| d.emit_pair(b"failure reason", reason.as_str())).unwrap();
            prop_assert_eq!(ours, e.get_output().unwrap());
        }

        #[test]
        fn announce_query_round_trip(
            h in any::<[u8; 20]>(), p in any::<[u8; 20]>(), port in 1u16.., up in any::<u64>(),
            down in any::<u64>(), left in any::<u64>(),
            event in prop_oneof![Just(Event::None), Just(Event::Started), Just(Event::Completed), Just(Event::Stopped)],
            numwant in proptest::option::of(0..=MAX_NUMWANT), compact in any::<bool>(), no_peer_id in any::<bool>(),
            ip in proptest::option::of(any::<IpAddr>()),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN)),
        ) {
            let a = AnnounceRequest {
                info_hash: InfoHash(h), peer_id: PeerId(p), port, uploaded: up, downloaded: down, left, event,
                numwant, compact, no_peer_id, ip, key: key.as_deref().and_then(Token::new), trackerid: None,
            };
            let mut q = String::new();
            a.write_query(&mut q);
            prop_assert_eq!(AnnounceRequest::parse(q.as_bytes()).unwrap(), a);
        }

        #[test]
        fn arbitrary_queries_never_panic(q in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = AnnounceRequest::parse(&q);
            let _ = ScrapeRequest::parse(&q);
        }

        #[test]
        fn structured_garbage_never_panics(
            parts in proptest::collection::vec((
                prop_oneof![Just("info_hash"), Just("peer_id"), Just("port"), Just("left"), Just("numwant"),
                            Just("event"), Just("ip"), Just("key"), Just("compact")],
                "[%0-9a-zA-Z+=.:-]{0,30}"), 0..12),
        ) {
            let q: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = AnnounceRequest::parse(q.join("&").as_bytes());
        }
    }
}
