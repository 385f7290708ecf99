//! Hash throughput against OpenSSL, measured in the same run on the same file.
//!
//! `cargo bench -p common --bench hashes` writes a temporary file (512 MiB; `HASH_BENCH_MIB` changes it,
//! `HASH_BENCH_DIR` where it goes), reads it once so it sits in the page cache, then times, best of
//! `HASH_BENCH_RUNS` (3):
//!
//! - `common::hash::hash_file` for SHA-1, MD5, the kzhash MD5 tree and UUHash alone (one core each), and for
//!   all hashes in one pass on one thread and with the two-thread split;
//! - `openssl dgst -sha1` and `openssl dgst -md5` on the same file (OpenSSL uses the SHA instructions too);
//! - the bare SHA-1 and MD5 compression over an in-memory buffer, to separate hashing from reading.
//!
//! It prints MB/s (10^6 bytes per second) and our/OpenSSL ratios (goal >= 0.9), and checks that both
//! programs agree on the digests. Nothing is asserted about time.

use std::io::Write;
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

/// Best (shortest) wall time of `runs` calls, and the last result.
fn best_of<T>(runs: u64, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        last = Some(r);
    }
    (best, last.expect("at least one run"))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn openssl(alg: &str, path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["dgst", alg, "-r"])
        .arg(path)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl dgst {alg} failed");
    let text = String::from_utf8_lossy(&out.stdout);
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
        // xorshift64: incompressible enough that no layer can shortcut it.
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
    // `cargo bench` passes `--bench`; any other argument (e.g. a filter from `cargo test --benches`) is
    // ignored, and `cargo test` runs this with a tiny size so the program itself stays tested.
    let testing = !std::env::args().any(|a| a == "--bench");
    let mib = env_u64("HASH_BENCH_MIB", if testing { 4 } else { 512 });
    let runs = env_u64("HASH_BENCH_RUNS", if testing { 1 } else { 3 }).max(1);
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
        "hashes: {mib} MiB file, best of {runs}, {} hardware threads, SHA-NI {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if std::arch::is_x86_feature_detected!("sha") {
            "yes"
        } else {
            "no"
        }
    );

    let run = |kinds: HashKinds, par: Parallelism| {
        best_of(runs, || {
            hash_file_with(&path, kinds, par, &mut |_| {}).expect("hash")
        })
    };

    let (t_sha1, h) = run(only(|k| k.sha1 = true), Parallelism::SingleThread);
    let ours_sha1 = h.sha1.expect("sha1").to_hex();
    let (t_ossl_sha1, ossl_sha1) = best_of(runs, || openssl("-sha1", &path));
    assert_eq!(ours_sha1, ossl_sha1, "SHA-1 disagrees with openssl");

    let (t_md5, h) = run(only(|k| k.md5 = true), Parallelism::SingleThread);
    let ours_md5 = h.md5.expect("md5").to_hex();
    let (t_ossl_md5, ossl_md5) = best_of(runs, || openssl("-md5", &path));
    assert_eq!(ours_md5, ossl_md5, "MD5 disagrees with openssl");

    let (t_uu_full, _) = best_of(runs, || {
        // Streaming UUHash over every byte (what it costs inside a combined pass).
        let mut h = hash::UuHasher::new(len);
        let mut f = std::fs::File::open(&path).expect("open");
        let mut buf = vec![0u8; hash::HASH_FILE_BUF];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).expect("read");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finish()
    });
    let (t_uu_seek, _) = run(only(|k| k.uuhash = true), Parallelism::SingleThread);
    let (t_kz, _) = run(only(|k| k.kzhash = true), Parallelism::SingleThread);
    let (t_all_1, all_1) = run(HashKinds::ALL, Parallelism::SingleThread);
    let (t_all_2, all_2) = run(HashKinds::ALL, Parallelism::Auto);
    assert_eq!(all_1, all_2, "the two-thread pass disagrees");

    // Bare compression speed on a buffer that stays in cache-friendly memory.
    let mut mem = vec![0u8; len.min(64 << 20) as usize];
    std::io::Read::read_exact(&mut std::fs::File::open(&path).expect("open"), &mut mem)
        .expect("read file");
    let mem = &mem[..];
    let (t_mem_sha1, _) = best_of(runs, || hash::sha1(mem));
    let (t_mem_md5, _) = best_of(runs, || hash::md5(mem));

    let row = |name: &str, d: Duration, bytes: u64| {
        println!("  {name:<44} {:>9.1} MB/s", mbps(bytes, d));
    };
    println!("one core, page-cached file:");
    row("ours   SHA-1  (hash_file)", t_sha1, len);
    row("openssl dgst -sha1", t_ossl_sha1, len);
    row("ours   MD5    (hash_file)", t_md5, len);
    row("openssl dgst -md5", t_ossl_md5, len);
    row("ours   UUHash streaming over every byte", t_uu_full, len);
    row(
        "ours   UUHash hash_file (reads only samples)",
        t_uu_seek,
        len,
    );
    row("ours   kzhash MD5 tree (hash_file)", t_kz, len);
    row("ours   all five, one pass, one thread", t_all_1, len);
    println!("two threads:");
    row(
        "ours   all five, one pass, split on 2 threads",
        t_all_2,
        len,
    );
    println!("in memory ({} MiB buffer):", mem.len() >> 20);
    row("ours   SHA-1", t_mem_sha1, mem.len() as u64);
    row("ours   MD5", t_mem_md5, mem.len() as u64);
    let ratio = |ours: Duration, theirs: Duration| theirs.as_secs_f64() / ours.as_secs_f64();
    println!(
        "ratio ours/openssl: SHA-1 {:.2}x, MD5 {:.2}x (goal >= 0.90)",
        ratio(t_sha1, t_ossl_sha1),
        ratio(t_md5, t_ossl_md5)
    );
    println!(
        "two-thread speed-up for all five: {:.2}x",
        ratio(t_all_2, t_all_1)
    );
}
