//! The overlay graph of each system, "who is connected to whom" (issue 8), from the links the nodes
//! themselves report.
//!
//! Every node lists the overlay links it held in its stats file (`neighbours_seen` of
//! [`common::stats::StatsSnapshot`]: every link held at some time since it started). For an outgoing link
//! the address is the one it dialled, the remote's listening address, which the lab maps to its own
//! node names; incoming links carry the remote's ephemeral socket address and are left out, so every
//! link is counted once, by the side that opened it. The graph is the union over the run: one
//! undirected edge per pair of nodes of which one reported an out-link to the other. File transfers
//! (download sources, BitTorrent blocks) are not overlay links; the report draws them as a separate,
//! dashed layer.
//!
//! [`verdict`] checks the shape each design predicts (Napster a star around its server, Gnutella 0.6
//! leaves under meshed ultrapeers, Gnutella 0.4 a flat mesh, KaZaA ordinary nodes under linked
//! supernodes, the BitTorrent downloaders of one wave a near-complete mesh) on those edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::{esc, held, verdict as explain};
use crate::results::{NodeRecord, SystemResult};

/// An edge: `(from, to, kind)`. Overlay edges: the dialler, the node it dialled, the remote's role as
/// the dialler knew it. Transfer edges: source, downloader, `download` or `blocks`.
pub type Edge = (String, String, String);

/// The overlay built from the nodes' reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// One undirected edge per pair of lab nodes.
    pub edges: Vec<Edge>,
    /// Out-links reported in total (two nodes that dialled each other report two for one edge).
    pub out_links: usize,
    /// Out-link addresses that matched no node of the run.
    pub unmapped: Vec<String>,
}

/// The graph of `nodes`' reported out-links; `by_addr` maps a listening address to the lab's name.
pub fn build(nodes: &[NodeRecord], by_addr: &BTreeMap<String, String>) -> Graph {
    let mut g = Graph::default();
    let mut pairs = BTreeSet::new();
    for n in nodes {
        for l in n.neighbours.iter().filter(|l| l.dir == "out") {
            g.out_links += 1;
            let Some(to) = by_addr.get(&l.addr) else {
                g.unmapped.push(format!("{} -> {}", n.node, l.addr));
                continue;
            };
            let pair = if n.node <= *to {
                (n.node.clone(), to.clone())
            } else {
                (to.clone(), n.node.clone())
            };
            if to != &n.node && pairs.insert(pair) {
                g.edges.push((n.node.clone(), to.clone(), l.kind.clone()));
            }
        }
    }
    g
}

/// Neighbours of every node (undirected).
fn adjacency(edges: &[Edge]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, b, _) in edges {
        adj.entry(a).or_default().insert(b);
        adj.entry(b).or_default().insert(a);
    }
    adj
}

/// Connected components of the subgraph induced by `members` (each component's nodes).
fn components<'a>(
    members: &BTreeSet<&'a str>,
    adj: &BTreeMap<&str, BTreeSet<&'a str>>,
) -> Vec<BTreeSet<&'a str>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &start in members {
        if !seen.insert(start) {
            continue;
        }
        let mut comp = BTreeSet::from([start]);
        let mut todo = vec![start];
        while let Some(x) = todo.pop() {
            for &y in adj.get(x).into_iter().flatten() {
                if members.contains(y) && seen.insert(y) {
                    comp.insert(y);
                    todo.push(y);
                }
            }
        }
        out.push(comp);
    }
    out
}

/// What the tutorial predicts for the overlay of `system`.
pub fn claim(system: &str) -> &'static str {
    match system {
        "napster" => "Napster is a star: every client holds one link, to the central server; only file transfers go from peer to peer.",
        "gnutella" => "Gnutella 0.6: leaves attach to a few ultrapeers and to nothing else; the ultrapeers form a mesh among themselves that carries the queries.",
        "gnutella classic" => "Gnutella 0.4: a flat mesh of equal servents (one role for all, no centre every node links to), each with a few neighbours, forming one connected overlay.",
        "kazaa" => "KaZaA (FastTrack): an ordinary node attaches to a supernode and never to another ordinary node; the supernodes link to each other.",
        "bittorrent" => "BitTorrent: the peers downloading a torrent at the same time form a near-complete mesh (each one trades pieces with many others); the tracker only introduces them and holds no link.",
        _ => "no prediction for this system.",
    }
}

/// Share of the possible links among a wave of BitTorrent downloaders that counts as near-complete.
pub const NEAR_COMPLETE: f64 = 0.5;

/// The names of the nodes that satisfy `pred`.
fn names_where(nodes: &[NodeRecord], pred: impl Fn(&NodeRecord) -> bool) -> BTreeSet<&str> {
    nodes
        .iter()
        .filter(|n| pred(n))
        .map(|n| n.node.as_str())
        .collect()
}

/// Edges with both ends in `a` and `b`.
fn links_between(edges: &[Edge], a: &BTreeSet<&str>, b: &BTreeSet<&str>) -> usize {
    edges
        .iter()
        .filter(|(x, y, _)| {
            (a.contains(x.as_str()) && b.contains(y.as_str()))
                || (b.contains(x.as_str()) && a.contains(y.as_str()))
        })
        .count()
}

/// A two-tier design: spokes (every node that is no hub) link only to hubs, each to at least one, and
/// the hubs form one connected mesh.
fn tiered(nodes: &[NodeRecord], edges: &[Edge], hub: &str, spokes_are: &str) -> String {
    let adj = adjacency(edges);
    let hubs = names_where(nodes, |n| n.role == hub);
    let spokes = names_where(nodes, |n| n.role != hub);
    let spoke_spoke = links_between(edges, &spokes, &spokes);
    let per: Vec<usize> = spokes
        .iter()
        .map(|s| {
            adj.get(s)
                .map_or(0, |ns| ns.iter().filter(|n| hubs.contains(*n)).count())
        })
        .collect();
    let orphans = per.iter().filter(|&&k| k == 0).count();
    let hub_links = links_between(edges, &hubs, &hubs);
    let parts = components(&hubs, &adj).len();
    let ok = !hubs.is_empty() && spoke_spoke == 0 && orphans == 0 && parts == 1;
    format!(
        "prediction held: {} ({} {spokes_are}, each under {}–{} {hub}s (mean {:.1}), {orphans} without one, {spoke_spoke} links between two of them; {} {hub}s with {hub_links} links among them in {parts} connected part{})",
        held(ok),
        spokes.len(),
        per.iter().min().unwrap_or(&0),
        per.iter().max().unwrap_or(&0),
        per.iter().sum::<usize>() as f64 / per.len().max(1) as f64,
        hubs.len(),
        if parts == 1 { "" } else { "s" },
    )
}

/// A BitTorrent downloader's wave: its lab name without the trailing number (`flash`, `sweep1-`,
/// `churn`, ...). The lab starts a wave's downloads at once, so they form one swarm at one time; the
/// union over the run would otherwise mix waves that never met.
fn wave(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Gnutella 0.4's flat mesh, checked over the servents (role `classic`): one connected overlay, nobody
/// alone, no centre linked to all the others. Search and download clients (one link each, role `leaf`)
/// hang off the mesh; they only must not link to each other.
fn flat(nodes: &[NodeRecord], edges: &[Edge]) -> String {
    let servents = names_where(nodes, |n| n.role == "classic");
    let clients = names_where(nodes, |n| n.role != "classic");
    let mesh: Vec<Edge> = edges
        .iter()
        .filter(|(a, b, _)| servents.contains(a.as_str()) && servents.contains(b.as_str()))
        .cloned()
        .collect();
    let adj = adjacency(&mesh);
    let deg = |n: &str| adj.get(n).map_or(0, BTreeSet::len);
    let degrees: Vec<usize> = servents.iter().map(|n| deg(n)).collect();
    let alone = degrees.iter().filter(|&&d| d == 0).count();
    let parts = components(&servents, &adj).len();
    let max = degrees.iter().max().copied().unwrap_or(0);
    let mean = degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
    let centre = servents.len() > 2 && max + 1 >= servents.len();
    let client_links = links_between(edges, &clients, &clients);
    let ok = !servents.is_empty() && alone == 0 && parts == 1 && !centre && client_links == 0;
    format!(
        "prediction held: {} ({} servents in {parts} connected part{}, degree {}–{max} (mean {mean:.1}), {alone} without a link, {}; {} clients, {client_links} links between clients)",
        held(ok),
        servents.len(),
        if parts == 1 { "" } else { "s" },
        degrees.iter().min().unwrap_or(&0),
        if centre { "one linked to all the others" } else { "none linked to all the others" },
        clients.len(),
    )
}

/// "prediction held: yes/NO (figures)" for the overlay of `system`, computed from the edges and the
/// roles the nodes wrote in their stats files.
pub fn verdict(system: &str, nodes: &[NodeRecord], edges: &[Edge]) -> String {
    if edges.is_empty() {
        return "prediction not checked: no node reported an overlay link".into();
    }
    let adj = adjacency(edges);
    let deg = |n: &str| adj.get(n).map_or(0, BTreeSet::len);
    match system {
        "napster" => {
            let servers = names_where(nodes, |n| n.role == "server");
            let clients = names_where(nodes, |n| n.role != "server");
            let linked = clients
                .iter()
                .filter(|c| {
                    adj.get(*c)
                        .is_some_and(|ns| ns.iter().any(|x| servers.contains(x)))
                })
                .count();
            let off_star = links_between(edges, &clients, &clients);
            let ok = servers.len() == 1 && linked == clients.len() && off_star == 0;
            format!(
                "prediction held: {} (a star: {linked} of {} clients linked to the server, {off_star} links that avoid the server)",
                held(ok),
                clients.len()
            )
        }
        // A scenario may run Gnutella as the classic 0.4 flood (`gnutella_classic = true`) under the plain
        // "gnutella" label: with no ultrapeer in the run, the flat-mesh prediction is the one to check.
        "gnutella" if nodes.iter().any(|n| n.role == "ultrapeer") => {
            tiered(nodes, edges, "ultrapeer", "leaves")
        }
        "gnutella" => flat(nodes, edges),
        "kazaa" => tiered(nodes, edges, "supernode", "ordinary nodes and clients"),
        "gnutella classic" => flat(nodes, edges),
        "bittorrent" => {
            let infra = names_where(nodes, |n| n.infrastructure);
            let infra_links = infra.iter().map(|n| deg(n)).sum::<usize>();
            let mut waves: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for n in names_where(nodes, |n| !n.infrastructure && !n.node.starts_with("seed")) {
                waves.entry(wave(n)).or_default().insert(n);
            }
            let swarms: Vec<(&str, usize, usize)> = waves
                .iter()
                .filter(|(_, g)| g.len() >= 2)
                .map(|(w, g)| (*w, g.len(), links_between(edges, g, g)))
                .collect();
            let possible = |n: usize| n * (n - 1) / 2;
            let density = |n: usize, l: usize| l as f64 / possible(n) as f64;
            let ok = !swarms.is_empty()
                && swarms
                    .iter()
                    .all(|&(_, n, l)| density(n, l) >= NEAR_COMPLETE)
                && infra_links == 0;
            let each = swarms
                .iter()
                .map(|&(w, n, l)| {
                    format!(
                        "{w}: {n} with {l} of {} possible links ({:.0}%)",
                        possible(n),
                        density(n, l) * 100.0
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "prediction held: {} (downloaders started together, linked among themselves: {each}; near-complete taken as at least {:.0}%; the tracker holds {infra_links} links)",
                held(ok),
                NEAR_COMPLETE * 100.0,
            )
        }
        other => format!("prediction not checked: no overlay prediction for {other}"),
    }
}

const GW: f64 = 640.0;
const GH: f64 = 440.0;

/// SVG of one overlay: infrastructure on an inner ring, peers on the outer ring next to the hub they
/// hang under, overlay links solid, transfers dashed (red: download source, green: blocks exchanged).
pub fn svg_graph(nodes: &[(String, bool)], edges: &[Edge], transfers: &[Edge]) -> String {
    let (cx, cy, rad) = (GW / 2.0, GH / 2.0, GH / 2.0 - 30.0);
    let infra: Vec<&String> = nodes.iter().filter(|n| n.1).map(|n| &n.0).collect();
    let adj = adjacency(edges);
    // Peers sorted by the first hub they link to, so each hub's spokes sit together.
    let mut peers: Vec<(usize, &String)> = nodes
        .iter()
        .filter(|n| !n.1)
        .map(|n| {
            let hub = adj
                .get(n.0.as_str())
                .and_then(|ns| infra.iter().position(|h| ns.contains(h.as_str())));
            (hub.unwrap_or(usize::MAX), &n.0)
        })
        .collect();
    peers.sort();
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let inner = if infra.len() <= 1 { 0.0 } else { rad * 0.35 };
    for (i, n) in infra.iter().enumerate() {
        let a = std::f64::consts::TAU * i as f64 / infra.len().max(1) as f64;
        pos.insert(n, (cx + inner * a.cos(), cy + inner * a.sin()));
    }
    for (i, (_, n)) in peers.iter().enumerate() {
        let a = std::f64::consts::TAU * i as f64 / peers.len().max(1) as f64;
        pos.insert(n, (cx + rad * a.cos(), cy + rad * a.sin()));
    }
    let mut s = format!(
        r#"<svg class="chart graph" xmlns="http://www.w3.org/2000/svg" width="{GW}" height="{GH}" viewBox="0 0 {GW} {GH}">"#
    );
    let line = |s: &mut String, a: &str, b: &str, style: &str| {
        if let (Some(p), Some(q)) = (pos.get(a), pos.get(b)) {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {style}/>"#,
                p.0, p.1, q.0, q.1
            );
        }
    };
    for (a, b, _) in edges {
        line(
            &mut s,
            a,
            b,
            r##"class="link" stroke="#888" stroke-width="1""##,
        );
    }
    for (a, b, kind) in transfers {
        let c = if kind == "blocks" {
            "#2ca02c"
        } else {
            "#d62728"
        };
        line(
            &mut s,
            a,
            b,
            &format!(
                r#"class="transfer" stroke="{c}" stroke-width="1" stroke-dasharray="4 3" opacity="0.7""#
            ),
        );
    }
    for (n, (x, y)) in &pos {
        let is_infra = infra.iter().any(|i| i.as_str() == *n);
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{}" fill="{}"><title>{} ({} links)</title></circle>"##,
            if is_infra { 8 } else { 5 },
            if is_infra { "#000" } else { "#1f77b4" },
            esc(n),
            adj.get(n).map_or(0, BTreeSet::len)
        );
    }
    s.push_str(r##"<text x="8" y="16" font-size="11">solid grey: overlay links the nodes reported; dashed red: download source, dashed green: blocks exchanged</text></svg>"##);
    s
}

/// The report's overlay section: per system its graph and the computed verdict under it.
pub fn html_section(ran: &[&SystemResult]) -> String {
    let mut h = String::from("<h2>Overlay graph per system</h2>");
    h.push_str("<p>Drawn: the union over the run of the overlay links every node listed in its own stats file (each link once, by the node that dialled it, mapped from the address it dialled to the lab's node name). Black: servers, ultrapeers, supernodes, tracker; blue: peers. Transfers are a separate, dashed layer: they are not overlay links.</p>");
    for s in ran {
        let mut nodes: Vec<(String, bool)> = s
            .nodes
            .iter()
            .map(|n| (n.node.clone(), n.infrastructure))
            .collect();
        for (a, b, _) in s.edges.iter().chain(&s.transfer_edges) {
            for x in [a, b] {
                if !nodes.iter().any(|n| &n.0 == x) {
                    nodes.push((x.clone(), false));
                }
            }
        }
        let _ = write!(h, "<h3>{}</h3>", esc(&s.system));
        h.push_str(&svg_graph(&nodes, &s.edges, &s.transfer_edges));
        let mut seen = format!(
            "{} nodes, {} overlay links reported by the dialling side, {} distinct edges drawn",
            s.nodes.len(),
            s.overlay_out_links,
            s.edges.len()
        );
        if !s.overlay_unmapped.is_empty() {
            let _ = write!(
                seen,
                ", {} to addresses of no node of the run (not drawn)",
                s.overlay_unmapped.len()
            );
        }
        let _ = write!(
            seen,
            "; {} transfer edges; {}.",
            s.transfer_edges.len(),
            verdict(&s.system, &s.nodes, &s.edges)
        );
        explain(&mut h, claim(&s.system), &seen);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::stats::Neighbour;

    fn node(name: &str, role: &str, infra: bool, out: &[(&str, &str)]) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            role: role.into(),
            infrastructure: infra,
            upload_bytes: 0,
            control_in: 0,
            control_out: 0,
            control_bytes: 0,
            reported_as: String::new(),
            neighbours: out
                .iter()
                .map(|(addr, kind)| Neighbour {
                    addr: (*addr).into(),
                    dir: "out".into(),
                    kind: (*kind).into(),
                })
                .chain(std::iter::once(Neighbour {
                    addr: "127.0.0.1:40000".into(),
                    dir: "in".into(),
                    kind: "leaf".into(),
                }))
                .collect(),
            messages: Default::default(),
        }
    }

    fn addrs(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("127.0.0.1:{}", 7000 + i), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn out_links_make_one_edge_per_pair_and_unknown_addresses_are_kept_aside() {
        let by = addrs(&["up1", "up2", "leaf1"]);
        let nodes = [
            node("up1", "ultrapeer", true, &[("127.0.0.1:7001", "ultrapeer")]),
            // up2 dialled up1 too: still one edge.
            node("up2", "ultrapeer", true, &[("127.0.0.1:7000", "ultrapeer")]),
            node(
                "leaf1",
                "leaf",
                false,
                &[
                    ("127.0.0.1:7000", "ultrapeer"),
                    ("127.0.0.1:9", "ultrapeer"),
                ],
            ),
        ];
        let g = build(&nodes, &by);
        assert_eq!(g.out_links, 4, "incoming links are not counted");
        assert_eq!(
            g.edges,
            vec![
                ("up1".into(), "up2".into(), "ultrapeer".into()),
                ("leaf1".into(), "up1".into(), "ultrapeer".into()),
            ]
        );
        assert_eq!(g.unmapped, vec!["leaf1 -> 127.0.0.1:9".to_owned()]);
    }

    fn e(a: &str, b: &str) -> Edge {
        (a.into(), b.into(), "x".into())
    }

    #[test]
    fn two_tier_verdicts_catch_a_leaf_link_an_orphan_and_split_hubs() {
        let nodes = [
            node("u1", "ultrapeer", true, &[]),
            node("u2", "ultrapeer", true, &[]),
            node("l1", "leaf", false, &[]),
            node("l2", "leaf", false, &[]),
        ];
        let good = [e("u1", "u2"), e("l1", "u1"), e("l2", "u2"), e("l2", "u1")];
        let v = verdict("gnutella", &nodes, &good);
        assert!(
            v.starts_with("prediction held: yes (2 leaves, each under 1–2 ultrapeers"),
            "{v}"
        );
        let mut leafy = good.to_vec();
        leafy.push(e("l1", "l2"));
        assert!(verdict("gnutella", &nodes, &leafy).contains("held: NO"));
        let orphan = [e("u1", "u2"), e("l2", "u2")];
        assert!(verdict("gnutella", &nodes, &orphan).contains("1 without one"));
        let split = [e("l1", "u1"), e("l2", "u2")];
        let v = verdict("gnutella", &nodes, &split);
        assert!(
            v.contains("held: NO") && v.contains("2 connected parts"),
            "{v}"
        );
        let kazaa = [
            node("sn0", "supernode", true, &[]),
            node("sn1", "supernode", true, &[]),
            node("on0", "ordinary", false, &[]),
        ];
        let v = verdict("kazaa", &kazaa, &[e("sn1", "sn0"), e("on0", "sn1")]);
        assert!(
            v.contains("held: yes (1 ordinary nodes and clients, each under 1–1 supernodes"),
            "{v}"
        );
    }

    #[test]
    fn napster_star_classic_mesh_and_bittorrent_density() {
        let nap = [
            node("server", "server", true, &[]),
            node("a", "client", false, &[]),
            node("b", "client", false, &[]),
        ];
        let v = verdict("napster", &nap, &[e("a", "server"), e("b", "server")]);
        assert!(v.contains("held: yes (a star: 2 of 2 clients"), "{v}");
        assert!(verdict("napster", &nap, &[e("a", "server"), e("a", "b")]).contains("held: NO"));

        let cl: Vec<NodeRecord> = (0..4)
            .map(|i| node(&format!("c{i}"), "classic", false, &[]))
            .collect();
        let ring = [e("c0", "c1"), e("c1", "c2"), e("c2", "c3"), e("c3", "c0")];
        assert!(verdict("gnutella classic", &cl, &ring).contains("held: yes"));
        assert!(verdict("gnutella classic", &cl, &ring[..2]).contains("held: NO"));
        let star = [e("c0", "c1"), e("c0", "c2"), e("c0", "c3")];
        let v = verdict("gnutella classic", &cl, &star);
        assert!(
            v.contains("held: NO") && v.contains("one linked to all"),
            "{v}"
        );
        // A scenario with `gnutella_classic = true` reports plain "gnutella": no ultrapeer, so the flat
        // mesh is checked; its search/get clients (leaves, one link each) hang off it.
        let mut scn = cl.clone();
        scn.push(node("search0", "leaf", false, &[]));
        scn.push(node("get0", "leaf", false, &[]));
        let mut hung = ring.to_vec();
        hung.extend([e("search0", "c1"), e("get0", "c2")]);
        let v = verdict("gnutella", &scn, &hung);
        assert!(v.contains("held: yes") && v.contains("2 clients"), "{v}");
        hung.push(e("search0", "get0"));
        assert!(verdict("gnutella", &scn, &hung).contains("held: NO"));

        let mut bt = vec![node("tracker", "server", true, &[])];
        bt.extend((0..5).map(|i| node(&format!("p{i}"), "leecher", false, &[])));
        // Every pair of the five but one.
        let mut full = Vec::new();
        for i in 0..5 {
            for j in i + 1..5 {
                if (i, j) != (3, 4) {
                    full.push(e(&format!("p{i}"), &format!("p{j}")));
                }
            }
        }
        let v = verdict("bittorrent", &bt, &full);
        assert!(v.contains("held: yes (downloaders started together, linked among themselves: p: 5 with 9 of 10"), "{v}");
        let mut tracked = full.clone();
        tracked.push(e("p0", "tracker"));
        assert!(verdict("bittorrent", &bt, &tracked).contains("held: NO"));
        let chain = [e("p0", "p1"), e("p1", "p2"), e("p2", "p3"), e("p3", "p4")];
        assert!(verdict("bittorrent", &bt, &chain).contains("held: NO"));
        assert!(verdict("bittorrent", &bt, &[]).contains("not checked"));
    }

    #[test]
    fn the_graph_draws_overlay_and_transfer_layers_apart() {
        let nodes = vec![
            ("hub".to_owned(), true),
            ("a".to_owned(), false),
            ("b<".to_owned(), false),
        ];
        let svg = svg_graph(
            &nodes,
            &[e("a", "hub"), e("b<", "hub")],
            &[("a".into(), "b<".into(), "download".into())],
        );
        assert_eq!(svg.matches("class=\"link\"").count(), 2);
        assert_eq!(svg.matches("class=\"transfer\"").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("b&lt; (1 links)"));
    }
}
