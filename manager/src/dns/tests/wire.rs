//! Packet-level behaviour: EDNS, truncation, malformed input, SERVFAIL.

use super::*;

#[test]
fn edns_and_truncation() {
    let with_edns = query_with("hello.default.svc.cluster.local.", RecordType::A, |m| {
        m.set_edns(Edns::new());
    });
    let Outcome::Answer(bytes) = answer(&with_edns, &view(), "default") else {
        panic!()
    };
    assert!(
        Message::from_vec(&bytes).unwrap().edns.is_some(),
        "an EDNS query gets OPT back"
    );

    // 60 endpoints do not fit 512 bytes: a plain UDP client gets what fits and is told to retry
    // over TCP.
    let mut view = view();
    let many = (0..60)
        .map(|i| endpoint(&format!("10.244.1.{i}"), None, true))
        .collect();
    view.endpoints.insert(key("default", "db"), many);
    let name = "db.default.svc.cluster.local.";
    let message = ask_in(&view, "default", name, RecordType::A);
    assert!(message.metadata.truncation);
    assert!((1..60).contains(&message.answers.len()));
    assert!(message.edns.is_none(), "no OPT the client did not ask for");
    // Over the control stream (how the workstation asks) the whole answer, never TC.
    let Outcome::Answer(bytes) = super::super::answer(
        &query(name, RecordType::A),
        Transport::Stream,
        &view,
        "default",
    ) else {
        panic!()
    };
    let message = Message::from_vec(&bytes).unwrap();
    assert!(!message.metadata.truncation);
    assert_eq!(message.answers.len(), 60);
}

#[test]
fn malformed_packets() {
    let view = view();
    // Too short for a header, or a response rather than a query: ignored.
    assert_eq!(
        answer(&[0xbe, 0xef, 0x01], &view, "default"),
        Outcome::Ignore
    );
    let mut response = query("hello.default.", RecordType::A);
    response[2] |= 0x80;
    assert_eq!(answer(&response, &view, "default"), Outcome::Ignore);

    // A header claiming a question that is not there: FORMERR with the query's id.
    let mut cut = query("hello.default.svc.cluster.local.", RecordType::A);
    cut.truncate(20);
    let Outcome::Answer(bytes) = answer(&cut, &view, "default") else {
        panic!()
    };
    assert_eq!(bytes, [0xbe, 0xef, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);

    // Two questions: FORMERR. A non-QUERY opcode: NOTIMP.
    let two = query_with("hello.default.", RecordType::A, |m| {
        m.add_query(Query::query(
            Name::from_ascii("db.default.").unwrap(),
            RecordType::A,
        ));
    });
    let Outcome::Answer(bytes) = answer(&two, &view, "default") else {
        panic!()
    };
    assert_eq!(
        Message::from_vec(&bytes).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    let status = query_with("hello.default.", RecordType::A, |m| {
        m.metadata.op_code = OpCode::Status
    });
    let Outcome::Answer(bytes) = answer(&status, &view, "default") else {
        panic!()
    };
    assert_eq!(
        Message::from_vec(&bytes).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn garbage_never_panics() {
    let view = view();
    let seed = query(
        "_http._tcp.hello.default.svc.cluster.local.",
        RecordType::SRV,
    );
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..2000 {
        let mut packet = seed.clone();
        for _ in 0..(round % 8 + 1) {
            // xorshift: deterministic, no clock, no rand crate.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % packet.len();
            packet[at] = (state >> 32) as u8;
        }
        packet.truncate((state >> 40) as usize % (packet.len() + 1));
        let _ = answer(&packet, &view, "default");
    }
}

#[tokio::test]
async fn no_upstream_is_servfail_echoing_the_question() {
    let resolver = Resolver::new(
        crate::view::SharedView::new(view()),
        Forwarder::new(Vec::new(), FORWARD_TIMEOUT),
    );
    let asked = query("example.com.", RecordType::A);
    let reply = resolver.resolve(&asked, "default").await.unwrap();
    let message = Message::from_vec(&reply).unwrap();
    assert_eq!(message.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(message.metadata.id, 0xbeef);
    assert_eq!(message.queries[0].name().to_ascii(), "example.com.");
    assert!(resolver.resolve(&[1, 2, 3], "default").await.is_none());
}
