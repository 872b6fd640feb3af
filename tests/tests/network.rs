//! A laptop's network as it really is: it changes address, and its link drops.
//!
//! The workstation connects over UDP (the carrier that can migrate); a slow download, paced by
//! its reader, is in flight while the network changes. The download speaks HTTP/1.0, whose body
//! ends where the connection does, so a tunnel that ended the flow with a FIN instead of a RST
//! would pass a truncated file off as complete: the checks below tell those apart.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tether_e2e::network::{addresses, paced_download_script, LinkDown, Roamed};
use tether_e2e::*;

/// The workstation's host-side veth (`xtask/scripts/lib.sh`, `WS_NAMESPACES`).
const WS_DEV: &str = "tws0";

/// A download of `n` bytes from hello's test app, read at `rate` bytes/s.
fn paced_download(n: u64, rate: u64) -> Child {
    in_ns(WS, "python3")
        .args(["-c", &paced_download_script("hello.default", n, rate)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the download")
}

/// How the download ended: (`eof`/`reset`, bytes, anything else it said).
fn outcome(child: Child) -> (String, u64, String) {
    let out = child.wait_with_output().expect("the download's output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut words = text.split_whitespace();
    let how = words.next().unwrap_or("nothing").to_owned();
    let bytes = words.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    (how, bytes, format!("{text} {stderr}"))
}

#[test]
fn a_download_in_flight_survives_the_laptop_changing_address() {
    let before = machine_state(WS);
    let old = addresses(WS);
    let conn = Connected::new(WS, &["--transport", "udp"]);
    let status = conn.status();
    let session = status["session_id"].clone();
    assert_eq!(
        Some(status["carrier"]["local"].as_str().unwrap_or_default()),
        old.first().and_then(|a| a.split('/').next()),
        "{status}"
    );

    // 24 MB at 3 MB/s: about eight seconds, the move comes after two.
    const N: u64 = 24_000_000;
    let mut download = paced_download(N, 3_000_000);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        download.try_wait().unwrap().is_none(),
        "the download ended before the move"
    );
    let roamed = Roamed::to(WS, WS_DEV, "10.250.0.6");

    // The same session goes on from the new address: no reconnect, the path shows it.
    let status = eventually(Duration::from_secs(10), "status shows the new path", || {
        let s = conn.status();
        (s["carrier"]["local"] == "10.250.0.6").then_some(s)
    });
    let (how, bytes, said) = outcome(download);
    assert_eq!((how.as_str(), bytes), ("eof", N), "the download: {said}");
    assert!(!said.contains("corrupt"), "{said}");
    let after = conn.status();
    assert_eq!(after["session_id"], session, "{after}");
    assert_eq!(after["reconnects"], 0, "{after}");
    assert_eq!(after["connected"], true, "{after}");
    assert_hello(
        curl(Some(WS), &["http://hello.default/"]),
        "a new connection from the new address",
    );
    let text = tether(WS, &["status"]).expect_ok("tether status");
    assert!(
        text.contains("Path:        10.250.0.6 → "),
        "{text}\n{status}"
    );

    drop(roamed);
    drop(conn);
    assert_eq!(machine_state(WS), before);
    assert_eq!(addresses(WS), old);
}

#[test]
fn flows_survive_a_short_outage_and_after_long_ones_resume_or_are_reset() {
    let conn = Connected::new(WS, &["--transport", "udp"]);
    let session = conn.status()["session_id"].clone();

    // Three seconds: shorter than the tunnel's idle timeout. A request in flight and a paced
    // download both finish, on the same session.
    let slow = in_ns(WS, "curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "http://hello.default/slow?ms=5000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    const N: u64 = 8_000_000;
    let download = paced_download(N, 1_000_000);
    std::thread::sleep(Duration::from_secs(1));
    let down = LinkDown::new(WS, WS_DEV);
    std::thread::sleep(Duration::from_secs(3));
    drop(down);
    let slow = slow.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&slow.stdout);
    assert!(
        slow.status.success() && body.contains("hello from hello-"),
        "the request in flight: {body} {}",
        String::from_utf8_lossy(&slow.stderr)
    );
    let (how, bytes, said) = outcome(download);
    assert_eq!((how.as_str(), bytes), ("eof", N), "the download: {said}");
    let status = conn.status();
    assert_eq!(status["session_id"], session, "{status}");
    assert_eq!(status["reconnects"], 0, "{status}");

    // 15 and 60 seconds: longer than the tunnel's idle timeout. The session ends; the flow in
    // flight is reset (never cut short with a FIN); after the link returns the session comes
    // back by itself and DNS and new connections work again.
    for outage in [15, 60] {
        let reconnects = conn.status()["reconnects"].as_u64().unwrap_or(0);
        let download = paced_download(N, 500_000);
        std::thread::sleep(Duration::from_secs(1));
        let down = LinkDown::new(WS, WS_DEV);
        std::thread::sleep(Duration::from_secs(outage));
        drop(down);
        let back = Instant::now();
        eventually(Duration::from_secs(30), "DNS answers again", || {
            (!resolve(WS, "hello.default.svc.cluster.local").is_empty()).then_some(())
        });
        let dns = back.elapsed();
        let status = eventually(Duration::from_secs(30), "the session is back", || {
            let s = conn.status();
            (s["connected"] == true).then_some(s)
        });
        let session_back = back.elapsed();
        eprintln!(
            "{outage} s outage: DNS answered {dns:.1?} and the session was back {session_back:.1?} \
             after the link returned"
        );
        assert!(
            status["reconnects"].as_u64().unwrap_or(0) > reconnects,
            "{outage} s outage outlasts the idle timeout, yet no reconnect: {status}"
        );
        let (how, bytes, said) = outcome(download);
        assert!(
            (how == "eof" && bytes == N) || how == "reset",
            "after a {outage} s outage the download must finish intact or be reset: {said}"
        );
        assert!(!said.contains("corrupt"), "{said}");
        assert_hello(
            curl(Some(WS), &["http://hello.default/"]),
            "a new connection after the outage",
        );
    }
}
