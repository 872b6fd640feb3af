//! The manager's certificate authority and the credentials it hands out.
//!
//! The CA's key is kept in a Secret only the manager reads (see the agent crate), so a restarted
//! manager keeps its CA and the credentials issued before stay valid until they expire.
//!
//! A certificate names its holder in the subject: the common name is the holder's name, the
//! organizational unit is the [`Role`]. Only the CA can sign one, so both are as trustworthy as
//! the CA key.
//!
//! - Agents get a long-lived credential per namespace ([`Identity::issue_client`]).
//! - People get a short-lived *session certificate* ([`Identity::sign_session`]) for a key pair
//!   they generated ([`SessionRequest`]): the manager signs it once the Kubernetes API server has
//!   told it who asked (a CertificateSigningRequest carries the requester's user name and groups,
//!   filled in by the API server). The common name is the Kubernetes user name; the groups go in
//!   a private, non-critical extension ([`GROUPS_OID`]), because a subject can hold only one
//!   organization in rcgen and group names may be any UTF-8. The requested subject, SANs and
//!   extensions are ignored: the manager writes the whole certificate itself.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

mod groups;
#[cfg(test)]
mod tests;

pub use groups::GROUPS_OID;

/// The DNS name in the manager's server certificate; clients check it whatever address they dial.
pub const SERVER_NAME: &str = "tether-manager";

/// Organization written into every certificate the CA issues.
const ORGANIZATION: &str = "tether";

/// How long issued certificates are valid. The CA is replaced at every manager start, so this
/// only needs to outlast the longest manager uptime.
const VALIDITY: time::Duration = time::Duration::days(10 * 365);

/// Backdating of `not_before`, for clocks that disagree a little.
const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

/// Errors from generating certificates or reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen could not generate a key or sign a certificate.
    #[error("generating a certificate failed")]
    Generate(#[source] rcgen::Error),
    /// A certificate's name cannot be used.
    #[error("invalid certificate name {0:?}: it must be non-empty")]
    InvalidName(String),
    /// A Secret's data misses one of the credential's keys.
    #[error("credential has no {0:?} entry")]
    MissingKey(&'static str),
    /// A certificate signing request does not parse, or its signature does not match its key.
    #[error("the certificate signing request is invalid")]
    BadRequest(#[source] rcgen::Error),
    /// A session certificate's lifetime is zero or too long to represent.
    #[error("invalid certificate lifetime {0:?}")]
    BadLifetime(Duration),
}

/// What a certificate's holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A workstation daemon: may open a session.
    Client,
    /// A sidecar agent: may talk to the manager, but never opens a client session.
    Agent,
}

impl Role {
    /// The organizational unit that marks this role in a certificate's subject.
    fn unit(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Agent => "agent",
        }
    }

    fn from_unit(unit: &str) -> Option<Role> {
        [Role::Client, Role::Agent]
            .into_iter()
            .find(|role| role.unit() == unit)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.unit())
    }
}

/// Who is at the other end of a connection, as its verified certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What the peer may do.
    pub role: Role,
    /// The name the credential was issued for: a client's Kubernetes user name, an agent's
    /// namespace.
    pub name: String,
    /// A client's Kubernetes groups, as the API server reported them when the certificate was
    /// requested (empty for agents).
    pub groups: Vec<String>,
}

impl Peer {
    /// Reads role, name and groups from a DER certificate issued by this module's [`Identity`].
    ///
    /// Does not verify anything: call it only on a certificate that TLS has verified. A client
    /// certificate whose groups extension is malformed names no peer.
    pub fn from_certificate(der: &[u8]) -> Option<Peer> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let role = Role::from_unit(&only(subject.iter_organizational_unit())?)?;
        let name = only(subject.iter_common_name())?;
        let groups = match cert.extensions().iter().find(|e| {
            e.oid
                .iter()
                .is_some_and(|arcs| arcs.eq(GROUPS_OID.iter().copied()))
        }) {
            Some(extension) => groups::decode(extension.value)?,
            None => Vec::new(),
        };
        Some(Peer { role, name, groups })
    }

    /// [`Peer::from_certificate`] for a PEM-encoded certificate, such as one stored in a Secret.
    pub fn from_pem(pem: &str) -> Option<Peer> {
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
        Peer::from_certificate(&der)
    }
}

/// The text of the one attribute an iterator yields; `None` if it yields none, several, or a
/// non-string.
fn only<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    let text = values.next()?.as_str().ok()?.to_owned();
    values.next().is_none().then_some(text)
}

/// The manager's CA and its server certificate. The CA key also lives in a Secret only the
/// manager reads (see `tether-manager`'s `session::secret`), so the next manager keeps the CA.
pub struct Identity {
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    ca_key_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Creates a new CA and a server certificate for [`SERVER_NAME`] signed by it.
    pub fn generate() -> Result<Identity, IdentityError> {
        crate::crypto_provider();
        let ca_key = KeyPair::generate().map_err(IdentityError::Generate)?;
        let ca_params = ca_params(&ca_key)?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(IdentityError::Generate)?;
        Self::with_ca(ca_cert.pem(), ca_cert.der().clone(), ca_params, ca_key)
    }

    /// Takes up an existing CA (a restarted manager keeps its predecessor's, so credentials
    /// already handed out stay valid) and issues a new server certificate. The CA's name is
    /// derived from its key, so the issuer rebuilt here is the one that signed `ca_pem`.
    pub fn from_ca(ca_pem: &str, ca_key_pem: &str) -> Result<Identity, IdentityError> {
        crate::crypto_provider();
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(IdentityError::Generate)?;
        use rustls_pki_types::pem::PemObject;
        let ca_der = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .next()
            .ok_or(IdentityError::MissingKey("ca.crt"))?
            .map_err(|_| IdentityError::MissingKey("ca.crt"))?;
        let ca_params = ca_params(&ca_key)?;
        Self::with_ca(ca_pem.to_owned(), ca_der, ca_params, ca_key)
    }

    fn with_ca(
        ca_pem: String,
        ca_der: CertificateDer<'static>,
        ca_params: CertificateParams,
        ca_key: KeyPair,
    ) -> Result<Identity, IdentityError> {
        let ca_key_pem = ca_key.serialize_pem();
        let ca = Issuer::new(ca_params, ca_key);

        let mut server_params = params(SERVER_NAME, None)?;
        server_params.subject_alt_names = CertificateParams::new([SERVER_NAME.to_owned()])
            .map_err(IdentityError::Generate)?
            .subject_alt_names;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (server_cert, server_key) = sign(server_params, &ca)?;

        Ok(Identity {
            ca,
            ca_pem,
            ca_key_pem,
            ca_der,
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// Issues a credential (key and certificate, valid for years) for a client or an agent,
    /// signed by this CA. The manager uses it for agents only: people get
    /// [`Identity::sign_session`] certificates.
    pub fn issue_client(&self, role: Role, name: &str) -> Result<ClientCredential, IdentityError> {
        let mut params = params(name, Some(role))?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = sign(params, &self.ca)?;
        Ok(ClientCredential {
            ca_pem: self.ca_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a session certificate for the key of `csr_pem` (a PEM certificate signing request,
    /// whose signature must match its key), naming `user` and `groups`, valid from now for
    /// `lifetime`. Nothing of the request but its public key is used. Returns the certificate
    /// as PEM.
    pub fn sign_session(
        &self,
        csr_pem: &str,
        user: &str,
        groups: &[String],
        lifetime: Duration,
    ) -> Result<String, IdentityError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(IdentityError::BadRequest)?;
        let lifetime_t = time::Duration::try_from(lifetime)
            .ok()
            .filter(|l| l.is_positive())
            .ok_or(IdentityError::BadLifetime(lifetime))?;
        let mut params = params(user, Some(Role::Client))?;
        params.not_after = time::OffsetDateTime::now_utc() + lifetime_t;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            GROUPS_OID,
            groups::encode(groups),
        )];
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.ca)
        .map_err(IdentityError::Generate)?;
        Ok(signed.pem())
    }

    /// The CA's private key (PKCS#8 PEM), for [`Identity::from_ca`] after a restart.
    pub fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    /// The CA certificate, PEM-encoded: what clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(crate) fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The server's certificate chain and key, for rustls.
    pub(crate) fn server_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.server_cert.clone()],
            PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// The CA's parameters, all derived from its key: each CA gets its own name (from its key), so
/// that a certificate of another manager's CA fails as "unknown issuer" rather than as a bad
/// signature from a namesake.
fn ca_params(ca_key: &KeyPair) -> Result<CertificateParams, IdentityError> {
    let key_id: String = CertificateParams::default()
        .key_identifier(ca_key)
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut ca_params = params(&format!("{ORGANIZATION} CA {key_id}"), None)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca_params)
}

/// Certificate parameters every certificate shares: subject, validity, key usage.
fn params(common_name: &str, role: Option<Role>) -> Result<CertificateParams, IdentityError> {
    if common_name.trim().is_empty() {
        return Err(IdentityError::InvalidName(common_name.to_owned()));
    }
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, ORGANIZATION);
    if let Some(role) = role {
        subject.push(DnType::OrganizationalUnitName, role.unit());
    }
    subject.push(DnType::CommonName, common_name);

    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Generates a key and signs a certificate for it.
fn sign(
    params: CertificateParams,
    ca: &Issuer<'static, KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), IdentityError> {
    let key = KeyPair::generate().map_err(IdentityError::Generate)?;
    let cert = params
        .signed_by(&key, ca)
        .map_err(IdentityError::Generate)?;
    Ok((cert, key))
}

/// What a client or agent needs to connect: the CA to trust and its own certificate and key,
/// all PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredential {
    /// The CA certificate that signed the manager's server certificate.
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client certificate's private key (PKCS#8).
    pub key_pem: String,
}

impl ClientCredential {
    /// Secret key of the CA certificate.
    pub const CA_KEY: &'static str = "ca.crt";
    /// Secret key of the client certificate.
    pub const CERT_KEY: &'static str = "tls.crt";
    /// Secret key of the client private key.
    pub const KEY_KEY: &'static str = "tls.key";

    /// The credential as a Kubernetes Secret's `stringData`.
    pub fn to_secret_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (Self::CA_KEY.to_owned(), self.ca_pem.clone()),
            (Self::CERT_KEY.to_owned(), self.cert_pem.clone()),
            (Self::KEY_KEY.to_owned(), self.key_pem.clone()),
        ])
    }

    /// Reads a credential back from a Secret's (decoded) data. Other keys are ignored.
    pub fn from_secret_data(data: &BTreeMap<String, String>) -> Result<Self, IdentityError> {
        let get = |key: &'static str| data.get(key).cloned().ok_or(IdentityError::MissingKey(key));
        Ok(ClientCredential {
            ca_pem: get(Self::CA_KEY)?,
            cert_pem: get(Self::CERT_KEY)?,
            key_pem: get(Self::KEY_KEY)?,
        })
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("ClientCredential")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A key pair and a certificate signing request for it: what the daemon sends (through the
/// Kubernetes API) to get a session certificate. The key never leaves the process.
pub struct SessionRequest {
    /// The request, PEM-encoded (`CERTIFICATE REQUEST`).
    pub csr_pem: String,
    key_pem: String,
}

impl SessionRequest {
    /// Generates a fresh key (ECDSA P-256) and a request for it. The request's subject is a
    /// placeholder: the manager names the certificate after the Kubernetes user who asked.
    pub fn generate() -> Result<SessionRequest, IdentityError> {
        let key = KeyPair::generate().map_err(IdentityError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tether session");
        let csr = params
            .serialize_request(&key)
            .map_err(IdentityError::Generate)?;
        Ok(SessionRequest {
            csr_pem: csr.pem().map_err(IdentityError::Generate)?,
            key_pem: key.serialize_pem(),
        })
    }

    /// The credential once the manager has signed the request: its CA (`ca_pem`, from the
    /// manager's Secret) and the certificate (`cert_pem`, from the request's status).
    pub fn into_credential(self, ca_pem: String, cert_pem: String) -> ClientCredential {
        ClientCredential {
            ca_pem,
            cert_pem,
            key_pem: self.key_pem,
        }
    }
}

impl fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("SessionRequest")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// When the first certificate in `pem` expires; `None` if it does not parse.
pub fn certificate_expiry(pem: &str) -> Option<SystemTime> {
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let seconds = cert.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}
