//! [`Metered`]: a byte stream that counts what passes through it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, adding the bytes read from it to `read` and those written to it to `written` as
/// they pass (so a long transfer shows in the metrics while it lasts, not only at its end).
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    read: Counter,
    written: Counter,
    /// A second pair (one flow's, where `read` and `written` are all flows').
    also: Option<(Counter, Counter)>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, read: Counter, written: Counter) -> Self {
        Metered {
            inner,
            read,
            written,
            also: None,
        }
    }

    /// Counts the same bytes in a second pair of counters too.
    pub fn and(mut self, read: Counter, written: Counter) -> Self {
        self.also = Some((read, written));
        self
    }

    /// The stream itself, to call its own methods.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The stream itself.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.inc_by(n as u64);
            if let Some((read, _)) = &self.also {
                read.inc_by(n as u64);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.inc_by(n as u64);
            if let Some((_, written)) = &self.also {
                written.inc_by(n as u64);
            }
        }
        polled
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_are_counted_each_way() {
        let (a, mut b) = tokio::io::duplex(64);
        let (read, written) = (Counter::default(), Counter::default());
        let (flow_read, flow_written) = (Counter::default(), Counter::default());
        let mut metered = Metered::new(a, read.clone(), written.clone())
            .and(flow_read.clone(), flow_written.clone());
        metered.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        metered.read_exact(&mut got).await.unwrap();
        let mut sent = [0u8; 5];
        b.read_exact(&mut sent).await.unwrap();
        assert_eq!((read.get(), written.get()), (3, 5));
        assert_eq!((flow_read.get(), flow_written.get()), (3, 5));
    }
}
