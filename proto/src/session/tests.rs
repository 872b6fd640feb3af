use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::frame::{encode, DecodeError, Decoded, FrameDecoder};
use crate::message::*;
use crate::PROTOCOL_VERSION;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn hello(role: Role) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        client: "a@b".into(),
        namespace: "ns".into(),
        role,
    }
}

fn welcome() -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        session_id: "s-1".into(),
        cluster_domain: "cluster.local".into(),
        subnets: Subnets::default(),
    }
}

fn frame(msg: impl Into<Message>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(&msg.into(), &mut buf).unwrap();
    buf.to_vec()
}

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let mut dec = FrameDecoder::new();
    dec.push(bytes);
    let msgs = std::iter::from_fn(|| dec.poll())
        .map(|item| match item {
            Ok(Decoded::Message(msg)) => msg,
            other => panic!("not a message: {other:?}"),
        })
        .collect();
    assert_eq!(dec.finish(), Ok(()));
    msgs
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn sent_bytes(s: &mut Session) -> Vec<u8> {
    std::iter::from_fn(|| s.poll_transmit()).flatten().collect()
}

fn sent(s: &mut Session) -> Vec<Message> {
    decode_all(&sent_bytes(s))
}

/// What an I/O loop does: the one's output is the other's input.
fn pipe(from: &mut Session, to: &mut Session, now: Instant) {
    while let Some(bytes) = from.poll_transmit() {
        to.handle_input(now, &bytes);
    }
}

fn closed(reason: CloseReason) -> Event {
    Event::Closed(reason)
}

fn failed(error: SessionError) -> Event {
    Event::Closed(CloseReason::Error(error))
}

/// A client and a server past the handshake at `t0`, with nothing left to take.
fn established(t0: Instant) -> (Session, Session) {
    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    let mut server = Session::server(SessionConfig::server(), t0);
    pipe(&mut client, &mut server, t0);
    assert!(matches!(events(&mut server)[..], [Event::Hello(_)]));
    server.accept(t0, welcome()).unwrap();
    pipe(&mut server, &mut client, t0);
    assert_eq!(events(&mut client), [Event::Established(welcome())]);
    (client, server)
}

#[test]
fn handshake_from_both_sides() {
    let t0 = Instant::now();
    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    let mut server = Session::server(SessionConfig::server(), t0);
    // The version is one varint byte.
    let version = u8::try_from(PROTOCOL_VERSION).unwrap();
    let hello_bytes = [
        0, 0, 0, 11, 0, 1, version, 3, b'a', b'@', b'b', 2, b'n', b's', 0,
    ];
    let first = client.poll_transmit().unwrap();
    assert_eq!(&first[..], hello_bytes);
    assert_eq!(client.poll_transmit(), None);

    server.handle_input(t0, &first);
    assert_eq!(events(&mut server), [Event::Hello(hello(Role::Client))]);
    assert!(!server.is_established());
    assert_eq!(server.poll_transmit(), None, "nothing before accept");
    server.accept(t0, welcome()).unwrap();
    assert!(server.is_established());
    server
        .send(Namespaces {
            names: vec!["ns".into()],
        })
        .unwrap();

    pipe(&mut server, &mut client, t0);
    assert_eq!(
        events(&mut client),
        [
            Event::Established(welcome()),
            Event::Message(
                Namespaces {
                    names: vec!["ns".into()]
                }
                .into()
            ),
        ]
    );
    assert!(client.is_established());
    assert!(!client.is_closed() && !server.is_closed());
}

#[test]
fn an_agent_sends_agent_hello_before_welcome() {
    let t0 = Instant::now();
    let mut agent = Session::client(hello(Role::Agent), SessionConfig::client(), t0).unwrap();
    let agent_hello = AgentHello {
        workload: "Deployment/orders".into(),
        pod: "orders-1".into(),
        ports: vec![8080],
        token: "t".into(),
    };
    agent.send(agent_hello.clone()).unwrap();
    assert_eq!(
        agent
            .request(
                t0,
                DnsQuery {
                    id: 0,
                    packet: vec![]
                }
            )
            .unwrap_err()
            .to_string(),
        SendError::NotEstablished.to_string(),
        "requests wait for Welcome"
    );
    let mut server = Session::server(SessionConfig::server(), t0);
    pipe(&mut agent, &mut server, t0);
    assert_eq!(
        events(&mut server),
        [
            Event::Hello(hello(Role::Agent)),
            Event::Message(agent_hello.into())
        ]
    );
    server.accept(t0, welcome()).unwrap();
    server.send(AgentIntercepts { intercepts: vec![] }).unwrap();
    pipe(&mut server, &mut agent, t0);
    assert_eq!(
        events(&mut agent),
        [
            Event::Established(welcome()),
            Event::Message(AgentIntercepts { intercepts: vec![] }.into())
        ]
    );
}

#[test]
fn hello_of_another_version_gets_the_managers_error() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    // Hello version 1 from "a@b" for namespace "ns", role client.
    server.handle_input(
        t0,
        &[0, 0, 0, 11, 0, 1, 1, 3, b'a', b'@', b'b', 2, b'n', b's', 0],
    );
    assert_eq!(
        events(&mut server),
        [failed(SessionError::Version { peer: 1 })]
    );
    let error = Error {
        code: ErrorCode::Other,
        message: "protocol version 1 is not supported; upgrade tether".into(),
    };
    assert_eq!(sent(&mut server), [error.into()]);
    assert!(server.is_closed());
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn welcome_of_another_version_closes_the_client() {
    let t0 = Instant::now();
    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    let _hello = client.poll_transmit();
    client.handle_input(
        t0,
        &frame(Welcome {
            version: PROTOCOL_VERSION + 1,
            ..welcome()
        }),
    );
    assert_eq!(
        events(&mut client),
        [failed(SessionError::Version {
            peer: PROTOCOL_VERSION + 1
        })]
    );
    assert!(matches!(&sent(&mut client)[..], [Message::Error(_)]));
    assert!(!client.is_established());
}

#[test]
fn the_first_frame_must_be_hello() {
    let t0 = Instant::now();
    for (bytes, kind) in [
        (frame(Ping { seq: 1 }), 6),
        (
            frame(DnsQuery {
                id: 1,
                packet: vec![],
            }),
            4,
        ),
    ] {
        let mut server = Session::server(SessionConfig::server(), t0);
        server.handle_input(t0, &bytes);
        let error = SessionError::Unexpected {
            expected: "Hello",
            kind,
        };
        assert_eq!(events(&mut server), [failed(error.clone())]);
        let told = Error {
            code: ErrorCode::Other,
            message: error.to_string(),
        };
        assert_eq!(sent(&mut server), [told.into()]);
    }
}

#[test]
fn a_malformed_hello_closes_with_an_error() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    server.handle_input(t0, &[0, 0, 0, 2, 0, 1]); // Hello without payload
    let [Event::Closed(CloseReason::Error(SessionError::BadHandshake { expected, source }))] =
        &events(&mut server)[..]
    else {
        panic!("not closed for a bad handshake")
    };
    assert_eq!(*expected, "Hello");
    assert!(matches!(source, DecodeError::Malformed { kind: 1, .. }));
    let told = "undecodable frame instead of Hello: malformed payload in frame of kind 1";
    assert!(matches!(&sent(&mut server)[..], [Message::Error(e)] if e.message == told));

    // A malformed frame of another kind is no Hello either.
    let mut server = Session::server(SessionConfig::server(), t0);
    server.handle_input(t0, &[0, 0, 0, 2, 0, 4]); // DnsQuery without payload
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Closed(CloseReason::Error(
            SessionError::BadHandshake {
                source: DecodeError::Malformed { kind: 4, .. },
                ..
            }
        ))]
    ));
}

#[test]
fn an_error_instead_of_welcome_is_a_refusal() {
    let t0 = Instant::now();
    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    let mut server = Session::server(SessionConfig::server(), t0);
    pipe(&mut client, &mut server, t0);
    let _hello = events(&mut server);
    let no = Error {
        code: ErrorCode::NotPermitted,
        message: "user ann may not create sessions".into(),
    };
    server.refuse(no.clone());
    assert_eq!(events(&mut server), [closed(CloseReason::Local)]);
    assert_eq!(
        server.accept(t0, welcome()).unwrap_err().to_string(),
        "the session is closed"
    );
    pipe(&mut server, &mut client, t0);
    assert_eq!(events(&mut client), [failed(SessionError::Refused(no))]);
    assert_eq!(client.poll_transmit(), None, "no answer to a refusal");
}

#[test]
fn replies_match_requests_in_any_order() {
    let t0 = Instant::now();
    let (mut client, mut server) = established(t0);
    let dns = client
        .request(
            t0,
            DnsQuery {
                id: 99,
                packet: vec![1],
            },
        )
        .unwrap();
    let create = CreateIntercept {
        req: 99,
        name: "orders".into(),
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        port: 8080,
        service_port: "http".into(),
        filter: InterceptFilter::default(),
        mode: Default::default(),
    };
    let intercept = client.request(t0, create.clone()).unwrap();
    let credential_request = AgentCredentialRequest {
        req: 99,
        namespace: "shop".into(),
        nonce: "n".into(),
    };
    let credential = client.request(t0, credential_request.clone()).unwrap();
    assert_eq!(client.pending_requests(), 3);
    let ids = [dns, intercept, credential];
    assert!(ids.iter().all(|&id| id != 0 && id != 99));
    assert!(dns != intercept && intercept != credential && dns != credential);

    pipe(&mut client, &mut server, t0);
    assert_eq!(
        events(&mut server),
        [
            Event::Message(
                DnsQuery {
                    id: dns,
                    packet: vec![1]
                }
                .into()
            ),
            Event::Message(
                CreateIntercept {
                    req: intercept,
                    ..create
                }
                .into()
            ),
            Event::Message(
                AgentCredentialRequest {
                    req: credential,
                    ..credential_request
                }
                .into()
            ),
        ]
    );
    let refused = Error {
        code: ErrorCode::NotPermitted,
        message: "no".into(),
    };
    let answers = [
        Reply::AgentCredentialReply(AgentCredentialReply {
            req: credential,
            result: Err(refused),
        }),
        Reply::DnsAnswer(DnsAnswer {
            id: dns,
            packet: vec![2],
        }),
        Reply::InterceptReply(InterceptReply {
            req: intercept,
            result: Ok(InterceptState::default()),
        }),
    ];
    for answer in &answers {
        let msg = match answer.clone() {
            Reply::DnsAnswer(m) => Message::DnsAnswer(m),
            Reply::InterceptReply(m) => Message::InterceptReply(m),
            Reply::AgentCredentialReply(m) => Message::AgentCredentialReply(m),
        };
        assert_eq!(answer.kind(), msg.kind());
        server.send(msg).unwrap();
    }
    pipe(&mut server, &mut client, t0);
    let expected: Vec<Event> = answers
        .into_iter()
        .map(|reply| Event::Reply {
            id: reply.id(),
            reply,
        })
        .collect();
    assert_eq!(events(&mut client), expected);
    assert_eq!(client.pending_requests(), 0);
}

#[test]
fn an_answer_to_no_pending_request_is_dropped() {
    let t0 = Instant::now();
    let (mut client, _server) = established(t0);
    let id = client
        .request(
            t0,
            DnsQuery {
                id: 0,
                packet: vec![],
            },
        )
        .unwrap();
    client.handle_input(
        t0,
        &frame(DnsAnswer {
            id: id + 100,
            packet: vec![],
        }),
    );
    // The right id with the wrong kind answers nothing either.
    let wrong_kind = InterceptReply {
        req: id,
        result: Ok(InterceptState::default()),
    };
    client.handle_input(t0, &frame(wrong_kind));
    assert_eq!(
        events(&mut client),
        [
            Event::Unmatched {
                kind: 5,
                id: id + 100
            },
            Event::Unmatched { kind: 16, id },
        ]
    );
    assert_eq!(client.pending_requests(), 1);
    client.handle_input(
        t0,
        &frame(DnsAnswer {
            id,
            packet: vec![7],
        }),
    );
    let reply = Reply::DnsAnswer(DnsAnswer {
        id,
        packet: vec![7],
    });
    assert_eq!(events(&mut client), [Event::Reply { id, reply }]);
    // A second answer finds nothing pending.
    client.handle_input(
        t0,
        &frame(DnsAnswer {
            id,
            packet: vec![7],
        }),
    );
    assert_eq!(events(&mut client), [Event::Unmatched { kind: 5, id }]);
}

#[test]
fn a_request_times_out() {
    let t0 = Instant::now();
    let (mut client, _server) = established(t0);
    let dns = client
        .request(
            t0,
            DnsQuery {
                id: 0,
                packet: vec![],
            },
        )
        .unwrap();
    let list = ListIntercepts {
        req: 0,
        namespace: "shop".into(),
    };
    let slow = client.request_with_timeout(t0, list, secs(2)).unwrap();
    assert_eq!(client.poll_timeout(), Some(t0 + secs(2)));
    client.handle_timeout(t0 + secs(2) - Duration::from_millis(1));
    assert_eq!(events(&mut client), []);
    client.handle_timeout(t0 + secs(2));
    assert_eq!(events(&mut client), [Event::TimedOut { id: slow }]);
    // DNS waits 4 s, before the first ping is due.
    assert_eq!(client.poll_timeout(), Some(t0 + secs(4)));
    client.handle_timeout(t0 + secs(4));
    assert_eq!(events(&mut client), [Event::TimedOut { id: dns }]);
    assert_eq!(client.pending_requests(), 0);
    client.handle_input(
        t0 + secs(4),
        &frame(DnsAnswer {
            id: dns,
            packet: vec![],
        }),
    );
    assert_eq!(events(&mut client), [Event::Unmatched { kind: 5, id: dns }]);
}

#[test]
fn a_cancelled_request_is_forgotten() {
    let t0 = Instant::now();
    let (mut client, _server) = established(t0);
    let id = client
        .request(
            t0,
            RemoveIntercept {
                req: 0,
                name: "x".into(),
            },
        )
        .unwrap();
    assert!(client.cancel(id));
    assert!(!client.cancel(id));
    client.handle_timeout(t0 + secs(11));
    assert!(!events(&mut client).contains(&Event::TimedOut { id }));
    let late = InterceptReply {
        req: id,
        result: Ok(InterceptState::default()),
    };
    client.handle_input(t0 + secs(11), &frame(late));
    assert_eq!(events(&mut client), [Event::Unmatched { kind: 16, id }]);
}

#[test]
fn the_client_pings_on_schedule_and_the_server_answers() {
    let t0 = Instant::now();
    let (mut client, mut server) = established(t0);
    // The server sends no pings: its only timer is the idle one.
    assert_eq!(server.poll_timeout(), Some(t0 + secs(15)));
    assert_eq!(client.poll_timeout(), Some(t0 + secs(5)));
    client.handle_timeout(t0 + secs(4));
    assert_eq!(client.poll_transmit(), None);
    client.handle_timeout(t0 + secs(5));
    let ping = client.poll_transmit().unwrap();
    assert_eq!(&ping[..], [0, 0, 0, 3, 0, 6, 1]);
    server.handle_input(t0 + secs(5), &ping);
    assert_eq!(&server.poll_transmit().unwrap()[..], [0, 0, 0, 3, 0, 7, 1]);
    assert_eq!(events(&mut server), [], "pings are no events");

    // Late: one ping, and the next one an interval after it, not a burst.
    assert_eq!(client.poll_timeout(), Some(t0 + secs(10)));
    client.handle_timeout(t0 + secs(12));
    assert_eq!(sent(&mut client), [Ping { seq: 2 }.into()]);
    assert_eq!(
        client.poll_timeout(),
        Some(t0 + secs(15)),
        "idle at 15 s comes first"
    );
    client.handle_input(t0 + secs(12), &frame(Pong { seq: 2 }));
    assert_eq!(events(&mut client), [], "pongs are no events");
    assert_eq!(client.poll_timeout(), Some(t0 + secs(17)));
}

#[test]
fn silence_closes_after_the_idle_timeout() {
    let t0 = Instant::now();
    let (_client, mut server) = established(t0);
    server.handle_input(t0 + secs(10), &frame(Ping { seq: 1 }));
    let _pong = server.poll_transmit();
    assert_eq!(server.poll_timeout(), Some(t0 + secs(25)));
    server.handle_timeout(t0 + secs(24));
    assert!(!server.is_closed());
    server.handle_timeout(t0 + secs(25));
    assert_eq!(
        events(&mut server),
        [failed(SessionError::IdleTimedOut(secs(15)))]
    );
    assert!(
        matches!(&sent(&mut server)[..], [Message::Error(e)] if e.message == "nothing received for 15s")
    );
}

#[test]
fn the_handshake_times_out() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    assert_eq!(server.poll_timeout(), Some(t0 + secs(30)));
    server.handle_timeout(t0 + secs(30));
    let timeout = secs(30);
    assert_eq!(
        events(&mut server),
        [failed(SessionError::HandshakeTimedOut {
            expected: "Hello",
            timeout
        })]
    );

    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    client.handle_timeout(t0 + secs(30));
    assert_eq!(
        events(&mut client),
        [failed(SessionError::HandshakeTimedOut {
            expected: "Welcome",
            timeout
        })]
    );

    // Between Hello and accept the application takes its time.
    let mut server = Session::server(SessionConfig::server(), t0);
    server.handle_input(t0, &frame(hello(Role::Client)));
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_malformed_payload_is_skipped_and_the_session_goes_on() {
    let t0 = Instant::now();
    let (mut client, _server) = established(t0);
    let subnets = Subnets {
        service: vec!["10.96.0.0/12".parse().unwrap()],
        pod: vec![],
    };
    let mut bytes = frame(subnets.clone());
    bytes.extend([0, 0, 0, 2, 0, 5]); // a DnsAnswer without its payload
    bytes.extend(frame(Namespaces {
        names: vec!["ns".into()],
    }));
    client.handle_input(t0, &bytes);
    let events = events(&mut client);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], Event::Message(subnets.into()));
    assert!(matches!(
        &events[1],
        Event::Skipped {
            kind: 5,
            error: DecodeError::Malformed { kind: 5, .. }
        }
    ));
    assert_eq!(
        events[2],
        Event::Message(
            Namespaces {
                names: vec!["ns".into()]
            }
            .into()
        )
    );
    assert!(client.is_established());
    assert_eq!(client.poll_transmit(), None, "nothing to tell the peer");
}

#[test]
fn a_fatal_length_closes() {
    let t0 = Instant::now();
    for (header, error) in [
        ([0, 0, 0, 1], DecodeError::TooShort { len: 1 }),
        ([0, 0x10, 0, 1], DecodeError::TooLong { len: (1 << 20) + 1 }),
    ] {
        let (mut client, _server) = established(t0);
        let mut bytes = frame(Subnets::default());
        bytes.extend(header);
        client.handle_input(t0, &bytes);
        assert_eq!(
            events(&mut client),
            [
                Event::Message(Subnets::default().into()),
                failed(SessionError::Decode(error)),
            ]
        );
        assert!(matches!(&sent(&mut client)[..], [Message::Error(_)]));
        client.handle_input(t0, &frame(Subnets::default()));
        client.handle_timeout(t0 + secs(60));
        assert_eq!(events(&mut client), [], "nothing after the close");
    }
}

#[test]
fn input_in_one_byte_pieces() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    let mut client = Session::client(hello(Role::Client), SessionConfig::client(), t0).unwrap();
    let hello_bytes = sent_bytes(&mut client);
    for b in &hello_bytes {
        server.handle_input(t0, &[*b]);
    }
    assert_eq!(events(&mut server), [Event::Hello(hello(Role::Client))]);
    server.accept(t0, welcome()).unwrap();
    server.send(Subnets::default()).unwrap();
    let mut wire = sent_bytes(&mut server);
    wire.extend([0, 0, 0, 2, 0, 3]); // a malformed Subnets
    wire.extend(frame(Ping { seq: 9 }));
    wire.extend(frame(Bye));
    for b in &wire {
        client.handle_input(t0, &[*b]);
    }
    let events = events(&mut client);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0], Event::Established(welcome()));
    assert_eq!(events[1], Event::Message(Subnets::default().into()));
    assert!(matches!(events[2], Event::Skipped { kind: 3, .. }));
    assert_eq!(events[3], closed(CloseReason::Bye));
    assert_eq!(sent(&mut client), [Pong { seq: 9 }.into()]);
}

#[test]
fn a_ping_flood_queues_a_bounded_number_of_pongs() {
    let t0 = Instant::now();
    let (_client, mut server) = established(t0);
    let flood: Vec<u8> = (0..1000).flat_map(|seq| frame(Ping { seq })).collect();
    server.handle_input(t0, &flood);
    let pongs = sent(&mut server);
    let expected: Vec<Message> = (0..8).map(|seq| Pong { seq }.into()).collect();
    assert_eq!(pongs, expected);
    // Once the writer has taken them, pings are answered again.
    server.handle_input(t0, &frame(Ping { seq: 1000 }));
    assert_eq!(sent(&mut server), [Pong { seq: 1000 }.into()]);
    assert!(server.is_established());
}

#[test]
fn pings_before_accept_go_unanswered() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    let mut bytes = frame(hello(Role::Client));
    bytes.extend(frame(Ping { seq: 1 }));
    server.handle_input(t0, &bytes);
    assert_eq!(events(&mut server), [Event::Hello(hello(Role::Client))]);
    assert_eq!(server.poll_transmit(), None);
    server.accept(t0, welcome()).unwrap();
    assert_eq!(
        sent(&mut server),
        [welcome().into()],
        "Welcome is the first frame"
    );
}

#[test]
fn bye_closes_in_order() {
    let t0 = Instant::now();
    let (mut client, mut server) = established(t0);
    let id = client
        .request(
            t0,
            DnsQuery {
                id: 0,
                packet: vec![],
            },
        )
        .unwrap();
    pipe(&mut client, &mut server, t0);
    let _query = events(&mut server);
    server.close();
    assert_eq!(events(&mut server), [closed(CloseReason::Local)]);
    assert_eq!(&server.poll_transmit().unwrap()[..], [0, 0, 0, 2, 0, 12]);
    assert_eq!(
        server.send(Subnets::default()).unwrap_err().to_string(),
        "the session is closed"
    );
    server.close();
    assert_eq!(server.poll_transmit(), None, "closing twice sends one Bye");

    client.handle_input(t0, &frame(Bye));
    assert_eq!(events(&mut client), [closed(CloseReason::Bye)]);
    assert_eq!(client.close_reason(), Some(&CloseReason::Bye));
    assert_eq!(client.poll_transmit(), None, "no Bye back");
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(
        client.pending_requests(),
        0,
        "pending requests go with the session"
    );
    assert!(!client.cancel(id));
}

#[test]
fn an_error_after_the_handshake_closes() {
    let t0 = Instant::now();
    let (mut client, _server) = established(t0);
    let error = Error {
        code: ErrorCode::NotPermitted,
        message: "user ann lost the right to a session".into(),
    };
    client.handle_input(t0, &frame(error.clone()));
    assert_eq!(
        events(&mut client),
        [failed(SessionError::PeerError(error))]
    );
    assert_eq!(client.poll_transmit(), None);
}

#[test]
fn the_end_of_the_stream() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    server.handle_end();
    assert_eq!(events(&mut server), [failed(SessionError::Ended)]);

    let (mut client, _server) = established(t0);
    client.handle_end();
    assert_eq!(events(&mut client), [closed(CloseReason::Finished)]);

    let (mut client, _server) = established(t0);
    client.handle_input(t0, &frame(Ping { seq: 1 })[..5]);
    client.handle_end();
    let truncated = DecodeError::Truncated { buffered: 5 };
    assert_eq!(
        events(&mut client),
        [failed(SessionError::Decode(truncated))]
    );
    assert_eq!(client.poll_transmit(), None, "the peer has gone");
}

#[test]
fn what_the_application_may_send_when() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    let early = server.send(Subnets::default()).unwrap_err();
    assert!(matches!(early, SendError::NotEstablished));
    assert!(matches!(
        server.accept(t0, welcome()),
        Err(SendError::NoHello)
    ));

    let (mut client, _server) = established(t0);
    assert!(matches!(
        client.accept(t0, welcome()),
        Err(SendError::NoHello)
    ));
    for own in [
        Message::from(Ping { seq: 1 }),
        Pong { seq: 1 }.into(),
        Bye.into(),
        hello(Role::Client).into(),
        welcome().into(),
        Error {
            code: ErrorCode::Other,
            message: String::new(),
        }
        .into(),
    ] {
        let kind = own.kind();
        assert!(matches!(client.send(own), Err(SendError::Reserved { kind: k }) if k == kind));
    }
    let query = DnsQuery {
        id: 1,
        packet: vec![],
    };
    assert!(matches!(
        client.send(query),
        Err(SendError::Request { kind: 4 })
    ));
    let too_big = UdpPacket {
        flow: 0,
        payload: vec![0; 1 << 20],
    };
    assert!(matches!(client.send(too_big), Err(SendError::Encode(_))));
    assert_eq!(client.poll_transmit(), None, "nothing refused was queued");
}

#[test]
fn unknown_kinds_are_ignored() {
    let t0 = Instant::now();
    let mut server = Session::server(SessionConfig::server(), t0);
    let mut bytes = vec![0, 0, 0, 5, 0x03, 0xe7, 1, 2, 3]; // kind 999
    bytes.extend(frame(hello(Role::Client)));
    bytes.extend([0, 0, 0, 2, 0xff, 0xff]); // kind 65535, empty
    server.handle_input(t0, &bytes);
    assert_eq!(events(&mut server), [Event::Hello(hello(Role::Client))]);
    assert!(!server.is_closed());
}
