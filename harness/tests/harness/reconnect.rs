//! A manager that restarts (same port, same CA, as a new pod that kept its predecessor's CA):
//! its clients see the session end with its reason and connect again, and its agents link again
//! by themselves; intercepts are created again by their workstation.

use hickory_proto::rr::RecordType;
use tether_harness::manager::RESTARTING;
use tether_harness::patiently;
use tether_harness::servers::{get, round_trip};
use tether_tunnel::quinn::ConnectionError;

use crate::intercept::{alice_intercepts_orders, Intercepted};
use crate::support::{Result, World};

#[tokio::test]
async fn after_a_manager_restart_sessions_flows_dns_and_intercepts_come_back() -> Result {
    let mut world = World::start().await?;
    let Intercepted {
        app: _app,
        laptop: _laptop,
        agent,
        ..
    } = alice_intercepts_orders(&world).await?;
    let old = world.alice.session()?;

    world.manager.restart().await?;

    // The old session ends at once, not after the idle timeout. Its reason is the manager's
    // unless the session's reader, seeing the control stream end, has closed the connection
    // locally first (quinn then reports LocallyClosed): both happen on the manager's close.
    let reason = patiently("the old session to end", old.closed()).await?;
    match &reason {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.reason.as_ref(), RESTARTING.as_bytes())
        }
        ConnectionError::LocallyClosed => {}
        other => panic!("expected the manager's close, got {other:?}"),
    }
    assert!(old.is_closed());
    // The agent lost its intercepts with the link: all traffic goes to the app meanwhile.
    agent.routing(&[]).await?;

    let new = world.alice.reconnect().await?;
    assert_ne!(new.welcome.session_id, old.welcome.session_id);
    assert!(!new.is_closed());
    // The same DNS server answers through the new session.
    let reply = world
        .alice
        .resolve("echo.shop.svc.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(reply.answers.len(), 1);
    // Flows go through it.
    let (send, recv) = new.open_tcp(world.echo.addr()).await?;
    let mut stream = tokio::io::join(recv, send);
    assert_eq!(round_trip(&mut stream, b"again").await?, b"again");
    // The agent linked again by itself and follows the intercept created again.
    let held = new.list_intercepts("shop").await?;
    let [after] = held.intercepts.as_slice() else {
        panic!("expected one intercept, got {held:?}");
    };
    agent.routing(&[after.id]).await?;
    let mine = [("x-session", "alice")];
    assert_eq!(
        get(agent.addr(), "/", &mine).await?,
        (200, "laptop /".into())
    );
    assert_eq!(get(agent.addr(), "/", &[]).await?, (200, "app /".into()));
    Ok(())
}
