use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A pending request from `dev-alice`, made `age` ago.
fn request(age: SignedDuration) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some("tether-session-abcde".to_owned()),
            creation_timestamp: Some(Time(now() - age)),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: SIGNER_NAME.to_owned(),
            usages: Some(vec![USAGE.to_owned()]),
            username: Some("dev-alice".to_owned()),
            groups: Some(vec!["system:authenticated".to_owned()]),
            request: ByteString(b"-----BEGIN CERTIFICATE REQUEST-----".to_vec()),
            ..Default::default()
        },
        status: None,
    }
}

fn with_condition(mut csr: CertificateSigningRequest, kind: &str) -> CertificateSigningRequest {
    csr.status
        .get_or_insert_with(CertificateSigningRequestStatus::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: kind.to_owned(),
            status: "True".to_owned(),
            ..Default::default()
        });
    csr
}

const SECOND: SignedDuration = SignedDuration::from_secs(1);

#[test]
fn a_pending_request_is_reviewed() {
    assert_eq!(
        step(&request(SECOND), now()),
        Step::Review { approved: false }
    );
}

#[test]
fn other_signers_are_not_ours() {
    let mut csr = request(SECOND);
    csr.spec.signer_name = "kubernetes.io/kube-apiserver-client".to_owned();
    assert_eq!(step(&csr, now()), Step::Ignore);
    // Not even to delete when old.
    csr.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_hours(2)));
    assert_eq!(step(&csr, now()), Step::Ignore);
}

#[test]
fn decided_or_signed_requests_are_left_alone() {
    for kind in ["Denied", "Failed"] {
        assert_eq!(
            step(&with_condition(request(SECOND), kind), now()),
            Step::Ignore
        );
    }
    let mut signed = with_condition(request(SECOND), "Approved");
    assert_eq!(step(&signed, now()), Step::Review { approved: true });
    if let Some(status) = signed.status.as_mut() {
        status.certificate = Some(ByteString(b"-----BEGIN CERTIFICATE-----".to_vec()));
    }
    assert_eq!(step(&signed, now()), Step::Ignore);
}

#[test]
fn requests_older_than_an_hour_are_garbage() {
    let hour = SignedDuration::from_hours(1);
    assert_eq!(
        step(&request(hour - SECOND), now()),
        Step::Review { approved: false }
    );
    assert_eq!(step(&request(hour), now()), Step::Delete);
    let signed = with_condition(request(hour * 2), "Approved");
    assert_eq!(step(&signed, now()), Step::Delete);
}

#[test]
fn only_client_auth_is_granted() {
    for usages in [
        vec![],
        vec!["client auth", "server auth"],
        vec!["server auth"],
        vec!["client auth", "digital signature"],
    ] {
        let mut csr = request(SECOND);
        csr.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
        let Step::Deny(message) = step(&csr, now()) else {
            panic!("{usages:?} accepted");
        };
        assert!(message.contains("\"client auth\" only"), "{message}");
    }
}

#[test]
fn a_request_without_user_is_denied() {
    let mut csr = request(SECOND);
    csr.spec.username = None;
    assert!(matches!(step(&csr, now()), Step::Deny(_)));
}
