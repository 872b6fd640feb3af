//! `bench flows`: many flows at once, as a busy developer machine has them. Every TCP flow opens
//! its connection, every UDP flow its socket, and all wait until every one is open; then each
//! sends its requests one after another, so the flows overlap for the whole run. The latency
//! of each request is recorded; the report is one JSON object with TCP and UDP percentiles.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::json;
use tokio::{net::UdpSocket, sync::Barrier, task::JoinSet, time::timeout};

use super::{get, open, Recorder};
use crate::get::{Header, Target};

/// What `bench flows` does.
#[derive(Debug)]
pub struct Flows {
    pub target: Target,
    pub headers: Vec<Header>,
    pub tcp: u32,
    pub udp: Option<SocketAddr>,
    pub udp_flows: u32,
    pub requests: u32,
    pub per_op: Duration,
}

type Outcome = Result<Duration, String>;

pub async fn run(flows: Flows) -> anyhow::Result<serde_json::Value> {
    let flows = Arc::new(flows);
    let udp_flows = if flows.udp.is_some() {
        flows.udp_flows
    } else {
        0
    };
    let barrier = Arc::new(Barrier::new((flows.tcp + udp_flows) as usize + 1));
    let mut tcp = JoinSet::new();
    for _ in 0..flows.tcp {
        tcp.spawn(tcp_flow(flows.clone(), barrier.clone()));
    }
    let mut udp = JoinSet::new();
    for i in 0..udp_flows {
        udp.spawn(udp_flow(flows.clone(), barrier.clone(), i));
    }
    barrier.wait().await;
    let started = std::time::Instant::now();
    let tcp = collect(tcp).await;
    let udp = collect(udp).await;
    let mut report = json!({
        "tcp_flows": flows.tcp,
        "udp_flows": udp_flows,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    report["tcp"] = tcp.report();
    report["udp"] = udp.report();
    Ok(report)
}

async fn collect(mut set: JoinSet<Vec<Outcome>>) -> Recorder {
    let mut recorder = Recorder::unbounded();
    while let Some(outcomes) = set.join_next().await {
        match outcomes {
            Ok(outcomes) => {
                for outcome in outcomes {
                    recorder.record(u32::MAX, outcome);
                }
            }
            Err(e) => {
                recorder.record(u32::MAX, Err(format!("the flow's task failed: {e}")));
            }
        }
    }
    recorder
}

/// Opens, waits for the others, then sends its GETs on its one connection. A flow that cannot
/// open counts all its requests as failed.
async fn tcp_flow(flows: Arc<Flows>, barrier: Arc<Barrier>) -> Vec<Outcome> {
    let opened = timeout(flows.per_op, open(&flows.target)).await;
    barrier.wait().await;
    let mut sender = match opened {
        Ok(Ok(sender)) => sender,
        Ok(Err(e)) => return failed(&flows, format!("connecting: {e:#}")),
        Err(_) => return failed(&flows, "connecting timed out".into()),
    };
    let mut outcomes = Vec::with_capacity(flows.requests as usize);
    for _ in 0..flows.requests {
        let start = std::time::Instant::now();
        let outcome = match timeout(
            flows.per_op,
            get(&mut sender, &flows.target, &flows.headers),
        )
        .await
        {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {:?}", flows.per_op)),
        };
        let broken = outcome.is_err();
        outcomes.push(outcome);
        if broken {
            // The connection is in an unknown state: the rest of this flow fails.
            outcomes.extend(failed(
                &flows,
                "an earlier request on the flow failed".into(),
            ));
            outcomes.truncate(flows.requests as usize);
            break;
        }
    }
    outcomes
}

/// Each datagram carries the flow and its sequence number; the echo must bring back exactly it.
async fn udp_flow(flows: Arc<Flows>, barrier: Arc<Barrier>, i: u32) -> Vec<Outcome> {
    let Some(server) = flows.udp else {
        return Vec::new();
    };
    let socket = async {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).await?;
        socket.connect(server).await?;
        Ok::<_, std::io::Error>(socket)
    }
    .await;
    barrier.wait().await;
    let socket = match socket {
        Ok(s) => s,
        Err(e) => return failed(&flows, format!("UDP socket: {e}")),
    };
    let mut outcomes = Vec::with_capacity(flows.requests as usize);
    let mut buf = vec![0u8; 2048];
    for k in 0..flows.requests {
        let payload = format!("flow-{i}-{k}");
        let start = std::time::Instant::now();
        let outcome = timeout(flows.per_op, async {
            socket.send(payload.as_bytes()).await?;
            loop {
                let n = socket.recv(&mut buf).await?;
                // A late echo of an earlier datagram (after its timeout) is skipped.
                if buf[..n] == *payload.as_bytes() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        outcomes.push(match outcome {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(format!("UDP: {e}")),
            Err(_) => Err(format!("no UDP echo within {:?}", flows.per_op)),
        });
    }
    outcomes
}

fn failed(flows: &Flows, why: String) -> Vec<Outcome> {
    vec![Err(why); flows.requests as usize]
}
