//! The agent's memory, read from `/proc` on this machine: the cluster runs here, so the sidecar
//! container's process is one of ours to look at.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::bail;

/// The pid of the sidecar agent of `workload` (`Deployment/orders`) in pod `pod`.
///
/// Several namespaces can each have a `Deployment/orders`: the agent's `POD_NAME` (from its
/// environment) tells them apart.
pub fn agent_pid(workload: &str, pod: &str) -> anyhow::Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: an unreadable one is not ours.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !is_agent(&nul_separated(&cmdline), workload) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let env = nul_separated(&environ);
        found.push((pid, env_var(&env, "POD_NAME").map(str::to_owned)));
    }
    match found
        .iter()
        .filter(|(_, p)| p.as_deref() == Some(pod))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [(pid, _)] => Ok(*pid),
        [] => bail!(
            "no `tether-agent sidecar --workload {workload}` process of pod {pod} on this \
             machine (found: {found:?})"
        ),
        many => bail!("several agent processes of pod {pod}: {many:?}"),
    }
}

/// `/proc/PID/cmdline` or `environ`: NUL-terminated strings.
fn nul_separated(bytes: &[u8]) -> Vec<&str> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok())
        .collect()
}

/// Whether `argv` is `[…/]tether-agent sidecar … --workload WORKLOAD …`.
pub(super) fn is_agent(argv: &[&str], workload: &str) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    Path::new(program).file_name().and_then(|n| n.to_str()) == Some("tether-agent")
        && argv.contains(&"sidecar")
        && argv.windows(2).any(|w| w == ["--workload", workload])
}

fn env_var<'a>(env: &[&'a str], name: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The resident set of `pid`, KiB; None once the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS:     12345 kB` in `/proc/PID/status`.
pub(super) fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut fields = line.split_whitespace();
    let kib = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kib)
}

/// Samples a process's RSS on a thread until finished, keeping the largest.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Option<u64>>>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_rx = stop.clone();
        let thread = thread::spawn(move || {
            let mut max = None;
            loop {
                max = max.max(rss_kib(pid));
                if stop_rx.load(Ordering::Relaxed) {
                    return max;
                }
                thread::sleep(every);
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last sample): the largest RSS seen, KiB.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
