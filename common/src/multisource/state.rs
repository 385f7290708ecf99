//! The resume state file: which blocks of the partial file are known to be on disk.
//!
//! A small JSON document next to the partial file (`<dest>.part` + `<dest>.state`):
//!
//! ```text
//! {"version":1,"size":2147483648,"block_size":1048576,"expected":"sha1:<hex>","done":"<hex bitfield>"}
//! ```
//!
//! The bitfield is one bit per block, most significant bit first (as BitTorrent's `bitfield`). Crash safety
//! comes from the order of writes: the partial file is `fsync`ed *before* a state naming its new blocks is
//! written, and the state is written to a temporary file, `fsync`ed and renamed over the old one (then the
//! directory is synced), so after a crash the state file is either the old or the new one, and every block
//! it calls done is on disk. Blocks finished after the last save are simply fetched again.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Layout version of the state file.
pub(crate) const STATE_VERSION: u32 = 1;

/// Largest state file we are willing to read (a 2^40-byte file in 16 KiB blocks needs 16 MiB of hex).
pub(crate) const MAX_STATE_FILE: u64 = 32 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub(crate) version: u32,
    pub(crate) size: u64,
    pub(crate) block_size: u64,
    /// The expected hash as text, so a state file is never applied to another content.
    pub(crate) expected: String,
    /// Hex bitfield of finished blocks.
    pub(crate) done: String,
}

impl ResumeState {
    pub(crate) fn new(size: u64, block_size: u64, expected: String, done: &[bool]) -> Self {
        let mut bits = vec![0u8; done.len().div_ceil(8)];
        for (i, d) in done.iter().enumerate() {
            if *d {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
        }
        ResumeState {
            version: STATE_VERSION,
            size,
            block_size,
            expected,
            done: hex::encode(bits),
        }
    }

    /// The done flags, if this state describes the same content, size and block size; `None` otherwise
    /// (the caller then starts from scratch rather than trust a mismatched partial file).
    pub(crate) fn done_blocks(
        &self,
        size: u64,
        block_size: u64,
        expected: &str,
        blocks: usize,
    ) -> Option<Vec<bool>> {
        if self.version != STATE_VERSION
            || self.size != size
            || self.block_size != block_size
            || self.expected != expected
        {
            return None;
        }
        let bits = hex::decode(&self.done).ok()?;
        if bits.len() != blocks.div_ceil(8) {
            return None;
        }
        Some(
            (0..blocks)
                .map(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
                .collect(),
        )
    }

    /// Reads a state file; `Ok(None)` if there is none, or it is unreadable garbage (logged by the caller).
    pub(crate) fn load(path: &Path) -> std::io::Result<Option<Self>> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if f.metadata()?.len() > MAX_STATE_FILE {
            return Ok(None);
        }
        let text = std::fs::read(path)?;
        Ok(serde_json::from_slice(&text).ok())
    }

    /// Writes atomically: temporary file, fsync, rename, fsync of the directory.
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("state.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Makes the rename itself durable; not every filesystem allows opening a directory, so a
            // failure here is not an error.
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
    use proptest::prelude::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state");
        assert_eq!(ResumeState::load(&path).unwrap(), None);
        let done = vec![true, false, true, true, false, false, false, false, true];
        let st = ResumeState::new(90, 10, "sha1:ab".into(), &done);
        st.save(&path).unwrap();
        let back = ResumeState::load(&path).unwrap().unwrap();
        assert_eq!(back.done_blocks(90, 10, "sha1:ab", 9), Some(done));
        assert_eq!(
            back.done_blocks(90, 10, "sha1:cd", 9),
            None,
            "other content"
        );
        assert_eq!(back.done_blocks(91, 10, "sha1:ab", 10), None, "other size");
        assert!(!dir.path().join("x.state.tmp").exists());
    }

    #[test]
    fn garbage_state_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(ResumeState::load(&path).unwrap(), None);
        let bad = ResumeState {
            done: "zz".into(),
            ..ResumeState::new(10, 10, "e".into(), &[true])
        };
        assert_eq!(bad.done_blocks(10, 10, "e", 1), None);
    }

    proptest! {
        #[test]
        fn bitfield_round_trips(done in proptest::collection::vec(any::<bool>(), 1..300)) {
            let st = ResumeState::new(done.len() as u64, 1, "e".into(), &done);
            prop_assert_eq!(st.done_blocks(done.len() as u64, 1, "e", done.len()), Some(done));
        }

        #[test]
        fn arbitrary_json_text_never_panics(text in ".{0,200}") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            std::fs::write(&path, text.as_bytes()).unwrap();
            if let Some(st) = ResumeState::load(&path).unwrap() {
                let _ = st.done_blocks(10, 1, "e", 10);
            }
        }
    }
}
