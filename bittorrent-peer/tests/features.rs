//! Real processes on 127.0.0.1 (started with the shared `integration` harness): peer exchange
//! (BEP 11) finds a peer nobody told the leecher about, and is off for private torrents (BEP 27);
//! `--upload-rate` / `--download-rate` hold a transfer to its cap; `--seed-time` keeps a finished
//! leecher serving others for a while, then exits 0.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::stats::StatsSnapshot;
use integration::Daemon;
use support::{leecher, make_torrent, payload, seeder, start_peer, BIN};

const LIMIT: Duration = Duration::from_secs(30);

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A payload in `dir/src/NAME` and its .torrent.
fn content(dir: &Path, name: &str, len: usize, private: bool) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = payload(len, len as u64);
    std::fs::write(src.join(name), &data).unwrap();
    let t = dir.join(format!("{name}.torrent"));
    if private {
        let o = std::process::Command::new(BIN)
            .args(["create", src.join(name).to_str().unwrap(), "--private"])
            .args(["--piece-size", "32768", "-o", t.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success());
    } else {
        make_torrent(&src.join(name), &t, None, 32 << 10);
    }
    (t, data)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Seeder S, a second seeder T that dialled S, and a leecher L given only S: L and T must find each
/// other through S's `ut_pex` messages. With a private torrent nobody may exchange peers.
fn pex_swarm(private: bool) -> (StatsSnapshot, StatsSnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let (t, data) = content(dir.path(), "pex.bin", 600_000, private);
    let src = dir.path().join("src");
    let s_stats = dir.path().join("s.json");
    let origin = seeder(s(&t), s(&src), &["--stats-file", s(&s_stats)]);
    let s_addr = origin.addr().to_string();
    let third = seeder(s(&t), s(&src), &["--peer", &s_addr]);
    let t_addr = third.addr().to_string();
    wait_until("T connected to S", LIMIT, || {
        origin.stats().gauges.get("peers").copied() == Some(1)
    });
    let out = dir.path().join("out");
    let l_stats = dir.path().join("l.json");
    let leecher = leecher(
        s(&t),
        s(&out),
        &s_addr,
        &["--seed", "--stats-file", s(&l_stats)],
    );
    let file = out.join("pex.bin");
    wait_until("L downloaded the file", LIMIT, || {
        std::fs::read(&file).ok().as_deref() == Some(&data[..])
    });
    // L was given only S, and there are no trackers: a second connection can only be T, found by PEX
    // (L dials the contact S sent, or T dials L first after hearing of L from S: either way).
    // The per-peer and PEX figures are published once a second: wait for both.
    let knows_t = |st: &StatsSnapshot| {
        st.gauges.get("peers").copied() == Some(2)
            && st.extra["pex"]["received"].as_u64() >= Some(1)
    };
    if !private {
        let mut last = None;
        let end = Instant::now() + LIMIT;
        while !last.as_ref().is_some_and(knows_t) {
            assert!(
                Instant::now() < end,
                "L never connected to T ({t_addr}), learnt by PEX: {:?}",
                last.map(|l| l.extra)
            );
            std::thread::sleep(Duration::from_millis(100));
            last = Some(leecher.stats());
        }
    } else {
        // S's PEX tick runs every second; give it several chances to (wrongly) tell L about T.
        std::thread::sleep(Duration::from_secs(3));
    }
    let l = leecher.stats();
    let st = origin.stats();
    assert_eq!(knows_t(&l), !private, "L connected to T: {:?}", l.extra);
    (l, st)
}

#[test]
fn leecher_learns_a_third_peer_by_pex() {
    let (l, s) = pex_swarm(false);
    assert!(
        s.extra["pex"]["sent"].as_u64().unwrap() >= 1,
        "{:?}",
        s.extra
    );
    assert!(l.extra["pex"]["received"].as_u64().unwrap() >= 1);
    assert!(l.extra["pex"]["learned"].as_u64().unwrap() >= 1);
}

#[test]
fn private_torrents_exchange_no_peers() {
    let (l, s) = pex_swarm(true);
    assert_eq!(s.extra["pex"]["enabled"], false);
    assert_eq!(s.extra["pex"]["sent"], 0);
    assert_eq!(l.extra["pex"]["received"], 0);
}

/// Seconds the leecher reported from its start to the last verified piece (`--json` summary).
fn summary_seconds(d: &Daemon) -> f64 {
    let line = d
        .stdout_lines()
        .into_iter()
        .find(|l| l.contains("\"complete\""))
        .expect("--json summary on stdout");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["complete"], true);
    v["seconds"].as_f64().unwrap()
}

/// 1 MiB through a 256 KiB/s cap (on the seeder's upload or the leecher's download) cannot take less
/// than about 4 s: the limiter's burst and one block per connection are all it may run ahead.
fn capped_transfer(seeder_args: &[&str], leecher_args: &[&str]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    const LEN: usize = 1 << 20;
    let (t, data) = content(dir.path(), "capped.bin", LEN, false);
    let src = dir.path().join("src");
    let mut a = vec![
        "seed",
        s(&t),
        "--dir",
        s(&src),
        "--listen",
        "127.0.0.1:0",
        "--quiet",
    ];
    a.extend_from_slice(seeder_args);
    let seeder = start_peer(&a);
    let s_addr = seeder.addr().to_string();
    let out = dir.path().join("out");
    let mut a = vec![
        "download",
        s(&t),
        "--out",
        s(&out),
        "--peer",
        &s_addr,
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--json",
    ];
    a.extend_from_slice(leecher_args);
    let mut leecher = start_peer(&a);
    assert!(leecher.wait_exit(LIMIT).unwrap().success());
    assert_eq!(std::fs::read(out.join("capped.bin")).unwrap(), data);
    // The stdout reader thread may lag the exit by a moment.
    let mut secs = None;
    wait_until("the --json summary", Duration::from_secs(5), || {
        secs = std::panic::catch_unwind(|| summary_seconds(&leecher)).ok();
        secs.is_some()
    });
    let secs = secs.unwrap();
    let floor = (LEN as f64 - 2.0 * 64.0 * 1024.0) / (256.0 * 1024.0);
    assert!(
        secs >= floor,
        "1 MiB at 256 KiB/s took {secs:.2} s, under the {floor:.2} s the cap allows"
    );
    eprintln!("1 MiB through a 256 KiB/s cap: {secs:.2} s (floor {floor:.2} s)");
    secs
}

#[test]
fn upload_rate_caps_the_seeder() {
    capped_transfer(&["--upload-rate", "256k"], &[]);
}

#[test]
fn download_rate_caps_the_leecher() {
    capped_transfer(&[], &["--download-rate", "256k"]);
}

#[test]
fn seed_time_keeps_a_finished_leecher_serving_then_exits() {
    // Private torrent: no PEX, so the second leecher, told only the first, can learn of no other source.
    let dir = tempfile::tempdir().unwrap();
    let (t, data) = content(dir.path(), "st.bin", 300_000, true);
    let src = dir.path().join("src");
    let mut origin = seeder(s(&t), s(&src), &[]);
    let out1 = dir.path().join("out1");
    let started = Instant::now();
    let mut first = leecher(
        s(&t),
        s(&out1),
        &origin.addr().to_string(),
        &["--seed-time", "8"],
    );
    wait_until("first leecher complete", LIMIT, || {
        std::fs::read(out1.join("st.bin")).ok().as_deref() == Some(&data[..])
    });
    let completed = Instant::now();
    // The second leecher starts at once (the seed time is the window it has to reach the first), and
    // can only get the file from the first, now seeding.
    let out2 = dir.path().join("out2");
    let mut second = leecher(s(&t), s(&out2), &first.addr().to_string(), &[]);
    origin.terminate(Duration::from_secs(5)).unwrap();
    assert!(second.wait_exit(LIMIT).unwrap().success());
    assert_eq!(std::fs::read(out2.join("st.bin")).unwrap(), data);
    let st = first.wait_exit(LIMIT).unwrap();
    assert!(st.success(), "--seed-time ends with exit 0, got {st}");
    // It stayed at least the seed time after completing (completion was seen after it happened).
    assert!(
        completed.elapsed() + Duration::from_millis(300) >= Duration::from_secs(8),
        "exited {:?} after completion (started {:?} ago)",
        completed.elapsed(),
        started.elapsed()
    );
}

#[test]
fn show_prints_a_torrent_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("album");
    std::fs::create_dir_all(root.join("cd2")).unwrap();
    std::fs::write(root.join("one.bin"), payload(40_000, 1)).unwrap();
    std::fs::write(root.join("cd2/two.bin"), payload(100_001, 2)).unwrap();
    let t = dir.path().join("album.torrent");
    let o = integration::run_program(
        Path::new(BIN),
        &[
            "create",
            root.to_str().unwrap(),
            "-o",
            t.to_str().unwrap(),
            "--piece-size",
            "32768",
            "--tracker",
            "http://127.0.0.1:1/announce",
            "--tracker",
            "udp://127.0.0.1:2",
            "--comment",
            "for the show test",
            "--private",
        ],
        LIMIT,
    )
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = bittorrent_peer::metainfo::Metainfo::load(&t).unwrap();
    let hash = meta.info_hash.to_hex();
    let show = |json: bool| {
        let mut args = vec!["show", t.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let o = integration::run_program(Path::new(BIN), &args, LIMIT).unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };

    let text = show(false);
    for line in [
        "name:       album".to_owned(),
        format!("info_hash:  {hash}"),
        "size:       ".to_owned(),
        "(140001 bytes)".to_owned(),
        "pieces:     5 x ".to_owned(),
        "private:    yes".to_owned(),
        "tier 0:     http://127.0.0.1:1/announce".to_owned(),
        "tier 1:     udp://127.0.0.1:2".to_owned(),
        "comment:    for the show test".to_owned(),
        "  album/one.bin  (40000 bytes)".to_owned(),
        "  album/cd2/two.bin  (100001 bytes)".to_owned(),
        format!("magnet:     {}", meta.magnet()),
    ] {
        assert!(text.contains(&line), "{line:?} missing from:\n{text}");
    }

    let v: serde_json::Value = serde_json::from_str(&show(true)).unwrap();
    assert_eq!(v["name"], "album");
    assert_eq!(v["info_hash"], hash);
    assert_eq!(v["total_length"], 140_001);
    assert_eq!(v["piece_length"], 32_768);
    assert_eq!(v["pieces"], 5);
    assert_eq!(v["private"], true);
    assert_eq!(
        v["trackers"],
        serde_json::json!([["http://127.0.0.1:1/announce"], ["udp://127.0.0.1:2"]])
    );
    let mut files: Vec<(String, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ("album/cd2/two.bin".to_owned(), 100_001),
            ("album/one.bin".to_owned(), 40_000)
        ]
    );
    assert_eq!(v["magnet"], meta.magnet());
    assert!(v["magnet"].as_str().unwrap().contains(&hash));

    // Not a torrent: non-zero exit with a one-line reason.
    let junk = dir.path().join("junk.torrent");
    std::fs::write(&junk, b"not bencode").unwrap();
    let o =
        integration::run_program(Path::new(BIN), &["show", junk.to_str().unwrap()], LIMIT).unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The stats files list the peer wire links (not the tracker): the leecher lists the seeder it dialled,
/// the seeder the leecher's socket as incoming; once the leecher stops, the seeder's next snapshot no
/// longer lists it (the union `neighbours_seen` still does).
#[test]
fn stats_list_the_peer_wire_links_held() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = content(dir.path(), "links.bin", 300_000, false);
    let src = dir.path().join("src");
    let (s_stats, l_stats) = (dir.path().join("s.json"), dir.path().join("l.json"));
    let origin = seeder(s(&t), s(&src), &["--stats-file", s(&s_stats)]);
    let s_addr = origin.addr().to_string();
    let out = dir.path().join("out");
    // Capped, so the link is still up while the test looks.
    let mut l = leecher(
        s(&t),
        s(&out),
        &s_addr,
        &["--download-rate", "16k", "--stats-file", s(&l_stats)],
    );
    wait_until("L lists S as the peer it dialled", LIMIT, || {
        let n = l.stats().neighbours;
        n.len() == 1 && n[0].addr == s_addr && n[0].dir == "out" && n[0].kind == "peer"
    });
    wait_until("S lists L's socket", LIMIT, || {
        let n = origin.stats().neighbours;
        n.len() == 1 && n[0].dir == "in" && n[0].addr != s_addr
    });
    l.terminate(LIMIT).unwrap();
    wait_until("S no longer lists L", LIMIT, || {
        origin.stats().neighbours.is_empty()
    });
    assert_eq!(origin.stats().neighbours_seen.len(), 1);
}

/// Two leechers draining one `--upload-rate` seeder share its cap: when the first finishes, the
/// second has had a real part of the file too. (Private torrent: they cannot meet by PEX and trade.)
/// Before the rate tick rotated the order in which it wakes writers, the first writer in map order
/// took every refill while its queue lasted and the other leecher got nothing.
#[test]
fn an_upload_cap_is_shared_by_the_leechers() {
    const LEN: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (t, data) = content(dir.path(), "shared.bin", LEN, true);
    let src = dir.path().join("src");
    let origin = seeder(s(&t), s(&src), &["--upload-rate", "512k"]);
    let s_addr = origin.addr().to_string();
    let leechers: Vec<(Daemon, PathBuf)> = ["a", "b"]
        .iter()
        .map(|n| {
            let (out, st) = (dir.path().join(n), dir.path().join(format!("{n}.json")));
            let d = leecher(
                s(&t),
                s(&out),
                &s_addr,
                &["--seed", "--no-trackers", "--stats-file", s(&st)],
            );
            (d, out.join("shared.bin"))
        })
        .collect();
    let mut first = None;
    wait_until("a leecher finished", LIMIT, || {
        first = leechers
            .iter()
            .position(|l| std::fs::read(&l.1).ok().as_deref() == Some(&data[..]));
        first.is_some()
    });
    let (other, _) = &leechers[1 - first.unwrap()];
    let got = other.stats().transfers.download_bytes;
    eprintln!("when one leecher finished, the other had {got} of {LEN} bytes");
    assert!(
        got >= LEN as u64 / 4,
        "the other leecher had only {got} of {LEN} bytes"
    );
}
