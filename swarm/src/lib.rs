//! The lab: starts a local multi-protocol swarm, runs the same workload through each system's real
//! binaries, and reports the comparison (issue 8; the claims come from `shared/tutorial/p2p-tutorial.txt`
//! and `shared/protocols/gnutella.md` §8).
//!
//! - [`scenario`]: every knob of a run, from TOML.
//! - [`corpus`]: the seeded corpus with Zipf-like popularity.
//! - [`supervisor`]: process groups, readiness lines, cleanup on Ctrl-C.
//! - [`drivers`]: one [`drivers::Driver`] per system (Napster and BitTorrent wired so far).
//! - [`lab`]: the phases (start, searches, flash crowd, churn, stats).
//! - [`overlay`]: the overlay graph of each system, from the links the nodes report, and its verdicts.
//! - [`results`], [`figures`], [`report`]: raw figures, statistics, table and HTML.

pub mod corpus;
pub mod drivers;
pub mod figures;
pub mod lab;
pub mod overlay;
pub mod report;
pub mod results;
pub mod scenario;
pub mod supervisor;
