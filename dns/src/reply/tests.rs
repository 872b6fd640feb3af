//! Every reply shape: EDNS or not × UDP or stream × fits or not, answers cached from one kind of
//! query served to the other, and the exact bytes of the small cases.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, RecordType};

use super::*;

/// `example.com. A`, id 0xbeef, RD, no EDNS: the bytes glibc and musl send.
const PLAIN_QUERY: [u8; 29] = [
    0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, //
    0x00, 0x01, 0x00, 0x01,
];

/// The same with an OPT record: payload 1232, DO (what `dig` sends, with DO).
fn edns_query() -> Vec<u8> {
    let mut packet = PLAIN_QUERY.to_vec();
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0x00, 0, 0]);
    packet
}

/// `example.com. 30 A 192.0.2.1`, as its answer record: a pointer to the question's name.
const ANSWER_RECORD: [u8; 16] = [
    0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x04, 192, 0, 2, 1,
];

fn request(packet: &[u8]) -> Request {
    Request::parse(packet).unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &str, i: u32) -> Record {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + i);
    Record::from_rdata(name(owner), 30, RData::A(A(ip)))
}

fn example() -> Answer {
    let mut answer = Answer::empty(ResponseCode::NoError);
    answer.answers = vec![Record::from_rdata(
        name("example.com."),
        30,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    )];
    answer
}

/// `count` A records for `many.ext.svc.cluster.local.`: 40 make about 700 bytes.
fn many(count: u32) -> Answer {
    let mut answer = Answer::empty(ResponseCode::NoError);
    answer.authoritative = true;
    answer.answers = (0..count)
        .map(|i| a("many.ext.svc.cluster.local.", i))
        .collect();
    answer
}

fn many_query(edns: Option<u16>) -> Request {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        name("many.ext.svc.cluster.local."),
        RecordType::A,
    ));
    if let Some(payload) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    request(&message.to_vec().unwrap())
}

/// Decodes a reply and checks what every reply must be: a response with the query's id and
/// question, OPT exactly when the query had one.
#[track_caller]
fn decode(bytes: &[u8], request: &Request) -> Message {
    let message = Message::from_vec(bytes).unwrap();
    assert_eq!(
        message.metadata.id, request.id,
        "the reply carries the query's id"
    );
    assert_eq!(message.metadata.message_type, MessageType::Response);
    assert_eq!(message.queries, std::slice::from_ref(&request.query));
    assert_eq!(
        message.edns.is_some(),
        request.edns.is_some(),
        "OPT in the reply exactly when the query had one"
    );
    message
}

#[test]
fn plain_query_small_answer_exact_bytes() {
    let reply = build(&request(&PLAIN_QUERY), &example(), Transport::Udp);
    let mut expected = PLAIN_QUERY.to_vec();
    // QR RD | RA, one answer.
    expected[2..4].copy_from_slice(&[0x81, 0x80]);
    expected[7] = 1;
    expected.extend_from_slice(&ANSWER_RECORD);
    assert_eq!(reply, expected);
    // The same answer over TCP is the same message (the length prefix is the transport's).
    assert_eq!(
        build(&request(&PLAIN_QUERY), &example(), Transport::Stream),
        expected
    );
}

#[test]
fn edns_query_small_answer_exact_bytes() {
    let reply = build(&request(&edns_query()), &example(), Transport::Udp);
    let mut expected = PLAIN_QUERY.to_vec();
    expected[2..4].copy_from_slice(&[0x81, 0x80]);
    expected[7] = 1;
    expected[11] = 1;
    expected.extend_from_slice(&ANSWER_RECORD);
    // OPT: root, type 41, our payload 1232, version 0, DO echoed, no options.
    expected.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0x00, 0, 0]);
    assert_eq!(reply, expected);
}

#[test]
fn no_edns_udp_does_not_fit_keeps_what_fits_with_tc() {
    let request = many_query(None);
    let reply = build(&request, &many(40), Transport::Udp);
    assert!(reply.len() <= 512, "{} bytes", reply.len());
    let message = decode(&reply, &request);
    assert!(message.metadata.truncation);
    assert!(
        (20..40).contains(&message.answers.len()),
        "as many whole records as fit: {}",
        message.answers.len()
    );
    assert_eq!(
        message.answers[..],
        many(40).answers[..message.answers.len()]
    );
}

#[test]
fn no_edns_stream_gets_everything_without_tc() {
    let request = many_query(None);
    let reply = build(&request, &many(40), Transport::Stream);
    assert!(reply.len() > 512);
    let message = decode(&reply, &request);
    assert!(!message.metadata.truncation, "never TC over TCP");
    assert_eq!(message.answers.len(), 40);
}

#[test]
fn edns_udp_fits_the_advertised_size() {
    let request = many_query(Some(1232));
    let reply = build(&request, &many(40), Transport::Udp);
    assert!((512..=1232).contains(&reply.len()), "{}", reply.len());
    let message = decode(&reply, &request);
    assert!(!message.metadata.truncation);
    assert_eq!(message.answers.len(), 40);
    assert_eq!(message.edns.unwrap().max_payload(), ADVERTISED_PAYLOAD);
}

#[test]
fn edns_udp_does_not_fit_is_capped_and_truncated() {
    // The client says 4096; a reply over 1232 bytes is not sent over UDP anyway.
    let request = many_query(Some(4096));
    let reply = build(&request, &many(100), Transport::Udp);
    assert!(reply.len() <= usize::from(MAX_UDP_PAYLOAD));
    let message = decode(&reply, &request);
    assert!(message.metadata.truncation);
    assert!(message.answers.len() < 100);
    // A client that says less than 512 means 512.
    let small = many_query(Some(100));
    assert_eq!(limit(&small, Transport::Udp), 512);
    let reply = build(&small, &many(20), Transport::Udp);
    assert!(!decode(&reply, &small).metadata.truncation);
}

#[test]
fn edns_stream_gets_everything_without_tc() {
    let request = many_query(Some(1232));
    let reply = build(&request, &many(100), Transport::Stream);
    let message = decode(&reply, &request);
    assert!(!message.metadata.truncation);
    assert_eq!(message.answers.len(), 100);
}

#[test]
fn an_answer_cached_from_an_edns_query_serves_a_plain_one_and_back() {
    // The manager answered an EDNS query with a 700-byte message carrying OPT.
    let edns = many_query(Some(1232));
    let first = build(&edns, &many(40), Transport::Stream);
    let cached = Answer::from_response(&first).unwrap();
    assert_eq!(cached, many(40), "the cache holds records, not the message");

    // A plain UDP query (musl, glibc) gets at most 512 bytes, no OPT, TC.
    let plain = Request {
        id: 0x4321,
        ..many_query(None)
    };
    let reply = build(&plain, &cached, Transport::Udp);
    assert!(reply.len() <= 512);
    let message = decode(&reply, &plain);
    assert!(message.metadata.truncation);
    // Its TCP retry gets all 40, still without OPT.
    let message = decode(&build(&plain, &cached, Transport::Stream), &plain);
    assert_eq!(message.answers.len(), 40);
    assert!(!message.metadata.truncation);

    // And the other way: filled by a plain TCP query, read by an EDNS UDP one.
    let filled = Answer::from_response(&build(&plain, &many(40), Transport::Stream)).unwrap();
    let message = decode(&build(&edns, &filled, Transport::Udp), &edns);
    assert_eq!(message.answers.len(), 40);
    assert!(!message.metadata.truncation);
}

#[test]
fn additional_records_go_first_and_without_tc() {
    // One SRV answer whose glue (40 addresses) does not fit 512 bytes: the answer is whole, so
    // no TC (RFC 2181 §9); the client asks for the addresses if it needs them.
    let owner = "_http._tcp.many.ext.svc.cluster.local.";
    let mut answer = many(40);
    answer.additionals = std::mem::take(&mut answer.answers);
    let target = name("many.ext.svc.cluster.local.");
    answer.answers = vec![Record::from_rdata(
        name(owner),
        5,
        RData::SRV(SRV::new(0, 100, 80, target)),
    )];
    let mut message = Message::new(1, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name(owner), RecordType::SRV));
    let request = request(&message.to_vec().unwrap());
    let reply = decode(&build(&request, &answer, Transport::Udp), &request);
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 1);
    assert!(reply.additionals.is_empty());
}

#[test]
fn records_carry_the_askers_spelling_of_the_name() {
    let mut packet = PLAIN_QUERY.to_vec();
    packet[14] = b'X'; // eXample.com
    let request = request(&packet);
    let message = decode(&build(&request, &example(), Transport::Udp), &request);
    assert_eq!(message.answers[0].name.to_ascii(), "eXample.com.");
}

#[test]
fn edns_version_and_extended_codes() {
    // EDNS version 1: BADVERS, which only an OPT record can carry.
    let mut packet = edns_query();
    packet[PLAIN_QUERY.len() + 6] = 1;
    let request = request(&packet);
    let message = Message::from_vec(&build(&request, &example(), Transport::Udp)).unwrap();
    // 16 is BADVERS in an OPT record (hickory reads it as BADSIG, the same number).
    assert_eq!(u16::from(message.metadata.response_code), 16);
    assert_eq!(message.edns.map(|e| e.version()), Some(0));
    assert!(message.answers.is_empty());
    // An extended code for a client without EDNS cannot be said: SERVFAIL.
    let plain = Request::parse(&PLAIN_QUERY).unwrap();
    let reply = build(
        &plain,
        &Answer::empty(ResponseCode::BADCOOKIE),
        Transport::Udp,
    );
    assert_eq!(&reply[2..4], &[0x81, 0x82]);
}

#[test]
fn authentic_data_only_for_clients_that_understand_it() {
    let mut answer = example();
    answer.authentic_data = true;
    let plain = request(&PLAIN_QUERY);
    assert_eq!(build(&plain, &answer, Transport::Udp)[3] & 0x20, 0);
    let dnssec_ok = request(&edns_query());
    assert_ne!(build(&dnssec_ok, &answer, Transport::Udp)[3] & 0x20, 0);
}

#[test]
fn relayed_packets_fit_or_become_tc() {
    let plain = request(&PLAIN_QUERY);
    let mut small = PLAIN_QUERY.to_vec();
    small[2] |= 0x80;
    assert_eq!(relay(&plain, &small, Transport::Udp), small);
    let big = vec![0u8; 600];
    let tc = decode(&relay(&plain, &big, Transport::Udp), &plain);
    assert!(tc.metadata.truncation);
    assert_eq!(relay(&plain, &big, Transport::Stream).len(), 600);
}

#[test]
fn error_replies_echo_the_question() {
    let plain = request(&PLAIN_QUERY);
    let message = decode(
        &error(&plain, ResponseCode::ServFail, Transport::Udp),
        &plain,
    );
    assert_eq!(message.metadata.response_code, ResponseCode::ServFail);
}
