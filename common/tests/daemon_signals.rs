//! `common::daemon::install_signals`: the handlers are in place when it returns. A daemon prints its
//! readiness line right after, and the lab sends SIGUSR1 for a stats snapshot as soon as it has read
//! that line; a handler registered only later, inside a spawned task, left the signal's default action
//! (terminate) in place, and the lab's last-started Napster peer died without a stats file.
//!
//! A current-thread runtime runs no spawned task until the test yields, so the signals below arrive
//! before any task could have registered anything: without the synchronous registration this test
//! process is killed by SIGUSR1.

mod signal_support;

use std::time::Duration;

use common::daemon::install_signals;
use common::stats::Stats;
use signal_support::signal_self;

#[tokio::test(flavor = "current_thread")]
async fn signals_right_after_install_are_handled_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stats.json");
    let stats = Stats::new("test", "node", "early");
    let token = install_signals(stats, Some(path.clone()));

    signal_self("USR1");
    let written = tokio::time::timeout(Duration::from_secs(10), async {
        while common::stats::StatsSnapshot::read_json(&path).is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "SIGUSR1 did not write {}", path.display());
    assert!(!token.is_cancelled(), "SIGUSR1 must not stop the daemon");

    signal_self("TERM");
    let stopped = tokio::time::timeout(Duration::from_secs(10), token.cancelled()).await;
    assert!(stopped.is_ok(), "SIGTERM did not cancel the token");
}
