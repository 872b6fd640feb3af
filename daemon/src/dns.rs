//! The workstation's DNS server: which names go to the cluster, a short-lived cache of answers,
//! and a reply built for each query.
//!
//! # Where a name goes ([`route`])
//! - The cluster domain and every name under it, single labels (`hello`, which the manager
//!   answers in the connected namespace), `x.ns.svc` and `x.ns.pod` (`ns` a namespace of the
//!   cluster), and reverse names of addresses in the cluster's service and pod ranges: to the
//!   manager, and only there.
//! - `x.ns` (`ns` a namespace of the cluster): to the manager first. Its answer is final unless
//!   it is NXDOMAIN, which sends the query on to the original resolver: a namespace that shadows
//!   a real top-level domain (`dev`, `com`) does not take the world's names under it away, and a
//!   name that exists in the cluster never leaves the workstation.
//! - Everything else: unchanged to the resolver the machine had before `connect`.
//!
//! The namespace list comes from the manager (a `Namespaces` frame after `Welcome` and on every
//! change) and the ranges with the subnets; both are kept across reconnects.
//!
//! # Answers, not messages ([`cache`], [`tether_dns::reply`])
//! What the manager or the original resolver says is kept as an [`Answer`](tether_dns::Answer)
//! (records and code), cached for at most its TTL, and each reply is built for its own query:
//! its id, OPT only if it had one, at most 512 bytes over UDP without EDNS, TC only over UDP.
//! The manager is always asked over its control stream with the largest EDNS size, so it never
//! truncates.
//!
//! # Layout
//! - [`route`]: the routing rule, sans-IO.
//! - [`cache`]: answers by question, with time passed in.
//! - [`server`]: [`Dns`], the async driver the stack's UDP and TCP port 53 feed.

pub mod cache;
pub mod route;
pub mod server;

pub use cache::{Cache, Key};
pub use route::{ClusterNames, Destination, Router};
pub use server::Dns;
