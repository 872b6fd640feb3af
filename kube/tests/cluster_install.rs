//! The install manifests against a real cluster, as server-side dry runs only: nothing is
//! persisted. Ignored by default; run with an admin kubeconfig:
//!
//! ```text
//! KUBECONFIG=/var/lib/tether-cluster/admin.kubeconfig \
//!     cargo test -p tether-kube --test cluster_install -- --ignored
//! ```

use tether_kube::install::{self, InstallError};

const IMAGE: &str = "tether.local/tether-agent:test";

async fn client(impersonate: Option<&str>) -> kube::Client {
    // Another test may have installed it already; one provider is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::infer()
        .await
        .expect("a kubeconfig (set KUBECONFIG)");
    config.auth_info.impersonate = impersonate.map(str::to_owned);
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG"]
async fn every_manifest_passes_a_server_side_dry_run() {
    let client = client(None).await;
    for mut manifest in install::manifests(IMAGE, install::NAMESPACE).unwrap() {
        // A dry run does not create the namespace, so namespaced objects are tried in `default`.
        if manifest.namespaced {
            manifest.object.metadata.namespace = Some("default".into());
        }
        let applied = install::apply(&client, &manifest, true).await;
        let applied = applied.unwrap_or_else(|e| panic!("{}: {e:?}", manifest.describe()));
        assert_eq!(applied.metadata.name.as_deref(), Some(manifest.name()));
    }
}

#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG"]
async fn a_user_without_rights_is_told_to_ask_an_admin() {
    let client = client(Some("tether-test-nobody")).await;
    let manifests = install::manifests(IMAGE, install::NAMESPACE).unwrap();
    let cluster_role = manifests
        .iter()
        .find(|m| m.resource.kind == "ClusterRole" && m.name() == "tether-manager")
        .unwrap();
    let error = install::apply(&client, cluster_role, true)
        .await
        .unwrap_err();
    assert!(matches!(error, InstallError::Forbidden { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "forbidden: your kubeconfig user may not create or update clusterroles tether-manager; \
         ask a cluster admin to run `tether install`"
    );
}
