//! Name → records, against a [`ClusterView`]. Pure: no wire format beyond hickory's types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use tether_dns::reverse;

use super::TTL;
use crate::view::{ClusterView, EndpointAddress, ServiceAddress, ServiceInfo};

/// What a name resolves to.
#[derive(Debug)]
pub(super) enum Lookup {
    /// Not a cluster name: the upstream resolver's business.
    NotCluster,
    /// A cluster name that does not exist.
    NxDomain,
    /// The name exists; `answers` may be empty (no records of the asked type).
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
}

impl Lookup {
    fn no_data() -> Lookup {
        Lookup::Found {
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn answers(answers: Vec<Record>) -> Lookup {
        Lookup::Found {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// Resolves `qname`/`qtype` for a client working in `connected`.
pub(super) fn lookup(
    qname: &Name,
    qtype: RecordType,
    view: &ClusterView,
    connected: &str,
) -> Lookup {
    if let Some(ip) = reverse::parse(&qname.to_ascii()) {
        return reverse_lookup(ip, qtype, view);
    }
    let labels: Vec<String> = qname
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let Some(rest) = cluster_relative(&labels, view, connected) else {
        return Lookup::NotCluster;
    };
    let domain = view.cluster_domain.trim_matches('.');
    let q = Query {
        name: qname,
        qtype,
        view,
        domain,
    };
    match rest.as_slice() {
        [] if qtype == RecordType::SOA => Lookup::answers(vec![soa_record(qname.clone(), domain)]),
        [] | ["svc" | "pod"] => Lookup::no_data(),
        [ns, "svc" | "pod"] if view.namespaces.contains(*ns) => Lookup::no_data(),
        [svc, ns, "svc"] => q.service(ns, svc),
        [host, svc, ns, "svc"] => q.endpoint(ns, svc, host),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            q.srv(ns, svc, &port[1..], &proto[1..])
        }
        [ip, ns, "pod"] => q.pod(ns, ip),
        _ => Lookup::NxDomain,
    }
}

/// The SOA record of the cluster domain, with owner `name` (the apex, as the client spelled it
/// when it asked for the SOA; the zone's apex in the authority section of a negative answer).
fn soa_record(name: Name, domain: &str) -> Record {
    let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
    let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
    let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    Record::from_rdata(name, TTL, RData::SOA(soa))
}

/// The SOA for a negative answer about `qname`: the cluster domain's, or for a reverse name
/// that of the reverse zone of the cluster range it falls in.
pub(super) fn negative_soa(qname: &Name, view: &ClusterView) -> Record {
    let domain = view.cluster_domain.trim_matches('.');
    let zone = reverse::parse(&qname.to_ascii())
        .and_then(|ip| {
            cluster_ranges(view)
                .into_iter()
                .find(|net| net.contains(&ip))
        })
        .map_or_else(|| domain.to_owned(), reverse::zone);
    soa_record(fqdn(&zone).unwrap_or_else(Name::root), domain)
}

/// The service ranges and the pod ranges: where every address has a reverse name here.
fn cluster_ranges(view: &ClusterView) -> Vec<IpNet> {
    let mut ranges = view.service_cidrs.clone();
    ranges.extend(crate::discovery::pod_subnets(view));
    ranges
}

/// `d.c.b.a.in-addr.arpa` / `….ip6.arpa` of `ip`: the Service whose ClusterIP it is, else the
/// pod that has it (`a-b-c-d.ns.pod.D`, as a pod's own name), else NXDOMAIN if the cluster's
/// ranges hold it; addresses outside them are not ours.
fn reverse_lookup(ip: IpAddr, qtype: RecordType, view: &ClusterView) -> Lookup {
    let domain = view.cluster_domain.trim_matches('.');
    let service = view.services.iter().find(|(_, service)| {
        matches!(&service.address, ServiceAddress::ClusterIp(ips) if ips.contains(&ip))
    });
    let target = match service {
        Some(((ns, name), _)) => format!("{name}.{ns}.svc.{domain}"),
        None => {
            let pod = view
                .pods
                .iter()
                .find(|(_, pod)| !pod.host_network && pod.ips.contains(&ip));
            match pod {
                Some(((ns, _), _)) => format!("{}.{ns}.pod.{domain}", dashed_ip(ip)),
                None if cluster_ranges(view).iter().any(|net| net.contains(&ip)) => {
                    return Lookup::NxDomain
                }
                None => return Lookup::NotCluster,
            }
        }
    };
    let Some(target) = fqdn(&target) else {
        return Lookup::NxDomain;
    };
    if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
        return Lookup::no_data();
    }
    let owner = reverse::name(ip);
    Lookup::answers(vec![Record::from_rdata(
        owner,
        TTL,
        RData::PTR(PTR(target)),
    )])
}

/// The labels of the name below the cluster domain, if it is a cluster name: either it ends in
/// the domain, or it is a short form the workstation sends without one:
/// * `svc` — a Service in the connected namespace (only if it exists; else not ours);
/// * `…​.ns` — `ns` an existing namespace: as if `.svc.<domain>` followed;
/// * `…​.ns.svc` / `…​.ns.pod` — `ns` an existing namespace: as if `.<domain>` followed.
fn cluster_relative<'a>(
    labels: &'a [String],
    view: &ClusterView,
    connected: &'a str,
) -> Option<Vec<&'a str>> {
    let domain: Vec<&str> = view
        .cluster_domain
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    let all: Vec<&str> = labels.iter().map(String::as_str).collect();
    if let Some(rest) = all
        .len()
        .checked_sub(domain.len())
        .filter(|_| !domain.is_empty())
    {
        if all[rest..]
            .iter()
            .zip(&domain)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
        {
            return Some(all[..rest].to_vec());
        }
    }
    let is_ns = |ns: &str| view.namespaces.contains(ns);
    match all.as_slice() {
        [name] => view
            .service(connected, name)
            .is_some()
            .then(|| vec![*name, connected, "svc"]),
        [.., ns, "svc" | "pod"] if is_ns(ns) => Some(all),
        [_, .., ns] if is_ns(ns) => Some(all.iter().copied().chain(["svc"]).collect()),
        _ => None,
    }
}

struct Query<'a> {
    name: &'a Name,
    qtype: RecordType,
    view: &'a ClusterView,
    domain: &'a str,
}

impl Query<'_> {
    fn service(&self, ns: &str, svc: &str) -> Lookup {
        let Some(service) = self.view.service(ns, svc) else {
            return Lookup::NxDomain;
        };
        match &service.address {
            ServiceAddress::ClusterIp(ips) => {
                Lookup::answers(addresses(self.name, ips.iter().copied(), self.qtype))
            }
            ServiceAddress::Headless => {
                let mut ips: Vec<IpAddr> = self.visible(service, ns, svc).map(|e| e.ip).collect();
                ips.sort();
                ips.dedup();
                Lookup::answers(addresses(self.name, ips, self.qtype))
            }
            ServiceAddress::ExternalName(target) => match fqdn(target) {
                Some(target) => {
                    let record =
                        Record::from_rdata(self.name.clone(), TTL, RData::CNAME(CNAME(target)));
                    Lookup::answers(vec![record])
                }
                None => Lookup::no_data(),
            },
        }
    }

    /// `host.svc.ns.svc.D`: an endpoint of a headless Service, by hostname or dashed IP.
    fn endpoint(&self, ns: &str, svc: &str, host: &str) -> Lookup {
        let Some(service) = self.view.service(ns, svc) else {
            return Lookup::NxDomain;
        };
        if host.starts_with('_') {
            // `_proto.svc.ns.svc.D`: the empty parent of SRV names.
            return Lookup::no_data();
        }
        if service.address != ServiceAddress::Headless {
            return Lookup::NxDomain;
        }
        let ips: Vec<IpAddr> = self
            .visible(service, ns, svc)
            .filter(|e| endpoint_label(e) == host)
            .map(|e| e.ip)
            .collect();
        if ips.is_empty() {
            return Lookup::NxDomain;
        }
        Lookup::answers(addresses(self.name, ips, self.qtype))
    }

    /// `_port._proto.svc.ns.svc.D`.
    fn srv(&self, ns: &str, svc: &str, port: &str, proto: &str) -> Lookup {
        let Some(service) = self.view.service(ns, svc) else {
            return Lookup::NxDomain;
        };
        let ports: Vec<_> = service
            .ports
            .iter()
            .filter(|p| !p.name.is_empty() && p.name.eq_ignore_ascii_case(port))
            .filter(|p| p.protocol.srv_label() == proto)
            .collect();
        if ports.is_empty() {
            return Lookup::NxDomain;
        }
        if !matches!(self.qtype, RecordType::SRV | RecordType::ANY) {
            return Lookup::no_data();
        }
        // (target, port, target's addresses)
        let mut targets: Vec<(Name, u16, Vec<IpAddr>)> = Vec::new();
        match &service.address {
            ServiceAddress::ClusterIp(ips) => {
                if let Some(target) = fqdn(&format!("{svc}.{ns}.svc.{}", self.domain)) {
                    targets.extend(ports.iter().map(|p| (target.clone(), p.port, ips.clone())));
                }
            }
            ServiceAddress::Headless => {
                for endpoint in self.visible(service, ns, svc) {
                    let host = endpoint_label(endpoint);
                    let Some(target) = fqdn(&format!("{host}.{svc}.{ns}.svc.{}", self.domain))
                    else {
                        continue;
                    };
                    let matching = endpoint.ports.iter().filter(|ep| {
                        ports
                            .iter()
                            .any(|p| p.name == ep.name && p.protocol == ep.protocol)
                    });
                    targets.extend(matching.map(|ep| (target.clone(), ep.port, vec![endpoint.ip])));
                }
            }
            ServiceAddress::ExternalName(_) => return Lookup::no_data(),
        }
        let weight = u16::try_from(100 / targets.len().max(1))
            .unwrap_or(1)
            .max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (target, port, ips) in targets {
            let srv = SRV::new(0, weight, port, target.clone());
            answers.push(Record::from_rdata(self.name.clone(), TTL, RData::SRV(srv)));
            for record in addresses(&target, ips, RecordType::ANY) {
                if !additionals.contains(&record) {
                    additionals.push(record);
                }
            }
        }
        Lookup::Found {
            answers,
            additionals,
        }
    }

    /// `a-b-c-d.ns.pod.D`: answered only for an IP a pod in `ns` has ("pods verified").
    fn pod(&self, ns: &str, dashed: &str) -> Lookup {
        match parse_dashed_ip(dashed) {
            Some(ip) if self.view.has_pod_ip(ns, ip) => {
                Lookup::answers(addresses(self.name, [ip], self.qtype))
            }
            _ => Lookup::NxDomain,
        }
    }

    /// The endpoints DNS names: ready ones, or all if the Service publishes not-ready ones.
    fn visible<'v>(
        &'v self,
        service: &'v ServiceInfo,
        ns: &str,
        svc: &str,
    ) -> impl Iterator<Item = &'v EndpointAddress> {
        let all = service.publish_not_ready;
        self.view
            .endpoint_addresses(ns, svc)
            .iter()
            .filter(move |e| e.ready || all)
    }
}

/// A and AAAA records named `name` for those of `ips` that fit `qtype`.
fn addresses(name: &Name, ips: impl IntoIterator<Item = IpAddr>, qtype: RecordType) -> Vec<Record> {
    ips.into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                Some(RData::A(A(v4)))
            }
            IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
                Some(RData::AAAA(AAAA(v6)))
            }
            _ => None,
        })
        .map(|rdata| Record::from_rdata(name.clone(), TTL, rdata))
        .collect()
}

/// The DNS label of an endpoint: its hostname, else its IP with dashes.
fn endpoint_label(endpoint: &EndpointAddress) -> String {
    match &endpoint.hostname {
        Some(hostname) if !hostname.is_empty() => hostname.to_ascii_lowercase(),
        _ => dashed_ip(endpoint.ip),
    }
}

/// `10.244.0.5` → `10-244-0-5`; `fd00::5` → `fd00--5`.
pub(crate) fn dashed_ip(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed_ip`].
pub(crate) fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name.trim_end_matches('.')).ok()?;
    name.set_fqdn(true);
    Some(name)
}
