//! Test support: start the real `tracker` binary on port 0, learn its ports from the readiness lines, kill it
//! on drop; tiny HTTP and UDP clients.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::telemetry::Listening;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tracker, killed on drop.
pub struct Tracker {
    pub child: Child,
    pub http: SocketAddr,
    pub udp: Option<SocketAddr>,
}

impl Tracker {
    /// Starts `tracker --listen 127.0.0.1:0 [--udp 127.0.0.1:0] <extra>` and waits for its readiness lines.
    pub fn start(udp: bool, extra: &[&str]) -> Tracker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracker"));
        cmd.args(["--listen", "127.0.0.1:0"]);
        if udp {
            cmd.args(["--udp", "127.0.0.1:0"]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("tracker starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(l) = Listening::parse(&line) {
                    let _ = tx.send(l);
                }
            }
        });
        let mut t = Tracker {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            udp: None,
        };
        let want = if udp { 2 } else { 1 };
        let deadline = Instant::now() + READY_TIMEOUT;
        for _ in 0..want {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("readiness line before the deadline");
            match l.proto.as_str() {
                "tcp" => t.http = l.addr,
                "udp" => t.udp = Some(l.addr),
                p => panic!("unexpected proto {p}"),
            }
        }
        t
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY-free: libc::kill via the `kill` program keeps this crate free of unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "tracker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` over a fresh connection; returns (status code, body).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(self.http, path, &[])
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a full HTTP response head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, resp[split + 4..].to_vec())
}

/// A UDP client socket with a receive timeout.
pub fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `pkt` and returns the reply (None on timeout).
pub fn udp_roundtrip(s: &UdpSocket, to: SocketAddr, pkt: &[u8]) -> Option<Vec<u8>> {
    s.send_to(pkt, to).unwrap();
    let mut buf = [0u8; 4096];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Decodes a bencoded body with bendy (an independent decoder) into a dictionary.
pub fn bdecode(body: &[u8]) -> std::collections::BTreeMap<Vec<u8>, bendy::value::Value<'static>> {
    use bendy::decoding::FromBencode;
    match bendy::value::Value::from_bencode(body).expect("valid bencode") {
        bendy::value::Value::Dict(d) => d
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        v => panic!("not a dictionary: {v:?}"),
    }
}

pub fn bint(v: &bendy::value::Value<'_>) -> i64 {
    match v {
        bendy::value::Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

pub fn bbytes(v: &bendy::value::Value<'_>) -> Vec<u8> {
    match v {
        bendy::value::Value::Bytes(b) => b.to_vec(),
        v => panic!("not a string: {v:?}"),
    }
}
