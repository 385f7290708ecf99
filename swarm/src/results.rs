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
    /// Seconds from the client's start until the output line with the first result naming the file
    /// arrived (all three search clients print each hit as it comes).
    #[serde(default)]
    pub first_hit_s: Option<f64>,
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
    /// Seconds from the client's start to its completion: its exit, or for a client that stays to seed
    /// (BitTorrent with `bittorrent_seed_secs`) the completion it reports.
    pub seconds: f64,
    /// Seconds since the phase began when it completed.
    pub ended_at: f64,
    /// The source it reports, when the client says.
    pub source: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Bytes on disk in its download folder, sampled while it ran: `(seconds since the phase began,
    /// bytes)`; recorded for the churn downloads, whose recovery it shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<(f64, u64)>,
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
    /// The name it gave itself in its stats file: its listening address for most nodes, the address
    /// others dial and list as their neighbour.
    #[serde(default)]
    pub reported_as: String,
    /// Every overlay link it held during the run, from its stats file (`neighbours_seen`).
    #[serde(default)]
    pub neighbours: Vec<common::stats::Neighbour>,
    /// Its message counters by type, as its stats file has them (so sent and received can be
    /// reconciled across the two ends of a link).
    #[serde(default)]
    pub messages: std::collections::BTreeMap<String, common::stats::MessageCounters>,
}

/// The churn phase: downloads whose sources left.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChurnRecord {
    /// Seconds after the downloads began when the first source left.
    pub source_left_at: f64,
    /// Seconds after the downloads began when each leaving source left.
    #[serde(default)]
    pub departures: Vec<f64>,
    /// Sources the file had.
    #[serde(default)]
    pub sources: usize,
    /// They left with a goodbye (SIGTERM) rather than being killed.
    #[serde(default)]
    pub graceful: bool,
    /// The downloads.
    pub downloads: Vec<DownloadRecord>,
}

/// Gnutella flood cost at one TTL.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FloodPoint {
    /// The queries' TTL.
    pub ttl: u8,
    /// Searches run at this TTL.
    pub searches: usize,
    /// Query messages sent by all nodes (and the searching client), per search.
    pub measured: f64,
    /// The tutorial's tree count for the measured mean degree d: 1 + sum over hops 2..=ttl of
    /// d(d-1)^(hop-2) (the client's one link, then every node forwarding to its other links).
    pub tree_formula: f64,
    /// What a complete flood of this overlay costs (2E - N + 2): the formula's ceiling on a finite graph.
    pub full_flood: f64,
}

/// The overlay a flood ran on, from the nodes' `connections` gauges.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Overlay {
    /// Nodes.
    pub nodes: usize,
    /// Links (sum of degrees / 2).
    pub edges: f64,
}

impl Overlay {
    /// Mean degree 2E/N.
    pub fn mean_degree(&self) -> f64 {
        2.0 * self.edges / self.nodes.max(1) as f64
    }

    /// Expected query transmissions of a search with TTL `ttl` whose client has one link: the tree count
    /// `1 + sum_{i=2..=ttl} d(d-1)^(i-2)` (tutorial: queries fan out to the other links at every hop).
    pub fn tree_formula(&self, ttl: u8) -> f64 {
        let d = self.mean_degree();
        (2..=i32::from(ttl)).fold(1.0, |acc, i| acc + d * (d - 1.0).max(0.0).powi(i - 2))
    }

    /// Transmissions of a flood that reaches every node: the first node forwards on all its links, every
    /// other on all but the one it heard the query from, plus the client's own send: 2E - N + 2.
    pub fn full_flood(&self) -> f64 {
        2.0 * self.edges - self.nodes as f64 + 2.0
    }
}

/// One search of the expanding-ring phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingRecord {
    /// Expanding ring (TTL 1, 2, ...) rather than the fixed TTL.
    pub expanding: bool,
    /// Position in its sequence (0 = first searcher).
    pub index: usize,
    /// Copies online when it searched (the original plus the earlier searchers that stayed to share).
    pub copies: usize,
    /// A result named the file.
    pub found: bool,
    /// The bytes it downloaded equal the corpus.
    pub verified: bool,
    /// TTL of the ring whose hit named the file.
    pub ttl: Option<u8>,
    /// Query messages every node sent for it.
    pub query_msgs: u64,
    /// Seconds until the first hit naming the file.
    pub first_hit_s: Option<f64>,
    /// Wall time of the client (search and download).
    pub seconds: f64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// One download of the polluted file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PollutionRecord {
    /// `name` (the user picked by name) or `hash` (by content hash from a trusted link).
    pub pick: String,
    /// The downloading node.
    pub node: String,
    /// `genuine`, `decoy` or `failed` (bytes on disk compared with both).
    pub outcome: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
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
    /// Overlay edges `(dialler, dialled, the remote's kind)`: the union over the run of the out-links the
    /// nodes listed in their stats files, one per pair of nodes ([`crate::overlay`]).
    pub edges: Vec<(String, String, String)>,
    /// Out-links the nodes reported (an edge dialled both ways counts twice).
    #[serde(default)]
    pub overlay_out_links: usize,
    /// Reported out-links to an address of no node of the run, `"node -> addr"` (not drawn).
    #[serde(default)]
    pub overlay_unmapped: Vec<String>,
    /// Transfers, not overlay links: `(source, downloader, "download")` from the clients' output and
    /// `(peer, peer, "blocks")` from BitTorrent's per-peer byte counts.
    #[serde(default)]
    pub transfer_edges: Vec<(String, String, String)>,
    /// The links the lab configured (`--peer` bootstrap addresses), `(node, target, "bootstrap")`.
    #[serde(default)]
    pub bootstrap: Vec<(String, String, String)>,
    /// Problems met while running (the run went on).
    pub problems: Vec<String>,
    /// Rate caps passed to each binary, and options a binary did not have.
    #[serde(default)]
    pub rate_caps: Vec<String>,
    /// Flood cost against TTL (Gnutella).
    #[serde(default)]
    pub flood: Vec<FloodPoint>,
    /// The overlay the flood sweep ran on.
    #[serde(default)]
    pub flood_overlay: Option<Overlay>,
    /// Expanding ring against fixed TTL during a flash crowd (Gnutella).
    #[serde(default)]
    pub ring: Vec<RingRecord>,
    /// Downloads of the polluted file.
    #[serde(default)]
    pub pollution: Vec<PollutionRecord>,
    /// Picks the system cannot make, and why.
    #[serde(default)]
    pub pollution_notes: Vec<String>,
}

/// The comparison row of one system.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Median wall time of a successful search client, seconds.
    pub search_median_s: Option<f64>,
    /// Median time until the first result naming the file arrived, seconds.
    pub first_hit_median_s: Option<f64>,
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
    /// Pollution by name pick: decoys downloaded, downloads run.
    pub polluted_by_name: Option<(usize, usize)>,
    /// Pollution by content-hash pick: decoys downloaded, downloads run.
    pub polluted_by_hash: Option<(usize, usize)>,
    /// Rate caps: `yes` (every binary took them), `partly`, `no`, or `-` (none asked).
    pub caps: String,
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
            let first: Vec<f64> = self.searches.iter().filter_map(|r| r.first_hit_s).collect();
            s.first_hit_median_s = figures::median(&first);
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
        let polluted = |pick: &str| {
            let runs: Vec<&PollutionRecord> =
                self.pollution.iter().filter(|p| p.pick == pick).collect();
            (!runs.is_empty()).then(|| {
                (
                    runs.iter().filter(|p| p.outcome == "decoy").count(),
                    runs.len(),
                )
            })
        };
        s.polluted_by_name = polluted("name");
        s.polluted_by_hash = polluted("hash");
        let passed = self
            .rate_caps
            .iter()
            .filter(|n| !n.contains("has no"))
            .count();
        let missing = self.rate_caps.len() - passed;
        s.caps = match (passed, missing) {
            (0, 0) => "-".into(),
            (_, 0) => "yes".into(),
            (0, _) => "no".into(),
            _ => "partly".into(),
        };
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

    #[test]
    fn flood_formula_is_the_tree_count_capped_by_the_graph() {
        // 10 nodes of degree 4: 20 links.
        let o = Overlay {
            nodes: 10,
            edges: 20.0,
        };
        assert_eq!(o.mean_degree(), 4.0);
        assert_eq!(o.tree_formula(1), 1.0);
        assert_eq!(o.tree_formula(2), 1.0 + 4.0);
        assert_eq!(o.tree_formula(3), 1.0 + 4.0 + 12.0);
        assert_eq!(o.tree_formula(4), 1.0 + 4.0 + 12.0 + 36.0);
        assert_eq!(o.full_flood(), 32.0);
    }

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
            progress: Vec::new(),
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
                first_hit_s: None,
                error: None,
            },
            SearchRecord {
                target: "popular".into(),
                file: "f".into(),
                holders: 5,
                found: true,
                hits: 5,
                seconds: 0.5,
                first_hit_s: Some(0.25),
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
                reported_as: String::new(),
                neighbours: Vec::new(),
                messages: Default::default(),
            },
            NodeRecord {
                node: "a".into(),
                role: "client".into(),
                infrastructure: false,
                upload_bytes: 100,
                control_in: 0,
                control_out: 0,
                control_bytes: 0,
                reported_as: String::new(),
                neighbours: Vec::new(),
                messages: Default::default(),
            },
            NodeRecord {
                node: "b".into(),
                role: "client".into(),
                infrastructure: false,
                upload_bytes: 10,
                control_in: 0,
                control_out: 0,
                control_bytes: 0,
                reported_as: String::new(),
                neighbours: Vec::new(),
                messages: Default::default(),
            },
        ];
        r.churn = Some(ChurnRecord {
            source_left_at: 1.5,
            departures: vec![1.5],
            sources: 1,
            graceful: false,
            downloads: vec![dl(1.0, 1.0, true), dl(2.0, 2.0, true), dl(2.0, 2.0, false)],
        });
        let s = r.summary();
        assert_eq!(s.flash_median_s, Some(2.0));
        assert_eq!(s.flash_worst_s, Some(3.0));
        assert_eq!(s.flash_done, (3, 3));
        assert_eq!(s.search_success, Some(0.5));
        assert_eq!(s.search_median_s, Some(0.5));
        assert_eq!(s.first_hit_median_s, Some(0.25));
        assert_eq!(s.ctl_msgs_per_search, Some(5.0));
        assert_eq!(s.busiest_upload, 100);
        assert_eq!(s.median_upload, 10);
        assert_eq!(s.infra_msgs, 11);
        assert_eq!(s.churn, Some((1, 1, 1)));
        assert_eq!(s.caps, "-");
        assert_eq!(s.polluted_by_name, None);
        r.rate_caps = vec![
            "napster-client serve: --upload-rate 1024".into(),
            "napster-client get: has no --download-rate option yet (ran without it)".into(),
        ];
        let p = |pick: &str, outcome: &str| PollutionRecord {
            pick: pick.into(),
            node: "n".into(),
            outcome: outcome.into(),
            error: None,
        };
        r.pollution = vec![
            p("name", "decoy"),
            p("name", "genuine"),
            p("name", "decoy"),
            p("hash", "genuine"),
        ];
        let s = r.summary();
        assert_eq!(s.caps, "partly");
        assert_eq!(s.polluted_by_name, Some((2, 3)));
        assert_eq!(s.polluted_by_hash, Some((0, 1)));
        r.flash.push(dl(0.0, 0.0, false));
        assert_eq!(
            r.summary().flash_worst_s,
            None,
            "a failed download has no worst time"
        );
    }
}
