//! Putting the traffic agent into a workload, and taking it out again leaving no trace.
//!
//! `tether intercept WORKLOAD --port LOCAL[:PORT]` needs a sidecar agent in front of the
//! workload's ports. There is no admission webhook, no iptables and no `NET_ADMIN`: the agent
//! takes a port over by rewriting objects the user can already edit.
//! - A Service port with a **named** `targetPort` (`http`) keeps it; the app container's port
//!   of that name is renamed (`tx-http`) and the agent declares `http` instead, so the Service
//!   reaches the agent pod by pod as the rollout replaces them. Probes that named the port follow
//!   the rename and keep checking the app itself.
//! - A Service port with a **numeric** (or absent) `targetPort` is pointed at the agent's port.
//!
//! The first install takes over every TCP port of every Service selecting the workload, so
//! later intercepts on other ports need no new rollout. What was changed is recorded in the
//! workload's `tether.dev/agent` annotation, and uninstalling undoes exactly those changes:
//! the workload and Services come back as they were, with any unrelated edits made meanwhile.
//!
//! # Layout
//! - [`inject`]: sans-IO planning on k8s-openapi objects: which ports, which agent ports, the
//!   agent container, the record and its undo, which port an intercept means.
//! - [`crate::rollout`]: sans-IO rollout checks (is it done, which pods to replace, why pods
//!   fail).
//! - [`kube`]: the async reads and writes around it: find the workload, write with optimistic
//!   concurrency, order workload and Service updates, wait for the rollout, the agent Secret.
//! - [`replace`]: sans-IO: taking the app container out for `intercept --replace`, and putting
//!   it back exactly.
//! - [`env`]: the workload's environment, for running the intercepting process locally.

pub mod env;
pub mod inject;
pub mod kube;
pub mod replace;

pub use self::kube::{
    agent_credential_is_current, find_workload, install_agent, list_workloads, replace_container,
    request_agent_credential, restore_container, services, store_agent_credential, uninstall_agent,
    uninstall_all, wait_rollout, workloads, WorkloadError, WorkloadSummary,
};
pub use inject::{
    choose_port, inject, record_of, resolve_target, restore, services_selecting, AgentRecord,
    AgentSettings, Injected, Pick, PlanError, PortChoice, PortMap, PortQuery, Resolved, Restored,
    TargetError, TargetRef, Workload, WorkloadKind, AGENT_ANNOTATION, AGENT_CONTAINER,
    AGENT_SECRET,
};
