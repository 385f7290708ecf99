//! Multi-source download speed and recovery (issue 5).
//!
//! 1. Speed: k = 1, 2, 4, 8 ONs share the same file, each capping its uploads at `RATE` bytes/s in
//!    total (`--upload-rate`, one limiter per node, so a source is a "link" of that speed whatever the
//!    number of connections); `kazaa-supernode get` fetches the file from all of them through one SN.
//!    The reference is the single-source run of the same program: the figure is the speed-up over it
//!    and the ratio to the goal of 0.9 × k.
//! 2. Recovery: with 4 sources, one is killed (SIGKILL) or frozen (SIGSTOP: it keeps its sockets
//!    open and sends nothing) at ~40 % of the download. `get --events` stamps every downloader event
//!    with the wall clock; the recovery time is from the kill/freeze to the downloader giving up that
//!    source's block (its `source_failed` event), after which the block is fetched by the others.
//!    The goal is under one second; `get` runs with `--stall-timeout-ms 500 --connect-timeout-ms 500`.
//!
//! Real processes on loopback; run with `cargo bench -p kazaa-supernode --bench sources`. Sizes are
//! small on purpose (the machine is shared); override with KAZAA_BENCH_MB / KAZAA_BENCH_RATE.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::hash::uuhash;
use integration::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_kazaa-supernode");
/// Linux signal numbers (x86-64 and aarch64).
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;
/// Stall and connect timeouts of `get` in the recovery runs.
const RECOVERY_TIMEOUT_MS: &str = "500";

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sources(sn: &Daemon, hash: &str) -> usize {
    let out = Command::new(BIN)
        .args([
            "search",
            "--json",
            "--peer",
            &sn.addr().to_string(),
            "--hash",
            hash,
        ])
        .output()
        .expect("search runs");
    // The last line is the "done" summary, with the waves grouped by SN.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_default();
    v["waves"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["results"].as_array().map_or(0, |r| r.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// One SN and `k` sources of the file in `data_dir`, registered.
fn network(k: usize, data_dir: &Path, hash: &str, rate: u64) -> (Daemon, Vec<Daemon>) {
    let sn = Daemon::builder_path(BIN)
        .args(["--role", "supernode", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let rate_s = rate.to_string();
    let ons: Vec<Daemon> = (0..k)
        .map(|i| {
            Daemon::builder_path(BIN)
                .args([
                    "--role",
                    "ordinary",
                    "--listen",
                    "127.0.0.1:0",
                    "--user",
                    &format!("s{i}"),
                ])
                .args([
                    "--peer",
                    &sn.addr().to_string(),
                    "--share",
                    data_dir.to_str().unwrap(),
                ])
                .args(["--upload-rate", &rate_s, "--upload-slots", "4"])
                .spawn()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    while sources(&sn, hash) < k {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "sources did not register"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (sn, ons)
}

fn get_cmd(sn: &Daemon, hash: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "get",
        "--json",
        "--block-size",
        "262144",
        "--peer",
        &sn.addr().to_string(),
        hash,
        "-o",
    ])
    .arg(dest)
    .args(extra);
    c
}

fn speed(k: usize, data_dir: &Path, hash: &str, rate: u64) -> (f64, serde_json::Value) {
    let (sn, _ons) = network(k, data_dir, hash, rate);
    let out_dir = tempfile::tempdir().unwrap();
    let out = get_cmd(&sn, hash, &out_dir.path().join("out.bin"), &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ms = report["elapsed_ms"].as_u64().unwrap().max(1);
    let size = report["size"].as_u64().unwrap();
    (size as f64 / (ms as f64 / 1000.0), report)
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Freeze,
}

/// Returns (ms from the fault to the victim's `source_failed`, total ms of the download).
fn recovery(
    k: usize,
    data_dir: &Path,
    hash: &str,
    rate: u64,
    size: u64,
    fault: Fault,
) -> (Option<u64>, u64) {
    let (sn, mut ons) = network(k, data_dir, hash, rate);
    let out_dir = tempfile::tempdir().unwrap();
    let mut child = get_cmd(
        &sn,
        hash,
        &out_dir.path().join("out.bin"),
        &[
            "--events",
            "--stall-timeout-ms",
            RECOVERY_TIMEOUT_MS,
            "--connect-timeout-ms",
            RECOVERY_TIMEOUT_MS,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let reader = {
        let events = events.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    events.lock().unwrap().push(v);
                }
            }
        })
    };
    let victim = ons[0].addr().to_string();
    let start = Instant::now();
    let done = |evs: &[serde_json::Value]| {
        evs.iter()
            .filter(|e| e["event"] == "progress")
            .filter_map(|e| e["bytes_done"].as_u64())
            .max()
            .unwrap_or(0)
    };
    while done(&events.lock().unwrap()) < size * 2 / 5 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let fault_ms = unix_ms();
    let frozen = match fault {
        Fault::Kill => {
            drop(ons.remove(0));
            None
        }
        Fault::Freeze => {
            ons[0].signal(SIGSTOP).unwrap();
            Some(0)
        }
    };
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    if frozen.is_some() {
        let _ = ons[0].signal(SIGCONT);
    }
    assert!(out.status.success(), "get failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "source_failed")
        .filter(|e| e["url"].as_str().is_some_and(|u| u.contains(&victim)))
        .filter_map(|e| e["unix_ms"].as_u64())
        .find(|&t| t >= fault_ms);
    (
        failed.map(|t| t - fault_ms),
        report["elapsed_ms"].as_u64().unwrap_or(0),
    )
}

fn main() {
    let mb = env_u64("KAZAA_BENCH_MB", 8);
    let rate = env_u64("KAZAA_BENCH_RATE", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..mb * 1_000_000)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.path().join("payload.bin"), &data).unwrap();
    let hash = uuhash(&data).to_hex();
    let size = data.len() as u64;
    drop(data);
    println!(
        "kazaa multi-source: {mb} MB file, each source's uploads capped at {rate} B/s in total (--upload-rate), block 256 KiB"
    );
    println!(
        "{:>7} {:>12} {:>9} {:>10} {:>14}",
        "sources", "MB/s", "speed-up", "goal 0.9k", "ratio to goal"
    );
    let mut single = None;
    for k in [1usize, 2, 4, 8] {
        let (bps, report) = speed(k, dir.path(), &hash, rate);
        let base = *single.get_or_insert(bps);
        let speedup = bps / base;
        let goal = 0.9 * k as f64;
        println!(
            "{k:>7} {:>12.2} {speedup:>9.2} {goal:>10.1} {:>14.2}",
            bps / 1e6,
            speedup / goal
        );
        let used = report["sources"].as_array().map_or(0, |s| {
            s.iter().filter(|s| s["bytes"].as_u64() > Some(0)).count()
        });
        println!("        sources that sent bytes: {used}/{k}");
    }
    println!(
        "recovery, 4 sources, one fails at 40 % (get --stall-timeout-ms {RECOVERY_TIMEOUT_MS} --connect-timeout-ms {RECOVERY_TIMEOUT_MS}):"
    );
    let ideal_ms = |lost: f64| {
        // 40 % at 4 × rate, the rest at 3 × rate.
        let r = rate as f64;
        1000.0 * (0.4 * size as f64 / (4.0 * r) + (1.0 - 0.4) * size as f64 / (lost * r))
    };
    for (name, fault) in [
        ("killed (SIGKILL)", Fault::Kill),
        ("frozen (SIGSTOP)", Fault::Freeze),
    ] {
        let (detect, total) = recovery(4, dir.path(), &hash, rate, size, fault);
        println!(
            "  {name:<17} source given up after {} ms; download {total} ms (ideal with 3 sources after the fault: {:.0} ms)",
            detect.map_or("(never)".to_owned(), |d| d.to_string()),
            ideal_ms(3.0)
        );
    }
}
