//! Message bodies (`shared/protocols/kazaa.md` §2, the table after "Framing"; giFT-FastTrack `PROTOCOL`,
//! `fst_session.c`, `fst_search.c`, `fst_push.c`; MLDonkey `fasttrack_proto.ml` for 0x01 and the routed
//! headers).
//!
//! A [`Packet`] is a frame's 16-bit type and body seen as (optional SN↔SN [`Route`], [`Message`]). The low
//! byte of the type is the message code; a high byte of `0x80` adds the 13-byte unicast header and `0xC0`
//! the 9-byte broadcast header in front of the body. Other high bytes are kept as [`Message::Unknown`].

use std::net::{Ipv4Addr, SocketAddrV4};

use common::hash::UuHash;

use super::tag::{decode_tags, encode_tags, Tag};
use super::{put_dynint, DecodeError, Reader};

/// Message codes (low byte of the frame type).
pub mod code {
    /// Node list.
    pub const NODE_LIST: u8 = 0x00;
    /// SN neighbours.
    pub const SN_NEIGHBOURS: u8 = 0x01;
    /// User info.
    pub const USER_INFO: u8 = 0x02;
    /// Unshare.
    pub const UNSHARE: u8 = 0x05;
    /// Query.
    pub const QUERY: u8 = 0x06;
    /// Query reply.
    pub const REPLY: u8 = 0x07;
    /// End of results.
    pub const QUERY_END: u8 = 0x08;
    /// Network stats.
    pub const STATS: u8 = 0x09;
    /// Forwarded query (SN↔SN).
    pub const FORWARD_QUERY: u8 = 0x0A;
    /// Forwarded query, second form (SN↔SN).
    pub const FORWARD_QUERY_2: u8 = 0x0B;
    /// Push request / relay.
    pub const PUSH: u8 = 0x0D;
    /// Reachability probe (ip4, port2). Historically "send a UDP 0xC0 there"; we send it SN → ON
    /// after a TCP connect-back to that address succeeded (README, "Promotion").
    pub const REACHABILITY: u8 = 0x15;
    /// Network name.
    pub const NETWORK_NAME: u8 = 0x1D;
    /// Share.
    pub const SHARE: u8 = 0x22;
    /// Protocol version.
    pub const PROTOCOL_VERSION: u8 = 0x26;
    /// External IP.
    pub const EXTERNAL_IP: u8 = 0x2C;
}

/// High byte of a unicast-routed type.
pub const FLAGS_UNICAST: u8 = 0x80;
/// High byte of a broadcast-routed type.
pub const FLAGS_BROADCAST: u8 = 0xC0;
/// Routed packets start at hop 1; one over this is dropped (giFT).
pub const MAX_HOPS: u8 = 6;
/// Length of a node-list entry.
pub const NODE_ENTRY_LEN: usize = 8;
/// Entries an SN sends in one node list (the "200-entry list").
pub const MAX_NODE_LIST_ENTRIES: usize = 200;
/// Length of an SN-neighbour entry of 0x01.
pub const NEIGHBOUR_ENTRY_LEN: usize = 26;
/// Longest username we accept.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest network name inside results and stats.
pub const MAX_NET_LEN: usize = 64;
/// Most query terms (the count is one byte).
pub const MAX_QUERY_TERMS: usize = u8::MAX as usize;
/// Longest query term value.
pub const MAX_TERM_LEN: usize = 1024;
/// Smallest encoded result (ip, port, bw, `02`, hash, three one-byte dynints): bounds the result count.
pub const MIN_RESULT_LEN: usize = 4 + 2 + 1 + 1 + 20 + 3;
/// Most (network, users) pairs after the stats block.
pub const MAX_STATS_NETWORKS: usize = 32;
/// Length of the long (ON→SN, SN↔SN) push form without the username.
pub const PUSH_REQUEST_FIXED_LEN: usize = 4 + 3 * 6;
/// Length of the short (SN→target) push form.
pub const PUSH_RELAY_LEN: usize = 4 + 6;

/// One node-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEntry {
    /// The SN's address.
    pub addr: SocketAddrV4,
    /// Minutes since it was last seen.
    pub last_seen: u8,
    /// Load in percent (giFT suspects remaining capacity; we send load, see the README).
    pub load: u8,
}

/// One 0x01 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour SN.
    pub addr: SocketAddrV4,
    /// 19 bytes nobody decoded.
    pub unknown: [u8; 19],
    /// Distance in hops.
    pub hops: u8,
}

/// A shared file as 0x22 and 0x05 carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Media type byte (see [`super::MediaType`]); 0x05 does not carry it and decodes as 0.
    pub media: u8,
    /// ContentHash (UUHash).
    pub hash: UuHash,
    /// 14-bit checksum of the hash.
    pub file_id: u32,
    /// Size in bytes.
    pub size: u64,
    /// Tags (filename, title, bitrate…).
    pub tags: Vec<Tag>,
}

/// One query term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTerm {
    /// Comparison byte ([`super::Comparison`]).
    pub cmp: u8,
    /// Tag code being compared.
    pub field: u8,
    /// Raw value (string bytes, dynint or hash).
    pub value: Vec<u8>,
}

/// A query body (0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// "Up to x" results.
    pub max_results: u16,
    /// The ON's search id.
    pub search_id: u16,
    /// Realm byte ([`super::Realm`]).
    pub realm: u8,
    /// Terms, all of which must match.
    pub terms: Vec<QueryTerm>,
}

/// One result inside a 0x07.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResult {
    /// The sharing ON's HTTP address (private or port 0 = firewalled).
    pub addr: SocketAddrV4,
    /// Its bandwidth byte.
    pub bandwidth: u8,
    /// Its username.
    pub user: String,
    /// Its network name.
    pub network: String,
    /// The file.
    pub hash: UuHash,
    /// File id checksum.
    pub file_id: u32,
    /// Size in bytes.
    pub size: u64,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// A reply (0x07): one wave, headed by the SN whose index produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The answering SN.
    pub sn: SocketAddrV4,
    /// The search id being answered.
    pub search_id: u16,
    /// The results.
    pub results: Vec<SearchResult>,
}

/// Per-media counters in 0x09.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaStat {
    /// Files.
    pub files: u32,
    /// Size mantissa.
    pub mantissa: u16,
    /// Size exponent (GB = m·2^(e−30)).
    pub exponent: u16,
}

/// Network stats (0x09).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Users online.
    pub users: u32,
    /// Files shared.
    pub files: u32,
    /// Total size mantissa.
    pub mantissa: u16,
    /// Total size exponent.
    pub exponent: u16,
    /// Six per-media blocks.
    pub media: [MediaStat; 6],
    /// Optional (network, users) pairs.
    pub networks: Vec<(String, u32)>,
}

/// Encodes a size in bytes as FastTrack's (mantissa, exponent) with GB = m·2^(e−30).
pub fn size_to_float(bytes: u64) -> (u16, u16) {
    let mut m = bytes;
    let mut e: u16 = 0;
    while m > u64::from(u16::MAX) {
        m >>= 1;
        e += 1;
    }
    (m as u16, e)
}

/// Decodes (mantissa, exponent) to bytes (saturating).
pub fn float_to_size(m: u16, e: u16) -> u64 {
    u64::from(m)
        .checked_shl(u32::from(e))
        .filter(|v| v >> e == u64::from(m))
        .unwrap_or(u64::MAX)
}

/// A message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x00: SN list.
    NodeList(Vec<NodeEntry>),
    /// 0x01: SN neighbours.
    SnNeighbours(Vec<Neighbour>),
    /// 0x02: the ON's user info.
    UserInfo {
        /// Its HTTP address (port 0 = none).
        addr: SocketAddrV4,
        /// Bandwidth byte (≈14·log2(kbps)+59; 0xD1 = "infinite").
        bandwidth: u8,
        /// Username.
        user: String,
    },
    /// 0x05.
    Unshare(FileMeta),
    /// 0x06.
    Query(Query),
    /// 0x07.
    Reply(Reply),
    /// 0x08.
    QueryEnd {
        /// The finished search.
        search_id: u16,
    },
    /// 0x09.
    Stats(Stats),
    /// 0x0A / 0x0B.
    ForwardQuery {
        /// 0x0A or 0x0B.
        code: u8,
        /// 4 bytes nobody decoded; we carry max_results in the first two (README).
        unknown: [u8; 4],
        /// The query (its `max_results` is not in this layout and decodes as 0).
        query: Query,
    },
    /// 0x0D, long form: a requester asks its SN to reach a firewalled target.
    PushRequest {
        /// Push id (echoed in `GIVE <id>`).
        push_id: u32,
        /// Where the target should connect.
        requester: SocketAddrV4,
        /// The firewalled source.
        target: SocketAddrV4,
        /// Its SN (from the 0x07 header).
        target_sn: SocketAddrV4,
        /// Its username.
        target_user: String,
    },
    /// 0x0D, short form: the target's SN tells it whom to connect to.
    PushRelay {
        /// Push id.
        push_id: u32,
        /// Where to connect.
        requester: SocketAddrV4,
    },
    /// 0x15: reachability probe, an ip:port. We send it SN → ON once the SN could connect back to that
    /// address (re-created meaning, see the README).
    Reachability(SocketAddrV4),
    /// 0x1D.
    NetworkName(String),
    /// 0x22.
    Share(FileMeta),
    /// 0x26.
    ProtocolVersion(u32),
    /// 0x2C.
    ExternalIp(Ipv4Addr),
    /// Anything else, kept raw.
    Unknown {
        /// Full 16-bit type.
        msg_type: u16,
        /// Body.
        payload: Vec<u8>,
    },
}

/// SN↔SN routing header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// 0x80xx: 13 bytes.
    Unicast {
        /// Origin SN.
        src: SocketAddrV4,
        /// Destination SN.
        dst: SocketAddrV4,
        /// Hops so far (starts at 1).
        hops: u8,
    },
    /// 0xC0xx: 9 bytes.
    Broadcast {
        /// Origin SN.
        src: SocketAddrV4,
        /// 2 bytes nobody decoded.
        unknown: [u8; 2],
        /// Hops so far (starts at 1).
        hops: u8,
    },
}

/// A frame body seen as routing header + message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The SN↔SN header, if any.
    pub route: Option<Route>,
    /// The message.
    pub message: Message,
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn read_addr(r: &mut Reader<'_>, what: &'static str) -> Result<SocketAddrV4, DecodeError> {
    let ip = r.ip4(what)?;
    Ok(SocketAddrV4::new(ip, r.u16(what)?))
}

/// `s` cut to at most `max` bytes at a char boundary, so an encoded name always decodes again (a lossy
/// decode of invalid UTF-8 can grow a name past its limit).
fn clip(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_file_id(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    u32::try_from(r.dynint("file id")?).map_err(|_| DecodeError::Invalid { what: "file id" })
}

fn put_file_tail(out: &mut Vec<u8>, hash: &UuHash, file_id: u32, size: u64, tags: &[Tag]) {
    out.extend_from_slice(&hash.0);
    put_dynint(out, u64::from(file_id));
    put_dynint(out, size);
    encode_tags(tags, out);
}

fn put_terms(out: &mut Vec<u8>, q: &Query) {
    out.push(0x01);
    out.push(q.realm);
    out.push(q.terms.len().min(MAX_QUERY_TERMS) as u8);
    for t in q.terms.iter().take(MAX_QUERY_TERMS) {
        out.push(t.cmp);
        out.push(t.field);
        put_dynint(out, t.value.len() as u64);
        out.extend_from_slice(&t.value);
    }
}

fn read_terms(r: &mut Reader<'_>, max_results: u16, search_id: u16) -> Result<Query, DecodeError> {
    let _one = r.u8("query marker")?;
    let realm = r.u8("realm")?;
    let n = usize::from(r.u8("term count")?);
    let mut terms = Vec::with_capacity(n.min(r.remaining() / 3));
    for _ in 0..n {
        let cmp = r.u8("comparison")?;
        let field = r.u8("field")?;
        let len = r.dynint_len("term length", MAX_TERM_LEN)?;
        terms.push(QueryTerm {
            cmp,
            field,
            value: r.bytes(len, "term value")?.to_vec(),
        });
    }
    Ok(Query {
        max_results,
        search_id,
        realm,
        terms,
    })
}

impl Message {
    /// The message code (low byte of the frame type).
    pub fn code(&self) -> u8 {
        match self {
            Message::NodeList(_) => code::NODE_LIST,
            Message::SnNeighbours(_) => code::SN_NEIGHBOURS,
            Message::UserInfo { .. } => code::USER_INFO,
            Message::Unshare(_) => code::UNSHARE,
            Message::Query(_) => code::QUERY,
            Message::Reply(_) => code::REPLY,
            Message::QueryEnd { .. } => code::QUERY_END,
            Message::Stats(_) => code::STATS,
            Message::ForwardQuery { code, .. } => *code,
            Message::PushRequest { .. } | Message::PushRelay { .. } => code::PUSH,
            Message::Reachability(_) => code::REACHABILITY,
            Message::NetworkName(_) => code::NETWORK_NAME,
            Message::Share(_) => code::SHARE,
            Message::ProtocolVersion(_) => code::PROTOCOL_VERSION,
            Message::ExternalIp(_) => code::EXTERNAL_IP,
            Message::Unknown { msg_type, .. } => *msg_type as u8,
        }
    }

    /// A short name for logs and stats.
    pub fn name(&self) -> &'static str {
        match self {
            Message::NodeList(_) => "node_list",
            Message::SnNeighbours(_) => "sn_neighbours",
            Message::UserInfo { .. } => "user_info",
            Message::Unshare(_) => "unshare",
            Message::Query(_) => "query",
            Message::Reply(_) => "reply",
            Message::QueryEnd { .. } => "query_end",
            Message::Stats(_) => "stats",
            Message::ForwardQuery { .. } => "forward_query",
            Message::PushRequest { .. } => "push_request",
            Message::PushRelay { .. } => "push_relay",
            Message::Reachability(_) => "reachability",
            Message::NetworkName(_) => "network_name",
            Message::Share(_) => "share",
            Message::ProtocolVersion(_) => "protocol_version",
            Message::ExternalIp(_) => "external_ip",
            Message::Unknown { .. } => "unknown",
        }
    }

    /// Appends the body. Names are clipped to their limits. Usernames in results must not contain
    /// `0x00`/`0x01` nor start with `0x02` (the layout cannot carry them); [`Self::decode`] never yields
    /// such names, and the protocol layer only accepts plain usernames.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Message::NodeList(entries) => {
                for e in entries {
                    put_addr(out, e.addr);
                    out.push(e.last_seen);
                    out.push(e.load);
                }
            }
            Message::SnNeighbours(ns) => {
                for n in ns {
                    put_addr(out, n.addr);
                    out.extend_from_slice(&n.unknown);
                    out.push(n.hops);
                }
            }
            Message::UserInfo {
                addr,
                bandwidth,
                user,
            } => {
                put_addr(out, *addr);
                out.push(*bandwidth);
                out.push(0);
                out.extend_from_slice(clip(user, MAX_USERNAME_LEN));
            }
            Message::Unshare(f) => put_file_tail(out, &f.hash, f.file_id, f.size, &f.tags),
            Message::Query(q) => {
                out.extend_from_slice(&[0x00, 0x01]);
                out.extend_from_slice(&q.max_results.to_be_bytes());
                out.extend_from_slice(&q.search_id.to_be_bytes());
                put_terms(out, q);
            }
            Message::Reply(rep) => {
                put_addr(out, rep.sn);
                out.extend_from_slice(&rep.search_id.to_be_bytes());
                let n = rep.results.len().min(usize::from(u16::MAX));
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for (i, r) in rep.results.iter().take(n).enumerate() {
                    put_addr(out, r.addr);
                    out.push(r.bandwidth);
                    // The decoder resolves `02` to the first earlier result from this address.
                    let seen = rep.results[..i]
                        .iter()
                        .find(|p| p.addr == r.addr)
                        .is_some_and(|p| p.user == r.user && p.network == r.network);
                    if seen {
                        out.push(0x02);
                    } else {
                        out.extend_from_slice(clip(&r.user, MAX_USERNAME_LEN));
                        out.push(0x01);
                        out.extend_from_slice(clip(&r.network, MAX_NET_LEN));
                        out.push(0x00);
                    }
                    put_file_tail(out, &r.hash, r.file_id, r.size, &r.tags);
                }
            }
            Message::QueryEnd { search_id } => out.extend_from_slice(&search_id.to_be_bytes()),
            Message::Stats(s) => {
                out.extend_from_slice(&s.users.to_be_bytes());
                out.extend_from_slice(&s.files.to_be_bytes());
                out.extend_from_slice(&s.mantissa.to_be_bytes());
                out.extend_from_slice(&s.exponent.to_be_bytes());
                for m in &s.media {
                    out.extend_from_slice(&m.files.to_be_bytes());
                    out.extend_from_slice(&m.mantissa.to_be_bytes());
                    out.extend_from_slice(&m.exponent.to_be_bytes());
                }
                for (net, users) in &s.networks {
                    out.extend_from_slice(clip(net, MAX_NET_LEN));
                    out.push(0);
                    out.extend_from_slice(&users.to_be_bytes());
                }
            }
            Message::ForwardQuery { unknown, query, .. } => {
                out.extend_from_slice(unknown);
                out.extend_from_slice(&query.search_id.to_be_bytes());
                put_terms(out, query);
            }
            Message::PushRequest {
                push_id,
                requester,
                target,
                target_sn,
                target_user,
            } => {
                out.extend_from_slice(&push_id.to_be_bytes());
                put_addr(out, *requester);
                put_addr(out, *target);
                put_addr(out, *target_sn);
                out.extend_from_slice(clip(target_user, MAX_USERNAME_LEN));
            }
            Message::PushRelay { push_id, requester } => {
                out.extend_from_slice(&push_id.to_be_bytes());
                put_addr(out, *requester);
            }
            Message::Reachability(a) => put_addr(out, *a),
            Message::NetworkName(n) => out.extend_from_slice(clip(n, MAX_NET_LEN)),
            Message::Share(f) => {
                out.extend_from_slice(&[0x00, f.media, 0x00, 0x00]);
                put_file_tail(out, &f.hash, f.file_id, f.size, &f.tags);
            }
            Message::ProtocolVersion(v) => out.extend_from_slice(&v.to_be_bytes()),
            Message::ExternalIp(ip) => out.extend_from_slice(&ip.octets()),
            Message::Unknown { payload, .. } => out.extend_from_slice(payload),
        }
    }

    /// Decodes the body of an unrouted message with code `code`.
    pub fn decode(code: u8, body: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(body);
        let m = match code {
            code::NODE_LIST => {
                if body.len() % NODE_ENTRY_LEN != 0 {
                    return Err(DecodeError::Invalid {
                        what: "node list length",
                    });
                }
                let mut v = Vec::with_capacity(body.len() / NODE_ENTRY_LEN);
                while r.remaining() > 0 {
                    let addr = read_addr(&mut r, "node entry")?;
                    v.push(NodeEntry {
                        addr,
                        last_seen: r.u8("last seen")?,
                        load: r.u8("load")?,
                    });
                }
                Message::NodeList(v)
            }
            code::SN_NEIGHBOURS => {
                if body.len() % NEIGHBOUR_ENTRY_LEN != 0 {
                    return Err(DecodeError::Invalid {
                        what: "neighbour list length",
                    });
                }
                let mut v = Vec::with_capacity(body.len() / NEIGHBOUR_ENTRY_LEN);
                while r.remaining() > 0 {
                    let addr = read_addr(&mut r, "neighbour")?;
                    let unknown = r.array("neighbour")?;
                    v.push(Neighbour {
                        addr,
                        unknown,
                        hops: r.u8("hops")?,
                    });
                }
                Message::SnNeighbours(v)
            }
            code::USER_INFO => {
                let addr = read_addr(&mut r, "user info")?;
                let bandwidth = r.u8("bandwidth")?;
                let _zero = r.u8("user info pad")?;
                let user = r.rest();
                if user.len() > MAX_USERNAME_LEN {
                    return Err(DecodeError::TooLong {
                        what: "username",
                        len: user.len(),
                        max: MAX_USERNAME_LEN,
                    });
                }
                Message::UserInfo {
                    addr,
                    bandwidth,
                    user: text(user),
                }
            }
            code::UNSHARE => {
                let hash = UuHash(r.array("hash")?);
                let file_id = read_file_id(&mut r)?;
                let size = r.dynint("size")?;
                Message::Unshare(FileMeta {
                    media: 0,
                    hash,
                    file_id,
                    size,
                    tags: decode_tags(&mut r)?,
                })
            }
            code::QUERY => {
                let _lead = r.u16("query lead")?;
                let max_results = r.u16("max results")?;
                let search_id = r.u16("search id")?;
                Message::Query(read_terms(&mut r, max_results, search_id)?)
            }
            code::REPLY => {
                let sn = read_addr(&mut r, "reply sn")?;
                let search_id = r.u16("search id")?;
                let n = usize::from(r.u16("result count")?);
                if n * MIN_RESULT_LEN > r.remaining() {
                    return Err(DecodeError::Truncated { what: "results" });
                }
                let mut results: Vec<SearchResult> = Vec::with_capacity(n);
                for _ in 0..n {
                    let addr = read_addr(&mut r, "result address")?;
                    let bandwidth = r.u8("bandwidth")?;
                    let (user, network) = if r.peek() == Some(0x02) {
                        r.u8("user ref")?;
                        let prev = results.iter().find(|p| p.addr == addr).ok_or(
                            DecodeError::Invalid {
                                what: "user back-reference",
                            },
                        )?;
                        (prev.user.clone(), prev.network.clone())
                    } else {
                        let user = text(r.until(0x01, "username", MAX_USERNAME_LEN)?);
                        (user, text(r.cstr("network", MAX_NET_LEN)?))
                    };
                    let hash = UuHash(r.array("hash")?);
                    let file_id = read_file_id(&mut r)?;
                    let size = r.dynint("size")?;
                    let tags = decode_tags(&mut r)?;
                    results.push(SearchResult {
                        addr,
                        bandwidth,
                        user,
                        network,
                        hash,
                        file_id,
                        size,
                        tags,
                    });
                }
                Message::Reply(Reply {
                    sn,
                    search_id,
                    results,
                })
            }
            code::QUERY_END => Message::QueryEnd {
                search_id: r.u16("search id")?,
            },
            code::STATS => {
                let mut s = Stats {
                    users: r.u32("users")?,
                    files: r.u32("files")?,
                    mantissa: r.u16("size")?,
                    exponent: r.u16("size")?,
                    ..Stats::default()
                };
                for m in s.media.iter_mut() {
                    *m = MediaStat {
                        files: r.u32("media files")?,
                        mantissa: r.u16("media size")?,
                        exponent: r.u16("media size")?,
                    };
                }
                while r.remaining() > 0 {
                    if s.networks.len() == MAX_STATS_NETWORKS {
                        return Err(DecodeError::TooLong {
                            what: "stats networks",
                            len: MAX_STATS_NETWORKS + 1,
                            max: MAX_STATS_NETWORKS,
                        });
                    }
                    let net = text(r.cstr("network", MAX_NET_LEN)?);
                    s.networks.push((net, r.u32("network users")?));
                }
                Message::Stats(s)
            }
            code::FORWARD_QUERY | code::FORWARD_QUERY_2 => {
                let unknown = r.array("forward header")?;
                let search_id = r.u16("search id")?;
                let query = read_terms(&mut r, 0, search_id)?;
                Message::ForwardQuery {
                    code,
                    unknown,
                    query,
                }
            }
            code::PUSH => match body.len() {
                PUSH_RELAY_LEN => Message::PushRelay {
                    push_id: r.u32("push id")?,
                    requester: read_addr(&mut r, "requester")?,
                },
                n if n >= PUSH_REQUEST_FIXED_LEN => {
                    let push_id = r.u32("push id")?;
                    let requester = read_addr(&mut r, "requester")?;
                    let target = read_addr(&mut r, "target")?;
                    let target_sn = read_addr(&mut r, "target sn")?;
                    let user = r.rest();
                    if user.len() > MAX_USERNAME_LEN {
                        return Err(DecodeError::TooLong {
                            what: "username",
                            len: user.len(),
                            max: MAX_USERNAME_LEN,
                        });
                    }
                    Message::PushRequest {
                        push_id,
                        requester,
                        target,
                        target_sn,
                        target_user: text(user),
                    }
                }
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "push length",
                    })
                }
            },
            code::REACHABILITY => Message::Reachability(read_addr(&mut r, "reachable address")?),
            code::NETWORK_NAME => {
                let n = r.rest();
                if n.len() > MAX_NET_LEN {
                    return Err(DecodeError::TooLong {
                        what: "network name",
                        len: n.len(),
                        max: MAX_NET_LEN,
                    });
                }
                Message::NetworkName(text(n))
            }
            code::SHARE => {
                let _ = r.u8("share lead")?;
                let media = r.u8("media")?;
                let _ = r.u16("share pad")?;
                let hash = UuHash(r.array("hash")?);
                let file_id = read_file_id(&mut r)?;
                let size = r.dynint("size")?;
                Message::Share(FileMeta {
                    media,
                    hash,
                    file_id,
                    size,
                    tags: decode_tags(&mut r)?,
                })
            }
            code::PROTOCOL_VERSION => Message::ProtocolVersion(r.u32("version")?),
            code::EXTERNAL_IP => Message::ExternalIp(r.ip4("external ip")?),
            _ => Message::Unknown {
                msg_type: u16::from(code),
                payload: r.rest().to_vec(),
            },
        };
        r.finish()?;
        Ok(m)
    }
}

impl Packet {
    /// An unrouted packet.
    pub fn plain(message: Message) -> Packet {
        Packet {
            route: None,
            message,
        }
    }

    /// The frame type and body.
    pub fn encode(&self) -> (u16, Vec<u8>) {
        let mut out = Vec::new();
        if let Message::Unknown { msg_type, payload } = &self.message {
            return (*msg_type, payload.clone());
        }
        let flags = match self.route {
            None => 0u8,
            Some(Route::Unicast { src, dst, hops }) => {
                put_addr(&mut out, src);
                put_addr(&mut out, dst);
                out.push(hops);
                FLAGS_UNICAST
            }
            Some(Route::Broadcast { src, unknown, hops }) => {
                put_addr(&mut out, src);
                out.extend_from_slice(&unknown);
                out.push(hops);
                FLAGS_BROADCAST
            }
        };
        self.message.encode_body(&mut out);
        (u16::from_be_bytes([flags, self.message.code()]), out)
    }

    /// Decodes a frame's type and body.
    pub fn decode(msg_type: u16, body: &[u8]) -> Result<Packet, DecodeError> {
        let [flags, code] = msg_type.to_be_bytes();
        let mut r = Reader::new(body);
        let route = match flags {
            0 => None,
            FLAGS_UNICAST => Some(Route::Unicast {
                src: read_addr(&mut r, "route source")?,
                dst: read_addr(&mut r, "route destination")?,
                hops: r.u8("hops")?,
            }),
            FLAGS_BROADCAST => Some(Route::Broadcast {
                src: read_addr(&mut r, "route source")?,
                unknown: r.array("route header")?,
                hops: r.u8("hops")?,
            }),
            _ => {
                return Ok(Packet::plain(Message::Unknown {
                    msg_type,
                    payload: body.to_vec(),
                }));
            }
        };
        let message = Message::decode(code, r.rest())?;
        if route.is_some() && matches!(message, Message::Unknown { .. }) {
            // Unknown routed bodies stay whole so they re-encode byte for byte.
            return Ok(Packet::plain(Message::Unknown {
                msg_type,
                payload: body.to_vec(),
            }));
        }
        Ok(Packet { route, message })
    }
}
