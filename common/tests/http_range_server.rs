//! End-to-end tests of `common::http` on 127.0.0.1 port 0, with a raw TCP client so status lines, header
//! order and repeats, keep-alive and connection closes are seen exactly as a peer would see them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::http::{
    ExtraHeaders, FileReply, HttpConfig, HttpServer, Prefixed, Reply, RequestInfo, Route,
};
use common::ratelimit::RateLimiter;
use common::safe_path::{SafeRelPath, SharedRoot};
use common::stats::Stats;
use http::{StatusCode, Version};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);
const URN: &str = "urn:sha1:RMLQDMZPJQYIU7NV33ESKLALHQWYIWZ3";

/// A shared folder with `small.bin` (1000 bytes), `big.bin` (8 MiB) and `empty.bin`.
struct Fixture {
    dir: tempfile::TempDir,
    small: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let small: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("small.bin"), &small).unwrap();
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("empty.bin"), b"").unwrap();
    Fixture { dir, small }
}

/// A toy router in the style of the protocol crates:
/// - `/file/<encoded name>`: plain file serving;
/// - `/gnutella/<encoded name>`: `X-Gnutella-Content-URN` on every reply, `400 Missing Host Header` for a
///   1.1 request without `Host`;
/// - `/kazaa/<encoded name>`: non-persistent, `X-Kazaa-*` headers and one `X-KazaaTag` per tag.
///
/// Names go through `common::safe_path`; a refused name is `400 Bad Path`.
struct ToyRouter {
    root: SharedRoot,
}

impl common::http::Router for ToyRouter {
    fn route(&self, req: &RequestInfo) -> Route {
        let path = req.path();
        let (kind, name) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some(x) => x,
            None => return Route::Reply(Reply::not_found()),
        };
        let mut headers = ExtraHeaders::new();
        let mut close = false;
        match kind {
            "file" => {}
            "gnutella" => {
                headers.push("X-Gnutella-Content-URN", URN);
                if req.version == Version::HTTP_11 && req.header("host").is_none() {
                    let mut r = Reply::bad_request("Missing Host Header");
                    r.headers = headers;
                    return Route::Reply(r);
                }
            }
            "kazaa" => {
                headers
                    .push("X-Kazaa-Username", "alice")
                    .push("X-Kazaa-Network", "KaZaA")
                    .push("X-KazaaTag", "5=123")
                    .push("X-KazaaTag", "3==ZGVhZGJlZWY=");
                close = true;
            }
            _ => return Route::Reply(Reply::not_found()),
        }
        // The Gnutella route opens the file itself (descriptor checked by safe_path); the others pass a path.
        let resolved = if kind == "gnutella" {
            SafeRelPath::from_encoded(name)
                .and_then(|rel| self.root.open_file(&rel))
                .map(|(f, p)| FileReply::opened(f, p))
        } else {
            self.root.resolve_encoded(name).map(FileReply::new)
        };
        match resolved {
            Ok(f) => Route::File(FileReply {
                headers,
                close,
                ..f
            }),
            Err(e) if e.is_refusal() => {
                let mut r = Reply::bad_request("Bad Path");
                r.headers = headers;
                Route::Reply(r)
            }
            Err(_) => {
                let mut r = Reply::not_found();
                r.headers = headers;
                Route::Reply(r)
            }
        }
    }
}

struct Server {
    addr: SocketAddr,
    http: HttpServer,
    stats: Stats,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    fx: Fixture,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    fn path(&self, name: &str) -> PathBuf {
        self.fx.dir.path().join(name)
    }
}

async fn start(config: HttpConfig) -> Server {
    let fx = fixture();
    let stats = Stats::new("test", "server", "http");
    let router = ToyRouter {
        root: SharedRoot::new(fx.dir.path()).unwrap(),
    };
    let http = HttpServer::new(router, config, stats.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let http = http.clone();
        let token = shutdown.clone();
        async move { http.serve(listener, token).await }
    });
    Server {
        addr,
        http,
        stats,
        shutdown,
        task: Some(task),
        fx,
    }
}

#[derive(Debug)]
struct Resp {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.status_line[9..12].parse().unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            r: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    async fn send(&mut self, raw: &str) {
        self.r.get_mut().write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads one response; `head` says whether a body follows (false for HEAD).
    async fn read(&mut self, body: bool) -> Resp {
        timeout(T, async {
            let mut status_line = String::new();
            self.r.read_line(&mut status_line).await.unwrap();
            assert!(!status_line.is_empty(), "connection closed before a reply");
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                self.r.read_line(&mut line).await.unwrap();
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    break;
                }
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.to_owned(), v.trim().to_owned()));
            }
            let mut resp = Resp {
                status_line: status_line.trim_end().to_owned(),
                headers,
                body: Vec::new(),
            };
            if body {
                let len: usize = resp.header("content-length").unwrap().parse().unwrap();
                resp.body = vec![0; len];
                self.r.read_exact(&mut resp.body).await.unwrap();
            }
            resp
        })
        .await
        .expect("reply in time")
    }

    async fn get(&mut self, target: &str, extra: &str) -> Resp {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"
        ))
        .await;
        self.read(true).await
    }

    /// True once the server closed the connection (EOF or reset) within the deadline.
    async fn closed_within(&mut self, d: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let res = timeout(d, async {
            loop {
                match self.r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        res.is_ok()
    }
}

async fn get_once(addr: SocketAddr, target: &str, extra: &str) -> Resp {
    Client::connect(addr).await.get(target, extra).await
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn full_get_has_the_file_and_range_headers() {
    let s = start(HttpConfig::default()).await;
    let r = get_once(s.addr, "/file/small.bin", "").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, s.fx.small);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("last-modified").unwrap().ends_with("GMT"));
    assert!(r.header("content-range").is_none());
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"Accept-Ranges") && names.contains(&"Content-Length"),
        "header names in title case like the servents of the era: {names:?}"
    );
    let snap = s.stats.snapshot();
    assert_eq!(snap.transfers.uploads_started, 1);
    assert_eq!(snap.transfers.uploads_completed, 1);
    assert_eq!(snap.transfers.upload_bytes, 1000);
    assert_eq!(snap.messages["http_request"].in_count, 1);
    assert!(snap.messages["http_request"].in_bytes > 30);
    assert_eq!(snap.messages["http_response"].out_count, 1);
}

#[tokio::test]
async fn single_ranges_give_206_with_content_range() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    for (range, start, end) in [
        ("bytes=100-199", 100usize, 199usize),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=500-100000", 500, 999),
        ("bytes=0-0", 0, 0),
    ] {
        let r = c
            .get("/file/small.bin", &format!("Range: {range}\r\n"))
            .await;
        assert_eq!(r.status_line, "HTTP/1.1 206 Partial Content", "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str())
        );
        assert_eq!(r.body, &s.fx.small[start..=end], "{range}");
    }
    // Large file, a range in the middle spanning several chunks.
    let big = std::fs::read(s.path("big.bin")).unwrap();
    let r = c
        .get("/file/big.bin", "Range: bytes=100000-2000000\r\n")
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.body, &big[100_000..=2_000_000]);
}

#[tokio::test]
async fn unsatisfiable_range_gives_416_with_the_total() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.get("/file/small.bin", "Range: bytes=1000-\r\n").await;
    assert_eq!(r.status_line, "HTTP/1.1 416 Range Not Satisfiable");
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    let r = c.get("/file/empty.bin", "Range: bytes=0-\r\n").await;
    assert_eq!(r.status(), 416);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
    // The connection is still usable afterwards.
    let r = c.get("/file/empty.bin", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(s.stats.snapshot().errors["http_range_unsatisfiable"], 2);
}

#[tokio::test]
async fn garbage_and_multi_ranges_are_ignored_with_a_full_200() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    for range in [
        "bytes=abc",
        "bytes=5-1",
        "bytes=0-1,5-6",
        "lines=1-2",
        "bytes=99999999999999999999999999-",
        "bytes=18446744073709551615-18446744073709551614",
    ] {
        let r = c
            .get("/file/small.bin", &format!("Range: {range}\r\n"))
            .await;
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.body, s.fx.small, "{range}");
    }
    assert_eq!(s.stats.snapshot().errors["http_range_ignored"], 6);
    let r = c
        .get(
            "/file/small.bin",
            &format!("Range: bytes={}-\r\n", u64::MAX),
        )
        .await;
    assert_eq!(
        r.status(),
        416,
        "u64::MAX start is a valid, unsatisfiable range"
    );
}

#[tokio::test]
async fn if_range_with_another_validator_sends_the_whole_file() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.get("/file/small.bin", "").await;
    let lm = r.header("last-modified").unwrap().to_owned();
    let r = c
        .get(
            "/file/small.bin",
            &format!("Range: bytes=1-2\r\nIf-Range: {lm}\r\n"),
        )
        .await;
    assert_eq!(r.status(), 206);
    let r = c
        .get(
            "/file/small.bin",
            "Range: bytes=1-2\r\nIf-Range: \"etag\"\r\n",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), 1000);
}

#[tokio::test]
async fn head_has_headers_and_no_body_and_keeps_the_connection() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    c.send("HEAD /file/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n")
        .await;
    let r = c.read(false).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    // Were there a body, this second reply would be garbled.
    let r = c.get("/file/small.bin", "Range: bytes=0-4\r\n").await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.body, &s.fx.small[..5]);
    assert_eq!(
        s.stats.snapshot().transfers.uploads_started,
        1,
        "HEAD is no upload"
    );
}

#[tokio::test]
async fn http11_keeps_alive_for_several_requests() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    for i in 0..5 {
        let r = c
            .get("/file/small.bin", &format!("Range: bytes={i}-{i}\r\n"))
            .await;
        assert_eq!(r.body, [s.fx.small[i]]);
    }
    // Pipelined: two requests written at once get two replies in order.
    c.send("GET /file/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1-1\r\n\r\nGET /file/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=2-2\r\n\r\n").await;
    assert_eq!(c.read(true).await.body, [s.fx.small[1]]);
    assert_eq!(c.read(true).await.body, [s.fx.small[2]]);
    assert_eq!(s.stats.snapshot().gauges["http_connections"], 1);
}

#[tokio::test]
async fn http10_closes_after_the_reply() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    c.send("GET /file/small.bin HTTP/1.0\r\n\r\n").await;
    let r = c.read(true).await;
    assert!(r.status_line.starts_with("HTTP/1."), "{}", r.status_line);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, s.fx.small);
    assert!(c.closed_within(T).await, "HTTP/1.0 connection must close");
}

#[tokio::test]
async fn router_headers_repeat_and_close_is_honoured() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    let r = c.get("/kazaa/small.bin", "Range: bytes=100-199\r\n").await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(r.header("x-kazaa-username"), Some("alice"));
    assert_eq!(r.header("x-kazaa-network"), Some("KaZaA"));
    assert_eq!(r.all("x-kazaatag"), ["5=123", "3==ZGVhZGJlZWY="]);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(T).await, "router asked to close");
}

#[tokio::test]
async fn protocol_reason_phrases_and_headers_on_every_reply() {
    let s = start(HttpConfig::default()).await;
    // HTTP/1.1 without Host: the Gnutella router's own reason phrase.
    let mut c = Client::connect(s.addr).await;
    c.send("GET /gnutella/small.bin HTTP/1.1\r\n\r\n").await;
    let r = c.read(true).await;
    assert_eq!(r.status_line, "HTTP/1.1 400 Missing Host Header");
    assert_eq!(r.header("x-gnutella-content-urn"), Some(URN));
    // The URN is on 200, 206, 404 and 416 alike.
    let mut c = Client::connect(s.addr).await;
    for (extra, status) in [
        ("", 200),
        ("Range: bytes=0-1\r\n", 206),
        ("Range: bytes=5000-\r\n", 416),
    ] {
        let r = c.get("/gnutella/small.bin", extra).await;
        assert_eq!(r.status(), status);
        assert_eq!(r.header("x-gnutella-content-urn"), Some(URN), "{status}");
    }
    let r = c.get("/gnutella/missing.bin", "").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    assert_eq!(r.header("x-gnutella-content-urn"), Some(URN));
}

#[tokio::test]
async fn traversal_attempts_get_400_bad_path_and_never_a_file() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    for target in [
        "/file/../../../../etc/passwd",
        "/file/..%2f..%2f..%2fetc%2fpasswd",
        "/file/%2e%2e/%2e%2e/etc/passwd",
        "/file/%252e%252e/etc/passwd",
        "/file/small.bin%00.txt",
        "/file//etc/passwd",
        "/gnutella/..%5c..%5cwindows",
    ] {
        let r = c.get(target, "").await;
        assert_eq!(r.status_line, "HTTP/1.1 400 Bad Path", "{target}");
        assert!(!String::from_utf8_lossy(&r.body).contains("root:"));
    }
    assert_eq!(s.stats.snapshot().transfers.uploads_started, 0);
}

#[tokio::test]
async fn other_methods_get_405() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    c.send("POST /file/small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let r = c.read(true).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn full_slots_give_503_with_retry_after_and_free_up_after() {
    let s = start(HttpConfig {
        upload_slots: 1,
        retry_after: Duration::from_secs(7),
        // Slow enough that the first upload is still running when the second request comes.
        per_connection_rate: Some(256 * 1024),
        ..HttpConfig::default()
    })
    .await;
    let mut slow = Client::connect(s.addr).await;
    slow.send("GET /file/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1048575\r\n\r\n")
        .await;
    eventually("first upload holds the slot", || {
        s.http.free_slots() == Some(0)
    })
    .await;
    let r = get_once(s.addr, "/kazaa/small.bin", "").await;
    assert_eq!(r.status_line, "HTTP/1.1 503 Busy");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(
        r.all("x-kazaatag").len(),
        2,
        "router headers on the 503 too"
    );
    // HEAD needs no slot.
    let mut h = Client::connect(s.addr).await;
    h.send("HEAD /file/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(h.read(false).await.status(), 200);
    let r = slow.read(true).await;
    assert_eq!(r.body.len(), 1_048_576);
    eventually("slot released", || s.http.free_slots() == Some(1)).await;
    let r = get_once(s.addr, "/file/small.bin", "").await;
    assert_eq!(r.status(), 200);
    let t = s.stats.snapshot().transfers;
    assert_eq!(
        (t.uploads_started, t.uploads_completed, t.uploads_refused),
        (2, 2, 1)
    );
}

#[tokio::test]
async fn per_connection_rate_cap_slows_the_transfer() {
    // 300 KiB at 1 MiB/s with a 100 KiB burst needs at least ~0.19 s; only the lower bound is checked.
    let s = start(HttpConfig {
        per_connection_rate: Some(1024 * 1024),
        ..HttpConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    let r = get_once(s.addr, "/file/big.bin", "Range: bytes=0-307199\r\n").await;
    assert_eq!(r.body.len(), 300 * 1024);
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_capped_upload_outlives_the_idle_timeout() {
    // 192 KiB at 64 KiB/s takes ~3 s, ten times the idle timeout: bytes keep moving, so it is not cut.
    let s = start(HttpConfig {
        per_connection_rate: Some(64 * 1024),
        idle_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    })
    .await;
    let r = get_once(s.addr, "/file/big.bin", "Range: bytes=0-196607\r\n").await;
    assert_eq!(r.body.len(), 196_608);
    let t = s.stats.snapshot().transfers;
    assert_eq!((t.uploads_completed, t.uploads_failed), (1, 0));
}

#[tokio::test]
async fn file_shrinking_mid_upload_cuts_the_connection_cleanly() {
    let s = start(HttpConfig {
        per_connection_rate: Some(512 * 1024),
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    c.send("GET /file/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut status = String::new();
    c.r.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Someone truncates the shared file while it is being served.
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.path("big.bin"))
        .unwrap()
        .set_len(100_000)
        .unwrap();
    assert!(
        c.closed_within(T).await,
        "a short body must end the connection"
    );
    eventually("counted as failed", || {
        let snap = s.stats.snapshot();
        snap.transfers.uploads_failed == 1 && snap.errors.get("http_file_read") == Some(&1)
    })
    .await;
    assert_eq!(get_once(s.addr, "/file/small.bin", "").await.status(), 200);
}

#[tokio::test]
async fn global_rate_cap_is_shared_by_connections() {
    let s = start(HttpConfig {
        global_rate: Some(RateLimiter::with_burst(1024 * 1024, 64 * 1024)),
        ..HttpConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    // Two parallel 256 KiB downloads: 512 KiB through a 1 MiB/s cap takes at least ~0.44 s.
    let a = tokio::spawn(get_once(
        s.addr,
        "/file/big.bin",
        "Range: bytes=0-262143\r\n",
    ));
    let b = tokio::spawn(get_once(
        s.addr,
        "/file/big.bin",
        "Range: bytes=0-262143\r\n",
    ));
    assert_eq!(a.await.unwrap().body.len(), 262_144);
    assert_eq!(b.await.unwrap().body.len(), 262_144);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn client_that_stops_reading_is_cut_and_its_slot_freed() {
    let s = start(HttpConfig {
        upload_slots: 1,
        idle_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    // 8 MiB is far more than the socket buffers hold: the server's writes stall.
    c.send("GET /file/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    eventually("upload started", || s.http.free_slots() == Some(0)).await;
    eventually("stalled upload cut, slot free", || {
        s.http.free_slots() == Some(1)
    })
    .await;
    let snap = s.stats.snapshot();
    assert_eq!(snap.transfers.uploads_failed, 1);
    assert_eq!(snap.transfers.uploads_completed, 0);
    assert_eq!(snap.errors["http_idle_timeout"], 1);
    // The server is fine for everyone else.
    assert_eq!(get_once(s.addr, "/file/small.bin", "").await.status(), 200);
    drop(c);
    // Nothing leaks: every connection task ended.
    eventually("no connection left open", || {
        s.stats.snapshot().gauges["http_connections"] == 0
    })
    .await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let s = start(HttpConfig {
        idle_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.get("/file/small.bin", "").await.status(), 200);
    assert!(c.closed_within(T).await);
}

#[tokio::test]
async fn overlong_header_block_gets_431() {
    let s = start(HttpConfig {
        max_header_bytes: 16 * 1024,
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    let big = "a".repeat(1000);
    let mut req = String::from("GET /file/small.bin HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Pad-{i}: {big}\r\n"));
    }
    req.push_str("\r\n");
    // The server may close before we finish writing; only the reply matters.
    let _ = c.r.get_mut().write_all(req.as_bytes()).await;
    let r = c.read(false).await;
    assert_eq!(r.status(), 431, "{}", r.status_line);
    assert!(c.closed_within(T).await);
    eventually("counted", || {
        s.stats.snapshot().errors.get("http_head_too_large") == Some(&1)
    })
    .await;
}

#[tokio::test]
async fn malformed_request_gets_400() {
    let s = start(HttpConfig::default()).await;
    let mut c = Client::connect(s.addr).await;
    c.send("GARBAGE\x01\x02 / HTTP/9\r\n\r\n").await;
    let r = c.read(false).await;
    assert_eq!(r.status(), 400);
    assert!(c.closed_within(T).await);
}

#[tokio::test]
async fn random_bytes_never_take_the_server_down() {
    use rand::{Rng, SeedableRng};
    let s = start(HttpConfig {
        idle_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let len = rng.gen_range(0..3000);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Half of them start like a request, so the parser gets past the method.
        if i % 2 == 0 {
            junk.splice(0..0, b"GET /file/small.bin HTTP/1.1\r\n".iter().copied());
        }
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&junk).await;
            let mut sink = Vec::new();
            let _ = timeout(T, c.read_to_end(&mut sink)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        get_once(s.addr, "/file/small.bin", "").await.body,
        s.fx.small
    );
    eventually("every junk connection closed", || {
        s.stats.snapshot().gauges["http_connections"] == 0
    })
    .await;
}

#[tokio::test]
async fn slowloris_header_sender_is_cut_off() {
    let s = start(HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    c.send("GET /file/small.bin HTTP/1.1\r\n").await;
    // One header byte every 50 ms keeps the idle timer happy but never finishes the head.
    let start = std::time::Instant::now();
    let mut cut = false;
    while start.elapsed() < T {
        if c.r.get_mut().write_all(b"X").await.is_err() {
            cut = true;
            break;
        }
        let mut b = [0u8; 512];
        match timeout(Duration::from_millis(50), c.r.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    assert!(cut, "slow header sender was never cut off");
    eventually("counted", || {
        s.stats.snapshot().errors.get("http_header_timeout") == Some(&1)
    })
    .await;
}

#[tokio::test]
async fn serve_connection_replays_bytes_already_read() {
    // KaZaA-style shared port: the node reads the first bytes to tell HTTP from its binary protocol.
    let s = start(HttpConfig::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = s.http.clone();
    let token = s.shutdown.clone();
    tokio::spawn(async move {
        let (mut sock, peer) = listener.accept().await.unwrap();
        let mut first = [0u8; 4];
        sock.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET ");
        http.serve_connection(Prefixed::new(first.to_vec(), sock), peer, token)
            .await
    });
    let mut c = Client::connect(addr).await;
    let r = c.get("/kazaa/small.bin", "Range: bytes=0-9\r\n").await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.body, &s.fx.small[..10]);
}

#[tokio::test]
async fn serve_connection_after_giv_on_an_outgoing_socket() {
    // Gnutella push: the firewalled servent connects out, writes GIV, then serves HTTP on that socket.
    let s = start(HttpConfig::default()).await;
    let downloader = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daddr = downloader.local_addr().unwrap();
    let http = s.http.clone();
    let token = s.shutdown.clone();
    let servent = tokio::spawn(async move {
        let mut sock = TcpStream::connect(daddr).await.unwrap();
        sock.write_all(b"GIV 0:0123456789abcdef0123456789abcdef/small.bin\n\n")
            .await
            .unwrap();
        http.serve_connection(sock, daddr, token).await
    });
    let (sock, _) = downloader.accept().await.unwrap();
    let mut c = Client {
        r: BufReader::new(sock),
    };
    let mut giv = String::new();
    c.r.read_line(&mut giv).await.unwrap();
    assert!(giv.starts_with("GIV 0:"));
    let mut blank = String::new();
    c.r.read_line(&mut blank).await.unwrap();
    assert_eq!(blank, "\n");
    let r = c.get("/gnutella/small.bin", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, s.fx.small);
    drop(c);
    let res = timeout(T, servent).await.unwrap().unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let mut s = start(HttpConfig {
        shutdown_grace: Duration::from_millis(200),
        ..HttpConfig::default()
    })
    .await;
    // An idle keep-alive connection must not hold shutdown up.
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.get("/file/small.bin", "").await.status(), 200);
    s.shutdown.cancel();
    let task = s.task.take().unwrap();
    timeout(T, task).await.unwrap().unwrap().unwrap();
    assert!(c.closed_within(T).await);
    assert!(TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let s = start(HttpConfig {
        max_connections: 2,
        ..HttpConfig::default()
    })
    .await;
    let mut a = Client::connect(s.addr).await;
    let mut b = Client::connect(s.addr).await;
    assert_eq!(a.get("/file/small.bin", "").await.status(), 200);
    assert_eq!(b.get("/file/small.bin", "").await.status(), 200);
    let mut c = Client::connect(s.addr).await;
    assert!(c.closed_within(T).await, "third connection must be refused");
    assert_eq!(s.stats.snapshot().errors["http_too_many_connections"], 1);
    // Once one leaves, a new one is served (the slot frees a moment after the client goes: retry).
    drop(a);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut d = Client::connect(s.addr).await;
        d.send("GET /file/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut line = String::new();
        let _ = timeout(T, d.r.read_line(&mut line)).await;
        if line.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test]
async fn shutdown_cuts_a_long_transfer_after_the_grace_period() {
    let mut s = start(HttpConfig {
        per_connection_rate: Some(256 * 1024),
        shutdown_grace: Duration::from_millis(300),
        ..HttpConfig::default()
    })
    .await;
    let mut c = Client::connect(s.addr).await;
    // 8 MiB at 256 KiB/s would take 32 s.
    c.send("GET /file/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    eventually("upload running", || {
        s.stats.snapshot().transfers.uploads_started == 1
    })
    .await;
    s.shutdown.cancel();
    let task = s.task.take().unwrap();
    timeout(T, task).await.unwrap().unwrap().unwrap();
    assert!(c.closed_within(T).await);
    let t = s.stats.snapshot().transfers;
    assert_eq!((t.uploads_completed, t.uploads_failed), (0, 1));
}

#[tokio::test]
async fn reply_status_helpers() {
    assert_eq!(Reply::not_found().status, StatusCode::NOT_FOUND);
    let r = Reply::bad_request("Bad Path");
    assert_eq!(r.reason.as_deref(), Some("Bad Path"));
    let mut h = ExtraHeaders::new();
    h.push("X-Ok", "1")
        .push("Bad\nName", "x")
        .push("X-Bad", "a\r\nb");
    assert_eq!(h.0.len(), 1, "invalid headers are dropped");
}
