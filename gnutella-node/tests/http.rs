//! The notes' test case 9 against a real `gnutella-node` process (notes §5, Gnutella 0.6 draft §3 "File
//! transfer"): `/get/<idx>/<name>` and `/uri-res/N2R?urn:sha1:...` both give 200, a `Range` gives 206 with
//! `Content-Range`, an unsatisfiable one 416 with `bytes */total`, an unknown index or URN 404, a traversal
//! `400 Bad Path`, an HTTP/1.1 request without `Host` `400 Missing Host Header`; follow-up requests run on
//! the same keep-alive socket, and every reply about the file names the whole file in
//! `X-Gnutella-Content-URN`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gnutella_node::codec::message::sha1_urn;
use integration::Daemon;

/// One parsed reply: status code, reason, lower-cased headers, body.
#[derive(Debug)]
struct Resp {
    code: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one reply off a (possibly kept-alive) connection; the body is `Content-Length` bytes (none for HEAD).
fn read_resp(r: &mut BufReader<TcpStream>, head_only: bool) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut parts = line.trim_end().splitn(3, ' ');
    let _version = parts.next().unwrap();
    let code: u16 = parts.next().expect("a status code").parse().unwrap();
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header line");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    Resp {
        code,
        reason,
        headers,
        body,
    }
}

/// One keep-alive request: path, `Range` value, expected status, `Content-Range` and body.
type Case<'a> = (&'a str, Option<&'a str>, u16, Option<&'a str>, &'a [u8]);

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// A one-shot request (`raw` is the whole request head); the reply is read and the socket dropped.
fn once(addr: SocketAddr, raw: &str) -> Resp {
    let (mut s, mut r) = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_resp(&mut r, raw.starts_with("HEAD "))
}

#[test]
fn case9_get_uri_res_ranges_errors_and_keep_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    let dir = tmp.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello world.txt"), &data).unwrap();
    let urn = sha1_urn(&common::hash::sha1(&data).0);
    let d = Daemon::builder("gnutella-node")
        .args(["--listen", "127.0.0.1:0", "--share", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("gnutella-node starts");
    let addr = d.addr();
    let idx = common::library::FIRST_INDEX;
    let host = format!("Host: {addr}\r\n");

    // Five requests on one HTTP/1.1 keep-alive connection.
    let (mut s, mut r) = connect(addr);
    let urn_is = |resp: &Resp| {
        assert_eq!(
            resp.header("x-gnutella-content-urn"),
            Some(urn.as_str()),
            "{resp:?}"
        )
    };
    let by_index = format!("/get/{idx}/hello%20world.txt");
    let by_urn = format!("/uri-res/N2R?{urn}");
    let cases: [Case; 5] = [
        (&by_index, None, 200, None, &data),
        (
            &by_index,
            Some("bytes=10-19"),
            206,
            Some("bytes 10-19/1000"),
            &data[10..20],
        ),
        (
            &by_urn,
            Some("bytes=-100"),
            206,
            Some("bytes 900-999/1000"),
            &data[900..],
        ),
        (
            &by_index,
            Some("bytes=5000-6000"),
            416,
            Some("bytes */1000"),
            b"",
        ),
        (&by_urn, None, 200, None, &data),
    ];
    for (path, range, code, content_range, body) in cases {
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\n{host}{range}\r\n").unwrap();
        let resp = read_resp(&mut r, false);
        assert_eq!(resp.code, code, "{path} {range}: {resp:?}");
        assert_eq!(resp.header("content-range"), content_range, "{resp:?}");
        if code != 416 {
            assert_eq!(resp.body, body, "{path} {range}");
        }
        urn_is(&resp);
    }
    drop((s, r));

    // HEAD names the file too, without a body.
    let head = once(
        addr,
        &format!("HEAD /get/{idx}/hello%20world.txt HTTP/1.0\r\n\r\n"),
    );
    assert_eq!(head.code, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    urn_is(&head);

    // Unknown index, wrong name for a known index, unknown URN: 404.
    for path in [
        format!("/get/{}/hello%20world.txt", idx + 99),
        format!("/get/{idx}/other.txt"),
        format!("/uri-res/N2R?{}", sha1_urn(&[7; 20])),
    ] {
        let resp = once(addr, &format!("GET {path} HTTP/1.1\r\n{host}\r\n"));
        assert_eq!(resp.code, 404, "{path}: {resp:?}");
    }

    // Traversal, raw or percent-encoded once or twice, or a NUL: 400 Bad Path, never a file.
    for path in [
        format!("/get/{idx}/../../../../etc/passwd"),
        format!("/get/{idx}/..%2f..%2fetc%2fpasswd"),
        format!("/get/{idx}/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        format!("/get/{idx}/hello%00world.txt"),
        format!("/get/{idx}/%252e%252e%252fetc%252fpasswd"),
    ] {
        let resp = once(addr, &format!("GET {path} HTTP/1.1\r\n{host}\r\n"));
        assert_eq!(resp.code, 400, "{path}: {resp:?}");
        assert_eq!(resp.reason, "Bad Path", "{path}");
    }
    // HTTP/1.1 needs Host (gtk-gnutella's wording); HTTP/1.0 does not.
    let resp = once(
        addr,
        &format!("GET /get/{idx}/hello%20world.txt HTTP/1.1\r\n\r\n"),
    );
    assert_eq!(resp.code, 400, "{resp:?}");
    assert_eq!(resp.reason, "Missing Host Header");
    let resp = once(
        addr,
        &format!("GET /get/{idx}/hello%20world.txt HTTP/1.0\r\n\r\n"),
    );
    assert_eq!(resp.code, 200, "{resp:?}");
    assert_eq!(resp.body, data);
}
