//! BitTorrent metainfo tool, seeder and leecher: rarest-first and tit-for-tat (BEP 3, with BEP 6, 9, 10,
//! 12, 15, 23 pieces where noted).
//!
//! # Layout
//! - [`metainfo`]: .torrent files (BEP 3, BEP 12 tiers) and magnet links; [`bencode`] helpers over `bendy`.
//! - [`codec`]: pure encode/decode of the peer wire (BEP 3, BEP 6) and of tracker messages (BEP 3 HTTP,
//!   BEP 23 compact peers, BEP 15 UDP). No I/O.
//! - [`protocol`]: sans-I/O state machines: piece picker, choker, piece state and verification. Time and
//!   randomness are passed in.
//! - [`storage`]: the torrent's files on disk (pre-allocated, pieces mapped across file boundaries, resume).
//! - [`node`]: the tokio shell owning sockets, timers and tasks.

pub mod bencode;
pub mod codec;
pub mod metainfo;
pub mod node;
pub mod protocol;
pub mod storage;
pub mod types;
