//! Tracker client: HTTP (BEP 3) and UDP (BEP 15) announces over the multitracker tiers of BEP 12
//! (each tier shuffled once when the torrent loads, the tracker that answered moved to the front).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{lookup_host, TcpStream, UdpSocket};

use crate::codec::tracker::{
    parse_http_response, parse_udp_announce, parse_udp_connect, udp_connect_request,
    AnnounceRequest, AnnounceResponse, TrackerError, MAX_HTTP_REPLY, MAX_UDP_PACKET,
};

/// Time allowed for one HTTP announce.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// BEP 15 retransmits after 15 * 2^n s; on loopback labs we start at 2 s and try 3 times.
pub const UDP_FIRST_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP attempts per request.
pub const UDP_TRIES: u32 = 3;

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// Network.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The reply was an error or malformed.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// Not an http:// or udp:// URL, or an HTTP status other than 200.
    #[error("{0}")]
    Bad(String),
}

fn split_url(url: &str, scheme: &str) -> Result<(String, String), AnnounceError> {
    let rest = url
        .strip_prefix(scheme)
        .ok_or_else(|| AnnounceError::Bad(format!("unsupported tracker URL {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_owned(), path.to_owned()))
}

/// One announce to one tracker URL.
pub async fn announce(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError> {
    if url.starts_with("udp://") {
        return announce_udp(url, req).await;
    }
    let (host, _) = split_url(url, "http://")?;
    let full = req.http_url(url);
    let (_, path) = split_url(&full, "http://")?;
    let host_port = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:80")
    };
    tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut s = TcpStream::connect(&host_port).await?;
        let head = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: p2p-lab-bittorrent-peer\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        let mut body = Vec::new();
        (&mut s).take(MAX_HTTP_REPLY as u64 + 4096).read_to_end(&mut body).await?;
        let split = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| AnnounceError::Bad("no HTTP header end".into()))?;
        let status = std::str::from_utf8(&body[..split]).unwrap_or("");
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            return Err(AnnounceError::Bad(format!("tracker HTTP status {code}")));
        }
        if status.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return Err(AnnounceError::Bad("chunked tracker reply not supported".into()));
        }
        Ok(parse_http_response(&body[split + 4..])?)
    })
    .await
    .map_err(|_| AnnounceError::Io(io::Error::new(io::ErrorKind::TimedOut, "tracker timeout")))?
}

async fn announce_udp(url: &str, req: &AnnounceRequest) -> Result<AnnounceResponse, AnnounceError> {
    let (host, _) = split_url(url, "udp://")?;
    let addr: SocketAddr = lookup_host(&host)
        .await?
        .next()
        .ok_or_else(|| AnnounceError::Bad(format!("cannot resolve {host}")))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(addr).await?;
    let mut buf = vec![0u8; MAX_UDP_PACKET];
    let mut timeout = UDP_FIRST_TIMEOUT;
    for _ in 0..UDP_TRIES {
        let tid: u32 = rand::thread_rng().gen();
        sock.send(&udp_connect_request(tid)).await?;
        let Ok(n) = tokio::time::timeout(timeout, sock.recv(&mut buf)).await else {
            timeout *= 2;
            continue;
        };
        let conn = parse_udp_connect(&buf[..n?], tid)?;
        let tid: u32 = rand::thread_rng().gen();
        sock.send(&req.udp_packet(conn, tid)).await?;
        let Ok(n) = tokio::time::timeout(timeout, sock.recv(&mut buf)).await else {
            timeout *= 2;
            continue;
        };
        return Ok(parse_udp_announce(&buf[..n?], tid)?);
    }
    Err(AnnounceError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "UDP tracker did not answer",
    )))
}

/// BEP 12: "the URLs in each tier are processed in a randomly shuffled order", so that a swarm does not
/// all load the first tracker of a tier. Done once, when the torrent loads; the tiers keep their order.
pub fn shuffle_tiers(tiers: &mut [Vec<String>], rng: &mut impl Rng) {
    for tier in tiers {
        tier.shuffle(rng);
    }
}

/// BEP 12: a tracker that answered moves to the front of its tier (the others keep their order), so it
/// is tried first next time.
pub fn promote(tier: &mut Vec<String>, i: usize) {
    if i < tier.len() {
        let url = tier.remove(i);
        tier.insert(0, url);
    }
}

/// BEP 12: tries the tiers in order and the trackers of a tier in order; the tracker that answers moves
/// to the front of its tier.
pub async fn announce_tiers(
    tiers: &mut [Vec<String>],
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, AnnounceError> {
    let mut last = AnnounceError::Bad("no tracker".into());
    for tier in tiers.iter_mut() {
        for i in 0..tier.len() {
            match announce(&tier[i], req).await {
                Ok(r) => {
                    promote(tier, i);
                    return Ok(r);
                }
                Err(e) => {
                    tracing::debug!(url = %tier[i], cause = %e, "announce failed");
                    last = e;
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tracker::Event;
    use crate::types::{InfoHash, PeerId};
    use tokio::net::TcpListener;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 1,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::Started,
            numwant: 10,
            key: 0,
            ip: None,
        }
    }

    #[tokio::test]
    async fn tiers_fall_back_and_promote_the_working_tracker() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = format!("http://{}/announce", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 2048];
            let n = s.read(&mut b).await.unwrap();
            assert!(std::str::from_utf8(&b[..n])
                .unwrap()
                .starts_with("GET /announce?info_hash=%01"));
            s.write_all(
                b"HTTP/1.0 200 OK\r\n\r\nd8:intervali30e5:peers6:\x7f\x00\x00\x01\x1a\xe1e",
            )
            .await
            .unwrap();
        });
        // The first tracker refuses connections (nothing listens there).
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://{}/announce", dead.local_addr().unwrap());
        drop(dead);
        let mut tiers = vec![vec![dead_url.clone(), good.clone()]];
        let r = announce_tiers(&mut tiers, &req()).await.unwrap();
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert_eq!(tiers[0], vec![good, dead_url]);
    }

    fn urls(tier: char, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://{tier}{i}/announce"))
            .collect()
    }

    #[test]
    fn tiers_are_shuffled_within_themselves_by_the_seeded_rng() {
        use rand::rngs::StdRng;
        use rand::SeedableRng;
        let original = vec![urls('a', 6), urls('b', 6), urls('c', 1)];
        let shuffled = |seed: u64| {
            let mut t = original.clone();
            shuffle_tiers(&mut t, &mut StdRng::seed_from_u64(seed));
            t
        };
        let mut firsts = std::collections::HashSet::new();
        let mut moved = 0;
        for seed in 0..20 {
            let t = shuffled(seed);
            assert_eq!(t, shuffled(seed), "same seed, same order");
            // Each tier keeps its own trackers, and the tiers keep their order.
            for (got, want) in t.iter().zip(&original) {
                let (mut g, mut w) = (got.clone(), want.clone());
                g.sort();
                w.sort();
                assert_eq!(g, w);
            }
            firsts.insert(t[0][0].clone());
            moved += usize::from(t[1] != original[1]);
        }
        assert!(
            firsts.len() >= 4,
            "first tracker of tier 1 varies: {firsts:?}"
        );
        assert!(moved >= 18, "tier 2 is shuffled too: {moved} of 20");
    }

    #[test]
    fn the_tracker_that_answered_moves_to_the_front_of_its_tier() {
        let mut tier = urls('a', 5);
        promote(&mut tier, 3);
        let want = ["a3", "a0", "a1", "a2", "a4"].map(|h| format!("http://{h}/announce"));
        assert_eq!(tier, want);
        promote(&mut tier, 0);
        assert_eq!(tier, want, "the front stays");
        promote(&mut tier, 9);
        assert_eq!(tier, want, "out of range: unchanged");
    }

    #[tokio::test]
    async fn udp_announce_round_trip() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}", s.local_addr().unwrap());
        tokio::spawn(async move {
            let mut b = [0u8; 200];
            let (n, from) = s.recv_from(&mut b).await.unwrap();
            assert_eq!(n, 16);
            let mut r = vec![0, 0, 0, 0];
            r.extend_from_slice(&b[12..16]);
            r.extend_from_slice(&77u64.to_be_bytes());
            s.send_to(&r, from).await.unwrap();
            let (n, from) = s.recv_from(&mut b).await.unwrap();
            assert_eq!(n, 98);
            assert_eq!(&b[..8], &77u64.to_be_bytes());
            let mut r = vec![0, 0, 0, 1];
            r.extend_from_slice(&b[12..16]);
            r.extend_from_slice(&[0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 1, 127, 0, 0, 1, 0, 80]);
            s.send_to(&r, from).await.unwrap();
        });
        let r = announce(&url, &req()).await.unwrap();
        assert_eq!(r.interval, 30);
        assert_eq!(r.peers, vec!["127.0.0.1:80".parse().unwrap()]);
    }
}
