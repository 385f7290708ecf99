//! `common`: the foundation every p2p-lab protocol crate stands on.
//!
//! # Layout
//! - [`hash`]: SHA-1, MD5, base32/base64/hex, KaZaA's UUHash (ContentHash), its file-id checksum, `sig2dat`
//!   links and `kzhash`, plus the MD5 form Napster clients put in share messages. Several hashes are computed
//!   in one read pass by [`hash::MultiHasher`].
//! - [`safe_path`]: turning a peer's requested name into a path that can never leave the shared root.
//! - [`library`]: the shared-folder library (scan, hash cache under a data directory, keywords, stable indices).
//! - [`http`]: the hyper-based HTTP/1.1 byte-range file server the protocol crates plug their routes into,
//!   with upload slots and token-bucket rate caps.
//! - [`multisource`]: the multi-source parallel range downloader (Gnutella, KaZaA) with resume and
//!   verification.
//! - [`stats`]: the one stats record every node writes as JSON, so the lab compares systems on the same figures.
//! - [`telemetry`]: `tracing` setup and the readiness line (`{"event":"listening",...}`) every daemon prints.
//! - [`daemon`]: the command-line options and signal handling every daemon shares.

pub mod daemon;
pub mod hash;
pub mod http;
pub mod library;
pub mod multisource;
pub mod ratelimit;
pub mod safe_path;
pub mod stats;
pub mod telemetry;
