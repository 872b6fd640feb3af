//! The cluster DNS resolver.
//!
//! [`answer`] is the sans-IO core: a query packet and a [`ClusterView`] in, an [`Outcome`] out.
//! It answers, authoritatively, the names the cluster's own DNS would answer (domain `D`,
//! `cluster.local` by default):
//!
//! | name | answer |
//! |---|---|
//! | `svc.ns.svc.D` | A/AAAA: the ClusterIPs; for a headless Service the ready endpoints; CNAME for an ExternalName Service |
//! | `host.svc.ns.svc.D` | A/AAAA of the headless Service's endpoint with that hostname (or dashed IP) |
//! | `_port._proto.svc.ns.svc.D` | SRV per named port (target and port), addresses in the additional section |
//! | `a-b-c-d.ns.pod.D` | A/AAAA: that IP, if a pod in `ns` has it |
//! | `svc.ns`, `svc.ns.svc`, … (`ns` an existing namespace) | as if `D` followed |
//! | `svc` (a Service in the client's namespace) | as `svc.<connected namespace>.svc.D` |
//! | `d.c.b.a.in-addr.arpa`, `….ip6.arpa` (an address in the service or pod ranges) | PTR: `svc.ns.svc.D` for a ClusterIP, `a-b-c-d.ns.pod.D` for a pod IP, else NXDOMAIN |
//!
//! Answers carry the asked name verbatim and a [`TTL`] of 5 s. Another name under `D` (or in
//! the cluster's reverse ranges) is NXDOMAIN; a name that exists without records of the asked
//! type is NOERROR with no answer (both with the zone's SOA in the authority section). Anything
//! else is [`Outcome::Forward`]: [`Resolver`] asks the pod's own upstream resolver and re-shapes
//! its answer for the query, or answers SERVFAIL.
//!
//! Every reply is built for its query by [`tether_dns::reply::build`]: its id, OPT only if the
//! query had one, and truncation only over UDP. The manager answers over the tunnel's control
//! stream, so its replies are never truncated; the workstation shapes them again for its own
//! clients.
//!
//! Malformed input never panics: a packet with a readable header gets FORMERR, anything shorter
//! (or a response rather than a query) is [`Outcome::Ignore`]d.

mod forward;
mod lookup;
#[cfg(test)]
mod tests;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::DNSClass;
use tether_dns::{reply, Answer, Rejection, Request, Transport};

pub use forward::{Forwarder, Resolver, FORWARD_TIMEOUT};
use lookup::Lookup;

use crate::view::ClusterView;

/// TTL of every record the manager answers, and of negative answers (the SOA minimum).
pub const TTL: u32 = 5;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this response.
    Answer(Vec<u8>),
    /// Not a cluster name: ask the upstream resolver, then build the reply for this request.
    Forward(Request),
    /// Not a query, or too short to answer: drop it.
    Ignore,
}

/// Answers `query`, arrived over `transport`, from `view` for a client whose session works in
/// `connected_namespace`.
pub fn answer(
    query: &[u8],
    transport: Transport,
    view: &ClusterView,
    connected_namespace: &str,
) -> Outcome {
    let request = match Request::parse(query) {
        Ok(request) => request,
        Err(Rejection::Drop) => return Outcome::Ignore,
        Err(Rejection::Reply(reply)) => return Outcome::Answer(reply),
    };
    match resolve(&request, view, connected_namespace) {
        Some(answer) => Outcome::Answer(reply::build(&request, &answer, transport)),
        None => Outcome::Forward(request),
    }
}

/// The cluster's answer to `request`, or `None` if the name is not the cluster's.
pub fn resolve(request: &Request, view: &ClusterView, connected_namespace: &str) -> Option<Answer> {
    if request.query.query_class() != DNSClass::IN {
        return None;
    }
    let soa = || vec![lookup::negative_soa(request.name(), view)];
    Some(
        match lookup::lookup(request.name(), request.qtype(), view, connected_namespace) {
            Lookup::NotCluster => return None,
            Lookup::NxDomain => {
                Answer::authoritative(ResponseCode::NXDomain, Vec::new(), soa(), Vec::new())
            }
            Lookup::Found {
                answers,
                additionals,
            } => {
                let authorities = if answers.is_empty() {
                    soa()
                } else {
                    Vec::new()
                };
                Answer::authoritative(ResponseCode::NoError, answers, authorities, additionals)
            }
        },
    )
}
