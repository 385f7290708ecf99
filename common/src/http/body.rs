//! Response bodies: small in-memory replies, and files streamed in large chunks.
//!
//! A file body is fed by a producer task that reads `chunk_size` bytes at a time with positioned reads,
//! waiting for rate-limit tokens first. Data already in the page cache is read in place (`RWF_NOWAIT`);
//! anything that would wait for the disk is read on a blocking thread, so the runtime never stalls. A
//! one-slot channel between them lets the next read overlap the socket write of the previous chunk while
//! keeping memory per upload at about three chunks. Dropping the body (the connection ended, for whatever
//! reason) stops the producer and releases the upload slot.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::AbortHandle;

use crate::ratelimit::RateLimiter;
use crate::stats::Stats;

/// The body type of every response the server sends.
#[derive(Debug)]
pub struct ReplyBody(Kind);

#[derive(Debug)]
enum Kind {
    Bytes(Option<Bytes>),
    File(FileBody),
}

impl ReplyBody {
    /// An empty body (HEAD, 416 without text).
    pub(crate) fn empty() -> Self {
        ReplyBody(Kind::Bytes(None))
    }

    /// A small in-memory body.
    pub(crate) fn bytes(b: Bytes) -> Self {
        ReplyBody(Kind::Bytes((!b.is_empty()).then_some(b)))
    }
}

/// Where the bytes of a file body come from and what governs their pace.
pub(crate) struct FileSource {
    pub(crate) file: Arc<File>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) chunk_size: usize,
    pub(crate) limits: Vec<RateLimiter>,
}

#[derive(Debug)]
struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
    len: u64,
    stats: Stats,
    producer: AbortHandle,
    finished: bool,
    // Held for as long as the body lives: the upload slot.
    _permit: OwnedSemaphorePermit,
}

impl ReplyBody {
    /// Starts streaming `src`; the caller already counted the upload as started and holds `permit`.
    pub(crate) fn file(src: FileSource, stats: Stats, permit: OwnedSemaphorePermit) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let len = src.len;
        let producer = tokio::spawn(produce(src, tx)).abort_handle();
        ReplyBody(Kind::File(FileBody {
            rx,
            remaining: len,
            len,
            stats,
            producer,
            finished: len == 0,
            _permit: permit,
        }))
    }
}

async fn produce(src: FileSource, tx: mpsc::Sender<io::Result<Bytes>>) {
    let FileSource {
        file,
        mut offset,
        len,
        chunk_size,
        limits,
    } = src;
    let mut remaining = len;
    let pool = BufPool::default();
    while remaining > 0 {
        let mut want = remaining.min(chunk_size as u64);
        // Tokens taken from an earlier limiter beyond what a later one grants are lost: a small
        // undershoot of the configured rate, never an overshoot.
        for lim in &limits {
            want = lim.acquire_up_to(want).await;
        }
        let mut buf = pool.take(chunk_size);
        let read = match read_cached(&file, &mut buf.buf[..want as usize], offset) {
            Some(n) => {
                // Possibly a short read (the rest is not cached yet): send what we have.
                buf.len = n;
                want = n as u64;
                Ok(Bytes::from_owner(buf))
            }
            None => {
                let f = Arc::clone(&file);
                tokio::task::spawn_blocking(move || {
                    let n = want as usize;
                    f.read_exact_at(&mut buf.buf[..n], offset).map(|()| {
                        buf.len = n;
                        Bytes::from_owner(buf)
                    })
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        };
        let failed = read.is_err();
        if tx.send(read).await.is_err() || failed {
            return;
        }
        offset += want;
        remaining -= want;
    }
}

/// Read buffers of one upload, recycled once hyper has written them, so a transfer allocates (and zeroes)
/// its few chunk buffers once instead of once per chunk.
#[derive(Clone, Default)]
struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse per upload: the channel slot, the read in flight and the one hyper is writing.
const POOL_KEEP: usize = 4;

impl BufPool {
    fn take(&self, size: usize) -> PooledBuf {
        let recycled = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        PooledBuf {
            buf: recycled
                .filter(|b| b.len() == size)
                .unwrap_or_else(|| vec![0u8; size]),
            len: 0,
            home: self.clone(),
        }
    }
}

/// A chunk buffer that goes back to its pool when the last `Bytes` pointing into it is dropped.
struct PooledBuf {
    buf: Vec<u8>,
    len: usize,
    home: BufPool,
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut pool = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Reads from the page cache only (`preadv2` with `RWF_NOWAIT`, Linux 4.14+): `Some(n)` with `n > 0` bytes
/// read, or `None` when that would block on the disk, hit end of file, or is not supported here; the caller
/// then reads on a blocking thread. Serving a cached file this way skips two thread hand-overs per chunk.
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> Option<usize> {
    let mut bufs = [io::IoSliceMut::new(buf)];
    match rustix::io::preadv2(file, &mut bufs, offset, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        self.producer.abort();
        if !self.finished {
            let sent = self.len - self.remaining;
            tracing::info!(
                sent,
                len = self.len,
                "upload cut short (peer gone, timed out or read error)"
            );
            self.stats.transfers(|t| t.uploads_failed += 1);
        }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.0 {
            Kind::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::File(f) => {
                if f.remaining == 0 {
                    return Poll::Ready(None);
                }
                match f.rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        let n = chunk.len() as u64;
                        f.remaining -= n;
                        let done = f.remaining == 0;
                        f.finished = done;
                        f.stats.transfers(|t| {
                            t.upload_bytes += n;
                            if done {
                                t.uploads_completed += 1;
                            }
                        });
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::warn!(cause = %e, "reading the shared file failed mid-upload");
                        f.stats.error("http_file_read");
                        Poll::Ready(Some(Err(e)))
                    }
                    Poll::Ready(None) => {
                        Poll::Ready(Some(Err(io::Error::other("file producer stopped early"))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Bytes(b) => b.is_none(),
            Kind::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn cached_read_reads_what_is_there_and_declines_at_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[5u8; 1000]).unwrap();
        let mut buf = [0u8; 600];
        // A file just written is in the page cache (where RWF_NOWAIT is unsupported this is None too).
        if let Some(n) = read_cached(&f, &mut buf, 500) {
            assert_eq!(n, 500);
            assert!(buf[..n].iter().all(|&b| b == 5));
        }
        assert_eq!(read_cached(&f, &mut buf, 1000), None, "end of file");
        assert_eq!(read_cached(&f, &mut buf, u64::MAX - 1), None);
    }

    #[test]
    fn pooled_buffers_are_reused() {
        let pool = BufPool::default();
        let mut b = pool.take(64);
        b.len = 3;
        let bytes = Bytes::from_owner(b);
        assert_eq!(bytes.len(), 3);
        drop(bytes);
        assert_eq!(pool.0.lock().unwrap().len(), 1);
        let again = pool.take(64);
        assert_eq!(pool.0.lock().unwrap().len(), 0);
        drop(again);
        // A buffer of another size is not handed out for this size.
        let other = pool.take(128);
        assert_eq!(other.buf.len(), 128);
    }
}
