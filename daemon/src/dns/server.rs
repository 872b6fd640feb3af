//! [`Dns`]: the async driver of the workstation's DNS server. Parse, look in the cache, route,
//! ask, cache, build the reply; the decisions are [`Router`]'s, [`Cache`]'s and
//! [`tether_dns::reply`]'s.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use tether_dns::{reply, Answer, Rejection, Request, Transport, Upstreams};
use tether_metrics::workstation::{DnsKind, WorkstationMetrics};
use tracing::{debug, debug_span, Instrument};

use super::{Cache, ClusterNames, Destination, Key, Router};
use crate::session::{current, SessionRx};

/// How long an upstream resolver gets per query (and again for a TCP retry).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A future returned by [`Cluster::ask`].
pub type Asked<'a> = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'a>>;

/// The cluster side of the server: the manager behind the current session (or a test's fake).
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// The manager's response to `query` (a whole DNS message), `None` if it could not be asked.
    fn ask(&self, query: Vec<u8>) -> Asked<'_>;
    /// What the current session says the cluster's names are; `None` while there is none.
    fn names(&self) -> Option<ClusterNames>;
}

impl Cluster for SessionRx {
    fn ask(&self, query: Vec<u8>) -> Asked<'_> {
        Box::pin(async move {
            let session = current(self).await?;
            session
                .dns(query)
                .await
                .inspect_err(|error| debug!(%error, "The manager did not answer"))
                .ok()
        })
    }

    fn names(&self) -> Option<ClusterNames> {
        let current = self.borrow();
        let session = current.as_ref()?;
        let namespaces = session.namespaces_rx.borrow().clone();
        let names = ClusterNames::new(namespaces, &session.subnets_rx.borrow());
        Some(names)
    }
}

/// Where an answer came from, for the reply and the cache.
enum Fetched {
    /// An answer to cache and build replies from.
    Answer(Answer),
    /// The original resolver's response to the client's own query, which hickory cannot read:
    /// passed on as it is if it fits, never cached.
    Unreadable(Vec<u8>),
    /// Nobody answered.
    Failed,
}

/// The DNS server's logic: cluster names to the manager, others unchanged to the original
/// resolvers (see the [module docs](super) for the rule); answers cached briefly; each reply
/// built for its query.
#[derive(Debug)]
pub struct Dns {
    router: Router,
    cluster: Box<dyn Cluster>,
    /// The cluster's names as last known: kept while the daemon reconnects.
    names: Mutex<ClusterNames>,
    cache: Mutex<Cache>,
    upstreams: Upstreams,
    metrics: Arc<WorkstationMetrics>,
}

impl Dns {
    /// A server for `cluster_domain` that asks `cluster` and forwards the rest to `upstream`.
    pub fn new(cluster_domain: &str, upstream: Vec<SocketAddr>, cluster: Box<dyn Cluster>) -> Dns {
        Dns {
            router: Router::new(cluster_domain),
            cluster,
            names: Mutex::default(),
            cache: Mutex::default(),
            upstreams: Upstreams::new(upstream, UPSTREAM_TIMEOUT),
            metrics: Arc::default(),
        }
    }

    /// The same server, counting its queries in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<WorkstationMetrics>) -> Dns {
        self.metrics = metrics;
        self
    }

    /// The reply to one query that arrived over `transport`; `None` to stay silent (not a query).
    pub async fn handle(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Request::parse(packet) {
            Ok(request) => request,
            Err(Rejection::Drop) => {
                debug!(
                    len = packet.len(),
                    "Ignored a packet that is not a DNS query"
                );
                return None;
            }
            Err(Rejection::Reply(reply)) => return Some(reply),
        };
        let key = Key::of(&request);
        let span =
            debug_span!("dns", id = request.id, name = %key.name, qtype = key.qtype, ?transport);
        async {
            let started = Instant::now();
            if let Some(answer) = lock(&self.cache).get(started, &key) {
                debug!("Answered from the cache");
                self.count(DnsKind::cache_hit, started);
                return Some(reply::build(&request, &answer, transport));
            }
            let destination = self.router.route(&key.name, &self.names());
            debug!(?destination, "Routed");
            let (fetched, asked) = match destination {
                Destination::Upstream => (self.upstream(packet).await, DnsKind::upstream),
                Destination::Cluster => (self.cluster(&request).await, DnsKind::cluster),
                Destination::ClusterFirst => match self.cluster(&request).await {
                    Fetched::Answer(answer) if answer.code == ResponseCode::NXDomain => {
                        debug!("Not a cluster name; asking the original resolver");
                        (self.upstream(packet).await, DnsKind::upstream)
                    }
                    other => (other, DnsKind::cluster),
                },
            };
            let kind = match &fetched {
                Fetched::Answer(answer) if answer.code == ResponseCode::NXDomain => {
                    DnsKind::nxdomain
                }
                _ => asked,
            };
            self.count(kind, started);
            Some(match fetched {
                Fetched::Answer(answer) => {
                    lock(&self.cache).insert(Instant::now(), key, &answer);
                    reply::build(&request, &answer, transport)
                }
                Fetched::Unreadable(packet) => reply::relay(&request, &packet, transport),
                Fetched::Failed => reply::error(&request, ResponseCode::ServFail, transport),
            })
        }
        .instrument(span)
        .await
    }

    fn count(&self, kind: DnsKind, started: Instant) {
        self.metrics.dns(kind, started.elapsed().as_secs_f64());
    }

    /// The current session's view of the cluster's names, else the last one known.
    fn names(&self) -> ClusterNames {
        let mut known = lock(&self.names);
        if let Some(names) = self.cluster.names() {
            *known = names;
        }
        known.clone()
    }

    /// The manager's answer, asked over the control stream with the largest EDNS size.
    async fn cluster(&self, request: &Request) -> Fetched {
        let Some(packet) = self.cluster.ask(request.to_stream_query(0)).await else {
            return Fetched::Failed;
        };
        match Answer::from_response(&packet) {
            Ok(answer) => Fetched::Answer(answer),
            Err(error) => {
                debug!(%error, "Unreadable answer from the manager");
                Fetched::Failed
            }
        }
    }

    /// The original resolver's answer to the client's own query (retried over TCP if
    /// truncated).
    async fn upstream(&self, packet: &[u8]) -> Fetched {
        match self.upstreams.exchange(packet).await {
            Ok(response) => match Answer::from_response(&response) {
                Ok(answer) => Fetched::Answer(answer),
                Err(error) => {
                    debug!(%error, "Unreadable answer from the original resolver; relaying it");
                    Fetched::Unreadable(response)
                }
            },
            Err(error) => {
                debug!(%error, "The original resolver did not answer");
                Fetched::Failed
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a task panicked while holding it; the data stays usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
