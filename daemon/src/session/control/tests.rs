//! The daemon's control task against a manager-side session over an in-memory stream.

use std::time::Duration;

use tether_proto::session::Session as Machine;
use tether_proto::{
    DnsAnswer, DnsQuery, ErrorCode, Hello, InterceptReply, ListIntercepts, Namespaces, Role,
    PROTOCOL_VERSION,
};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use super::*;

type Ctl = Control<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

fn control(machine: Machine, stream: DuplexStream) -> Ctl {
    let (r, w) = tokio::io::split(stream);
    Control::new(machine, r, w)
}

/// The daemon's side (with `config`) and the manager's, not yet past the handshake.
fn pair(config: SessionConfig) -> (Ctl, Ctl) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: "ann@laptop".into(),
        namespace: "shop".into(),
        role: Role::Client,
    };
    let daemon = Machine::client(hello, config, control::now()).unwrap();
    let manager = Machine::server(SessionConfig::server(), control::now());
    (
        control(daemon, a),
        control(manager, b).with_read_backpressure(),
    )
}

fn welcome() -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        session_id: "s-1".into(),
        cluster_domain: "cluster.local".into(),
        subnets: Subnets::default(),
    }
}

fn error(message: &str) -> tether_proto::Error {
    tether_proto::Error {
        code: ErrorCode::NotPermitted,
        message: message.into(),
    }
}

/// Runs the manager's side: `on` gets each event after the `Hello` (which is accepted) and
/// acts on the session.
async fn manager(ctl: &mut Ctl, mut on: impl FnMut(Event, &mut Machine)) {
    loop {
        match ctl.next_event().await.unwrap() {
            Event::Hello(_) => ctl.session_mut().accept(control::now(), welcome()).unwrap(),
            event => on(event, ctl.session_mut()),
        }
    }
}

type Names = watch::Receiver<Arc<BTreeSet<String>>>;

/// The handshake, then the control task in the background; the manager's side is returned to
/// be driven by the test.
async fn connected(config: SessionConfig) -> (Requests, Names, Ctl, tokio::task::JoinHandle<bool>) {
    let (mut daemon, mut mgr) = pair(config);
    let welcome = tokio::select! {
        welcome = handshake(&mut daemon) => welcome.unwrap(),
        () = manager(&mut mgr, |event, _| panic!("{event:?}")) => unreachable!(),
    };
    assert_eq!(welcome.session_id, "s-1");
    let (requests, commands) = Requests::new();
    let (subnets, _) = watch::channel(Subnets::default());
    let (namespaces, names) = watch::channel(Arc::default());
    let task = tokio::spawn(run(
        daemon,
        commands,
        Updates {
            subnets,
            namespaces,
            manager_version: watch::channel(None).0,
            intercept_stats: watch::channel(Default::default()).0,
        },
    ));
    (requests, names, mgr, task)
}

#[tokio::test]
async fn requests_get_their_answers_and_updates_arrive() {
    let (requests, mut namespaces, mut mgr, _task) = connected(config()).await;
    let answered = async {
        let dns = requests.ask(DnsQuery {
            id: 0,
            packet: vec![1, 2],
        });
        let list = requests.ask(ListIntercepts {
            req: 0,
            namespace: "shop".into(),
        });
        let (dns, list) = tokio::join!(dns, list);
        namespaces.changed().await.unwrap();
        (dns.unwrap(), list, namespaces.borrow().clone())
    };
    let serve = manager(&mut mgr, |event, session| match event {
        Event::Message(Message::DnsQuery(q)) => {
            let packet = [q.packet, vec![3]].concat();
            session.send(DnsAnswer { id: q.id, packet }).unwrap();
            let names = vec!["shop".into(), "web".into()];
            session.send(Namespaces { names }).unwrap();
        }
        Event::Message(Message::ListIntercepts(l)) => {
            let result = Err(error("forbidden by RBAC"));
            session.send(InterceptReply { req: l.req, result }).unwrap();
        }
        other => panic!("{other:?}"),
    });
    let (dns, list, names) = tokio::select! {
        answered = answered => answered,
        () = serve => unreachable!(),
    };
    assert!(matches!(dns, Reply::DnsAnswer(a) if a.packet == [1, 2, 3]));
    match list {
        Ok(Reply::InterceptReply(InterceptReply { result: Err(e), .. })) => {
            assert_eq!(e.message, "forbidden by RBAC")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(names.iter().collect::<Vec<_>>(), ["shop", "web"]);
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let quick = SessionConfig {
        dns_timeout: Duration::from_millis(100),
        ..config()
    };
    let (requests, _names, mut mgr, _task) = connected(quick).await;
    let asked = requests.ask(DnsQuery {
        id: 0,
        packet: vec![1],
    });
    let result = tokio::select! {
        result = asked => result,
        () = manager(&mut mgr, |_, _| {}) => unreachable!(),
    };
    assert!(matches!(result, Err(SessionError::TimedOut)), "{result:?}");
}

#[tokio::test]
async fn the_end_of_the_session_fails_waiting_requests_at_once() {
    let (requests, _names, mut mgr, task) = connected(config()).await;
    let asked = requests.ask(ListIntercepts {
        req: 0,
        namespace: "shop".into(),
    });
    // The manager ends the session instead of answering (a user who lost the right to it).
    let serve = manager(&mut mgr, |event, session| match event {
        Event::Message(Message::ListIntercepts(_)) => session.refuse(error("gone")),
        Event::Closed(_) => {}
        other => panic!("{other:?}"),
    });
    let result = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::select! {
            result = asked => result,
            () = serve => unreachable!(),
        }
    })
    .await
    .expect("well before the request's own timeout");
    assert!(matches!(result, Err(SessionError::NoAnswer)), "{result:?}");
    assert!(task.await.unwrap(), "the manager ended it");
    // And nothing more is sent.
    let after = requests.ask(DnsQuery {
        id: 0,
        packet: vec![1],
    });
    assert!(matches!(after.await, Err(SessionError::NoAnswer)));
}

#[tokio::test]
async fn the_last_handle_says_bye() {
    let (requests, _names, mut mgr, task) = connected(config()).await;
    drop(requests);
    let closed = tokio::time::timeout(Duration::from_secs(2), mgr.next_event()).await;
    assert_eq!(closed.unwrap().unwrap(), Event::Closed(CloseReason::Bye));
    assert!(!task.await.unwrap(), "the daemon ended it");
}

#[tokio::test]
async fn a_refusal_is_shown_in_the_managers_words() {
    let (mut daemon, mut mgr) = pair(config());
    let refuse = async {
        assert!(matches!(mgr.next_event().await.unwrap(), Event::Hello(_)));
        mgr.session_mut().refuse(error(
            "forbidden by RBAC: user \"bob\" may not create sessions",
        ));
        mgr.finish().await.unwrap();
    };
    let (refused, ()) = tokio::join!(handshake(&mut daemon), refuse);
    let refused = refused.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the traffic manager refused the session: forbidden by RBAC: user \"bob\" may not \
         create sessions"
    );
}

#[tokio::test]
async fn a_manager_that_goes_away_during_the_handshake_did_not_answer() {
    let (mut daemon, mut mgr) = pair(config());
    let (ended, _) = tokio::join!(handshake(&mut daemon), mgr.finish());
    assert!(matches!(ended, Err(SessionError::NoAnswer)), "{ended:?}");
}

#[test]
fn the_daemons_timeouts_are_its_published_ones() {
    let config = config();
    assert_eq!(config.dns_timeout, DNS_TIMEOUT);
    assert_eq!(config.request_timeout, INTERCEPT_TIMEOUT);
    assert_eq!(config.ping_interval, SessionConfig::client().ping_interval);
}
