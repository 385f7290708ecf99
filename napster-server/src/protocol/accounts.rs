//! Registered accounts (notes §2 types 2/6 and §7 "Nick squatting"): nick, Argon2id password hash, email,
//! level and last-seen time.
//!
//! The protocol reads [`Accounts`] (memory only) and asks for changes as [`Record`]s; the node hands them in
//! batches to the [`AccountLog`], which appends them to `accounts.log` with one fsync per batch, off the
//! server's lock, and folds the log into the `accounts.json` snapshot (written atomically: temporary file,
//! fsync, rename, directory fsync) at start and whenever the log grows long. A store that exists but cannot
//! be parsed is an error naming the file: the server refuses to start rather than silently forget
//! registrations. Passwords never touch the disk in clear.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// File name of the account store inside the data directory.
pub const STORE_FILE: &str = "accounts.json";

/// Written next to the store when the store is first created. Its presence without [`STORE_FILE`] means the
/// store existed and was lost (deleted, or the data directory was partly restored), so the server refuses to
/// start instead of silently running with no accounts. A data directory wiped whole looks like a first start;
/// nothing on disk can tell those apart.
pub const STORE_MARKER: &str = "accounts.created";

/// Version of the store layout.
pub const STORE_VERSION: u32 = 1;

/// User levels, as OpenNap names them in whois.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Level {
    /// Searches return nothing, downloads are refused.
    Leech,
    /// Ordinary user.
    #[default]
    User,
    /// Moderator.
    Moderator,
    /// Administrator.
    Admin,
    /// Server owner.
    Elite,
}

impl Level {
    /// The whois text.
    pub fn name(self) -> &'static str {
        match self {
            Level::Leech => "Leech",
            Level::User => "User",
            Level::Moderator => "Moderator",
            Level::Admin => "Admin",
            Level::Elite => "Elite",
        }
    }
}

/// One registered nick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Nick as registered (lookups are case-insensitive).
    pub nick: String,
    /// PHC string of an Argon2id hash.
    pub password_hash: String,
    /// Email given at registration.
    pub email: String,
    /// Level.
    #[serde(default)]
    pub level: Level,
    /// Unix seconds of the last logout (0 = never seen since registration).
    #[serde(default)]
    pub last_seen: u64,
}

/// Failures of the account store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file cannot be read or written.
    #[error("account store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store file exists but is not a valid store.
    #[error("account store {path} is corrupt ({reason}); refusing to start rather than lose registrations: repair or move it away")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store is missing but [`STORE_MARKER`] shows it was created before.
    #[error("account store {path} is missing but {marker} shows it existed; refusing to start with no accounts: restore it, or pass --new-account-store to start empty")]
    Missing {
        /// The store file that should exist.
        path: PathBuf,
        /// The marker left by its creation.
        marker: PathBuf,
    },
    /// Hashing failed (cannot happen with valid parameters; kept as an error rather than a panic).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes `password` with Argon2id and a salt drawn from `rng`.
pub fn hash_password(password: &str, rng: &mut impl RngCore) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    hash_password_with_salt(password, &salt)
}

/// Hashes `password` with Argon2id and the given 16-byte salt (the salt is drawn by the caller, so the slow
/// part can run on another thread without the caller's RNG).
pub fn hash_password_with_salt(password: &str, salt: &[u8; 16]) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| StoreError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// Checks `password` against a stored hash; a malformed hash verifies nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[derive(Serialize, Deserialize)]
struct Disk {
    version: u32,
    accounts: Vec<Account>,
}

/// File name of the append-only log of changes since the snapshot [`STORE_FILE`] was written.
pub const LOG_FILE: &str = "accounts.log";

/// The log is folded into a new snapshot (off the server's lock, by the writer) once it holds this many
/// records, or as many as there are accounts if that is more: a snapshot rewrite then costs no more than
/// the appends it replaces.
pub const LOG_COMPACT_RECORDS: usize = 4096;

/// One change to the account store, as the protocol asks for it and as one line of [`LOG_FILE`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A new registration (the whole account).
    Register(Account),
    /// A logout time (whowas 605); only ever moves `last_seen` forward.
    Seen {
        /// The nick (any case).
        nick: String,
        /// Unix seconds.
        at: u64,
    },
}

/// The registered accounts the protocol reads: memory only. Changes reach it through [`Accounts::apply`]
/// once the [`AccountLog`] has made them durable.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    by_nick: HashMap<String, Account>,
}

impl Accounts {
    /// Accounts from a list (as loaded by [`AccountLog::open`]).
    pub fn from_accounts(list: impl IntoIterator<Item = Account>) -> Self {
        let mut a = Accounts::default();
        for acc in list {
            a.apply(Record::Register(acc));
        }
        a
    }

    /// The account of `nick` (case-insensitive).
    pub fn get(&self, nick: &str) -> Option<&Account> {
        self.by_nick.get(&nick.to_ascii_lowercase())
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.by_nick.len()
    }

    /// True when no nick is registered.
    pub fn is_empty(&self) -> bool {
        self.by_nick.is_empty()
    }

    /// Applies one change. A replayed [`Record::Seen`] never moves a time backwards, so replaying a log
    /// over a snapshot that already holds it changes nothing.
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Register(a) => {
                // A nick is registered once. Replayed over a snapshot that already has it (a crash between
                // writing the snapshot and emptying the log, or an operator's edit of the level), the
                // snapshot's account is the newer one.
                self.by_nick.entry(a.nick.to_ascii_lowercase()).or_insert(a);
            }
            Record::Seen { nick, at } => {
                if let Some(a) = self.by_nick.get_mut(&nick.to_ascii_lowercase()) {
                    a.last_seen = a.last_seen.max(at);
                }
            }
        }
    }

    /// Records a logout time in memory (the protocol also queues a [`Record::Seen`] for the disk).
    pub fn touch(&mut self, nick: &str, unix: u64) {
        self.apply(Record::Seen {
            nick: nick.to_string(),
            at: unix,
        });
    }

    fn sorted(&self) -> Vec<Account> {
        let mut v: Vec<Account> = self.by_nick.values().cloned().collect();
        v.sort_by(|a, b| a.nick.cmp(&b.nick));
        v
    }
}

/// The disk side of the account store, owned by the node's writer (never by the protocol): a snapshot
/// [`STORE_FILE`] plus an append-only [`LOG_FILE`] of [`Record`]s, one JSON object a line.
///
/// A batch of records is appended and `fsync`ed as one write, so registrations that arrive while a write is
/// under way cost one more fsync between them, not one each. A write that fails is cut back off the log, so
/// a record is either durable whole or absent. At open the log is replayed over the snapshot (a torn last
/// line, from a crash in the middle of an append that was never acknowledged, is dropped) and folded into a
/// fresh snapshot; the writer folds it again whenever it grows past [`LOG_COMPACT_RECORDS`].
#[derive(Debug, Default)]
pub struct AccountLog {
    /// `None`: memory only (tests, benchmarks); every write succeeds at once.
    dir: Option<PathBuf>,
    /// What the disk holds, so a snapshot can be written without asking the protocol.
    mirror: Accounts,
    log: Option<std::fs::File>,
    log_len: u64,
    log_records: usize,
}

impl AccountLog {
    /// A store that lives only in memory.
    pub fn in_memory() -> Self {
        AccountLog::default()
    }

    /// Opens the store in `dir`: loads [`STORE_FILE`], replays [`LOG_FILE`], writes the result as the new
    /// snapshot and starts an empty log. A missing store is created empty only on a first start (no
    /// [`STORE_MARKER`] in `dir`) or when `allow_new` says an empty store is wanted; otherwise it is
    /// [`StoreError::Missing`]. The marker is (re)written whenever a store exists, so stores from before the
    /// marker get one on their next start. Returns the writer and the accounts for the protocol.
    pub fn open(dir: &Path, allow_new: bool) -> Result<(Self, Accounts), StoreError> {
        let path = dir.join(STORE_FILE);
        let marker = dir.join(STORE_MARKER);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut store = AccountLog {
            dir: Some(dir.to_path_buf()),
            ..AccountLog::default()
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: Disk =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if disk.version != STORE_VERSION {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: format!("unknown version {}", disk.version),
                    });
                }
                for a in disk.accounts {
                    check_hash(&path, &a)?;
                    store.mirror.apply(Record::Register(a));
                }
                let replayed = store.replay_log()?;
                tracing::info!(path = %path.display(), accounts = store.mirror.len(), replayed, "account store loaded");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !allow_new && marker.exists() {
                    return Err(StoreError::Missing { path, marker });
                }
                std::fs::create_dir_all(dir).map_err(io)?;
                // Accounts acknowledged since the last snapshot live only in the log: a lost snapshot
                // must not take them with it.
                let replayed = store.replay_log()?;
                tracing::warn!(path = %path.display(), replayed, "new account store created");
            }
            Err(e) => return Err(io(e)),
        }
        // Fold the log into a fresh snapshot now, so the log starts empty.
        store.snapshot()?;
        if !marker.exists() {
            std::fs::write(
                &marker,
                b"the account store accounts.json was created here\n",
            )
            .map_err(|source| StoreError::Io {
                path: marker.clone(),
                source,
            })?;
        }
        let accounts = store.mirror.clone();
        Ok((store, accounts))
    }

    /// Number of accounts on disk.
    pub fn len(&self) -> usize {
        self.mirror.len()
    }

    /// True when no account is on disk.
    pub fn is_empty(&self) -> bool {
        self.mirror.is_empty()
    }

    /// Appends `records` and makes them durable (one write, one `fsync`). On failure nothing of the batch
    /// stays in the log (it is cut back to its length before the write) and the error is returned.
    pub fn write(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            for r in records {
                self.mirror.apply(r.clone());
            }
            return Ok(());
        };
        let path = dir.join(LOG_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| io(std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let log = match &mut self.log {
            Some(f) => f,
            None => return Err(io(std::io::Error::other("log not open"))),
        };
        let written = log.write_all(&buf).and_then(|()| log.sync_data());
        if let Err(e) = written {
            // Cut the batch back off, so a record that was refused cannot come back at the next start.
            if log
                .set_len(self.log_len)
                .and_then(|()| log.sync_data())
                .is_err()
            {
                // The log can no longer be trusted to end where we think: stop using it.
                self.log = None;
            }
            return Err(io(e));
        }
        self.log_len += buf.len() as u64;
        self.log_records += records.len();
        for r in records {
            self.mirror.apply(r.clone());
        }
        if self.log_records >= LOG_COMPACT_RECORDS.max(self.mirror.len()) {
            // The records are durable in the log already; a failed fold only leaves the log longer.
            if let Err(e) = self.snapshot() {
                tracing::warn!(cause = %e, "account log not folded into the snapshot");
            }
        }
        Ok(())
    }

    /// Folds the log into the snapshot now (at a clean shutdown: the store is then one file again, the
    /// one an operator edits while the server is stopped).
    pub fn fold(&mut self) -> Result<(), StoreError> {
        if self.log_records == 0 {
            return Ok(());
        }
        self.snapshot()
    }

    /// Replays the log over the snapshot just loaded; returns how many records it held.
    fn replay_log(&mut self) -> Result<usize, StoreError> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let path = dir.join(LOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut n = 0;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if !line.ends_with(b"\n") {
                // Only the last line can lack its newline: an append cut short by a crash. It was never
                // acknowledged, so dropping it loses nothing anyone was told about.
                tracing::warn!(path = %path.display(), "torn last record of the account log dropped");
                break;
            }
            let r: Record = serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("{LOG_FILE} record {}: {e}", n + 1),
            })?;
            if let Record::Register(a) = &r {
                check_hash(&path, a)?;
            }
            self.mirror.apply(r);
            n += 1;
        }
        Ok(n)
    }

    /// Writes the whole store as a new snapshot (temporary file, fsync, rename, directory fsync), then
    /// starts an empty log.
    fn snapshot(&mut self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(STORE_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&Disk {
            version: STORE_VERSION,
            accounts: self.mirror.sorted(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // The rename must be durable before the log is emptied: after a power loss the directory could
        // otherwise still name the old snapshot while the log is already empty.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        // Only once the snapshot holds everything may the log be emptied (a crash in between replays
        // records the snapshot already has, which changes nothing).
        let log_path = dir.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| StoreError::Io {
                path: log_path.clone(),
                source,
            })?;
        log.set_len(0)
            .and_then(|()| log.sync_all())
            .map_err(|source| StoreError::Io {
                path: log_path,
                source,
            })?;
        // Make the rename and the log's creation durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        self.log = Some(log);
        self.log_len = 0;
        self.log_records = 0;
        Ok(())
    }
}

fn check_hash(path: &Path, a: &Account) -> Result<(), StoreError> {
    if PasswordHash::new(&a.password_hash).is_err() {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("bad password hash for {}", a.nick),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hash_verifies_only_the_right_password_and_hides_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let h = hash_password("s3cret", &mut rng).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("s3cret"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "garbage"));
    }

    fn account(nick: &str, pw: &str, rng: &mut impl RngCore) -> Account {
        Account {
            nick: nick.into(),
            password_hash: hash_password(pw, rng).unwrap(),
            email: format!("{nick}@x"),
            level: Level::User,
            last_seen: 0,
        }
    }

    #[test]
    fn survives_reopen_and_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let (mut log, accounts) = AccountLog::open(dir.path(), false).unwrap();
        assert!(accounts.is_empty());
        log.write(&[Record::Register(account("Alice", "pw", &mut rng))])
            .unwrap();
        // Appended to the log, not yet in the snapshot: a restart replays it.
        assert!(std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() > 0);
        drop(log);
        let (_, s2) = AccountLog::open(dir.path(), false).unwrap();
        assert!(verify_password(
            "pw",
            &s2.get("alice").unwrap().password_hash
        ));
        // The start folded the log into the snapshot.
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0
        );
        std::fs::write(dir.path().join(STORE_FILE), b"{not json").unwrap();
        let err = AccountLog::open(dir.path(), false).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("accounts.json"));
    }

    #[test]
    fn a_lost_snapshot_still_replays_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (mut log, _) = AccountLog::open(dir.path(), false).unwrap();
        log.write(&[Record::Register(account("a", "1", &mut rng))])
            .unwrap();
        drop(log);
        std::fs::remove_file(dir.path().join(STORE_FILE)).unwrap();
        // Without leave to start anew the lost snapshot is an error, as before the log existed.
        assert!(matches!(
            AccountLog::open(dir.path(), false),
            Err(StoreError::Missing { .. })
        ));
        // With it, the acknowledged account in the log survives.
        let (_, acc) = AccountLog::open(dir.path(), true).unwrap();
        assert_eq!(acc.len(), 1);
        assert!(acc.get("a").is_some());
    }

    #[test]
    fn log_replay_keeps_every_record_drops_a_torn_tail_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (mut log, _) = AccountLog::open(dir.path(), false).unwrap();
        log.write(&[
            Record::Register(account("a", "1", &mut rng)),
            Record::Register(account("b", "2", &mut rng)),
        ])
        .unwrap();
        log.write(&[Record::Seen {
            nick: "A".into(),
            at: 77,
        }])
        .unwrap();
        drop(log);
        // A crash in the middle of the next append leaves a line without its newline.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(br#"{"register":{"nick":"c","passw"#).unwrap();
        drop(f);
        let (mut log, acc) = AccountLog::open(dir.path(), false).unwrap();
        assert_eq!(acc.len(), 2);
        assert_eq!(acc.get("a").unwrap().last_seen, 77);
        assert!(acc.get("c").is_none());
        // An older logout time replayed later never moves last_seen back.
        log.write(&[Record::Seen {
            nick: "a".into(),
            at: 5,
        }])
        .unwrap();
        drop(log);
        let (_, acc) = AccountLog::open(dir.path(), false).unwrap();
        assert_eq!(acc.get("a").unwrap().last_seen, 77);
        // A complete line that is not a record is corruption, not a torn write.
        std::fs::write(dir.path().join(LOG_FILE), b"{\"nope\":1}\n").unwrap();
        let err = AccountLog::open(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains(LOG_FILE), "{err}");
    }

    #[test]
    fn a_long_log_is_folded_into_the_snapshot_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (mut log, _) = AccountLog::open(dir.path(), false).unwrap();
        let hash = hash_password("pw", &mut rng).unwrap();
        let batch: Vec<Record> = (0..LOG_COMPACT_RECORDS)
            .map(|i| {
                Record::Register(Account {
                    nick: format!("n{i}"),
                    password_hash: hash.clone(),
                    email: String::new(),
                    level: Level::User,
                    last_seen: 0,
                })
            })
            .collect();
        log.write(&batch).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            0
        );
        let (_, acc) = AccountLog::open(dir.path(), false).unwrap();
        assert_eq!(acc.len(), LOG_COMPACT_RECORDS);
    }
}
