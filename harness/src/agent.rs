//! [`Agent`]: a sidecar traffic agent as in a pod, on loopback: the proxy in front of an app and
//! the link to the manager, both `tether-sidecar`'s own code.
//!
//! The link reads its credential and the pod's token from files, as from the mounted Secret
//! and the projected token; the harness writes them into a directory of its own.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tether_sidecar::files;
use tether_sidecar::link::{self, LinkConfig, PortRoutes};
use tether_sidecar::proxy::{Proxy, ProxyConfig, Routes, Tally};
use tether_tunnel::ClientCredential;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{eventually, HarnessError};

/// Who an agent says it is.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The pod's namespace.
    pub namespace: String,
    /// The workload, `Kind/name`.
    pub workload: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service-account token (see [`FakeApi::add_pod`](crate::FakeApi::add_pod)).
    pub token: String,
}

/// A running agent for one port. Dropping it stops the proxy and the link.
#[derive(Debug)]
pub struct Agent {
    addr: SocketAddr,
    routes: Routes,
    credentials: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Starts a proxy on a free loopback port in front of `app`, and its link to the manager at
    /// `manager` with `credential` (an agent credential for the identity's namespace).
    pub async fn start(
        manager: SocketAddr,
        credential: &ClientCredential,
        identity: AgentIdentity,
        app: SocketAddr,
    ) -> Result<Agent, HarnessError> {
        let files = Arc::new(files::Volumes::default());
        Agent::start_with_files(manager, credential, identity, app, files).await
    }

    /// [`Agent::start`], serving `files` to the intercepts' holders (`intercept --mount`).
    pub async fn start_with_files(
        manager: SocketAddr,
        credential: &ClientCredential,
        identity: AgentIdentity,
        app: SocketAddr,
        files: Arc<files::Volumes>,
    ) -> Result<Agent, HarnessError> {
        let credentials = credential_dir(credential, &identity.token)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(HarnessError::io("binding the proxy's port"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("reading the proxy's address"))?;
        let tally = Tally::default();
        let proxy = Proxy::new(ProxyConfig {
            app,
            // Every harness client speaks first (HTTP); a silent one is a bug to see quickly.
            sniff_timeout: Duration::from_millis(500),
            identity: identity.pod.clone(),
            metrics: None,
            tally: tally.clone(),
        });
        let routes = proxy.routes().clone();
        let ports = vec![PortRoutes {
            app_port: app.port(),
            routes: routes.clone(),
        }];
        let config = LinkConfig {
            manager,
            credentials: credentials.clone(),
            namespace: identity.namespace,
            workload: identity.workload,
            pod: identity.pod,
        };
        let tasks = vec![
            tokio::spawn(async move { proxy.serve(listener).await }),
            tokio::spawn(link::run(
                config,
                ports,
                // The app ports here are the test machine's: never taken over.
                tether_sidecar::takeover::Takeover::default(),
                Default::default(),
                tally,
                files,
            )),
        ];
        Ok(Agent {
            addr,
            routes,
            credentials,
            tasks,
        })
    }

    /// Where the proxy listens: where the Service would send the workload's traffic.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ids of the intercepts the proxy routes by now.
    pub fn intercepts(&self) -> BTreeSet<u64> {
        self.routes.snapshot().iter().map(|i| i.id.0).collect()
    }

    /// Waits until the proxy routes by exactly the intercepts `ids` (none: everything goes to
    /// the app), as the manager's tables arrive over the link.
    pub async fn routing(&self, ids: &[u64]) -> Result<(), HarnessError> {
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        let what = format!("the agent to route by intercepts {want:?}");
        eventually(&what, || {
            let have = self.intercepts();
            let done = have == want;
            async move { done }
        })
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.credentials);
    }
}

/// A new directory holding `credential` and `token` under the names the link reads.
fn credential_dir(credential: &ClientCredential, token: &str) -> Result<PathBuf, HarnessError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-harness-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(HarnessError::io(format!("writing {}", path.display())))
    };
    std::fs::create_dir_all(&dir)
        .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
    write(ClientCredential::CA_KEY, &credential.ca_pem)?;
    write(ClientCredential::CERT_KEY, &credential.cert_pem)?;
    write(ClientCredential::KEY_KEY, &credential.key_pem)?;
    write("token", token)?;
    Ok(dir)
}
