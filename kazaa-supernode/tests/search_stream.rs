//! `kazaa-supernode search --json` shows each result as its wave (0x07) arrives, not when the 0x08 ends
//! the search: a scripted supernode answers with one wave and holds the second wave and the 0x08 back
//! until the client's stdout has shown the first hit. A client that printed only at the end would never
//! release the SN, which gives up after [`HOLD`] and the test fails. (Real supernodes on loopback send
//! their waves within milliseconds, so only a scripted one can hold the end back.)

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::hash::UuHash;
use kazaa_supernode::codec::message::{NodeEntry, Reply, SearchResult};
use kazaa_supernode::codec::tag::code;
use kazaa_supernode::codec::{Frame, Message, Packet, Tag};

/// How long the scripted SN holds the rest back waiting for the first hit line (below the client's
/// `--timeout`, so a buffering client fails here with a clear message).
const HOLD: Duration = Duration::from_secs(15);

fn result(user: &str, name: &str, byte: u8) -> SearchResult {
    SearchResult {
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1214),
        bandwidth: 0xD1,
        user: user.into(),
        network: "KaZaA".into(),
        hash: UuHash([byte; 20]),
        file_id: 7,
        size: 4_000_000,
        tags: vec![Tag::string(code::FILENAME, name)],
    }
}

/// One session: the login burst, then for the client's query a wave from this SN, the hold until
/// `seen` fires (or [`HOLD`] passes), a wave headed by a farther SN and the 0x08. Returns whether `seen`
/// released it.
async fn scripted_supernode(
    listener: tokio::net::TcpListener,
    seen: tokio::sync::oneshot::Receiver<()>,
) -> bool {
    use tokio::io::AsyncReadExt;
    let std::net::SocketAddr::V4(me) = listener.local_addr().unwrap() else {
        unreachable!("bound on 127.0.0.1")
    };
    let far = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 1215);
    let (mut s, _) = tokio::time::timeout(HOLD, listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    let mut hello = [0u8; kazaa_supernode::codec::frame::CLIENT_HELLO_LEN];
    s.read_exact(&mut hello).await.unwrap();
    let (_, mut r, mut w) = kazaa_supernode::node::session::accept(s, hello, 7, "KaZaA")
        .await
        .unwrap();
    for m in [
        Message::ProtocolVersion(0x22),
        Message::NodeList(vec![NodeEntry {
            addr: me,
            last_seen: 0,
            load: 10,
        }]),
        Message::ExternalIp(Ipv4Addr::LOCALHOST),
        Message::NetworkName("KaZaA".into()),
    ] {
        w.send(&Packet::plain(m)).await.unwrap();
    }
    let id = loop {
        let f = tokio::time::timeout(HOLD, r.next_frame())
            .await
            .expect("a query within the hold")
            .unwrap()
            .expect("the client stays connected");
        if let Frame::Message { msg_type, payload } = f {
            if let Ok(Packet {
                message: Message::Query(q),
                ..
            }) = Packet::decode(msg_type, &payload)
            {
                break q.search_id;
            }
        }
    };
    let wave = |sn, results| {
        Packet::plain(Message::Reply(Reply {
            sn,
            search_id: id,
            results,
        }))
    };
    w.send(&wave(
        me,
        vec![result("alice", "Beatles - Hey Jude.mp3", 1)],
    ))
    .await
    .unwrap();
    let released = matches!(tokio::time::timeout(HOLD, seen).await, Ok(Ok(())));
    w.send(&wave(far, vec![result("bob", "Hey Jude (live).mp3", 2)]))
        .await
        .unwrap();
    w.send(&Packet::plain(Message::QueryEnd { search_id: id }))
        .await
        .unwrap();
    // Keep the session open until the client leaves.
    while let Ok(Some(_)) = r.next_frame().await {}
    released
}

#[test]
fn search_prints_each_wave_before_the_end_of_results() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let sn = rt.spawn(scripted_supernode(listener, seen_rx));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kazaa-supernode"))
        .args(["search", "--json", "--timeout", "30", "--peer"])
        .arg(addr.to_string())
        .args(["hey", "jude"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen_tx = Some(seen_tx);
    let mut got = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        // Read while the SN still withholds the rest: release it.
        if let Some(tx) = seen_tx.take() {
            let _ = tx.send(());
        }
        got.push(v);
    }
    let status = child.wait().unwrap();
    let released = rt.block_on(sn).unwrap();
    assert!(
        released,
        "no hit line within {HOLD:?} of the first wave: the client waits for the 0x08 ({got:?})"
    );
    assert!(status.success());
    assert_eq!(got.len(), 3, "two hits and the summary: {got:?}");
    assert_eq!(got[0]["event"], "hit");
    assert_eq!(got[0]["name"], "Beatles - Hey Jude.mp3");
    assert_eq!(got[0]["user"], "alice");
    assert_eq!(got[0]["sn"], addr.to_string());
    assert_eq!(got[0]["hash"], UuHash([1; 20]).to_hex());
    assert_eq!(got[1]["name"], "Hey Jude (live).mp3");
    assert_eq!(got[1]["sn"], "127.0.0.9:1215");
    let done = &got[2];
    assert_eq!(done["event"], "done");
    assert_eq!(
        (done["hits"].as_u64(), done["results"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(done["waves"][1]["results"][0]["user"], "bob");
    assert_eq!(done["nodes"][0]["addr"], addr.to_string());
}
