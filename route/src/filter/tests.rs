use http::request::Parts;
use http::{Request, Version};

use super::{Filter, FilterError, FilterSpec};

/// The head of `GET uri` with these header lines.
fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn filter(headers: &[&str], path_prefix: Option<&str>) -> Filter {
    Filter::try_from(spec(headers, path_prefix)).unwrap()
}

fn spec(headers: &[&str], path_prefix: Option<&str>) -> FilterSpec {
    FilterSpec {
        headers: headers.iter().map(|h| h.to_string()).collect(),
        path_prefix: path_prefix.map(str::to_owned),
    }
}

fn error(headers: &[&str], path_prefix: Option<&str>) -> FilterError {
    Filter::try_from(spec(headers, path_prefix)).unwrap_err()
}

#[test]
fn header_matches_exact_value_with_case_insensitive_name() {
    let f = filter(&["X-Session=dev-1"], None);
    assert!(f.matches(&request("/", &[("x-session", "dev-1")])));
    assert!(f.matches(&request("/", &[("X-SESSION", "dev-1")])));
    assert!(!f.matches(&request("/", &[("x-session", "DEV-1")])));
    assert!(!f.matches(&request("/", &[("x-session", "dev-10")])));
    assert!(!f.matches(&request("/", &[("x-session", "dev-")])));
    assert!(!f.matches(&request("/", &[("x-other", "dev-1")])));
    assert!(!f.matches(&request("/", &[])));
}

#[test]
fn value_may_contain_equals_signs() {
    let f = filter(&["cookie=a=b"], None);
    assert!(f.matches(&request("/", &[("cookie", "a=b")])));
}

#[test]
fn repeated_header_lines_are_joined() {
    let f = filter(&["x-session=dev-1"], None);
    let twice = request("/", &[("x-session", "dev-1"), ("x-session", "dev-2")]);
    assert!(!f.matches(&twice), "combined value is `dev-1, dev-2`");
    let joined = filter(&["x-session=dev-1, dev-2"], None);
    assert!(joined.matches(&twice));
    assert!(joined.matches(&request("/", &[("x-session", "dev-1, dev-2")])));
    assert!(!joined.matches(&request("/", &[("x-session", "dev-1")])));
    let reversed = request("/", &[("x-session", "dev-2"), ("x-session", "dev-1")]);
    assert!(!joined.matches(&reversed));
}

#[test]
fn all_constraints_must_hold() {
    let f = filter(&["x-session=dev-1", "x-user=ann"], Some("/api"));
    let both = [("x-session", "dev-1"), ("x-user", "ann")];
    assert!(f.matches(&request("/api/orders?x=1", &both)));
    assert!(!f.matches(&request("/web", &both)));
    assert!(!f.matches(&request("/api", &both[..1])));
}

#[test]
fn path_prefix_matches_whole_segments() {
    let f = filter(&[], Some("/api"));
    for path in [
        "/api",
        "/api/",
        "/api/v1",
        "/api?q=1",
        "http://svc:8080/api/x",
    ] {
        assert!(f.matches(&request(path, &[])), "{path}");
    }
    for path in ["/", "/apis", "/ap", "/v1/api", "/API"] {
        assert!(!f.matches(&request(path, &[])), "{path}");
    }
    let below = filter(&[], Some("/api/"));
    assert!(below.matches(&request("/api/v1", &[])));
    assert!(!below.matches(&request("/api", &[])));
}

#[test]
fn host_falls_back_to_the_authority() {
    let f = filter(&["host=shop.prod:8080"], None);
    assert!(f.matches(&request("/", &[("host", "shop.prod:8080")])));
    // HTTP/2 carries the host in `:authority`, which is the URI's authority.
    let mut h2 = request("http://shop.prod:8080/", &[]);
    h2.version = Version::HTTP_2;
    assert!(f.matches(&h2));
    assert!(!f.matches(&request("http://other:8080/", &[])));
    // An explicit Host header wins over the authority.
    assert!(!f.matches(&request("http://shop.prod:8080/", &[("host", "other")])));
}

#[test]
fn global_filter_matches_everything() {
    let f = Filter::try_from(FilterSpec::default()).unwrap();
    assert!(f.is_global());
    assert_eq!(f, Filter::global());
    assert!(f.matches(&request("/anything", &[("x", "y")])));
    assert!(!filter(&["a=b"], None).is_global());
    assert!(!filter(&[], Some("/a")).is_global());
}

#[test]
fn malformed_specs_are_refused() {
    use FilterError::*;
    assert_eq!(
        error(&["x-session"], None),
        MissingEquals("x-session".into())
    );
    assert_eq!(error(&["=dev-1"], None), EmptyName("=dev-1".into()));
    assert_eq!(
        error(&["x session=a"], None),
        InvalidName("x session".into())
    );
    assert_eq!(error(&["x:s=a"], None), InvalidName("x:s".into()));
    assert_eq!(error(&["x-session="], None), EmptyValue("x-session".into()));
    assert_eq!(error(&["x-s=~dev-.*"], None), Regex("x-s".into()));
    assert_eq!(error(&["x-s= dev"], None), ValueWhitespace("x-s".into()));
    assert_eq!(error(&["x-s=a\nb"], None), InvalidValue("x-s".into()));
    assert_eq!(
        error(&["X-S=a", "x-s=b"], None),
        ConflictingValues("x-s".into())
    );
    for bad in ["api", "/", "/api?x=1", "/a#b", "/a b"] {
        assert!(
            matches!(error(&[], Some(bad)), PathPrefix { .. }),
            "{bad} accepted"
        );
    }
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        error(&["x-session"], None).to_string(),
        "header filter `x-session` is not NAME=VALUE"
    );
    assert_eq!(
        error(&[], Some("api")).to_string(),
        "path prefix `api` must start with `/`"
    );
}

#[test]
fn duplicates_collapse_and_display_is_canonical() {
    let f = filter(
        &["x-user=ann", "X-Session=dev-1", "x-user=ann"],
        Some("/api"),
    );
    assert_eq!(f.to_string(), "x-session=dev-1, x-user=ann, path /api");
    assert_eq!(Filter::try_from(f.to_spec()).unwrap(), f);
    assert_eq!(Filter::global().to_string(), "all traffic");
}

/// Checks `overlaps` both ways, since the relation is symmetric.
fn overlap(a: &Filter, b: &Filter) -> bool {
    let forward = a.overlaps(b);
    assert_eq!(forward, b.overlaps(a), "{a} vs {b} is not symmetric");
    forward
}

#[test]
fn same_header_overlaps_only_with_the_same_value() {
    let dev1 = filter(&["x-session=dev-1"], None);
    assert!(overlap(&dev1, &filter(&["X-Session=dev-1"], None)));
    assert!(!overlap(&dev1, &filter(&["x-session=dev-2"], None)));
}

#[test]
fn subset_of_constraints_overlaps() {
    let dev1 = filter(&["x-session=dev-1"], None);
    assert!(overlap(
        &dev1,
        &filter(&["x-session=dev-1", "x-user=ann"], None)
    ));
    assert!(overlap(&dev1, &filter(&["x-session=dev-1"], Some("/api"))));
    assert!(overlap(&dev1, &Filter::global()));
}

#[test]
fn different_header_names_overlap() {
    // A request carrying both headers matches both.
    let a = filter(&["x-session=dev-1"], None);
    let b = filter(&["x-user=bob"], None);
    assert!(overlap(&a, &b));
    let both = request("/", &[("x-session", "dev-1"), ("x-user", "bob")]);
    assert!(a.matches(&both) && b.matches(&both));
}

#[test]
fn one_differing_shared_header_separates() {
    let a = filter(&["x-session=dev-1", "x-user=ann"], None);
    let b = filter(&["x-session=dev-2", "x-user=ann"], None);
    assert!(!overlap(&a, &b));
}

#[test]
fn path_prefixes_overlap_when_nested() {
    let api = filter(&[], Some("/api"));
    assert!(overlap(&api, &filter(&[], Some("/api"))));
    assert!(overlap(&api, &filter(&[], Some("/api/v1"))));
    assert!(overlap(&api, &filter(&[], Some("/api/"))));
    assert!(!overlap(&api, &filter(&[], Some("/apis"))));
    assert!(!overlap(&api, &filter(&[], Some("/web"))));
    assert!(!overlap(
        &filter(&[], Some("/api/")),
        &filter(&[], Some("/apis"))
    ));
    // A path constraint on one side only does not separate.
    assert!(overlap(&api, &filter(&["x-session=dev-1"], None)));
    // Disjoint paths separate even with equal headers.
    assert!(!overlap(
        &filter(&["x-session=dev-1"], Some("/api")),
        &filter(&["x-session=dev-1"], Some("/web")),
    ));
}

/// The overlap rule against its definition: for pairs of filters over a small universe of
/// requests, `overlaps` is true exactly when one of the requests matches both. The universe is
/// rich enough to contain a witness for every overlapping pair built here.
#[test]
fn overlap_agrees_with_brute_force() {
    let headers: [&[&str]; 6] = [
        &[],
        &["a=1"],
        &["a=2"],
        &["b=1"],
        &["a=1", "b=1"],
        &["a=2", "b=1"],
    ];
    let paths = [None, Some("/x"), Some("/x/"), Some("/x/y"), Some("/xy")];
    let filters: Vec<Filter> = headers
        .iter()
        .flat_map(|h| paths.iter().map(move |p| (h, p)))
        .filter(|(h, p)| !(h.is_empty() && p.is_none()))
        .map(|(h, p)| filter(h, *p))
        .collect();
    let mut requests = Vec::new();
    for path in ["/", "/x", "/x/", "/x/y", "/xy"] {
        for a in [None, Some("1"), Some("2")] {
            for b in [None, Some("1")] {
                let mut lines = Vec::new();
                lines.extend(a.map(|v| ("a", v)));
                lines.extend(b.map(|v| ("b", v)));
                requests.push(request(path, &lines));
            }
        }
    }
    for f in &filters {
        for g in &filters {
            let witnessed = requests.iter().any(|r| f.matches(r) && g.matches(r));
            assert_eq!(f.overlaps(g), witnessed, "{f} vs {g}");
        }
    }
}
