//! Sans-I/O state machines: nothing here touches a socket, a clock or the OS RNG.
//!
//! - [`handshake`]: the 0.6 (and 0.4) handshake as consuming typed states.
//! - [`mesh`]: the download mesh (alternate locations by SHA-1).
//! - [`queue`]: the per-connection prioritised output queue.
//! - [`servent`]: routing, roles, QRP, pong cache, searches.
//! - [`sim`]: an in-memory network of servents on a virtual clock, for tests and the lab.

pub mod handshake;
pub mod mesh;
pub mod queue;
pub mod servent;
pub mod sim;

pub use handshake::{PeerKind, Role};
pub use servent::{Config, ConnId, Event, Servent, SharedFile};

#[cfg(test)]
mod tests;
