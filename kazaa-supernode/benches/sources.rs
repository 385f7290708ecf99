//! Multi-source download speed (issue 5): k = 1, 2, 4, 8 ONs share the same file, each upload capped at
//! `RATE` bytes/s by `common::http`; `kazaa-supernode get` fetches it from all of them through one SN.
//! The reference is the single-source run of the same program: the figure is the speed-up over it and
//! the ratio to the goal of 0.9 × k. Real processes on loopback; run with `cargo bench -p kazaa-supernode`.
//! Sizes are small on purpose (the machine is shared); override with KAZAA_BENCH_MB / KAZAA_BENCH_RATE.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hash::uuhash;
use integration::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_kazaa-supernode");

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["waves"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["results"].as_array().map_or(0, |r| r.len()))
                .sum()
        })
        .unwrap_or(0)
}

fn run(k: usize, data_dir: &Path, hash: &str, rate: u64) -> (f64, serde_json::Value) {
    let sn = Daemon::builder_path(BIN)
        .args(["--role", "supernode", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let rate_s = rate.to_string();
    let _ons: Vec<Daemon> = (0..k)
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
                .args(["--rate", &rate_s, "--upload-slots", "4"])
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
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("out.bin");
    let out = Command::new(BIN)
        .args([
            "get",
            "--json",
            "--block-size",
            "262144",
            "--peer",
            &sn.addr().to_string(),
            hash,
            "-o",
        ])
        .arg(&dest)
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

fn main() {
    let mb = env_u64("KAZAA_BENCH_MB", 8);
    let rate = env_u64("KAZAA_BENCH_RATE", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..mb * 1_000_000)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.path().join("payload.bin"), &data).unwrap();
    let hash = uuhash(&data).to_hex();
    drop(data);
    println!("kazaa multi-source: {mb} MB file, each source capped at {rate} B/s, block 256 KiB");
    println!(
        "{:>7} {:>12} {:>9} {:>10} {:>14}",
        "sources", "MB/s", "speed-up", "goal 0.9k", "ratio to goal"
    );
    let mut single = None;
    for k in [1usize, 2, 4, 8] {
        let (bps, report) = run(k, dir.path(), &hash, rate);
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
}
