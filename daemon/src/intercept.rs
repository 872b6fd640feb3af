//! The daemon's intercepts: starting one (checking the request, asking the manager, installing
//! the agent), ending one, listing, and re-creating them after a reconnect.
//!
//! # Order of `tether intercept`
//! Everything that can refuse the request runs before anything in the cluster changes:
//! 1. the target (a workload, or a Service and the workload it selects), its Service port and
//!    container are resolved, and the `--to-pod` ports bound (unknown or ambiguous names, no
//!    Service, unknown port or container, a port in use: refused here). This reads the cluster
//!    with the user's own credentials; which workload a name means is a convenience, not a
//!    decision of trust: the manager still authorizes the intercept for the user's identity;
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
    time::Duration,
};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use tether_proto::{CreateIntercept, InterceptFilter, InterceptMode};
use tokio::sync::watch;
use tracing::{info, warn};

use effect::{await_effect, Expect, Judge, EFFECT_TIMEOUT};

mod agents;
pub mod effect;
mod error;
pub mod mount;
pub mod to_pod;

pub use crate::control::{
    ActiveIntercept, AlsoPort, InterceptReport, InterceptRequest, ListReport, MountInfo, OtherPort,
    WorkloadRow,
};
pub use error::InterceptError;

use tether_kube::workload::{
    env,
    inject::{self, AgentSettings, Workload},
    kube as wk,
};

use crate::{
    cluster::Cluster,
    privileged::channel::Helper,
    session::{DialTable, Session},
};

/// How long the agent's rollout may take.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the agents of ready pods to link to the manager.
pub const AGENTS_TIMEOUT: Duration = Duration::from_secs(30);

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
            mode: self.mode,
        }
    }
}

/// The daemon's intercepts.
#[derive(Debug)]
pub struct Intercepts {
    cluster: Cluster,
    namespace: String,
    session_rx: watch::Receiver<Option<Session>>,
    dials: DialTable,
    active: Mutex<BTreeMap<String, ActiveIntercept>>,
    /// The `--to-pod` listeners of each intercept, by name; dropping one closes them.
    to_pods: Mutex<BTreeMap<String, to_pod::ToPod>>,
    /// The `--mount`s, by intercept name.
    mounts: Mutex<BTreeMap<String, mount::Mounted>>,
    /// Who mounts (`None` in tests without one: `--mount` then fails).
    helper: Option<Arc<Helper>>,
    // One intercept request at a time: two racing installs of one workload would conflict.
    busy: tokio::sync::Mutex<()>,
}

impl Intercepts {
    pub fn new(
        cluster: Cluster,
        namespace: String,
        session_rx: watch::Receiver<Option<Session>>,
        dials: DialTable,
        helper: Option<Arc<Helper>>,
    ) -> Self {
        Self {
            cluster,
            namespace,
            session_rx,
            dials,
            active: Mutex::default(),
            to_pods: Mutex::default(),
            mounts: Mutex::default(),
            helper,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn session(&self) -> Result<Session, InterceptError> {
        self.session_rx
            .borrow()
            .clone()
            .ok_or(InterceptError::NoSession)
    }

    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ActiveIntercept>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn to_pods(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, to_pod::ToPod>> {
        self.to_pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the `--mount` of intercept `name` asked of the pod, if it has one.
    pub fn file_counts(&self, name: &str) -> Option<crate::control::FileCounts> {
        self.mounts().get(name).map(|m| m.files.counts())
    }

    fn mounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, mount::Mounted>> {
        self.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dials(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, SocketAddr>> {
        self.dials.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current session's carrier figures (`None` while reconnecting).
    pub fn carrier(&self) -> Option<crate::control::CarrierStats> {
        let session = self.session().ok()?;
        (!session.is_closed()).then(|| session.carrier_stats())
    }

    /// The traffic manager's tether version, if the current session's manager said.
    pub fn manager_version(&self) -> Option<String> {
        let session = self.session().ok()?;
        let version = session.manager_version_rx.borrow().clone();
        version
    }

    /// How this session's intercepts route, as the manager last said (`None` while
    /// reconnecting).
    pub fn stats(&self) -> Option<Arc<tether_proto::InterceptStats>> {
        let session = self.session().ok()?;
        let stats = session.intercept_stats_rx.borrow().clone();
        Some(stats)
    }

    /// The cluster's name for `ip` (a Service's or a pod's), by a reverse lookup through the
    /// manager; `None` when it has none or cannot be asked.
    pub async fn cluster_name(&self, ip: std::net::IpAddr) -> Option<String> {
        let session = self.session().ok()?;
        let query = tether_dns::reverse::ptr_query(ip, 0);
        let answer = session.dns(query).await.ok()?;
        tether_dns::reverse::ptr_target(&answer)
    }

    /// Where intercepted connections go; sessions dial through it.
    pub fn dial_table(&self) -> DialTable {
        self.dials.clone()
    }

    /// The intercepts this daemon holds (with the pod each `--to-pod` reaches now).
    pub fn list_active(&self) -> Vec<ActiveIntercept> {
        let mut active: Vec<ActiveIntercept> = self.active().values().cloned().collect();
        let to_pods = self.to_pods();
        for a in &mut active {
            if let Some(to_pod) = to_pods.get(&a.name) {
                a.to_pod_target = Some(to_pod.target());
            }
        }
        active
    }

    /// The intercepts this daemon holds, each mirror with its copies so far (once its agents
    /// have reported).
    pub fn list_with_copies(&self) -> Vec<ActiveIntercept> {
        let stats = self.stats().unwrap_or_default();
        let mut active = self.list_active();
        for a in active
            .iter_mut()
            .filter(|a| a.mode == InterceptMode::Mirror)
        {
            a.copies = stats
                .intercepts
                .iter()
                .find(|s| s.id == a.id && s.agents.iter().any(|l| l.reporting))
                .map(|s| s.mirrored);
        }
        active
    }

    /// Starts an intercept (see the module docs for the order of steps).
    pub async fn create(
        &self,
        req: InterceptRequest,
        progress: &Progress,
    ) -> Result<InterceptReport, InterceptError> {
        let _busy = self.busy.lock().await;
        let ns = &self.namespace;
        if req.local_port == 0 {
            return Err(InterceptError::NoLocalPort);
        }
        let (workload, choice, services) = self.resolve(&req).await?;
        let name = req.name.clone().unwrap_or_else(|| workload.name.clone());
        if self.active().contains_key(&name) {
            return Err(InterceptError::NameTaken(name));
        }
        let service_port = service_port_of(&choice);
        let others = if req.replace {
            tether_kube::workload::replace::check(&workload, &choice.container)
                .map_err(wk::WorkloadError::from)?;
            inject::other_ports(&workload, &services, &choice)?
        } else {
            Vec::new()
        };
        for also in &req.also_ports {
            if !others.iter().any(|o| o.app_port == also.port) {
                return Err(InterceptError::UnknownAlsoPort {
                    port: also.port,
                    container: choice.container.clone(),
                    workload: format!("{}/{}", workload.kind, workload.name),
                    others: others
                        .iter()
                        .map(|o| format!("{} ({})", o.app_port, service_port_of(o)))
                        .collect(),
                });
            }
        }
        let to_pod = to_pod::bind(&req.to_pod).await?;
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
            to_pod: req.to_pod.clone(),
            to_pod_target: None,
            mount: None,
            mode: match (req.mirror, req.replace) {
                (true, false) => InterceptMode::Mirror,
                (false, true) => InterceptMode::Replace,
                (false, false) => InterceptMode::Take,
                (true, true) => return Err(InterceptError::MirrorAndReplace),
            },
            copies: None,
            other_ports: Vec::new(),
            part_of: None,
        };

        // The manager decides conflicts before the cluster is touched.
        let session = self.session()?;
        progress.say("registering the intercept with the traffic manager");
        let info = session.create_intercept(active.create_message()).await?;
        active.id = info.id;
        self.dials().insert(info.id, active.local);

        let started = self
            .start(
                &session,
                &workload,
                &choice,
                &mut active,
                (req.env, req.mount),
                (&info.owner, progress),
            )
            .await;
        let started = match started {
            Ok(started) if req.to_pod.is_empty() => Ok(started),
            Ok(started) => match self.pod_ip(&started.pods).await {
                Ok((pod, ip)) => {
                    active.to_pod_target = Some(format!("{pod} ({ip})"));
                    let pods = to_pod::Pods {
                        api: Api::namespaced(self.cluster.client.clone(), &self.namespace),
                        selector: agents::pod_selector(&workload),
                    };
                    let forwarding = to_pod.forward((pod, ip), Some(pods), self.session_rx.clone());
                    self.to_pods().insert(name.clone(), forwarding);
                    Ok(started)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let Started {
            installed,
            pods,
            env,
            mounts: container,
        } = match started {
            Ok(started) => started,
            Err(error) => {
                self.dials().remove(&info.id);
                if let Err(e) = session.remove_intercept(&name).await {
                    warn!(error = %e, "Could not end the intercept after a failed start");
                }
                if active.mode == InterceptMode::Replace {
                    self.put_back(&active, progress).await;
                }
                return Err(error);
            }
        };
        if active.mode == InterceptMode::Replace {
            active.other_ports = self
                .take_other_ports(
                    &session,
                    (others, &services),
                    &active,
                    &req.also_ports,
                    progress,
                )
                .await;
        }
        let mut mount_error = None;
        if req.mount {
            progress.say("mounting the container's volumes");
            let helper = self.helper.as_deref();
            let mounted = mount::mount(
                helper,
                &session,
                (active.id, &active.container),
                req.mount_dir.clone(),
                container,
            )
            .await;
            match mounted {
                Ok(mounted) => {
                    active.mount = Some(MountInfo {
                        dir: mounted.dir.clone(),
                        pod: mounted.pod.clone(),
                        volumes: mounted.volumes.clone(),
                    });
                    self.mounts().insert(name.clone(), mounted);
                }
                Err(error) => {
                    let message = tether_proto::error_chain(&error);
                    warn!(%message, "The intercept goes on without --mount");
                    mount_error = Some(message);
                }
            }
        }
        info!(name = %active.name, id = active.id, workload = %active.workload, local = %active.local, "Intercept started");
        self.active().insert(name, active.clone());
        Ok(InterceptReport {
            intercept: active,
            installed_agent: installed,
            pods,
            env,
            mount_error,
        })
    }

    /// `--replace`: the replaced container's other ports that Services expose. Those named by
    /// `--also-port` go to the local port given, each as an intercept of all its traffic named
    /// `NAME-PORT` that ends with the replace; the others are only listed. None is taken unasked:
    /// the ports come from the workload's spec, which anyone who may edit the workload can
    /// change, and each one taken exposes a port of this machine to the cluster.
    async fn take_other_ports(
        &self,
        session: &Session,
        (others, services): (Vec<inject::PortChoice>, &[Service]),
        main: &ActiveIntercept,
        also: &[AlsoPort],
        progress: &Progress,
    ) -> Vec<OtherPort> {
        let mut listed = Vec::new();
        for other in others {
            let service_port = service_port_of(&other);
            let mut port = OtherPort {
                service_port: service_port.clone(),
                app_port: other.app_port,
                intercept: None,
                local: None,
                why: None,
            };
            let Some(asked) = also.iter().find(|a| a.port == other.app_port) else {
                listed.push(port);
                continue;
            };
            let name = format!("{}-{}", main.name, other.app_port);
            if self.active().contains_key(&name) {
                port.why = Some(format!("you already have an intercept named `{name}`"));
                listed.push(port);
                continue;
            }
            progress.say(format!(
                "taking {service_port} to 127.0.0.1:{} as well",
                asked.local
            ));
            let companion = ActiveIntercept {
                name: name.clone(),
                id: 0,
                service_port,
                app_port: other.app_port,
                local: SocketAddr::from((Ipv4Addr::LOCALHOST, asked.local)),
                headers: Vec::new(),
                path_prefix: None,
                service_addr: cluster_addr(services, &other.service, other.service_port),
                mode: InterceptMode::Take,
                to_pod: Vec::new(),
                to_pod_target: None,
                mount: None,
                copies: None,
                other_ports: Vec::new(),
                part_of: Some(main.name.clone()),
                ..main.clone()
            };
            match self.start_companion(session, companion, progress).await {
                Ok(()) => {
                    port.intercept = Some(name);
                    port.local = Some(asked.local);
                }
                Err(error) => port.why = Some(tether_proto::error_chain(&error)),
            }
            listed.push(port);
        }
        listed
    }

    /// Registers one of a replace's other ports, and waits until its callers reach it.
    async fn start_companion(
        &self,
        session: &Session,
        mut companion: ActiveIntercept,
        progress: &Progress,
    ) -> Result<(), InterceptError> {
        let info = session.create_intercept(companion.create_message()).await?;
        companion.id = info.id;
        self.dials().insert(info.id, companion.local);
        let name = companion.name.clone();
        let effect_on = companion.service_addr;
        let (service_port, endpoints) = (companion.service_port.clone(), companion.endpoints);
        self.active().insert(name, companion);
        if let Some(addr) = effect_on {
            let judge = Judge::new(Expect::Intercept(info.id), endpoints);
            effect(session, &service_port, addr, judge, progress).await?;
        }
        Ok(())
    }

    /// The workload and Service port `req` means (see [`inject::resolve_target`]), and the
    /// namespace's Services.
    async fn resolve(
        &self,
        req: &InterceptRequest,
    ) -> Result<(Workload, inject::PortChoice, Vec<Service>), InterceptError> {
        let client = &self.cluster.client;
        let ns = &self.namespace;
        let target = inject::TargetRef::parse(&req.workload)?;
        let named = match target.workload_lookup() {
            Some(asked) => match wk::find_workload(client, ns, &asked).await {
                Ok(w) => Some(w),
                Err(wk::WorkloadError::UnknownWorkload { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let services = wk::services(client, ns).await?;
        // Which workloads a Service selects needs them all; only then are they listed.
        let is_service = target.service_name().is_some_and(|n| {
            services
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(n))
        });
        let workloads = if is_service {
            wk::workloads(client, ns).await?
        } else {
            Vec::new()
        };
        let pick = inject::Pick {
            service: req.service.as_deref(),
            workload: req.pick_workload.as_deref(),
        };
        let resolved =
            inject::resolve_target(ns, target, pick, named.as_ref(), &workloads, &services)?;
        let query = inject::PortQuery {
            port: req.service_port.as_deref(),
            service: resolved.service.as_deref(),
            container: req.container.as_deref(),
        };
        let choice = inject::choose_port(&resolved.workload, &services, query)?;
        Ok((resolved.workload, choice, services))
    }

    /// The name and IP of the first of `pods`, where `--to-pod` connections go.
    async fn pod_ip(&self, pods: &[String]) -> Result<(String, Ipv4Addr), InterceptError> {
        let pod_name = pods.first().ok_or(InterceptError::NoPod)?;
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let pod = api
            .get(pod_name)
            .await
            .map_err(|source| InterceptError::ReadPod {
                pod: pod_name.clone(),
                source,
            })?;
        let ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| InterceptError::NoPodIp(pod_name.clone()))?;
        Ok((pod_name.clone(), ip))
    }

    /// Everything after the manager registered the intercept: the agent, its rollout, the
    /// agents linking, the environment and mount paths (read while the container still runs),
    /// the container's removal for `--replace`, the Service following.
    async fn start(
        &self,
        session: &Session,
        workload: &Workload,
        choice: &inject::PortChoice,
        active: &mut ActiveIntercept,
        (with_env, with_mounts): (bool, bool),
        (owner, progress): (&str, &Progress),
    ) -> Result<Started, InterceptError> {
        let installed = self.install(session, workload, progress).await?;
        progress.say(format!(
            "waiting for the agents of {} to link to the traffic manager",
            active.workload
        ));
        let mut pods = self
            .await_agents(session, workload, &choice.service)
            .await?;
        let env = if with_env {
            Some(self.environment(&pods, &choice.container).await?)
        } else {
            None
        };
        // The intercepted container's own mounts (the agent serves those of every container
        // behind the intercepted ports); unknown: all.
        let mounts = if with_mounts {
            self.container_mounts(&pods, &choice.container).await
        } else {
            None
        };
        if active.mode == InterceptMode::Replace {
            pods = self
                .take_out(session, workload, choice, owner, progress)
                .await?;
        }
        active.endpoints = pods.len();
        if let Some(addr) = active.service_addr {
            progress.say(format!(
                "checking that callers of {} reach the intercept",
                active.service_port
            ));
            let judge = Judge::new(Expect::Intercept(active.id), pods.len());
            effect(session, &active.service_port, addr, judge, progress).await?;
        }
        Ok(Started {
            installed,
            pods,
            env,
            mounts,
        })
    }

    /// `--replace`: removes the intercepted container from the workload's pods, awaits the
    /// rollout and the new pods' agents; returns those pods.
    async fn take_out(
        &self,
        session: &Session,
        workload: &Workload,
        choice: &inject::PortChoice,
        owner: &str,
        progress: &Progress,
    ) -> Result<Vec<String>, InterceptError> {
        let client = &self.cluster.client;
        let id = format!("{}/{}", workload.kind, workload.name);
        progress.say(format!(
            "removing container {} from {id}; waiting for the rollout",
            choice.container
        ));
        wk::replace_container(client, workload, &choice.container, owner).await?;
        let fresh = wk::find_workload(client, &self.namespace, &id).await?;
        wk::wait_rollout(client, &fresh, ROLLOUT_TIMEOUT).await?;
        progress.say(format!(
            "waiting for the agents of {id} to link to the traffic manager"
        ));
        self.await_agents(session, workload, &choice.service).await
    }

    /// Puts back the container `--replace` took out and awaits the rollout; failures are logged
    /// (the manager puts it back too when the intercept ends, and `tether uninstall` does).
    async fn put_back(&self, active: &ActiveIntercept, progress: &Progress) {
        let client = &self.cluster.client;
        progress.say(format!(
            "putting container {} back into {}; waiting for the rollout",
            active.container, active.workload
        ));
        let restored = async {
            wk::restore_container(client, &active.namespace, &active.workload).await?;
            let fresh = wk::find_workload(client, &active.namespace, &active.workload).await?;
            wk::wait_rollout(client, &fresh, ROLLOUT_TIMEOUT).await
        };
        if let Err(error) = restored.await {
            let error = tether_proto::error_chain(&error);
            warn!(workload = %active.workload, %error, "Could not put the replaced container back");
            // The user sees it too: the manager puts it back when the intercept ends, and
            // `tether uninstall` does as well.
            progress.say(format!(
                "could not put container {} back into {} ({error}); the traffic manager puts it \
                 back as the intercept ends, and `tether uninstall {}` does too",
                active.container, active.workload, active.workload
            ));
        }
    }

    /// Installs the agent if needed; true if it did.
    async fn install(
        &self,
        session: &Session,
        workload: &Workload,
        progress: &Progress,
    ) -> Result<bool, InterceptError> {
        let client = &self.cluster.client;
        let (image, manager) = self.cluster.agent_manager().await?;
        let settings = AgentSettings { image, manager };
        let before = inject::record_of(workload)?;
        self.ensure_agent_credential(session)
            .await
            .map_err(|e| InterceptError::Credential(Box::new(e)))?;
        let record = wk::install_agent(client, workload, &settings).await?;
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
        .await?;
        wk::wait_rollout(client, &fresh, ROLLOUT_TIMEOUT).await?;
        Ok(true)
    }

    /// Makes sure the agents' Secret in the namespace holds a credential the manager accepts:
    /// if not, proves to the manager that this user may write Secrets here (a nonce written into
    /// the agents' Secret) and stores the credential it issues.
    async fn ensure_agent_credential(&self, session: &Session) -> Result<(), InterceptError> {
        let client = &self.cluster.client;
        let ns = self.namespace.as_str();
        let ca = self.cluster.manager_ca().await?;
        if wk::agent_credential_is_current(client, ns, &ca).await? {
            return Ok(());
        }
        let nonce = wk::request_agent_credential(client, ns).await?;
        let credential = session.agent_credential(ns, nonce.clone()).await?;
        wk::store_agent_credential(client, ns, &nonce, &credential).await?;
        info!(namespace = ns, "Issued the traffic agents' credential");
        Ok(())
    }

    /// The container paths `container` mounts in the first of `pods` (the kubelet's
    /// service-account token included, as the live pod lists it), or `None` if the pod cannot
    /// be read.
    async fn container_mounts(&self, pods: &[String], container: &str) -> Option<Vec<String>> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let pod = api.get(pods.first()?).await.ok()?;
        let spec = pod.spec?;
        let c = spec.containers.iter().find(|c| c.name == container)?;
        Some(
            c.volume_mounts
                .iter()
                .flatten()
                .map(|m| inject::normalize(&m.mount_path))
                .collect(),
        )
    }

    /// The environment of `container` in the first of `pods`.
    async fn environment(
        &self,
        pods: &[String],
        container: &str,
    ) -> Result<Vec<(String, String)>, InterceptError> {
        let pod_name = pods.first().ok_or(InterceptError::NoPod)?;
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let pod = api
            .get(pod_name)
            .await
            .map_err(|source| InterceptError::ReadPod {
                pod: pod_name.clone(),
                source,
            })?;
        Ok(env::container_env(&self.cluster.client, &pod, container).await?)
    }

    /// Ends one of this daemon's intercepts.
    ///
    /// Returns once callers of the Service no longer reach the intercept (connections already
    /// intercepted finish where they are).
    pub async fn leave(
        &self,
        name: &str,
        progress: &Progress,
    ) -> Result<ActiveIntercept, InterceptError> {
        let _busy = self.busy.lock().await;
        let (active, companions) = {
            let mut all = self.active();
            match all.get(name).map(|a| a.part_of.clone()) {
                None => return Err(InterceptError::NoSuchIntercept(name.to_owned())),
                Some(Some(replace)) => {
                    return Err(InterceptError::PartOfReplace {
                        name: name.to_owned(),
                        replace,
                    })
                }
                Some(None) => {}
            }
            let companions: Vec<String> = all
                .values()
                .filter(|a| a.part_of.as_deref() == Some(name))
                .map(|a| a.name.clone())
                .collect();
            let companions: Vec<ActiveIntercept> =
                companions.iter().filter_map(|c| all.remove(c)).collect();
            (all.remove(name).expect("checked above"), companions)
        };
        self.dials().remove(&active.id);
        for companion in &companions {
            self.dials().remove(&companion.id);
        }
        let to_pod = self.to_pods().remove(name);
        if let Some(to_pod) = to_pod {
            to_pod.stop().await;
        }
        let mounted = self.mounts().remove(name);
        if let Some(mounted) = mounted {
            progress.say(format!("unmounting {}", mounted.dir.display()));
            mounted.unmount(self.helper.as_deref()).await;
        }
        // Without a session the manager has already forgotten the intercept (and put a replaced
        // container back), and agents with no link route everything to the app.
        let replaced = active.mode == InterceptMode::Replace;
        if let Ok(session) = self.session() {
            for companion in &companions {
                if let Err(error) = session.remove_intercept(&companion.name).await {
                    warn!(%error, name = %companion.name, "The manager did not confirm the end of the intercept");
                }
            }
            match session.remove_intercept(name).await {
                Ok(()) => {
                    if replaced {
                        self.put_back(&active, progress).await;
                    }
                    if let Some(addr) = active.service_addr {
                        progress.say(format!(
                            "checking that callers of {} reach the app again",
                            active.service_port
                        ));
                        // After a replace, put_back awaited the rollout: the agents reached
                        // are those in front of the app again.
                        let judge = Judge::new(Expect::Ended(active.id), active.endpoints);
                        effect(&session, &active.service_port, addr, judge, progress)
                            .await
                            .map_err(|source| InterceptError::StillInEffect {
                                name: name.to_owned(),
                                source,
                            })?;
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
    ) -> Result<(), InterceptError> {
        let client = &self.cluster.client;
        let workload = wk::find_workload(client, namespace, workload).await?;
        progress.say(format!(
            "waiting for the rollout of {}/{}",
            workload.kind, workload.name
        ));
        wk::wait_rollout(client, &workload, ROLLOUT_TIMEOUT).await?;
        let session = self.session()?;
        let services = wk::services(client, namespace).await?;
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
                effect(&session, &label, addr, judge, progress).await?;
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
            // A replace's other port goes on only with its replace (which sorts before it).
            if let Some(replace) = &active.part_of {
                if !self.active().contains_key(replace) {
                    self.dials().remove(&old);
                    self.active().remove(&active.name);
                    continue;
                }
            }
            match session.create_intercept(active.create_message()).await {
                Ok(info) => {
                    active.id = info.id;
                    {
                        let mut dials = self.dials();
                        dials.remove(&old);
                        dials.insert(info.id, active.local);
                    }
                    // The manager puts a replaced container back a minute after the old
                    // session was lost, if no replace came back: take it out again if so (a
                    // no-op while it is still out).
                    if active.mode == InterceptMode::Replace {
                        let client = &self.cluster.client;
                        let again = async {
                            let w = wk::find_workload(client, &active.namespace, &active.workload)
                                .await?;
                            wk::replace_container(client, &w, &active.container, &info.owner).await
                        };
                        if let Err(error) = again.await {
                            warn!(name = %active.name, error = %tether_proto::error_chain(&error), "Could not replace the container again");
                        }
                    }
                    let files = self.mounts().get(&active.name).map(|m| m.files.clone());
                    if let Some(files) = files {
                        files.reopen(session, info.id).await;
                    }
                    info!(name = %active.name, id = info.id, "Intercept re-created");
                    self.active().insert(active.name.clone(), active);
                }
                Err(error) => {
                    warn!(name = %active.name, %error, "Could not re-create the intercept; it has ended");
                    self.dials().remove(&old);
                    self.active().remove(&active.name);
                    self.to_pods().remove(&active.name);
                    let mounted = self.mounts().remove(&active.name);
                    if let Some(mounted) = mounted {
                        mounted.unmount(self.helper.as_deref()).await;
                    }
                }
            }
        }
    }

    /// Unmounts every `--mount` (the daemon is quitting; the helper would otherwise do it after
    /// the daemon exits, with requests still in flight failing).
    pub async fn unmount_all(&self) {
        let all = std::mem::take(&mut *self.mounts());
        for (_, mounted) in all {
            mounted.unmount(self.helper.as_deref()).await;
        }
    }

    /// `tether list`.
    pub async fn list(&self) -> Result<ListReport, InterceptError> {
        let workloads = wk::list_workloads(&self.cluster.client, &self.namespace).await?;
        let state = match self.session() {
            Ok(session) => session.list_intercepts(&self.namespace).await?,
            Err(_) => Default::default(),
        };
        let rows = workloads
            .into_iter()
            .map(|w| {
                let key = format!("{}/{}", w.kind, w.name);
                WorkloadRow {
                    kind: w.kind.to_string(),
                    agent_installed: w.agent.is_some(),
                    agent_image: w.agent_image,
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

/// What [`Intercepts::start`] found and did.
struct Started {
    /// Whether it installed the agent.
    installed: bool,
    /// The workload's pods, each with its agent linked.
    pods: Vec<String>,
    /// The container's environment, if asked.
    env: Option<Vec<(String, String)>>,
    /// The container's mount paths, if `--mount` (`None` also when unknown: all).
    mounts: Option<Vec<String>>,
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

/// How status and errors name a Service port: `SERVICE:NAME`, or `SERVICE:NUMBER`.
fn service_port_of(choice: &inject::PortChoice) -> String {
    match &choice.service_port_name {
        Some(port) => format!("{}:{port}", choice.service),
        None => format!("{}:{}", choice.service, choice.service_port),
    }
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
