//! Intercepts: a sidecar proxy in front of an app, linked to the manager; the workstation's
//! personal intercept takes the requests with its header to a local server, and only those.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use tether_daemon::session::SessionError;
use tether_harness::agent::AgentIdentity;
use tether_harness::servers::{self, get};
use tether_harness::{eventually, Agent};
use tether_manager::session::AGENT_SECRET_NAME;
use tether_proto::{AgentCredentialRequest, CreateIntercept, InterceptFilter};
use tether_tunnel::Peer;

use crate::support::{Result, World};

/// The app's address in its "pod".
pub const APP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);

/// Alice's personal intercept of `shop/orders`'s port `port`: requests with `x-session: alice`.
pub fn personal(port: u16) -> CreateIntercept {
    CreateIntercept {
        req: 0,
        name: "orders".to_owned(),
        namespace: "shop".to_owned(),
        workload: "Deployment/orders".to_owned(),
        port,
        service_port: "http".to_owned(),
        filter: InterceptFilter {
            headers: vec!["x-session=alice".to_owned()],
            path_prefix: None,
        },
        mode: Default::default(),
    }
}

/// The agent of pod `shop/orders-1` of `Deployment/orders`, known to the fake API server.
pub fn orders_pod(world: &World) -> AgentIdentity {
    AgentIdentity {
        namespace: "shop".to_owned(),
        workload: "Deployment/orders".to_owned(),
        pod: "orders-1".to_owned(),
        token: world.api.add_pod("shop", "Deployment/orders", "orders-1"),
    }
}

/// The orders app, alice's laptop server, the app's agent linked to the manager, and alice's
/// personal intercept of it, in effect at the agent.
pub struct Intercepted {
    pub app: servers::Server,
    pub laptop: servers::Server,
    pub agent: Agent,
    pub info: tether_proto::InterceptInfo,
}

/// Sets up [`Intercepted`] in `world`.
pub async fn alice_intercepts_orders(world: &World) -> Result<Intercepted> {
    let app = servers::http(IpAddr::V4(APP_IP), "app").await?;
    let laptop = servers::http(IpAddr::V4(Ipv4Addr::LOCALHOST), "laptop").await?;
    let credential = world.manager.agent_credential("shop")?;
    let agent = Agent::start(
        world.manager.addr(),
        &credential,
        orders_pod(world),
        app.addr(),
    )
    .await?;
    let info = world
        .alice
        .intercept(personal(app.addr().port()), laptop.addr())
        .await?;
    agent.routing(&[info.id]).await?;
    Ok(Intercepted {
        app,
        laptop,
        agent,
        info,
    })
}

#[tokio::test]
async fn a_personal_intercept_takes_only_requests_with_its_header() -> Result {
    let world = World::start().await?;
    let Intercepted {
        agent,
        app: _app,
        laptop: _laptop,
        ..
    } = alice_intercepts_orders(&world).await?;
    let mine = [("x-session", "alice")];
    assert_eq!(
        get(agent.addr(), "/cart", &mine).await?,
        (200, "laptop /cart".into())
    );
    assert_eq!(
        get(agent.addr(), "/cart", &[]).await?,
        (200, "app /cart".into())
    );
    let theirs = [("x-session", "bob")];
    assert_eq!(
        get(agent.addr(), "/cart", &theirs).await?,
        (200, "app /cart".into())
    );

    // Leaving gives the app its traffic back.
    world.alice.leave("orders").await?;
    agent.routing(&[]).await?;
    assert_eq!(
        get(agent.addr(), "/cart", &mine).await?,
        (200, "app /cart".into())
    );
    // Everything the manager asked the API server (reviews, the pod's token, its owners) was
    // something the fake knows.
    assert_eq!(world.api.unanswered(), Vec::<String>::new());
    Ok(())
}

/// An intercept's start and end are audited with the verified user and the filter, told on the
/// workload as Events, and listed in its annotation while active, all before the answer.
#[tokio::test]
async fn an_intercept_is_audited_and_announced_on_its_workload() -> Result {
    let (audit, mut audit_rx) = tether_manager::audit::AuditLog::channel();
    let world = World::start_with(tether_harness::ManagerOptions {
        audit,
        ..Default::default()
    })
    .await?;
    let info = world.alice.intercept(personal(8080), laptop_addr()).await?;
    assert_eq!(info.filter.headers, ["x-session=alice"]);
    let annotation = || {
        world
            .api
            .annotations("shop", "deployments", "orders")
            .get("tether.dev/intercepts")
            .cloned()
    };
    assert_eq!(
        annotation().as_deref(),
        Some("alice (x-session=alice) → 8080")
    );
    world.alice.leave("orders").await?;
    assert_eq!(annotation(), None);

    let events = world.api.events();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Intercepted", "InterceptEnded"]);
    assert_eq!(events[0]["involvedObject"]["uid"], "uid-deployments-orders");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("intercepted by alice (x-session=alice) to port 8080"),
        "{}",
        events[0]
    );

    // The session's start, then the intercept's start and end, as alice (her groups too).
    let mut lines = Vec::new();
    while let Ok(event) = audit_rx.try_recv() {
        lines.push(event);
    }
    let actions: Vec<&str> = lines
        .iter()
        .map(|e| e.annotations["tether.dev/action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["session-started", "intercept-created", "intercept-ended"]
    );
    for line in &lines {
        assert_eq!(line.user.username, "alice");
        assert_eq!(line.user.groups, ["devs"]);
        assert_eq!(line.source_ips, ["127.0.0.1"]);
    }
    assert_eq!(lines[1].annotations["tether.dev/filter"], "x-session=alice");
    assert_eq!(lines[1].object_ref.namespace.as_deref(), Some("shop"));
    assert_eq!(lines[2].annotations["tether.dev/reason"], "left");
    assert_eq!(world.api.unanswered(), Vec::<String>::new());
    Ok(())
}

fn laptop_addr() -> std::net::SocketAddr {
    (Ipv4Addr::LOCALHOST, 9).into()
}

#[tokio::test]
async fn an_agent_credential_is_issued_against_the_secret_and_links_an_agent() -> Result {
    let world = World::start().await?;
    let session = world.alice.session()?;
    let nonce = "0123456789abcdef0123456789abcdef".to_owned();

    // Without the nonce in the namespace's agent Secret, nobody proved write access there.
    let refused = session.agent_credential("shop", nonce.clone()).await;
    let Err(SessionError::Intercept(message)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(
        message,
        "there is no Secret tether-agent-tls in namespace shop"
    );

    let key = AgentCredentialRequest::secret_key(&nonce);
    let data = BTreeMap::from([(key, nonce.clone().into_bytes())]);
    world.api.put_secret("shop", AGENT_SECRET_NAME, data);
    let issued = session.agent_credential("shop", nonce).await?;
    let peer = Peer::from_pem(&issued.cert_pem).expect("a certificate of the manager's CA");
    assert_eq!(peer.role, tether_tunnel::Role::Agent);
    assert_eq!(peer.name, "shop");
    assert_eq!(issued.ca_pem, world.manager.ca_pem());

    // The credential links an agent: the manager lists it.
    let credential = tether_tunnel::ClientCredential {
        ca_pem: issued.ca_pem,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    };
    let app = servers::http(IpAddr::V4(APP_IP), "app").await?;
    let _agent = Agent::start(
        world.manager.addr(),
        &credential,
        orders_pod(&world),
        app.addr(),
    )
    .await?;
    eventually("the manager to list the agent", || async {
        let listed = session.list_intercepts("shop").await;
        listed.is_ok_and(|state| state.agents.iter().any(|a| a.pod == "orders-1"))
    })
    .await
}

/// The agent counts each request by intercept and reports it over its link; the manager sums the
/// counts for the intercept's holder, whose session sees them (what `tether top` shows).
#[tokio::test]
async fn the_holder_sees_its_intercepts_requests_counted_by_route() -> Result {
    let world = World::start().await?;
    let Intercepted {
        agent,
        info,
        app: _app,
        laptop: _laptop,
    } = alice_intercepts_orders(&world).await?;
    let mine = [("x-session", "alice")];
    for _ in 0..4 {
        assert_eq!(get(agent.addr(), "/", &mine).await?.1, "laptop /");
    }
    for _ in 0..3 {
        assert_eq!(get(agent.addr(), "/", &[]).await?.1, "app /");
    }
    let session = world.alice.session()?;
    let mut stats = session.intercept_stats_rx.clone();
    let counted = |s: &tether_proto::InterceptStats| {
        s.intercepts
            .first()
            .map(|i| (i.id, i.laptop.requests, i.app.requests))
    };
    eventually(
        "the manager to report 4 requests to the laptop, 3 to the app",
        || {
            let now = counted(&stats.borrow_and_update());
            async move { now == Some((info.id, 4, 3)) }
        },
    )
    .await?;
    let stat = stats.borrow().intercepts[0].clone();
    assert_eq!(stat.name, "orders");
    assert_eq!(stat.laptop.latency.iter().sum::<u64>(), 4, "each timed");
    assert!(stat.laptop.quantile(0.5).is_some());
    let pods: Vec<(&str, bool)> = stat
        .agents
        .iter()
        .map(|a| (a.pod.as_str(), a.reporting))
        .collect();
    assert_eq!(pods, [("orders-1", true)]);
    // Once the intercept ends, the session has nothing to see.
    world.alice.leave("orders").await?;
    eventually("the counts to go with the intercept", || {
        let empty = stats.borrow_and_update().intercepts.is_empty();
        async move { empty }
    })
    .await?;
    Ok(())
}
