//! Tracker messages: BEP 3 HTTP announce (URL query and bencoded reply), BEP 23 compact peers, BEP 7
//! `peers6`, and BEP 15 UDP tracker packets. No I/O.
//!
//! The client side of the wire is shared with the workspace's `tracker` crate, which owns the formats
//! (as aquatic's protocol crates are shared by its servers and load testers): the announce query string
//! is written by [`tracker::codec::http::AnnounceRequest::write_query`], the UDP packets are encoded and
//! decoded by [`tracker::codec::udp`], and [`Event`] is the tracker's. What stays here is what only a
//! client needs: reading the bencoded HTTP reply and checking UDP replies against our transaction.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bendy::value::Value;

use crate::bencode::{self, as_dict, BencodeError};
use crate::types::{InfoHash, PeerId};
use tracker::codec::{http as wire_http, udp as wire_udp};

/// The `event` of an announce (the tracker crate's type: same names, same BEP 15 numbers).
pub use tracker::codec::Event;

/// Largest HTTP tracker reply body we read.
pub const MAX_HTTP_REPLY: usize = 1 << 20;
/// Most peers we take from one reply.
pub const MAX_PEERS_PER_REPLY: usize = 2000;
/// BEP 15 magic `protocol_id` of a connect request.
pub const UDP_PROTOCOL_ID: u64 = wire_udp::PROTOCOL_ID;
/// Largest UDP tracker datagram we accept.
pub const MAX_UDP_PACKET: usize = 20 + 6 * MAX_PEERS_PER_REPLY;

/// What we tell a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// Torrent.
    pub info_hash: InfoHash,
    /// Our id.
    pub peer_id: PeerId,
    /// Port we accept peers on.
    pub port: u16,
    /// Bytes uploaded so far.
    pub uploaded: u64,
    /// Bytes downloaded so far.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Event.
    pub event: Event,
    /// Peers wanted.
    pub numwant: u32,
    /// Random key that survives IP changes.
    pub key: u32,
    /// Address to report instead of the source address (BEP 3 `ip`).
    pub ip: Option<Ipv4Addr>,
}

impl AnnounceRequest {
    /// The full announce URL for an HTTP tracker whose announce URL is `base` (compact peers asked for;
    /// `key` as 8 hex digits).
    pub fn http_url(&self, base: &str) -> String {
        let key = format!("{:08x}", self.key);
        let q = wire_http::AnnounceRequest {
            info_hash: tracker::codec::InfoHash(self.info_hash.0),
            peer_id: tracker::codec::PeerId(self.peer_id.0),
            port: self.port,
            uploaded: self.uploaded,
            downloaded: self.downloaded,
            left: self.left,
            event: self.event,
            numwant: Some(self.numwant),
            compact: true,
            no_peer_id: false,
            ip: self.ip.map(IpAddr::V4),
            key: wire_http::Token::new(key.as_bytes()),
            trackerid: None,
        };
        let mut u = String::with_capacity(base.len() + 256);
        u.push_str(base);
        u.push(if base.contains('?') { '&' } else { '?' });
        q.write_query(&mut u);
        u
    }

    /// BEP 15 announce packet (98 bytes).
    pub fn udp_packet(&self, connection_id: u64, transaction_id: u32) -> Vec<u8> {
        let mut b = Vec::with_capacity(wire_udp::ANNOUNCE_LEN);
        wire_udp::Request::Announce(wire_udp::AnnounceRequest {
            connection_id,
            transaction_id,
            info_hash: tracker::codec::InfoHash(self.info_hash.0),
            peer_id: tracker::codec::PeerId(self.peer_id.0),
            downloaded: self.downloaded,
            left: self.left,
            uploaded: self.uploaded,
            event: self.event,
            ip: self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            key: self.key,
            num_want: i32::try_from(self.numwant).unwrap_or(i32::MAX),
            port: self.port,
        })
        .encode(&mut b);
        b
    }
}

/// What a tracker told us.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval: u32,
    /// Seeders, when the tracker says.
    pub complete: Option<u32>,
    /// Leechers, when the tracker says.
    pub incomplete: Option<u32>,
    /// Peers to connect to.
    pub peers: Vec<SocketAddr>,
}

/// Why a tracker reply is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrackerError {
    /// The tracker refused: its `failure reason`.
    #[error("tracker failure: {0}")]
    Failure(String),
    /// Malformed bencoding or fields.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// A UDP packet of the wrong size or action or transaction.
    #[error("bad UDP tracker packet: {0}")]
    Udp(&'static str),
}

/// Parses BEP 23 compact IPv4 peers (6 bytes each).
pub fn compact_peers_v4(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(6)
        .take(MAX_PEERS_PER_REPLY)
        .map(|c| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            ))
        })
        .collect()
}

/// Parses BEP 7 compact IPv6 peers (18 bytes each).
pub fn compact_peers_v6(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(18)
        .take(MAX_PEERS_PER_REPLY)
        .map(|c| {
            let ip: [u8; 16] = c[..16].try_into().expect("16 bytes");
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes([c[16], c[17]]),
                0,
                0,
            ))
        })
        .collect()
}

/// Appends the compact form of one peer: 4 (BEP 23) or 16 (BEP 7) address bytes, then the port.
pub fn push_compact(out: &mut Vec<u8>, peer: &SocketAddr) {
    match peer.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&peer.port().to_be_bytes());
}

/// Compact form of IPv4 peers (for tests).
pub fn encode_compact_v4(peers: &[SocketAddrV4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(peers.len() * 6);
    for p in peers {
        push_compact(&mut out, &SocketAddr::V4(*p));
    }
    out
}

/// Parses the bencoded body of an HTTP announce reply (compact or dictionary peers).
pub fn parse_http_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = bencode::decode(body)?;
    let d = as_dict(&v, "reply")?;
    if let Ok(reason) = bencode::bytes(d, "failure reason") {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    let interval = bencode::int(d, "interval")?.clamp(0, u32::MAX as i64) as u32;
    let count = |k| match bencode::get(d, k) {
        Some(Value::Integer(i)) => Some((*i).clamp(0, u32::MAX as i64) as u32),
        _ => None,
    };
    let mut peers = match bencode::get(d, "peers") {
        Some(Value::Bytes(b)) => compact_peers_v4(b),
        Some(Value::List(list)) => list
            .iter()
            .take(MAX_PEERS_PER_REPLY)
            .filter_map(|p| {
                let pd = as_dict(p, "peers").ok()?;
                let ip: IpAddr = bencode::text(pd, "ip").ok()?.parse().ok()?;
                let port = u16::try_from(bencode::int(pd, "port").ok()?).ok()?;
                Some(SocketAddr::new(ip, port))
            })
            .collect(),
        None => Vec::new(),
        Some(_) => return Err(BencodeError::Bad("peers").into()),
    };
    if let Some(Value::Bytes(b)) = bencode::get(d, "peers6") {
        peers.extend(compact_peers_v6(b));
    }
    Ok(AnnounceResponse {
        interval,
        complete: count("complete"),
        incomplete: count("incomplete"),
        peers,
    })
}

/// BEP 15 connect request (16 bytes).
pub fn udp_connect_request(transaction_id: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(wire_udp::CONNECT_LEN);
    wire_udp::Request::Connect { transaction_id }.encode(&mut b);
    b
}

/// Decodes a BEP 15 reply and checks it answers our transaction; an error reply is the tracker's
/// failure reason.
fn udp_reply(p: &[u8], transaction_id: u32) -> Result<wire_udp::Response, TrackerError> {
    let r = wire_udp::Response::decode(p, false).ok_or(TrackerError::Udp("malformed packet"))?;
    let t = match &r {
        wire_udp::Response::Connect { transaction_id, .. }
        | wire_udp::Response::Announce { transaction_id, .. }
        | wire_udp::Response::Scrape { transaction_id, .. }
        | wire_udp::Response::Error { transaction_id, .. } => *transaction_id,
    };
    if t != transaction_id {
        return Err(TrackerError::Udp("transaction id mismatch"));
    }
    match r {
        wire_udp::Response::Error { msg, .. } => Err(TrackerError::Failure(msg)),
        r => Ok(r),
    }
}

/// Parses a BEP 15 connect response; returns the connection id.
pub fn parse_udp_connect(p: &[u8], transaction_id: u32) -> Result<u64, TrackerError> {
    match udp_reply(p, transaction_id)? {
        wire_udp::Response::Connect { connection_id, .. } => Ok(connection_id),
        _ => Err(TrackerError::Udp("unexpected action")),
    }
}

/// Parses a BEP 15 announce response (IPv4 peers, at most [`MAX_PEERS_PER_REPLY`]).
pub fn parse_udp_announce(p: &[u8], transaction_id: u32) -> Result<AnnounceResponse, TrackerError> {
    match udp_reply(p, transaction_id)? {
        wire_udp::Response::Announce {
            interval,
            leechers,
            seeders,
            mut peers,
            ..
        } => {
            peers.truncate(MAX_PEERS_PER_REPLY);
            Ok(AnnounceResponse {
                interval,
                incomplete: Some(leechers),
                complete: Some(seeders),
                peers,
            })
        }
        _ => Err(TrackerError::Udp("unexpected action")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0x12; 20]),
            peer_id: PeerId(*b"-PL0001-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: 50,
            key: 7,
            ip: None,
        }
    }

    #[test]
    fn http_url_escapes_binary() {
        let u = req().http_url("http://t/announce");
        assert!(u.starts_with("http://t/announce?info_hash=%12%12"));
        assert!(u.contains(
            "&peer_id=-PL0001-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3&event=started"
        ));
        assert!(u.ends_with("&numwant=50&compact=1&key=00000007"), "{u}");
        // The tracker reads back what we wrote.
        let q = u.split_once('?').unwrap().1;
        let back = tracker::codec::http::AnnounceRequest::parse(q.as_bytes()).unwrap();
        assert_eq!(back.info_hash.0, req().info_hash.0);
        assert_eq!(
            (back.port, back.left, back.event),
            (6881, 3, Event::Started)
        );
        assert!(req()
            .http_url("http://t/a?x=1")
            .starts_with("http://t/a?x=1&info_hash="));
    }

    #[test]
    fn compact_reply_against_bendy_oracle() {
        let peers = [
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 6881),
            SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 1),
        ];
        let compact = encode_compact_v4(&peers);
        let mut e = bendy::encoding::Encoder::new();
        e.emit_dict(|mut d| {
            d.emit_pair(b"complete", 2)?;
            d.emit_pair(b"incomplete", 1)?;
            d.emit_pair(b"interval", 1800)?;
            d.emit_pair_with(b"peers", |e| e.emit_bytes(&compact))
        })
        .unwrap();
        let r = parse_http_response(&e.get_output().unwrap()).unwrap();
        assert_eq!(r.interval, 1800);
        assert_eq!(r.complete, Some(2));
        assert_eq!(
            r.peers,
            peers.iter().map(|p| SocketAddr::V4(*p)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn dict_peers_and_failure() {
        let body = b"d8:intervali60e5:peersld2:ip9:127.0.0.14:porti7000eeee";
        let r = parse_http_response(body).unwrap();
        assert_eq!(r.peers, vec!["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(
            parse_http_response(b"d14:failure reason4:nopee"),
            Err(TrackerError::Failure("nope".into()))
        );
    }

    #[test]
    fn udp_packets() {
        let c = udp_connect_request(9);
        assert_eq!(c.len(), 16);
        assert_eq!(&c[..8], &UDP_PROTOCOL_ID.to_be_bytes());
        let mut reply = vec![0, 0, 0, 0, 0, 0, 0, 9];
        reply.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(parse_udp_connect(&reply, 9), Ok(42));
        assert!(parse_udp_connect(&reply, 8).is_err());
        let a = req().udp_packet(42, 10);
        assert_eq!(
            u32::from_be_bytes(a[80..84].try_into().unwrap()),
            2,
            "started = 2"
        );
        assert_eq!(a.len(), 98);
        assert_eq!(&a[96..], &6881u16.to_be_bytes());
        let mut ar = vec![0, 0, 0, 1, 0, 0, 0, 10, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 2];
        ar.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        let r = parse_udp_announce(&ar, 10).unwrap();
        assert_eq!(r.interval, 60);
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 10];
        err.extend_from_slice(b"denied");
        assert_eq!(
            parse_udp_announce(&err, 10),
            Err(TrackerError::Failure("denied".into()))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_replies_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), t in any::<u32>()) {
            let _ = parse_http_response(&b);
            let _ = parse_udp_connect(&b, t);
            let _ = parse_udp_announce(&b, t);
        }

        #[test]
        fn compact_round_trip(ps in proptest::collection::vec((any::<u32>(), any::<u16>()), 0..50)) {
            let v4: Vec<SocketAddrV4> = ps.iter().map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(*ip), *port)).collect();
            let back = compact_peers_v4(&encode_compact_v4(&v4));
            prop_assert_eq!(back, v4.into_iter().map(SocketAddr::V4).collect::<Vec<_>>());
        }
    }
}
