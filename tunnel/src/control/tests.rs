use std::time::Duration;

use tether_proto::session::{CloseReason, Event, Reply, Session, SessionConfig, SessionError};
use tether_proto::{
    DnsAnswer, DnsQuery, Hello, Message, Ping, Role, Subnets, Welcome, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::*;

type Half = Control<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        client: "ann@laptop".into(),
        namespace: "shop".into(),
        role: Role::Client,
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

fn control(session: Session, stream: DuplexStream) -> Half {
    let (r, w) = tokio::io::split(stream);
    Control::new(session, r, w)
}

/// Timers of milliseconds, for tests in real time.
fn quick(config: SessionConfig) -> SessionConfig {
    let ms = Duration::from_millis;
    SessionConfig {
        ping_interval: config.ping_interval.map(|_| ms(20)),
        idle_timeout: Some(ms(150)),
        handshake_timeout: ms(150),
        ..config
    }
}

/// A client and a server control over an in-memory stream of `buffer` bytes each way.
fn pair(buffer: usize) -> (Half, Half) {
    let (a, b) = tokio::io::duplex(buffer);
    let client = Session::client(hello(), quick(SessionConfig::client()), now()).unwrap();
    let server = Session::server(quick(SessionConfig::server()), now());
    (
        control(client, a),
        control(server, b).with_read_backpressure(),
    )
}

/// Runs both sides until each is past the handshake.
async fn establish(client: &mut Half, server: &mut Half) {
    // The client's Hello goes out while it waits for the Welcome, and the other way round.
    let hello = tokio::select! {
        event = server.next_event() => event.unwrap(),
        event = client.next_event() => panic!("{event:?}"),
    };
    let Event::Hello(hello) = hello else {
        panic!("{hello:?}")
    };
    assert_eq!(hello.client, "ann@laptop");
    server.session_mut().accept(now(), welcome()).unwrap();
    let established = tokio::select! {
        event = client.next_event() => event.unwrap(),
        event = server.next_event() => panic!("{event:?}"),
    };
    let Event::Established(welcome) = established else {
        panic!("{established:?}")
    };
    assert_eq!(welcome.session_id, "s-1");
}

/// Encoded frames, for a raw peer.
fn frames(msgs: impl IntoIterator<Item = Message>) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    for msg in msgs {
        tether_proto::encode(&msg, &mut buf).unwrap();
    }
    buf.to_vec()
}

#[tokio::test]
async fn a_request_is_answered_over_the_stream() {
    let (mut client, mut server) = pair(64 * 1024);
    establish(&mut client, &mut server).await;
    let id = client
        .session_mut()
        .request(
            now(),
            DnsQuery {
                id: 0,
                packet: vec![1],
            },
        )
        .unwrap();
    let serve = async {
        loop {
            match server.next_event().await.unwrap() {
                Event::Message(Message::DnsQuery(q)) => {
                    let answer = DnsAnswer {
                        id: q.id,
                        packet: vec![2],
                    };
                    server.session_mut().send(answer).unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let reply = tokio::select! {
        event = client.next_event() => event.unwrap(),
        () = serve => unreachable!(),
    };
    let expected = Reply::DnsAnswer(DnsAnswer {
        id,
        packet: vec![2],
    });
    assert_eq!(
        reply,
        Event::Reply {
            id,
            reply: expected
        }
    );
}

#[tokio::test]
async fn a_silent_peer_is_noticed_and_told() {
    let (a, mut peer) = tokio::io::duplex(1024);
    let config = quick(SessionConfig::server());
    let timeout = config.handshake_timeout;
    let mut server = control(Session::server(config, now()), a);
    let event = server.next_event().await.unwrap();
    assert_eq!(
        event,
        Event::Closed(CloseReason::Error(SessionError::HandshakeTimedOut {
            expected: "Hello",
            timeout,
        }))
    );
    server.finish().await.unwrap();
    let mut told = Vec::new();
    peer.read_to_end(&mut told).await.unwrap();
    let mut told = bytes::BytesMut::from(&told[..]);
    match tether_proto::decode(&mut told) {
        Some(Ok(tether_proto::Decoded::Message(Message::Error(e)))) => {
            assert!(e.message.contains("no Hello"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pings_keep_a_quiet_session_up() {
    let (mut client, mut server) = pair(64 * 1024);
    establish(&mut client, &mut server).await;
    // Four idle timeouts of nothing but keep-alive: both sides stay up.
    let quiet = async {
        tokio::join!(async { panic!("{:?}", client.next_event().await) }, async {
            panic!("{:?}", server.next_event().await)
        },)
    };
    let over = tokio::time::timeout(Duration::from_millis(600), quiet).await;
    assert!(over.is_err(), "no event while pings go both ways");
    assert!(client.session().is_established());
    assert!(server.session().is_established());

    // A server that is not driven answers no pings: the client gives up.
    let event = client.next_event().await.unwrap();
    assert_eq!(
        event,
        Event::Closed(CloseReason::Error(SessionError::IdleTimedOut(
            Duration::from_millis(150)
        )))
    );
}

#[tokio::test]
async fn the_end_of_the_stream_closes_the_session() {
    let (mut client, mut server) = pair(1024);
    establish(&mut client, &mut server).await;
    client.finish().await.unwrap();
    assert_eq!(
        server.next_event().await.unwrap(),
        Event::Closed(CloseReason::Finished)
    );
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_not_read_either() {
    // 256 bytes each way: a few dozen pongs fill the server's direction.
    let (a, mut peer) = tokio::io::duplex(256);
    let mut server =
        control(Session::server(SessionConfig::server(), now()), a).with_read_backpressure();
    peer.write_all(&frames([hello().into()])).await.unwrap();
    assert!(matches!(
        server.next_event().await.unwrap(),
        Event::Hello(_)
    ));
    server.session_mut().accept(now(), welcome()).unwrap();
    let drive = async {
        let event = server.next_event().await;
        panic!("{event:?}")
    };
    // Pings, and never a read: the server stops reading once its pongs wait, so this write
    // stalls instead of the server buffering answers without end.
    let pings = frames((0..10_000).map(|seq| Ping { seq }.into()));
    let flood = tokio::time::timeout(Duration::from_millis(500), peer.write_all(&pings));
    tokio::select! {
        result = flood => assert!(result.is_err(), "the flood was read whole"),
        () = drive => unreachable!(),
    }
    assert!(!server.is_writable());
}

#[tokio::test]
async fn cancelled_waits_lose_nothing() {
    let (mut client, mut server) = pair(512);
    establish(&mut client, &mut server).await;
    let ids: Vec<u32> = (0..200)
        .map(|n| {
            let query = DnsQuery {
                id: 0,
                packet: vec![n as u8; 100],
            };
            client.session_mut().request(now(), query).unwrap()
        })
        .collect();
    let serve = async {
        loop {
            if let Event::Message(Message::DnsQuery(q)) = server.next_event().await.unwrap() {
                let answer = DnsAnswer {
                    id: q.id,
                    packet: q.packet,
                };
                server.session_mut().send(answer).unwrap();
            }
        }
    };
    let collect = async {
        let mut replies = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_micros(50));
        while replies.len() < ids.len() {
            // The wait is dropped over and over while bytes move.
            tokio::select! {
                event = client.next_event() => match event.unwrap() {
                    Event::Reply { id, reply: Reply::DnsAnswer(a) } => replies.push((id, a.packet)),
                    other => panic!("{other:?}"),
                },
                _ = tick.tick() => {}
            }
        }
        replies
    };
    let replies = tokio::select! {
        replies = collect => replies,
        () = serve => unreachable!(),
    };
    for (n, (id, packet)) in replies.into_iter().enumerate() {
        assert_eq!(id, ids[n]);
        assert_eq!(packet, vec![n as u8; 100]);
    }
}
