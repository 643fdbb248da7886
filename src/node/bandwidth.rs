//! Bytes in and out of every TCP connection, counted below the encryption layer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// Shared byte counters of one node.
#[derive(Debug, Default)]
pub struct Bandwidth {
    inbound: AtomicU64,
    outbound: AtomicU64,
}

impl Bandwidth {
    /// Bytes received so far.
    pub fn inbound(&self) -> u64 {
        self.inbound.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn outbound(&self) -> u64 {
        self.outbound.load(Ordering::Relaxed)
    }
}

/// A stream that adds what passes through it to a [`Bandwidth`].
pub(crate) struct Counted<S> {
    inner: S,
    counters: Arc<Bandwidth>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, counters: Arc<Bandwidth>) -> Self {
        Self { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters.inbound.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters
                .outbound
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    #[test]
    fn counts_both_directions() {
        let bw = Arc::new(Bandwidth::default());
        let mut s = Counted::new(Cursor::new(vec![1u8; 10]), bw.clone());
        let mut buf = [0u8; 4];
        block_on(s.read_exact(&mut buf)).expect("read");
        assert_eq!(bw.inbound(), 4);
        let mut w = Counted::new(Cursor::new(Vec::new()), bw.clone());
        block_on(w.write_all(b"hello")).expect("write");
        assert_eq!(bw.outbound(), 5);
    }
}
