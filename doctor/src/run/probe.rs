//! The way to the API server, one layer at a time: the name (DNS), a TCP connection, then
//! `GET /version` through kube's client (TLS and credentials), whose `Date` header also gives
//! the clock skew.

use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::version::Info;
use tether_daemon::cluster::Cluster;

use crate::cluster::{parse_minor, ApiOutcome};

/// What the probe learnt.
#[derive(Debug)]
pub struct Probe {
    /// `host:port` of the API server.
    pub host: String,
    pub outcome: ApiOutcome,
    /// Seconds this machine's clock is ahead of the API server's, from its `Date` header.
    pub clock_ahead: Option<f64>,
}

/// Probes the API server within `limit` per step.
pub async fn probe(cluster: &Cluster, limit: Duration) -> Probe {
    let uri: http::Uri = cluster.server.parse().unwrap_or_default();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    let hostport = format!("{host}:{port}");
    let outcome = |outcome| Probe {
        host: hostport.clone(),
        outcome,
        clock_ahead: None,
    };
    // A proxy between us and the server makes the DNS and TCP steps about the wrong host.
    let proxied = ["HTTPS_PROXY", "https_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !proxied {
        let addrs =
            match tokio::time::timeout(limit, tokio::net::lookup_host((host.as_str(), port))).await
            {
                Err(_) => {
                    return outcome(ApiOutcome::Dns(format!(
                        "no answer within {} s",
                        limit.as_secs()
                    )))
                }
                Ok(Err(e)) => return outcome(ApiOutcome::Dns(e.to_string())),
                Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            };
        let Some(addr) = addrs.first() else {
            return outcome(ApiOutcome::Dns("no address".into()));
        };
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => {
                return outcome(ApiOutcome::Tcp(format!(
                    "{addr}: no answer within {} s",
                    limit.as_secs()
                )))
            }
            Ok(Err(e)) if addr.to_string() == hostport => {
                return outcome(ApiOutcome::Tcp(e.to_string()))
            }
            Ok(Err(e)) => return outcome(ApiOutcome::Tcp(format!("{addr}: {e}"))),
            Ok(Ok(_)) => {}
        }
    }
    let started = Instant::now();
    let sent_at = SystemTime::now();
    let request = http::Request::get("/version").body(kube::client::Body::empty());
    let Ok(request) = request else {
        return outcome(ApiOutcome::Other("cannot build a request".into()));
    };
    let response = match tokio::time::timeout(limit, cluster.client.send(request)).await {
        Err(_) => return outcome(ApiOutcome::TimedOut(limit)),
        Ok(Err(e)) => return outcome(classify(&e)),
        Ok(Ok(r)) => r,
    };
    let latency = started.elapsed();
    let clock_ahead = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(|server| {
            // The server stamped the answer somewhere between sending and receiving; its
            // `Date` has one-second resolution (truncated), hence the half second.
            let local = sent_at + latency / 2;
            let server = server + Duration::from_millis(500);
            match local.duration_since(server) {
                Ok(ahead) => ahead.as_secs_f64(),
                Err(behind) => -behind.duration().as_secs_f64(),
            }
        });
    let status = response.status();
    let body = match tokio::time::timeout(limit, response.into_body().collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        _ => Default::default(),
    };
    let outcome = if status == http::StatusCode::UNAUTHORIZED {
        ApiOutcome::Auth("401 Unauthorized".into())
    } else if status.is_success() || status == http::StatusCode::FORBIDDEN {
        let info: Option<Info> = serde_json::from_slice(&body).ok();
        ApiOutcome::Reached {
            version: info
                .as_ref()
                .map_or("unknown".into(), |i| i.git_version.clone()),
            minor: info.as_ref().and_then(|i| parse_minor(&i.minor)),
            latency,
        }
    } else {
        ApiOutcome::Other(format!("GET /version answered {status}"))
    };
    Probe {
        host: hostport,
        outcome,
        clock_ahead,
    }
}

/// Which layer a failed request failed at: TLS (rustls said so somewhere in the chain), the
/// credentials, or something else.
pub fn classify(e: &kube::Error) -> ApiOutcome {
    let text = tether_proto::error_chain(e);
    if let kube::Error::Auth(_) = e {
        return ApiOutcome::Auth(text);
    }
    if let kube::Error::Api(s) = e {
        if s.code == 401 {
            return ApiOutcome::Auth(text);
        }
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let tls = err.is::<rustls::Error>()
            || err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
        if tls {
            return ApiOutcome::Tls(text);
        }
        source = err.source();
    }
    let lower = text.to_lowercase();
    if ["certificate", "handshake", "tls"]
        .iter()
        .any(|w| lower.contains(w))
    {
        ApiOutcome::Tls(text)
    } else {
        ApiOutcome::Other(text)
    }
}
