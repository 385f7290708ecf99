//! The multi-source downloader against the project's own range server ([`common::http`]): rate-capped slow
//! peers, KaZaA-style `Connection: close` after every reply, and upload slots answering `503 Retry-After`.

mod multisource_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::{FileReply, HttpConfig, RequestInfo, Route};
use common::multisource::{Download, DownloadConfig, DownloadReport, Event, ExpectedHash, Source};
use common::stats::Stats;
use multisource_support::{content, content_sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// A `common::http` server for one file, stopped when dropped.
struct FileServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FileServer {
    async fn start(file: &Path, config: HttpConfig, close: bool) -> FileServer {
        Self::start_with_headers(file, config, close, &[]).await
    }

    /// Like [`FileServer::start`], adding `headers` to every reply.
    async fn start_with_headers(
        file: &Path,
        config: HttpConfig,
        close: bool,
        headers: &[(&str, &str)],
    ) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let path: PathBuf = file.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let router = move |_req: &RequestInfo| {
            let mut reply = FileReply::new(path.clone());
            reply.close = close;
            reply.headers.push("X-Kazaa-Username", "lab");
            for (k, v) in &headers {
                reply.headers.push(k, v);
            }
            Route::File(reply)
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let stats = Stats::new("test", "server", "s");
            common::http::serve(listener, router, config, stats, token).await
        });
        FileServer { addr, stop }
    }

    fn source(&self) -> Source {
        Source::http(&format!("http://{}/.hash=00", self.addr))
            .unwrap()
            .header("X-Kazaa-Network", "KaZaA")
            .unwrap()
    }
}

fn config() -> DownloadConfig {
    DownloadConfig {
        block_size: 16 * 1024,
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(50),
        state_save_interval: Duration::ZERO,
        progress_interval: Duration::from_millis(20),
        ..DownloadConfig::default()
    }
}

fn shared_file(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("shared.bin");
    std::fs::write(&p, content(size)).unwrap();
    p
}

async fn download(dest: &Path, size: u64, sources: Vec<Source>) -> (DownloadReport, Vec<Event>) {
    let (dl, _adder, mut rx) = Download::new(
        dest,
        size,
        ExpectedHash::Sha1(content_sha1(size)),
        config(),
        Stats::new("test", "downloader", "d"),
    );
    let report = tokio::time::timeout(TEST_DEADLINE, dl.run(sources))
        .await
        .expect("download hung")
        .unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(
        std::fs::read(dest).unwrap() == content(size),
        "content differs"
    );
    (report, events)
}

#[tokio::test]
async fn a_rate_capped_peer_is_outrun_by_a_fast_one() {
    let size = 320 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = shared_file(dir.path(), size);
    let slow = FileServer::start(
        &file,
        HttpConfig {
            per_connection_rate: Some(8 * 1024),
            ..HttpConfig::default()
        },
        false,
    )
    .await;
    let fast = FileServer::start(&file, HttpConfig::default(), false).await;
    let (report, _) = download(
        &dir.path().join("out"),
        size,
        vec![slow.source(), fast.source()],
    )
    .await;
    assert!(
        report.sources[0].blocks <= 1,
        "slow peer supplied {:?}",
        report.sources[0]
    );
    assert!(report.sources[1].blocks >= 19);
}

#[tokio::test]
async fn connection_close_after_every_reply_still_downloads() {
    let size = 80 * 1024 + 1;
    let dir = tempfile::tempdir().unwrap();
    let file = shared_file(dir.path(), size);
    let a = FileServer::start(&file, HttpConfig::default(), true).await;
    let (report, _) = download(&dir.path().join("out"), size, vec![a.source()]).await;
    assert_eq!(report.blocks_fetched, 6);
}

#[tokio::test]
async fn full_upload_slots_queue_us_until_one_frees() {
    let size = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = shared_file(dir.path(), size);
    let server = FileServer::start(
        &file,
        HttpConfig {
            upload_slots: 1,
            retry_after: Duration::from_secs(1),
            per_connection_rate: Some(64 * 1024),
            ..HttpConfig::default()
        },
        false,
    )
    .await;
    // Another downloader holds the only slot for a while, then goes away.
    let mut blocker = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    blocker
        .write_all(b"GET /.hash=00 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    blocker.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(blocker);
    });
    let (report, events) = download(&dir.path().join("out"), size, vec![server.source()]).await;
    release.await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::SourceQueued {
                retry_after_ms: 1000,
                ..
            }
        )),
        "503 + Retry-After seen"
    );
    assert_eq!(report.sources[0].blocks, 4);
}

/// A download cap holds across all sources together: two unlimited servers cannot push the download faster
/// than the cap (checked as a lower bound on the time taken, which only a working cap can produce).
#[tokio::test]
async fn a_download_rate_cap_holds_across_sources() {
    let size = 192 * 1024;
    let rate = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = shared_file(dir.path(), size);
    let a = FileServer::start(&file, HttpConfig::default(), false).await;
    let b = FileServer::start(&file, HttpConfig::default(), false).await;
    let limiter = common::ratelimit::RateLimiter::new(rate);
    // `RateLimiter::new` starts with a full bucket of a tenth of a second.
    let burst = rate / 10;
    let dest = dir.path().join("out");
    let (dl, _adder, _rx) = Download::new(
        &dest,
        size,
        ExpectedHash::Sha1(content_sha1(size)),
        DownloadConfig {
            rate_limit: Some(limiter),
            ..config()
        },
        Stats::new("test", "downloader", "d"),
    );
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(TEST_DEADLINE, dl.run(vec![a.source(), b.source()]))
        .await
        .expect("download hung")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(std::fs::read(&dest).unwrap(), content(size));
    assert_eq!(report.sources.len(), 2);
    // Everything after the initial burst is paced at `rate`.
    let floor = Duration::from_secs_f64((size - burst) as f64 / rate as f64 * 0.9);
    assert!(
        took >= floor,
        "{size} bytes at {rate} B/s took only {took:?} (floor {floor:?})"
    );
}

#[tokio::test]
async fn alternate_locations_are_reported_at_the_response_head_not_after_the_body() {
    // One slow source (64 KiB at 16 KiB/s: its only block takes about 4 s) naming another location.
    let size = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let file = shared_file(dir.path(), size);
    let slow = FileServer::start_with_headers(
        &file,
        HttpConfig {
            per_connection_rate: Some(16 * 1024),
            ..HttpConfig::default()
        },
        false,
        &[("X-Alt", "10.9.9.9:6347, 10.9.9.10")],
    )
    .await;
    let stats = Stats::new("test", "downloader", "d");
    let (dl, _adder, mut rx) = Download::new(
        dir.path().join("out"),
        size,
        ExpectedHash::Sha1(content_sha1(size)),
        DownloadConfig {
            block_size: size as u32,
            ..config()
        },
        stats.clone(),
    );
    let run = dl.run(vec![slow.source()]);
    tokio::pin!(run);
    let values = tokio::time::timeout(TEST_DEADLINE, async {
        loop {
            tokio::select! {
                r = &mut run => panic!("the download ended ({:?}) before reporting the alt-locs", r.map(|r| r.size)),
                Some(e) = rx.recv() => if let Event::AltLocations { values, .. } = e {
                    return values;
                },
            }
        }
    })
    .await
    .expect("no AltLocations event");
    assert_eq!(values, vec!["10.9.9.9:6347, 10.9.9.10".to_owned()]);
    // Reported with the head: most of the body had not arrived yet.
    let received = stats.snapshot().transfers.download_bytes;
    assert!(
        received < size / 2,
        "alt-locs reported only after {received} of {size} body bytes"
    );
    // The download itself still completes, and the alt-locs are not reported a second time.
    let report = tokio::time::timeout(TEST_DEADLINE, run)
        .await
        .expect("download hung")
        .unwrap();
    assert_eq!(report.size, size);
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e, Event::AltLocations { .. }),
            "reported twice: {e:?}"
        );
    }
}
