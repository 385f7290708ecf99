//! The tracker's logic, sans I/O (no async runtime, no clocks, no sockets): time and a seeded RNG are passed in.
//!
//! - [`swarm`]: torrents, peers, selection, expiry, counters, the torrent cap and its eviction policy.
//! - [`conn_id`]: BEP 15 connection ids (keyed MAC of IP and time bucket) and the no-amplification rule.
//! - [`service`]: raw request bytes in, reply bytes out, for HTTP (BEP 3/48) and UDP (BEP 15).

pub mod conn_id;
pub mod service;
pub mod swarm;
