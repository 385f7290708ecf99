//! Socket options that no safe binding in the workspace exposes (nix 0.30, rustix 1.1 and socket2 0.6
//! lack them), declared through nix's public `sockopt_impl!`: nix's own setter code, this module only
//! names the level, the option and its value type (an `int`, as tcp(7) documents).

use std::os::fd::AsFd;

use nix::{setsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// `TCP_DEFER_ACCEPT` (tcp(7)): the kernel completes the handshake but queues the connection for
    /// `accept` only once data arrives (or the given seconds pass), so the accept loop never wakes for
    /// a connection whose request is still on its way.
    TcpDeferAccept,
    SetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_DEFER_ACCEPT,
    libc::c_int
);

/// Sets `TCP_DEFER_ACCEPT` on a listening socket: connections are handed over once their first bytes
/// are in, or after `secs` seconds without any.
pub(crate) fn defer_accept(listener: &impl AsFd, secs: u16) -> nix::Result<()> {
    nix::sys::socket::setsockopt(listener, TcpDeferAccept, &libc::c_int::from(secs))
}
