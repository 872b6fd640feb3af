//! Troubleshooting: `tether doctor` walks every layer tether depends on, the way the Kubernetes
//! "troubleshooting clusters" guide walks an operator through them (the API server, nodes and
//! their conditions, the Metrics API, the traffic manager, its agents, the workstation's routes
//! and resolver), and says for each problem what to do next. `tether gather-logs` packs what a
//! bug report needs into one archive, with secrets redacted.
//!
//! # Layout
//! Sans-IO cores (plain functions over k8s-openapi objects and plain data, unit-tested with
//! literal objects):
//! - [`check`]: a finding ([`Check`](check::Check): stable id, status, what was found, next
//!   step) and the [`Report`](check::Report).
//! - [`cluster`], [`nodes`], [`manager`], [`access`], [`agents`], [`workstation`]: the checks of
//!   each layer; [`containers`] judges one container's state (shared by manager and agents);
//!   [`quantity`] reads resource quantities; [`dnsprobe`] is one DNS question as bytes.
//! - [`redact`]: removes private keys, tokens and known secret values from text.
//! - [`archive`]: a `.tar.gz` writer.
//!
//! The I/O around them:
//! - [`run`]: gathers for `doctor`, every read bounded by a timeout, all at once.
//! - [`logs`]: gathers for `gather-logs`.
#![forbid(unsafe_code)]

pub mod access;
pub mod agents;
pub mod archive;
pub mod check;
pub mod cluster;
pub mod containers;
pub mod dnsprobe;
pub mod logs;
pub mod manager;
pub mod nodes;
pub mod quantity;
pub mod redact;
pub mod run;
pub mod workstation;

pub use check::{Check, Report, Status};
pub use run::{doctor, Options};
