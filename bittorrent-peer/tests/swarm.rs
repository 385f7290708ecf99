//! Our seeder and leechers as real processes on 127.0.0.1: single and multi-file torrents, a flash
//! crowd through a tracker, resume, and a lying peer that gets banned by IP (its host refused and not
//! dialled on any port) while the download still completes.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittorrent_peer::codec::peer::{Handshake, Msg};
use bittorrent_peer::metainfo::Metainfo;
use bittorrent_peer::protocol::bitfield::Bitfield;
use bittorrent_peer::types::PeerId;
use common::stats::StatsSnapshot;
use integration::{run_program, wait_for_file};
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn multi_file_torrent_from_our_seeder_to_our_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src/album");
    std::fs::create_dir_all(root.join("disc2")).unwrap();
    let files = [
        ("a.bin", 700_001usize),
        ("disc2/b.bin", 1_234_567),
        ("empty", 0),
        ("z.txt", 33),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        std::fs::write(root.join(name), payload(*len, i as u64)).unwrap();
    }
    let t = make_torrent(&root, &dir.path().join("album.torrent"), None, 32 << 10);
    let src = dir.path().join("src");
    let seed_stats = dir.path().join("seed.json");
    let seed = seeder(
        t.to_str().unwrap(),
        src.to_str().unwrap(),
        &["--stats-file", seed_stats.to_str().unwrap()],
    );
    let out = dir.path().join("out");
    let stats = dir.path().join("leech.json");
    let peer = seed.addr().to_string();
    let mut leech = leecher(
        t.to_str().unwrap(),
        out.to_str().unwrap(),
        &peer,
        &["--stats-file", stats.to_str().unwrap()],
    );
    assert!(leech.wait_exit(LIMIT).unwrap().success());
    for (name, _) in files {
        assert_eq!(
            std::fs::read(out.join("album").join(name)).unwrap(),
            std::fs::read(root.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let s = StatsSnapshot::read_json(&stats).unwrap();
    let total: u64 = files.iter().map(|f| f.1 as u64).sum();
    assert_eq!(
        s.transfers.download_bytes, total,
        "every byte fetched exactly once"
    );
    assert_eq!(
        s.messages["piece"].in_bytes,
        total + 13 * s.messages["piece"].in_count
    );
    assert!(s.messages["request"].out_count >= s.messages["piece"].in_count);
    assert_eq!(s.gauges["pieces_have"], s.gauges["pieces_total"]);
    assert_eq!(
        s.control.in_count + s.messages["piece"].in_count,
        s.total().in_count,
        "piece is payload, not control"
    );
    // The lab's per-peer figures: everything came from the seeder's address (the leecher dialled it),
    // block by block (16 KiB, the last one short) and piece by piece (32 KiB).
    let pieces = total.div_ceil(32 << 10);
    let from_seed = &s.extra["peers"][&peer];
    assert_eq!(from_seed["bytes_down"], total, "{:?}", s.extra["peers"]);
    assert_eq!(from_seed["blocks_from"], total.div_ceil(16 << 10));
    assert_eq!(from_seed["pieces_from"], pieces);
    assert_eq!(from_seed["bytes_up"], 0);
    assert_eq!(s.extra["peers"].as_object().unwrap().len(), 1);
    assert!(s.extra["choke"]["rounds"].as_u64() >= Some(1));
    assert_eq!(s.extra["choke"]["unchokes"], 0, "the seeder wants nothing");
    // The seeder's side: one peer got every byte, after one unchoke decision.
    let end = Instant::now() + LIMIT;
    let seed_side = loop {
        // The figures are refreshed once a second: wait for the departed leecher's totals.
        let st = seed.stats();
        let up: Vec<u64> = st.extra["peers"]
            .as_object()
            .map(|m| m.values().filter_map(|r| r["bytes_up"].as_u64()).collect())
            .unwrap_or_default();
        if up == [total] || Instant::now() > end {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let peers = seed_side.extra["peers"].as_object().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let only = peers.values().next().unwrap();
    assert_eq!(only["bytes_up"], total, "{peers:?}");
    assert_eq!(only["bytes_down"], 0);
    let choke = &seed_side.extra["choke"];
    assert_eq!(choke["unchokes"], 1, "{choke}");
    // A round falling between its `not interested` and its exit may choke the finished leecher.
    assert!(choke["chokes"].as_u64() <= Some(1), "{choke}");
    assert!(choke["rounds"].as_u64() >= Some(1), "{choke}");
}

#[test]
fn flash_crowd_through_a_tracker_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, announces) = mini_tracker();
    let (src, data, t) = one_file_torrent(
        dir.path(),
        "crowd.bin",
        3 << 20,
        42,
        Some(&tracker),
        64 << 10,
    );
    let ts = t.to_str().unwrap().to_owned();
    let _seed = seeder(&ts, src.to_str().unwrap(), &[]);
    // Leechers keep seeding (--seed) so they can trade among themselves.
    let mut leechers = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("out{i}"));
        let p = start_peer(&[
            "download",
            &ts,
            "--out",
            out.to_str().unwrap(),
            "--seed",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
        ]);
        leechers.push((p, out));
    }
    for (_, out) in &leechers {
        wait_for_file(&out.join("crowd.bin"), &data, LIMIT, "flash crowd leecher");
    }
    // Every leecher announced started and then completed.
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = announces.lock().unwrap().clone();
        let completed = log.iter().filter(|a| a.2 == "completed").count();
        let started = log.iter().filter(|a| a.2 == "started").count();
        if completed >= 3 && started >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "announces seen: {log:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(leechers);

    // Resume: a finished download with a data dir restarts from its resume file and fetches nothing.
    let out = dir.path().join("resume");
    let data_dir = dir.path().join("state");
    let seed2 = seeder(&ts, src.to_str().unwrap(), &["--no-trackers"]);
    let peer = seed2.addr().to_string();
    let run = |expect_resume: bool| {
        let summary = download_summary(
            &ts,
            out.to_str().unwrap(),
            &peer,
            &["--data-dir", data_dir.to_str().unwrap()],
        );
        assert_eq!(summary["resumed_from_file"], expect_resume, "{summary}");
        summary["downloaded"].as_u64().unwrap()
    };
    assert_eq!(run(false), data.len() as u64);
    assert_eq!(run(true), 0, "nothing fetched again");
    assert_eq!(std::fs::read(out.join("crowd.bin")).unwrap(), data);
}

/// A peer on `ip` that claims every piece and answers each request with garbage.
fn lying_peer(meta: Metainfo, ip: [u8; 4]) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let meta = meta.clone();
            std::thread::spawn(move || {
                let mut hs = [0u8; 68];
                if s.read_exact(&mut hs).is_err() {
                    return;
                }
                let mut mine = Handshake::new(meta.info_hash, PeerId(*b"-LIAR0-aaaaaaaaaaaaa"));
                mine.reserved = [0; 8];
                let mut out = bytes::BytesMut::new();
                let full = Bitfield::full(meta.info.num_pieces());
                Msg::Bitfield(full.as_bytes()).encode(&mut out);
                Msg::Unchoke.encode(&mut out);
                if s.write_all(&mine.to_bytes())
                    .and_then(|_| s.write_all(&out))
                    .is_err()
                {
                    return;
                }
                let mut buf = Vec::new();
                let mut b = [0u8; 65536];
                let junk = vec![0xAAu8; 1 << 17];
                loop {
                    let n = match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&b[..n]);
                    let mut used = 0;
                    let mut reply = bytes::BytesMut::new();
                    while let Ok(Some((m, len))) = Msg::decode(&buf[used..]) {
                        if let Msg::Request(r) = m {
                            Msg::Piece {
                                index: r.index,
                                begin: r.begin,
                                data: &junk[..r.len as usize],
                            }
                            .encode(&mut reply);
                        }
                        used += len;
                    }
                    buf.drain(..used);
                    if s.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A listener on `ip` that accepts, counts and closes every connection: shows whether a node dials it.
fn dial_counter(ip: [u8; 4]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, n)
}

/// Connects to `to` from the loopback address `from`, sends a handshake for `meta` with a peer id
/// nobody used yet, and returns what comes back before the node closes (at most its handshake).
fn handshake_from(from: [u8; 4], to: SocketAddr, meta: &Metainfo, id: &[u8; 20]) -> Vec<u8> {
    let mut s: TcpStream = integration::connect_from(to, from.into()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The node may close before reading: a failed write is an answer too.
    let _ = s.write_all(&Handshake::new(meta.info_hash, PeerId(*id)).to_bytes());
    let mut got = Vec::new();
    let mut b = [0u8; 68];
    while got.len() < b.len() {
        match s.read(&mut b[got.len()..]) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[got.len()..got.len() + n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("from {from:?}: neither answered nor closed: {e}"),
        }
    }
    got
}

#[test]
fn a_peer_sending_corrupt_data_is_banned_by_ip_and_the_download_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = one_file_torrent(dir.path(), "x.bin", 1 << 20, 7, None, 32 << 10);
    let meta = Metainfo::load(&t).unwrap();
    // The liar's host is 127.0.0.2; it has a second port there. A control host is 127.0.0.3.
    let liar = lying_peer(meta.clone(), [127, 0, 0, 2]).to_string();
    let (liar_other_port, liar_dials) = dial_counter([127, 0, 0, 2]);
    let (control, control_dials) = dial_counter([127, 0, 0, 3]);
    let out = dir.path().join("out");
    let stats = dir.path().join("s.json");
    let leech = leecher(
        t.to_str().unwrap(),
        out.to_str().unwrap(),
        &liar,
        &[
            "--peer",
            &liar_other_port.to_string(),
            "--peer",
            &control.to_string(),
            "--seed",
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    // At first the liar is the only source, so its garbage is certain to be tried. Banned only after
    // repeated failures: a sole sender's second bad piece.
    let end = Instant::now() + LIMIT;
    loop {
        let s = leech.stats();
        if s.errors.contains_key("banned_peer") {
            assert!(s.errors["hash_mismatch"] >= 2, "{:?}", s.errors);
            break;
        }
        assert!(
            Instant::now() < end,
            "the liar was never banned: {:?}",
            s.errors
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The honest seeder, started afterwards, dials the leecher itself (from 127.0.0.1).
    let leecher_addr = leech.addr();
    let _seed = seeder(
        t.to_str().unwrap(),
        src.to_str().unwrap(),
        &["--peer", &leecher_addr.to_string()],
    );
    wait_for_file(&out.join("x.bin"), &data, LIMIT, "leecher");
    // The banned host is refused before the handshake from any port and with a new peer id; another
    // host gets the handshake.
    let id = |c: u8| [c; 20];
    assert_eq!(
        handshake_from([127, 0, 0, 2], leecher_addr, &meta, &id(b'b')),
        Vec::<u8>::new(),
        "a reconnection from the banned IP is refused"
    );
    let hs = handshake_from([127, 0, 0, 4], leecher_addr, &meta, &id(b'c'));
    assert_eq!(hs.len(), 68, "another host is answered");
    assert_eq!(&hs[28..48], &meta.info_hash.0);
    // Nor is it dialled: every --peer is dialled again every 2 s while not connected, so the control
    // host keeps getting connections while the banned host's other port gets none after the ban.
    let wait_control = |n: usize| {
        let end = Instant::now() + LIMIT;
        while control_dials.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < end, "the control host is not dialled");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let c = control_dials.load(Ordering::SeqCst);
    wait_control(c + 1);
    let before = liar_dials.load(Ordering::SeqCst);
    assert!(before >= 1, "the other port was dialled before the ban");
    wait_control(c + 3);
    assert_eq!(
        liar_dials.load(Ordering::SeqCst),
        before,
        "the banned host was dialled again"
    );
    let s = leech.stats();
    assert_eq!(
        s.errors.get("banned_peer").copied(),
        Some(1),
        "{:?}",
        s.errors
    );
}

#[test]
fn magnet_link_fetches_metadata_from_the_seeder_then_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src/mag");
    std::fs::create_dir_all(&root).unwrap();
    // Enough files for the info dictionary to span several 16 KiB metadata pieces.
    for i in 0..700 {
        std::fs::write(
            root.join(format!("file-with-a-long-name-{i:04}.bin")),
            payload(100 + i, i as u64),
        )
        .unwrap();
    }
    let t = make_torrent(&root, &dir.path().join("mag.torrent"), None, 16 << 10);
    let meta = Metainfo::load(&t).unwrap();
    assert!(
        meta.info_bytes.len() > 2 * 16384,
        "metadata spans pieces: {}",
        meta.info_bytes.len()
    );
    let seed = seeder(
        t.to_str().unwrap(),
        dir.path().join("src").to_str().unwrap(),
        &[],
    );
    let magnet = format!("{}&x.pe={}", meta.magnet(), seed.addr());
    let out = dir.path().join("out");
    let mut leech = start_peer(&[
        "download",
        &magnet,
        "--out",
        out.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--no-trackers",
    ]);
    assert!(leech.wait_exit(LIMIT).unwrap().success());
    for i in [0usize, 350, 699] {
        let name = format!("file-with-a-long-name-{i:04}.bin");
        assert_eq!(
            std::fs::read(out.join("mag").join(&name)).unwrap(),
            payload(100 + i, i as u64)
        );
    }
    // A magnet link nobody can serve fails with a reason instead of hanging.
    let o = run_program(
        Path::new(BIN),
        &[
            "download",
            "magnet:?xt=urn:btih:0000000000000000000000000000000000000000",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--no-trackers",
            "--listen",
            "127.0.0.1:0",
        ],
        LIMIT,
    )
    .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("metadata"));
}

#[test]
fn a_partial_download_killed_and_restarted_fetches_only_the_missing_pieces() {
    const PL: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = one_file_torrent(dir.path(), "p.bin", 32 * PL as usize, 11, None, PL);
    let ts = t.to_str().unwrap();
    let seed = seeder(ts, src.to_str().unwrap(), &["--no-trackers"]);
    let peer = seed.addr().to_string();
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let stats = dir.path().join("first.json");
    // 2 MiB at 256 KiB/s takes 8 s: slow enough to be killed part way.
    let first = leecher(
        ts,
        out.to_str().unwrap(),
        &peer,
        &[
            "--no-trackers",
            "--download-rate",
            "256k",
            "--data-dir",
            state.to_str().unwrap(),
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    let mut had = 0;
    let ok = integration::eventually(LIMIT, || {
        had = first
            .stats()
            .gauges
            .get("pieces_have")
            .copied()
            .unwrap_or(0);
        had >= 4
    });
    assert!(ok, "the first run never verified 4 pieces");
    first.signal(libc::SIGKILL).unwrap();
    drop(first);
    let had = had as u64;
    assert!(had < 32, "killed before the end ({had} pieces)");

    // The restart re-hashes what is on disk (no resume file after SIGKILL) and fetches the rest.
    let stats2 = dir.path().join("second.json");
    let summary = download_summary(
        ts,
        out.to_str().unwrap(),
        &peer,
        &[
            "--data-dir",
            state.to_str().unwrap(),
            "--stats-file",
            stats2.to_str().unwrap(),
        ],
    );
    assert_eq!(summary["resumed_from_file"], false, "{summary}");
    let fetched = summary["downloaded"].as_u64().unwrap();
    eprintln!("{had} pieces verified before the kill; the restart fetched {fetched} bytes");
    let s = StatsSnapshot::read_json(&stats2).unwrap();
    assert_eq!(s.transfers.download_bytes, fetched);
    assert!(fetched > 0, "the killed run was not finished");
    assert!(
        fetched <= (32 - had) * PL,
        "fetched {fetched} bytes, but {had} of 32 pieces were verified before the kill"
    );
    assert_eq!(
        fetched % PL,
        0,
        "whole missing pieces, each once: {fetched}"
    );
    // Pieces fetched = requests answered: none of the pieces found on disk was asked for.
    assert_eq!(s.messages["piece"].in_count, fetched / (16 << 10));
    assert_eq!(std::fs::read(out.join("p.bin")).unwrap(), data);
}

/// Connects to `node` as a peer of `meta`'s torrent, sends `bad` after the handshake and returns
/// whether the node closed the connection within `limit` (it may send its own messages first).
fn rejected_after(node: SocketAddr, meta: &Metainfo, id: u8, bad: &[u8]) -> bool {
    let mut s = TcpStream::connect(node).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let hs = Handshake::new(meta.info_hash, PeerId([id; 20]));
    s.write_all(&hs.to_bytes()).unwrap();
    if s.write_all(bad).is_err() {
        return true;
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut b = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn peers_breaking_the_protocol_are_dropped_while_a_transfer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = one_file_torrent(dir.path(), "w.bin", 2 << 20, 5, None, 64 << 10);
    let meta = Metainfo::load(&t).unwrap();
    let seed_stats = dir.path().join("seed.json");
    // 2 MiB at 512 KiB/s: the honest download is under way while the bad peers come and go.
    let mut seed = seeder(
        t.to_str().unwrap(),
        src.to_str().unwrap(),
        &[
            "--no-trackers",
            "--upload-rate",
            "512k",
            "--stats-file",
            seed_stats.to_str().unwrap(),
        ],
    );
    let out = dir.path().join("out");
    let leech_stats = dir.path().join("leech.json");
    let mut leech = leecher(
        t.to_str().unwrap(),
        out.to_str().unwrap(),
        &seed.addr().to_string(),
        &[
            "--no-trackers",
            "--stats-file",
            leech_stats.to_str().unwrap(),
        ],
    );
    let n = meta.info.num_pieces();
    let msg = |len: u32, id: u8, body: &[u8]| {
        let mut m = len.to_be_bytes().to_vec();
        m.push(id);
        m.extend_from_slice(body);
        m
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "length prefix over the limit",
            (u32::MAX >> 1).to_be_bytes().to_vec(),
        ),
        ("have with a 2-byte body", msg(3, 4, &[0, 0])),
        ("bitfield of the wrong size", msg(1 + 1, 5, &[0xff])),
        ("have of a piece out of range", msg(5, 4, &n.to_be_bytes())),
        (
            "request over the block limit",
            msg(13, 6, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]),
        ),
        ("unknown message id", msg(1, 99, &[])),
    ];
    let seed_addr = seed.addr();
    for (i, (what, bad)) in cases.iter().enumerate() {
        assert!(
            rejected_after(seed_addr, &meta, 0x40 + i as u8, bad),
            "{what}: the seeder kept the connection"
        );
    }
    assert!(leech.wait_exit(LIMIT).unwrap().success());
    assert_eq!(std::fs::read(out.join("w.bin")).unwrap(), data);
    assert!(seed.terminate(Duration::from_secs(10)).unwrap().success());
    let s = StatsSnapshot::read_json(&seed_stats).unwrap();
    assert!(
        s.errors.get("peer_protocol").copied().unwrap_or(0) >= cases.len() as u64,
        "{:?}",
        s.errors
    );
    assert_eq!(
        s.transfers.upload_bytes,
        data.len() as u64,
        "one honest copy"
    );
    let l = StatsSnapshot::read_json(&leech_stats).unwrap();
    assert_eq!(l.errors.get("peer_protocol"), None, "{:?}", l.errors);
}

#[test]
fn a_plain_download_announces_started_completed_then_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, announces) = mini_tracker();
    let (src, data, t) =
        one_file_torrent(dir.path(), "a.bin", 256 << 10, 3, Some(&tracker), 32 << 10);
    let ts = t.to_str().unwrap();
    let seed = seeder(ts, src.to_str().unwrap(), &[]);
    let out = dir.path().join("out");
    // No --seed: the leecher exits as soon as the last piece is verified.
    let mut leech = leecher(ts, out.to_str().unwrap(), &seed.addr().to_string(), &[]);
    let port = leech.addr().port();
    assert!(leech.wait_exit(LIMIT).unwrap().success());
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), data);
    let events: Vec<String> = announces
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.1 == port && !a.2.is_empty())
        .map(|a| a.2.clone())
        .collect();
    assert_eq!(events, ["started", "completed", "stopped"]);
    // The seeder was complete from the start: it never announces `completed`.
    let seed_port = seed.addr().port();
    assert!(!announces
        .lock()
        .unwrap()
        .iter()
        .any(|a| a.1 == seed_port && a.2 == "completed"));
}
