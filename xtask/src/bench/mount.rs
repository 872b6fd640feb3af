//! `cargo xtask bench --only mount`: what `tether intercept … --mount` costs, next to what a
//! developer has without tether.
//!
//! On the sample workload `deployment/files` (`deploy/sample/files.yaml`), intercepted from the
//! workstation with `--mount` (its volumes, served by the pod's agent over the tunnel, on a FUSE
//! mount in the workstation's one mount namespace, see `xtask/scripts/workstation.sh`), side by
//! side in one run:
//! 1. a sequential read of a 100 MiB file of the pod's emptyDir (`/data/big.bin`): through the
//!    mount the first time (the page cache dropped first; the pod side warm, as for a file the
//!    app just wrote); with `kubectl cp`; with `kubectl exec … cat`; and cached, from the
//!    laptop's page cache, in turns with a local `cat` of a copy of the same file, cached too;
//! 2. `ls -l` of a 1,000-file directory: through the mount the first time (caches dropped) and
//!    again; with `kubectl exec … ls -l`; and of a local copy;
//! 3. reading small files one `cat` each: 100 distinct files through the mount (caches dropped
//!    first) and the same again, against `kubectl exec … cat` per file and a local `cat`.
//!
//! The workstation's commands run there (`nsenter` into its network and mount namespaces) and
//! time themselves with bash's `$EPOCHREALTIME`, so `nsenter`'s own start is not counted; the
//! `kubectl` baselines run on the host with the admin kubeconfig and are timed around the whole
//! command, as a developer waits for it. The table goes to stdout and `target/bench/mount.md`.
//! The session, the intercept and the agent (when the run installed it) are ended by a guard,
//! also when the run fails.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{
    machine_meta,
    process::{output_within, run_within, Tether},
    report::{median, targets_markdown, Check},
    step, write_report, HINT,
};
use crate::{cluster, manager};

const NAMESPACE: &str = "default";
const WORKLOAD: &str = "files";
/// The intercept's local port: nothing listens there, no request is sent.
const LAPTOP_PORT: u16 = 18097;
/// The mount point on the workstation (root may mount only under `/tmp` and a few others).
const MOUNT_DIR: &str = "/tmp/tether-bench-mount";
/// The big file, in the pod's emptyDir.
const BIG: &str = "/data/big.bin";
const BIG_MIB: u64 = 100;
const BIG_BYTES: u64 = BIG_MIB << 20;
/// The directory of many small files, in the pod's emptyDir.
const MANY: &str = "/data/many";
const MANY_FILES: u32 = 1000;
/// Where the `kubectl` baselines copy the big file to, on the host.
const COPY: &str = "/tmp/tether-bench-mount-copy.bin";
/// A local copy of the small files' directory, on the host.
const LOCAL_MANY: &str = "/tmp/tether-bench-mount-many";
/// Longest `tether intercept` that installs the agent (the CLI waits up to 120 s for the
/// rollout).
const INTERCEPT_LIMIT: Duration = Duration::from_secs(240);
/// Longest 100 MiB transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// Cached reads of the big file through the mount and of the local copy, in turns.
const CACHED_PAIRS: usize = 15;
/// The target: the first read through the mount against `kubectl cp`.
const COLD_VS_CP_TARGET: f64 = 2.0;

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// Runs of each 100 MiB read and each directory listing (the best is reported).
    #[arg(long, default_value_t = 3)]
    mount_trials: u32,
    /// Distinct small files read through the mount, one `cat` each (median and p90).
    #[arg(long, default_value_t = 100)]
    mount_small_files: u32,
    /// Small files read with one `kubectl exec … cat` each.
    #[arg(long, default_value_t = 20)]
    mount_exec_files: u32,
}

pub fn run(args: &super::Args) -> anyhow::Result<()> {
    let a = &args.mount;
    anyhow::ensure!(
        a.mount_trials > 0 && a.mount_small_files > 0 && a.mount_exec_files > 0,
        "--mount-trials, --mount-small-files and --mount-exec-files must be at least 1"
    );
    anyhow::ensure!(
        a.mount_small_files.max(a.mount_exec_files) <= MANY_FILES,
        "at most {MANY_FILES} small files"
    );
    let ws = Workstation::new(&args.ns)?;
    // A session an interrupted run left is quit from the mount namespace, where its mount is.
    let _ = ws.tether(&["quit"]).output();
    super::preflight(&args.ns)?;
    let had_agent =
        agent_installed().with_context(|| format!("no deployment/{WORKLOAD}; {HINT}"))?;
    ws.prepare_mount_dir()?;

    let mut report = Report {
        meta: meta(args, had_agent),
        ..Report::default()
    };
    // Dropped on every way out: leave, quit, the agent uninstalled if the run put it there, the
    // local copies removed.
    let _files = LocalFiles;
    let mut session = Session {
        ws: ws.clone(),
        had_agent,
        intercepted: false,
    };
    step(&format!("tether connect on {}", args.ns));
    run_within(&mut ws.tether(&["connect"]), Duration::from_secs(60)).with_context(|| {
        format!(
            "tether connect (daemon log under {})",
            Tether::runtime_dir(&args.ns).display()
        )
    })?;
    step(&format!(
        "tether intercept {WORKLOAD} --port {LAPTOP_PORT} --mount={MOUNT_DIR}"
    ));
    session.intercepted = true;
    let started = Instant::now();
    let out = run_within(
        &mut ws.tether(&[
            "intercept",
            WORKLOAD,
            "--port",
            &LAPTOP_PORT.to_string(),
            &format!("--mount={MOUNT_DIR}"),
            "-o",
            "json",
        ]),
        INTERCEPT_LIMIT,
    )
    .with_context(|| {
        format!(
            "tether intercept {WORKLOAD} --mount (daemon log under {})",
            Tether::runtime_dir(&args.ns).display()
        )
    })?;
    let intercept = Intercepted::parse(&out)?;
    eprintln!(
        "    returned after {:.1} s; pod {}; {}",
        started.elapsed().as_secs_f64(),
        intercept.pod,
        match &intercept.mount_error {
            None => format!("mounted: {}", intercept.volumes.join(", ")),
            Some(e) => format!("NOT mounted: {e}"),
        }
    );
    report.meta.push((
        "pod".into(),
        format!(
            "{} (volumes {}; `tether intercept` returned after {:.1} s, agent {})",
            intercept.pod,
            intercept.volumes.join(", "),
            started.elapsed().as_secs_f64(),
            if intercept.installed_agent {
                "installed by it"
            } else {
                "already there"
            }
        ),
    ));
    report.mount_error.clone_from(&intercept.mount_error);
    let pod = intercept.pod.as_str();

    step(&format!(
        "in {pod}: {BIG} ({BIG_MIB} MiB of /dev/urandom) and {MANY_FILES} small files in {MANY}"
    ));
    in_pod(
        pod,
        &[
            "busybox",
            "dd",
            "if=/dev/urandom",
            &format!("of={BIG}"),
            "bs=1048576",
            &format!("count={BIG_MIB}"),
        ],
        TRANSFER_LIMIT,
    )?;
    in_pod(
        pod,
        &[
            "sh",
            "-c",
            &format!(
                "mkdir -p {MANY} && cd {MANY} && i=0; while [ $i -lt {MANY_FILES} ]; do \
                 echo $i > f$i; i=$((i+1)); done"
            ),
        ],
        TRANSFER_LIMIT,
    )?;
    local_many()?;

    step("sequential read of the 100 MiB file");
    read_big(&ws, a, pod, &mut report);
    step("ls -l of the 1,000-file directory");
    list(&ws, a, pod, &mut report);
    step("small files, one cat each");
    small_files(&ws, a, pod, &mut report);

    write_report("mount.md", &report.markdown())
}

/// The workstation: its network namespace and its one mount namespace.
#[derive(Debug, Clone)]
struct Workstation {
    ns: String,
    /// The file its mount namespace is bound to.
    mnt: String,
}

impl Workstation {
    fn new(ns: &str) -> anyhow::Result<Workstation> {
        let mnt = cluster::run(
            Command::new(cluster::repo().join("xtask/scripts/workstation.sh")).arg(ns),
        )
        .with_context(|| format!("the mount namespace of workstation {ns}; {HINT}"))?;
        Ok(Workstation {
            ns: ns.to_owned(),
            mnt: mnt.trim().to_owned(),
        })
    }

    /// `program` on the workstation.
    fn command(&self, program: impl Into<PathBuf>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg(format!("--mount={}", self.mnt))
            .arg(program.into())
            .env("LC_ALL", "C");
        cmd
    }

    /// `tether ARGS` on the workstation, with the benchmark's runtime directory.
    fn tether(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(manager::tether_bin());
        cmd.args(args)
            .env("TETHER_RUNTIME_DIR", Tether::runtime_dir(&self.ns))
            .env("KUBECONFIG", cluster::kubeconfig())
            .env("RUST_LIB_BACKTRACE", "0");
        cmd
    }

    /// `bash -c SCRIPT` on the workstation; its stdout.
    fn bash(&self, script: &str, limit: Duration) -> anyhow::Result<String> {
        run_within(self.command("bash").args(["-c", script]), limit)
    }

    /// An empty [`MOUNT_DIR`], no mount left on it.
    fn prepare_mount_dir(&self) -> anyhow::Result<()> {
        let mounted = self
            .command("findmnt")
            .args(["--mountpoint", MOUNT_DIR])
            .stdout(Stdio::null())
            .status()?
            .success();
        if mounted {
            eprintln!("    unmounting {MOUNT_DIR}, left by an earlier run");
            self.bash(&format!("umount -l {MOUNT_DIR}"), COMMAND_LIMIT)?;
        }
        let left = self.bash(
            &format!("mkdir -p {MOUNT_DIR} && ls -A {MOUNT_DIR}"),
            COMMAND_LIMIT,
        )?;
        if !left.trim().is_empty() {
            bail!("{MOUNT_DIR} on the workstation is not empty: {left}");
        }
        Ok(())
    }

    /// Runs `body` on the workstation (or on the host) with `t CMD…`, which runs CMD, its stdout
    /// to /dev/null, and prints its wall time; the times, in order.
    fn timed(
        ws: Option<&Workstation>,
        body: &str,
        limit: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let script = format!("{TIMER}\n{body}");
        let out = match ws {
            Some(ws) => ws.bash(&script, limit)?,
            None => run_within(
                Command::new("bash")
                    .args(["-c", &script])
                    .env("LC_ALL", "C"),
                limit,
            )?,
        };
        Ok(parse_times(&out))
    }
}

/// bash: `t CMD…` prints `us MICROSECONDS` for CMD, or ends the script if it fails.
const TIMER: &str = r#"t() {
  local s=$EPOCHREALTIME
  "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }
  local e=$EPOCHREALTIME
  echo "us $(( ${e/./} - ${s/./} ))"
}"#;

/// The `us N` lines of a [`TIMER`] script.
fn parse_times(out: &str) -> Vec<Duration> {
    out.lines()
        .filter_map(|l| l.strip_prefix("us "))
        .filter_map(|n| n.trim().parse().ok())
        .map(Duration::from_micros)
        .collect()
}

/// What `tether intercept -o json` said.
#[derive(Debug, PartialEq, Eq)]
struct Intercepted {
    pod: String,
    volumes: Vec<String>,
    installed_agent: bool,
    /// Why there is no mount.
    mount_error: Option<String>,
}

impl Intercepted {
    fn parse(json: &str) -> anyhow::Result<Intercepted> {
        let v: serde_json::Value = serde_json::from_str(json)
            .with_context(|| format!("reading tether intercept's JSON: {json}"))?;
        let mount = &v["intercept"]["mount"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let pod = mount["pod"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| strings(&v["pods"]).into_iter().next())
            .with_context(|| format!("no pod in tether intercept's JSON: {json}"))?;
        let mount_error = if mount.is_object() {
            if mount["dir"].as_str() != Some(MOUNT_DIR) {
                bail!("mounted elsewhere than {MOUNT_DIR}: {json}");
            }
            None
        } else {
            Some(
                v["mount_error"]
                    .as_str()
                    .unwrap_or("no mount and no mount_error in the JSON")
                    .to_owned(),
            )
        };
        Ok(Intercepted {
            pod,
            volumes: strings(&mount["volumes"]),
            installed_agent: v["installed_agent"].as_bool().unwrap_or(false),
            mount_error,
        })
    }
}

/// The connected session and the intercept: left, quit, and the agent uninstalled (when the
/// run installed it) when dropped, whatever happened in between.
struct Session {
    ws: Workstation,
    had_agent: bool,
    intercepted: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        let run = |what: &str, cmd: &mut Command, limit: Duration| {
            if let Err(e) = run_within(cmd, limit) {
                eprintln!("warning: {what} failed: {e:#}");
            }
        };
        if self.intercepted {
            run(
                &format!("tether leave {WORKLOAD}"),
                &mut self.ws.tether(&["leave", WORKLOAD]),
                COMMAND_LIMIT,
            );
        }
        run("tether quit", &mut self.ws.tether(&["quit"]), COMMAND_LIMIT);
        // Never through a mount: rmdir fails on one.
        let _ = self.ws.bash(&format!("rmdir {MOUNT_DIR}"), COMMAND_LIMIT);
        // Unknown (the cluster did not answer) counts as installed: try the uninstall.
        if self.had_agent || !agent_installed().unwrap_or(true) {
            return;
        }
        eprintln!("    uninstalling the agent from {WORKLOAD}, which had none before the run");
        let workload = format!("deployment/{WORKLOAD}");
        run(
            &format!("tether uninstall {workload}"),
            &mut self.ws.tether(&["uninstall", &workload, "-n", NAMESPACE]),
            Duration::from_secs(180),
        );
        run(
            "the rollout after the uninstall",
            cluster::kubectl().args([
                "-n",
                NAMESPACE,
                "rollout",
                "status",
                &workload,
                "--timeout=180s",
            ]),
            Duration::from_secs(200),
        );
    }
}

/// The host's copies, removed when dropped.
struct LocalFiles;

impl Drop for LocalFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(COPY);
        let _ = std::fs::remove_dir_all(LOCAL_MANY);
    }
}

/// Whether `deployment/files` has the agent (its record annotation).
fn agent_installed() -> anyhow::Result<bool> {
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

/// `kubectl exec POD -c app -- ARGS`.
fn exec(pod: &str, args: &[&str]) -> Command {
    let mut cmd = cluster::kubectl();
    cmd.args(["-n", NAMESPACE, "exec", pod, "-c", "app", "--"])
        .args(args);
    cmd
}

fn in_pod(pod: &str, args: &[&str], limit: Duration) -> anyhow::Result<String> {
    run_within(&mut exec(pod, args), limit)
}

/// `kubectl ARGS` on the host, timed; fails when it does.
fn timed_kubectl(cmd: &mut Command, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = output_within(cmd, limit)?;
    let took = start.elapsed();
    cluster::checked(cmd, out)?;
    Ok(took)
}

/// Empties the page cache, dentries and inodes: the mount's next read and lookup go to the pod.
fn drop_caches() -> anyhow::Result<()> {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches")
}

/// The CPU seconds used so far by the processes on the path of `way` (the mount's, or
/// [`Way::KubectlCp`]'s), and by this process's
/// waited-for children (the reader on the workstation, or `kubectl`).
///
/// The mount's path: tether's daemon (and its helper), the traffic manager and the pod's agent.
/// `kubectl cp`'s: the API server, the kubelet, containerd and its shims (which carry the exec's
/// stream), and `kubectl`. Not counted: `tar` in the pod (it ends with the copy and is nobody's
/// child here), which leaves `kubectl cp` a little cheaper than it is.
fn path_cpu(way: Way) -> f64 {
    let pids = if way == Way::KubectlCp {
        super::cpu::by_name(&["kube-apiserver", "kubelet", "containerd", "containerd-shim"])
    } else {
        let mut pids = super::cpu::by_name(&["tether"]);
        pids.extend(super::cpu::agents(b"manager"));
        pids.extend(super::cpu::agents(b"sidecar"));
        pids
    };
    super::cpu::seconds(&pids) + super::cpu::children_seconds()
}

/// The local copy of the small files' directory.
fn local_many() -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(LOCAL_MANY);
    std::fs::create_dir_all(LOCAL_MANY)?;
    for i in 0..MANY_FILES {
        std::fs::write(format!("{LOCAL_MANY}/f{i}"), format!("{i}\n"))?;
    }
    Ok(())
}

fn file_size(path: &str) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Part 1.
fn read_big(ws: &Workstation, a: &MountArgs, pod: &str, report: &mut Report) {
    let through = format!("{MOUNT_DIR}{BIG}");
    let mut cold = Runs::new(Way::MountCold);
    let mut cached = Runs::new(Way::MountCached);
    if let Some(e) = &report.mount_error {
        cold.fail(format!("no mount: {e}"));
        cached.fail(format!("no mount: {e}"));
    } else {
        for _ in 0..a.mount_trials {
            let trial = || -> anyhow::Result<(Duration, Duration)> {
                drop_caches()?;
                // The pod's side warm, as for a file the app has just written.
                in_pod(
                    pod,
                    &["sh", "-c", &format!("cat {BIG} > /dev/null")],
                    TRANSFER_LIMIT,
                )?;
                let before = path_cpu(Way::MountCold);
                let t = Workstation::timed(Some(ws), &format!("t cat {through}"), TRANSFER_LIMIT)?;
                let cpu = Duration::from_secs_f64((path_cpu(Way::MountCold) - before).max(0.0));
                anyhow::ensure!(t.len() == 1, "one time expected, got {t:?}");
                Ok((t[0], cpu))
            };
            match trial() {
                Ok((t, cpu)) => {
                    cold.times.push(t);
                    cold.cpu.push(cpu);
                }
                Err(e) => {
                    cold.fail(format!("{e:#}"));
                    break;
                }
            }
        }
        match ws.bash(&format!("stat -c %s {through}"), COMMAND_LIMIT) {
            Ok(size) if size.trim() == BIG_BYTES.to_string() => {}
            Ok(size) => cold.fail(format!("{through} has {} bytes", size.trim())),
            Err(e) => cold.fail(format!("{e:#}")),
        }
    }
    report.big.push(cold);

    let mut cp = Runs::new(Way::KubectlCp);
    let from = format!("{NAMESPACE}/{pod}:{BIG}");
    for _ in 0..a.mount_trials {
        let _ = std::fs::remove_file(COPY);
        let before = path_cpu(Way::KubectlCp);
        let took = timed_kubectl(
            cluster::kubectl().args(["cp", &from, COPY, "-c", "app"]),
            TRANSFER_LIMIT,
        );
        let cpu = Duration::from_secs_f64((path_cpu(Way::KubectlCp) - before).max(0.0));
        match took {
            Ok(t) if file_size(COPY) == BIG_BYTES => {
                cp.times.push(t);
                cp.cpu.push(cpu);
            }
            Ok(_) => cp.fail(format!("{COPY} has {} bytes", file_size(COPY))),
            Err(e) => {
                cp.fail(format!("{e:#}"));
                break;
            }
        }
    }
    report.big.push(cp);

    let mut cat = Runs::new(Way::KubectlExec);
    for _ in 0..a.mount_trials {
        let took = std::fs::File::create(COPY)
            .context("creating the copy")
            .and_then(|file| {
                let mut cmd = exec(pod, &["cat", BIG]);
                cmd.stdin(Stdio::null()).stdout(file).stderr(Stdio::piped());
                let start = Instant::now();
                let out = cmd.output().context("running kubectl exec")?;
                let took = start.elapsed();
                anyhow::ensure!(
                    out.status.success(),
                    "kubectl exec cat {BIG} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(took)
            });
        match took {
            Ok(t) if file_size(COPY) == BIG_BYTES => cat.times.push(t),
            Ok(_) => cat.fail(format!("{COPY} has {} bytes", file_size(COPY))),
            Err(e) => {
                cat.fail(format!("{e:#}"));
                break;
            }
        }
    }
    report.big.push(cat);

    // The cached reads, through the mount and of the local copy, taken in turns in one script
    // after both are warm: the machine's speed drifts by tens of percent within minutes (other
    // guests, the cluster's own work), and reads an hour apart would compare that drift.
    let mut local = Runs::new(Way::Local);
    if let Some(e) = &report.mount_error {
        cached.fail(format!("no mount: {e}"));
        local.fail(format!("no mount to compare with: {e}"));
    } else if file_size(COPY) != BIG_BYTES {
        local.fail("no local copy of the file (both kubectl copies failed)".into());
        cached.fail("no local copy to read in turns with".into());
    } else {
        // A cached read takes tens of milliseconds: many pairs cost little and steady the best.
        let pairs = CACHED_PAIRS.max(a.mount_trials as usize);
        let body = format!("cat {through} {COPY} > /dev/null\n")
            + &format!("t cat {through}; t cat {COPY}\n").repeat(pairs);
        match Workstation::timed(Some(ws), &body, TRANSFER_LIMIT) {
            Ok(t) if t.len() == 2 * pairs => {
                for pair in t.chunks(2) {
                    cached.times.push(pair[0]);
                    local.times.push(pair[1]);
                }
            }
            Ok(t) => cached.fail(format!("{} times expected, got {t:?}", 2 * pairs)),
            Err(e) => cached.fail(format!("{e:#}")),
        }
    }
    report.big.push(cached);
    report.big.push(local);
    for r in &report.big {
        eprintln!(
            "    {}: best {} MB/s {}",
            r.way.label(),
            r.best().map_or("n/a".into(), |b| mb_s(BIG_BYTES, b)),
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// Part 2.
fn list(ws: &Workstation, a: &MountArgs, pod: &str, report: &mut Report) {
    let through = format!("{MOUNT_DIR}{MANY}");
    let mut first = Runs::new(Way::MountCold);
    let mut again = Runs::new(Way::MountCached);
    if let Some(e) = &report.mount_error {
        first.fail(format!("no mount: {e}"));
        again.fail(format!("no mount: {e}"));
    } else {
        for _ in 0..a.mount_trials {
            let trial = || -> anyhow::Result<Vec<Duration>> {
                drop_caches()?;
                let t = Workstation::timed(
                    Some(ws),
                    &format!("t ls -l {through}; t ls -l {through}"),
                    COMMAND_LIMIT,
                )?;
                anyhow::ensure!(t.len() == 2, "two times expected, got {t:?}");
                Ok(t)
            };
            match trial() {
                Ok(t) => {
                    first.times.push(t[0]);
                    again.times.push(t[1]);
                }
                Err(e) => {
                    first.fail(format!("{e:#}"));
                    break;
                }
            }
        }
        match ws.bash(&format!("ls {through} | wc -l"), COMMAND_LIMIT) {
            Ok(n) if n.trim() == MANY_FILES.to_string() => {}
            Ok(n) => first.fail(format!("{through} lists {} entries", n.trim())),
            Err(e) => first.fail(format!("{e:#}")),
        }
    }
    report.list.push(first);
    report.list.push(again);

    let mut exec_ls = Runs::new(Way::KubectlExec);
    for _ in 0..a.mount_trials {
        match timed_kubectl(&mut exec(pod, &["ls", "-l", MANY]), COMMAND_LIMIT) {
            Ok(t) => exec_ls.times.push(t),
            Err(e) => {
                exec_ls.fail(format!("{e:#}"));
                break;
            }
        }
    }
    report.list.push(exec_ls);

    let mut local = Runs::new(Way::Local);
    let body = format!("ls -l {LOCAL_MANY} > /dev/null\n")
        + &format!("t ls -l {LOCAL_MANY}\n").repeat(a.mount_trials as usize);
    match Workstation::timed(None, &body, COMMAND_LIMIT) {
        Ok(t) => local.times = t,
        Err(e) => local.fail(format!("{e:#}")),
    }
    report.list.push(local);
    for r in &report.list {
        eprintln!(
            "    {}: best {} {}",
            r.way.label(),
            ms(r.best()),
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// Part 3.
fn small_files(ws: &Workstation, a: &MountArgs, pod: &str, report: &mut Report) {
    let n = a.mount_small_files;
    let through = format!("{MOUNT_DIR}{MANY}");
    let mut first = Runs::new(Way::MountCold);
    let mut again = Runs::new(Way::MountCached);
    if let Some(e) = &report.mount_error {
        first.fail(format!("no mount: {e}"));
        again.fail(format!("no mount: {e}"));
    } else {
        let pass = format!("for ((i = 0; i < {n}; i++)); do t cat {through}/f$i; done\n");
        let times = drop_caches()
            .and_then(|()| Workstation::timed(Some(ws), &pass.repeat(2), TRANSFER_LIMIT));
        match times {
            Ok(t) if t.len() == 2 * n as usize => {
                let (f, s) = t.split_at(n as usize);
                first.times = f.to_vec();
                again.times = s.to_vec();
            }
            Ok(t) => first.fail(format!("{} times for {} reads", t.len(), 2 * n)),
            Err(e) => first.fail(format!("{e:#}")),
        }
    }
    report.small.push(first);
    report.small.push(again);

    let mut exec_cat = Runs::new(Way::KubectlExec);
    for i in 0..a.mount_exec_files {
        let file = format!("{MANY}/f{i}");
        match timed_kubectl(&mut exec(pod, &["cat", &file]), COMMAND_LIMIT) {
            Ok(t) => exec_cat.times.push(t),
            Err(e) => {
                exec_cat.fail(format!("{e:#}"));
                break;
            }
        }
    }
    report.small.push(exec_cat);

    let mut local = Runs::new(Way::Local);
    let body = format!("for ((i = 0; i < {n}; i++)); do t cat {LOCAL_MANY}/f$i; done\n");
    match Workstation::timed(None, &body, COMMAND_LIMIT) {
        Ok(t) => local.times = t,
        Err(e) => local.fail(format!("{e:#}")),
    }
    report.small.push(local);
    for r in &report.small {
        eprintln!(
            "    {}: median {}, p90 {} ({} files) {}",
            r.way.label(),
            ms(r.median()),
            ms(r.p90()),
            r.times.len(),
            r.error.as_deref().unwrap_or("")
        );
    }
}

fn meta(args: &super::Args, had_agent: bool) -> Vec<(String, String)> {
    let a = &args.mount;
    let mut meta = machine_meta();
    meta.extend([
        (
            "workload".into(),
            format!(
                "deployment/{WORKLOAD} in `{NAMESPACE}`; agent installed at the start: {}",
                if had_agent { "yes" } else { "no" }
            ),
        ),
        (
            "mount".into(),
            format!(
                "`tether intercept {WORKLOAD} --port {LAPTOP_PORT} --mount={MOUNT_DIR}` on \
                 workstation `{}` (its network and mount namespaces; `tether connect`, default \
                 transport)",
                args.ns
            ),
        ),
        (
            "baselines".into(),
            "`kubectl` on the host with the admin kubeconfig, timed around the whole command; \
             local: `cat` and `ls -l` of copies in the host's /tmp"
                .into(),
        ),
        (
            "runs".into(),
            format!(
                "{} of each {BIG_MIB} MiB read and each listing (the best shown); {} small files \
                 through the mount, {} with `kubectl exec`",
                a.mount_trials, a.mount_small_files, a.mount_exec_files
            ),
        ),
    ]);
    meta
}

/// One way of getting at the pod's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Through the mount, the caches dropped first.
    MountCold,
    /// Through the mount, again.
    MountCached,
    KubectlCp,
    KubectlExec,
    /// A local copy, cached.
    Local,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::MountCold => "tether mount, first (caches dropped)",
            Way::MountCached => "tether mount, again (cached)",
            Way::KubectlCp => "`kubectl cp`",
            Way::KubectlExec => "`kubectl exec`",
            Way::Local => "local copy (cached)",
        }
    }
}

/// The times of one way's runs, and why it stopped if it failed.
#[derive(Debug, Clone)]
struct Runs {
    way: Way,
    times: Vec<Duration>,
    /// The CPU time of the processes on the way's path during each successful trial, where
    /// measured (see [`path_cpu`]): one per entry of `times`.
    cpu: Vec<Duration>,
    error: Option<String>,
}

impl Runs {
    fn new(way: Way) -> Runs {
        Runs {
            way,
            times: Vec::new(),
            cpu: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, error: String) {
        eprintln!("    {}: {error}", self.way.label());
        self.error.get_or_insert(error);
    }

    fn best(&self) -> Option<Duration> {
        self.times.iter().min().copied()
    }

    fn median(&self) -> Option<Duration> {
        median(&self.times)
    }

    fn p90(&self) -> Option<Duration> {
        percentile(&self.times, 90)
    }
}

/// The nearest-rank percentile.
fn percentile(v: &[Duration], p: usize) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = (p * v.len()).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

fn mb_s(bytes: u64, d: Duration) -> String {
    let v = bytes as f64 / d.as_secs_f64() / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| {
        let ms = d.as_secs_f64() * 1e3;
        if ms >= 100.0 {
            format!("{ms:.0} ms")
        } else if ms >= 10.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.2} ms")
        }
    })
}

/// The results and their markdown.
#[derive(Debug, Default)]
struct Report {
    meta: Vec<(String, String)>,
    /// Why the intercept has no mount.
    mount_error: Option<String>,
    big: Vec<Runs>,
    list: Vec<Runs>,
    small: Vec<Runs>,
}

impl Report {
    fn best(rows: &[Runs], way: Way) -> Option<Duration> {
        rows.iter().find(|r| r.way == way)?.best()
    }

    /// How many times faster `way` is than `than` (by best times).
    fn speedup(rows: &[Runs], way: Way, than: Way) -> Option<f64> {
        let (a, b) = (Self::best(rows, way)?, Self::best(rows, than)?);
        (!a.is_zero()).then(|| b.as_secs_f64() / a.as_secs_f64())
    }

    /// The CPU of each way's path per trial of the first read and of `kubectl cp`: with both
    /// ways keeping the cores busy, how much faster one can be is at most its CPU per byte
    /// against the other's.
    fn cpu_markdown(&self, md: &mut String) {
        let rows: Vec<&Runs> = self.big.iter().filter(|r| !r.cpu.is_empty()).collect();
        if rows.is_empty() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let _ = write!(
            md,
            "\n### CPU of the first read: the processes on each way's path ({cores} cores)\n\n\
             | way | CPU s (median) | cores (median) | CPU s per trial |\n\
             |---|---:|---:|---|\n"
        );
        for r in &rows {
            // One CPU time per successful trial, in the trials' order.
            let mut sorted: Vec<f64> = r
                .cpu
                .iter()
                .zip(&r.times)
                .filter(|(_, t)| !t.is_zero())
                .map(|(c, t)| c.as_secs_f64() / t.as_secs_f64())
                .collect();
            sorted.sort_by(f64::total_cmp);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r.way.label(),
                median(&r.cpu).map_or("—".into(), |c| format!("{:.2}", c.as_secs_f64())),
                sorted
                    .get(sorted.len().saturating_sub(1) / 2)
                    .map_or("—".into(), |b| format!("{b:.2}")),
                trials(&r.cpu),
            );
        }
        if let Some(ceiling) = self.cpu_ceiling() {
            let _ = writeln!(
                md,
                "\nWhere both ways keep the cores busy, the first read can be at most \
                 {ceiling:.2}× `kubectl cp` on this machine: `kubectl cp`'s CPU per byte over the \
                 mount's (medians). The mount's path: tether's daemon, the traffic manager, the \
                 pod's agent and the reader; `kubectl cp`'s: `kubectl`, the API server, the \
                 kubelet and containerd with its shims (not `tar` in the pod)."
            );
        }
    }

    /// `kubectl cp`'s median CPU per trial over the mount's first read's.
    fn cpu_ceiling(&self) -> Option<f64> {
        let cpu = |way| {
            self.big
                .iter()
                .find(|r| r.way == way)
                .and_then(|r| median(&r.cpu))
        };
        let (mount, cp) = (cpu(Way::MountCold)?, cpu(Way::KubectlCp)?);
        (!mount.is_zero()).then(|| cp.as_secs_f64() / mount.as_secs_f64())
    }

    fn checks(&self) -> Vec<Check> {
        let ratio = |r: Option<f64>| r.map_or("n/a".into(), |r| format!("{r:.2}×"));
        let big = &self.big;
        let cold_cp = Self::speedup(big, Way::MountCold, Way::KubectlCp);
        let small = |way| {
            self.small
                .iter()
                .find(|r| r.way == way)
                .and_then(Runs::median)
        };
        let small_ratio = match (small(Way::MountCold), small(Way::KubectlExec)) {
            (Some(m), Some(k)) if !m.is_zero() => Some(k.as_secs_f64() / m.as_secs_f64()),
            _ => None,
        };
        vec![
            Check {
                what: format!("{BIG_MIB} MiB read, mount first read against `kubectl cp`"),
                target: format!("≥ {COLD_VS_CP_TARGET:.0}×"),
                measured: ratio(cold_cp),
                pass: cold_cp.map(|r| r >= COLD_VS_CP_TARGET),
            },
            Check {
                what: format!(
                    "{BIG_MIB} MiB read, the most the machine's CPU allows the first read \
                     against `kubectl cp` (`kubectl cp`'s CPU per byte over the mount's)"
                ),
                target: "reference".into(),
                measured: ratio(self.cpu_ceiling()),
                pass: None,
            },
            Check {
                what: format!("{BIG_MIB} MiB read, mount first read against `kubectl exec cat`"),
                target: "reference".into(),
                measured: ratio(Self::speedup(big, Way::MountCold, Way::KubectlExec)),
                pass: None,
            },
            Check {
                what: format!(
                    "{BIG_MIB} MiB read, mount cached re-read against a local cached read"
                ),
                target: "local-disk speed (≈ 1×)".into(),
                measured: ratio(Self::speedup(big, Way::MountCached, Way::Local)),
                pass: None,
            },
            Check {
                what: "`ls -l` of 1,000 files, mount first listing against `kubectl exec ls -l`"
                    .into(),
                target: "reference".into(),
                measured: ratio(Self::speedup(&self.list, Way::MountCold, Way::KubectlExec)),
                pass: None,
            },
            Check {
                what: "small file, median `cat` through the mount (first read) against \
                       `kubectl exec cat`"
                    .into(),
                target: "reference".into(),
                measured: ratio(small_ratio),
                pass: None,
            },
        ]
    }

    fn markdown(&self) -> String {
        let mut md = String::from("# tether intercept --mount: benchmark\n\n");
        for (what, value) in &self.meta {
            let _ = writeln!(md, "- {what}: {value}");
        }
        if let Some(e) = &self.mount_error {
            let _ = writeln!(md, "\n**The intercept has no mount**: {e}");
        }

        let _ = write!(
            md,
            "\n## Sequential read of a {BIG_MIB} MiB file (`{BIG}`, the pod's emptyDir)\n\n\
             | way | command | best, s | MB/s (best) | × `kubectl cp` | trials, s |\n\
             |---|---|---:|---:|---:|---|\n"
        );
        for r in &self.big {
            let command = match r.way {
                Way::MountCold | Way::MountCached => format!("`cat $DIR{BIG}`"),
                Way::KubectlCp => format!("`kubectl cp {NAMESPACE}/POD:{BIG} …`"),
                Way::KubectlExec => format!("`kubectl exec POD -- cat {BIG} > …`"),
                Way::Local => "`cat` of the copy".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {command} | {} | {} | {} | {} |",
                r.way.label(),
                r.best()
                    .map_or("failed".into(), |b| format!("{:.3}", b.as_secs_f64())),
                r.best().map_or("—".into(), |b| mb_s(BIG_BYTES, b)),
                if r.way == Way::KubectlCp {
                    "—".into()
                } else {
                    Self::speedup(&self.big, r.way, Way::KubectlCp)
                        .map_or("n/a".into(), |x| format!("{x:.2}×"))
                },
                trials(&r.times),
            );
        }

        self.cpu_markdown(&mut md);

        let _ = write!(
            md,
            "\n## `ls -l` of a {MANY_FILES}-file directory (`{MANY}`)\n\n\
             | way | best | median | × `kubectl exec` | trials, s |\n|---|---:|---:|---:|---|\n"
        );
        for r in &self.list {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                r.way.label(),
                ms(r.best()),
                ms(r.median()),
                if r.way == Way::KubectlExec {
                    "—".into()
                } else {
                    Self::speedup(&self.list, r.way, Way::KubectlExec)
                        .map_or("n/a".into(), |x| format!("{x:.2}×"))
                },
                trials(&r.times),
            );
        }

        md.push_str(
            "\n## Small files, one `cat` each (a few bytes; a new process per file on every \
             way)\n\n| way | files | median | p90 | slowest |\n|---|---:|---:|---:|---:|\n",
        );
        for r in &self.small {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                r.way.label(),
                r.times.len(),
                ms(r.median()),
                ms(r.p90()),
                ms(r.times.iter().max().copied()),
            );
        }

        targets_markdown(&mut md, &self.checks());
        md.push_str(
            "\nMB = 10^6 bytes. \"First\" drops the kernel's page, dentry and inode caches \
             (`/proc/sys/vm/drop_caches`) just before, and for the big file then reads it once \
             in the pod, so the pod's side is warm as for a file the app has just written; \
             \"again\" follows at once, except for the big file, whose cached reads through the \
             mount and of the local copy are taken in turns in one script on the workstation, \
             both warm. The workstation's reads are timed inside the \
             workstation (bash `$EPOCHREALTIME` around each command); `kubectl` around the \
             whole command on the host. The cluster runs on this machine: every way's CPU \
             competes with it for the same cores.\n",
        );
        let errors: Vec<String> = [&self.big, &self.list, &self.small]
            .into_iter()
            .flatten()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.way.label())))
            .collect();
        if !errors.is_empty() {
            md.push_str("\n## Errors\n\n");
            for e in errors {
                let _ = writeln!(md, "- {e}");
            }
        }
        md
    }
}

fn trials(times: &[Duration]) -> String {
    let t: Vec<String> = times
        .iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect();
    t.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_timer_lines() {
        assert_eq!(
            parse_times("us 1500\nnoise\nus 20\n"),
            [Duration::from_micros(1500), Duration::from_micros(20)]
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 90), Some(Duration::from_millis(90)));
        assert_eq!(median(&v), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v[..1], 90), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 90), None);
    }

    #[test]
    fn reads_the_intercepts_mount_or_why_there_is_none() {
        let ok = r#"{"intercept":{"mount":{"dir":"/tmp/tether-bench-mount","pod":"files-1",
            "volumes":["/data","/etc/files"]}},"installed_agent":true,"pods":["files-1"]}"#;
        assert_eq!(
            Intercepted::parse(ok).unwrap(),
            Intercepted {
                pod: "files-1".into(),
                volumes: vec!["/data".into(), "/etc/files".into()],
                installed_agent: true,
                mount_error: None,
            }
        );
        let failed = r#"{"intercept":{},"installed_agent":false,"pods":["files-2"],
            "mount_error":"no /dev/fuse"}"#;
        let i = Intercepted::parse(failed).unwrap();
        assert_eq!(
            (i.pod.as_str(), i.mount_error.as_deref()),
            ("files-2", Some("no /dev/fuse"))
        );
    }

    #[test]
    fn the_markdown_has_the_ratios() {
        let ms = |ms: &[u64]| ms.iter().copied().map(Duration::from_millis).collect();
        let runs = |way, times: &[u64], cpu: &[u64]| Runs {
            way,
            times: ms(times),
            cpu: ms(cpu),
            error: None,
        };
        let report = Report {
            big: vec![
                runs(Way::MountCold, &[500, 400], &[900, 700]),
                runs(Way::KubectlCp, &[1000], &[1600]),
            ],
            ..Report::default()
        };
        let md = report.markdown();
        assert!(md.contains("| 2.50× | pass |"), "{md}");
        assert!(md.contains("| 262 | 2.50× | 0.500, 0.400 |"), "{md}");
        // CPU: the mount's median of 0.7 and 0.9 s is 0.7 (the lower middle); busy 1.75 cores.
        assert!(
            md.contains("| tether mount, first (caches dropped) | 0.70 | 1.75 | 0.900, 0.700 |"),
            "{md}"
        );
        assert!(md.contains("at most 2.29× `kubectl cp`"), "{md}");
    }
}
