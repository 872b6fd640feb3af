//! The harness's tests: a manager, a workstation and sidecar agents in this process, over QUIC
//! on loopback, with a fake API server and a hand-made cluster view (see the crate docs).
//!
//! - `flows`: TCP and UDP flows through the manager to loopback services; the dial policy;
//!   `--to-pod` listeners forwarding through the session.
//! - `dns`: the daemon's DNS server answering cluster names, short names and reverse names from
//!   the manager's view.
//! - `access`: what RBAC (the fake's rule table) lets a certificate's user do, and the refusals.
//! - `intercept`: a personal intercept through a sidecar proxy; agent credentials.
//! - `mirror`: mirrors beside a personal intercept; a silent laptop's copies dropped, callers
//!   unharmed.
//! - `reconnect`: a manager restarted with the same CA takes its clients and agents back.

mod access;
mod attack;
mod dns;
mod files;
mod flows;
mod intercept;
mod metrics;
mod mirror;
mod reconnect;
mod support;
mod version;
