//! The tracker's files: the allow-list (one 40-hex-digit info-hash per line, `#` comments) and the state
//! file (JSON, the per-torrent `downloaded` counters, so they survive a restart; peers are not saved
//! because they re-announce).
//!
//! ```text
//! {"schema":1,"torrents":{"<40 hex>":{"downloaded":3},...}}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::http::ScrapeCounts;
use crate::codec::InfoHash;

/// Layout version of the state file.
pub const STATE_SCHEMA: u32 = 1;
/// Largest allow-list or state file read (both hold ~60 bytes per torrent: about a million torrents).
pub const MAX_FILE_LEN: u64 = 64 << 20;

/// A file the tracker cannot use.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Cannot read or write it.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its content is wrong.
    #[error("{path}: {msg}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong, with the line number for an allow-list.
        msg: String,
    },
}

fn read_bounded(path: &Path) -> Result<String, FileError> {
    let io = |source| FileError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_LEN {
        return Err(FileError::Bad {
            path: path.display().to_string(),
            msg: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Parses an allow-list text: one info-hash in hex per line; blank lines and `#` comments are skipped.
pub fn parse_allow_list(text: &str) -> Result<HashSet<InfoHash>, String> {
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let h = InfoHash::from_hex(line)
            .filter(|_| line.len() == 40)
            .ok_or_else(|| format!("line {}: not a 40-hex-digit info-hash", i + 1))?;
        set.insert(h);
    }
    Ok(set)
}

/// Reads an allow-list file.
pub fn read_allow_list(path: &Path) -> Result<HashSet<InfoHash>, FileError> {
    parse_allow_list(&read_bounded(path)?).map_err(|msg| FileError::Bad {
        path: path.display().to_string(),
        msg,
    })
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    schema: u32,
    torrents: BTreeMap<String, TorrentState>,
}

#[derive(Serialize, Deserialize)]
struct TorrentState {
    downloaded: u64,
}

/// Reads the state file: `(info-hash, downloaded)` pairs. A missing file is an empty state.
pub fn read_state(path: &Path) -> Result<Vec<(InfoHash, u64)>, FileError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read_bounded(path)?;
    let bad = |msg: String| FileError::Bad {
        path: path.display().to_string(),
        msg,
    };
    let st: StateFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if st.schema != STATE_SCHEMA {
        return Err(bad(format!("unknown schema {}", st.schema)));
    }
    st.torrents
        .into_iter()
        .map(|(k, v)| {
            InfoHash::from_hex(&k)
                .filter(|_| k.len() == 40)
                .map(|h| (h, v.downloaded))
                .ok_or_else(|| bad(format!("bad info-hash {k:?}")))
        })
        .collect()
}

/// Writes the state file atomically (temporary file + rename): torrents with a non-zero counter.
pub fn write_state(path: &Path, counters: &[(InfoHash, ScrapeCounts)]) -> std::io::Result<()> {
    let st = StateFile {
        schema: STATE_SCHEMA,
        torrents: counters
            .iter()
            .filter(|(_, c)| c.downloaded > 0)
            .map(|(h, c)| {
                (
                    h.to_string(),
                    TorrentState {
                        downloaded: c.downloaded,
                    },
                )
            })
            .collect(),
    };
    let json = serde_json::to_vec(&st).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_format() {
        let text = "# torrents\n\n0123456789abcdef0123456789ABCDEF01234567  # a comment\n";
        let set = parse_allow_list(text).unwrap();
        assert_eq!(set.len(), 1);
        assert!(
            set.contains(&InfoHash::from_hex("0123456789abcdef0123456789abcdef01234567").unwrap())
        );
        assert_eq!(
            parse_allow_list("ok\n").unwrap_err(),
            "line 1: not a 40-hex-digit info-hash"
        );
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(read_state(&p).unwrap().is_empty());
        let c = ScrapeCounts {
            complete: 1,
            downloaded: 7,
            incomplete: 0,
        };
        write_state(
            &p,
            &[
                (InfoHash([3; 20]), c),
                (InfoHash([4; 20]), ScrapeCounts::default()),
            ],
        )
        .unwrap();
        assert_eq!(read_state(&p).unwrap(), vec![(InfoHash([3; 20]), 7)]);
        std::fs::write(&p, "{not json").unwrap();
        assert!(matches!(read_state(&p), Err(FileError::Bad { .. })));
    }
}
