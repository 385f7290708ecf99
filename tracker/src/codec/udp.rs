//! BEP 15 "UDP Tracker Protocol for BitTorrent": the packets, big-endian, fixed layouts.
//!
//! ```text
//! connect request   (16): protocol_id u64 = 0x41727101980 | action u32 = 0 | transaction_id u32
//! connect response  (16): action u32 = 0 | transaction_id u32 | connection_id u64
//! announce request  (98): connection_id u64 | action u32 = 1 | transaction_id u32 | info_hash [20] | peer_id [20]
//!                         | downloaded u64 | left u64 | uploaded u64 | event u32 | ip u32 | key u32 | num_want i32
//!                         | port u16            (BEP 41 options may follow; they are ignored)
//! announce response (20 + 6n or 18n): action u32 = 1 | transaction_id u32 | interval u32 | leechers u32
//!                         | seeders u32 | (ip, port)*   (IPv6 entries when the request came over IPv6)
//! scrape request    (16 + 20n): connection_id u64 | action u32 = 2 | transaction_id u32 | info_hash [20]*
//! scrape response   (8 + 12n): action u32 = 2 | transaction_id u32 | (seeders u32, completed u32, leechers u32)*
//! error response    (8 + m): action u32 = 3 | transaction_id u32 | message
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;

use super::{Event, InfoHash, PeerId};

/// The magic constant that opens a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Action numbers.
pub const ACTION_CONNECT: u32 = 0;
/// Announce action.
pub const ACTION_ANNOUNCE: u32 = 1;
/// Scrape action.
pub const ACTION_SCRAPE: u32 = 2;
/// Error action.
pub const ACTION_ERROR: u32 = 3;
/// Size of a connect request (and of its response).
pub const CONNECT_LEN: usize = 16;
/// Size of an announce request without BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
/// Most info-hashes in one scrape (BEP 15: "up to about 74", what fits in a 1500-byte packet).
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Largest datagram read; anything bigger is cut by the socket and rejected here.
pub const MAX_PACKET_LEN: usize = 2048;
/// Header of an announce response.
pub const ANNOUNCE_REPLY_HEADER: usize = 20;
/// Header of an error response.
pub const ERROR_HEADER: usize = 8;

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Ask for a connection id.
    Connect {
        /// Echoed in the reply.
        transaction_id: u32,
    },
    /// Announce.
    Announce(AnnounceRequest),
    /// Scrape one or more torrents.
    Scrape {
        /// Must be a valid connection id.
        connection_id: u64,
        /// Echoed in the reply.
        transaction_id: u32,
        /// 1..=[`MAX_SCRAPE_HASHES`] torrents.
        info_hashes: Vec<InfoHash>,
    },
}

/// A BEP 15 announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// Must be a valid connection id.
    pub connection_id: u64,
    /// Echoed in the reply.
    pub transaction_id: u32,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The peer.
    pub peer_id: PeerId,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes left; 0 means a seeder.
    pub left: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// What the peer is doing.
    pub event: Event,
    /// Claimed IPv4 address (0 = use the sender's).
    pub ip: Ipv4Addr,
    /// Client key.
    pub key: u32,
    /// Peers wanted; negative means "tracker default".
    pub num_want: i32,
    /// Listening port.
    pub port: u16,
}

/// Why a datagram was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Too short to hold even a transaction id, or a connect without the magic: there is nobody sensible to
    /// answer, so the packet is dropped silently (answering junk is how amplifiers are made).
    #[error("unanswerable packet: {0}")]
    Unsendable(&'static str),
    /// The header was readable: the peer gets an error packet with this transaction id.
    #[error("{msg}")]
    Sendable {
        /// From the request.
        transaction_id: u32,
        /// Connection id from the request (to check it before answering).
        connection_id: u64,
        /// The error text.
        msg: &'static str,
    },
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fn arr20(b: &[u8], i: usize) -> [u8; 20] {
    b[i..i + 20].try_into().expect("20 bytes")
}

impl Request {
    /// Decodes one datagram.
    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        if b.len() < CONNECT_LEN {
            return Err(DecodeError::Unsendable("shorter than 16 bytes"));
        }
        if b.len() > MAX_PACKET_LEN {
            return Err(DecodeError::Unsendable("oversized packet"));
        }
        let connection_id = u64_at(b, 0);
        let action = u32_at(b, 8);
        let transaction_id = u32_at(b, 12);
        let err = |msg| DecodeError::Sendable {
            transaction_id,
            connection_id,
            msg,
        };
        match action {
            ACTION_CONNECT => {
                if connection_id != PROTOCOL_ID {
                    return Err(DecodeError::Unsendable("connect without protocol id"));
                }
                Ok(Request::Connect { transaction_id })
            }
            ACTION_ANNOUNCE => {
                if b.len() < ANNOUNCE_LEN {
                    return Err(err("announce too short"));
                }
                let event = match u32_at(b, 80) {
                    0 => Event::None,
                    1 => Event::Completed,
                    2 => Event::Started,
                    3 => Event::Stopped,
                    _ => return Err(err("unknown event")),
                };
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash: InfoHash(arr20(b, 16)),
                    peer_id: PeerId(arr20(b, 36)),
                    downloaded: u64_at(b, 56),
                    left: u64_at(b, 64),
                    uploaded: u64_at(b, 72),
                    event,
                    ip: Ipv4Addr::from(u32_at(b, 84)),
                    key: u32_at(b, 88),
                    num_want: u32_at(b, 92) as i32,
                    port: u16::from_be_bytes([b[96], b[97]]),
                }))
            }
            ACTION_SCRAPE => {
                let body = &b[16..];
                if body.is_empty() || body.len() % 20 != 0 {
                    return Err(err("scrape length is not 16 + 20n"));
                }
                if body.len() / 20 > MAX_SCRAPE_HASHES {
                    return Err(err("too many info hashes"));
                }
                Ok(Request::Scrape {
                    connection_id,
                    transaction_id,
                    info_hashes: body
                        .chunks_exact(20)
                        .map(|c| InfoHash(c.try_into().expect("20 bytes")))
                        .collect(),
                })
            }
            _ => Err(err("unknown action")),
        }
    }

    /// Encodes a request (what a client sends); used by tests and the load generator.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash.0);
                out.extend_from_slice(&a.peer_id.0);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                let ev: u32 = match a.event {
                    Event::None => 0,
                    Event::Completed => 1,
                    Event::Started => 2,
                    Event::Stopped => 3,
                };
                out.extend_from_slice(&ev.to_be_bytes());
                out.extend_from_slice(&a.ip.octets());
                out.extend_from_slice(&a.key.to_be_bytes());
                out.extend_from_slice(&a.num_want.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for h in info_hashes {
                    out.extend_from_slice(&h.0);
                }
            }
        }
    }
}

/// Appends a connect response.
pub fn write_connect(out: &mut Vec<u8>, transaction_id: u32, connection_id: u64) {
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// Appends an announce response. Peers of the other address family than `ipv6` are skipped: BEP 15 sends
/// 6-byte entries to IPv4 requesters and 18-byte entries to IPv6 requesters.
pub fn write_announce(
    out: &mut Vec<u8>,
    transaction_id: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
    ipv6: bool,
    peers: impl IntoIterator<Item = SocketAddr>,
) {
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
    for p in peers {
        match (p, ipv6) {
            (SocketAddr::V4(a), false) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            (SocketAddr::V6(a), true) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            _ => {}
        }
    }
}

/// Appends a scrape response: `(seeders, completed, leechers)` per requested hash, in request order.
pub fn write_scrape(out: &mut Vec<u8>, transaction_id: u32, entries: &[(u32, u32, u32)]) {
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    for (s, c, l) in entries {
        out.extend_from_slice(&s.to_be_bytes());
        out.extend_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&l.to_be_bytes());
    }
}

/// Appends an error response whose total size never exceeds `budget` bytes (the message is cut to fit), so an
/// error answer is never larger than the packet that caused it. Returns false (nothing written) when even
/// the 8-byte header does not fit.
pub fn write_error(out: &mut Vec<u8>, transaction_id: u32, msg: &str, budget: usize) -> bool {
    if budget < ERROR_HEADER {
        return false;
    }
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    let n = msg.len().min(budget - ERROR_HEADER);
    out.extend_from_slice(&msg.as_bytes()[..n]);
    true
}

/// A decoded response (what a client reads); used by tests and the load generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Connect reply.
    Connect {
        /// Echoed.
        transaction_id: u32,
        /// The id to use.
        connection_id: u64,
    },
    /// Announce reply.
    Announce {
        /// Echoed.
        transaction_id: u32,
        /// Re-announce interval.
        interval: u32,
        /// Leechers.
        leechers: u32,
        /// Seeders.
        seeders: u32,
        /// Peers.
        peers: Vec<SocketAddr>,
    },
    /// Scrape reply.
    Scrape {
        /// Echoed.
        transaction_id: u32,
        /// `(seeders, completed, leechers)` per hash.
        entries: Vec<(u32, u32, u32)>,
    },
    /// Error reply.
    Error {
        /// Echoed.
        transaction_id: u32,
        /// The message.
        msg: String,
    },
}

impl Response {
    /// Decodes a response; `ipv6` says which peer entry size to expect.
    pub fn decode(b: &[u8], ipv6: bool) -> Option<Response> {
        if b.len() < 8 {
            return None;
        }
        let transaction_id = u32_at(b, 4);
        match u32_at(b, 0) {
            ACTION_CONNECT if b.len() == 16 => Some(Response::Connect {
                transaction_id,
                connection_id: u64_at(b, 8),
            }),
            ACTION_ANNOUNCE if b.len() >= ANNOUNCE_REPLY_HEADER => {
                let step = if ipv6 { 18 } else { 6 };
                let body = &b[ANNOUNCE_REPLY_HEADER..];
                if body.len() % step != 0 {
                    return None;
                }
                let peers = body
                    .chunks_exact(step)
                    .map(|c| {
                        let port = u16::from_be_bytes([c[step - 2], c[step - 1]]);
                        let ip: IpAddr = if ipv6 {
                            IpAddr::from(<[u8; 16]>::try_from(&c[..16]).expect("16"))
                        } else {
                            IpAddr::from(<[u8; 4]>::try_from(&c[..4]).expect("4"))
                        };
                        SocketAddr::new(ip, port)
                    })
                    .collect();
                Some(Response::Announce {
                    transaction_id,
                    interval: u32_at(b, 8),
                    leechers: u32_at(b, 12),
                    seeders: u32_at(b, 16),
                    peers,
                })
            }
            ACTION_SCRAPE if (b.len() - 8) % 12 == 0 => Some(Response::Scrape {
                transaction_id,
                entries: b[8..]
                    .chunks_exact(12)
                    .map(|c| (u32_at(c, 0), u32_at(c, 4), u32_at(c, 8)))
                    .collect(),
            }),
            ACTION_ERROR => Some(Response::Error {
                transaction_id,
                msg: String::from_utf8_lossy(&b[8..]).into_owned(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::None),
            Just(Event::Started),
            Just(Event::Completed),
            Just(Event::Stopped)
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let connect = any::<u32>().prop_map(|t| Request::Connect { transaction_id: t });
        let announce = (
            any::<(u64, u32, [u8; 20], [u8; 20], u64, u64, u64)>(),
            (
                arb_event(),
                any::<u32>(),
                any::<u32>(),
                any::<i32>(),
                any::<u16>(),
            ),
        )
            .prop_map(
                |((c, t, h, p, d, l, u), (event, ip, key, num_want, port))| {
                    Request::Announce(AnnounceRequest {
                        connection_id: c,
                        transaction_id: t,
                        info_hash: InfoHash(h),
                        peer_id: PeerId(p),
                        downloaded: d,
                        left: l,
                        uploaded: u,
                        event,
                        ip: Ipv4Addr::from(ip),
                        key,
                        num_want,
                        port,
                    })
                },
            );
        let scrape = (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<[u8; 20]>(), 1..=MAX_SCRAPE_HASHES),
        )
            .prop_map(|(c, t, hs)| Request::Scrape {
                connection_id: c,
                transaction_id: t,
                info_hashes: hs.into_iter().map(InfoHash).collect(),
            });
        prop_oneof![connect, announce, scrape]
    }

    #[test]
    fn bep15_connect_layout() {
        let mut b = Vec::new();
        Request::Connect {
            transaction_id: 0xdeadbeef,
        }
        .encode(&mut b);
        assert_eq!(
            b,
            [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]
        );
        let mut r = Vec::new();
        write_connect(&mut r, 0xdeadbeef, 7);
        assert_eq!(r.len(), CONNECT_LEN);
        assert_eq!(
            Response::decode(&r, false),
            Some(Response::Connect {
                transaction_id: 0xdeadbeef,
                connection_id: 7
            })
        );
    }

    #[test]
    fn bep15_bad_packets() {
        assert!(matches!(
            Request::decode(&[0; 15]),
            Err(DecodeError::Unsendable(_))
        ));
        // Connect without the magic constant.
        assert!(matches!(
            Request::decode(&[0; 16]),
            Err(DecodeError::Unsendable(_))
        ));
        let mut b = vec![0u8; 16];
        b[11] = 9; // action 9
        b[15] = 5;
        assert_eq!(
            Request::decode(&b),
            Err(DecodeError::Sendable {
                transaction_id: 5,
                connection_id: 0,
                msg: "unknown action"
            })
        );
        b[11] = 1; // announce, too short
        assert!(matches!(
            Request::decode(&b),
            Err(DecodeError::Sendable { .. })
        ));
        b[11] = 2; // scrape without hashes
        assert!(matches!(
            Request::decode(&b),
            Err(DecodeError::Sendable { .. })
        ));
    }

    #[test]
    fn error_never_exceeds_budget() {
        let mut out = Vec::new();
        assert!(write_error(&mut out, 1, "a long message here", 12));
        assert_eq!(out.len(), 12);
        out.clear();
        assert!(!write_error(&mut out, 1, "x", 7));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn request_round_trip(r in arb_request()) {
            let mut b = Vec::new();
            r.encode(&mut b);
            prop_assert_eq!(Request::decode(&b).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Request::decode(&b);
            let _ = Response::decode(&b, false);
            let _ = Response::decode(&b, true);
        }

        #[test]
        fn announce_response_round_trip(
            t in any::<u32>(), i in any::<u32>(), l in any::<u32>(), s in any::<u32>(), ipv6 in any::<bool>(),
            peers in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..30),
        ) {
            let peers: Vec<SocketAddr> = peers.into_iter().map(|(ip, port)| if ipv6 {
                SocketAddr::new(IpAddr::from(ip), port)
            } else {
                SocketAddr::new(IpAddr::from([ip[0], ip[1], ip[2], ip[3]]), port)
            }).collect();
            let mut b = Vec::new();
            write_announce(&mut b, t, i, l, s, ipv6, peers.iter().copied());
            prop_assert_eq!(b.len(), ANNOUNCE_REPLY_HEADER + peers.len() * if ipv6 { 18 } else { 6 });
            prop_assert_eq!(Response::decode(&b, ipv6), Some(Response::Announce {
                transaction_id: t, interval: i, leechers: l, seeders: s, peers }));
        }
    }

    #[test]
    fn every_length_and_action_never_panics() {
        for action in 0..5u32 {
            for len in 0..300usize {
                let mut b = vec![0xA5u8; len];
                if len >= 12 {
                    b[8..12].copy_from_slice(&action.to_be_bytes());
                }
                let _ = Request::decode(&b);
            }
        }
    }
}
