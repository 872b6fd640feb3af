//! The daemon's intercepts: starting one (checking the request, asking the manager, installing
//! the agent), ending one, listing, and re-creating them after a reconnect.
//!
//! # Order of `tether intercept`
//! Everything that can refuse the request runs before anything in the cluster changes:
//! 1. the workload and its Service port are resolved (unknown workload, no Service, unknown
//!    port: refused here);
//! 2. the manager registers the intercept (a conflict or a bad filter: refused here). An
//!    intercept may exist before its workload has agents: agents get their workload's table
//!    when they connect;
//! 3. only then is the agent installed, if it is not yet, and the rollout awaited. If that
//!    fails the intercept is removed again (the agent stays: `tether uninstall` removes it);
//! 4. every ready pod of the workload must have an agent linked to the manager, and the Service's
//!    Endpoints list only agent pods;
//! 5. the call returns once connections to the Service, made from inside the cluster, land on
//!    agents that route by the intercept ([`effect`]): the next request a caller sends is
//!    intercepted. `leave` likewise returns once they no longer route by it, and
//!    [`Intercepts::await_app`] (after `tether uninstall`) once they reach the app.
//!
//! Each step is reported to the CLI as it starts ([`Progress`]).
//!
//! Intercepted connections arrive on the session (see [`crate::session`]); the daemon dials
//! `127.0.0.1:LOCAL` for them, through the [`DialTable`] this module keeps.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};
use serde::{Deserialize, Serialize};
use tether_proto::{CreateIntercept, InterceptFilter, InterceptInfo};
use tokio::sync::watch;
use tracing::{info, warn};

use effect::{await_effect, Expect, Judge, EFFECT_TIMEOUT};

pub mod effect;

use tether_kube::workload::{
    env,
    inject::{self, AgentSettings, Workload},
    kube as wk,
};

use crate::{
    cluster::Cluster,
    session::{DialTable, Session},
};

/// How long the agent's rollout may take.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the agents of ready pods to link to the manager.
pub const AGENTS_TIMEOUT: Duration = Duration::from_secs(30);

/// `tether intercept`, as the CLI sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptRequest {
    /// The workload: a name, or `kind/name`.
    pub workload: String,
    /// The intercept's name [default: the workload's name].
    pub name: Option<String>,
    /// The workstation port the traffic goes to.
    pub local_port: u16,
    /// The Service port, by name or number [default: the only one].
    pub service_port: Option<String>,
    /// Header filters `NAME=VALUE`.
    pub headers: Vec<String>,
    /// Path prefix filter.
    pub path_prefix: Option<String>,
    /// Return the intercepted container's environment.
    pub env: bool,
}

/// What `tether intercept` reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptReport {
    /// The intercept.
    pub intercept: ActiveIntercept,
    /// True if this call installed the agent.
    pub installed_agent: bool,
    /// The pods whose agents follow the intercept.
    pub pods: Vec<String>,
    /// The intercepted container's environment, if asked for.
    pub env: Option<Vec<(String, String)>>,
}

/// Tells the CLI which step a long request is at (and logs it).
#[derive(Debug, Clone)]
pub struct Progress(Option<tokio::sync::mpsc::UnboundedSender<String>>);

impl Progress {
    /// Reports to `tx`.
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        Self(Some(tx))
    }

    /// Reports nowhere (re-creating intercepts after a reconnect).
    pub fn none() -> Self {
        Self(None)
    }

    /// Reports one step.
    pub fn say(&self, stage: impl Into<String>) {
        let stage = stage.into();
        info!(%stage, "Progress");
        if let Some(tx) = &self.0 {
            let _ = tx.send(stage);
        }
    }
}

/// One intercept this daemon holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveIntercept {
    pub name: String,
    /// The manager's id (changes when the intercept is re-created after a reconnect).
    pub id: u64,
    pub namespace: String,
    /// `Kind/name`.
    pub workload: String,
    /// The Service and its port, e.g. `orders:http`.
    pub service_port: String,
    /// The app's container and port.
    pub container: String,
    pub app_port: u16,
    /// Where intercepted traffic goes on this machine.
    pub local: SocketAddr,
    /// Header filters; empty with no path prefix: all traffic.
    pub headers: Vec<String>,
    pub path_prefix: Option<String>,
    /// The Service's ClusterIP and port, where `leave` checks its effect (none: headless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_addr: Option<SocketAddr>,
    /// How many pods the Service sent to when the intercept started.
    #[serde(default)]
    pub endpoints: usize,
}

impl ActiveIntercept {
    fn create_message(&self) -> CreateIntercept {
        CreateIntercept {
            req: 0,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            port: self.app_port,
            service_port: self.service_port.clone(),
            filter: InterceptFilter {
                headers: self.headers.clone(),
                path_prefix: self.path_prefix.clone(),
            },
        }
    }
}

/// `tether list`: the namespace's workloads, their agents and intercepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListReport {
    pub namespace: String,
    pub workloads: Vec<WorkloadRow>,
}

/// One workload in [`ListReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadRow {
    pub kind: String,
    pub name: String,
    pub replicas: i32,
    pub ready: i32,
    /// The agent is in the pod template.
    pub agent_installed: bool,
    /// Pods whose agents are linked to the manager.
    pub agent_pods: Vec<String>,
    /// Active intercepts, whoever holds them.
    pub intercepts: Vec<InterceptInfo>,
}

/// The daemon's intercepts.
#[derive(Debug)]
pub struct Intercepts {
    cluster: Cluster,
    namespace: String,
    session_rx: watch::Receiver<Option<Session>>,
    dials: DialTable,
    active: Mutex<BTreeMap<String, ActiveIntercept>>,
    // One intercept request at a time: two racing installs of one workload would conflict.
    busy: tokio::sync::Mutex<()>,
}

impl Intercepts {
    pub fn new(
        cluster: Cluster,
        namespace: String,
        session_rx: watch::Receiver<Option<Session>>,
        dials: DialTable,
    ) -> Self {
        Self {
            cluster,
            namespace,
            session_rx,
            dials,
            active: Mutex::default(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn session(&self) -> Result<Session, String> {
        self.session_rx.borrow().clone().ok_or_else(|| {
            "the tunnel to the traffic manager is down (reconnecting); try again in a moment"
                .to_owned()
        })
    }

    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ActiveIntercept>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dials(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, SocketAddr>> {
        self.dials.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where intercepted connections go; sessions dial through it.
    pub fn dial_table(&self) -> DialTable {
        self.dials.clone()
    }

    /// The intercepts this daemon holds.
    pub fn list_active(&self) -> Vec<ActiveIntercept> {
        self.active().values().cloned().collect()
    }

    /// Starts an intercept (see the module docs for the order of steps).
    pub async fn create(
        &self,
        req: InterceptRequest,
        progress: &Progress,
    ) -> Result<InterceptReport, String> {
        let _busy = self.busy.lock().await;
        let client = &self.cluster.client;
        let ns = &self.namespace;
        if req.local_port == 0 {
            return Err("--port needs a local port number between 1 and 65535".to_owned());
        }
        let workload = wk::find_workload(client, ns, &req.workload)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        let services = wk::services(client, ns)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        let choice = inject::choose_port(&workload, &services, req.service_port.as_deref())
            .map_err(|e| e.to_string())?;
        let name = req.name.clone().unwrap_or_else(|| workload.name.clone());
        if self.active().contains_key(&name) {
            return Err(format!(
                "you already have an intercept named `{name}`; end it with `tether leave {name}` or choose another with --name"
            ));
        }
        let service_port = match &choice.service_port_name {
            Some(port) => format!("{}:{port}", choice.service),
            None => format!("{}:{}", choice.service, choice.service_port),
        };
        let mut active = ActiveIntercept {
            name: name.clone(),
            id: 0,
            namespace: ns.clone(),
            workload: format!("{}/{}", workload.kind, workload.name),
            service_port,
            container: choice.container.clone(),
            app_port: choice.app_port,
            local: SocketAddr::from((Ipv4Addr::LOCALHOST, req.local_port)),
            headers: req.headers.clone(),
            path_prefix: req.path_prefix.clone(),
            service_addr: cluster_addr(&services, &choice.service, choice.service_port),
            endpoints: 0,
        };

        // The manager decides conflicts before the cluster is touched.
        let session = self.session()?;
        progress.say("registering the intercept with the traffic manager");
        let info = session
            .create_intercept(active.create_message())
            .await
            .map_err(|e| e.to_string())?;
        active.id = info.id;
        self.dials().insert(info.id, active.local);

        let started = self
            .start(&session, &workload, &choice, &mut active, req.env, progress)
            .await;
        let (installed, pods, env) = match started {
            Ok(started) => started,
            Err(error) => {
                self.dials().remove(&info.id);
                if let Err(e) = session.remove_intercept(&name).await {
                    warn!(error = %e, "Could not end the intercept after a failed start");
                }
                return Err(error);
            }
        };
        info!(name = %active.name, id = active.id, workload = %active.workload, local = %active.local, "Intercept started");
        self.active().insert(name, active.clone());
        Ok(InterceptReport {
            intercept: active,
            installed_agent: installed,
            pods,
            env,
        })
    }

    /// Everything after the manager registered the intercept: the agent, its rollout, the
    /// agents linking, the Service following, the environment. Returns whether the agent was
    /// installed, the pods and the environment if asked.
    async fn start(
        &self,
        session: &Session,
        workload: &Workload,
        choice: &inject::PortChoice,
        active: &mut ActiveIntercept,
        with_env: bool,
        progress: &Progress,
    ) -> Result<(bool, Vec<String>, Option<Vec<(String, String)>>), String> {
        let installed = self.install(session, workload, progress).await?;
        progress.say(format!(
            "waiting for the agents of {} to link to the traffic manager",
            active.workload
        ));
        let pods = self
            .await_agents(session, workload, &choice.service)
            .await?;
        active.endpoints = pods.len();
        if let Some(addr) = active.service_addr {
            progress.say(format!(
                "checking that callers of {} reach the intercept",
                active.service_port
            ));
            let judge = Judge::new(Expect::Intercept(active.id), pods.len());
            effect(session, &active.service_port, addr, judge, progress)
                .await
                .map_err(|e| e.to_string())?;
        }
        let env = if with_env {
            Some(self.environment(&pods, &choice.container).await?)
        } else {
            None
        };
        Ok((installed, pods, env))
    }

    /// Installs the agent if needed; true if it did.
    async fn install(
        &self,
        session: &Session,
        workload: &Workload,
        progress: &Progress,
    ) -> Result<bool, String> {
        let client = &self.cluster.client;
        let (image, manager) = self
            .cluster
            .agent_manager()
            .await
            .map_err(|e| e.to_string())?;
        let settings = AgentSettings { image, manager };
        let before = inject::record_of(workload).map_err(|e| e.to_string())?;
        self.ensure_agent_credential(session)
            .await
            .map_err(|e| format!("cannot give the traffic agents a credential: {e}"))?;
        let record = wk::install_agent(client, workload, &settings)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        if before.as_ref() == Some(&record) {
            return Ok(false);
        }
        progress.say(format!(
            "installed the traffic agent in {}/{}; waiting for the rollout",
            workload.kind, workload.name
        ));
        let fresh = wk::find_workload(
            client,
            &self.namespace,
            &format!("{}/{}", workload.kind, workload.name),
        )
        .await
        .map_err(|e| tether_proto::error_chain(&e))?;
        wk::wait_rollout(client, &fresh, ROLLOUT_TIMEOUT)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        Ok(true)
    }

    /// Makes sure the agents' Secret in the namespace holds a credential the manager accepts:
    /// if not, proves to the manager that this user may write Secrets here (a nonce written into
    /// the agents' Secret) and stores the credential it issues.
    async fn ensure_agent_credential(&self, session: &Session) -> Result<(), String> {
        let client = &self.cluster.client;
        let ns = self.namespace.as_str();
        let ca = self.cluster.manager_ca().await.map_err(|e| e.to_string())?;
        let err = |e: wk::WorkloadError| tether_proto::error_chain(&e);
        if wk::agent_credential_is_current(client, ns, &ca)
            .await
            .map_err(err)?
        {
            return Ok(());
        }
        let nonce = wk::request_agent_credential(client, ns)
            .await
            .map_err(err)?;
        let credential = session
            .agent_credential(ns, nonce.clone())
            .await
            .map_err(|e| e.to_string())?;
        wk::store_agent_credential(client, ns, &nonce, &credential)
            .await
            .map_err(err)?;
        info!(namespace = ns, "Issued the traffic agents' credential");
        Ok(())
    }

    /// Waits until every ready pod of the workload has an agent linked to the manager; returns
    /// those pods.
    async fn await_agents(
        &self,
        session: &Session,
        workload: &Workload,
        service: &str,
    ) -> Result<Vec<String>, String> {
        let key = format!("{}/{}", workload.kind, workload.name);
        let deadline = Instant::now() + AGENTS_TIMEOUT;
        loop {
            let (ready, mut without_agent, all) = self.ready_pods(workload).await?;
            // The Service may still send traffic to this workload's pods that are going away
            // (the endpoints controller lags a rollout): they count as pods without the agent.
            for pod in self.endpoint_pods(&self.namespace, service).await {
                if all.contains(&pod) && !ready.contains(&pod) && !without_agent.contains(&pod) {
                    without_agent.push(pod);
                }
            }
            let state = session
                .list_intercepts(&self.namespace)
                .await
                .map_err(|e| e.to_string())?;
            let linked: Vec<String> = state
                .agents
                .iter()
                .filter(|a| a.workload == key)
                .map(|a| a.pod.clone())
                .collect();
            // Pods without the agent still get the Service's traffic: wait until they are gone.
            if !ready.is_empty()
                && without_agent.is_empty()
                && ready.iter().all(|p| linked.contains(p))
            {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                let missing: Vec<&String> = ready.iter().filter(|p| !linked.contains(p)).collect();
                return Err(if !without_agent.is_empty() {
                    format!(
                        "pods of {key} without the traffic agent still serve ({}): is a rollout stuck? `kubectl rollout status {}` tells",
                        without_agent.join(", "),
                        key.to_lowercase()
                    )
                } else if ready.is_empty() {
                    format!("{key} has no ready pod")
                } else {
                    format!(
                        "the agents of {} did not reach the traffic manager in {} s; see `kubectl logs -n {} {} -c {}`",
                        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        AGENTS_TIMEOUT.as_secs(),
                        self.namespace,
                        missing.first().map(|s| s.as_str()).unwrap_or_default(),
                        inject::AGENT_CONTAINER,
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pods the Service's Endpoints send traffic to. An Endpoints object the user may not
    /// read gives none (the check is then skipped).
    async fn endpoint_pods(&self, namespace: &str, service: &str) -> Vec<String> {
        use k8s_openapi::api::core::v1::Endpoints;
        let api: Api<Endpoints> = Api::namespaced(self.cluster.client.clone(), namespace);
        let Ok(Some(endpoints)) = api.get_opt(service).await else {
            return Vec::new();
        };
        endpoints
            .subsets
            .into_iter()
            .flatten()
            .flat_map(|s| s.addresses.into_iter().flatten())
            .filter_map(|a| a.target_ref.and_then(|r| r.name))
            .collect()
    }

    /// The workload's ready, non-terminating pods: those that run the agent, and those that do
    /// not (yet).
    /// Also returns every pod of the workload, terminating ones included.
    async fn ready_pods(
        &self,
        workload: &Workload,
    ) -> Result<(Vec<String>, Vec<String>, Vec<String>), String> {
        let selector = workload
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                format!(
                    "listing the pods of {}: {}",
                    workload.name,
                    tether_proto::error_chain(&e)
                )
            })?;
        let (mut with, mut without, mut all) = (Vec::new(), Vec::new(), Vec::new());
        for pod in list.items {
            all.extend(pod.metadata.name.clone());
            let ready = pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let has_agent = pod.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == inject::AGENT_CONTAINER)
            });
            match (ready, pod.metadata.name) {
                (true, Some(name)) if has_agent => with.push(name),
                (true, Some(name)) => without.push(name),
                _ => {}
            }
        }
        with.sort();
        without.sort();
        Ok((with, without, all))
    }

    /// The environment of `container` in the first of `pods`.
    async fn environment(
        &self,
        pods: &[String],
        container: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let pod_name = pods.first().ok_or("no pod to read the environment from")?;
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let pod = api
            .get(pod_name)
            .await
            .map_err(|e| format!("reading pod {pod_name}: {}", tether_proto::error_chain(&e)))?;
        env::container_env(&self.cluster.client, &pod, container)
            .await
            .map_err(|e| tether_proto::error_chain(&e))
    }

    /// Ends one of this daemon's intercepts.
    ///
    /// Returns once callers of the Service no longer reach the intercept (connections already
    /// intercepted finish where they are).
    pub async fn leave(&self, name: &str, progress: &Progress) -> Result<ActiveIntercept, String> {
        let _busy = self.busy.lock().await;
        let active = self.active().remove(name).ok_or_else(|| {
            format!("you have no intercept named `{name}`; `tether list` shows them")
        })?;
        self.dials().remove(&active.id);
        // Without a session the manager has already forgotten the intercept, and agents with no
        // link route everything to the app.
        if let Ok(session) = self.session() {
            match session.remove_intercept(name).await {
                Ok(()) => {
                    if let Some(addr) = active.service_addr {
                        progress.say(format!(
                            "checking that callers of {} reach the app again",
                            active.service_port
                        ));
                        let judge = Judge::new(Expect::Ended(active.id), active.endpoints);
                        effect(&session, &active.service_port, addr, judge, progress)
                            .await
                            .map_err(|e| format!("the intercept {name} has ended, but {e}"))?;
                    }
                }
                // The manager forgets a lost session's intercepts by itself.
                Err(error) => {
                    warn!(%error, name, "The manager did not confirm the end of the intercept")
                }
            }
        }
        info!(name, "Intercept ended");
        Ok(active)
    }

    /// After `tether uninstall WORKLOAD` (which the CLI does with the user's own rights): waits
    /// for the workload's rollout, then until connections to each of its Services' ports land
    /// on the app rather than on an agent.
    pub async fn await_app(
        &self,
        namespace: &str,
        workload: &str,
        progress: &Progress,
    ) -> Result<(), String> {
        let client = &self.cluster.client;
        let workload = wk::find_workload(client, namespace, workload)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        progress.say(format!(
            "waiting for the rollout of {}/{}",
            workload.kind, workload.name
        ));
        wk::wait_rollout(client, &workload, ROLLOUT_TIMEOUT)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        let session = self.session()?;
        let services = wk::services(client, namespace)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        for service in inject::services_selecting(&workload.template, &services) {
            let name = service.metadata.name.clone().unwrap_or_default();
            for port in service.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Some(addr) = cluster_addr(&services, &name, port.port as u16) else {
                    continue;
                };
                let label = format!("{name}:{}", port.port);
                progress.say(format!("checking that callers of {label} reach the app"));
                let endpoints = self.endpoint_pods(namespace, &name).await.len();
                let judge = Judge::new(Expect::App, endpoints);
                effect(&session, &label, addr, judge, progress)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Re-creates every intercept on a new session (after a reconnect: the manager may have
    /// restarted, and ended the old session's intercepts in any case).
    pub async fn recreate(&self, session: &Session) {
        let _busy = self.busy.lock().await;
        let all = self.list_active();
        if !all.is_empty() {
            // A reinstalled manager has a new CA: give the agents a new credential (they pick
            // it up when the kubelet refreshes their Secret volume, and retry until then).
            if let Err(error) = self.ensure_agent_credential(session).await {
                warn!(%error, "Could not refresh the agents' credential");
            }
        }
        for mut active in all {
            let old = active.id;
            match session.create_intercept(active.create_message()).await {
                Ok(info) => {
                    active.id = info.id;
                    let mut dials = self.dials();
                    dials.remove(&old);
                    dials.insert(info.id, active.local);
                    drop(dials);
                    info!(name = %active.name, id = info.id, "Intercept re-created");
                    self.active().insert(active.name.clone(), active);
                }
                Err(error) => {
                    warn!(name = %active.name, %error, "Could not re-create the intercept; it has ended");
                    self.dials().remove(&old);
                    self.active().remove(&active.name);
                }
            }
        }
    }

    /// `tether list`.
    pub async fn list(&self) -> Result<ListReport, String> {
        let workloads = wk::list_workloads(&self.cluster.client, &self.namespace)
            .await
            .map_err(|e| tether_proto::error_chain(&e))?;
        let state = match self.session() {
            Ok(session) => session
                .list_intercepts(&self.namespace)
                .await
                .map_err(|e| e.to_string())?,
            Err(_) => Default::default(),
        };
        let rows = workloads
            .into_iter()
            .map(|w| {
                let key = format!("{}/{}", w.kind, w.name);
                WorkloadRow {
                    kind: w.kind.to_string(),
                    agent_installed: w.agent.is_some(),
                    agent_pods: state
                        .agents
                        .iter()
                        .filter(|a| a.workload == key)
                        .map(|a| a.pod.clone())
                        .collect(),
                    intercepts: state
                        .intercepts
                        .iter()
                        .filter(|i| i.workload == key)
                        .cloned()
                        .collect(),
                    replicas: w.replicas,
                    ready: w.ready,
                    name: w.name,
                }
            })
            .collect();
        Ok(ListReport {
            namespace: self.namespace.clone(),
            workloads: rows,
        })
    }
}

/// [`await_effect`] within [`EFFECT_TIMEOUT`], reporting to `progress`.
async fn effect(
    session: &Session,
    service: &str,
    addr: SocketAddr,
    judge: Judge,
    progress: &Progress,
) -> Result<(), effect::NotInEffect> {
    let say = |stage: String| progress.say(stage);
    await_effect(session, service, addr, judge, EFFECT_TIMEOUT, &say).await
}

/// The ClusterIP and `port` of the Service `name` among `services`; `None` for a headless
/// Service (callers reach its pods directly, without kube-proxy) or an unknown one.
fn cluster_addr(
    services: &[k8s_openapi::api::core::v1::Service],
    name: &str,
    port: u16,
) -> Option<SocketAddr> {
    let service = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))?;
    let ip: Ipv4Addr = service.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()?;
    Some(SocketAddr::from((ip, port)))
}

/// The intercepts a daemon shares with its control socket.
pub type SharedIntercepts = Arc<Intercepts>;
