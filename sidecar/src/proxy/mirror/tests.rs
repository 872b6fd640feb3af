use std::sync::Mutex;

use futures::future::BoxFuture;
use http::Response;
use http_body_util::Empty;
use tokio::sync::Notify;

use super::*;
use crate::proxy::{Duplex, ProxyBody};

/// A laptop that records each copy it gets (method, path, body, trailers) and answers `200`,
/// or, while `held`, never answers.
#[derive(Debug, Default)]
struct Laptop {
    got: Mutex<Vec<(String, Bytes, Option<HeaderMap>)>>,
    /// Copies that arrived, answered or not.
    arrived: std::sync::atomic::AtomicUsize,
    held: bool,
    never: Notify,
}

impl InterceptTarget for Laptop {
    fn send(
        &self,
        request: Request<RequestBody>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, BoxError>> {
        Box::pin(async move {
            self.arrived
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.held {
                self.never.notified().await;
            }
            let what = format!("{} {}", request.method(), request.uri().path());
            let collected = request.into_body().collect().await?;
            let trailers = collected.trailers().cloned();
            self.got
                .lock()
                .unwrap()
                .push((what, collected.to_bytes(), trailers));
            let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
            Ok(Response::new(body))
        })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Duplex>, BoxError>> {
        Box::pin(async { Err("not HTTP".into()) })
    }
}

impl Laptop {
    fn arrived(&self) -> usize {
        self.arrived.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn got(&self) -> Vec<(String, Bytes, Option<HeaderMap>)> {
        self.got.lock().unwrap().clone()
    }
}

fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// A body sent in these pieces, then these trailers.
fn body(pieces: &[&'static [u8]], trailers: Option<HeaderMap>) -> RequestBody {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = pieces
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p))))
        .collect();
    frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
}

/// The mirror counts (sent, dropped) the tally holds for `id`.
fn counted(tally: &Tally, id: u64) -> (u64, u64) {
    let report = tally.report_if_changed(&mut None).unwrap();
    report
        .routes
        .iter()
        .find(|r| r.intercept == Some(id))
        .map_or((0, 0), |r| (r.mirrored.sent, r.mirrored.dropped))
}

/// Lets the mirrors' tasks run until `done` holds (the runtime is the test's one thread).
async fn settle(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never happened: {what}");
}

fn mirror(id: u64, laptop: &Arc<Laptop>, tally: &Tally) -> Arc<Mirror> {
    let counter = Counter {
        port: 8080,
        tally: tally.clone(),
        metrics: None,
    };
    Arc::new(Mirror::spawn(InterceptId(id), laptop.clone(), counter))
}

#[tokio::test]
async fn each_mirror_gets_the_whole_body_and_the_caller_body_passes_unchanged() {
    let tally = Tally::default();
    let (ann, bob) = (Arc::new(Laptop::default()), Arc::new(Laptop::default()));
    // The routing table holds its mirrors: dropping the last handle ends a mirror's task.
    let mirrors = vec![mirror(1, &ann, &tally), mirror(2, &bob, &tally)];
    let held = mirrors.clone();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let head = head("POST", "/orders", &[]);
    let teed = tee(
        &head,
        body(&[b"one ", b"two ", b"three"], Some(trailers)),
        mirrors,
    );
    // Nothing is copied before the caller's body has been read to its end.
    tokio::task::yield_now().await;
    assert_eq!(ann.arrived(), 0);
    let passed = teed.collect().await.unwrap();
    assert_eq!(passed.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(passed.to_bytes(), "one two three");
    settle("both laptops to get their copy", || {
        ann.got().len() == 1 && bob.got().len() == 1
    })
    .await;
    for laptop in [&ann, &bob] {
        let (what, body, trailers) = laptop.got().remove(0);
        assert_eq!(what, "POST /orders");
        assert_eq!(body, "one two three");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }
    settle("both copies to be counted", || counted(&tally, 2) == (1, 0)).await;
    assert_eq!(counted(&tally, 1), (1, 0));
    drop(held);
}

#[tokio::test]
async fn a_bodiless_request_is_copied_at_once() {
    let tally = Tally::default();
    let laptop = Arc::new(Laptop::default());
    let head = head("GET", "/cart", &[("x-dev", "ann")]);
    let empty = Empty::<Bytes>::new();
    let m = mirror(1, &laptop, &tally);
    let _passed = tee(&head, empty, vec![m.clone()]);
    settle("the copy", || laptop.got().len() == 1).await;
    assert_eq!(laptop.got()[0].0, "GET /cart");
}

/// The laptop never answers: the first copies wait on it, the queue fills, and every copy after
/// that is dropped and counted, while offering never waits (`tee` is not async, and nothing here
/// yields to the mirror's task until asked).
#[tokio::test]
async fn a_silent_laptop_fills_the_queue_and_the_excess_is_dropped() {
    let tally = Tally::default();
    let laptop = Arc::new(Laptop {
        held: true,
        ..Laptop::default()
    });
    let m = mirror(1, &laptop, &tally);
    let offer = |n: usize| {
        for _ in 0..n {
            let _ = tee(
                &head("GET", "/", &[]),
                Empty::<Bytes>::new(),
                vec![m.clone()],
            );
        }
    };
    offer(QUEUE_LEN + 10);
    assert_eq!(counted(&tally, 1), (0, 10), "the queue holds {QUEUE_LEN}");
    // The task takes IN_FLIGHT copies to the laptop, which keeps them; that frees their slots.
    settle("the laptop to hold IN_FLIGHT copies", || {
        laptop.arrived() == IN_FLIGHT
    })
    .await;
    offer(IN_FLIGHT + 5);
    assert_eq!(counted(&tally, 1), (0, 15));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        laptop.arrived(),
        IN_FLIGHT,
        "no more than IN_FLIGHT at once"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_flows_whole_and_its_copy_is_dropped() {
    let tally = Tally::default();
    let laptop = Arc::new(Laptop::default());
    static HALF: [u8; MAX_COPY_BODY / 2 + 1] = [b'x'; MAX_COPY_BODY / 2 + 1];
    let head = head("PUT", "/blob", &[]);
    let teed = tee(
        &head,
        body(&[&HALF, &HALF], None),
        vec![mirror(1, &laptop, &tally)],
    );
    let passed = teed.collect().await.unwrap().to_bytes();
    assert_eq!(passed.len(), 2 * HALF.len());
    assert_eq!(counted(&tally, 1), (0, 1));
    // Known to be too large from its length: not even read along.
    let big = Full::new(Bytes::from(vec![0; MAX_COPY_BODY + 1]));
    let teed = tee(&head, big, vec![mirror(1, &laptop, &tally)]);
    assert_eq!(
        teed.collect().await.unwrap().to_bytes().len(),
        MAX_COPY_BODY + 1
    );
    assert_eq!(counted(&tally, 1), (0, 2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(laptop.arrived(), 0);
}

#[tokio::test]
async fn upgrades_and_unread_bodies_are_not_copied() {
    let tally = Tally::default();
    let laptop = Arc::new(Laptop::default());
    let upgrade = head(
        "GET",
        "/ws",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
    );
    let _ = tee(
        &upgrade,
        Empty::<Bytes>::new(),
        vec![mirror(1, &laptop, &tally)],
    );
    assert_eq!(counted(&tally, 1), (0, 1));
    // The app answered without reading the body: no whole body, no copy.
    let unread = tee(
        &head("POST", "/", &[]),
        body(&[b"never read"], None),
        vec![mirror(1, &laptop, &tally)],
    );
    drop(unread);
    assert_eq!(counted(&tally, 1), (0, 2));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(laptop.arrived(), 0);
}

#[tokio::test]
async fn an_unreachable_laptop_counts_its_copies_dropped() {
    #[derive(Debug)]
    struct Gone;
    impl InterceptTarget for Gone {
        fn send(
            &self,
            _: Request<RequestBody>,
        ) -> BoxFuture<'_, Result<Response<ProxyBody>, BoxError>> {
            Box::pin(async { Err("connection refused".into()) })
        }
        fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Duplex>, BoxError>> {
            Box::pin(async { Err("connection refused".into()) })
        }
    }
    let tally = Tally::default();
    let counter = Counter {
        port: 8080,
        tally: tally.clone(),
        metrics: None,
    };
    let m = Arc::new(Mirror::spawn(InterceptId(1), Arc::new(Gone), counter));
    for _ in 0..3 {
        let _ = tee(
            &head("GET", "/", &[]),
            Empty::<Bytes>::new(),
            vec![m.clone()],
        );
    }
    settle("three drops", || counted(&tally, 1) == (0, 3)).await;
}
