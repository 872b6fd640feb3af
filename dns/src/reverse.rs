//! Reverse names: `d.c.b.a.in-addr.arpa` (RFC 1035 §3.5) and the 32 nibbles of `ip6.arpa`
//! (RFC 3596 §2.5), and the reverse zone that covers an address range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use ipnet::IpNet;

/// The zone apex of IPv4 reverse names.
pub const V4_ZONE: &str = "in-addr.arpa";
/// The zone apex of IPv6 reverse names.
pub const V6_ZONE: &str = "ip6.arpa";

/// Whether `name` (dotted, any case, trailing dot or not) is under a reverse zone at all.
pub fn is_reverse(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    [V4_ZONE, V6_ZONE].iter().any(|zone| {
        name.len() > zone.len()
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.'
            && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
    })
}

/// The address a full reverse name names: 4 decimal labels under `in-addr.arpa`, or 32 hex
/// nibbles under `ip6.arpa`. `None` for anything else, including the names of partial zones
/// (`96.10.in-addr.arpa`).
pub fn parse(name: &str) -> Option<IpAddr> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(octets) = lower.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = octets.split('.').collect();
        let [d, c, b, a] = labels.as_slice() else {
            return None;
        };
        let octet = |label: &str| {
            // No leading zeros, signs or spaces: `010` is not how anyone spells 10.
            (label == "0" || !label.starts_with('0'))
                .then(|| label.parse::<u8>().ok())
                .flatten()
        };
        return Some(IpAddr::V4(Ipv4Addr::new(
            octet(a)?,
            octet(b)?,
            octet(c)?,
            octet(d)?,
        )));
    }
    let nibbles = lower.strip_suffix(".ip6.arpa")?;
    let labels: Vec<&str> = nibbles.split('.').collect();
    if labels.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for label in labels.iter().rev() {
        let [digit] = label.as_bytes() else {
            return None;
        };
        value = value << 4 | u128::from(char::from(*digit).to_digit(16)?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

/// The reverse name of `ip`, fully qualified.
pub fn name(ip: IpAddr) -> Name {
    let mut name = Name::from(ip);
    name.set_fqdn(true);
    name
}

/// The reverse zone that covers `net`, as a dotted name without trailing dot: the prefix rounded
/// down to whole octets (IPv4) or nibbles (IPv6), so the zone may cover more than `net`
/// (`10.96.0.0/12` → `10.in-addr.arpa`).
pub fn zone(net: IpNet) -> String {
    match net {
        IpNet::V4(v4) => {
            let octets = usize::from(v4.prefix_len() / 8);
            let mut labels: Vec<String> = v4.network().octets()[..octets]
                .iter()
                .rev()
                .map(u8::to_string)
                .collect();
            labels.push(V4_ZONE.to_owned());
            labels.join(".")
        }
        IpNet::V6(v6) => {
            let nibbles = usize::from(v6.prefix_len() / 4);
            let bits = u128::from(v6.network());
            let mut labels: Vec<String> = (0..nibbles)
                .rev()
                .map(|i| format!("{:x}", (bits >> (124 - 4 * i)) & 0xf))
                .collect();
            labels.push(V6_ZONE.to_owned());
            labels.join(".")
        }
    }
}

/// A PTR query for `ip`'s reverse name (recursion desired), as a whole DNS message.
pub fn ptr_query(ip: IpAddr, id: u16) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(ip), RecordType::PTR));
    // Encoding a message built from a valid name cannot fail.
    message.to_vec().unwrap_or_default()
}

/// The first PTR target in a DNS response (without the trailing dot), if it has one.
pub fn ptr_target(response: &[u8]) -> Option<String> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let message = Message::from_vec(response).ok()?;
    message.answers.iter().find_map(|r| match &r.data {
        RData::PTR(ptr) => Some(ptr.0.to_string().trim_end_matches('.').to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ptr_query_and_its_answer() {
        use hickory_proto::op::Message;
        use hickory_proto::rr::{rdata::PTR, RData, Record};
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        let query = Message::from_vec(&ptr_query(ip, 7)).unwrap();
        assert_eq!(query.metadata.id, 7);
        assert_eq!(
            query.queries[0].name().to_string(),
            "10.0.96.10.in-addr.arpa."
        );
        let mut response = query.clone();
        let target = Name::from_ascii("kube-dns.kube-system.svc.cluster.local.").unwrap();
        response.add_answer(Record::from_rdata(name(ip), 30, RData::PTR(PTR(target))));
        assert_eq!(
            ptr_target(&response.to_vec().unwrap()).as_deref(),
            Some("kube-dns.kube-system.svc.cluster.local")
        );
        assert_eq!(ptr_target(&query.to_vec().unwrap()), None);
        assert_eq!(ptr_target(b"junk"), None);
    }

    #[test]
    fn parses_full_reverse_names_only() {
        assert_eq!(
            parse("10.0.96.10.in-addr.arpa."),
            Some("10.96.0.10".parse().unwrap())
        );
        let v6 = format!("1.{}6.9.0.0.0.0.D.F.IP6.ARPA", "0.".repeat(23));
        assert_eq!(parse(&v6), Some("fd00:96::1".parse().unwrap()));
        for bad in [
            "96.10.in-addr.arpa",
            "256.0.96.10.in-addr.arpa",
            "010.0.96.10.in-addr.arpa",
            "a.0.96.10.in-addr.arpa",
            "1.0.0.0.ip6.arpa",
            "10.0.96.10.example",
            "in-addr.arpa",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for ip in ["10.244.0.5", "fd00:244::9"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse(&name(ip).to_ascii()), Some(ip));
        }
        assert_eq!(
            name("10.96.0.10".parse().unwrap()).to_ascii(),
            "10.0.96.10.in-addr.arpa."
        );
    }

    #[test]
    fn zones_cover_their_ranges() {
        assert_eq!(zone("10.96.0.0/16".parse().unwrap()), "96.10.in-addr.arpa");
        assert_eq!(zone("10.96.0.0/12".parse().unwrap()), "10.in-addr.arpa");
        assert_eq!(
            zone("10.244.0.0/24".parse().unwrap()),
            "0.244.10.in-addr.arpa"
        );
        assert_eq!(zone("fd00:96::/108".parse().unwrap()).len(), 2 * 27 + 8);
        assert!(
            zone("fd00:96::/64".parse().unwrap()).starts_with("0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.")
        );
        assert!(is_reverse("1.0.96.10.IN-ADDR.ARPA."));
        assert!(is_reverse("96.10.in-addr.arpa"));
        assert!(!is_reverse("in-addr.arpa"));
        assert!(!is_reverse("notin-addr.arpa"));
    }
}
