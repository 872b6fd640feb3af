//! What the intercept benchmark starts or changes, each undone when dropped, whatever happened
//! in between: the laptop process, intercepts, the in-pod waiter and the agent's presence.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};

use super::{laptop_greeting, LAPTOP_NAME, LAPTOP_PORT, NAMESPACE, WORKLOAD};
use crate::{
    bench::{
        process::{in_ns, run_within, Tether},
        testapp_bin,
    },
    cluster,
};

/// The "laptop": the test app serving on the workstation namespace's loopback, where intercepts
/// send their requests. Killed when dropped.
#[derive(Debug)]
pub struct Laptop {
    child: Child,
}

impl Laptop {
    pub fn start(ns: &str) -> anyhow::Result<Laptop> {
        let dir = Tether::runtime_dir(ns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("laptop.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let port = LAPTOP_PORT.to_string();
        let child = in_ns(Some(ns), testapp_bin())
            .args([
                "--http-port",
                &port,
                "--udp-port",
                "0",
                "--name",
                LAPTOP_NAME,
            ])
            .args(["--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the laptop's test app")?;
        let mut laptop = Laptop { child };
        let url = format!("http://127.0.0.1:{LAPTOP_PORT}/");
        let mut wait = in_ns(Some(ns), testapp_bin());
        wait.args(["bench", "wait-for", "--url", &url, "--body-contains"])
            .arg(laptop_greeting())
            .args(["--timeout-ms", "10000"]);
        let answered = run_within(&mut wait, Duration::from_secs(20));
        // An answer from another process on the port is not ours.
        if let Some(status) = laptop.child.try_wait()? {
            bail!(
                "the laptop's test app exited ({status}); is port {LAPTOP_PORT} taken in {ns}? \
                 (log: {})",
                log_path.display()
            );
        }
        answered.context("the laptop's test app does not answer")?;
        Ok(laptop)
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tether intercept orders --port LAPTOP:http [FILTER…]`; left when dropped.
#[derive(Debug)]
pub struct Intercept {
    ns: String,
    active: bool,
}

impl Intercept {
    pub fn start(ns: &str, filter: &[&str], limit: Duration) -> anyhow::Result<Intercept> {
        // Made first: an intercept that fails halfway still gets its `leave`.
        let intercept = Intercept {
            ns: ns.to_owned(),
            active: true,
        };
        let port = format!("{LAPTOP_PORT}:http");
        let mut cmd = Tether::command(ns, &["intercept", WORKLOAD, "--port", &port]);
        cmd.args(filter);
        run_within(&mut cmd, limit).with_context(|| {
            format!(
                "tether intercept {WORKLOAD} {filter:?} (daemon log: {})",
                Tether::runtime_dir(ns).display()
            )
        })?;
        Ok(intercept)
    }

    /// `tether leave`, failing when it does.
    pub fn leave(mut self) -> anyhow::Result<()> {
        self.active = false;
        leave(&self.ns)
    }
}

fn leave(ns: &str) -> anyhow::Result<()> {
    run_within(
        &mut Tether::command(ns, &["leave", WORKLOAD]),
        Duration::from_secs(30),
    )
    .map(drop)
}

impl Drop for Intercept {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = leave(&self.ns) {
                eprintln!(
                    "warning: tether leave {WORKLOAD} on {} failed: {e:#}",
                    self.ns
                );
            }
        }
    }
}

/// Whether `deployment/orders` has the agent (its record annotation).
pub fn agent_installed() -> anyhow::Result<bool> {
    let record = cluster::run(cluster::kubectl().args([
        "--request-timeout=10s",
        "-n",
        NAMESPACE,
        "get",
        "deployment",
        WORKLOAD,
        "-o",
        r"jsonpath={.metadata.annotations.tether\.dev/agent}",
    ]))?;
    Ok(!record.trim().is_empty())
}

/// `tether uninstall deployment/orders`, then the rollout that restores the workload.
pub fn uninstall(ns: &str) -> anyhow::Result<()> {
    let workload = format!("deployment/{WORKLOAD}");
    run_within(
        &mut Tether::command(ns, &["uninstall", &workload, "-n", NAMESPACE]),
        Duration::from_secs(180),
    )?;
    run_within(
        cluster::kubectl().args([
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            &workload,
            "--timeout=180s",
        ]),
        Duration::from_secs(200),
    )
    .map(drop)
}

/// Puts `orders` back without the agent at the end when the run found it so.
#[derive(Debug)]
pub struct AgentState {
    ns: String,
    had_agent: bool,
}

impl AgentState {
    pub fn keep(ns: &str, had_agent: bool) -> AgentState {
        AgentState {
            ns: ns.to_owned(),
            had_agent,
        }
    }
}

impl Drop for AgentState {
    fn drop(&mut self) {
        // Unknown (the cluster did not answer) counts as installed: try the uninstall.
        if self.had_agent || !agent_installed().unwrap_or(true) {
            return;
        }
        eprintln!("    uninstalling the agent from {WORKLOAD}, which had none before the run");
        if let Err(e) = uninstall(&self.ns) {
            eprintln!("warning: tether uninstall deployment/{WORKLOAD} failed: {e:#}");
        }
    }
}

/// `tether-testapp bench wait-for` in the `client` pod, through `kubectl exec`; killed when
/// dropped (the in-pod process then ends at its own timeout).
#[derive(Debug)]
pub struct Waiter {
    child: Child,
    lines_rx: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Waiter {
    /// How long `kubectl exec` may take to start polling.
    const START_LIMIT: Duration = Duration::from_secs(30);

    /// Starts polling `url` for `text`, returning once the waiter has finished its first try.
    pub fn start(url: &str, headers: &[&str], text: &str, limit: Duration) -> anyhow::Result<Self> {
        let mut cmd = client_exec(&["wait-for", "--url", url, "--body-contains", text]);
        for h in headers {
            cmd.args(["--header", h]);
        }
        cmd.args(["--interval-ms", "5", "--timeout-ms"])
            .arg(limit.as_millis().to_string());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl exec")?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (lines_tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
            text
        });
        let mut waiter = Waiter {
            child,
            lines_rx,
            stderr: Some(stderr),
        };
        waiter.line("polling_since_unix_ns", Self::START_LIMIT)?;
        Ok(waiter)
    }

    /// When the first matching answer arrived, by the pod's (and this host's) wall clock.
    pub fn first_match(mut self, limit: Duration) -> anyhow::Result<SystemTime> {
        self.line("first_match_unix_ns", limit)
    }

    /// Waits for `KEY=UNIX_NS` and reads it.
    fn line(&mut self, key: &str, limit: Duration) -> anyhow::Result<SystemTime> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(t) = unix_ns_line(&line, key) {
                        return Ok(t);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("the in-pod waiter printed no {key} within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    let stderr = self
                        .stderr
                        .take()
                        .and_then(|t| t.join().ok())
                        .unwrap_or_default();
                    bail!(
                        "the in-pod waiter ended ({status}) before {key}: {}",
                        stderr.trim()
                    );
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl exec deploy/client -c app -- tether-testapp bench ARGS`.
pub fn client_exec(args: &[&str]) -> std::process::Command {
    let mut cmd = cluster::kubectl();
    cmd.args(["-n", NAMESPACE, "exec", "deploy/client", "-c", "app", "--"])
        .args(["tether-testapp", "bench"])
        .args(args);
    cmd
}

/// The time in a waiter's `KEY=UNIX_NS` line.
pub(super) fn unix_ns_line(line: &str, key: &str) -> Option<SystemTime> {
    let ns: u64 = line
        .trim()
        .strip_prefix(key)?
        .strip_prefix('=')?
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
}
