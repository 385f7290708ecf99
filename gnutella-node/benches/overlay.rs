//! Benchmark (harness = false; prints figures, asserts nothing about time):
//!
//! 1. Query traffic of a 200-node classic 0.4 flood (TTL 7) versus the same number of nodes organised as
//!    20 ultrapeers with 9 leaves each and QRP (max TTL 4), in the in-memory simulator. Reported as query
//!    descriptors sent per search, next to the flooding formulas of the notes §8 (tree bound
//!    d·(f^t − 1)/(f − 1) on nodes reached; ≈ 2E − N transmissions once the flood covers the graph).
//! 2. Descriptors routed per second by one ultrapeer with 30 ultrapeer neighbours (sans-I/O: decode is not
//!    included, encode of each forwarded copy is), on this machine.
//!
//! `cargo bench -p gnutella-node --bench overlay` (set `GNUTELLA_BENCH_QUERIES` to change the count).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use gnutella_node::codec::message::{Message, Query, TYPE_QUERY};
use gnutella_node::codec::{Descriptor, Guid};
use gnutella_node::protocol::handshake::{Link, PeerKind};
use gnutella_node::protocol::sim::Net;
use gnutella_node::protocol::{Config, Event, Role, Servent, SharedFile};
use rand::{Rng, SeedableRng};

fn guid(i: usize) -> Guid {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    g[8] = 0xFF;
    Guid(g)
}

fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8, 1), 6346)
}

fn shares(i: usize) -> Vec<SharedFile> {
    vec![SharedFile {
        index: 1,
        name: format!("file number {i} unique{i}.dat"),
        size: 1000,
        sha1: None,
    }]
}

fn random_graph(net: &mut Net, nodes: &[usize], extra: usize, rng: &mut impl Rng) -> usize {
    let n = nodes.len();
    let mut edges = 0;
    for i in 0..n {
        let (a, b) = (nodes[i], nodes[(i + 1) % n]);
        if !net.linked(a, b) {
            net.connect(a, b);
            edges += 1;
        }
    }
    for i in 0..n {
        for _ in 0..extra {
            let (a, b) = (nodes[i], nodes[rng.gen_range(0..n)]);
            if a != b && !net.linked(a, b) {
                net.connect(a, b);
                edges += 1;
            }
        }
    }
    edges
}

struct Outcome {
    queries_per_search: f64,
    found: usize,
    searches: usize,
}

fn measure(net: &mut Net, searchers: &[usize], targets: &[usize], ttl: u8) -> Outcome {
    let mut total = 0u64;
    let mut found = 0;
    for (k, (&s, &t)) in searchers.iter().zip(targets).enumerate() {
        net.reset_counters();
        let g = net.nodes[s].start_search(net.now, &format!("unique{t}"), None, ttl);
        net.run(200);
        total += net.delivered.get(&TYPE_QUERY).copied().unwrap_or(0);
        if net.events[s]
            .iter()
            .any(|e| matches!(e, Event::Hit { query, .. } if *query == g))
        {
            found += 1;
        }
        net.events[s].clear();
        // Let routes age between searches like separate users would.
        if k % 5 == 4 {
            net.advance(Duration::from_secs(1));
            net.run(200);
        }
    }
    Outcome {
        queries_per_search: total as f64 / searchers.len() as f64,
        found,
        searches: searchers.len(),
    }
}

fn overlay_comparison(searches: usize) {
    let n = 200;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = Instant::now();

    // Classic: 200 equal nodes, ring + 1 random chord each (mean degree ≈ 4), TTL 7.
    let mut classic = Net::new(now);
    let ids: Vec<usize> = (0..n)
        .map(|i| {
            classic.add(Servent::new(
                Config::new(guid(i), addr(i), Role::Ultrapeer, true),
                shares(i),
                i as u64,
                now,
            ))
        })
        .collect();
    let edges = random_graph(&mut classic, &ids, 1, &mut rng);
    classic.run(500);
    let searchers: Vec<usize> = (0..searches).map(|_| rng.gen_range(0..n)).collect();
    let targets: Vec<usize> = searchers
        .iter()
        .map(|&s| (s + 1 + rng.gen_range(0..n - 1)) % n)
        .collect();
    let c = measure(&mut classic, &searchers, &targets, 7);
    let d = 2.0 * edges as f64 / n as f64;
    let f = d - 1.0;
    let bound = d * (f.powi(7) - 1.0) / (f - 1.0);
    let full_flood = 2.0 * edges as f64 - n as f64;

    // Ultrapeers: 20 UPs (ring + 2 chords each, mean degree ≈ 6) with 9 leaves each, QRP, max TTL 4.
    let mut up = Net::new(now);
    let ups: Vec<usize> = (0..20)
        .map(|i| {
            up.add(Servent::new(
                Config::new(guid(i), addr(i), Role::Ultrapeer, false),
                shares(i),
                i as u64,
                now,
            ))
        })
        .collect();
    let up_edges = random_graph(&mut up, &ups, 2, &mut rng);
    for i in 20..n {
        let l = up.add(Servent::new(
            Config::new(guid(i), addr(i), Role::Leaf, false),
            shares(i),
            i as u64,
            now,
        ));
        up.connect(l, ups[i % 20]);
    }
    up.run(500);
    up.advance(Duration::from_secs(4)); // merged leaf tables go out to the other ultrapeers
    up.run(500);
    let u = measure(&mut up, &searchers, &targets, 4);

    println!("## Query traffic, 200 nodes, one rare file per search ({searches} searches)");
    println!(
        "classic 0.4 flood  : {} edges, mean degree {:.2}, TTL 7: {:.1} query messages/search, found {}/{}",
        edges, d, c.queries_per_search, c.found, c.searches
    );
    println!(
        "  formulas (notes §8): tree bound on nodes reached d(f^t-1)/(f-1) = {bound:.0} (>> N = {n}), \
         full-flood transmissions 2E-N = {full_flood:.0}; measured/2E-N = {:.2}",
        c.queries_per_search / full_flood
    );
    println!(
        "ultrapeers + QRP   : 20 UPs ({} UP edges) x 9 leaves, max TTL 4: {:.1} query messages/search, found {}/{}",
        up_edges, u.queries_per_search, u.found, u.searches
    );
    println!(
        "ratio classic / ultrapeer+QRP = {:.1}x",
        c.queries_per_search / u.queries_per_search.max(1.0)
    );
}

fn routing_throughput(queries: usize) {
    let now = Instant::now();
    let mut s = Servent::new(
        Config::new(guid(0), addr(0), Role::Ultrapeer, false),
        shares(0),
        1,
        now,
    );
    let link = Link {
        peer: PeerKind::Ultrapeer,
        become_leaf: false,
        deflate_in: false,
        deflate_out: false,
        user_agent: None,
        listen_addr: None,
        guid: None,
        try_hosts: Vec::new(),
        ggep: false,
        max_ttl: None,
        bye_packet: true,
        remote_ip: None,
    };
    for c in 1..=30u64 {
        s.add_connection(now, c, &link);
        while s.poll_transmit(c).is_some() {}
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let words = [
        "alpha", "beta", "gamma", "delta", "mp3", "ogg", "linux", "iso",
    ];
    let input: Vec<(u64, Descriptor)> = (0..queries)
        .map(|i| {
            let mut g = [0u8; 16];
            rng.fill(&mut g);
            let q = format!("{} {}", words[i % 8], words[(i / 8) % 8]);
            (
                1 + (i as u64 % 30),
                Descriptor {
                    guid: Guid(g),
                    ttl: 3,
                    hops: 1,
                    msg: Message::Query(Query::new(&q, false)),
                },
            )
        })
        .collect();
    let start = Instant::now();
    let mut out = 0u64;
    let mut t = now;
    for (k, (c, d)) in input.into_iter().enumerate() {
        if k % 1000 == 0 {
            // A fresh second for the per-connection query rate limit.
            t += Duration::from_secs(1);
        }
        s.handle_descriptor(t, c, d);
        if k % 64 == 63 {
            for c in 1..=30u64 {
                while s.poll_transmit(c).is_some() {
                    out += 1;
                }
            }
        }
    }
    for c in 1..=30u64 {
        while s.poll_transmit(c).is_some() {
            out += 1;
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!("## One ultrapeer, 30 ultrapeer neighbours, {queries} distinct queries (TTL 3)");
    println!(
        "{:.0} queries in/s, {:.0} descriptors out/s ({} forwarded copies, {:.3} s; counters {:?})",
        queries as f64 / el,
        out as f64 / el,
        out,
        el,
        s.counters()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing special: keep that run tiny.
    let full = std::env::args().any(|a| a == "--bench");
    let q: usize = std::env::var("GNUTELLA_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 50_000 } else { 500 });
    overlay_comparison(if full { 40 } else { 3 });
    routing_throughput(q);
}
