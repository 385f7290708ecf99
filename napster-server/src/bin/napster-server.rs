//! `napster-server`: an OpenNap-compatible Napster directory server.
//!
//! ```text
//! napster-server [--listen 127.0.0.1:8888] [--data-dir DIR] [--stats-file F] [--metaserver 127.0.0.1:8875]
//!                [--server-name NAME] [--max-connections N] [--registered-only] [--ban NICK|IP]...
//!                [--max-password-jobs N] [--password-queue N] [--max-clones N]
//!                [--max-registrations-per-ip N] [--registration-window-secs S]
//! ```
//! Prints `{"event":"listening","proto":"tcp","addr":...}` once accepting (and a second line with
//! `"name":"metaserver"` when `--metaserver` is given). Registered accounts persist in
//! `<data-dir>/accounts.json` (Argon2id hashes). Not implemented: server linking (10xxx), admin commands,
//! resume search 215–217, ignore lists 320–326, direct browse 640–642.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rand::SeedableRng;

use common::daemon::{install_signals, write_stats, DaemonArgs};
use common::stats::Stats;
use common::telemetry::{announce_listening, init_tracing};
use napster_server::node::{self, Hub};
use napster_server::protocol::accounts::AccountLog;
use napster_server::protocol::{Config, Server};

/// OpenNap's default port.
const DEFAULT_PORT: u16 = 8888;

/// OpenNap-compatible Napster directory server.
#[derive(Parser, Debug)]
#[command(
    name = "napster-server",
    version,
    about,
    long_about = None,
    after_help = "Not implemented yet: server linking (10xxx), admin/moderator commands, resume search \
                  215-217, ignore lists 320-326, direct browse 640-642, queue-full 619/620, runtime bans \
                  (bans come only from --ban)."
)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Also run the metaserver (redirector) on this address; it answers `host:port` of the server.
    #[arg(long, env = "P2PLAB_METASERVER", value_name = "ADDR")]
    metaserver: Option<std::net::SocketAddr>,

    /// Server name (login ack `anon@NAME`, MOTD, reserved as a nick).
    #[arg(long, default_value = "p2p-lab")]
    server_name: String,

    /// Most simultaneous connections; more get "This server is full".
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,

    /// Most files per user.
    #[arg(long, default_value_t = 5000)]
    max_shared: usize,

    /// Refuse guest logins: only registered nicks (type 6 first) may log in.
    #[arg(long)]
    registered_only: bool,

    /// Start with a new empty account store even though `accounts.created` in the data directory shows
    /// one existed (without it the server refuses to start when `accounts.json` is missing; a first
    /// start, with no marker, creates the store by itself).
    #[arg(long)]
    new_account_store: bool,

    /// Ban a nick or a dotted-quad IP (repeatable).
    #[arg(long, value_name = "NICK|IP")]
    ban: Vec<String>,

    /// Commands per flood window before reading from a client is paused (shares are exempt).
    #[arg(long, default_value_t = 100)]
    flood_commands: u32,

    /// Flood window in seconds.
    #[arg(long, default_value_t = 10)]
    flood_secs: u64,

    /// Seconds a connection has to log in.
    #[arg(long, default_value_t = 60)]
    login_timeout_secs: u64,

    /// A re-login of an active nick within this many seconds gets "Connecting too fast"; after it the old
    /// session is killed as a ghost.
    #[arg(long, default_value_t = 5)]
    ghost_kill_secs: u64,

    /// Password checks/hashes (Argon2id, tens of ms each) run at once; further logins wait in a queue.
    #[arg(long, default_value_t = 2)]
    max_password_jobs: usize,

    /// Logins from one IP that may wait for a password slot (IPs take turns); one more from that IP
    /// gets "Server busy" at once.
    #[arg(long, default_value_t = 64)]
    password_queue: usize,

    /// Logged-in users allowed per IP at a time (OpenNap max_clones); 0 = no limit (the default, since
    /// labs run every client from 127.0.0.1).
    #[arg(long, default_value_t = 0)]
    max_clones: usize,

    /// Registrations (type 6) allowed per IP within --registration-window-secs; 0 = no limit.
    #[arg(long, default_value_t = 0)]
    max_registrations_per_ip: usize,

    /// The window of --max-registrations-per-ip, in seconds.
    #[arg(long, default_value_t = 3600)]
    registration_window_secs: u64,

    /// Runtime worker threads: 1 = a single-threaded runtime (every hand-off between a connection's
    /// reader and writer stays on one thread); 0 = one per CPU. Password hashing always runs on the
    /// blocking pool.
    #[arg(long, env = "P2PLAB_THREADS", default_value_t = 0)]
    threads: usize,

    /// Extra MOTD line (repeatable).
    #[arg(long)]
    motd: Vec<String>,
}

fn main() -> std::process::ExitCode {
    common::daemon::exit_status("napster-server", start(Cli::parse()))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let rt = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(cli.daemon.log_json);
    let data_dir = cli
        .daemon
        .data_dir_or("napster-server")
        .context("cannot create the data directory")?;
    // One line: the store error already names the file and what to do.
    let (account_log, accounts) = AccountLog::open(&data_dir, cli.new_account_store)
        .map_err(|e| anyhow::anyhow!("cannot open the account store: {e}"))?;
    let mut cfg = Config {
        server_name: cli.server_name,
        max_connections: cli.max_connections,
        max_shared: cli.max_shared,
        registered_only: cli.registered_only,
        bans: cli.ban,
        flood_commands: cli.flood_commands,
        flood_time: Duration::from_secs(cli.flood_secs),
        login_timeout: Duration::from_secs(cli.login_timeout_secs),
        ghost_kill: Duration::from_secs(cli.ghost_kill_secs),
        max_password_jobs: cli.max_password_jobs.max(1),
        password_queue: cli.password_queue,
        max_clones: cli.max_clones,
        max_registrations_per_ip: cli.max_registrations_per_ip,
        registration_window: Duration::from_secs(cli.registration_window_secs),
        ..Config::default()
    };
    cfg.motd.extend(cli.motd);
    let max_connections = cfg.max_connections;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let server = Server::new(
        cfg,
        accounts,
        rand::rngs::StdRng::from_entropy(),
        std::time::Instant::now(),
        unix,
    );

    let listen = cli.daemon.listen_or(DEFAULT_PORT);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stats = Stats::new("napster", "server", &addr.to_string());
    let shutdown = install_signals(stats.clone(), cli.daemon.stats_file.clone());
    node::log_started(addr);
    announce_listening("tcp", addr, None);
    if let Some(meta) = cli.metaserver {
        let ml = tokio::net::TcpListener::bind(meta)
            .await
            .with_context(|| format!("cannot listen on {meta} (metaserver)"))?;
        announce_listening("tcp", ml.local_addr()?, Some("metaserver"));
        tokio::spawn(node::run_metaserver(
            ml,
            addr,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    let hub = Hub::with_account_log(server, account_log, stats.clone());
    node::run(listener, hub, max_connections, shutdown).await?;
    if let Some(path) = &cli.daemon.stats_file {
        write_stats(&stats, path);
    }
    Ok(())
}
