//! The raw figures of a run (`results.json`) and the summary derived from them.
//!
//! Records hold only what was measured: wall times of the lab's own client runs, the bytes found on disk
//! checked against the corpus, and the counters from each node's stats file. Summaries are computed from
//! the records, never entered by hand.

use serde::{Deserialize, Serialize};

use crate::figures;

/// One search run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRecord {
    /// `rare` or `popular`.
    pub target: String,
    /// The file looked for.
    pub file: String,
    /// Peers holding it.
    pub holders: usize,
    /// The search found the file.
    pub found: bool,
    /// Results returned.
    pub hits: usize,
    /// Wall time of the search client, seconds (includes its login/join).
    pub seconds: f64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// One download run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// The downloading node.
    pub node: String,
    /// The file.
    pub file: String,
    /// The client exited 0.
    pub ok: bool,
    /// The bytes on disk equal the corpus file.
    pub verified: bool,
    /// Wall time from the client's start to its exit, seconds.
    pub seconds: f64,
    /// Seconds since the phase began when it ended.
    pub ended_at: f64,
    /// The source it reports, when the client says.
    pub source: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Traffic counted by the nodes' stats files.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Control messages sent (each message counted once, by its sender).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One node's figures at the end of the run, from its stats file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Lab name of the node.
    pub node: String,
    /// Role from its stats file.
    pub role: String,
    /// Infrastructure (server, tracker, supernode) rather than a peer.
    pub infrastructure: bool,
    /// File payload bytes it uploaded.
    pub upload_bytes: u64,
    /// Control messages received and sent.
    pub control_in: u64,
    /// Control messages sent.
    pub control_out: u64,
    /// Control bytes received plus sent.
    pub control_bytes: u64,
}

/// The churn phase: downloads whose only source left.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChurnRecord {
    /// Seconds after the downloads began when the source was killed.
    pub source_left_at: f64,
    /// The downloads.
    pub downloads: Vec<DownloadRecord>,
}

impl ChurnRecord {
    /// Counts: finished before the source left, finished after it left, failed.
    pub fn fates(&self) -> (usize, usize, usize) {
        let mut f = (0, 0, 0);
        for d in &self.downloads {
            match (d.verified, d.ended_at <= self.source_left_at) {
                (true, true) => f.0 += 1,
                (true, false) => f.1 += 1,
                (false, _) => f.2 += 1,
            }
        }
        f
    }
}

/// Everything about one system in one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SystemResult {
    /// `napster`, `gnutella`, `kazaa`, `bittorrent`.
    pub system: String,
    /// `None` when it ran; otherwise why it is not available.
    pub unavailable: Option<String>,
    /// Peers started (sharing nodes plus downloaders).
    pub peers: usize,
    /// Search runs (empty for systems without search).
    pub searches: Vec<SearchRecord>,
    /// Why there are no searches, when there are none.
    pub search_note: Option<String>,
    /// Control traffic counted during the search phase, over every node.
    pub search_traffic: Option<Traffic>,
    /// Flash-crowd downloads.
    pub flash: Vec<DownloadRecord>,
    /// Extra flash crowds of the sweep: `(crowd size, its downloads)`.
    pub flash_sweep: Vec<(usize, Vec<DownloadRecord>)>,
    /// Churn downloads.
    pub churn: Option<ChurnRecord>,
    /// Per-node figures from the stats files.
    pub nodes: Vec<NodeRecord>,
    /// Stats files read.
    pub stats_files_read: usize,
    /// Overlay edges `(from, to, kind)` seen in the run.
    pub edges: Vec<(String, String, String)>,
    /// Problems met while running (the run went on).
    pub problems: Vec<String>,
}

/// The comparison row of one system.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Median wall time of a successful search, seconds.
    pub search_median_s: Option<f64>,
    /// Searches that found their file / searches run.
    pub search_success: Option<f64>,
    /// Control messages per search.
    pub ctl_msgs_per_search: Option<f64>,
    /// Control bytes per search.
    pub ctl_bytes_per_search: Option<f64>,
    /// Flash-crowd completion, median seconds.
    pub flash_median_s: Option<f64>,
    /// Flash-crowd completion, worst seconds.
    pub flash_worst_s: Option<f64>,
    /// Flash-crowd downloads verified / started.
    pub flash_done: (usize, usize),
    /// Bytes uploaded by the busiest peer.
    pub busiest_upload: u64,
    /// Bytes uploaded by the median peer.
    pub median_upload: u64,
    /// Control messages handled (in + out) by the infrastructure nodes.
    pub infra_msgs: u64,
    /// Control bytes handled by the infrastructure nodes.
    pub infra_bytes: u64,
    /// Churn fates: before the source left, after it left, failed.
    pub churn: Option<(usize, usize, usize)>,
}

impl SystemResult {
    /// Derives the comparison row from the records.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        if !self.searches.is_empty() {
            let ok: Vec<f64> = self
                .searches
                .iter()
                .filter(|r| r.found)
                .map(|r| r.seconds)
                .collect();
            s.search_median_s = figures::median(&ok);
            s.search_success = Some(ok.len() as f64 / self.searches.len() as f64);
            if let Some(t) = self.search_traffic {
                s.ctl_msgs_per_search = Some(t.messages as f64 / self.searches.len() as f64);
                s.ctl_bytes_per_search = Some(t.bytes as f64 / self.searches.len() as f64);
            }
        }
        let done: Vec<f64> = self
            .flash
            .iter()
            .filter(|d| d.verified)
            .map(|d| d.seconds)
            .collect();
        s.flash_median_s = figures::median(&done);
        s.flash_worst_s = if done.len() == self.flash.len() {
            figures::max(&done)
        } else {
            None
        };
        s.flash_done = (done.len(), self.flash.len());
        let ups: Vec<f64> = self
            .nodes
            .iter()
            .filter(|n| !n.infrastructure)
            .map(|n| n.upload_bytes as f64)
            .collect();
        s.busiest_upload = figures::max(&ups).unwrap_or(0.0) as u64;
        s.median_upload = figures::median(&ups).unwrap_or(0.0) as u64;
        for n in self.nodes.iter().filter(|n| n.infrastructure) {
            s.infra_msgs += n.control_in + n.control_out;
            s.infra_bytes += n.control_bytes;
        }
        s.churn = self.churn.as_ref().map(ChurnRecord::fates);
        s
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// The scenario that ran.
    pub scenario: crate::scenario::Scenario,
    /// Files, sizes and holders.
    pub corpus: serde_json::Value,
    /// The temporary folder the run used (removed at the end).
    pub temp_dir: String,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// One entry per system, in scenario order.
    pub systems: Vec<SystemResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(seconds: f64, ended_at: f64, verified: bool) -> DownloadRecord {
        DownloadRecord {
            node: "n".into(),
            file: "f".into(),
            ok: verified,
            verified,
            seconds,
            ended_at,
            source: None,
            error: None,
        }
    }

    #[test]
    fn summary_from_records() {
        let mut r = SystemResult {
            system: "x".into(),
            ..Default::default()
        };
        r.flash = vec![dl(1.0, 1.0, true), dl(3.0, 3.0, true), dl(2.0, 2.0, true)];
        r.searches = vec![
            SearchRecord {
                target: "rare".into(),
                file: "f".into(),
                holders: 1,
                found: false,
                hits: 0,
                seconds: 9.0,
                error: None,
            },
            SearchRecord {
                target: "popular".into(),
                file: "f".into(),
                holders: 5,
                found: true,
                hits: 5,
                seconds: 0.5,
                error: None,
            },
        ];
        r.search_traffic = Some(Traffic {
            messages: 10,
            bytes: 1000,
        });
        r.nodes = vec![
            NodeRecord {
                node: "s".into(),
                role: "server".into(),
                infrastructure: true,
                upload_bytes: 0,
                control_in: 5,
                control_out: 6,
                control_bytes: 70,
            },
            NodeRecord {
                node: "a".into(),
                role: "client".into(),
                infrastructure: false,
                upload_bytes: 100,
                control_in: 0,
                control_out: 0,
                control_bytes: 0,
            },
            NodeRecord {
                node: "b".into(),
                role: "client".into(),
                infrastructure: false,
                upload_bytes: 10,
                control_in: 0,
                control_out: 0,
                control_bytes: 0,
            },
        ];
        r.churn = Some(ChurnRecord {
            source_left_at: 1.5,
            downloads: vec![dl(1.0, 1.0, true), dl(2.0, 2.0, true), dl(2.0, 2.0, false)],
        });
        let s = r.summary();
        assert_eq!(s.flash_median_s, Some(2.0));
        assert_eq!(s.flash_worst_s, Some(3.0));
        assert_eq!(s.flash_done, (3, 3));
        assert_eq!(s.search_success, Some(0.5));
        assert_eq!(s.search_median_s, Some(0.5));
        assert_eq!(s.ctl_msgs_per_search, Some(5.0));
        assert_eq!(s.busiest_upload, 100);
        assert_eq!(s.median_upload, 10);
        assert_eq!(s.infra_msgs, 11);
        assert_eq!(s.churn, Some((1, 1, 1)));
        r.flash.push(dl(0.0, 0.0, false));
        assert_eq!(
            r.summary().flash_worst_s,
            None,
            "a failed download has no worst time"
        );
    }
}
