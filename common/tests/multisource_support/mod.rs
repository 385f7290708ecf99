//! A tiny HTTP/1.1 range server for the downloader's tests and memory benchmark.
//!
//! It serves generated content (no file, no memory per byte) and can misbehave on purpose: cap its rate,
//! die after some bytes, corrupt what it sends, answer `503 Retry-After`, or lie in `Content-Range`.
//! It is written on raw tokio sockets so every byte it sends is under the test's control.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Period of the generated content: a prime, so it never lines up with block boundaries.
const PERIOD: usize = 65_521;
/// Largest request head we read.
const MAX_HEAD: usize = 16 * 1024;
/// Body bytes per write.
const CHUNK: usize = 16 * 1024;

fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// Copies the content bytes at `offset..offset + out.len()` into `out`.
pub fn fill(offset: u64, out: &mut [u8]) {
    let p = pattern();
    let mut pos = (offset % PERIOD as u64) as usize;
    let mut i = 0;
    while i < out.len() {
        let n = (PERIOD - pos).min(out.len() - i);
        out[i..i + n].copy_from_slice(&p[pos..pos + n]);
        i += n;
        pos = 0;
    }
}

/// The whole content of `size` bytes (small sizes only).
pub fn content(size: u64) -> Vec<u8> {
    let mut v = vec![0; size as usize];
    fill(0, &mut v);
    v
}

/// SHA-1 of the content of `size` bytes, streamed.
pub fn content_sha1(size: u64) -> common::hash::Sha1Digest {
    let kinds = common::hash::HashKinds {
        sha1: true,
        ..Default::default()
    };
    let mut h = common::hash::MultiHasher::new(kinds, size);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = buf.len().min((size - off) as usize);
        fill(off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finish().sha1.expect("sha1 asked for")
}

/// How a test server misbehaves.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Body bytes per second, per connection.
    pub rate: Option<u64>,
    /// After this many body bytes in total, cut the connection and stop serving for good.
    pub die_after: Option<u64>,
    /// After this many body bytes in total, stop sending but keep the connection open (a stall).
    pub stall_after: Option<u64>,
    /// Flip the first byte of every body it sends.
    pub corrupt: bool,
    /// Answer `503` with `Retry-After: retry_after` to this many first requests.
    pub busy_first: u32,
    /// Seconds in `Retry-After`.
    pub retry_after: u64,
    /// Announce a `Content-Range` one byte off.
    pub bad_content_range: bool,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

/// What the server saw and did.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub body_bytes: AtomicU64,
    pub dead: AtomicBool,
    /// Ranges (`start`, `end` inclusive) of every `206`.
    pub ranges: Mutex<Vec<(u64, u64)>>,
}

/// A running test server; stops when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub size: u64,
    pub counters: Arc<Counters>,
    behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Serves `size` bytes of generated content at `/file` on 127.0.0.1, port 0.
    pub async fn start(size: u64, behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let behaviour = Arc::new(behaviour);
        let (c, b) = (counters.clone(), behaviour.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    break;
                };
                if c.dead.load(Ordering::SeqCst) {
                    break;
                }
                let (c, b) = (c.clone(), b.clone());
                conns.spawn(async move {
                    let _ = serve_conn(s, size, &b, &c).await;
                });
            }
        });
        Server {
            addr,
            size,
            counters,
            behaviour,
            task,
        }
    }

    /// `http://addr/file`.
    pub fn url(&self) -> String {
        format!("http://{}/file", self.addr)
    }

    /// Serves HTTP on a stream the test made (a pushed connection).
    pub fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(&self, s: S) {
        let (c, b, size) = (self.counters.clone(), self.behaviour.clone(), self.size);
        tokio::spawn(async move {
            let _ = serve_conn(s, size, &b, &c).await;
        });
    }

    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.counters.ranges.lock().unwrap().clone()
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    size: u64,
    b: &Behaviour,
    c: &Counters,
) -> std::io::Result<()> {
    c.connections.fetch_add(1, Ordering::SeqCst);
    let mut head = Vec::with_capacity(1024);
    loop {
        head.clear();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Ok(());
            }
            let mut byte = [0u8; 1];
            if s.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        if c.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = c.requests.fetch_add(1, Ordering::SeqCst);
        let text = String::from_utf8_lossy(&head).to_string();
        let extra: String = b
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        if n < u64::from(b.busy_first) {
            let resp = format!(
                "HTTP/1.1 503 Busy\r\nRetry-After: {}\r\nContent-Length: 0\r\n{extra}\r\n",
                b.retry_after
            );
            s.write_all(resp.as_bytes()).await?;
            continue;
        }
        let range = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("range") {
                return None;
            }
            let (a, e) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
            let a: u64 = a.parse().ok()?;
            let e: u64 = if e.is_empty() {
                size - 1
            } else {
                e.parse().ok()?
            };
            Some((a, e.min(size - 1)))
        });
        let (start, end, status) = match range {
            Some((a, e)) if a <= e && a < size => (a, e, 206),
            Some(_) => {
                let resp = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n"
                );
                s.write_all(resp.as_bytes()).await?;
                continue;
            }
            None => (0, size.saturating_sub(1), 200),
        };
        let len = if size == 0 { 0 } else { end - start + 1 };
        let resp = if status == 206 {
            c.ranges.lock().unwrap().push((start, end));
            let shown = if b.bad_content_range {
                start + 1
            } else {
                start
            };
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {shown}-{end}/{size}\r\nContent-Length: {len}\r\n{extra}\r\n"
            )
        } else {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{extra}\r\n")
        };
        s.write_all(resp.as_bytes()).await?;
        let mut buf = vec![0u8; CHUNK];
        let mut off = start;
        let mut first = true;
        // A rate cap sends small pieces, each after its share of time, so the cap holds within a block.
        let piece = b.rate.map_or(CHUNK, |r| (r as usize / 50).clamp(1, CHUNK));
        while off < start + len {
            let n = piece.min((start + len - off) as usize);
            if let Some(rate) = b.rate {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            fill(off, &mut buf[..n]);
            if b.corrupt && first {
                buf[0] ^= 0xFF;
            }
            first = false;
            let mut n = n;
            if let Some(limit) = b.die_after {
                let sent = c.body_bytes.load(Ordering::SeqCst);
                if sent + n as u64 >= limit {
                    n = limit.saturating_sub(sent) as usize;
                    s.write_all(&buf[..n]).await?;
                    s.flush().await?;
                    c.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    c.dead.store(true, Ordering::SeqCst);
                    return Ok(());
                }
            }
            if let Some(limit) = b.stall_after {
                let sent = c.body_bytes.load(Ordering::SeqCst);
                if sent + n as u64 >= limit {
                    let n = limit.saturating_sub(sent) as usize;
                    s.write_all(&buf[..n]).await?;
                    s.flush().await?;
                    c.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    // Hold the connection open and silent until the server is dropped.
                    std::future::pending::<()>().await;
                }
            }
            s.write_all(&buf[..n]).await?;
            c.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
            off += n as u64;
        }
        s.flush().await?;
    }
}
