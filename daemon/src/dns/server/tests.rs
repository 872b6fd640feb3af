//! The server against a fake manager and a fake original resolver on loopback: what is asked
//! where, and what each client gets back.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tether_proto::Subnets;
use tokio::net::UdpSocket;

use super::*;

/// A manager that answers with `answer` (built for its query over the control stream) and
/// counts what it is asked.
#[derive(Debug)]
struct FakeCluster {
    answer: fn(&Request) -> Answer,
    asked: Arc<AtomicUsize>,
}

impl Cluster for FakeCluster {
    fn ask(&self, query: Vec<u8>) -> Asked<'_> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let request = Request::parse(&query).expect("the daemon sends queries");
        assert_eq!(
            request.edns.map(|e| e.max_payload),
            Some(u16::MAX),
            "the manager is asked for everything"
        );
        let reply = reply::build(&request, &(self.answer)(&request), Transport::Stream);
        Box::pin(async move { Some(reply) })
    }

    fn names(&self) -> Option<ClusterNames> {
        let namespaces: BTreeSet<String> = ["ext", "dev"].map(String::from).into();
        let subnets = Subnets {
            service: vec!["10.96.0.0/16".parse().unwrap()],
            pod: vec!["10.244.0.0/24".parse().unwrap()],
        };
        Some(ClusterNames::new(Arc::new(namespaces), &subnets))
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &Name, i: u32) -> Record {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i);
    Record::from_rdata(owner.clone(), 5, RData::A(A(ip)))
}

/// The cluster: 40 addresses for any A question, NXDOMAIN for names under `dev`, a PTR for
/// reverse names.
fn cluster_answer(request: &Request) -> Answer {
    let owner = request.name().clone();
    let text = owner.to_ascii();
    if text.ends_with(".dev.") || text.ends_with(".dev.svc.") {
        return Answer::authoritative(ResponseCode::NXDomain, vec![], vec![], vec![]);
    }
    if request.qtype() == RecordType::PTR {
        let target = name("bulk.ext.svc.cluster.local.");
        let ptr = Record::from_rdata(owner, 5, RData::PTR(PTR(target)));
        return Answer::authoritative(ResponseCode::NoError, vec![ptr], vec![], vec![]);
    }
    let answers = (0..40).map(|i| a(&owner, i)).collect();
    Answer::authoritative(ResponseCode::NoError, answers, vec![], vec![])
}

/// A fake original resolver: answers every query with 40 addresses and an OPT record whether
/// asked or not (so the reply must be re-shaped), and records the names it was asked.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 1500];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..len]).unwrap();
            let owner = query.queries[0].name().clone();
            lock(&log).push(owner.to_ascii());
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.add_queries(query.queries.clone());
            reply.add_answers((100..140).map(|i| a(&owner, i)));
            reply.set_edns(Edns::new());
            socket
                .send_to(&reply.to_vec().unwrap(), peer)
                .await
                .unwrap();
        }
    });
    (addr, asked)
}

struct Setup {
    dns: Dns,
    cluster_asked: Arc<AtomicUsize>,
    upstream_asked: Arc<Mutex<Vec<String>>>,
}

async fn setup() -> Setup {
    let (addr, upstream_asked) = upstream().await;
    let cluster_asked = Arc::new(AtomicUsize::new(0));
    let cluster = FakeCluster {
        answer: cluster_answer,
        asked: cluster_asked.clone(),
    };
    Setup {
        dns: Dns::new("cluster.local", vec![addr], Box::new(cluster)),
        cluster_asked,
        upstream_asked,
    }
}

fn query(id: u16, qname: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Sends `packet` over `transport`; checks the id and the OPT rule and returns the reply.
async fn ask(dns: &Dns, packet: &[u8], transport: Transport) -> Message {
    let reply = dns.handle(packet, transport).await.expect("a reply");
    if transport == Transport::Udp {
        let asked = Message::from_vec(packet).unwrap();
        let limit = if asked.edns.is_some() { 1232 } else { 512 };
        assert!(reply.len() <= limit, "{} bytes over UDP", reply.len());
    }
    let reply = Message::from_vec(&reply).unwrap();
    let asked = Message::from_vec(packet).unwrap();
    assert_eq!(
        reply.metadata.id, asked.metadata.id,
        "the reply has the query's id"
    );
    assert_eq!(reply.queries, asked.queries);
    assert_eq!(
        reply.edns.is_some(),
        asked.edns.is_some(),
        "OPT exactly when asked"
    );
    if transport == Transport::Stream {
        assert!(!reply.metadata.truncation, "never TC over TCP");
    }
    reply
}

#[tokio::test]
async fn namespace_suffixed_and_reverse_names_never_reach_the_original_resolver() {
    let s = setup().await;
    for qname in ["bulk.ext.", "bulk.ext.svc.", "h.ext.svc.cluster.local."] {
        let reply = ask(
            &s.dns,
            &query(7, qname, RecordType::A, true),
            Transport::Udp,
        )
        .await;
        assert_eq!(reply.answers.len(), 40, "{qname}");
    }
    let reply = ask(
        &s.dns,
        &query(8, "5.0.96.10.in-addr.arpa.", RecordType::PTR, false),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(s.cluster_asked.load(Ordering::SeqCst), 4);
    assert!(lock(&s.upstream_asked).is_empty());
}

#[tokio::test]
async fn a_namespace_shadowing_a_tld_gives_way_when_the_cluster_has_no_such_name() {
    let s = setup().await;
    let reply = ask(
        &s.dns,
        &query(9, "example.dev.", RecordType::A, false),
        Transport::Stream,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 40, "the original resolver's answer");
    // `x.ns.svc` is the cluster's form: its NXDOMAIN is final.
    let reply = ask(
        &s.dns,
        &query(10, "x.dev.svc.", RecordType::A, false),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(*lock(&s.upstream_asked), ["example.dev."]);
}

#[tokio::test]
async fn an_answer_cached_by_an_edns_query_serves_plain_ones_within_their_limits() {
    let s = setup().await;
    let qname = "h2head.ext.svc.cluster.local.";
    let reply = ask(
        &s.dns,
        &query(1, qname, RecordType::A, true),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.answers.len(), 40);
    assert!(!reply.metadata.truncation);
    // musl and glibc: no EDNS, 512 bytes, TC, no OPT; then the whole answer over TCP.
    let reply = ask(
        &s.dns,
        &query(2, qname, RecordType::A, false),
        Transport::Udp,
    )
    .await;
    assert!(reply.metadata.truncation);
    assert!(!reply.answers.is_empty() && reply.answers.len() < 40);
    let reply = ask(
        &s.dns,
        &query(3, qname, RecordType::A, false),
        Transport::Stream,
    )
    .await;
    assert_eq!(reply.answers.len(), 40);
    assert_eq!(
        s.cluster_asked.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );
}

#[tokio::test]
async fn the_original_resolvers_answers_are_shaped_for_the_client_and_cached() {
    let s = setup().await;
    let qname = "big.example.org.";
    // The original resolver sent 40 records and an OPT record nobody asked for.
    let reply = ask(
        &s.dns,
        &query(4, qname, RecordType::A, false),
        Transport::Udp,
    )
    .await;
    assert!(reply.metadata.truncation);
    let reply = ask(
        &s.dns,
        &query(5, qname, RecordType::A, false),
        Transport::Stream,
    )
    .await;
    assert_eq!(reply.answers.len(), 40);
    let reply = ask(
        &s.dns,
        &query(6, qname, RecordType::A, true),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.answers.len(), 40);
    assert_eq!(
        lock(&s.upstream_asked).len(),
        1,
        "once, then from the cache"
    );
    assert_eq!(s.cluster_asked.load(Ordering::SeqCst), 0);
}

/// A manager that cannot be reached (no session).
#[derive(Debug)]
struct Unreachable;

impl Cluster for Unreachable {
    fn ask(&self, _: Vec<u8>) -> Asked<'_> {
        Box::pin(async { None })
    }
    fn names(&self) -> Option<ClusterNames> {
        None
    }
}

#[tokio::test]
async fn servfail_when_the_cluster_cannot_be_asked_and_garbage_is_dropped() {
    let dns = Dns::new("cluster.local", vec![], Box::new(Unreachable));
    let packet = query(11, "hello.default.svc.cluster.local.", RecordType::A, false);
    let reply = ask(&dns, &packet, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(dns.handle(&[1, 2, 3], Transport::Udp).await, None);
    let mut cut = packet.clone();
    cut.truncate(15);
    let formerr = dns.handle(&cut, Transport::Udp).await.unwrap();
    assert_eq!(&formerr[..4], &[0, 11, 0x81, 0x81]);
}
