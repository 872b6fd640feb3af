//! The local control protocol between the `tether` CLI and the daemon: one JSON object per line
//! over a unix socket that only the connecting user and root may open.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::intercept::{ActiveIntercept, InterceptReport, InterceptRequest, ListReport};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The session's state.
    Status,
    /// Progress events until the connection is up (`Ready`) or has failed (`Failed`).
    Watch,
    /// Disconnect, restore the machine and exit.
    Quit,
    /// Start an intercept.
    Intercept(Box<InterceptRequest>),
    /// End an intercept.
    Leave { name: String },
    /// The namespace's workloads, agents and intercepts.
    List,
    /// Wait until callers of the workload's Services reach the app, not an agent (after
    /// `tether uninstall`, which the CLI does itself).
    AwaitApp { namespace: String, workload: String },
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusReport>),
    /// A step of a long request (connect, intercept, leave): any number come before the answer.
    Progress {
        stage: String,
    },
    Ready(Box<StatusReport>),
    Failed {
        error: String,
    },
    Ok,
    Error {
        error: String,
    },
    Intercepted(Box<InterceptReport>),
    Left(Box<ActiveIntercept>),
    List(Box<ListReport>),
}

/// `tether status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub connected: bool,
    pub namespace: String,
    pub context: String,
    pub cluster_server: String,
    /// `udp` or `port-forward`.
    pub transport: String,
    pub manager: String,
    pub session_id: String,
    pub cluster_domain: String,
    pub subnets: Vec<String>,
    pub tun_device: String,
    pub dns_server: String,
    pub reconnects: u64,
    pub daemon_pid: u32,
    /// The privileged helper's pid (root; the daemon itself is not).
    #[serde(default)]
    pub privileged_pid: u32,
    /// This workstation's intercepts.
    #[serde(default)]
    pub intercepts: Vec<ActiveIntercept>,
}

/// Where the daemon's socket, log and backups live. `TETHER_RUNTIME_DIR` overrides the default so
/// that several workstations (network namespaces) can share one machine in tests.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("TETHER_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tether"))
}

/// The socket, in the daemon's own directory (see [`crate::privileged::runtime_dir`]).
pub fn socket_path(dir: &Path) -> PathBuf {
    crate::privileged::runtime_dir::socket_path(dir)
}

/// The daemon's log, next to its socket.
pub fn log_path(dir: &Path) -> PathBuf {
    crate::privileged::runtime_dir::daemon_log_path(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable_json() {
        let line = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(line, r#"{"request":"status"}"#);
        let r: Response =
            serde_json::from_str(r#"{"response":"progress","stage":"dialing"}"#).unwrap();
        assert!(matches!(r, Response::Progress { stage } if stage == "dialing"));
        assert!(serde_json::from_str::<Request>(r#"{"request":"format-disk"}"#).is_err());
    }
}
