//! The DNS forwarding driver against fake upstream resolvers on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tether_dns::{Request, Transport};
use tether_manager::dns::{Forwarder, Resolver};
use tether_manager::view::{key, ClusterView, ServiceAddress, ServiceInfo, SharedView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const TIMEOUT: Duration = Duration::from_millis(300);

fn query(name: &str) -> Vec<u8> {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

/// `forwarder`'s reply to `packet`, as the manager sends it over the control stream.
async fn forward(forwarder: &Forwarder, packet: &[u8]) -> Vec<u8> {
    let request = Request::parse(packet).unwrap();
    forwarder.forward(&request, packet, Transport::Stream).await
}

/// The upstream's answer: `ip` for whatever was asked, TC set if `truncated`.
fn reply(query: &[u8], ip: Ipv4Addr, truncated: bool) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.truncation = truncated;
    let name = request.queries[0].name().clone();
    response.add_queries(request.queries.clone());
    if !truncated {
        response.add_answer(Record::from_rdata(name, 60, RData::A(A(ip))));
    }
    response.to_vec().unwrap()
}

/// A UDP socket on loopback to play an upstream resolver.
async fn udp_upstream() -> (SocketAddr, UdpSocket) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    (addr, socket)
}

/// Answers one query with `ip`, after first sending a stray packet with another id.
async fn serve_udp_once(socket: UdpSocket, ip: Ipv4Addr, truncated: bool) {
    let mut buf = vec![0; 1500];
    let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
    let mut stray = reply(&buf[..len], ip, false);
    stray[0] ^= 0xff;
    socket.send_to(&stray, peer).await.unwrap();
    socket
        .send_to(&reply(&buf[..len], ip, truncated), peer)
        .await
        .unwrap();
}

fn answer_ips(packet: &[u8]) -> (ResponseCode, Vec<IpAddr>) {
    let message = Message::from_vec(packet).unwrap();
    let ips = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    (message.metadata.response_code, ips)
}

#[tokio::test]
async fn returns_the_upstream_answer_skipping_strays() {
    let ip = Ipv4Addr::new(192, 0, 2, 1);
    let (addr, socket) = udp_upstream().await;
    let server = tokio::spawn(serve_udp_once(socket, ip, false));
    let forwarder = Forwarder::new(vec![addr], TIMEOUT);
    let answer = forward(&forwarder, &query("example.com.")).await;
    assert_eq!(
        answer_ips(&answer),
        (ResponseCode::NoError, vec![IpAddr::V4(ip)])
    );
    server.await.unwrap();
}

#[tokio::test]
async fn servfail_when_no_upstream_answers_and_the_next_one_is_tried() {
    let (silent, _keep) = udp_upstream().await;
    let started = Instant::now();
    let answer = forward(
        &Forwarder::new(vec![silent], TIMEOUT),
        &query("example.com."),
    )
    .await;
    assert_eq!(answer_ips(&answer), (ResponseCode::ServFail, vec![]));
    assert!(started.elapsed() >= TIMEOUT && started.elapsed() < TIMEOUT * 5);
    assert_eq!(
        &answer[..2],
        &[0x42, 0x42],
        "SERVFAIL carries the query's id"
    );

    let ip = Ipv4Addr::new(192, 0, 2, 2);
    let (good, socket) = udp_upstream().await;
    let server = tokio::spawn(serve_udp_once(socket, ip, false));
    let answer = forward(
        &Forwarder::new(vec![silent, good], TIMEOUT),
        &query("example.com."),
    )
    .await;
    assert_eq!(answer_ips(&answer).1, vec![IpAddr::V4(ip)]);
    server.await.unwrap();
}

#[tokio::test]
async fn truncated_answers_are_retried_over_tcp() {
    let ip = Ipv4Addr::new(192, 0, 2, 3);
    // UDP and TCP on the same loopback port, as a resolver listens.
    let (addr, socket, listener) = loop {
        let (addr, socket) = udp_upstream().await;
        if let Ok(listener) = TcpListener::bind(addr).await {
            break (addr, socket, listener);
        }
    };
    let udp = tokio::spawn(serve_udp_once(socket, ip, true));
    let tcp = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut query = vec![0; usize::from(len)];
        stream.read_exact(&mut query).await.unwrap();
        let answer = reply(&query, ip, false);
        stream.write_u16(answer.len() as u16).await.unwrap();
        stream.write_all(&answer).await.unwrap();
    });
    let answer = forward(
        &Forwarder::new(vec![addr], TIMEOUT),
        &query("big.example.com."),
    )
    .await;
    assert_eq!(
        answer_ips(&answer),
        (ResponseCode::NoError, vec![IpAddr::V4(ip)])
    );
    udp.await.unwrap();
    tcp.await.unwrap();
}

#[tokio::test]
async fn forwarded_answers_are_rebuilt_for_the_query() {
    // An upstream that adds an OPT record to its answer to a query without one, and a TTL.
    let (addr, socket) = udp_upstream().await;
    let server = tokio::spawn(async move {
        let mut buf = vec![0; 1500];
        let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
        let mut answer =
            Message::from_vec(&reply(&buf[..len], Ipv4Addr::new(192, 0, 2, 5), false)).unwrap();
        answer.set_edns(hickory_proto::op::Edns::new());
        socket
            .send_to(&answer.to_vec().unwrap(), peer)
            .await
            .unwrap();
    });
    let answer = forward(&Forwarder::new(vec![addr], TIMEOUT), &query("example.com.")).await;
    let message = Message::from_vec(&answer).unwrap();
    assert!(message.edns.is_none(), "no OPT for a query without one");
    assert_eq!(message.metadata.id, 0x4242);
    assert_eq!(message.answers.len(), 1);
    server.await.unwrap();
}

#[tokio::test]
async fn resolver_answers_cluster_names_itself_and_forwards_the_rest() {
    let mut view = ClusterView::default();
    view.namespaces.insert("default".into());
    let service = ServiceInfo {
        address: ServiceAddress::ClusterIp(vec!["10.96.0.10".parse().unwrap()]),
        ports: vec![],
        publish_not_ready: false,
    };
    view.services.insert(key("default", "hello"), service);

    let upstream_ip = Ipv4Addr::new(192, 0, 2, 4);
    let (addr, socket) = udp_upstream().await;
    let server = tokio::spawn(serve_udp_once(socket, upstream_ip, false));
    let resolver = Resolver::new(SharedView::new(view), Forwarder::new(vec![addr], TIMEOUT));

    let cluster = resolver
        .resolve(&query("hello.default.svc.cluster.local."), "default")
        .await
        .unwrap();
    assert_eq!(
        answer_ips(&cluster).1,
        vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
    );
    let short = resolver.resolve(&query("hello."), "default").await.unwrap();
    assert_eq!(
        answer_ips(&short).1,
        vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
    );
    let outside = resolver
        .resolve(&query("example.com."), "default")
        .await
        .unwrap();
    assert_eq!(answer_ips(&outside).1, vec![IpAddr::V4(upstream_ip)]);
    server.await.unwrap();

    assert_eq!(resolver.resolve(&[1, 2, 3], "default").await, None);
}
