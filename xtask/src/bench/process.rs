//! The processes a benchmark starts, each bounded in time, and the guards that end what must not
//! outlive the run: tether sessions and `kubectl port-forward`s.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{cluster, manager};

/// Runs `cmd` to completion, killing it if it takes longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        // Short: connect times are measured through this loop.
        thread::sleep(Duration::from_millis(1));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Like [`output_within`], failing with the output when the command fails.
pub fn run_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let out = output_within(cmd, limit)?;
    crate::cluster::checked(cmd, out)
}

/// A command run inside network namespace `ns`, or on the host for `None`.
pub fn in_ns(ns: Option<&str>, program: impl Into<PathBuf>) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program.into());
            cmd
        }
        None => Command::new(program.into()),
    }
}

/// A tether session on a workstation namespace, with the benchmark's own runtime directory; it
/// quits when dropped, whatever happened in between.
#[derive(Debug)]
pub struct Tether {
    ns: String,
}

impl Tether {
    const CONNECT_LIMIT: Duration = Duration::from_secs(60);
    const QUIT_LIMIT: Duration = Duration::from_secs(30);

    /// Where the benchmark's daemon on `ns` keeps its socket and log.
    pub fn runtime_dir(ns: &str) -> PathBuf {
        PathBuf::from("/run/tether-bench").join(ns)
    }

    /// `tether ARGS` on the workstation.
    pub fn command(ns: &str, args: &[&str]) -> Command {
        let mut cmd = in_ns(Some(ns), manager::tether_bin());
        cmd.args(args)
            .env("TETHER_RUNTIME_DIR", Self::runtime_dir(ns))
            .env("KUBECONFIG", cluster::kubeconfig())
            .env("RUST_LIB_BACKTRACE", "0");
        cmd
    }

    /// `tether connect --transport TRANSPORT`, returning once it has.
    pub fn connect(ns: &str, transport: &str) -> anyhow::Result<Tether> {
        Self::connect_with(ns, &["--transport", transport])
    }

    /// `tether connect ARGS`, returning once it has.
    pub fn connect_with(ns: &str, args: &[&str]) -> anyhow::Result<Tether> {
        // Made first: a connect that fails halfway still gets its `quit`.
        let session = Tether { ns: ns.to_owned() };
        let mut connect = vec!["connect"];
        connect.extend_from_slice(args);
        run_within(&mut Self::command(ns, &connect), Self::CONNECT_LIMIT).with_context(|| {
            format!(
                "tether connect on {ns} (daemon log: {})",
                Self::runtime_dir(ns).display()
            )
        })?;
        Ok(session)
    }

    /// The daemon's pid, from `tether status -o json`.
    pub fn daemon_pid(&self) -> anyhow::Result<u32> {
        let out = run_within(
            &mut Self::command(&self.ns, &["status", "-o", "json"]),
            Self::QUIT_LIMIT,
        )?;
        let status: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("reading tether status: {out}"))?;
        status["daemon_pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0)
            .with_context(|| format!("no daemon pid in {out}"))
    }

    /// `tether quit`; harmless when nothing is connected.
    pub fn quit(ns: &str) -> anyhow::Result<()> {
        run_within(&mut Self::command(ns, &["quit"]), Self::QUIT_LIMIT).map(drop)
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        if let Err(e) = Tether::quit(&self.ns) {
            eprintln!("warning: tether quit on {} failed: {e:#}", self.ns);
        }
    }
}

/// The first nameserver in a namespace's resolv.conf (what `ip netns exec` bind-mounts).
pub fn nameserver(ns: &str) -> anyhow::Result<std::net::IpAddr> {
    let path = format!("/etc/netns/{ns}/resolv.conf");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse().ok())
        .with_context(|| format!("no nameserver in {path}"))
}

/// `kubectl port-forward` from 127.0.0.1 on the host (or in network namespace `ns`) to a pod's
/// port; killed when dropped.
#[derive(Debug)]
pub struct PortForward {
    child: Child,
    pub local_port: u16,
}

impl PortForward {
    const READY_LIMIT: Duration = Duration::from_secs(30);

    pub fn start(ns: Option<&str>, pod: &str, port: u16) -> anyhow::Result<PortForward> {
        let mut child = in_ns(ns, "kubectl")
            .arg("--kubeconfig")
            .arg(cluster::kubeconfig())
            .args(["port-forward", "--address", "127.0.0.1"])
            .arg(format!("pod/{pod}"))
            .arg(format!(":{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting kubectl port-forward")?;
        let stdout = child.stdout.take();
        // Guarded from here on: an early return kills kubectl.
        let mut guard = PortForward {
            child,
            local_port: 0,
        };
        let (port_tx, port_rx) = mpsc::channel();
        // kubectl prints a line per connection: read them all, or it blocks on a full pipe.
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = forwarding_port(&line) {
                    let _ = port_tx.send(port);
                }
            }
        });
        guard.local_port = port_rx
            .recv_timeout(Self::READY_LIMIT)
            .context("kubectl port-forward did not say where it listens")?;
        Ok(guard)
    }
}

impl PortForward {
    /// kubectl's process (`ip netns exec` replaces itself with it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local port in kubectl's `Forwarding from 127.0.0.1:PORT -> 8080`.
pub fn forwarding_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubectl_forwarding_line() {
        assert_eq!(
            forwarding_port("Forwarding from 127.0.0.1:34279 -> 8080"),
            Some(34279)
        );
        assert_eq!(forwarding_port("Forwarding from [::1]:34279 -> 8080"), None);
        assert_eq!(forwarding_port("Handling connection for 8080"), None);
    }

    #[test]
    fn a_command_over_its_limit_is_killed() {
        let t = Instant::now();
        let err =
            output_within(Command::new("sleep").arg("10"), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
