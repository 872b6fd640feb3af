//! Cluster domains and the search domains built from them, checked before they reach the
//! resolver: the manager names the cluster domain (`Welcome.cluster_domain`), and every name
//! under a search domain goes to tether (systemd-resolved makes them routing domains). A domain
//! like `com` would send a whole top-level domain to the cluster, so a cluster domain needs at
//! least two labels (`cluster.local`, `corp.example`), each an RFC 1123 label.

/// Most search domains the helper accepts in one request: `NS.svc.D`, `svc.D`, `D`.
pub const MAX_SEARCH_DOMAINS: usize = 3;

/// Why a domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a sequence of RFC 1123 labels (letters, digits and inner hyphens, 1-63 characters
    /// each, 253 in all, no empty label).
    #[error("`{0}` is not a valid DNS domain")]
    Invalid(String),
    /// A single label (`com`, `local`): every name under it would go to the cluster.
    #[error("`{0}` has a single label; a cluster domain has at least two, like `cluster.local`")]
    SingleLabel(String),
    /// More search domains than tether ever asks for.
    #[error("{0} search domains; at most {MAX_SEARCH_DOMAINS} are accepted")]
    TooMany(usize),
}

/// One RFC 1123 label: 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks a cluster (or search) domain: RFC 1123 labels, at least two of them.
pub fn validate(domain: &str) -> Result<(), DomainError> {
    if domain.len() > 253 || !domain.split('.').all(is_label) {
        return Err(DomainError::Invalid(domain.to_owned()));
    }
    if !domain.contains('.') {
        return Err(DomainError::SingleLabel(domain.to_owned()));
    }
    Ok(())
}

/// Checks one namespace name the daemon asks the helper to route: a single RFC 1123 label, the
/// form Kubernetes requires of namespace names.
pub fn validate_namespace(name: &str) -> Result<(), DomainError> {
    if is_label(name) {
        Ok(())
    } else {
        Err(DomainError::Invalid(name.to_owned()))
    }
}

/// Checks the search domains the daemon asks the helper for.
pub fn validate_search(domains: &[String]) -> Result<(), DomainError> {
    if domains.len() > MAX_SEARCH_DOMAINS {
        return Err(DomainError::TooMany(domains.len()));
    }
    domains.iter().try_for_each(|d| validate(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_domains_have_two_or_more_rfc1123_labels() {
        for good in [
            "cluster.local",
            "corp.example",
            "default.svc.cluster.local",
            "k8s-1.example",
            "A1.b2",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for single in ["com", "local"] {
            assert_eq!(
                validate(single),
                Err(DomainError::SingleLabel(single.to_owned()))
            );
        }
        let long_label = format!("{}.local", "a".repeat(64));
        let long_name = format!("{}local", "abcdefgh.".repeat(28));
        for bad in [
            "",
            "..",
            ".",
            "-a.b",
            "a-.b",
            "a..b",
            "cluster.local.",
            ".cluster.local",
            "a_b.local",
            "cluster.local --set-dns=1.1.1.1",
            "a\nnameserver 1.2.3.4",
            "clüster.local",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert_eq!(
                validate(bad),
                Err(DomainError::Invalid(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn namespaces_are_single_labels() {
        for good in ["default", "ext", "dev", "team-a", "a1"] {
            assert_eq!(validate_namespace(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a.b",
            "-a",
            "a-",
            "~com",
            "--set-dns=1.1.1.1",
            "a b",
            "a\nb",
            "ä",
        ] {
            assert_eq!(
                validate_namespace(bad),
                Err(DomainError::Invalid(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(validate_namespace(&"a".repeat(64)).is_err());
    }

    #[test]
    fn search_lists_are_short_and_each_domain_valid() {
        let ok: Vec<String> = [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(validate_search(&ok), Ok(()));
        let mut four = ok.clone();
        four.push("corp.example".into());
        assert_eq!(validate_search(&four), Err(DomainError::TooMany(4)));
        assert_eq!(
            validate_search(&["com".into()]),
            Err(DomainError::SingleLabel("com".into()))
        );
    }
}
