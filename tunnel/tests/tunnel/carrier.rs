//! The stream carrier's relays on their own: lifetimes and malformed input.

use std::net::Ipv4Addr;
use std::time::Duration;

use tether_tunnel::{serve_relay, serve_relay_with, CarrierError, RelayLimits, StreamCarrier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::support::{patiently, Manager, Via};

/// A UDP "QUIC endpoint" behind a relay: returns it and a way to open relay connections.
async fn relay_to_udp() -> (UdpSocket, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let target = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let relay = tokio::spawn(serve_relay(listener, target.local_addr().unwrap()));
    (target, relay_addr, relay)
}

#[tokio::test]
async fn relay_frames_packets_both_ways() {
    let (target, relay_addr, relay) = relay_to_udp().await;
    let mut stream = TcpStream::connect(relay_addr).await.unwrap();
    // Two frames in one write: the relay must split them.
    stream
        .write_all(&[0, 3, b'o', b'n', b'e', 0, 3, b't', b'w', b'o'])
        .await
        .unwrap();
    let mut packet = [0; 16];
    let (len, from) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"one");
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"two");

    target.send_to(b"back", from).await.unwrap();
    let mut frame = [0; 6];
    patiently(stream.read_exact(&mut frame)).await.unwrap();
    assert_eq!(&frame, &[0, 4, b'b', b'a', b'c', b'k']);
    relay.abort();
}

#[tokio::test]
async fn zero_length_frame_closes_only_its_connection() {
    let (target, relay_addr, relay) = relay_to_udp().await;
    let mut bad = TcpStream::connect(relay_addr).await.unwrap();
    let mut good = TcpStream::connect(relay_addr).await.unwrap();

    bad.write_all(&[0, 0, 0, 1, b'x']).await.unwrap();
    let mut rest = Vec::new();
    let read = patiently(bad.read_to_end(&mut rest)).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "bad connection stayed open"
    );

    good.write_all(&[0, 2, b'o', b'k']).await.unwrap();
    let mut packet = [0; 16];
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(
        &packet[..len],
        b"ok",
        "the packet after the empty frame leaked through"
    );

    // And new connections are still served.
    let mut later = TcpStream::connect(relay_addr).await.unwrap();
    later
        .write_all(&[0, 5, b'l', b'a', b't', b'e', b'r'])
        .await
        .unwrap();
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"later");
    relay.abort();
}

/// Whether the relay closed `stream` (an end of stream or a reset, with nothing relayed back).
async fn closed_by_relay(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let read = patiently(stream.read_to_end(&mut rest)).await;
    read.is_err() || rest.is_empty()
}

#[tokio::test]
async fn relays_beyond_the_limit_are_closed_and_the_others_served() {
    let target = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let limits = RelayLimits {
        max_connections: 2,
        idle: Duration::from_secs(30),
    };
    let relay = tokio::spawn(serve_relay_with(
        listener,
        target.local_addr().unwrap(),
        limits,
    ));
    let mut first = TcpStream::connect(relay_addr).await.unwrap();
    let _second = TcpStream::connect(relay_addr).await.unwrap();
    first.write_all(&[0, 3, b'o', b'n', b'e']).await.unwrap();
    let mut packet = [0; 16];
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"one");

    let mut third = TcpStream::connect(relay_addr).await.unwrap();
    assert!(
        closed_by_relay(&mut third).await,
        "a third relay was served"
    );

    // The first one is still relayed.
    first
        .write_all(&[0, 5, b'a', b'g', b'a', b'i', b'n'])
        .await
        .unwrap();
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"again");
    relay.abort();
}

#[tokio::test]
async fn idle_relays_are_closed() {
    let target = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let limits = RelayLimits {
        max_connections: 2,
        idle: Duration::from_millis(300),
    };
    let relay = tokio::spawn(serve_relay_with(
        listener,
        target.local_addr().unwrap(),
        limits,
    ));
    // Silent from the start, and silent after one frame: both closed, and their places free.
    let mut silent = TcpStream::connect(relay_addr).await.unwrap();
    let mut quiet = TcpStream::connect(relay_addr).await.unwrap();
    quiet.write_all(&[0, 2, b'h', b'i']).await.unwrap();
    assert!(closed_by_relay(&mut silent).await);
    assert!(closed_by_relay(&mut quiet).await);
    let mut packet = [0; 16];
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"hi");

    let mut next = TcpStream::connect(relay_addr).await.unwrap();
    next.write_all(&[0, 4, b'n', b'e', b'x', b't'])
        .await
        .unwrap();
    let (len, _) = patiently(target.recv_from(&mut packet)).await.unwrap();
    assert_eq!(&packet[..len], b"next");
    relay.abort();
}

#[tokio::test]
async fn carrier_ends_when_its_stream_ends() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    let (udp_addr, carrier) = StreamCarrier::spawn(client).unwrap();

    let quinn_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    quinn_socket.send_to(b"ping", udp_addr).await.unwrap();
    let mut frame = [0; 6];
    patiently(server.read_exact(&mut frame)).await.unwrap();
    assert_eq!(&frame, &[0, 4, b'p', b'i', b'n', b'g']);

    // Frames from the stream go back to the first packet's source.
    server
        .write_all(&[0, 4, b'p', b'o', b'n', b'g'])
        .await
        .unwrap();
    let mut packet = [0; 16];
    let (len, from) = patiently(quinn_socket.recv_from(&mut packet))
        .await
        .unwrap();
    assert_eq!((&packet[..len], from), (&b"pong"[..], udp_addr));

    // Once the peer is known, other local sockets cannot inject packets.
    let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    stranger.send_to(b"evil", udp_addr).await.unwrap();
    quinn_socket.send_to(b"again", udp_addr).await.unwrap();
    let mut frame = [0; 7];
    patiently(server.read_exact(&mut frame)).await.unwrap();
    assert_eq!(&frame, &[0, 5, b'a', b'g', b'a', b'i', b'n']);

    drop(server);
    let result = patiently(carrier).await.unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn carrier_fails_on_zero_length_frame() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    let (_, carrier) = StreamCarrier::spawn(client).unwrap();
    server.write_all(&[0, 0]).await.unwrap();
    let result = patiently(carrier).await.unwrap();
    assert!(
        matches!(result, Err(CarrierError::EmptyFrame)),
        "{result:?}"
    );
}

#[tokio::test]
async fn connection_dies_quickly_when_the_carrier_breaks() {
    let mut manager = Manager::start();
    let connection = manager.connect(Via::Carrier).await.unwrap();
    manager.cut_carriers();
    let started = tokio::time::Instant::now();
    let error = patiently(connection.closed()).await;
    assert!(
        matches!(error, tether_tunnel::quinn::ConnectionError::TimedOut),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
