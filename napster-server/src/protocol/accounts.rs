//! Registered accounts (notes §2 types 2/6 and §7 "Nick squatting"): nick, Argon2id password hash, email,
//! level and last-seen time.
//!
//! [`FileStore`] keeps them in `accounts.json` under the data directory, rewritten atomically (temporary
//! file, fsync, rename, directory fsync) at every registration, so a crash never leaves half a file. A store
//! that exists but cannot be parsed is an error naming the file: the server refuses to start rather than
//! silently forget registrations. Passwords never touch the disk in clear.

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

/// The accounts, in memory and (optionally) persisted to a file.
#[derive(Debug, Default)]
pub struct FileStore {
    path: Option<PathBuf>,
    by_nick: HashMap<String, Account>,
}

impl FileStore {
    /// A store that lives only in memory (tests, `--data-dir` not wanted).
    pub fn in_memory() -> Self {
        FileStore::default()
    }

    /// Opens `dir/accounts.json`. A missing store is created empty only on a first start (no
    /// [`STORE_MARKER`] in `dir`) or when `allow_new` says an empty store is wanted; otherwise it is
    /// [`StoreError::Missing`]. The marker is (re)written whenever a store exists, so stores from before the
    /// marker get one on their next start.
    pub fn open(dir: &Path, allow_new: bool) -> Result<Self, StoreError> {
        let path = dir.join(STORE_FILE);
        let marker = dir.join(STORE_MARKER);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut store = FileStore {
            path: Some(path.clone()),
            by_nick: HashMap::new(),
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
                    if PasswordHash::new(&a.password_hash).is_err() {
                        return Err(StoreError::Corrupt {
                            path,
                            reason: format!("bad password hash for {}", a.nick),
                        });
                    }
                    store.by_nick.insert(a.nick.to_ascii_lowercase(), a);
                }
                tracing::info!(path = %path.display(), accounts = store.by_nick.len(), "account store loaded");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !allow_new && marker.exists() {
                    return Err(StoreError::Missing { path, marker });
                }
                std::fs::create_dir_all(dir).map_err(io)?;
                store.save()?;
                tracing::warn!(path = %path.display(), "new empty account store created");
            }
            Err(e) => return Err(io(e)),
        }
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
        Ok(store)
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

    /// Adds an account and persists at once.
    pub fn insert(&mut self, a: Account) -> Result<(), StoreError> {
        let key = a.nick.to_ascii_lowercase();
        let old = self.by_nick.insert(key.clone(), a);
        if let Err(e) = self.save() {
            // Keep memory and disk in agreement: an account that did not reach the disk does not exist.
            match old {
                Some(o) => self.by_nick.insert(key, o),
                None => self.by_nick.remove(&key),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Records a logout time in memory (persisted with the next save or [`FileStore::flush`]).
    pub fn touch(&mut self, nick: &str, unix: u64) {
        if let Some(a) = self.by_nick.get_mut(&nick.to_ascii_lowercase()) {
            a.last_seen = unix;
        }
    }

    /// Writes the store (at shutdown, for last-seen times).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.save()
    }

    fn save(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut accounts: Vec<Account> = self.by_nick.values().cloned().collect();
        accounts.sort_by(|a, b| a.nick.cmp(&b.nick));
        let json = serde_json::to_vec_pretty(&Disk {
            version: STORE_VERSION,
            accounts,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            // Make the rename itself durable; a failure here is not worth refusing the registration for.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
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

    #[test]
    fn survives_reopen_and_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut s = FileStore::open(dir.path(), false).unwrap();
        s.insert(Account {
            nick: "Alice".into(),
            password_hash: hash_password("pw", &mut rng).unwrap(),
            email: "a@x".into(),
            level: Level::User,
            last_seen: 0,
        })
        .unwrap();
        let s2 = FileStore::open(dir.path(), false).unwrap();
        assert!(verify_password(
            "pw",
            &s2.get("alice").unwrap().password_hash
        ));
        std::fs::write(dir.path().join(STORE_FILE), b"{not json").unwrap();
        let err = FileStore::open(dir.path(), false).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("accounts.json"));
    }
}
