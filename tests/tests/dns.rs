//! DNS as real programs on the workstation see it: glibc, musl and Go's pure resolver, cold cache
//! and warm; `dig` with and without EDNS, over UDP and TCP; reverse lookups; and no cluster name
//! ever reaching the original resolver.
//!
//! Each test makes its own namespace holding a ClusterIP Service `web` and a headless Service
//! `many` whose Endpoints list 40 addresses. The Endpoints are written by the test (the Service
//! has no selector) rather than backed by 40 pods: DNS only reads the Endpoints object, and 40
//! pods on the 2-core test machine would cost minutes and memory for nothing DNS looks at. The
//! addresses (10.244.250.1-40) are inside the cluster's pod network but on no pod.
//!
//! Needs `musl-gcc` (musl-tools), `dig` (dnsutils) and Go; see [`tether_e2e::resolvers`].

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_e2e::resolvers::{
    dig, musl_has_tcp_fallback, workstation_address, Libc, QueryLog, Resolvers,
};
use tether_e2e::*;

/// How long the daemon keeps an answer at most (`daemon::dns::cache::MAX_TTL`, 5 s) plus a
/// margin: after this, its cache is cold again.
const COLD: Duration = Duration::from_secs(6);

/// The endpoints of the headless Service `many`.
fn many_ips() -> Vec<String> {
    let mut ips: Vec<String> = (1..=40).map(|i| format!("10.244.250.{i}")).collect();
    ips.sort();
    ips
}

/// A namespace with `web` (ClusterIP) and `many` (headless, 40 endpoints); deleted on drop.
struct Fixture {
    ns: String,
}

impl Fixture {
    #[track_caller]
    fn create(ns: &str) -> Fixture {
        let fixture = Fixture { ns: ns.to_owned() };
        let addresses: Vec<String> = many_ips()
            .iter()
            .map(|ip| format!("{{ip: \"{ip}\"}}"))
            .collect();
        let manifest = format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{app.kubernetes.io/managed-by: tether-e2e}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: many, namespace: {ns}}}
spec:
  clusterIP: None
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: many, namespace: {ns}}}
subsets:
  - addresses: [{}]
    ports: [{{name: http, port: 80}}]
"#,
            addresses.join(", ")
        );
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(manifest.as_bytes())
            .expect("writing the manifest");
        Run::from(child.wait_with_output().expect("kubectl apply")).expect_ok("kubectl apply");
        fixture
    }

    fn web_ip(&self) -> String {
        kubectl(&[
            "-n",
            &self.ns,
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect_ok("web's ClusterIP")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

/// `a.b.c.d` → `a-b-c-d`.
fn dashed(ip: &str) -> String {
    ip.replace('.', "-")
}

/// Connects in `fixture`'s namespace and waits until its names resolve (the manager has seen
/// the objects and sent the namespace list).
fn connect(fixture: &Fixture) -> Connected {
    let conn = Connected::new(WS, &["--namespace", &fixture.ns]);
    let web = fixture.web_ip();
    let name = format!("web.{}", fixture.ns);
    eventually(Duration::from_secs(30), "web.NS resolves", || {
        (resolve(WS, &name) == [web.clone()]).then_some(())
    });
    let many = format!("many.{}.svc.cluster.local", fixture.ns);
    eventually(
        Duration::from_secs(30),
        "many's endpoints are known",
        || (resolve(WS, &many).len() == 40).then_some(()),
    );
    conn
}

/// Asserts that nothing the workstation asked the original resolver since `log` started names
/// anything in the cluster. (Pods use the same resolver in the local cluster; their queries are
/// told apart by their source address.)
#[track_caller]
fn assert_no_leaks(log: &QueryLog, ns: &str, reverse: &[String]) {
    let asked = log.names_from(&workstation_address(WS));
    assert!(
        asked.iter().any(|name| name == "outside.tether.test"),
        "the log shows the workstation's queries (outside.tether.test was asked): {asked:?}"
    );
    let leaked: Vec<String> = asked
        .into_iter()
        .filter(|name| {
            name.ends_with(&format!(".{ns}"))
                || name.contains(&format!(".{ns}."))
                || name.ends_with(".pod")
                || name.ends_with(".svc")
                || name.ends_with("cluster.local")
                || reverse.contains(name)
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "cluster names reached the original resolver: {leaked:?}"
    );
}

#[test]
fn glibc_musl_and_go_resolve_every_kind_of_name_cold_and_warm() {
    let fixture = Fixture::create("tether-e2e-dns");
    let resolvers = Resolvers::build();
    let (_, pod_ip) = hello_pods().first().cloned().expect("a hello pod");
    // Outside names, before tether: what each resolver makes of the original resolver. (It
    // answers A for outside.tether.test and REFUSED for AAAA, which musl, asking both at once,
    // reports as "Try again" with or without tether.)
    let outside_before: Vec<_> = Libc::ALL
        .iter()
        .map(|libc| resolvers.lookup(WS, *libc, "outside.tether.test"))
        .collect();
    let log = QueryLog::from_now();
    let conn = connect(&fixture);
    assert_eq!(conn.status()["connected"], true);
    let ns = &fixture.ns;
    let web = vec![fixture.web_ip()];
    let many = many_ips();
    let pod = vec![pod_ip.clone()];
    let api = vec![cluster_ip("kubernetes")];
    let rows: Vec<(String, &Vec<String>)> = vec![
        ("web".into(), &web),
        (format!("web.{ns}"), &web),
        (format!("web.{ns}.svc"), &web),
        (format!("web.{ns}.svc.cluster.local"), &web),
        (format!("many.{ns}"), &many),
        (format!("many.{ns}.svc.cluster.local"), &many),
        (format!("{}.default.pod", dashed(&pod_ip)), &pod),
        (
            format!("{}.default.pod.cluster.local", dashed(&pod_ip)),
            &pod,
        ),
        ("kubernetes.default".into(), &api),
    ];
    let musl_tcp = musl_has_tcp_fallback();
    let mut failures = Vec::new();
    for libc in Libc::ALL {
        std::thread::sleep(COLD);
        for cache in ["cold", "warm"] {
            for (name, want) in &rows {
                let got = resolvers.lookup(WS, libc, name);
                // musl before 1.2.4 has no TCP fallback: it keeps the records of a truncated
                // answer (as many as fit 512 bytes), which must be a part of the right ones.
                let partial_ok = libc == Libc::Musl && !musl_tcp && want.len() > 1;
                let ok = match &got {
                    Ok(ips) if partial_ok => {
                        !ips.is_empty() && ips.iter().all(|ip| want.contains(ip))
                    }
                    Ok(ips) => ips == *want,
                    Err(_) => false,
                };
                if !ok {
                    failures.push(format!("{libc:?} {cache} {name}: {got:?}, want {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Outside names still come from the original resolver, exactly as before tether.
    for (libc, before) in Libc::ALL.iter().zip(&outside_before) {
        let after = resolvers.lookup(WS, *libc, "outside.tether.test");
        assert_eq!(&after, before, "{libc:?}: outside.tether.test");
        if *libc != Libc::Musl {
            assert_eq!(after, Ok(vec!["198.51.100.7".to_owned()]), "{libc:?}");
        }
    }
    assert_no_leaks(&log, ns, &[]);
}

#[test]
fn dig_gets_whole_answers_exact_truncation_and_reverse_names() {
    let fixture = Fixture::create("tether-e2e-dig");
    let (_, pod_ip) = hello_pods().first().cloned().expect("a hello pod");
    let log = QueryLog::from_now();
    let _conn = connect(&fixture);
    let ns = &fixture.ns;
    let many = format!("many.{ns}.svc.cluster.local");

    for cache in ["cold", "warm"] {
        if cache == "cold" {
            std::thread::sleep(COLD);
        }
        // No EDNS over UDP (what glibc and musl send): 512 bytes at most, so TC with the
        // records that fit, and no OPT record.
        let d = dig(WS, &["+noedns", "+ignore", &many]);
        assert!(d.has_flag("tc"), "{cache}: {}", d.text);
        assert!((1..40).contains(&d.answers), "{cache}: {}", d.text);
        assert!(!d.opt, "{cache}: no OPT without EDNS: {}", d.text);
        // dig's own TCP retry, and TCP straight away: the whole answer, never TC.
        for args in [vec!["+noedns"], vec!["+tcp", "+noedns"]] {
            let d = dig(WS, &[args.as_slice(), &[many.as_str()]].concat());
            assert_eq!(d.answers, 40, "{cache} {args:?}: {}", d.text);
            assert!(!d.has_flag("tc"), "{cache} {args:?}: {}", d.text);
            assert!(!d.opt, "{cache} {args:?}: {}", d.text);
            let mut ips = d.data.clone();
            ips.sort();
            assert_eq!(ips, many_ips(), "{cache} {args:?}");
        }
        // EDNS (dig's default 1232 bytes): all 40 over UDP, with an OPT record.
        for args in [vec![], vec!["+tcp"]] {
            let d = dig(WS, &[args.as_slice(), &[many.as_str()]].concat());
            assert_eq!(d.answers, 40, "{cache} {args:?}: {}", d.text);
            assert!(!d.has_flag("tc"), "{cache} {args:?}: {}", d.text);
            assert!(d.opt, "{cache} {args:?}: {}", d.text);
        }
    }

    // Reverse lookups, answered by the cluster as CoreDNS would.
    let web_ip = fixture.web_ip();
    let d = dig(WS, &["-x", &web_ip]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(
        d.data,
        [format!("web.{ns}.svc.cluster.local.")],
        "{}",
        d.text
    );
    let d = dig(WS, &["-x", &pod_ip]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(
        d.data,
        [format!("{}.default.pod.cluster.local.", dashed(&pod_ip))],
        "{}",
        d.text
    );
    // An address in the service range that no Service has.
    let d = dig(WS, &["-x", "10.96.255.254"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);

    // Outside names still come from the original resolver.
    let d = dig(WS, &["outside.tether.test"]);
    assert_eq!(d.data, ["198.51.100.7"], "{}", d.text);

    let reverse: Vec<String> = [web_ip.as_str(), pod_ip.as_str(), "10.96.255.254"]
        .iter()
        .map(|ip| {
            let mut octets: Vec<&str> = ip.split('.').collect();
            octets.reverse();
            format!("{}.in-addr.arpa", octets.join("."))
        })
        .collect();
    assert_no_leaks(&log, ns, &reverse);
}
