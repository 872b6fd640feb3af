//! The current user's RBAC rights that tether needs, asked with SelfSubjectAccessReviews: what
//! to ask ([`wanted`]) and how each answer reads ([`access_check`]). See
//! `deploy/manager/30-client-role.yaml` for the roles that grant them.

use tether_kube::names;

use crate::check::Check;

/// One access to ask about: `verb group/resource[/subresource]` in a namespace (or cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns}")?;
        }
        Ok(())
    }
}

/// What a check needs and what missing it means.
#[derive(Debug, Clone)]
pub struct Need {
    /// The check's id, `rbac.<what>`.
    pub id: &'static str,
    /// What the rights are for.
    pub purpose: &'static str,
    /// All of these are needed.
    pub accesses: Vec<Access>,
    /// Missing them is a failure (else a warning: tether still works without).
    pub required: bool,
    /// The binding that grants them, for a cluster admin to run; `USER` stands for the user.
    pub grant: String,
}

fn access(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespace: Option<&str>,
) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource: None,
        namespace: namespace.map(str::to_owned),
    }
}

/// The rights `tether connect` and `tether intercept` in `namespace` need, with the traffic
/// manager in `manager_namespace`.
pub fn wanted(namespace: &str, manager_namespace: &str) -> Vec<Need> {
    let ns = Some(manager_namespace);
    vec![
        Need {
            id: "rbac.session",
            purpose: "open a session (tether connect)",
            accesses: vec![access(
                "create",
                names::RBAC_GROUP,
                names::RBAC_SESSIONS,
                None,
            )],
            required: true,
            grant: "kubectl create clusterrolebinding tether-USER --clusterrole=tether-client \
                    --user=USER"
                .into(),
        },
        Need {
            id: "rbac.carrier",
            purpose: "find the manager's pod and port-forward to it",
            accesses: vec![access("list", "", "pods", ns), {
                let mut pf = access("get", "", "pods", ns);
                pf.subresource = Some("portforward");
                pf
            }],
            required: true,
            grant: format!(
                "kubectl -n {manager_namespace} create rolebinding tether-USER \
                 --role=tether-client --user=USER"
            ),
        },
        Need {
            id: "rbac.nodes",
            purpose: "read node addresses for the direct UDP carrier (else port-forward is used)",
            accesses: vec![access("list", "", "nodes", None)],
            required: false,
            grant: "kubectl create clusterrolebinding tether-USER-nodes \
                    --clusterrole=tether-client-nodes --user=USER"
                .into(),
        },
        Need {
            id: "rbac.intercept",
            purpose: "intercept workloads here (tether intercept)",
            accesses: vec![
                access(
                    "create",
                    names::RBAC_GROUP,
                    names::RBAC_INTERCEPTS,
                    Some(namespace),
                ),
                access("patch", "apps", "deployments", Some(namespace)),
            ],
            required: false,
            grant: format!(
                "kubectl -n {namespace} create rolebinding tether-USER-intercept \
                 --clusterrole=tether-intercept --user=USER"
            ),
        },
    ]
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    Denied(Option<String>),
}

/// `rbac.<what>` from the answers to a need's accesses (in the same order). `user` is who the
/// API server says you are, when it says.
pub fn access_check(need: &Need, answers: &[Answer], user: Option<&str>) -> Check {
    let missing: Vec<String> = need
        .accesses
        .iter()
        .zip(answers)
        .filter(|(_, a)| matches!(a, Answer::Denied(_)))
        .map(|(access, _)| access.to_string())
        .collect();
    if missing.is_empty() {
        let all: Vec<String> = need.accesses.iter().map(Access::to_string).collect();
        return Check::ok(need.id, format!("you may {}", all.join(", ")));
    }
    let who = user.map_or("you".to_owned(), |u| format!("user {u:?}"));
    let found = format!(
        "{who} may not {}: cannot {}",
        missing.join(", "),
        need.purpose
    );
    let grant = need.grant.replace("USER", user.unwrap_or("<your-user>"));
    let next = format!("ask a cluster admin to run `{grant}`");
    if need.required {
        Check::fail(need.id, found, next)
    } else {
        Check::warn(need.id, found, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn every_right_allowed() {
        for need in wanted("shop", "tether") {
            let answers = vec![Answer::Allowed; need.accesses.len()];
            assert_eq!(access_check(&need, &answers, None).status, Status::Ok);
        }
        let need = &wanted("shop", "tether")[0];
        assert_eq!(
            access_check(need, &[Answer::Allowed], None).found,
            "you may create sessions.tether.dev"
        );
    }

    #[test]
    fn a_missing_right_names_the_binding() {
        let needs = wanted("shop", "tether");
        let session = access_check(&needs[0], &[Answer::Denied(None)], Some("alice"));
        assert_eq!(session.status, Status::Fail);
        assert_eq!(
            session.next.as_deref(),
            Some(
                "ask a cluster admin to run `kubectl create clusterrolebinding tether-alice \
                 --clusterrole=tether-client --user=alice`"
            )
        );
        let nodes = access_check(&needs[2], &[Answer::Denied(None)], None);
        assert_eq!(nodes.status, Status::Warn);
        assert_eq!(
            nodes.found,
            "you may not list nodes: cannot read node addresses for the direct UDP carrier (else \
             port-forward is used)"
        );
        let intercept = access_check(&needs[3], &[Answer::Denied(None), Answer::Allowed], None);
        assert!(intercept
            .found
            .starts_with("you may not create intercepts.tether.dev in namespace shop"));
        let carrier = access_check(&needs[1], &[Answer::Allowed, Answer::Denied(None)], None);
        assert!(carrier
            .found
            .contains("get pods/portforward in namespace tether"));
    }
}
