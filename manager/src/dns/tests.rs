use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::view::{key, EndpointAddress, PodInfo, PortInfo, Protocol, ServiceAddress, ServiceInfo};

/// Header handling, EDNS, truncation, malformed input.
mod wire;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(name: &str, protocol: Protocol, port: u16) -> PortInfo {
    PortInfo {
        name: name.to_owned(),
        protocol,
        port,
    }
}

fn endpoint(addr: &str, hostname: Option<&str>, ready: bool) -> EndpointAddress {
    let ports = vec![port("pg", Protocol::Tcp, 5432)];
    EndpointAddress {
        ip: ip(addr),
        hostname: hostname.map(str::to_owned),
        ready,
        ports,
    }
}

fn service(address: ServiceAddress, ports: Vec<PortInfo>) -> ServiceInfo {
    ServiceInfo {
        address,
        ports,
        publish_not_ready: false,
    }
}

/// `default` has a ClusterIP Service `hello`, a dual-stack `dual`, a headless `db` backed by a
/// StatefulSet (db-2 not ready), an ExternalName `ext`; `other` has its own `hello`.
fn view() -> ClusterView {
    let mut view = ClusterView::default();
    view.namespaces
        .extend(["default", "other", "tether"].map(String::from));
    let http = vec![
        port("http", Protocol::Tcp, 80),
        port("dns", Protocol::Udp, 53),
    ];
    let s = &mut view.services;
    s.insert(
        key("default", "hello"),
        service(ServiceAddress::ClusterIp(vec![ip("10.96.0.10")]), http),
    );
    let dual = ServiceAddress::ClusterIp(vec![ip("10.96.0.11"), ip("fd00:96::11")]);
    s.insert(key("default", "dual"), service(dual, vec![]));
    s.insert(
        key("default", "db"),
        service(
            ServiceAddress::Headless,
            vec![port("pg", Protocol::Tcp, 5432)],
        ),
    );
    s.insert(
        key("default", "ext"),
        service(ServiceAddress::ExternalName("example.org".into()), vec![]),
    );
    s.insert(
        key("other", "hello"),
        service(ServiceAddress::ClusterIp(vec![ip("10.96.0.20")]), vec![]),
    );
    view.endpoints.insert(
        key("default", "db"),
        vec![
            endpoint("10.244.0.5", Some("db-0"), true),
            endpoint("10.244.0.6", Some("db-1"), true),
            endpoint("10.244.0.7", Some("db-2"), false),
        ],
    );
    let pod = |ips: &[&str], host_network| PodInfo {
        ips: ips.iter().map(|s| ip(s)).collect(),
        host_network,
    };
    view.pods
        .insert(key("default", "db-0"), pod(&["10.244.0.5"], false));
    view.pods.insert(
        key("default", "v6"),
        pod(&["10.244.0.9", "fd00:244::9"], false),
    );
    view
}

/// The manager's answer to a query over UDP (so that truncation shows).
fn answer(query: &[u8], view: &ClusterView, ns: &str) -> Outcome {
    super::answer(query, Transport::Udp, view, ns)
}

fn query_with(name: &str, rtype: RecordType, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut message = Message::new(0xbeef, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    edit(&mut message);
    message.to_vec().unwrap()
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    query_with(name, rtype, |_| {})
}

fn ask_in(view: &ClusterView, ns: &str, name: &str, rtype: RecordType) -> Message {
    match answer(&query(name, rtype), view, ns) {
        Outcome::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("{name} {rtype}: expected an answer, got {other:?}"),
    }
}

fn ask(name: &str, rtype: RecordType) -> Message {
    ask_in(&view(), "default", name, rtype)
}

fn addrs(message: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// Asserts a positive authoritative answer whose records carry the asked name and TTL 5.
fn assert_answered(message: &Message, name: &str, ips: &[&str]) {
    assert_eq!(message.metadata.response_code, ResponseCode::NoError);
    assert!(message.metadata.authoritative);
    assert_eq!(message.metadata.id, 0xbeef);
    assert_eq!(message.metadata.message_type, MessageType::Response);
    assert_eq!(message.queries[0].name().to_ascii(), name);
    assert_eq!(
        addrs(message),
        ips.iter().map(|s| ip(s)).collect::<Vec<_>>()
    );
    for record in &message.answers {
        assert_eq!(
            record.name.to_ascii(),
            name,
            "answer carries the asked name"
        );
        assert_eq!(record.ttl, TTL);
    }
}

fn assert_negative(message: &Message, code: ResponseCode) {
    assert_eq!(message.metadata.response_code, code);
    assert!(message.metadata.authoritative);
    assert!(message.answers.is_empty());
    let soa = message
        .authorities
        .first()
        .expect("negative answers carry the SOA");
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_ascii(), "cluster.local.");
}

#[test]
fn cluster_ip_service() {
    let name = "hello.default.svc.cluster.local.";
    assert_answered(&ask(name, RecordType::A), name, &["10.96.0.10"]);
    // A v4-only Service has no AAAA: NOERROR, no answer.
    assert_negative(&ask(name, RecordType::AAAA), ResponseCode::NoError);
    let name = "dual.default.svc.cluster.local.";
    assert_answered(&ask(name, RecordType::AAAA), name, &["fd00:96::11"]);
    assert_answered(&ask(name, RecordType::A), name, &["10.96.0.11"]);
}

#[test]
fn headless_service_answers_ready_endpoints() {
    let name = "db.default.svc.cluster.local.";
    assert_answered(
        &ask(name, RecordType::A),
        name,
        &["10.244.0.5", "10.244.0.6"],
    );

    let mut view = view();
    view.services
        .get_mut(&key("default", "db"))
        .unwrap()
        .publish_not_ready = true;
    let all = ask_in(&view, "default", name, RecordType::A);
    assert_answered(&all, name, &["10.244.0.5", "10.244.0.6", "10.244.0.7"]);
}

#[test]
fn endpoint_by_hostname_or_dashed_ip() {
    let name = "db-1.db.default.svc.cluster.local.";
    assert_answered(&ask(name, RecordType::A), name, &["10.244.0.6"]);
    // An endpoint without a hostname is named by its IP, dashed; one with a hostname is not.
    let mut view = view();
    view.endpoints
        .get_mut(&key("default", "db"))
        .unwrap()
        .push(endpoint("10.244.0.8", None, true));
    let name = "10-244-0-8.db.default.svc.cluster.local.";
    assert_answered(
        &ask_in(&view, "default", name, RecordType::A),
        name,
        &["10.244.0.8"],
    );
    let name = "10-244-0-5.db.default.svc.cluster.local.";
    assert_negative(
        &ask_in(&view, "default", name, RecordType::A),
        ResponseCode::NXDomain,
    );
    // Not ready, unknown, or not a headless Service: no such name.
    for name in [
        "db-2.db.default.svc.cluster.local.",
        "db-9.db.default.svc.cluster.local.",
        "x.hello.default.svc.cluster.local.",
    ] {
        assert_negative(&ask(name, RecordType::A), ResponseCode::NXDomain);
    }
}

#[test]
fn pod_names() {
    let name = "10-244-0-5.default.pod.cluster.local.";
    assert_answered(&ask(name, RecordType::A), name, &["10.244.0.5"]);
    let name = "fd00-244--9.default.pod.cluster.local.";
    assert_answered(&ask(name, RecordType::AAAA), name, &["fd00:244::9"]);
    // An IP no pod in that namespace has, or not an IP at all.
    for name in [
        "10-244-0-5.other.pod.cluster.local.",
        "10-1-2-3.default.pod.cluster.local.",
        "db-0.default.pod.cluster.local.",
    ] {
        assert_negative(&ask(name, RecordType::A), ResponseCode::NXDomain);
    }
}

fn srvs(message: &Message) -> Vec<(String, u16)> {
    let mut srvs: Vec<_> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.target.to_ascii(), srv.port)),
            _ => None,
        })
        .collect();
    srvs.sort();
    srvs
}

#[test]
fn srv_of_a_cluster_ip_service() {
    let name = "_http._tcp.hello.default.svc.cluster.local.";
    let message = ask(name, RecordType::SRV);
    assert_eq!(message.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        srvs(&message),
        [("hello.default.svc.cluster.local.".to_owned(), 80)]
    );
    assert_eq!(message.answers[0].name.to_ascii(), name);
    let glue: Vec<_> = message
        .additionals
        .iter()
        .map(|r| (r.name.to_ascii(), r.data.clone()))
        .collect();
    assert_eq!(
        glue,
        [(
            "hello.default.svc.cluster.local.".to_owned(),
            RData::A(ip4("10.96.0.10"))
        )]
    );

    let message = ask(
        "_dns._udp.hello.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        srvs(&message),
        [("hello.default.svc.cluster.local.".to_owned(), 53)]
    );
    // Wrong protocol or port name: no such name. Other type on an SRV name: NODATA.
    assert_negative(
        &ask(
            "_http._udp.hello.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(
            "_web._tcp.hello.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(&ask(name, RecordType::A), ResponseCode::NoError);
}

fn ip4(s: &str) -> hickory_proto::rr::rdata::A {
    hickory_proto::rr::rdata::A(s.parse().unwrap())
}

#[test]
fn srv_of_a_headless_service_names_each_endpoint() {
    let message = ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        srvs(&message),
        [
            ("db-0.db.default.svc.cluster.local.".to_owned(), 5432),
            ("db-1.db.default.svc.cluster.local.".to_owned(), 5432),
        ]
    );
    let mut glue: Vec<_> = message
        .additionals
        .iter()
        .map(|r| r.name.to_ascii())
        .collect();
    glue.sort();
    assert_eq!(
        glue,
        [
            "db-0.db.default.svc.cluster.local.",
            "db-1.db.default.svc.cluster.local."
        ]
    );
}

#[test]
fn short_forms_answer_as_if_fully_qualified() {
    for name in ["hello.default.", "hello.default.svc."] {
        assert_answered(&ask(name, RecordType::A), name, &["10.96.0.10"]);
    }
    // A bare name is a Service of the connected namespace.
    assert_answered(
        &ask_in(&view(), "default", "hello.", RecordType::A),
        "hello.",
        &["10.96.0.10"],
    );
    assert_answered(
        &ask_in(&view(), "other", "hello.", RecordType::A),
        "hello.",
        &["10.96.0.20"],
    );
    assert_answered(
        &ask("10-244-0-5.default.pod.", RecordType::A),
        "10-244-0-5.default.pod.",
        &["10.244.0.5"],
    );
    // Namespace exists, Service does not: as under the cluster domain, NXDOMAIN.
    assert_negative(&ask("nope.default.", RecordType::A), ResponseCode::NXDomain);
}

#[test]
fn other_names_are_forwarded() {
    let view = view();
    for name in [
        "example.com.",
        "hello.",
        "hello.nosuchns.",
        "www.example.org.",
    ] {
        let ns = if name == "hello." {
            "tether"
        } else {
            "default"
        };
        let outcome = answer(&query(name, RecordType::A), &view, ns);
        assert!(matches!(outcome, Outcome::Forward(_)), "{name}");
    }
    let chaos = query_with("hello.default.svc.cluster.local.", RecordType::TXT, |m| {
        m.queries[0].set_query_class(DNSClass::CH);
    });
    assert!(matches!(
        answer(&chaos, &view, "default"),
        Outcome::Forward(_)
    ));
}

#[test]
fn unknown_cluster_names_are_nxdomain() {
    for name in [
        "nope.default.svc.cluster.local.",
        "hello.nosuchns.svc.cluster.local.",
        "nosuchns.svc.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
        "foo.cluster.local.",
    ] {
        assert_negative(&ask(name, RecordType::A), ResponseCode::NXDomain);
    }
    // Names that exist without records: the zone, `svc`, a namespace.
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "default.pod.cluster.local.",
    ] {
        assert_negative(&ask(name, RecordType::A), ResponseCode::NoError);
    }
    let soa = ask("cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
}

#[test]
fn names_are_case_insensitive_and_echoed_verbatim() {
    let name = "HeLLo.Default.SVC.Cluster.Local.";
    assert_answered(&ask(name, RecordType::A), name, &["10.96.0.10"]);
}

#[test]
fn custom_cluster_domain() {
    let mut view = view();
    view.cluster_domain = "corp.example".into();
    let name = "hello.default.svc.corp.example.";
    assert_answered(
        &ask_in(&view, "default", name, RecordType::A),
        name,
        &["10.96.0.10"],
    );
    let old = query("hello.default.svc.cluster.local.", RecordType::A);
    assert!(matches!(
        answer(&old, &view, "default"),
        Outcome::Forward(_)
    ));
}

#[test]
fn external_name_is_a_cname() {
    let message = ask("ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(message.answers.len(), 1);
    match &message.answers[0].data {
        RData::CNAME(target) => assert_eq!(target.0.to_ascii(), "example.org."),
        other => panic!("expected a CNAME, got {other:?}"),
    }
}

fn ptr(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(ptr) => Some(ptr.0.to_ascii()),
            _ => None,
        })
        .collect()
}

/// The view with its service ranges known (the pod ranges come from the pods' IPs).
fn ranged_view() -> ClusterView {
    let mut view = view();
    view.service_cidrs = vec![
        "10.96.0.0/16".parse().unwrap(),
        "fd00:96::/108".parse().unwrap(),
    ];
    view
}

#[test]
fn reverse_names_of_cluster_ips_and_pod_ips() {
    let view = ranged_view();
    let ask = |name: &str| ask_in(&view, "default", name, RecordType::PTR);
    let cases = [
        (
            "10.0.96.10.in-addr.arpa.",
            "hello.default.svc.cluster.local.",
        ),
        ("20.0.96.10.in-addr.arpa.", "hello.other.svc.cluster.local."),
        (
            "5.0.244.10.in-addr.arpa.",
            "10-244-0-5.default.pod.cluster.local.",
        ),
    ];
    for (name, target) in cases {
        let message = ask(name);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.metadata.authoritative);
        assert_eq!(ptr(&message), [target], "{name}");
        assert_eq!(message.answers[0].name.to_ascii(), name);
    }
    // IPv6: a dual-stack Service's v6 ClusterIP and a pod's v6 IP.
    let v6 = |ip: &str| tether_dns::reverse::name(ip.parse().unwrap()).to_ascii();
    assert_eq!(
        ptr(&ask(&v6("fd00:96::11"))),
        ["dual.default.svc.cluster.local."]
    );
    assert_eq!(
        ptr(&ask(&v6("fd00:244::9"))),
        ["fd00-244--9.default.pod.cluster.local."]
    );
}

#[test]
fn reverse_names_in_the_cluster_ranges_are_ours_and_others_are_not() {
    let view = ranged_view();
    // Unknown addresses in the ranges: NXDOMAIN, with the reverse zone's SOA.
    for (name, zone) in [
        ("99.0.96.10.in-addr.arpa.", "96.10.in-addr.arpa."),
        ("7.7.244.10.in-addr.arpa.", "244.10.in-addr.arpa."),
    ] {
        let message = ask_in(&view, "default", name, RecordType::PTR);
        assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(message.authorities[0].name.to_ascii(), zone);
    }
    // A known address asked for another type: NODATA.
    let message = ask_in(&view, "default", "10.0.96.10.in-addr.arpa.", RecordType::A);
    assert_eq!(message.metadata.response_code, ResponseCode::NoError);
    assert!(message.answers.is_empty());
    // Outside the cluster's ranges, or a partial zone name: forwarded.
    for name in ["1.2.0.192.in-addr.arpa.", "96.10.in-addr.arpa."] {
        let outcome = answer(&query(name, RecordType::PTR), &view, "default");
        assert!(matches!(outcome, Outcome::Forward(_)), "{name}");
    }
}
