//! The faithfulness check of the notes §7: capture our uncompressed Gnet traffic on loopback with dumpcap
//! and decode it with Debian's Wireshark dissector (`tshark -d tcp.port==P,gnutella`). The decoded Ping,
//! Pong, Query, QueryHit and Push fields must equal what we sent, and nothing may be malformed.
//! The Push is also followed through (test case 8): the firewalled servent connects back, says
//! `GIV <index>:<guid>/<name>`, and serves the GET sent on that socket.
//! Needs `tshark` (Debian package, listed in scripts/apt-packages.txt) and capture rights (root in CI).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use gnutella_node::codec::message::{Message, Push};
use gnutella_node::codec::{Descriptor, Guid};
use integration::capture::Capture;
use integration::Daemon;

/// A `gnutella-node` without deflate (so the capture is readable), through the shared harness.
fn daemon(args: &[&str]) -> (Daemon, SocketAddr) {
    let d = Daemon::builder("gnutella-node")
        .args(["--listen", "127.0.0.1:0", "--no-deflate"])
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("gnutella-node starts");
    let addr = d.addr();
    (d, addr)
}

/// tshark's fields of the frames matching `filter`, the node's port decoded as Gnutella.
fn tshark_fields(cap: &Capture, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    cap.fields("gnutella", filter, fields)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn tshark_decodes_our_ping_pong_query_queryhit_and_push() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("tshark probe.txt"), b"captured and decoded").unwrap();
    let pcap = tmp.path().join("gnet.pcapng");

    let (_up, up_addr) = daemon(&["--up-links", "0"]);
    let port = up_addr.port();
    let mut cap = Capture::start(port, &pcap).expect("capture starts");

    // A firewalled ultrapeer sharing the probe file links to the first one; a leaf searches through it.
    let up = up_addr.to_string();
    let (_owner, _) = daemon(&[
        "--share",
        share.to_str().unwrap(),
        "--firewalled",
        "--peer",
        &up,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let hit = loop {
        let out = Command::new(integration::bin_path("gnutella-node"))
            .args([
                "--no-deflate",
                "--peer",
                &up,
                "search",
                "tshark probe",
                "--json",
                "--timeout",
                "2",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let hit = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "hit");
        if let Some(h) = hit {
            break h;
        }
        assert!(Instant::now() < deadline, "no hit for the probe file");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(hit["firewalled"], true);
    let servent = Guid::from_hex(hit["servent"].as_str().unwrap()).unwrap();
    let index = hit["index"].as_u64().unwrap() as u32;

    // Push through the ultrapeer (it learnt the route from the hit) and catch the GIV.
    let giv_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let giv_port = giv_listener.local_addr().unwrap().port();
    let mut s = TcpStream::connect(up_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: probe/1\r\nX-Ultrapeer: True\r\n\r\n")
        .unwrap();
    let mut resp = Vec::new();
    let mut b = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        resp.push(b[0]);
    }
    assert!(resp.starts_with(b"GNUTELLA/0.6 200"));
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").unwrap();
    let push = Descriptor {
        guid: Guid([0x42; 16]),
        ttl: 3,
        hops: 0,
        msg: Message::Push(Push {
            servent,
            index,
            ip: std::net::Ipv4Addr::LOCALHOST,
            port: giv_port,
            ggep: Vec::new(),
        }),
    };
    s.write_all(&push.to_bytes()).unwrap();
    giv_listener.set_nonblocking(false).unwrap();
    let (mut back, _) = giv_listener.accept().unwrap();
    back.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut giv = Vec::new();
    while !giv.ends_with(b"\n\n") {
        back.read_exact(&mut b).unwrap();
        giv.push(b[0]);
    }
    assert_eq!(
        String::from_utf8(giv).unwrap(),
        format!("GIV {index}:{}/tshark probe.txt\n\n", servent.to_hex())
    );
    back.write_all(format!("GET /get/{index}/tshark%20probe.txt HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut body = Vec::new();
    let _ = back.read_to_end(&mut body);
    assert!(
        body.ends_with(b"captured and decoded"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    cap.stop().unwrap();

    let q = tshark_fields(&cap, "gnutella.query.search", &["gnutella.query.search"]);
    assert!(
        q.iter()
            .any(|r| r[0].split(',').any(|s| s == "tshark probe")),
        "{q:?}"
    );
    let h = tshark_fields(
        &cap,
        "gnutella.queryhit.hit.name",
        &[
            "gnutella.queryhit.hit.name",
            "gnutella.queryhit.hit.index",
            "gnutella.queryhit.servent_id",
            "gnutella.queryhit.hit.extra",
        ],
    );
    let want_guid = hex::encode(servent.0);
    assert!(
        h.iter().any(|r| r[0] == "tshark probe.txt"
            && r[1] == index.to_string()
            && r[2].replace(':', "").eq_ignore_ascii_case(&want_guid)),
        "{h:?} (want servent {want_guid})"
    );
    let p = tshark_fields(
        &cap,
        "gnutella.pong.port",
        &["gnutella.pong.port", "gnutella.pong.ip"],
    );
    assert!(
        p.iter()
            .any(|r| r[0].split(',').any(|x| x == port.to_string()) && r[1].contains("127.0.0.1")),
        "{p:?}"
    );
    let pu = tshark_fields(
        &cap,
        "gnutella.push.index",
        &[
            "gnutella.push.index",
            "gnutella.push.port",
            "gnutella.push.servent_id",
        ],
    );
    assert!(
        pu.iter()
            .any(|r| r[0] == index.to_string() && r[1] == giv_port.to_string()),
        "{pu:?}"
    );
    // Every descriptor header tshark decoded (a frame can hold several: fields come comma-joined, in order).
    let headers: Vec<[String; 5]> = tshark_fields(
        &cap,
        "gnutella.header.id",
        &[
            "gnutella.header.id",
            "gnutella.header.payload",
            "gnutella.header.ttl",
            "gnutella.header.hops",
            "gnutella.header.size",
        ],
    )
    .into_iter()
    .flat_map(|r| {
        let cols: Vec<Vec<String>> = r
            .iter()
            .map(|c| c.split(',').map(str::to_string).collect())
            .collect();
        (0..cols[0].len())
            .map(|i| std::array::from_fn(|k| cols[k].get(i).cloned().unwrap_or_default()))
            .collect::<Vec<_>>()
    })
    .collect();
    let payload_is = |h: &[String; 5], t: u8| {
        let v = h[1].trim_start_matches("0x");
        u8::from_str_radix(v, if h[1].starts_with("0x") { 16 } else { 10 }) == Ok(t)
    };
    let hexid = |s: &str| s.replace(':', "").to_ascii_lowercase();
    // Pings: empty, hops 0, a modern GUID (byte 8 = 0xFF, byte 15 = 0x00), answered by pongs with that GUID.
    let pings: Vec<&[String; 5]> = headers.iter().filter(|h| payload_is(h, 0)).collect();
    assert!(!pings.is_empty(), "no ping decoded: {headers:?}");
    for h in &pings {
        let id = hexid(&h[0]);
        assert_eq!(id.len(), 32, "{h:?}");
        assert_eq!((&id[16..18], &id[30..32]), ("ff", "00"), "{h:?}");
        let ttl: u8 = h[2].parse().unwrap();
        assert!((1..=4).contains(&ttl), "{h:?}");
        assert_eq!((h[3].as_str(), h[4].as_str()), ("0", "0"), "{h:?}");
    }
    let pong_ids: Vec<String> = headers
        .iter()
        .filter(|h| payload_is(h, 1))
        .map(|h| hexid(&h[0]))
        .collect();
    assert!(
        pings.iter().any(|h| pong_ids.contains(&hexid(&h[0]))),
        "a pong carries its ping's GUID: pings {pings:?}, pongs {pong_ids:?}"
    );
    let bad = cap.malformed("gnutella").unwrap();
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
}
