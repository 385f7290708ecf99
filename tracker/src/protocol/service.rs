//! Request in, reply bytes out: the whole tracker as one sans-I/O value, whatever the transport.
//!
//! [`Service::http_announce`] / [`Service::http_scrape`] take the raw query string of `GET /announce` or
//! `GET /scrape` (BEP 3, BEP 48) and write the bencoded body; [`Service::udp`] takes one BEP 15 datagram and
//! writes the reply datagram (or nothing). The node only moves bytes and clocks. Reply buffers are passed
//! in and reused, so the announce path does not allocate once warm.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::conn_id::{reply_budget, ConnectionIds};
use super::swarm::{Announce, Config, Refusal, Tracker};
use crate::codec::http::{self, AnnounceReply, PeerEntry, PeerForm, ScrapeRequest};
use crate::codec::udp::{self, DecodeError, Request};
use crate::codec::InfoHash;

/// What a request was, for the stats counters: `kind` is the message type (`announce`, `scrape`,
/// `connect`), `error` the error kind when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Message type.
    pub kind: &'static str,
    /// Error kind (`bad_request`, `not_allowed`, `full`, `bad_connection_id`, `scrape_all_disabled`,
    /// `unanswerable`), if the request failed.
    pub error: Option<&'static str>,
}

impl Outcome {
    fn ok(kind: &'static str) -> Outcome {
        Outcome { kind, error: None }
    }
    fn err(kind: &'static str, error: &'static str) -> Outcome {
        Outcome {
            kind,
            error: Some(error),
        }
    }
}

/// Options beyond the swarm policy.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Believe the `ip` parameter (HTTP) / field (UDP). Off by default: anyone could otherwise point a swarm
    /// at a victim. Useful when the tracker sits behind a NAT with its peers.
    pub trust_ip_param: bool,
    /// Sent as `tracker id` in HTTP replies.
    pub tracker_id: Option<Vec<u8>>,
    /// List a peer also under the BEP 7 `ipv4=` / `ipv6=` address it names (of the family it did not
    /// connect over). BEP 7 now discourages these parameters because they let anyone point a swarm at an
    /// address of the other family; `--no-bep7-addresses` turns them off.
    pub bep7_alt_addresses: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            trust_ip_param: false,
            tracker_id: None,
            bep7_alt_addresses: true,
        }
    }
}

/// How long the encoded reply of a full scrape (`/scrape` without `info_hash`) is reused. On a full table
/// it is tens of MB; building it per request would let a few clients keep the tracker busy with it. A
/// change to the table shows up in a full scrape at most this much later.
pub const FULL_SCRAPE_TTL: Duration = Duration::from_secs(1);

/// The tracker with its transports' logic.
#[derive(Debug)]
pub struct Service {
    tracker: Tracker,
    ids: ConnectionIds,
    rng: StdRng,
    opts: ServiceOptions,
    peers: Vec<PeerEntry>,
    /// The last full-scrape body and when it was built (see [`FULL_SCRAPE_TTL`]).
    full_scrape: Option<(Instant, Vec<u8>)>,
}

fn refusal_kind(r: Refusal) -> &'static str {
    match r {
        Refusal::NotAllowed => "not_allowed",
        Refusal::Full => "full",
    }
}

impl Service {
    /// A service whose randomness (peer selection, connection-id key) all comes from `seed`.
    pub fn new(cfg: Config, opts: ServiceOptions, seed: u64) -> Service {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids = ConnectionIds::new(&mut rng);
        Service {
            tracker: Tracker::new(cfg),
            ids,
            rng,
            opts,
            peers: Vec::new(),
            full_scrape: None,
        }
    }

    /// The swarm state.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The swarm state, mutably (expiry, restoring counters).
    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// Handles `GET /announce?<query>` from `src`, writing the bencoded body to `out` (cleared first).
    pub fn http_announce(
        &mut self,
        now: Instant,
        src: SocketAddr,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let (req, alt) = match http::AnnounceRequest::parse_with_alt(query) {
            Ok(r) => r,
            Err(e) => {
                http::write_failure(out, &e.to_string());
                return Outcome::err("announce", "bad_request");
            }
        };
        let ip = match req.ip {
            Some(ip) if self.opts.trust_ip_param => ip.to_canonical(),
            _ => src.ip().to_canonical(),
        };
        // BEP 7: the address of the family the peer did not connect over, unless disabled.
        let alt_addr = if !self.opts.bep7_alt_addresses {
            None
        } else if ip.is_ipv6() {
            alt.ipv4
                .map(|(a, p)| SocketAddr::new(IpAddr::V4(a), p.unwrap_or(req.port)))
        } else {
            alt.ipv6
                .map(|(a, p)| SocketAddr::new(IpAddr::V6(a), p.unwrap_or(req.port)))
                .filter(|a| !a.ip().to_canonical().is_ipv4())
        };
        let a = Announce {
            info_hash: req.info_hash,
            peer_id: req.peer_id,
            addr: SocketAddr::new(ip, req.port),
            alt_addr,
            left: req.left,
            event: req.event,
            numwant: req.numwant,
            want_ipv6: None,
            want_peer_ids: !req.compact && !req.no_peer_id,
        };
        match self
            .tracker
            .announce(now, &mut self.rng, &a, &mut self.peers)
        {
            Ok(c) => {
                let cfg = self.tracker.config();
                // The one case a client is told about: it asked for more peers than the tracker sends
                // (so a short list does not mean a small swarm).
                let warning = req
                    .numwant
                    .filter(|&n| n > cfg.max_peers)
                    .map(|n| format!("numwant {n} capped at {}", cfg.max_peers));
                let form = if req.compact {
                    PeerForm::Compact
                } else {
                    PeerForm::Dict {
                        with_peer_id: !req.no_peer_id,
                    }
                };
                http::write_announce(
                    out,
                    &AnnounceReply {
                        interval: cfg.interval,
                        min_interval: Some(cfg.min_interval),
                        complete: c.complete,
                        incomplete: c.incomplete,
                        tracker_id: self.opts.tracker_id.as_deref(),
                        warning: warning.as_deref(),
                        peers: &self.peers,
                        form,
                    },
                );
                Outcome::ok("announce")
            }
            Err(r) => {
                http::write_failure(out, refusal_str(r));
                Outcome::err("announce", refusal_kind(r))
            }
        }
    }

    /// Handles `GET /scrape?<query>` (BEP 48), writing the bencoded body to `out` (cleared first). A full
    /// scrape built less than [`FULL_SCRAPE_TTL`] before `now` is answered from its cached bytes.
    pub fn http_scrape(&mut self, now: Instant, query: &[u8], out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let req = match ScrapeRequest::parse(query) {
            Ok(r) => r,
            Err(e) => {
                http::write_failure(out, &e.to_string());
                return Outcome::err("scrape", "bad_request");
            }
        };
        if !req.info_hashes.is_empty() {
            let mut files: Vec<(InfoHash, http::ScrapeCounts)> = req
                .info_hashes
                .iter()
                .map(|h| (*h, self.tracker.scrape(h)))
                .collect();
            http::sort_scrape(&mut files);
            http::write_scrape(out, &files);
            return Outcome::ok("scrape");
        }
        if !self.tracker.config().scrape_all {
            http::write_failure(out, "full scrape is disabled on this tracker");
            return Outcome::err("scrape", "scrape_all_disabled");
        }
        match &mut self.full_scrape {
            Some((built, body)) if now.saturating_duration_since(*built) < FULL_SCRAPE_TTL => {
                out.extend_from_slice(body);
            }
            cache => {
                let mut files: Vec<(InfoHash, http::ScrapeCounts)> = self.tracker.all().collect();
                http::sort_scrape(&mut files);
                http::write_scrape(out, &files);
                // Reuse the old buffer's capacity rather than holding two.
                let mut body = cache.take().map(|(_, b)| b).unwrap_or_default();
                body.clear();
                body.extend_from_slice(out);
                *cache = Some((now, body));
            }
        }
        Outcome::ok("scrape")
    }

    /// Handles one BEP 15 datagram from `src`; the reply datagram goes to `out` (cleared first; left empty
    /// when nothing must be sent). `unix_secs` is the wall clock for connection ids.
    pub fn udp(
        &mut self,
        now: Instant,
        unix_secs: u64,
        src: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let src_ip = src.ip().to_canonical();
        let req = match Request::decode(packet) {
            Ok(r) => r,
            Err(DecodeError::Unsendable(_)) => return Outcome::err("invalid", "unanswerable"),
            Err(DecodeError::Sendable {
                transaction_id,
                connection_id,
                msg,
            }) => {
                let auth = self.ids.check(connection_id, src_ip, unix_secs);
                udp::write_error(out, transaction_id, msg, reply_budget(packet.len(), auth));
                return Outcome::err("invalid", "bad_request");
            }
        };
        match req {
            Request::Connect { transaction_id } => {
                // 16 bytes in, 16 bytes out: no amplification even for spoofed senders.
                udp::write_connect(out, transaction_id, self.ids.make(src_ip, unix_secs));
                Outcome::ok("connect")
            }
            Request::Announce(a) => {
                if !self.ids.check(a.connection_id, src_ip, unix_secs) {
                    udp::write_error(
                        out,
                        a.transaction_id,
                        "invalid connection id",
                        reply_budget(packet.len(), false),
                    );
                    return Outcome::err("announce", "bad_connection_id");
                }
                if a.port == 0 {
                    // As over HTTP: nobody can connect to port 0, so the entry would only mislead.
                    udp::write_error(out, a.transaction_id, "port out of range", usize::MAX);
                    return Outcome::err("announce", "bad_request");
                }
                let ip = if self.opts.trust_ip_param && !a.ip.is_unspecified() {
                    IpAddr::V4(a.ip)
                } else {
                    src_ip
                };
                let ann = Announce {
                    info_hash: a.info_hash,
                    peer_id: a.peer_id,
                    addr: SocketAddr::new(ip, a.port),
                    alt_addr: None,
                    left: a.left,
                    event: a.event,
                    numwant: u32::try_from(a.num_want).ok(),
                    want_ipv6: Some(src_ip.is_ipv6()),
                    want_peer_ids: false,
                };
                match self
                    .tracker
                    .announce(now, &mut self.rng, &ann, &mut self.peers)
                {
                    Ok(c) => {
                        udp::write_announce(
                            out,
                            a.transaction_id,
                            self.tracker.config().interval,
                            c.incomplete,
                            c.complete,
                            src_ip.is_ipv6(),
                            self.peers.iter().map(|p| p.addr),
                        );
                        Outcome::ok("announce")
                    }
                    Err(r) => {
                        udp::write_error(out, a.transaction_id, refusal_str(r), usize::MAX);
                        Outcome::err("announce", refusal_kind(r))
                    }
                }
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                if !self.ids.check(connection_id, src_ip, unix_secs) {
                    udp::write_error(
                        out,
                        transaction_id,
                        "invalid connection id",
                        reply_budget(packet.len(), false),
                    );
                    return Outcome::err("scrape", "bad_connection_id");
                }
                let entries: Vec<(u32, u32, u32)> = info_hashes
                    .iter()
                    .map(|h| {
                        let s = self.tracker.scrape(h);
                        (
                            s.complete,
                            u32::try_from(s.downloaded).unwrap_or(u32::MAX),
                            s.incomplete,
                        )
                    })
                    .collect();
                udp::write_scrape(out, transaction_id, &entries);
                Outcome::ok("scrape")
            }
        }
    }
}

fn refusal_str(r: Refusal) -> &'static str {
    match r {
        Refusal::NotAllowed => "torrent not allowed on this tracker",
        Refusal::Full => "tracker is full, try again later",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::udp::Response;
    use crate::codec::{Event, PeerId};

    fn svc() -> Service {
        Service::new(Config::default(), ServiceOptions::default(), 42)
    }

    /// A BEP 15 announce of peer id `[peer; 20]` on port `port` for torrent `[1; 20]`, transaction 1.
    fn udp_announce(connection_id: u64, peer: u8, port: u16) -> Vec<u8> {
        let mut pkt = Vec::new();
        Request::Announce(udp::AnnounceRequest {
            connection_id,
            transaction_id: 1,
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([peer; 20]),
            downloaded: 0,
            left: 10,
            uploaded: 0,
            event: Event::Started,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            key: 0,
            num_want: -1,
            port,
        })
        .encode(&mut pkt);
        pkt
    }

    #[test]
    fn http_announce_compact_and_failure() {
        let mut s = svc();
        let now = Instant::now();
        let mut out = Vec::new();
        let src: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let q = b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&left=5&event=started";
        assert_eq!(
            s.http_announce(now, src, q, &mut out),
            Outcome::ok("announce")
        );
        let q2 = b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=cccccccccccccccccccc&port=7000&left=0";
        s.http_announce(now, "127.0.0.6:1".parse().unwrap(), q2, &mut out);
        let text = out.clone();
        // d8:completei1e10:incompletei1e8:intervali1800e12:min intervali900e5:peers6:<127.0.0.5:6881>e
        let mut want =
            b"d8:completei1e10:incompletei1e8:intervali1800e12:min intervali900e5:peers6:".to_vec();
        want.extend_from_slice(&[127, 0, 0, 5, 0x1a, 0xe1]);
        want.push(b'e');
        assert_eq!(text, want);
        let o = s.http_announce(now, src, b"info_hash=short", &mut out);
        assert_eq!(o.error, Some("bad_request"));
        assert!(out.starts_with(b"d14:failure reason"));
    }

    #[test]
    fn warning_message_when_numwant_is_capped_matches_bendy() {
        use bendy::encoding::{AsString, Encoder};
        let mut s = svc();
        let now = Instant::now();
        let mut out = Vec::new();
        let src: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let q = b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&left=5&numwant=200";
        assert_eq!(
            s.http_announce(now, src, q, &mut out),
            Outcome::ok("announce")
        );
        let mut e = Encoder::new();
        e.emit_and_sort_dict(|e| {
            e.emit_pair(b"complete", 0)?;
            e.emit_pair(b"incomplete", 1)?;
            e.emit_pair(b"interval", 1800)?;
            e.emit_pair(b"min interval", 900)?;
            e.emit_pair(b"peers", AsString(&b""[..]))?;
            e.emit_pair(b"warning message", "numwant 200 capped at 50")
        })
        .unwrap();
        assert_eq!(out, e.get_output().unwrap());
        // Within the cap (or not given): no warning.
        for q in [&q[..q.len() - 3], &q[..q.len() - 12]] {
            let q = [q, b"50"].concat();
            s.http_announce(now, src, &q, &mut out);
            assert!(
                !out.windows(7).any(|w| w == b"warning"),
                "{}",
                String::from_utf8_lossy(&q)
            );
        }
    }

    #[test]
    fn a_known_peer_id_from_another_ip_neither_moves_nor_evicts_its_peer() {
        let mut s = svc();
        let now = Instant::now();
        let mut out = Vec::new();
        let base = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&left=5";
        let owner: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let q = format!("{base}&key=A1B2C3D4&event=started");
        assert_eq!(
            s.http_announce(now, owner, q.as_bytes(), &mut out),
            Outcome::ok("announce")
        );
        // Peers are their addresses (swarm module doc): the same peer id from elsewhere, whatever its
        // key, is another peer, and its `stopped` removes nothing of the owner's.
        let thief: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        for q in [
            format!("{base}&key=0BADF00D"),
            format!("{base}&event=stopped"),
        ] {
            assert_eq!(
                s.http_announce(now, thief, q.as_bytes(), &mut out),
                Outcome::ok("announce"),
                "{q}"
            );
        }
        assert_eq!(s.tracker().peer_count(), 1);
        let q = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=cccccccccccccccccccc&port=6882&left=5&compact=1";
        s.http_announce(now, thief, q.as_bytes(), &mut out);
        let mut e = bendy::encoding::Encoder::new();
        e.emit_dict(|mut e| {
            e.emit_pair(b"complete", 0)?;
            e.emit_pair(b"incomplete", 2)?;
            e.emit_pair(b"interval", 1800)?;
            e.emit_pair(b"min interval", 900)?;
            e.emit_pair(
                b"peers",
                bendy::encoding::AsString(&[127, 0, 0, 5, 0x1a, 0xe1][..]),
            )
        })
        .unwrap();
        assert_eq!(
            out,
            e.get_output().unwrap(),
            "the owner is still listed at its address"
        );
    }

    #[test]
    fn bep7_ipv6_peers_go_to_peers6_and_mapped_v4_stays_v4() {
        let mut s = svc();
        let now = Instant::now();
        let mut out = Vec::new();
        let q = |p: char, port: u16| {
            format!(
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id={}&port={port}&left=5",
                p.to_string().repeat(20)
            )
        };
        s.http_announce(
            now,
            "[2001:db8::7]:1".parse().unwrap(),
            q('b', 7000).as_bytes(),
            &mut out,
        );
        s.http_announce(
            now,
            "[::ffff:10.0.0.9]:1".parse().unwrap(),
            q('c', 7001).as_bytes(),
            &mut out,
        );
        s.http_announce(
            now,
            "10.0.0.1:1".parse().unwrap(),
            q('d', 7002).as_bytes(),
            &mut out,
        );
        let mut v4 = vec![10, 0, 0, 9];
        v4.extend_from_slice(&7001u16.to_be_bytes());
        let mut v6 = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        v6.extend_from_slice(&7000u16.to_be_bytes());
        let mut want = b"5:peers6:".to_vec();
        want.extend_from_slice(&v4);
        want.extend_from_slice(b"6:peers618:");
        want.extend_from_slice(&v6);
        want.push(b'e');
        assert!(out.ends_with(&want), "{:?}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn bep7_ipv6_parameter_lists_a_v4_peer_in_peers6_too() {
        let q = |p: char, port: u16, extra: &str| {
            format!(
                "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id={}&port={port}&left=5{extra}",
                p.to_string().repeat(20)
            )
        };
        for on in [true, false] {
            let opts = ServiceOptions {
                bep7_alt_addresses: on,
                ..ServiceOptions::default()
            };
            let mut s = Service::new(Config::default(), opts, 1);
            let now = Instant::now();
            let mut out = Vec::new();
            let dual = q('b', 7000, "&ipv6=%5B2001:db8::7%5D:7001");
            s.http_announce(
                now,
                "10.0.0.7:1".parse().unwrap(),
                dual.as_bytes(),
                &mut out,
            );
            let o = s.http_announce(
                now,
                "10.0.0.8:1".parse().unwrap(),
                q('c', 7002, "").as_bytes(),
                &mut out,
            );
            assert_eq!(o, Outcome::ok("announce"));
            let mut want = b"d8:completei0e10:incompletei2e".to_vec();
            want.extend_from_slice(b"8:intervali1800e12:min intervali900e5:peers6:");
            want.extend_from_slice(&[10, 0, 0, 7, 0x1b, 0x58]);
            if on {
                want.extend_from_slice(b"6:peers618:");
                want.extend_from_slice(
                    &"2001:db8::7"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets(),
                );
                want.extend_from_slice(&7001u16.to_be_bytes());
            }
            want.push(b'e');
            assert_eq!(out, want, "bep7 {on}: {:?}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn bep15_flow_connect_announce_scrape() {
        let mut s = svc();
        let now = Instant::now();
        let t = 1_700_000_000;
        let src: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let mut out = Vec::new();
        let mut pkt = Vec::new();
        Request::Connect { transaction_id: 9 }.encode(&mut pkt);
        s.udp(now, t, src, &pkt, &mut out);
        let Some(Response::Connect { connection_id, .. }) = Response::decode(&out, false) else {
            panic!("no connect reply");
        };
        pkt = udp_announce(connection_id, 1, 6881);
        assert_eq!(s.udp(now, t, src, &pkt, &mut out), Outcome::ok("announce"));
        // A second peer, from another address with its own connection id.
        let src2: SocketAddr = "127.0.0.10:5000".parse().unwrap();
        let cid2 = s.ids.make(src2.ip(), t);
        pkt = udp_announce(cid2, 2, 7000);
        s.udp(now, t, src2, &pkt, &mut out);
        assert_eq!(
            Response::decode(&out, false),
            Some(Response::Announce {
                transaction_id: 1,
                interval: 1800,
                leechers: 2,
                seeders: 0,
                peers: vec!["127.0.0.9:6881".parse().unwrap()]
            })
        );
        // Port 0 is refused, as over HTTP, and nothing is stored.
        pkt = udp_announce(cid2, 3, 0);
        let o = s.udp(now, t, src2, &pkt, &mut out);
        assert_eq!(o.error, Some("bad_request"));
        assert_eq!(&out[..4], &3u32.to_be_bytes(), "an error packet");
        assert_eq!(s.tracker().peer_count(), 2);
        // The first peer's id is useless from the second address.
        pkt = udp_announce(connection_id, 2, 7000);
        let o = s.udp(now, t, src2, &pkt, &mut out);
        assert_eq!(o.error, Some("bad_connection_id"));
        assert!(out.len() <= pkt.len(), "no amplification");
        pkt.clear();
        Request::Scrape {
            connection_id,
            transaction_id: 3,
            info_hashes: vec![InfoHash([1; 20]), InfoHash([2; 20])],
        }
        .encode(&mut pkt);
        s.udp(now, t, src, &pkt, &mut out);
        assert_eq!(
            Response::decode(&out, false),
            Some(Response::Scrape {
                transaction_id: 3,
                entries: vec![(0, 0, 2), (0, 0, 0)]
            })
        );
    }

    #[test]
    fn port_zero_is_refused_over_http_and_udp() {
        let mut s = svc();
        let now = Instant::now();
        let t = 1_700_000_000;
        let src: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let mut out = Vec::new();
        let q = b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=0&left=5&event=started";
        let o = s.http_announce(now, src, q, &mut out);
        assert_eq!(o, Outcome::err("announce", "bad_request"));
        assert_eq!(out, b"d14:failure reason17:port out of rangee");
        let pkt = udp_announce(s.ids.make(src.ip(), t), 1, 0);
        let o = s.udp(now, t, src, &pkt, &mut out);
        assert_eq!(o, Outcome::err("announce", "bad_request"));
        assert_eq!(
            Response::decode(&out, false),
            Some(Response::Error {
                transaction_id: 1,
                msg: "port out of range".into()
            })
        );
        assert_eq!(s.tracker().peer_count(), 0, "nothing stored");
        assert_eq!(s.tracker().torrent_count(), 0, "no torrent created");
    }

    #[test]
    fn unauthenticated_replies_never_exceed_request() {
        let mut s = svc();
        let now = Instant::now();
        let src: SocketAddr = "10.1.2.3:1".parse().unwrap();
        let mut out = Vec::new();
        for len in 0..200usize {
            for action in 0..4u32 {
                let mut b = vec![0x11u8; len];
                if len >= 16 {
                    b[8..12].copy_from_slice(&action.to_be_bytes());
                }
                s.udp(now, 1000, src, &b, &mut out);
                assert!(
                    out.len() <= len,
                    "len {len} action {action}: {} out",
                    out.len()
                );
            }
        }
    }
}
