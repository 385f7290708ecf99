//! Test support: start the real binaries on 127.0.0.1 port 0 and talk raw Napster frames to them.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use napster_server::codec::{Frame, MAX_PAYLOAD};

/// How long any single wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A child process killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `bin` with `args` and waits for its readiness line.
    pub fn spawn(bin: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Owned by a `Daemon` at once, so a failed wait below still kills the child on drop.
        let mut d = Daemon {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines: rx,
        };
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let line = d
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{bin} did not print its readiness line"));
            if let Some(l) = common::telemetry::Listening::parse(&line) {
                d.addr = l.addr;
                return d;
            }
        }
    }

    /// Starts the server with a data directory.
    pub fn server(data_dir: &Path, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Daemon::spawn(env!("CARGO_BIN_EXE_napster-server"), &args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol connection.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, t: u16, text: &str) {
        let b = Frame::text(t, text).to_bytes().unwrap();
        self.s.write_all(&b).unwrap();
    }

    /// Next frame, or None at EOF / reset.
    pub fn recv(&mut self) -> Option<(u16, String)> {
        loop {
            if let Some((f, n)) = Frame::decode_with_limit(&self.buf, MAX_PAYLOAD).unwrap() {
                self.buf.drain(..n);
                return Some((f.ty, f.text_payload()));
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
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
        let mut r = Raw::connect(addr);
        r.send(2, &format!("{nick} pw {port} \"raw-test\" 4"));
        let g = r.until(214);
        assert_eq!(g[0].0, 3, "{g:?}");
        r
    }
}
