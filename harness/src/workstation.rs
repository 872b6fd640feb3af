//! [`Workstation`]: the daemon's side without the machine: a [`Session`] with the manager, the
//! daemon's [`Dns`] server answering on a loopback UDP port, and the dial table intercepted
//! connections are sent by.
//!
//! The daemon proper needs a TUN device, routes and a kubeconfig (to find the manager and ask
//! for a session certificate); none of that is here. Flows are opened on the session as the
//! daemon's stack opens them, and the DNS server gets its queries from a socket instead of the
//! stack's port 53. [`Workstation::reconnect`] does what the daemon's supervisor does after it
//! lost the tunnel (no session while it dials, a new session, the intercepts created again),
//! dialing the same address with the same credential instead of through the cluster.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tether_daemon::dns::Dns;
use tether_daemon::session::{DialTable, Session, SessionError, SessionRx};
use tether_dns::Transport;
use tether_proto::{CreateIntercept, InterceptInfo};
use tether_tunnel::{quinn, ClientCredential};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{patiently, HarnessError, Manager};

/// What the workstation says it is in `Hello` (a hint the manager shows next to the user).
pub const CLIENT: &str = "harness@loopback";

/// The daemon's side of one connection to a [`Manager`].
#[derive(Debug)]
pub struct Workstation {
    endpoint: quinn::Endpoint,
    manager: SocketAddr,
    namespace: String,
    dials: DialTable,
    /// The intercepts this workstation holds, by name, for [`Workstation::reconnect`].
    intercepts: Mutex<BTreeMap<String, (CreateIntercept, SocketAddr)>>,
    session_tx: watch::Sender<Option<Session>>,
    dns_addr: SocketAddr,
    dns_task: JoinHandle<()>,
    next_query: AtomicU16,
}

impl Workstation {
    /// Connects to `manager` with `credential` (see [`Manager::session_credential`]) for
    /// `namespace`, and starts the DNS server. A manager that refuses the session gives
    /// [`HarnessError::Session`] with [`SessionError::Refused`] and its reason.
    pub async fn connect(
        manager: &Manager,
        credential: &ClientCredential,
        namespace: &str,
    ) -> Result<Workstation, HarnessError> {
        let endpoint =
            tether_tunnel::client_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), credential)?;
        let dials = DialTable::default();
        let session = establish(&endpoint, manager.addr(), namespace, &dials).await?;
        let (session_tx, session_rx) = watch::channel(Some(session.clone()));
        // No original resolver: names that are not the cluster's get SERVFAIL.
        let dns = Dns::new(
            &session.welcome.cluster_domain,
            Vec::new(),
            Box::new(session_rx),
        );
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(HarnessError::io("binding the DNS server's port"))?;
        let dns_addr = socket
            .local_addr()
            .map_err(HarnessError::io("reading the DNS server's address"))?;
        let dns_task = tokio::spawn(serve_dns(Arc::new(socket), Arc::new(dns)));
        Ok(Workstation {
            endpoint,
            manager: manager.addr(),
            namespace: namespace.to_owned(),
            dials,
            intercepts: Mutex::default(),
            session_tx,
            dns_addr,
            dns_task,
            next_query: AtomicU16::new(1),
        })
    }

    /// The current session; [`SessionError::NoAnswer`] while there is none.
    pub fn session(&self) -> Result<Session, HarnessError> {
        self.session_tx
            .borrow()
            .clone()
            .ok_or(HarnessError::Session(SessionError::NoAnswer))
    }

    /// The current session as the daemon's DNS server and stack follow it.
    pub fn sessions(&self) -> SessionRx {
        self.session_tx.subscribe()
    }

    /// Where the daemon's DNS server listens (UDP).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// Asks the daemon's DNS server `name` (absolute, with its trailing dot, or relative)
    /// `rtype` over UDP, as a program on the workstation would.
    pub async fn resolve(&self, name: &str, rtype: RecordType) -> Result<Message, HarnessError> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(HarnessError::io("binding a DNS client port"))?;
        socket
            .connect(self.dns_addr)
            .await
            .map_err(HarnessError::io("connecting to the DNS server"))?;
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(name)?, rtype));
        socket
            .send(&query.to_vec()?)
            .await
            .map_err(HarnessError::io("sending a DNS query"))?;
        let mut buf = vec![0; 65535];
        let len = patiently("the DNS server's reply", socket.recv(&mut buf))
            .await?
            .map_err(HarnessError::io("receiving a DNS reply"))?;
        Ok(Message::from_vec(&buf[..len])?)
    }

    /// Starts an intercept (its `req` is filled in) whose connections go to `local`, as
    /// `tether intercept` does once the workload and its ports are resolved.
    pub async fn intercept(
        &self,
        create: CreateIntercept,
        local: SocketAddr,
    ) -> Result<InterceptInfo, HarnessError> {
        let info = self.session()?.create_intercept(create.clone()).await?;
        lock(&self.dials).insert(info.id, local);
        lock(&self.intercepts).insert(create.name.clone(), (create, local));
        Ok(info)
    }

    /// Ends intercept `name`.
    pub async fn leave(&self, name: &str) -> Result<(), HarnessError> {
        self.session()?.remove_intercept(name).await?;
        lock(&self.intercepts).remove(name);
        Ok(())
    }

    /// What the daemon does after it lost the tunnel: no session while it dials (new flows and
    /// cluster DNS queries wait), a new session with the same credential to the same address,
    /// this workstation's intercepts created again, then the new session for everyone.
    pub async fn reconnect(&self) -> Result<Session, HarnessError> {
        self.session_tx.send_replace(None);
        let session = establish(&self.endpoint, self.manager, &self.namespace, &self.dials).await?;
        let held: Vec<_> = lock(&self.intercepts).values().cloned().collect();
        for (create, local) in held {
            let info = session.create_intercept(create).await?;
            lock(&self.dials).insert(info.id, local);
        }
        self.session_tx.send_replace(Some(session.clone()));
        Ok(session)
    }
}

impl Drop for Workstation {
    fn drop(&mut self) {
        self.dns_task.abort();
        if let Some(session) = self.session_tx.borrow().as_ref() {
            session.close();
        }
    }
}

/// A session to `manager`, once the manager has also said which namespaces the cluster has
/// (right behind its `Welcome`): the DNS server routes `svc.ns` names by them.
async fn establish(
    endpoint: &quinn::Endpoint,
    manager: SocketAddr,
    namespace: &str,
    dials: &DialTable,
) -> Result<Session, HarnessError> {
    let session = Session::establish(
        endpoint,
        manager,
        CLIENT.to_owned(),
        namespace.to_owned(),
        dials.clone(),
    );
    let session = patiently("the manager's Welcome", session).await??;
    let mut namespaces = session.namespaces_rx.clone();
    patiently("the manager's namespaces", namespaces.changed())
        .await?
        .map_err(|_| SessionError::NoAnswer)?;
    Ok(session)
}

/// The daemon's DNS server on a socket: each query handled on its own, as the stack does for
/// port 53.
async fn serve_dns(socket: Arc<UdpSocket>, dns: Arc<Dns>) {
    let mut buf = vec![0; 65535];
    while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
        let query = buf[..len].to_vec();
        let (socket, dns) = (socket.clone(), dns.clone());
        tokio::spawn(async move {
            if let Some(reply) = dns.handle(&query, Transport::Udp).await {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
