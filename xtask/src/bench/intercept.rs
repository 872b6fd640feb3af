//! `cargo xtask bench --only intercept`: what `tether intercept` costs.
//!
//! On the sample workload `deployment/orders` (`deploy/sample/intercept.yaml`), with the
//! workstation namespace connected (`--transport udp`) and a "laptop" there (`tether-testapp` on
//! 127.0.0.1:18090 answering `hello from laptop-bench`), side by side in one run:
//! 1. the time from `tether intercept` to the first intercepted request, with the agent not yet in
//!    the workload (the intercept installs it: a rollout) and with it there. A waiter in the
//!    `client` pod (`tether-testapp bench wait-for`) polls the Service on a new connection every
//!    5 ms and prints when the laptop first answered; the pods run on this host, so that time and
//!    the host's clock just before `tether intercept` are readings of one clock;
//! 2. small GETs one after another on one keep-alive connection from the `client` pod: to the
//!    app's own port, to the agent's port with no intercept, and with a header intercept active,
//!    without the header (the app) and with it (the laptop): req/s and p50/p99;
//! 3. the agent's RSS, read in `/proc` (the cluster runs here), idle and sampled during 2.
//!
//! The table goes to stdout and `target/bench/intercept.md`. Every session, intercept and process
//! the run starts is ended by a guard, also when the run fails; an agent the run installed in a
//! workload that had none is uninstalled at the end.
//!
//! # Layout
//! - `guard`: the laptop, intercepts, the in-pod waiter and the agent's presence, undone on drop.
//! - `memory`: finding the agent's process and sampling its RSS.
//! - `report`: the results and their markdown.

mod guard;
pub(super) mod memory;
mod report;
#[cfg(test)]
mod tests;

use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, bail, Context};

use super::{machine_meta, process::Tether, report::Latency, step, write_report, HINT};
use crate::cluster;
use guard::{agent_installed, client_exec, Intercept, Laptop, Waiter};
use report::{Agent, LoadPath, LoadResult, Report, Times, Trial};

/// The namespace of the sample workloads.
const NAMESPACE: &str = "default";
const WORKLOAD: &str = "orders";
/// The container the agent runs in.
const AGENT_CONTAINER: &str = "tether-agent";
/// How the agent names its workload (its `--workload`).
const WORKLOAD_ID: &str = "Deployment/orders";
/// The app's own HTTP port in the `orders` pod.
const APP_PORT: u16 = 8080;
/// Where the laptop listens, on the workstation namespace's loopback.
const LAPTOP_PORT: u16 = 18090;
const LAPTOP_NAME: &str = "laptop-bench";
/// The personal intercept's filter, as `tether intercept --http-header` takes it …
const FILTER_HEADER: &str = "x-bench=1";
/// … and the header that matches it, as `tether-testapp bench --header` takes it.
const MATCHING_HEADER: &str = "x-bench:1";
const TRANSPORT: &str = "udp";
/// Longest `tether intercept` that installs the agent (the CLI waits up to 120 s for the
/// rollout).
const INSTALL_LIMIT: Duration = Duration::from_secs(240);
/// Longest `tether intercept` with the agent installed, and longest wait for a route to settle.
const INTERCEPT_LIMIT: Duration = Duration::from_secs(60);
/// Quiet time before an idle RSS reading.
const SETTLE: Duration = Duration::from_secs(2);
const RSS_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, clap::Args)]
pub struct InterceptArgs {
    /// Timed `tether intercept`s with the agent already in the workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    intercept_trials: u32,
    /// Timed `tether intercept`s that install the agent; each one rolls the workload out twice
    /// (uninstall, install).
    #[arg(long, default_value_t = 1)]
    install_trials: u32,
}

/// The first body line of the laptop's answers.
fn laptop_greeting() -> String {
    format!("hello from {LAPTOP_NAME}")
}

/// Runs the intercept benchmark with the workstation's link emulated as `profile` (none for
/// `lan`): every intercepted request crosses it twice, to the laptop and back.
pub fn run(args: &super::Args, profile: super::linkemu::Profile) -> anyhow::Result<()> {
    let ns = args.ns.as_str();
    super::preflight(ns)?;
    let service = service_addr()?;
    client_has_wait_for()?;
    let had_agent =
        agent_installed().with_context(|| format!("no deployment/{WORKLOAD}; {HINT}"))?;
    let mut report = Report {
        meta: meta(args, &service, had_agent),
        ..Report::default()
    };
    report
        .meta
        .push(("link profile".into(), super::linkemu::describe(profile)));
    let _emulator = if super::linkemu::emulated(profile) {
        step(&format!(
            "the link emulator on {ns}: {}",
            super::linkemu::describe(profile)
        ));
        Some(super::linkemu::Emulator::start(ns, profile)?)
    } else {
        None
    };

    // Dropped in reverse order: the laptop stops, the session quits, the agent is put back.
    let _agent = guard::AgentState::keep(ns, had_agent);
    step(&format!("tether connect --transport {TRANSPORT} on {ns}"));
    let _session = Tether::connect(ns, TRANSPORT)?;
    let _laptop = Laptop::start(ns)?;

    let url = format!("http://{service}/");
    let trials = &args.intercept;
    for (agent, n) in [
        (Agent::NotInstalled, trials.install_trials),
        (Agent::Installed, trials.intercept_trials),
    ] {
        step(&format!("tether intercept, agent {}", agent.label()));
        report.times.push(time_intercepts(ns, agent, n, &url));
    }

    load(args, &mut report)?;
    let name = if super::linkemu::emulated(profile) {
        format!("intercept-{}.md", profile.name())
    } else {
        "intercept.md".to_owned()
    };
    write_report(&name, &report.markdown())
}

/// The Service's `CLUSTER-IP:PORT` (its HTTP port): the waiter polls it without a DNS lookup.
fn service_addr() -> anyhow::Result<String> {
    let out = cluster::run(cluster::kubectl().args([
        "--request-timeout=10s",
        "-n",
        NAMESPACE,
        "get",
        "service",
        WORKLOAD,
        "-o",
        r#"jsonpath={.spec.clusterIP} {.spec.ports[?(@.name=="http")].port}"#,
    ]))
    .with_context(|| format!("no Service {WORKLOAD}; {HINT}"))?;
    match out.split_whitespace().collect::<Vec<_>>()[..] {
        [ip, port] => Ok(format!("{ip}:{port}")),
        _ => bail!("Service {WORKLOAD} has no ClusterIP and `http` port: {out:?}"),
    }
}

/// The laptop's readiness check and the in-pod waiter need `bench wait-for`; the in-pod one
/// comes from the test app image, which must also have `bench http --header`.
fn client_has_wait_for() -> anyhow::Result<()> {
    let host = std::process::Command::new(super::testapp_bin())
        .args(["bench", "wait-for", "--help"])
        .output()?;
    anyhow::ensure!(
        host.status.success(),
        "{} has no `bench wait-for`: rebuild it (run without --no-build)",
        super::testapp_bin().display()
    );
    let out = super::process::output_within(
        &mut client_exec(&["wait-for", "--help"]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!(
            "the `client` pod cannot run `tether-testapp bench wait-for` ({}): its image predates \
             it. Rebuild the images (`cargo xtask images`) and move the pod to the new one: \
             `kubectl set image deployment/client app=$TESTAPP_IMAGE` with TESTAPP_IMAGE from \
             {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            cluster::state_dir().join("images.env").display()
        );
    }
    Ok(())
}

fn meta(args: &super::Args, service: &str, had_agent: bool) -> Vec<(String, String)> {
    let mut meta = machine_meta();
    meta.extend([
        (
            "workload".into(),
            format!(
                "deployment/{WORKLOAD} in `{NAMESPACE}` (Service {service}); agent installed at \
                 the start: {}",
                if had_agent { "yes" } else { "no" }
            ),
        ),
        (
            "laptop".into(),
            format!(
                "`tether-testapp` on 127.0.0.1:{LAPTOP_PORT} in workstation namespace `{}` \
                 (`tether connect --transport {TRANSPORT}`)",
                args.ns
            ),
        ),
        (
            "from".into(),
            "the `client` pod (`kubectl exec deploy/client -c app -- tether-testapp bench …`)"
                .into(),
        ),
        (
            "runs".into(),
            format!(
                "{} intercepts installing the agent, {} with it installed; {} keep-alive GETs \
                 of `/` per path after a warm-up",
                args.intercept.install_trials, args.intercept.intercept_trials, args.requests
            ),
        ),
    ]);
    meta
}

/// `trials` timed intercepts starting from `agent`; failures become part of the result.
fn time_intercepts(ns: &str, agent: Agent, trials: u32, url: &str) -> Times {
    let mut times = Times {
        agent,
        trials: Vec::new(),
        errors: Vec::new(),
    };
    for n in 1..=trials {
        match time_intercept(ns, agent, url) {
            Ok(t) => {
                eprintln!(
                    "    trial {n}: intercept returned after {:.2} s, first request after {:.2} s",
                    t.returned.as_secs_f64(),
                    t.first_request.as_secs_f64()
                );
                times.trials.push(t);
            }
            Err(e) => {
                eprintln!("    trial {n} failed: {e:#}");
                times.errors.push(format!("{e:#}"));
            }
        }
    }
    times
}

fn time_intercept(ns: &str, agent: Agent, url: &str) -> anyhow::Result<Trial> {
    let limit = match agent {
        Agent::NotInstalled => {
            guard::uninstall(ns)?;
            wait_agent_gone()?;
            INSTALL_LIMIT
        }
        Agent::Installed => {
            if !agent_installed()? {
                // An untimed intercept puts the agent in.
                Intercept::start(ns, &[], INSTALL_LIMIT)?.leave()?;
            }
            INTERCEPT_LIMIT
        }
    };
    // The app answers, not an intercept someone left behind.
    wait_in_client(url, &[], &format!("hello from {WORKLOAD}-"))?;
    let waiter = Waiter::start(url, &[], &laptop_greeting(), limit)?;
    let start = SystemTime::now();
    let started = Instant::now();
    let intercept = Intercept::start(ns, &[], limit)?;
    let returned = started.elapsed();
    let first = waiter.first_match(limit)?;
    let first_request = first.duration_since(start).map_err(|_| {
        anyhow!(
            "the laptop answered before `tether intercept` started: was {WORKLOAD} intercepted?"
        )
    })?;
    intercept.leave()?;
    Ok(Trial {
        returned,
        first_request,
    })
}

/// Waits until no pod of the workload has the agent, terminating ones included: a terminating
/// pod's agent is still linked to the manager and can take the intercept, which is not the
/// "agent not installed" case.
fn wait_agent_gone() -> anyhow::Result<()> {
    const LIMIT: Duration = Duration::from_secs(120);
    let start = Instant::now();
    loop {
        let left = agent_pods(&orders_pods()?);
        if left.is_empty() {
            eprintln!(
                "    the last pod with the agent went away {:.1} s after the rollout",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() >= LIMIT {
            bail!("pods {left:?} still have the agent {LIMIT:?} after the uninstall's rollout");
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// `kubectl get pods -l app=orders -o json`.
fn orders_pods() -> anyhow::Result<serde_json::Value> {
    let json = cluster::run(cluster::kubectl().args([
        "--request-timeout=10s",
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        &format!("app={WORKLOAD}"),
        "-o",
        "json",
    ]))?;
    Ok(serde_json::from_str(&json)?)
}

/// The pods, in any phase, that have an agent container.
fn agent_pods(pods: &serde_json::Value) -> Vec<String> {
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["spec"]["containers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == AGENT_CONTAINER))
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Polls `url` from the `client` pod until an answer contains `text`.
fn wait_in_client(url: &str, headers: &[&str], text: &str) -> anyhow::Result<()> {
    Waiter::start(url, headers, text, INTERCEPT_LIMIT)?
        .first_match(INTERCEPT_LIMIT)
        .map(drop)
        .with_context(|| format!("waiting for {url} to answer {text:?}"))
}

/// The running `orders` pod with the agent.
#[derive(Debug, PartialEq, Eq)]
struct OrdersPod {
    name: String,
    ip: String,
    /// The agent container's port named `http`: where the Service's `http` goes.
    agent_port: u16,
}

/// The one running (not terminating) pod in `kubectl get pods -o json` with an agent port.
fn orders_pod(pods: &serde_json::Value) -> anyhow::Result<OrdersPod> {
    let items = pods["items"].as_array().context("no items")?;
    let running: Vec<OrdersPod> = items
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| {
            let agent = p["spec"]["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == AGENT_CONTAINER)?;
            let port = agent["ports"]
                .as_array()?
                .iter()
                .find(|port| port["name"] == "http")?;
            Some(OrdersPod {
                name: p["metadata"]["name"].as_str()?.to_owned(),
                ip: p["status"]["podIP"].as_str()?.to_owned(),
                agent_port: port["containerPort"].as_u64()?.try_into().ok()?,
            })
        })
        .collect();
    match <[OrdersPod; 1]>::try_from(running) {
        Ok([pod]) => Ok(pod),
        Err(running) => bail!(
            "expected one running {WORKLOAD} pod with the agent's `http` port, found {running:?}"
        ),
    }
}

/// Part 2 and 3: the load runs, and the agent's memory around and during them.
fn load(args: &super::Args, report: &mut Report) -> anyhow::Result<()> {
    let ns = args.ns.as_str();
    step("load from the client pod, and the agent's memory");
    if !agent_installed()? {
        Intercept::start(ns, &[], INSTALL_LIMIT)?.leave()?;
    }
    let pod = orders_pod(&orders_pods()?)?;
    report.meta.push((
        "pod".into(),
        format!(
            "{} ({}); app port {APP_PORT}, agent port {}",
            pod.name, pod.ip, pod.agent_port
        ),
    ));
    let pid = memory::agent_pid(WORKLOAD_ID, &pod.name)
        .map_err(|e| report.errors.push(format!("agent memory: {e:#}")))
        .ok();
    let idle_rss = || {
        thread::sleep(SETTLE);
        pid.and_then(memory::rss_kib)
    };
    report.idle_rss_kib = idle_rss();

    let direct = format!("http://{}:{APP_PORT}/", pod.ip);
    let agent = format!("http://{}:{}/", pod.ip, pod.agent_port);
    report
        .loads
        .push(load_run(args, LoadPath::Direct, &direct, pid));
    report
        .loads
        .push(load_run(args, LoadPath::Agent, &agent, pid));
    {
        let intercept = Intercept::start(ns, &["--http-header", FILTER_HEADER], INTERCEPT_LIMIT)?;
        // Each way answers from where it should before it is measured.
        wait_in_client(&agent, &[], &format!("hello from {}", pod.name))?;
        wait_in_client(&agent, &[MATCHING_HEADER], &laptop_greeting())?;
        report
            .loads
            .push(load_run(args, LoadPath::NonMatching, &agent, pid));
        report
            .loads
            .push(load_run(args, LoadPath::Matching, &agent, pid));
        intercept.leave()?;
    }
    report.idle_after_rss_kib = idle_rss();
    Ok(())
}

/// One `bench http` run from the `client` pod with the agent's RSS sampled meanwhile.
fn load_run(args: &super::Args, path: LoadPath, url: &str, pid: Option<u32>) -> LoadResult {
    let n = args.requests.to_string();
    let mut a = vec!["http", "--url", url, "--requests", &n];
    if path == LoadPath::Matching {
        a.extend(["--header", MATCHING_HEADER]);
    }
    let sampler = pid.map(|pid| memory::Sampler::start(pid, RSS_EVERY));
    let out = super::process::run_within(&mut client_exec(&a), Duration::from_secs(300));
    let max_rss_kib = sampler.and_then(memory::Sampler::finish);
    let json = out.and_then(|out| {
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(last)
            .with_context(|| format!("reading the output of bench {a:?}: {out}"))
    });
    let (latency, elapsed_s) = match json {
        Ok(v) => (Latency::from_json(&v), v["elapsed_s"].as_f64()),
        Err(e) => (Latency::failed(format!("{e:#}")), None),
    };
    let result = LoadResult {
        path,
        latency,
        elapsed_s,
        max_rss_kib,
    };
    eprintln!(
        "    {}: {:.0} req/s, p50 {:?} µs, p99 {:?} µs, agent RSS max {:?} KiB",
        path.label(),
        result.req_per_s().unwrap_or(0.0),
        result.latency.p50_us,
        result.latency.p99_us,
        max_rss_kib
    );
    result
}
