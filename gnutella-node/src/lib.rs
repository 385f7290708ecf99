//! Gnutella 0.6 servent: TTL-scoped flooding, ultrapeer/leaf roles, QRP, and a classic 0.4 mode.
//!
//! # Layout
//! - [`codec`]: pure encode/decode of descriptors, GGEP, handshake text and QRP tables (no I/O).
//! - [`protocol`]: sans-I/O state machines: typed handshake states, the routing servent (duplicate table,
//!   TTL rules, reverse-path routing, push routes, pong cache, QRP roles, output queues) and an in-memory
//!   simulator [`protocol::sim`].
//! - [`node`]: the tokio shell: sockets, per-direction deflate, timers, host cache, the CLI search.
//!
//! Specs: the Gnutella 0.6 draft (RFC-Gnutella 0.6), GGEP 0.51, QRP 0.1 (LimeWire), HUGE 0.94, and the project
//! notes `shared/protocols/gnutella.md` (checked against gtk-gnutella 1.2.3).

pub mod codec;
pub mod node;
pub mod protocol;
