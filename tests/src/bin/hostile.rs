//! A hostile tether client for the trust tests: it holds a real session certificate (asked for
//! with the given kubeconfig, like the daemon does) and speaks the protocol to the manager
//! directly, skipping every check the CLI makes on its side.
//!
//! ```text
//! hostile --kubeconfig KC --claim NAME [STEP...]
//!   create NAMESPACE WORKLOAD PORT   CreateIntercept (global: no filter)
//!   list NAMESPACE                   ListIntercepts
//!   agent NAMESPACE                  AgentCredentialRequest (with a made-up nonce)
//!   dial ADDR:PORT                   open a TCP flow through the manager
//!   streams N                        open N flow streams, each sending only a frame header that
//!                                    claims 1 MiB, and wait until the manager has reset them all
//!   dns N                            send N DNS queries at once (names forwarded upstream)
//!   hold                             print "holding" and keep the session until stdin closes
//! ```
//! Each step prints one JSON line: `{"step": ..., "ok": bool, "message"|"owner": ...}`. The
//! exit code is 0 if the session could be opened (the steps' answers are the output).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tether_daemon::cluster::Cluster;
use tether_daemon::session::Session;
use tether_proto::{CreateIntercept, InterceptFilter};
use tether_tunnel::StreamCarrier;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut kubeconfig = None;
    let mut claim = "admin".to_owned();
    let mut steps = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig" => kubeconfig = args.next().map(PathBuf::from),
            "--claim" => claim = args.next().context("--claim NAME")?,
            _ => steps.push(arg),
        }
    }
    let cluster = Cluster::load(kubeconfig, None).await?;
    let credential = tether_daemon::credential::session_credential(&cluster).await?;
    let (pod, _) = cluster.manager_pod().await?;
    let stream = cluster.port_forward(&pod).await?;
    let (relay, _carrier) = StreamCarrier::spawn(stream)?;
    let endpoint =
        tether_tunnel::client_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &credential)?;
    let session = Session::establish(
        &endpoint,
        relay,
        claim,
        "default".to_owned(),
        Default::default(),
    )
    .await
    .context("opening the session")?;

    let mut steps = steps.into_iter();
    let mut n = 0;
    while let Some(step) = steps.next() {
        let mut arg = || steps.next().context("missing argument");
        let line = match step.as_str() {
            "create" => {
                let (namespace, workload, port) = (arg()?, arg()?, arg()?.parse::<u16>()?);
                n += 1;
                let create = CreateIntercept {
                    req: 0,
                    name: format!("hostile-{n}"),
                    namespace,
                    workload,
                    port,
                    service_port: port.to_string(),
                    filter: InterceptFilter::default(),
                    mode: Default::default(),
                };
                match session.create_intercept(create).await {
                    Ok(info) => serde_json::json!({"step": step, "ok": true, "owner": info.owner}),
                    Err(e) => {
                        serde_json::json!({"step": step, "ok": false, "message": e.to_string()})
                    }
                }
            }
            "list" => match session.list_intercepts(&arg()?).await {
                Ok(state) => serde_json::json!({"step": step, "ok": true,
                    "intercepts": state.intercepts.len(), "agents": state.agents.len()}),
                Err(e) => serde_json::json!({"step": step, "ok": false, "message": e.to_string()}),
            },
            "agent" => {
                let nonce = "0123456789abcdef0123456789abcdef".to_owned();
                match session.agent_credential(&arg()?, nonce).await {
                    Ok(_) => serde_json::json!({"step": step, "ok": true}),
                    Err(e) => {
                        serde_json::json!({"step": step, "ok": false, "message": e.to_string()})
                    }
                }
            }
            "dial" => {
                let dst: std::net::SocketAddr = arg()?.parse().context("dial ADDR:PORT")?;
                match session.open_tcp(dst).await {
                    Ok(_) => serde_json::json!({"step": step, "ok": true}),
                    Err(e) => {
                        serde_json::json!({"step": step, "ok": false, "message": e.to_string()})
                    }
                }
            }
            "streams" => {
                let n = arg()?.parse::<usize>()?;
                let (sent, reset, other) = streams_without_open(&session, n).await?;
                serde_json::json!({"step": step, "ok": true, "sent": sent, "reset": reset, "other": other})
            }
            "dns" => {
                let n = arg()?.parse::<u16>()?;
                let mut queries = tokio::task::JoinSet::new();
                for id in 0..n {
                    let session = session.clone();
                    queries.spawn(async move { session.dns(dns_query(id)).await.is_ok() });
                }
                let answered = queries
                    .join_all()
                    .await
                    .into_iter()
                    .filter(|ok| *ok)
                    .count();
                serde_json::json!({"step": step, "ok": true, "sent": n, "answered": answered})
            }
            "hold" => {
                println!("{}", serde_json::json!({"step": "hold", "ok": true}));
                let (mut sink, mut stdin) = (Vec::new(), tokio::io::stdin());
                tokio::select! {
                    _ = stdin.read_to_end(&mut sink) => {}
                    reason = session.closed() => {
                        println!("{}", serde_json::json!({"step": "closed", "ok": false, "message": reason.to_string()}));
                    }
                }
                continue;
            }
            other => bail!("unknown step {other}"),
        };
        println!("{line}");
    }
    session.close();
    Ok(())
}

/// Opens `n` flow streams that each send a frame header announcing a 1 MiB frame and nothing
/// more (a manager that allocated what headers claim, or waited for ever, would run out of
/// memory or stream slots), then waits for every stream to end. Returns (sent, reset by the
/// manager, ended otherwise).
async fn streams_without_open(
    session: &Session,
    n: usize,
) -> anyhow::Result<(usize, usize, usize)> {
    let conn = session.connection().clone();
    // Length 1 MiB (the largest frame), kind 1; no payload follows.
    let header = [0x00, 0x10, 0x00, 0x00, 0x00, 0x01];
    let mut ends = tokio::task::JoinSet::new();
    for _ in 0..n {
        // Blocks while the connection's concurrent streams are all in use, until the manager
        // frees some.
        let (mut send, mut recv) = conn.open_bi().await.context("opening a stream")?;
        send.write_all(&header).await.context("writing a header")?;
        ends.spawn(async move {
            let mut buf = [0u8; 64];
            let end = tokio::time::timeout(std::time::Duration::from_secs(120), async {
                loop {
                    match recv.read(&mut buf).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return false,
                        Err(tether_tunnel::quinn::ReadError::Reset(_)) => return true,
                        Err(_) => return false,
                    }
                }
            })
            .await;
            drop(send);
            matches!(end, Ok(true))
        });
    }
    let ended = ends.join_all().await;
    let reset = ended.iter().filter(|r| **r).count();
    Ok((n, reset, n - reset))
}

/// A DNS query (no EDNS) for an A record of a name outside the cluster, `id` its id.
fn dns_query(id: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    // RD; one question.
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let name = format!("flood-{id}.example.invalid");
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}
