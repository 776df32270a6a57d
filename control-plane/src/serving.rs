//! The control plane's own certificate, for its gRPC port: signed by its own issuer for
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, renewed at 70 % of its life
//! and whenever the issuer changes. Proxies check it against their anchors and the identity
//! they expect for the control plane.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rustls::{crypto::CryptoProvider, ServerConfig};
use time::OffsetDateTime;
use weft_certs::{certified_key, new_key_and_csr, renew::renew_at, CertStore, SpiffeId};

use crate::{issuer::Issuer, peer::OfferClientAuth};

/// Why a serving certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("generating a key and CSR for {id}: {source}")]
    Key {
        id: SpiffeId,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing {id} with the issuer: {source}; is the issuer valid now?")]
    Sign {
        id: SpiffeId,
        #[source]
        source: Box<weft_certs::CsrError>,
    },
    #[error("the signed certificate and its key are not usable for TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// The control plane's serving certificate and when to renew it.
#[derive(Debug)]
pub struct ServingCert {
    id: SpiffeId,
    lifetime: Duration,
    provider: Arc<CryptoProvider>,
    store: Arc<CertStore>,
    renew_at: Mutex<SystemTime>,
}

impl ServingCert {
    /// Issues the first certificate from `issuer`.
    pub fn new(
        id: SpiffeId,
        lifetime: Duration,
        provider: Arc<CryptoProvider>,
        issuer: &Issuer,
    ) -> Result<Self, ServingError> {
        let this = Self {
            id,
            lifetime,
            provider,
            store: CertStore::new(),
            renew_at: Mutex::new(SystemTime::UNIX_EPOCH),
        };
        this.issue(issuer)?;
        Ok(this)
    }

    /// Signs a fresh key for our identity and swaps it in.
    pub fn issue(&self, issuer: &Issuer) -> Result<(), ServingError> {
        let req = new_key_and_csr(&self.id).map_err(|source| ServingError::Key {
            id: self.id.clone(),
            source,
        })?;
        let signed = issuer
            .ca
            .sign_csr(
                &req.csr_der,
                &self.id,
                self.lifetime,
                OffsetDateTime::now_utc(),
            )
            .map_err(|source| ServingError::Sign {
                id: self.id.clone(),
                source: Box::new(source),
            })?;
        let key = certified_key(&signed.chain_der, &req.key, &self.provider)
            .map_err(ServingError::Tls)?;
        self.store.store(key);
        // From now, not from not_before: that is backdated for clock skew, which would put a
        // short certificate's renewal in the past.
        let now = SystemTime::now();
        let when = renew_at(now, signed.not_after.into(), rand::random());
        *self.renew_at.lock().unwrap_or_else(|p| p.into_inner()) = when;
        tracing::info!(identity = %self.id, not_after = %signed.not_after, "serving certificate issued");
        Ok(())
    }

    /// Whether the certificate is due for renewal.
    pub fn due(&self) -> bool {
        SystemTime::now() >= *self.renew_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// TLS 1.3 with ALPN `h2`. A client certificate is asked for, not required: a proxy
    /// asking for its first certificate has none and proves itself with its token; one that
    /// has a certificate presents it, and [`crate::peer`] checks it after the handshake.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ServingError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ServingError::Tls)?
            .with_client_cert_verifier(Arc::new(OfferClientAuth::new(self.provider.clone())))
            .with_cert_resolver(self.store.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The identity served.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }
}
