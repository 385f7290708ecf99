//! Connection tasks: the handshake (BEP 3), then a reader that decodes messages straight out of its
//! receive buffer into the shared torrent state, and a writer that drains the connection's outbox and
//! sends requested blocks with `sendfile` (the page cache goes to the socket without a copy in our
//! memory), each `piece` header written just before its block while the socket is corked, so headers
//! and blocks leave in full segments.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use common::stats::LinkDir;

use crate::codec::peer::{piece_header, reserved, BlockRef, Handshake, Msg, HANDSHAKE_LEN};
use crate::node::torrent::{lock, Outbox, Shared, Torrent};
use crate::protocol::picker::PeerKey;
use crate::storage::Storage;

/// Time allowed for the TCP connect and the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent for this long is closed (BEP 3 suggests two minutes of keep-alives).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// We send a keep-alive after this much silence.
pub const KEEPALIVE: Duration = Duration::from_secs(90);
/// Bytes of blocks the writer gathers into one `write` call.
pub const WRITE_BATCH: usize = 256 << 10;
/// Receive buffer kept free before each read.
const READ_RESERVE: usize = 256 << 10;

/// Why a connection attempt failed before it joined the torrent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Network error or timeout.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// Bad or foreign handshake.
    #[error("handshake: {0}")]
    Handshake(&'static str),
    /// The torrent refused the peer (banned, duplicate, ourselves, full).
    #[error("refused: {0}")]
    Refused(&'static str),
}

async fn read_handshake(s: &mut TcpStream) -> Result<Handshake, ConnectError> {
    let mut b = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut b).await?;
    match Handshake::decode(&b) {
        Ok(Some((h, _))) => Ok(h),
        _ => Err(ConnectError::Handshake("not a BitTorrent handshake")),
    }
}

/// Dials `addr`, exchanges handshakes and runs the connection until it ends.
pub async fn outgoing(
    shared: Shared,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let (info_hash, our_id) = {
        let t = lock(&shared);
        (t.meta.info_hash, t.peer_id)
    };
    let mut s = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
    s.set_nodelay(true)?;
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        s.write_all(&Handshake::new(info_hash, our_id).to_bytes())
            .await?;
        read_handshake(&mut s).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"))??;
    if theirs.info_hash != info_hash {
        return Err(ConnectError::Handshake("different info_hash"));
    }
    run(shared, s, addr, LinkDir::Out, theirs, shutdown).await
}

/// Answers an incoming connection: their handshake first, then ours.
pub async fn incoming(
    shared: Shared,
    mut s: TcpStream,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let (info_hash, our_id) = {
        let t = lock(&shared);
        (t.meta.info_hash, t.peer_id)
    };
    s.set_nodelay(true)?;
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut s))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"))??;
    if theirs.info_hash != info_hash {
        return Err(ConnectError::Handshake("unknown info_hash"));
    }
    s.write_all(&Handshake::new(info_hash, our_id).to_bytes())
        .await?;
    run(shared, s, addr, LinkDir::In, theirs, shutdown).await
}

/// Runs a connection whose handshakes are done. `addr` is the address dialled (`Out`) or the remote
/// socket (`In`): the link's key in the stats file's neighbour list.
async fn run(
    shared: Shared,
    s: TcpStream,
    addr: SocketAddr,
    dir: LinkDir,
    theirs: Handshake,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let fast = theirs.has(reserved::FAST);
    let cancel = shutdown.child_token();
    let outbox = Arc::new(Outbox::new(cancel.clone()));
    let (key, storage, _link) = {
        let mut t = lock(&shared);
        t.stats.msg_in("handshake", HANDSHAKE_LEN);
        t.stats.msg_out("handshake", HANDSHAKE_LEN);
        let key = t
            .add_peer(
                addr,
                theirs.peer_id,
                fast,
                theirs.has(reserved::EXTENSION),
                outbox.clone(),
                Instant::now(),
            )
            .map_err(ConnectError::Refused)?;
        // An overlay link until this function returns (after the peer is forgotten).
        let link = t.stats.link_guard(addr, dir, "peer");
        (key, t.storage.clone(), link)
    };
    let span = tracing::debug_span!("peer", %addr, key);
    async move {
        tracing::debug!(fast, "connected");
        let (rd, wr) = s.into_split();
        let writer = tokio::spawn(
            writer(wr, outbox.clone(), shared.clone(), key, storage).in_current_span(),
        );
        let r = reader(rd, &shared, key, &cancel).await;
        match &r {
            Ok(()) => tracing::debug!("closed"),
            Err(e) => tracing::debug!(cause = %e, "dropped"),
        }
        if r.is_err() {
            lock(&shared).stats.error("peer_protocol");
        }
        peer_left(&mut lock(&shared), key, Instant::now());
        cancel.cancel();
        let _ = writer.await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// A connection ended: forget it, and give its upload slot to a waiting peer at once rather than at the
/// next choke tick (in a flash crowd, leechers that finish leave one after the other and the seeder's
/// slots would stay idle for up to a second each time).
fn peer_left(t: &mut Torrent, key: PeerKey, now: Instant) {
    t.remove_peer(key);
    t.run_choker(now);
}

async fn reader(
    mut rd: OwnedReadHalf,
    shared: &Shared,
    key: PeerKey,
    cancel: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut buf = BytesMut::with_capacity(READ_RESERVE * 2);
    loop {
        buf.reserve(READ_RESERVE);
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(IDLE_TIMEOUT, rd.read_buf(&mut buf)) => r??,
        };
        if n == 0 {
            return Ok(());
        }
        let mut used = 0;
        {
            let mut t = lock(shared);
            let now = Instant::now();
            // The blocks of this read are written together (one vectored write per run), then hashed.
            let mut accepted = Vec::new();
            let mut decode = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                while let Some((m, len)) = Msg::decode(&buf[used..])? {
                    t.on_msg_batched(key, m, now, &mut accepted)?;
                    used += len;
                }
                Ok(())
            };
            let r = decode();
            // Accepted blocks are written even when a later message breaks the protocol.
            t.write_accepted(&mut accepted);
            r?;
            t.fill_requests(key);
        }
        buf.advance(used);
    }
}

async fn writer(
    mut wr: OwnedWriteHalf,
    ob: Arc<Outbox>,
    shared: Shared,
    key: PeerKey,
    storage: Arc<Storage>,
) -> io::Result<()> {
    let mut blocks: Vec<BlockRef> = Vec::new();
    let mut head: Vec<u8> = Vec::with_capacity(4096);
    let mut zero_copy = ZeroCopy::default();
    loop {
        blocks.clear();
        let ctrl = ob.take(WRITE_BATCH, &mut blocks);
        if ctrl.is_empty() && blocks.is_empty() {
            tokio::select! {
                _ = ob.cancel.cancelled() => return Ok(()),
                _ = ob.notify.notified() => {}
                _ = tokio::time::sleep(KEEPALIVE) => {
                    ob.push(&Msg::KeepAlive);
                }
            }
            continue;
        }
        let send = async {
            if blocks.is_empty() {
                return wr.write_all(&ctrl).await;
            }
            // Corked: the 13-byte headers wait for their blocks instead of leaving as tiny segments.
            set_cork(&wr, true);
            head.clear();
            head.extend_from_slice(&ctrl);
            for b in &blocks {
                head.extend_from_slice(&piece_header(b.index, b.begin, b.len));
                wr.write_all(&head).await?;
                head.clear();
                for (file, off, n) in storage.segments(b.index, b.begin, b.len)? {
                    zero_copy.send(&mut wr, file, off, n).await?;
                }
            }
            set_cork(&wr, false);
            Ok(())
        };
        tokio::select! {
            _ = ob.cancel.cancelled() => return Ok(()),
            r = send => r?,
        }
        if !blocks.is_empty() {
            lock(&shared).on_uploaded(key, &blocks);
        }
    }
}

fn set_cork(wr: &OwnedWriteHalf, on: bool) {
    // Only an optimisation: without it the data still goes out, in more segments.
    if let Err(e) = rustix::net::sockopt::set_tcp_cork(wr.as_ref(), on) {
        tracing::trace!(cause = %e, "TCP_CORK");
    }
}

/// Sends file ranges with `sendfile`, falling back to read-and-write (through one reused buffer) for
/// the rest of the connection when the file system or socket does not support it.
#[derive(Default)]
struct ZeroCopy {
    unsupported: bool,
    buf: Vec<u8>,
}

impl ZeroCopy {
    async fn send(
        &mut self,
        wr: &mut OwnedWriteHalf,
        file: &File,
        mut off: u64,
        mut n: usize,
    ) -> io::Result<()> {
        while n > 0 && !self.unsupported {
            let sock = wr.as_ref();
            sock.writable().await?;
            let r = sock.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(sock, file, Some(&mut off), n).map_err(io::Error::from)
            });
            match r {
                // The file ended early (truncated under us): the block cannot be sent.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => n -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(code) if code == rustix::io::Errno::INVAL.raw_os_error()
                            || code == rustix::io::Errno::NOSYS.raw_os_error()
                            || code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
                    ) =>
                {
                    tracing::debug!(cause = %e, "sendfile unsupported, copying blocks");
                    self.unsupported = true;
                }
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            file.read_exact_at(&mut self.buf[..n], off)?;
            wr.write_all(&self.buf[..n]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{create, CreateOptions};
    use crate::protocol::bitfield::Bitfield;
    use crate::storage::OpenMode;
    use crate::types::PeerId;
    use rand::SeedableRng;

    #[test]
    fn a_departing_peer_frees_its_upload_slot_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 40_000]).unwrap();
        let meta = create(&dir.path().join("f"), &CreateOptions::default()).unwrap();
        let storage = Storage::open(&meta.info, dir.path(), OpenMode::Existing).unwrap();
        let have = Bitfield::full(meta.info.num_pieces());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (mut t, _done) = Torrent::new(
            Arc::new(meta),
            Arc::new(storage),
            have,
            PeerId::generate(&mut rng),
            common::stats::Stats::new("bittorrent", "seeder", "test"),
            rng.clone(),
        );
        let now = Instant::now();
        let mut peers = Vec::new();
        for i in 0..6u8 {
            let ob = Arc::new(Outbox::new(CancellationToken::new()));
            let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i as u16).parse().unwrap();
            let key = t
                .add_peer(addr, PeerId([i; 20]), false, false, ob.clone(), now)
                .unwrap();
            t.on_msg(key, Msg::Interested, now).unwrap();
            peers.push((key, ob));
        }
        let unchoked: Vec<PeerKey> = peers
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| t.choker.is_unchoked(*k))
            .collect();
        assert_eq!(
            unchoked.len(),
            4,
            "four upload slots, no optimistic before a round"
        );
        let waiting: Vec<&(PeerKey, Arc<Outbox>)> = peers
            .iter()
            .filter(|(k, _)| !unchoked.contains(k))
            .collect();
        for (_, ob) in &waiting {
            ob.take(0, &mut Vec::new());
        }
        // One second later, well before the next 10 s round, an unchoked peer leaves.
        peer_left(&mut t, unchoked[0], now + Duration::from_secs(1));
        let now_unchoked: Vec<&&(PeerKey, Arc<Outbox>)> = waiting
            .iter()
            .filter(|(k, _)| t.choker.is_unchoked(*k))
            .collect();
        assert_eq!(
            now_unchoked.len(),
            1,
            "the free slot went to a waiting peer"
        );
        let sent = now_unchoked[0].1.take(0, &mut Vec::new());
        assert_eq!(&sent[..], &[0, 0, 0, 1, 1], "and it was told (unchoke)");
    }
}
