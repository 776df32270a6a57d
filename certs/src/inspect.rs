//! Reading what a certificate says: identity, issuer, validity.

use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::SpiffeId;

/// What `weftctl certs inspect` and the verifiers need from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The URI SANs that are SPIFFE IDs Weft can read.
    pub spiffe_ids: Vec<SpiffeId>,
    pub subject: String,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// DER of the SubjectPublicKeyInfo's key bits.
    pub public_key_der: Vec<u8>,
}

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a readable X.509 certificate: {0}")]
pub struct InspectError(String);

/// Parses a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, InspectError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| InspectError(e.to_string()))?;
    let spiffe_ids = cert
        .subject_alternative_name()
        .map_err(|e| InspectError(e.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => uri.parse::<SpiffeId>().ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        spiffe_ids,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        public_key_der: cert.public_key().subject_public_key.data.to_vec(),
    })
}
