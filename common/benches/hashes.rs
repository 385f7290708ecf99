//! Hash throughput against OpenSSL, measured in the same run on the same file.
//!
//! `cargo bench -p common --bench hashes` writes a temporary file (512 MiB; `HASH_BENCH_MIB` changes it,
//! `HASH_BENCH_DIR` where it goes), reads it once so it sits in the page cache, then measures, best of
//! `HASH_BENCH_RUNS` (5):
//!
//! - `common::hash::hash_file` for SHA-1, MD5, the kzhash MD5 tree and UUHash alone (one thread each), and
//!   for all five hashes in one pass on one thread and with the two-thread split;
//! - `openssl dgst -sha1` and `openssl dgst -md5` on the same file (OpenSSL uses the SHA instructions too),
//!   alternating with ours in every round so that load from other processes hits both alike;
//! - SHA-1 and MD5 over an in-memory buffer, to separate hashing from reading.
//!
//! Two figures per line, both in MB/s (10^6 bytes per second): per wall-clock second and per CPU second
//! (user + system time of the hashing thread, or of the `openssl` child as counted by bash's `times`).
//! The CPU figure is what "one core" means, and it barely moves when other processes compete for the
//! cores; the ratios our/OpenSSL (goal >= 0.9) are given for both. The digests of both programs are
//! checked to agree. Nothing is asserted about time.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hash::{self, hash_file_with, HashKinds, Parallelism};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time of the calling thread (Linux `schedstat`: nanoseconds on a CPU).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Best wall and best CPU time seen over several runs.
#[derive(Clone, Copy)]
struct Best {
    wall: Duration,
    cpu: Duration,
}

impl Best {
    fn new() -> Self {
        Best {
            wall: Duration::MAX,
            cpu: Duration::MAX,
        }
    }

    fn add(&mut self, wall: Duration, cpu: Duration) {
        self.wall = self.wall.min(wall);
        self.cpu = self.cpu.min(cpu);
    }
}

/// Runs `f` on this thread, measuring wall and thread CPU time.
fn measure<T>(best: &mut Best, f: impl FnOnce() -> T) -> T {
    let (t, c) = (Instant::now(), thread_cpu());
    let r = f();
    best.add(t.elapsed(), thread_cpu().saturating_sub(c));
    r
}

/// Parses bash's `times` output for the children's user + system time (second line, `0m1.234s 0m0.056s`).
fn parse_times(text: &str) -> Option<Duration> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains('m') && l.ends_with('s'))?;
    let mut total = 0.0;
    for field in line.split_whitespace() {
        let (min, sec) = field.trim_end_matches('s').split_once('m')?;
        total += min.parse::<f64>().ok()? * 60.0 + sec.parse::<f64>().ok()?;
    }
    Some(Duration::from_secs_f64(total))
}

/// `openssl dgst <alg>` on the file; returns the hex digest.
fn openssl(best: &mut Best, alg: &str, path: &Path) -> String {
    let t = Instant::now();
    let out = Command::new("bash")
        .args(["-c", "openssl dgst \"$0\" -r \"$1\" && times", alg])
        .arg(path)
        .output()
        .expect("run bash and openssl (apt-get install openssl)");
    let wall = t.elapsed();
    assert!(out.status.success(), "openssl dgst {alg} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let cpu = parse_times(&text).expect("bash `times` output");
    best.add(wall, cpu);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn write_file(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create bench file"));
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    while left > 0 {
        // xorshift64: incompressible, so no layer can shortcut it.
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write bench file");
        left -= n as u64;
    }
    f.flush().expect("flush bench file");
}

fn only(f: impl FnOnce(&mut HashKinds)) -> HashKinds {
    let mut k = HashKinds::default();
    f(&mut k);
    k
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) a tiny size keeps the program
    // itself exercised.
    let testing = !std::env::args().any(|a| a == "--bench");
    let mib = env_u64("HASH_BENCH_MIB", if testing { 4 } else { 512 });
    let runs = env_u64("HASH_BENCH_RUNS", if testing { 1 } else { 5 }).max(1);
    let len = mib << 20;
    let dir = std::env::var_os("HASH_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("hash-bench-")
        .tempdir_in(dir)
        .expect("temp dir");
    let path = tmp.path().join("data.bin");
    write_file(&path, len);
    // Warm the page cache, so both sides read from memory.
    let _ = std::fs::read(&path).map(|v| v.len());

    println!(
        "hashes: {mib} MiB file, best of {runs}, {} hardware threads, SHA-NI {}, load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if std::arch::is_x86_feature_detected!("sha") {
            "yes"
        } else {
            "no"
        },
        loadavg()
    );

    let file = |best: &mut Best, kinds: HashKinds, par: Parallelism| {
        measure(best, || {
            hash_file_with(&path, kinds, par, &mut |_| {}).expect("hash")
        })
    };

    // Ours and OpenSSL alternate inside each round.
    let (mut sha1, mut ossl_sha1, mut md5, mut ossl_md5) =
        (Best::new(), Best::new(), Best::new(), Best::new());
    for _ in 0..runs {
        let h = file(
            &mut sha1,
            only(|k| k.sha1 = true),
            Parallelism::SingleThread,
        );
        let theirs = openssl(&mut ossl_sha1, "-sha1", &path);
        assert_eq!(h.sha1.expect("sha1").to_hex(), theirs, "SHA-1 disagrees");
        let h = file(&mut md5, only(|k| k.md5 = true), Parallelism::SingleThread);
        let theirs = openssl(&mut ossl_md5, "-md5", &path);
        assert_eq!(h.md5.expect("md5").to_hex(), theirs, "MD5 disagrees");
    }

    let (mut uu_full, mut uu_seek, mut kz, mut all_1, mut all_2) = (
        Best::new(),
        Best::new(),
        Best::new(),
        Best::new(),
        Best::new(),
    );
    let (mut h1, mut h2) = (None, None);
    for _ in 0..runs {
        measure(&mut uu_full, || {
            // Streaming UUHash over every byte: its cost inside a combined pass.
            let mut h = hash::UuHasher::new(len);
            let mut f = std::fs::File::open(&path).expect("open");
            let mut buf = vec![0u8; hash::HASH_FILE_BUF];
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finish()
        });
        file(
            &mut uu_seek,
            only(|k| k.uuhash = true),
            Parallelism::SingleThread,
        );
        file(
            &mut kz,
            only(|k| k.kzhash = true),
            Parallelism::SingleThread,
        );
        h1 = Some(file(&mut all_1, HashKinds::ALL, Parallelism::SingleThread));
        h2 = Some(file(&mut all_2, HashKinds::ALL, Parallelism::Auto));
    }
    assert_eq!(h1, h2, "the two-thread pass disagrees");

    let mut mem = vec![0u8; len.min(64 << 20) as usize];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut mem))
        .expect("read file");
    let (mut mem_sha1, mut mem_md5) = (Best::new(), Best::new());
    for _ in 0..runs {
        measure(&mut mem_sha1, || hash::sha1(&mem));
        measure(&mut mem_md5, || hash::md5(&mem));
    }

    let mbps = |bytes: u64, d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let row = |name: &str, b: Best, bytes: u64, cpu: bool| {
        // A run shorter than a scheduler tick may show no CPU time at all.
        let cpu = if cpu && !b.cpu.is_zero() {
            format!("{:>9.1}", mbps(bytes, b.cpu))
        } else {
            format!("{:>9}", "-")
        };
        println!("  {name:<46} {:>9.1} {cpu}", mbps(bytes, b.wall));
    };
    println!("  {:<46} {:>9} {:>9}", "MB/s per", "wall s", "CPU s");
    println!("one thread, page-cached file:");
    row("ours    SHA-1   (hash_file)", sha1, len, true);
    row("openssl dgst -sha1", ossl_sha1, len, true);
    row("ours    MD5     (hash_file)", md5, len, true);
    row("openssl dgst -md5", ossl_md5, len, true);
    row(
        "ours    UUHash streaming over every byte",
        uu_full,
        len,
        true,
    );
    row(
        "ours    UUHash hash_file (reads only samples)",
        uu_seek,
        len,
        true,
    );
    row("ours    kzhash MD5 tree (hash_file)", kz, len, true);
    row("ours    all five, one pass, one thread", all_1, len, true);
    println!("two threads (the helper's CPU time is not counted, so wall only):");
    row(
        "ours    all five, one pass, split on 2 threads",
        all_2,
        len,
        false,
    );
    println!("in memory ({} MiB buffer), one thread:", mem.len() >> 20);
    row("ours    SHA-1", mem_sha1, mem.len() as u64, true);
    row("ours    MD5", mem_md5, mem.len() as u64, true);
    let ratio = |ours: Duration, theirs: Duration| theirs.as_secs_f64() / ours.as_secs_f64();
    println!(
        "ratio ours/openssl per CPU second:  SHA-1 {:.2}x, MD5 {:.2}x (goal >= 0.90)",
        ratio(sha1.cpu, ossl_sha1.cpu),
        ratio(md5.cpu, ossl_md5.cpu)
    );
    println!(
        "ratio ours/openssl per wall second: SHA-1 {:.2}x, MD5 {:.2}x",
        ratio(sha1.wall, ossl_sha1.wall),
        ratio(md5.wall, ossl_md5.wall)
    );
    println!(
        "two-thread speed-up for all five (wall): {:.2}x",
        ratio(all_2.wall, all_1.wall)
    );
    println!("load average at the end: {}", loadavg());
}
