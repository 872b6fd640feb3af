//! Flows: the workstation opens them on its session, the manager dials for it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use tether_daemon::session::SessionError;
use tether_harness::servers::round_trip;
use tether_harness::{patiently, ManagerOptions};

use crate::support::{Result, World};

#[tokio::test]
async fn a_tcp_flow_reaches_a_service_and_carries_bytes_both_ways() -> Result {
    let world = World::start().await?;
    let session = world.alice.session()?;
    let (send, recv) = session.open_tcp(world.echo.addr()).await?;
    let mut stream = tokio::io::join(recv, send);
    // More than a window's first flight, and the write half's end passed on as an end.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut stream, &data).await?, data);
    Ok(())
}

#[tokio::test]
async fn a_udp_flow_carries_datagrams_small_and_too_big_for_a_quic_datagram() -> Result {
    let world = World::start().await?;
    let session = world.alice.session()?;
    let flow = session.open_udp(world.udp_echo.addr()).await?;
    // 100 bytes ride QUIC datagrams; 8000 do not fit one and travel as frames on the stream.
    for size in [100, 8000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 7) as u8).collect();
        flow.send(&payload).await?;
        let reply = patiently("the echoed datagram", flow.recv()).await?;
        assert_eq!(reply.as_deref(), Some(&payload[..]), "{size} bytes");
    }
    Ok(())
}

#[tokio::test]
async fn the_manager_refuses_a_destination_its_dial_policy_denies() -> Result {
    let denied = Ipv4Addr::new(127, 0, 0, 99);
    let world = World::start_with(ManagerOptions {
        dial_deny: vec![IpNet::from(IpAddr::V4(denied))],
        ..ManagerOptions::default()
    })
    .await?;
    let session = world.alice.session()?;
    let refused = session.open_tcp(SocketAddr::from((denied, 80))).await;
    match refused {
        Err(SessionError::Open(error)) => assert_eq!(
            error.message,
            "the traffic manager does not dial 127.0.0.99:80: 127.0.0.99/32 is denied by this \
             installation"
        ),
        other => panic!("expected the manager's refusal, got {other:?}"),
    }
    // The session is unharmed: the next flow works.
    let (send, recv) = session.open_tcp(world.echo.addr()).await?;
    let mut stream = tokio::io::join(recv, send);
    assert_eq!(round_trip(&mut stream, b"still here").await?, b"still here");
    Ok(())
}

/// `tether intercept --to-pod PORT`: 127.0.0.1:PORT on the workstation reaches the same port of
/// the pod through the session, until the intercept ends.
#[tokio::test]
async fn to_pod_reaches_the_pods_port_on_loopback_until_stopped() -> Result {
    use tether_daemon::intercept::to_pod;
    let world = World::start().await?;
    // The echo Service stands in for the pod: its address is not the workstation's 127.0.0.1.
    let pod = world.echo.addr();
    let IpAddr::V4(pod_ip) = pod.ip() else {
        panic!("the echo is on IPv4")
    };
    let bound = to_pod::bind(&[pod.port()]).await.expect("a free port");
    let forwarding = bound.forward(("echo".into(), pod_ip), None, world.alice.sessions());
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, pod.port()));
    for round in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(local)
            .await
            .expect("127.0.0.1 listens");
        let data = format!("round {round} through the tunnel");
        assert_eq!(
            round_trip(&mut stream, data.as_bytes()).await?,
            data.as_bytes()
        );
    }
    forwarding.stop().await;
    assert!(
        tokio::net::TcpStream::connect(local).await.is_err(),
        "still listening after the intercept ended"
    );
    Ok(())
}

/// `--to-pod` carries UDP too: each local peer's datagrams reach the pod's port and the replies
/// come back to that peer, two peers apart.
#[tokio::test]
async fn to_pod_carries_udp_datagrams_to_the_pod_and_back() -> Result {
    use tether_daemon::intercept::to_pod;
    let world = World::start().await?;
    let pod = world.udp_echo.addr();
    let IpAddr::V4(pod_ip) = pod.ip() else {
        panic!("the echo is on IPv4")
    };
    let bound = to_pod::bind(&[pod.port()]).await.expect("a free port");
    let forwarding = bound.forward(("udp-echo".into(), pod_ip), None, world.alice.sessions());
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, pod.port()));
    let (a, b) = (
        tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap(),
        tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap(),
    );
    let mut buf = [0u8; 64];
    for round in 0..3 {
        for (name, socket) in [("a", &a), ("b", &b)] {
            let data = format!("{name} {round}");
            socket.send_to(data.as_bytes(), local).await.unwrap();
            let (n, from) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.recv_from(&mut buf),
            )
            .await
            .expect("an answer through the tunnel")
            .unwrap();
            assert_eq!((&buf[..n], from), (data.as_bytes(), local));
        }
    }
    forwarding.stop().await;
    Ok(())
}
