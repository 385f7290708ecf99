//! Multi-process transfer tests on loopback (kazaa.md §7 cases 10, 11, 12, 15): the ON's HTTP side, a
//! parallel download from every source of a hash surviving a killed source, a re-search by hash, and a
//! download pinned to a sig2dat link that ignores a same-name decoy.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::hash::{md5_tree, uuhash, KzHash, KzMagnet, Sig2Dat};
use integration::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_kazaa-supernode");
const DEADLINE: Duration = Duration::from_secs(60);

fn sn() -> Daemon {
    Daemon::builder_path(BIN)
        .args(["--role", "supernode", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("supernode starts")
}

fn on(sn: &Daemon, share: &Path, user: &str, extra: &[&str]) -> Daemon {
    Daemon::builder_path(BIN)
        .args([
            "--role",
            "ordinary",
            "--listen",
            "127.0.0.1:0",
            "--user",
            user,
        ])
        .args([
            "--peer",
            &sn.addr().to_string(),
            "--share",
            share.to_str().unwrap(),
        ])
        .args(extra)
        .spawn()
        .expect("ordinary node starts")
}

fn content(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn share_dir(name: &str, data: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(name), data).unwrap();
    d
}

/// `n` ONs sharing the same `data` as `name` (users `<user>0`, `<user>1`…, each with `extra`); the
/// folders live as long as the nodes.
fn same_file_on(
    sn: &Daemon,
    name: &str,
    data: &[u8],
    n: usize,
    user: &str,
    extra: &[&str],
) -> (Vec<tempfile::TempDir>, Vec<Daemon>) {
    let dirs: Vec<_> = (0..n).map(|_| share_dir(name, data)).collect();
    let ons = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| on(sn, d.path(), &format!("{user}{i}"), extra))
        .collect();
    (dirs, ons)
}

/// The last line of `search --json`: the "done" summary with the waves grouped by SN.
fn summary(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["event"], "done", "{text}");
    v
}

fn sources_for(sn: &Daemon, hash: &str) -> usize {
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
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = summary(&out.stdout);
    v["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["results"].as_array().unwrap().len())
        .sum()
}

fn wait_sources(sn: &Daemon, hash: &str, n: usize) {
    let start = Instant::now();
    while sources_for(sn, hash) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "fewer than {n} sources registered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `get` child process, killed on drop; its log goes to a file so a full pipe never blocks it.
struct Get(Child, tempfile::NamedTempFile);

impl Get {
    fn start(sn: &Daemon, target: &str, out: &Path) -> Get {
        Get::start_with(sn, target, out, &[], &[])
    }

    /// `pre` goes before the `get` subcommand (node options), `post` after it (its own options).
    fn start_with(sn: &Daemon, target: &str, out: &Path, pre: &[&str], post: &[&str]) -> Get {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BIN)
            .args(pre)
            .args([
                "get",
                "--json",
                "--block-size",
                "16384",
                "--peer",
                &sn.addr().to_string(),
                target,
                "-o",
            ])
            .arg(out)
            .args(post)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap();
        Get(child, log)
    }

    fn finish(self) -> serde_json::Value {
        let (ok, out, err) = self.exit();
        assert!(ok, "get failed: {err}");
        serde_json::from_str(&out).expect("JSON report")
    }

    /// Waits for the exit: (success, stdout, stderr).
    fn exit(mut self) -> (bool, String, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut out = String::new();
                self.0
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                let err = std::fs::read_to_string(self.1.path()).unwrap_or_default();
                return (status.success(), out, err);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "get did not finish: {}",
                std::fs::read_to_string(self.1.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Get {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(addr: std::net::SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf[split..].to_vec(),
    )
}

#[test]
fn http_range_and_headers_case_10() {
    let s = sn();
    // Big enough that the rate-capped whole-file GET below still holds the only slot under CI load.
    let data = content(200_000, 1);
    let hash = uuhash(&data);
    let dir = share_dir("Track.mp3", &data);
    let o = on(
        &s,
        dir.path(),
        "alice",
        &["--upload-slots", "1", "--rate", "20000"],
    );
    wait_sources(&s, &hash.to_hex(), 1);
    let req = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nX-Kazaa-Username: bob\r\n\r\n")
    };
    let (head, body) = http(o.addr(), &req(&hash.http_path()));
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("content-range: bytes 100-199/{}", data.len())),
        "{head}"
    );
    assert!(lower.contains("content-length: 100"));
    assert!(lower.contains("x-kazaa-username: alice"));
    assert!(lower.contains("x-kazaa-network: kazaa"));
    assert!(lower.contains(&format!("x-kazaa-ip: {}", o.addr())));
    assert!(lower.contains(&format!("x-kazaa-supernodeip: {}", s.addr())));
    assert!(
        head.contains(&format!("3={}", hash.to_sig2dat())),
        "X-KazaaTag with the hash: {head}"
    );
    assert!(!head.contains("Track.mp3"), "the filename is never sent");
    assert_eq!(body, &data[100..200]);
    let (head, _) = http(o.addr(), &req(&format!("/.hash={}", "ab".repeat(20))));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http(o.addr(), &req("/Track.mp3"));
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // One slot, rate-capped: a whole-file GET holds it for ~2.5 s; the next request gets 503.
    let mut slow = TcpStream::connect(o.addr()).unwrap();
    slow.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", hash.http_path()).as_bytes())
        .unwrap();
    let mut first = [0u8; 64];
    slow.read_exact(&mut first).unwrap();
    let (head, _) = http(o.addr(), &req(&hash.http_path()));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 300"),
        "{head}"
    );
}

#[test]
fn parallel_download_survives_a_killed_source_case_11() {
    let s = sn();
    let data = content(600_000, 2);
    let hash = uuhash(&data);
    let (_dirs, mut ons) = same_file_on(&s, "Movie.avi", &data, 4, "src", &["--rate", "40000"]);
    wait_sources(&s, &hash.to_hex(), 4);
    let out = tempfile::tempdir().unwrap();
    let dest: PathBuf = out.path().join("movie.avi");
    let g = Get::start(&s, &hash.to_hex(), &dest);
    // 600 kB from 4 sources at 40 kB/s each takes ~4 s: kill one mid-way.
    std::thread::sleep(Duration::from_millis(1200));
    let killed = ons[0].addr().to_string();
    drop(ons.remove(0));
    let report = g.finish();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let srcs = report["sources"].as_array().unwrap();
    assert_eq!(
        srcs.len(),
        4,
        "every source with the hash was used: {report}"
    );
    assert!(
        srcs.iter().all(|s| s["bytes"].as_u64().unwrap() > 0),
        "all four sent bytes at once: {report}"
    );
    let k = srcs
        .iter()
        .find(|s| s["url"].as_str().unwrap().contains(&killed))
        .unwrap();
    assert!(
        k["state"] == "dead" || k["state"] == "backoff",
        "the killed source stopped being used: {report}"
    );
    let best_other = srcs
        .iter()
        .filter(|s| s != &k)
        .map(|s| s["blocks"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        k["blocks"].as_u64().unwrap() < best_other,
        "the survivors took over its blocks: {report}"
    );
}

#[test]
fn research_by_hash_finds_a_new_source_case_12() {
    let s = sn();
    let data = content(300_000, 3);
    let hash = uuhash(&data);
    let (d1, d2) = (
        share_dir("Song.mp3", &data),
        share_dir("Copy of Song.mp3", &data),
    );
    // 300 kB at 30 kB/s: ~10 s alone, time enough for the second source to register under load.
    let first = on(&s, d1.path(), "first", &["--rate", "30000"]);
    wait_sources(&s, &hash.to_hex(), 1);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("song.mp3");
    let g = Get::start(&s, &hash.to_hex(), &dest);
    std::thread::sleep(Duration::from_millis(1000));
    let _second = on(&s, d2.path(), "second", &[]);
    wait_sources(&s, &hash.to_hex(), 2);
    drop(first);
    let report = g.finish();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let urls: Vec<&str> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "the newly joined source was added: {report}");
}

#[test]
fn sig2dat_pinned_download_ignores_the_decoy_case_15() {
    let s = sn();
    let real = content(100_000, 4);
    let mut decoy = real.clone();
    decoy[50_000] ^= 0x55;
    let (hr, hd) = (uuhash(&real), uuhash(&decoy));
    assert_ne!(hr, hd);
    let (d1, d2) = (share_dir("Hit.mp3", &real), share_dir("Hit.mp3", &decoy));
    let _a = on(&s, d1.path(), "honest", &[]);
    let _b = on(&s, d2.path(), "polluter", &[]);
    wait_sources(&s, &hr.to_hex(), 1);
    wait_sources(&s, &hd.to_hex(), 1);
    let out = Command::new(BIN)
        .args(["search", "--json", "--peer", &s.addr().to_string(), "hit"])
        .output()
        .unwrap();
    let v = summary(&out.stdout);
    let hashes: std::collections::HashSet<String> = v["waves"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hash"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hashes.len(), 2, "same name, two versions");
    let link = Sig2Dat {
        name: "Hit.mp3".into(),
        length: real.len() as u64,
        uuhash: hr,
    }
    .to_uri();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("hit.mp3");
    let report = Get::start(&s, &link, &dest).finish();
    assert_eq!(std::fs::read(&dest).unwrap(), real);
    assert_eq!(report["sources"].as_array().unwrap().len(), 1);
}

/// kazaa.md §7 case 13: the only source is firewalled (advertises port 0); the download reaches it by
/// 0x0D → SN relay → `GIVE <id>\r\n` → GET on the reversed connection, once per block.
#[test]
fn push_to_a_firewalled_source_case_13() {
    let s = sn();
    let data = content(80_000, 5);
    let hash = uuhash(&data);
    let dir = share_dir("Hidden.mp3", &data);
    let o = on(&s, dir.path(), "hidden", &["--firewalled"]);
    wait_sources(&s, &hash.to_hex(), 1);
    let out = Command::new(BIN)
        .args([
            "search",
            "--json",
            "--peer",
            &s.addr().to_string(),
            "--hash",
            &hash.to_hex(),
        ])
        .output()
        .unwrap();
    let v = summary(&out.stdout);
    assert_eq!(
        v["waves"][0]["results"][0]["addr"],
        format!("{}:0", o.addr().ip()),
        "advertised as firewalled"
    );
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("hidden.mp3");
    let report = Get::start(&s, &hash.to_hex(), &dest).finish();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let srcs = report["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 1);
    assert!(
        srcs[0]["blocks"].as_u64().unwrap() >= 5,
        "80 kB in 16 KiB blocks, each over its own push: {report}"
    );
}

fn queue_position(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-kazaa-queueposition")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// The upload queue: with the only slot busy, requesters get 503 + Retry-After + their place in line;
/// a later requester with a higher participation level (X-Kazaa-XferUid) goes ahead of an earlier
/// one with a lower level, and gets the slot first once it is free, although both keep asking.
#[test]
fn upload_queue_serves_the_higher_participation_level_first() {
    let s = sn();
    // ~2.9 s for the whole file at the node's 200 kB/s: the queue is built while it is busy.
    let data = content(600_000, 7);
    let hash = uuhash(&data);
    let dir = share_dir("Queue.bin", &data);
    let o = on(
        &s,
        dir.path(),
        "uploader",
        &[
            "--upload-slots",
            "1",
            "--upload-rate",
            "200000",
            "--retry-after",
            "2",
        ],
    );
    wait_sources(&s, &hash.to_hex(), 1);
    let req = |user: &str, level: u16| {
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\nX-Kazaa-Username: {user}\r\nX-Kazaa-XferUid: {level}\r\n\r\n",
            hash.http_path()
        )
    };
    let mut holder = TcpStream::connect(o.addr()).unwrap();
    holder
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    holder
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nX-Kazaa-Username: holder\r\n\r\n",
                hash.http_path()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut first = [0u8; 64];
    holder.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    let (head, _) = http(o.addr(), &req("low", 10));
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 2"),
        "{head}"
    );
    assert_eq!(queue_position(&head), Some(1), "{head}");
    let (head, _) = http(o.addr(), &req("high", 900));
    assert_eq!(
        queue_position(&head),
        Some(1),
        "the higher level goes first: {head}"
    );
    let (head, _) = http(o.addr(), &req("low", 10));
    assert_eq!(queue_position(&head), Some(2), "{head}");
    // Free the slot, then let both ask in turn, the earlier (low) one first every round.
    let mut rest = Vec::new();
    holder.read_to_end(&mut rest).unwrap();
    let start = Instant::now();
    loop {
        let (head, _) = http(o.addr(), &req("low", 10));
        assert!(
            head.starts_with("HTTP/1.1 503"),
            "the lower level was served first: {head}"
        );
        let (head, body) = http(o.addr(), &req("high", 900));
        if head.starts_with("HTTP/1.1 206") {
            assert_eq!(body, &data[..100]);
            break;
        }
        assert_eq!(queue_position(&head), Some(1), "{head}");
        assert!(start.elapsed() < DEADLINE, "the slot never came free");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Now "low" is first in line and the slot is free again.
    let start = Instant::now();
    loop {
        let (head, _) = http(o.addr(), &req("low", 10));
        if head.starts_with("HTTP/1.1 206") {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "low was never served: {head}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--upload-rate` caps all uploads of a node together (two downloads at once share it) and
/// `get --download-rate` caps a download across all its sources. Lower bounds on the time taken:
/// a correctness check of the caps, not a speed limit.
#[test]
fn upload_and_download_rates_are_capped() {
    let s = sn();
    let rate = 100 * 1024u64;
    let burst = rate / 10;
    // Upload cap: one capped source, two concurrent downloads of 150 kB each.
    let up = content(150_000, 11);
    let up_hash = uuhash(&up);
    let up_dir = share_dir("Capped.bin", &up);
    let _capped = on(&s, up_dir.path(), "capped", &["--upload-rate", "100k"]);
    // Download cap: two uncapped sources of another 200 kB file.
    let down = content(200_000, 12);
    let down_hash = uuhash(&down);
    let _free = same_file_on(&s, "Free.bin", &down, 2, "free", &[]);
    wait_sources(&s, &up_hash.to_hex(), 1);
    wait_sources(&s, &down_hash.to_hex(), 2);
    let out = tempfile::tempdir().unwrap();

    let start = Instant::now();
    let gets: Vec<Get> = (0..2)
        .map(|i| {
            Get::start_with(
                &s,
                &up_hash.to_hex(),
                &out.path().join(format!("up{i}.bin")),
                &["--user", &format!("dl{i}")],
                &[],
            )
        })
        .collect();
    for g in gets {
        g.finish();
    }
    let took = start.elapsed().as_secs_f64();
    let floor = (2 * up.len() as u64 - burst) as f64 / rate as f64;
    assert!(
        took >= floor * 0.95,
        "300 kB through a 100 KiB/s upload cap took {took:.2} s (< {floor:.2} s)"
    );
    for i in 0..2 {
        assert_eq!(
            std::fs::read(out.path().join(format!("up{i}.bin"))).unwrap(),
            up
        );
    }

    let dest = out.path().join("down.bin");
    let get_stats = out.path().join("get-stats.json");
    let start = Instant::now();
    let report = Get::start_with(
        &s,
        &down_hash.to_hex(),
        &dest,
        &["--stats-file", get_stats.to_str().unwrap()],
        &["--download-rate", "100k"],
    )
    .finish();
    let took = start.elapsed().as_secs_f64();
    let floor = (down.len() as u64 - burst) as f64 / rate as f64;
    assert!(
        took >= floor * 0.95,
        "200 kB under a 100 KiB/s download cap took {took:.2} s (< {floor:.2} s)"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), down);
    let senders = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .count();
    assert_eq!(senders, 2, "the cap spans both sources: {report}");
    // The client's own stats file (the lab counts the downloader's traffic from it).
    let c = common::stats::StatsSnapshot::read_json(&get_stats).expect("get writes its stats");
    assert_eq!((c.proto.as_str(), c.role.as_str()), ("kazaa", "client"));
    // At least the file (endgame duplicates of the last blocks count too).
    assert!(
        c.transfers.download_bytes >= down.len() as u64,
        "{:?}",
        c.transfers
    );
    assert_eq!(c.messages["query"].out_count, 1, "{:?}", c.messages);
}

/// Push beyond the directly linked SNs: SN1 – SN2 – SN3 in a chain, the firewalled source on SN3, the
/// downloader on SN1 (no link to SN3). Each 0x0D follows the reverse path of SN3's result wave.
#[test]
fn push_crosses_two_supernode_hops() {
    let chain = |peer: &Daemon| {
        Daemon::builder_path(BIN)
            .args(["--role", "supernode", "--listen", "127.0.0.1:0"])
            .args(["--peer", &peer.addr().to_string()])
            .spawn()
            .expect("supernode starts")
    };
    let s1 = sn();
    let s2 = chain(&s1);
    let s3 = chain(&s2);
    let data = content(40_000, 13);
    let hash = uuhash(&data);
    let dir = share_dir("Far.mp3", &data);
    let _o = on(&s3, dir.path(), "far", &["--firewalled"]);
    wait_sources(&s1, &hash.to_hex(), 1);
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("far.mp3");
    let report = Get::start(&s1, &hash.to_hex(), &dest).finish();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(report["sources"].as_array().unwrap().len(), 1, "{report}");
}

/// kazaa.md §7 case 15, second half: a copy corrupted outside the UUHash's samples (byte 400,000 of a
/// 1 MiB file) has the same ContentHash, so a download by hash accepts it; a `magnet:?xt=urn:kzhash:`
/// link also checks the MD5 tree and refuses it, and with an honest source beside it the download
/// ends with the real bytes.
#[test]
fn kzhash_magnet_refuses_a_same_uuhash_corrupt_copy_case_15() {
    let s = sn();
    let real = content(1 << 20, 21);
    let mut corrupt = real.clone();
    corrupt[400_000] ^= 0xFF;
    let hash = uuhash(&real);
    assert_eq!(uuhash(&corrupt), hash, "outside the UUHash's samples");
    let magnet = KzMagnet {
        kzhash: KzHash::new(hash, md5_tree(&real)),
        name: Some("Hit.mp3".into()),
    }
    .to_uri();
    let bad_dir = share_dir("Hit.mp3", &corrupt);
    let _bad = on(&s, bad_dir.path(), "polluter", &[]);
    wait_sources(&s, &hash.to_hex(), 1);
    let out = tempfile::tempdir().unwrap();

    let by_hash = out.path().join("by-hash.mp3");
    Get::start(&s, &hash.to_hex(), &by_hash).finish();
    assert_eq!(
        std::fs::read(&by_hash).unwrap(),
        corrupt,
        "the UUHash alone lets the corrupt copy through"
    );

    let refused = out.path().join("refused.mp3");
    let (ok, _, err) = Get::start(&s, &magnet, &refused).exit();
    assert!(!ok, "the kzhash must refuse the corrupt copy");
    assert!(err.contains("does not match"), "{err}");
    assert!(!refused.exists(), "nothing unverified is put in place");

    let good_dir = share_dir("Hit.mp3", &real);
    let _good = on(&s, good_dir.path(), "honest", &[]);
    wait_sources(&s, &hash.to_hex(), 2);
    let dest = out.path().join("hit.mp3");
    let report = Get::start(&s, &magnet, &dest).finish();
    assert_eq!(std::fs::read(&dest).unwrap(), real, "{report}");
}

/// A download killed mid-way resumes from its state file when started again (issue 5: "resume after
/// a restart"): the second run reports blocks already done and the file matches its UUHash.
#[test]
fn get_resumes_after_a_restart() {
    let s = sn();
    let data = content(400_000, 22);
    let hash = uuhash(&data);
    let dir = share_dir("Long.avi", &data);
    let _o = on(&s, dir.path(), "source", &[]);
    wait_sources(&s, &hash.to_hex(), 1);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("long.avi");
    let state = out.path().join("long.avi.state");
    // ~6 s at 64 KiB/s; the state file appears at the first save (2 s in, blocks done).
    let first = Get::start_with(&s, &hash.to_hex(), &dest, &[], &["--download-rate", "64k"]);
    let start = Instant::now();
    while !state.exists() {
        assert!(start.elapsed() < DEADLINE, "no state file was saved");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(first);
    assert!(!dest.exists(), "killed before the end");
    let report = Get::start(&s, &hash.to_hex(), &dest).finish();
    assert!(
        report["blocks_resumed"].as_u64().unwrap() > 0,
        "the second run starts from the saved blocks: {report}"
    );
    assert!(
        report["blocks_fetched"].as_u64().unwrap() < report["blocks"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

/// `get --max-sources`: the limit on simultaneous downloads from sources. With 1, three healthy
/// sources of the hash are found but only one is fetched from.
#[test]
fn max_sources_limits_the_parallel_downloads() {
    let s = sn();
    let data = content(120_000, 23);
    let hash = uuhash(&data);
    let _ons = same_file_on(&s, "Three.bin", &data, 3, "m", &[]);
    wait_sources(&s, &hash.to_hex(), 3);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("three.bin");
    let report = Get::start_with(&s, &hash.to_hex(), &dest, &[], &["--max-sources", "1"]).finish();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let srcs = report["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 3, "all three were found: {report}");
    let senders = srcs
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .count();
    assert_eq!(senders, 1, "one source at a time: {report}");
}
