//! Issue 7's transfer benchmark, on loopback, every client in the same run:
//!
//! 1. one seeder (pinned to core 0 with `taskset`) to one leecher (pinned to core 1) for ours, rqbit,
//!    libtorrent (python3-libtorrent) and aria2c, for each payload size;
//! 2. a flash crowd: one seeder to N leechers at once (ours and rqbit), every leecher told the seeder and
//!    the leechers started before it, each exiting when its download is verified.
//!
//! Prints MB/s, wall time (leecher start to exit: start-up, handshakes, transfer, SHA-1, flush), the
//! leecher's CPU time (also per GiB) and peak RSS (GNU `time`), the seeder's CPU time during the
//! transfer (`/proc/PID/stat`), ratios to ours, and the one-core SHA-1 rate of this machine (the
//! ceiling of any BitTorrent leecher: every byte is hashed once). Flash-crowd rows add the leechers'
//! CPU time (sum and largest), their largest peak RSS and the seeder's CPU time.
//!
//! Environment: `BT_BENCH_SIZES_MB` (default `4,256`; the issue's figures use `4,1024`),
//! `BT_BENCH_CROWD` leechers (default 8) of `BT_BENCH_CROWD_MB` (default 64; the issue: 256),
//! `BT_BENCH_CLIENTS` (default `ours,rqbit,libtorrent,aria2c`), `BT_BENCH_RUNS` runs per pair (default 1;
//! the best is kept; payloads up to 16 MiB get at least 5), `RQBIT` = path of an rqbit binary (`cargo install rqbit --root DIR`; without it rqbit
//! is reported as not run). Run: `cargo bench -p bittorrent-peer --bench transfer`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::{run_program, Daemon};
use sha1::{Digest, Sha1};

/// Our binary, built with the bench profile next to this benchmark.
const BIN: &str = env!("CARGO_BIN_EXE_bittorrent-peer");
/// Piece size of every torrent (the common default of real clients).
const PIECE: u64 = 256 << 10;
/// Longest a single download may take before the run counts as failed.
const LIMIT: Duration = Duration::from_secs(900);

const LT: &str = r#"
import sys, time
import libtorrent as lt
mode, torrent, path, port = sys.argv[1:5]
peers = sys.argv[5:]
ses = lt.session({'listen_interfaces': '127.0.0.1:%s' % port, 'enable_dht': False, 'enable_lsd': False,
    'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True,
    'enable_outgoing_utp': False, 'enable_incoming_utp': False, 'alert_mask': 0})
atp = lt.add_torrent_params(); atp.ti = lt.torrent_info(torrent); atp.save_path = path
if mode == 'seed':
    atp.flags |= lt.torrent_flags.seed_mode
h = ses.add_torrent(atp)
while True:
    for p in peers:
        host, pp = p.rsplit(':', 1); h.connect_peer((host, int(pp)))
    if mode == 'leech' and h.status().is_seeding:
        sys.exit(0)
    time.sleep(0.01 if mode == 'leech' else 0.5)
"#;

#[derive(Clone, Copy)]
struct Measure {
    secs: f64,
    cpu: f64,
    rss_kib: u64,
    /// CPU seconds the seeder used while the leecher ran.
    seeder_cpu: f64,
}

/// A flash crowd: time until the last leecher exits, the leechers' CPU (sum and largest), their
/// largest peak RSS, and the seeder's CPU during the run.
#[derive(Clone, Copy)]
struct Crowd {
    secs: f64,
    cpu_sum: f64,
    cpu_max: f64,
    rss_max_kib: u64,
    seeder_cpu: f64,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn free_port() -> String {
    integration::free_port().to_string()
}

/// Writes `len` deterministic pseudo-random bytes (xorshift) without holding them in memory (1 GiB
/// payloads: `integration::payload` builds them in a `Vec`).
fn write_payload(path: &Path, len: usize, seed: u64) {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).expect("create payload"));
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(chunk.len());
        w.write_all(&chunk[..n]).expect("write payload");
        left -= n;
    }
    w.flush().expect("flush payload");
}

/// Whether two files hold the same bytes (read in chunks: the payloads can be larger than RAM allows).
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap_or(0);
        let mut nb = 0;
        while nb < na {
            match fb.read(&mut bb[nb..na]) {
                Ok(0) | Err(_) => return false,
                Ok(k) => nb += k,
            }
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).map(|n| n == 0).unwrap_or(false);
        }
    }
}

fn make_torrent(content: &Path, out: &Path, tracker: &str) {
    let o = Command::new(BIN)
        .arg("create")
        .arg(content)
        .arg("-o")
        .arg(out)
        .args(["--piece-size", &PIECE.to_string()])
        .args(["--tracker", tracker])
        .output()
        .expect("run create");
    assert!(
        o.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A program pinned to `core`, as a background daemon (killed with its process group on drop).
/// `ready`: wait for our readiness line and return the address it names.
fn daemon(core: Option<u32>, prog: &str, args: &[String], ready: bool) -> Daemon {
    let mut all = Vec::new();
    let launcher = match core {
        Some(c) => {
            all.extend(s(&["-c", &c.to_string(), prog]));
            "taskset"
        }
        None => prog,
    };
    all.extend(args.iter().cloned());
    Daemon::builder_path(launcher)
        .args(all)
        .expect_listening(usize::from(ready))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {prog}: {e:#}"))
}

/// Runs `prog` to completion pinned to `core` under GNU `time`.
fn timed(core: Option<u32>, prog: &str, args: &[String]) -> Option<Measure> {
    let dir = tempfile::tempdir().expect("tempdir");
    let tf = dir.path().join("time.txt");
    let mut all = Vec::new();
    if let Some(c) = core {
        all.extend(s(&["-c", &c.to_string()]));
        all.push("/usr/bin/time".into());
    }
    all.extend(s(&[
        "-f",
        "%U %S %M",
        "-o",
        tf.to_str().expect("utf-8 path"),
        prog,
    ]));
    all.extend(args.iter().cloned());
    let launcher = if core.is_some() {
        "taskset"
    } else {
        "/usr/bin/time"
    };
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = run_program(Path::new(launcher), &refs, LIMIT).ok()?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "  {prog} failed ({}): {}",
            out.status,
            err.lines().last().unwrap_or("")
        );
        return None;
    }
    let (cpu, rss_kib) = time_report(&tf)?;
    Some(Measure {
        secs,
        cpu,
        rss_kib,
        seeder_cpu: 0.0,
    })
}

/// CPU seconds (user + system) and peak RSS (KiB) from a GNU `time -f "%U %S %M"` report (the last
/// three fields: a child killed by a signal adds a line before them).
fn time_report(path: &Path) -> Option<(f64, u64)> {
    let t = std::fs::read_to_string(path).ok()?;
    let f: Vec<&str> = t.split_whitespace().collect();
    let n = f.len();
    if n < 3 {
        return None;
    }
    Some((
        f[n - 3].parse::<f64>().ok()? + f[n - 2].parse::<f64>().ok()?,
        f[n - 1].parse().ok()?,
    ))
}

/// CPU seconds (user + system) a running process has used so far, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 on every architecture it exports.
    Some(ticks / 100.0)
}

fn aria_common() -> Vec<String> {
    s(&[
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=error",
        "--file-allocation=none",
        "--quiet=true",
    ])
}

fn rqbit_common(q: &str, port: &str) -> Vec<String> {
    s(&[
        q,
        "-s",
        "--disable-dht",
        "--disable-dht-persistence",
        "--disable-lsd",
        "--disable-upnp-port-forward",
        "--disable-trackers",
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        port,
        "--announce-port",
        port,
    ])
}

/// Seeds `torrent` from `src` with `client`, pinned to `core`; returns the seeder and its address.
fn seeder(client: &str, core: Option<u32>, torrent: &str, src: &str) -> (Daemon, String) {
    match client {
        "ours" => {
            let d = daemon(
                core,
                BIN,
                &s(&[
                    "seed",
                    torrent,
                    "--dir",
                    src,
                    "--listen",
                    "127.0.0.1:0",
                    "--quiet",
                    "--no-trackers",
                ]),
                true,
            );
            let a = d.addr().to_string();
            (d, a)
        }
        "rqbit" => {
            let port = free_port();
            let q = rqbit_path().expect("checked by the caller");
            let mut a = rqbit_common(&q, &port);
            a.extend(s(&[
                "download",
                "-o",
                src,
                "--overwrite",
                "--disable-http-api",
                torrent,
            ]));
            let d = daemon(core, &a[0], &a[1..], false);
            (d, format!("127.0.0.1:{port}"))
        }
        "libtorrent" => {
            let port = free_port();
            let d = daemon(
                core,
                "/usr/bin/python3",
                &s(&["-c", LT, "seed", torrent, src, &port]),
                false,
            );
            (d, format!("127.0.0.1:{port}"))
        }
        "aria2c" => {
            let port = free_port();
            let mut a = aria_common();
            a.extend(s(&[
                "--dir",
                src,
                "--check-integrity=true",
                "--seed-ratio=0.0",
                "--listen-port",
                &port,
                torrent,
            ]));
            let d = daemon(core, "aria2c", &a, false);
            (d, format!("127.0.0.1:{port}"))
        }
        _ => unreachable!("unknown client {client}"),
    }
}

/// Waits until the reference client seeding on `addr` can serve. They print no readiness line, and
/// rqbit and aria2c accept connections before their file check ends (a leecher arriving then is told
/// they have nothing and waits ~30 s to retry): after the port accepts, give them the check time
/// measured by hand on this machine (rqbit about 250 MB/s, aria2c about 350 MB/s), with a margin.
fn wait_seeder_ready(client: &str, addr: &str, size_mb: usize) {
    let end = Instant::now() + Duration::from_secs(60 + size_mb as u64 / 10);
    while Instant::now() < end && std::net::TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let check_ms = match client {
        "rqbit" => 1000 + size_mb as u64 * 4,
        "aria2c" => 300 + size_mb as u64 * 3,
        _ => 0,
    };
    std::thread::sleep(Duration::from_millis(check_ms));
}

/// The leecher command of `client`: download `torrent` into `out` from `peers`, listening on `port`,
/// exiting once verified.
fn leecher_cmd(
    client: &str,
    torrent: &str,
    out: &str,
    port: &str,
    peers: &[String],
) -> Vec<String> {
    match client {
        "ours" => {
            let mut a = s(&[
                BIN,
                "download",
                torrent,
                "--out",
                out,
                "--no-trackers",
                "--quiet",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ]);
            for p in peers {
                a.extend(s(&["--peer", p]));
            }
            a
        }
        "rqbit" => {
            let q = rqbit_path().expect("checked by the caller");
            let mut a = rqbit_common(&q, port);
            a.extend(s(&[
                "download",
                "-o",
                out,
                "--overwrite",
                "-e",
                "--disable-http-api",
                "--initial-peers",
                &peers.join(","),
                torrent,
            ]));
            a
        }
        "libtorrent" => {
            let mut a = s(&["/usr/bin/python3", "-c", LT, "leech", torrent, out, port]);
            a.extend(peers.iter().cloned());
            a
        }
        "aria2c" => {
            let mut a = vec!["aria2c".to_string()];
            a.extend(aria_common());
            a.extend(s(&[
                "--dir",
                out,
                "--seed-time=0",
                "--listen-port",
                port,
                "--bt-tracker-interval=1",
                torrent,
            ]));
            a
        }
        _ => unreachable!("unknown client {client}"),
    }
}

fn rqbit_path() -> Option<String> {
    std::env::var("RQBIT")
        .ok()
        .filter(|p| Path::new(p).exists())
}

/// One seeder (core 0) to one leecher (core 1).
fn run_pair(client: &str, work: &Path, size_mb: usize) -> Option<Measure> {
    let src = work.join(format!("src-{size_mb}"));
    let torrent = work.join(format!("b{size_mb}.torrent"));
    let ts = torrent.to_str()?.to_owned();
    let out = work.join(format!("out-{client}-{size_mb}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).ok()?;
    let (seed, addr) = seeder(client, Some(0), &ts, src.to_str()?);
    if client != "ours" {
        wait_seeder_ready(client, &addr, size_mb);
    }
    let cmd = leecher_cmd(client, &ts, out.to_str()?, &free_port(), &[addr]);
    let seeder_before = proc_cpu(seed.pid()).unwrap_or(0.0);
    let m = timed(Some(1), &cmd[0], &cmd[1..]).map(|m| Measure {
        seeder_cpu: proc_cpu(seed.pid()).unwrap_or(0.0) - seeder_before,
        ..m
    });
    let ok = same_file(&out.join("data.bin"), &src.join("data.bin"));
    let _ = std::fs::remove_dir_all(&out);
    if !ok {
        eprintln!("  {client}: downloaded bytes differ from the original!");
        return None;
    }
    m
}

/// One seeder to `n` leechers started together (no pinning: they share both cores), each leecher under
/// GNU `time`.
fn run_crowd(client: &str, work: &Path, n: usize, size_mb: usize) -> Option<Crowd> {
    let src = work.join("crowd");
    let torrent = work.join("crowd.torrent");
    let ts = torrent.to_str()?.to_owned();
    let (seed, addr) = seeder(client, None, &ts, src.to_str()?);
    if client != "ours" {
        wait_seeder_ready(client, &addr, size_mb);
    }
    let ports: Vec<String> = (0..n).map(|_| free_port()).collect();
    let seeder_before = proc_cpu(seed.pid()).unwrap_or(0.0);
    let start = Instant::now();
    let mut kids = Vec::new();
    for i in 0..n {
        let out = work.join(format!("crowd-{client}-{i}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).ok()?;
        let mut peers = vec![addr.clone()];
        peers.extend(ports[..i].iter().map(|p| format!("127.0.0.1:{p}")));
        let cmd = leecher_cmd(client, &ts, out.to_str()?, &ports[i], &peers);
        let report = work.join(format!("crowd-time-{client}-{i}.txt"));
        let child = {
            let report = report.clone();
            std::thread::spawn(move || {
                let mut args = s(&["-f", "%U %S %M", "-o", report.to_str().unwrap_or("")]);
                args.extend(cmd);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                run_program(Path::new("/usr/bin/time"), &refs, LIMIT)
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            })
        };
        kids.push((child, out, report));
    }
    let mut ok = true;
    let mut outs = Vec::new();
    let (mut cpu_sum, mut cpu_max, mut rss_max_kib) = (0.0f64, 0.0f64, 0u64);
    for (child, out, report) in kids {
        ok &= child.join().unwrap_or(false);
        outs.push(out);
        match time_report(&report) {
            Some((cpu, rss)) => {
                cpu_sum += cpu;
                cpu_max = cpu_max.max(cpu);
                rss_max_kib = rss_max_kib.max(rss);
            }
            None => ok = false,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let seeder_cpu = proc_cpu(seed.pid()).unwrap_or(0.0) - seeder_before;
    for out in outs {
        if !same_file(&out.join("data.bin"), &src.join("data.bin")) {
            eprintln!("  {client}: {} differs from the original", out.display());
            ok = false;
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    ok.then_some(Crowd {
        secs,
        cpu_sum,
        cpu_max,
        rss_max_kib,
        seeder_cpu,
    })
}

/// One-core SHA-1 rate of this machine in MB/s (the same `sha1` crate as the peer, SHA-NI when present).
fn sha1_rate() -> f64 {
    let buf = vec![0x5au8; 64 << 20];
    let start = Instant::now();
    let mut total = 0usize;
    let mut d = [0u8; 20];
    while start.elapsed() < Duration::from_millis(700) {
        d = Sha1::digest(&buf).into();
        total += buf.len();
    }
    std::hint::black_box(d);
    total as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BT_BENCH_SIZES_MB")
        .unwrap_or_else(|_| "4,256".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let clients: Vec<String> = std::env::var("BT_BENCH_CLIENTS")
        .unwrap_or_else(|_| "ours,rqbit,libtorrent,aria2c".into())
        .split(',')
        .map(|x| x.trim().to_owned())
        .filter(|c| {
            c != "rqbit" || rqbit_path().is_some() || {
                println!(
                    "rqbit: not run (set RQBIT to an rqbit binary: cargo install rqbit --root DIR)"
                );
                false
            }
        })
        .collect();
    let runs: usize = env_or("BT_BENCH_RUNS", 1).max(1);
    let work = tempfile::tempdir().expect("tempdir");
    // aria2c cannot be given a peer address: it finds the seeder through the workspace's tracker, which
    // every torrent names (ours, rqbit and libtorrent are told the seeder directly and skip it).
    let tracker = Daemon::spawn("tracker", &["--listen", "127.0.0.1:0", "--interval", "1"])
        .expect("start the workspace tracker");
    let tracker_url = format!("http://{}/announce", tracker.addr());
    let sha = sha1_rate();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bittorrent-peer transfer benchmark (loopback; load average at start: {})",
        load.trim()
    );
    println!(
        "one-core SHA-1 on this machine: {sha:.0} MB/s (the ceiling of a leecher's throughput)"
    );
    for &mb in &sizes {
        let src = work.path().join(format!("src-{mb}"));
        std::fs::create_dir_all(&src).expect("mkdir");
        write_payload(&src.join("data.bin"), mb << 20, mb as u64);
        make_torrent(
            &src.join("data.bin"),
            &work.path().join(format!("b{mb}.torrent")),
            &tracker_url,
        );
        let runs = if mb <= 16 { runs.max(5) } else { runs };
        println!(
            "\n{mb} MiB payload, 256 KiB pieces: seeder on core 0 -> leecher on core 1 (best of {runs})"
        );
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>10} {:>14} {:>10} {:>10} {:>10}",
            "client",
            "MB/s",
            "wall s",
            "CPU s",
            "peak RSS",
            "ours faster by",
            "SHA-1 use",
            "CPU s/GiB",
            "seeder CPU"
        );
        let mut ours: Option<Measure> = None;
        for client in &clients {
            let best = (0..runs)
                .filter_map(|_| run_pair(client, work.path(), mb))
                .min_by(|a, b| a.secs.total_cmp(&b.secs));
            match best {
                Some(m) => {
                    if client == "ours" {
                        ours = Some(m);
                    }
                    let rate = (mb << 20) as f64 / m.secs / 1e6;
                    println!(
                        "{:<12} {:>9.1} {:>9.3} {:>9.3} {:>6} MiB {:>14} {:>9.0}% {:>10.3} {:>10.3}",
                        client,
                        rate,
                        m.secs,
                        m.cpu,
                        m.rss_kib / 1024,
                        ours.map(|o| format!("{:.2}x", m.secs / o.secs))
                            .unwrap_or_default(),
                        100.0 * rate / sha,
                        m.cpu * 1024.0 / mb as f64,
                        m.seeder_cpu
                    );
                }
                None => println!("{client:<12} not measured"),
            }
        }
        let _ = std::fs::remove_dir_all(&src);
    }
    let n: usize = env_or("BT_BENCH_CROWD", 8);
    let mb: usize = env_or("BT_BENCH_CROWD_MB", 64);
    if n == 0 {
        return;
    }
    let src = work.path().join("crowd");
    std::fs::create_dir_all(&src).expect("mkdir");
    write_payload(&src.join("data.bin"), mb << 20, 99);
    make_torrent(
        &src.join("data.bin"),
        &work.path().join("crowd.torrent"),
        &tracker_url,
    );
    println!("\nflash crowd: 1 seeder -> {n} leechers x {mb} MiB started together, each exiting once verified");
    println!(
        "{:<12} {:>9} {:>16} {:>14} {:>13} {:>13} {:>14} {:>10}",
        "client",
        "wall s",
        "aggregate MB/s",
        "ours faster by",
        "leech CPU sum",
        "leech CPU max",
        "leech peak RSS",
        "seeder CPU"
    );
    let mut ours = None;
    for client in clients.iter().filter(|c| *c == "ours" || *c == "rqbit") {
        let best = (0..runs)
            .filter_map(|_| run_crowd(client, work.path(), n, mb))
            .min_by(|a, b| a.secs.total_cmp(&b.secs));
        match best {
            Some(c) => {
                if client == "ours" {
                    ours = Some(c.secs);
                }
                println!(
                    "{:<12} {:>9.2} {:>16.1} {:>14} {:>13.2} {:>13.2} {:>10} MiB {:>10.2}",
                    client,
                    c.secs,
                    (n * (mb << 20)) as f64 / c.secs / 1e6,
                    ours.map(|o| format!("{:.2}x", c.secs / o))
                        .unwrap_or_default(),
                    c.cpu_sum,
                    c.cpu_max,
                    c.rss_max_kib / 1024,
                    c.seeder_cpu
                );
            }
            None => println!("{client:<12} failed"),
        }
    }
}
