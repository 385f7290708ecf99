//! Multi-process tests of the `tracker` binary on 127.0.0.1 port 0 (and `[::1]:0`): HTTP (BEP 3/23/48),
//! UDP (BEP 15), IPv6 sockets (BEP 7 `peers6`, BEP 15's 18-byte entries), bad input, the stats page, the
//! cached full scrape, allow-list mode, expiry, the state file and clean shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use integration::{eventually, Daemon};
use tracker::codec::http::{pct_encode, AnnounceRequest};
use tracker::codec::udp::{self, Request, Response};
use tracker::codec::{Event, InfoHash, PeerId};

/// A running tracker (the shared `integration` harness: process group killed on drop).
struct Tracker {
    d: Daemon,
    http: SocketAddr,
    udp: Option<SocketAddr>,
}

impl Tracker {
    /// Starts `tracker --listen 127.0.0.1:0 [--udp 127.0.0.1:0] <extra>` and waits for its readiness lines.
    fn start(udp: bool, extra: &[&str]) -> Tracker {
        Tracker::start_on("127.0.0.1", udp, extra)
    }

    /// The same on another address (`[::1]` for the IPv6 test).
    fn start_on(ip: &str, udp: bool, extra: &[&str]) -> Tracker {
        let listen = format!("{ip}:0");
        let mut args = vec!["--listen", &listen];
        if udp {
            args.extend(["--udp", &listen]);
        }
        args.extend(extra);
        let d = Daemon::builder_path(env!("CARGO_BIN_EXE_tracker"))
            .args(args)
            .env("RUST_LOG", "warn")
            .expect_listening(if udp { 2 } else { 1 })
            .spawn()
            .expect("tracker starts");
        let http = d.addr_of("tcp", None).expect("tcp readiness");
        let udp = d.addr_of("udp", None);
        Tracker { d, http, udp }
    }

    /// SIGTERM and a bounded wait for a clean exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.d
            .terminate(Duration::from_secs(10))
            .expect("stops on SIGTERM")
    }

    /// `GET path` over a fresh connection; returns (status code, body).
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(self.http, path, &[])
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`.
fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes())
}

/// Sends raw bytes on a fresh connection and returns everything the tracker sent until it closed.
fn raw_exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp
}

/// Sends raw bytes and splits the one reply into (status, body).
fn raw_request(addr: SocketAddr, req: &[u8]) -> (u16, Vec<u8>) {
    let resp = raw_exchange(addr, req);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a full HTTP response head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, resp[split + 4..].to_vec())
}

/// A UDP client socket with a receive timeout.
fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `pkt` and returns the reply (None on timeout).
fn udp_roundtrip(s: &UdpSocket, to: SocketAddr, pkt: &[u8]) -> Option<Vec<u8>> {
    s.send_to(pkt, to).unwrap();
    let mut buf = [0u8; 4096];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// A BEP 15 connect from `s`; returns the connection id.
fn udp_connect(s: &UdpSocket, to: SocketAddr) -> u64 {
    let mut p = Vec::new();
    Request::Connect { transaction_id: 77 }.encode(&mut p);
    let reply = udp_roundtrip(s, to, &p).expect("connect reply");
    match Response::decode(&reply, to.is_ipv6()) {
        Some(Response::Connect {
            transaction_id: 77,
            connection_id,
        }) => connection_id,
        r => panic!("bad connect reply {r:?}"),
    }
}

/// A BEP 15 `started` announce of peer id `[peer; 20]` (also its transaction id and key) on torrent
/// `[hash; 20]`.
fn udp_announce(cid: u64, hash: u8, peer: u8, port: u16, left: u64) -> Vec<u8> {
    let mut p = Vec::new();
    Request::Announce(udp::AnnounceRequest {
        connection_id: cid,
        transaction_id: u32::from(peer),
        info_hash: InfoHash([hash; 20]),
        peer_id: PeerId([peer; 20]),
        downloaded: 0,
        left,
        uploaded: 0,
        event: Event::Started,
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        key: u32::from(peer),
        num_want: -1,
        port,
    })
    .encode(&mut p);
    p
}

/// Decodes a bencoded body with bendy (an independent decoder) into a dictionary.
fn bdecode(body: &[u8]) -> std::collections::BTreeMap<Vec<u8>, bendy::value::Value<'static>> {
    use bendy::decoding::FromBencode;
    match bendy::value::Value::from_bencode(body).expect("valid bencode") {
        bendy::value::Value::Dict(d) => d
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        v => panic!("not a dictionary: {v:?}"),
    }
}

fn bint(v: &bendy::value::Value<'_>) -> i64 {
    match v {
        bendy::value::Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

fn bbytes(v: &bendy::value::Value<'_>) -> Vec<u8> {
    match v {
        bendy::value::Value::Bytes(b) => b.to_vec(),
        v => panic!("not a string: {v:?}"),
    }
}

fn announce_query(h: u8, p: u8, port: u16, left: u64, event: Event) -> String {
    let a = AnnounceRequest {
        info_hash: InfoHash([h; 20]),
        peer_id: PeerId([p; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: None,
        compact: true,
        no_peer_id: false,
        ip: None,
        key: None,
        trackerid: None,
    };
    let mut q = String::from("/announce?");
    a.write_query(&mut q);
    q
}

#[test]
fn http_announce_scrape_and_stats() {
    // `always`: peers 1 and 2 announce compact, yet the first dictionary reply lists their ids.
    let t = Tracker::start(false, &["--interval", "120", "--peer-ids", "always"]);
    let (code, body) = t.get(&announce_query(1, 1, 6001, 100, Event::Started));
    assert_eq!(code, 200);
    let d = bdecode(&body);
    assert_eq!(bint(&d[&b"interval"[..]]), 120);
    assert_eq!(bint(&d[&b"incomplete"[..]]), 1);
    assert!(bbytes(&d[&b"peers"[..]]).is_empty(), "alone: no peers");

    let (_, body) = t.get(&announce_query(1, 2, 6002, 0, Event::Started));
    let d = bdecode(&body);
    assert_eq!(
        bbytes(&d[&b"peers"[..]]),
        vec![127, 0, 0, 1, 0x17, 0x71],
        "the leecher on 127.0.0.1:6001"
    );
    assert_eq!(bint(&d[&b"complete"[..]]), 1);

    // Dictionary form with and without peer id.
    let q = announce_query(1, 3, 6003, 5, Event::Started).replace("compact=1", "compact=0");
    let d = bdecode(&t.get(&q).1);
    let bendy::value::Value::List(peers) = &d[&b"peers"[..]] else {
        panic!("dictionary form expected")
    };
    let mut listed: Vec<_> = peers
        .iter()
        .map(|p| {
            let bendy::value::Value::Dict(p) = p else {
                panic!("peer entry is a dictionary")
            };
            (
                bbytes(&p[&b"ip"[..]]),
                bint(&p[&b"port"[..]]),
                p.get(&b"peer id"[..]).map(bbytes),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            (b"127.0.0.1".to_vec(), 6001, Some(vec![1; 20])),
            (b"127.0.0.1".to_vec(), 6002, Some(vec![2; 20])),
        ]
    );
    let q = format!("{q}&no_peer_id=1");
    let d = bdecode(&t.get(&q).1);
    let bendy::value::Value::List(peers) = &d[&b"peers"[..]] else {
        panic!("dictionary form expected")
    };
    for p in peers {
        let bendy::value::Value::Dict(p) = p else {
            panic!()
        };
        assert!(!p.contains_key(&b"peer id"[..]));
        assert_eq!(bbytes(&p[&b"ip"[..]]), b"127.0.0.1");
    }

    // Scrape one, many, all.
    let mut q = String::from("/scrape?info_hash=");
    pct_encode(&[1; 20], &mut q);
    q.push_str("&info_hash=");
    pct_encode(&[9; 20], &mut q);
    let d = bdecode(&t.get(&q).1);
    let bendy::value::Value::Dict(files) = &d[&b"files"[..]] else {
        panic!()
    };
    let bendy::value::Value::Dict(f) = &files[&[1u8; 20][..]] else {
        panic!()
    };
    assert_eq!(bint(&f[&b"complete"[..]]), 1);
    assert_eq!(bint(&f[&b"incomplete"[..]]), 2);
    assert_eq!(files.len(), 2);
    let d = bdecode(&t.get("/scrape").1);
    let bendy::value::Value::Dict(files) = &d[&b"files"[..]] else {
        panic!()
    };
    assert_eq!(files.len(), 1, "full scrape lists every torrent");

    let (code, body) = t.get("/stats");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["torrents"], 1);
    assert_eq!(v["peers"], 3);
    assert_eq!(v["list"][0]["info_hash"], hex::encode([1u8; 20]));
    assert!(v["messages"]["announce"]["in_count"].as_u64().unwrap() >= 4);
    let (code, body) = t.get("/stats?format=html");
    assert_eq!(code, 200);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<table") && html.contains(&hex::encode([1u8; 20])));
}

#[test]
fn bad_http_input_gets_failure_reason_and_tracker_survives() {
    let t = Tracker::start(false, &[]);
    for q in [
        "/announce",
        "/announce?info_hash=short&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0",
        "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&numwant=999999999",
        "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=abc&left=0",
        "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=0&left=0",
        "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&left=0&event=exploded",
        "/scrape?info_hash=%zz",
    ] {
        let (code, body) = t.get(q);
        assert_eq!(code, 200, "{q}");
        let d = bdecode(&body);
        assert!(d.contains_key(&b"failure reason"[..]), "{q}");
    }
    let long = format!("/announce?x={}", "a".repeat(5000));
    let (_, body) = t.get(&long);
    let d = bdecode(&body);
    assert!(String::from_utf8(bbytes(&d[&b"failure reason"[..]]))
        .unwrap()
        .contains("too long"));
    // A request head over 8 KiB gets a bencoded failure too (and the connection is closed).
    let big = "x".repeat(20_000);
    let (code, body) = http_get(t.http, "/announce", &[("X-Big", &big)]);
    assert_eq!(code, 200);
    let reason = String::from_utf8(bbytes(&bdecode(&body)[&b"failure reason"[..]])).unwrap();
    assert!(reason.contains("head too large"), "{reason}");
    // Not HTTP at all: 400 with a bencoded reason.
    let (code, body) = raw_request(t.http, b"\x16\x03\x01 hello\r\n\r\n");
    assert_eq!(code, 400);
    assert!(bdecode(&body).contains_key(&b"failure reason"[..]));
    // Keep-alive with two pipelined announces on one connection: two replies.
    let q1 = announce_query(6, 1, 7001, 1, Event::Started);
    let q2 = announce_query(6, 2, 7002, 1, Event::Started);
    let req = format!(
        "GET {q1} HTTP/1.1\r\nHost: t\r\n\r\nGET {q2} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let all = String::from_utf8_lossy(&raw_exchange(t.http, req.as_bytes())).into_owned();
    assert_eq!(all.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{all}");
    let (code, _) = t.get("/nope");
    assert_eq!(code, 404);
    // Still serving.
    let (code, body) = t.get(&announce_query(5, 5, 7000, 1, Event::Started));
    assert_eq!(code, 200);
    assert!(bdecode(&body).contains_key(&b"interval"[..]));
}

#[test]
fn udp_connect_announce_scrape_and_bad_connection_id() {
    let t = Tracker::start(true, &[]);
    let to = t.udp.unwrap();
    let c1 = udp_client();
    let c2 = udp_client();
    let connect = |s: &UdpSocket| udp_connect(s, to);
    let ann = |cid, peer: u8, port, left| udp_announce(cid, 7, peer, port, left);
    let id1 = connect(&c1);
    let id2 = connect(&c2);
    udp_roundtrip(&c1, to, &ann(id1, 1, 6881, 0)).unwrap();
    let r = Response::decode(
        &udp_roundtrip(&c2, to, &ann(id2, 2, 6882, 10)).unwrap(),
        false,
    );
    assert_eq!(
        r,
        Some(Response::Announce {
            transaction_id: 2,
            interval: 1800,
            leechers: 1,
            seeders: 1,
            peers: vec!["127.0.0.1:6881".parse().unwrap()],
        })
    );
    // A forged connection id gets a short error, never a peer list.
    let bad = ann(id1 ^ 0xdead_beef, 3, 6883, 10);
    let reply = udp_roundtrip(&c2, to, &bad).unwrap();
    assert!(reply.len() <= bad.len());
    assert!(matches!(
        Response::decode(&reply, false),
        Some(Response::Error { .. })
    ));
    // Junk too short to answer is dropped; the tracker keeps serving.
    c1.send_to(&[1, 2, 3], to).unwrap();
    let mut p = Vec::new();
    Request::Scrape {
        connection_id: id1,
        transaction_id: 9,
        info_hashes: vec![InfoHash([7; 20])],
    }
    .encode(&mut p);
    assert_eq!(
        Response::decode(&udp_roundtrip(&c1, to, &p).unwrap(), false),
        Some(Response::Scrape {
            transaction_id: 9,
            entries: vec![(1, 0, 1)]
        })
    );
}

#[test]
fn allow_list_mode_refuses_other_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allow.txt");
    std::fs::write(&list, format!("# allowed\n{}\n", hex::encode([1u8; 20]))).unwrap();
    let t = Tracker::start(false, &["--allow-list", list.to_str().unwrap()]);
    let d = bdecode(&t.get(&announce_query(1, 1, 6001, 1, Event::Started)).1);
    assert!(d.contains_key(&b"interval"[..]));
    let d = bdecode(&t.get(&announce_query(2, 1, 6001, 1, Event::Started)).1);
    assert_eq!(
        bbytes(&d[&b"failure reason"[..]]),
        b"torrent not allowed on this tracker"
    );
}

#[test]
fn silent_peers_expire() {
    let t = Tracker::start(false, &["--interval", "1", "--peer-timeout", "1"]);
    t.get(&announce_query(1, 1, 6001, 1, Event::Started));
    let gone = eventually(Duration::from_secs(20), || {
        let v: serde_json::Value = serde_json::from_slice(&t.get("/stats").1).unwrap();
        v["peers"] == 0
    });
    assert!(gone, "the silent peer was never expired");
}

#[test]
fn counters_survive_restart_and_stats_file_written_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let stats = dir.path().join("stats.json");
    let args = [
        "--state-file",
        state.to_str().unwrap(),
        "--stats-file",
        stats.to_str().unwrap(),
    ];
    let mut t = Tracker::start(false, &args);
    t.get(&announce_query(4, 1, 6001, 10, Event::Started));
    t.get(&announce_query(4, 1, 6001, 0, Event::Completed));
    let status = t.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let snap = common::stats::StatsSnapshot::read_json(&stats).unwrap();
    assert_eq!(snap.proto, "tracker");
    assert_eq!(snap.messages["announce"].in_count, 2);
    assert_eq!(snap.messages["announce_reply"].out_count, 2);
    drop(t);

    let t = Tracker::start(false, &args);
    let mut q = String::from("/scrape?info_hash=");
    pct_encode(&[4; 20], &mut q);
    let d = bdecode(&t.get(&q).1);
    let bendy::value::Value::Dict(files) = &d[&b"files"[..]] else {
        panic!()
    };
    let bendy::value::Value::Dict(f) = &files[&[4u8; 20][..]] else {
        panic!()
    };
    assert_eq!(bint(&f[&b"downloaded"[..]]), 1, "counter restored");
    assert_eq!(bint(&f[&b"complete"[..]]), 0, "peers are not restored");
}

#[test]
fn allow_list_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allow.txt");
    std::fs::write(&list, format!("{}\n", hex::encode([1u8; 20]))).unwrap();
    let t = Tracker::start(false, &["--allow-list", list.to_str().unwrap()]);
    let allowed = |h: u8| {
        let d = bdecode(&t.get(&announce_query(h, 1, 6001, 1, Event::Started)).1);
        d.contains_key(&b"interval"[..])
    };
    assert!(allowed(1) && !allowed(2));
    std::fs::write(&list, format!("{}\n", hex::encode([2u8; 20]))).unwrap();
    t.d.signal(1).unwrap(); // SIGHUP
    assert!(
        eventually(Duration::from_secs(10), || allowed(2)),
        "the new list is in force"
    );
    assert!(!allowed(1), "the old entry is gone");
    // A broken file leaves the list in force.
    std::fs::write(&list, "not a hash\n").unwrap();
    t.d.signal(1).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        let v: serde_json::Value = serde_json::from_slice(&t.get("/stats").1).unwrap();
        v["errors"]["allow_list_reload"] == 1
    }));
    assert!(allowed(2));
}

#[test]
fn bep7_ipv6_parameter_puts_a_v4_peer_in_peers6_too() {
    let t = Tracker::start(false, &[]);
    let q = format!(
        "{}&ipv6=%5B2001:db8::5%5D:6500",
        announce_query(8, 1, 6001, 1, Event::Started)
    );
    t.get(&q);
    let d = bdecode(&t.get(&announce_query(8, 2, 6002, 1, Event::Started)).1);
    assert_eq!(bbytes(&d[&b"peers"[..]]), vec![127, 0, 0, 1, 0x17, 0x71]);
    let mut v6 = "2001:db8::5"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    v6.extend_from_slice(&6500u16.to_be_bytes());
    assert_eq!(bbytes(&d[&b"peers6"[..]]), v6);
    assert_eq!(
        bint(&d[&b"incomplete"[..]]),
        2,
        "the dual-stack peer counts once"
    );
}

/// `peer id` and `ip` of each entry of a dictionary-form reply.
fn dict_peers(
    d: &std::collections::BTreeMap<Vec<u8>, bendy::value::Value<'static>>,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let bendy::value::Value::List(peers) = &d[&b"peers"[..]] else {
        panic!("dictionary form expected: {d:?}")
    };
    peers
        .iter()
        .map(|p| {
            let bendy::value::Value::Dict(p) = p else {
                panic!("peer entry is a dictionary")
            };
            (p.get(&b"peer id"[..]).map(bbytes), bbytes(&p[&b"ip"[..]]))
        })
        .collect()
}

fn failure(d: &std::collections::BTreeMap<Vec<u8>, bendy::value::Value<'static>>) -> String {
    d.get(&b"failure reason"[..])
        .map(|v| String::from_utf8_lossy(&bbytes(v)).into_owned())
        .unwrap_or_default()
}

#[test]
fn options_through_the_binary_and_address_identity() {
    let t = Tracker::start(
        false,
        &[
            "--no-scrape-all",
            "--trust-ip",
            "--min-interval",
            "7",
            "--max-peers",
            "2",
            "--max-peers-total",
            "4",
        ],
    );
    let dict = |p: u8, extra: &str| {
        let q = announce_query(1, p, 6000 + u16::from(p), 5, Event::Started)
            .replace("compact=1", "compact=0");
        bdecode(&t.get(&format!("{q}{extra}")).1)
    };
    // --trust-ip: peer 1 is listed at the address it announced; --min-interval is sent.
    let d = dict(1, "&ip=10.1.2.3");
    assert_eq!(bint(&d[&b"min interval"[..]]), 7);
    // The dictionary form carries `peer id` (no `no_peer_id`); numwant above --max-peers gets a warning.
    let d = dict(2, "&key=0000ABCD&numwant=10");
    assert_eq!(
        dict_peers(&d),
        vec![(Some(vec![1u8; 20]), b"10.1.2.3".to_vec())]
    );
    assert_eq!(
        bbytes(&d[&b"warning message"[..]]),
        b"numwant 10 capped at 2"
    );
    // --max-peers 2: three other peers held, two listed.
    dict(3, "");
    let d = dict(4, "&numwant=50");
    assert_eq!(dict_peers(&d).len(), 2, "{d:?}");
    // --max-peers-total 4: a fifth peer is refused, a held one still announces.
    assert_eq!(failure(&dict(5, "")), "tracker is full, try again later");
    assert_eq!(failure(&dict(3, "")), "");
    // Peers are their addresses: peer 2's id from another address (with --trust-ip, any address can be
    // named) is another peer there, whatever its key, and its `stopped` leaves peer 2 where it is.
    // (The tracker is full, so that new peer is refused.)
    assert_eq!(
        failure(&dict(2, "&ip=10.6.6.6&key=0BADF00D")),
        "tracker is full, try again later"
    );
    assert_eq!(
        failure(&dict(2, "&ip=10.6.6.6&key=0BADF00D&event=stopped")),
        ""
    );
    // --no-scrape-all: a scrape without info_hash is refused, one with info_hash answered. All four
    // leechers are still held (3 if that `stopped` had evicted peer 2).
    assert!(failure(&bdecode(&t.get("/scrape").1)).contains("scrape"));
    let mut q = String::from("/scrape?info_hash=");
    pct_encode(&[1; 20], &mut q);
    let d = bdecode(&t.get(&q).1);
    let bendy::value::Value::Dict(files) = &d[&b"files"[..]] else {
        panic!("no files: {d:?}")
    };
    let bendy::value::Value::Dict(f) = &files[&[1u8; 20][..]] else {
        panic!("torrent 1 missing: {d:?}")
    };
    assert_eq!(bint(&f[&b"incomplete"[..]]), 4, "{d:?}");
    let v: serde_json::Value = serde_json::from_slice(&t.get("/stats").1).unwrap();
    assert_eq!(v["peers"], 4, "{v}");
    // Peer 2 itself still re-announces although the tracker is full: it is the entry that is held.
    assert_eq!(failure(&dict(2, "")), "");
    assert!(v["errors"].get("key_mismatch").is_none(), "{v}");
    assert_eq!(v["errors"]["full"], 2);
}

/// Full scrape through the binary: two in a row are the same bytes; a change shows up within a bounded
/// time (the encoded reply is cached for `FULL_SCRAPE_TTL`, see `tests/scrape_cache.rs` for the exact
/// timing with a clock the test controls).
#[test]
fn full_scrape_repeats_its_bytes_and_shows_a_change() {
    use tracker::protocol::service::FULL_SCRAPE_TTL;
    let t = Tracker::start(false, &[]);
    t.get(&announce_query(3, 1, 6001, 10, Event::Started));
    t.get(&announce_query(4, 1, 6001, 10, Event::Started));
    let first_sent = Instant::now();
    let (code, a) = t.get("/scrape");
    assert_eq!(code, 200);
    assert_eq!(t.get("/scrape").1, a, "two full scrapes in a row");
    let counts = |body: &[u8], h: u8| {
        let d = bdecode(body);
        let bendy::value::Value::Dict(files) = &d[&b"files"[..]] else {
            panic!("no files: {d:?}")
        };
        assert_eq!(files.len(), 2, "every torrent listed");
        let bendy::value::Value::Dict(f) = &files[&[h; 20][..]] else {
            panic!("torrent {h} missing")
        };
        ["complete", "incomplete", "downloaded"].map(|k| bint(&f[k.as_bytes()]))
    };
    assert_eq!(counts(&a, 3), [0, 1, 0]);
    // Torrent 3's leecher completes.
    t.get(&announce_query(3, 1, 6001, 0, Event::Completed));
    let b = t.get("/scrape").1;
    if first_sent.elapsed() < FULL_SCRAPE_TTL {
        // Everything since the cached reply was built took less than its lifetime: it must be reused.
        assert_eq!(b, a, "cached full scrape within {FULL_SCRAPE_TTL:?}");
    }
    let mut last = b;
    let seen = eventually(FULL_SCRAPE_TTL + Duration::from_secs(10), || {
        last = t.get("/scrape").1;
        counts(&last, 3) == [1, 0, 1]
    });
    assert!(seen, "the completed download never showed: {last:?}");
    assert_eq!(counts(&last, 4), [0, 1, 0]);
}

/// `[::1]` on loopback. Some containers start with IPv6 off on `lo` (or `lo` down, as in a fresh network
/// namespace): then the test turns it on (as root, as the netns interop tests are) rather than skipping.
fn ensure_ipv6_loopback() {
    let up = || UdpSocket::bind("[::1]:0").is_ok();
    if up() {
        return;
    }
    for (prog, args) in [
        ("ip", &["link", "set", "lo", "up"][..]),
        ("sysctl", &["-w", "net.ipv6.conf.lo.disable_ipv6=0"][..]),
        ("ip", &["-6", "addr", "add", "::1/128", "dev", "lo"][..]),
    ] {
        let o = std::process::Command::new(prog).args(args).output();
        eprintln!("{prog} {}: {o:?}", args.join(" "));
    }
    assert!(
        eventually(Duration::from_secs(5), up),
        "no [::1] on this machine, and enabling IPv6 on lo failed (root needed)"
    );
}

/// The tracker bound to `[::1]` (HTTP and UDP): two IPv6 peers find each other, in `peers6` (BEP 7) over
/// HTTP and as 18-byte entries (BEP 15's IPv6 announce reply) over UDP, and never in the IPv4 `peers`.
#[test]
fn ipv6_sockets_give_peers6_and_18_byte_udp_entries() {
    ensure_ipv6_loopback();
    let t = Tracker::start_on("[::1]", true, &[]);
    assert!(t.http.is_ipv6(), "{}", t.http);
    let to = t.udp.unwrap();
    assert!(to.is_ipv6(), "{to}");
    let v6_entry = |port: u16| {
        let mut e = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
        e.extend_from_slice(&port.to_be_bytes());
        e
    };

    // HTTP: the second peer gets the first in `peers6`, an empty `peers`; the dictionary form says `::1`.
    let d = bdecode(&t.get(&announce_query(1, 1, 6001, 10, Event::Started)).1);
    assert!(!d.contains_key(&b"peers6"[..]), "alone: {d:?}");
    let d = bdecode(&t.get(&announce_query(1, 2, 6002, 10, Event::Started)).1);
    assert_eq!(bbytes(&d[&b"peers6"[..]]), v6_entry(6001));
    assert!(bbytes(&d[&b"peers"[..]]).is_empty(), "no IPv4 peers: {d:?}");
    assert_eq!(bint(&d[&b"incomplete"[..]]), 2);
    let q = announce_query(1, 3, 6003, 10, Event::Started).replace("compact=1", "compact=0");
    let ips: Vec<Vec<u8>> = dict_peers(&bdecode(&t.get(&q).1))
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    assert_eq!(ips, [b"::1".to_vec(), b"::1".to_vec()]);

    // UDP: connect, then two announces from [::1]; the reply to the second is 20 bytes + one 18-byte entry.
    let c = UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cid = udp_connect(&c, to);
    let ann = |peer: u8, port: u16| {
        udp_roundtrip(&c, to, &udp_announce(cid, 2, peer, port, 10)).expect("announce reply")
    };
    assert_eq!(ann(1, 6881).len(), 20, "alone: no entries");
    let r = ann(2, 6882);
    assert_eq!(r.len(), 20 + 18, "one 18-byte IPv6 entry: {r:?}");
    assert_eq!(&r[20..], &v6_entry(6881)[..]);
    assert_eq!(
        Response::decode(&r, true),
        Some(Response::Announce {
            transaction_id: 2,
            interval: 1800,
            leechers: 2,
            seeders: 0,
            peers: vec!["[::1]:6881".parse().unwrap()],
        })
    );
}
