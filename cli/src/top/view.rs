//! What `tether top` shows, computed from the daemon's samples: rates from the difference of two
//! samples, latency percentiles from the difference of two histograms. Pure, so every number on
//! the screen is unit-tested.

use std::time::Duration;

use serde::Serialize;
use tether_daemon::control::{DnsCounts, FileCounts, InterceptTop, TopSnapshot};
use tether_daemon::flow_table::{FlowProtocol, FlowRow};
use tether_proto::stats::RouteCounts;
use tether_proto::{AgentLink, InterceptMode};

/// The screen's numbers (and `tether top --once -o json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    pub connected: bool,
    pub context: String,
    pub namespace: String,
    /// `udp` or `port-forward`.
    pub transport: String,
    /// The seconds the rates are measured over.
    pub interval_s: f64,
    /// The seconds the latency percentiles are measured over.
    pub latency_window_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierView>,
    pub throughput: Throughput,
    pub flows_open: u64,
    pub flows_started: u64,
    pub dns: DnsView,
    /// The open flows that moved the most bytes, most first.
    pub flows: Vec<FlowView>,
    pub intercepts: Vec<InterceptView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CarrierView {
    pub rtt_ms: f64,
    pub loss_percent: f64,
    pub cwnd_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Throughput {
    pub to_cluster_bytes_per_s: f64,
    pub to_workstation_bytes_per_s: f64,
    /// Since the daemon started.
    pub to_cluster_bytes: u64,
    pub to_workstation_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DnsView {
    pub queries_per_s: f64,
    /// Answers from the daemon's cache among all queries since the daemon started; `None`
    /// before the first query.
    pub cache_hit_ratio: Option<f64>,
    pub totals: DnsCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowView {
    pub protocol: FlowProtocol,
    pub destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub age_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterceptView {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub app_port: u16,
    pub filter: String,
    /// Requests taken to this machine.
    pub laptop: RouteView,
    /// Requests on the same port that stayed with the app.
    pub app: RouteView,
    pub agents: Vec<AgentLink>,
    /// For a mirror: its copies (a mirror takes nothing, so `laptop` stays empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorView>,
    /// For an intercept with `--mount`: what the mount asks of the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesView>,
}

/// A mount's operations: counts since it was mounted, rates over the last interval, latency
/// over the latency window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FilesView {
    pub ops: u64,
    pub ops_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    pub read_bytes: u64,
    pub read_bytes_per_s: f64,
    pub written_bytes: u64,
    pub written_bytes_per_s: f64,
    pub errors: u64,
}

/// A mirror's copies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MirrorView {
    /// Copies the laptop answered, since the mirror started.
    pub sent: u64,
    pub sent_per_s: f64,
    /// Copies dropped, since the mirror started.
    pub dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteView {
    /// Since the intercept started.
    pub requests: u64,
    pub requests_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl View {
    /// The view at `now`: rates since `prev`, latency percentiles since `first` (an older
    /// sample, or `None` for all requests so far).
    pub fn new<'a>(
        first: Option<&'a TopSnapshot>,
        prev: &'a TopSnapshot,
        now: &TopSnapshot,
    ) -> View {
        let seconds = |from: &TopSnapshot| now.at_ms.saturating_sub(from.at_ms) as f64 / 1e3;
        let interval = seconds(prev);
        let rate = |now: u64, before: u64| {
            if interval > 0.0 {
                now.saturating_sub(before) as f64 / interval
            } else {
                0.0
            }
        };
        let queries = now.dns.total();
        View {
            connected: now.connected,
            context: now.context.clone(),
            namespace: now.namespace.clone(),
            transport: now.transport.clone(),
            interval_s: interval,
            latency_window_s: match first {
                Some(first) => seconds(first),
                None => now.at_ms as f64 / 1e3,
            },
            carrier: now.carrier.map(|c| CarrierView {
                rtt_ms: c.rtt_us as f64 / 1e3,
                loss_percent: c.loss_percent(),
                cwnd_bytes: c.cwnd,
            }),
            throughput: Throughput {
                to_cluster_bytes_per_s: rate(now.bytes_to_cluster, prev.bytes_to_cluster),
                to_workstation_bytes_per_s: rate(
                    now.bytes_to_workstation,
                    prev.bytes_to_workstation,
                ),
                to_cluster_bytes: now.bytes_to_cluster,
                to_workstation_bytes: now.bytes_to_workstation,
            },
            flows_open: now.flows_open,
            flows_started: now.flows_started,
            dns: DnsView {
                queries_per_s: rate(queries, prev.dns.total()),
                cache_hit_ratio: (queries > 0).then(|| now.dns.cache_hit as f64 / queries as f64),
                totals: now.dns,
            },
            flows: now.flows.iter().map(flow_view).collect(),
            intercepts: now
                .intercepts
                .iter()
                .map(|i| {
                    let find = |s: &'a TopSnapshot| s.intercepts.iter().find(|e| e.name == i.name);
                    let (before, oldest) = (find(prev), first.and_then(find));
                    let route = |pick: fn(&InterceptTop) -> &RouteCounts| {
                        let zero = RouteCounts::default();
                        let before = before.map_or(&zero, pick);
                        let oldest = oldest.map_or(&zero, pick);
                        let window = pick(i).since(oldest);
                        RouteView {
                            requests: pick(i).requests,
                            requests_per_s: rate(pick(i).requests, before.requests),
                            p50_ms: window.quantile(0.5).map(ms),
                            p99_ms: window.quantile(0.99).map(ms),
                        }
                    };
                    InterceptView {
                        name: i.name.clone(),
                        namespace: i.namespace.clone(),
                        workload: i.workload.clone(),
                        app_port: i.app_port,
                        filter: i.filter.clone(),
                        laptop: route(|i| &i.laptop),
                        app: route(|i| &i.app),
                        agents: i.agents.clone(),
                        mirror: (i.mode == InterceptMode::Mirror).then(|| MirrorView {
                            sent: i.mirrored.sent,
                            sent_per_s: rate(
                                i.mirrored.sent,
                                before.map_or(0, |b| b.mirrored.sent),
                            ),
                            dropped: i.mirrored.dropped,
                        }),
                        files: i.files.as_ref().map(|f| {
                            let zero = FileCounts::default();
                            let before = before.and_then(|b| b.files.as_ref()).unwrap_or(&zero);
                            let oldest = oldest.and_then(|o| o.files.as_ref()).unwrap_or(&zero);
                            let window = f.ops.since(&oldest.ops);
                            FilesView {
                                ops: f.ops.requests,
                                ops_per_s: rate(f.ops.requests, before.ops.requests),
                                p50_ms: window.quantile(0.5).map(ms),
                                p99_ms: window.quantile(0.99).map(ms),
                                read_bytes: f.read_bytes,
                                read_bytes_per_s: rate(f.read_bytes, before.read_bytes),
                                written_bytes: f.written_bytes,
                                written_bytes_per_s: rate(f.written_bytes, before.written_bytes),
                                errors: f.errors,
                            }
                        }),
                    }
                })
                .collect(),
        }
    }
}

fn flow_view(f: &FlowRow) -> FlowView {
    FlowView {
        protocol: f.protocol,
        destination: f.destination.to_string(),
        name: f.name.clone(),
        bytes_out: f.bytes_out,
        bytes_in: f.bytes_in,
        age_s: f.age_ms as f64 / 1e3,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes as people read them: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A latency for a table cell: `-` when nothing was timed.
pub fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) if ms < 1_000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use tether_daemon::control::CarrierStats;

    use super::*;

    fn counts(n: u64, each: Duration) -> RouteCounts {
        let mut c = RouteCounts::default();
        for _ in 0..n {
            c.record(each);
        }
        c
    }

    fn sample(at_ms: u64, laptop: RouteCounts, sent: u64) -> TopSnapshot {
        TopSnapshot {
            at_ms,
            connected: true,
            transport: "udp".into(),
            carrier: Some(CarrierStats {
                rtt_us: 1_500,
                sent_packets: 1_000,
                lost_packets: 10,
                cwnd: 12_000,
                ..Default::default()
            }),
            bytes_to_cluster: sent,
            bytes_to_workstation: 2 * sent,
            dns: DnsCounts {
                cluster: 3,
                upstream: 0,
                cache_hit: 1,
                nxdomain: 0,
            },
            intercepts: vec![InterceptTop {
                name: "orders".into(),
                workload: "Deployment/orders".into(),
                app_port: 8080,
                filter: "x-dev=ann".into(),
                laptop,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_mounts_operations_are_counted_and_timed() {
        let with_files = |at_ms, n, read| {
            let mut s = sample(at_ms, RouteCounts::default(), 0);
            s.intercepts[0].files = Some(FileCounts {
                ops: counts(n, Duration::from_millis(3)),
                read_bytes: read,
                written_bytes: 0,
                errors: 1,
            });
            s
        };
        let prev = with_files(1_000, 10, 1 << 20);
        let now = with_files(3_000, 50, 9 << 20);
        let f = View::new(Some(&prev), &prev, &now).intercepts[0]
            .files
            .clone()
            .expect("a files view");
        assert_eq!((f.ops, f.ops_per_s), (50, 20.0));
        assert_eq!(f.read_bytes_per_s, f64::from(4u32 << 20));
        assert_eq!((f.read_bytes, f.errors), (9 << 20, 1));
        assert!(f.p50_ms.is_some_and(|ms| ms >= 3.0), "{f:?}");
        // No mount, no files view.
        let plain = sample(3_000, RouteCounts::default(), 0);
        assert_eq!(View::new(None, &plain, &plain).intercepts[0].files, None);
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let prev = sample(1_000, counts(10, Duration::from_millis(2)), 1_000);
        let now = sample(3_000, counts(30, Duration::from_millis(2)), 5_000);
        let v = View::new(Some(&prev), &prev, &now);
        assert_eq!(v.interval_s, 2.0);
        assert_eq!(v.throughput.to_cluster_bytes_per_s, 2_000.0);
        assert_eq!(v.throughput.to_workstation_bytes_per_s, 4_000.0);
        let laptop = &v.intercepts[0].laptop;
        assert_eq!((laptop.requests, laptop.requests_per_s), (30, 10.0));
        assert_eq!(laptop.p50_ms, Some(2.5));
        assert_eq!(v.dns.cache_hit_ratio, Some(0.25));
        let carrier = v.carrier.unwrap();
        assert_eq!((carrier.rtt_ms, carrier.loss_percent), (1.5, 1.0));
    }

    #[test]
    fn percentiles_cover_the_window_and_all_time_without_one() {
        let old = sample(0, counts(100, Duration::from_millis(200)), 0);
        let mut recent = old.intercepts[0].laptop.clone();
        recent.add(&counts(10, Duration::from_millis(2)));
        let now = sample(10_000, recent, 0);
        let windowed = View::new(Some(&old), &old, &now);
        assert_eq!(windowed.intercepts[0].laptop.p99_ms, Some(2.5));
        let all = View::new(None, &old, &now);
        assert_eq!(all.intercepts[0].laptop.p50_ms, Some(250.0));
        assert_eq!(all.latency_window_s, 10.0);
    }

    #[test]
    fn nothing_moves_in_a_zero_interval_and_counters_that_reset_are_not_negative() {
        let a = sample(1_000, counts(5, Duration::ZERO), 100);
        let v = View::new(None, &a, &a);
        assert_eq!(v.throughput.to_cluster_bytes_per_s, 0.0);
        let restarted = sample(2_000, RouteCounts::default(), 0);
        let v = View::new(None, &a, &restarted);
        assert_eq!(v.intercepts[0].laptop.requests_per_s, 0.0);
        assert_eq!(v.throughput.to_cluster_bytes_per_s, 0.0);
        assert_eq!(v.intercepts[0].laptop.p50_ms, None);
    }

    #[test]
    fn a_mirror_shows_its_copies_per_second_and_drops() {
        let mirror = |at_ms, sent, dropped| {
            let mut s = sample(at_ms, RouteCounts::default(), 0);
            s.intercepts[0].mode = InterceptMode::Mirror;
            s.intercepts[0].mirrored = tether_proto::stats::MirrorCounts { sent, dropped };
            s
        };
        let prev = mirror(1_000, 10, 0);
        let now = mirror(3_000, 30, 4);
        let v = View::new(None, &prev, &now);
        let m = v.intercepts[0].mirror.as_ref().expect("a mirror");
        assert_eq!((m.sent, m.sent_per_s, m.dropped), (30, 10.0, 4));
        // An intercept that takes has none.
        let take = View::new(None, &prev, &sample(3_000, RouteCounts::default(), 0));
        assert_eq!(take.intercepts[0].mirror, None);
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(2.5)), "2.50 ms");
        assert_eq!(latency(Some(250.0)), "250 ms");
        assert_eq!(latency(Some(2_500.0)), "2.5 s");
    }
}
