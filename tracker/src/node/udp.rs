//! BEP 15 front end: one socket, datagrams drained in bursts while the socket is readable, each answered
//! by [`crate::protocol::service::Service::udp`] (which enforces connection ids and the no-amplification rule).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{unix_secs, Shared};
use crate::codec::udp::MAX_PACKET_LEN;

/// Datagrams handled per readiness event before yielding to other tasks.
const BURST: usize = 256;

pub(super) async fn serve(
    sock: UdpSocket,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One byte more than the largest packet accepted, so an oversized datagram is seen as oversized.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut out = Vec::with_capacity(2048);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = sock.readable() => r?,
        }
        for _ in 0..BURST {
            let (n, src) = match sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply and the like: not fatal.
                    tracing::debug!(cause = %e, "recv_from failed");
                    continue;
                }
            };
            let o = shared
                .service()
                .udp(Instant::now(), unix_secs(), src, &buf[..n], &mut out);
            shared.count(o, n, out.len());
            if out.is_empty() {
                continue;
            }
            match sock.try_send_to(&out, src) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = sock.send_to(&out, src).await {
                        tracing::debug!(cause = %e, %src, "send_to failed");
                    }
                }
                Err(e) => {
                    tracing::debug!(cause = %e, %src, "send_to failed");
                    shared.stats.error("send");
                }
            }
        }
    }
}
