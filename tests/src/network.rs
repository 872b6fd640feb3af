//! What a laptop's network does to it, applied to a workstation namespace: a change of address
//! (another Wi-Fi, a DHCP renewal) and a link that drops everything for a while.
//!
//! Each is a guard: it undoes exactly what it did when dropped, so a failing test still leaves
//! the namespace as `cargo xtask cluster up` made it.

use std::process::Command;

use crate::{run, Run};

/// Runs `ip ARGS` and panics with its stderr if it fails.
#[track_caller]
fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(out.ok, "ip {}: {}", args.join(" "), out.stderr);
}

/// The namespace's `eth0` addresses, as `ADDR/PREFIX`.
pub fn addresses(ns: &str) -> Vec<String> {
    let out = run(Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]));
    out.stdout
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_owned)
        })
        .collect()
}

/// The namespace moved to another address on the same link: the old address is gone, packets
/// leave from the new one, and the host routes the new one back. Established sockets keep
/// their old source address in their own state, as they do on a laptop whose Wi-Fi changed;
/// only what sends from a wildcard address (tether's UDP socket) follows.
#[derive(Debug)]
pub struct Roamed {
    ns: String,
    host_dev: String,
    old: String,
    new: String,
    node: String,
    gateway: String,
}

impl Roamed {
    /// Moves `ns` (whose `eth0` pairs with the host's `host_dev`) from its one address to `new`.
    #[track_caller]
    pub fn to(ns: &str, host_dev: &str, new: &str) -> Roamed {
        let old = match addresses(ns).as_slice() {
            [one] => one.clone(),
            other => panic!("{ns} has addresses {other:?}, not one"),
        };
        // The route to the node: `NODE via GATEWAY dev eth0`.
        let routes = run(Command::new("ip").args(["-n", ns, "-4", "route", "show"])).stdout;
        let (node, gateway) = routes
            .lines()
            .find_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                match words.as_slice() {
                    [node, "via", gateway, ..] => Some((node.to_string(), gateway.to_string())),
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("no route via a gateway in {ns}: {routes}"));
        let roamed = Roamed {
            ns: ns.to_owned(),
            host_dev: host_dev.to_owned(),
            old,
            new: new.to_owned(),
            node,
            gateway,
        };
        let (n, new32) = (ns, format!("{new}/32"));
        ip(&["route", "add", &new32, "dev", host_dev]);
        ip(&["-n", n, "addr", "add", &new32, "dev", "eth0"]);
        let (node, gw) = (roamed.node.as_str(), roamed.gateway.as_str());
        ip(&[
            "-n", n, "route", "replace", node, "via", gw, "dev", "eth0", "onlink", "src", new,
        ]);
        ip(&["-n", n, "route", "add", gw, "dev", "eth0", "src", new]);
        ip(&["-n", n, "addr", "del", &roamed.old, "dev", "eth0"]);
        roamed
    }
}

impl Drop for Roamed {
    fn drop(&mut self) {
        let n = self.ns.as_str();
        let new32 = format!("{}/32", self.new);
        let (node, gw) = (self.node.as_str(), self.gateway.as_str());
        let steps: [&[&str]; 5] = [
            &["-n", n, "addr", "add", &self.old, "dev", "eth0"],
            &["-n", n, "route", "replace", node, "via", gw, "dev", "eth0"],
            &["-n", n, "route", "del", gw, "dev", "eth0", "src", &self.new],
            &["-n", n, "addr", "del", &new32, "dev", "eth0"],
            &["route", "del", &new32, "dev", &self.host_dev],
        ];
        for step in steps {
            let out = run(Command::new("ip").args(step));
            if !out.ok {
                eprintln!("undoing the roam: ip {}: {}", step.join(" "), out.stderr);
            }
        }
    }
}

/// The link between the namespace and the host drops every packet, both ways, as a Wi-Fi that
/// lost its access point does: nothing is refused, everything vanishes.
#[derive(Debug)]
pub struct LinkDown {
    ns: String,
    host_dev: String,
}

fn iptables(ns: Option<&str>, op: &str, dev: &str) -> Run {
    let rule = ["-t", "raw", op, "PREROUTING", "-i", dev, "-j", "DROP"];
    match ns {
        Some(ns) => run(crate::in_ns(ns, "iptables").args(rule)),
        None => run(Command::new("iptables").args(rule)),
    }
}

impl LinkDown {
    /// Drops what arrives on the host's `host_dev` (from `ns`) and on `ns`'s `eth0` (to it).
    #[track_caller]
    pub fn new(ns: &str, host_dev: &str) -> LinkDown {
        let down = LinkDown {
            ns: ns.to_owned(),
            host_dev: host_dev.to_owned(),
        };
        let up = iptables(None, "-I", host_dev);
        assert!(up.ok, "iptables on the host: {}", up.stderr);
        let down_rule = iptables(Some(ns), "-I", "eth0");
        assert!(down_rule.ok, "iptables in {ns}: {}", down_rule.stderr);
        down
    }
}

impl Drop for LinkDown {
    fn drop(&mut self) {
        for out in [
            iptables(Some(&self.ns), "-D", "eth0"),
            iptables(None, "-D", &self.host_dev),
        ] {
            if !out.ok {
                eprintln!("bringing the link back: {}", out.stderr);
            }
        }
    }
}

/// A Python client that downloads `/bytes?n=N` from `host` over HTTP/1.0 (the body ends where
/// the connection does, so a connection that ended early with a FIN would look complete),
/// reading at about `rate` bytes per second, and prints `eof BYTES` or `reset BYTES`.
pub fn paced_download_script(host: &str, n: u64, rate: u64) -> String {
    format!(
        r#"import socket,sys,time
s=socket.create_connection(({host:?},80),timeout=120)
s.sendall(b"GET /bytes?n={n} HTTP/1.0\r\nHost: {host}\r\n\r\n")
buf=b""
while b"\r\n\r\n" not in buf:
    c=s.recv(65536)
    if not c: print("eof-in-head 0"); sys.exit()
    buf+=c
body=len(buf.split(b"\r\n\r\n",1)[1]); bad=buf.split(b"\r\n\r\n",1)[1].strip(b"x")
start=time.monotonic()
try:
    while True:
        c=s.recv(65536)
        if not c: break
        bad=bad or c.strip(b"x"); body+=len(c)
        ahead=body/{rate}-(time.monotonic()-start)
        if ahead>0: time.sleep(ahead)
    print("eof",body,"corrupt" if bad else "")
except ConnectionResetError:
    print("reset",body)
"#
    )
}
