//! Mirrors: a developer gets a copy of a workload's requests while the app (or another
//! developer's intercept) answers the callers; a slow or silent laptop never holds callers up.

use std::net::{IpAddr, Ipv4Addr};

use tether_harness::servers::{self, get, Recorded};
use tether_harness::{eventually, Workstation};
use tether_proto::stats::MirrorCounts;
use tether_proto::{CreateIntercept, InterceptFilter, InterceptMode, InterceptStats};
use tether_sidecar::proxy::mirror::{IN_FLIGHT, QUEUE_LEN};

use crate::intercept::{alice_intercepts_orders, Intercepted};
use crate::support::{Result, World};

/// Bob's mirror of every request to `shop/orders`'s port `port`.
fn mirror_all(port: u16) -> CreateIntercept {
    CreateIntercept {
        req: 0,
        name: "orders-copy".to_owned(),
        namespace: "shop".to_owned(),
        workload: "Deployment/orders".to_owned(),
        port,
        service_port: "http".to_owned(),
        filter: InterceptFilter::default(),
        mode: InterceptMode::Mirror,
    }
}

/// User `bob`, who may do everything, connected to the world's manager.
async fn bob(world: &World) -> Result<Workstation> {
    world.api.allow_everything("bob");
    let credential = world.manager.session_credential("bob", &["devs"])?;
    Workstation::connect(&world.manager, &credential, "shop").await
}

/// The copies a session's first intercept counted, once its agents reported.
fn copies(stats: &InterceptStats) -> Option<MirrorCounts> {
    stats.intercepts.first().map(|i| i.mirrored)
}

#[tokio::test]
async fn a_mirror_gets_a_copy_of_every_request_while_callers_get_their_answers() -> Result {
    let world = World::start().await?;
    let Intercepted {
        agent,
        app,
        laptop: _alice_laptop,
        info: alice,
    } = alice_intercepts_orders(&world).await?;
    let bob = bob(&world).await?;
    let recorded = Recorded::default();
    let bob_laptop =
        servers::http_recording(IpAddr::V4(Ipv4Addr::LOCALHOST), "bob", recorded.clone()).await?;
    let mirror = bob
        .intercept(mirror_all(app.addr().port()), bob_laptop.addr())
        .await?;
    assert_eq!(mirror.mode, InterceptMode::Mirror);
    agent.routing(&[alice.id, mirror.id]).await?;

    const N: usize = 20;
    for n in 0..N {
        let path = format!("/order/{n}");
        if n % 2 == 0 {
            let got = get(agent.addr(), &path, &[("x-session", "alice")]).await?;
            assert_eq!(
                got,
                (200, format!("laptop {path}")),
                "alice's intercept answers"
            );
        } else {
            let got = get(agent.addr(), &path, &[]).await?;
            assert_eq!(got, (200, format!("app {path}")), "the app answers");
        }
    }
    let mut stats = bob.session()?.intercept_stats_rx.clone();
    eventually("bob's copies to be counted: N sent, none dropped", || {
        let now = copies(&stats.borrow_and_update());
        async move {
            now == Some(MirrorCounts {
                sent: N as u64,
                dropped: 0,
            })
        }
    })
    .await?;
    // Each request reached bob exactly once (copies may arrive in any order).
    let mut got = recorded.requests();
    got.sort();
    let mut want: Vec<String> = (0..N).map(|n| format!("GET /order/{n} ")).collect();
    want.sort();
    assert_eq!(got, want);
    // Bob's mirror took nothing from the app: its laptop count is zero, the app's is its half.
    let stat = stats.borrow().intercepts[0].clone();
    assert_eq!(stat.laptop.requests, 0);
    assert_eq!(stat.app.requests, (N / 2) as u64);

    // Once bob leaves, no more copies.
    bob.leave("orders-copy").await?;
    agent.routing(&[alice.id]).await?;
    get(agent.addr(), "/after", &[]).await?;
    assert_eq!(recorded.requests().len(), N);
    Ok(())
}

#[tokio::test]
async fn a_silent_laptop_never_holds_callers_up_and_its_copies_are_dropped() -> Result {
    let world = World::start().await?;
    let Intercepted {
        agent,
        app,
        laptop: _alice_laptop,
        info: alice,
    } = alice_intercepts_orders(&world).await?;
    let bob = bob(&world).await?;
    let silent = servers::silent(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let mirror = bob
        .intercept(mirror_all(app.addr().port()), silent.addr())
        .await?;
    agent.routing(&[alice.id, mirror.id]).await?;

    // More than the mirror can hold: IN_FLIGHT waiting on the laptop, QUEUE_LEN queued.
    let n = IN_FLIGHT + QUEUE_LEN + 20;
    for i in 0..n {
        let path = format!("/r/{i}");
        assert_eq!(
            get(agent.addr(), &path, &[]).await?,
            (200, format!("app {path}")),
            "request {i}"
        );
    }
    assert_eq!(
        get(agent.addr(), "/mine", &[("x-session", "alice")]).await?,
        (200, "laptop /mine".into())
    );
    let mut stats = bob.session()?.intercept_stats_rx.clone();
    eventually("copies beyond the queue to be dropped", || {
        let now = copies(&stats.borrow_and_update());
        async move { now.is_some_and(|c| c.dropped > 0) }
    })
    .await?;
    let counted = copies(&stats.borrow()).unwrap_or_default();
    assert_eq!(counted.sent, 0, "the laptop answered nothing");
    assert!(
        counted.dropped <= (n + 1 - QUEUE_LEN) as u64,
        "no more dropped than did not fit: {counted:?}"
    );
    Ok(())
}
