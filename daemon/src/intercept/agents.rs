//! Waiting for a workload's agents: every ready pod runs one, linked to the manager, and the
//! Service sends traffic to no pod without one.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};
use tether_kube::workload::{inject, Workload};

use super::{InterceptError, Intercepts, AGENTS_TIMEOUT};
use crate::session::Session;

impl Intercepts {
    /// Waits until every ready pod of the workload has an agent linked to the manager; returns
    /// those pods.
    pub(super) async fn await_agents(
        &self,
        session: &Session,
        workload: &Workload,
        service: &str,
    ) -> Result<Vec<String>, InterceptError> {
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
            let state = session.list_intercepts(&self.namespace).await?;
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
                let missing: Vec<String> =
                    ready.into_iter().filter(|p| !linked.contains(p)).collect();
                return Err(if !without_agent.is_empty() {
                    InterceptError::PodsWithoutAgent {
                        workload: key,
                        pods: without_agent,
                    }
                } else if missing.is_empty() {
                    InterceptError::NoReadyPod(key)
                } else {
                    InterceptError::AgentsNotLinked {
                        namespace: self.namespace.clone(),
                        pods: missing,
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pods the Service's Endpoints send traffic to. An Endpoints object the user may not
    /// read gives none (the check is then skipped).
    pub(super) async fn endpoint_pods(&self, namespace: &str, service: &str) -> Vec<String> {
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
    ) -> Result<(Vec<String>, Vec<String>, Vec<String>), InterceptError> {
        let selector = pod_selector(workload);
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| InterceptError::ListPods {
                workload: workload.name.clone(),
                source,
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
}

/// A label selector for the workload's pods: its pod template's labels.
pub(super) fn pod_selector(workload: &Workload) -> String {
    workload
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
        .unwrap_or_default()
}
