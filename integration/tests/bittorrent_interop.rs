//! `bittorrent-peer` with real clients and trackers from Debian, on 127.0.0.1 (and, for Transmission as
//! a leecher, in a network namespace this test creates):
//!
//! - aria2c and libtorrent (python3-libtorrent through /usr/bin/python3) leech from our seeder and seed to
//!   our leecher; a magnet link is resolved (BEP 9) from each of them;
//! - Transmission seeds to our leecher on loopback, and leeches from our seeder inside a namespace (it
//!   never dials loopback peers) through our tracker;
//! - a mixed swarm where the leechers must trade: our seeder, rate-capped and known to libtorrent only,
//!   aria2c and our leecher finding their peers through the workspace's `tracker` (our leecher announces
//!   over UDP, BEP 15; the others over HTTP); our leecher's per-peer stats show its bytes came from the
//!   other leechers;
//! - Debian's `opentracker` as the only way our seeder and leecher find each other (HTTP and UDP);
//! - `transmission-show` reads our .torrent, we read `mktorrent`'s; tshark decodes our traffic as
//!   BitTorrent with no malformed packets.
//!
//! Every download is compared byte for byte with the original. Payloads are small (a few MiB).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bittorrent_peer::metainfo::Metainfo;
use integration::capture::Capture;
use integration::netns::Netns;
use integration::{free_port, payload, run_tool, wait_for_file, Daemon};

const LIMIT: Duration = Duration::from_secs(90);

const LIBTORRENT: &str = r#"
import sys, time
import libtorrent as lt
mode, torrent, path, port = sys.argv[1:5]
peers = sys.argv[5:]
ses = lt.session({
    'listen_interfaces': '127.0.0.1:%s' % port,
    'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
    'allow_multiple_connections_per_ip': True,
    'enable_outgoing_utp': False, 'enable_incoming_utp': False,
    'alert_mask': 0,
})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(torrent)
atp.save_path = path
h = ses.add_torrent(atp)
deadline = time.time() + 80
while time.time() < deadline:
    for p in peers:
        host, p_port = p.rsplit(':', 1)
        h.connect_peer((host, int(p_port)))
    peers = [] if mode == 'seed' else peers
    s = h.status()
    if mode == 'leech' and s.is_seeding:
        print('done', flush=True)
        sys.exit(0)
    time.sleep(0.2)
sys.exit(0 if mode == 'seed' else 1)
"#;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `dir/src/NAME` with `len` bytes; returns (dir/src, bytes).
fn content(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = payload(len, len as u64);
    std::fs::write(src.join(name), &data).unwrap();
    (src, data)
}

/// `dir/src/NAME` with `len` bytes and its .torrent (`dir/NAME.torrent`): (dir/src, bytes, torrent).
fn torrent_fixture(
    dir: &Path,
    name: &str,
    len: usize,
    trackers: &[&str],
    piece: u64,
) -> (PathBuf, Vec<u8>, PathBuf) {
    let (src, data) = content(dir, name, len);
    let t = make_torrent(
        &src.join(name),
        &dir.join(format!("{name}.torrent")),
        trackers,
        piece,
    );
    (src, data, t)
}

/// One payload and two .torrent files for it (same info_hash): one announcing to `http`, one to `udp`;
/// `extra` goes to `bittorrent-peer create` (`--private`).
fn http_and_udp_torrents(
    dir: &Path,
    name: &str,
    len: usize,
    http: SocketAddr,
    udp: SocketAddr,
    extra: &[&str],
) -> (PathBuf, Vec<u8>, PathBuf, PathBuf) {
    let (src, data) = content(dir, name, len);
    let make = |kind: &str, url: String| {
        make_torrent_with(
            &src.join(name),
            &dir.join(format!("{kind}.torrent")),
            &[&url],
            64 << 10,
            extra,
        )
    };
    let http_t = make("http", format!("http://{http}/announce"));
    let udp_t = make("udp", format!("udp://{udp}"));
    (src, data, http_t, udp_t)
}

/// `bittorrent-peer create` with one tier per tracker.
fn make_torrent(content: &Path, out: &Path, trackers: &[&str], piece: u64) -> PathBuf {
    make_torrent_with(content, out, trackers, piece, &[])
}

/// `bittorrent-peer create` with one tier per tracker and `extra` options.
fn make_torrent_with(
    content: &Path,
    out: &Path,
    trackers: &[&str],
    piece: u64,
    extra: &[&str],
) -> PathBuf {
    let piece = piece.to_string();
    let mut args = vec!["create", s(content), "-o", s(out), "--piece-size", &piece];
    for t in trackers {
        args.extend_from_slice(&["--tracker", t]);
    }
    args.extend_from_slice(extra);
    let o = run_tool("bittorrent-peer", &args, Duration::from_secs(30)).unwrap();
    assert!(
        o.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}

/// Our leecher fetches from `peer` twice: with the .torrent (`extra` options), then with a magnet link
/// carrying `peer` as `x.pe` (metadata by BEP 9 from that peer, no trackers).
fn leech_torrent_then_magnet(
    t: &Path,
    dir: &Path,
    peer: &str,
    extra: &[&str],
    name: &str,
    want: &[u8],
) {
    our_leecher(s(t), &dir.join("ours-out"), extra, name, want);
    let magnet = format!("{}&x.pe={peer}", Metainfo::load(t).unwrap().magnet());
    our_leecher(
        &magnet,
        &dir.join("magnet-out"),
        &["--no-trackers"],
        name,
        want,
    );
}

fn ours(args: &[&str]) -> Daemon {
    Daemon::builder("bittorrent-peer")
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("bittorrent-peer {args:?}: {e:#}"))
}

/// A foreign program that prints no readiness line.
fn program(cmd: &str, args: &[&str]) -> Daemon {
    Daemon::builder_path(cmd)
        .args(args)
        .expect_listening(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e:#}"))
}

fn our_seeder(t: &Path, dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
    let mut a = vec!["seed", s(t), "--dir", s(dir), "--listen", listen, "--quiet"];
    a.extend_from_slice(extra);
    ours(&a)
}

/// Runs our leecher to completion and checks the file.
fn our_leecher(t: &str, out: &Path, extra: &[&str], name: &str, want: &[u8]) {
    let mut a = vec![
        "download",
        t,
        "--out",
        s(out),
        "--listen",
        "127.0.0.1:0",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    let mut l = ours(&a);
    let st = l.wait_exit(LIMIT).unwrap();
    assert!(st.success(), "our leecher: {st}\n{}", l.log_tail(30));
    assert_eq!(
        std::fs::read(out.join(name)).unwrap(),
        want,
        "{name} differs"
    );
}

fn aria2c_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--file-allocation=none",
        "--bt-tracker-connect-timeout=5",
    ]
    .map(String::from)
    .to_vec();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn aria2c(extra: &[&str]) -> Daemon {
    let a = aria2c_args(extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    program("aria2c", &a)
}

fn libtorrent(mode: &str, t: &str, path: &Path, port: u16, peers: &[&str]) -> Daemon {
    let port = port.to_string();
    let mut a = vec!["-c", LIBTORRENT, mode, t, s(path), &port];
    a.extend_from_slice(peers);
    program("/usr/bin/python3", &a)
}

/// The workspace's tracker on HTTP and UDP, with a short interval so late joiners meet.
fn our_tracker(ip: &str) -> (Daemon, SocketAddr, SocketAddr) {
    let d = Daemon::builder("tracker")
        .args([
            "--listen",
            &format!("{ip}:0"),
            "--udp",
            &format!("{ip}:0"),
            "--interval",
            "5",
        ])
        .expect_listening(2)
        .spawn()
        .unwrap();
    let http = d.addr_of("tcp", None).expect("tcp readiness");
    let udp = d.addr_of("udp", None).expect("udp readiness");
    (d, http, udp)
}

#[test]
fn transmission_show_reads_ours_and_we_read_mktorrent() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = content(dir.path(), "m.bin", 300_000);
    let ours_t = make_torrent(
        &src.join("m.bin"),
        &dir.path().join("ours.torrent"),
        &["http://127.0.0.1:6969/announce"],
        16 << 10,
    );
    let m = Metainfo::load(&ours_t).unwrap();
    let o = Command::new("transmission-show")
        .arg(&ours_t)
        .output()
        .expect("transmission-show");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&m.info_hash.to_hex()), "{text}");
    assert!(text.contains("Piece Count: 19"), "{text}");
    assert!(text.contains("http://127.0.0.1:6969/announce"), "{text}");

    // mktorrent: a folder with two files, 256 KiB pieces (-l 18), two tiers.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("one.bin"), payload(400_000, 1)).unwrap();
    std::fs::write(folder.join("sub/two.bin"), payload(200_000, 2)).unwrap();
    let mk = dir.path().join("mk.torrent");
    let st = Command::new("mktorrent")
        .args([
            "-l",
            "18",
            "-a",
            "http://a/announce",
            "-a",
            "udp://b:1",
            "-o",
        ])
        .arg(&mk)
        .arg(&folder)
        .output()
        .expect("mktorrent");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let theirs = Metainfo::load(&mk).unwrap();
    assert_eq!(theirs.info.piece_length, 256 << 10);
    assert_eq!(theirs.info.total_length, 600_000);
    assert_eq!(theirs.info.files.len(), 2);
    assert_eq!(theirs.trackers.len(), 2, "{:?}", theirs.trackers);
    // Same info_hash as transmission computes, and our recreation of the same folder hashes the same
    // pieces.
    let o = Command::new("transmission-show").arg(&mk).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&theirs.info_hash.to_hex()));
    let again = bittorrent_peer::metainfo::create(
        &folder,
        &bittorrent_peer::metainfo::CreateOptions {
            piece_length: Some(256 << 10),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(again.info.pieces, theirs.info.pieces);
    // transmission-show reads our multi-file torrent too: same info_hash, both files under the folder.
    let ours_mf = make_torrent(
        &folder,
        &dir.path().join("ours-mf.torrent"),
        &["http://a/announce"],
        256 << 10,
    );
    let mf = Metainfo::load(&ours_mf).unwrap();
    assert_eq!(mf.info.files.len(), 2);
    let o = Command::new("transmission-show")
        .arg(&ours_mf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains(&mf.info_hash.to_hex()), "{text}");
    assert!(
        text.contains("folder/one.bin") && text.contains("folder/sub/two.bin"),
        "{text}"
    );
    // Our seeder can serve it: the storage opens mktorrent's layout.
    let st = bittorrent_peer::storage::Storage::open(
        &theirs.info,
        dir.path(),
        bittorrent_peer::storage::OpenMode::Existing,
    )
    .unwrap();
    assert!(st.recheck(&theirs.info).unwrap().is_full());
}

#[test]
fn aria2c_leeches_from_our_seeder_and_seeds_to_our_leecher_and_a_magnet() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, http, _) = our_tracker("127.0.0.1");
    let announce = format!("http://{http}/announce");
    let (src, data, t) = torrent_fixture(dir.path(), "aria.bin", 3 << 20, &[&announce], 256 << 10);
    let ts = s(&t);
    {
        let _seed = our_seeder(&t, &src, "127.0.0.1:0", &[]);
        let out = dir.path().join("aria-out");
        let port = free_port().to_string();
        let mut a = aria2c(&[
            "--dir",
            s(&out),
            "--seed-time=0",
            "--listen-port",
            &port,
            ts,
        ]);
        let st = a.wait_exit(LIMIT).unwrap();
        assert!(st.success(), "aria2c: {st}\n{}", a.log_tail(20));
        assert_eq!(std::fs::read(out.join("aria.bin")).unwrap(), data);
    }
    // aria2c seeds, we leech: from the .torrent, then from a magnet link (metadata by BEP 9 from aria2c).
    let port = free_port();
    let _aria = aria2c(&[
        "--dir",
        s(&src),
        "--check-integrity=true",
        "--seed-ratio=0.0",
        "--seed-time=1",
        "--listen-port",
        &port.to_string(),
        ts,
    ]);
    let peer = format!("127.0.0.1:{port}");
    leech_torrent_then_magnet(
        &t,
        dir.path(),
        &peer,
        &["--peer", &peer, "--no-trackers"],
        "aria.bin",
        &data,
    );
}

#[test]
fn libtorrent_leeches_from_us_and_seeds_to_us_and_a_magnet() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = torrent_fixture(dir.path(), "lt.bin", 3 << 20, &[], 64 << 10);
    let ts = s(&t);
    {
        let seed = our_seeder(&t, &src, "127.0.0.1:0", &[]);
        let out = dir.path().join("lt-out");
        std::fs::create_dir_all(&out).unwrap();
        let addr = seed.addr().to_string();
        let mut p = libtorrent("leech", ts, &out, free_port(), &[&addr]);
        let st = p.wait_exit(LIMIT).unwrap();
        assert!(st.success(), "libtorrent: {st}\n{}", p.log_tail(20));
        assert_eq!(std::fs::read(out.join("lt.bin")).unwrap(), data);
    }
    let port = free_port();
    let _seed = libtorrent("seed", ts, &src, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    // libtorrent checks its files before it accepts: our leecher re-dials --peer addresses.
    leech_torrent_then_magnet(&t, dir.path(), &peer, &["--peer", &peer], "lt.bin", &data);
}

/// Transmission settings that keep it to the peers we give it: no DHT, LPD, PEX, uTP or port mapping.
fn transmission_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("trcfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("settings.json"),
        r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false, "utp-enabled": false}"#,
    )
    .unwrap();
    cfg
}

#[test]
fn transmission_seeds_to_our_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = torrent_fixture(dir.path(), "tr.bin", 2 << 20, &[], 64 << 10);
    let port = free_port();
    let cfg = transmission_config(dir.path());
    let _tr = program(
        "transmission-cli",
        &[
            "-g",
            s(&cfg),
            "-w",
            s(&src),
            "-p",
            &port.to_string(),
            "-M",
            "-et",
            s(&t),
        ],
    );
    our_leecher(
        s(&t),
        &dir.path().join("out"),
        &["--peer", &format!("127.0.0.1:{port}")],
        "tr.bin",
        &data,
    );
}

/// Our seeder, aria2c, libtorrent and our leecher in one private swarm (BEP 27: no PEX, so peers come
/// only from where this test says). The seeder is capped at 512 KiB/s, announces nowhere, never dials,
/// and only libtorrent is given its address; aria2c and our leecher know only the workspace's tracker
/// (our leecher announces over UDP, the others over HTTP). Everything aria2c and our leecher get
/// therefore passes through the other leechers while those are still downloading, and our leecher's
/// per-peer stats must show its bytes came from them and none from the seeder.
#[test]
fn mixed_swarm_leechers_trade_with_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, http, udp) = our_tracker("127.0.0.1");
    let (src, data, http_t, udp_t) =
        http_and_udp_torrents(dir.path(), "mix.bin", 2 << 20, http, udp, &["--private"]);
    let seed_stats = dir.path().join("seed.json");
    let mut seed = our_seeder(
        &http_t,
        &src,
        "127.0.0.1:0",
        &[
            "--no-trackers",
            "--upload-rate",
            "512k",
            "--stats-file",
            s(&seed_stats),
        ],
    );
    let seed_addr = seed.addr().to_string();
    let aria_out = dir.path().join("aria");
    let lt_out = dir.path().join("lt");
    std::fs::create_dir_all(&lt_out).unwrap();
    let aria_port = free_port().to_string();
    let _aria = aria2c(&[
        "--dir",
        s(&aria_out),
        "--seed-ratio=0.0",
        "--seed-time=1",
        "--listen-port",
        &aria_port,
        s(&http_t),
    ]);
    let mut lt = libtorrent("leech", s(&http_t), &lt_out, free_port(), &[&seed_addr]);
    let ours_out = dir.path().join("ours");
    let stats = dir.path().join("ours.json");
    // Seeds on after its download so that aria2c can finish even after libtorrent has left.
    let mut leech = ours(&[
        "download",
        s(&udp_t),
        "--out",
        s(&ours_out),
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--seed",
        "--stats-file",
        s(&stats),
    ]);
    wait_for_file(&ours_out.join("mix.bin"), &data, LIMIT, "our leecher");
    let st = lt.wait_exit(LIMIT).unwrap();
    assert!(st.success(), "libtorrent: {st}\n{}", lt.log_tail(20));
    assert_eq!(std::fs::read(lt_out.join("mix.bin")).unwrap(), data);
    // aria2c's --seed-time is in minutes: it keeps seeding, so wait for its file, not its exit.
    wait_for_file(
        &aria_out.join("mix.bin"),
        &data,
        LIMIT,
        "aria2c, served by the leechers only",
    );
    assert!(leech.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(seed.terminate(Duration::from_secs(10)).unwrap().success());
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).expect("stats JSON")
    };
    let (ours_v, seed_v) = (read(&stats), read(&seed_stats));
    let field = |r: &serde_json::Value, f: &str| r[f].as_u64().unwrap_or(0);
    let peers = ours_v["extra"]["peers"].as_object().expect("extra.peers");
    eprintln!("our leecher's peers: {peers:?}");
    assert!(!peers.contains_key(&seed_addr), "{peers:?}");
    let from_others: u64 = peers.values().map(|r| field(r, "bytes_down")).sum();
    let size = data.len() as u64;
    assert!(from_others >= size, "{peers:?}");
    assert!(
        peers
            .values()
            .filter(|r| field(r, "pieces_from") > 0)
            .count()
            >= 1
    );
    // The bytes started at the seeder, which served only libtorrent.
    let seed_up: u64 = seed_v["extra"]["peers"]
        .as_object()
        .expect("seeder's extra.peers")
        .values()
        .map(|r| field(r, "bytes_up"))
        .sum();
    assert!(seed_up >= size, "the seeder sent {seed_up} bytes");
}

/// Debian's opentracker (built allow-list only) as the only rendezvous: our seeder announces over UDP,
/// our leecher over HTTP.
#[test]
fn our_seeder_and_leecher_meet_through_opentracker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tracker: SocketAddr = ([127, 0, 0, 1], port).into();
    let (src, data, http_t, udp_t) =
        http_and_udp_torrents(dir.path(), "ot.bin", 1 << 20, tracker, tracker, &[]);
    let hash = Metainfo::load(&http_t).unwrap().info_hash.to_hex();
    let chroot = dir.path().join("ot");
    std::fs::create_dir_all(&chroot).unwrap();
    std::fs::write(chroot.join("whitelist.txt"), format!("{hash}\n")).unwrap();
    let p = port.to_string();
    // opentracker chroots into -d before reading the allow-list: the path is relative to it.
    let _ot = program(
        "opentracker",
        &[
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-P",
            &p,
            "-d",
            s(&chroot),
            "-w",
            "/whitelist.txt",
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "opentracker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Announces refused while the allow-list loads are retried by our announcer (with backoff).
    let _seed = our_seeder(&udp_t, &src, "127.0.0.1:0", &[]);
    our_leecher(s(&http_t), &dir.path().join("out"), &[], "ot.bin", &data);
}

#[test]
fn tshark_decodes_our_traffic_as_bittorrent_without_malformed_packets() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data, t) = torrent_fixture(dir.path(), "cap.bin", 1 << 20, &[], 64 << 10);
    let port = free_port();
    let mut cap = Capture::start(port, &dir.path().join("bt.pcapng")).unwrap();
    {
        let listen = format!("127.0.0.1:{port}");
        let _seed = our_seeder(&t, &src, &listen, &[]);
        our_leecher(
            s(&t),
            &dir.path().join("out"),
            &["--peer", &listen],
            "cap.bin",
            &data,
        );
    }
    cap.stop().unwrap();
    let count = |filter: &str| cap.count("bittorrent", filter).unwrap();
    assert!(
        count("bittorrent.msg.type == 7") >= 16,
        "piece messages decoded"
    );
    assert!(
        count("bittorrent.msg.type == 6") >= 1,
        "request messages decoded"
    );
    assert!(
        count("bittorrent.info_hash") >= 2,
        "both handshakes decoded"
    );
    assert_eq!(
        cap.malformed("bittorrent").unwrap(),
        Vec::<String>::new(),
        "malformed packets"
    );
}

#[test]
fn transmission_leeches_from_our_seeder_in_a_network_namespace() {
    let dir = tempfile::tempdir().unwrap();
    // Transmission never dials loopback peers: as a leecher it runs in a namespace of its own, reaching
    // our tracker and seeder on the host end of the veth pair.
    let ns = Netns::create().expect("a network namespace (needs root)");
    let host_ip = ns.host_ip().to_string();
    let (_tracker, http, _) = our_tracker(&host_ip);
    let (src, data, t) = torrent_fixture(
        dir.path(),
        "ns.bin",
        2 << 20,
        &[&format!("http://{http}/announce")],
        64 << 10,
    );
    let _seed = our_seeder(&t, &src, &format!("{host_ip}:0"), &[]);
    let cfg = transmission_config(dir.path());
    let out = dir.path().join("tr-out");
    std::fs::create_dir_all(&out).unwrap();
    let args = ns.exec_args(
        "transmission-cli",
        &[
            "-g",
            s(&cfg),
            "-w",
            s(&out),
            "-p",
            "51413",
            "-M",
            "-et",
            s(&t),
        ],
    );
    let _tr = program("ip", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let what = format!("transmission at {} in namespace {}", ns.ns_ip(), ns.name());
    wait_for_file(&out.join("ns.bin"), &data, LIMIT, &what);
}

/// PEX with a foreign leecher: it is given only our seeder S (directly, or through `tracker`), S uploads
/// slowly (so the leecher is still leeching when S's first `ut_pex` goes out: a seed does not connect to
/// other seeds), and our second seeder T, which dialled S and announces nowhere, must end up uploading to
/// it. Either the foreign client dials T from S's message, or T dials it from S's message (its listen
/// port comes from its BEP 10 `p`); in runs by hand libtorrent dialled first, and sent T its own
/// `ut_pex`, which we decoded.
fn pex_joins_a_foreign_leecher(
    tracker: Option<SocketAddr>,
    start: impl FnOnce(&Path, &Path, &str) -> Daemon,
    what: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let announce = tracker.map(|a| format!("http://{a}/announce"));
    let trackers: Vec<&str> = announce.iter().map(String::as_str).collect();
    let (src, data, t) = torrent_fixture(dir.path(), "pex.bin", 2 << 20, &trackers, 64 << 10);
    let s_seed = our_seeder(&t, &src, "127.0.0.1:0", &["--upload-rate", "256k"]);
    let s_addr = s_seed.addr().to_string();
    let t_stats = dir.path().join("t.json");
    let t_seed = our_seeder(
        &t,
        &src,
        "127.0.0.1:0",
        &[
            "--peer",
            &s_addr,
            "--no-trackers",
            "--stats-file",
            s(&t_stats),
        ],
    );
    let end = Instant::now() + LIMIT;
    while t_seed.stats().gauges.get("peers").copied().unwrap_or(0) < 1 {
        assert!(Instant::now() < end, "T never connected to S");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = dir.path().join("foreign-out");
    std::fs::create_dir_all(&out).unwrap();
    let _foreign = start(&t, &out, &s_addr);
    wait_for_file(&out.join("pex.bin"), &data, LIMIT, what);
    // T and S are seeds: whatever T uploaded went to the foreign leecher, and only S's PEX could have
    // joined the two (a finished client drops its seed connections at once: count bytes, not
    // connections).
    let st = t_seed.stats();
    assert!(
        st.transfers.upload_bytes > 0,
        "T uploaded nothing: PEX never joined {what} and T ({:?})",
        st.extra
    );
}

#[test]
fn libtorrent_meets_a_peer_through_our_pex() {
    pex_joins_a_foreign_leecher(
        None,
        |t, out, s_addr| libtorrent("leech", s(t), out, free_port(), &[s_addr]),
        "libtorrent",
    );
}

#[test]
fn aria2c_meets_a_peer_through_our_pex() {
    // aria2c cannot be handed a peer: it finds S through our tracker (T does not announce).
    let (tracker, http, _) = our_tracker("127.0.0.1");
    pex_joins_a_foreign_leecher(
        Some(http),
        |t, out, _| {
            let port = free_port().to_string();
            let a = aria2c_args(&[
                "--dir",
                s(out),
                "--seed-time=0",
                "--listen-port",
                &port,
                s(t),
            ]);
            // aria2c_args turns PEX off for the other tests; the last value given wins.
            let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
            a.insert(a.len() - 1, "--enable-peer-exchange=true");
            program("aria2c", &a)
        },
        "aria2c",
    );
    drop(tracker);
}
