//! Wire formats of the tracker, pure encode/decode: no I/O, no async runtime.
//!
//! - [`http`]: BEP 3 announce and BEP 48 scrape query strings, and their bencoded replies (BEP 3 dictionary
//!   peers, BEP 23 compact peers, BEP 7 `peers6`), written by a small hand-written bencode writer that the
//!   tests check against `bendy` as an oracle.
//! - [`head`]: the HTTP/1.x request-head reader and reply framing of the tracker port.
//! - [`udp`]: BEP 15 UDP tracker packets (connect, announce, scrape, error).
//!
//! Every size limit is a named constant; every decoder returns an error for bad input, never panics.

pub mod head;
pub mod http;
pub mod udp;

use std::fmt;

/// A torrent's SHA-1 info-hash (BEP 3), as the 20 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// A peer's self-chosen 20-byte id (BEP 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", hex::encode(self.0))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", hex::encode(self.0))
    }
}

impl InfoHash {
    /// Parses 40 hex digits (the form used in allow-lists, the state file and the stats page).
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(InfoHash(out))
    }
}

/// What a peer says it is doing (BEP 3 `event`, BEP 15 event numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Event {
    /// A regular re-announce (absent or empty `event`; UDP 0).
    #[default]
    None,
    /// The download finished (UDP 1).
    Completed,
    /// The first announce of a session (UDP 2).
    Started,
    /// The peer is leaving (UDP 3).
    Stopped,
}
