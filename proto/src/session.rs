//! The control stream's session, sans-IO: the `Hello`/`Welcome` handshake and its version check,
//! request ids and their answers, keep-alive pings, and who may send what when.
//!
//! A [`Session`] is a state machine in the style of quinn-proto: no sockets, no tasks, no clock.
//! The caller's I/O loop feeds it the stream's bytes ([`handle_input`](Session::handle_input),
//! in any pieces, and [`handle_end`](Session::handle_end)), writes what
//! [`poll_transmit`](Session::poll_transmit) returns, sleeps until
//! [`poll_timeout`](Session::poll_timeout) and then calls
//! [`handle_timeout`](Session::handle_timeout), and acts on [`poll_event`](Session::poll_event).
//! Time is always passed in.
//!
//! The session handles on its own:
//! * the handshake: a client's first frame is `Hello`, a server's is `Welcome` (or an `Error`
//!   refusing); a `Hello` of another [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) is answered
//!   with an `Error` and closes; the first frame the other way must be the handshake's, else the
//!   session closes;
//! * requests: [`request`](Session::request) assigns the id, the answer comes back as
//!   [`Event::Reply`] under it, or [`Event::TimedOut`] does;
//! * keep-alive: `Ping` on schedule ([`SessionConfig::ping_interval`]), a `Pong` for every `Ping`
//!   (a bounded number queued), and a close when the peer falls silent
//!   ([`SessionConfig::idle_timeout`]);
//! * damage: a frame whose payload does not decode is skipped ([`Event::Skipped`]) and the
//!   session goes on; only a fatal [`DecodeError`](crate::DecodeError) closes it (and, during the
//!   handshake, any undecodable frame). Unknown kinds are ignored;
//! * the end: `Bye` and `Error` from the peer, [`close`](Session::close) and
//!   [`refuse`](Session::refuse) from the caller, each ending with one [`Event::Closed`].
//!
//! Everything else (`Subnets`, `Namespaces`, `AgentHello`, `AgentIntercepts`, the peer's
//! requests) is an [`Event::Message`]; the application answers with [`send`](Session::send).
//!
//! An I/O loop over a QUIC stream looks like this (flows and datagrams stay outside; a
//! `poll_timeout` of `None` means no timer):
//! ```text
//! loop {
//!     while let Some(bytes) = session.poll_transmit() { send.write_all(&bytes).await? }
//!     while let Some(event) = session.poll_event() { /* dispatch; Closed: break */ }
//!     select! {
//!         n = recv.read(&mut buf) => match n? {
//!             Some(n) => session.handle_input(Instant::now(), &buf[..n]),
//!             None => session.handle_end(),
//!         },
//!         _ = sleep_until(session.poll_timeout()) => session.handle_timeout(Instant::now()),
//!         cmd = commands.recv() => { /* session.request(..) or session.send(..) */ }
//!     }
//! }
//! ```
//!
//! # Usage
//! ```
//! use std::time::{Duration, Instant};
//! use tether_proto::session::{Event, Session, SessionConfig};
//! use tether_proto::{DnsAnswer, DnsQuery, Hello, Message, Role, Welcome, PROTOCOL_VERSION};
//!
//! /// What an I/O loop does with a stream, here straight into the other machine.
//! fn pipe(from: &mut Session, to: &mut Session, now: Instant) {
//!     while let Some(bytes) = from.poll_transmit() {
//!         to.handle_input(now, &bytes);
//!     }
//! }
//!
//! let now = Instant::now();
//! let hello = Hello {
//!     version: PROTOCOL_VERSION,
//!     client: "ann@laptop".into(),
//!     namespace: "shop".into(),
//!     role: Role::Client,
//! };
//! let mut client = Session::client(hello, SessionConfig::client(), now)?;
//! let mut server = Session::server(SessionConfig::server(), now);
//! pipe(&mut client, &mut server, now);
//! let Some(Event::Hello(hello)) = server.poll_event() else { panic!("no Hello") };
//! assert_eq!(hello.client, "ann@laptop");
//! let welcome = Welcome {
//!     version: PROTOCOL_VERSION,
//!     session_id: "s-1".into(),
//!     cluster_domain: "cluster.local".into(),
//!     subnets: Default::default(),
//! };
//! server.accept(now, welcome)?;
//! pipe(&mut server, &mut client, now);
//! assert!(matches!(client.poll_event(), Some(Event::Established(_))));
//!
//! // The machine picks the request's id and matches the answer to it.
//! let id = client.request(now, DnsQuery { id: 0, packet: vec![1, 2] })?;
//! pipe(&mut client, &mut server, now);
//! let Some(Event::Message(Message::DnsQuery(query))) = server.poll_event() else { panic!() };
//! server.send(DnsAnswer { id: query.id, packet: vec![3] })?;
//! pipe(&mut server, &mut client, now);
//! assert!(matches!(client.poll_event(), Some(Event::Reply { id: got, .. }) if got == id));
//!
//! // Time is the caller's: the client's first ping is due 5 s after the handshake.
//! let later = now + Duration::from_secs(5);
//! assert_eq!(client.poll_timeout(), Some(later));
//! client.handle_timeout(later);
//! pipe(&mut client, &mut server, later);
//! pipe(&mut server, &mut client, later); // the Pong, which is no event
//! assert_eq!(client.poll_event(), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod event;
mod input;
mod pending;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::frame::{encode, EncodeError, FrameDecoder};
use crate::message::{Error, Hello, Message, Ping, Welcome};

pub use config::SessionConfig;
pub use event::{CloseReason, Event, Reply, Request, SendError, SessionError};
use pending::Pending;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Client: `Hello` queued, waiting for `Welcome`.
    AwaitingWelcome,
    /// Server: waiting for `Hello`.
    AwaitingHello,
    /// Server: `Hello` delivered, waiting for the application's `accept` or `refuse`.
    AwaitingAccept,
    /// Handshake done.
    Established,
    /// Over; only queued bytes remain to be taken.
    Closed,
}

/// One control stream's session, either side. See the [module](self) documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    decoder: FrameDecoder,
    /// Encoded frames not yet taken by `poll_transmit`.
    out: BytesMut,
    /// Pongs in `out`.
    queued_pongs: usize,
    events: VecDeque<Event>,
    pending: Pending,
    /// While waiting for the handshake's frame.
    handshake_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    ping_seq: u64,
    /// When the last bytes arrived (or the session was established).
    last_input: Instant,
    close_reason: Option<CloseReason>,
}

impl Session {
    /// The connecting side: queues `hello` and waits for `Welcome`. Until then it may
    /// [`send`](Self::send) (an agent's `AgentHello`) but not [`request`](Self::request).
    ///
    /// Fails only if `hello` cannot be encoded (over a mebibyte).
    pub fn client(hello: Hello, config: SessionConfig, now: Instant) -> Result<Self, EncodeError> {
        let mut session = Self::new(State::AwaitingWelcome, config, now);
        session.queue(&hello.into())?;
        Ok(session)
    }

    /// The accepting side: waits for `Hello`, checks its version and reports it as
    /// [`Event::Hello`]; the application then calls [`accept`](Self::accept) or
    /// [`refuse`](Self::refuse). Before `accept` it sends nothing but an `Error` on a
    /// failed handshake: no `Pong` either.
    pub fn server(config: SessionConfig, now: Instant) -> Self {
        Self::new(State::AwaitingHello, config, now)
    }

    fn new(state: State, config: SessionConfig, now: Instant) -> Self {
        Self {
            handshake_deadline: Some(now + config.handshake_timeout),
            config,
            state,
            decoder: FrameDecoder::new(),
            out: BytesMut::new(),
            queued_pongs: 0,
            events: VecDeque::new(),
            pending: Pending::new(),
            next_ping: None,
            ping_seq: 0,
            last_input: now,
            close_reason: None,
        }
    }

    /// Whether the handshake is done and the session not closed.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the session is over. Call [`poll_transmit`](Self::poll_transmit) once more to
    /// take a last `Bye` or `Error`, then finish the stream.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next; `None` for never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = match (self.state, self.config.idle_timeout) {
            (State::Established, Some(timeout)) => Some(self.last_input + timeout),
            _ => None,
        };
        [
            self.handshake_deadline,
            self.next_ping,
            idle,
            self.pending.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due at `now`: the handshake's, the idle one, pings, requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let Some(deadline) = self.handshake_deadline {
            if now >= deadline {
                let expected = match self.state {
                    State::AwaitingHello => "Hello",
                    _ => "Welcome",
                };
                let timeout = self.config.handshake_timeout;
                return self.fail(SessionError::HandshakeTimedOut { expected, timeout });
            }
        }
        if let (State::Established, Some(timeout)) = (self.state, self.config.idle_timeout) {
            if now >= self.last_input + timeout {
                return self.fail(SessionError::IdleTimedOut(timeout));
            }
        }
        while let Some(id) = self.pending.pop_expired(now) {
            self.events.push_back(Event::TimedOut { id });
        }
        if let (Some(due), Some(interval)) = (self.next_ping, self.config.ping_interval) {
            if now >= due {
                self.ping_seq += 1;
                let ping = Ping { seq: self.ping_seq };
                // A Ping always encodes.
                let _ = self.queue(&ping.into());
                // From now, not from `due`: a late call sends one ping, not a burst.
                self.next_ping = Some(now + interval);
            }
        }
    }

    /// Encoded frames to write to the control stream, in order; `None` when there are none.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        self.queued_pongs = 0;
        Some(self.out.split().freeze())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Server: answers the `Hello` with `welcome` (whose version should be
    /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)); the session is established.
    pub fn accept(&mut self, now: Instant, welcome: Welcome) -> Result<(), SendError> {
        match self.state {
            State::AwaitingAccept => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NoHello),
        }
        self.queue(&welcome.into())?;
        self.establish(now);
        Ok(())
    }

    /// Sends `error` and closes: a server refusing a `Hello`, or either side ending the session
    /// for a reason the peer should see (a user who lost the right to a session).
    pub fn refuse(&mut self, error: Error) {
        if self.is_closed() {
            return;
        }
        // An Error as long as a mebibyte is not sent; the session closes all the same.
        let _ = self.queue(&error.into());
        self.close_with(CloseReason::Local);
    }

    /// Sends `Bye` and closes.
    pub fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        let _ = self.queue(&crate::message::Bye.into());
        self.close_with(CloseReason::Local);
    }

    /// Sends `request` with an id of the session's choosing, which it returns; the answer comes
    /// as [`Event::Reply`] with that id, or [`Event::TimedOut`] after
    /// [`dns_timeout`](SessionConfig::dns_timeout) (a `DnsQuery`) or
    /// [`request_timeout`](SessionConfig::request_timeout).
    pub fn request(&mut self, now: Instant, request: impl Into<Request>) -> Result<u32, SendError> {
        let request = request.into();
        let timeout = match request {
            Request::DnsQuery(_) => self.config.dns_timeout,
            _ => self.config.request_timeout,
        };
        self.request_with_timeout(now, request, timeout)
    }

    /// [`request`](Self::request) with its own timeout.
    pub fn request_with_timeout(
        &mut self,
        now: Instant,
        request: impl Into<Request>,
        timeout: Duration,
    ) -> Result<u32, SendError> {
        match self.state {
            State::Established => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotEstablished),
        }
        let request = request.into();
        let reply_kind = request.reply_kind();
        let id = self.pending.insert(now + timeout, reply_kind);
        if let Err(error) = self.queue(&request.into_message(id)) {
            self.pending.remove(id);
            return Err(error.into());
        }
        Ok(id)
    }

    /// Forgets request `id`: no reply or timeout will be reported for it. Whether it was pending.
    pub fn cancel(&mut self, id: u32) -> bool {
        self.pending.remove(id)
    }

    /// Sends a message that is neither a request nor one of the session's own (`Hello`,
    /// `Welcome`, `Ping`, `Pong`, `Error`, `Bye`): an update, a reply to the peer's request, an
    /// `AgentHello`. A client may send before `Welcome`, a server only after
    /// [`accept`](Self::accept).
    pub fn send(&mut self, msg: impl Into<Message>) -> Result<(), SendError> {
        let msg = msg.into();
        match self.state {
            State::Closed => return Err(SendError::Closed),
            State::AwaitingHello | State::AwaitingAccept => return Err(SendError::NotEstablished),
            State::AwaitingWelcome | State::Established => {}
        }
        if Request::is_request(&msg) {
            return Err(SendError::Request { kind: msg.kind() });
        }
        if matches!(
            msg,
            Message::Hello(_)
                | Message::Welcome(_)
                | Message::Ping(_)
                | Message::Pong(_)
                | Message::Error(_)
                | Message::Bye(_)
        ) {
            return Err(SendError::Reserved { kind: msg.kind() });
        }
        self.queue(&msg)?;
        Ok(())
    }

    fn queue(&mut self, msg: &Message) -> Result<(), EncodeError> {
        encode(msg, &mut self.out)
    }

    fn establish(&mut self, now: Instant) {
        self.state = State::Established;
        self.handshake_deadline = None;
        self.last_input = now;
        self.next_ping = self.config.ping_interval.map(|interval| now + interval);
    }

    /// Closes for `error`, telling the peer why unless it knows.
    fn fail(&mut self, error: SessionError) {
        if let Some(tell) = error.for_peer() {
            let _ = self.queue(&tell.into());
        }
        self.close_with(CloseReason::Error(error));
    }

    fn close_with(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.handshake_deadline = None;
        self.next_ping = None;
        self.pending.clear();
        self.close_reason = Some(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }
}

#[cfg(test)]
mod tests;
