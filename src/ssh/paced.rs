//! Backpressure from the connection itself, for streamed input.
//!
//! russh hands a channel's data to its connection task through a queue and encrypts into a
//! write buffer that never shrinks. The channel window alone (2 MiB from OpenSSH) lets a fast
//! sender pile up that much in the buffer, and every connection keeps the buffer at its peak
//! for the rest of the run: about 0.5 MiB per host after an upload, so memory grew with the
//! number of hosts. A sender that waits until the connection has written what it queued, but
//! for [`UNWRITTEN_LIMIT`], keeps the buffer small; the kernel's socket buffer, not ours, holds
//! what is in flight on a slow or distant link. (This needs the connection not to compress:
//! see the session's configuration.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How far a streamed input may run ahead of what the connection has written to its socket:
/// one chunk. Measured at 64 hosts x 8 MiB, `-c 16`: peak RSS 50 MiB unpaced, 35 MiB at
/// 128 KiB, 31 MiB at 64 KiB, 28 MiB at 32 KiB, with the same wall time (and the same for one
/// host and 256 MiB).
pub(super) const UNWRITTEN_LIMIT: u64 = 32 * 1024;

/// What SSH adds to each full chunk of channel data on the wire, at least: a 32 KiB chunk is
/// one packet (OpenSSH's maximum), and AES-GCM or ChaCha20-Poly1305 frame it in 36 bytes
/// (length 4, padding length 1, message header 9, padding 6, tag 16); other ciphers in more.
/// Counting it keeps the estimate of what is still unwritten from drifting over a long stream;
/// counting more than the least would make the sender wait for bytes that never come.
const FRAMING_PER_CHUNK: u64 = 36;

/// What the connection writes, at least, for `chunks` full chunks holding `bytes` in all.
pub(super) fn on_the_wire(bytes: u64, chunks: u64) -> u64 {
    bytes + chunks * FRAMING_PER_CHUNK
}

/// The bytes a connection has written to its socket, and a way to wait for more.
#[derive(Debug, Default)]
pub(super) struct Written {
    bytes: AtomicU64,
    progress: Notify,
}

impl Written {
    /// Everything written so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Returns once at least `bytes` have been written in all.
    pub(super) async fn reach(&self, bytes: u64) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            // Registered before the check, so a write between the check and the wait wakes it.
            progress.as_mut().enable();
            if self.bytes() >= bytes {
                return;
            }
            progress.await;
        }
    }

    fn add(&self, bytes: usize) {
        if bytes > 0 {
            self.bytes.fetch_add(bytes as u64, Ordering::AcqRel);
            self.progress.notify_waiters();
        }
    }
}

/// A connection's stream that counts what is written through it.
pub(super) struct Counted<S> {
    inner: S,
    written: Arc<Written>,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S) -> (Counted<S>, Arc<Written>) {
        let written = Arc::new(Written::default());
        (Counted { inner, written: written.clone() }, written)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.written.add(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.written.add(n);
        }
        written
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_enough_was_written() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut near, written) = Counted::new(near);
        let waiter = tokio::spawn({
            let written = written.clone();
            async move { written.reach(100).await }
        });
        near.write_all(&[1; 60]).await.unwrap();
        let mut sink = [0; 64];
        far.read_exact(&mut sink[..60]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "woke after 60 of 100 bytes");
        near.write_all(&[2; 40]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(written.bytes(), 100);
        // Already there: no wait at all.
        tokio::time::timeout(Duration::from_millis(100), written.reach(50)).await.unwrap();
    }
}
