//! Loopback throughput of `common::http` serving one large file, against nginx serving the same file in the
//! same run, with the same client.
//!
//! ```text
//! cargo bench -p common --bench http_server
//! P2PLAB_HTTP_BENCH_BYTES=268435456 P2PLAB_HTTP_BENCH_RUNS=3 cargo bench -p common --bench http_server
//! ```
//!
//! - File size: `P2PLAB_HTTP_BENCH_BYTES` (default 1 GiB); it is written once to a temp dir and read once
//!   beforehand, so both servers serve it from the page cache.
//! - nginx (Debian package `nginx`) runs as a single process (`master_process off`, one worker) with
//!   `sendfile on`, its configuration and logs in the temp dir, on a free port; it is stopped at the end.
//! - Our server runs in a child process (this program re-run with `P2PLAB_HTTP_BENCH_SERVE=<file>`) on a
//!   tokio runtime with 2 worker threads (the machine has 2 cores), so both servers are separate processes
//!   and each one's CPU time can be read from `/proc/<pid>/stat`.
//! - Besides MB/s (best and median), it prints each server's CPU seconds per GiB served: on a loaded shared
//!   machine throughput swings with the neighbours, CPU cost per byte much less.
//! - Clients: a blocking Rust client that reads into a 1 MiB buffer and discards (the figure that counts),
//!   and `curl -o /dev/null` when curl is installed. Best of `P2PLAB_HTTP_BENCH_RUNS` (default 3) runs each,
//!   servers interleaved so background load hits both alike. Prints MB/s (10^6 bytes/s) and the ratio.
//! - `P2PLAB_HTTP_BENCH_CHUNK` overrides our server's read chunk size (default: the library default).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{FileReply, HttpConfig, HttpServer, RequestInfo, Route};
use common::stats::Stats;
use tokio_util::sync::CancellationToken;

const DEFAULT_BYTES: u64 = 1 << 30;
const FILE_NAME: &str = "big.bin";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_file(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut left = size;
    let mut i = 0u8;
    while left > 0 {
        // Vary each block a little so nothing downstream can deduplicate it.
        block[0] = i;
        i = i.wrapping_add(1);
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// GETs `path` from `addr` and discards the body; returns (body bytes, seconds).
fn fetch(addr: SocketAddr, path: &str) -> (u64, f64) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut len = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<u64>().ok();
            }
        } else {
            assert!(l.contains(" 200 "), "unexpected status: {l}");
        }
    }
    let len = len.expect("content-length");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < len {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed after {got} of {len} bytes");
        got += n as u64;
    }
    (got, start.elapsed().as_secs_f64())
}

fn curl(url: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{speed_download}", url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path, share: &Path) -> Result<Nginx, String> {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {share}; }}\n}}\n",
        share = share.display()
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| Path::new(b).exists() || *b == "nginx")
        .unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start nginx ({e}); install it: apt-get install -y nginx"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut n = Nginx { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(st)) = n.child.try_wait() {
            return Err(format!("nginx exited: {st}"));
        }
        if Instant::now() > deadline {
            return Err("nginx did not start listening within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Keep the handle alive across the early returns above.
    n.addr = addr;
    Ok(n)
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Child mode: serve `file` with our server, print the address on stdout, run until stdin closes.
fn serve_child(file: PathBuf, chunk_size: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let router = move |_: &RequestInfo| Route::File(FileReply::new(file.clone()));
        let server = HttpServer::new(
            router,
            HttpConfig {
                upload_slots: 0,
                chunk_size,
                ..HttpConfig::default()
            },
            Stats::new("bench", "server", "http"),
        );
        let token = CancellationToken::new();
        let stop = token.clone();
        // The parent closing our stdin (or dying) stops us.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stop.cancel();
        });
        server.serve(listener, token).await.unwrap();
    });
}

struct Ours {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Ours {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ours(file: &Path, chunk_size: usize) -> Ours {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SERVE_ENV, file)
        .env("P2PLAB_HTTP_BENCH_CHUNK", chunk_size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().parse().expect("server address");
    Ours { child, addr }
}

/// CPU seconds (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux architecture we run on.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const SERVE_ENV: &str = "P2PLAB_HTTP_BENCH_SERVE";

fn main() {
    let chunk_size = env_u64(
        "P2PLAB_HTTP_BENCH_CHUNK",
        HttpConfig::default().chunk_size as u64,
    ) as usize;
    if let Some(file) = std::env::var_os(SERVE_ENV) {
        return serve_child(PathBuf::from(file), chunk_size);
    }
    // `cargo bench` passes `--bench`; a filter argument that is not ours means "not this benchmark".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"http_server".contains(a.as_str()))
    {
        return;
    }
    let size = env_u64("P2PLAB_HTTP_BENCH_BYTES", DEFAULT_BYTES);
    let runs = env_u64("P2PLAB_HTTP_BENCH_RUNS", 3).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let ngx_dir = tmp.path().join("nginx");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let file: PathBuf = share.join(FILE_NAME);
    eprintln!("writing a {size}-byte file...");
    write_file(&file, size);

    let ours = start_ours(&file, chunk_size);
    let nginx = match start_nginx(&ngx_dir, &share) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("http_server bench: {e}");
            std::process::exit(1);
        }
    };
    let path = format!("/{FILE_NAME}");
    // Warm the page cache and both servers.
    fetch(ours.addr, &path);
    fetch(nginx.addr, &path);

    let gib = size as f64 / f64::from(1u32 << 30);
    let (mut o_rate, mut n_rate, mut o_cpu, mut n_cpu) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let c0 = cpu_secs(ours.child.id());
        let (b, s) = fetch(ours.addr, &path);
        let c1 = cpu_secs(ours.child.id());
        assert_eq!(b, size);
        o_rate.push(mbps(b, s));
        o_cpu.push((c1 - c0) / gib);
        let c0 = cpu_secs(nginx.child.id());
        let (b, s) = fetch(nginx.addr, &path);
        let c1 = cpu_secs(nginx.child.id());
        assert_eq!(b, size);
        n_rate.push(mbps(b, s));
        n_cpu.push((c1 - c0) / gib);
        eprintln!(
            "run {}: p2p-lab {:.0} MB/s ({:.2} CPU s/GiB), nginx {:.0} MB/s ({:.2} CPU s/GiB)",
            i + 1,
            o_rate[i as usize],
            o_cpu[i as usize],
            n_rate[i as usize],
            n_cpu[i as usize]
        );
    }
    let best = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);
    let (bo, bn) = (best(&o_rate), best(&n_rate));
    let (mo, mn) = (median(&mut o_rate), median(&mut n_rate));
    let (co, cn) = (median(&mut o_cpu), median(&mut n_cpu));
    println!(
        "http_server: {size} bytes over loopback, rust client, {runs} runs, chunk {chunk_size}:\n  \
         best   p2p-lab {bo:.0} MB/s, nginx {bn:.0} MB/s, ratio {:.2} (goal >= 0.80)\n  \
         median p2p-lab {mo:.0} MB/s, nginx {mn:.0} MB/s, ratio {:.2}\n  \
         server CPU (median) p2p-lab {co:.2} s/GiB, nginx {cn:.2} s/GiB",
        bo / bn,
        mo / mn
    );

    let mut curl_best = (0f64, 0f64);
    let mut have_curl = true;
    for _ in 0..runs {
        match (
            curl(&format!("http://{}{path}", ours.addr)),
            curl(&format!("http://{}{path}", nginx.addr)),
        ) {
            (Some(o), Some(n)) => {
                curl_best.0 = curl_best.0.max(o / 1e6);
                curl_best.1 = curl_best.1.max(n / 1e6);
            }
            _ => {
                have_curl = false;
                break;
            }
        }
    }
    if have_curl {
        println!(
            "http_server: curl -o /dev/null, best of {runs}: p2p-lab {:.0} MB/s, nginx {:.0} MB/s, ratio {:.2}",
            curl_best.0,
            curl_best.1,
            curl_best.0 / curl_best.1
        );
    } else {
        println!("http_server: curl not available, curl figures skipped");
    }
    drop(nginx);
    drop(ours);
}
