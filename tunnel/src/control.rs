//! The I/O half of a control stream: drives a sans-IO [`Session`] over a byte stream.
//!
//! [`Control`] owns the session and the stream's two halves (a QUIC stream's, or any
//! `AsyncRead`/`AsyncWrite`). [`next_event`](Control::next_event) writes what the session has
//! queued, feeds it what arrives, runs its timers and returns its next [`Event`]; in between,
//! the caller acts on the session through [`session_mut`](Control::session_mut) (answers,
//! requests, updates). `next_event` is cancel-safe, so a caller's loop selects on it beside its
//! own sources:
//!
//! ```text
//! loop {
//!     tokio::select! {
//!         event = control.next_event() => match event? {
//!             Event::Closed(reason) => break,
//!             event => { /* dispatch; may use control.session_mut() */ }
//!         },
//!         Some(answer) = answers.recv(), if control.is_writable() => {
//!             control.session_mut().send(answer)?;
//!         }
//!     }
//! }
//! ```
//!
//! Sources that add frames are gated on [`is_writable`](Control::is_writable): while the peer
//! does not read, they wait where they are (in a bounded channel, a watch) instead of piling up
//! in the session. A server also sets [`with_read_backpressure`](Control::with_read_backpressure),
//! so a peer that sends requests and reads no answers stops being read: QUIC flow control then
//! stops it, and what it costs stays bounded.
//!
//! Time is tokio's ([`now`]): the session's deadlines and the timers that wait for them use the
//! same clock, also when a test pauses it.

use std::future::pending;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tether_proto::session::{Event, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much one read takes from the stream at most.
const READ_SIZE: usize = 16 * 1024;

/// The clock a [`Control`] runs its session on; pass it to the session's methods that take
/// `now`.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Why a control stream cannot go on. The session is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading failed (the connection was lost, the peer reset the stream).
    #[error("reading the control stream")]
    Read(#[source] std::io::Error),
    /// Writing failed.
    #[error("writing the control stream")]
    Write(#[source] std::io::Error),
}

/// A [`Session`] and the stream it runs on. See the [module](self) documentation.
#[derive(Debug)]
pub struct Control<R, W> {
    session: Session,
    reader: R,
    writer: W,
    /// Bytes taken from the session and not yet written.
    unsent: Bytes,
    buf: Box<[u8]>,
    /// The peer ended its half.
    ended: bool,
    read_backpressure: bool,
}

impl<R, W> Control<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Drives `session` over `reader` and `writer` (a fresh session: nothing read yet).
    pub fn new(session: Session, reader: R, writer: W) -> Self {
        Self {
            session,
            reader,
            writer,
            unsent: Bytes::new(),
            buf: vec![0; READ_SIZE].into_boxed_slice(),
            ended: false,
            read_backpressure: false,
        }
    }

    /// Reads nothing while written bytes wait for the peer: every frame that arrives may cost an
    /// answer, so a peer that does not read its answers is not read either.
    ///
    /// Only one side of a stream may do this (the server): two sides that both stop reading
    /// while they cannot write would wait for each other.
    pub fn with_read_backpressure(mut self) -> Self {
        self.read_backpressure = true;
        self
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, to send, request, accept or refuse; what it queues goes out at the next
    /// [`next_event`](Self::next_event) or [`finish`](Self::finish).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The stream's write half (a QUIC stream's `stopped()`, say).
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// Whether everything the session queued has been handed to the stream. Gate sources of
    /// outgoing frames on it.
    pub fn is_writable(&self) -> bool {
        self.unsent.is_empty()
    }

    /// The session's next event, doing the I/O and running the timers it takes to get one.
    ///
    /// Cancel-safe: dropped before it returns, it has lost nothing. After [`Event::Closed`] it
    /// writes what is left and then waits for ever (use [`finish`](Self::finish) instead); after
    /// an error, the stream is done.
    pub async fn next_event(&mut self) -> Result<Event, ControlError> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            self.step().await?;
        }
    }

    /// One write, one read or one timer.
    async fn step(&mut self) -> Result<(), ControlError> {
        if self.unsent.is_empty() {
            self.unsent = self.session.poll_transmit().unwrap_or_default();
        }
        // With read backpressure, only while nothing waits to be written.
        let held_back = self.read_backpressure && !self.unsent.is_empty();
        let reading = !(self.ended || self.session.is_closed() || held_back);
        let deadline = self.session.poll_timeout();
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => pending().await,
            }
        };
        tokio::select! {
            written = self.writer.write(&self.unsent), if !self.unsent.is_empty() => {
                match written.map_err(ControlError::Write)? {
                    0 => return Err(ControlError::Write(std::io::ErrorKind::WriteZero.into())),
                    n => self.unsent.advance(n),
                }
            }
            read = self.reader.read(&mut self.buf), if reading => {
                match read.map_err(ControlError::Read)? {
                    0 => {
                        self.ended = true;
                        self.session.handle_end();
                    }
                    n => self.session.handle_input(now(), &self.buf[..n]),
                }
            }
            () = timer => self.session.handle_timeout(now()),
        }
        Ok(())
    }

    /// Writes everything the session has queued (a last `Error` or `Bye`, say) and ends the
    /// stream.
    pub async fn finish(&mut self) -> Result<(), ControlError> {
        loop {
            if self.unsent.is_empty() {
                match self.session.poll_transmit() {
                    Some(bytes) => self.unsent = bytes,
                    None => break,
                }
            }
            self.writer
                .write_all_buf(&mut self.unsent)
                .await
                .map_err(ControlError::Write)?;
        }
        self.writer.shutdown().await.map_err(ControlError::Write)
    }

    /// [`finish`](Self::finish), giving up after `limit`; whether it finished.
    pub async fn finish_within(&mut self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.finish()).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests;
