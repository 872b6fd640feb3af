//! What a session's user may do is RBAC's answer (here the fake API server's rule table), asked
//! for the user and groups of the session certificate, and refused in the manager's words.

use tether_daemon::session::SessionError;
use tether_harness::api::Review;
use tether_harness::{FakeApi, FakeCluster, HarnessError, Manager, Workstation};
use tether_manager::authz::{refusal, Access, Subject};
use tether_proto::{CreateIntercept, InterceptFilter};

use crate::support::{logs, Result};

fn subject(user: &str, groups: &[&str]) -> Subject {
    Subject {
        user: user.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn intercept(namespace: &str) -> CreateIntercept {
    CreateIntercept {
        req: 0,
        name: format!("orders-{namespace}"),
        namespace: namespace.to_owned(),
        workload: "Deployment/orders".to_owned(),
        port: 8080,
        service_port: "http".to_owned(),
        filter: InterceptFilter {
            headers: vec!["x-session=carol".to_owned()],
            path_prefix: None,
        },
        mode: Default::default(),
    }
}

#[tokio::test]
async fn a_user_rbac_denies_a_session_is_refused_in_the_managers_words() -> Result {
    logs();
    let api = FakeApi::new();
    // Bob may intercept in `shop`, but not open a session at all.
    api.allow("bob", "create", "intercepts", Some("shop"));
    let manager = Manager::start(FakeCluster::new().namespace("shop").build(), &api)?;
    let credential = manager.session_credential("bob", &["devs", "system:authenticated"])?;
    let refused = Workstation::connect(&manager, &credential, "shop").await;
    let Err(HarnessError::Session(SessionError::Refused(message))) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    let bob = subject("bob", &["devs", "system:authenticated"]);
    assert_eq!(message, refusal(&bob, &Access::create_session()));
    assert!(message.starts_with("forbidden by RBAC: user \"bob\" may not create sessions"));
    // The manager asked about the user and groups of the certificate, not about itself.
    assert_eq!(
        api.reviews(),
        [Review {
            user: "bob".to_owned(),
            groups: bob.groups.clone(),
            verb: "create".to_owned(),
            resource: "sessions".to_owned(),
            namespace: None,
            allowed: false,
        }]
    );
    Ok(())
}

#[tokio::test]
async fn a_group_grant_opens_a_session_and_intercepts_only_where_it_holds() -> Result {
    logs();
    let api = FakeApi::new();
    // Carol has nothing of her own; her group `devs` may open sessions and intercept in `shop`.
    api.allow("devs", "create", "sessions", None);
    api.allow("devs", "create", "intercepts", Some("shop"));
    let cluster = FakeCluster::new().namespace("shop").namespace("bank");
    let manager = Manager::start(cluster.build(), &api)?;
    let credential = manager.session_credential("carol", &["devs"])?;
    let carol = Workstation::connect(&manager, &credential, "shop").await?;
    let session = carol.session()?;

    let refused = session.create_intercept(intercept("bank")).await;
    let Err(SessionError::Intercept(message)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    let expected = refusal(
        &subject("carol", &["devs"]),
        &Access::create_intercept("bank"),
    );
    assert_eq!(message, expected);
    assert!(message.contains("bind the ClusterRole tether-intercept there"));

    // In `shop` the manager registers it (agents get it when they link).
    let info = session.create_intercept(intercept("shop")).await?;
    assert_eq!(info.namespace, "shop");
    assert!(info.owner.starts_with("carol"), "owner {:?}", info.owner);
    // Listing asks for `list`, which nobody granted.
    let listed = session.list_intercepts("shop").await;
    assert!(
        matches!(&listed, Err(SessionError::Intercept(m)) if m.contains("may not list intercepts")),
        "{listed:?}"
    );
    Ok(())
}
