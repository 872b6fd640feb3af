//! systemd-resolved integration: split DNS on the TUN link instead of a rewritten
//! `/etc/resolv.conf`.
//!
//! Where systemd-resolved manages the resolver (its stub `/etc/resolv.conf` points at
//! `127.0.0.53`), the helper gives the TUN link its own DNS server and domains with `resolvectl`:
//! - `resolvectl dns tether0 198.18.0.2`;
//! - `resolvectl domain tether0 NS.svc.DOMAIN svc.DOMAIN DOMAIN ~ns… ~zone.in-addr.arpa…`:
//!   - the search domains, which are also routing domains, so `hello` and `hello.NS` are
//!     completed and every name under the cluster domain goes to tether;
//!   - a routing-only domain (`~default`) for each of the cluster's namespaces, so `svc.ns` and
//!     `svc.ns.svc` go to tether at once, as they do with a rewritten resolv.conf;
//!   - a routing-only domain for the reverse zone of each routed range, so `dig -x` of a
//!     ClusterIP or pod IP reaches tether, which answers as CoreDNS does.
//!
//!   Nothing else goes to tether: other names never pass through it, at no added latency.
//!   `domain` replaces the link's list, so the whole list is sent again when namespaces or
//!   routes change.
//! - `resolvectl default-route tether0 false`: the link never becomes a default DNS route.
//!
//! A name under a namespace that the cluster does not know (`example.dev` with a namespace
//! `dev`) falls through to the daemon's upstream. Under resolved, that upstream is not the stub
//! (which would send the name straight back to tether) but resolved's own uplinks, from
//! [`UPLINKS`] (see [`upstream_conf`]).
//!
//! Nothing has to be put back: the settings belong to the link, and resolved forgets them when
//! the device disappears (on quit, and after any crash). `resolvectl revert` is still called on a
//! clean exit. Arguments are validated and passed as separate argv entries (no shell).
//!
//! Tested here: detection, the uplinks and the exact commands. This machine has no systemd, so
//! the end-to-end tests exercise the `/etc/resolv.conf` path.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use ipnet::Ipv4Net;

use super::resolv_conf::ResolvConf;

/// The stub listener systemd-resolved puts in its `/etc/resolv.conf`.
pub const STUB: &str = "127.0.0.53";
/// resolved's runtime directory; present while it runs.
pub const RUNTIME_DIR: &str = "/run/systemd/resolve";
/// The file in [`RUNTIME_DIR`] where resolved lists its uplink servers (every link's and the
/// global ones), without its stub.
pub const UPLINKS: &str = "resolv.conf";
/// Most namespaces routed to tether's link (the manager sends every namespace of the cluster).
pub const MAX_NAMESPACES: usize = 4096;

/// True if systemd-resolved runs and the resolver configuration points at its stub, so that
/// split DNS on the link is honoured.
pub fn in_charge(resolv_conf: &ResolvConf, runtime_dir: &Path) -> bool {
    runtime_dir.join("io.systemd.Resolve").exists()
        && !resolv_conf.nameservers.is_empty()
        && resolv_conf
            .nameservers
            .iter()
            .all(|ns| ns.to_string() == STUB)
}

/// The resolver configuration the daemon's upstream comes from, given the system's `original`:
/// `original` itself, except under resolved, where it is the stub and resolved's uplinks are
/// read instead. Without that, a name tether passes on (a namespace-suffixed name the cluster
/// does not know, a reverse name outside the cluster) would go to the stub, which routes it back
/// to tether. `ours` (the daemon's own server) is never an upstream.
pub fn upstream_conf(original: ResolvConf, runtime_dir: &Path, ours: IpAddr) -> ResolvConf {
    let mut conf = if in_charge(&original, runtime_dir) {
        match std::fs::read_to_string(runtime_dir.join(UPLINKS)) {
            Ok(text) => ResolvConf::parse(&text),
            Err(_) => original,
        }
    } else {
        original
    };
    conf.nameservers
        .retain(|ns| *ns != ours && ns.to_string() != STUB);
    conf
}

/// The domains of tether's link: the search domains, then routing-only domains (`~name`) for the
/// cluster's namespaces and for the reverse zones of the routed ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkDomains {
    search: Vec<String>,
    namespaces: BTreeSet<String>,
    reverse: BTreeSet<String>,
}

impl LinkDomains {
    /// The link's domains before any namespace or route is known.
    pub fn new(search: &[String]) -> Result<LinkDomains, ResolvedError> {
        super::domain::validate_search(search)?;
        Ok(LinkDomains {
            search: search.to_vec(),
            ..LinkDomains::default()
        })
    }

    /// Routes exactly these namespaces; true if that changed the list. Each must be a namespace
    /// name (one RFC 1123 label); if any is not, nothing changes.
    pub fn set_namespaces(&mut self, namespaces: &[String]) -> Result<bool, ResolvedError> {
        validate_namespaces(namespaces)?;
        let new: BTreeSet<String> = namespaces.iter().cloned().collect();
        Ok(std::mem::replace(&mut self.namespaces, new) != self.namespaces)
    }

    /// Adds the reverse zones of `routed` ranges; true if that changed the list.
    pub fn add_routes(&mut self, routed: &[Ipv4Net]) -> bool {
        let before = self.reverse.len();
        self.reverse
            .extend(routed.iter().flat_map(|net| reverse_zones(*net)));
        self.reverse.len() != before
    }

    /// The `resolvectl` arguments that give `link` these domains.
    fn command(&self, link: &str) -> Vec<String> {
        let routing = self.namespaces.iter().chain(&self.reverse);
        ["domain", link]
            .into_iter()
            .map(str::to_owned)
            .chain(self.search.iter().cloned())
            .chain(routing.map(|d| format!("~{d}")))
            .collect()
    }
}

/// Checks namespace names to route: each one RFC 1123 label, at most [`MAX_NAMESPACES`].
pub fn validate_namespaces(namespaces: &[String]) -> Result<(), ResolvedError> {
    if namespaces.len() > MAX_NAMESPACES {
        return Err(ResolvedError::TooManyNamespaces(namespaces.len()));
    }
    namespaces
        .iter()
        .try_for_each(|ns| super::domain::validate_namespace(ns))?;
    Ok(())
}

/// The `in-addr.arpa` zones that together hold the reverse names of `net`: one per block at the
/// next octet boundary (a /12 is sixteen /16 zones, a /16 one, a /20 sixteen /24 zones).
pub fn reverse_zones(net: Ipv4Net) -> Vec<String> {
    let net = net.trunc();
    // The route policy refuses anything wider than a /8; a wider net is routed as /8 zones all
    // the same, capped at 256 of them.
    let boundary = net.prefix_len().div_ceil(8).clamp(1, 4) * 8;
    let blocks = 1u32 << (boundary - net.prefix_len().min(boundary)).min(8);
    let start = u32::from(net.network());
    let step = 1u64 << (32 - boundary);
    (0..blocks)
        .map(|i| {
            let block = (u64::from(start) + u64::from(i) * step) as u32;
            let octets = block.to_be_bytes();
            let mut labels: Vec<String> = octets[..(boundary / 8) as usize]
                .iter()
                .map(u8::to_string)
                .collect();
            labels.reverse();
            format!("{}.in-addr.arpa", labels.join("."))
        })
        .collect()
}

/// Why systemd-resolved could not be told.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    /// Not a device name tether uses.
    #[error(transparent)]
    Link(#[from] super::tun::TunError),
    /// Not domains tether may route.
    #[error(transparent)]
    Domains(#[from] super::domain::DomainError),
    /// More namespaces than tether routes.
    #[error("{0} namespaces; at most {MAX_NAMESPACES} are routed to tether")]
    TooManyNamespaces(usize),
    /// `resolvectl` could not be run.
    #[error("running resolvectl")]
    Run(#[source] std::io::Error),
    /// `resolvectl` failed; `stderr` says why.
    #[error("resolvectl {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// The `resolvectl` invocations that give `link` the DNS server `dns` for `domains`.
pub fn commands(
    link: &str,
    dns: IpAddr,
    domains: &LinkDomains,
) -> Result<Vec<Vec<String>>, ResolvedError> {
    super::tun::validate_name(link)?;
    Ok(vec![
        vec!["dns".to_owned(), link.to_owned(), dns.to_string()],
        domains.command(link),
        vec![
            "default-route".to_owned(),
            link.to_owned(),
            "false".to_owned(),
        ],
    ])
}

/// Applies the settings with `resolvectl`.
pub async fn apply(link: &str, dns: IpAddr, domains: &LinkDomains) -> Result<(), ResolvedError> {
    for args in commands(link, dns, domains)? {
        resolvectl(&args).await?;
    }
    Ok(())
}

/// Sends the link's domain list again (after namespaces or routes changed).
pub async fn update(link: &str, domains: &LinkDomains) -> Result<(), ResolvedError> {
    super::tun::validate_name(link)?;
    resolvectl(&domains.command(link)).await
}

/// Drops the link's settings (the device's removal does the same).
pub async fn revert(link: &str) -> Result<(), ResolvedError> {
    super::tun::validate_name(link)?;
    resolvectl(&["revert".to_owned(), link.to_owned()]).await
}

async fn resolvectl(args: &[String]) -> Result<(), ResolvedError> {
    let output = tokio::process::Command::new("resolvectl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(ResolvedError::Run)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ResolvedError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_only_when_running_and_in_use() {
        let dir = std::env::temp_dir().join(format!("tether-resolved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stub = ResolvConf::parse("nameserver 127.0.0.53\noptions edns0 trust-ad\n");
        let plain = ResolvConf::parse("nameserver 10.0.0.1\n");
        assert!(!in_charge(&stub, &dir), "resolved not running");
        std::fs::write(dir.join("io.systemd.Resolve"), "").unwrap();
        assert!(in_charge(&stub, &dir));
        assert!(!in_charge(&plain, &dir), "resolv.conf bypasses resolved");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_upstream_is_resolveds_uplinks_never_its_stub_or_tether() {
        let dir = std::env::temp_dir().join(format!("tether-uplinks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours: IpAddr = "198.18.0.2".parse().unwrap();
        let stub = || ResolvConf::parse("nameserver 127.0.0.53\noptions edns0 trust-ad\n");
        let plain = ResolvConf::parse("nameserver 10.0.0.1\nnameserver 198.18.0.2\n");
        // Not running: the stub is no upstream, and nothing else is known.
        assert!(upstream_conf(stub(), &dir, ours).nameservers.is_empty());
        assert_eq!(
            upstream_conf(plain.clone(), &dir, ours).nameservers,
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        // Running: its uplinks (once tether's link is set, its server is listed there too).
        std::fs::write(dir.join("io.systemd.Resolve"), "").unwrap();
        std::fs::write(
            dir.join(UPLINKS),
            "# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).\n\
             nameserver 192.168.1.1\nnameserver 198.18.0.2\nnameserver fe80::1%wlan0\n\
             search lan\n",
        )
        .unwrap();
        let conf = upstream_conf(stub(), &dir, ours);
        assert_eq!(
            conf.nameservers,
            [
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        // resolv.conf bypasses resolved: it is used as it is.
        assert_eq!(upstream_conf(plain, &dir, ours).nameservers.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reverse_zones_cover_each_range_at_octet_boundaries() {
        let zones = |n: &str| reverse_zones(n.parse().unwrap());
        assert_eq!(zones("10.244.0.0/16"), ["244.10.in-addr.arpa"]);
        assert_eq!(zones("10.244.1.0/24"), ["1.244.10.in-addr.arpa"]);
        let services = zones("10.96.0.0/12");
        assert_eq!(services.len(), 16);
        assert_eq!(services[0], "96.10.in-addr.arpa");
        assert_eq!(services[15], "111.10.in-addr.arpa");
        assert_eq!(
            zones("172.16.0.0/20"),
            (0..16)
                .map(|i| format!("{i}.16.172.in-addr.arpa"))
                .collect::<Vec<_>>()
        );
        assert_eq!(zones("10.0.0.0/8"), ["10.in-addr.arpa"]);
        assert_eq!(zones("10.1.2.3/32"), ["3.2.1.10.in-addr.arpa"]);
        assert_eq!(
            zones("10.1.2.3/31"),
            ["2.2.1.10.in-addr.arpa", "3.2.1.10.in-addr.arpa"]
        );
        // Host bits are ignored; a range wider than /8 is capped at 256 zones.
        assert_eq!(zones("10.244.7.9/16"), ["244.10.in-addr.arpa"]);
        assert_eq!(zones("0.0.0.0/0").len(), 256);
    }

    fn search() -> Vec<String> {
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn namespaces_and_reverse_zones_become_routing_only_domains() {
        let mut link = LinkDomains::new(&search()).unwrap();
        assert_eq!(
            link.command("tether0"),
            [
                "domain",
                "tether0",
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        let ns: Vec<String> = ["ext", "default", "dev"].map(String::from).to_vec();
        assert!(link.set_namespaces(&ns).unwrap());
        assert!(!link.set_namespaces(&ns).unwrap(), "no change, no command");
        assert!(link.add_routes(&["10.244.0.0/16".parse().unwrap()]));
        assert!(!link.add_routes(&["10.244.0.0/16".parse().unwrap()]));
        assert_eq!(
            link.command("tether0"),
            [
                "domain",
                "tether0",
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "~default",
                "~dev",
                "~ext",
                "~244.10.in-addr.arpa"
            ]
        );
        // A namespace deleted from the cluster is no longer routed.
        assert!(link.set_namespaces(&["default".to_owned()]).unwrap());
        assert!(!link.command("tether0").contains(&"~ext".to_owned()));
    }

    #[test]
    fn hostile_namespaces_change_nothing() {
        let mut link = LinkDomains::new(&search()).unwrap();
        link.set_namespaces(&["default".to_owned()]).unwrap();
        let before = link.clone();
        for bad in [
            vec!["ok".to_owned(), "--set-dns=1.1.1.1".to_owned()],
            vec!["~.".to_owned()],
            vec!["com.".to_owned()],
            vec!["a.b".to_owned()],
            vec![String::new()],
        ] {
            assert!(link.set_namespaces(&bad).is_err(), "{bad:?}");
            assert_eq!(link, before, "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_NAMESPACES).map(|i| format!("ns{i}")).collect();
        assert!(matches!(
            link.set_namespaces(&many),
            Err(ResolvedError::TooManyNamespaces(n)) if n == MAX_NAMESPACES + 1
        ));
        assert_eq!(link, before);
    }

    #[test]
    fn commands_are_exact_and_validated() {
        let domains = LinkDomains::new(&search()).unwrap();
        let cmds = commands("tether0", "198.18.0.2".parse().unwrap(), &domains).unwrap();
        assert_eq!(
            cmds,
            [
                vec!["dns", "tether0", "198.18.0.2"],
                vec![
                    "domain",
                    "tether0",
                    "default.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local"
                ],
                vec!["default-route", "tether0", "false"],
            ]
        );
        let bad = ["cluster.local --set-dns=1.1.1.1".to_owned()];
        assert!(LinkDomains::new(&bad).is_err());
        assert!(commands("-tether0", "198.18.0.2".parse().unwrap(), &domains).is_err());
        for bad in ["a..b", "com", "-a.b"] {
            assert!(LinkDomains::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
