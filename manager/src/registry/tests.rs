use tether_proto::{AgentInfo, AgentIntercepts, CreateIntercept, InterceptFilter, InterceptMode};
use tokio::sync::watch;

use super::{Holder, Registry, MAX_INTERCEPTS_PER_SESSION};

const ANN: Holder<'static> = Holder {
    session_id: "s-ann",
    owner: "ann@laptop",
};
const BOB: Holder<'static> = Holder {
    session_id: "s-bob",
    owner: "bob@desk",
};

fn create(name: &str, headers: &[&str]) -> CreateIntercept {
    CreateIntercept {
        req: 1,
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        workload: "Deployment/orders".to_owned(),
        port: 8080,
        service_port: "http".to_owned(),
        filter: InterceptFilter {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            path_prefix: None,
        },
        mode: InterceptMode::Take,
    }
}

fn mirror(name: &str, headers: &[&str]) -> CreateIntercept {
    CreateIntercept {
        mode: InterceptMode::Mirror,
        ..create(name, headers)
    }
}

fn agent(pod: &str) -> AgentInfo {
    AgentInfo {
        namespace: "shop".to_owned(),
        workload: "Deployment/orders".to_owned(),
        pod: pod.to_owned(),
        ports: vec![8080],
    }
}

/// The ids in the last table an agent was sent.
fn last_table(rx: &mut watch::Receiver<AgentIntercepts>) -> Vec<u64> {
    rx.borrow_and_update()
        .intercepts
        .iter()
        .map(|i| i.id)
        .collect()
}

fn channel() -> (
    watch::Sender<AgentIntercepts>,
    watch::Receiver<AgentIntercepts>,
) {
    watch::channel(AgentIntercepts {
        intercepts: Vec::new(),
    })
}

#[test]
fn two_personal_intercepts_coexist_and_agents_follow() {
    let mut reg = Registry::new();
    let (tx, mut rx) = channel();
    reg.agent_joined(1, agent("orders-1"), tx);
    assert!(last_table(&mut rx).is_empty());

    let a = reg
        .create(ANN, &create("orders", &["x-session=ann"]))
        .unwrap();
    let b = reg
        .create(BOB, &create("orders", &["x-session=bob"]))
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(last_table(&mut rx), [a.id, b.id]);

    // An agent of a new pod gets the table on arrival.
    let (tx2, mut rx2) = channel();
    reg.agent_joined(2, agent("orders-2"), tx2);
    assert_eq!(last_table(&mut rx2), [a.id, b.id]);

    reg.remove("s-ann", "orders").unwrap();
    assert_eq!(last_table(&mut rx), [b.id]);
    assert_eq!(last_table(&mut rx2), [b.id]);
}

#[test]
fn conflicts_are_refused_naming_the_holder_and_change_nothing() {
    let mut reg = Registry::new();
    reg.create(ANN, &create("all", &[])).unwrap();
    let err = reg.create(BOB, &create("mine", &[])).unwrap_err();
    assert!(err.contains("ann@laptop"), "{err}");
    assert!(err.contains("Deployment/orders port http"), "{err}");

    reg.create(ANN, &create("p", &["x-session=a"])).unwrap();
    let err = reg
        .create(BOB, &create("p", &["x-session=a", "x-user=b"]))
        .unwrap_err();
    assert!(err.contains("overlaps"), "{err}");
    assert!(err.contains("ann@laptop (intercept `p`)"), "{err}");
    assert_eq!(reg.list("shop").intercepts.len(), 2);
}

#[test]
fn bad_filter_and_duplicate_name_are_refused() {
    let mut reg = Registry::new();
    let err = reg.create(ANN, &create("x", &["x-session"])).unwrap_err();
    assert!(err.contains("NAME=VALUE"), "{err}");
    reg.create(ANN, &create("x", &["x-session=1"])).unwrap();
    let err = reg.create(ANN, &create("x", &["x-session=2"])).unwrap_err();
    assert!(err.contains("--name"), "{err}");
    // Another session may use the same name.
    reg.create(BOB, &create("x", &["x-session=2"])).unwrap();
    assert!(reg.list("shop").intercepts.len() == 2);
    assert!(reg.list("other").intercepts.is_empty());
}

#[test]
fn ending_a_session_frees_its_ports() {
    let mut reg = Registry::new();
    let (tx, mut rx) = channel();
    reg.agent_joined(1, agent("orders-1"), tx);
    reg.create(ANN, &create("all", &[])).unwrap();
    let gone = reg.end_session("s-ann");
    assert_eq!(gone.len(), 1);
    assert!(last_table(&mut rx).is_empty());
    // The port is free again.
    reg.create(BOB, &create("all", &[])).unwrap();
    assert!(reg.remove("s-ann", "all").is_err());
}

#[test]
fn list_shows_agents_of_the_namespace() {
    let mut reg = Registry::new();
    let (tx, _rx) = channel();
    reg.agent_joined(1, agent("orders-1"), tx.clone());
    reg.agent_joined(2, agent("orders-0"), tx);
    let pods: Vec<_> = reg.list("shop").agents.into_iter().map(|a| a.pod).collect();
    assert_eq!(pods, ["orders-0", "orders-1"]);
    reg.agent_left(1);
    assert_eq!(reg.list("shop").agents.len(), 1);
}

#[test]
fn a_session_holds_a_bounded_number_of_intercepts() {
    let mut reg = Registry::new();
    for n in 0..MAX_INTERCEPTS_PER_SESSION {
        let name = format!("i{n}");
        let header = format!("x-n={n}");
        reg.create(ANN, &create(&name, &[header.as_str()])).unwrap();
    }
    let err = reg
        .create(ANN, &create("one-more", &["x-n=more"]))
        .unwrap_err();
    assert!(err.contains("leave one first"), "{err}");
    // Only that session is limited.
    reg.create(BOB, &create("bob", &["x-n=bob"])).unwrap();
    reg.remove("s-ann", "i0").unwrap();
    reg.create(ANN, &create("one-more", &["x-n=more"])).unwrap();
}

#[test]
fn a_sessions_stats_sum_its_workloads_agents_and_nothing_of_others() {
    use std::time::Duration;
    use tether_proto::stats::RouteCounts;
    use tether_proto::{RouteStat, RouteStats};

    let mut reg = Registry::new();
    let ann = reg.create(ANN, &create("ann", &["x-dev=ann"])).unwrap();
    let bob = reg.create(BOB, &create("bob", &["x-dev=bob"])).unwrap();
    reg.agent_joined(1, agent("orders-1"), channel().0);
    reg.agent_joined(2, agent("orders-2"), channel().0);
    let counts = |n: u64| {
        let mut c = RouteCounts::default();
        for _ in 0..n {
            c.record(Duration::from_millis(2));
        }
        c
    };
    let route = |intercept, port, n| RouteStat {
        port,
        intercept,
        counts: counts(n),
        mirrored: Default::default(),
    };
    // Before any report the agents are listed, not reporting.
    let before = reg.session_stats("s-ann");
    assert_eq!(before.intercepts.len(), 1);
    assert!(before.intercepts[0].agents.iter().all(|a| !a.reporting));
    reg.agent_stats(
        1,
        RouteStats {
            routes: vec![
                route(None, 8080, 5),
                route(Some(ann.id), 8080, 3),
                route(Some(bob.id), 8080, 7),
                route(None, 9090, 100),
            ],
        },
    );
    reg.agent_stats(
        2,
        RouteStats {
            routes: vec![route(Some(ann.id), 8080, 1), route(None, 8080, 2)],
        },
    );
    let stats = reg.session_stats("s-ann");
    let [stat] = stats.intercepts.as_slice() else {
        panic!("one intercept: {stats:?}")
    };
    assert_eq!((stat.id, stat.name.as_str()), (ann.id, "ann"));
    assert_eq!(stat.laptop.requests, 4, "ann's, from both agents");
    assert_eq!(stat.app.requests, 7, "the app's on port 8080 only");
    let pods: Vec<(&str, bool)> = stat
        .agents
        .iter()
        .map(|a| (a.pod.as_str(), a.reporting))
        .collect();
    assert_eq!(pods, [("orders-1", true), ("orders-2", true)]);
    // An agent that leaves takes its counts along.
    reg.agent_left(2);
    assert_eq!(reg.session_stats("s-ann").intercepts[0].laptop.requests, 3);
    // A session without intercepts has nothing to see.
    assert!(reg.session_stats("s-nobody").intercepts.is_empty());
}

#[test]
fn mirrors_share_a_port_with_takes_and_other_sessions_mirrors() {
    let mut reg = Registry::new();
    let (tx, mut rx) = channel();
    reg.agent_joined(1, agent("orders-1"), tx);
    // Ann takes every request; bob holds a personal intercept; carol and bob mirror.
    let global = reg.create(ANN, &create("all", &[])).unwrap();
    let personal = reg.create(BOB, &create("bob", &["x-dev=bob"])).unwrap();
    let carol = Holder {
        session_id: "s-carol",
        owner: "carol@desk",
    };
    let all = reg.create(carol, &mirror("copy", &[])).unwrap();
    assert_eq!(all.mode, InterceptMode::Mirror);
    let same_as_bob = reg.create(BOB, &mirror("copy", &["x-dev=bob"])).unwrap();
    // Ann mirrors the requests she also takes (a second global, as a mirror).
    let anns = reg.create(ANN, &mirror("copy", &[])).unwrap();
    assert_eq!(
        last_table(&mut rx),
        [global.id, personal.id, all.id, same_as_bob.id, anns.id]
    );
    let modes: Vec<InterceptMode> = rx.borrow().intercepts.iter().map(|i| i.mode).collect();
    assert_eq!(
        modes,
        [
            InterceptMode::Take,
            InterceptMode::Take,
            InterceptMode::Mirror,
            InterceptMode::Mirror,
            InterceptMode::Mirror
        ]
    );
    // A mirror never makes room for a take: a second global take is still refused.
    let err = reg.create(carol, &create("all", &[])).unwrap_err();
    assert!(err.contains("already intercepted (all traffic)"), "{err}");
}

#[test]
fn a_session_does_not_mirror_the_same_requests_twice() {
    let mut reg = Registry::new();
    reg.create(ANN, &mirror("one", &["x-dev=ann"])).unwrap();
    // The same name is refused as for any intercept.
    let err = reg
        .create(ANN, &mirror("one", &["x-dev=other"]))
        .unwrap_err();
    assert!(
        err.contains("already have an intercept named `one`"),
        "{err}"
    );
    // Another name copying overlapping requests on the same port is refused, naming the first.
    let err = reg.create(ANN, &mirror("two", &[])).unwrap_err();
    assert_eq!(
        err,
        "cannot mirror Deployment/orders port http: your mirror `one` (x-dev=ann) already \
         copies these requests"
    );
    // Requests the first does not copy are fine, as is another port, or another session.
    reg.create(ANN, &mirror("two", &["x-dev=bob"])).unwrap();
    let other_port = CreateIntercept {
        port: 9090,
        ..mirror("three", &[])
    };
    reg.create(ANN, &other_port).unwrap();
    reg.create(BOB, &mirror("one", &["x-dev=ann"])).unwrap();
    // Ann's own take of the same requests is no duplicate copy either.
    reg.create(ANN, &create("take", &["x-dev=ann"])).unwrap();
    // Once the first mirror ends, its requests may be mirrored again.
    reg.remove("s-ann", "one").unwrap();
    reg.create(ANN, &mirror("again", &["x-dev=ann"])).unwrap();
}

#[test]
fn a_mirrors_stats_are_its_copies_and_the_ports_app_counts() {
    use tether_proto::stats::{MirrorCounts, RouteCounts};
    use tether_proto::{RouteStat, RouteStats};

    let mut reg = Registry::new();
    let m = reg.create(ANN, &mirror("copy", &[])).unwrap();
    reg.agent_joined(1, agent("orders-1"), channel().0);
    reg.agent_joined(2, agent("orders-2"), channel().0);
    let app = |n| RouteStat {
        port: 8080,
        intercept: None,
        counts: RouteCounts {
            requests: n,
            latency: Vec::new(),
        },
        mirrored: MirrorCounts::default(),
    };
    let copies = |sent, dropped| RouteStat {
        port: 8080,
        intercept: Some(m.id),
        counts: RouteCounts::default(),
        mirrored: MirrorCounts { sent, dropped },
    };
    reg.agent_stats(
        1,
        RouteStats {
            routes: vec![app(10), copies(8, 2)],
        },
    );
    reg.agent_stats(
        2,
        RouteStats {
            routes: vec![app(5), copies(5, 0)],
        },
    );
    let stats = reg.session_stats("s-ann");
    let stat = &stats.intercepts[0];
    assert_eq!(
        stat.mirrored,
        MirrorCounts {
            sent: 13,
            dropped: 2
        }
    );
    assert_eq!(stat.app.requests, 15);
    assert_eq!(stat.laptop.requests, 0, "a mirror takes nothing");
}

#[test]
fn only_the_holder_reaches_its_intercepts_files() {
    let mut reg = Registry::new();
    let a = reg
        .create(ANN, &create("orders", &["x-session=ann"]))
        .unwrap();
    // No agent linked yet: a clear error, not an empty list.
    let err = reg.file_agents(a.id, "s-ann").unwrap_err();
    assert!(
        err.contains("no traffic agent of Deployment/orders"),
        "{err}"
    );
    let (tx, _rx) = channel();
    reg.agent_joined(7, agent("orders-1"), tx);
    let (tx, _rx) = channel();
    reg.agent_joined(3, agent("orders-2"), tx);
    assert_eq!(reg.file_agents(a.id, "s-ann").unwrap(), [3, 7]);
    // Bob knows the id, but it is not his intercept.
    let err = reg.file_agents(a.id, "s-bob").unwrap_err();
    assert_eq!(
        err,
        format!("intercept {} is not one of this session's", a.id)
    );
    assert!(reg.file_agents(999, "s-ann").is_err());
}

fn replace(name: &str) -> CreateIntercept {
    CreateIntercept {
        mode: InterceptMode::Replace,
        ..create(name, &[])
    }
}

#[test]
fn a_replace_has_its_workload_to_itself() {
    let mut reg = Registry::new();
    let held = reg.create(ANN, &replace("orders")).unwrap();

    // Nobody else gets in, on any port and in any mode; the error names the holder.
    for req in [
        create("orders", &["x-session=bob"]),
        create("orders", &[]),
        mirror("orders", &[]),
        CreateIntercept {
            port: 9090,
            service_port: "admin".to_owned(),
            ..create("admin", &[])
        },
    ] {
        let e = reg.create(BOB, &req).unwrap_err();
        assert!(
            e.contains("ann@laptop has replaced it (intercept `orders`)"),
            "{e}"
        );
    }
    // Nor the holder's own second intercept, but for all of another port of the container.
    assert!(reg.create(ANN, &mirror("copy", &[])).is_err());
    assert!(reg.create(ANN, &create("again", &[])).is_err());
    assert!(reg
        .create(
            ANN,
            &CreateIntercept {
                port: 9090,
                service_port: "admin".to_owned(),
                ..create("admin", &["x-session=ann"])
            },
        )
        .is_err());
    let admin = CreateIntercept {
        port: 9090,
        service_port: "admin".to_owned(),
        ..create("orders-9090", &[])
    };
    reg.create(ANN, &admin).unwrap();

    // Another workload is not concerned.
    let other = CreateIntercept {
        workload: "Deployment/billing".to_owned(),
        ..create("billing", &["x-session=bob"])
    };
    reg.create(BOB, &other).unwrap();

    // Once it ends, others may intercept again.
    reg.remove(ANN.session_id, &held.name).unwrap();
    reg.create(BOB, &create("orders", &["x-session=bob"]))
        .unwrap();
}

#[test]
fn a_replace_waits_for_every_other_intercept_and_names_it() {
    let mut reg = Registry::new();
    reg.create(BOB, &create("orders", &["x-session=bob"]))
        .unwrap();
    let e = reg.create(ANN, &replace("orders")).unwrap_err();
    assert_eq!(
        e,
        "cannot replace Deployment/orders: bob@desk holds intercept `orders` on it \
         (x-session=bob), which must end first"
    );
    reg.end_session(BOB.session_id);
    reg.create(ANN, &replace("orders")).unwrap();
}

#[test]
fn a_replace_takes_all_the_traffic() {
    let mut reg = Registry::new();
    let e = reg
        .create(
            ANN,
            &CreateIntercept {
                mode: InterceptMode::Replace,
                ..create("orders", &["x-session=ann"])
            },
        )
        .unwrap_err();
    assert!(e.contains("cannot have --http-header"), "{e}");
}

#[test]
fn the_latest_replace_of_a_workload_is_remembered_after_it_ends() {
    let mut reg = Registry::new();
    let replace = CreateIntercept {
        mode: InterceptMode::Replace,
        ..create("orders", &[])
    };
    assert_eq!(reg.latest_replace("shop", "Deployment/orders"), None);
    let first = reg.create(ANN, &replace).unwrap();
    assert_eq!(
        reg.latest_replace("shop", "Deployment/orders"),
        Some(first.id)
    );
    // Its session is lost; the daemon reconnects and makes it again: a later one.
    reg.end_session(ANN.session_id);
    assert_eq!(
        reg.latest_replace("shop", "Deployment/orders"),
        Some(first.id)
    );
    let again = reg.create(BOB, &replace).unwrap();
    reg.remove(BOB.session_id, "orders").unwrap();
    assert_eq!(
        reg.latest_replace("shop", "Deployment/orders"),
        Some(again.id)
    );
    // A take is no replace; another workload has its own.
    reg.create(ANN, &create("orders", &[])).unwrap();
    assert_eq!(
        reg.latest_replace("shop", "Deployment/orders"),
        Some(again.id)
    );
    assert_eq!(reg.latest_replace("shop", "Deployment/other"), None);
}
