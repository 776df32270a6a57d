//! Checking a peer: its chain against a bundle of trust anchors, then its SPIFFE ID.
//!
//! rustls-webpki builds and checks the chain (signatures, validity, CA constraints, the server or
//! client EKU); this module adds what webpki does not know about: the peer's identity is a
//! SPIFFE ID in a URI SAN, not a DNS name. The bundle may hold several anchors, so an anchor or
//! issuer rotates by adding the new anchor to every bundle before issuing from it.

use std::{fmt, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{
        verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
    },
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use webpki::{EndEntityCert, KeyUsage};

use crate::{inspect, SpiffeId};

/// The trust anchors a proxy accepts peers under.
#[derive(Clone)]
pub struct TrustBundle {
    anchors: Arc<Vec<rustls::pki_types::TrustAnchor<'static>>>,
}

/// Why a trust bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("certificate {index} of the trust bundle is not usable as a trust anchor: {reason}")]
    Anchor { index: usize, reason: String },
    #[error("the trust bundle holds no certificate")]
    Empty,
}

impl TrustBundle {
    /// Every `CERTIFICATE` block of `pem` becomes an anchor.
    pub fn from_pem(pem: &str) -> Result<Self, BundleError> {
        let mut anchors = Vec::new();
        for (index, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let der = der.map_err(|e| BundleError::Anchor {
                index,
                reason: e.to_string(),
            })?;
            let anchor =
                webpki::anchor_from_trusted_cert(&der).map_err(|e| BundleError::Anchor {
                    index,
                    reason: e.to_string(),
                })?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(BundleError::Empty);
        }
        Ok(Self {
            anchors: Arc::new(anchors),
        })
    }

    /// How many anchors the bundle holds.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the bundle is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Checks a workload's chain (leaf first) as a peer would, for both server and client use,
    /// and returns its SPIFFE ID. The control plane uses this to refuse an issuer whose
    /// certificates no proxy would accept.
    pub fn verify_workload(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<SpiffeId, rustls::Error> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let algorithms = &provider.signature_verification_algorithms;
        for usage in [KeyUsage::server_auth(), KeyUsage::client_auth()] {
            verify_chain(self, algorithms, leaf, intermediates, now, usage)?;
        }
        peer_identity(leaf).ok_or_else(|| {
            identity_error(IdentityError::NoSpiffeId {
                presented: presented(leaf),
            })
        })
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

/// The peer presented a valid chain for someone else.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("peer presented {presented:?}, expected {expected}")]
    Mismatch {
        expected: SpiffeId,
        presented: Vec<String>,
    },
    #[error("certificate carries {presented:?}, not exactly one SPIFFE ID")]
    NoSpiffeId { presented: Vec<String> },
    #[error("peer presented {presented:?}, not an identity of trust domain {trust_domain}")]
    ForeignTrustDomain {
        trust_domain: String,
        presented: Vec<String>,
    },
}

/// The SPIFFE ID of a verified peer certificate, if it carries exactly one.
pub fn peer_identity(end_entity: &CertificateDer<'_>) -> Option<SpiffeId> {
    let ids = inspect(end_entity).ok()?.spiffe_ids;
    match <[SpiffeId; 1]>::try_from(ids) {
        Ok([id]) => Some(id),
        Err(_) => None,
    }
}

/// A client-side verifier: the server must chain to the bundle and be exactly `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(bundle: TrustBundle, expected: SpiffeId, provider: &CryptoProvider) -> Self {
        Self {
            bundle,
            expected,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.bundle,
            &self.algorithms,
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
        )?;
        match peer_identity(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(identity_error(IdentityError::Mismatch {
                expected: self.expected.clone(),
                presented: presented(end_entity),
            })),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server-side verifier: the client must present a certificate chaining to the bundle, with
/// an identity in `trust_domain`; which identities may call what is policy's business, later.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
    trust_domain: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    pub fn new(bundle: TrustBundle, trust_domain: &str, provider: &CryptoProvider) -> Self {
        Self {
            bundle,
            trust_domain: trust_domain.to_string(),
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_chain(
            &self.bundle,
            &self.algorithms,
            end_entity,
            intermediates,
            now,
            KeyUsage::client_auth(),
        )?;
        match peer_identity(end_entity) {
            Some(id) if id.trust_domain() == self.trust_domain => {
                Ok(ClientCertVerified::assertion())
            }
            _ => Err(identity_error(IdentityError::ForeignTrustDomain {
                trust_domain: self.trust_domain.clone(),
                presented: presented(end_entity),
            })),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn verify_chain(
    bundle: &TrustBundle,
    algorithms: &WebPkiSupportedAlgorithms,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: KeyUsage,
) -> Result<(), rustls::Error> {
    let cert = EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
    cert.verify_for_usage(
        algorithms.all,
        &bundle.anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(webpki_error)
}

/// webpki's verdicts as rustls certificate errors, keeping the specific ones rustls names.
fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let cert_error = match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

fn identity_error(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn presented(end_entity: &CertificateDer<'_>) -> Vec<String> {
    inspect(end_entity)
        .map(|i| i.spiffe_ids.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
