//! Peak memory of the multi-source downloader fetching one large file from four local sources, printed
//! next to `aria2c -x4 -s4` fetching the same file from the same four sources in the same run.
//!
//! Run: `cargo bench -p common --bench downloader_memory`. Size: `DOWNLOADER_BENCH_SIZE` (bytes, default
//! 2 GiB); files go to `DOWNLOADER_BENCH_DIR` (default: Cargo's target tmp dir) and are deleted after.
//!
//! The four sources are the tests' generated-content range server, in this (parent) process. Each
//! downloader runs as a child process so its peak resident set (`VmHWM` in `/proc/self/status` for ours,
//! `/usr/bin/time -f %M` for aria2c) counts only the downloader. Goal: under 64 MiB for ours.

#[path = "../tests/multisource_support/mod.rs"]
mod multisource_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::multisource::{Download, DownloadConfig, ExpectedHash, Source};
use multisource_support::{content_sha1, Behaviour, Server};

const CHILD_ENV: &str = "DOWNLOADER_BENCH_CHILD";
const SOURCES: usize = 4;
/// A generous bound for a loaded 2-core machine; the run stops there rather than hang.
const DEADLINE: Duration = Duration::from_secs(1800);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let size: u64 = std::env::var("DOWNLOADER_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 << 30);
    let dir = std::env::var_os("DOWNLOADER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(parent(size, &dir));
}

async fn parent(size: u64, dir: &Path) {
    println!(
        "downloader_memory: {size} bytes ({:.2} GiB) from {SOURCES} local sources",
        size as f64 / (1u64 << 30) as f64
    );
    let t = Instant::now();
    let sha1 = tokio::task::spawn_blocking(move || content_sha1(size))
        .await
        .unwrap();
    println!(
        "  expected sha1 {sha1} (computed in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let mut servers = Vec::new();
    for _ in 0..SOURCES {
        servers.push(Server::start(size, Behaviour::default()).await);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();

    // Ours, in a child process.
    let dest = dir.join("downloader_memory.ours");
    let spec = format!("{size};{sha1};{};{}", dest.display(), urls.join(","));
    let exe = std::env::current_exe().expect("own path");
    let t = Instant::now();
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(&exe)
            .env(CHILD_ENV, spec)
            .output(),
    )
    .await
    .expect("our downloader timed out")
    .expect("child ran");
    let ours_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&dest);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("our downloader failed: {text}");
    }
    let ours_kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vmhwm_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("child prints vmhwm_kib=");
    println!(
        "  ours:   peak RSS {:>7.1} MiB, {:>6.1} s ({:.0} MiB/s, includes hashing the result)  [goal < 64 MiB]",
        ours_kib as f64 / 1024.0,
        ours_secs,
        size as f64 / ours_secs / 1048576.0
    );

    // aria2c, same sources, same machine, same run.
    let aria = dir.join("downloader_memory.aria2");
    let t = Instant::now();
    let res = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("/usr/bin/time")
            .args(["-f", "maxrss_kib=%M", "aria2c", "-x4", "-s4", "-q"])
            .args([
                "--file-allocation=none",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
            ])
            .arg(format!("--dir={}", aria.parent().unwrap().display()))
            .arg(format!(
                "--out={}",
                aria.file_name().unwrap().to_string_lossy()
            ))
            .args(&urls)
            .output(),
    )
    .await;
    let aria_secs = t.elapsed().as_secs_f64();
    let got = std::fs::metadata(&aria).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&aria);
    let _ = std::fs::remove_file(aria.with_extension("aria2.aria2"));
    match res {
        Ok(Ok(o)) if o.status.success() && got == size => {
            let err = String::from_utf8_lossy(&o.stderr);
            let kib: u64 = err
                .lines()
                .find_map(|l| l.strip_prefix("maxrss_kib="))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            println!(
                "  aria2c: peak RSS {:>7.1} MiB, {:>6.1} s ({:.0} MiB/s, no hash check)",
                kib as f64 / 1024.0,
                aria_secs,
                size as f64 / aria_secs / 1048576.0
            );
            if kib > 0 {
                println!("  ratio ours/aria2c peak memory: {:.2}", ours_kib as f64 / kib as f64);
            }
        }
        Ok(Ok(o)) => println!(
            "  aria2c: no figure ({} , {got} of {size} bytes): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(Err(e)) => println!("  aria2c: no figure: cannot run /usr/bin/time aria2c ({e}); Debian packages `aria2` and `time`"),
        Err(_) => println!("  aria2c: no figure: timed out"),
    }
    drop(servers);
}

/// The measured side: one download, then its own peak RSS.
fn child(spec: &str) {
    let mut it = spec.splitn(4, ';');
    let size: u64 = it.next().unwrap().parse().unwrap();
    let sha1 = common::hash::Sha1Digest::from_hex(it.next().unwrap()).unwrap();
    let dest = PathBuf::from(it.next().unwrap());
    let sources: Vec<Source> = it
        .next()
        .unwrap()
        .split(',')
        .map(|u| Source::http(u).unwrap())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stats = common::stats::Stats::new("bench", "downloader", "child");
    let report = rt.block_on(async {
        let (dl, _adder, mut events) = Download::new(
            &dest,
            size,
            ExpectedHash::Sha1(sha1),
            DownloadConfig::default(),
            stats,
        );
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        dl.run(sources).await
    });
    let report = report.unwrap_or_else(|e| panic!("download failed: {e}"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    println!(
        "blocks={} per_source_blocks={:?}",
        report.blocks,
        report.sources.iter().map(|s| s.blocks).collect::<Vec<_>>()
    );
    println!("vmhwm_kib={hwm}");
}
