//! End to end: `swarm demo --small` drives the real binaries and its figures are real; Ctrl-C leaves
//! nothing behind; a bad scenario is refused with the field named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SYSTEM_BINS: [&str; 6] = [
    "napster-server",
    "napster-client",
    "gnutella-node",
    "kazaa-supernode",
    "tracker",
    "bittorrent-peer",
];

fn bins() -> PathBuf {
    for b in SYSTEM_BINS {
        integration::bin_path(b);
    }
    integration::target_profile_dir()
}

/// Processes whose command line mentions `needle` (our private TMPDIR): the lab's children.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(c);
            }
        }
    }
    found
}

fn swarm(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.env("TMPDIR", tmp).env("RUST_LOG", "warn");
    c
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn small_demo_measures_real_downloads_and_cleans_up() {
    let bins = bins();
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = swarm(tmp.path())
        .args(["demo", "--small", "--quiet", "--out"])
        .arg(out.path())
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("flash crowd done (verified)"), "{stdout}");

    // Nothing left behind: no child process, no temporary folder.
    assert!(processes_mentioning(&tmp.path().display().to_string()).is_empty());
    assert_eq!(entries(tmp.path()), 0, "temporary folder removed");

    let r: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert!(!Path::new(r["temp_dir"].as_str().unwrap()).exists());
    let systems = r["systems"].as_array().unwrap();
    // The table's infrastructure figure is the sum of the control messages in and out written in the
    // stats files of the server / ultrapeers / supernodes / tracker (each node's record in results.json).
    let row: Vec<u64> = stdout
        .lines()
        .find(|l| l.starts_with("server/tracker/ultrapeer ctl msgs"))
        .expect("infrastructure row")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let summed: Vec<u64> = systems
        .iter()
        .map(|s| {
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["infrastructure"] == true)
                .map(|n| n["control_in"].as_u64().unwrap() + n["control_out"].as_u64().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(row, summed, "{stdout}");
    // The table says every system honoured the caps.
    let caps_row: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rate caps applied"))
        .expect("rate caps row")
        .split_whitespace()
        .collect();
    assert_eq!(caps_row, vec!["yes"; systems.len()], "{stdout}");
    // Every chart's explanation carries a computed verdict.
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    for v in [
        "held: yes (Napster",
        "held: yes (busiest peer",
        "prediction held for the multi-source systems: yes",
    ] {
        assert!(html.contains(v), "{v}");
    }
    let by = |name: &str| {
        systems
            .iter()
            .find(|s| s["system"] == name)
            .unwrap()
            .clone()
    };
    // The classic flood for contrast: the same searches over a classic overlay of the same peers,
    // searches only, with its own messages-per-search figure.
    let classic = by("gnutella classic");
    assert!(
        classic["unavailable"].is_null(),
        "{}",
        classic["unavailable"]
    );
    assert_eq!(
        classic["searches"].as_array().unwrap().len(),
        by("gnutella")["searches"].as_array().unwrap().len()
    );
    assert!(classic["flash"].as_array().unwrap().is_empty());
    assert!(classic["churn"].is_null());
    assert!(classic["search_traffic"]["messages"].as_u64().unwrap() > 0);
    assert!(
        classic["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["control_out"].as_u64().unwrap() > 0),
        "{classic}"
    );
    let header = stdout.lines().find(|l| l.contains("gnutella classic"));
    assert!(
        header.is_some(),
        "table has a gnutella classic column: {stdout}"
    );
    for name in ["napster", "gnutella", "kazaa", "bittorrent"] {
        let s = by(name);
        assert!(s["unavailable"].is_null(), "{name}: {}", s["unavailable"]);
        let sweep = s["flash_sweep"].as_array().unwrap();
        assert_eq!(sweep.len(), 2, "{name}: one entry per sweep size");
        for entry in sweep {
            for d in entry[1].as_array().unwrap() {
                assert_eq!(d["verified"], true, "{name}: {d}");
            }
        }
        let flash = s["flash"].as_array().unwrap();
        assert_eq!(flash.len(), 4);
        // Downloaded bytes equal the corpus (the lab compares them byte for byte).
        for d in flash {
            assert_eq!(d["verified"], true, "{name}: {d}");
        }
        // The figures come from the nodes' stats files: infrastructure counted control traffic.
        let nodes = s["nodes"].as_array().unwrap();
        assert!(s["stats_files_read"].as_u64().unwrap() >= 3);
        let infra: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["infrastructure"] == true)
            .collect();
        assert!(!infra.is_empty(), "{name}: a server, tracker or ultrapeers");
        // Every flash and churn client talked to the server/tracker/ultrapeers at least once.
        let infra_in: u64 = infra
            .iter()
            .map(|n| n["control_in"].as_u64().unwrap())
            .sum();
        assert!(infra_in >= 6, "{name}: {infra:?}");
        // The peer holding the release uploaded at least one copy of it.
        let busiest = nodes
            .iter()
            .map(|n| n["upload_bytes"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(busiest >= 512 * 1024, "{name}: busiest upload {busiest}");
    }
    for name in ["napster", "gnutella", "kazaa", "bittorrent"] {
        let s = by(name);
        // Every rate cap the small scenario asks for was passed: no binary lacked the option.
        let caps = s["rate_caps"].as_array().unwrap();
        for flag in ["--upload-rate", "--download-rate"] {
            assert!(
                caps.iter()
                    .any(|c| c.as_str().unwrap().contains(&format!(": {flag} "))),
                "{name}: {flag} passed: {caps:?}"
            );
        }
        assert!(
            caps.iter().all(|c| !c.as_str().unwrap().contains("has no")),
            "{name}: {caps:?}"
        );
        // Churn: the file has two sources, one leaves mid-download; progress was sampled where the
        // bytes on disk show it (bittorrent-peer reserves the whole file at once).
        let churn = &s["churn"];
        assert_eq!(churn["sources"], 2, "{name}");
        assert_eq!(churn["departures"].as_array().unwrap().len(), 1, "{name}");
        for d in churn["downloads"].as_array().unwrap() {
            let sampled = d
                .get("progress")
                .and_then(|p| p.as_array())
                .is_some_and(|p| !p.is_empty());
            assert_eq!(sampled, name != "bittorrent", "{name}: {d}");
        }
    }
    // KaZaA, Gnutella and BitTorrent download from every source at once: losing one of two is survived.
    for name in ["gnutella", "kazaa", "bittorrent"] {
        for d in by(name)["churn"]["downloads"].as_array().unwrap() {
            assert_eq!(d["verified"], true, "{name}: {d}");
        }
    }
    // All three search clients print each hit as it arrives; the lab reads them all alike.
    for name in ["napster", "gnutella", "kazaa"] {
        let n = by(name);
        let searches = n["searches"].as_array().unwrap();
        assert_eq!(searches.len(), 4);
        assert!(
            searches.iter().all(|s| s["found"] == true),
            "{name}: {searches:?}"
        );
        // Time to the first result: when its line arrived, within the client's lifetime.
        for s in searches {
            let first = s["first_hit_s"].as_f64().unwrap();
            assert!(
                first > 0.0 && first <= s["seconds"].as_f64().unwrap(),
                "{s}"
            );
        }
        assert!(
            n["search_traffic"]["messages"].as_u64().unwrap() >= 4,
            "{name}: a query and its answer per search"
        );
    }
    assert!(by("bittorrent")["searches"].as_array().unwrap().is_empty());

    // Every counted message was sent by one end and received by the other: the two ends' own stats
    // files (copied per type into results.json) reconcile for the types only search/download clients
    // and the infrastructure exchange (a churn source killed mid-run never sees them).
    let count = |s: &Value, infra: Option<bool>, ty: &str, dir: &str| -> u64 {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| infra.is_none_or(|i| n["infrastructure"] == i))
            .map(|n| n["messages"][ty][dir].as_u64().unwrap_or(0))
            .sum()
    };
    // Napster: searches (200) and download requests (203) from the clients to the server; results
    // (201), end of results (202) and download acks (204) back.
    let napster = by("napster");
    for (ty, from_clients) in [
        ("200", true),
        ("203", true),
        ("201", false),
        ("202", false),
        ("204", false),
    ] {
        let clients = count(
            &napster,
            Some(false),
            ty,
            if from_clients {
                "out_count"
            } else {
                "in_count"
            },
        );
        let server = count(
            &napster,
            Some(true),
            ty,
            if from_clients {
                "in_count"
            } else {
                "out_count"
            },
        );
        assert_eq!(
            clients, server,
            "napster {ty}: clients against server; {:?}",
            napster["problems"]
        );
        assert!(clients > 0, "napster {ty} exchanged");
    }
    // Gnutella (ultrapeer mode): every query descriptor a node sent (search clients to their
    // ultrapeer, ultrapeer to ultrapeer and to leaves by QRP) some node received.
    let gnutella = by("gnutella");
    let sent = count(&gnutella, None, "query", "out_count");
    assert_eq!(
        sent,
        count(&gnutella, None, "query", "in_count"),
        "{:?}",
        gnutella["problems"]
    );
    assert!(
        count(&gnutella, Some(false), "query", "out_count") >= 4,
        "the search clients sent their queries"
    );
    // KaZaA: the clients' queries reach the supernodes, and every supernode-to-supernode forward arrives.
    let kazaa = by("kazaa");
    let asked = count(&kazaa, Some(false), "query", "out_count");
    assert!(asked >= 4, "kazaa clients queried");
    assert_eq!(
        asked,
        count(&kazaa, Some(true), "query", "in_count"),
        "{:?}",
        kazaa["problems"]
    );
    assert_eq!(
        count(&kazaa, Some(true), "forward_query", "out_count"),
        count(&kazaa, Some(true), "forward_query", "in_count")
    );
    assert!(
        count(&kazaa, Some(true), "forward_query", "in_count") > 0,
        "supernodes forwarded"
    );

    // The overlay graph is the one the nodes reported: its edges are exactly the distinct pairs of the
    // out-links listed in the stats files, and each design's shape shows in them.
    for name in [
        "napster",
        "gnutella",
        "gnutella classic",
        "kazaa",
        "bittorrent",
    ] {
        let s = by(name);
        let adj = reported_overlay(&s);
        let role = |n: &str| -> String {
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["node"] == n)
                .map_or("?".into(), |x| x["role"].as_str().unwrap().to_owned())
        };
        for (n, ns) in &adj {
            match (name, role(n).as_str()) {
                ("napster", "client") => assert!(
                    ns.len() == 1 && ns.contains("server"),
                    "{name}: {n} links to {ns:?}"
                ),
                ("gnutella", "leaf") | ("kazaa", "ordinary" | "client") => {
                    let hub = if name == "gnutella" {
                        "ultrapeer"
                    } else {
                        "supernode"
                    };
                    assert!(
                        ns.iter().all(|x| role(x) == hub),
                        "{name}: {n} links to {ns:?}"
                    );
                }
                ("bittorrent", _) => assert!(role(n) != "server", "the tracker holds no link"),
                _ => {}
            }
        }
        // Every node holds a link (clients and leaves included). In BitTorrent only the downloaders must
        // (the tracker holds none; a seeder killed before anyone dialled it may have none).
        for n in s["nodes"].as_array().unwrap() {
            let me = n["node"].as_str().unwrap();
            let exempt = name == "bittorrent" && (n["role"] == "server" || me.starts_with("seed"));
            assert!(
                adj.contains_key(me) || exempt,
                "{name}: {me} reported no overlay link"
            );
        }
    }

    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    for title in [
        "Flash crowd: completion-time CDF",
        "worst completion time against the number of downloaders",
        "Control traffic per search",
        "Upload load across peers",
        "Overlay graph per system",
        "Downloads whose source left",
        "bytes received while the sources left",
        "Rate caps",
    ] {
        assert!(html.contains(title), "{title}");
    }
    assert!(
        html.matches("<svg").count() >= 8,
        "CDF, traffic, 3 upload, 3 graphs"
    );
    assert!(html.contains("<circle"), "overlay nodes drawn");
    assert!(html.contains("class=\"link\""), "overlay links drawn");
    assert!(
        html.contains("class=\"transfer\""),
        "transfers drawn as their own layer"
    );
    // Napster's star is structural (every client logs in to the one server): its verdict must say so.
    assert!(
        html.contains("prediction held: yes (a star:"),
        "napster's overlay verdict"
    );
    assert!(html.contains("class=\"mark\""), "source departures marked");
}

/// The overlay of a system as its nodes reported it (out-links mapped through the address each node
/// reported itself as), checked against the edges the lab drew; returns each node's neighbours.
fn reported_overlay(s: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let name = s["system"].as_str().unwrap();
    let nodes = s["nodes"].as_array().unwrap();
    let by_addr: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| {
            (
                n["reported_as"].as_str().unwrap(),
                n["node"].as_str().unwrap(),
            )
        })
        .collect();
    let mut pairs = BTreeSet::new();
    let mut out_links = 0;
    for n in nodes {
        let me = n["node"].as_str().unwrap();
        for l in n["neighbours"].as_array().unwrap() {
            if l["dir"] != "out" {
                continue;
            }
            out_links += 1;
            let addr = l["addr"].as_str().unwrap();
            let to = by_addr
                .get(addr)
                .unwrap_or_else(|| panic!("{name}: {me} lists {addr}, no node of the run"));
            if *to != me {
                pairs.insert(if me < *to { (me, *to) } else { (*to, me) });
            }
        }
    }
    assert!(!pairs.is_empty(), "{name}: no overlay link reported");
    assert_eq!(s["overlay_out_links"], out_links, "{name}");
    assert!(
        s["overlay_unmapped"].as_array().unwrap().is_empty(),
        "{name}"
    );
    let edges = s["edges"].as_array().unwrap();
    let drawn: BTreeSet<(&str, &str)> = edges
        .iter()
        .map(|e| {
            let (a, b) = (e[0].as_str().unwrap(), e[1].as_str().unwrap());
            if a < b {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    assert_eq!(drawn.len(), edges.len(), "{name}: one edge per pair");
    assert_eq!(
        drawn, pairs,
        "{name}: the drawn edges are the reported ones"
    );
    let mut adj: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in pairs {
        adj.entry(a.into()).or_default().insert(b.into());
        adj.entry(b.into()).or_default().insert(a.into());
    }
    adj
}

/// Runs `swarm run` on a scenario text; returns the results.
fn run_scenario(text: &str) -> (Value, String) {
    let bins = bins();
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let f = out.path().join("s.toml");
    std::fs::write(&f, text).unwrap();
    let o = swarm(tmp.path())
        .arg("run")
        .arg(&f)
        .args(["--quiet", "--out"])
        .arg(out.path())
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(processes_mentioning(&tmp.path().display().to_string()).is_empty());
    let r =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    (r, html)
}

/// Gnutella flood cost against TTL, expanding ring during a flash crowd, and pollution, at a tiny size.
#[test]
fn gnutella_flood_ring_and_pollution_tiny() {
    let (r, html) = run_scenario(
        r#"
systems = ["gnutella"]
gnutella_classic = true
gnutella_ttl = 3
gnutella_ttl_sweep = [1, 3]
peers = 6
files = 6
searches_per_target = 1
flash_crowd = 0
flash_file_kib = 64
flash_sweep = []
ring_searches = 2
churn_downloads = 0
churn_sources = 1
churn_leaving = 0
decoys = 2
pollution_genuine = 1
pollution_downloads = 2
op_timeout_secs = 20
"#,
    );
    let g = &r["systems"][0];
    assert!(g["unavailable"].is_null(), "{}", g["unavailable"]);
    let flood = g["flood"].as_array().unwrap();
    assert_eq!(flood.len(), 2);
    let m = |i: usize| flood[i]["measured"].as_f64().unwrap();
    // TTL 1 reaches only the client's own links; TTL 3 floods further (counted from the nodes' stats).
    assert!(m(0) >= 1.0, "{flood:?}");
    assert!(m(1) > m(0), "{flood:?}");
    assert_eq!(flood[0]["tree_formula"], 1.0);
    assert!(flood[1]["full_flood"].as_f64().unwrap() > 0.0);
    let ring = g["ring"].as_array().unwrap();
    assert_eq!(
        ring.len(),
        4,
        "two fixed-TTL and two expanding-ring searches"
    );
    for rec in ring {
        assert_eq!(rec["verified"], true, "{rec}");
        assert!(rec["query_msgs"].as_u64().unwrap() >= 1, "{rec}");
        assert!(rec["ttl"].as_u64().unwrap() <= 3, "{rec}");
    }
    // The second searcher found one more copy online (the first stayed to share).
    assert_eq!(ring[1]["copies"], 2);
    // A download pinned to the urn:sha1 never gets a decoy; a name pick may.
    let poll = g["pollution"].as_array().unwrap();
    let hash: Vec<&Value> = poll.iter().filter(|p| p["pick"] == "hash").collect();
    assert_eq!(hash.len(), 2);
    assert!(hash.iter().all(|p| p["outcome"] == "genuine"), "{poll:?}");
    let name: Vec<&Value> = poll.iter().filter(|p| p["pick"] == "name").collect();
    assert_eq!(name.len(), 2);
    assert!(name.iter().all(|p| p["outcome"] != "failed"), "{poll:?}");
    for title in [
        "Flood cost against TTL",
        "Expanding ring during a flash crowd",
        "Pollution: decoys under a popular name",
    ] {
        assert!(html.contains(title), "{title}");
    }
}

/// The expanding ring stops early and so costs fewer query messages than the fixed TTL, on an overlay
/// built so that the answer is always one hop away: two ultrapeers, the flash file on a leaf of both
/// (`gnutella_leaf_links = 2`), every searcher a leaf of one of them. A TTL-1 ring reaches the
/// ultrapeer, which hands it to its matching leaves and stops; the fixed TTL 4 also crosses to the
/// other ultrapeer, which hands it to the holder again. The counts come from every node's stats file,
/// so the lab must count the relays, not only the client's own query, for the ring to come out lower.
#[test]
fn expanding_ring_one_hop_away_costs_fewer_messages_than_fixed_ttl() {
    let (r, html) = run_scenario(
        r#"
systems = ["gnutella"]
gnutella_classic_contrast = false
peers = 4
files = 3
gnutella_ultrapeers = 2
gnutella_leaf_links = 2
gnutella_ttl = 4
searches_per_target = 0
flash_crowd = 0
flash_file_kib = 64
flash_sweep = []
ring_searches = 2
churn_downloads = 0
churn_sources = 1
churn_leaving = 0
op_timeout_secs = 20
"#,
    );
    let g = &r["systems"][0];
    assert!(g["unavailable"].is_null(), "{}", g["unavailable"]);
    let ring = g["ring"].as_array().unwrap();
    let (fixed, rings): (Vec<&Value>, Vec<&Value>) =
        ring.iter().partition(|rec| rec["expanding"] == false);
    assert_eq!((fixed.len(), rings.len()), (2, 2), "{ring:?}");
    let msgs = |rec: &Value| rec["query_msgs"].as_u64().unwrap();
    for (f, x) in fixed.iter().zip(&rings) {
        assert_eq!(f["verified"], true, "{f}");
        assert_eq!(x["verified"], true, "{x}");
        assert_eq!(f["ttl"], 4, "{f}");
        assert_eq!(x["ttl"], 1, "the first ring finds it: {x}");
        assert_eq!(f["copies"], x["copies"], "same copies online");
        // The query, its delivery to the holder and, at TTL 4 only, the relay to the other
        // ultrapeer and its own delivery to the holder.
        assert!(msgs(x) >= 2, "{x}");
        assert!(msgs(f) >= msgs(x) + 2, "fixed {f} against ring {x}");
    }
    assert!(
        html.contains("the expanding ring sent fewer query messages: as predicted"),
        "the computed verdict"
    );
}

/// KaZaA surviving the loss of sources, and content hashes against decoys in KaZaA and BitTorrent.
#[test]
fn kazaa_source_loss_and_hash_picks_tiny() {
    let (r, html) = run_scenario(
        r#"
systems = ["kazaa", "bittorrent"]
peers = 8
files = 6
searches_per_target = 1
flash_crowd = 0
flash_sweep = []
flash_file_kib = 64
churn_downloads = 2
churn_file_kib = 512
churn_sources = 3
churn_leaving = 2
churn_leave_after_ms = 400
upload_rate = "256k"
decoys = 3
pollution_genuine = 1
pollution_downloads = 2
op_timeout_secs = 30
kazaa_supernodes = 3
kazaa_links_per_node = 1
kazaa_peers = 9
bittorrent_seeders = 4
"#,
    );
    let by = |name: &str| {
        r["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["system"] == name)
            .unwrap()
            .clone()
    };
    let k = by("kazaa");
    assert!(k["unavailable"].is_null(), "{}", k["unavailable"]);
    // The fan-out knobs: three supernodes, each of which heard from someone, and one link per node.
    let sns: Vec<&Value> = k["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["infrastructure"] == true)
        .collect();
    assert_eq!(sns.len(), 3, "{sns:?}");
    assert!(
        sns.iter().all(|n| n["control_in"].as_u64().unwrap() > 0),
        "{sns:?}"
    );
    let edges = k["bootstrap"].as_array().unwrap();
    // kazaa_peers = 9 beside peers = 8: KaZaA alone runs nine ordinary nodes.
    assert!(!edges.iter().any(|e| e[0] == "on009"), "{edges:?}");
    for p in 0..9 {
        let on = format!("on{p:03}");
        let links = edges
            .iter()
            .filter(|e| e[0] == on.as_str() && e[2] == "bootstrap")
            .count();
        assert_eq!(links, 1, "{on}: {edges:?}");
    }
    let churn = &k["churn"];
    let left = churn["departures"].as_array().unwrap();
    assert_eq!(left.len(), 2);
    // 512 KiB from three sources capped at 256 KiB/s cannot be done before the first one leaves, and
    // every download still completes from what is left.
    for d in churn["downloads"].as_array().unwrap() {
        assert_eq!(d["verified"], true, "{d}");
        assert!(
            d["ended_at"].as_f64().unwrap() > left[0].as_f64().unwrap(),
            "{d}"
        );
    }
    // bittorrent_seeders = 4: the flash file (torrent 0, one holder) starts with four seeders.
    let bt_seeders = by("bittorrent")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            let name = n["node"].as_str().unwrap();
            name.starts_with("seed") && name.ends_with("-0")
        })
        .count();
    assert_eq!(bt_seeders, 4);
    for name in ["kazaa", "bittorrent"] {
        let poll = by(name)["pollution"].as_array().unwrap().clone();
        let hash: Vec<&Value> = poll.iter().filter(|p| p["pick"] == "hash").collect();
        assert_eq!(hash.len(), 2, "{name}");
        assert!(
            hash.iter().all(|p| p["outcome"] == "genuine"),
            "{name}: {poll:?}"
        );
    }
    // KaZaA users pick the result line with the most sources: three decoys outnumber one real copy.
    let kp = k["pollution"].as_array().unwrap();
    assert!(
        kp.iter()
            .any(|p| p["pick"] == "name" && p["outcome"] == "decoy"),
        "{kp:?}"
    );
    assert!(html.contains("bytes received while the sources left"));
}

/// Napster has no content hash: its name pick falls for the decoys that outnumber the real copy.
#[test]
fn napster_name_pick_gets_a_decoy_tiny() {
    let (r, html) = run_scenario(
        r#"
systems = ["napster"]
peers = 9
files = 6
searches_per_target = 1
flash_crowd = 0
flash_sweep = []
flash_file_kib = 64
churn_downloads = 0
churn_sources = 1
churn_leaving = 0
decoys = 6
pollution_genuine = 1
pollution_downloads = 4
op_timeout_secs = 20
"#,
    );
    let n = &r["systems"][0];
    assert!(n["unavailable"].is_null(), "{}", n["unavailable"]);
    let poll = n["pollution"].as_array().unwrap();
    // Six decoys against one real copy: four picks by name all getting the real file has odds of
    // (1/7)^4 if the pick were uniform.
    assert_eq!(poll.len(), 4, "{poll:?}");
    assert!(poll.iter().all(|p| p["pick"] == "name"), "{poll:?}");
    assert!(poll.iter().any(|p| p["outcome"] == "decoy"), "{poll:?}");
    assert!(poll.iter().all(|p| p["outcome"] != "failed"), "{poll:?}");
    // By hash there is nothing to ask for: a note, no download.
    assert!(!n["pollution_notes"].as_array().unwrap().is_empty());
    assert!(html.contains("by name"), "{html}");
}

#[test]
fn ctrl_c_leaves_no_process_and_no_temp_folder() {
    let bins = bins();
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut child = swarm(tmp.path())
        .args(["demo", "--small", "--quiet", "--out"])
        .arg(out.path())
        .arg("--bin-dir")
        .arg(&bins)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle = tmp.path().display().to_string();
    // Wait until the lab runs some nodes, then interrupt it.
    let end = Instant::now() + Duration::from_secs(60);
    while processes_mentioning(&needle).len() < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        processes_mentioning(&needle).len() >= 3,
        "the lab started nodes"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let end = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        processes_mentioning(&needle).is_empty(),
        "{:?}",
        processes_mentioning(&needle)
    );
    assert_eq!(entries(tmp.path()), 0, "temporary folder removed");
}

#[test]
fn example_scenario_runs_through_the_parser_and_a_typo_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = swarm(tmp.path()).arg("example-scenario").output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("# Seed of every random choice"));
    let f = tmp.path().join("bad.toml");
    assert!(text.contains("\nflash_crowd = "), "{text}");
    std::fs::write(&f, text.replace("\nflash_crowd = ", "\nflash_crowed = ")).unwrap();
    let o = swarm(tmp.path()).arg("run").arg(&f).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("flash_crowed") && err.contains("bad.toml"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
}
