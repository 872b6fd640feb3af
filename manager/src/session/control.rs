//! The manager's end of a control stream, for clients and agents alike: the `Hello` that starts
//! it, the last words that end it, and why it ended.
//!
//! The session itself is `tether_proto`'s sans-IO machine, driven by
//! [`tether_tunnel::control::Control`]; the manager is its server side, so it answers pings
//! and sends none, and it reads nothing from a peer that does not read its answers.

use std::time::Duration;

use tether_proto::session::{CloseReason, Event, Session, SessionConfig};
use tether_proto::{ErrorCode, Hello};
use tether_tunnel::control::{self, Control};
use tether_tunnel::quinn;

use super::SessionError;

/// A peer's control stream and its session.
pub(super) type Ctl = Control<quinn::RecvStream, quinn::SendStream>;

/// How long last words (an `Error` refusing the peer) may take to arrive before the connection
/// closes over them.
const LINGER: Duration = Duration::from_secs(1);

/// Accepts a peer's control stream and waits for its `Hello`. A `Hello` of a version this
/// manager does not speak is answered with an `Error` the peer can show (the session words it:
/// "protocol version N is not supported; upgrade tether"), and refused.
pub(super) async fn accept_hello(conn: &quinn::Connection) -> Result<(Ctl, Hello), SessionError> {
    let (send, recv) = conn.accept_bi().await?;
    let session = Session::server(SessionConfig::server(), control::now());
    let mut ctl = Control::new(session, recv, send).with_read_backpressure();
    loop {
        match ctl.next_event().await? {
            Event::Hello(hello) => return Ok((ctl, hello)),
            Event::Closed(reason) => {
                // The session may have words for the peer (the version, a timeout).
                last_words(&mut ctl).await;
                return Err(no_hello(reason));
            }
            // Nothing else comes before the Hello.
            _ => {}
        }
    }
}

/// Why a control stream did not start with a `Hello` of this version.
fn no_hello(reason: CloseReason) -> SessionError {
    use tether_proto::session::SessionError as Failed;
    match reason {
        CloseReason::Error(Failed::Version { peer }) => SessionError::Version(peer),
        CloseReason::Error(Failed::Unexpected { .. }) => SessionError::NoHello("another message"),
        CloseReason::Error(Failed::Ended) | CloseReason::Bye => SessionError::NoHello("nothing"),
        CloseReason::Error(error) => SessionError::Control(error),
        CloseReason::Finished | CloseReason::Local => SessionError::NoHello("nothing"),
    }
}

/// Why an established session ended.
pub(super) fn ended(reason: CloseReason) -> SessionError {
    match reason {
        CloseReason::Error(error) => SessionError::Control(error),
        CloseReason::Bye | CloseReason::Finished | CloseReason::Local => SessionError::Bye,
    }
}

/// Sends `message` to the peer as the session's last frame (an `Error`, not permitted) and lets
/// it arrive, within a second.
pub(super) async fn refuse(ctl: &mut Ctl, message: String) {
    ctl.session_mut().refuse(tether_proto::Error {
        code: ErrorCode::NotPermitted,
        message,
    });
    last_words(ctl).await;
}

/// Writes what the session has left to say, ends the stream and waits (within [`LINGER`]) until
/// the peer has it all, so that closing the connection does not overtake it.
async fn last_words(ctl: &mut Ctl) {
    let _ = tokio::time::timeout(LINGER, async {
        if ctl.finish().await.is_ok() {
            let _ = ctl.writer_mut().stopped().await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bytes::BytesMut;
    use tether_proto::{Decoded, Message, Role, PROTOCOL_VERSION};
    use tether_tunnel::{client_endpoint, server, Identity};

    use super::*;

    /// A manager-side connection and a client's, over QUIC on loopback.
    async fn connected() -> (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]) {
        let identity = Identity::generate().unwrap();
        let manager = server((Ipv4Addr::LOCALHOST, 0).into(), &identity).unwrap();
        let credential = identity
            .issue_client(tether_tunnel::Role::Client, "ann")
            .unwrap();
        let client = client_endpoint((Ipv4Addr::LOCALHOST, 0).into(), &credential).unwrap();
        let addr = manager.local_addr().unwrap();
        let dialed = async {
            let connecting = client.connect(addr, tether_tunnel::SERVER_NAME).unwrap();
            connecting.await.unwrap()
        };
        let accepted = async { manager.accept().await.unwrap().await.unwrap() };
        let (ours, theirs) = tokio::join!(accepted, dialed);
        (ours, theirs, [manager, client])
    }

    /// Opens the control stream, sends `hello` and reads every frame until the end.
    async fn say_hello(conn: &quinn::Connection, version: u16) -> Vec<Message> {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = tether_proto::Hello {
            version,
            client: "ann@laptop".into(),
            namespace: "shop".into(),
            role: Role::Client,
        };
        let mut frame = BytesMut::new();
        tether_proto::encode(&hello.into(), &mut frame).unwrap();
        send.write_all(&frame).await.unwrap();
        let got = recv.read_to_end(64 * 1024).await.unwrap();
        let mut got = BytesMut::from(&got[..]);
        std::iter::from_fn(|| tether_proto::decode(&mut got))
            .map(|frame| match frame {
                Ok(Decoded::Message(msg)) => msg,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn only_error(frames: &[Message]) -> &str {
        match frames {
            [Message::Error(error)] => &error.message,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn another_version_is_told_to_upgrade() {
        let (manager, client, _endpoints) = connected().await;
        let (accepted, frames) = tokio::join!(accept_hello(&manager), say_hello(&client, 1));
        assert!(matches!(accepted, Err(SessionError::Version(1))));
        assert_eq!(
            only_error(&frames),
            "protocol version 1 is not supported; upgrade tether"
        );
    }

    #[tokio::test]
    async fn a_refusal_arrives_before_the_connection_closes() {
        let (manager, client, _endpoints) = connected().await;
        let refuse_then_close = async {
            let (mut ctl, hello) = accept_hello(&manager).await.unwrap();
            assert_eq!(hello.version, PROTOCOL_VERSION);
            refuse(&mut ctl, "forbidden by RBAC".into()).await;
            manager.close(2u32.into(), b"forbidden by RBAC");
        };
        let ((), frames) = tokio::join!(refuse_then_close, say_hello(&client, PROTOCOL_VERSION));
        assert_eq!(only_error(&frames), "forbidden by RBAC");
    }
}
