//! BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 7 IPv6 peers, BEP 48 scrape, BEP 15 UDP.
//!
//! # Layout
//! - [`codec`]: pure encode/decode of the HTTP query strings, bencoded replies and BEP 15 UDP packets.
//! - `protocol`: the sans-I/O swarm state (peer lists, counters, expiry, eviction) and the UDP connection-id
//!   validator; time and randomness are passed in.
//! - `node`: the tokio shell: hyper HTTP server, UDP socket loop, timers, stats, state file.

pub mod codec;
pub mod protocol;
pub mod node;
