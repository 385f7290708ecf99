//! Shared-folder library: cold scan (hash everything) with 1 and 2 hashing threads, and a warm restart
//! (every hash from the cache), against `sha1sum` and `openssl dgst -sha1` over the same files, each
//! sequential and as two parallel processes (`xargs -P2`), measured in the same run.
//!
//! `cargo bench -p common --bench library_scan`. Size with `LIBRARY_BENCH_FILES` (default 96) and
//! `LIBRARY_BENCH_MIB` per file (default 4). The files are written first and read once, so every run reads
//! from the page cache: this measures hashing and scheduling, not the disk.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hash::HashKinds;
use common::library::{Library, LibraryConfig, Progress};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(share: &Path, data: &Path, kinds: HashKinds, threads: usize) -> (Duration, Library) {
    let t = Instant::now();
    let lib = Library::open(
        LibraryConfig::new(share)
            .data_dir(data)
            .kinds(kinds)
            .hash_threads(threads)
            .progress(Progress::Hidden),
    )
    .expect("library opens");
    (t.elapsed(), lib)
}

/// Runs `sh -c script` in `dir` and returns its wall time; panics if it fails.
fn time_shell(dir: &Path, script: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("sh runs");
    assert!(st.success(), "reference failed: {script}");
    t.elapsed()
}

fn main() {
    let files = env_usize("LIBRARY_BENCH_FILES", 96).clamp(2, 10_000);
    let mib = env_usize("LIBRARY_BENCH_MIB", 4).clamp(1, 1024);
    let total_mib = (files * mib) as f64;
    let tmp = tempfile::tempdir().expect("tempdir");
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).expect("mkdir");
    let block: Vec<u8> = (0..mib << 20).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..files {
        let mut b = block.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(share.join(format!("f{i:05}.bin")), &b).expect("write");
    }
    let list = "ls | sort";
    // Warm the page cache and check the reference exists.
    time_shell(&share, &format!("{list} | xargs cat > /dev/null"));

    println!("library_scan: {files} files x {mib} MiB = {total_mib} MiB (page cache)");
    let sha1 = HashKinds {
        sha1: true,
        ..HashKinds::default()
    };
    let ref1 = time_shell(&share, &format!("{list} | xargs sha1sum"));
    let ref2 = time_shell(
        &share,
        &format!("{list} | xargs -P2 -n{} sha1sum", files.div_ceil(2)),
    );
    let half = files.div_ceil(2);
    let oss1 = time_shell(&share, &format!("{list} | xargs openssl dgst -sha1"));
    let oss2 = time_shell(
        &share,
        &format!("{list} | xargs -P2 -n{half} openssl dgst -sha1"),
    );
    let mbps = |d: Duration| total_mib / d.as_secs_f64();
    println!(
        "reference sha1sum           : {:7.1} MiB/s ({:.2} s)",
        mbps(ref1),
        ref1.as_secs_f64()
    );
    println!(
        "reference xargs -P2 sha1sum : {:7.1} MiB/s ({:.2} s)",
        mbps(ref2),
        ref2.as_secs_f64()
    );
    println!(
        "reference openssl dgst -sha1: {:7.1} MiB/s ({:.2} s)",
        mbps(oss1),
        oss1.as_secs_f64()
    );
    println!(
        "reference xargs -P2 openssl : {:7.1} MiB/s ({:.2} s)",
        mbps(oss2),
        oss2.as_secs_f64()
    );
    let mut lib_for_check = None;
    for threads in [1, 2] {
        let data = tmp.path().join(format!("data-sha1-{threads}"));
        let (cold, lib) = open(&share, &data, sha1, threads);
        assert_eq!(lib.last_report().hashed, files);
        let (r_sha1sum, r_openssl) = if threads == 1 {
            (ref1, oss1)
        } else {
            (ref2, oss2)
        };
        println!(
            "library sha1, {threads} thread(s)   : {:7.1} MiB/s ({:.2} s) = {:.2}x sha1sum, {:.2}x openssl (same parallelism)",
            mbps(cold),
            cold.as_secs_f64(),
            r_sha1sum.as_secs_f64() / cold.as_secs_f64(),
            r_openssl.as_secs_f64() / cold.as_secs_f64()
        );
        let (warm, again) = open(&share, &data, sha1, threads);
        assert_eq!(again.last_report().hashed, 0);
        println!(
            "  restart, all cached       : {:.1} ms for {} files",
            warm.as_secs_f64() * 1e3,
            again.len()
        );
        lib_for_check = Some(lib);
    }
    let all = HashKinds {
        sha1: true,
        md5: true,
        uuhash: true,
        napster_md5: true,
        kzhash: false,
    };
    for threads in [1, 2] {
        let data = tmp.path().join(format!("data-all-{threads}"));
        let (cold, _) = open(&share, &data, all, threads);
        println!(
            "library sha1+md5+uuhash+napster_md5, {threads} thread(s): {:7.1} MiB/s ({:.2} s)",
            mbps(cold),
            cold.as_secs_f64()
        );
    }
    // Our SHA-1 must agree with sha1sum's on one file.
    let lib = lib_for_check.expect("ran");
    let f = &lib.files()[0];
    let out = Command::new("sha1sum")
        .arg(lib.resolve(f).expect("resolves"))
        .output()
        .expect("sha1sum");
    let theirs = String::from_utf8_lossy(&out.stdout);
    assert!(theirs.starts_with(&f.hashes.sha1.expect("sha1").to_hex()));
}
