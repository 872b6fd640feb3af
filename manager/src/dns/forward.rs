//! The async driver around [`answer`](super::answer): cluster names from the view, everything
//! else from the pod's upstream resolver, re-shaped for the query.

use std::net::SocketAddr;
use std::time::Duration;
use tether_metrics::manager::DnsKind;

use hickory_proto::op::ResponseCode;
use tether_dns::{reply, Answer, Request, Transport, Upstreams};
use tracing::{debug, Instrument};

use super::{answer, Outcome};
use crate::view::SharedView;
use tether_dns::ResolvConf;

/// How long one upstream resolver gets to answer a forwarded query.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends queries that are not cluster names to the pod's upstream resolvers.
#[derive(Debug, Clone)]
pub struct Forwarder(Upstreams);

impl Forwarder {
    /// Forwards to `upstreams`, tried in order, each given `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder(Upstreams::new(upstreams, timeout))
    }

    /// Forwards to the `nameserver`s of `conf` on port 53, with [`FORWARD_TIMEOUT`].
    pub fn from_resolv_conf(conf: &ResolvConf) -> Forwarder {
        let upstreams = conf
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect();
        Forwarder::new(upstreams, FORWARD_TIMEOUT)
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.0.servers()
    }

    /// The reply to `request` (whose packet is `query`) built from the first upstream's answer,
    /// or SERVFAIL if none answers in time or its answer is unreadable.
    pub async fn forward(&self, request: &Request, query: &[u8], transport: Transport) -> Vec<u8> {
        let answer = match self.0.exchange(query).await {
            Ok(packet) => Answer::from_response(&packet).unwrap_or_else(|error| {
                debug!(%error, "Unreadable upstream answer");
                Answer::empty(ResponseCode::ServFail)
            }),
            Err(error) => {
                debug!(%error, "No upstream answer");
                Answer::empty(ResponseCode::ServFail)
            }
        };
        reply::build(request, &answer, transport)
    }
}

/// Resolves queries for connected clients: the seam between the tunnel's control stream and
/// [`answer`].
#[derive(Debug, Clone)]
pub struct Resolver {
    view: SharedView,
    forwarder: Forwarder,
}

impl Resolver {
    /// Answers from `view`, forwarding the rest with `forwarder`.
    pub fn new(view: SharedView, forwarder: Forwarder) -> Resolver {
        Resolver { view, forwarder }
    }

    /// The response to `query`, which came over the control stream (so the reply is never
    /// truncated), for a client whose session works in `connected_namespace`; `None` if there
    /// is nothing to send back (not a query).
    pub async fn resolve(&self, query: &[u8], connected_namespace: &str) -> Option<Vec<u8>> {
        self.resolve_counted(query, connected_namespace)
            .await
            .map(|(response, _)| response)
    }

    /// [`Resolver::resolve`], also saying how the query was answered (for the metrics).
    pub async fn resolve_counted(
        &self,
        query: &[u8],
        connected_namespace: &str,
    ) -> Option<(Vec<u8>, DnsKind)> {
        let id = query
            .get(..2)
            .map_or(0, |id| u16::from_be_bytes([id[0], id[1]]));
        let span = tracing::debug_span!("dns", id, ns = connected_namespace);
        async {
            let outcome = answer(
                query,
                Transport::Stream,
                &self.view.read(),
                connected_namespace,
            );
            match outcome {
                Outcome::Answer(response) => {
                    debug!("Answered from the cluster view");
                    let kind = kind_of(&response, DnsKind::cluster);
                    Some((response, kind))
                }
                Outcome::Forward(request) => {
                    debug!("Forwarded upstream");
                    let response = self
                        .forwarder
                        .forward(&request, query, Transport::Stream)
                        .await;
                    let kind = kind_of(&response, DnsKind::upstream);
                    Some((response, kind))
                }
                Outcome::Ignore => {
                    debug!("Ignored a packet that is not a query");
                    None
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// `answered_by`, unless the response says the name does not exist (RCODE 3, NXDOMAIN).
fn kind_of(response: &[u8], answered_by: DnsKind) -> DnsKind {
    match response.get(3) {
        Some(flags) if flags & 0x0f == 3 => DnsKind::nxdomain,
        _ => answered_by,
    }
}
