//! systemd-resolved integration: split DNS on the TUN link instead of a rewritten
//! `/etc/resolv.conf`.
//!
//! Where systemd-resolved manages the resolver (its stub `/etc/resolv.conf` points at
//! `127.0.0.53`), the helper gives the TUN link its own DNS server and domains with `resolvectl`:
//! - `resolvectl dns tether0 198.18.0.2`;
//! - `resolvectl domain tether0 NS.svc.DOMAIN svc.DOMAIN DOMAIN`: search domains that are also
//!   routing domains, so `hello` and `hello.NS` are completed and every name under the cluster
//!   domain goes to tether, and nothing else does: names outside the cluster never pass through
//!   tether, at no added latency;
//! - `resolvectl default-route tether0 false`: the link never becomes a default DNS route.
//!
//! Nothing has to be put back: the settings belong to the link, and resolved forgets them when
//! the device disappears (on quit, and after any crash). `resolvectl revert` is still called on a
//! clean exit. Arguments are validated and passed as separate argv entries (no shell).
//!
//! Tested here: detection and the exact commands. This machine has no systemd, so the
//! end-to-end tests exercise the `/etc/resolv.conf` path.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use super::resolv_conf::ResolvConf;

/// The stub listener systemd-resolved puts in its `/etc/resolv.conf`.
pub const STUB: &str = "127.0.0.53";
/// resolved's runtime directory; present while it runs.
pub const RUNTIME_DIR: &str = "/run/systemd/resolve";

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

/// Why systemd-resolved could not be told.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    /// Not a device name tether uses.
    #[error(transparent)]
    Link(#[from] super::tun::TunError),
    /// Not domains tether may route.
    #[error(transparent)]
    Domains(#[from] super::domain::DomainError),
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
    domains: &[String],
) -> Result<Vec<Vec<String>>, ResolvedError> {
    super::tun::validate_name(link)?;
    // These become routing domains: every name under them goes to tether.
    super::domain::validate_search(domains)?;
    let mut domain = vec!["domain".to_owned(), link.to_owned()];
    domain.extend(domains.iter().cloned());
    Ok(vec![
        vec!["dns".to_owned(), link.to_owned(), dns.to_string()],
        domain,
        vec![
            "default-route".to_owned(),
            link.to_owned(),
            "false".to_owned(),
        ],
    ])
}

/// Applies the settings with `resolvectl`.
pub async fn apply(link: &str, dns: IpAddr, domains: &[String]) -> Result<(), ResolvedError> {
    for args in commands(link, dns, domains)? {
        resolvectl(&args).await?;
    }
    Ok(())
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
    fn commands_are_exact_and_validated() {
        let domains: Vec<String> = [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec();
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
        assert!(commands("tether0", "198.18.0.2".parse().unwrap(), &bad).is_err());
        assert!(commands("-tether0", "198.18.0.2".parse().unwrap(), &domains).is_err());
        for bad in ["a..b", "com", "-a.b"] {
            assert!(
                commands("tether0", "198.18.0.2".parse().unwrap(), &[bad.to_owned()]).is_err(),
                "{bad}"
            );
        }
    }
}
