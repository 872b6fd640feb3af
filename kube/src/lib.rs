//! Everything tether reads or writes in Kubernetes, for the CLI, the daemon and the manager.
//!
//! # Layout
//! - [`names`]: the cluster contract: the manager's namespace, Secret names, labels,
//!   annotations, ports and the field manager, written once.
//! - [`workload`]: putting the traffic agent into a workload and taking it out again (sans-IO
//!   planning in `inject`, the reads and writes in `kube`), and a workload's environment (`env`).
//! - [`rollout`]: the one rollout judge (is it done, which pods to replace, why pods fail).
//! - [`image`]: the tether version an image's tag names.
//! - [`install`]: `tether install` / `uninstall`: the manifests of `deploy/manager`, applied
//!   server-side.
#![forbid(unsafe_code)]

pub mod image;
pub mod install;
pub mod names;
pub mod rollout;
pub mod workload;
