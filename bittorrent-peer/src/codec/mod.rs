//! Pure encoders and decoders: the peer wire ([`peer`], BEP 3 + BEP 6 + BEP 10 framing), BEP 10/9
//! extension payloads ([`ext`]), BEP 11 peer exchange ([`pex`]) and tracker
//! messages ([`tracker`], BEP 3 HTTP, BEP 23 compact peers, BEP 15 UDP). No I/O, no tokio.

pub mod ext;
pub mod peer;
pub mod pex;
pub mod tracker;
