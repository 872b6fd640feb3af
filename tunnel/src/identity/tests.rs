use std::collections::BTreeMap;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::*;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("valid PEM certificate")
}

#[test]
fn issued_certificates_name_role_and_holder() {
    let identity = Identity::generate().unwrap();
    for (role, name) in [
        (Role::Client, "alice@laptop"),
        (Role::Agent, "sidecar/web-7d9f"),
    ] {
        let credential = identity.issue_client(role, name).unwrap();
        assert_eq!(credential.ca_pem, identity.ca_pem());
        let peer = Peer::from_certificate(&der(&credential.cert_pem)).unwrap();
        assert_eq!(
            peer,
            Peer {
                role,
                name: name.to_owned(),
                groups: Vec::new(),
            }
        );
        assert_eq!(Peer::from_pem(&credential.cert_pem), Some(peer));
    }
    assert_eq!(Peer::from_pem("not PEM"), None);
}

#[test]
fn ca_and_server_certificates_name_no_peer() {
    let identity = Identity::generate().unwrap();
    assert_eq!(Peer::from_certificate(identity.ca_der()), None);
    let (chain, _) = identity.server_cert();
    assert_eq!(Peer::from_certificate(&chain[0]), None);
    assert_eq!(Peer::from_certificate(b"not a certificate"), None);
}

#[test]
fn each_identity_has_its_own_ca() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    assert_ne!(a.ca_pem(), b.ca_pem());
}

#[test]
fn empty_names_are_refused() {
    let identity = Identity::generate().unwrap();
    let err = identity.issue_client(Role::Client, " ").unwrap_err();
    assert!(matches!(err, IdentityError::InvalidName(_)), "{err:?}");
}

#[test]
fn credential_round_trips_through_secret_data() {
    let identity = Identity::generate().unwrap();
    let credential = identity.issue_client(Role::Client, "daemon").unwrap();
    let data = credential.to_secret_data();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert!(data["tls.key"].starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        ClientCredential::from_secret_data(&data).unwrap(),
        credential
    );
}

#[test]
fn secret_data_without_a_key_is_refused() {
    let mut data = BTreeMap::from([
        ("ca.crt".to_owned(), "ca".to_owned()),
        ("tls.crt".to_owned(), "cert".to_owned()),
    ]);
    let err = ClientCredential::from_secret_data(&data).unwrap_err();
    assert!(
        matches!(err, IdentityError::MissingKey("tls.key")),
        "{err:?}"
    );
    data.insert("tls.key".to_owned(), "key".to_owned());
    data.insert("extra".to_owned(), "ignored".to_owned());
    assert!(ClientCredential::from_secret_data(&data).is_ok());
}

#[test]
fn debug_output_hides_the_private_key() {
    let identity = Identity::generate().unwrap();
    let credential = identity.issue_client(Role::Agent, "agent").unwrap();
    let shown = format!("{credential:?} {identity:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[test]
fn session_certificates_are_written_by_the_ca_not_the_request() {
    let identity = Identity::generate().unwrap();
    let request = SessionRequest::generate().unwrap();
    let groups = vec!["system:authenticated".to_owned(), "team a".to_owned()];
    let lifetime = std::time::Duration::from_secs(8 * 3600);
    let cert = identity
        .sign_session(&request.csr_pem, "dev-alice", &groups, lifetime)
        .unwrap();
    let peer = Peer::from_pem(&cert).unwrap();
    assert_eq!(
        peer,
        Peer {
            role: Role::Client,
            name: "dev-alice".to_owned(),
            groups,
        }
    );
    // Valid for the lifetime asked, from now.
    let expiry = certificate_expiry(&cert).unwrap();
    let left = expiry.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        left <= lifetime && left > lifetime - std::time::Duration::from_secs(60),
        "{left:?}"
    );
    // The request's own subject ("tether session") is nowhere in it.
    let cert_der = der(&cert);
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    assert!(
        !parsed.subject().to_string().contains("session"),
        "{}",
        parsed.subject()
    );
    assert_eq!(parsed.issuer().to_string(), {
        let (_, ca) = x509_parser::parse_x509_certificate(identity.ca_der()).unwrap();
        ca.subject().to_string()
    });
}

#[test]
fn a_request_whose_signature_does_not_match_is_refused() {
    let identity = Identity::generate().unwrap();
    let request = SessionRequest::generate().unwrap();
    let pem = &request.csr_pem;
    // Flip a bit of the signature (the last bytes of the DER, before the PEM footer).
    use rustls_pki_types::pem::PemObject;
    let mut der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let tampered = rustls_pki_types::CertificateSigningRequestDer::from(der);
    assert!(rcgen::CertificateSigningRequestParams::from_der(&tampered).is_err());
    for bad in [
        "",
        "not PEM",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = identity
            .sign_session(bad, "dev-alice", &[], std::time::Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, IdentityError::BadRequest(_)), "{err:?}");
    }
    let err = identity
        .sign_session(pem, "dev-alice", &[], std::time::Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, IdentityError::BadLifetime(_)), "{err:?}");
    let err = identity
        .sign_session(pem, " ", &[], std::time::Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, IdentityError::InvalidName(_)), "{err:?}");
}

#[test]
fn a_session_request_hides_its_key() {
    let request = SessionRequest::generate().unwrap();
    assert!(request
        .csr_pem
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(!format!("{request:?}").contains("PRIVATE KEY"));
}
