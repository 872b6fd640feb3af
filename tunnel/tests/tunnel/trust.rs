//! Mutual TLS: who gets in, and what the server learns about them.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tether_tunnel::quinn::{self, ConnectionError};
use tether_tunnel::{client_config, Identity, Peer, Role, SessionRequest, ALPN};

use crate::support::{echo, patiently, Manager, Via};

/// A client that trusts the manager's CA but presents no certificate.
fn anonymous_config(manager: &Manager) -> quinn::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(manager.identity.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Connects and tries to use the connection; returns how it failed.
async fn refused(manager: &mut Manager, config: quinn::ClientConfig) -> ConnectionError {
    // In TLS 1.3 the client finishes its handshake before the server has checked the client
    // certificate, so the refusal may arrive just after `connect` succeeds.
    let error = match manager.connect_with(Via::Udp, config).await {
        Err(e) => e.downcast::<ConnectionError>().unwrap(),
        Ok(connection) => {
            let used = echo(&connection, b"let me in").await;
            assert!(used.is_err(), "refused client could use the connection");
            patiently(connection.closed()).await
        }
    };
    assert!(
        manager.peers.try_recv().is_err(),
        "the server accepted the connection"
    );
    error
}

/// The TLS alert the server closed the connection with.
fn alert(error: &ConnectionError) -> Option<rustls::AlertDescription> {
    let ConnectionError::ConnectionClosed(close) = error else {
        return None;
    };
    let code = u64::from(close.error_code);
    // QUIC maps TLS alert n to transport error 0x100 + n (RFC 9001 §4.8).
    (0x100..0x200)
        .contains(&code)
        .then(|| rustls::AlertDescription::from((code - 0x100) as u8))
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let mut manager = Manager::start();
    let config = anonymous_config(&manager);
    let error = refused(&mut manager, config).await;
    assert_eq!(
        alert(&error),
        Some(rustls::AlertDescription::CertificateRequired),
        "{error}"
    );
}

#[tokio::test]
async fn client_of_another_ca_is_refused() {
    let mut manager = Manager::start();
    let stranger = Identity::generate().unwrap();
    let mut credential = stranger.issue_client(Role::Client, "mallory").unwrap();
    // Trusting the right CA does not help with a certificate it did not sign.
    credential.ca_pem = manager.identity.ca_pem().to_owned();
    let error = refused(&mut manager, client_config(&credential).unwrap()).await;
    assert_eq!(
        alert(&error),
        Some(rustls::AlertDescription::UnknownCA),
        "{error}"
    );
}

#[tokio::test]
async fn client_refuses_a_server_of_another_ca() {
    let mut manager = Manager::start();
    let stranger = Identity::generate().unwrap();
    let credential = stranger.issue_client(Role::Client, "lost").unwrap();
    let error = manager
        .connect_with(Via::Udp, client_config(&credential).unwrap())
        .await
        .unwrap_err();
    let error = error.downcast::<ConnectionError>().unwrap();
    assert!(
        matches!(&error, ConnectionError::TransportError(e) if e.to_string().contains("UnknownIssuer")),
        "{error}"
    );
}

#[tokio::test]
async fn agent_certificate_is_reported_as_agent() {
    let mut manager = Manager::start();
    let credential = manager
        .identity
        .issue_client(Role::Agent, "sidecar-web")
        .unwrap();
    let connection = manager
        .connect_with(Via::Udp, client_config(&credential).unwrap())
        .await
        .unwrap();
    let peer = patiently(manager.peers.recv()).await.unwrap();
    assert_eq!(
        peer,
        Some(Peer {
            role: Role::Agent,
            name: "sidecar-web".to_owned(),
            groups: Vec::new(),
        })
    );
    echo(&connection, b"agents may talk").await.unwrap();
}

#[tokio::test]
async fn a_restarted_manager_keeps_its_ca_and_old_credentials_work() {
    let first = Identity::generate().unwrap();
    let credential = first.issue_client(Role::Agent, "sidecar-web").unwrap();
    let restarted = Identity::from_ca(first.ca_pem(), first.ca_key_pem()).unwrap();
    assert_eq!(restarted.ca_pem(), first.ca_pem());
    drop(first);
    let mut manager = Manager::with_identity(restarted);
    // The old credential gets in, and trusts the new server certificate.
    let connection = manager
        .connect_with(Via::Udp, client_config(&credential).unwrap())
        .await
        .unwrap();
    echo(&connection, b"still here").await.unwrap();
    // A garbled key is an error, not another CA.
    assert!(Identity::from_ca(manager.identity.ca_pem(), "not a key").is_err());
}

/// A person's session certificate: signed for the key the daemon generated, naming the user and
/// groups the API server reported; the server reads them back from the verified certificate.
#[tokio::test]
async fn a_session_certificate_names_its_user_and_groups() {
    let mut manager = Manager::start();
    let request = SessionRequest::generate().unwrap();
    let groups = vec!["dev".to_owned(), "system:authenticated".to_owned()];
    let cert = manager
        .identity
        .sign_session(
            &request.csr_pem,
            "dev-alice",
            &groups,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let credential = request.into_credential(manager.identity.ca_pem().to_owned(), cert);
    let connection = manager
        .connect_with(Via::Udp, client_config(&credential).unwrap())
        .await
        .unwrap();
    let peer = patiently(manager.peers.recv()).await.unwrap();
    assert_eq!(
        peer,
        Some(Peer {
            role: Role::Client,
            name: "dev-alice".to_owned(),
            groups,
        })
    );
    echo(&connection, b"hello alice").await.unwrap();
}

/// An expired session certificate is refused at the handshake: that is what ends access for
/// someone who can no longer get a new one.
#[tokio::test]
async fn an_expired_session_certificate_is_refused() {
    let mut manager = Manager::start();
    let request = SessionRequest::generate().unwrap();
    let cert = manager
        .identity
        .sign_session(
            &request.csr_pem,
            "dev-bob",
            &[],
            std::time::Duration::from_secs(1),
        )
        .unwrap();
    let expiry = tether_tunnel::certificate_expiry(&cert).unwrap();
    let credential = request.into_credential(manager.identity.ca_pem().to_owned(), cert);
    // Certificates have whole-second times: wait until the second after `not_after`.
    while std::time::SystemTime::now() <= expiry + std::time::Duration::from_secs(1) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let error = refused(&mut manager, client_config(&credential).unwrap()).await;
    assert_eq!(
        alert(&error),
        Some(rustls::AlertDescription::CertificateExpired),
        "{error}"
    );
}
