//! The multi-source downloader against in-process range servers on 127.0.0.1 (port 0): sharing the work,
//! sources that die, crawl, lie or queue us, sources added on the way, pushed connections, kill and resume,
//! and a wrong expected hash.

mod multisource_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::hash::Sha1Digest;
use common::multisource::{
    state_path, ChannelConnector, Download, DownloadConfig, DownloadError, DownloadReport, Event,
    ExpectedHash, Source, SourceAdder,
};
use common::stats::Stats;
use multisource_support::{content, content_sha1, Behaviour, Server};

const BLOCK: u32 = 16 * 1024;
/// Every test is bounded: a hang fails it instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

fn config() -> DownloadConfig {
    DownloadConfig {
        block_size: BLOCK,
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(50),
        default_retry_after: Duration::from_millis(200),
        state_save_interval: Duration::ZERO,
        progress_interval: Duration::from_millis(20),
        no_source_timeout: Duration::from_secs(10),
        ..DownloadConfig::default()
    }
}

fn stats() -> Stats {
    Stats::new("test", "downloader", "t")
}

fn src(s: &Server) -> Source {
    Source::http(&s.url()).unwrap()
}

struct Run {
    result: Result<DownloadReport, DownloadError>,
    events: Vec<Event>,
}

/// Runs a download of `size` bytes to `dest` with the given sources; `on_event` sees every event as it
/// comes (with the adder, to add sources on the way).
async fn run_with(
    dest: &Path,
    size: u64,
    expected: Sha1Digest,
    cfg: DownloadConfig,
    stats: Stats,
    sources: Vec<Source>,
    mut on_event: impl FnMut(&Event, &SourceAdder) + Send,
) -> Run {
    let (dl, adder, mut rx) = Download::new(dest, size, ExpectedHash::Sha1(expected), cfg, stats);
    let fut = dl.run(sources);
    tokio::pin!(fut);
    let mut events = Vec::new();
    let result = tokio::time::timeout(TEST_DEADLINE, async {
        loop {
            tokio::select! {
                r = &mut fut => break r,
                Some(e) = rx.recv() => {
                    on_event(&e, &adder);
                    events.push(e);
                }
            }
        }
    })
    .await
    .expect("download hung");
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    Run { result, events }
}

async fn run(dest: &Path, size: u64, sources: Vec<Source>) -> Run {
    run_with(
        dest,
        size,
        content_sha1(size),
        config(),
        stats(),
        sources,
        |_, _| {},
    )
    .await
}

fn assert_content(path: &Path, size: u64) {
    let got = std::fs::read(path).unwrap();
    assert!(
        got == content(size),
        "downloaded bytes differ from the content"
    );
}

#[tokio::test]
async fn two_sources_share_the_work_and_report_progress() {
    let size = 200 * 1024 + 123;
    let (a, b) = (
        Server::start(size, Behaviour::default()).await,
        Server::start(size, Behaviour::default()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let st = stats();
    let r = run_with(
        &dest,
        size,
        content_sha1(size),
        config(),
        st.clone(),
        vec![src(&a), src(&b)],
        |_, _| {},
    )
    .await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    assert_eq!(report.blocks, 13);
    assert_eq!(report.blocks_fetched, 13);
    assert!(a.requests() > 0 && b.requests() > 0, "both sources worked");
    assert_eq!(report.sources.iter().map(|s| s.blocks).sum::<u64>(), 13);
    assert!(!state_path(&dest).exists(), "state file removed when done");
    assert!(!common::multisource::partial_path(&dest).exists());
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::Completed { .. })));
    let snap = st.snapshot();
    assert_eq!(snap.transfers.downloads_started, 1);
    assert_eq!(snap.transfers.downloads_completed, 1);
    assert!(snap.transfers.download_bytes >= size);
    assert!(snap.messages["http_206"].in_count >= 13);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_per_source() {
    let size = 100 * 1024;
    let a = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    run(&dest, size, vec![src(&a)]).await.result.unwrap();
    assert_eq!(a.requests(), 7);
    assert_eq!(
        a.counters
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_source_that_dies_mid_block_loses_its_block_to_the_others() {
    let size = 256 * 1024;
    let dying = Server::start(
        size,
        Behaviour {
            die_after: Some(40 * 1024),
            rate: Some(512 * 1024),
            ..Behaviour::default()
        },
    )
    .await;
    let good = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let r = run(&dest, size, vec![src(&dying), src(&good)]).await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    let dying_url = dying.url();
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::SourceFailed { url, .. } if *url == dying_url)));
    assert!(
        report.sources[0].blocks <= 2,
        "at most the blocks it finished before dying"
    );
}

#[tokio::test]
async fn a_much_slower_source_is_kept_off_the_tail() {
    let size = 320 * 1024;
    let slow = Server::start(
        size,
        Behaviour {
            rate: Some(8 * 1024),
            ..Behaviour::default()
        },
    )
    .await;
    let fast = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let cfg = DownloadConfig {
        stall_timeout: Duration::from_secs(10),
        ..config()
    };
    let r = run_with(
        &dest,
        size,
        content_sha1(size),
        cfg,
        stats(),
        vec![src(&slow), src(&fast)],
        |_, _| {},
    )
    .await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    // The slow source needs a second per block; the fast one fetches the other 19 blocks meanwhile, and
    // duplicates the slow one's block in the endgame.
    assert!(
        report.sources[0].blocks <= 1,
        "slow source supplied {:?}",
        report.sources[0]
    );
    assert!(report.sources[1].blocks >= 19);
}

#[tokio::test]
async fn a_stalled_source_times_out_and_its_block_moves() {
    let size = 128 * 1024;
    let stalling = Server::start(
        size,
        Behaviour {
            stall_after: Some(20 * 1024),
            ..Behaviour::default()
        },
    )
    .await;
    let good = Server::start(size, Behaviour::default()).await;
    let good_url = good.url();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let cfg = DownloadConfig {
        stall_timeout: Duration::from_millis(500),
        ..config()
    };
    // The other source only arrives once the stall was detected, so nothing but the stall timeout can
    // take the block away (with both from the start, the endgame might win first).
    let mut stalled = false;
    let r = run_with(
        &dest,
        size,
        content_sha1(size),
        cfg,
        stats(),
        vec![src(&stalling)],
        |e, adder| {
            if let Event::SourceFailed { error, .. } = e {
                if error.contains("stalled") && !stalled {
                    stalled = adder.try_add(Source::http(&good_url).unwrap());
                }
            }
        },
    )
    .await;
    let report = r.result.unwrap();
    assert!(stalled, "the stall was reported");
    assert_content(&dest, size);
    assert_eq!(
        report.sources[0].blocks, 1,
        "only the block it finished before stalling"
    );
    assert_eq!(report.sources[1].blocks, 7);
}

#[tokio::test]
async fn an_oversized_content_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (dl, _a, _rx) = Download::new(
        dir.path().join("x"),
        u64::MAX,
        ExpectedHash::Sha1(Sha1Digest([0; 20])),
        config(),
        stats(),
    );
    let e = dl.run(vec![]).await.unwrap_err();
    assert!(matches!(e, DownloadError::Config(_)), "{e}");
}

#[tokio::test]
async fn a_source_sending_wrong_bytes_is_found_and_its_blocks_refetched() {
    let size = 160 * 1024;
    let liar = Server::start(
        size,
        Behaviour {
            corrupt: true,
            ..Behaviour::default()
        },
    )
    .await;
    let good = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let st = stats();
    let r = run_with(
        &dest,
        size,
        content_sha1(size),
        config(),
        st.clone(),
        vec![src(&liar), src(&good)],
        |_, _| {},
    )
    .await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    assert_eq!(report.bad_sources, vec![liar.url()]);
    assert!(report.verify_rounds >= 1);
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::VerifyFailed { .. })));
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, Event::BadSource { url, .. } if *url == liar.url())));
    assert_eq!(st.snapshot().errors["download_bad_source"], 1);
}

#[tokio::test]
async fn a_wrong_content_range_drops_the_source_at_once() {
    let size = 96 * 1024;
    let liar = Server::start(
        size,
        Behaviour {
            bad_content_range: true,
            ..Behaviour::default()
        },
    )
    .await;
    let good = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let r = run(&dest, size, vec![src(&liar), src(&good)]).await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    assert_eq!(liar.requests(), 1, "one wrong answer is enough");
    assert_eq!(report.sources[0].state, "dead");
    assert!(r.events.iter().any(|e| matches!(e, Event::SourceFailed { dead: true, error, .. } if error.contains("Content-Range"))));
}

#[tokio::test]
async fn a_wrong_content_urn_drops_the_source() {
    let size = 64 * 1024;
    let other = Server::start(
        size,
        Behaviour {
            headers: vec![(
                "X-Gnutella-Content-URN".into(),
                "urn:sha1:PLSTHIPQGSSZTS5FJUPAKUZWUGYQYPFB".into(),
            )],
            ..Behaviour::default()
        },
    )
    .await;
    let good = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let report = run(&dest, size, vec![src(&other), src(&good)])
        .await
        .result
        .unwrap();
    assert_content(&dest, size);
    assert_eq!(other.requests(), 1);
    assert_eq!(report.sources[0].blocks, 0);
}

#[tokio::test]
async fn a_remotely_queued_source_is_kept_and_retried() {
    let size = 48 * 1024;
    let busy = Server::start(
        size,
        Behaviour {
            busy_first: 2,
            retry_after: 1,
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let r = run(&dest, size, vec![src(&busy)]).await;
    let report = r.result.unwrap();
    assert_content(&dest, size);
    let queued: Vec<u64> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SourceQueued { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        })
        .collect();
    assert_eq!(queued, vec![1000, 1000], "Retry-After honoured");
    assert_eq!(report.sources[0].blocks, 3);
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e, Event::SourceFailed { .. })));
}

#[tokio::test]
async fn sources_added_while_running_are_used_after_low_on_sources() {
    let size = 80 * 1024;
    let late = Server::start(size, Behaviour::default()).await;
    let url = late.url();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let mut added = false;
    let r = run_with(
        &dest,
        size,
        content_sha1(size),
        config(),
        stats(),
        vec![],
        |e, adder| {
            if let Event::LowOnSources { live: 0 } = e {
                if !added {
                    added = adder.try_add(Source::http(&url).unwrap());
                }
            }
        },
    )
    .await;
    r.result.unwrap();
    assert!(added, "LowOnSources was reported");
    assert_content(&dest, size);
    assert_eq!(late.requests(), 5);
}

#[tokio::test]
async fn out_of_sources_is_an_error_once_nobody_can_add_more() {
    let size = 32 * 1024;
    let dead = Server::start(
        size,
        Behaviour {
            die_after: Some(1000),
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let (dl, adder, _rx) = Download::new(
        &dest,
        size,
        ExpectedHash::Sha1(content_sha1(size)),
        config(),
        stats(),
    );
    drop(adder);
    let r = tokio::time::timeout(TEST_DEADLINE, dl.run(vec![src(&dead)]))
        .await
        .unwrap();
    match r {
        Err(e @ DownloadError::OutOfSources { .. }) => {
            assert!(e.to_string().contains("out of sources"))
        }
        other => panic!("expected OutOfSources, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pushed_connection_carries_the_requests() {
    let size = 64 * 1024;
    let firewalled = Server::start(size, Behaviour::default()).await;
    let (connector, streams) = ChannelConnector::new(4);
    // What the node does on GIV: hand the socket it accepted to the downloader. Here the "socket" is one end
    // of an in-memory pipe whose other end the firewalled servent serves.
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    firewalled.serve_stream(theirs);
    streams.send(Box::new(ours)).await.unwrap();
    let source = Source::with_connector("http://10.0.0.1:6346/get/7/file.bin", Arc::new(connector))
        .unwrap()
        .header(
            "X-Gnutella-Content-URN",
            &ExpectedHash::Sha1(content_sha1(size)).urn().unwrap(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let report = run(&dest, size, vec![source]).await.result.unwrap();
    assert_content(&dest, size);
    assert_eq!(report.sources[0].blocks, 4);
    assert_eq!(
        firewalled.requests(),
        4,
        "all blocks over the one pushed connection"
    );
}

#[tokio::test]
async fn killed_download_resumes_fetching_only_missing_blocks() {
    let size = 256 * 1024;
    let blocks = 16u64;
    let slow = Server::start(
        size,
        Behaviour {
            rate: Some(128 * 1024),
            ..Behaviour::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let expected = content_sha1(size);
    let (dl, _adder, mut rx) =
        Download::new(&dest, size, ExpectedHash::Sha1(expected), config(), stats());
    let task = tokio::spawn(dl.run(vec![src(&slow)]));
    // Kill it once about half the blocks are done.
    tokio::time::timeout(TEST_DEADLINE, async {
        while let Some(e) = rx.recv().await {
            if let Event::Progress(p) = e {
                if p.bytes_done >= size / 2 {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(slow);
    // A state save already under way (on the blocking pool) finishes on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_path(&dest)).unwrap()).unwrap();
    let bits = hex::decode(state["done"].as_str().unwrap()).unwrap();
    let done: u64 = bits.iter().map(|b| u64::from(b.count_ones())).sum();
    assert!(done >= 1 && done < blocks, "{done} blocks saved");

    let fresh = Server::start(size, Behaviour::default()).await;
    let report = run(&dest, size, vec![src(&fresh)]).await.result.unwrap();
    assert_content(&dest, size);
    assert_eq!(report.blocks_resumed as u64, done);
    assert_eq!(
        report.blocks_fetched,
        blocks - done,
        "only the missing blocks"
    );
    assert_eq!(fresh.requests(), blocks - done);
    let bits_done = |b: u64| bits[(b / 8) as usize] & (0x80 >> (b % 8)) != 0;
    for (start, _) in fresh.ranges() {
        assert!(
            !bits_done(start / u64::from(BLOCK)),
            "block at {start} was already done"
        );
    }
}

#[tokio::test]
async fn a_wrong_expected_hash_is_reported_clearly() {
    let size = 64 * 1024;
    let (a, b) = (
        Server::start(size, Behaviour::default()).await,
        Server::start(size, Behaviour::default()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let wrong = Sha1Digest([7; 20]);
    let st = stats();
    let r = run_with(
        &dest,
        size,
        wrong,
        config(),
        st.clone(),
        vec![src(&a), src(&b)],
        |_, _| {},
    )
    .await;
    let err = r.result.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert!(msg.contains(&format!("sha1:{}", wrong)), "{msg}");
    assert!(
        msg.contains(&format!("sha1:{}", content_sha1(size))),
        "{msg}"
    );
    match err {
        DownloadError::HashMismatch { contributors, .. } => {
            assert!(!contributors.is_empty());
            assert!(contributors.iter().all(|c| *c == a.url() || *c == b.url()));
        }
        other => panic!("{other:?}"),
    }
    assert!(!dest.exists(), "an unverified file is never put in place");
    assert!(!state_path(&dest).exists(), "a retry starts clean");
    let snap = st.snapshot();
    assert_eq!(snap.transfers.downloads_failed, 1);
    assert_eq!(snap.errors["hash_mismatch"], 1);
}

#[tokio::test]
async fn kazaa_uuhash_is_verified_too() {
    let size = 600 * 1024 + 7;
    let a = Server::start(size, Behaviour::default()).await;
    let kinds = common::hash::HashKinds {
        uuhash: true,
        ..Default::default()
    };
    let mut h = common::hash::MultiHasher::new(kinds, size);
    h.update(&content(size));
    let uu = h.finish().uuhash.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let (dl, _adder, _rx) = Download::new(&dest, size, ExpectedHash::UuHash(uu), config(), stats());
    let report = tokio::time::timeout(TEST_DEADLINE, dl.run(vec![src(&a)]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.hashes.uuhash, Some(uu));
    assert_content(&dest, size);
}

#[tokio::test]
async fn an_empty_file_downloads_and_verifies() {
    let a = Server::start(0, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("empty.bin");
    run(&dest, 0, vec![src(&a)]).await.result.unwrap();
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 0);
}

#[tokio::test]
async fn progress_events_serialise_for_the_lab() {
    let size = 32 * 1024;
    let a = Server::start(size, Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let r = run(&dest, size, vec![src(&a)]).await;
    r.result.unwrap();
    for e in &r.events {
        let v = serde_json::to_value(e).unwrap();
        assert!(v["event"].is_string(), "{v}");
    }
}
