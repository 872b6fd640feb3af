//! Fixed reports in, the exact text the CLI prints out.

use std::path::Path;

use tether_daemon::control::{
    ActiveIntercept, InterceptReport, ListReport, OtherPort, StatusReport, WorkloadRow,
};
use tether_kube::workload::env::{self, EnvSyntax};
use tether_proto::stats::MirrorCounts;
use tether_proto::{InterceptFilter, InterceptInfo, InterceptMode};

use super::*;

fn intercept(headers: &[&str], path_prefix: Option<&str>) -> ActiveIntercept {
    ActiveIntercept {
        name: "orders".into(),
        id: 7,
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        service_port: "orders:http".into(),
        container: "app".into(),
        app_port: 8080,
        local: "127.0.0.1:3000".parse().unwrap(),
        headers: headers.iter().map(|h| h.to_string()).collect(),
        path_prefix: path_prefix.map(str::to_owned),
        service_addr: None,
        endpoints: 2,
        to_pod: Vec::new(),
        to_pod_target: None,
        mode: InterceptMode::Take,
        copies: None,
        mount: None,
        other_ports: Vec::new(),
        part_of: None,
    }
}

fn mirror(headers: &[&str], copies: Option<MirrorCounts>) -> ActiveIntercept {
    ActiveIntercept {
        name: "copy".into(),
        mode: InterceptMode::Mirror,
        copies,
        ..intercept(headers, None)
    }
}

fn status_report(intercepts: Vec<ActiveIntercept>) -> StatusReport {
    StatusReport {
        connected: true,
        namespace: "shop".into(),
        context: "kind-tether".into(),
        cluster_server: "https://10.0.0.1:6443".into(),
        transport: "udp".into(),
        manager: "10.0.0.9:30443".into(),
        session_id: "s-1234".into(),
        cluster_domain: "cluster.local".into(),
        subnets: vec!["10.96.0.0/16".into(), "10.244.0.0/16".into()],
        tun_device: "tether0".into(),
        dns_server: "198.18.0.2".into(),
        reconnects: 3,
        daemon_pid: 4242,
        privileged_pid: 4241,
        intercepts,
        ..Default::default()
    }
}

fn intercept_report(installed_agent: bool) -> InterceptReport {
    InterceptReport {
        intercept: intercept(&[], None),
        installed_agent,
        pods: vec!["orders-1".into(), "orders-2".into()],
        env: None,
        mount_error: None,
    }
}

fn row(name: &str, agent_installed: bool, intercepts: Vec<InterceptInfo>) -> WorkloadRow {
    WorkloadRow {
        agent_image: None,
        kind: "Deployment".into(),
        name: name.into(),
        replicas: 3,
        ready: 2,
        agent_installed,
        agent_pods: if agent_installed {
            vec!["p-1".into()]
        } else {
            Vec::new()
        },
        intercepts,
    }
}

fn info(headers: &[&str], path_prefix: Option<&str>) -> InterceptInfo {
    InterceptInfo {
        id: 1,
        name: "orders".into(),
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        port: 8080,
        service_port: "http".into(),
        owner: "alice@laptop".into(),
        session_id: "s-1".into(),
        filter: InterceptFilter {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            path_prefix: path_prefix.map(str::to_owned),
        },
        mode: InterceptMode::Take,
    }
}

#[test]
fn status_without_a_daemon_says_not_connected() {
    assert_eq!(status(&StatusReport::default()), "Not connected.\n");
}

#[test]
fn status_text_lists_the_session_and_no_intercepts() {
    let mut report = status_report(Vec::new());
    report.connected = false;
    assert_eq!(
        status(&report),
        "Status:      reconnecting\n\
         Cluster:     https://10.0.0.1:6443 (context kind-tether)\n\
         Namespace:   shop\n\
         Transport:   udp via 10.0.0.9:30443\n\
         Session:     s-1234\n\
         DNS:         198.18.0.2 (cluster domain cluster.local)\n\
         Routes:      10.96.0.0/16, 10.244.0.0/16 via tether0\n\
         Reconnects:  3\n\
         Daemon pid:  4242\n\
         Intercepts:  none\n"
    );
}

#[test]
fn status_text_shows_the_carriers_rtt_and_loss() {
    let mut report = status_report(Vec::new());
    report.carrier = Some(tether_daemon::control::CarrierStats {
        rtt_us: 1_460,
        sent_packets: 2_000,
        lost_packets: 3,
        cwnd: 12_000,
        local: Some([10, 250, 0, 6].into()),
        remote: Some(([192, 168, 1, 20], 31_443).into()),
    });
    let text = status(&report);
    assert!(
        text.contains(
            "Session:     s-1234\n\
             Carrier:     RTT 1.5 ms, 0.15 % lost (3 of 2000 packets)\n\
             Path:        10.250.0.6 → 192.168.1.20:31443\n\
             DNS:"
        ),
        "{text}"
    );
}

#[test]
fn status_text_says_where_an_intercepts_volumes_are() {
    let mut mounted = intercept(&[], None);
    mounted.mount = Some(tether_daemon::control::MountInfo {
        dir: "/tmp/tether-mount-Ab12".into(),
        pod: "orders-1".into(),
        volumes: vec!["/etc/config".into()],
    });
    let text = status(&status_report(vec![mounted]));
    assert!(
        text.ends_with("\n    volumes of pod orders-1 under /tmp/tether-mount-Ab12\n"),
        "{text}"
    );
}

#[test]
fn status_text_lists_each_intercept_indented() {
    let report = status_report(vec![intercept(&[], None), intercept(&["x-dev=me"], None)]);
    let text = status(&report);
    assert!(text.starts_with("Status:      connected\n"), "{text}");
    assert!(
        text.ends_with(
            "Daemon pid:  4242\n\
             Intercepts:\n  \
             orders: Deployment/orders orders:http → 127.0.0.1:3000 (all traffic)\n  \
             orders: Deployment/orders orders:http → 127.0.0.1:3000 (header x-dev=me)\n"
        ),
        "{text}"
    );
}

#[test]
fn status_text_shows_a_mirrors_copies() {
    let counted = MirrorCounts {
        sent: 12,
        dropped: 3,
    };
    let report = status_report(vec![
        intercept(&["x-dev=me"], None),
        mirror(&[], Some(counted)),
        mirror(&["x-dev=you"], None),
    ]);
    let text = status(&report);
    assert!(
        text.ends_with(
            "Intercepts:\n  \
             orders: Deployment/orders orders:http → 127.0.0.1:3000 (header x-dev=me)\n  \
             copy: Deployment/orders orders:http → 127.0.0.1:3000 (mirror of all traffic)\n    \
             copies: 12 sent, 3 dropped\n  \
             copy: Deployment/orders orders:http → 127.0.0.1:3000 (mirror of header x-dev=you)\n    \
             copies: none reported yet\n"
        ),
        "{text}"
    );
    // JSON carries the mode and the counts (a take has no counts).
    let json = report_json(&report);
    assert_eq!(json["intercepts"][0]["mode"], "take");
    assert!(json["intercepts"][0].get("copies").is_none());
    assert_eq!(json["intercepts"][1]["mode"], "mirror");
    assert_eq!(json["intercepts"][1]["copies"]["sent"], 12);
    assert_eq!(json["intercepts"][1]["copies"]["dropped"], 3);
}

fn report_json(report: &StatusReport) -> serde_json::Value {
    let text = super::report(Output::Json, report, |_| unreachable!()).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_mirror_says_the_app_still_answers() {
    let report = InterceptReport {
        intercept: mirror(&[], None),
        installed_agent: false,
        pods: vec!["orders-1".into()],
        env: None,
        mount_error: None,
    };
    assert_eq!(
        intercepted(&report, None),
        "Mirroring copy: Deployment/orders orders:http → 127.0.0.1:3000 (mirror of all traffic)\n  \
         pods: orders-1\n  \
         the app still answers every caller; a copy of each request goes to 127.0.0.1:3000 and \
         its answer is discarded\n"
    );
}

#[test]
fn a_replace_lists_the_containers_other_ports() {
    let mut report = intercept_report(false);
    report.intercept.mode = InterceptMode::Replace;
    report.intercept.container = "app".into();
    report.intercept.other_ports = vec![
        OtherPort {
            service_port: "orders:admin".into(),
            app_port: 9090,
            intercept: Some("orders-9090".into()),
            local: Some(19090),
            why: None,
        },
        OtherPort {
            service_port: "orders:metrics".into(),
            app_port: 80,
            intercept: None,
            local: None,
            why: None,
        },
    ];
    let text = intercepted(&report, None);
    assert!(
        text.contains(
            "  orders:admin (container port 9090) goes to 127.0.0.1:19090 too (intercept \
             orders-9090, ending with orders)\n  \
             orders:metrics (container port 80) is not taken (nothing of the app answers it \
             now): `--also-port 80` or `--also-port LOCAL:80` takes it here\n"
        ),
        "{text}"
    );
}

#[test]
fn json_is_pretty_with_one_final_newline() {
    let text = report(Output::Json, &status_report(Vec::new()), |_| unreachable!()).unwrap();
    assert!(text.starts_with("{\n  \"connected\": true,\n"), "{text}");
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text}");
    let back: StatusReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, status_report(Vec::new()));
}

#[test]
fn yaml_is_the_report_as_yaml() {
    let text = report(Output::Yaml, &ListReport::default(), |_| unreachable!()).unwrap();
    assert_eq!(text, "namespace: ''\nworkloads: []\n");
}

#[test]
fn text_output_is_the_text_renderer() {
    let text = report(Output::Text, &7, |n| format!("{n} things\n")).unwrap();
    assert_eq!(text, "7 things\n");
}

#[test]
fn describe_names_the_filter() {
    assert_eq!(
        describe(&intercept(&["x-dev=me", "x-env=test"], Some("/api"))),
        "orders: Deployment/orders orders:http → 127.0.0.1:3000 \
         (header x-dev=me, header x-env=test, path /api)"
    );
    assert_eq!(filter_text(&[], Some("/v2")), "path /v2");
    assert_eq!(filter_text(&[], None), "all traffic");
}

#[test]
fn intercepted_text_with_and_without_an_env_file() {
    let report = intercept_report(false);
    assert_eq!(
        intercepted(&report, None),
        "Intercepting orders: Deployment/orders orders:http → 127.0.0.1:3000 (all traffic)\n  \
         pods: orders-1, orders-2\n"
    );
    assert!(intercepted(&report, Some(Path::new("/tmp/orders.env")))
        .ends_with("  pods: orders-1, orders-2\n  environment: /tmp/orders.env\n"));
}

#[test]
fn intercepted_text_names_the_to_pod_ports() {
    let mut report = intercept_report(false);
    report.intercept.to_pod = vec![9901, 6379];
    report.intercept.to_pod_target = Some("orders-1 (10.244.0.7)".into());
    assert!(
        intercepted(&report, None).ends_with(
            "  pods: orders-1, orders-2\n  \
             127.0.0.1:9901 reaches port 9901 of pod orders-1 (10.244.0.7)\n  \
             127.0.0.1:6379 reaches port 6379 of pod orders-1 (10.244.0.7)\n"
        ),
        "{}",
        intercepted(&report, None)
    );
}

#[test]
fn intercepted_text_says_where_the_volumes_are() {
    let mut report = intercept_report(false);
    report.intercept.mount = Some(tether_daemon::control::MountInfo {
        dir: "/tmp/tether-mount-Ab12".into(),
        pod: "orders-1".into(),
        volumes: vec![
            "/etc/config".into(),
            "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        ],
    });
    assert!(
        intercepted(&report, None).ends_with(
            "  pods: orders-1, orders-2\n  \
             volumes of pod orders-1 under /tmp/tether-mount-Ab12 (TETHER_ROOT): \
             /tmp/tether-mount-Ab12/etc/config, \
             /tmp/tether-mount-Ab12/var/run/secrets/kubernetes.io/serviceaccount\n"
        ),
        "{}",
        intercepted(&report, None)
    );
    assert_eq!(
        mount_failed("no FUSE"),
        "Warning: the container's volumes are not mounted: no FUSE\n"
    );
}

#[test]
fn installed_agent_is_said_only_when_it_was() {
    assert_eq!(
        installed_agent(&intercept_report(true)),
        "Installed the traffic agent in Deployment/orders.\n"
    );
    assert_eq!(installed_agent(&intercept_report(false)), "");
}

#[test]
fn an_intercept_ends_three_ways() {
    assert_eq!(
        intercept_ended("orders", &Ended::Left),
        "Intercept orders ended.\n"
    );
    assert_eq!(
        intercept_ended("orders", &Ended::Refused("no such intercept".into())),
        "warning: leaving orders: no such intercept\n"
    );
    assert_eq!(
        intercept_ended("orders", &Ended::NoDaemon),
        "warning: the daemon is gone; the intercept ends with its session\n"
    );
}

#[test]
fn env_skipped_names_the_variable_and_the_syntax() {
    let rendered = env::render(&[("BAD-NAME".into(), "v".into())], EnvSyntax::Sh);
    let [skipped] = rendered.skipped.as_slice() else {
        panic!("{rendered:?}")
    };
    assert_eq!(
        env_skipped(skipped, EnvSyntax::Sh),
        "warning: `BAD-NAME`: not a valid shell variable name (use --env-syntax json) \
         cannot be written in Sh syntax; left out\n"
    );
}

#[test]
fn leave_text() {
    assert_eq!(
        left(&intercept(&[], Some("/api"))),
        "Ended orders: Deployment/orders orders:http → 127.0.0.1:3000 (path /api)\n"
    );
}

#[test]
fn list_of_nothing_names_the_namespace() {
    let report = ListReport {
        namespace: "shop".into(),
        workloads: Vec::new(),
    };
    assert_eq!(list(&report), "No workloads in namespace shop.\n");
}

#[test]
fn list_shows_agents_and_intercepts() {
    let report = ListReport {
        namespace: "shop".into(),
        workloads: vec![
            row(
                "orders",
                true,
                vec![
                    info(&["x-dev=me"], Some("/api")),
                    info(&[], None),
                    InterceptInfo {
                        mode: InterceptMode::Mirror,
                        ..info(&[], None)
                    },
                ],
            ),
            row("cart", false, Vec::new()),
        ],
    };
    assert_eq!(
        list(&report),
        "Deployment/orders  2/3 ready  agent installed (1 of 2 pods linked)\n  \
         intercept orders on port http by alice@laptop: header x-dev=me, path /api\n  \
         intercept orders on port http by alice@laptop: all traffic\n  \
         mirror orders on port http by alice@laptop: all traffic\n\
         Deployment/cart  2/3 ready  no agent\n"
    );
}

#[test]
fn uninstall_text() {
    assert_eq!(
        uninstalled("shop", &[]),
        "No traffic agent to remove in namespace shop.\n"
    );
    assert_eq!(
        uninstalled("shop", &["Deployment/a".into(), "StatefulSet/b".into()]),
        "Removed the traffic agent from Deployment/a; it is as it was before.\n\
         Removed the traffic agent from StatefulSet/b; it is as it was before.\n"
    );
    let json = report(
        Output::Json,
        &vec!["Deployment/a".to_owned()],
        |_| unreachable!(),
    );
    assert_eq!(json.unwrap(), "[\n  \"Deployment/a\"\n]\n");
}

#[test]
fn connected_and_quit_lines() {
    assert_eq!(
        connected(&status_report(Vec::new())),
        "Connected to https://10.0.0.1:6443 (context kind-tether) over udp; namespace shop.\n"
    );
    assert_eq!(quit(Quit::Disconnected), "Disconnected.\n");
    assert_eq!(quit(Quit::NotConnected), "Not connected.\n");
    assert_eq!(
        quit(Quit::Repaired {
            resolver: true,
            mounts: 0,
            socket: false
        }),
        "Not connected; restored the resolver configuration a crashed daemon left.\n"
    );
    assert_eq!(
        quit(Quit::Repaired {
            resolver: true,
            mounts: 0,
            socket: true
        }),
        "Not connected; restored the resolver configuration and removed the dead control \
         socket a crashed daemon left.\n"
    );
    assert_eq!(
        quit(Quit::Repaired {
            resolver: false,
            mounts: 2,
            socket: true
        }),
        "Not connected; unmounted the 2 FUSE mounts and removed the dead control socket a \
         crashed daemon left.\n"
    );
}

#[test]
fn version_lines() {
    assert_eq!(version("1.2.3", 4), "tether 1.2.3\nprotocol 4\n");
    let mut status = status_report(Vec::new());
    assert_eq!(
        daemon_version(&status, "1.2.3"),
        "daemon pid 4242 (connected to https://10.0.0.1:6443)\n"
    );
    status.daemon_version = "1.2.3".into();
    status.manager_version = "1.1.0".into();
    assert_eq!(
        daemon_version(&status, "1.2.3"),
        "daemon pid 4242 (connected to https://10.0.0.1:6443)\n\
         daemon 1.2.3\n\
         traffic manager 1.1.0\n\
         warning: the traffic manager runs tether 1.1.0 and this is tether 1.2.3: \
         `tether install` installs this version's\n"
    );
}

#[test]
fn progress_and_one_line_messages() {
    assert_eq!(
        progress("dialing the traffic manager"),
        "  dialing the traffic manager…\n"
    );
    assert_eq!(
        installing("ghcr.io/x/tether:1", "https://k:6443"),
        "Installing the traffic manager (ghcr.io/x/tether:1) in https://k:6443…\n"
    );
    assert_eq!(
        installed("tether"),
        "Traffic manager installed in namespace tether.\n"
    );
    assert_eq!(manager_removed(), "Traffic manager removed.\n");
    assert_eq!(
        not_gathered("pod logs: forbidden"),
        "  not gathered: pod logs: forbidden\n"
    );
    assert_eq!(
        gathered(Path::new("t.tar.gz"), 12),
        "Wrote t.tar.gz (12 files; secrets redacted). Attach it to your bug report.\n"
    );
    assert_eq!(
        man_written(Path::new("/tmp/man")),
        "Man pages written to /tmp/man\n"
    );
}

fn dry_run(format: ManifestFormat) -> String {
    let mut all = tether_kube::install::manifests(crate::args::DEFAULT_IMAGE, "tether").unwrap();
    tether_kube::install::with_image_pull_secret(&mut all, "regcred");
    manifests(&all, format).unwrap()
}

#[test]
fn dry_run_yaml_is_one_document_per_object() {
    let count = tether_kube::install::manifests(crate::args::DEFAULT_IMAGE, "tether")
        .unwrap()
        .len();
    let text = dry_run(ManifestFormat::Yaml);
    assert!(text.starts_with("---\n"), "{text}");
    assert_eq!(text.matches("---\n").count(), count);
    assert!(text.contains("imagePullSecrets:\n"), "{text}");
    assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
}

#[test]
fn dry_run_json_is_a_v1_list() {
    let text = dry_run(ManifestFormat::Json);
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    assert!(list["items"]
        .as_array()
        .is_some_and(|items| !items.is_empty()));
    assert!(text.starts_with("{\n  \"apiVersion\": \"v1\",\n"), "{text}");
    assert!(text.ends_with("}\n"), "{text}");
}

#[test]
fn agent_versions_warn_on_skew() {
    let agent = |name: &str, image: &str| {
        let mut r = row(name, true, vec![]);
        r.agent_image = Some(image.into());
        r
    };
    let list = ListReport {
        namespace: "shop".into(),
        workloads: vec![
            agent("orders", "registry.example.com:5000/tether-agent:1.2.3"),
            agent("billing", "registry.example.com:5000/tether-agent:v1.1.0"),
            agent("db", "registry.example.com:5000/tether-agent"),
            agent("local", "tether.local/tether-agent:2fdfde58b0d9"),
            row("web", false, vec![]),
        ],
    };
    let text = agent_versions(&list, "1.2.3");
    assert_eq!(
        text,
        "agent deployment/orders in shop: registry.example.com:5000/tether-agent:1.2.3\n\
         agent deployment/billing in shop: registry.example.com:5000/tether-agent:v1.1.0\n\
         warning: the agent of deployment/billing runs tether v1.1.0 and this is tether 1.2.3: \
         `tether uninstall deployment/billing -n shop` removes it; the next intercept injects \
         the traffic manager's agent\n\
         agent deployment/db in shop: registry.example.com:5000/tether-agent\n\
         agent deployment/local in shop: tether.local/tether-agent:2fdfde58b0d9\n"
    );
}

#[test]
fn another_namespace_is_refused_with_the_way_there() {
    assert_eq!(
        other_namespace("default", "shop"),
        "connected to namespace default, not shop: intercepts are made and listed in the \
         connected namespace; to work in shop, `tether quit` then `tether connect -n shop`"
    );
}
