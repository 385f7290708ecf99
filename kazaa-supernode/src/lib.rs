//! FastTrack-style KaZaA node: supernode, ordinary or auto (self-promoting) role, ContentHash downloads.
//!
//! Re-creates the KaZaA/FastTrack network as reverse-engineered by giFT-FastTrack and MLDonkey
//! (`shared/protocols/kazaa.md`). Layout, per the project's three-layer architecture:
//! - [`codec`]: pure encode/decode of the handshake, framing and messages (§2), no I/O;
//! - [`protocol`]: sans-I/O state machines: the SN's index of its children's shares, query matching,
//!   SN↔SN forwarding and result waves, push routing, the ON's choice of SN (§1), promotion to SN and
//!   the participation-level upload queue (re-created rules), with time and RNG passed in;
//! - [`node`]: the tokio shell: SN daemon with SN↔SN links and connect-back probes, the ON's session
//!   (register, search), the ON's `/.hash=` HTTP server behind the upload queue, multi-source downloads
//!   by hash, push (`GIVE`).
//!
//! Not done (see `README.md`): the FastTrack cipher (pass-through seam), demotion, HTTP on an SN's port.

pub mod codec;
pub mod node;
pub mod protocol;
