//! Tracker load benchmark: our `tracker` against Debian's `opentracker`, same machine, same run.
//!
//! Each tracker runs pinned to CPU 0 (`taskset -c 0`); the load runs pinned to CPU 1: `wrk` for HTTP (a Lua
//! script cycling through pre-built announce URLs of many distinct info-hashes and peers) and, for UDP
//! (BEP 15), this program re-executed as a small load generator that keeps a window of announces in flight.
//! For each tracker it prints requests/s, requests per tracker CPU-second (utime+stime from /proc, the
//! figure that counts because the load generator saturates first), p50/p99 latency and peak RSS (VmHWM),
//! then the ratio ours/opentracker.
//!
//! ```text
//! cargo bench -p tracker --bench tracker_load
//! TRACKER_BENCH_SECS=10 TRACKER_BENCH_HASHES=20000 TRACKER_BENCH_CONNS=64 cargo bench -p tracker --bench tracker_load
//! ```
//!
//! `TRACKER_BENCH_OURS=/path/to/tracker` runs that binary as "ours" instead of this build's (to compare
//! against an older commit). The UDP load announces every peer of every swarm once, in order, before it
//! goes random, so the peak memory of runs that reach that many announces is comparable across runs
//! whatever the request rate.
//!
//! Debian's opentracker is built allow-list only: the bench writes every info-hash it uses to its whitelist.
//!
//! aquatic_udp (crates.io, version [`AQUATIC_VERSION`]) joins the UDP run: the bench uses `$AQUATIC_UDP` or
//! an `aquatic_udp` on the `PATH`, else `cargo install`s it once into `target/aquatic/` (a few minutes; set
//! `TRACKER_BENCH_NO_AQUATIC=1` to skip it). It runs with one socket worker, pinned like the others.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracker::codec::http::AnnounceRequest;
use tracker::codec::udp::{self, Request, Response};
use tracker::codec::{Event, InfoHash, PeerId};

/// Peers per torrent in the generated load (swarm size; replies carry up to this many minus one).
const PEERS_PER_HASH: usize = 20;
/// UDP announces in flight.
const UDP_WINDOW: usize = 128;
/// The aquatic_udp release the bench installs when none is at hand.
const AQUATIC_VERSION: &str = "0.9.0";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic PRNG (xorshift64*), so both trackers see the same request sequence.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn hash_of(i: usize) -> InfoHash {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let mut h = [0u8; 20];
    for c in h.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    InfoHash(h)
}

/// The `k`-th announce of the load: a random torrent, a random peer of its swarm, some seeders.
fn announce_of(rng: &mut Rng, hashes: usize) -> (InfoHash, PeerId, u16, u64) {
    let h = (rng.next() % hashes as u64) as usize;
    let p = (rng.next() % PEERS_PER_HASH as u64) as usize;
    swarm_peer(h, p)
}

/// Peer `k` of the whole load: swarm `k / PEERS_PER_HASH`, peer `k % PEERS_PER_HASH`.
fn peer_of(k: usize) -> (InfoHash, PeerId, u16, u64) {
    swarm_peer(k / PEERS_PER_HASH, k % PEERS_PER_HASH)
}

/// Peer `p` of swarm `h`: its id, port and bytes left.
fn swarm_peer(h: usize, p: usize) -> (InfoHash, PeerId, u16, u64) {
    let mut id = [b'-'; 20];
    id[..8].copy_from_slice(b"-BN0001-");
    id[8..16].copy_from_slice(&(h as u64).to_be_bytes());
    id[16..20].copy_from_slice(&(p as u32).to_be_bytes());
    let port = 10_000 + p as u16;
    let left = if p % 4 == 0 { 0 } else { 1000 };
    (hash_of(h), PeerId(id), port, left)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux for every architecture we run on.
    ticks as f64 / 100.0
}

/// Peak resident set (VmHWM) of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Target {
    name: &'static str,
    proc: Killed,
    http: SocketAddr,
    udp: SocketAddr,
}

fn start_ours(hashes: usize) -> Target {
    let _ = hashes;
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(std::env::var_os("TRACKER_BENCH_OURS").unwrap_or(env!("CARGO_BIN_EXE_tracker").into()))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("taskset and the tracker binary");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut http, mut udp) = (None, None);
    for line in out.lines().map_while(Result::ok) {
        if let Some(l) = common::telemetry::Listening::parse(&line) {
            match l.proto.as_str() {
                "tcp" => http = Some(l.addr),
                _ => udp = Some(l.addr),
            }
        }
        if http.is_some() && udp.is_some() {
            break;
        }
    }
    Target {
        name: "tracker (ours)",
        proc: Killed(child),
        http: http.expect("http readiness"),
        udp: udp.expect("udp readiness"),
    }
}

fn start_opentracker(dir: &Path, hashes: usize) -> Target {
    let mut wl = String::new();
    for i in 0..hashes {
        wl.push_str(&hash_of(i).to_string());
        wl.push('\n');
    }
    std::fs::write(dir.join("whitelist.txt"), wl).unwrap();
    let port = free_port();
    let child = Command::new("taskset")
        .args(["-c", "0", "opentracker", "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-P", &port.to_string()])
        // opentracker chroots into -d before reading the whitelist: the path is relative to it.
        .args(["-d", dir.to_str().unwrap(), "-w", "/whitelist.txt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("opentracker (apt-get install opentracker)");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "opentracker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it read the whitelist (it loads it in a background thread).
    std::thread::sleep(Duration::from_millis(500));
    Target {
        name: "opentracker",
        proc: Killed(child),
        http: addr,
        udp: addr,
    }
}

/// Finds aquatic_udp, installing it into `target/aquatic/` when needed; `Err` says why it is not there.
fn aquatic_binary() -> Result<std::path::PathBuf, String> {
    if std::env::var_os("TRACKER_BENCH_NO_AQUATIC").is_some() {
        return Err("skipped (TRACKER_BENCH_NO_AQUATIC)".into());
    }
    if let Some(p) = std::env::var_os("AQUATIC_UDP") {
        return Ok(p.into());
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("aquatic_udp"))
            .find(|p| p.exists())
    }) {
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/aquatic");
    let bin = root.join("bin/aquatic_udp");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "installing aquatic_udp {AQUATIC_VERSION} into {} (once)...",
        root.display()
    );
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "--quiet",
            "aquatic_udp",
            "--version",
            AQUATIC_VERSION,
            "--root",
        ])
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !out.status.success() || !bin.exists() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("cargo install aquatic_udp failed: {last}"));
    }
    Ok(bin)
}

fn start_aquatic(dir: &Path, bin: &Path) -> Target {
    let port = free_port();
    let cfg = dir.join("aquatic.toml");
    std::fs::write(
        &cfg,
        format!(
            "socket_workers = 1\nlog_level = \"error\"\n[network]\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("aquatic_udp starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Ready once it answers a BEP 15 connect.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pkt = Vec::new();
    Request::Connect { transaction_id: 5 }.encode(&mut pkt);
    let mut buf = [0u8; 64];
    loop {
        assert!(Instant::now() < deadline, "aquatic_udp did not start");
        let _ = probe.send_to(&pkt, addr);
        if probe.recv(&mut buf).is_ok() {
            break;
        }
    }
    Target {
        name: "aquatic_udp",
        proc: Killed(child),
        http: addr,
        udp: addr,
    }
}

struct Figures {
    requests: u64,
    secs: f64,
    cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_kib: u64,
    errors: u64,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn per_cpu(&self) -> f64 {
        self.requests as f64 / self.cpu.max(0.01)
    }
}

fn write_wrk_files(dir: &Path, hashes: usize, close: bool) -> (String, String) {
    let mut rng = Rng(42);
    let mut paths = String::new();
    for _ in 0..100_000 {
        let (h, p, port, left) = announce_of(&mut rng, hashes);
        let a = AnnounceRequest {
            info_hash: h,
            peer_id: p,
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event: Event::None,
            numwant: None,
            compact: true,
            no_peer_id: false,
            ip: None,
            key: None,
            trackerid: None,
        };
        paths.push_str("/announce?");
        a.write_query(&mut paths);
        paths.push('\n');
    }
    let pf = dir.join("paths.txt");
    std::fs::write(&pf, paths).unwrap();
    let headers = if close {
        r#"{["Connection"] = "close"}"#
    } else {
        "{}"
    };
    let script = format!(
        r#"
local paths = {{}}
local n = 0
local i = 0
function init(args)
  for line in io.lines(args[1]) do n = n + 1; paths[n] = line end
  i = math.random(n)
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", paths[i], {headers})
end
"#
    );
    let sf = dir.join("announce.lua");
    std::fs::write(&sf, script).unwrap();
    (
        sf.to_str().unwrap().to_owned(),
        pf.to_str().unwrap().to_owned(),
    )
}

fn parse_ms(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => f64::NAN,
    }
}

fn run_wrk(t: &Target, script: &str, paths: &str, secs: u64, conns: u64) -> Figures {
    let pid = t.proc.0.id();
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "--latency"])
        .args(["-c", &conns.to_string(), "-d", &format!("{secs}s")])
        .args(["-s", script, &format!("http://{}/", t.http), "--", paths])
        .output()
        .expect("wrk (apt-get install wrk)");
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut f = Figures {
        requests: 0,
        secs: elapsed.min(secs as f64 + 0.5).max(secs as f64),
        cpu,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        rss_kib: peak_rss_kib(pid),
        errors: 0,
    };
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => f.p50_ms = parse_ms(v),
            ["99%", v] => f.p99_ms = parse_ms(v),
            [n, "requests", "in", ..] => f.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                f.errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => f.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if f.requests == 0 {
        eprintln!(
            "wrk output:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    f
}

/// The UDP load generator (runs in a child process pinned to CPU 1). Prints one line:
/// `requests errors p50_us p99_us elapsed_secs`.
fn udp_load(target: SocketAddr, secs: u64, hashes: usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(target).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let connect = |sock: &UdpSocket, buf: &mut [u8]| -> u64 {
        for _ in 0..50 {
            let mut p = Vec::new();
            Request::Connect { transaction_id: 1 }.encode(&mut p);
            sock.send(&p).unwrap();
            if let Ok(n) = sock.recv(buf) {
                if let Some(Response::Connect { connection_id, .. }) =
                    Response::decode(&buf[..n], false)
                {
                    return connection_id;
                }
            }
        }
        panic!("no connect reply from {target}");
    };
    let mut cid = connect(&sock, &mut buf);
    let mut connected_at = Instant::now();
    let mut rng = Rng(7);
    const RING: usize = 1 << 16;
    let mut sent_at = vec![None::<Instant>; RING];
    let mut lat_us: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut tid: u32 = 0;
    let mut pkt = Vec::with_capacity(128);
    // Every peer once, in order, then random: the table is full after this many, whatever the rate.
    let fill = hashes * PEERS_PER_HASH;
    let mut k = 0usize;
    let mut send = |sock: &UdpSocket, cid: u64, tid: &mut u32, sent_at: &mut [Option<Instant>]| {
        let (h, p, port, left) = if k < fill {
            k += 1;
            peer_of(k - 1)
        } else {
            announce_of(&mut rng, hashes)
        };
        *tid = tid.wrapping_add(1);
        pkt.clear();
        Request::Announce(udp::AnnounceRequest {
            connection_id: cid,
            transaction_id: *tid,
            info_hash: h,
            peer_id: p,
            downloaded: 0,
            left,
            uploaded: 0,
            event: Event::None,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            key: 0,
            num_want: -1,
            port,
        })
        .encode(&mut pkt);
        sent_at[*tid as usize % RING] = Some(Instant::now());
        let _ = sock.send(&pkt);
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let (mut ok, mut errors) = (0u64, 0u64);
    for _ in 0..UDP_WINDOW {
        send(&sock, cid, &mut tid, &mut sent_at);
    }
    while Instant::now() < deadline {
        if connected_at.elapsed() > Duration::from_secs(30) {
            cid = connect(&sock, &mut buf);
            connected_at = Instant::now();
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                if n >= 8 {
                    let t = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                    let action = u32::from_be_bytes(buf[0..4].try_into().unwrap());
                    if action == udp::ACTION_ANNOUNCE {
                        ok += 1;
                        if let Some(s) = sent_at[t as usize % RING].take() {
                            lat_us.push(s.elapsed().as_micros() as u32);
                        }
                    } else {
                        errors += 1;
                    }
                }
                send(&sock, cid, &mut tid, &mut sent_at);
            }
            Err(_) => {
                // Lost packets: refill the window.
                for _ in 0..UDP_WINDOW {
                    send(&sock, cid, &mut tid, &mut sent_at);
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let pct = |p: f64| {
        lat_us
            .get(((lat_us.len() as f64 * p) as usize).min(lat_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!("{ok} {errors} {} {} {elapsed}", pct(0.5), pct(0.99));
}

fn run_udp(t: &Target, secs: u64, hashes: usize) -> Figures {
    let pid = t.proc.0.id();
    let cpu0 = cpu_secs(pid);
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--udp-load",
            &t.udp.to_string(),
            &secs.to_string(),
            &hashes.to_string(),
        ])
        .output()
        .expect("re-executing the bench as the UDP load generator");
    let cpu = cpu_secs(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let w: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if w.len() != 5 {
        eprintln!(
            "udp load generator output: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Figures {
            requests: 0,
            secs: 1.0,
            cpu,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            rss_kib: peak_rss_kib(pid),
            errors: 0,
        };
    }
    Figures {
        requests: w[0] as u64,
        errors: w[1] as u64,
        p50_ms: w[2] / 1000.0,
        p99_ms: w[3] / 1000.0,
        secs: w[4],
        cpu,
        rss_kib: peak_rss_kib(pid),
    }
}

fn print_row(proto: &str, name: &str, f: &Figures) {
    println!(
        "{proto:<14} {name:<16} {:>10.0} {:>12.0} {:>6.2} {:>8.3} {:>8.3} {:>9} {:>7}",
        f.rps(),
        f.per_cpu(),
        f.cpu,
        f.p50_ms,
        f.p99_ms,
        f.rss_kib,
        f.errors
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--udp-load") {
        let target: SocketAddr = args[i + 1].parse().unwrap();
        udp_load(
            target,
            args[i + 2].parse().unwrap(),
            args[i + 3].parse().unwrap(),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let secs = env_or("TRACKER_BENCH_SECS", 5);
    let hashes = env_or("TRACKER_BENCH_HASHES", 10_000) as usize;
    let conns = env_or("TRACKER_BENCH_CONNS", 64);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "tracker load: {secs} s per run, {hashes} info-hashes x {PEERS_PER_HASH} peers, tracker on CPU 0, load on CPU 1"
    );
    println!(
        "{:<14} {:<16} {:>10} {:>12} {:>6} {:>8} {:>8} {:>9} {:>7}",
        "load", "tracker", "req/s", "req/CPU-s", "CPU-s", "p50 ms", "p99 ms", "peak KiB", "errors"
    );
    let mut results: Vec<(String, &'static str, Figures)> = Vec::new();
    for (label, close) in [("http close", true), ("http keepalive", false)] {
        let (script, paths) = write_wrk_files(dir.path(), hashes, close);
        for which in ["ours", "opentracker"] {
            let t = if which == "ours" {
                start_ours(hashes)
            } else {
                start_opentracker(dir.path(), hashes)
            };
            let f = run_wrk(&t, &script, &paths, secs, conns);
            print_row(label, t.name, &f);
            results.push((label.to_owned(), t.name, f));
        }
    }
    let aquatic = aquatic_binary();
    if let Err(why) = &aquatic {
        println!("aquatic_udp not run: {why}");
    }
    for which in ["ours", "opentracker", "aquatic_udp"] {
        let t = match which {
            "ours" => start_ours(hashes),
            "opentracker" => start_opentracker(dir.path(), hashes),
            _ => match &aquatic {
                Ok(bin) => start_aquatic(dir.path(), bin),
                Err(_) => continue,
            },
        };
        let f = run_udp(&t, secs, hashes);
        print_row("udp", t.name, &f);
        results.push(("udp".to_owned(), t.name, f));
    }
    println!();
    for label in ["http close", "http keepalive", "udp"] {
        let get = |n: &str| {
            results
                .iter()
                .find(|(l, name, _)| l == label && *name == n)
                .map(|x| &x.2)
        };
        if let (Some(o), Some(r)) = (get("tracker (ours)"), get("opentracker")) {
            println!(
                "{label:<14} ours/opentracker: req/CPU-s x{:.2}, req/s x{:.2}, peak memory x{:.2}",
                o.per_cpu() / r.per_cpu(),
                o.rps() / r.rps(),
                o.rss_kib as f64 / r.rss_kib.max(1) as f64
            );
        }
        if let (Some(o), Some(r)) = (get("tracker (ours)"), get("aquatic_udp")) {
            println!(
                "{label:<14} ours/aquatic_udp: req/CPU-s x{:.2}, req/s x{:.2}, peak memory x{:.2}",
                o.per_cpu() / r.per_cpu(),
                o.rps() / r.rps(),
                o.rss_kib as f64 / r.rss_kib.max(1) as f64
            );
        }
    }
    let _ = std::io::stdout().flush();
}
