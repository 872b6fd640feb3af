//! DNS: a program on the workstation asks the daemon's DNS server, which asks the manager over
//! the session; the manager answers from its view of the cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tether_harness::servers::{self, round_trip};
use tether_harness::{patiently, FakeCluster};
use tether_manager::view::Protocol;

use crate::support::{Result, World, ECHO_IP};

/// The A records of a reply.
fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn service_names_long_and_short_resolve_to_the_cluster_ip() -> Result {
    let world = World::start().await?;
    // The full name, `svc.ns` (a namespace the manager announced), and a single label, which
    // the manager answers in the session's namespace (`shop`).
    for name in ["echo.shop.svc.cluster.local.", "echo.shop.", "echo."] {
        let reply = world.alice.resolve(name, RecordType::A).await?;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(addresses(&reply), [ECHO_IP], "{name}");
    }
    let reply = world
        .alice
        .resolve("nothing.shop.svc.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    Ok(())
}

#[tokio::test]
async fn the_reverse_name_of_a_cluster_ip_names_its_service() -> Result {
    let world = World::start().await?;
    let reply = world
        .alice
        .resolve("11.0.0.127.in-addr.arpa.", RecordType::PTR)
        .await?;
    let names: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(ptr) => Some(ptr.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["echo.shop.svc.cluster.local."]);
    Ok(())
}

#[tokio::test]
async fn a_service_added_to_the_view_resolves_and_a_new_namespace_routes() -> Result {
    let world = World::start().await?;
    let ip = Ipv4Addr::new(127, 0, 0, 31);
    let server = servers::tcp_echo(IpAddr::V4(ip)).await?;
    // As the watches would: a Service in a new namespace, then the namespaces announced.
    let added = FakeCluster::new().service("blog", "api", server.addr(), Protocol::Tcp);
    world.manager.view().update(|view| added.merge_into(view));
    world.manager.publish_namespaces();
    let full = world
        .alice
        .resolve("api.blog.svc.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(addresses(&full), [ip]);
    // `api.blog` goes to the manager only once the workstation knows namespace `blog`.
    let mut namespaces = world.alice.session()?.namespaces_rx;
    patiently(
        "namespace blog to reach the workstation",
        namespaces.wait_for(|names| names.contains("blog")),
    )
    .await?
    .expect("the session is up");
    let short = world.alice.resolve("api.blog.", RecordType::A).await?;
    assert_eq!(addresses(&short), [ip]);
    // And what the name gave is where a flow goes.
    let dst = SocketAddr::from((addresses(&short)[0], server.addr().port()));
    let (send, recv) = world.alice.session()?.open_tcp(dst).await?;
    let mut stream = tokio::io::join(recv, send);
    assert_eq!(round_trip(&mut stream, b"hello blog").await?, b"hello blog");
    Ok(())
}
