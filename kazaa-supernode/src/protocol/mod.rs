//! Sans-I/O protocol layer: state machines with time and RNG passed in, no sockets, no tokio.
//!
//! - [`matching`]: does a file answer a query (§2 comparisons and realms; rules in the README);
//! - [`index`]: an SN's index of its children's 0x22 shares;
//! - [`supernode`]: the SN: login burst, local answers, SN↔SN forwarding with duplicate suppression
//!   and a hop limit, result waves and "up to x", push relay;
//! - [`promotion`]: when an ON with `--role auto` becomes an SN (re-created rule);
//! - [`upload_queue`]: who gets the next free upload slot (participation level, re-created);
//! - [`ordinary`]: the ON: node cache, probing and choosing an SN, failover and hopping, grouping
//!   results by hash and pinning to a trusted hash.

pub mod index;
pub mod matching;
pub mod ordinary;
pub mod promotion;
pub mod supernode;
pub mod upload_queue;

#[cfg(test)]
mod sim;

/// A session as the node layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);
