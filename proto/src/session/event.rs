//! What a [`Session`](super::Session) reports, what it correlates, and its errors.

use std::time::Duration;

use crate::frame::{DecodeError, EncodeError};
use crate::message::{
    AgentCredentialReply, AgentCredentialRequest, CreateIntercept, DnsAnswer, DnsQuery, Error,
    ErrorCode, Hello, InterceptReply, ListIntercepts, Message, RemoveIntercept, Welcome,
};
use crate::PROTOCOL_VERSION;

/// What happened on a session; take them with [`poll_event`](super::Session::poll_event).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server: the client's `Hello`, of this build's version. Answer with
    /// [`accept`](super::Session::accept) or [`refuse`](super::Session::refuse).
    Hello(Hello),
    /// Client: the server's `Welcome`, of this build's version; the session is established.
    Established(Welcome),
    /// A message the session does not handle itself: updates (`Subnets`, `Namespaces`,
    /// `AgentIntercepts`), the peer's requests (`DnsQuery`, `CreateIntercept`, …), `AgentHello`.
    Message(Message),
    /// The answer to [`request`](super::Session::request) `id`.
    Reply {
        /// The id `request` returned.
        id: u32,
        /// The answer.
        reply: Reply,
    },
    /// Request `id` got no answer in time; it is forgotten (a late answer is
    /// [`Unmatched`](Self::Unmatched)).
    TimedOut {
        /// The id `request` returned.
        id: u32,
    },
    /// An answer for no pending request of its kind (late, cancelled, or bogus); dropped.
    Unmatched {
        /// The answer's frame kind.
        kind: u16,
        /// Its id.
        id: u32,
    },
    /// A frame whose payload did not decode was skipped; the session goes on.
    Skipped {
        /// The frame's kind.
        kind: u16,
        /// What was wrong ([`DecodeError::Malformed`]).
        error: DecodeError,
    },
    /// The session is over (always the last event). Pending requests are forgotten with it.
    Closed(CloseReason),
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side called [`close`](super::Session::close) or [`refuse`](super::Session::refuse).
    Local,
    /// The peer said `Bye`.
    Bye,
    /// The peer ended the stream, after the handshake, without `Bye`.
    Finished,
    /// Something went wrong.
    Error(SessionError),
}

impl CloseReason {
    /// The error, unless the session closed in order.
    pub fn error(&self) -> Option<&SessionError> {
        match self {
            Self::Error(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer's `Hello` or `Welcome` carries a version this build does not speak.
    #[error("the peer speaks protocol version {peer}, this build {PROTOCOL_VERSION}")]
    Version {
        /// The peer's version.
        peer: u16,
    },
    /// The server answered `Hello` with an `Error`.
    #[error("refused: {}", .0.message)]
    Refused(Error),
    /// The peer sent an `Error` after the handshake.
    #[error("closed by the peer: {}", .0.message)]
    PeerError(Error),
    /// The first frame was not the handshake's (nor, for a client, an `Error`).
    #[error("expected {expected}, got a frame of kind {kind}")]
    Unexpected {
        /// What was expected (`Hello`, or `Welcome`).
        expected: &'static str,
        /// The kind of the frame that came.
        kind: u16,
    },
    /// A frame did not decode where the handshake's was expected.
    #[error("undecodable frame instead of {expected}")]
    BadHandshake {
        /// `Hello` or `Welcome`.
        expected: &'static str,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The stream cannot be decoded any more (a fatal [`DecodeError`]).
    #[error("undecodable control stream")]
    Decode(#[source] DecodeError),
    /// The handshake's frame did not come in time.
    #[error("no {expected} within {timeout:?}")]
    HandshakeTimedOut {
        /// `Hello` or `Welcome`.
        expected: &'static str,
        /// [`SessionConfig::handshake_timeout`](super::SessionConfig::handshake_timeout).
        timeout: Duration,
    },
    /// Nothing arrived for [`SessionConfig::idle_timeout`](super::SessionConfig::idle_timeout).
    #[error("nothing received for {0:?}")]
    IdleTimedOut(Duration),
    /// The peer ended the stream before the handshake was over.
    #[error("the stream ended before the handshake was over")]
    Ended,
}

impl SessionError {
    /// The `Error` to tell the peer before closing, if it does not know already.
    pub(super) fn for_peer(&self) -> Option<Error> {
        let message = match self {
            // The manager's wording since version 1, which clients show as it is.
            Self::Version { peer } => {
                format!("protocol version {peer} is not supported; upgrade tether")
            }
            Self::Refused(_)
            | Self::PeerError(_)
            | Self::Ended
            | Self::Decode(DecodeError::Truncated { .. }) => return None,
            Self::BadHandshake { source, .. } | Self::Decode(source) => format!("{self}: {source}"),
            other => other.to_string(),
        };
        Some(Error {
            code: ErrorCode::Other,
            message,
        })
    }
}

/// Why a message was not queued. Nothing was sent then.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
    /// Not yet: a server sends nothing before `Welcome`, and requests wait for the handshake.
    #[error("the session is not established yet")]
    NotEstablished,
    /// [`accept`](super::Session::accept) on a client, or on a server that is not waiting for it.
    #[error("no Hello is waiting for an answer")]
    NoHello,
    /// The session sends this kind itself (`Hello`, `Welcome`, `Ping`, `Pong`, `Error`, `Bye`).
    #[error("messages of kind {kind} are the session's own")]
    Reserved {
        /// The message's kind.
        kind: u16,
    },
    /// A request goes through [`request`](super::Session::request), which assigns its id.
    #[error("a request of kind {kind} must go through request()")]
    Request {
        /// The message's kind.
        kind: u16,
    },
    /// The message cannot be encoded.
    #[error("unencodable message")]
    Encode(#[from] EncodeError),
}

/// A message that expects a reply; [`request`](super::Session::request) fills in its id (`id` of
/// a `DnsQuery`, `req` of the others), so whatever it holds is overwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Answered by [`DnsAnswer`].
    DnsQuery(DnsQuery),
    /// Answered by [`InterceptReply`].
    CreateIntercept(CreateIntercept),
    /// Answered by [`InterceptReply`].
    RemoveIntercept(RemoveIntercept),
    /// Answered by [`InterceptReply`].
    ListIntercepts(ListIntercepts),
    /// Answered by [`AgentCredentialReply`].
    AgentCredentialRequest(AgentCredentialRequest),
}

impl Request {
    /// The message to send, with `id` filled in.
    pub(super) fn into_message(self, id: u32) -> Message {
        match self {
            Self::DnsQuery(m) => DnsQuery { id, ..m }.into(),
            Self::CreateIntercept(m) => CreateIntercept { req: id, ..m }.into(),
            Self::RemoveIntercept(m) => RemoveIntercept { req: id, ..m }.into(),
            Self::ListIntercepts(m) => ListIntercepts { req: id, ..m }.into(),
            Self::AgentCredentialRequest(m) => AgentCredentialRequest { req: id, ..m }.into(),
        }
    }

    /// The frame kind of the answer.
    pub(super) fn reply_kind(&self) -> u16 {
        match self {
            Self::DnsQuery(_) => REPLY_KINDS[0],
            Self::CreateIntercept(_) | Self::RemoveIntercept(_) | Self::ListIntercepts(_) => {
                REPLY_KINDS[1]
            }
            Self::AgentCredentialRequest(_) => REPLY_KINDS[2],
        }
    }

    /// Whether `msg` is a request (and so must not go through `send`).
    pub(super) fn is_request(msg: &Message) -> bool {
        matches!(
            msg,
            Message::DnsQuery(_)
                | Message::CreateIntercept(_)
                | Message::RemoveIntercept(_)
                | Message::ListIntercepts(_)
                | Message::AgentCredentialRequest(_)
        )
    }
}

/// The kinds of [`DnsAnswer`], [`InterceptReply`] and [`AgentCredentialReply`].
const REPLY_KINDS: [u16; 3] = [5, 16, 22];

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answers a `DnsQuery`.
    DnsAnswer(DnsAnswer),
    /// Answers `CreateIntercept`, `RemoveIntercept` and `ListIntercepts`.
    InterceptReply(InterceptReply),
    /// Answers an `AgentCredentialRequest`.
    AgentCredentialReply(AgentCredentialReply),
}

impl Reply {
    /// The id of the request it answers.
    pub fn id(&self) -> u32 {
        match self {
            Self::DnsAnswer(m) => m.id,
            Self::InterceptReply(m) => m.req,
            Self::AgentCredentialReply(m) => m.req,
        }
    }

    /// Its frame kind.
    pub fn kind(&self) -> u16 {
        match self {
            Self::DnsAnswer(_) => REPLY_KINDS[0],
            Self::InterceptReply(_) => REPLY_KINDS[1],
            Self::AgentCredentialReply(_) => REPLY_KINDS[2],
        }
    }
}

macro_rules! from_structs {
    ($enum:ident: $($name:ident),*) => {
        $(impl From<$name> for $enum {
            fn from(m: $name) -> Self {
                Self::$name(m)
            }
        })*
    };
}

from_structs!(Request: DnsQuery, CreateIntercept, RemoveIntercept, ListIntercepts, AgentCredentialRequest);
from_structs!(Reply: DnsAnswer, InterceptReply, AgentCredentialReply);
