//! Knowing when an intercept, a `leave` or an `uninstall` is in effect for the Service's callers.
//!
//! The Kubernetes objects settling (rollout done, Endpoints listing agent pods) is not enough:
//! each node's kube-proxy follows the Endpoints on its own time, and on a busy machine callers
//! keep reaching the pods a rollout removed for a while. So the daemon asks the manager to
//! connect to the Service's ClusterIP and port from inside the cluster, as a caller would, and
//! sends the agent probe ([`tether_proto::probe`]); the command returns only once
//! [`Judge::needed`] connections in a row have landed where they should.
//!
//! [`Judge`] is the sans-IO decision; [`await_effect`] drives it over a session.

use std::{
    fmt,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tether_proto::probe::{ProbeReply, MAX_REPLY_LEN, PROBE};

use crate::session::Session;

/// How long one probe connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a command waits for its effect before it gives up.
pub const EFFECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between probes that missed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where the Service's callers must land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// On agents that route by this intercept (after `tether intercept`).
    Intercept(u64),
    /// On agents that no longer route by this intercept (after `tether leave`).
    Ended(u64),
    /// On a live listener that is not an agent: the app (after `tether uninstall`). Such
    /// connections send nothing, so the app never sees a probe.
    App,
}

/// What one probe connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// An agent answered.
    Agent(ProbeReply),
    /// Something that is not an agent accepted the connection (for a probe sent: answered or
    /// closed without a probe reply).
    NotAgent,
    /// The connection failed (refused, timed out: a pod that is gone or going).
    Failed(String),
}

/// Decides, from successive landings, when the Service's callers reach what `expect` says.
#[derive(Debug)]
pub struct Judge {
    expect: Expect,
    needed: usize,
    in_a_row: usize,
    /// The last landing that did not count, to say why when time runs out.
    last_miss: Option<String>,
}

impl Judge {
    /// `endpoints` is how many addresses the Service sends to: kube-proxy picks one at random
    /// per connection, so the more there are, the more landings in a row it takes to have
    /// reached each with high probability (8 + 4 per endpoint: a stale one among two is missed
    /// by 16 random picks once in 65 536 times).
    pub fn new(expect: Expect, endpoints: usize) -> Self {
        Self {
            expect,
            needed: 8 + 4 * endpoints,
            in_a_row: 0,
            last_miss: None,
        }
    }

    /// Whether probes send [`PROBE`] (they do unless the app is expected).
    pub fn sends_probe(&self) -> bool {
        self.expect != Expect::App
    }

    /// How many landings in a row are needed.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Takes one landing; true once the effect holds.
    pub fn landed(&mut self, landing: Landing) -> bool {
        let miss = match (&landing, self.expect) {
            (Landing::Agent(r), Expect::Intercept(id)) if r.intercepts.contains(&id) => None,
            (Landing::Agent(r), Expect::Intercept(_)) => Some(format!(
                "the agent in {} does not route by the intercept yet",
                r.pod
            )),
            (Landing::Agent(r), Expect::Ended(id)) if !r.intercepts.contains(&id) => None,
            (Landing::Agent(r), Expect::Ended(_)) => Some(format!(
                "the agent in {} still routes by the intercept",
                r.pod
            )),
            (Landing::Agent(r), Expect::App) => {
                Some(format!("a connection still reached the agent in {}", r.pod))
            }
            (Landing::NotAgent, Expect::App) => None,
            (Landing::NotAgent, _) => {
                Some("a connection reached a pod without the traffic agent".to_owned())
            }
            (Landing::Failed(why), _) => Some(format!("a connection failed: {why}")),
        };
        match miss {
            None => self.in_a_row += 1,
            Some(why) => {
                self.in_a_row = 0;
                self.last_miss = Some(why);
            }
        }
        self.in_a_row >= self.needed
    }

    /// Why the effect does not hold yet.
    pub fn last_miss(&self) -> Option<&str> {
        self.last_miss.as_deref()
    }
}

/// The effect did not come in time.
#[derive(Debug, thiserror::Error)]
pub struct NotInEffect {
    /// The Service, `name:port`.
    pub service: String,
    /// What was expected, in words.
    pub what: &'static str,
    /// Why not, from the last probe that missed.
    pub why: String,
    /// How long it waited.
    pub waited: Duration,
}

impl fmt::Display for NotInEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "callers of the Service {} did not {} within {} s: {}. If a rollout is still going, \
             `kubectl rollout status` tells; if the node's kube-proxy lags, its log does",
            self.service,
            self.what,
            self.waited.as_secs(),
            self.why
        )
    }
}

/// Probes `addr` (a Service's ClusterIP and port) through the manager until `judge` is
/// satisfied or `timeout` passes. `progress` hears about it once when the first probes miss.
pub async fn await_effect(
    session: &Session,
    service: &str,
    addr: SocketAddr,
    mut judge: Judge,
    timeout: Duration,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), NotInEffect> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let landing = probe(session, addr, judge.sends_probe()).await;
        if judge.landed(landing) {
            return Ok(());
        }
        if judge.in_a_row > 0 {
            continue;
        }
        let why = judge.last_miss().unwrap_or("no answer").to_owned();
        if started.elapsed() > timeout {
            return Err(NotInEffect {
                service: service.to_owned(),
                what: match judge.expect {
                    Expect::Intercept(_) => "reach the intercept",
                    Expect::Ended(_) => "stop reaching the intercept",
                    Expect::App => "reach the app",
                },
                why,
                waited: started.elapsed(),
            });
        }
        if !told {
            progress(format!(
                "waiting for the Service {service} to follow: {why}"
            ));
            told = true;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One connection to `addr` through the manager.
async fn probe(session: &Session, addr: SocketAddr, send_probe: bool) -> Landing {
    let attempt = async {
        let (mut send, mut recv) = session.open_tcp(addr).await.map_err(|e| e.to_string())?;
        if !send_probe {
            let _ = send.finish();
            return Ok(Landing::NotAgent);
        }
        send.write_all(PROBE).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        // An app may answer the probe's bytes and keep the connection open: the first line
        // decides.
        let mut reply = Vec::new();
        let mut buf = [0; 512];
        while !reply.contains(&b'\n') && reply.len() < MAX_REPLY_LEN {
            match recv.read(&mut buf).await.map_err(|e| e.to_string())? {
                None | Some(0) => break,
                Some(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        Ok::<_, String>(match ProbeReply::parse(&reply) {
            Some(reply) => Landing::Agent(reply),
            None => Landing::NotAgent,
        })
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(landing)) => landing,
        Ok(Err(why)) => Landing::Failed(why),
        Err(_) => Landing::Failed(format!("no answer in {} ms", PROBE_TIMEOUT.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(pod: &str, intercepts: &[u64]) -> Landing {
        Landing::Agent(ProbeReply {
            pod: pod.into(),
            intercepts: intercepts.to_vec(),
        })
    }

    #[test]
    fn an_intercept_holds_after_enough_agents_in_a_row_route_by_it() {
        let mut judge = Judge::new(Expect::Intercept(7), 2);
        assert_eq!(judge.needed(), 16);
        for _ in 0..15 {
            assert!(!judge.landed(agent("a", &[3, 7])));
        }
        // A stale endpoint (the pod the rollout removed) starts the count again.
        assert!(!judge.landed(Landing::Failed("timed out".into())));
        assert_eq!(judge.last_miss(), Some("a connection failed: timed out"));
        for _ in 0..15 {
            assert!(!judge.landed(agent("b", &[7])));
        }
        assert!(judge.landed(agent("a", &[7])));
    }

    #[test]
    fn an_app_or_an_agent_without_the_intercept_is_a_miss() {
        let mut judge = Judge::new(Expect::Intercept(7), 0);
        for _ in 0..7 {
            judge.landed(agent("a", &[7]));
        }
        assert!(!judge.landed(Landing::NotAgent));
        assert!(judge
            .last_miss()
            .unwrap()
            .contains("a pod without the traffic agent"));
        for _ in 0..7 {
            judge.landed(agent("a", &[7]));
        }
        assert!(!judge.landed(agent("b", &[])));
        assert!(judge.last_miss().unwrap().contains("in b does not route"));
    }

    #[test]
    fn leave_holds_once_no_agent_routes_by_the_intercept() {
        let mut judge = Judge::new(Expect::Ended(7), 1);
        for _ in 0..11 {
            assert!(!judge.landed(agent("a", &[8])));
        }
        assert!(!judge.landed(agent("b", &[7, 8])));
        assert!(judge.last_miss().unwrap().contains("still routes"));
        for _ in 0..11 {
            assert!(!judge.landed(agent("a", &[])));
        }
        assert!(judge.landed(agent("a", &[8])));
    }

    #[test]
    fn uninstall_holds_once_only_the_app_accepts() {
        let mut judge = Judge::new(Expect::App, 1);
        assert!(!judge.sends_probe());
        for _ in 0..11 {
            assert!(!judge.landed(Landing::NotAgent));
        }
        assert!(!judge.landed(Landing::Failed("refused".into())));
        for _ in 0..11 {
            assert!(!judge.landed(Landing::NotAgent));
        }
        assert!(judge.landed(Landing::NotAgent));
    }
}
