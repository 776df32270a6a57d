//! The rustls configs of the mesh hop.
//!
//! Both ends present the proxy's current certificate from one [`CertStore`], so a renewal
//! reaches every later handshake at once without touching live connections. TLS 1.3 only;
//! ALPN [`MESH_ALPN`] marks mesh traffic; no SNI is sent (the peer's identity is checked from
//! its certificate, and SNI would name it in the clear); session resumption is off, so every
//! connection checks the peer's current certificate (mesh connections are long-lived and few,
//! one per peer, so full handshakes cost little).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rustls::{
    client::Resumption, crypto::CryptoProvider, server::NoServerSessionStorage, ClientConfig,
    ServerConfig,
};
use weft_certs::{CertStore, SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier, TrustBundle};

/// The ALPN protocol a proxy offers to a peer proxy: HTTP/2 between proxies, carrying the
/// apps' HTTP/1, HTTP/2 and opaque TCP.
pub const MESH_ALPN: &[u8] = b"weft.dev/h2";

/// Most client configs kept, one per expected peer identity, before the cache starts over.
const MAX_CLIENT_CONFIGS: usize = 4096;

/// The proxy's identity and trust, and the TLS configs made from them.
#[derive(Debug)]
pub struct MeshTls {
    id: SpiffeId,
    bundle: TrustBundle,
    provider: Arc<CryptoProvider>,
    store: Arc<CertStore>,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<SpiffeId, Arc<ClientConfig>>>,
}

impl MeshTls {
    /// Configs for `id`, trusting `bundle`, presenting whatever `store` holds.
    pub fn new(
        id: SpiffeId,
        bundle: TrustBundle,
        provider: Arc<CryptoProvider>,
        store: Arc<CertStore>,
    ) -> Result<Self, rustls::Error> {
        let verifier = SpiffeClientVerifier::new(bundle.clone(), id.trust_domain(), &provider);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(store.clone());
        server.alpn_protocols = vec![MESH_ALPN.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(Self {
            id,
            bundle,
            provider,
            store,
            server: Arc::new(server),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// This proxy's identity.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Where the current certificate lives.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// The trust bundle.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The inbound side: requires a client certificate from this trust domain.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The outbound side toward a peer that must be `expected`. Built once per identity.
    pub fn client_config(&self, expected: &SpiffeId) -> Result<Arc<ClientConfig>, rustls::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(expected) {
            return Ok(c.clone());
        }
        let verifier =
            SpiffeServerVerifier::new(self.bundle.clone(), expected.clone(), &self.provider);
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(self.store.clone());
        config.alpn_protocols = vec![MESH_ALPN.to_vec()];
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        let config = Arc::new(config);
        if clients.len() >= MAX_CLIENT_CONFIGS {
            clients.clear();
        }
        clients.insert(expected.clone(), config.clone());
        Ok(config)
    }
}
