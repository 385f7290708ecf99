//! Test support: start the real binaries on 127.0.0.1 port 0 (through the shared `integration` harness)
//! and talk raw Napster frames to them.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use napster_server::codec::{Frame, MAX_PAYLOAD};

/// How long any single wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The shared harness's daemon (killed on drop), with napster starters.
pub use integration::Daemon;

/// Starts the server on 127.0.0.1 port 0 with `data_dir`, waiting for `ready` readiness lines.
pub fn server_ready(data_dir: &Path, extra: &[&str], ready: usize) -> Daemon {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Daemon::builder_path(env!("CARGO_BIN_EXE_napster-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .expect_listening(ready)
        .timeout(DEADLINE)
        .spawn()
        .expect("napster-server starts")
}

/// Starts the server with a data directory.
pub fn server(data_dir: &Path, extra: &[&str]) -> Daemon {
    server_ready(data_dir, extra, 1)
}

/// Starts `napster-client` with `args` and waits for its readiness line.
pub fn client(args: &[&str]) -> Daemon {
    Daemon::builder_path(env!("CARGO_BIN_EXE_napster-client"))
        .args(args)
        .env("RUST_LOG", "warn")
        .timeout(DEADLINE)
        .spawn()
        .expect("napster-client starts")
}

/// Frames of type `t`, one per payload, encoded back to back (to write in one call).
pub fn frames<S: AsRef<str>>(t: u16, payloads: impl IntoIterator<Item = S>) -> Vec<u8> {
    let mut wire = Vec::new();
    for p in payloads {
        wire.extend(Frame::text(t, p.as_ref()).to_bytes().unwrap());
    }
    wire
}

/// Connects again and again (with a deadline) until sending `(t, payload)` on a fresh connection is
/// answered with a frame of type `want`: for waiting until the server has let a place go.
pub fn until_admitted(addr: SocketAddr, t: u16, payload: &str, want: u16) -> Raw {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let mut c = Raw::connect(addr);
        c.send(t, payload);
        match c.recv() {
            Some((got, _)) if got == want => return c,
            other => assert!(
                std::time::Instant::now() < deadline,
                "never admitted: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw protocol connection.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects with a receive buffer of `rcvbuf` bytes, set before the handshake so the window stays
    /// that small: a client that does not read then holds almost nothing of what the server sends.
    pub fn connect_small_window(addr: SocketAddr, rcvbuf: usize) -> Raw {
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        socket::setsockopt(&fd, sockopt::RcvBuf, &rcvbuf).expect("SO_RCVBUF");
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))
            .expect("connect");
        Raw::from_stream(TcpStream::from(fd))
    }

    fn from_stream(s: TcpStream) -> Raw {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Connects from another loopback address (`127.0.0.2` and so on), bound before connecting.
    pub fn connect_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> Raw {
        let s = integration::connect_from(addr, from).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, t: u16, text: &str) {
        let b = Frame::text(t, text).to_bytes().unwrap();
        self.s.write_all(&b).unwrap();
    }

    /// Next frame, or None when the server closed the connection (EOF / reset).
    ///
    /// Panics when neither a frame nor a close arrives within the read deadline: `None` must mean the
    /// server really closed, so `assert_eq!(r.recv(), None)` cannot pass for a server that keeps a
    /// socket it should have dropped.
    pub fn recv(&mut self) -> Option<(u16, String)> {
        loop {
            if let Some((f, n)) = Frame::decode_with_limit(&self.buf, MAX_PAYLOAD).unwrap() {
                self.buf.drain(..n);
                return Some((f.ty, f.text_payload()));
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no frame and no close within {DEADLINE:?}")
                }
                Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until (and including) the first of type `t`.
    pub fn until(&mut self, t: u16) -> Vec<(u16, String)> {
        let mut v = Vec::new();
        loop {
            let f = self
                .recv()
                .unwrap_or_else(|| panic!("closed before a {t}: {v:?}"));
            let done = f.0 == t;
            v.push(f);
            if done {
                return v;
            }
        }
    }

    /// Logs in (guest or registered) and consumes the greeting up to the 214.
    pub fn login(addr: SocketAddr, nick: &str, port: u16) -> Raw {
        Raw::login_as(addr, nick, port, 4)
    }

    /// Logs in with link-speed code `speed` and consumes the greeting up to the 214.
    pub fn login_as(addr: SocketAddr, nick: &str, port: u16, speed: u8) -> Raw {
        Raw::connect(addr).logged_in(nick, port, speed)
    }

    /// Logs this connection in (as [`Raw::login_as`]).
    pub fn logged_in(self, nick: &str, port: u16, speed: u8) -> Raw {
        let mut r = self;
        r.send(2, &format!("{nick} pw {port} \"raw-test\" {speed}"));
        let g = r.until(214);
        assert_eq!(g[0].0, 3, "{g:?}");
        r
    }

    /// Sends a 214 and returns every frame that arrived before its reply. The server handles a
    /// connection's frames in order, so everything it sent this client before now is in the list.
    pub fn drain(&mut self) -> Vec<(u16, String)> {
        self.send(214, "");
        let mut v = self.until(214);
        v.pop();
        v
    }
}
