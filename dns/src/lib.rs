//! DNS replies every resolver gets right, for both of tether's DNS servers: the workstation's
//! (the daemon) and the cluster's (the traffic manager).
//!
//! The rule both follow: **keep the answer, not the message.** What a source says (the manager's
//! view of the cluster, an upstream resolver) becomes an [`Answer`]: response code, flags and
//! records, without id, question, OPT record or truncation. Each reply is then built for the
//! query it answers by [`reply::build`]:
//! - the query's id and question (as the client spelled it);
//! - an OPT record only when the query had one (RFC 6891 §7), advertising
//!   [`reply::ADVERTISED_PAYLOAD`];
//! - over UDP at most 512 bytes without EDNS, else the client's advertised size capped at
//!   [`reply::MAX_UDP_PAYLOAD`] (DNS flag day 2020); what does not fit is left out and TC set,
//!   keeping as many whole answer records as fit (resolvers without TCP fallback, such as musl
//!   before 1.2.4, still get addresses);
//! - over a stream (TCP, the tunnel's control stream) never truncated and never TC.
//!
//! So an answer cached from one kind of query serves any other, and an upstream's answer is
//! re-shaped for the client rather than relayed with the upstream's idea of its limits.
//!
//! # Layout
//! - [`request`]: a query parsed once at the boundary ([`Request`]), or the FORMERR/NOTIMP it
//!   earns; the [`Transport`] a reply travels over.
//! - [`answer`]: [`Answer`], the cacheable part of a response, and its TTL.
//! - [`reply`]: building the reply to a request (sans-IO, byte-literal tests).
//! - [`reverse`]: `in-addr.arpa` / `ip6.arpa` names and zones.
//! - [`resolv_conf`]: the one `resolv.conf` parser (the workstation's and the manager pod's).
//! - [`upstream`]: the one upstream exchange (UDP, checked id, TCP when truncated), the only
//!   module here that does I/O.
#![forbid(unsafe_code)]

pub mod answer;
pub mod reply;
pub mod request;
pub mod resolv_conf;
pub mod reverse;
pub mod upstream;

pub use answer::Answer;
pub use request::{Rejection, Request, Transport};
pub use resolv_conf::ResolvConf;
pub use upstream::{UpstreamError, Upstreams};

/// Length of a DNS header.
pub const HEADER_LEN: usize = 12;
