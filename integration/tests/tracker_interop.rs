//! Interop: real clients (aria2c, libtorrent via /usr/bin/python3, transmission-cli) announce to our tracker
//! over HTTP and UDP, find each other only through it (DHT, LPD and PEX are off), and complete a download.
//! The Debian packages are listed in `scripts/apt-packages.txt`; these tests never skip themselves.
//!
//! The tracker runs through the shared harness ([`integration::Daemon`], process group killed on drop).
//!
//! aria2 1.36 sends UDP tracker traffic through its DHT socket and refuses `udp://` trackers when DHT is
//! off, so for UDP it runs with DHT enabled but with no entry point and a private routing-table file: it
//! knows no DHT node and can only learn peers from the tracker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{eventually, Daemon};

/// Our tracker, HTTP and UDP on 127.0.0.1 port 0.
struct Tracker {
    _d: Daemon,
    http: SocketAddr,
    udp: Option<SocketAddr>,
}

impl Tracker {
    fn start(extra: &[&str]) -> Tracker {
        let mut args = vec!["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0"];
        args.extend(extra);
        let d = Daemon::builder("tracker")
            .args(args)
            .env("RUST_LOG", "warn")
            .expect_listening(2)
            .spawn()
            .expect("tracker starts");
        let http = d.addr_of("tcp", None).expect("tcp readiness");
        let udp = d.addr_of("udp", None);
        Tracker { _d: d, http, udp }
    }

    /// The `/stats` page as JSON.
    fn stats(&self) -> serde_json::Value {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let body = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| &resp[i + 4..])
            .expect("a full HTTP response");
        serde_json::from_slice(body).expect("stats JSON")
    }
}

/// How long a 1 MiB download through the tracker may take before the test gives up.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const PAYLOAD_LEN: usize = 1 << 20;

/// A client process, killed on drop.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits for the process to exit within `limit`; panics with its log otherwise.
    fn wait_success(&mut self, limit: Duration, log: &Path) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                assert!(
                    s.success(),
                    "{} failed ({s}):\n{}",
                    self.1,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish in {limit:?}:\n{}",
                self.1,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(prog: &str, args: &[&str], log: &Path, name: &'static str) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {prog} (apt-get install it): {e}"));
    Proc(child, name)
}

/// A temporary world: a seed folder with a random 1 MiB file and a .torrent for `announce`.
struct World {
    dir: tempfile::TempDir,
    torrent: PathBuf,
    name: String,
}

impl World {
    fn new(announce: &str, maker: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        // Distinct content per world, so every test has its own info-hash.
        let mut data = Vec::with_capacity(PAYLOAD_LEN);
        static WORLDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut x: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ u64::from(std::process::id()) << 32
            ^ WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            | 1;
        while data.len() < PAYLOAD_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        let name = "payload.bin".to_string();
        std::fs::write(seed.join(&name), &data).unwrap();
        let torrent = dir.path().join("t.torrent");
        let file = seed.join(&name);
        let out = match maker {
            "mktorrent" => Command::new("mktorrent")
                .args(["-a", announce, "-l", "16", "-o"])
                .arg(&torrent)
                .arg(&file)
                .output(),
            _ => Command::new("transmission-create")
                .args(["-t", announce, "-s", "64", "-o"])
                .arg(&torrent)
                .arg(&file)
                .output(),
        }
        .unwrap_or_else(|e| panic!("cannot run {maker}: {e}"));
        assert!(
            out.status.success(),
            "{maker}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        World { dir, torrent, name }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn seed_dir(&self) -> PathBuf {
        self.path("seed")
    }

    fn assert_same(&self, leech_dir: &Path) {
        let a = std::fs::read(self.seed_dir().join(&self.name)).unwrap();
        let b = std::fs::read(leech_dir.join(&self.name)).unwrap();
        assert!(a == b, "downloaded file differs from the seed's");
    }

    fn aria2(&self, dir: &Path, seed: bool, udp: bool, log: &str) -> Proc {
        let port = free_port().to_string();
        let dht_port = free_port().to_string();
        let dht_file = self.path(&format!("{log}.dht"));
        let mut args: Vec<String> = vec![
            "-d".into(),
            dir.to_str().unwrap().into(),
            format!("--listen-port={port}"),
            "--enable-peer-exchange=false".into(),
            "--bt-enable-lpd=false".into(),
            "--enable-dht6=false".into(),
            "--console-log-level=warn".into(),
            "--summary-interval=0".into(),
            "--file-allocation=none".into(),
        ];
        if udp {
            args.push("--enable-dht=true".into());
            args.push(format!("--dht-listen-port={dht_port}"));
            args.push(format!("--dht-file-path={}", dht_file.display()));
        } else {
            args.push("--enable-dht=false".into());
        }
        if seed {
            args.push("--seed-ratio=0.0".into());
            args.push("--check-integrity=true".into());
        } else {
            args.push("--seed-time=0".into());
        }
        args.push(self.torrent.to_str().unwrap().into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn("aria2c", &a, &self.path(log), "aria2c")
    }

    fn libtorrent(&self, dir: &Path, seed: bool, log: &str) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tracker_lt_client.py");
        let timeout = DOWNLOAD_TIMEOUT.as_secs().to_string();
        let mut args = vec![
            script,
            self.torrent.to_str().unwrap(),
            dir.to_str().unwrap(),
            &timeout,
        ];
        if seed {
            args.push("seed");
        }
        spawn("/usr/bin/python3", &args, &self.path(log), "libtorrent")
    }

    fn transmission(&self, log: &str) -> Proc {
        let cfg = self.path("trcfg");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("settings.json"),
            r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
                "port-forwarding-enabled": false, "rpc-enabled": false, "encryption": 1}"#,
        )
        .unwrap();
        let port = free_port().to_string();
        let seed_dir = self.seed_dir();
        let args = [
            "-g",
            cfg.to_str().unwrap(),
            "-w",
            seed_dir.to_str().unwrap(),
            "-p",
            &port,
            self.torrent.to_str().unwrap(),
        ];
        spawn(
            "transmission-cli",
            &args,
            &self.path(log),
            "transmission-cli",
        )
    }
}

fn announce_url(t: &Tracker, udp: bool) -> String {
    if udp {
        format!("udp://{}/announce", t.udp.unwrap())
    } else {
        format!("http://{}/announce", t.http)
    }
}

/// Waits until the tracker knows `n` peers (the seeder has announced) so the leecher finds it at once.
fn wait_peers(t: &Tracker, n: u64) {
    let ok = eventually(Duration::from_secs(30), || {
        t.stats()["peers"].as_u64().unwrap_or(0) >= n
    });
    assert!(ok, "the seeder never announced to the tracker");
}

fn completed_through(t: &Tracker, udp_addr: Option<SocketAddr>) {
    let v = t.stats();
    let msgs = &v["messages"]["announce"]["in_count"];
    assert!(msgs.as_u64().unwrap() >= 2, "announces seen: {v}");
    if udp_addr.is_some() {
        assert!(v["messages"]["connect"]["in_count"].as_u64().unwrap() >= 2);
    }
}

fn aria2_seeds_libtorrent_leeches(udp: bool) {
    let t = Tracker::start(&["--interval", "5"]);
    let w = World::new(&announce_url(&t, udp), "mktorrent");
    let _seed = w.aria2(&w.seed_dir(), true, udp, "aria2-seed.log");
    libtorrent_leeches(&t, &w, udp);
}

/// Once the seeder has announced, a libtorrent leecher downloads the file through the tracker.
fn libtorrent_leeches(t: &Tracker, w: &World, udp: bool) {
    wait_peers(t, 1);
    let leech = w.path("leech");
    std::fs::create_dir_all(&leech).unwrap();
    let mut l = w.libtorrent(&leech, false, "lt-leech.log");
    l.wait_success(
        DOWNLOAD_TIMEOUT + Duration::from_secs(5),
        &w.path("lt-leech.log"),
    );
    w.assert_same(&leech);
    completed_through(t, udp.then(|| t.udp.unwrap()));
}

#[test]
fn http_aria2_seeds_libtorrent_leeches() {
    aria2_seeds_libtorrent_leeches(false);
}

#[test]
fn udp_aria2_seeds_libtorrent_leeches() {
    aria2_seeds_libtorrent_leeches(true);
}

#[test]
fn udp_libtorrent_seeds_aria2_leeches() {
    let t = Tracker::start(&["--interval", "5"]);
    let w = World::new(&announce_url(&t, true), "mktorrent");
    let _seed = w.libtorrent(&w.seed_dir(), true, "lt-seed.log");
    wait_peers(&t, 1);
    let leech = w.path("leech");
    let mut l = w.aria2(&leech, false, true, "aria2-leech.log");
    l.wait_success(DOWNLOAD_TIMEOUT, &w.path("aria2-leech.log"));
    w.assert_same(&leech);
    completed_through(&t, t.udp);
}

#[test]
fn http_transmission_seeds_aria2_leeches() {
    let t = Tracker::start(&["--interval", "5"]);
    let w = World::new(&announce_url(&t, false), "transmission-create");
    let _seed = w.transmission("transmission.log");
    wait_peers(&t, 1);
    let leech = w.path("leech");
    let mut l = w.aria2(&leech, false, false, "aria2-leech.log");
    l.wait_success(DOWNLOAD_TIMEOUT, &w.path("aria2-leech.log"));
    w.assert_same(&leech);
    completed_through(&t, None);
}

#[test]
fn udp_transmission_seeds_libtorrent_leeches() {
    let t = Tracker::start(&["--interval", "5"]);
    let w = World::new(&announce_url(&t, true), "transmission-create");
    let _seed = w.transmission("transmission.log");
    libtorrent_leeches(&t, &w, true);
}
