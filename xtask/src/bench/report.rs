//! What a benchmark run found, and its markdown: the measurements side by side, then the targets
//! of the benchmark issue checked against them. Plain data in, text out; nothing here measures.

use std::{fmt::Write, net::IpAddr, time::Duration};

/// Most latency a tether path may add over the direct path, at p50.
pub const ADDED_LATENCY_TARGET_US: f64 = 300.0;
/// Most a tether path may add to a keep-alive request over direct at p50 on the `wan20` link.
pub const WAN_KEEP_ALIVE_TARGET_US: f64 = 2000.0;
/// Longest `connect`, until the first request succeeds (median).
pub const CONNECT_TARGET: Duration = Duration::from_secs(2);
/// tether over UDP against `kubectl port-forward`, bulk throughput.
pub const UDP_THROUGHPUT_TARGET: f64 = 3.0;
/// tether over port-forward against `kubectl port-forward`, bulk throughput.
pub const PORT_FORWARD_THROUGHPUT_TARGET: f64 = 0.9;
/// tether over UDP against `kubectl port-forward`, CPU seconds per GB moved, each side.
pub const CPU_PER_GB_TARGET: f64 = 0.5;
/// Below this, added DNS latency counts as "not measurable": the larger of a floor and a share of
/// the baseline, which is about what two back-to-back baseline runs differ by.
pub const DNS_NOISE_FLOOR_US: f64 = 20.0;
pub const DNS_NOISE_SHARE: f64 = 0.10;

/// One latency run of `tether-testapp bench http|dns`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub ok: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Latency {
    /// Reads the testapp's JSON; a run that could not start at all is all errors.
    pub fn from_json(v: &serde_json::Value) -> Latency {
        Latency {
            p50_us: v["p50_us"].as_f64(),
            p99_us: v["p99_us"].as_f64(),
            ok: v["ok"].as_u64().unwrap_or(0),
            errors: v["errors"].as_u64().unwrap_or(0),
            last_error: v["last_error"].as_str().map(str::to_owned),
        }
    }

    pub fn failed(error: String) -> Latency {
        Latency {
            errors: 1,
            last_error: Some(error),
            ..Latency::default()
        }
    }
}

/// The ways from the workstation to the pod being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The host network namespace straight to the pod IP: the physical reference.
    Direct,
    /// `kubectl port-forward` on the host, to 127.0.0.1.
    KubectlPortForward,
    /// The workstation namespace, `tether connect --transport udp`, to the pod IP.
    TetherUdp,
    /// The workstation namespace, `tether connect --transport port-forward`, to the pod IP.
    TetherPortForward,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct (host → pod IP)",
            Path::KubectlPortForward => "kubectl port-forward (host → 127.0.0.1)",
            Path::TetherUdp => "tether, udp transport",
            Path::TetherPortForward => "tether, port-forward transport",
        }
    }

    /// The `--transport` of a tether path.
    pub fn transport(self) -> Option<&'static str> {
        match self {
            Path::TetherUdp => Some("udp"),
            Path::TetherPortForward => Some("port-forward"),
            Path::Direct | Path::KubectlPortForward => None,
        }
    }
}

/// Throughput and HTTP latency over one path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathResult {
    pub path: Path,
    /// MB/s (10^6 bytes) of each bulk GET that completed.
    pub bulk_mb_s: Vec<f64>,
    /// Why the others did not.
    pub bulk_errors: Vec<String>,
    /// MB/s of each bulk POST (the same size, the other way: the laptop uploading) that
    /// completed; why the others did not is in `bulk_errors`.
    pub upload_mb_s: Vec<f64>,
    pub keep_alive: Latency,
    pub new_connection: Latency,
    /// CPU seconds per GB the bulk transfers cost the path's processes (none for direct).
    pub cpu_per_gb: Option<super::cpu::Cpu>,
}

impl PathResult {
    pub fn best_mb_s(&self) -> Option<f64> {
        self.bulk_mb_s.iter().copied().reduce(f64::max)
    }

    pub fn best_upload_mb_s(&self) -> Option<f64> {
        self.upload_mb_s.iter().copied().reduce(f64::max)
    }

    fn errors(&self) -> u64 {
        self.bulk_errors.len() as u64 + self.keep_alive.errors + self.new_connection.errors
    }
}

/// Picks one of a path's latency runs.
type Pick = fn(&PathResult) -> &Latency;

/// `tether connect` trials of one transport.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectResult {
    pub path: Path,
    /// From starting `tether connect` until it returned.
    pub returned: Vec<Duration>,
    /// From starting `tether connect` until a GET to the pod first succeeded.
    pub first_ok: Vec<Duration>,
}

/// Which names a DNS run asked, and how: raw UDP A queries from the testapp, or glibc's
/// `getaddrinfo` (search list, `ndots`, A and AAAA), as programs resolve names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A name the workstation's original resolver answers, asked over and over (tether's cache
    /// answers most).
    NonCluster,
    /// A different such name every time: every query goes to the original resolver.
    NonClusterUncached,
    /// A Service name, asked over and over (tether's cache answers most).
    Cluster,
    /// A different cluster name every time (NXDOMAIN): every query crosses the tunnel.
    ClusterUncached,
    /// Through `getaddrinfo`: the non-cluster name.
    GlibcNonCluster,
    /// Through `getaddrinfo`: a Service's short name (completed by the search list).
    GlibcShort,
    /// Through `getaddrinfo`: `svc.ns`, which has a dot, so glibc tries it as it is first
    /// (`ndots:1`); before namespace names were the cluster's, that first try went to the
    /// original resolver.
    GlibcNamespaced,
    /// Through `getaddrinfo`: the Service's full name.
    GlibcFqdn,
}

impl Lookup {
    pub fn name(self) -> &'static str {
        match self {
            Lookup::NonCluster => "outside.tether.test",
            Lookup::NonClusterUncached => "n-{i}.outside.tether.test",
            Lookup::Cluster => "hello.default.svc.cluster.local",
            Lookup::ClusterUncached => "nx-{i}.default.svc.cluster.local",
            Lookup::GlibcNonCluster => "outside.tether.test",
            Lookup::GlibcShort => "hello",
            Lookup::GlibcNamespaced => "hello.default",
            Lookup::GlibcFqdn => "hello.default.svc.cluster.local",
        }
    }

    /// True for lookups through `getaddrinfo` (`tether-testapp bench resolve`).
    pub fn getaddrinfo(self) -> bool {
        matches!(
            self,
            Lookup::GlibcNonCluster
                | Lookup::GlibcShort
                | Lookup::GlibcNamespaced
                | Lookup::GlibcFqdn
        )
    }

    fn client(self) -> &'static str {
        if self.getaddrinfo() {
            "glibc getaddrinfo"
        } else {
            "UDP query"
        }
    }
}

/// One DNS run: without tether (`with` = None) or through a tether path.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsResult {
    pub with: Option<Path>,
    pub lookup: Lookup,
    pub server: IpAddr,
    pub latency: Latency,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Setup facts shown above the tables (what, value).
    pub meta: Vec<(String, String)>,
    pub paths: Vec<PathResult>,
    pub connects: Vec<ConnectResult>,
    pub dns: Vec<DnsResult>,
    /// One QUIC stream on loopback with both ends in one process (no TUN, no pods), MB/s: what
    /// any tether path can reach at most on this machine.
    pub quic_ceiling_mb_s: Option<f64>,
    /// The link profile's name (`lan`, `wan20`, …); empty in runs from before profiles.
    pub profile_name: String,
    /// The round trip the emulated link adds, when there is one: every path then starts in the
    /// workstation namespace and crosses it.
    pub profile_rtt: Option<Duration>,
    /// The emulated link's rate each way, MB/s, when it has one: no path can move more.
    pub profile_rate_mb_s: Option<f64>,
}

/// tether over UDP against direct TCP through the same lossy link, bulk throughput.
pub const LOSSY_DIRECT_THROUGHPUT_TARGET: f64 = 0.8;

/// One target of the issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// None: not measured, or a reference without a target.
    pub pass: Option<bool>,
}

impl Check {
    /// Added p50 latency, in µs, judged against `target_us` or shown as a reference (`None`).
    pub fn added_latency(what: String, added_us: Option<f64>, target_us: Option<f64>) -> Check {
        Check {
            what,
            target: target_us.map_or("(reference)".into(), |t| format!("≤ {t} µs")),
            measured: added_us.map_or("n/a".into(), |a| format!("{a:.0} µs")),
            pass: added_us.zip(target_us).map(|(a, t)| a <= t),
        }
    }

    /// The check whose description starts with `what`, for tests.
    #[cfg(test)]
    pub fn find<'a>(checks: &'a [Check], what: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.what.starts_with(what))
            .unwrap_or_else(|| panic!("no check {what:?} in {checks:#?}"))
    }
}

impl Report {
    fn path(&self, p: Path) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p)
    }

    fn dns(&self, with: Option<Path>, lookup: Lookup) -> Option<&Latency> {
        self.dns
            .iter()
            .find(|d| d.with == with && d.lookup == lookup)
            .map(|d| &d.latency)
    }

    /// p50 over `path` minus p50 over the direct path.
    fn added_p50(&self, path: Path, latency: Pick) -> Option<f64> {
        let direct = latency(self.path(Path::Direct)?).p50_us?;
        Some(latency(self.path(path)?).p50_us? - direct)
    }

    /// The targets of an emulated link: against direct through the same link.
    fn link_checks(&self, rtt: Duration) -> Vec<Check> {
        let mut checks = Vec::new();
        let direct = self.path(Path::Direct).and_then(PathResult::best_mb_s);
        let udp = self.path(Path::TetherUdp).and_then(PathResult::best_mb_s);
        let ratio = udp.zip(direct).map(|(u, d)| u / d);
        // The issue sets it for the lossy profile; elsewhere it is shown for reference.
        let target = (self.profile_name == "lossy50").then_some(LOSSY_DIRECT_THROUGHPUT_TARGET);
        checks.push(Check {
            what: format!(
                "throughput: {} / direct through the same link",
                Path::TetherUdp.label()
            ),
            target: target.map_or("(reference)".into(), |t| format!("≥ {t}×")),
            measured: ratio.map_or("n/a".into(), |r| format!("{r:.2}×")),
            pass: ratio.zip(target).map(|(r, t)| r >= t),
        });
        if let Some(rate) = self.profile_rate_mb_s {
            let kubectl = self
                .path(Path::KubectlPortForward)
                .and_then(PathResult::best_mb_s);
            checks.push(Check {
                what: "throughput: the link's rate (the most any path can move over it) / \
                       kubectl port-forward"
                    .into(),
                target: "(reference)".into(),
                measured: kubectl.map_or("n/a".into(), |k| format!("{:.2}×", rate / k)),
                pass: None,
            });
        }
        let rtt_us = rtt.as_secs_f64() * 1e6;
        let added = self.added_p50(Path::TetherUdp, |r| &r.new_connection);
        checks.push(Check {
            what: format!(
                "new connection, time to the first byte (p50): {} over direct",
                Path::TetherUdp.label()
            ),
            target: format!("≤ direct + 1 RTT ({:.0} µs)", rtt_us),
            measured: added.map_or("n/a".into(), |a| format!("{a:+.0} µs")),
            pass: added.map(|a| a <= rtt_us),
        });
        checks
    }

    /// CPU seconds per GB: tether's daemon against the `kubectl port-forward` process, and the
    /// manager against the cluster processes that carry kubectl's bytes.
    fn cpu_checks(&self) -> Vec<Check> {
        let kubectl = self
            .path(Path::KubectlPortForward)
            .and_then(|r| r.cpu_per_gb);
        let udp = self.path(Path::TetherUdp).and_then(|r| r.cpu_per_gb);
        type Side = fn(&super::cpu::Cpu) -> f64;
        let sides: [(&str, Side); 2] = [
            ("the daemon / the kubectl port-forward process", |c| {
                c.workstation_s
            }),
            (
                "the manager / API server + kubelet + containerd for kubectl's path",
                |c| c.cluster_s,
            ),
        ];
        sides
            .into_iter()
            .map(|(what, side)| {
                let ratio = udp
                    .zip(kubectl)
                    .map(|(u, k)| side(&u) / side(&k))
                    .filter(|r| r.is_finite());
                Check {
                    what: format!("CPU seconds per GB, {}: {what}", Path::TetherUdp.label()),
                    target: format!("≤ {CPU_PER_GB_TARGET}×"),
                    measured: ratio.map_or("n/a".into(), |r| format!("{r:.2}×")),
                    pass: ratio.map(|r| r <= CPU_PER_GB_TARGET),
                }
            })
            .collect()
    }

    /// The keep-alive target: the issue sets one for the local path and for `wan20`.
    fn keep_alive_target_us(&self) -> Option<f64> {
        match (self.profile_rtt, self.profile_name.as_str()) {
            (None, _) => Some(ADDED_LATENCY_TARGET_US),
            (Some(_), "wan20") => Some(WAN_KEEP_ALIVE_TARGET_US),
            (Some(_), _) => None,
        }
    }

    /// The targets against this run.
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some(rtt) = self.profile_rtt {
            checks.extend(self.link_checks(rtt));
        }
        let kubectl = self
            .path(Path::KubectlPortForward)
            .and_then(PathResult::best_mb_s);
        for (path, target) in [
            (Path::TetherUdp, UDP_THROUGHPUT_TARGET),
            (Path::TetherPortForward, PORT_FORWARD_THROUGHPUT_TARGET),
        ] {
            let ratio = self
                .path(path)
                .and_then(PathResult::best_mb_s)
                .zip(kubectl)
                .map(|(t, k)| t / k);
            checks.push(Check {
                what: format!("throughput: {} / kubectl port-forward", path.label()),
                target: format!("≥ {target}×"),
                measured: ratio.map_or("n/a".into(), |r| format!("{r:.2}×")),
                pass: ratio.map(|r| r >= target),
            });
        }
        // Uploads: shown against kubectl, and against direct through the same emulated link;
        // the issue sets no target for them.
        let upload = |p: Path| self.path(p).and_then(PathResult::best_upload_mb_s);
        let mut against = vec![("kubectl port-forward", upload(Path::KubectlPortForward))];
        if self.profile_rtt.is_some() {
            against.push(("direct through the same link", upload(Path::Direct)));
        }
        for (baseline, base) in against {
            let ratio = upload(Path::TetherUdp).zip(base).map(|(t, b)| t / b);
            checks.push(Check {
                what: format!(
                    "upload throughput: {} / {baseline}",
                    Path::TetherUdp.label()
                ),
                target: "(reference)".into(),
                measured: ratio.map_or("n/a".into(), |r| format!("{r:.2}×")),
                pass: None,
            });
        }
        if let Some(ceiling) = self.quic_ceiling_mb_s {
            let ratio = kubectl.map(|k| ceiling / k);
            checks.push(Check {
                what: "throughput: QUIC alone, one stream on loopback (the ceiling of any tether \
                       path here) / kubectl port-forward"
                    .into(),
                target: "(reference)".into(),
                measured: ratio.map_or("n/a".into(), |r| format!("{r:.2}×")),
                pass: None,
            });
        }
        let modes: [(&str, Pick, Option<f64>); 2] = [
            ("keep-alive", |r| &r.keep_alive, self.keep_alive_target_us()),
            (
                "new connection",
                |r| &r.new_connection,
                // On an emulated link: the "≤ direct + 1 RTT" check above.
                self.profile_rtt
                    .is_none()
                    .then_some(ADDED_LATENCY_TARGET_US),
            ),
        ];
        for (mode, latency, target_us) in modes {
            for path in [
                Path::KubectlPortForward,
                Path::TetherUdp,
                Path::TetherPortForward,
            ] {
                // kubectl port-forward is the reference; tether's paths have the target.
                let target = path.transport().and(target_us);
                checks.push(Check::added_latency(
                    format!("added p50 over direct, {mode}: {}", path.label()),
                    self.added_p50(path, latency),
                    target,
                ));
            }
        }
        for c in &self.connects {
            let median = median(&c.first_ok);
            checks.push(Check {
                what: format!(
                    "connect until the first request succeeds: {}",
                    c.path.label()
                ),
                target: format!("≤ {} s", CONNECT_TARGET.as_secs()),
                measured: median.map_or("n/a".into(), |d| format!("{:.2} s", d.as_secs_f64())),
                pass: median.map(|d| d <= CONNECT_TARGET),
            });
        }
        checks.extend(self.cpu_checks());
        for (lookup, what) in [
            (Lookup::NonCluster, "the same non-cluster name again"),
            (
                Lookup::NonClusterUncached,
                "a new non-cluster name each time",
            ),
        ] {
            let baseline = self.dns(None, lookup).and_then(|l| l.p50_us);
            for path in [Path::TetherUdp, Path::TetherPortForward] {
                let Some(with) = self.dns(Some(path), lookup) else {
                    continue;
                };
                let added = baseline.zip(with.p50_us).map(|(b, w)| (w - b, b));
                checks.push(Check {
                    what: format!("added p50 on DNS lookups of {what}: {}", path.label()),
                    target: "none measurable".into(),
                    measured: added.map_or("n/a".into(), |(a, _)| format!("{a:.0} µs")),
                    pass: added.map(|(a, b)| a <= dns_noise_us(b)),
                });
            }
        }
        checks
    }

    pub fn markdown(&self) -> String {
        let mut md = match self.profile_name.as_str() {
            "" => String::from("# tether connect: benchmark\n\n"),
            name => format!("# tether connect: benchmark, link profile `{name}`\n\n"),
        };
        for (what, value) in &self.meta {
            let _ = writeln!(md, "- {what}: {value}");
        }

        md.push_str(
            "\n## Throughput and HTTP latency (to the pod IP, port 8080)\n\n\
             | path | bulk GET, MB/s (best of 2) | bulk POST, MB/s (best of 2) | \
             keep-alive p50 / p99, µs | new connection p50 / p99, µs | added p50 over direct \
             (keep-alive / new conn.), µs | errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.paths {
            let added = |l: Pick| {
                self.added_p50(r.path, l)
                    .map_or("n/a".into(), |a| format!("{a:+.0}"))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.path.label(),
                r.best_mb_s().map_or("failed".into(), |v| format!("{v:.0}")),
                r.best_upload_mb_s()
                    .map_or("failed".into(), |v| format!("{v:.0}")),
                p50_p99(&r.keep_alive),
                p50_p99(&r.new_connection),
                if r.path == Path::Direct {
                    "—".into()
                } else {
                    format!(
                        "{} / {}",
                        added(|r| &r.keep_alive),
                        added(|r| &r.new_connection)
                    )
                },
                r.errors(),
            );
        }

        if self.paths.iter().any(|r| r.cpu_per_gb.is_some()) {
            md.push_str(
                "\n## CPU per GB moved (the bulk GETs; user + system time from /proc)\n\n\
                 | path | workstation side, s/GB | cluster side, s/GB | processes |\n\
                 |---|---:|---:|---|\n",
            );
            for r in &self.paths {
                let Some(c) = r.cpu_per_gb else { continue };
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {} |",
                    r.path.label(),
                    c.workstation_s,
                    c.cluster_s,
                    match r.path {
                        Path::KubectlPortForward =>
                            "kubectl; kube-apiserver + kubelet + containerd",
                        Path::TetherPortForward =>
                            "tether daemon; manager + kube-apiserver + kubelet + containerd",
                        _ => "tether daemon; manager",
                    }
                );
            }
        }

        md.push_str(
            "\n## Connect (manager already running; median of the trials)\n\n\
             | transport | `tether connect` returned | first request succeeded | \
             trials (first request), s |\n|---|---:|---:|---|\n",
        );
        for c in &self.connects {
            let trials: Vec<String> = c
                .first_ok
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.path.transport().unwrap_or("?"),
                secs(median(&c.returned)),
                secs(median(&c.first_ok)),
                trials.join(", "),
            );
        }

        md.push_str(
            "\n## DNS (lookups one after another)\n\n\
             | name | client | through | server | p50, µs | p99, µs | errors |\n\
             |---|---|---|---|---:|---:|---:|\n",
        );
        for d in &self.dns {
            let (p50, p99) = (us(d.latency.p50_us), us(d.latency.p99_us));
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {p50} | {p99} | {} |",
                d.lookup.name(),
                d.lookup.client(),
                d.with.map_or("no tether (original resolver)", Path::label),
                d.server,
                d.latency.errors,
            );
        }

        targets_markdown(&mut md, &self.checks());
        let _ = writeln!(
            md,
            "\nMB = 10^6 bytes. Latencies are per request, client-side, nearest-rank percentiles. \
             \"None measurable\" means at most the larger of {DNS_NOISE_FLOOR_US} µs and {:.0} % \
             of the baseline p50. tether's DNS cache keeps answers for their TTL, at most 5 s: \
             `{}` and `{}` are mostly answered from it; each `{}` and `{}` name is asked once, so \
             every such query goes to the original resolver or crosses the tunnel to the manager.",
            DNS_NOISE_SHARE * 100.0,
            Lookup::NonCluster.name(),
            Lookup::Cluster.name(),
            Lookup::NonClusterUncached.name(),
            Lookup::ClusterUncached.name(),
        );
        let errors: Vec<String> = self
            .paths
            .iter()
            .flat_map(|r| {
                let latency = [&r.keep_alive, &r.new_connection]
                    .into_iter()
                    .filter_map(|l| l.last_error.clone());
                r.bulk_errors
                    .iter()
                    .cloned()
                    .chain(latency)
                    .map(move |e| format!("{}: {e}", r.path.label()))
            })
            .chain(self.dns.iter().filter_map(|d| {
                d.latency
                    .last_error
                    .as_ref()
                    .map(|e| format!("DNS `{}`: {e}", d.lookup.name()))
            }))
            .collect();
        if !errors.is_empty() {
            md.push_str("\n## Errors (last of each run)\n\n");
            for e in errors {
                let _ = writeln!(md, "- {e}");
            }
        }
        if self.profile_rtt.is_some() {
            // Under emulation the reference paths start in the workstation namespace too.
            md = md
                .replace("direct (host → pod IP)", "direct (workstation → pod IP)")
                .replace(
                    "kubectl port-forward (host → 127.0.0.1)",
                    "kubectl port-forward (workstation → 127.0.0.1)",
                );
        }
        md
    }
}

/// The `## Targets` table.
pub(super) fn targets_markdown(md: &mut String, checks: &[Check]) {
    md.push_str("\n## Targets\n\n| check | target | measured | verdict |\n|---|---|---:|---|\n");
    for c in checks {
        let verdict = match c.pass {
            Some(true) => "pass",
            Some(false) => "**FAIL**",
            None => "—",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {verdict} |",
            c.what, c.target, c.measured
        );
    }
}

/// Added DNS latency below this is noise, given the baseline p50.
pub fn dns_noise_us(baseline_p50_us: f64) -> f64 {
    DNS_NOISE_FLOOR_US.max(baseline_p50_us * DNS_NOISE_SHARE)
}

pub fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len().checked_sub(1)? / 2).copied()
}

fn us(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

pub(super) fn p50_p99(l: &Latency) -> String {
    format!("{} / {}", us(l.p50_us), us(l.p99_us))
}

pub(super) fn secs(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

#[cfg(test)]
mod tests;
