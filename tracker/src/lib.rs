//! BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 7 IPv6 peers, BEP 48 scrape, BEP 15 UDP.
//!
//! # Layout
//! - [`codec`]: pure encode/decode of the HTTP query strings, bencoded replies and BEP 15 UDP packets.
//! - [`protocol`]: the sans-I/O swarm state (peer lists, counters, expiry, eviction), the UDP connection-id
//!   validator and the request-to-reply service; time and randomness are passed in.
//! - [`node`]: the tokio shell: its own HTTP/1.x front end, batched UDP socket loop, timers, stats, allow-list and
//!   state files. Only this layer does I/O.

pub mod codec;
pub mod node;
pub mod protocol;
