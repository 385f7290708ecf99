//! Interop: real clients (aria2c, libtorrent via /usr/bin/python3, transmission-cli) announce to our tracker
//! over HTTP and UDP, find each other only through it (DHT, LPD and PEX are off), and complete a download
//! compared byte for byte with the original. Each client plays both roles: aria2c and libtorrent seed and
//! leech, Transmission seeds on loopback and leeches inside a network namespace (it never dials loopback
//! peers), from aria2c over HTTP and from libtorrent over UDP. The Debian packages are listed in
//! `scripts/apt-packages.txt`; these tests never skip themselves (the namespace tests need root, as
//! `bittorrent_interop.rs` does).
//!
//! Every test checks that the tracker saw the download complete: the torrent's `downloaded` counter, which
//! only an `event=completed` announce from a peer that was not already seeding raises, goes from 0 to
//! exactly 1; and that the clients used the transport under test (BEP 15 connects, or none over HTTP).
//!
//! The tracker runs through the shared harness ([`integration::Daemon`], process group killed on drop).
//!
//! aria2 1.36 sends UDP tracker traffic through its DHT socket and refuses `udp://` trackers when DHT is
//! off, so for UDP it runs with DHT enabled but with no entry point and a private routing-table file: it
//! knows no DHT node and can only learn peers from the tracker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use integration::netns::Netns;
use integration::ports::PortBlock;
use integration::{eventually, free_port, payload, Daemon};

/// Our tracker, HTTP and UDP on `ip` port 0.
struct Tracker {
    _d: Daemon,
    http: SocketAddr,
    udp: SocketAddr,
}

impl Tracker {
    fn start(ip: &str) -> Tracker {
        let (http, udp) = (format!("{ip}:0"), format!("{ip}:0"));
        // A short interval so a client that announced before its peer did hears of it soon.
        let args = ["--listen", &http, "--udp", &udp, "--interval", "5"];
        let d = Daemon::builder("tracker")
            .args(args)
            .env("RUST_LOG", "warn")
            .expect_listening(2)
            .spawn()
            .expect("tracker starts");
        let http = d.addr_of("tcp", None).expect("tcp readiness");
        let udp = d.addr_of("udp", None).expect("udp readiness");
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

    /// The `/stats` row of one torrent (info-hash in hex), if the tracker holds it.
    fn torrent(&self, hash: &str) -> Option<serde_json::Value> {
        let v = self.stats();
        v["list"]
            .as_array()?
            .iter()
            .find(|r| r["info_hash"] == hash)
            .cloned()
    }

    fn announce_url(&self, udp: bool) -> String {
        if udp {
            format!("udp://{}/announce", self.udp)
        } else {
            format!("http://{}/announce", self.http)
        }
    }
}

/// How long a 1 MiB download through the tracker may take before the test gives up.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(45);
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
    data: Vec<u8>,
    /// Hex info-hash, as the tracker's `/stats` lists it.
    info_hash: String,
}

impl World {
    fn new(announce: &str, maker: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        // Distinct content per world, so every test has its own info-hash.
        static WORLDS: AtomicU16 = AtomicU16::new(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let seed_no = nanos
            ^ u64::from(std::process::id()) << 32
            ^ u64::from(WORLDS.fetch_add(1, Ordering::Relaxed));
        let data = payload(PAYLOAD_LEN, seed_no);
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
        let m = bittorrent_peer::metainfo::Metainfo::load(&torrent).expect("the .torrent parses");
        let info_hash = m.info_hash.0.iter().map(|b| format!("{b:02x}")).collect();
        World {
            dir,
            torrent,
            name,
            data,
            info_hash,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn seed_dir(&self) -> PathBuf {
        self.path("seed")
    }

    fn assert_same(&self, leech_dir: &Path) {
        let b = std::fs::read(leech_dir.join(&self.name)).unwrap();
        assert!(self.data == b, "downloaded file differs from the seed's");
    }

    fn aria2(&self, dir: &Path, seed: bool, udp: bool, log: &str) -> Proc {
        // aria2c takes a range and binds the first free port of it.
        let ports = PortBlock::of_process().take(4);
        let dht_file = self.path(&format!("{log}.dht"));
        let mut args: Vec<String> = vec![
            "-d".into(),
            dir.to_str().unwrap().into(),
            format!("--listen-port={}-{}", ports.start(), ports.end()),
            "--enable-peer-exchange=false".into(),
            "--bt-enable-lpd=false".into(),
            "--enable-dht6=false".into(),
            "--console-log-level=warn".into(),
            "--summary-interval=0".into(),
            "--file-allocation=none".into(),
        ];
        if udp {
            let dht = PortBlock::of_process().take(4);
            args.push("--enable-dht=true".into());
            args.push(format!("--dht-listen-port={}-{}", dht.start(), dht.end()));
            args.push(format!("--dht-file-path={}", dht_file.display()));
        } else {
            args.push("--enable-dht=false".into());
        }
        if seed {
            args.push("--seed-ratio=0.0".into());
            args.push("--check-integrity=true".into());
        } else {
            // With --seed-time=0 aria2c never sends `event=completed`, only `stopped` with left=0 as it
            // quits; seeding on after the download makes it announce the completion. The test stops it.
            args.push("--seed-time=1".into());
        }
        args.push(self.torrent.to_str().unwrap().into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn("aria2c", &a, &self.path(log), "aria2c")
    }

    /// libtorrent listening on `ip` port 0 (outgoing connections leave from `ip` too).
    fn libtorrent(&self, dir: &Path, seed: bool, ip: &str, log: &str) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tracker_lt_client.py");
        let timeout = DOWNLOAD_TIMEOUT.as_secs().to_string();
        let listen = format!("{ip}:0");
        let mode = if seed { "seed" } else { "leech" };
        let args = [
            script,
            self.torrent.to_str().unwrap(),
            dir.to_str().unwrap(),
            &timeout,
            mode,
            "--listen",
            &listen,
        ];
        spawn("/usr/bin/python3", &args, &self.path(log), "libtorrent")
    }

    /// transmission-cli on the torrent with `dir` as its download folder: on loopback (a seeder, on a
    /// port of this process's [`PortBlock`]) or inside `ns` (where its fixed port cannot collide with
    /// anything).
    fn transmission(&self, dir: &Path, ns: Option<&Netns>, log: &str) -> Proc {
        let cfg = self.path("trcfg");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("settings.json"),
            r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
                "port-forwarding-enabled": false, "rpc-enabled": false, "encryption": 1}"#,
        )
        .unwrap();
        let port = match ns {
            Some(_) => 51413,
            None => free_port(),
        }
        .to_string();
        let args = [
            "-g",
            cfg.to_str().unwrap(),
            "-w",
            dir.to_str().unwrap(),
            "-p",
            &port,
            self.torrent.to_str().unwrap(),
        ];
        let log = self.path(log);
        match ns {
            Some(ns) => {
                let args = ns.exec_args("transmission-cli", &args);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                spawn("ip", &args, &log, "transmission-cli")
            }
            None => spawn("transmission-cli", &args, &log, "transmission-cli"),
        }
    }

    /// Waits until a leecher's copy in `dir` equals the original (Transmission and aria2c keep running
    /// as seeders after).
    fn wait_for_copy(&self, dir: &Path, log: &str) {
        let path = dir.join(&self.name);
        let ok = eventually(DOWNLOAD_TIMEOUT, || {
            std::fs::read(&path).ok().as_deref() == Some(&self.data[..])
        });
        assert!(
            ok,
            "{} never matched the original within {DOWNLOAD_TIMEOUT:?}:\n{}",
            path.display(),
            std::fs::read_to_string(self.path(log)).unwrap_or_default()
        );
    }
}

/// Waits until the seeder has announced (the tracker lists the torrent with one seeder), so the leecher
/// finds it at once; nobody has completed a download yet.
fn wait_seeder(t: &Tracker, w: &World) {
    let mut row = None;
    let ok = eventually(Duration::from_secs(30), || {
        row = t.torrent(&w.info_hash);
        row.as_ref().is_some_and(|r| r["complete"] == 1)
    });
    assert!(ok, "the seeder never announced to the tracker: {row:?}");
    assert_eq!(row.unwrap()["downloaded"], 0);
}

/// The leecher's `event=completed` announce reached the tracker (`downloaded` went from 0 to exactly 1:
/// nothing else raises it, and a seeder's announces do not), over the transport under test.
fn completed_through(t: &Tracker, w: &World, udp: bool) {
    let mut row = None;
    let ok = eventually(Duration::from_secs(20), || {
        row = t.torrent(&w.info_hash);
        row.as_ref().is_some_and(|r| r["downloaded"] == 1)
    });
    assert!(ok, "the tracker never counted the download: {row:?}");
    let v = t.stats();
    assert_eq!(
        v["downloaded"], 1,
        "one completed download in all: {}",
        v["list"]
    );
    let connects = v["messages"]["connect"]["in_count"].as_u64().unwrap_or(0);
    if udp {
        assert!(
            connects >= 2,
            "both clients used BEP 15: {connects} connects"
        );
    } else {
        assert_eq!(connects, 0, "HTTP only");
    }
}

/// Once the seeder has announced, a libtorrent leecher downloads the file through the tracker.
fn libtorrent_leeches(t: &Tracker, w: &World, udp: bool) {
    wait_seeder(t, w);
    let leech = w.path("leech");
    std::fs::create_dir_all(&leech).unwrap();
    let mut l = w.libtorrent(&leech, false, "127.0.0.1", "lt-leech.log");
    l.wait_success(
        DOWNLOAD_TIMEOUT + Duration::from_secs(5),
        &w.path("lt-leech.log"),
    );
    w.assert_same(&leech);
    completed_through(t, w, udp);
}

fn aria2_seeds_libtorrent_leeches(udp: bool) {
    let t = Tracker::start("127.0.0.1");
    let w = World::new(&t.announce_url(udp), "mktorrent");
    let _seed = w.aria2(&w.seed_dir(), true, udp, "aria2-seed.log");
    libtorrent_leeches(&t, &w, udp);
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
    let t = Tracker::start("127.0.0.1");
    let w = World::new(&t.announce_url(true), "mktorrent");
    let _seed = w.libtorrent(&w.seed_dir(), true, "127.0.0.1", "lt-seed.log");
    wait_seeder(&t, &w);
    let leech = w.path("leech");
    let _l = w.aria2(&leech, false, true, "aria2-leech.log");
    w.wait_for_copy(&leech, "aria2-leech.log");
    completed_through(&t, &w, true);
}

#[test]
fn http_transmission_seeds_aria2_leeches() {
    let t = Tracker::start("127.0.0.1");
    let w = World::new(&t.announce_url(false), "transmission-create");
    let _seed = w.transmission(&w.seed_dir(), None, "transmission.log");
    wait_seeder(&t, &w);
    let leech = w.path("leech");
    let _l = w.aria2(&leech, false, false, "aria2-leech.log");
    w.wait_for_copy(&leech, "aria2-leech.log");
    completed_through(&t, &w, false);
}

#[test]
fn udp_transmission_seeds_libtorrent_leeches() {
    let t = Tracker::start("127.0.0.1");
    let w = World::new(&t.announce_url(true), "transmission-create");
    let _seed = w.transmission(&w.seed_dir(), None, "transmission.log");
    libtorrent_leeches(&t, &w, true);
}

/// Transmission leeches inside a namespace from a seeder on the host end of the veth pair, which it learns
/// of only from our tracker (also on the host end); it keeps running, so its entry must turn into a
/// seeder's too.
fn transmission_leeches_in_a_netns(udp: bool) {
    let ns = Netns::create().expect("a network namespace (needs root)");
    let host_ip = ns.host_ip().to_string();
    let t = Tracker::start(&host_ip);
    let w = World::new(&t.announce_url(udp), "mktorrent");
    // aria2c takes `udp://` trackers only with DHT on (module doc): libtorrent seeds for UDP.
    let _seed = if udp {
        w.libtorrent(&w.seed_dir(), true, &host_ip, "seed.log")
    } else {
        w.aria2(&w.seed_dir(), true, false, "seed.log")
    };
    wait_seeder(&t, &w);
    let out = w.path("tr-out");
    std::fs::create_dir_all(&out).unwrap();
    let _tr = w.transmission(&out, Some(&ns), "transmission.log");
    w.wait_for_copy(&out, "transmission.log");
    completed_through(&t, &w, udp);
    let mut row = None;
    let ok = eventually(Duration::from_secs(10), || {
        row = t.torrent(&w.info_hash);
        row.as_ref()
            .is_some_and(|r| r["complete"] == 2 && r["incomplete"] == 0)
    });
    assert!(ok, "Transmission is listed as a seeder: {row:?}");
}

#[test]
fn http_aria2_seeds_transmission_leeches_in_a_netns() {
    transmission_leeches_in_a_netns(false);
}

#[test]
fn udp_libtorrent_seeds_transmission_leeches_in_a_netns() {
    transmission_leeches_in_a_netns(true);
}
