//! Handshake, streams and datagrams over both carriers.

use tether_tunnel::quinn;
use tether_tunnel::{Peer, Role, ALPN};

use crate::support::{echo, patiently, payload, Manager, Via};

async fn streams_echo(via: Via) {
    let mut manager = Manager::start();
    let connection = manager.connect(via).await.unwrap();
    let handshake = connection
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(handshake.protocol.as_deref(), Some(ALPN));
    let peer = patiently(manager.peers.recv()).await.unwrap();
    assert_eq!(
        peer,
        Some(Peer {
            role: Role::Client,
            name: "test-client".to_owned(),
            groups: Vec::new(),
        })
    );

    // Small, larger than a packet, and larger than a stream window: both directions at once.
    echo(&connection, b"hello").await.unwrap();
    echo(&connection, &payload(100_000)).await.unwrap();
    echo(&connection, &payload(20 << 20)).await.unwrap();

    // Many concurrent flows on one connection.
    let flows = (0..200).map(|i| {
        let connection = connection.clone();
        async move { echo(&connection, &payload(1000 + i)).await }
    });
    for result in futures::future::join_all(flows).await {
        result.unwrap();
    }
}

async fn datagrams_echo(via: Via) {
    let mut manager = Manager::start();
    let connection = manager.connect(via).await.unwrap();
    let max = connection
        .max_datagram_size()
        .expect("peer accepts datagrams");
    assert!(max >= 1000, "max datagram size {max}");
    // The largest datagram the path takes now (it grows as path MTU discovery proceeds).
    for len in [1, 100, max] {
        let sent = payload(len);
        // A datagram may be lost even on loopback: retry a few times, then insist.
        let echoed = patiently(async {
            loop {
                connection.send_datagram(sent.clone().into()).unwrap();
                let wait = tokio::time::sleep(std::time::Duration::from_millis(500));
                tokio::select! {
                    echoed = connection.read_datagram() => break echoed.unwrap(),
                    () = wait => continue,
                }
            }
        })
        .await;
        assert_eq!(echoed, sent);
    }
}

#[tokio::test]
async fn streams_over_udp() {
    streams_echo(Via::Udp).await;
}

#[tokio::test]
async fn streams_over_carrier() {
    streams_echo(Via::Carrier).await;
}

#[tokio::test]
async fn datagrams_over_udp() {
    datagrams_echo(Via::Udp).await;
}

#[tokio::test]
async fn datagrams_over_carrier() {
    datagrams_echo(Via::Carrier).await;
}
