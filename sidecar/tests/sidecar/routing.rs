//! Routing through the proxy: with no intercept, personal intercepts on one HTTP/1.1 or HTTP/2
//! connection, a global intercept coming and going under load, non-HTTP traffic.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    add, get, get_trailers, h1_client, h2_client, start_proxy, tcp_server, upgrade_echo,
    HttpServer, TcpKind,
};
use tether_route::router::{AddError, InterceptId};
use tether_sidecar::proxy::{LocalTarget, SharedTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SNIFF: Duration = Duration::from_millis(200);

fn laptop_target(laptop: &HttpServer) -> SharedTarget {
    Arc::new(LocalTarget::new(laptop.addr))
}

#[tokio::test]
async fn without_intercepts_everything_reaches_the_app() {
    let app = HttpServer::start("app").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    let mut h1 = h1_client(proxy.addr).await;
    let mut h2 = h2_client(proxy.addr).await;
    for session in [None, Some("dev-1")] {
        assert_eq!(get(&mut h1, "/", session).await.0, "app");
        assert_eq!(get(&mut h2, "/", session).await.0, "app");
    }
}

#[tokio::test]
async fn personal_intercept_splits_one_http1_connection_per_request() {
    let app = HttpServer::start("app").await;
    let laptop = HttpServer::start("laptop").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    add(
        &proxy,
        1,
        "ann",
        &["x-session=dev-1"],
        laptop_target(&laptop),
    )
    .unwrap();

    let mut conn = h1_client(proxy.addr).await;
    for _ in 0..3 {
        let (who, body) = get(&mut conn, "/orders", Some("dev-1")).await;
        assert_eq!(who, "laptop");
        assert!(body.contains("x-session=dev-1"), "{body}");
        let (who, body) = get(&mut conn, "/orders", None).await;
        assert_eq!(who, "app");
        assert!(body.contains("x-session=-"), "{body}");
        assert_eq!(get(&mut conn, "/orders", Some("dev-2")).await.0, "app");
    }
    // Upstream connections are pooled, not one per request (a second one may open when a
    // request comes before the first connection is back in the pool).
    assert!(
        app.connections() <= 2,
        "{} app connections",
        app.connections()
    );
    assert!(laptop.connections() <= 2);
}

#[tokio::test]
async fn personal_intercept_splits_one_http2_connection_per_stream() {
    let app = HttpServer::start("app").await;
    let laptop = HttpServer::start("laptop").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    add(
        &proxy,
        1,
        "ann",
        &["x-session=dev-1"],
        laptop_target(&laptop),
    )
    .unwrap();

    let mut conn = h2_client(proxy.addr).await;
    for _ in 0..3 {
        let (who, body) = get(&mut conn, "/orders", Some("dev-1")).await;
        assert_eq!(who, "laptop");
        assert!(body.contains("HTTP/2.0"), "h2 upstream: {body}");
        assert_eq!(get(&mut conn, "/orders", None).await.0, "app");
    }
    // Concurrent streams on the same connection, interleaved.
    let requests = (0..20).map(|i| {
        let mut conn = conn.clone();
        async move {
            let session = (i % 2 == 0).then_some("dev-1");
            (i, get(&mut conn, "/", session).await.0)
        }
    });
    for (i, who) in futures::future::join_all(requests).await {
        assert_eq!(who, if i % 2 == 0 { "laptop" } else { "app" }, "stream {i}");
    }
}

#[tokio::test]
async fn http2_trailers_pass_both_ways_as_grpc_needs() {
    let app = HttpServer::start("app").await;
    let laptop = HttpServer::start("laptop").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    add(
        &proxy,
        1,
        "ann",
        &["x-session=dev-1"],
        laptop_target(&laptop),
    )
    .unwrap();
    let mut conn = h2_client(proxy.addr).await;
    let expected = |who: &str| (who.to_owned(), who.to_owned(), Some("0".to_owned()));
    assert_eq!(get_trailers(&mut conn, None).await, expected("app"));
    assert_eq!(
        get_trailers(&mut conn, Some("dev-1")).await,
        expected("laptop")
    );
}

#[tokio::test]
async fn global_intercept_takes_everything_until_removed_without_dropping_requests() {
    let app = HttpServer::start("app").await;
    let laptop = HttpServer::start("laptop").await;
    let proxy = start_proxy(app.addr, SNIFF).await;

    // A slow request is in flight to the app when the intercept starts.
    let mut slow_to_app = h1_client(proxy.addr).await;
    let slow_app = tokio::spawn(async move { get(&mut slow_to_app, "/slow", None).await });
    app.slow.arrived.notified().await;

    add(&proxy, 7, "carol", &[], laptop_target(&laptop)).unwrap();
    let mut h1 = h1_client(proxy.addr).await;
    let mut h2 = h2_client(proxy.addr).await;
    for session in [None, Some("dev-1")] {
        assert_eq!(get(&mut h1, "/", session).await.0, "laptop");
        assert_eq!(get(&mut h2, "/", session).await.0, "laptop");
    }
    // And one in flight to the laptop when it ends.
    let mut slow_to_laptop = h1_client(proxy.addr).await;
    let slow_laptop = tokio::spawn(async move { get(&mut slow_to_laptop, "/slow", None).await });
    laptop.slow.arrived.notified().await;

    assert!(proxy.proxy.routes().remove(InterceptId(7)).is_some());
    assert_eq!(get(&mut h1, "/", None).await.0, "app", "same connection");
    assert_eq!(get(&mut h2, "/", Some("dev-1")).await.0, "app");

    app.slow.release.notify_one();
    laptop.slow.release.notify_one();
    assert_eq!(slow_app.await.unwrap().0, "app");
    assert_eq!(slow_laptop.await.unwrap().0, "laptop");
}

#[tokio::test]
async fn conflicting_intercepts_are_refused_with_the_holder() {
    let app = HttpServer::start("app").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    let target = laptop_target(&app);
    add(&proxy, 1, "ann", &[], target.clone()).unwrap();
    add(&proxy, 2, "bob", &["x-session=dev-1"], target.clone()).unwrap();
    let err = add(&proxy, 3, "dave", &[], target.clone()).unwrap_err();
    assert!(matches!(err, AddError::GlobalTaken { ref holder, .. } if holder == "ann"));
    let err = add(&proxy, 4, "eve", &["x-session=dev-1"], target).unwrap_err();
    assert!(err.to_string().contains("bob"), "{err}");
    assert_eq!(proxy.proxy.routes().snapshot().iter().count(), 2);
}

#[tokio::test]
async fn unreachable_upstream_is_a_bad_gateway() {
    let app = HttpServer::start("app").await;
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = start_proxy(app.addr, SNIFF).await;
    add(
        &proxy,
        1,
        "ann",
        &["x-session=dev-1"],
        Arc::new(LocalTarget::new(dead)),
    )
    .unwrap();
    let mut conn = h1_client(proxy.addr).await;
    assert_eq!(get(&mut conn, "/", Some("dev-1")).await.0, "502");
    assert_eq!(
        get(&mut conn, "/", None).await.0,
        "app",
        "connection still usable"
    );
}

#[tokio::test]
async fn http1_upgrade_is_spliced_through() {
    let app = HttpServer::start("app").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    let echoed = upgrade_echo(proxy.addr, b"ping over upgraded connection").await;
    assert_eq!(echoed, b"ping over upgraded connection");
}

#[tokio::test]
async fn non_http_passes_through_to_the_app_or_the_global_intercept() {
    let app = tcp_server(TcpKind::Echo).await;
    let laptop = tcp_server(TcpKind::Tagged("laptop:")).await;
    let proxy = start_proxy(app, SNIFF).await;
    let message = b"\x00\x01binary hello\xff";

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
    // The relay keeps going after the first bytes.
    stream.write_all(b"more").await.unwrap();
    let mut more = [0; 4];
    stream.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"more");

    // A personal intercept cannot filter bytes: still the app.
    let laptop_target: SharedTarget = Arc::new(LocalTarget::new(laptop));
    add(
        &proxy,
        1,
        "ann",
        &["x-session=dev-1"],
        laptop_target.clone(),
    )
    .unwrap();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"\x16\x03\x01").await.unwrap();
    let mut back = [0; 3];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"\x16\x03\x01");

    add(&proxy, 2, "carol", &[], laptop_target).unwrap();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"\x16\x03\x01").await.unwrap();
    let mut back = [0; 10];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"laptop:\x16\x03\x01");
}

#[tokio::test]
async fn server_first_protocols_pass_after_the_sniff_timeout() {
    let app = tcp_server(TcpKind::Greeter).await;
    let proxy = start_proxy(app, SNIFF).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut greeting = [0; 6];
    tokio::time::timeout(SNIFF * 10, stream.read_exact(&mut greeting))
        .await
        .expect("greeting relayed")
        .unwrap();
    assert_eq!(&greeting, b"hello\n");
}

/// The daemon's probe is answered by the proxy itself, with the intercepts the port routes by
/// at that moment; the app never sees it.
#[tokio::test]
async fn probes_are_answered_with_the_current_intercepts() {
    use tether_proto::probe::{ProbeReply, PROBE};
    let app = HttpServer::start("app").await;
    let laptop = HttpServer::start("laptop").await;
    let proxy = start_proxy(app.addr, SNIFF).await;
    let probe = || async {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(PROBE).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        ProbeReply::parse(&reply).expect("a probe reply")
    };
    assert_eq!(
        probe().await,
        ProbeReply {
            pod: "test-pod".into(),
            intercepts: vec![]
        }
    );
    add(&proxy, 7, "ann", &["x-dev=ann"], laptop_target(&laptop)).unwrap();
    add(&proxy, 9, "bob", &[], laptop_target(&laptop)).unwrap();
    let mut ids = probe().await.intercepts;
    ids.sort();
    assert_eq!(ids, [7, 9]);
    proxy.proxy.routes().remove(InterceptId(7));
    assert_eq!(probe().await.intercepts, [9]);
    assert_eq!(app.connections(), 0, "the app saw a probe");
}

/// An HTTP/1.0 server on the laptop (Python's `http.server`) closes its connection after every
/// answer; the caller's HTTP/1.1 keep-alive connection stays open all the same, and its answers
/// come as HTTP/1.1.
#[tokio::test]
async fn an_http10_laptop_does_not_close_the_callers_connection() {
    let app = HttpServer::start("app").await;
    let laptop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let laptop_addr = laptop.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = laptop.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\nx-served-by: laptop10\r\n\r\nfrom the laptop")
                    .await;
            });
        }
    });
    let proxy = start_proxy(app.addr, SNIFF).await;
    let target: SharedTarget = Arc::new(LocalTarget::new(laptop_addr));
    add(&proxy, 1, "ann", &["x-session=dev-1"], target).unwrap();

    // Raw HTTP/1.1 on one connection, as curl sends it: laptop, app, laptop, app.
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    for session in ["dev-1", "-", "dev-1", "-"] {
        let request = format!("GET / HTTP/1.1\r\nhost: orders\r\nx-session: {session}\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let (status, served_by) = read_response(&mut conn, &mut pending).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "for {session}");
        let expected = if session == "-" { "app" } else { "laptop10" };
        assert_eq!(served_by, expected);
    }
}

/// A laptop server that closes a keep-alive connection when the next request arrives on it (its
/// idle timeout firing as the request comes in): an idempotent bodiless request is sent again on
/// a new connection and answered; a POST with a body is not sent twice, and the caller gets 502.
#[tokio::test]
async fn a_keep_alive_connection_closed_under_a_request_is_retried() {
    let app = HttpServer::start("app").await;
    let laptop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let laptop_addr = laptop.local_addr().unwrap();
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posts_seen = posts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = laptop.accept().await {
            let posts = posts_seen.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0; 1024];
                for answered in 0.. {
                    let end = loop {
                        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                    if head.starts_with("post") {
                        posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if answered == 1 {
                        // The second request on a connection: closed without an answer.
                        return;
                    }
                    let body_len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    while pending.len() < end + body_len {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    pending.drain(..end + body_len);
                    let answer =
                        b"HTTP/1.1 200 OK\r\nx-served-by: laptop\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = start_proxy(app.addr, SNIFF).await;
    let target: SharedTarget = Arc::new(LocalTarget::new(laptop_addr));
    add(&proxy, 1, "ann", &["x-session=dev-1"], target).unwrap();

    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    let get = "GET / HTTP/1.1\r\nhost: orders\r\nx-session: dev-1\r\n\r\n".to_owned();
    // The first GET opens a pooled connection; the second is written on it as it closes.
    for _ in 0..2 {
        let (status, served_by) = exchange(&mut conn, &mut pending, &get).await;
        assert_eq!(
            (status.as_str(), served_by.as_str()),
            ("HTTP/1.1 200 OK", "laptop")
        );
    }
    // A GET pools a new connection; a POST with a body on it is not sent twice.
    assert_eq!(
        exchange(&mut conn, &mut pending, &get).await.0,
        "HTTP/1.1 200 OK"
    );
    let post =
        "POST / HTTP/1.1\r\nhost: orders\r\nx-session: dev-1\r\ncontent-length: 5\r\n\r\nhello";
    let (status, _) = exchange(&mut conn, &mut pending, post).await;
    assert_eq!(status, "HTTP/1.1 502 Bad Gateway");
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Writes one request on `conn` and reads its response.
async fn exchange(conn: &mut TcpStream, pending: &mut Vec<u8>, request: &str) -> (String, String) {
    conn.write_all(request.as_bytes()).await.unwrap();
    read_response(conn, pending).await
}

/// Reads one response (with `content-length`, or chunked) off `conn`; returns its status line
/// and `x-served-by`. Bytes of the next response stay in `pending`.
async fn read_response(conn: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let body_start = end + 4;
            let body_len = if let Some(len) = header("content-length") {
                len.parse::<usize>().unwrap()
            } else {
                assert_eq!(
                    header("transfer-encoding").as_deref(),
                    Some("chunked"),
                    "{head}"
                );
                // Wait for the last chunk, then take everything up to it.
                loop {
                    if let Some(p) = pending[body_start..]
                        .windows(5)
                        .position(|w| w == b"0\r\n\r\n")
                    {
                        break p + 5;
                    }
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the connection closed mid-response");
                    pending.extend_from_slice(&buf[..n]);
                }
            };
            while pending.len() < body_start + body_len {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed mid-body");
                pending.extend_from_slice(&buf[..n]);
            }
            pending.drain(..body_start + body_len);
            let status = head.lines().next().unwrap_or_default().to_owned();
            return (status, header("x-served-by").unwrap_or_default());
        }
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed the caller's connection");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A free port of this machine's (the test's "pod's") addresses, as the app's container port.
async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn while_the_app_is_replaced_its_own_port_reaches_the_laptop() {
    use tether_sidecar::takeover::Takeover;
    let laptop = HttpServer::start("laptop").await;
    let port = free_port().await;
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = start_proxy(app, SNIFF).await;
    let mut takeover = Takeover::new(vec![(port, proxy.proxy.clone())]);

    // A take of all traffic is not a replace: the app's port stays the app's.
    add(&proxy, 1, "ann", &[], laptop_target(&laptop)).unwrap();
    takeover.sync();
    assert_eq!(takeover.taken(), Vec::<u16>::new());
    proxy.proxy.routes().remove(InterceptId(1));

    // A replace: the agent listens on the container's port, and a caller of the pod's address
    // reaches the laptop there.
    crate::support::add_with_mode(
        &proxy,
        2,
        tether_proto::InterceptMode::Replace,
        "ann",
        &[],
        laptop_target(&laptop),
    )
    .unwrap();
    takeover.sync();
    assert_eq!(takeover.taken(), [port]);
    let mut direct = h1_client(app).await;
    assert_eq!(get(&mut direct, "/", None).await.0, "laptop");
    drop(direct);

    // The replace ends: the port is let go, and a caller is refused (the app is not back yet).
    proxy.proxy.routes().remove(InterceptId(2));
    takeover.sync();
    assert_eq!(takeover.taken(), Vec::<u16>::new());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(app).await.is_err(), "nothing listens");

    // Where the app still listens (a pod not yet rolled out), the port is left to it.
    let held =
        std::net::TcpListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
    crate::support::add_with_mode(
        &proxy,
        3,
        tether_proto::InterceptMode::Replace,
        "ann",
        &[],
        laptop_target(&laptop),
    )
    .unwrap();
    takeover.sync();
    assert_eq!(takeover.taken(), Vec::<u16>::new());
    drop(held);
    // Tried again at the next change of the intercepts.
    takeover.sync();
    assert_eq!(takeover.taken(), [port]);
}
