//! FastTrack-style KaZaA node: supernode or ordinary-node role, ContentHash downloads.
//!
//! Re-creates the KaZaA/FastTrack network as reverse-engineered by giFT-FastTrack and MLDonkey
//! (`shared/protocols/kazaa.md`). Layout, per the project's three-layer architecture:
//! - [`codec`]: pure encode/decode of the handshake, framing and messages (§2), no I/O;
//! - [`protocol`]: sans-I/O state machines: the SN's index of its children's shares, query matching,
//!   SN↔SN forwarding and result waves, and the ON's choice of SN (§1), with time and RNG passed in;
//! - [`node`]: the tokio shell: SN daemon with SN↔SN links, the ON's session (register, search), the
//!   ON's `/.hash=` HTTP server, multi-source downloads by hash, push (`GIVE`).
//!
//! `--role auto` and the participation-level upload queue are not written yet: see `README.md`.

pub mod codec;
pub mod node;
pub mod protocol;
