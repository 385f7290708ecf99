//! The sans-I/O OpenNap server: every rule of the directory lives here, nothing here touches a socket or a
//! clock (notes §1–§2 and §7; OpenNap `napster.txt`).
//!
//! # Driving it
//! - Input: [`Server::on_connect`], [`Server::handle_frame`], [`Server::on_disconnect`],
//!   [`Server::handle_timeout`] and [`Server::search_delivered`], each with the current time.
//! - Output: after every input call drain [`Server::poll_transmit`] (frames to send, a search's reply as
//!   one pre-encoded batch, connections to close after their queued frames are written); ask [`Server::poll_timeout`] when to call `handle_timeout`
//!   next, and [`Server::read_pause`] whether flood control wants reading from a connection paused.
//! - Slow work leaves as jobs the node runs off its lock: [`Server::poll_password_job`] (Argon2, reported
//!   with [`Server::password_done`]) and [`Server::poll_persist`] (account records to make durable, reported
//!   with [`Server::persist_done`]). A registration's login ack 3 is sent only after its record is durable,
//!   so a crash never acknowledges an account it then forgets.
//!
//! A connection is `AwaitLogin` until a 2/6 succeeds (only types 2, 4, 6, 7, 11, 300, 920 are accepted;
//! anything else gets `0 "invalid command"` and a close), then logged in (unknown types get
//! `404 "Unknown command code N"` and the connection stays).

pub mod accounts;
pub mod fair;
pub mod index;
pub mod postings;
pub mod search;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use crate::codec::fields::FieldError;
use crate::codec::msg::{ty, ClientMsg, Login, ShareInfo};
use crate::codec::{ip, Frame, FrameBatch, HEADER_LEN};
use accounts::{hash_password_with_salt, verify_password, Account, Accounts, Level, Record};
use hashbrown::HashTable;
use index::{FileId, FileView, Index, NewFile};
use rand::RngCore;
use search::Kind;

/// Identifies one client connection (assigned by the node, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something the node must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Queue this frame on the connection.
    Frame(ConnId, Frame),
    /// Queue these frames, already encoded, as one item to be written with one call (a search's 201
    /// results and its 202).
    Batch(ConnId, FrameBatch),
    /// Close the connection once the frames queued before this are written.
    Close(ConnId),
}

/// Slow password work (Argon2id, tens of milliseconds) that the node runs off the server's lock, then
/// reports with [`Server::password_done`]. Tests may simply call [`PasswordJob::run`] inline.
#[derive(Debug, Clone)]
pub enum PasswordJob {
    /// Check a login's password against the stored hash.
    Verify {
        /// The connection logging in.
        conn: ConnId,
        /// Password sent.
        password: String,
        /// Stored PHC hash.
        hash: String,
    },
    /// Hash a registration's password.
    Hash {
        /// The connection registering.
        conn: ConnId,
        /// Password sent.
        password: String,
        /// Salt drawn from the server's RNG.
        salt: [u8; 16],
    },
}

/// Result of a [`PasswordJob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOutcome {
    /// Whether the password matched.
    Verified(bool),
    /// The new hash, or why hashing failed.
    Hashed(Result<String, String>),
}

impl PasswordJob {
    /// The connection the job belongs to.
    pub fn conn(&self) -> ConnId {
        match self {
            PasswordJob::Verify { conn, .. } | PasswordJob::Hash { conn, .. } => *conn,
        }
    }

    /// Does the slow work (call it off the server's lock).
    pub fn run(&self) -> PasswordOutcome {
        match self {
            PasswordJob::Verify { password, hash, .. } => {
                PasswordOutcome::Verified(verify_password(password, hash))
            }
            PasswordJob::Hash { password, salt, .. } => PasswordOutcome::Hashed(
                hash_password_with_salt(password, salt).map_err(|e| e.to_string()),
            ),
        }
    }
}

#[derive(Debug)]
struct PendingLogin {
    login: Login,
    register: Option<String>,
    port: u16,
    speed: u8,
    level: Level,
    email: String,
}

/// Counts one 202 written to a connection off its pending searches (never below zero).
pub fn search_delivered(pending: &AtomicU32) {
    let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Account records for the node to make durable (append to the account log and fsync), off the server's
/// lock; report the outcome with [`Server::persist_done`], handing the job back. At most one is out at a
/// time: records queued meanwhile go out together in the next one, so registrations that come faster than
/// fsyncs share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistJob {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Registrations in `records` whose login waits for this job: (connection, lower-case nick).
    waiting: Vec<(ConnId, String)>,
}

/// Logout times ([`Record::Seen`]) that may wait for the disk at once; past this (a disk stalled for a long
/// time while users come and go) new ones are kept in memory only, and the log says so.
pub const MAX_QUEUED_SEEN: usize = 65_536;

/// How often the timer does a compaction step while the index compacts.
pub const COMPACT_TICK: Duration = Duration::from_millis(5);

/// Work units (records copied, posting entries re-encoded, ids translated) per timer step: a fraction of
/// a millisecond of work, so no client waits long behind one.
pub const COMPACT_TICK_BUDGET: usize = 4096;

/// Work units done after each share while the index compacts, so the copy of shares made meanwhile
/// always catches up.
pub const COMPACT_SHARE_BUDGET: usize = 64;

/// Types a connection may send before logging in (notes §1).
pub const PRE_LOGIN_TYPES: [u16; 7] = [2, 4, 6, 7, 11, 300, 920];

/// Types exempt from flood control, so a client can share a large library at login (notes §7).
pub const FLOOD_EXEMPT_TYPES: [u16; 8] = [100, 102, 110, 870, 10300, 207, 208, 303];

/// Longest nick (notes §6).
pub const MAX_NICK_LEN: usize = 19;

/// Longest channel name and topic we keep.
pub const MAX_CHANNEL_LEN: usize = 32;

/// Longest client-version string kept (OpenNap cuts it to 32).
pub const MAX_CLIENT_LEN: usize = 32;

/// Nicks nobody may take (besides the server's own name).
pub const RESERVED_NICKS: [&str; 4] = ["operserv", "chanserv", "nickserv", "operator"];

/// Server policy. Defaults are OpenNap's (notes §6).
#[derive(Debug, Clone)]
pub struct Config {
    /// Name used in `anon@<name>` login acks, the MOTD and server pings.
    pub server_name: String,
    /// Most simultaneous connections (`max_connections`).
    pub max_connections: usize,
    /// Most files one user may share (`max_shared`).
    pub max_shared: usize,
    /// Cap on MAX_RESULTS (`max_results`).
    pub max_results: usize,
    /// Searches whose results the client has not read yet (`max_searches`).
    pub max_searches: u32,
    /// Most 212 entries per browse (`max_browse_result`).
    pub max_browse: usize,
    /// Refuse guest logins of unregistered nicks.
    pub registered_only: bool,
    /// Time a connection has to log in.
    pub login_timeout: Duration,
    /// A second login of an active nick within this time of the first gets "Connecting too fast"; after it,
    /// the old session is killed as a ghost (748).
    pub ghost_kill: Duration,
    /// Commands allowed per flood window before reading is paused (`flood_commands`).
    pub flood_commands: u32,
    /// The flood window (`flood_time`).
    pub flood_time: Duration,
    /// Channels one user may be on.
    pub max_user_channels: usize,
    /// Hotlist entries per user.
    pub max_hotlist: usize,
    /// Extra MOTD lines after the built-in ones.
    pub motd: Vec<String>,
    /// Banned nicks or dotted-quad IPs.
    pub bans: Vec<String>,
    /// Password checks and hashes (Argon2id) handed to the node at once; more wait in a queue.
    pub max_password_jobs: usize,
    /// Logins from one IP waiting for a password slot (IPs take turns, so a flooding IP only waits behind
    /// itself); one more from that IP is refused at once ("server busy").
    pub password_queue: usize,
    /// Logged-in users one IP may have at a time (OpenNap `max_clones`); 0 = no limit.
    pub max_clones: usize,
    /// Registrations (type 6) one IP may make per [`Config::registration_window`]; 0 = no limit.
    pub max_registrations_per_ip: usize,
    /// The window of [`Config::max_registrations_per_ip`].
    pub registration_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "p2p-lab".into(),
            max_connections: 1000,
            max_shared: 5000,
            max_results: 100,
            max_searches: 3,
            max_browse: 500,
            registered_only: false,
            login_timeout: Duration::from_secs(60),
            ghost_kill: Duration::from_secs(5),
            flood_commands: 100,
            flood_time: Duration::from_secs(10),
            max_user_channels: 5,
            max_hotlist: 32,
            motd: vec!["Welcome to the p2p-lab OpenNap-compatible server.".into()],
            bans: Vec::new(),
            max_password_jobs: 2,
            password_queue: 64,
            max_clones: 0,
            max_registrations_per_ip: 0,
            registration_window: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug)]
struct User {
    nick: String,
    level: Level,
    port: u16,
    speed: u8,
    client: String,
    login_at: Instant,
    /// The user's files, hashed by path with [`Server`]'s hasher (4 bytes per file).
    files: HashTable<FileId>,
    downloads: u32,
    uploads: u32,
    channels: Vec<String>,
    hotlist: Vec<String>,
}

#[derive(Debug)]
struct Conn {
    ip: Ipv4Addr,
    user: Option<User>,
    pending_login: Option<PendingLogin>,
    /// Searches answered but whose 202 is not yet on the socket; shared with the node's writer, which
    /// counts deliveries down without taking the server's lock.
    pending_searches: Arc<AtomicU32>,
    /// Touched only by the connection's own frames, but behind its own (uncontended) mutex so that a
    /// search can count itself while the server is shared read-only ([`Server::search_shared`]).
    flood: std::sync::Mutex<Flood>,
}

#[derive(Debug)]
struct Flood {
    start: Instant,
    count: u32,
    throttle_until: Option<Instant>,
}

impl Conn {
    fn flood(&self) -> std::sync::MutexGuard<'_, Flood> {
        self.flood.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one command against flood control (notes §6: reading is paused, nothing is dropped).
    fn count_command(&self, now: Instant, t: u16, cfg: &Config) {
        if FLOOD_EXEMPT_TYPES.contains(&t) {
            return;
        }
        let mut f = self.flood();
        if now.saturating_duration_since(f.start) >= cfg.flood_time {
            f.start = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count > cfg.flood_commands {
            f.throttle_until = Some(f.start + cfg.flood_time);
        }
    }
}

#[derive(Debug)]
struct Channel {
    name: String,
    topic: String,
    members: Vec<ConnId>,
}

/// The whole directory server state.
pub struct Server {
    cfg: Config,
    conns: HashMap<ConnId, Conn>,
    nicks: HashMap<String, ConnId>,
    accounts: Accounts,
    /// Nicks (lower case) whose registration is hashed and waiting to be durable: taken, but not yet
    /// accounts. Value: the registering connection.
    registering: HashMap<String, ConnId>,
    /// Records not yet handed to the node, and the registrations among them.
    persist_queue: Vec<Record>,
    persist_waiting: Vec<(ConnId, String)>,
    /// Logout records in `persist_queue`.
    persist_seen: usize,
    /// A [`PersistJob`] is out with the node.
    persisting: bool,
    index: Index,
    /// Keyed per server, so peers cannot aim path collisions at the per-user file tables.
    hasher: RandomState,
    channels: BTreeMap<String, Channel>,
    watchers: HashMap<String, Vec<ConnId>>,
    out: VecDeque<Transmit>,
    /// Password jobs handed out (to [`Server::poll_password_job`]) and not yet reported done.
    jobs: VecDeque<PasswordJob>,
    jobs_running: usize,
    /// Password jobs waiting for a slot, per source IP, served round-robin.
    jobs_waiting: fair::FairQueue<Ipv4Addr, PasswordJob>,
    /// Logged-in users per IP (for `max_clones`).
    clones: HashMap<Ipv4Addr, usize>,
    /// Recent registration times per IP (for `max_registrations_per_ip`).
    registrations: HashMap<Ipv4Addr, VecDeque<Instant>>,
    login_deadlines: VecDeque<(Instant, ConnId)>,
    /// While the index compacts: when the next timer step is due.
    compact_tick: Option<Instant>,
    /// After the index switched generations: users whose file tables still hold ids of the old one.
    translate_queue: Vec<ConnId>,
    rng: StdRng,
    start: Instant,
    start_unix: u64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("users", &self.nicks.len())
            .field("files", &self.index.len())
            .finish_non_exhaustive()
    }
}

/// Checks a nick against OpenNap's rules (notes §7).
pub fn valid_nick(nick: &str, server_name: &str) -> bool {
    let lower = nick.to_ascii_lowercase();
    !nick.is_empty()
        && nick.len() <= MAX_NICK_LEN
        && nick
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && !b"%$*?.!\",\\".contains(&b))
        && !nick.starts_with(['#', '&', ':', '-'])
        && !RESERVED_NICKS.contains(&lower.as_str())
        && lower != server_name.to_ascii_lowercase()
}

fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'"')
}

const ZERO_MD5: &str = "00000000000000000000000000000000";

impl Server {
    /// A server with policy `cfg` and account store `accounts`; `rng` salts password hashes; `now` and
    /// `now_unix` anchor the clock (Unix time is derived from `now` afterwards, for whowas).
    pub fn new(
        mut cfg: Config,
        accounts: Accounts,
        rng: StdRng,
        now: Instant,
        now_unix: u64,
    ) -> Self {
        for b in &mut cfg.bans {
            b.make_ascii_lowercase();
        }
        let jobs_waiting = fair::FairQueue::new(cfg.password_queue);
        Server {
            cfg,
            conns: HashMap::new(),
            nicks: HashMap::new(),
            accounts,
            registering: HashMap::new(),
            persist_queue: Vec::new(),
            persist_waiting: Vec::new(),
            persist_seen: 0,
            persisting: false,
            index: Index::default(),
            hasher: RandomState::new(),
            channels: BTreeMap::new(),
            watchers: HashMap::new(),
            out: VecDeque::new(),
            jobs: VecDeque::new(),
            jobs_running: 0,
            jobs_waiting,
            clones: HashMap::new(),
            registrations: HashMap::new(),
            login_deadlines: VecDeque::new(),
            compact_tick: None,
            translate_queue: Vec::new(),
            rng,
            start: now,
            start_unix: now_unix,
        }
    }

    /// Users logged in.
    pub fn users(&self) -> usize {
        self.nicks.len()
    }

    /// Files shared.
    pub fn files(&self) -> usize {
        self.index.len()
    }

    /// Open connections (logged in or not).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Approximate heap bytes of the file index and the users' file tables (benchmark figure).
    pub fn index_heap_estimate(&self) -> usize {
        let tables: usize = self
            .conns
            .values()
            .filter_map(|c| c.user.as_ref())
            .map(|u| u.files.capacity() * (size_of::<FileId>() + 1))
            .sum();
        self.index.memory().total() + tables
    }

    /// The account store (to flush it at shutdown).
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Adds a ban on a nick or a dotted-quad IP; matching users online are disconnected.
    pub fn ban(&mut self, now: Instant, pattern: &str) {
        let p = pattern.to_ascii_lowercase();
        self.cfg.bans.push(p.clone());
        let victims: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.ip.to_string() == p
                    || c.user
                        .as_ref()
                        .is_some_and(|u| u.nick.to_ascii_lowercase() == p)
            })
            .map(|(id, _)| *id)
            .collect();
        for v in victims {
            self.error_close(now, v, "You are banned");
        }
    }

    fn is_banned(&self, s: &str) -> bool {
        let s = s.to_ascii_lowercase();
        self.cfg.bans.contains(&s)
    }

    /// Next frame to send or connection to close, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next password job to run off the lock (then report it with [`Server::password_done`]).
    pub fn poll_password_job(&mut self) -> Option<PasswordJob> {
        self.jobs.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let login = self.login_deadlines.front().map(|(t, _)| *t);
        match (login, self.compact_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// If flood control wants reading from `conn` paused, until when.
    pub fn read_pause(&self, conn: ConnId, now: Instant) -> Option<Instant> {
        self.conns
            .get(&conn)?
            .flood()
            .throttle_until
            .filter(|t| *t > now)
    }

    /// The node wrote a 202 to `conn`'s socket: one pending search less. The node's writer does the same
    /// through [`Server::search_counter`] without the lock.
    pub fn search_delivered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            search_delivered(&c.pending_searches);
        }
    }

    /// The counter of `conn`'s searches whose 202 is not yet written: the writer calls
    /// [`search_delivered`] on it for every 202 it writes, so a search costs one lock acquisition.
    pub fn search_counter(&self, conn: ConnId) -> Option<Arc<AtomicU32>> {
        self.conns.get(&conn).map(|c| c.pending_searches.clone())
    }

    fn send(&mut self, conn: ConnId, t: u16, text: &str) {
        if t == ty::SEARCH_END {
            if let Some(c) = self.conns.get(&conn) {
                c.pending_searches.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.out
            .push_back(Transmit::Frame(conn, Frame::text(t, text)));
    }

    fn notice(&mut self, conn: ConnId, text: &str) {
        self.send(conn, ty::NOTICE, text);
    }

    fn error_close(&mut self, now: Instant, conn: ConnId, text: &str) {
        self.out
            .push_back(Transmit::Frame(conn, Frame::text(ty::ERROR, text)));
        self.close(now, conn);
    }

    fn close(&mut self, now: Instant, conn: ConnId) {
        self.out.push_back(Transmit::Close(conn));
        self.drop_conn(now, conn);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    /// A new TCP connection from `ip`.
    pub fn on_connect(&mut self, now: Instant, conn: ConnId, ip: Ipv4Addr) {
        if self.conns.len() >= self.cfg.max_connections {
            let text = format!("This server is full ({} connections)", self.conns.len());
            self.out
                .push_back(Transmit::Frame(conn, Frame::text(ty::ERROR, &text)));
            self.out.push_back(Transmit::Close(conn));
            return;
        }
        if self.is_banned(&ip.to_string()) {
            self.out.push_back(Transmit::Frame(
                conn,
                Frame::text(ty::ERROR, "You are banned"),
            ));
            self.out.push_back(Transmit::Close(conn));
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                ip,
                user: None,
                pending_login: None,
                pending_searches: Arc::default(),
                flood: std::sync::Mutex::new(Flood {
                    start: now,
                    count: 0,
                    throttle_until: None,
                }),
            },
        );
        self.login_deadlines
            .push_back((now + self.cfg.login_timeout, conn));
    }

    /// The connection is gone (closed by the peer, an I/O error, or after a [`Transmit::Close`]).
    pub fn on_disconnect(&mut self, now: Instant, conn: ConnId) {
        self.drop_conn(now, conn);
    }

    /// Expires logins that took too long, and does a step of index compaction when one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.compact_tick.is_some_and(|t| t <= now) {
            self.index_step(COMPACT_TICK_BUDGET);
            self.compact_tick = self.index_busy().then_some(now + COMPACT_TICK);
        }
        while let Some(&(t, conn)) = self.login_deadlines.front() {
            if t > now {
                break;
            }
            self.login_deadlines.pop_front();
            if self.conns.get(&conn).is_some_and(|c| c.user.is_none()) {
                tracing::debug!(conn = conn.0, "login timeout");
                self.close(now, conn);
            }
        }
    }

    fn drop_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if c.pending_login.is_some() {
            self.jobs_waiting.retain(|j| j.conn() != conn);
        }
        let Some(u) = c.user else {
            return;
        };
        if let Some(n) = self.clones.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.clones.remove(&c.ip);
            }
        }
        let lower = u.nick.to_ascii_lowercase();
        if self.nicks.get(&lower) == Some(&conn) {
            self.nicks.remove(&lower);
        }
        for id in u.files.iter() {
            self.index.remove(*id);
        }
        self.maybe_compact(now);
        for ch in &u.channels {
            self.leave_channel(conn, ch, &u.nick, u.files.len(), u.speed);
        }
        for h in &u.hotlist {
            if let Some(w) = self.watchers.get_mut(h) {
                w.retain(|x| *x != conn);
                if w.is_empty() {
                    self.watchers.remove(h);
                }
            }
        }
        if let Some(ws) = self.watchers.get(&lower).cloned() {
            for w in ws {
                self.send(w, ty::HOTLIST_OFF, &u.nick);
            }
        }
        if self.accounts.get(&u.nick).is_some() {
            let unix = self.unix(now);
            self.accounts.touch(&u.nick, unix);
            if self.persist_seen < MAX_QUEUED_SEEN {
                self.persist_seen += 1;
                self.persist_queue.push(Record::Seen {
                    nick: u.nick.clone(),
                    at: unix,
                });
            } else {
                tracing::warn!(nick = %u.nick, "account store behind: logout time kept in memory only");
            }
        }
        tracing::debug!(nick = %u.nick, "user left");
    }

    /// Starts an index compaction when removals left it sparse; its work is then done a bounded step at
    /// a time (timer ticks every [`COMPACT_TICK`], and a small step per share so the copy keeps up with
    /// shares), never in one pause.
    fn maybe_compact(&mut self, now: Instant) {
        if self.index.needs_compaction() && self.index.start_compaction() {
            tracing::debug!(files = self.index.len(), "file index compaction started");
            self.compact_tick.get_or_insert(now);
        }
    }

    /// True while the index compacts (or the users' ids are being translated after it switched): the
    /// timer then wants [`Server::handle_timeout`] every [`COMPACT_TICK`].
    pub fn index_busy(&self) -> bool {
        self.index.compacting() || self.index.translating()
    }

    /// About `budget` units of compaction work: first translating the users' file tables after a switch of
    /// generations (a user's whole table at a time, at most `max_shared` ids), then the index's own.
    fn index_step(&mut self, mut budget: usize) {
        if self.index.translating() {
            while budget > 0 {
                let Some(c) = self.translate_queue.pop() else {
                    self.index.end_translation();
                    tracing::debug!(files = self.index.len(), "file index compacted");
                    break;
                };
                let index = &self.index;
                if let Some(u) = self.conns.get_mut(&c).and_then(|c| c.user.as_mut()) {
                    // Two units per id: a translation is two lookups at random places.
                    budget = budget.saturating_sub(2 * u.files.len() + 1);
                    // The table is keyed by path, so changing an id in place needs no rehash.
                    u.files.retain(|id| match index.current_id(*id) {
                        Some(n) => {
                            *id = n;
                            true
                        }
                        None => false,
                    });
                }
            }
        }
        if self.index.compact_step(budget) {
            // Users created from now on only get new ids; everyone else is translated in later steps.
            self.translate_queue = self
                .conns
                .iter()
                .filter(|(_, c)| c.user.as_ref().is_some_and(|u| !u.files.is_empty()))
                .map(|(id, _)| *id)
                .collect();
        }
    }

    fn user(&self, conn: ConnId) -> Option<&User> {
        self.conns.get(&conn)?.user.as_ref()
    }

    fn user_mut(&mut self, conn: ConnId) -> Option<&mut User> {
        self.conns.get_mut(&conn)?.user.as_mut()
    }

    fn online(&self, nick: &str) -> Option<(ConnId, &Conn, &User)> {
        let id = *self.nicks.get(&nick.to_ascii_lowercase())?;
        let c = self.conns.get(&id)?;
        Some((id, c, c.user.as_ref()?))
    }

    /// One frame received from `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        c.count_command(now, frame.ty, &self.cfg);
        let logged_in = c.user.is_some();
        if !logged_in && !PRE_LOGIN_TYPES.contains(&frame.ty) {
            self.error_close(now, conn, "invalid command");
            return;
        }
        let msg = match ClientMsg::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                // A logged-in user's malformed 2/6 is just a bad command (below), not a reason to drop it.
                if !logged_in && matches!(frame.ty, ty::LOGIN | ty::REGISTER) {
                    if let FieldError::Missing(_) = e {
                        self.notice(conn, "Too few parameters for login.");
                    } else {
                        self.error_close(now, conn, &format!("invalid login: {e}"));
                    }
                } else if !logged_in {
                    self.error_close(now, conn, "invalid command");
                } else {
                    self.notice(
                        conn,
                        &format!("invalid parameters for command {}: {e}", frame.ty),
                    );
                }
                return;
            }
        };
        self.dispatch(now, conn, msg);
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        match msg {
            ClientMsg::Login(l) => self.login(now, conn, l, None),
            ClientMsg::Register(l, email) => self.login(now, conn, l, Some(email)),
            ClientMsg::Version(_) => self.send(conn, ty::VERSION, ""),
            ClientMsg::NickCheck(n) => {
                let t = if !valid_nick(&n, &self.cfg.server_name) {
                    ty::NICK_INVALID
                } else if self.nick_registered(&n) || self.online(&n).is_some() {
                    ty::NICK_TAKEN
                } else {
                    ty::NICK_FREE
                };
                self.send(conn, t, "");
            }
            ClientMsg::Ignored(_) => {}
            ClientMsg::Share(s) => self.share(conn, s, Kind::Mp3),
            ClientMsg::ShareDir { dir, files } => {
                let sep = if dir.ends_with(['\\', '/']) || dir.is_empty() {
                    ""
                } else {
                    "\\"
                };
                for mut f in files {
                    f.path = format!("{dir}{sep}{}", f.path);
                    self.share(conn, f, Kind::Mp3);
                }
            }
            ClientMsg::ShareAny {
                path,
                size,
                md5,
                kind,
            } => match Kind::parse(&kind) {
                Some(k) => {
                    // OpenNap reports fixed audio fields for non-mp3 media (notes §2 quirk).
                    let s = ShareInfo {
                        path,
                        md5,
                        size,
                        bitrate: 8,
                        freq: 16000,
                        secs: 0,
                    };
                    self.share(conn, s, k);
                }
                None => self.notice(conn, &format!("invalid media type: {kind}")),
            },
            ClientMsg::Unshare(path) => {
                let h = self.hasher.hash_one(path.as_str());
                let index = &self.index;
                let found = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.user.as_mut())
                    .and_then(|u| {
                        u.files
                            .find_entry(h, |id| index.path(*id) == Some(path.as_str()))
                            .ok()
                    })
                    .map(|e| e.remove().0);
                match found {
                    Some(id) => {
                        self.index.remove(id);
                        self.maybe_compact(now);
                    }
                    None => self.notice(conn, "Not sharing that file"),
                }
            }
            ClientMsg::UnshareAll => {
                let ids: Vec<FileId> = self
                    .user_mut(conn)
                    .map(|u| u.files.drain().collect())
                    .unwrap_or_default();
                for id in &ids {
                    self.index.remove(*id);
                }
                self.maybe_compact(now);
                self.send(conn, ty::UNSHARE_ALL, &ids.len().to_string());
            }
            ClientMsg::Search(q) => self.search(conn, &q),
            ClientMsg::Download(nick, path) => self.download(conn, &nick, &path),
            ClientMsg::PushRequest(nick, path) => self.push_request(conn, &nick, &path),
            ClientMsg::UploadAccept(nick, path) => self.upload_accept(conn, &nick, &path),
            ClientMsg::PrivateMessage(to, text) => {
                let from = self.user(conn).map(|u| u.nick.clone()).unwrap_or_default();
                match self.online(&to) {
                    Some((id, _, _)) => self.send(id, ty::PRIVMSG, &format!("{from} {text}")),
                    None => self.notice(conn, &format!("user {to} is not online")),
                }
            }
            ClientMsg::HotlistAdd(n) | ClientMsg::HotlistInit(n) => self.hotlist_add(conn, &n),
            ClientMsg::HotlistRemove(n) => {
                let lower = n.to_ascii_lowercase();
                if let Some(u) = self.user_mut(conn) {
                    u.hotlist.retain(|h| *h != lower);
                }
                if let Some(w) = self.watchers.get_mut(&lower) {
                    w.retain(|x| *x != conn);
                    if w.is_empty() {
                        self.watchers.remove(&lower);
                    }
                }
            }
            ClientMsg::Browse(nick) => self.browse(conn, &nick),
            ClientMsg::Stats => self.send_stats(conn),
            ClientMsg::DownloadStart => {
                if let Some(u) = self.user_mut(conn) {
                    u.downloads += 1;
                }
            }
            ClientMsg::DownloadEnd => {
                if let Some(u) = self.user_mut(conn) {
                    u.downloads = u.downloads.saturating_sub(1);
                }
            }
            ClientMsg::UploadStart => {
                if let Some(u) = self.user_mut(conn) {
                    u.uploads += 1;
                }
            }
            ClientMsg::UploadEnd => {
                if let Some(u) = self.user_mut(conn) {
                    u.uploads = u.uploads.saturating_sub(1);
                }
            }
            ClientMsg::Join(ch) => self.join(conn, &ch),
            ClientMsg::Part(ch) => {
                let Some(u) = self.user(conn) else { return };
                let key = ch.to_ascii_lowercase();
                if !u.channels.contains(&key) {
                    self.notice(conn, &format!("You are not on channel {ch}"));
                    return;
                }
                let (nick, shared, speed) = (u.nick.clone(), u.files.len(), u.speed);
                if let Some(u) = self.user_mut(conn) {
                    u.channels.retain(|c| *c != key);
                }
                let name = self
                    .channels
                    .get(&key)
                    .map(|c| c.name.clone())
                    .unwrap_or(ch);
                self.send(conn, ty::PART, &name);
                self.leave_channel(conn, &key, &nick, shared, speed);
            }
            ClientMsg::Public(ch, text) => {
                let key = ch.to_ascii_lowercase();
                let nick = self.user(conn).map(|u| u.nick.clone()).unwrap_or_default();
                match self.channels.get(&key) {
                    Some(c) if c.members.contains(&conn) => {
                        let line = format!("{} {nick} {text}", c.name);
                        for m in c.members.clone() {
                            self.send(m, ty::PUBLIC_OUT, &line);
                        }
                    }
                    _ => self.notice(conn, &format!("You are not on channel {ch}")),
                }
            }
            ClientMsg::ListChannels => {
                let lines: Vec<String> = self
                    .channels
                    .values()
                    .map(|c| format!("{} {} {}", c.name, c.members.len(), c.topic))
                    .collect();
                for l in lines {
                    self.send(conn, ty::CHANNEL_ENTRY, &l);
                }
                self.send(conn, ty::LIST_CHANNELS, "");
            }
            ClientMsg::LinkSpeed(n) => match self.online(&n) {
                Some((_, _, u)) => {
                    let line = format!("{} {}", u.nick, u.speed);
                    self.send(conn, ty::LINK_SPEED_REPLY, &line)
                }
                None => self.notice(conn, &format!("user {n} is not online")),
            },
            ClientMsg::Whois(n) => self.whois(now, conn, &n),
            ClientMsg::ServerPing(p) => {
                let reply = if p.is_empty() {
                    format!("{} ", self.cfg.server_name)
                } else {
                    p
                };
                self.send(conn, ty::SERVER_PING, &reply);
            }
            ClientMsg::Ping(n) => self.relay_ping(conn, ty::PING, &n),
            ClientMsg::Pong(n) => self.relay_ping(conn, ty::PONG, &n),
            ClientMsg::ChangeSpeed(s) => match u8::try_from(s).ok().filter(|s| *s <= 10) {
                Some(s) => {
                    if let Some(u) = self.user_mut(conn) {
                        u.speed = s;
                    }
                }
                None => self.notice(conn, &format!("{s}: invalid speed")),
            },
            ClientMsg::ChangeDataPort(p) => match u16::try_from(p) {
                Ok(p) => {
                    if let Some(u) = self.user_mut(conn) {
                        u.port = p;
                    }
                }
                Err(_) => self.notice(conn, &format!("{p}: invalid data port")),
            },
            ClientMsg::Unknown(t) => self.notice(conn, &format!("Unknown command code {t}")),
        }
    }
}

impl Server {
    fn login(&mut self, now: Instant, conn: ConnId, l: Login, register: Option<String>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let c_ip = c.ip;
        if c.user.is_some() {
            self.notice(conn, "you are already logged in");
            return;
        }
        if c.pending_login.is_some() {
            self.notice(conn, "login already in progress");
            return;
        }
        if !valid_nick(&l.nick, &self.cfg.server_name) {
            self.send(conn, ty::NICK_INVALID, &format!("Invalid nick: {}", l.nick));
            self.close(now, conn);
            return;
        }
        let Some(speed) = u8::try_from(l.speed).ok().filter(|s| *s <= 10) else {
            self.error_close(now, conn, &format!("{}: invalid speed", l.speed));
            return;
        };
        let Ok(port) = u16::try_from(l.port) else {
            self.error_close(now, conn, &format!("{}: invalid data port", l.port));
            return;
        };
        if self.is_banned(&l.nick) {
            self.error_close(now, conn, "You are banned");
            return;
        }
        let account = self.accounts.get(&l.nick).cloned();
        if account.is_none() && self.registering.contains_key(&l.nick.to_ascii_lowercase()) {
            // Someone's registration of this nick is on its way to the disk.
            self.error_close(now, conn, "Nick registered to another user");
            return;
        }
        let job = match (&register, account) {
            (Some(_), Some(_)) => {
                self.error_close(now, conn, "Nick registered to another user");
                return;
            }
            (None, Some(a)) => {
                let job = PasswordJob::Verify {
                    conn,
                    password: l.password.clone(),
                    hash: a.password_hash,
                };
                (job, a.level, a.email)
            }
            (None, None) if self.cfg.registered_only => {
                self.error_close(now, conn, "This server is for registered users only");
                return;
            }
            (None, None) => {
                let email = format!("anon@{}", self.cfg.server_name);
                self.finish_login(now, conn, l, port, speed, Level::User, email, false);
                return;
            }
            (Some(email), None) => {
                if self.online(&l.nick).is_some() {
                    self.error_close(now, conn, &format!("{} is already active", l.nick));
                    return;
                }
                if !self.registration_allowed(now, c_ip) {
                    self.error_close(now, conn, "Too many registrations from your IP");
                    return;
                }
                let mut salt = [0u8; 16];
                self.rng.fill_bytes(&mut salt);
                let job = PasswordJob::Hash {
                    conn,
                    password: l.password.clone(),
                    salt,
                };
                (job, Level::User, email.clone())
            }
        };
        let (job, level, email) = job;
        let ip = self
            .conns
            .get(&conn)
            .map_or(Ipv4Addr::UNSPECIFIED, |c| c.ip);
        if self.jobs_running >= self.cfg.max_password_jobs && !self.jobs_waiting.has_room(ip) {
            // Fail fast: a login flood must not queue unbounded Argon2 work.
            self.error_close(now, conn, "Server busy, try again later");
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_login = Some(PendingLogin {
                login: l,
                register,
                port,
                speed,
                level,
                email,
            });
        }
        if self.jobs_running < self.cfg.max_password_jobs {
            self.jobs_running += 1;
            self.jobs_waiting.served(ip);
            self.jobs.push_back(job);
        } else {
            let queued = self.jobs_waiting.push(ip, job).is_ok();
            debug_assert!(queued, "room was checked above");
        }
    }

    /// The outcome of a [`PasswordJob`] for `conn`; ignored if the connection is gone.
    pub fn password_done(&mut self, now: Instant, conn: ConnId, outcome: PasswordOutcome) {
        self.jobs_running = self.jobs_running.saturating_sub(1);
        // Hand the slot to the next waiting login whose connection is still there.
        while let Some(job) = self.jobs_waiting.pop() {
            let waiting = self
                .conns
                .get(&job.conn())
                .is_some_and(|c| c.pending_login.is_some());
            if waiting {
                self.jobs_running += 1;
                self.jobs.push_back(job);
                break;
            }
        }
        let Some(p) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending_login.take())
        else {
            return;
        };
        match outcome {
            PasswordOutcome::Verified(true) => {
                self.finish_login(now, conn, p.login, p.port, p.speed, p.level, p.email, true)
            }
            PasswordOutcome::Verified(false) => self.error_close(now, conn, "Invalid Password"),
            PasswordOutcome::Hashed(Ok(hash)) => {
                // Another connection may have registered the nick while we hashed.
                let lower = p.login.nick.to_ascii_lowercase();
                if self.nick_registered(&lower) {
                    self.error_close(now, conn, "Nick registered to another user");
                    return;
                }
                // The login finishes when the record is durable ([`Server::persist_done`]).
                self.registering.insert(lower.clone(), conn);
                self.persist_queue.push(Record::Register(Account {
                    nick: p.login.nick.clone(),
                    password_hash: hash,
                    email: p.register.clone().unwrap_or_default(),
                    level: Level::User,
                    last_seen: 0,
                }));
                self.persist_waiting.push((conn, lower));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.pending_login = Some(p);
                }
            }
            PasswordOutcome::Hashed(Err(e)) => {
                tracing::error!(cause = %e, "password hashing failed");
                self.error_close(now, conn, "registration failed: account store unavailable");
            }
        }
    }

    /// The next batch of account records to make durable, if any are queued and none is out (then report it
    /// with [`Server::persist_done`]).
    pub fn poll_persist(&mut self) -> Option<PersistJob> {
        if self.persisting || self.persist_queue.is_empty() {
            return None;
        }
        self.persisting = true;
        self.persist_seen = 0;
        Some(PersistJob {
            records: std::mem::take(&mut self.persist_queue),
            waiting: std::mem::take(&mut self.persist_waiting),
        })
    }

    /// True when no account record waits for the disk or is being written (for a clean shutdown).
    pub fn persist_idle(&self) -> bool {
        !self.persisting && self.persist_queue.is_empty()
    }

    /// The node wrote `job` (`Ok`) or could not (`Err`, with why). Durable registrations become accounts
    /// and their logins finish with the ack 3; refused ones close their connections with an error, and the
    /// nick is free again: nothing is half-registered.
    pub fn persist_done(&mut self, now: Instant, job: PersistJob, outcome: Result<(), String>) {
        self.persisting = false;
        let PersistJob { records, waiting } = job;
        if let Err(e) = &outcome {
            tracing::error!(cause = %e, records = records.len(), "account records not stored");
        }
        for r in records {
            match (&outcome, r) {
                (Ok(()), Record::Register(a)) => {
                    tracing::info!(nick = %a.nick, "nick registered");
                    self.registering.remove(&a.nick.to_ascii_lowercase());
                    self.accounts.apply(Record::Register(a));
                }
                (Err(_), Record::Register(a)) => {
                    self.registering.remove(&a.nick.to_ascii_lowercase());
                }
                // Already applied in memory when queued.
                (_, Record::Seen { .. }) => {}
            }
        }
        for (conn, lower) in waiting {
            let p = self.conns.get_mut(&conn).and_then(|c| {
                c.pending_login
                    .take_if(|p| p.login.nick.eq_ignore_ascii_case(&lower))
            });
            let Some(p) = p else { continue };
            match outcome {
                Ok(()) => {
                    self.finish_login(now, conn, p.login, p.port, p.speed, p.level, p.email, true)
                }
                Err(_) => {
                    self.error_close(now, conn, "registration failed: account store unavailable")
                }
            }
        }
    }

    /// Checks the server's bookkeeping against itself (tests and the fuzz property); panics naming what
    /// is inconsistent.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut files = 0;
        let mut per_ip: HashMap<Ipv4Addr, usize> = HashMap::new();
        for (id, c) in &self.conns {
            let Some(u) = &c.user else { continue };
            *per_ip.entry(c.ip).or_default() += 1;
            assert_eq!(
                self.nicks.get(&u.nick.to_ascii_lowercase()),
                Some(id),
                "{} is in the nick table under its connection",
                u.nick
            );
            assert!(c.pending_login.is_none(), "{} logged in twice", u.nick);
            for fid in u.files.iter() {
                let f = self
                    .index
                    .get(*fid)
                    .expect("every file of a user is in the index");
                assert_eq!(f.owner, *id, "{} owned by its user", f.path);
            }
            files += u.files.len();
        }
        assert_eq!(
            per_ip.values().sum::<usize>(),
            self.nicks.len(),
            "nick table = users"
        );
        assert_eq!(per_ip, self.clones, "clone counts = users per IP");
        assert_eq!(
            files,
            self.index.len(),
            "index holds exactly the users' files"
        );
        for k in self.registering.keys() {
            assert!(
                self.accounts.get(k).is_none(),
                "{k} both registering and registered"
            );
        }
        assert!(self.jobs_running <= self.cfg.max_password_jobs);
        for (name, ch) in &self.channels {
            assert!(!ch.members.is_empty(), "empty channel {name} kept");
            for m in &ch.members {
                let u = self.user(*m).expect("a channel member is logged in");
                assert!(u.channels.contains(name), "{} on {name} both ways", u.nick);
            }
        }
    }

    /// `nick` is an account, or its registration is on the way to the disk.
    fn nick_registered(&self, nick: &str) -> bool {
        self.accounts.get(nick).is_some()
            || self.registering.contains_key(&nick.to_ascii_lowercase())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_login(
        &mut self,
        now: Instant,
        conn: ConnId,
        l: Login,
        port: u16,
        speed: u8,
        level: Level,
        email: String,
        registered: bool,
    ) {
        let Some(ip) = self.conns.get(&conn).map(|c| c.ip) else {
            return;
        };
        let replaces_ghost_from_same_ip = self
            .online(&l.nick)
            .is_some_and(|(_, old_c, _)| old_c.ip == ip);
        let clones = self.clones.get(&ip).copied().unwrap_or(0);
        if self.cfg.max_clones > 0 && clones >= self.cfg.max_clones && !replaces_ghost_from_same_ip
        {
            self.error_close(now, conn, "Too many connections from your IP (clones)");
            return;
        }
        if let Some((old, old_c, old_u)) = self.online(&l.nick) {
            if registered || old_c.ip == ip {
                if now.saturating_duration_since(old_u.login_at) < self.cfg.ghost_kill {
                    self.error_close(now, conn, "Connecting too fast");
                    return;
                }
                self.send(old, ty::GHOST, "");
                self.close(now, old);
            } else {
                self.error_close(now, conn, &format!("{} is already active", l.nick));
                return;
            }
        }
        // Cut by characters: each is one Latin-1 byte on the wire, and a byte cut could split one.
        let client: String = l.client.chars().take(MAX_CLIENT_LEN).collect();
        let nick = l.nick;
        let lower = nick.to_ascii_lowercase();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some(User {
                nick: nick.clone(),
                level,
                port,
                speed,
                client,
                login_at: now,
                files: HashTable::new(),
                downloads: 0,
                uploads: 0,
                channels: Vec::new(),
                hotlist: Vec::new(),
            });
        }
        self.nicks.insert(lower.clone(), conn);
        *self.clones.entry(ip).or_insert(0) += 1;
        tracing::debug!(%nick, registered, "user logged in");
        self.send(conn, ty::LOGIN_ACK, &email);
        let mut motd = vec![
            format!(
                "VERSION p2p-lab napster-server {}",
                env!("CARGO_PKG_VERSION")
            ),
            format!("SERVER {}", self.cfg.server_name),
            format!("There are {} users online", self.nicks.len()),
        ];
        motd.extend(self.cfg.motd.iter().cloned());
        for line in motd {
            self.send(conn, ty::MOTD, &line);
        }
        self.send_stats(conn);
        if let Some(ws) = self.watchers.get(&lower).cloned() {
            for w in ws {
                self.send(w, ty::HOTLIST_ON, &format!("{nick} {speed}"));
            }
        }
    }

    /// Records a registration attempt from `ip` if the per-IP limit allows it.
    fn registration_allowed(&mut self, now: Instant, ip: Ipv4Addr) -> bool {
        let max = self.cfg.max_registrations_per_ip;
        if max == 0 {
            return true;
        }
        let window = self.cfg.registration_window;
        // Forget IPs whose window has passed, so the table stays as small as the recent registrants.
        self.registrations.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = self.registrations.entry(ip).or_default();
        if times.len() >= max {
            return false;
        }
        times.push_back(now);
        true
    }

    fn send_stats(&mut self, conn: ConnId) {
        let line = format!(
            "{} {} {}",
            self.nicks.len(),
            self.index.len(),
            self.index.total_bytes() >> 30
        );
        self.send(conn, ty::STATS, &line);
    }

    fn share(&mut self, conn: ConnId, s: ShareInfo, kind: Kind) {
        let max = self.cfg.max_shared;
        let Some(u) = self.user(conn) else { return };
        if s.path.is_empty() {
            self.notice(conn, "invalid share: empty path");
            return;
        }
        if u.files.len() >= max {
            self.notice(conn, &format!("You may not share more than {max} files"));
            return;
        }
        let h = self.hasher.hash_one(s.path.as_str());
        if u.files
            .find(h, |id| self.index.path(*id) == Some(s.path.as_str()))
            .is_some()
        {
            self.notice(conn, "duplicate file");
            return;
        }
        let Some(id) = self.index.insert(NewFile {
            owner: conn,
            path: &s.path,
            md5: &s.md5,
            size: s.size,
            bitrate: s.bitrate,
            freq: s.freq,
            secs: s.secs,
            kind,
        }) else {
            self.notice(conn, "server file table is full");
            return;
        };
        let (index, hasher) = (&self.index, &self.hasher);
        if let Some(u) = self.conns.get_mut(&conn).and_then(|c| c.user.as_mut()) {
            u.files.insert_unique(h, id, |id| {
                hasher.hash_one(index.path(*id).unwrap_or_default())
            });
        }
        if self.index_busy() {
            self.index_step(COMPACT_SHARE_BUDGET);
        }
    }

    fn search(&mut self, conn: ConnId, payload: &str) {
        if let Some(batch) = self.search_batch(conn, payload) {
            self.out.push_back(Transmit::Batch(conn, batch));
        }
    }

    /// A search 200 from a logged-in `conn`, answered with `&self` so the node can run searches under a
    /// shared lock, several at once: returns the reply (results, any 404, and the closing 202, as one
    /// batch for `conn`), or `None` when `frame` is not such a search and must go through
    /// [`Server::handle_frame`] (which then does its flood accounting).
    pub fn search_shared(&self, now: Instant, conn: ConnId, frame: &Frame) -> Option<FrameBatch> {
        if frame.ty != ty::SEARCH {
            return None;
        }
        let c = self.conns.get(&conn)?;
        c.user.as_ref()?;
        let Ok(ClientMsg::Search(payload)) = ClientMsg::decode(frame) else {
            return None;
        };
        c.count_command(now, frame.ty, &self.cfg);
        self.search_batch(conn, &payload)
    }

    /// The whole reply to a search (see [`Server::search_shared`]); `None` if `conn` is not logged in.
    fn search_batch(&self, conn: ConnId, payload: &str) -> Option<FrameBatch> {
        let c = self.conns.get(&conn)?;
        let me = c.user.as_ref()?;
        let mut batch = FrameBatch::new();
        // Counted pending now; the writer counts it down when the 202 is on the socket.
        c.pending_searches.fetch_add(1, Ordering::Relaxed);
        let refuse = |mut batch: FrameBatch, why: &dyn std::fmt::Display| {
            if !why.to_string().is_empty() {
                let _ = batch.push_fmt(ty::NOTICE, format_args!("{why}"));
            }
            let _ = batch.push_fmt(ty::SEARCH_END, format_args!(""));
            Some(batch)
        };
        if c.pending_searches.load(Ordering::Relaxed) > self.cfg.max_searches {
            return refuse(batch, &"search failed: too many pending searches");
        }
        if me.level == Level::Leech {
            return refuse(batch, &"");
        }
        let q = match search::parse(payload, self.cfg.max_results) {
            Ok(q) => q,
            Err(e) => return refuse(batch, &e),
        };
        let my_port = me.port;
        let conns = &self.conns;
        let owner = |f: &FileView<'_>| {
            conns
                .get(&f.owner)
                .and_then(|c| c.user.as_ref().map(|u| (c, u)))
        };
        let hits = self.index.search(&q, |f| {
            let Some((_, u)) = owner(f) else { return false };
            f.owner != conn
                && !(my_port == 0 && u.port == 0)
                && q.linespeed
                    .is_none_or(|(cmp, n)| cmp.test(u.speed.into(), n))
        });
        // Results and the 202 go out as one encoded batch: one queue item and one socket write per search,
        // and no allocation per result. The 201s are written byte by byte rather than through
        // `format_args!` (the formatting machinery was a fifth of a loaded server's CPU), and a user's
        // files sit together in the index, so the owner found for one result usually serves the next.
        // ~120 bytes per 201 on the wire (path, md5, numbers, nick), + the 202's header.
        batch.reserve(hits.len() * 128 + HEADER_LEN);
        let mut last: Option<(ConnId, &Conn, &User)> = None;
        for (_, f) in &hits {
            let (c, u) = match last {
                Some((id, c, u)) if id == f.owner => (c, u),
                _ => {
                    let Some((c, u)) = owner(f) else { continue };
                    last = Some((f.owner, c, u));
                    (c, u)
                }
            };
            // A path is at most a client frame long, so a result always fits; skip one that would not.
            let _ = batch.push_with(ty::SEARCH_RESULT, |w| {
                w.byte(b'"')
                    .text(f.path)
                    .bytes(b"\" ")
                    .fmt(format_args!("{}", f.md5))
                    .byte(b' ')
                    .num(f.size)
                    .byte(b' ')
                    .num(f.bitrate.into())
                    .byte(b' ')
                    .num(f.freq.into())
                    .byte(b' ')
                    .num(f.secs.into())
                    .byte(b' ')
                    .text(&u.nick)
                    .byte(b' ')
                    .num(ip::to_wire(c.ip).into())
                    .byte(b' ')
                    .num(u.speed.into());
            });
        }
        drop(hits);
        let _ = batch.push_fmt(ty::SEARCH_END, format_args!(""));
        Some(batch)
    }

    fn browse(&mut self, conn: ConnId, nick: &str) {
        let Some((_, c, u)) = self.online(nick) else {
            self.send(conn, ty::HOTLIST_OFF, nick);
            self.send(conn, ty::BROWSE_END, nick);
            return;
        };
        let mut ids: Vec<FileId> = u.files.iter().copied().collect();
        // Mid-translation a table may mix both generations' ids; order by the current ones.
        ids.sort_unstable_by_key(|id| self.index.current_id(*id));
        let lines: Vec<String> = ids
            .into_iter()
            .take(self.cfg.max_browse)
            .filter_map(|id| self.index.get(id))
            .map(|f| {
                format!(
                    "{} \"{}\" {} {} {} {} {}",
                    u.nick, f.path, f.md5, f.size, f.bitrate, f.freq, f.secs
                )
            })
            .collect();
        let end = format!("{} {}", u.nick, ip::to_wire(c.ip));
        for l in lines {
            self.send(conn, ty::BROWSE_ENTRY, &l);
        }
        self.send(conn, ty::BROWSE_END, &end);
    }

    fn md5_of(&self, owner: &User, path: &str) -> Option<String> {
        let h = self.hasher.hash_one(path);
        let id = owner
            .files
            .find(h, |id| self.index.path(*id) == Some(path))?;
        self.index.get(*id).map(|f| f.md5.to_string())
    }

    fn download(&mut self, conn: ConnId, nick: &str, path: &str) {
        let Some(me) = self.user(conn) else { return };
        if me.level == Level::Leech {
            self.notice(conn, "permission denied: you are a leech");
            return;
        }
        let (my_nick, my_port, my_speed) = (me.nick.clone(), me.port, me.speed);
        let Some((up, up_c, up_u)) = self.online(nick) else {
            self.send(conn, ty::DOWNLOAD_ERROR, &format!("{nick} \"{path}\""));
            return;
        };
        if up_u.port == 0 {
            // Firewalled uploader: the downloader learns at once and asks for a push with 500.
            let md5 = if my_port == 0 {
                "firewallerror".to_owned()
            } else {
                self.md5_of(up_u, path).unwrap_or_else(|| ZERO_MD5.into())
            };
            let line = format!(
                "{} {} 0 \"{path}\" {md5} {}",
                up_u.nick,
                ip::to_wire(up_c.ip),
                up_u.speed
            );
            self.send(conn, ty::DOWNLOAD_ACK, &line);
            return;
        }
        self.send(
            up,
            ty::UPLOAD_REQUEST,
            &format!("{my_nick} \"{path}\" {my_speed}"),
        );
    }

    fn push_request(&mut self, conn: ConnId, nick: &str, path: &str) {
        let Some(me) = self.user(conn) else { return };
        // OpenNap's download.c refuses leeches on 500 as on 203: a push is a download too.
        if me.level == Level::Leech {
            self.notice(conn, "permission denied: you are a leech");
            return;
        }
        let (my_nick, my_port, my_speed) = (me.nick.clone(), me.port, me.speed);
        let Some((up, up_c, up_u)) = self.online(nick) else {
            self.send(conn, ty::DOWNLOAD_ERROR, &format!("{nick} \"{path}\""));
            return;
        };
        if up_u.port != 0 {
            let n = up_u.nick.clone();
            self.notice(conn, &format!("{n} is not firewalled"));
            return;
        }
        if my_port == 0 {
            let line = format!(
                "{} {} 0 \"{path}\" firewallerror {}",
                up_u.nick,
                ip::to_wire(up_c.ip),
                up_u.speed
            );
            self.send(conn, ty::DOWNLOAD_ACK, &line);
            return;
        }
        self.send(
            up,
            ty::UPLOAD_REQUEST,
            &format!("{my_nick} \"{path}\" {my_speed}"),
        );
    }

    fn upload_accept(&mut self, conn: ConnId, nick: &str, path: &str) {
        let Some((me_c, me)) = self
            .conns
            .get(&conn)
            .and_then(|c| Some((c, c.user.as_ref()?)))
        else {
            return;
        };
        let Some(md5) = self.md5_of(me, path) else {
            self.notice(conn, "Not sharing that file");
            return;
        };
        let (my_nick, my_ip, my_port, my_speed) = (me.nick.clone(), me_c.ip, me.port, me.speed);
        let Some((down, down_c, down_u)) = self.online(nick) else {
            self.notice(conn, &format!("user {nick} is not online"));
            return;
        };
        if my_port == 0 {
            // We are firewalled: the downloader asked with 500, so tell us (501) where to push.
            let line = format!(
                "{} {} {} \"{path}\" {md5} {}",
                down_u.nick,
                ip::to_wire(down_c.ip),
                down_u.port,
                down_u.speed
            );
            self.send(conn, ty::PUSH, &line);
        } else {
            let line = format!(
                "{my_nick} {} {my_port} \"{path}\" {md5} {my_speed}",
                ip::to_wire(my_ip)
            );
            self.send(down, ty::DOWNLOAD_ACK, &line);
        }
    }

    fn hotlist_add(&mut self, conn: ConnId, nick: &str) {
        let max = self.cfg.max_hotlist;
        let Some(u) = self.user(conn) else { return };
        let lower = nick.to_ascii_lowercase();
        if !valid_nick(nick, &self.cfg.server_name)
            || (u.hotlist.len() >= max && !u.hotlist.contains(&lower))
        {
            self.send(conn, ty::HOTLIST_ERROR, nick);
            return;
        }
        if !u.hotlist.contains(&lower) {
            if let Some(u) = self.user_mut(conn) {
                u.hotlist.push(lower.clone());
            }
            self.watchers.entry(lower).or_default().push(conn);
        }
        self.send(conn, ty::HOTLIST_ACK, nick);
        if let Some((_, _, t)) = self.online(nick) {
            let line = format!("{} {}", t.nick, t.speed);
            self.send(conn, ty::HOTLIST_ON, &line);
        }
    }

    fn relay_ping(&mut self, conn: ConnId, t: u16, nick: &str) {
        let from = self.user(conn).map(|u| u.nick.clone()).unwrap_or_default();
        match self.online(nick) {
            Some((id, _, _)) => self.send(id, t, &from),
            None => self.notice(conn, &format!("ping failed, {nick} is not online")),
        }
    }

    fn whois(&mut self, now: Instant, conn: ConnId, nick: &str) {
        if let Some((_, _, u)) = self.online(nick) {
            let chans: Vec<&str> = u
                .channels
                .iter()
                .filter_map(|k| self.channels.get(k).map(|c| c.name.as_str()))
                .collect();
            let line = format!(
                "{} \"{}\" {} \"{}\" \"Active\" {} {} {} {} \"{}\"",
                u.nick,
                u.level.name(),
                now.saturating_duration_since(u.login_at).as_secs(),
                chans.join(" "),
                u.files.len(),
                u.downloads,
                u.uploads,
                u.speed,
                u.client
            );
            self.send(conn, ty::WHOIS_REPLY, &line);
        } else if let Some(a) = self.accounts.get(nick) {
            let line = format!("{} \"{}\" {}", a.nick, a.level.name(), a.last_seen);
            self.send(conn, ty::WHOWAS, &line);
        } else {
            self.notice(conn, &format!("user {nick} is not a known user"));
        }
    }

    fn join(&mut self, conn: ConnId, ch: &str) {
        let max = self.cfg.max_user_channels;
        let Some(u) = self.user(conn) else { return };
        let key = ch.to_ascii_lowercase();
        if !valid_channel(ch) {
            self.notice(conn, &format!("Invalid channel name: {ch}"));
            return;
        }
        if u.channels.contains(&key) {
            return;
        }
        if u.channels.len() >= max {
            self.notice(conn, "You are in too many channels");
            return;
        }
        let me = format!("{} {} {}", u.nick, u.files.len(), u.speed);
        if let Some(u) = self.user_mut(conn) {
            u.channels.push(key.clone());
        }
        let chan = self.channels.entry(key).or_insert_with(|| Channel {
            name: ch.to_owned(),
            topic: format!("Welcome to the {ch} channel."),
            members: Vec::new(),
        });
        let others = chan.members.clone();
        chan.members.push(conn);
        let (name, topic, members) = (chan.name.clone(), chan.topic.clone(), chan.members.clone());
        for o in others {
            self.send(o, ty::CHAN_JOIN, &format!("{name} {me}"));
        }
        self.send(conn, ty::JOIN_ACK, &name);
        for m in members {
            if let Some(u) = self.user(m) {
                let line = format!("{name} {} {} {}", u.nick, u.files.len(), u.speed);
                self.send(conn, ty::CHAN_MEMBER, &line);
            }
        }
        self.send(conn, ty::CHAN_MEMBERS_END, &name);
        self.send(conn, ty::CHAN_TOPIC, &format!("{name} {topic}"));
    }

    fn leave_channel(&mut self, conn: ConnId, key: &str, nick: &str, shared: usize, speed: u8) {
        let Some(chan) = self.channels.get_mut(key) else {
            return;
        };
        chan.members.retain(|m| *m != conn);
        let (name, members) = (chan.name.clone(), chan.members.clone());
        if members.is_empty() {
            self.channels.remove(key);
        }
        for m in members {
            self.send(m, ty::CHAN_PART, &format!("{name} {nick} {shared} {speed}"));
        }
    }
}
