//! The certificate a process presents, swapped in place on renewal.
//!
//! rustls asks the resolver for a certificate at every handshake, so storing a new one here
//! renews without touching a connection: live connections keep the keys they agreed, new
//! handshakes get the new certificate.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rcgen::KeyPair;
use rustls::{
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    SignatureScheme,
};

/// Makes the rustls form of a certificate chain (leaf first, DER) and its key.
pub fn certified_key(
    chain_der: &[Vec<u8>],
    key: &KeyPair,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, rustls::Error> {
    let chain = chain_der
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(chain, key, provider)
}

/// Holds the current certificate; empty until the first one is stored.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertStore {
    /// An empty store: handshakes fail until a certificate is stored.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the certificate for every later handshake.
    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Some(Arc::new(key)));
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // rustls picks the scheme from the key afterwards and sends no certificate if none fits.
        let _ = sigschemes;
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}
