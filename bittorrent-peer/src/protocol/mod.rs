//! Sans-I/O state machines (no sockets, no clocks, no global RNG): time is passed in as
//! `std::time::Instant` values chosen by the caller and randomness as a seeded `rand::Rng`.
//!
//! - [`bitfield`]: the have-set of a peer or of ourselves.
//! - [`picker`]: which block to request next (BEP 3 "piece downloading strategy": random first, rarest
//!   first, strict priority, endgame).
//! - [`choker`]: who we upload to (BEP 3 "choking": 4 best + 1 optimistic, anti-snubbing).
//! - [`pex`]: BEP 11 peer exchange (what each peer was told, once a minute; contacts to dial).
//! - [`pieces`]: piece completion, SHA-1 verification outcome and bad-peer accounting.

pub mod bitfield;
pub mod choker;
pub mod pex;
pub mod picker;
pub mod pieces;
