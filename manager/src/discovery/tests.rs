use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use serde_json::json;

use super::*;
use crate::view::{key, NodeInfo, PodInfo, Protocol, ServiceAddress};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn parses_the_service_range_from_real_rejections() {
    // Kubernetes 1.20 (our local cluster's version), through the API server's Status message.
    let v1_20 = "Service \"tether-cidr-probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: \
                 failed to allocated ip:1.1.1.1 with error:provided IP is not in the valid range. \
                 The range of valid IPs is 10.96.0.0/16";
    assert_eq!(parse_service_cidrs(v1_20), nets(&["10.96.0.0/16"]));
    // Kubernetes 1.2x–1.3x wording.
    let newer = "Service \"tether-cidr-probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: \
                 failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. \
                 The range of valid IPs is 10.32.0.0/12";
    assert_eq!(parse_service_cidrs(newer), nets(&["10.32.0.0/12"]));
    let indexed = "Service \"x\" is invalid: spec.clusterIPs[0]: Invalid value: \"2001:db8::1\": failed to \
                   allocate IP 2001:db8::1: the provided IP (2001:db8::1) is not in the valid range. The range \
                   of valid IPs is fd00:10:96::/112";
    assert_eq!(parse_service_cidrs(indexed), nets(&["fd00:10:96::/112"]));
}

#[test]
fn rejections_naming_no_range_give_nothing() {
    for message in [
        "Service \"tether-cidr-probe\" is invalid: spec.clusterIPs[0]: Invalid value: \"2001:db8::1\": \
         expected an IPv4 value as indicated by `ipFamilies[0]`",
        "services \"tether-cidr-probe\" is forbidden: User \"x\" cannot create resource \"services\"",
        "The range of valid IPs is not/a-cidr",
        "",
    ] {
        assert_eq!(parse_service_cidrs(message), [], "{message}");
    }
    // A sentence-final dot is not part of the range; a host address is truncated to its network.
    assert_eq!(
        parse_service_cidrs("The range of valid IPs is 10.96.0.1/12."),
        nets(&["10.96.0.0/12"])
    );
}

#[test]
fn pod_ranges_from_nodes() {
    let nodes = nets(&["10.244.0.0/24", "10.244.1.0/24", "fd00:244::/64"]);
    let pods = ips(&["10.244.0.7", "10.244.1.3"]);
    assert_eq!(
        derive_pod_subnets(&nodes, &pods),
        nets(&["10.244.0.0/23", "fd00:244::/64"])
    );
}

#[test]
fn pod_ranges_from_pod_ips_when_nodes_have_none() {
    let pods = ips(&["10.1.4.9", "10.1.200.3", "10.2.0.1", "fd00:1:2:3::9"]);
    assert_eq!(
        derive_pod_subnets(&[], &pods),
        nets(&["10.1.0.0/16", "10.2.0.0/16", "fd00:1:2:3::/64"])
    );
    assert_eq!(derive_pod_subnets(&[], &[]), []);
    // A CNI that ignores the node ranges: pods outside them still get routed.
    let nodes = nets(&["10.244.0.0/24"]);
    let pods = ips(&["10.244.0.4", "192.168.7.7"]);
    assert_eq!(
        derive_pod_subnets(&nodes, &pods),
        nets(&["10.244.0.0/24", "192.168.0.0/16"])
    );
}

#[test]
fn pod_subnets_skip_host_network_pods() {
    let mut view = ClusterView::default();
    view.nodes.insert(
        "n1".into(),
        NodeInfo {
            pod_cidrs: nets(&["10.244.0.0/24"]),
        },
    );
    view.pods.insert(
        key("kube-system", "proxy"),
        PodInfo {
            ips: ips(&["172.16.0.5"]),
            host_network: true,
        },
    );
    view.pods.insert(
        key("default", "web"),
        PodInfo {
            ips: ips(&["10.244.0.9"]),
            host_network: false,
        },
    );
    assert_eq!(pod_subnets(&view), nets(&["10.244.0.0/24"]));
}

#[test]
fn cluster_domain_precedence() {
    let conf = ResolvConf::parse("search tether.svc.corp.example svc.corp.example corp.example\n");
    assert_eq!(
        cluster_domain(Some("Flag.Example."), Some(&conf)),
        "flag.example"
    );
    assert_eq!(cluster_domain(None, Some(&conf)), "corp.example");
    assert_eq!(
        cluster_domain(Some(""), Some(&ResolvConf::default())),
        "cluster.local"
    );
    assert_eq!(cluster_domain(None, None), "cluster.local");
}

#[test]
fn projects_services() {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::a"],
                 "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
    .unwrap();
    let info = service_info(&service);
    assert_eq!(
        info.address,
        ServiceAddress::ClusterIp(ips(&["10.96.0.10", "fd00::a"]))
    );
    assert_eq!(info.ports.len(), 2);
    assert_eq!(
        (
            info.ports[1].name.as_str(),
            info.ports[1].protocol,
            info.ports[1].port
        ),
        ("dns", Protocol::Udp, 53)
    );

    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
    }))
    .unwrap();
    let info = service_info(&headless);
    assert_eq!(info.address, ServiceAddress::Headless);
    assert!(info.publish_not_ready);

    let external: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.org"}
    }))
    .unwrap();
    assert_eq!(
        service_info(&external).address,
        ServiceAddress::ExternalName("example.org".into())
    );
}

#[test]
fn projects_endpoints() {
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "subsets": [{
            "addresses": [{"ip": "10.244.0.5", "hostname": "db-0"}],
            "notReadyAddresses": [{"ip": "10.244.0.6"}],
            "ports": [{"name": "pg", "port": 5432}]
        }]
    }))
    .unwrap();
    let addresses = endpoint_addresses(&endpoints);
    assert_eq!(addresses.len(), 2);
    assert_eq!(addresses[0].hostname.as_deref(), Some("db-0"));
    assert!(addresses[0].ready && !addresses[1].ready);
    assert_eq!(addresses[1].ports[0].port, 5432);
}

#[test]
fn projects_pods_and_nodes() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [], "hostNetwork": false},
        "status": {"podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}, {"ip": "fd00::9"}]}
    }))
    .unwrap();
    assert_eq!(
        pod_info(&pod),
        PodInfo {
            ips: ips(&["10.244.0.9", "fd00::9"]),
            host_network: false
        }
    );
    // Kubernetes before 1.16 only sets podIP.
    let old: Pod = serde_json::from_value(
        json!({"metadata": {"name": "old"}, "status": {"podIP": "10.1.2.3"}}),
    )
    .unwrap();
    assert_eq!(pod_info(&old).ips, ips(&["10.1.2.3"]));

    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.0.0/24"}}),
    )
    .unwrap();
    assert_eq!(node_info(&node).pod_cidrs, nets(&["10.244.0.0/24"]));
    let dual: Node = serde_json::from_value(json!({
        "metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00::/64"]}
    }))
    .unwrap();
    assert_eq!(
        node_info(&dual).pod_cidrs,
        nets(&["10.244.0.0/24", "fd00::/64"])
    );
}

#[tokio::test]
async fn subnet_changes_are_published_once() {
    let view = crate::view::SharedView::default();
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let service = nets(&["10.96.0.0/16"]);
    let initial = tether_proto::Subnets {
        service: service.clone(),
        pod: vec![],
    };
    let (subnets_tx, mut subnets_rx) = tokio::sync::watch::channel(initial);
    let task = tokio::spawn(publish_subnets(
        view.clone(),
        service,
        changed.clone(),
        subnets_tx,
    ));

    // A node joins with a new pod range.
    view.update(|v| {
        v.nodes.insert(
            "n2".into(),
            NodeInfo {
                pod_cidrs: nets(&["10.244.1.0/24"]),
            },
        );
    });
    changed.notify_one();
    let wait = std::time::Duration::from_secs(5);
    tokio::time::timeout(wait, subnets_rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subnets_rx.borrow_and_update().pod, nets(&["10.244.1.0/24"]));

    // A change that leaves the ranges as they were is not published.
    view.update(|v| {
        v.pods.insert(
            key("default", "web"),
            PodInfo {
                ips: ips(&["10.244.1.7"]),
                host_network: false,
            },
        );
    });
    changed.notify_one();
    tokio::time::sleep(SUBNET_SETTLE + std::time::Duration::from_millis(300)).await;
    assert!(!subnets_rx.has_changed().unwrap());
    task.abort();
}
