//! TCP connections terminated by the stack: requests the caller answers, and the byte streams.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{RecvError, SendError, State};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::core::FlowKey;
use super::{NetStackError, Shared};

/// Yields a [`TcpRequest`] for every new inbound connection (a SYN to any routed address).
#[derive(Debug)]
pub struct TcpListener {
    pub(super) requests_rx: mpsc::Receiver<TcpRequest>,
}

impl TcpListener {
    /// The next connection request; `None` once the stack has stopped.
    pub async fn accept(&mut self) -> Option<TcpRequest> {
        self.requests_rx.recv().await
    }
}

/// A connection request whose SYN has not been answered yet.
///
/// The client sees nothing until [`TcpRequest::accept`] (the handshake completes) or
/// [`TcpRequest::refuse`] (it gets a RST, "connection refused"). Dropping the request refuses it.
/// While the caller decides, the client's kernel retransmits its SYN after 1 s, 3 s, ...; those
/// are absorbed here.
#[derive(Debug)]
pub struct TcpRequest {
    shared: Arc<Shared>,
    key: FlowKey,
    answered: bool,
}

impl TcpRequest {
    pub(super) fn new(shared: Arc<Shared>, key: FlowKey) -> Self {
        TcpRequest {
            shared,
            key,
            answered: false,
        }
    }

    /// The client's address.
    pub fn src(&self) -> SocketAddr {
        self.key.0
    }

    /// The address the client dialled.
    pub fn dst(&self) -> SocketAddr {
        self.key.1
    }

    /// Completes the handshake. The stream is usable at once: reads and writes wait for the
    /// handshake to finish.
    pub fn accept(mut self) -> Result<TcpStream, NetStackError> {
        self.answered = true;
        let handle = {
            let mut core = self.shared.lock();
            let now = self.shared.now();
            core.accept(now, self.key)
        };
        let handle = handle.ok_or(NetStackError::RequestGone(self.key.1))?;
        self.shared.kick();
        Ok(TcpStream {
            shared: self.shared.clone(),
            handle,
            key: self.key,
        })
    }

    /// Answers the SYN with a RST.
    pub fn refuse(mut self) {
        self.answered = true;
        self.do_refuse();
    }

    fn do_refuse(&self) {
        let now = self.shared.now();
        self.shared.lock().refuse(now, self.key);
        self.shared.kick();
    }
}

impl Drop for TcpRequest {
    fn drop(&mut self) {
        if !self.answered {
            self.do_refuse();
        }
    }
}

/// An accepted TCP connection. Dropping it closes the connection (FIN, or RST if received data
/// was left unread); [`AsyncWriteExt::shutdown`](tokio::io::AsyncWriteExt::shutdown) sends FIN
/// and keeps reading possible.
#[derive(Debug)]
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    key: FlowKey,
}

impl TcpStream {
    /// The client's address.
    pub fn src(&self) -> SocketAddr {
        self.key.0
    }

    /// The address the client dialled.
    pub fn dst(&self) -> SocketAddr {
        self.key.1
    }
}

/// Whether the handshake is still under way (reads and writes must wait, not fail).
fn connecting(state: State) -> bool {
    matches!(state, State::Listen | State::SynReceived)
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut core = self.shared.lock();
        let socket = core.socket(self.handle);
        let free_before = socket.recv_capacity() - socket.recv_queue();
        match socket.recv_slice(buf.initialize_unfilled()) {
            Ok(0) => {
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                let free_after = socket.recv_capacity() - socket.recv_queue();
                drop(core);
                buf.advance(n);
                // smoltcp announces a larger window once it has doubled; only then is a poll of
                // the stack worth it (otherwise the next ACK carries the new window anyway).
                if free_after >= 2 * free_before {
                    self.shared.kick();
                }
                Poll::Ready(Ok(()))
            }
            Err(RecvError::Finished) => Poll::Ready(Ok(())),
            Err(RecvError::InvalidState) if connecting(socket.state()) => {
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Err(RecvError::InvalidState) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut core = self.shared.lock();
        let socket = core.socket(self.handle);
        match socket.send_slice(buf) {
            Ok(0) => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                drop(core);
                self.shared.kick();
                Poll::Ready(Ok(n))
            }
            Err(SendError::InvalidState) if connecting(socket.state()) => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            Err(SendError::InvalidState) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued in the socket; the stack sends them on its own.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().socket(self.handle).close();
        self.shared.kick();
        Poll::Ready(Ok(()))
    }
}

impl TcpStream {
    /// A handle that resets the connection later (e.g. after the stream was split).
    pub fn aborter(&self) -> Aborter {
        Aborter {
            shared: self.shared.clone(),
            handle: self.handle,
        }
    }
}

/// Resets one connection (RST), whoever holds its stream. Use it while the stream (or a half
/// of it) is still alive: once the stream is dropped its socket may be reaped and reused.
#[derive(Debug)]
pub struct Aborter {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl Aborter {
    /// Resets the connection now.
    pub fn abort(self) {
        self.shared.lock().socket(self.handle).abort();
        self.shared.kick();
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let now = self.shared.now();
        self.shared.lock().release(now, self.handle, self.key);
        self.shared.kick();
    }
}
