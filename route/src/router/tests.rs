use http::request::Parts;
use http::Request;

use super::{AddError, Intercept, InterceptId, InterceptMode, Route, Router};
use crate::filter::{Filter, FilterSpec};

/// The head of a literal HTTP/1.1 request (request line and header lines; no body).
fn head(raw: &[u8]) -> Parts {
    let text = std::str::from_utf8(raw).unwrap();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap();
    let uri = request_line.next().unwrap();
    assert_eq!(request_line.next(), Some("HTTP/1.1"));
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        builder = builder.header(name, value.trim());
    }
    builder.body(()).unwrap().into_parts().0
}

fn intercept(
    id: u64,
    owner: &str,
    headers: &[&str],
    path: Option<&str>,
) -> Intercept<&'static str> {
    let spec = FilterSpec {
        headers: headers.iter().map(|h| h.to_string()).collect(),
        path_prefix: path.map(str::to_owned),
    };
    Intercept {
        id: InterceptId(id),
        owner: owner.to_owned(),
        filter: Filter::try_from(spec).unwrap(),
        mode: InterceptMode::Take,
        target: "laptop",
    }
}

fn mirror(id: u64, owner: &str, headers: &[&str], path: Option<&str>) -> Intercept<&'static str> {
    Intercept {
        mode: InterceptMode::Mirror,
        ..intercept(id, owner, headers, path)
    }
}

/// The ids of the mirrors that get a copy of a request.
fn copied(router: &Router<&str>, raw: &[u8]) -> Vec<u64> {
    let head = head(raw);
    router.mirrors(&head).map(|m| m.id.0).collect()
}

/// The id of the intercept a request goes to, or `None` for the app.
fn routed(router: &Router<&str>, raw: &[u8]) -> Option<u64> {
    match router.route(&head(raw)) {
        Route::App => None,
        Route::Intercept(i) => Some(i.id.0),
    }
}

const PLAIN: &[u8] = b"GET /api/orders HTTP/1.1\r\nhost: shop\r\n\r\n";
const DEV1: &[u8] = b"GET /api/orders HTTP/1.1\r\nhost: shop\r\nx-session: dev-1\r\n\r\n";
const DEV2: &[u8] = b"POST /api/orders HTTP/1.1\r\nx-session: dev-2\r\ncontent-length: 0\r\n\r\n";
const WEB_DEV1: &[u8] = b"GET /web HTTP/1.1\r\nx-session: dev-1\r\n\r\n";

#[test]
fn no_intercept_routes_everything_to_the_app() {
    let router = Router::<&str>::new();
    assert!(router.is_empty());
    assert_eq!(routed(&router, PLAIN), None);
    assert_eq!(routed(&router, DEV1), None);
    assert_eq!(router.route_connection(), Route::App);
}

#[test]
fn personal_intercepts_take_their_requests_only() {
    let mut router = Router::new();
    router
        .add(intercept(1, "ann", &["x-session=dev-1"], None))
        .unwrap();
    router
        .add(intercept(2, "bob", &["x-session=dev-2"], Some("/api")))
        .unwrap();
    assert_eq!(routed(&router, PLAIN), None);
    assert_eq!(routed(&router, DEV1), Some(1));
    assert_eq!(routed(&router, DEV2), Some(2));
    assert_eq!(routed(&router, WEB_DEV1), Some(1));
    assert_eq!(
        routed(&router, b"GET /web HTTP/1.1\r\nx-session: dev-2\r\n\r\n"),
        None,
        "bob's filter also needs the path"
    );
    // Personal intercepts never take non-HTTP connections.
    assert_eq!(router.route_connection(), Route::App);
}

#[test]
fn global_intercept_takes_what_no_personal_one_does() {
    let mut router = Router::new();
    router
        .add(intercept(1, "ann", &["x-session=dev-1"], None))
        .unwrap();
    router.add(intercept(9, "carol", &[], None)).unwrap();
    assert_eq!(routed(&router, DEV1), Some(1));
    assert_eq!(routed(&router, PLAIN), Some(9));
    assert_eq!(routed(&router, DEV2), Some(9));
    assert!(matches!(router.route_connection(), Route::Intercept(i) if i.owner == "carol"));
}

#[test]
fn second_global_is_refused_naming_the_holder() {
    let mut router = Router::new();
    router.add(intercept(1, "ann", &[], None)).unwrap();
    let err = router.add(intercept(2, "bob", &[], None)).unwrap_err();
    assert_eq!(
        err,
        AddError::GlobalTaken {
            holder: "ann".into(),
            id: InterceptId(1)
        }
    );
    assert_eq!(
        err.to_string(),
        "the port is already intercepted (all traffic) by ann"
    );
    assert_eq!(
        routed(&router, PLAIN),
        Some(1),
        "the refusal changed nothing"
    );
}

#[test]
fn overlapping_personal_filters_are_refused_naming_the_holder() {
    let mut router = Router::new();
    router
        .add(intercept(1, "ann", &["x-session=dev-1"], None))
        .unwrap();
    let err = router
        .add(intercept(2, "bob", &["x-session=dev-1"], Some("/api")))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the filter overlaps the intercept of ann (x-session=dev-1)"
    );
    // Other header names overlap too: a request may carry both.
    assert!(matches!(
        router.add(intercept(3, "bob", &["x-user=bob"], None)),
        Err(AddError::Overlap {
            id: InterceptId(1),
            ..
        })
    ));
    // A different value of the same header does not.
    router
        .add(intercept(4, "bob", &["x-session=dev-2"], None))
        .unwrap();
    assert_eq!(routed(&router, DEV2), Some(4));
    assert_eq!(router.iter().count(), 2);
}

#[test]
fn duplicate_ids_are_refused() {
    let mut router = Router::new();
    router.add(intercept(1, "ann", &["a=1"], None)).unwrap();
    assert_eq!(
        router.add(intercept(1, "ann", &["a=2"], None)),
        Err(AddError::DuplicateId(InterceptId(1)))
    );
    assert_eq!(
        router.add(intercept(1, "ann", &[], None)),
        Err(AddError::DuplicateId(InterceptId(1)))
    );
}

#[test]
fn removing_returns_traffic_and_frees_the_port() {
    let mut router = Router::new();
    router.add(intercept(1, "ann", &[], None)).unwrap();
    router
        .add(intercept(2, "bob", &["x-session=dev-1"], None))
        .unwrap();
    assert_eq!(
        router.remove(InterceptId(1)).map(|i| i.owner),
        Some("ann".into())
    );
    assert_eq!(router.remove(InterceptId(1)).map(|i| i.id), None);
    assert_eq!(routed(&router, PLAIN), None);
    assert_eq!(routed(&router, DEV1), Some(2));
    router.add(intercept(3, "carol", &[], None)).unwrap();
    assert_eq!(routed(&router, PLAIN), Some(3));
    router.remove(InterceptId(2)).unwrap();
    router
        .add(intercept(4, "dave", &["x-session=dev-1"], None))
        .unwrap();
    assert_eq!(routed(&router, DEV1), Some(4));
    assert_eq!(
        router.get(InterceptId(4)).map(|i| i.owner.as_str()),
        Some("dave")
    );
}

#[test]
fn mirrors_take_nothing_and_copy_what_they_match() {
    let mut router = Router::new();
    router
        .add(mirror(1, "ann", &["x-session=dev-1"], None))
        .unwrap();
    router.add(mirror(2, "bob", &[], None)).unwrap();
    assert!(router.has_mirrors());
    assert!(!router.is_empty());
    // Every request still goes to the app...
    assert_eq!(routed(&router, PLAIN), None);
    assert_eq!(routed(&router, DEV1), None);
    assert_eq!(router.route_connection(), Route::App);
    // ...and each matching mirror gets a copy: the global one all, ann's only hers.
    assert_eq!(copied(&router, PLAIN), [2]);
    assert_eq!(copied(&router, DEV1), [1, 2]);
    assert_eq!(copied(&router, DEV2), [2]);
    // Mirrors are intercepts the agent routes by (the probe lists them).
    let ids: Vec<u64> = router.iter().map(|i| i.id.0).collect();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn mirrors_coexist_with_intercepts_and_each_other() {
    let mut router = Router::new();
    router
        .add(intercept(1, "ann", &["x-session=dev-1"], None))
        .unwrap();
    router.add(intercept(2, "carol", &[], None)).unwrap();
    // The same filter as ann's take, a global one beside carol's, and overlapping mirrors.
    router
        .add(mirror(3, "bob", &["x-session=dev-1"], None))
        .unwrap();
    router.add(mirror(4, "dave", &[], None)).unwrap();
    router.add(mirror(5, "erin", &[], Some("/api"))).unwrap();
    router.add(mirror(6, "dave", &[], None)).unwrap();
    assert_eq!(
        routed(&router, DEV1),
        Some(1),
        "ann's take still takes hers"
    );
    assert_eq!(routed(&router, PLAIN), Some(2), "carol's global the rest");
    assert_eq!(copied(&router, DEV1), [3, 4, 5, 6]);
    assert_eq!(copied(&router, WEB_DEV1), [3, 4, 6]);
    assert_eq!(copied(&router, PLAIN), [4, 5, 6]);
    // A mirror's id is still unique on the port.
    assert_eq!(
        router.add(mirror(1, "bob", &[], None)),
        Err(AddError::DuplicateId(InterceptId(1)))
    );
    assert_eq!(
        router.add(intercept(4, "bob", &["x-session=dev-9"], None)),
        Err(AddError::DuplicateId(InterceptId(4)))
    );
    // Removing a mirror leaves the takes alone, and the other way round.
    assert_eq!(
        router.remove(InterceptId(4)).map(|m| m.mode),
        Some(InterceptMode::Mirror)
    );
    assert_eq!(copied(&router, PLAIN), [5, 6]);
    router.remove(InterceptId(2)).unwrap();
    assert_eq!(routed(&router, PLAIN), None);
    assert_eq!(copied(&router, PLAIN), [5, 6]);
    router.remove(InterceptId(5)).unwrap();
    router.remove(InterceptId(6)).unwrap();
    router.remove(InterceptId(3)).unwrap();
    assert!(!router.has_mirrors());
    router.remove(InterceptId(1)).unwrap();
    assert!(router.is_empty());
}
