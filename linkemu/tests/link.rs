//! The real emulator on a veth pair and a network namespace this test makes (never the
//! cluster's): a TCP connect through it takes at least the configured round trip, and its rules
//! are gone once it has exited. Needs root (iptables, NFQUEUE, namespaces).

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sched::{setns, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tether_linkemu::iptables::{leftovers, remove_all, tag, Place};

/// A namespace with a veth to the host, and the emulator on it; all removed when dropped.
struct Link {
    netns: String,
    host_iface: String,
    net: u32,
    emulator: Option<Child>,
    lines_rx: Option<mpsc::Receiver<String>>,
}

impl Link {
    /// A link named after this process and `suffix` (one per test: tests run in parallel).
    fn new_named(suffix: &str) -> Link {
        let id = std::process::id();
        let link = Link {
            netns: format!("lemu{id}{suffix}"), // within 15 characters, whatever the pid
            host_iface: format!("lmt{id}{suffix}"),
            net: 20 + (id * 2 + u32::from(suffix == "i")) % 200,
            emulator: None,
            lines_rx: None,
        };
        // Guarded from here on: whatever was made is removed.
        let (ns, net) = (link.netns.as_str(), link.net);
        sh(&["ip", "netns", "add", ns]);
        sh(&[
            "ip",
            "link",
            "add",
            &link.host_iface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.254.{net}.1/30"),
            "dev",
            &link.host_iface,
        ]);
        sh(&["ip", "link", "set", &link.host_iface, "up"]);
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.254.{net}.2/30"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        link
    }

    fn host_addr(&self) -> String {
        format!("10.254.{}.1", self.net)
    }

    /// Starts the emulator with `args` and waits for its `ready`.
    fn emulate(&mut self, args: &[&str]) {
        let queue = 7300 + (self.net % 500) * 2;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-linkemu"))
            .args(["--iface", &self.host_iface, "--netns", &self.netns])
            .args(["--queue-num", &queue.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tether-linkemu");
        let stdout = child.stdout.take().expect("stdout is piped");
        self.emulator = Some(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(first.as_deref(), Ok("ready"), "the emulator did not start");
        self.lines_rx = Some(rx);
    }

    /// Sends `signal` to the emulator and waits for it: its exit status and its last line (the
    /// counts).
    fn stop(&mut self, signal: Signal) -> (ExitStatus, String) {
        let mut child = self.emulator.take().expect("the emulator runs");
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, signal).expect("signalling the emulator");
        let status = child.wait().expect("waiting for the emulator");
        let rx = self.lines_rx.take().expect("started");
        let last = rx.iter().last().unwrap_or_default();
        (status, last)
    }

    /// Connects from inside the namespace to `addr`; how long `connect` took.
    fn connect_from_inside(&self, addr: SocketAddr) -> Duration {
        let path = format!("/run/netns/{}", self.netns);
        thread::spawn(move || {
            let ns = File::open(&path).expect("opening the namespace");
            // This thread only: it ends after connecting.
            setns(ns, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            let start = Instant::now();
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .expect("connecting through the emulator");
            let elapsed = start.elapsed();
            drop(stream);
            elapsed
        })
        .join()
        .expect("the connecting thread")
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(mut child) = self.emulator.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
        let _ = remove_all(&Place {
            netns: None,
            iface: self.host_iface.clone(),
        });
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_iface])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(status.success(), "{args:?} failed (this test needs root)");
}

#[test]
fn a_connect_through_the_emulator_takes_the_round_trip_and_its_rules_go_with_it() {
    let mut link = Link::new_named("c");
    let listener = TcpListener::bind((link.host_addr().as_str(), 0)).expect("binding the server");
    let addr = listener.local_addr().expect("the server's address");
    let server = thread::spawn(move || {
        // Two connections: one before the emulator, one through it.
        for _ in 0..2 {
            let _ = listener.accept();
        }
    });
    // The path works without the emulator.
    link.connect_from_inside(addr);

    link.emulate(&["--profile", "lan", "--rtt-ms", "40"]);
    let host_rule = format!("\"{}\"", tag(&link.host_iface));
    let ns_rule = format!("\"{}\"", tag("eth0"));
    assert!(
        leftovers(None)
            .unwrap()
            .iter()
            .any(|l| l.contains(&host_rule)),
        "no rule on the host side while it runs"
    );
    assert!(
        leftovers(Some(&link.netns))
            .unwrap()
            .iter()
            .any(|l| l.contains(&ns_rule)),
        "no rule in the namespace while it runs"
    );
    let took = link.connect_from_inside(addr);
    assert!(
        took >= Duration::from_millis(40),
        "a connect through a 40 ms RTT link took {took:?}"
    );
    server.join().expect("the server");

    let (status, counts) = link.stop(Signal::SIGTERM);
    assert!(status.success(), "the emulator exited with {status}");
    let counts: serde_json::Value = serde_json::from_str(&counts).expect("the counts as JSON");
    // SYN and ACK up, SYN-ACK down at least; nothing dropped.
    assert!(counts["up"]["packets"].as_u64() >= Some(2), "{counts}");
    assert!(counts["down"]["packets"].as_u64() >= Some(1), "{counts}");
    assert_eq!(counts["up"]["overflow"], 0, "{counts}");
    assert!(
        !leftovers(None)
            .unwrap()
            .iter()
            .any(|l| l.contains(&host_rule)),
        "the host's rule is still there"
    );
    assert!(
        !leftovers(Some(&link.netns))
            .unwrap()
            .iter()
            .any(|l| l.contains(&ns_rule)),
        "the namespace's rule is still there"
    );
}

#[test]
fn sigint_also_removes_the_rules() {
    // A second link of its own: tests in one binary run in parallel, so the names differ.
    let mut link = Link::new_named("i");
    link.emulate(&["--profile", "wan20"]);
    let (status, _) = link.stop(Signal::SIGINT);
    assert!(status.success(), "the emulator exited with {status}");
    assert!(!leftovers(None)
        .unwrap()
        .iter()
        .any(|l| l.contains(&format!("\"{}\"", tag(&link.host_iface)))));
}
