//! Cluster-wide checks: which cluster, whether its API server answers (and if not, which layer
//! fails: DNS, TCP, TLS or the credentials), versions and skew, the Metrics API, the clock.

use std::time::Duration;

use crate::check::Check;

/// The oldest Kubernetes minor version tether is tested against.
pub const OLDEST_MINOR: u32 = 20;
/// Clock skew worth a warning: the API server's `Date` header has one-second resolution.
pub const CLOCK_WARN: Duration = Duration::from_secs(5);
/// Clock skew that breaks short-lived certificates (tether's session certificates, cloud
/// providers' tokens).
pub const CLOCK_FAIL: Duration = Duration::from_secs(60);

/// How far the way to the API server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome {
    /// The server's host name does not resolve.
    Dns(String),
    /// Nothing accepts a TCP connection there.
    Tcp(String),
    /// The TLS handshake failed (an unknown CA, a name mismatch, an expired certificate).
    Tls(String),
    /// The server refused the credentials (401), or getting them failed (an exec plugin).
    Auth(String),
    /// No answer in time.
    TimedOut(Duration),
    /// Any other failure.
    Other(String),
    /// It answered `/version`.
    Reached {
        /// `gitVersion`, e.g. `v1.20.2`.
        version: String,
        /// The minor version as a number, if it parses (`20+` is 20).
        minor: Option<u32>,
        latency: Duration,
    },
}

/// `cluster.context`: which kubeconfig context and server doctor looked at.
pub fn context_check(context: &str, server: &str) -> Check {
    Check::ok(
        "cluster.context",
        format!("context {context:?}, API server {server}"),
    )
}

/// `cluster.context` when the kubeconfig cannot be used at all.
pub fn no_kubeconfig(error: &str) -> Check {
    Check::fail(
        "cluster.context",
        format!("no usable kubeconfig: {error}"),
        "point KUBECONFIG or --kubeconfig at a kubeconfig, and pick a context with --context \
         (`kubectl config get-contexts` lists them)",
    )
}

/// `cluster.api`: reachable, or which layer fails and what to do.
pub fn api_check(server: &str, host: &str, outcome: &ApiOutcome) -> Check {
    const ID: &str = "cluster.api";
    let show = "`kubectl config view --minify` shows the server your context uses";
    match outcome {
        ApiOutcome::Reached { latency, .. } => Check::ok(
            ID,
            format!("API server {server} answers ({} ms)", latency.as_millis()),
        ),
        ApiOutcome::Dns(e) => Check::fail(
            ID,
            format!(
                "DNS: the API server's name {:?} does not resolve ({e})",
                host.rsplit_once(':').map_or(host, |(name, _)| name)
            ),
            format!("check your network, VPN and DNS settings; {show}"),
        ),
        ApiOutcome::Tcp(e) => Check::fail(
            ID,
            format!("TCP: nothing accepts connections at {host} ({e})"),
            format!(
                "is the cluster running and reachable from here (VPN, firewall)? {show}; for a \
                 local cluster, start it"
            ),
        ),
        ApiOutcome::Tls(e) => Check::fail(
            ID,
            format!("TLS: the handshake with {server} failed ({e})"),
            "the kubeconfig's certificate-authority data may be stale (a recreated cluster) or a \
             proxy intercepts TLS: get a fresh kubeconfig from the cluster's admin or provider",
        ),
        ApiOutcome::Auth(e) => Check::fail(
            ID,
            format!("auth: {server} refused your credentials ({e})"),
            "your token or certificate expired or is wrong: log in again (your provider's CLI) \
             or get a fresh kubeconfig",
        ),
        ApiOutcome::TimedOut(after) => Check::fail(
            ID,
            format!("{server} did not answer within {} s", after.as_secs()),
            format!("the API server or the path to it is overloaded or blocked; {show}"),
        ),
        ApiOutcome::Other(e) => Check::fail(
            ID,
            format!("{server}: {e}"),
            format!("try `kubectl get --raw /version`; {show}"),
        ),
    }
}

/// The minor version from `/version`'s `minor` field (`"20"`, `"20+"`).
pub fn parse_minor(minor: &str) -> Option<u32> {
    minor.trim_end_matches('+').parse().ok()
}

/// The minor version of a `vX.Y.Z` string (kubelet versions).
pub fn minor_of(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|m| m.parse().ok())
}

/// `cluster.version`: the server's version, tether's, and the kubelets' skew against the server
/// (a kubelet may be up to two minor versions older, never newer).
pub fn version_check(
    server: &str,
    server_minor: Option<u32>,
    tether: &str,
    kubelets: &[(String, String)],
) -> Check {
    const ID: &str = "cluster.version";
    let mut found = format!("server {server}, tether {tether}");
    let mut versions: Vec<&str> = kubelets.iter().map(|(_, v)| v.as_str()).collect();
    versions.sort();
    versions.dedup();
    if !versions.is_empty() {
        found.push_str(&format!(
            "; kubelets {} ({} nodes)",
            versions.join(", "),
            kubelets.len()
        ));
    }
    let Some(minor) = server_minor else {
        return Check::ok(ID, found);
    };
    if minor < OLDEST_MINOR {
        return Check::warn(
            ID,
            format!("{found}; tether is tested with Kubernetes 1.{OLDEST_MINOR} and newer"),
            "expect API errors; upgrade the cluster if you can",
        );
    }
    let skewed: Vec<String> = kubelets
        .iter()
        .filter_map(|(node, v)| {
            let k = minor_of(v)?;
            (k > minor || k + 2 < minor).then(|| format!("{node} ({v})"))
        })
        .collect();
    if skewed.is_empty() {
        Check::ok(ID, found)
    } else {
        Check::warn(
            ID,
            format!(
                "{found}; outside the supported kubelet skew: {}",
                skewed.join(", ")
            ),
            "upgrade those nodes' kubelets to within two minor versions of the API server (never \
             newer than it)",
        )
    }
}

/// What asking the Metrics API gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    /// `metrics.k8s.io` is not served (no metrics-server).
    NotServed,
    /// Registered, but asking it fails (metrics-server down).
    Unavailable(String),
    /// Served: per node, (name, CPU cores used, memory bytes used).
    Nodes(Vec<(String, f64, f64)>),
}

/// `cluster.metrics`: whether the Metrics API is served and, if so, the busiest node. Not being
/// served is no fault for tether (only `kubectl top` needs it).
pub fn metrics_check(metrics: &Metrics) -> Check {
    const ID: &str = "cluster.metrics";
    match metrics {
        Metrics::NotServed => Check::ok(
            ID,
            "the Metrics API (metrics.k8s.io) is not served: no usage figures (`kubectl top` \
             needs metrics-server)",
        ),
        Metrics::Unavailable(e) => Check::warn(
            ID,
            format!("the Metrics API is registered but fails: {e}"),
            "metrics-server is down: `kubectl get apiservice v1beta1.metrics.k8s.io` and \
             `kubectl -n kube-system get pods -l k8s-app=metrics-server`",
        ),
        Metrics::Nodes(nodes) => {
            let usage: Vec<String> = nodes
                .iter()
                .map(|(n, cpu, mem)| {
                    format!(
                        "{n} cpu {} memory {}",
                        crate::quantity::cpu(*cpu),
                        crate::quantity::memory(*mem)
                    )
                })
                .collect();
            Check::ok(ID, format!("served; usage: {}", usage.join("; ")))
        }
    }
}

/// `cluster.clock`: the workstation's clock against the API server's (`ahead` > 0: the
/// workstation is ahead).
pub fn clock_check(ahead_secs: f64) -> Check {
    const ID: &str = "cluster.clock";
    let skew = Duration::from_secs_f64(ahead_secs.abs());
    let dir = if ahead_secs >= 0.0 {
        "ahead of"
    } else {
        "behind"
    };
    let found = format!(
        "this machine's clock is {:.0} s {dir} the API server's",
        skew.as_secs_f64()
    );
    let next = "sync the clock (`sudo timedatectl set-ntp true`, or `sudo chronyc makestep`); \
                certificates and tokens fail when clocks disagree";
    if skew >= CLOCK_FAIL {
        Check::fail(ID, found, next)
    } else if skew >= CLOCK_WARN {
        Check::warn(ID, found, next)
    } else {
        Check::ok(
            ID,
            format!(
                "in sync with the API server (within {} s)",
                CLOCK_WARN.as_secs()
            ),
        )
    }
}

#[cfg(test)]
mod tests;
