//! kazaa.md §7 case 10, the capture half: Wireshark has no FastTrack dissector (§4 "Wireshark"), but
//! the transfer side is plain HTTP. We capture an ON's HTTP port on loopback with dumpcap while a
//! client fetches a byte range, an unknown hash and a bad path, and decode the capture with Debian's
//! `tshark -d tcp.port==P,http`: the requests and replies must decode as HTTP with our status codes,
//! `Content-Range` and `X-Kazaa-*` headers, and no frame may be malformed.
//! Needs `tshark` (Debian package, listed in scripts/apt-packages.txt) and capture rights (root in CI).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::hash::uuhash;
use integration::capture::Capture;
use integration::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_kazaa-supernode");

fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// tshark's fields of the frames matching `filter`, the ON's port decoded as HTTP.
fn tshark(cap: &Capture, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    cap.fields("http", filter, fields)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn tshark_decodes_our_http_side_case_10() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hash = uuhash(&data);
    std::fs::write(tmp.path().join("Captured.mp3"), &data).unwrap();
    let pcap = tmp.path().join("kazaa-http.pcapng");
    let sn = Daemon::builder_path(BIN)
        .args(["--role", "supernode", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let on = Daemon::builder_path(BIN)
        .args(["--role", "ordinary", "--listen", "127.0.0.1:0"])
        .args(["--user", "captured", "--peer", &sn.addr().to_string()])
        .args(["--share", tmp.path().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let port = on.addr().port();
    // The router learns its SN (X-Kazaa-SupernodeIP) once registered: wait for the header.
    let range = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nRange: bytes=100-199\r\nUserAgent: KazaaClient\r\nX-Kazaa-Username: probe\r\nX-Kazaa-Network: KaZaA\r\nX-Kazaa-XferUid: 10\r\n\r\n",
        hash.http_path()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http(on.addr(), &range).contains("X-Kazaa-Supernodeip") {
        assert!(Instant::now() < deadline, "the ON never registered");
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut cap = Capture::start(port, &pcap).expect("capture starts");

    let ok = http(on.addr(), &range);
    assert!(ok.starts_with("HTTP/1.1 206"), "{ok}");
    let missing = http(
        on.addr(),
        &format!(
            "GET /.hash={} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n",
            "ab".repeat(20)
        ),
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let bad = http(on.addr(), "GET /Captured.mp3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    cap.stop().unwrap();

    let requests = tshark(
        &cap,
        "http.request",
        &[
            "http.request.method",
            "http.request.uri",
            "http.request.line",
        ],
    );
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0][0], "GET");
    assert_eq!(requests[0][1], hash.http_path());
    assert!(
        requests[0][2].contains("X-Kazaa-Username: probe"),
        "{requests:?}"
    );
    let replies = tshark(
        &cap,
        "http.response",
        &[
            "http.response.code",
            "http.content_length_header",
            "http.response.line",
        ],
    );
    assert_eq!(replies.len(), 3, "{replies:?}");
    let codes: Vec<&str> = replies.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(codes, ["206", "404", "400"], "{replies:?}");
    assert_eq!(replies[0][1], "100");
    let lines = &replies[0][2];
    for h in [
        &format!("Content-Range: bytes 100-199/{}", data.len()),
        "X-Kazaa-Username: captured",
        "X-Kazaa-Network: KaZaA",
        &format!("X-Kazaa-Ip: {}", on.addr()),
        &format!("X-Kazaa-Supernodeip: {}", sn.addr()),
        &format!("X-Kazaatag: 3={}", hash.to_sig2dat()),
    ] {
        assert!(
            lines.to_ascii_lowercase().contains(&h.to_ascii_lowercase()),
            "{h} not decoded: {lines}"
        );
    }
    let bad = cap.malformed("http").unwrap();
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
}
