//! Tracker messages: BEP 3 HTTP announce (URL query and bencoded reply), BEP 23 compact peers, BEP 7
//! `peers6`, and BEP 15 UDP tracker packets. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bendy::value::Value;

use crate::bencode::{self, as_dict, BencodeError};
use crate::types::{InfoHash, PeerId};

/// Largest HTTP tracker reply body we read.
pub const MAX_HTTP_REPLY: usize = 1 << 20;
/// Most peers we take from one reply.
pub const MAX_PEERS_PER_REPLY: usize = 2000;
/// BEP 15 magic `protocol_id` of a connect request.
pub const UDP_PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Largest UDP tracker datagram we accept.
pub const MAX_UDP_PACKET: usize = 20 + 6 * MAX_PEERS_PER_REPLY;

/// The `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Regular re-announce.
    None,
    /// First announce.
    Started,
    /// Download finished.
    Completed,
    /// Leaving the swarm.
    Stopped,
}

impl Event {
    fn http(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    fn udp(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

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

fn pct_bytes(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl AnnounceRequest {
    /// The full announce URL for an HTTP tracker whose announce URL is `base`.
    pub fn http_url(&self, base: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut u = format!(
            "{base}{sep}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
            pct_bytes(&self.info_hash.0),
            pct_bytes(&self.peer_id.0),
            self.port,
            self.uploaded,
            self.downloaded,
            self.left,
            self.numwant,
            self.key
        );
        if let Some(e) = self.event.http() {
            u.push_str("&event=");
            u.push_str(e);
        }
        if let Some(ip) = self.ip {
            u.push_str(&format!("&ip={ip}"));
        }
        u
    }

    /// BEP 15 announce packet (98 bytes).
    pub fn udp_packet(&self, connection_id: u64, transaction_id: u32) -> [u8; 98] {
        let mut b = [0u8; 98];
        b[0..8].copy_from_slice(&connection_id.to_be_bytes());
        b[8..12].copy_from_slice(&1u32.to_be_bytes());
        b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
        b[16..36].copy_from_slice(&self.info_hash.0);
        b[36..56].copy_from_slice(&self.peer_id.0);
        b[56..64].copy_from_slice(&self.downloaded.to_be_bytes());
        b[64..72].copy_from_slice(&self.left.to_be_bytes());
        b[72..80].copy_from_slice(&self.uploaded.to_be_bytes());
        b[80..84].copy_from_slice(&self.event.udp().to_be_bytes());
        b[84..88].copy_from_slice(&self.ip.map(u32::from).unwrap_or(0).to_be_bytes());
        b[88..92].copy_from_slice(&self.key.to_be_bytes());
        b[92..96].copy_from_slice(&(self.numwant as i32).to_be_bytes());
        b[96..98].copy_from_slice(&self.port.to_be_bytes());
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

/// Compact form of IPv4 peers (for tests and for PEX).
pub fn encode_compact_v4(peers: &[SocketAddrV4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(peers.len() * 6);
    for p in peers {
        out.extend_from_slice(&p.ip().octets());
        out.extend_from_slice(&p.port().to_be_bytes());
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
                let ip: std::net::IpAddr = bencode::text(pd, "ip").ok()?.parse().ok()?;
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
pub fn udp_connect_request(transaction_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&UDP_PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&0u32.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b
}

fn udp_header(p: &[u8], action: u32, transaction_id: u32) -> Result<(), TrackerError> {
    if p.len() < 8 {
        return Err(TrackerError::Udp("short packet"));
    }
    let a = u32::from_be_bytes(p[..4].try_into().expect("4"));
    let t = u32::from_be_bytes(p[4..8].try_into().expect("4"));
    if t != transaction_id {
        return Err(TrackerError::Udp("transaction id mismatch"));
    }
    if a == 3 {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(&p[8..]).into_owned(),
        ));
    }
    if a != action {
        return Err(TrackerError::Udp("unexpected action"));
    }
    Ok(())
}

/// Parses a BEP 15 connect response; returns the connection id.
pub fn parse_udp_connect(p: &[u8], transaction_id: u32) -> Result<u64, TrackerError> {
    udp_header(p, 0, transaction_id)?;
    if p.len() < 16 {
        return Err(TrackerError::Udp("short connect reply"));
    }
    Ok(u64::from_be_bytes(p[8..16].try_into().expect("8")))
}

/// Parses a BEP 15 announce response (IPv4 peers).
pub fn parse_udp_announce(p: &[u8], transaction_id: u32) -> Result<AnnounceResponse, TrackerError> {
    udp_header(p, 1, transaction_id)?;
    if p.len() < 20 {
        return Err(TrackerError::Udp("short announce reply"));
    }
    let word = |at: usize| u32::from_be_bytes(p[at..at + 4].try_into().expect("4"));
    Ok(AnnounceResponse {
        interval: word(8),
        incomplete: Some(word(12)),
        complete: Some(word(16)),
        peers: compact_peers_v4(&p[20..]),
    })
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
            "&peer_id=%2DPL0001%2Dabcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3&compact=1"
        ));
        assert!(u.ends_with("&event=started"));
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
