//! BEP 15 front end: one socket, datagrams received and answered in batches with `recvmmsg`/`sendmmsg`
//! (one system call per batch instead of two per packet: on loopback the syscalls are most of the cost),
//! each answered by [`crate::protocol::service::Service::udp`] (which enforces connection ids and the
//! no-amplification rule).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{unix_secs, Shared};
use crate::codec::udp::MAX_PACKET_LEN;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 32;
/// Batches handled per readiness event before yielding to other tasks.
const BURST: usize = 16;

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

pub(super) async fn serve(
    sock: UdpSocket,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One byte more than the largest packet accepted, so an oversized datagram is seen as oversized.
    let mut bufs = vec![[0u8; MAX_PACKET_LEN + 1]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1024)).collect();
    let mut meta: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let fd = sock.as_raw_fd();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = sock.readable() => r?,
        }
        for _ in 0..BURST {
            meta.clear();
            let got = sock.try_io(Interest::READABLE, || {
                // nix's headers hold raw pointers (not `Send`): built per batch, never held across an await.
                let mut recv_hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                    bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                let res = recvmmsg(
                    fd,
                    &mut recv_hdrs,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(std::io::Error::from)?;
                for r in res {
                    if let Some(a) = r.address.as_ref().and_then(to_std) {
                        meta.push((r.bytes, a));
                    }
                }
                Ok(())
            });
            match got {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply and the like: not fatal.
                    tracing::debug!(cause = %e, "recvmmsg failed");
                    continue;
                }
            }
            if meta.is_empty() {
                continue;
            }
            {
                let now = Instant::now();
                let secs = unix_secs();
                let mut svc = shared.service();
                for (i, (n, src)) in meta.iter().enumerate() {
                    let o = svc.udp(now, secs, *src, &bufs[i][..*n], &mut outs[i]);
                    shared.count(o, *n, outs[i].len());
                }
            }
            let idx: Vec<usize> = (0..meta.len()).filter(|&i| !outs[i].is_empty()).collect();
            if idx.is_empty() {
                continue;
            }
            let iovs: Vec<[IoSlice<'_>; 1]> =
                idx.iter().map(|&i| [IoSlice::new(&outs[i])]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = idx
                .iter()
                .map(|&i| Some(SockaddrStorage::from(meta[i].1)))
                .collect();
            let sent = {
                let mut send_hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                match sendmmsg(
                    fd,
                    &mut send_hdrs,
                    &iovs,
                    &addrs,
                    [],
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(r) => r.count(),
                    Err(e) => {
                        tracing::debug!(cause = %e, "sendmmsg failed");
                        0
                    }
                }
            };
            drop(iovs);
            // Whatever the batch call did not take (full send buffer) goes out one by one, waiting.
            for &i in &idx[sent..] {
                if let Err(e) = sock.send_to(&outs[i], meta[i].1).await {
                    tracing::debug!(cause = %e, src = %meta[i].1, "send_to failed");
                    shared.stats.error("send");
                }
            }
        }
    }
}
