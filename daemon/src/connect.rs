//! Finding and dialing the traffic manager: the carrier choice (direct UDP or QUIC over a
//! Kubernetes port-forward) and (re)establishing the session.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use tether_tunnel::{quinn, StreamCarrier};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::{
    cluster::{Cluster, ClusterError},
    session::{Session, SessionError},
};

/// How the QUIC packets travel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// UDP when the manager answers on it, else port-forward.
    Auto,
    /// Direct UDP to the manager (NodePort / LoadBalancer).
    Udp,
    /// QUIC packets over a Kubernetes port-forward.
    PortForward,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Udp => "udp",
            Transport::PortForward => "port-forward",
        })
    }
}

/// How long a UDP candidate gets to complete the QUIC handshake.
const UDP_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Errors while dialing.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the tunnel endpoint: {0}")]
    Endpoint(String),
    #[error("the traffic manager did not answer over UDP at {0}; try --transport port-forward")]
    NoUdp(String),
    #[error("the tunnel over {transport} to {addr}")]
    Session {
        transport: Transport,
        addr: SocketAddr,
        #[source]
        source: SessionError,
    },
}

/// A live session and how it was reached.
#[derive(Debug)]
pub struct Dialed {
    pub session: Session,
    pub transport: Transport,
    /// The manager's address as the user would recognise it.
    pub manager: String,
    /// The UDP address the tunnel uses, which must never be routed into the TUN.
    pub direct_peer: Option<SocketAddr>,
    /// When to get a new session certificate (two thirds into this one's life); the session is
    /// then re-established with it.
    pub renew_at: Instant,
    // The session certificate's endpoint: kept alive for the port-forward carrier, and used
    // again by [`redial`].
    endpoint: quinn::Endpoint,
}

/// How much life a session certificate must have left for [`redial`] to use it again.
const REDIAL_MARGIN: Duration = Duration::from_secs(30);

/// Whether [`redial`] can bring `last` back: it was over UDP and its certificate is not due.
pub fn can_redial(last: &Dialed) -> bool {
    last.direct_peer.is_some() && Instant::now() + REDIAL_MARGIN < last.renew_at
}

/// Dials the same manager address over UDP again with the last session's certificate, which
/// needs nothing from the API server: after a drop-out the session is back one handshake after
/// the link is, whatever the TCP connections to the API server are still waiting for. `None`
/// when that is not possible: the last session was not over UDP, or its certificate is due for
/// renewal (then only [`dial`] will do).
pub async fn redial(
    last: &Dialed,
    client: &str,
    namespace: &str,
    dials: crate::session::DialTable,
) -> Option<Result<Dialed, DialError>> {
    if !can_redial(last) {
        return None;
    }
    let addr = last.direct_peer?;
    let attempt = Session::establish(
        &last.endpoint,
        addr,
        client.to_owned(),
        namespace.to_owned(),
        dials,
    );
    Some(
        match tokio::time::timeout(UDP_PROBE_TIMEOUT, attempt).await {
            Ok(Ok(session)) => {
                info!(%addr, "Tunnel up over UDP again");
                Ok(Dialed {
                    session,
                    transport: Transport::Udp,
                    manager: last.manager.clone(),
                    direct_peer: Some(addr),
                    renew_at: last.renew_at,
                    endpoint: last.endpoint.clone(),
                })
            }
            Ok(Err(source)) => Err(DialError::Session {
                transport: Transport::Udp,
                addr,
                source,
            }),
            Err(_) => Err(DialError::NoUdp(addr.to_string())),
        },
    )
}

/// Gets a session certificate and dials the manager with `transport`.
pub async fn dial(
    cluster: &Cluster,
    transport: Transport,
    client: &str,
    namespace: &str,
    dials: crate::session::DialTable,
) -> Result<Dialed, DialError> {
    let (pod, _) = cluster.manager_pod().await?;
    let credential = crate::credential::session_credential(cluster).await?;
    let renew_at = Instant::now()
        + tether_tunnel::certificate_expiry(&credential.cert_pem)
            .map(|expiry| crate::credential::renew_after(SystemTime::now(), expiry))
            .unwrap_or(Duration::from_secs(3600));
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    let endpoint = tether_tunnel::client_endpoint(bind, &credential)
        .map_err(|e| DialError::Endpoint(e.to_string()))?;

    if transport != Transport::PortForward {
        let candidates = cluster.udp_candidates().await;
        for addr in &candidates {
            debug!(%addr, "Trying UDP");
            let attempt = Session::establish(
                &endpoint,
                *addr,
                client.to_owned(),
                namespace.to_owned(),
                dials.clone(),
            );
            match tokio::time::timeout(UDP_PROBE_TIMEOUT, attempt).await {
                Ok(Ok(session)) => {
                    info!(%addr, "Tunnel up over UDP");
                    return Ok(Dialed {
                        session,
                        transport: Transport::Udp,
                        manager: addr.to_string(),
                        direct_peer: Some(*addr),
                        renew_at,
                        endpoint,
                    });
                }
                Ok(Err(e)) => debug!(%addr, error = %e, "UDP candidate failed"),
                Err(_) => debug!(%addr, "UDP candidate timed out"),
            }
        }
        if transport == Transport::Udp {
            let tried = candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DialError::NoUdp(if tried.is_empty() {
                "no NodePort or LoadBalancer address".into()
            } else {
                tried
            }));
        }
    }

    let stream = cluster.port_forward(&pod).await?;
    let (relay_addr, _carrier) =
        StreamCarrier::spawn(stream).map_err(|e| DialError::Endpoint(e.to_string()))?;
    let session = Session::establish(
        &endpoint,
        relay_addr,
        client.to_owned(),
        namespace.to_owned(),
        dials,
    )
    .await
    .map_err(|source| DialError::Session {
        transport: Transport::PortForward,
        addr: relay_addr,
        source,
    })?;
    info!(%pod, "Tunnel up over port-forward");
    Ok(Dialed {
        session,
        transport: Transport::PortForward,
        manager: format!("pod/{pod} (port-forward)"),
        direct_peer: None,
        renew_at,
        endpoint,
    })
}
