//! The agent probe: how the daemon learns that a Service's traffic really lands where an
//! intercept, a `leave` or an `uninstall` says it should.
//!
//! `tether intercept` returns only once a connection to the Service's ClusterIP and port, made
//! from inside the cluster (the manager dials it for the daemon, through the node's kube-proxy
//! like any caller), reaches an agent that already routes by the new intercept. The daemon sends
//! [`PROBE`] as the connection's first bytes; an agent recognises them (they start with a NUL
//! byte, which neither HTTP/1, HTTP/2 nor TLS ever does, and go on with a text no other protocol
//! sends) and answers one [`ProbeReply`] line, then closes. Anything else (an app answering, a
//! reset, a timeout) means the connection did not reach an agent.
//!
//! ```
//! use tether_proto::probe::{ProbeReply, PROBE};
//!
//! let reply = ProbeReply { pod: "orders-7c9d".into(), intercepts: vec![3, 7] };
//! let line = reply.encode();
//! assert_eq!(line, "tether-agent/1 pod=orders-7c9d intercepts=3,7\n");
//! assert_eq!(ProbeReply::parse(line.as_bytes()), Some(reply));
//! assert!(PROBE.starts_with(b"\0"));
//! ```

/// What the daemon sends first on a probe connection.
pub const PROBE: &[u8] = b"\0tether-probe/1\n";

/// The start of an agent's answer.
const REPLY_PREFIX: &str = "tether-agent/1 ";

/// The longest answer a prober reads.
pub const MAX_REPLY_LEN: usize = 4096;

/// An agent's answer to [`PROBE`]: who it is and which intercepts its port routes by now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    /// The pod the agent runs in.
    pub pod: String,
    /// The ids of the intercepts in the probed port's routing table.
    pub intercepts: Vec<u64>,
}

impl ProbeReply {
    /// The reply line, newline included.
    pub fn encode(&self) -> String {
        let ids: Vec<String> = self.intercepts.iter().map(u64::to_string).collect();
        format!(
            "{REPLY_PREFIX}pod={} intercepts={}\n",
            self.pod,
            ids.join(",")
        )
    }

    /// Parses a reply line (with or without its newline); `None` for anything that is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        let rest = line.strip_prefix(REPLY_PREFIX)?;
        let (mut pod, mut intercepts) = (None, None);
        for field in rest.split(' ') {
            match field.split_once('=')? {
                ("pod", value) if !value.is_empty() => pod = Some(value.to_owned()),
                ("intercepts", "") => intercepts = Some(Vec::new()),
                ("intercepts", ids) => {
                    intercepts = Some(
                        ids.split(',')
                            .map(|id| id.parse().ok())
                            .collect::<Option<Vec<u64>>>()?,
                    )
                }
                // Fields a newer agent adds are skipped.
                _ => {}
            }
        }
        Some(Self {
            pod: pod?,
            intercepts: intercepts?,
        })
    }
}

/// Whether `first` (a connection's first bytes) is a probe: `Some(true)` yes, `Some(false)` no,
/// `None` too few bytes to tell.
pub fn is_probe(first: &[u8]) -> Option<bool> {
    let n = first.len().min(PROBE.len());
    if first[..n] != PROBE[..n] {
        Some(false)
    } else if n == PROBE.len() {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for reply in [
            ProbeReply {
                pod: "p".into(),
                intercepts: vec![],
            },
            ProbeReply {
                pod: "orders-1".into(),
                intercepts: vec![1, u64::MAX],
            },
        ] {
            assert_eq!(ProbeReply::parse(reply.encode().as_bytes()), Some(reply));
        }
    }

    #[test]
    fn replies_parse_only_what_an_agent_sends() {
        assert_eq!(
            ProbeReply::parse(b"tether-agent/1 pod=a intercepts= extra=1"),
            Some(ProbeReply {
                pod: "a".into(),
                intercepts: vec![]
            })
        );
        for junk in [
            &b""[..],
            b"HTTP/1.1 400 Bad Request\r\n",
            b"tether-agent/1 intercepts=1",
            b"tether-agent/1 pod= intercepts=1",
            b"tether-agent/1 pod=a",
            b"tether-agent/1 pod=a intercepts=x",
            b"tether-agent/2 pod=a intercepts=1",
            b"\xff\xfe",
        ] {
            assert_eq!(ProbeReply::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn probes_are_told_from_other_first_bytes() {
        assert_eq!(is_probe(PROBE), Some(true));
        assert_eq!(is_probe(b"\0tether-probe/1\nmore"), Some(true));
        assert_eq!(is_probe(b""), None);
        assert_eq!(is_probe(b"\0tether"), None);
        assert_eq!(is_probe(b"\0\0\0\x08\x04\xd2\x16\x2f"), Some(false)); // PostgreSQL
        assert_eq!(is_probe(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_probe(b"\0tether-probe/2\n"), Some(false));
    }
}
