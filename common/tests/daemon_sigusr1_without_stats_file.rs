//! `common::daemon::install_signals` without a stats file: SIGUSR1 ("write your stats") must not kill
//! the daemon. Its default action is to terminate the process, so a node started without
//! `--stats-file` used to die when a supervisor asked it for stats. Its own test binary (one process):
//! the signals below go to the whole process.

mod signal_support;

use std::time::Duration;

use common::daemon::install_signals;
use common::stats::Stats;
use signal_support::signal_self;

#[tokio::test(flavor = "current_thread")]
async fn sigusr1_without_a_stats_file_is_not_fatal() {
    let token = install_signals(Stats::new("test", "node", "no-file"), None);
    signal_self("USR1");
    // Give the runtime time to deliver it: a process still running after this has survived it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!token.is_cancelled(), "SIGUSR1 must not stop the daemon");
    signal_self("TERM");
    let stopped = tokio::time::timeout(Duration::from_secs(10), token.cancelled()).await;
    assert!(stopped.is_ok(), "SIGTERM did not cancel the token");
}
