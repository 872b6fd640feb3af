use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use clap::Parser;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

fn parse(argv: &[&str]) -> Result<GetArgs, clap::Error> {
    let argv = ["tether-testapp", "get"].iter().chain(argv);
    match crate::Args::try_parse_from(argv)?.command {
        Some(crate::Command::Get(args)) => Ok(args),
        other => panic!("not `get`: {other:?}"),
    }
}

fn args(argv: &[&str]) -> GetArgs {
    parse(argv).unwrap()
}

/// The echo server on loopback, counting the connections it accepts.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    async fn start(name: &str) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = name.into();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(crate::echo::serve_connection(stream, peer, name.clone()));
            }
        });
        Echo { addr, accepted }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Four requests alternating `x-session: dev-1` and nothing, all with `x-all: yes`.
async fn alternating(h2: bool) {
    let echo = Echo::start("echo-1").await;
    let url = echo.url("/orders?id=7");
    let mut argv = vec![
        url.as_str(),
        "--header",
        "x-all: yes",
        "--each-header",
        "x-session:dev-1",
        "--each-header",
        "",
        "--repeat",
        "4",
    ];
    if h2 {
        argv.push("--h2");
    }
    let outcome = fetch(&args(&argv)).await.unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.answers.len(), 4);
    let version = if h2 { "HTTP/2.0" } else { "HTTP/1.1" };
    for (i, answer) in outcome.answers.iter().enumerate() {
        assert_eq!(answer.line(), "200 hello from echo-1");
        let body = &answer.body;
        assert!(body.contains(&format!("/orders?id=7 {version}")), "{body}");
        assert!(body.contains("header x-all: yes\n"), "{body}");
        assert_eq!(
            body.contains("header x-session: dev-1\n"),
            i % 2 == 0,
            "request {i}: {body}"
        );
        // The server saw every request come from the client's one socket.
        assert!(
            body.contains(&format!("peer {}\n", outcome.connection.local)),
            "{body}"
        );
    }
    assert_eq!(outcome.connection.peer, echo.addr);
    assert_eq!(echo.accepted(), 1);
    assert_eq!(
        outcome.to_string(),
        format!(
            "4 of 4 requests answered, all on one {} connection {} -> {}",
            if h2 { "HTTP/2.0" } else { "HTTP/1.1" },
            outcome.connection.local,
            echo.addr
        )
    );
}

#[tokio::test]
async fn http1_requests_share_one_connection() {
    alternating(false).await;
}

#[tokio::test]
async fn h2_requests_share_one_connection() {
    alternating(true).await;
}

#[tokio::test]
async fn a_closed_connection_is_not_dialled_again() {
    // Answers one request per connection, then closes it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "the client went away mid-request");
                request.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nonce\n",
                )
                .await
                .unwrap();
        }
    });
    let url = format!("http://{addr}/");
    let outcome = fetch(&args(&[&url, "--repeat", "3"])).await.unwrap();
    assert_eq!(outcome.answers.len(), 1);
    assert_eq!(outcome.answers[0].line(), "200 once");
    let error = format!("{:#}", outcome.error.expect("the second request must fail"));
    assert!(error.starts_with("request 2 of 3: "), "{error}");
    assert!(error.contains("closed the connection"), "{error}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connection_says_where() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/");
    let error = format!("{:#}", fetch(&args(&[&url])).await.unwrap_err());
    assert!(
        error.starts_with(&format!("connecting to {addr} ({addr}): ")),
        "{error}"
    );
}

#[tokio::test]
async fn host_names_are_resolved() {
    let echo = Echo::start("echo-2").await;
    let url = format!("http://localhost:{}/", echo.addr.port());
    let outcome = fetch(&args(&[&url])).await.unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.answers[0].line(), "200 hello from echo-2");
    assert!(
        outcome.answers[0]
            .body
            .contains(&format!("header host: localhost:{}\n", echo.addr.port())),
        "{}",
        outcome.answers[0].body
    );
}

#[tokio::test]
async fn env_path_answers_with_the_server_environment() {
    let echo = Echo::start("echo-3").await;
    let outcome = fetch(&args(&[&echo.url("/env"), "--h2"])).await.unwrap();
    assert_eq!(outcome.answers[0].status, 200);
    assert_eq!(
        outcome.answers[0].body,
        crate::echo::env_text(std::env::vars_os())
    );
    assert!(
        outcome.answers[0].body.contains("\nPATH=") || outcome.answers[0].body.starts_with("PATH=")
    );
}

#[test]
fn each_header_entries_set_the_default_count() {
    assert_eq!(args(&["http://x/"]).count(), 1);
    assert_eq!(args(&["http://x/", "--repeat", "5"]).count(), 5);
    let a = args(&[
        "http://x/",
        "--each-header",
        "a:1",
        "--each-header",
        "",
        "--each-header",
        "b:2",
    ]);
    assert_eq!(a.count(), 3);
    let a = args(&[
        "http://x/",
        "--header",
        "x-all:1",
        "--each-header",
        "x-session: dev-1",
        "--each-header",
        "",
        "--repeat",
        "5",
    ]);
    assert_eq!(a.count(), 5);
    let names = |i| {
        a.headers_for(i)
            .map(|h| format!("{}={}", h.name, h.value.to_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(0), ["x-all=1", "x-session=dev-1"]);
    assert_eq!(names(1), ["x-all=1"]);
    assert_eq!(names(4), ["x-all=1", "x-session=dev-1"]);
}

#[test]
fn bad_arguments_are_refused() {
    assert!(parse(&["http://x/", "--repeat", "0"]).is_err());
    assert!(parse(&["http://x/", "--header", "no-colon"]).is_err());
    assert!(parse(&["http://x/", "--header", "bad name:1"]).is_err());
    assert!(parse(&["http://x/", "--each-header", "x:bad\nvalue"]).is_err());
}

#[test]
fn http1_requests_carry_the_path_and_host() {
    let a = args(&[
        "http://orders.default:8080/a?b=1",
        "--header",
        "Host: other",
    ]);
    let target = Target::parse(&a.url).unwrap();
    let req = a.request(&target, 0).unwrap();
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
    assert_eq!(req.headers()[HOST], "other");
    let a = args(&["http://orders.default/", "--h2"]);
    let req = a.request(&Target::parse(&a.url).unwrap(), 0).unwrap();
    assert_eq!(req.uri(), "http://orders.default/");
    assert!(req.headers().get(HOST).is_none());
}

#[test]
fn output_is_status_and_first_line_or_json() {
    let answers = [
        Answer {
            status: 200,
            body: "  hello from orders-1  \nGET / HTTP/1.1\n".into(),
        },
        Answer {
            status: 503,
            body: String::new(),
        },
        Answer {
            status: 404,
            body: "say \"no\"".into(),
        },
    ];
    let lines: Vec<String> = answers.iter().map(Answer::line).collect();
    assert_eq!(lines, ["200 hello from orders-1", "503", "404 say \"no\""]);
    let json = json_array(&answers);
    assert_eq!(
        json,
        r#"[{"status":200,"body":"  hello from orders-1  \nGET / HTTP/1.1\n"},{"status":503,"body":""},{"status":404,"body":"say \"no\""}]"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[1]["status"], 503);
}
