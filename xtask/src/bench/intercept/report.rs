//! What the intercept part of a run found, and its markdown (`target/bench/intercept.md`): the
//! measurements side by side, then the targets checked against them. Plain data in, text
//! out; nothing here measures.

use std::{fmt::Write, time::Duration};

use crate::bench::report::{median, p50_p99, secs, targets_markdown, Check, Latency};

/// Longest time from `tether intercept` to the first intercepted request, agent installed
/// (median).
pub const FIRST_REQUEST_TARGET: Duration = Duration::from_secs(1);
/// Most latency the agent may add over the direct path with no intercept, at p50.
pub const AGENT_ADDED_P50_TARGET_US: f64 = 100.0;
/// Most memory the agent may hold when idle.
pub const IDLE_RSS_TARGET_KIB: u64 = 15 * 1024;

/// The state of the workload when `tether intercept` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// No agent: the intercept installs it, which rolls the workload out.
    NotInstalled,
    /// The agent is there from an earlier intercept.
    Installed,
}

impl Agent {
    pub fn label(self) -> &'static str {
        match self {
            Agent::NotInstalled => "not installed (install + rollout)",
            Agent::Installed => "already installed",
        }
    }
}

/// One timed `tether intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// From starting `tether intercept` until it returned.
    pub returned: Duration,
    /// From starting `tether intercept` until the in-cluster client first got the laptop's answer.
    pub first_request: Duration,
}

/// The timed intercepts of one [`Agent`] state.
#[derive(Debug, Clone, PartialEq)]
pub struct Times {
    pub agent: Agent,
    pub trials: Vec<Trial>,
    /// Why the trials that did not complete did not.
    pub errors: Vec<String>,
}

impl Times {
    fn median_first_request(&self) -> Option<Duration> {
        median(
            &self
                .trials
                .iter()
                .map(|t| t.first_request)
                .collect::<Vec<_>>(),
        )
    }
}

/// The ways from the in-cluster client to the workload being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPath {
    /// The pod IP and the app's own port: the agent is not on the way.
    Direct,
    /// The pod IP and the agent's port, no intercept.
    Agent,
    /// The agent's port with a header intercept active, a request without the header: the app.
    NonMatching,
    /// The same with the header: the laptop, through the tunnel.
    Matching,
}

impl LoadPath {
    pub fn label(self) -> &'static str {
        match self {
            LoadPath::Direct => "direct to the app (pod IP, app port)",
            LoadPath::Agent => "through the agent, no intercept",
            LoadPath::NonMatching => {
                "through the agent, header intercept, request without it → app"
            }
            LoadPath::Matching => "through the agent, header intercept, matching request → laptop",
        }
    }
}

/// Small GETs on one keep-alive connection over one path.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadResult {
    pub path: LoadPath,
    pub latency: Latency,
    /// Wall time of the measured requests.
    pub elapsed_s: Option<f64>,
    /// The agent's largest RSS sampled during the run, KiB.
    pub max_rss_kib: Option<u64>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn req_per_s(&self) -> Option<f64> {
        self.elapsed_s
            .filter(|s| *s > 0.0 && self.latency.ok > 0)
            .map(|s| self.latency.ok as f64 / s)
    }
}

/// The intercept part of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Setup facts shown above the tables (what, value).
    pub meta: Vec<(String, String)>,
    pub times: Vec<Times>,
    pub loads: Vec<LoadResult>,
    /// The agent's RSS, KiB, with no intercept and no traffic, before the load runs.
    pub idle_rss_kib: Option<u64>,
    /// The same after them.
    pub idle_after_rss_kib: Option<u64>,
    /// Failures outside the measurements (finding the agent process, …).
    pub errors: Vec<String>,
}

impl Report {
    fn load(&self, path: LoadPath) -> Option<&LoadResult> {
        self.loads.iter().find(|l| l.path == path)
    }

    fn times(&self, agent: Agent) -> Option<&Times> {
        self.times.iter().find(|t| t.agent == agent)
    }

    /// p50 over `path` minus p50 direct.
    fn added_p50(&self, path: LoadPath) -> Option<f64> {
        let direct = self.load(LoadPath::Direct)?.latency.p50_us?;
        Some(self.load(path)?.latency.p50_us? - direct)
    }

    /// req/s over `path` divided by req/s direct.
    fn rate_ratio(&self, path: LoadPath) -> Option<f64> {
        let direct = self.load(LoadPath::Direct)?.req_per_s()?;
        Some(self.load(path)?.req_per_s()? / direct)
    }

    fn max_rss_kib(&self) -> Option<u64> {
        self.loads.iter().filter_map(|l| l.max_rss_kib).max()
    }

    /// The targets against this run; the rest of the comparison as references.
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for agent in [Agent::Installed, Agent::NotInstalled] {
            let median = self.times(agent).and_then(Times::median_first_request);
            let judged = agent == Agent::Installed;
            checks.push(Check {
                what: format!(
                    "`tether intercept` until the first intercepted request, agent {}",
                    agent.label()
                ),
                target: if judged {
                    format!("≤ {} s", FIRST_REQUEST_TARGET.as_secs())
                } else {
                    "(reference)".into()
                },
                measured: secs(median),
                pass: median.filter(|_| judged).map(|d| d <= FIRST_REQUEST_TARGET),
            });
        }
        for path in [LoadPath::Agent, LoadPath::NonMatching, LoadPath::Matching] {
            // Only the agent's pass-through has a target; the intercept paths are references.
            let target = (path == LoadPath::Agent).then_some(AGENT_ADDED_P50_TARGET_US);
            checks.push(Check::added_latency(
                format!("added p50 over direct: {}", path.label()),
                self.added_p50(path),
                target,
            ));
        }
        checks.push(Check {
            what: "agent RSS, idle".into(),
            target: format!("≤ {} MiB", IDLE_RSS_TARGET_KIB / 1024),
            measured: mib(self.idle_rss_kib),
            pass: self.idle_rss_kib.map(|k| k <= IDLE_RSS_TARGET_KIB),
        });
        checks.push(Check {
            what: "agent RSS, under load (max)".into(),
            target: "(reference)".into(),
            measured: mib(self.max_rss_kib()),
            pass: None,
        });
        checks
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# tether intercept: benchmark\n\n");
        for (what, value) in &self.meta {
            let _ = writeln!(md, "- {what}: {value}");
        }

        md.push_str(
            "\n## Time to the first intercepted request (median of the trials)\n\n\
             From just before `tether intercept` starts on the host until the `client` pod, \
             polling the Service on a new connection every 5 ms, first gets the laptop's answer \
             (the pods run on this host: one clock).\n\n\
             | agent | `tether intercept` returned | first request reached the laptop | \
             trials (first request), s | failed trials |\n|---|---:|---:|---|---:|\n",
        );
        for t in &self.times {
            let returned: Vec<Duration> = t.trials.iter().map(|t| t.returned).collect();
            let trials: Vec<String> = t
                .trials
                .iter()
                .map(|t| format!("{:.2}", t.first_request.as_secs_f64()))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.agent.label(),
                secs(median(&returned)),
                secs(t.median_first_request()),
                trials.join(", "),
                t.errors.len(),
            );
        }

        md.push_str(
            "\n## Requests per second and HTTP latency (from the `client` pod, one keep-alive \
             connection, GETs one after another)\n\n\
             | path | req/s | × direct | p50 / p99, µs | added p50 over direct, µs | \
             agent RSS max, MiB | errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for l in &self.loads {
            let direct = l.path == LoadPath::Direct;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.path.label(),
                l.req_per_s().map_or("n/a".into(), |r| format!("{r:.0}")),
                if direct {
                    "—".into()
                } else {
                    self.rate_ratio(l.path)
                        .map_or("n/a".into(), |r| format!("{r:.2}×"))
                },
                p50_p99(&l.latency),
                if direct {
                    "—".into()
                } else {
                    self.added_p50(l.path)
                        .map_or("n/a".into(), |a| format!("{a:+.0}"))
                },
                mib(l.max_rss_kib),
                l.latency.errors,
            );
        }

        md.push_str(
            "\n## Agent memory (VmRSS of the sidecar process)\n\n| when | RSS, MiB |\n|---|---:|\n",
        );
        for (when, kib) in [
            ("idle, before the load runs", self.idle_rss_kib),
            ("under load (max, sampled every 50 ms)", self.max_rss_kib()),
            ("idle, after the load runs", self.idle_after_rss_kib),
        ] {
            let _ = writeln!(md, "| {when} | {} |", mib(kib));
        }

        targets_markdown(&mut md, &self.checks());
        md.push_str(
            "\nLatencies are per request, client-side, nearest-rank percentiles; req/s is \
             successful requests over the wall time of the measured ones. Pod, agent and laptop \
             share this machine's CPUs with the cluster.\n",
        );

        let errors: Vec<String> = self
            .times
            .iter()
            .flat_map(|t| {
                t.errors
                    .iter()
                    .map(move |e| format!("intercept, agent {}: {e}", t.agent.label()))
            })
            .chain(self.loads.iter().filter_map(|l| {
                l.latency
                    .last_error
                    .as_ref()
                    .map(|e| format!("{}: {e}", l.path.label()))
            }))
            .chain(self.errors.iter().cloned())
            .collect();
        if !errors.is_empty() {
            md.push_str("\n## Errors (last of each run)\n\n");
            for e in errors {
                let _ = writeln!(md, "- {e}");
            }
        }
        md
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}
