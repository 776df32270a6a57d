//! Trust anchors and issuers (intermediate CAs), and signing workload certificates.
//!
//! The issuer signs only what the caller proved: the certificate is built fresh from the proven
//! SPIFFE ID, never from what the CSR asks for. From the CSR it takes only the public key, after
//! checking the CSR's own signature (the requester holds the key), that the key is ECDSA P-256,
//! and that any identity the CSR names is the proven one.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use crate::SpiffeId;

/// Tolerated clock skew between the CA and the peers that check its certificates: each
/// certificate is valid from this long before it was signed.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A CA: a trust anchor (self-signed root) or an issuer (intermediate signed by an anchor).
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    cert_pem: String,
    cert_der: Vec<u8>,
}

/// Why a CA could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating or encoding the certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the key is not ECDSA P-256")]
    KeyAlgorithm,
    #[error("the certificate is not a CA (basic constraints CA:false or missing)")]
    NotCa,
    #[error("the key does not belong to the certificate")]
    KeyMismatch,
}

/// Why a CSR was refused. Each names what the operator or the proxy should look at.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR could not be parsed or its signature is invalid: {0}")]
    Malformed(rcgen::Error),
    #[error("the CSR's key is not ECDSA P-256")]
    KeyAlgorithm,
    #[error("the CSR asks for {asked:?}, but the caller proved {proven}")]
    IdentityMismatch { asked: String, proven: SpiffeId },
    #[error("the issuer expired at {0}; rotate the issuer")]
    IssuerExpired(OffsetDateTime),
    #[error("the issuer is not valid before {0}; is this machine's clock right?")]
    IssuerNotYetValid(OffsetDateTime),
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
}

/// A signed workload certificate and the chain a peer needs to verify it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// DER of the leaf, then of the issuer.
    pub chain_der: Vec<Vec<u8>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Signed {
    /// The chain as PEM, leaf first: what a proxy presents and `weftctl certs inspect` reads.
    pub fn chain_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .chain_der
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
            .collect();
        pem::encode_many(&blocks)
    }
}

impl Ca {
    /// A new self-signed trust anchor for `trust_domain`, valid for `lifetime` from `now`.
    pub fn new_anchor(
        trust_domain: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Ca, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(
            &format!("Weft trust anchor for {trust_domain}"),
            BasicConstraints::Unconstrained,
            now,
            now + lifetime,
        );
        let cert = params.self_signed(&key)?;
        Ok(Ca::made(cert, params, key))
    }

    /// A new issuer signed by this anchor: it may sign workload certificates only (path length
    /// 0), and never outlives the anchor.
    pub fn new_issuer(
        &self,
        trust_domain: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Ca, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let not_after = (now + lifetime).min(self.not_after);
        let params = ca_params(
            &format!("Weft issuer for {trust_domain}"),
            BasicConstraints::Constrained(0),
            now,
            not_after,
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Ca::made(cert, params, key))
    }

    fn made(cert: rcgen::Certificate, params: CertificateParams, key: KeyPair) -> Ca {
        Ca {
            not_before: params.not_before,
            not_after: params.not_after,
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Loads a CA from its certificate and private key (PEM), as mounted from a Secret.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::KeyAlgorithm);
        }
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        let info = crate::inspect(&der).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        if !info.is_ca {
            return Err(CaError::NotCa);
        }
        if info.public_key_der != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        Ok(Ca {
            issuer: Issuer::from_ca_cert_der(&der, key)?,
            not_before: info.not_before,
            not_after: info.not_after,
            cert_pem: cert_pem.to_string(),
            cert_der: der.to_vec(),
        })
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key, PEM (PKCS#8). Write it with owner-only permissions.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// When the CA itself expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Signs a workload certificate for `proven` (the identity the caller's token proved) with
    /// the key of `csr_der`, valid from `now` for `lifetime`, clamped to this issuer's expiry.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        proven: &SpiffeId,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Signed, CsrError> {
        if now >= self.not_after {
            return Err(CsrError::IssuerExpired(self.not_after));
        }
        if now + CLOCK_SKEW < self.not_before {
            return Err(CsrError::IssuerNotYetValid(self.not_before));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CsrError::Malformed)?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CsrError::KeyAlgorithm);
        }
        let proven_uri = proven.to_string();
        for san in &csr.params.subject_alt_names {
            let asked = match san {
                SanType::URI(uri) => uri.as_str().to_string(),
                other => format!("{other:?}"),
            };
            if asked != proven_uri {
                return Err(CsrError::IdentityMismatch {
                    asked,
                    proven: proven.clone(),
                });
            }
        }
        let not_before = (now - CLOCK_SKEW).max(self.not_before);
        let not_after = (now + lifetime).min(self.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(proven_uri.try_into().map_err(CsrError::Sign)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CsrError::Sign)?;
        Ok(Signed {
            chain_der: vec![leaf.der().to_vec(), self.cert_der.clone()],
            not_before,
            not_after,
        })
    }
}

fn ca_params(
    common_name: &str,
    constraints: BasicConstraints,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params
}

/// 16 random bytes, top bit clear: unique per issuer (RFC 5280 §4.1.2.2) and positive.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}
