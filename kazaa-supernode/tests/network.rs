//! Multi-process tests on loopback: real `kazaa-supernode` processes (3 SNs in a chain, 12 ONs), searched
//! with the binary's own `search --json` client. kazaa.md §7 cases 7–9 over sockets.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::Daemon;
use kazaa_supernode::codec::{Frame, Message, Packet};

/// The message in a frame (`None` for ping/pong).
fn decode(f: &Frame) -> Option<Message> {
    match f {
        Frame::Message { msg_type, payload } => {
            Packet::decode(*msg_type, payload).ok().map(|p| p.message)
        }
        _ => None,
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_kazaa-supernode");
const DEADLINE: Duration = Duration::from_secs(30);

fn sn(peers: &[String]) -> Daemon {
    let mut args = vec![
        "--role".to_owned(),
        "supernode".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    for p in peers {
        args.extend(["--peer".to_owned(), p.clone()]);
    }
    Daemon::builder_path(BIN)
        .args(args)
        .spawn()
        .expect("supernode starts")
}

fn on(sn: &str, share: &Path, user: &str, extra: &[&str]) -> Daemon {
    Daemon::builder_path(BIN)
        .args([
            "--role",
            "ordinary",
            "--listen",
            "127.0.0.1:0",
            "--peer",
            sn,
            "--user",
            user,
        ])
        .args(["--share", share.to_str().unwrap()])
        .args(extra)
        .spawn()
        .expect("ordinary node starts")
}

fn search(sn: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["search", "--peer", sn, "--json", "--timeout", "10"])
        .args(args)
        .output()
        .expect("search runs");
    assert!(
        out.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One "hit" line per result as its wave arrived, then the "done" summary with the waves by SN.
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let (done, hits) = lines.split_last().expect("a summary line");
    assert_eq!(done["event"], "done", "{text}");
    assert!(hits.iter().all(|h| h["event"] == "hit"), "{text}");
    assert_eq!(done["results"], hits.len(), "{text}");
    done.clone()
}

fn results(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["results"].as_array().unwrap().clone())
        .collect()
}

/// Polls `f` until it returns `Some` or the deadline passes.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn three_supernodes_twelve_ordinary_nodes() {
    let sn1 = sn(&[]);
    let a1 = sn1.addr().to_string();
    let sn2 = sn(std::slice::from_ref(&a1));
    let a2 = sn2.addr().to_string();
    let sn3 = sn(std::slice::from_ref(&a2));
    let a3 = sn3.addr().to_string();
    let sns = [a1.clone(), a2.clone(), a3.clone()];

    let dirs: Vec<_> = (0..12).map(|_| tempfile::tempdir().unwrap()).collect();
    let common_bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (i, d) in dirs.iter().enumerate() {
        std::fs::write(
            d.path().join(format!("Song {i:02}.mp3")),
            format!("song number {i}").repeat(100),
        )
        .unwrap();
        if i % 3 == 0 {
            // The same file shared by 4 ONs, on different SNs: one ContentHash, four sources.
            std::fs::write(d.path().join("Shared Hit.mp3"), &common_bytes).unwrap();
        }
    }
    let _ons: Vec<Daemon> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            // The 4 sources of the shared file upload at 100 kB/s each: ~0.5 s for it from all four.
            let cap: &[&str] = if i % 3 == 0 {
                &["--rate", "100000"]
            } else {
                &[]
            };
            on(&sns[i % 3], d.path(), &format!("user{i}"), cap)
        })
        .collect();

    // Every ON's song reaches a searcher on SN1, in one wave per SN, headed by that SN.
    let v = eventually("all 12 songs through the chain", || {
        let v = search(&a1, &["song"]);
        (results(&v).len() == 12).then_some(v)
    });
    let waves = v["waves"].as_array().unwrap();
    let heads: Vec<&str> = waves.iter().map(|w| w["sn"].as_str().unwrap()).collect();
    assert_eq!(
        heads,
        vec![a1.as_str(), a2.as_str(), a3.as_str()],
        "one wave per SN, nearest first"
    );
    for (w, sn) in waves.iter().zip(&sns) {
        assert_eq!(
            w["results"].as_array().unwrap().len(),
            4,
            "4 ONs per SN under {sn}"
        );
    }
    let rs = results(&v);
    let hashes: HashSet<&str> = rs.iter().map(|r| r["hash"].as_str().unwrap()).collect();
    assert_eq!(hashes.len(), 12, "no duplicates");
    assert!(rs
        .iter()
        .all(|r| r["network"] == "KaZaA" && r["user"].as_str().unwrap().starts_with("user")));

    // "Up to x" holds across SNs.
    assert_eq!(results(&search(&a3, &["--max", "5", "song"])).len(), 5);

    // Search by hash finds all four sources of the shared file.
    let hit = eventually("the shared file", || {
        let rs = results(&search(&a2, &["shared", "hit"]));
        (rs.len() == 4).then_some(rs)
    });
    let hash = hit[0]["hash"].as_str().unwrap().to_owned();
    assert!(hit.iter().all(|r| r["hash"] == hash.as_str()));
    let by_hash = results(&search(&a3, &["--max", "16", "--hash", &hash]));
    let sources: HashSet<&str> = by_hash
        .iter()
        .map(|r| r["addr"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 4);
    assert_eq!(common::hash::uuhash(&common_bytes).to_hex(), hash);

    // ...and a download through SN3 takes byte ranges from all four at once (each upload capped so
    // no single source can finish the file before the others start).
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("hit.mp3");
    let got = Command::new(BIN)
        .args([
            "get",
            "--json",
            "--block-size",
            "16384",
            "--peer",
            &a3,
            &hash,
            "-o",
        ])
        .arg(&dest)
        .output()
        .expect("get runs");
    assert!(
        got.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), common_bytes);
    let report: serde_json::Value = serde_json::from_slice(&got.stdout).expect("JSON report");
    let senders: HashSet<&str> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(senders.len(), 4, "all four sources sent bytes: {report}");
}

#[test]
fn ordinary_node_fails_over_to_its_other_supernode() {
    let sn_a = sn(&[]);
    let sn_b = sn(&[]);
    let (a, b) = (sn_a.addr().to_string(), sn_b.addr().to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Lonely Tune.mp3"), b"la la la".repeat(500)).unwrap();
    let _on = Daemon::builder_path(BIN)
        .args([
            "--role",
            "ordinary",
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &a,
            "--peer",
            &b,
            "--user",
            "mover",
        ])
        .args(["--share", dir.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    let found_on = |sn: &str| results(&search(sn, &["lonely"])).len() == 1;
    let first = eventually("registration", || {
        if found_on(&a) {
            Some(0)
        } else if found_on(&b) {
            Some(1)
        } else {
            None
        }
    });
    let mut sns = vec![sn_a, sn_b];
    let survivor = if first == 0 { b } else { a };
    drop(sns.remove(first));
    eventually("failover to the other supernode", || {
        found_on(&survivor).then_some(())
    });
}

#[test]
fn bad_input_is_refused_cleanly() {
    let s = sn(&[]);
    let out = Command::new(BIN)
        .args(["search", "--peer", "127.0.0.1:1", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
    // Garbage instead of a hello: the SN drops that session and keeps serving.
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
    c.write_all(&[0x4B; 64]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let _ = c.read(&mut buf);
    let v = search(&s.addr().to_string(), &["anything"]);
    assert!(results(&v).is_empty());
    let out = Command::new(BIN)
        .args(["--role", "auto", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an auto node needs a supernode");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--peer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn supernode_writes_stats_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("sn.json");
    let mut s = Daemon::builder_path(BIN)
        .args([
            "--role",
            "supernode",
            "--listen",
            "127.0.0.1:0",
            "--stats-file",
            stats.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let client_stats = dir.path().join("search.json");
    // Daemon options (as the swarm lab passes them) go before the subcommand.
    let out = Command::new(BIN)
        .args([
            "--stats-file",
            client_stats.to_str().unwrap(),
            "search",
            "--json",
        ])
        .args(["--peer", &s.addr().to_string(), "nothing", "here"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(results(&v).is_empty());
    let c = common::stats::StatsSnapshot::read_json(&client_stats).expect("client stats JSON");
    assert_eq!((c.proto.as_str(), c.role.as_str()), ("kazaa", "client"));
    assert_eq!(c.messages["query"].out_count, 1);
    assert_eq!(c.messages["query_end"].in_count, 1);
    let status = s.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let snap = common::stats::StatsSnapshot::read_json(&stats).expect("stats JSON written on exit");
    assert_eq!(
        (snap.proto.as_str(), snap.role.as_str()),
        ("kazaa", "supernode")
    );
    assert_eq!(snap.messages["query"].in_count, 1, "{:?}", snap.messages);
    assert!(snap.messages["query_end"].out_count >= 1);
    assert!(snap.messages["user_info"].in_count >= 1);
}

/// kazaa.md §7 case 14 over sockets: the ON hops to the other cached SN and re-registers its shares
/// there, so a searcher on that SN (which has no link to the first) now finds them; then it hops back.
#[test]
fn supernode_hopping_case_14() {
    let sn_a = sn(&[]);
    let sn_b = sn(&[]);
    let (a, b) = (sn_a.addr().to_string(), sn_b.addr().to_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Hopper.mp3"), b"hop".repeat(900)).unwrap();
    let _on = Daemon::builder_path(BIN)
        .args([
            "--role",
            "ordinary",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "hopper",
        ])
        .args(["--peer", &a, "--peer", &b, "--hop-every", "1"])
        .args(["--share", dir.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    let on_a = || results(&search(&a, &["hopper"])).len();
    let on_b = || results(&search(&b, &["hopper"])).len();
    eventually("shares on A", || (on_a() == 1).then_some(()));
    eventually("shares on B after a hop", || (on_b() == 1).then_some(()));
    eventually("back on A after the next hop", || {
        (on_a() == 1).then_some(())
    });
}

/// The readiness line an auto node prints once it became a supernode.
fn promoted_sn(d: &Daemon) -> Option<String> {
    d.stdout_lines().iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["event"] == "listening" && v["name"] == "supernode")
            .then(|| v["addr"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// `--role auto`: a reachable node with enough capacity promotes itself after its minimum uptime,
/// appears in its former SN's node list, links to it, and then serves as the SN of another ordinary
/// node whose files are found through the old SN. A node that cannot be reached (firewalled) or has
/// too little capacity stays ordinary.
#[test]
fn auto_node_is_promoted_and_serves_children() {
    let sn1 = sn(&[]);
    let a1 = sn1.addr().to_string();
    let dir_a = tempfile::tempdir().unwrap();
    std::fs::write(dir_a.path().join("Auto Own.mp3"), "promoted".repeat(100)).unwrap();
    let auto = |user: &str, extra: &[&str]| {
        Daemon::builder_path(BIN)
            .args(["--role", "auto", "--listen", "127.0.0.1:0", "--peer", &a1])
            .args(["--user", user, "--share", dir_a.path().to_str().unwrap()])
            .args(["--promote-after", "1", "--promote-min-kbps", "1000"])
            .args(extra)
            .spawn()
            .expect("auto node starts")
    };
    let started = Instant::now();
    let a = auto("auto", &["--capacity-kbps", "4000"]);
    let weak = auto("weak", &["--capacity-kbps", "100"]);
    let walled = auto("walled", &["--firewalled"]);
    let sn_a = eventually("the auto node's promotion", || promoted_sn(&a));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "promoted before its minimum uptime"
    );
    // The former SN lists the new SN in the node list it hands out.
    eventually("the new SN in SN1's node list", || {
        let v = search(&a1, &["nothing-matches-this"]);
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["addr"] == sn_a.as_str())
            .then_some(())
    });
    // An ordinary node joins the promoted SN; its files are found there and, through the SN<->SN
    // link, from SN1 in a wave headed by the promoted SN.
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::write(dir_b.path().join("Child Of Auto.mp3"), "child".repeat(100)).unwrap();
    let _b = on(&sn_a, dir_b.path(), "child", &[]);
    let v = eventually("the child's file through SN1", || {
        let v = search(&a1, &["child", "auto"]);
        (!results(&v).is_empty()).then_some(v)
    });
    let wave = &v["waves"].as_array().unwrap()[0];
    assert_eq!(wave["sn"], sn_a.as_str(), "{v}");
    assert_eq!(wave["results"][0]["user"], "child");
    // The promoted node registered its own shares with itself.
    eventually("the auto node's own file on its SN", || {
        let v = search(&sn_a, &["auto", "own"]);
        results(&v)
            .iter()
            .any(|r| r["user"] == "auto")
            .then_some(())
    });
    // Give the others as long again as the promoted node needed: neither may promote.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(promoted_sn(&weak), None, "too little capacity");
    assert_eq!(promoted_sn(&walled), None, "never confirmed reachable");
}

/// A supernode that logs children in (its node list names `other`, busier, as the next choice) and
/// then never answers anything: a half-open SN as the child's keep-alive sees it. Records every frame
/// each session receives.
async fn mute_supernode(
    listener: tokio::net::TcpListener,
    other: std::net::SocketAddrV4,
    log: std::sync::Arc<std::sync::Mutex<Vec<Vec<Frame>>>>,
) {
    use kazaa_supernode::codec::message::NodeEntry;
    use kazaa_supernode::codec::{Message, Packet};
    use tokio::io::AsyncReadExt;
    let std::net::SocketAddr::V4(me) = listener.local_addr().unwrap() else {
        unreachable!("bound on 127.0.0.1")
    };
    while let Ok((mut s, _)) = listener.accept().await {
        let log = log.clone();
        tokio::spawn(async move {
            let mut hello = [0u8; kazaa_supernode::codec::frame::CLIENT_HELLO_LEN];
            if s.read_exact(&mut hello).await.is_err() {
                return;
            }
            let Ok((_, mut r, mut w)) =
                kazaa_supernode::node::session::accept(s, hello, 7, "KaZaA").await
            else {
                return;
            };
            let entry = |addr, load| NodeEntry {
                addr,
                last_seen: 0,
                load,
            };
            // The login burst in the SN's order (§2 step 4).
            let burst = [
                Message::ProtocolVersion(0x22),
                Message::NodeList(vec![entry(me, 0), entry(other, 50)]),
                Message::ExternalIp(*me.ip()),
                Message::NetworkName("KaZaA".into()),
            ];
            for m in burst {
                if w.send(&Packet::plain(m)).await.is_err() {
                    return;
                }
            }
            let i = {
                let mut l = log.lock().unwrap();
                l.push(Vec::new());
                l.len() - 1
            };
            while let Ok(Some(f)) = r.next_frame().await {
                log.lock().unwrap()[i].push(f);
            }
        });
    }
}

/// Keep-alive (kazaa.md §2: giFT pings every 120 s, 20 s timeout; here 0.3 s and 2 s, the timeout
/// generous for a loaded CI machine): an ON whose SN stops answering pings counts it as gone and fails
/// over to the next SN of its node list; the live SN answers its pings with pongs and keeps it.
#[test]
fn keepalive_detects_a_silent_supernode_and_fails_over() {
    let live = sn(&[]);
    let std::net::SocketAddr::V4(live_addr) = live.addr() else {
        panic!("IPv4 loopback")
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let mute = listener.local_addr().unwrap().to_string();
    rt.spawn(mute_supernode(listener, live_addr, log.clone()));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Still Alive.mp3"), "alive".repeat(100)).unwrap();
    let stats = dir.path().join("on.json");
    let child = on(
        &mute,
        dir.path(),
        "child",
        &[
            "--ping-interval",
            "0.3",
            "--ping-timeout",
            "2",
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    let live_s = live_addr.to_string();
    eventually("the child to fail over to the live SN", || {
        (results(&search(&live_s, &["still", "alive"])).len() == 1).then_some(())
    });
    let sessions = log.lock().unwrap().clone();
    let registered = sessions
        .iter()
        .find(|s| {
            s.iter()
                .any(|f| matches!(decode(f), Some(Message::Share(_))))
        })
        .expect("the child registered its share with the silent SN");
    assert!(
        registered.contains(&Frame::Ping),
        "the silent SN was pinged before the child left it"
    );
    // The client's side of the login (§2 step 4): 0x02 and its 0x22, then the 0x26 echoed, 0x02
    // again after the 0x2C, and its own network name for the SN's 0x1D.
    let codes: Vec<u8> = registered
        .iter()
        .filter_map(decode)
        .map(|m| m.code())
        .collect();
    assert_eq!(codes, [0x02, 0x22, 0x26, 0x02, 0x1D], "{registered:?}");
    let msgs: Vec<Message> = registered.iter().filter_map(decode).collect();
    assert_eq!(msgs[2], Message::ProtocolVersion(0x22));
    assert_eq!(msgs[3], msgs[0], "the same 0x02 again");
    assert_eq!(msgs[4], Message::NetworkName("KaZaA".into()));
    // On the live SN, pings are answered: several rounds later the child is still registered there.
    eventually("three pongs from the live SN", || {
        let snap = child.stats();
        (snap.messages.get("pong")?.in_count >= 3).then_some(())
    });
    assert_eq!(
        results(&search(&live_s, &["still", "alive"])).len(),
        1,
        "the child stayed on the SN that answers its pings"
    );
}

/// The stats files list the overlay links each node holds (kazaa.md §1–2): the ON its one session to its
/// SN, the linked SNs each other (B dialled A); an ON that leaves is gone from its SN's next snapshot
/// (the union `neighbours_seen` keeps it).
#[test]
fn stats_list_the_links_each_node_holds() {
    let dir = tempfile::tempdir().unwrap();
    let stats = |n: &str| dir.path().join(format!("{n}.json"));
    let sn_with_stats = |name: &str, peers: &[&str]| {
        let mut args = vec![
            "--role".to_owned(),
            "supernode".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--stats-file".into(),
            stats(name).display().to_string(),
        ];
        for p in peers {
            args.extend(["--peer".to_owned(), (*p).to_owned()]);
        }
        Daemon::builder_path(BIN).args(args).spawn().unwrap()
    };
    let links = |s: &common::stats::StatsSnapshot| {
        let mut l: Vec<(String, String)> = s
            .neighbours
            .iter()
            .map(|n| (n.dir.clone(), n.kind.clone()))
            .collect();
        l.sort();
        l
    };
    let a = sn_with_stats("a", &[]);
    let a_addr = a.addr().to_string();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("Linked Song.mp3"), b"la la la").unwrap();
    // The ON starts while A is the only SN it can know of, so A is the SN it keeps.
    let on_stats = stats("on");
    let mut child = on(
        &a_addr,
        &share,
        "linker",
        &["--stats-file", on_stats.to_str().unwrap()],
    );
    eventually("the ON's link to A", || {
        let s = child.stats();
        let n = s.neighbours.first()?;
        (s.neighbours.len() == 1 && n.addr == a_addr && n.dir == "out" && n.kind == "supernode")
            .then_some(())
    });
    let b = sn_with_stats("b", &[&a_addr]);
    eventually("B's link to A", || {
        let s = b.stats();
        let n = s.neighbours.first()?;
        (s.neighbours.len() == 1 && n.addr == a_addr && n.dir == "out" && n.kind == "supernode")
            .then_some(())
    });
    let pair = |d: &str, k: &str| (d.to_owned(), k.to_owned());
    eventually("A holding B and its child", || {
        let s = a.stats();
        (links(&s) == [pair("in", "ordinary"), pair("in", "supernode")]).then_some(())
    });
    child.terminate(DEADLINE).unwrap();
    let s = eventually("the child gone from A", || {
        let s = a.stats();
        (links(&s) == [pair("in", "supernode")]).then_some(s)
    });
    assert!(
        s.neighbours_seen.iter().any(|n| n.kind == "ordinary"),
        "{:?}",
        s.neighbours_seen
    );
}
