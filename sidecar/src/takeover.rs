//! The app container's own ports, while it is replaced.
//!
//! `tether intercept --replace` takes the app container out of the workload's pods, and with it
//! every socket it listened on. Callers that reach the pod through a Service come to the agent's
//! ports and from there to the laptop; but callers that reach the pod by its address (a
//! headless Service, a StatefulSet's peers, anything that resolved the pod once) dial the
//! container's port itself, where nothing listens any more, and are refused. So while a replace
//! is routed here, the agent listens on the container's ports too, those that an intercept takes
//! whole (the replaced port, and the ones `--also-port` took with it), and serves them as its
//! own. When the replace ends it lets them go.
//!
//! A port is only ever taken when nothing listens on it: binding fails while the app is there
//! (a pod of the workload that has not been rolled out without it yet), and is tried again at the
//! next change of the intercepts. A connection accepted there is served only while an intercept
//! takes every connection; otherwise it is closed, never passed on to the app's address (which
//! is this very listener).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::proxy::Proxy;

/// The ports the agent may take over, and those it holds.
#[derive(Debug, Default)]
pub struct Takeover {
    /// Each proxied port's proxy, by the app's container port.
    proxies: Vec<(u16, Proxy)>,
    /// The container ports listened on now, each by its accepting task.
    taken: HashMap<u16, JoinHandle<()>>,
}

impl Takeover {
    /// Takes over the container ports of `proxies` (app port, its proxy) as a replace asks.
    pub fn new(proxies: Vec<(u16, Proxy)>) -> Self {
        Self {
            proxies,
            taken: HashMap::new(),
        }
    }

    /// Listens on the container ports that the intercepts now routed want, and lets go of the
    /// others: while a replace is routed on any port, each port whose intercepts take every
    /// connection.
    pub fn sync(&mut self) {
        let replaced = self.proxies.iter().any(|(_, p)| p.routes().has_replace());
        for (port, proxy) in &self.proxies {
            let wanted = replaced && proxy.routes().takes_every_connection();
            match (wanted, self.taken.contains_key(port)) {
                (true, false) => match bind(*port) {
                    Ok(listener) => {
                        info!(port, "Listening on the replaced container's port");
                        let proxy = proxy.clone();
                        let task = tokio::spawn(async move { proxy.serve_taken(listener).await });
                        self.taken.insert(*port, task);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                        debug!(
                            port,
                            "The container's port is in use (the app still runs here)"
                        )
                    }
                    // A port under 1024 without the pod's leave to bind it, say.
                    Err(error) => {
                        warn!(port, %error, "Cannot listen on the replaced container's port; callers of the pod's address are refused there")
                    }
                },
                (false, true) => {
                    if let Some(task) = self.taken.remove(port) {
                        task.abort();
                        info!(port, "Let go of the container's port");
                    }
                }
                _ => {}
            }
        }
    }

    /// The container ports listened on now.
    pub fn taken(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.taken.keys().copied().collect();
        ports.sort_unstable();
        ports
    }
}

impl Drop for Takeover {
    fn drop(&mut self) {
        for task in self.taken.values() {
            task.abort();
        }
    }
}

fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}
