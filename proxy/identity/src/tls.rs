//! The rustls configs of the mesh hop.
//!
//! Both ends present the proxy's current certificate from one [`CertStore`], so a renewal
//! reaches every later handshake at once without touching live connections. TLS 1.3 only;
//! ALPN [`MESH_ALPN`] or [`MESH_HTTP1_ALPN`] marks mesh traffic and says what the connection
//! carries; no SNI is sent (the peer's identity is checked from its certificate, and SNI would
//! name it in the clear); session resumption is off, so every connection checks the peer's
//! current certificate (mesh connections are long-lived and pooled, so full handshakes are
//! rare).
//!
//! Cipher suites: [`MESH_CIPHER_SUITES`], AES-128-GCM first, then ChaCha20-Poly1305. Both ends
//! are Weft proxies, so the mesh need not offer what a browser would: rustls's default puts
//! AES-256-GCM with SHA-384 first, whose transcript hash and key schedule run SHA-512 in
//! software on CPUs whose SHA extensions cover only SHA-256, and whose 14 AES rounds cost every
//! record more than AES-128's 10 (`BENCHMARKS.md`, "the mesh's cipher suite"). AES-128 keeps
//! 128-bit security, TLS 1.3's mandatory suite; ChaCha20 serves CPUs without AES instructions
//! (Linkerd's proxy offers only ChaCha20-Poly1305).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rustls::{
    client::Resumption, crypto::CryptoProvider, server::NoServerSessionStorage, CipherSuite,
    ClientConfig, ServerConfig,
};
use weft_certs::{CertStore, SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier, TrustBundle};

/// The ALPN protocol of the shared connection to a peer proxy: HTTP/2, carrying the apps'
/// HTTP/2, opaque TCP and upgrades (and their HTTP/1 when `WEFT_MESH_HTTP1_UPGRADE` is on).
pub const MESH_ALPN: &[u8] = b"weft.dev/h2";

/// The ALPN protocol of a pooled connection to a peer proxy that carries the apps' HTTP/1, one
/// request at a time. Offered before [`MESH_ALPN`], so a peer that predates it answers HTTP/2
/// and the caller carries HTTP/1 there instead.
pub const MESH_HTTP1_ALPN: &[u8] = b"weft.dev/h1";

/// The mesh hop's TLS 1.3 cipher suites, most preferred first (a rustls server follows the
/// client's order, and both ends offer this one).
pub const MESH_CIPHER_SUITES: [CipherSuite; 2] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

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
    clients: Mutex<HashMap<SpiffeId, ClientConfigs>>,
}

/// The client configs toward one expected peer, by what the connection will carry.
#[derive(Clone, Debug)]
pub struct ClientConfigs {
    /// Offers [`MESH_ALPN`] only: the shared HTTP/2 connection.
    pub http2: Arc<ClientConfig>,
    /// Offers [`MESH_HTTP1_ALPN`], then [`MESH_ALPN`]: a pooled HTTP/1 connection, or HTTP/2
    /// from a peer without HTTP/1.
    pub http1: Arc<ClientConfig>,
}

impl MeshTls {
    /// Configs for `id`, trusting `bundle`, presenting whatever `store` holds, with `provider`'s
    /// cryptography limited to [`MESH_CIPHER_SUITES`] (an error if it has none of them).
    pub fn new(
        id: SpiffeId,
        bundle: TrustBundle,
        provider: Arc<CryptoProvider>,
        store: Arc<CertStore>,
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(mesh_provider(&provider)?);
        let verifier = SpiffeClientVerifier::new(bundle.clone(), id.trust_domain(), &provider);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(store.clone());
        // The server's order decides: a caller offering both wants HTTP/1.
        server.alpn_protocols = vec![MESH_HTTP1_ALPN.to_vec(), MESH_ALPN.to_vec()];
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

    /// The outbound side's shared HTTP/2 connection toward a peer that must be `expected`.
    pub fn client_config(&self, expected: &SpiffeId) -> Result<Arc<ClientConfig>, rustls::Error> {
        Ok(self.client_configs(expected)?.http2)
    }

    /// The outbound side toward a peer that must be `expected`, for each kind of connection.
    /// Built once per identity.
    pub fn client_configs(&self, expected: &SpiffeId) -> Result<ClientConfigs, rustls::Error> {
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
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        let mut http1 = config.clone();
        config.alpn_protocols = vec![MESH_ALPN.to_vec()];
        http1.alpn_protocols = vec![MESH_HTTP1_ALPN.to_vec(), MESH_ALPN.to_vec()];
        let configs = ClientConfigs {
            http2: Arc::new(config),
            http1: Arc::new(http1),
        };
        if clients.len() >= MAX_CLIENT_CONFIGS {
            clients.clear();
        }
        clients.insert(expected.clone(), configs.clone());
        Ok(configs)
    }
}

/// `provider` with only the mesh's cipher suites, in the mesh's order.
fn mesh_provider(provider: &CryptoProvider) -> Result<CryptoProvider, rustls::Error> {
    let cipher_suites: Vec<_> = MESH_CIPHER_SUITES
        .iter()
        .filter_map(|want| {
            provider
                .cipher_suites
                .iter()
                .find(|have| have.suite() == *want)
                .copied()
        })
        .collect();
    if cipher_suites.is_empty() {
        return Err(rustls::Error::General(format!(
            "the crypto provider offers none of the mesh's cipher suites {MESH_CIPHER_SUITES:?}"
        )));
    }
    Ok(CryptoProvider {
        cipher_suites,
        ..provider.clone()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::{pki_types::ServerName, ClientConnection, ServerConnection};
    use weft_certs::{certified_key, new_key_and_csr, Ca};

    use super::*;

    const TD: &str = "cluster.local";

    fn mesh_tls(issuer: &Ca, bundle: &TrustBundle, sa: &str) -> MeshTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let id = SpiffeId::new(TD, "shop", sa).expect("id");
        let req = new_key_and_csr(&id).expect("csr");
        let now = time::OffsetDateTime::now_utc();
        let signed = issuer
            .sign_csr(&req.csr_der, &id, Duration::from_secs(3600), now)
            .expect("signed");
        let store = CertStore::new();
        store.store(certified_key(&signed.chain_der, &req.key, &provider).expect("key"));
        MeshTls::new(id, bundle.clone(), provider, store).expect("tls")
    }

    /// Two proxies of one mesh, `web` and `api`, and the mesh's trust bundle.
    fn web_and_api() -> (TrustBundle, MeshTls, MeshTls) {
        let now = time::OffsetDateTime::now_utc();
        let anchor = Ca::new_anchor(TD, Duration::from_secs(86400), now).expect("anchor");
        let issuer = anchor
            .new_issuer(TD, Duration::from_secs(86400), now)
            .expect("issuer");
        let bundle = TrustBundle::from_pem(anchor.cert_pem()).expect("bundle");
        let client = mesh_tls(&issuer, &bundle, "web");
        let server = mesh_tls(&issuer, &bundle, "api");
        (bundle, client, server)
    }

    /// A whole handshake in memory; the protocol the client ends up with.
    fn negotiate(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Option<Vec<u8>> {
        handshake(client, server).0
    }

    /// A whole handshake in memory; the protocol and cipher suite both ends agreed.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> (Option<Vec<u8>>, CipherSuite) {
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let mut cc = ClientConnection::new(client, name).expect("client");
        let mut sc = ServerConnection::new(server).expect("server");
        let mut buf = Vec::new();
        for _ in 0..8 {
            if !cc.is_handshaking() && !sc.is_handshaking() {
                break;
            }
            buf.clear();
            cc.write_tls(&mut buf).expect("client write");
            sc.read_tls(&mut buf.as_slice()).expect("server read");
            sc.process_new_packets().expect("server process");
            buf.clear();
            sc.write_tls(&mut buf).expect("server write");
            cc.read_tls(&mut buf.as_slice()).expect("client read");
            cc.process_new_packets().expect("client process");
        }
        assert!(
            !cc.is_handshaking() && !sc.is_handshaking(),
            "handshake done"
        );
        assert_eq!(cc.alpn_protocol(), sc.alpn_protocol());
        let suite = cc.negotiated_cipher_suite().expect("client suite").suite();
        assert_eq!(Some(suite), sc.negotiated_cipher_suite().map(|s| s.suite()));
        (cc.alpn_protocol().map(<[u8]>::to_vec), suite)
    }

    #[test]
    fn each_kind_of_connection_gets_its_protocol_and_an_older_peer_answers_http2() {
        let (_, client, server) = web_and_api();
        let configs = client.client_configs(server.id()).expect("configs");

        let http2 = negotiate(configs.http2.clone(), server.server_config());
        assert_eq!(http2.as_deref(), Some(MESH_ALPN));
        let http1 = negotiate(configs.http1.clone(), server.server_config());
        assert_eq!(http1.as_deref(), Some(MESH_HTTP1_ALPN));

        // A proxy from before MESH_HTTP1_ALPN offered only HTTP/2.
        let mut older = (*server.server_config()).clone();
        older.alpn_protocols = vec![MESH_ALPN.to_vec()];
        let fallback = negotiate(configs.http1, Arc::new(older));
        assert_eq!(fallback.as_deref(), Some(MESH_ALPN));

        // Built once per identity.
        let again = client.client_configs(server.id()).expect("configs");
        assert!(Arc::ptr_eq(&again.http2, &configs.http2));
        assert!(Arc::ptr_eq(
            &client.client_config(server.id()).expect("config"),
            &configs.http2
        ));
    }

    #[test]
    fn the_mesh_agrees_on_aes_128_gcm_with_itself_and_with_a_peer_offering_every_suite() {
        let (bundle, client, server) = web_and_api();
        let ours = client.client_config(server.id()).expect("config");
        let (_, suite) = handshake(ours.clone(), server.server_config());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);

        // A peer with rustls's default provider (AES-256-GCM first), as proxies were before the
        // mesh chose its suites: it still meets this proxy on AES-128-GCM, either way round.
        let every = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            every.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the default this test stands in for"
        );
        let old_server = ServerConfig::builder_with_provider(every.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
                bundle.clone(),
                server.id().trust_domain(),
                &every,
            )))
            .with_cert_resolver(server.store().clone());
        let (_, suite) = handshake(ours, Arc::new(old_server));
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut old_client = ClientConfig::builder_with_provider(every.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
                bundle.clone(),
                server.id().clone(),
                &every,
            )))
            .with_client_cert_resolver(client.store().clone());
        old_client.enable_sni = false;
        old_client.alpn_protocols = vec![MESH_ALPN.to_vec()];
        let (alpn, suite) = handshake(Arc::new(old_client), server.server_config());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(alpn.as_deref(), Some(MESH_ALPN));

        // A provider with none of the mesh's suites is refused, by name.
        let mut aes256_only = rustls::crypto::ring::default_provider();
        aes256_only
            .cipher_suites
            .retain(|s| s.suite() == CipherSuite::TLS13_AES_256_GCM_SHA384);
        let err = MeshTls::new(
            client.id().clone(),
            bundle,
            Arc::new(aes256_only),
            client.store().clone(),
        )
        .expect_err("no mesh suite");
        assert!(
            err.to_string().contains("TLS13_AES_128_GCM_SHA256"),
            "{err}"
        );
    }
}
