//! A hostile client: what it sends costs only itself.

use std::net::{Ipv4Addr, SocketAddr};

use tether_harness::patiently;
use tether_harness::servers::round_trip;
use tether_proto::{DnsQuery, Hello, Message, Role, PROTOCOL_VERSION};
use tether_tunnel::framed;

use crate::support::World;

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// A frame of kind `kind` whose payload does not decode as that message.
fn malformed(kind: u16) -> Vec<u8> {
    let payload = [0xff_u8; 9];
    let mut frame = ((2 + payload.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[tokio::test]
async fn malformed_and_unknown_frames_cost_only_their_sender() -> Result {
    let world = World::start().await?;
    world.api.allow_everything("mallory");
    let credential = world.manager.session_credential("mallory", &[])?;
    let endpoint =
        tether_tunnel::client_endpoint(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &credential)?;
    let conn = endpoint
        .connect(world.manager.addr(), tether_tunnel::SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: "mallory@host".into(),
        namespace: "shop".into(),
        role: Role::Client,
    };
    framed::write_message(&mut send, &Message::Hello(hello)).await?;
    let welcome = framed::read_message(&mut recv).await?;
    assert!(matches!(welcome, Some(Message::Welcome(_))), "{welcome:?}");

    // Thousands of frames that spoil only themselves: DNS queries whose payload is garbage,
    // and kinds no tether knows.
    let mut flood = Vec::new();
    for i in 0..5_000u16 {
        flood.extend(malformed(4));
        flood.extend(malformed(60_000 + i % 100));
    }
    send.write_all(&flood).await?;
    // The session is still there: a real query after the flood is answered on it.
    let query = hickory_proto::op::Message::query();
    let mut query = query;
    query.add_query(hickory_proto::op::Query::query(
        "echo.shop.svc.cluster.local.".parse().unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    let packet = query.to_vec().unwrap();
    framed::write_message(&mut send, &Message::DnsQuery(DnsQuery { id: 7, packet })).await?;
    let answered = patiently("the answer after the flood", async {
        loop {
            match framed::read_message(&mut recv).await {
                Ok(Some(Message::DnsAnswer(a))) => return Some(a.id),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    })
    .await?;
    assert_eq!(answered, Some(7));

    // And another user's session never noticed.
    let session = world.alice.session()?;
    let (tx, rx) = session.open_tcp(world.echo.addr()).await?;
    let mut stream = tokio::io::join(rx, tx);
    assert_eq!(round_trip(&mut stream, b"still here").await?, b"still here");
    Ok(())
}
