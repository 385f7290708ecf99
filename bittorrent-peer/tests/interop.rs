//! Interoperability with real clients from Debian, on 127.0.0.1: aria2c and libtorrent (python3-libtorrent
//! through /usr/bin/python3) as leechers of our seeder and as seeders to our leecher, transmission-cli as a
//! seeder (Transmission never dials loopback peers, so it is not tested as a leecher here),
//! `transmission-show` reading our .torrent, our parser reading `mktorrent`'s, and tshark decoding our
//! traffic as BitTorrent without malformed packets. Every download is compared byte for byte.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bittorrent_peer::metainfo::Metainfo;
use support::*;

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

fn content(dir: &Path, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = payload(len, len as u64);
    std::fs::write(src.join(name), &data).unwrap();
    (src, data)
}

fn aria2c(args: &[&str]) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--file-allocation=none",
        "--bt-tracker-connect-timeout=5",
    ]);
    c.args(args);
    c
}

#[test]
fn transmission_show_reads_ours_and_we_read_mktorrent() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = content(dir.path(), "m.bin", 300_000);
    let ours_t = make_torrent(
        &src.join("m.bin"),
        &dir.path().join("ours.torrent"),
        Some("http://127.0.0.1:6969/announce"),
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
    // Our seeder can serve it: the storage opens mktorrent's layout.
    let s = bittorrent_peer::storage::Storage::open(
        &theirs.info,
        dir.path(),
        bittorrent_peer::storage::OpenMode::Existing,
    )
    .unwrap();
    assert!(s.recheck(&theirs.info).unwrap().is_full());
}

#[test]
fn aria2c_leeches_from_our_seeder_and_seeds_to_our_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, _) = mini_tracker();
    let (src, data) = content(dir.path(), "aria.bin", 5 << 20);
    let t = make_torrent(
        &src.join("aria.bin"),
        &dir.path().join("a.torrent"),
        Some(&tracker),
        256 << 10,
    );
    let ts = t.to_str().unwrap();
    {
        let _seed = Proc::spawn(
            ours(&[
                "seed",
                ts,
                "--dir",
                src.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--quiet",
            ]),
            "our-seeder",
            true,
        );
        let out = dir.path().join("aria-out");
        let port = free_port().to_string();
        let mut a = Proc::spawn(
            aria2c(&[
                "--dir",
                out.to_str().unwrap(),
                "--seed-time=0",
                "--listen-port",
                &port,
                ts,
            ]),
            "aria2c-leecher",
            false,
        );
        assert!(a.wait(LIMIT).success(), "aria2c failed");
        assert_eq!(std::fs::read(out.join("aria.bin")).unwrap(), data);
    }
    // aria2c seeds, we leech.
    let port = free_port();
    let _aria = Proc::spawn(
        aria2c(&[
            "--dir",
            src.to_str().unwrap(),
            "--check-integrity=true",
            "--seed-ratio=0.0",
            "--seed-time=5",
            "--listen-port",
            &port.to_string(),
            ts,
        ]),
        "aria2c-seeder",
        false,
    );
    let out = dir.path().join("ours-out");
    let mut l = Proc::spawn(
        ours(&[
            "download",
            ts,
            "--out",
            out.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ]),
        "our-leecher",
        true,
    );
    assert!(l.wait(LIMIT).success());
    assert_eq!(std::fs::read(out.join("aria.bin")).unwrap(), data);
}

#[test]
fn libtorrent_leeches_from_us_and_seeds_to_us() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = content(dir.path(), "lt.bin", 3 << 20);
    let t = make_torrent(
        &src.join("lt.bin"),
        &dir.path().join("lt.torrent"),
        None,
        64 << 10,
    );
    let ts = t.to_str().unwrap();
    {
        let seed = Proc::spawn(
            ours(&[
                "seed",
                ts,
                "--dir",
                src.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--quiet",
            ]),
            "our-seeder",
            true,
        );
        let out = dir.path().join("lt-out");
        std::fs::create_dir_all(&out).unwrap();
        let mut lt = Command::new("/usr/bin/python3");
        lt.args([
            "-c",
            LIBTORRENT,
            "leech",
            ts,
            out.to_str().unwrap(),
            &free_port().to_string(),
            &seed.addr.unwrap().to_string(),
        ]);
        let mut p = Proc::spawn(lt, "libtorrent-leecher", false);
        assert!(p.wait(LIMIT).success(), "libtorrent did not finish");
        assert_eq!(std::fs::read(out.join("lt.bin")).unwrap(), data);
    }
    let port = free_port();
    let mut lt = Command::new("/usr/bin/python3");
    lt.args([
        "-c",
        LIBTORRENT,
        "seed",
        ts,
        src.to_str().unwrap(),
        &port.to_string(),
    ]);
    let _seed = Proc::spawn(lt, "libtorrent-seeder", false);
    let out = dir.path().join("ours-out");
    // libtorrent needs a moment to check its files before it accepts.
    let mut l = Proc::spawn(
        ours(&[
            "download",
            ts,
            "--out",
            out.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ]),
        "our-leecher",
        true,
    );
    assert!(l.wait(LIMIT).success());
    assert_eq!(std::fs::read(out.join("lt.bin")).unwrap(), data);
    // A magnet link: the metadata comes from libtorrent (BEP 9), then the pieces.
    let magnet = format!(
        "{}&x.pe=127.0.0.1:{port}",
        Metainfo::load(&t).unwrap().magnet()
    );
    let out = dir.path().join("magnet-out");
    let mut l = Proc::spawn(
        ours(&[
            "download",
            &magnet,
            "--out",
            out.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--no-trackers",
        ]),
        "our-magnet-leecher",
        true,
    );
    assert!(l.wait(LIMIT).success());
    assert_eq!(std::fs::read(out.join("lt.bin")).unwrap(), data);
}

#[test]
fn transmission_seeds_to_our_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = content(dir.path(), "tr.bin", 2 << 20);
    let t = make_torrent(
        &src.join("tr.bin"),
        &dir.path().join("tr.torrent"),
        None,
        64 << 10,
    );
    let port = free_port();
    let cfg = dir.path().join("trcfg");
    // Keep Transmission on loopback: no DHT, LPD, PEX or port mapping (it would talk to the gateway).
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("settings.json"),
        r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false, "utp-enabled": false}"#,
    )
    .unwrap();
    let mut tr = Command::new("transmission-cli");
    tr.args([
        "-g",
        cfg.to_str().unwrap(),
        "-w",
        src.to_str().unwrap(),
        "-p",
        &port.to_string(),
        "-M",
        "-et",
        t.to_str().unwrap(),
    ]);
    let _tr = Proc::spawn(tr, "transmission-seeder", false);
    let out = dir.path().join("out");
    let mut l = Proc::spawn(
        ours(&[
            "download",
            t.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ]),
        "our-leecher",
        true,
    );
    assert!(l.wait(LIMIT).success());
    assert_eq!(std::fs::read(out.join("tr.bin")).unwrap(), data);
}

fn tshark_count(cap: &Path, port: u16, filter: &str) -> usize {
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(cap)
        .args([
            "-d",
            &format!("tcp.port=={port},bittorrent"),
            "-Y",
            filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .expect("tshark -r");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn tshark_decodes_our_traffic_as_bittorrent_without_malformed_packets() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = content(dir.path(), "cap.bin", 1 << 20);
    let t = make_torrent(
        &src.join("cap.bin"),
        &dir.path().join("cap.torrent"),
        None,
        64 << 10,
    );
    let ts = t.to_str().unwrap();
    let port = free_port();
    let cap = dir.path().join("bt.pcapng");
    let mut shark = Command::new("tshark");
    shark
        .args(["-n", "-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
        .arg(&cap);
    let mut shark = Proc::spawn(shark, "tshark", false);
    // tshark writes the file header once it captures.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while !cap.exists() {
        assert!(
            std::time::Instant::now() < end,
            "tshark did not start capturing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    {
        let listen = format!("127.0.0.1:{port}");
        let _seed = Proc::spawn(
            ours(&[
                "seed",
                ts,
                "--dir",
                src.to_str().unwrap(),
                "--listen",
                &listen,
                "--quiet",
            ]),
            "seeder",
            true,
        );
        let out = dir.path().join("out");
        let mut l = Proc::spawn(
            ours(&[
                "download",
                ts,
                "--out",
                out.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--quiet",
                "--peer",
                &listen,
            ]),
            "leecher",
            true,
        );
        assert!(l.wait(LIMIT).success());
        assert_eq!(std::fs::read(out.join("cap.bin")).unwrap(), data);
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new("kill")
        .args(["-INT", &shark.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    shark.wait(Duration::from_secs(20));
    assert!(
        tshark_count(&cap, port, "bittorrent.msg.type == 7") >= 16,
        "piece messages decoded"
    );
    assert!(
        tshark_count(&cap, port, "bittorrent.msg.type == 6") >= 1,
        "request messages decoded"
    );
    assert!(
        tshark_count(&cap, port, "bittorrent.info_hash") >= 2,
        "both handshakes decoded"
    );
    assert_eq!(
        tshark_count(&cap, port, "_ws.malformed || _ws.expert.severity == error"),
        0,
        "malformed packets"
    );
}
