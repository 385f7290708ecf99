//! OpenNap-compatible Napster directory server and a Napster client.
//!
//! # Layout
//! - [`codec`]: framing `[len u16 LE][type u16 LE][payload]`, the quoted-field tokenizer, the little-endian IP
//!   fields and typed client messages. Pure functions, no I/O.
//! - [`protocol`]: the sans-I/O server ([`protocol::Server`]): accounts, shares and the inverted search index,
//!   download brokering (203→607→608→204, firewalled 500→607→608→501), chat, hotlists, abuse control. Time and
//!   randomness are passed in.
//! - [`node`]: the tokio shell: sockets, per-connection tasks, bounded output queues, flood throttling.
//!
//! The protocol is described in `shared/protocols/napster.md` (summarising OpenNap's `napster.txt`).

pub mod codec;
pub mod node;
pub mod protocol;
