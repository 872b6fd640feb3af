//! Discovery and DNS against a real cluster, read-only (plus a dry-run Service create).
//! Ignored by default; run with a kubeconfig whose user may list the watched kinds:
//!
//! ```text
//! KUBECONFIG=/var/lib/tether-cluster/admin.kubeconfig \
//!     cargo test -p tether-manager --test cluster_discovery -- --ignored --nocapture
//! ```
//!
//! `TETHER_TEST_NAMESPACE` (default `default`) is where the probe Service is tried. Only dry
//! runs are sent unless `TETHER_TEST_REAL_PROBE=1`, which also sends the real create the manager
//! uses on Kubernetes 1.20 (refused by the API server, so nothing is created).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tether_dns::Transport;
use tether_manager::discovery::{self, Probe, Watches};
use tether_manager::dns::{answer, Outcome};
use tether_manager::view::SharedView;
use tokio::sync::Notify;

async fn client() -> kube::Client {
    // Another test may have installed it already; one provider is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    kube::Client::try_default()
        .await
        .expect("a kubeconfig (set KUBECONFIG)")
}

fn ask(view: &SharedView, name: &str) -> (ResponseCode, Vec<IpAddr>) {
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let packet = query.to_vec().unwrap();
    let outcome = answer(&packet, Transport::Stream, &view.read(), "default");
    let Outcome::Answer(bytes) = outcome else {
        panic!("{name} was not answered from the view");
    };
    let response = Message::from_vec(&bytes).unwrap();
    let ips = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    (response.metadata.response_code, ips)
}

#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG"]
async fn discovers_the_cluster() {
    let client = client().await;
    let namespace = std::env::var("TETHER_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());

    let from_api = discovery::service_cidrs_from_api(&client).await;
    println!("ServiceCIDR API: {from_api:?}");
    let dry_run = discovery::probe_service_cidrs(&client, &namespace, Probe::DryRun).await;
    println!("dry-run probe: {dry_run:?}");
    let service = if std::env::var("TETHER_TEST_REAL_PROBE").is_ok_and(|v| v == "1") {
        let service = discovery::service_cidrs(&client, &namespace)
            .await
            .expect("service range");
        println!("service CIDRs: {service:?}");
        assert!(!service.is_empty());
        Some(service)
    } else {
        None
    };

    let view = SharedView::default();
    let changed = Arc::new(Notify::new());
    let mut watches = Watches::spawn(&client, &view, &changed);
    watches
        .synced(Duration::from_secs(30))
        .await
        .expect("every kind listed");
    let pod = discovery::pod_subnets(&view.read());
    println!("pod CIDRs: {pod:?}");
    {
        let view = view.read();
        println!(
            "namespaces {}, services {}, endpoints {}, pods {}, nodes {}",
            view.namespaces.len(),
            view.services.len(),
            view.endpoints.len(),
            view.pods.len(),
            view.nodes.len()
        );
        assert!(view.namespaces.contains("default") && view.namespaces.contains("kube-system"));
        assert!(!view.nodes.is_empty());
    }

    // The API server's own Service exists in every cluster, inside the service range.
    let (code, ips) = ask(&view, "kubernetes.default.svc.cluster.local.");
    assert_eq!(code, ResponseCode::NoError);
    println!("kubernetes.default.svc.cluster.local -> {ips:?}");
    assert_eq!(ips.len(), 1);
    if let Some(service) = service {
        assert!(service.iter().any(|net| net.contains(&ips[0])));
    }
    assert_eq!(ask(&view, "kubernetes.default.").1, ips);
    assert_eq!(
        ask(&view, "nope.default.svc.cluster.local.").0,
        ResponseCode::NXDomain
    );
}
