//! `napster-client search` shows each result as its 201 arrives, not when the 202 ends the list: a
//! scripted server sends one 201 and withholds the rest of the list until the client's stdout has
//! shown that hit. A client that printed only at the end would never release the server, which gives
//! up after [`HOLD`] and the test fails. (A real server sends its whole list in one burst, so only a
//! scripted one can hold the 202 back.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use napster_server::codec::msg::ty;
use napster_server::codec::{ip, Frame, MAX_PAYLOAD};

/// How long the scripted server holds the end of the list back waiting for the first hit line. Below
/// the client's own 30 s step timeout, so a buffering client fails here with a clear message.
const HOLD: Duration = Duration::from_secs(15);

/// A frame's wire bytes.
fn send(s: &mut TcpStream, t: u16, text: &str) {
    s.write_all(&Frame::text(t, text).to_bytes().unwrap())
        .unwrap();
}

/// Reads frames until one of type `t` arrives; returns its text.
fn until(s: &mut TcpStream, buf: &mut Vec<u8>, t: u16) -> String {
    loop {
        if let Some((f, n)) = Frame::decode_with_limit(buf, MAX_PAYLOAD).unwrap() {
            buf.drain(..n);
            if f.ty == t {
                return f.text_payload();
            }
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("the client stays connected");
        assert!(n > 0, "the client closed before sending a {t}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn result(path: &str, nick: &str) -> String {
    let wire = ip::to_wire(std::net::Ipv4Addr::LOCALHOST);
    format!("\"{path}\" 0123456789abcdef0123456789abcdef 3000000 128 44100 187 {nick} {wire} 7")
}

/// One session: login, greeting, the search's settle (214) and the 200; then the first 201, the hold
/// until `seen` says the client printed it, the second 201 and the 202. Returns whether the release
/// came from `seen` (true) or from the timeout (false), and the 200's text.
fn scripted_server(l: TcpListener, seen: mpsc::Receiver<()>) -> (bool, String) {
    // Polled, so a client that never connects fails the test instead of hanging it.
    l.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    let mut s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < HOLD, "the client never connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    until(&mut s, &mut buf, ty::LOGIN);
    send(&mut s, ty::LOGIN_ACK, "anon@localhost");
    send(&mut s, ty::STATS, "2 3 1");
    // The client settles (a 214 answered in order) before each search.
    until(&mut s, &mut buf, ty::STATS);
    send(&mut s, ty::STATS, "2 3 1");
    let query = until(&mut s, &mut buf, ty::SEARCH);
    send(
        &mut s,
        ty::SEARCH_RESULT,
        &result("alice\\Beatles - Hey Jude.mp3", "alice"),
    );
    let released = seen.recv_timeout(HOLD).is_ok();
    send(
        &mut s,
        ty::SEARCH_RESULT,
        &result("bob\\Hey Jude (live).mp3", "bob"),
    );
    send(&mut s, ty::SEARCH_END, "");
    (released, query)
}

#[test]
fn search_prints_each_hit_before_the_end_of_the_list() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::channel();
    let server = std::thread::spawn(move || scripted_server(l, seen_rx));
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_napster-client"))
        .args([
            "--server",
            &addr.to_string(),
            "--nick",
            "searcher",
            "--json",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["search", "hey jude"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if got.is_empty() {
            // Read while the server still withholds the 202: release it.
            let _ = seen_tx.send(());
        }
        let done = v["event"] == "done";
        got.push(v);
        if done {
            break;
        }
    }
    let status = child.wait().unwrap();
    let (released, query) = server.join().unwrap();
    assert!(
        released,
        "no hit line within {HOLD:?} of the first 201: the client waits for the 202 ({got:?})"
    );
    assert!(status.success());
    assert!(query.contains("FILENAME CONTAINS \"hey jude\""), "{query}");
    assert_eq!(got.len(), 3, "two hits and the summary: {got:?}");
    assert_eq!(got[0]["event"], "hit");
    assert_eq!(got[0]["name"], "Beatles - Hey Jude.mp3");
    assert_eq!(got[0]["path"], "alice\\Beatles - Hey Jude.mp3");
    assert_eq!(got[0]["nick"], "alice");
    assert_eq!(got[0]["size"], 3_000_000);
    assert_eq!(got[0]["ip"], "127.0.0.1");
    assert_eq!(got[1]["name"], "Hey Jude (live).mp3");
    assert_eq!(got[2]["event"], "done");
    assert_eq!(got[2]["results"], 2);
}
