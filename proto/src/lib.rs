//! tether's wire protocol, sans-IO: message types, the codecs that put them on QUIC streams,
//! QUIC datagrams and the port-forward relay, and the control stream's session state machine. No
//! sockets, no async, no clocks: callers feed bytes in and take messages out, so every rule here
//! is tested with byte literals.
//!
//! # Frames
//! Streams carry frames: `[u32 BE length][u16 BE kind][payload]`, where `length` counts the kind
//! and the payload (so it is at least 2) and is at most [`MAX_FRAME_LEN`] (1 MiB). The payload
//! is the [postcard](https://docs.rs/postcard) encoding of the kind's message struct and must be
//! consumed exactly. A frame of an unknown kind is skipped; a malformed payload spoils only its
//! own frame; a length out of bounds is fatal for the stream. See [`frame`].
//!
//! Kinds are append-only: a number, once used, keeps its meaning forever.
//!
//! | kind | message | direction |
//! |---:|---|---|
//! | 1 | [`Hello`] | client → manager, first frame of the control stream |
//! | 2 | [`Welcome`] | manager → client, answers `Hello` |
//! | 3 | [`Subnets`] | manager → client, when the cluster's ranges change |
//! | 4 | [`DnsQuery`] | client → manager |
//! | 5 | [`DnsAnswer`] | manager → client |
//! | 6 | [`Ping`] | either way |
//! | 7 | [`Pong`] | either way, answers `Ping` |
//! | 8 | [`Open`] | client → manager, first frame of a flow stream |
//! | 9 | [`OpenResult`] | manager → client, answers `Open` |
//! | 10 | [`UdpPacket`] | either way, on a UDP flow's stream |
//! | 11 | [`Error`] | either way |
//! | 12 | [`Bye`] | either way |
//! | 13 | [`CreateIntercept`] | client → manager |
//! | 14 | [`RemoveIntercept`] | client → manager |
//! | 15 | [`ListIntercepts`] | client → manager |
//! | 16 | [`InterceptReply`] | manager → client, answers 13–15 |
//! | 17 | [`AgentHello`] | agent → manager, after `Hello` |
//! | 18 | [`AgentIntercepts`] | manager → agent, the workload's intercepts |
//! | 19 | [`Dial`] | agent → manager → client, first frame of an intercepted connection's stream |
//! | 20 | [`DialResult`] | answers `Dial` |
//! | 21 | [`AgentCredentialRequest`] | client → manager, a credential for one namespace's agents |
//! | 22 | [`AgentCredentialReply`] | manager → client, answers 21 |
//! | 23 | [`Namespaces`] | manager → client, after `Welcome` and when namespaces come or go |
//! | 24 | [`ManagerInfo`] | manager → client, after `Welcome`: the manager's tether version |
//! | 25 | [`RouteStats`] | agent → manager, its route counts |
//! | 26 | [`InterceptStats`] | manager → client, how the session's intercepts route |
//! | 27 | [`OpenFiles`] | client → manager → agent, first frame of a file stream |
//! | 28 | [`OpenFilesResult`] | agent → manager → client, answers 27 |
//! | 29 | [`FileRequest`](files::FileRequest) | client → agent, on a file stream |
//! | 30 | [`FileReply`](files::FileReply) | agent → client, answers 29 |
//!
//! # Sessions
//! [`session::Session`] is the control stream's state machine, for both ends: the `Hello` /
//! `Welcome` handshake and its version check, request ids matched to their answers, `Ping` /
//! `Pong` keep-alive with idle and handshake timeouts, and dispatch of everything else as events.
//! A malformed frame is skipped there, not the end of the session. See [`session`].
//!
//! # Datagrams
//! A UDP flow's datagrams ride QUIC datagrams as `[varint flow id][payload]` (QUIC varint, RFC
//! 9000 §16). See [`datagram`].
//!
//! # Relay
//! The port-forward carrier relays QUIC packets over a byte stream as `[u16 BE length][packet]`.
//! See [`relay`].
//!
//! # Probe
//! A connection to a Service that starts with [`probe::PROBE`] is answered by a traffic agent
//! with who it is and what it routes by, so the daemon can tell when an intercept is in effect.
//!
//! # Layout
//! - [`frame`]: the frame codec and [`FrameDecoder`].
//! - [`message`]: the message structs and their kinds.
//! - [`session`]: the control stream's state machine.
//! - [`datagram`], [`relay`], [`probe`]: the other three encodings.
//! - [`files`]: the file protocol of `intercept --mount`.
//! - [`stats`]: route counts with a latency histogram, carried by kinds 25 and 26.
//! - [`chain`]: [`ErrorChain`], how every tether crate prints an error with its causes.
//!
//! # Version
//! [`Hello`] and [`Welcome`] each carry [`PROTOCOL_VERSION`]. Adding a kind does not change it;
//! changing the meaning or encoding of an existing kind does. Version 3 added the intercept's
//! [`InterceptMode`] (take or mirror) to `CreateIntercept` and `InterceptInfo`, and mirror counts
//! to `RouteStat` and `InterceptStat`. Version 4 added two file operations (`Fstat`,
//! `ReadDirPage`), which an agent of version 3 could not decode (it would not answer them).
//!
//! # Usage
//! ```
//! use tether_proto::{encode, Decoded, FrameDecoder, Message, Ping};
//!
//! let mut wire = bytes::BytesMut::new();
//! encode(&Ping { seq: 1 }.into(), &mut wire)?;
//! assert_eq!(&wire[..], [0, 0, 0, 3, 0, 6, 1]);
//!
//! // Bytes arrive in any pieces; poll after each until it returns `None`.
//! let mut decoder = FrameDecoder::new();
//! let mut got = Vec::new();
//! for piece in wire.chunks(4) {
//!     decoder.push(piece);
//!     while let Some(item) = decoder.poll() {
//!         match item {
//!             Ok(Decoded::Message(msg)) => got.push(msg),
//!             Ok(Decoded::Unknown { .. }) => {}                // from a newer peer: ignore
//!             Err(err) if err.is_fatal() => return Err(err.into()), // close the stream
//!             Err(_) => {}                                     // one bad frame: log, go on
//!         }
//!     }
//! }
//! assert_eq!(got, [Message::Ping(Ping { seq: 1 })]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod chain;
pub mod datagram;
pub mod files;
pub mod frame;
pub mod message;
pub mod probe;
pub mod relay;
pub mod session;
pub mod stats;

pub use chain::{error_chain, ErrorChain};
pub use datagram::{
    datagram_overhead, decode_datagram, encode_datagram, DatagramError, MAX_DATAGRAM_OVERHEAD,
    MAX_FLOW_ID,
};
pub use files::{FilesInfo, OpenFiles, OpenFilesResult};
pub use frame::{
    decode, encode, DecodeError, Decoded, EncodeError, FrameDecoder, HEADER_LEN, MAX_FRAME_LEN,
};
pub use message::{
    AgentCredential, AgentCredentialReply, AgentCredentialRequest, AgentHello, AgentInfo,
    AgentIntercepts, AgentLink, Bye, CreateIntercept, Dial, DialResult, DnsAnswer, DnsQuery, Error,
    ErrorCode, Hello, InterceptFilter, InterceptInfo, InterceptMode, InterceptReply, InterceptStat,
    InterceptState, InterceptStats, ListIntercepts, ManagerInfo, Message, Namespaces, Open,
    OpenError, OpenResult, PayloadError, Ping, Pong, Protocol, RemoveIntercept, Role, RouteStat,
    RouteStats, Subnets, UdpPacket, Welcome, AGENT_TOKEN_AUDIENCE,
};
pub use relay::{decode_relay, encode_relay, RelayDecoder, RelayError, MAX_RELAY_PACKET};

/// The protocol version this build speaks, sent in [`Hello`] and [`Welcome`].
pub const PROTOCOL_VERSION: u16 = 4;
