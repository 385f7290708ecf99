//! Multi-process tests: real `gnutella-node` processes on 127.0.0.1 port 0, killed on drop.
//!
//! - a 20-node 0.6 overlay (6 ultrapeers in a chain, 14 leaves, one firewalled) where a leaf's search finds
//!   files three ultrapeers away, the hit is routed back, and the file is fetched over HTTP and verified;
//! - a classic 0.4 flood across four processes;
//! - raw-socket protocol checks: version 0.7 answered as 0.6, 0.4 refused, oversized query → BYE 400, a
//!   neighbour repeating one query on its link → BYE 401.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_gnutella-node");

/// Starts `gnutella-node` with `args` through the shared harness (readiness line awaited, killed on drop).
fn spawn(args: &[String]) -> Daemon {
    Daemon::builder("gnutella-node")
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("gnutella-node starts")
}

fn node(share: Option<&Path>, extra: &[&str]) -> Daemon {
    let mut a: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    if let Some(s) = share {
        a.push("--share".into());
        a.push(s.display().to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    spawn(&a)
}

fn share_dir(root: &Path, name: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (f, body) in files {
        std::fs::write(d.join(f), body).unwrap();
    }
    d
}

/// Runs `gnutella-node search --json`; returns the hit lines.
fn search(peer: SocketAddr, words: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    search_events(peer, words, extra, &[])
        .into_iter()
        .filter(|v| v["event"] == "hit")
        .collect()
}

/// Runs a search with extra search options; returns every JSON line.
fn search_events(
    peer: SocketAddr,
    words: &str,
    extra: &[&str],
    opts: &[&str],
) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["--peer", &peer.to_string()])
        .args(extra)
        // Misses wait the whole timeout; a download search gets longer so a loaded machine still sees the hit.
        .args(["search", words, "--json", "--timeout"])
        .arg(if opts.contains(&"--download") {
            "6"
        } else {
            "2"
        })
        .args(opts)
        .env("RUST_LOG", "warn")
        .output()
        .expect("search runs");
    assert!(
        out.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// Searches until a hit arrives (the overlay needs a moment to link up and exchange QRP tables).
fn search_until_hit(peer: SocketAddr, words: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let h = search(peer, words, extra);
        if !h.is_empty() || Instant::now() > end {
            return h;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn twenty_node_overlay_finds_far_files_routes_hits_back_and_serves_them() {
    let tmp = tempfile::tempdir().unwrap();
    let far_body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    // Six ultrapeers in a chain (each keeps one outgoing link, so the chain stays a chain).
    let mut ups: Vec<Daemon> = Vec::new();
    for i in 0..6 {
        let mut extra = vec!["--up-links", "1"];
        let prev;
        if i > 0 {
            prev = ups[i - 1].addr().to_string();
            extra.extend(["--peer", prev.as_str()]);
            ups.push(node(None, &extra));
        } else {
            ups.push(node(None, &extra));
        }
    }
    // Fourteen leaves, two or three per ultrapeer; the far file sits on a leaf of UP3, a firewalled leaf
    // of UP2 shares another.
    let mut leaves = Vec::new();
    for i in 0..14 {
        let up = ups[i % 6].addr().to_string();
        let (dir, fw) = match i {
            3 => (
                share_dir(tmp.path(), "far", &[("needle far away.bin", &far_body)]),
                false,
            ),
            8 => (
                share_dir(
                    tmp.path(),
                    "fw",
                    &[("walled garden.txt", b"behind a firewall")],
                ),
                true,
            ),
            _ => (
                share_dir(
                    tmp.path(),
                    &format!("l{i}"),
                    &[(&format!("hay {i}.txt"), b"hay")],
                ),
                false,
            ),
        };
        let mut extra = vec!["--leaf", "--leaf-links", "1", "--peer", up.as_str()];
        if fw {
            extra.push("--firewalled");
        }
        leaves.push(node(Some(&dir), &extra));
    }
    assert_eq!(ups.len() + leaves.len(), 20);

    // A searching leaf on UP0: the far file is on a leaf of UP3 (four overlay hops).
    // The searcher keeps a single ultrapeer link, so the hop counts below measure the chain.
    let hits = search_until_hit(ups[0].addr(), "needle far", &["--leaf-links", "1"]);
    assert_eq!(hits.len(), 1, "exactly one hit: {hits:?}");
    let h = &hits[0];
    assert_eq!(h["name"], "needle far away.bin");
    assert_eq!(h["size"], 50_000);
    assert_eq!(h["firewalled"], false);
    assert!(
        h["hops"].as_u64().unwrap() >= 3,
        "the hit came from several hops away: {h}"
    );
    let urn = common::hash::sha1(&far_body);
    let want_urn = format!("urn:sha1:{}", data_encoding::BASE32_NOPAD.encode(&urn.0));
    assert_eq!(h["sha1"], want_urn.as_str());

    // Fetch it from the responder named in the hit, by index and by URN, and verify the SHA-1.
    let addr: SocketAddr = format!("{}:{}", h["ip"].as_str().unwrap(), h["port"])
        .parse()
        .unwrap();
    let (head, body) = http_get(
        addr,
        &format!("/get/{}/needle%20far%20away.bin", h["index"]),
    );
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    assert!(head.to_ascii_lowercase().contains(&format!(
        "x-gnutella-content-urn: {}",
        want_urn.to_ascii_lowercase()
    )));
    assert_eq!(
        common::hash::sha1(&body),
        urn,
        "downloaded bytes verify against the hit's SHA-1"
    );
    let (head, body) = http_get(addr, &format!("/uri-res/N2R?{want_urn}"));
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(body, far_body);
    let (head, _) = http_get(addr, "/get/1/../../etc/passwd");
    assert!(head.contains("400"), "{head}");

    // Expanding ring: TTL 1, 2, 3 find nothing (the file is four overlay hops away), TTL 4 does.
    let ev = search_events(
        ups[0].addr(),
        "needle far",
        &["--leaf-links", "1"],
        &["--expanding"],
    );
    let rings: Vec<u64> = ev
        .iter()
        .filter(|v| v["event"] == "hit")
        .map(|v| v["ttl"].as_u64().unwrap())
        .collect();
    assert_eq!(rings, vec![4], "{ev:?}");

    // `search --download`: the multi-source downloader fetches and verifies it.
    let dl = tmp.path().join("dl");
    let ev = search_events(
        ups[0].addr(),
        "needle far",
        &[],
        &["--download", dl.to_str().unwrap()],
    );
    let done = ev
        .iter()
        .find(|v| v["event"] == "downloaded")
        .expect("downloaded");
    assert_eq!(done["sha1"], want_urn.as_str());
    assert_eq!(
        std::fs::read(dl.join("needle far away.bin")).unwrap(),
        far_body
    );

    // The firewalled leaf answers with the push flag set, and is downloaded through PUSH/GIV.
    let hits = search_until_hit(ups[5].addr(), "walled garden", &[]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["firewalled"], true);
    let ev = search_events(
        ups[5].addr(),
        "walled garden",
        &[],
        &["--download", dl.to_str().unwrap()],
    );
    let done = ev
        .iter()
        .find(|v| v["event"] == "downloaded")
        .expect("downloaded via push");
    assert_eq!(done["pushed"], 1);
    assert_eq!(
        std::fs::read(dl.join("walled garden.txt")).unwrap(),
        b"behind a firewall"
    );

    // Something nobody shares: no hit, and the search still exits 0.
    assert!(search(ups[1].addr(), "zzzunmatched", &[]).is_empty());
}

#[test]
fn classic_04_flood_across_four_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = share_dir(tmp.path(), "c3", &[("classic tune.ogg", b"la la la")]);
    let a = node(None, &["--classic", "--up-links", "1"]);
    let a_addr = a.addr().to_string();
    let b = node(None, &["--classic", "--up-links", "1", "--peer", &a_addr]);
    let b_addr = b.addr().to_string();
    let c = node(None, &["--classic", "--up-links", "1", "--peer", &b_addr]);
    let c_addr = c.addr().to_string();
    let _d = node(
        Some(&dir),
        &["--classic", "--up-links", "1", "--peer", &c_addr],
    );
    let hits = search_until_hit(a.addr(), "classic tune", &["--classic"]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["name"], "classic tune.ogg");
    assert!(hits[0]["hops"].as_u64().unwrap() >= 2);
}

fn read_until_blank(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && !buf.ends_with(b"\n\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        buf.push(b[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the node closes; returns its Bye descriptor (header and payload), skipping the pings,
/// pongs and anything else it sent first.
fn read_bye(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut off = 0;
    let mut bye = None;
    while off + 23 <= got.len() {
        let len = u32::from_le_bytes(got[off + 19..off + 23].try_into().unwrap()) as usize;
        if got[off + 16] == 0x02 && off + 23 + len <= got.len() {
            bye = Some(got[off..off + 23 + len].to_vec());
        }
        off += 23 + len;
    }
    bye
}

/// Connects and sends a handshake block; returns the socket and the node's answer (up to the blank line).
fn handshake(addr: SocketAddr, block: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(block).unwrap();
    let resp = read_until_blank(&mut s);
    (s, resp)
}

/// An ultrapeer link over a raw socket (no deflate either way).
fn raw_ultrapeer_link(addr: SocketAddr) -> TcpStream {
    let (mut s, resp) = handshake(addr, b"GNUTELLA CONNECT/0.6\r\nUser-Agent: probe/1\r\nX-Ultrapeer: True\r\nBye-Packet: 0.1\r\n\r\n");
    assert!(resp.starts_with("GNUTELLA/0.6 200"), "{resp}");
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").unwrap();
    s
}

#[test]
fn a_neighbour_repeating_a_query_on_its_link_gets_bye_401() {
    let up = node(None, &[]);
    let mut s = raw_ultrapeer_link(up.addr());
    // The same query (same GUID) over and over: honest duplicates come over other links, never this one.
    let payload = b"\x00\x00repeat me\x00";
    let mut q = vec![0x42u8; 16];
    q.extend_from_slice(&[0x80, 2, 0]);
    q.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    q.extend_from_slice(payload);
    for _ in 0..40 {
        if s.write_all(&q).is_err() {
            break;
        }
    }
    let bye = read_bye(&mut s).expect("a Bye before close");
    assert_eq!(u16::from_le_bytes([bye[23], bye[24]]), 401);
}

#[test]
fn raw_socket_handshakes_and_oversized_query_gets_bye_400() {
    let up = node(None, &[]);
    // 0.7 with headers in odd case is answered as 0.6.
    let (mut s, resp) = handshake(up.addr(), b"GNUTELLA CONNECT/0.7\r\nuser-agent: probe/1\r\nX-ULTRAPEER: true\r\nbye-packet: 0.1\r\n\r\n");
    assert!(resp.starts_with("GNUTELLA/0.6 200"), "{resp}");
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").unwrap();
    // Now a query header announcing 5000 bytes: refused with BYE 400 before any payload is read.
    let mut h = vec![0x11u8; 16];
    h.extend_from_slice(&[0x80, 4, 0]);
    h.extend_from_slice(&5000u32.to_le_bytes());
    s.write_all(&h).unwrap();
    let bye = read_bye(&mut s).expect("a Bye before close");
    assert_eq!((bye[17], bye[18]), (1, 0), "Bye goes with TTL 1, hops 0");
    assert_eq!(u16::from_le_bytes([bye[23], bye[24]]), 400);

    // 0.4 connect to a 0.6 servent: closed without a word (like gtk-gnutella).
    let mut s = TcpStream::connect(up.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GNUTELLA CONNECT/0.4\n\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // A leaf that cannot inflate is refused with 403.
    let (_s, resp) = handshake(
        up.addr(),
        b"GNUTELLA CONNECT/0.6\r\nUser-Agent: probe/1\r\nX-Ultrapeer: False\r\n\r\n",
    );
    assert!(resp.starts_with("GNUTELLA/0.6 403"), "{resp}");
}

#[test]
fn host_cache_survives_a_restart_and_stats_are_written_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let stats = tmp.path().join("stats.json");
    let a = node(None, &[]);
    let a_addr = a.addr().to_string();
    let b = node(
        None,
        &[
            "--peer",
            &a_addr,
            "--data-dir",
            data.to_str().unwrap(),
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    // Let B link up and hear A's pongs (the 3 s pong-cache refresh), then stop it with SIGTERM.
    std::thread::sleep(Duration::from_secs(4));
    let st = Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = b;
    b.wait_exit(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    let cache =
        std::fs::read_to_string(data.join("gnutella-hosts.txt")).expect("host cache written");
    assert!(cache.lines().any(|l| l == a_addr), "{cache}");
    let snap = common::stats::StatsSnapshot::read_json(&stats).expect("stats written on exit");
    assert_eq!(snap.proto, "gnutella");
    assert!(
        snap.messages["ping"].out_count >= 1 && snap.messages["pong"].in_count >= 1,
        "{:?}",
        snap.messages
    );
    assert!(snap.messages["bye"].out_count >= 1, "a Bye on shutdown");
    // Restarted with no --peer, B finds A again from its cache: a search through B reaches A's share.
    drop(a);
    let share = share_dir(tmp.path(), "a", &[("cached host file.txt", b"x")]);
    let a2 = spawn(&[
        "--listen".into(),
        a_addr.clone(),
        "--share".into(),
        share.display().to_string(),
    ]);
    let b2 = node(None, &["--data-dir", data.to_str().unwrap()]);
    let hits = search_until_hit(b2.addr(), "cached host file", &[]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    drop(a2);
}

#[test]
fn a_leaf_replaces_its_dropped_ultrapeer_from_the_host_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let a = node(None, &[]);
    let a_addr = a.addr().to_string();
    let b = node(None, &["--peer", &a_addr]);
    // A leaf that keeps one link and is told only about A; it hears of B through A (pongs, X-Try).
    let share = share_dir(tmp.path(), "leaf", &[("orphan leaf song.ogg", b"la")]);
    let _leaf = node(
        Some(&share),
        &["--leaf", "--leaf-links", "1", "--peer", &a_addr],
    );
    assert_eq!(
        search_until_hit(a.addr(), "orphan leaf", &[]).len(),
        1,
        "the leaf is first reachable through A"
    );
    // A TTL-1 query reaches only B's own leaves (no last hop to A), so B cannot find the leaf yet.
    let b_leaves_only = || {
        search_events(b.addr(), "orphan leaf", &[], &["--ttl", "1"])
            .into_iter()
            .filter(|v| v["event"] == "hit")
            .count()
    };
    assert_eq!(b_leaves_only(), 0, "with one link, the leaf is A's only");
    // Let the leaf's 3 s ping round bring B's pong from A's cache, then drop A: the leaf must link to B.
    std::thread::sleep(Duration::from_secs(4));
    drop(a);
    let end = Instant::now() + Duration::from_secs(30);
    while b_leaves_only() == 0 {
        assert!(
            Instant::now() < end,
            "the leaf never linked to B after losing A"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_full_ultrapeer_answers_503_with_x_try_and_text_search_prints_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let a = node(None, &["--max-ultrapeers", "1", "--max-leaves", "0"]);
    let share = share_dir(tmp.path(), "b", &[("text output tune.ogg", b"tune")]);
    let b = node(Some(&share), &["--peer", &a.addr().to_string()]);
    // Once B holds A's only ultrapeer slot (and A takes no leaves, so it cannot offer leaf guidance), another
    // ultrapeer is turned away with 503 and pointed at B.
    let end = Instant::now() + Duration::from_secs(15);
    let resp = loop {
        let (_s, resp) = handshake(
            a.addr(),
            b"GNUTELLA CONNECT/0.6\r\nUser-Agent: probe/1\r\nX-Ultrapeer: True\r\n\r\n",
        );
        if resp.starts_with("GNUTELLA/0.6 503") && resp.contains(&b.addr().to_string()) {
            break resp;
        }
        assert!(Instant::now() < end, "never refused as full: {resp}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let x_try = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-try-ultrapeers:"))
        .unwrap_or_else(|| panic!("{resp}"));
    assert!(x_try.contains(&b.addr().to_string()), "{resp}");
    // A leaf (that can inflate) is turned away too, with the same hint.
    let (_s, resp) = handshake(a.addr(), b"GNUTELLA CONNECT/0.6\r\nUser-Agent: probe/1\r\nX-Ultrapeer: False\r\nAccept-Encoding: deflate\r\n\r\n");
    assert!(resp.starts_with("GNUTELLA/0.6 503"), "{resp}");
    assert!(resp.contains(&b.addr().to_string()), "{resp}");
    // The plain-text search (through B, which has leaf slots) prints one tab-separated line per result.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(BIN)
            .args(["--peer", &b.addr().to_string(), "search", "text output"])
            .args(["--timeout", "2"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("text output tune.ogg\t"))
        {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols[1], "4", "{line}");
            assert_eq!(
                cols[2],
                format!("http://{}/get/1/text%20output%20tune.ogg", b.addr()),
                "{line}"
            );
            assert!(cols[3].starts_with("urn:sha1:"), "{line}");
            break;
        }
        assert!(Instant::now() < end, "no text hit: {text}");
    }
}

#[test]
fn an_ultrapeer_accepting_guidance_becomes_the_leaf_of_a_full_ultrapeer() {
    let tmp = tempfile::tempdir().unwrap();
    // A has no ultrapeer slot but takes leaves, so it guides ultrapeer callers to become its leaves.
    let a = node(None, &["--max-ultrapeers", "0"]);
    let a_addr = a.addr().to_string();
    let share = share_dir(tmp.path(), "g", &[("guided node file.txt", b"g")]);
    let _b = node(Some(&share), &["--accept-guidance", "--peer", &a_addr]);
    let share_c = share_dir(tmp.path(), "c", &[("stubborn node file.txt", b"c")]);
    let _c = node(Some(&share_c), &["--peer", &a_addr]);
    // B accepted and is A's leaf (reached by a TTL-1 query, which only A's leaves get, through its QRP
    // table); C refused the guidance and is not linked to A at all.
    let ttl1 = |words: &str| {
        search_events(a.addr(), words, &[], &["--ttl", "1"])
            .into_iter()
            .filter(|v| v["event"] == "hit")
            .count()
    };
    let end = Instant::now() + Duration::from_secs(20);
    while ttl1("guided node") == 0 {
        assert!(Instant::now() < end, "B never became A's leaf");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(ttl1("stubborn node"), 0, "C is not A's leaf");
    assert_eq!(
        search(a.addr(), "stubborn node", &[]).len(),
        0,
        "nor linked to A as an ultrapeer"
    );
}

/// The stats file lists the links a servent holds (gnutella.md §2): B dialled A, so B lists A's listening
/// address as an outgoing ultrapeer link and A lists B's socket as an incoming one; once B stops, A's
/// next snapshot no longer lists it (the union `neighbours_seen` still does).
#[test]
fn stats_list_the_links_held_and_drop_a_neighbour_that_left() {
    let tmp = tempfile::tempdir().unwrap();
    let (sa, sb) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    let a = node(None, &["--stats-file", sa.to_str().unwrap()]);
    let a_addr = a.addr().to_string();
    let mut b = node(
        None,
        &["--peer", &a_addr, "--stats-file", sb.to_str().unwrap()],
    );
    // A fresh snapshot each poll (SIGUSR1, then the file it writes) until the condition holds.
    let limit = Duration::from_secs(20);
    let mut last = None;
    let b_holds_a = integration::eventually(limit, || {
        last = Some(b.stats());
        last.as_ref().is_some_and(|s| {
            s.neighbours.len() == 1
                && s.neighbours[0].addr == a_addr
                && s.neighbours[0].dir == "out"
                && s.neighbours[0].kind == "ultrapeer"
        })
    });
    assert!(
        b_holds_a,
        "B's links: {:?}",
        last.as_ref().map(|s| &s.neighbours)
    );
    let a_holds_b = integration::eventually(limit, || {
        last = Some(a.stats());
        last.as_ref().is_some_and(|s| {
            s.neighbours.len() == 1
                && s.neighbours[0].dir == "in"
                && s.neighbours[0].kind == "ultrapeer"
                && s.neighbours[0].addr != a_addr
        })
    });
    assert!(
        a_holds_b,
        "A's links: {:?}",
        last.as_ref().map(|s| &s.neighbours)
    );
    b.terminate(limit).unwrap();
    let gone = integration::eventually(limit, || {
        last = Some(a.stats());
        last.as_ref().is_some_and(|s| s.neighbours.is_empty())
    });
    assert!(
        gone,
        "A still lists: {:?}",
        last.as_ref().map(|s| &s.neighbours)
    );
    let seen = last.unwrap().neighbours_seen;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].dir, "in");
}
