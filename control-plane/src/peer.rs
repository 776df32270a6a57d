//! Who is calling: the SPIFFE ID of the client certificate a caller presented on its gRPC
//! connection, when it presented one that the current anchors accept.
//!
//! The gRPC port asks every client for a certificate and requires none: a proxy asking for
//! its first certificate has none and proves itself with its token. A certificate presented
//! is checked after the handshake, not in it: its chain against the anchors in force (they
//! rotate without a restart) for client use, and its SPIFFE ID's trust domain. A certificate
//! that fails (expired, say, after a long outage) does not fail the handshake either: that
//! proxy must still reach `Certify` to renew it; its connection is merely unauthenticated.
//! The handshake itself checks that the client holds the certificate's key (the TLS 1.3
//! CertificateVerify signature), so an identity taken from a chain that verifies is proven.
//!
//! Services that depend on who asks (routes: consumer routes apply to clients of their own
//! namespace) read [`PeerIdentity`] from the request's extensions; none trusts a namespace a
//! request names.

use std::sync::Arc;

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use weft_certs::SpiffeId;

use crate::issuer::IssuerSource;

/// The authenticated identity of the caller of a request, in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub SpiffeId);

/// A client verifier that asks for a certificate, requires none, and leaves the chain to
/// [`Identify`] after the handshake. It does check the handshake signature, which proves the
/// client holds the presented certificate's key.
#[derive(Debug)]
pub(crate) struct OfferClientAuth {
    provider: Arc<CryptoProvider>,
}

impl OfferClientAuth {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for OfferClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Checked after the handshake by `Identify`, against the anchors in force then; a
        // chain that fails leaves the connection unauthenticated rather than refused.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Turns a presented chain into an identity, against the anchors in force.
#[derive(Clone, Debug)]
pub struct Identify {
    issuer: Arc<IssuerSource>,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
}

impl Identify {
    pub fn new(
        issuer: Arc<IssuerSource>,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            issuer,
            trust_domain: trust_domain.to_string(),
            provider,
        }
    }

    /// The identity `chain` (leaf first) proves now, or why it proves none.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Result<PeerIdentity, String> {
        let anchors = &self.issuer.current().anchors;
        let id = anchors
            .verify_workload(chain, UnixTime::now(), &self.provider)
            .map_err(|e| e.to_string())?;
        if id.trust_domain() != self.trust_domain {
            return Err(format!(
                "{id} is not an identity of trust domain {}",
                self.trust_domain
            ));
        }
        Ok(PeerIdentity(id))
    }
}
