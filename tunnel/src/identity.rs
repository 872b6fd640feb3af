//! The manager's certificate authority and the credentials it hands out.
//!
//! The CA lives only in the manager's memory: a restarted manager makes a new one and publishes
//! fresh client credentials, which invalidates every credential issued before.
//!
//! A client certificate names its holder in the subject: the common name is a free-form name
//! (for logs), the organizational unit is the [`Role`]. Only the CA can sign one, so the role is
//! as trustworthy as the CA key.

use std::collections::BTreeMap;
use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[cfg(test)]
mod tests;

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
    /// The name the credential was issued for (for logs; not unique).
    pub name: String,
}

impl Peer {
    /// Reads role and name from a DER certificate issued by [`Identity::issue_client`].
    ///
    /// Does not verify anything: call it only on a certificate that TLS has verified.
    pub fn from_certificate(der: &[u8]) -> Option<Peer> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let role = Role::from_unit(&only(subject.iter_organizational_unit())?)?;
        let name = only(subject.iter_common_name())?;
        Some(Peer { role, name })
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

/// The manager's CA (kept in memory) and its server certificate.
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

    /// Issues a credential for a client or an agent, signed by this CA.
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
