//! How a traffic agent routes, sans-IO: the one model the sidecar routes requests with, the
//! manager registers intercepts with and the CLI validates filters with. No sockets, no async.
//!
//! # Layout
//! - [`filter`]: an intercept's HTTP filter (headers, path prefix), compiled from its wire form;
//!   whether two filters overlap.
//! - [`router`]: the routing table of one port (app, personal intercepts, a global intercept,
//!   mirrors), refusing conflicting intercepts.
//! - [`sniff`]: HTTP/1, HTTP/2, a tether probe or something else, from a connection's first
//!   bytes.
#![forbid(unsafe_code)]

pub mod filter;
pub mod router;
pub mod sniff;
