//! The full scrape (BEP 48 `/scrape` without `info_hash`) is answered from a cached encoding for
//! [`FULL_SCRAPE_TTL`]; a scrape naming info-hashes never is. Sans-I/O: the clock is passed in, so the
//! test decides exactly when the cache is fresh or stale.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracker::protocol::service::{Service, ServiceOptions, FULL_SCRAPE_TTL};
use tracker::protocol::swarm::Config;

fn announce(s: &mut Service, now: Instant, peer: char, left: u64, event: &str) {
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let q = format!(
        "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id={}&port={}&left={left}&event={event}",
        peer.to_string().repeat(20),
        6800 + u32::from(peer)
    );
    let mut out = Vec::new();
    let o = s.http_announce(now, src, q.as_bytes(), &mut out);
    assert_eq!(o.error, None, "{}", String::from_utf8_lossy(&out));
}

fn scrape(s: &mut Service, now: Instant, query: &str) -> Vec<u8> {
    let mut out = b"stale bytes the reply must replace".to_vec();
    let o = s.http_scrape(now, query.as_bytes(), &mut out);
    assert_eq!(o.error, None, "{}", String::from_utf8_lossy(&out));
    out
}

#[test]
fn full_scrape_is_cached_for_its_ttl_then_shows_the_change() {
    let mut s = Service::new(Config::default(), ServiceOptions::default(), 7);
    let t0 = Instant::now();
    announce(&mut s, t0, 'b', 10, "started");
    let one_leecher =
        b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei0e10:downloadedi0e10:incompletei1eeee";
    assert_eq!(scrape(&mut s, t0, ""), one_leecher);

    // The leecher completes: a scrape naming the torrent sees it at once...
    announce(&mut s, t0, 'b', 0, "completed");
    let one_seeder =
        b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:downloadedi1e10:incompletei0eeee";
    assert_eq!(
        scrape(&mut s, t0, "info_hash=aaaaaaaaaaaaaaaaaaaa"),
        one_seeder
    );
    // ...the full scrape is the cached bytes until the TTL has passed (the same bytes twice in a row)...
    let just_before = t0 + FULL_SCRAPE_TTL - Duration::from_millis(1);
    assert_eq!(scrape(&mut s, t0, ""), one_leecher);
    assert_eq!(scrape(&mut s, just_before, ""), one_leecher);
    // ...and is rebuilt after it, then cached again from that moment.
    let t1 = t0 + FULL_SCRAPE_TTL;
    assert_eq!(scrape(&mut s, t1, ""), one_seeder);
    announce(&mut s, t1, 'c', 5, "started");
    assert_eq!(scrape(&mut s, t1 + FULL_SCRAPE_TTL / 2, ""), one_seeder);
    let both = scrape(&mut s, t1 + FULL_SCRAPE_TTL, "");
    assert!(
        both.windows(14).any(|w| w == b"incompletei1ee"),
        "{}",
        String::from_utf8_lossy(&both)
    );
    // A request timed a little earlier (on another thread, before it got the lock) gets the cached bytes.
    assert_eq!(scrape(&mut s, t0, ""), both);
}

#[test]
fn disabled_full_scrape_is_refused_whatever_the_cache() {
    let cfg = Config {
        scrape_all: false,
        ..Config::default()
    };
    let mut s = Service::new(cfg, ServiceOptions::default(), 7);
    let now = Instant::now();
    announce(&mut s, now, 'b', 10, "started");
    let mut out = Vec::new();
    for _ in 0..2 {
        let o = s.http_scrape(now, b"", &mut out);
        assert_eq!(o.error, Some("scrape_all_disabled"));
        assert_eq!(
            out,
            b"d14:failure reason39:full scrape is disabled on this trackere"
        );
    }
}
