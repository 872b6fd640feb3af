//! The manager's metrics, as Prometheus would scrape them, after what a session did.

use std::net::{Ipv4Addr, SocketAddr};

use tether_harness::servers::round_trip;
use tether_harness::{patiently, ManagerOptions};

use crate::support::{Result, World};

/// The value of the sample `name{labels}` in `text`, if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_session_its_flows_and_their_bytes_are_counted() -> Result {
    let world = World::start().await?;
    // alice's session came over loopback: the port-forward relay's way in.
    let text = world.manager.metrics_text();
    assert_eq!(
        sample(
            &text,
            "tether_sessions{user=\"alice\",carrier=\"port_forward\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let session = world.alice.session()?;
    let (send, recv) = session.open_tcp(world.echo.addr()).await?;
    let mut stream = tokio::io::join(recv, send);
    let data = vec![7u8; 100_000];
    assert_eq!(round_trip(&mut stream, &data).await?, data);
    drop(stream);
    let text = world.manager.metrics_text();
    assert_eq!(
        sample(&text, "tether_flows_total{protocol=\"tcp\"}"),
        Some(1.0),
        "{text}"
    );
    // The echo's bytes went both ways (counted as they passed, so all of them by now).
    for direction in ["to_cluster", "to_workstation"] {
        let series = format!("tether_flow_bytes_total{{direction=\"{direction}\"}}");
        assert_eq!(sample(&text, &series), Some(100_000.0), "{series}: {text}");
    }
    // The flow closes once both ends are done; then the open gauge is back to 0.
    patiently("the flow's gauge back to 0", async {
        loop {
            let text = world.manager.metrics_text();
            if sample(&text, "tether_flows_open{protocol=\"tcp\"}") == Some(0.0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_dial_is_counted_by_its_reason() -> Result {
    let denied = Ipv4Addr::new(127, 0, 0, 98);
    let world = World::start_with(ManagerOptions {
        dial_deny: vec![ipnet::IpNet::from(std::net::IpAddr::V4(denied))],
        ..ManagerOptions::default()
    })
    .await?;
    let session = world.alice.session()?;
    assert!(session
        .open_tcp(SocketAddr::from((denied, 80)))
        .await
        .is_err());
    // Nothing listens on this port of the echo's address: refused.
    let closed = SocketAddr::new(world.echo.addr().ip(), 1);
    assert!(session.open_tcp(closed).await.is_err());
    let text = world.manager.metrics_text();
    for reason in ["policy", "refused"] {
        let series = format!("tether_dial_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series}: {text}");
    }
    Ok(())
}
