//! Load benchmark of `napster-server` over real loopback sockets (issue: 10,000 users × 100 files).
//!
//! Starts the release server binary, logs in `NAPSTER_BENCH_USERS` simulated users (default 10,000) that
//! each share `NAPSTER_BENCH_FILES` files (default 100) with type-100 messages, then runs
//! `NAPSTER_BENCH_SEARCHES` searches (default 5,000) from `NAPSTER_BENCH_SEARCHERS` concurrent clients
//! (default 8; the server's runtime threads via `NAPSTER_BENCH_SERVER_THREADS`, default 0 = one per CPU), and prints login+share throughput, searches/s, p50/p99 latency and the server's resident
//! memory per 1,000 shared files (VmRSS growth between "all logged in" and "all shared"). Then half the
//! users disconnect at once, which starts an index compaction, while the searchers go on for
//! `NAPSTER_BENCH_CHURN_SECS` (default 6; 0 skips it): the search latency during that churn.
//!
//! In process (skipped with `NAPSTER_BENCH_IN_PROCESS=0`): the index's bytes per file, the server-side
//! cost of a search, a whole compaction done in one go, and the sans-I/O `Server` driven through the same
//! churn the way the node drives it, timing every call (each is one hold of the node's lock): the longest
//! compaction step and the searches between steps.
//!
//! There is no runnable reference server: OpenNap is not packaged anywhere we can install from (notes §5), so
//! the comparison printed is with OpenNap-NG's documented figure (300–350 KB per 1,000 files).
//! Run: `cargo bench -p napster-server --bench napster_load`.
//!
//! A/B runs: `NAPSTER_BENCH_SERVER_BIN=/path/to/older/napster-server` benchmarks another server binary (a
//! saved build of an earlier commit) with the same load; `NAPSTER_BENCH_IN_PROCESS=0` skips the
//! in-process index figures.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::BytesMut;
use napster_server::codec::{Frame, FrameBatch, MAX_PAYLOAD};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VOCAB: usize = 20_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn word(i: usize) -> String {
    // Pronounceable, distinct words: "w" + base-26 digits.
    let mut s = String::from("w");
    let mut n = i;
    loop {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    s
}

/// The path user `u` shares as its file `f`: a directory from 500, two vocabulary words, a word shared by
/// every thousandth user, and the file number.
fn share_path(rng: &mut impl Rng, u: usize, f: usize) -> String {
    let (a, b, d) = (
        rng.gen_range(0..VOCAB),
        rng.gen_range(0..VOCAB),
        rng.gen_range(0..VOCAB),
    );
    format!(
        "C:\\mp3\\{}\\{} - {} {} {f}.mp3",
        word(d % 500),
        word(a),
        word(b),
        word(u % 1000)
    )
}

/// A search: one vocabulary word, or a directory word and a user word.
fn query(rng: &mut impl Rng) -> String {
    if rng.gen_bool(0.5) {
        format!(
            "FILENAME CONTAINS \"{}\" MAX_RESULTS 100",
            word(rng.gen_range(0..VOCAB))
        )
    } else {
        format!(
            "FILENAME CONTAINS \"{} {}\" MAX_RESULTS 100",
            word(rng.gen_range(0..500)),
            word(rng.gen_range(0..1000))
        )
    }
}

/// The same files and searches without sockets, in this process: the index's own heap bytes and the
/// server-side cost of one search (lookup plus encoding the 201 frames and the 202 into one batch, as the
/// server does), apart from I/O and scheduling.
fn in_process(users: usize, files: usize, searches: usize) {
    use napster_server::protocol::index::{Index, NewFile};
    use napster_server::protocol::search::{parse, Kind};
    use napster_server::protocol::ConnId;
    let mut ix = Index::default();
    let mut ids = Vec::with_capacity(users * files);
    for chunk in 0..64usize {
        let mut rng = rand::rngs::StdRng::seed_from_u64(chunk as u64);
        for u in (chunk..users).step_by(64) {
            for f in 0..files {
                let path = share_path(&mut rng, u, f);
                let id = ix.insert(NewFile {
                    owner: ConnId(u as u64),
                    path: &path,
                    md5: "0123456789abcdef0123456789abcdef",
                    size: 3_000_000 + f as u64,
                    bitrate: 128,
                    freq: 44100,
                    secs: 240,
                    kind: Kind::Mp3,
                });
                ids.push((u, id));
            }
        }
    }
    let mem = ix.memory();
    let per_file = |b: usize| b as f64 / ix.len() as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut lat = Vec::with_capacity(searches);
    let mut bytes = 0usize;
    for _ in 0..searches {
        let q = query(&mut rng);
        // Best of three runs of the same search: the other builds on the machine preempt single runs,
        // and this figure is meant to show the server's own work.
        let mut best = std::time::Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let parsed = parse(&q, 100).unwrap();
            // Encoded the way the server does it: every 201 and the 202 into one batch.
            let mut batch = FrameBatch::new();
            for (_, f) in ix.search(&parsed, |_| true) {
                let _ = batch.push_fmt(
                    201,
                    format_args!(
                        "\"{}\" {} {} {} {} {} user 16777343 7",
                        f.path, f.md5, f.size, f.bitrate, f.freq, f.secs
                    ),
                );
            }
            let _ = batch.push_fmt(202, format_args!(""));
            best = best.min(t.elapsed());
            bytes = batch.as_bytes().len();
        }
        lat.push(best);
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "  in-process:     index {:.1} B per file (records {:.1}, text {:.1}, postings {:.1}, other {:.1}); search+encode (best of 3) p50 {:?} p99 {:?} ({} bytes on the wire for the last search)",
        per_file(mem.total()),
        per_file(mem.records),
        per_file(mem.text),
        per_file(mem.postings),
        per_file(mem.other),
        pct(0.5),
        pct(0.99),
        bytes
    );
    // Half the users leave: their files are tombstoned, then the index is compacted (under the server's
    // lock, so this is a pause every client sees, once per that much churn).
    for (u, id) in ids {
        if let (0, Some(id)) = (u % 2, id) {
            ix.remove(id);
        }
    }
    let (t, cpu) = (Instant::now(), thread_cpu());
    let needed = ix.needs_compaction();
    ix.compact_now();
    ix.end_translation();
    println!(
        "  compaction:     {:?} ({:?} CPU) for a whole compaction in one go after half the users left ({} files stay; needed: {needed}); the server does it in bounded steps, see churn",
        t.elapsed(),
        thread_cpu().saturating_sub(cpu),
        ix.len()
    );
}

/// The sans-I/O server itself, driven the way the node drives it: every call timed here is one hold of
/// the node's lock. The same users log in and share the same files, half of them leave (which starts a
/// compaction), then timer ticks run the compaction's steps while a searcher keeps searching between
/// ticks. Prints the longest single hold of each kind during that churn.
fn server_churn(users: usize, files: usize, searches: usize) {
    use napster_server::protocol::accounts::Accounts;
    use napster_server::protocol::{Config, ConnId, Server, COMPACT_TICK};
    use std::net::Ipv4Addr;
    use std::time::Duration;
    let start = Instant::now();
    let mut now = start;
    let mut s = Server::new(
        Config {
            max_connections: users + 16,
            max_shared: files.max(1),
            flood_commands: u32::MAX,
            ..Config::default()
        },
        Accounts::default(),
        rand::rngs::StdRng::seed_from_u64(3),
        now,
        0,
    );
    let drain = |s: &mut Server| while s.poll_transmit().is_some() {};
    let conn = |u: usize| ConnId(u as u64 + 1);
    for u in 0..=users {
        s.on_connect(now, conn(u), Ipv4Addr::LOCALHOST);
        let nick = if u == users {
            "searcher".to_string()
        } else {
            format!("user{u}")
        };
        s.handle_frame(
            now,
            conn(u),
            Frame::text(2, &format!("{nick} pw 6699 \"bench\" 7")),
        );
        drain(&mut s);
    }
    for chunk in 0..64usize {
        let mut rng = rand::rngs::StdRng::seed_from_u64(chunk as u64);
        for u in (chunk..users).step_by(64) {
            for f in 0..files {
                let path = share_path(&mut rng, u, f);
                let share = format!(
                    "\"{path}\" 0123456789abcdef0123456789abcdef {} 128 44100 240",
                    3_000_000 + f
                );
                s.handle_frame(now, conn(u), Frame::text(100, &share));
            }
            drain(&mut s);
        }
    }
    let shared = s.files();
    // (wall, CPU) of one call.
    let timed = |f: &mut dyn FnMut()| {
        let (t, c) = (Instant::now(), thread_cpu());
        f();
        (t.elapsed(), thread_cpu().saturating_sub(c))
    };
    let max2 = |a: (Duration, Duration), b: (Duration, Duration)| (a.0.max(b.0), a.1.max(b.1));
    let mut leave_max = (Duration::ZERO, Duration::ZERO);
    let mut leave_at = 0;
    for u in (0..users).step_by(2) {
        let d = timed(&mut || {
            s.on_disconnect(now, conn(u));
            drain(&mut s);
        });
        if d.1 > leave_max.1 {
            leave_at = u / 2 + 1;
        }
        leave_max = max2(leave_max, d);
    }
    let started = s.index_busy();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut ticks, mut tick_max, mut tick_sum) =
        (0u32, (Duration::ZERO, Duration::ZERO), Duration::ZERO);
    let mut search_lat = Vec::new();
    let mut longest_at = 0;
    let t = Instant::now();
    while s.index_busy() && ticks < 1_000_000 {
        now += COMPACT_TICK;
        let d = timed(&mut || {
            s.handle_timeout(now);
            drain(&mut s);
        });
        ticks += 1;
        if d.1 > tick_max.1 {
            longest_at = ticks;
        }
        tick_max = max2(tick_max, d);
        tick_sum += d.1;
        if search_lat.len() < searches {
            let q = query(&mut rng);
            search_lat.push(
                timed(&mut || {
                    s.handle_frame(now, conn(users), Frame::text(200, &q));
                    drain(&mut s);
                    s.search_delivered(conn(users));
                })
                .1,
            );
        }
    }
    let wall = t.elapsed();
    search_lat.sort();
    let pct = |p: f64| {
        search_lat
            .get(((search_lat.len() as f64 * p) as usize).min(search_lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "  churn (sans-I/O server, each figure one lock hold): {shared} files shared, half the users leave (longest leave {:?} wall, {:?} CPU, leave {leave_at} of {}); compaction started: {started}, done in {ticks} timer steps of {} work units ({:?} CPU in all, {wall:?} wall incl. searches): longest step {:?} wall, {:?} CPU (step {longest_at}); {} searches between steps (CPU): p50 {:?} p99 {:?} max {:?}; {} files stay",
        leave_max.0,
        leave_max.1,
        users.div_ceil(2),
        napster_server::protocol::COMPACT_TICK_BUDGET,
        tick_sum,
        tick_max.0,
        tick_max.1,
        search_lat.len(),
        pct(0.5),
        pct(0.99),
        search_lat.last().copied().unwrap_or_default(),
        s.files()
    );
}

/// CPU time of the calling thread: with other builds on the machine, a wall-clock interval may include
/// being preempted, which is not work done under the lock.
#[allow(unsafe_code)]
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes one timespec through the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process has used so far, from `/proc/<pid>/stat`: searches per server
/// CPU-second do not depend on what else the machine runs, unlike searches per wall second.
#[allow(unsafe_code)]
fn cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / hz)
        })
        .unwrap_or(0.0)
}

struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn send(&mut self, t: u16, text: &str) {
        let b = Frame::text(t, text).to_bytes().unwrap();
        self.s.write_all(&b).await.unwrap();
    }
    async fn recv(&mut self) -> (u16, usize) {
        loop {
            if let Some((f, n)) = Frame::decode_with_limit(&self.buf, MAX_PAYLOAD).unwrap() {
                let _ = self.buf.split_to(n);
                return (f.ty, f.payload.len());
            }
            if self.s.read_buf(&mut self.buf).await.unwrap() == 0 {
                panic!("server closed");
            }
        }
    }
    async fn until(&mut self, t: u16) -> usize {
        let mut n = 0;
        loop {
            let (ty, _) = self.recv().await;
            n += 1;
            if ty == t {
                return n;
            }
        }
    }
}

/// `searchers` clients (nicks `{tag}{n}`) each run `per` searches, or stop earlier once `secs` have
/// passed; returns every search's latency (200 sent → 202 read) and the number of results.
async fn run_searchers(
    addr: std::net::SocketAddr,
    tag: &'static str,
    searchers: usize,
    per: usize,
    secs: f64,
) -> (Vec<std::time::Duration>, usize) {
    let mut set = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for s in 0..searchers {
        set.spawn(async move {
            let st = TcpStream::connect(addr).await.unwrap();
            st.set_nodelay(true).unwrap();
            let mut c = Conn {
                s: st,
                buf: BytesMut::new(),
            };
            c.send(2, &format!("{tag}{s} pw 6699 \"bench\" 7")).await;
            c.until(214).await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + s as u64);
            let mut lat = Vec::with_capacity(per.min(100_000));
            let mut results = 0usize;
            for _ in 0..per {
                if t0.elapsed().as_secs_f64() >= secs {
                    break;
                }
                let q = query(&mut rng);
                let t = Instant::now();
                c.send(200, &q).await;
                results += c.until(202).await - 1;
                lat.push(t.elapsed());
            }
            (lat, results)
        });
    }
    let mut lat = Vec::new();
    let mut results = 0;
    while let Some(r) = set.join_next().await {
        let (l, n) = r.unwrap();
        lat.extend(l);
        results += n;
    }
    (lat, results)
}

fn main() {
    let users = env("NAPSTER_BENCH_USERS", 10_000);
    let files = env("NAPSTER_BENCH_FILES", 100);
    let searches = env("NAPSTER_BENCH_SEARCHES", 5_000);
    let searchers = env("NAPSTER_BENCH_SEARCHERS", 8).max(1);
    let dir = tempfile::tempdir().unwrap();
    let server_bin = std::env::var_os("NAPSTER_BENCH_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_napster-server").into());
    let mut child = Command::new(&server_bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--max-connections", &(users + searchers + 16).to_string()])
        .args(["--max-shared", &files.max(1).to_string()])
        // The simulated users log in from one IP as fast as they can: no flood pause for the searchers.
        .args(["--flood-commands", "1000000"])
        .args([
            "--threads",
            &env("NAPSTER_BENCH_SERVER_THREADS", 0).to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start napster-server");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = common::telemetry::Listening::parse(&line)
        .expect("readiness line")
        .addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rss_start = rss_kb(pid);

    let result = rt.block_on(async move {
        // Phase 1: logins.
        let t0 = Instant::now();
        let mut conns = Vec::with_capacity(users);
        let mut set = tokio::task::JoinSet::new();
        let batch = 200;
        for b in (0..users).step_by(batch) {
            for u in b..(b + batch).min(users) {
                set.spawn(async move {
                    let s = TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut c = Conn {
                        s,
                        buf: BytesMut::new(),
                    };
                    c.send(2, &format!("user{u} pw {} \"bench\" 7", 6699)).await;
                    c.until(214).await;
                    (u, c)
                });
            }
            while let Some(r) = set.join_next().await {
                conns.push(r.unwrap());
            }
        }
        let login_secs = t0.elapsed().as_secs_f64();
        let rss_logged_in = rss_kb(pid);

        // Phase 2: every user shares its files, then syncs with a 214 round trip.
        let t1 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let mut kept = Vec::with_capacity(users);
        let chunks: Vec<Vec<(usize, Conn)>> = {
            let mut v: Vec<Vec<(usize, Conn)>> = (0..64).map(|_| Vec::new()).collect();
            for (i, c) in conns.into_iter().enumerate() {
                v[i % 64].push(c);
            }
            v
        };
        for chunk in chunks {
            set.spawn(async move {
                let mut rng =
                    rand::rngs::StdRng::seed_from_u64(chunk.first().map_or(0, |c| c.0 as u64));
                let mut out = Vec::new();
                for (u, mut c) in chunk {
                    let mut wire = BytesMut::new();
                    for f in 0..files {
                        let path = share_path(&mut rng, u, f);
                        Frame::text(
                            100,
                            &format!(
                                "\"{path}\" 0123456789abcdef0123456789abcdef {} 128 44100 240",
                                3_000_000 + f
                            ),
                        )
                        .encode(&mut wire)
                        .unwrap();
                    }
                    c.s.write_all(&wire).await.unwrap();
                    c.send(214, "").await;
                    c.until(214).await;
                    out.push((u, c));
                }
                out
            });
        }
        while let Some(r) = set.join_next().await {
            kept.extend(r.unwrap());
        }
        let share_secs = t1.elapsed().as_secs_f64();
        let rss_shared = rss_kb(pid);

        // Phase 3: searches for two random vocabulary words, from separate searcher connections.
        let per = searches / searchers;
        let t2 = Instant::now();
        let cpu0 = cpu_secs(pid);
        let (lat, results) = run_searchers(addr, "searcher", searchers, per, f64::MAX).await;
        let search_secs = t2.elapsed().as_secs_f64();
        let search_cpu = cpu_secs(pid) - cpu0;

        // Phase 4: churn. Every other user disconnects at once (half the index dies, which starts a
        // compaction) while the searchers go on for a bounded time: the latency of searches during it.
        let churn_secs = env("NAPSTER_BENCH_CHURN_SECS", 6) as f64;
        let churn = if churn_secs > 0.0 {
            kept.retain(|(u, _)| u % 2 == 1);
            let (mut l, _) = run_searchers(addr, "churner", searchers, 1_000_000, churn_secs).await;
            l.sort();
            Some(l)
        } else {
            None
        };
        drop(kept);
        (
            login_secs,
            share_secs,
            (search_secs, search_cpu),
            lat,
            results,
            rss_logged_in,
            rss_shared,
            churn,
        )
    });
    let (
        login_secs,
        share_secs,
        (search_secs, search_cpu),
        mut lat,
        results,
        rss_logged_in,
        rss_shared,
        churn,
    ) = result;
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let total_files = users * files;
    let per_1000 =
        (rss_shared.saturating_sub(rss_logged_in)) as f64 / (total_files as f64 / 1000.0);
    println!("napster_load: {users} users x {files} files = {total_files} files, {searches} searches from {searchers} clients");
    println!(
        "  logins:         {:.2} s  ({:.0} logins/s)",
        login_secs,
        users as f64 / login_secs
    );
    println!(
        "  shares:         {:.2} s  ({:.0} files/s)",
        share_secs,
        total_files as f64 / share_secs
    );
    println!(
        "  searches:       {:.2} s  ({:.0} searches/s, {:.1} results/search)",
        search_secs,
        lat.len() as f64 / search_secs,
        results as f64 / lat.len().max(1) as f64
    );
    println!(
        "  server CPU:     {:.2} s during the searches ({:.0} searches per server CPU-second, {:.0} us CPU per search)",
        search_cpu,
        lat.len() as f64 / search_cpu.max(1e-9),
        search_cpu * 1e6 / lat.len().max(1) as f64
    );
    println!(
        "  latency:        p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    println!(
        "  server RSS:     start {} KB, logged in {} KB, shared {} KB",
        rss_start, rss_logged_in, rss_shared
    );
    if let Some(c) = churn.filter(|c| !c.is_empty()) {
        let p = |x: f64| c[((c.len() as f64 * x) as usize).min(c.len() - 1)];
        println!(
            "  churn:          half the users leave at once (index compaction starts): {} searches in the next {} s from {searchers} clients: p50 {:?}  p99 {:?}  max {:?}",
            c.len(),
            env("NAPSTER_BENCH_CHURN_SECS", 6),
            p(0.5),
            p(0.99),
            c[c.len() - 1]
        );
    }
    println!("  memory:         {:.1} KB per 1,000 shared files (OpenNap-NG documented: 300-350 KB; ratio {:.2}x of 325)", per_1000, per_1000 / 325.0);
    if env("NAPSTER_BENCH_IN_PROCESS", 1) != 0 {
        in_process(users, files, searches);
        server_churn(users, files, searches);
    }
}
