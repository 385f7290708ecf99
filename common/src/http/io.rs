//! Stream adapters the HTTP server needs around a socket.
//!
//! - [`Prefixed`] replays bytes that were already read before HTTP started: KaZaA shares one port between
//!   its binary protocol and HTTP and must peek at the first bytes to decide; a Gnutella servent that
//!   answered a Push reads the downloader's first bytes after writing `GIV`.
//! - [`IdleTimeout`] fails a connection on which nothing moved, in either direction, for a while: a client
//!   that stops reading (its window is full, our writes stay pending) or an idle keep-alive connection. The
//!   error ends hyper's connection, which drops the response body and so frees its upload slot.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream that first yields `prefix`, then reads from `inner`. Writes go straight to `inner`.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    /// Replays `prefix` before reading `inner`.
    pub fn new(prefix: impl Into<Bytes>, inner: T) -> Self {
        Prefixed {
            prefix: prefix.into(),
            inner,
        }
    }

    /// The wrapped stream and the part of the prefix not read yet.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fails reads and writes with [`io::ErrorKind::TimedOut`] once the stream made no progress in either
/// direction for `timeout`.
#[derive(Debug)]
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner` with an inactivity limit of `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn progressed(&mut self) {
        self.armed = false;
    }

    /// Turns the inner stream's poll result into ours: a completed operation (read/write) counts as progress and
    /// stops the clock; a pending one starts it and becomes a `TimedOut` error once it expires.
    fn settle<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
        progress: bool,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                if progress {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }

    /// Called when an operation is pending: starts the clock if it is not running and reports expiry.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress for {:?}", self.timeout),
            )),
            Poll::Pending => None,
        }
    }
}

use std::future::Future;

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.settle(cx, poll, true)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.settle(cx, poll, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.settle(cx, poll, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.settle(cx, poll, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.settle(cx, poll, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_replays_then_reads_inner() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(&b"GET / HT"[..], a);
        b.write_all(b"TP/1.1\r\n").await.unwrap();
        drop(b);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn prefixed_replays_into_small_buffers() {
        let (a, _b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(&b"abcdef"[..], a);
        let mut two = [0u8; 2];
        p.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"ab");
        let (rest, _) = p.into_parts();
        assert_eq!(&rest[..], b"cdef");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_read_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut s = IdleTimeout::new(a, Duration::from_secs(5));
        let start = Instant::now();
        let err = s.read(&mut [0u8; 4]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_writer_times_out_but_progress_resets_the_clock() {
        let (a, mut b) = tokio::io::duplex(8);
        let mut s = IdleTimeout::new(a, Duration::from_secs(5));
        // The peer reads a byte every 3 s (less than the timeout): the write keeps going.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut one = [0u8; 1];
            while got < 4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                b.read_exact(&mut one).await.unwrap();
                got += 1;
            }
            b // keep it open, reading nothing more
        });
        s.write_all(&[7u8; 12]).await.unwrap();
        let err = s.write_all(&[7u8; 100]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(reader.await.unwrap());
    }
}
