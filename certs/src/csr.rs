//! The proxy's side: a fresh key, in memory only, and a CSR naming the identity it asks for.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

use crate::SpiffeId;

/// A key the proxy generated for itself and the CSR to send with its token.
#[derive(Debug)]
pub struct KeyAndCsr {
    pub key: KeyPair,
    pub csr_der: Vec<u8>,
}

/// Generates an ECDSA P-256 key and a CSR for `id`.
pub fn new_key_and_csr(id: &SpiffeId) -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        csr_der: csr.der().to_vec(),
        key,
    })
}
