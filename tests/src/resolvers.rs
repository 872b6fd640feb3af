//! Real resolvers for the DNS tests: glibc (`getent`), musl (a static `getaddrinfo` program
//! built with `musl-gcc`), Go's pure resolver (built with `CGO_ENABLED=0 go build`) and `dig`;
//! and the original resolver's query log.
//!
//! Needs on the host: `musl-gcc` (Debian `musl-tools`), `dig` (`dnsutils`), and Go (the
//! cluster build's `golang-1.19-go`, or `TETHER_E2E_GO`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{in_ns, repo, run, state_dir};

/// Where the cluster build's Go lives (xtask/scripts/lib.sh `GO_BIN`).
const CLUSTER_GO: &str = "/usr/lib/go-1.19/bin/go";

/// A resolver a program on the workstation may be linked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Libc {
    /// glibc's `getaddrinfo`, through `getent ahosts`.
    Glibc,
    /// musl's `getaddrinfo`, in a static binary.
    Musl,
    /// Go's own resolver (`GODEBUG=netdns=go`, no cgo).
    Go,
}

impl Libc {
    /// All three.
    pub const ALL: [Libc; 3] = [Libc::Glibc, Libc::Musl, Libc::Go];
}

/// The resolver programs, built once into a scratch directory that is removed on drop.
#[derive(Debug)]
pub struct Resolvers {
    dir: PathBuf,
    musl: PathBuf,
    go: PathBuf,
}

impl Resolvers {
    /// Builds `tests/resolvers/musl_resolve.c` and `tests/resolvers/go_resolve`.
    #[track_caller]
    pub fn build() -> Resolvers {
        let dir = std::env::temp_dir().join(format!("tether-e2e-resolvers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let sources = repo().join("tests/resolvers");
        let musl = dir.join("musl_resolve");
        run(Command::new("musl-gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&musl)
            .arg(sources.join("musl_resolve.c")))
        .expect_ok("musl-gcc (install the Debian package musl-tools)");
        let go = dir.join("go_resolve");
        let go_bin = std::env::var_os("TETHER_E2E_GO")
            .map(PathBuf::from)
            .or_else(|| {
                Path::new(CLUSTER_GO)
                    .exists()
                    .then(|| PathBuf::from(CLUSTER_GO))
            })
            .unwrap_or_else(|| PathBuf::from("go"));
        run(Command::new(go_bin)
            .args(["build", "-o"])
            .arg(&go)
            .arg(sources.join("go_resolve/main.go"))
            .env("CGO_ENABLED", "0")
            .env("GO111MODULE", "off")
            .env("GOCACHE", dir.join("gocache"))
            .env("GOPATH", dir.join("gopath")))
        .expect_ok("go build (Go is installed with the cluster build; or set TETHER_E2E_GO)");
        Resolvers { dir, musl, go }
    }

    /// The addresses `libc` gives for `name` on the workstation `ns`, sorted and unique; `Err`
    /// with the resolver's complaint if it gives none.
    pub fn lookup(&self, ns: &str, libc: Libc, name: &str) -> Result<Vec<String>, String> {
        let result = match libc {
            Libc::Glibc => run(in_ns(ns, "getent").args(["ahosts", name])),
            Libc::Musl => run(in_ns(ns, &self.musl.to_string_lossy()).arg(name)),
            Libc::Go => run(in_ns(ns, &self.go.to_string_lossy())
                .arg(name)
                .env("GODEBUG", "netdns=go")),
        };
        if !result.ok {
            return Err(format!(
                "{libc:?} {name}: exit {:?}: {}",
                result.code,
                result.stderr.trim()
            ));
        }
        let mut ips: Vec<String> = result
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }
}

impl Drop for Resolvers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the workstation's musl retries truncated answers over TCP (musl 1.2.4 and later);
/// older ones use the records of the truncated UDP answer as they are.
pub fn musl_has_tcp_fallback() -> bool {
    let version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "musl"])).stdout;
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= (1, 2, 4)
}

/// What `dig` printed, as far as the tests look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dig {
    /// `status:` (`NOERROR`, `NXDOMAIN`, …).
    pub status: String,
    /// The header flags (`qr`, `aa`, `tc`, …).
    pub flags: Vec<String>,
    /// `ANSWER:` count.
    pub answers: usize,
    /// Whether the reply had an OPT record.
    pub opt: bool,
    /// The answer section's data fields (addresses, PTR targets), in order.
    pub data: Vec<String>,
    /// The whole output, for failure messages.
    pub text: String,
}

impl Dig {
    /// Whether the reply had the flag `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// `dig +time=5 +tries=1 ARGS…` on the workstation `ns` (its resolv.conf's server), parsed.
#[track_caller]
pub fn dig(ns: &str, args: &[&str]) -> Dig {
    let text = run(in_ns(ns, "dig").args(["+time=5", "+tries=1"]).args(args))
        .expect_ok("dig (install the Debian package dnsutils)");
    parse_dig(&text)
}

/// Parses `dig`'s default output.
pub fn parse_dig(text: &str) -> Dig {
    let after = |line: &str, key: &str| -> Option<String> {
        let rest = &line[line.find(key)? + key.len()..];
        Some(
            rest.trim_start()
                .split([',', ';'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        )
    };
    // With a TCP retry dig prints the truncated reply's header first: the last one counts.
    let status = text
        .lines()
        .filter_map(|l| after(l, "status:"))
        .next_back()
        .unwrap_or_default();
    let header = text
        .lines()
        .rfind(|l| l.starts_with(";; flags:"))
        .unwrap_or("");
    let flags = header
        .trim_start_matches(";; flags:")
        .split(';')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let answers = after(header, "ANSWER:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let last_reply = text.rsplit(";; ->>HEADER<<-").next().unwrap_or(text);
    let mut in_answer = false;
    let mut data = Vec::new();
    for line in last_reply.lines() {
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if line.trim().is_empty() || line.starts_with(";;") {
            in_answer = false;
        } else if in_answer {
            if let Some(field) = line.split_whitespace().last() {
                data.push(field.to_owned());
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        opt: last_reply.contains(";; OPT PSEUDOSECTION:"),
        data,
        text: text.to_owned(),
    }
}

/// The original resolver's query log: the local cluster's dnsmasq logs every query it gets
/// (`--log-queries`), the workstation namespaces' and the pods' alike. `TETHER_E2E_RESOLVER_LOG`
/// names another file in the same format.
#[derive(Debug)]
pub struct QueryLog {
    path: PathBuf,
    start: u64,
}

impl QueryLog {
    /// Starts reading the log from its current end.
    #[track_caller]
    pub fn from_now() -> QueryLog {
        let path = std::env::var_os("TETHER_E2E_RESOLVER_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir().join("logs/dnsmasq.log"));
        let start = std::fs::metadata(&path)
            .unwrap_or_else(|e| {
                panic!(
                    "the original resolver's query log {}: {e} (set TETHER_E2E_RESOLVER_LOG)",
                    path.display()
                )
            })
            .len();
        QueryLog { path, start }
    }

    /// The names `client` (an IP address) asked for since [`QueryLog::from_now`]
    /// (`query[A] NAME from CLIENT` lines).
    pub fn names_from(&self, client: &str) -> Vec<String> {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        let start = usize::try_from(self.start).unwrap_or(0).min(bytes.len());
        parse_query_log(&String::from_utf8_lossy(&bytes[start..]))
            .into_iter()
            .filter(|(_, from)| from == client)
            .map(|(name, _)| name)
            .collect()
    }
}

/// The queried names in dnsmasq log text (lower case, without the trailing dot), each with the
/// address that asked.
pub fn parse_query_log(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("query[")?..];
            let mut words = rest.split_whitespace();
            let name = words.nth(1)?;
            let from = match (words.next(), words.next()) {
                (Some("from"), Some(from)) => from.to_owned(),
                _ => String::new(),
            };
            Some((name.trim_end_matches('.').to_ascii_lowercase(), from))
        })
        .collect()
}

/// The IPv4 address of the workstation namespace `ns` (its `eth0`): the source of its queries.
#[track_caller]
pub fn workstation_address(ns: &str) -> String {
    let out = run(Command::new("ip").args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"]))
        .expect_ok("the workstation's address");
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no IPv4 address on eth0 in {ns}: {out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dig_output_after_a_tcp_retry() {
        let text = ";; Truncated, retrying in TCP mode.\n\
            ;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n\
            ;; flags: qr aa tc rd ra; QUERY: 1, ANSWER: 29, AUTHORITY: 0, ADDITIONAL: 0\n\
            ;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 2\n\
            ;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n\
            \n;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n\
            ;; QUESTION SECTION:\n;many.x.svc.cluster.local. IN A\n\n\
            ;; ANSWER SECTION:\nmany.x.svc.cluster.local. 5 IN A 10.244.250.1\n\
            many.x.svc.cluster.local. 5 IN A 10.244.250.2\n\n;; Query time: 1 msec\n";
        let dig = parse_dig(text);
        assert_eq!(dig.status, "NOERROR");
        assert_eq!(dig.flags, ["qr", "aa", "rd", "ra"]);
        assert!(!dig.has_flag("tc"));
        assert_eq!(dig.answers, 2);
        assert!(dig.opt);
        assert_eq!(dig.data, ["10.244.250.1", "10.244.250.2"]);
    }

    #[test]
    fn parses_dnsmasq_query_lines() {
        let text = "dnsmasq[9]: query[A] web.NS from 10.250.0.2\n\
            dnsmasq[9]: forwarded web.ns to 1.1.1.1\n\
            dnsmasq[9]: 12 10.250.0.2/4242 query[AAAA] outside.tether.test. from 10.250.0.2\n";
        let pair = |n: &str, f: &str| (n.to_owned(), f.to_owned());
        assert_eq!(
            parse_query_log(text),
            [
                pair("web.ns", "10.250.0.2"),
                pair("outside.tether.test", "10.250.0.2")
            ]
        );
    }
}
