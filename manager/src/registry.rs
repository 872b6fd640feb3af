//! The manager's intercept registry: which intercepts exist, who holds them, and which agents
//! follow them. Sans-IO: agents are reached through a `watch` channel each (holding only the
//! latest table, so a slow agent's queue never grows), and the registry is plain data behind one
//! lock, tested without a network.
//!
//! The registry is the only place that decides whether an intercept may start. It keeps one
//! [`Router`] per intercepted port, the same table the agents route with, so a conflict is found
//! here, named to the user, and never reaches an agent. Every change of a workload's intercepts
//! sends that workload's agents its whole table ([`AgentIntercepts`]); an agent that connects
//! later gets it on arrival. So agents need no history and a rollout's new pods follow the active
//! intercepts at once.
//!
//! Mirrors ([`InterceptMode::Mirror`]) share a port with anything (see [`Router`]); the one
//! thing refused is a session mirroring requests on a port that one of its own mirrors already
//! copies (overlapping filters), which would send the same laptop each request twice.
//!
//! Intercepts live as long as the session that created them: [`Registry::end_session`] removes
//! them all, which is what gives the app its traffic back when a developer's machine vanishes
//! (the QUIC idle timeout notices within seconds).

use std::collections::{BTreeMap, HashMap};

use tether_proto::stats::RouteCounts;
use tether_proto::{
    AgentInfo, AgentIntercepts, AgentLink, CreateIntercept, InterceptInfo, InterceptMode,
    InterceptStat, InterceptState, InterceptStats, RouteStats,
};
use tokio::sync::watch;

use tether_route::filter::{Filter, FilterSpec};
use tether_route::router::{Intercept, InterceptId, Router};

/// Where an intercept's port is: namespace, workload (`Kind/name`), app port.
type PortKey = (String, String, u16);

/// A connected agent.
#[derive(Debug)]
struct Agent {
    info: AgentInfo,
    tx: watch::Sender<AgentIntercepts>,
    /// Its latest route counts; `None` until it reports.
    stats: Option<RouteStats>,
}

/// The most route counts kept of one agent: its ports times the intercepts on them, with room.
pub const MAX_ROUTES_PER_AGENT: usize = 4 * MAX_INTERCEPTS_PER_SESSION;

/// The most intercepts one session may hold at once: more than a developer uses, few enough
/// that one session cannot grow every agent's routing table without bound.
pub const MAX_INTERCEPTS_PER_SESSION: usize = 32;

/// A count per namespace.
pub type PerNamespace = Vec<(String, i64)>;

/// Every intercept and agent the manager knows.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: u64,
    intercepts: BTreeMap<u64, InterceptInfo>,
    ports: HashMap<PortKey, Router<()>>,
    agents: HashMap<u64, Agent>,
    /// The id of the latest replace intercept created on each workload (namespace, workload),
    /// ended or not.
    latest_replace: HashMap<(String, String), u64>,
}

/// The session asking, as the registry records it.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The session's id.
    pub session_id: &'a str,
    /// Who the session belongs to (`user@host`).
    pub owner: &'a str,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an intercept, unless its filter is invalid, its name is taken in the session, or it
    /// conflicts with another intercept on the port. The error is meant for the user.
    pub fn create(
        &mut self,
        holder: Holder<'_>,
        req: &CreateIntercept,
    ) -> Result<InterceptInfo, String> {
        if req.name.is_empty() {
            return Err("the intercept needs a name".to_owned());
        }
        let held = self
            .intercepts
            .values()
            .filter(|i| i.session_id == holder.session_id)
            .count();
        if held >= MAX_INTERCEPTS_PER_SESSION {
            return Err(format!(
                "this session already holds {held} intercepts, the most one session may; \
                 leave one first"
            ));
        }
        if self
            .intercepts
            .values()
            .any(|i| i.session_id == holder.session_id && i.name == req.name)
        {
            return Err(format!(
                "you already have an intercept named `{}`; choose another with --name",
                req.name
            ));
        }
        let filter = Filter::try_from(FilterSpec {
            headers: req.filter.headers.clone(),
            path_prefix: req.filter.path_prefix.clone(),
        })
        .map_err(|e| e.to_string())?;
        if req.mode == InterceptMode::Mirror {
            self.check_own_mirrors(holder, req, &filter)?;
        }
        self.check_replace(holder.session_id, req, &filter)?;
        self.next_id += 1;
        let id = self.next_id;
        let info = InterceptInfo {
            id,
            name: req.name.clone(),
            namespace: req.namespace.clone(),
            workload: req.workload.clone(),
            port: req.port,
            service_port: req.service_port.clone(),
            owner: holder.owner.to_owned(),
            session_id: holder.session_id.to_owned(),
            filter: req.filter.clone(),
            mode: req.mode,
        };
        let key = port_key(&info);
        self.ports
            .entry(key.clone())
            .or_default()
            .add(Intercept {
                id: InterceptId(id),
                owner: format!("{} (intercept `{}`)", info.owner, info.name),
                filter,
                mode: info.mode,
                target: (),
            })
            .map_err(|e| {
                format!(
                    "cannot intercept {} port {}: {e}",
                    info.workload, info.service_port
                )
            })?;
        if info.mode == InterceptMode::Replace {
            self.latest_replace
                .insert((info.namespace.clone(), info.workload.clone()), id);
        }
        self.intercepts.insert(id, info.clone());
        self.push(&key.0, &key.1);
        Ok(info)
    }

    /// The id of the latest replace intercept created on `workload`, whether it lasts or ended:
    /// whoever restores a replaced container after an intercept ended asks whether a later
    /// replace has been made since (then the container is that one's to put back).
    pub fn latest_replace(&self, namespace: &str, workload: &str) -> Option<u64> {
        self.latest_replace
            .get(&(namespace.to_owned(), workload.to_owned()))
            .copied()
    }

    /// Refuses a second mirror of the same requests by one session: a mirror of the session's on
    /// the same port whose filter overlaps `filter`.
    fn check_own_mirrors(
        &self,
        holder: Holder<'_>,
        req: &CreateIntercept,
        filter: &Filter,
    ) -> Result<(), String> {
        let same = self.intercepts.values().find(|i| {
            i.session_id == holder.session_id
                && i.mode == InterceptMode::Mirror
                && i.namespace == req.namespace
                && i.workload == req.workload
                && i.port == req.port
                && Filter::try_from(FilterSpec {
                    headers: i.filter.headers.clone(),
                    path_prefix: i.filter.path_prefix.clone(),
                })
                .is_ok_and(|theirs| theirs.overlaps(filter))
        });
        match same {
            Some(i) => Err(format!(
                "cannot mirror {} port {}: your mirror `{}` ({}) already copies these requests",
                req.workload,
                req.service_port,
                i.name,
                crate::audit::filter_text(&i.filter)
            )),
            None => Ok(()),
        }
    }

    /// A replace ([`InterceptMode::Replace`]) has its workload to itself: it takes all the
    /// traffic, and is refused while any other intercept (anyone's, on any port, of any mode)
    /// is on the workload; while it lasts, every other intercept there is refused, but for the
    /// holder's own session taking the replaced container's other ports (all their traffic, to
    /// the same laptop). The error names the holder, who is the one to ask.
    fn check_replace(
        &self,
        session_id: &str,
        req: &CreateIntercept,
        filter: &Filter,
    ) -> Result<(), String> {
        let mut on_workload = self
            .intercepts
            .values()
            .filter(|i| i.namespace == req.namespace && i.workload == req.workload);
        if req.mode == InterceptMode::Replace {
            if !filter.is_global() {
                return Err(
                    "--replace takes all the traffic: it cannot have --http-header or --http-path"
                        .to_owned(),
                );
            }
            return match on_workload.next() {
                Some(i) => Err(format!(
                    "cannot replace {}: {} holds {} `{}` on it ({}), which must end first",
                    req.workload,
                    i.owner,
                    mode_noun(i.mode),
                    i.name,
                    crate::audit::filter_text(&i.filter)
                )),
                None => Ok(()),
            };
        }
        let own_other_port = |i: &InterceptInfo| {
            i.session_id == session_id
                && req.mode == InterceptMode::Take
                && filter.is_global()
                && req.port != i.port
        };
        match on_workload.find(|i| i.mode == InterceptMode::Replace) {
            Some(i) if own_other_port(i) => Ok(()),
            Some(i) => Err(format!(
                "cannot {} {}: {} has replaced it (intercept `{}`), and no other intercept can                  share it until that ends",
                req.mode.as_str(),
                req.workload,
                i.owner,
                i.name
            )),
            None => Ok(()),
        }
    }

    /// Ends the session's intercept called `name`.
    pub fn remove(&mut self, session_id: &str, name: &str) -> Result<InterceptInfo, String> {
        let id = self
            .intercepts
            .values()
            .find(|i| i.session_id == session_id && i.name == name)
            .map(|i| i.id)
            .ok_or_else(|| format!("you have no intercept named `{name}`"))?;
        Ok(self.remove_id(id))
    }

    /// Ends every intercept of a session (it closed or was lost).
    pub fn end_session(&mut self, session_id: &str) -> Vec<InterceptInfo> {
        let ids: Vec<u64> = self
            .intercepts
            .values()
            .filter(|i| i.session_id == session_id)
            .map(|i| i.id)
            .collect();
        ids.into_iter().map(|id| self.remove_id(id)).collect()
    }

    fn remove_id(&mut self, id: u64) -> InterceptInfo {
        let info = self.intercepts.remove(&id).expect("id from the map");
        let key = port_key(&info);
        if let Some(router) = self.ports.get_mut(&key) {
            router.remove(InterceptId(id));
            if router.is_empty() {
                self.ports.remove(&key);
            }
        }
        self.push(&key.0, &key.1);
        info
    }

    /// The intercept with this id.
    pub fn get(&self, id: u64) -> Option<&InterceptInfo> {
        self.intercepts.get(&id)
    }

    /// The intercepts of `workload` (`Kind/name`) in `namespace`, oldest first.
    pub fn on_workload(&self, namespace: &str, workload: &str) -> Vec<InterceptInfo> {
        self.intercepts
            .values()
            .filter(|i| i.namespace == namespace && i.workload == workload)
            .cloned()
            .collect()
    }

    /// Every intercept and agent in a namespace.
    pub fn list(&self, namespace: &str) -> InterceptState {
        let mut agents: Vec<AgentInfo> = self
            .agents
            .values()
            .filter(|a| a.info.namespace == namespace)
            .map(|a| a.info.clone())
            .collect();
        agents.sort_by(|a, b| (&a.workload, &a.pod).cmp(&(&b.workload, &b.pod)));
        InterceptState {
            intercepts: self
                .intercepts
                .values()
                .filter(|i| i.namespace == namespace)
                .cloned()
                .collect(),
            agents,
        }
    }

    /// Intercepts and linked agents per namespace, for the metrics.
    pub fn counts(&self) -> (PerNamespace, PerNamespace) {
        let mut intercepts = BTreeMap::<String, i64>::new();
        for i in self.intercepts.values() {
            *intercepts.entry(i.namespace.clone()).or_default() += 1;
        }
        let mut agents = BTreeMap::<String, i64>::new();
        for a in self.agents.values() {
            *agents.entry(a.info.namespace.clone()).or_default() += 1;
        }
        (
            intercepts.into_iter().collect(),
            agents.into_iter().collect(),
        )
    }

    /// Registers a connected agent under `conn_id` and sends it its workload's intercepts.
    pub fn agent_joined(
        &mut self,
        conn_id: u64,
        info: AgentInfo,
        tx: watch::Sender<AgentIntercepts>,
    ) {
        let table = self.table(&info.namespace, &info.workload);
        tx.send_replace(table);
        self.agents.insert(
            conn_id,
            Agent {
                info,
                tx,
                stats: None,
            },
        );
    }

    /// Keeps an agent's latest route counts (the first [`MAX_ROUTES_PER_AGENT`] of them).
    pub fn agent_stats(&mut self, conn_id: u64, mut stats: RouteStats) {
        if let Some(agent) = self.agents.get_mut(&conn_id) {
            stats.routes.truncate(MAX_ROUTES_PER_AGENT);
            agent.stats = Some(stats);
        }
    }

    /// How a session's intercepts route, summed over their workloads' agents.
    pub fn session_stats(&self, session_id: &str) -> InterceptStats {
        let intercepts =
            self.intercepts
                .values()
                .filter(|i| i.session_id == session_id)
                .map(|i| {
                    let mut stat = InterceptStat {
                        id: i.id,
                        name: i.name.clone(),
                        laptop: RouteCounts::default(),
                        app: RouteCounts::default(),
                        mirrored: Default::default(),
                        agents: Vec::new(),
                    };
                    let agents = self.agents.values().filter(|a| {
                        a.info.namespace == i.namespace && a.info.workload == i.workload
                    });
                    for agent in agents {
                        stat.agents.push(AgentLink {
                            pod: agent.info.pod.clone(),
                            reporting: agent.stats.is_some(),
                        });
                        let routes = agent.stats.iter().flat_map(|s| &s.routes);
                        for route in routes.filter(|r| r.port == i.port) {
                            match route.intercept {
                                Some(id) if id == i.id => {
                                    stat.laptop.add(&route.counts);
                                    stat.mirrored.add(&route.mirrored);
                                }
                                None => stat.app.add(&route.counts),
                                Some(_) => {}
                            }
                        }
                    }
                    stat.agents.sort_by(|a, b| a.pod.cmp(&b.pod));
                    stat
                })
                .collect();
        InterceptStats { intercepts }
    }

    /// Forgets an agent.
    /// The agents (by connection id) that can serve the files of intercept `id`, which must be
    /// `session_id`'s own: nobody reads the pods of another developer's intercept.
    pub fn file_agents(&self, id: u64, session_id: &str) -> Result<Vec<u64>, String> {
        let intercept = self
            .intercepts
            .get(&id)
            .filter(|i| i.session_id == session_id)
            .ok_or_else(|| format!("intercept {id} is not one of this session's"))?;
        let mut agents: Vec<u64> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.info.namespace == intercept.namespace && a.info.workload == intercept.workload
            })
            .map(|(&conn_id, _)| conn_id)
            .collect();
        agents.sort_unstable();
        if agents.is_empty() {
            return Err(format!(
                "no traffic agent of {} in {} is linked to the traffic manager",
                intercept.workload, intercept.namespace
            ));
        }
        Ok(agents)
    }

    pub fn agent_left(&mut self, conn_id: u64) {
        self.agents.remove(&conn_id);
    }

    fn table(&self, namespace: &str, workload: &str) -> AgentIntercepts {
        AgentIntercepts {
            intercepts: self
                .intercepts
                .values()
                .filter(|i| i.namespace == namespace && i.workload == workload)
                .cloned()
                .collect(),
        }
    }

    /// Sends a workload's agents its table.
    fn push(&mut self, namespace: &str, workload: &str) {
        let table = self.table(namespace, workload);
        for agent in self.agents.values() {
            if agent.info.namespace == namespace && agent.info.workload == workload {
                // The agent's writer sends the latest table; an unsent older one is replaced.
                agent.tx.send_replace(table.clone());
            }
        }
    }
}

fn port_key(info: &InterceptInfo) -> PortKey {
    (info.namespace.clone(), info.workload.clone(), info.port)
}

/// `intercept`, `mirror` or `replace intercept`, for messages.
fn mode_noun(mode: InterceptMode) -> &'static str {
    match mode {
        InterceptMode::Take => "intercept",
        InterceptMode::Mirror => "mirror",
        InterceptMode::Replace => "replace intercept",
    }
}

#[cfg(test)]
mod tests;
