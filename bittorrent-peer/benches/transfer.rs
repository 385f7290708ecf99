//! One seeder to one leecher on loopback, each pinned to its own core (`taskset`), for our peer and the
//! reference clients, in the same run: aria2c, libtorrent (python3-libtorrent), and rqbit when an `rqbit`
//! binary is found (`$RQBIT`, or `cargo install rqbit --root DIR` and `RQBIT=DIR/bin/rqbit`). Then one
//! seeder to N leechers (flash crowd) for ours.
//!
//! Prints MB/s, wall time, leecher CPU time and leecher peak RSS (GNU `time -f`), and ratios to ours.
//! Sizes: `BT_BENCH_SIZES_MB` (default `4,256`), crowd: `BT_BENCH_CROWD` leechers (default 8) of
//! `BT_BENCH_CROWD_MB` (default 64). Run: `cargo bench -p bittorrent-peer --bench transfer`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

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

struct Measure {
    secs: f64,
    cpu: f64,
    rss_kib: u64,
}

/// Runs `cmd` under `taskset -c core /usr/bin/time`, waits up to `limit`.
fn timed(core: u32, prog: &str, args: &[String], limit: Duration) -> Option<Measure> {
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("time.txt");
    let mut c = Command::new("taskset");
    c.args([
        "-c",
        &core.to_string(),
        "/usr/bin/time",
        "-f",
        "%U %S %M",
        "-o",
    ])
    .arg(&tf)
    .arg(prog)
    .args(args);
    let start = Instant::now();
    let mut p = Proc::spawn(c, prog, false);
    let end = start + limit;
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            let secs = start.elapsed().as_secs_f64();
            if !s.success() {
                eprintln!("  {prog} failed: {s}");
                return None;
            }
            let t = std::fs::read_to_string(&tf).unwrap_or_default();
            let f: Vec<&str> = t.split_whitespace().collect();
            let n = f.len();
            if n < 3 {
                return None;
            }
            return Some(Measure {
                secs,
                cpu: f[n - 3].parse::<f64>().unwrap_or(0.0)
                    + f[n - 2].parse::<f64>().unwrap_or(0.0),
                rss_kib: f[n - 1].parse().unwrap_or(0),
            });
        }
        if Instant::now() > end {
            eprintln!("  {prog} timed out");
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pinned(core: u32, prog: &str, args: &[String]) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &core.to_string(), prog]).args(args);
    c
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
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

fn run_pair(client: &str, size_mb: usize, work: &Path, tracker: &str) -> Option<Measure> {
    let src = work.join(format!("src-{size_mb}"));
    let t = work.join(format!("b{size_mb}.torrent"));
    let ts = t.to_str().unwrap().to_owned();
    let out = work.join(format!("out-{client}-{size_mb}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let outs = out.to_str().unwrap().to_owned();
    let srcs = src.to_str().unwrap().to_owned();
    let limit = Duration::from_secs(600);
    let m = match client {
        "ours" => {
            let _seed = Proc::spawn(
                pinned(
                    0,
                    BIN,
                    &s(&[
                        "seed",
                        &ts,
                        "--dir",
                        &srcs,
                        "--listen",
                        "127.0.0.1:0",
                        "--quiet",
                        "--no-trackers",
                    ]),
                ),
                "seed",
                true,
            );
            let peer = _seed.addr.unwrap().to_string();
            timed(
                1,
                BIN,
                &s(&[
                    "download",
                    &ts,
                    "--out",
                    &outs,
                    "--peer",
                    &peer,
                    "--no-trackers",
                    "--quiet",
                    "--listen",
                    "127.0.0.1:0",
                ]),
                limit,
            )
        }
        "aria2c" => {
            let sp = free_port().to_string();
            let mut a = aria_common();
            a.extend(s(&[
                "--dir",
                &srcs,
                "--check-integrity=true",
                "--seed-ratio=0.0",
                "--listen-port",
                &sp,
                &ts,
            ]));
            let _seed = Proc::spawn(pinned(0, "aria2c", &a), "aria-seed", false);
            std::thread::sleep(Duration::from_millis(300 + size_mb as u64 * 3));
            let lp = free_port().to_string();
            let mut a = aria_common();
            a.extend(s(&[
                "--dir",
                &outs,
                "--seed-time=0",
                "--listen-port",
                &lp,
                "--bt-tracker-interval=1",
                &ts,
            ]));
            timed(1, "aria2c", &a, limit)
        }
        "libtorrent" => {
            let sp = free_port().to_string();
            let _seed = Proc::spawn(
                pinned(
                    0,
                    "/usr/bin/python3",
                    &s(&["-c", LT, "seed", &ts, &srcs, &sp]),
                ),
                "lt-seed",
                false,
            );
            std::thread::sleep(Duration::from_millis(500));
            timed(
                1,
                "/usr/bin/python3",
                &s(&[
                    "-c",
                    LT,
                    "leech",
                    &ts,
                    &outs,
                    &free_port().to_string(),
                    &format!("127.0.0.1:{sp}"),
                ]),
                limit,
            )
        }
        "rqbit" => {
            let q = std::env::var("RQBIT").ok()?;
            let g = |port: &str| {
                s(&[
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
            };
            let sp = free_port().to_string();
            let mut a = g(&sp);
            a.extend(s(&[
                "download",
                "-o",
                &srcs,
                "--overwrite",
                "--disable-http-api",
                &ts,
            ]));
            let _seed = Proc::spawn(pinned(0, &q, &a), "rqbit-seed", false);
            std::thread::sleep(Duration::from_millis(1000 + size_mb as u64 * 4));
            let lp = free_port().to_string();
            let mut a = g(&lp);
            a.extend(s(&[
                "download",
                "-o",
                &outs,
                "--overwrite",
                "-e",
                "--disable-http-api",
                "--initial-peers",
                &format!("127.0.0.1:{sp}"),
                &ts,
            ]));
            timed(1, &q, &a, limit)
        }
        _ => return None,
    };
    let _ = tracker;
    let ok = std::fs::read(out.join("data.bin")).ok() == std::fs::read(src.join("data.bin")).ok();
    if !ok {
        eprintln!("  {client}: downloaded bytes differ from the original!");
        return None;
    }
    let _ = std::fs::remove_dir_all(&out);
    m
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BT_BENCH_SIZES_MB")
        .unwrap_or_else(|_| "4,256".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let work = tempfile::tempdir().unwrap();
    let (tracker, _) = mini_tracker();
    println!(
        "bittorrent-peer transfer benchmark: one seeder (core 0) -> one leecher (core 1), loopback"
    );
    for &mb in &sizes {
        let src = work.path().join(format!("src-{mb}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("data.bin"), payload(mb << 20, mb as u64)).unwrap();
        make_torrent(
            &src.join("data.bin"),
            &work.path().join(format!("b{mb}.torrent")),
            Some(&tracker),
            256 << 10,
        );
        println!("\n{mb} MiB payload, 256 KiB pieces");
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>10} {:>12}",
            "client", "MB/s", "wall s", "CPU s", "peak RSS", "ours/them"
        );
        let mut ours_secs = None;
        let mut clients = vec!["ours", "aria2c", "libtorrent"];
        if std::env::var_os("RQBIT").is_some() {
            clients.push("rqbit");
        }
        for client in clients {
            match run_pair(client, mb, work.path(), &tracker) {
                Some(m) => {
                    if client == "ours" {
                        ours_secs = Some(m.secs);
                    }
                    let ratio = ours_secs
                        .map(|o| format!("{:.2}x", m.secs / o))
                        .unwrap_or_default();
                    println!(
                        "{:<12} {:>9.1} {:>9.3} {:>9.3} {:>7} MiB {:>12}",
                        client,
                        (mb << 20) as f64 / m.secs / 1e6,
                        m.secs,
                        m.cpu,
                        m.rss_kib / 1024,
                        ratio
                    );
                }
                None => println!("{client:<12} failed"),
            }
        }
    }
    // Flash crowd: ours only.
    let n: usize = std::env::var("BT_BENCH_CROWD")
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(8);
    let mb: usize = std::env::var("BT_BENCH_CROWD_MB")
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(64);
    let src = work.path().join("crowd");
    std::fs::create_dir_all(&src).unwrap();
    let data = payload(mb << 20, 99);
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let t = make_torrent(
        &src.join("data.bin"),
        &work.path().join("crowd.torrent"),
        Some(&tracker),
        256 << 10,
    );
    let ts = t.to_str().unwrap().to_owned();
    let seed = Proc::spawn(
        ours(&[
            "seed",
            &ts,
            "--dir",
            src.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
        ]),
        "seed",
        true,
    );
    let start = Instant::now();
    let mut ls = Vec::new();
    for i in 0..n {
        let out = work.path().join(format!("crowd-out{i}"));
        ls.push((
            Proc::spawn(
                ours(&[
                    "download",
                    &ts,
                    "--out",
                    out.to_str().unwrap(),
                    "--seed",
                    "--listen",
                    "127.0.0.1:0",
                    "--quiet",
                    "--peer",
                    &seed.addr.unwrap().to_string(),
                ]),
                "leech",
                true,
            ),
            out,
        ));
    }
    for (_, out) in &ls {
        wait_for_file(
            &out.join("data.bin"),
            &data,
            Duration::from_secs(900),
            "crowd",
        );
    }
    println!("\nflash crowd (ours): 1 seeder -> {n} leechers x {mb} MiB, all verified in {:.2} s (completion seen by polling the files)", start.elapsed().as_secs_f64());
}
