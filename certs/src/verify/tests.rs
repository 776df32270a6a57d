//! Real TLS 1.3 handshakes between rustls endpoints, driven in memory.

use std::time::Duration;

use rustls::{
    pki_types::{PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, ServerConfig, ServerConnection,
};
use time::OffsetDateTime;

use super::*;
use crate::{new_key_and_csr, Ca};

const DAY: Duration = Duration::from_secs(24 * 3600);
const TD: &str = "cluster.local";

struct Pki {
    anchor: Ca,
    issuer: Ca,
}

impl Pki {
    /// Anchor and issuer made a week ago, so certificates of the past few days can be signed.
    fn new() -> Self {
        let then = OffsetDateTime::now_utc() - 7 * DAY;
        let anchor = Ca::new_anchor(TD, 365 * DAY, then).expect("anchor");
        let issuer = anchor.new_issuer(TD, 30 * DAY, then).expect("issuer");
        Self { anchor, issuer }
    }

    fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(self.anchor.cert_pem()).expect("bundle")
    }

    /// A workload's chain and key, signed at `at` for `lifetime`.
    fn workload(&self, ns: &str, sa: &str, at: OffsetDateTime, lifetime: Duration) -> Workload {
        let id = SpiffeId::new(TD, ns, sa).expect("id");
        let req = new_key_and_csr(&id).expect("csr");
        let signed = self
            .issuer
            .sign_csr(&req.csr_der, &id, lifetime, at)
            .expect("signed");
        Workload {
            chain: signed
                .chain_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key: PrivateKeyDer::Pkcs8(req.key.serialize_der().into()),
        }
    }

    fn current(&self, ns: &str, sa: &str) -> Workload {
        self.workload(ns, sa, OffsetDateTime::now_utc(), DAY)
    }
}

struct Workload {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server(bundle: TrustBundle, me: Workload) -> ServerConfig {
    let p = provider();
    ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(bundle, TD, &p)))
        .with_single_cert(me.chain, me.key)
        .expect("server config")
}

fn client(bundle: TrustBundle, expected: &str, me: Workload) -> ClientConfig {
    let p = provider();
    let expected = expected.parse().expect("expected id");
    ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundle, expected, &p)))
        .with_client_auth_cert(me.chain, me.key)
        .expect("client config")
}

/// Runs the handshake to the end; the client's identity as the server saw it.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
) -> Result<Option<SpiffeId>, rustls::Error> {
    let name = ServerName::try_from("mesh.weft.dev").expect("name");
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..16 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).expect("client output");
        s.read_tls(&mut buf.as_slice()).expect("server input");
        s.process_new_packets()?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).expect("server output");
        c.read_tls(&mut buf.as_slice()).expect("client input");
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            let seen = s
                .peer_certificates()
                .and_then(|certs| peer_identity(&certs[0]));
            return Ok(seen);
        }
    }
    panic!("handshake did not finish in 16 rounds");
}

#[test]
fn mutual_tls_with_the_expected_identities() {
    let pki = Pki::new();
    let seen = handshake(
        client(
            pki.bundle(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            pki.current("web", "frontend"),
        ),
        server(pki.bundle(), pki.current("shop", "orders")),
    )
    .expect("handshake");
    assert_eq!(
        seen.map(|id| id.to_string()).as_deref(),
        Some("spiffe://cluster.local/ns/web/sa/frontend")
    );
}

#[test]
fn a_server_with_another_identity_is_refused() {
    let pki = Pki::new();
    let err = handshake(
        client(
            pki.bundle(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            pki.current("web", "frontend"),
        ),
        server(pki.bundle(), pki.current("shop", "payments")),
    )
    .expect_err("wrong identity");
    let msg = err.to_string();
    assert!(
        msg.contains("spiffe://cluster.local/ns/shop/sa/payments")
            && msg.contains("SpiffeId(spiffe://cluster.local/ns/shop/sa/orders)"),
        "{msg}"
    );
}

#[test]
fn a_peer_from_another_trust_anchor_is_refused_both_ways() {
    let ours = Pki::new();
    let theirs = Pki::new();
    let err = handshake(
        client(
            ours.bundle(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            ours.current("web", "frontend"),
        ),
        server(ours.bundle(), theirs.current("shop", "orders")),
    )
    .expect_err("foreign server");
    // Test PKIs share subject names, so webpki may find a same-named anchor whose signature does
    // not match (BadSignature) rather than no anchor at all: both are refusals.
    assert!(is_untrusted(&err), "{err:?}");

    let err = handshake(
        client(
            ours.bundle(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            theirs.current("web", "frontend"),
        ),
        server(ours.bundle(), ours.current("shop", "orders")),
    )
    .expect_err("foreign client");
    assert!(is_untrusted(&err), "{err:?}");
}

fn is_untrusted(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        )
    )
}

#[test]
fn an_expired_peer_is_refused() {
    let pki = Pki::new();
    let long_ago = OffsetDateTime::now_utc() - 3 * DAY;
    let err = handshake(
        client(
            pki.bundle(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            pki.current("web", "frontend"),
        ),
        server(pki.bundle(), pki.workload("shop", "orders", long_ago, DAY)),
    )
    .expect_err("expired");
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Expired)
    );
}

#[test]
fn anchors_rotate_through_a_bundle_holding_both() {
    let old = Pki::new();
    let new = Pki::new();
    let both = TrustBundle::from_pem(&format!(
        "{}{}",
        old.anchor.cert_pem(),
        new.anchor.cert_pem()
    ))
    .expect("bundle");
    assert_eq!(both.len(), 2);
    // Mid-rotation: a client on the old anchor's certificate, a server already on the new one,
    // both trusting both anchors.
    let seen = handshake(
        client(
            both.clone(),
            "spiffe://cluster.local/ns/shop/sa/orders",
            old.current("web", "frontend"),
        ),
        server(both, new.current("shop", "orders")),
    )
    .expect("handshake across anchors");
    assert!(seen.is_some());
}

#[test]
fn bundles_must_hold_anchors() {
    assert!(matches!(TrustBundle::from_pem(""), Err(BundleError::Empty)));
    assert!(matches!(
        TrustBundle::from_pem("not pem"),
        Err(BundleError::Empty)
    ));
    let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TrustBundle::from_pem(bad),
        Err(BundleError::Anchor { index: 0, .. })
    ));
}

#[test]
fn verify_workload_returns_the_identity_of_a_good_chain() {
    let pki = Pki::new();
    let w = pki.current("shop", "web");
    let id = pki
        .bundle()
        .verify_workload(&w.chain, UnixTime::now(), &provider())
        .expect("verified");
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
}

#[test]
fn verify_workload_refuses_other_anchors_expiry_and_empty_chains() {
    let pki = Pki::new();
    let other = Pki::new();
    let w = pki.current("shop", "web");
    let err = other
        .bundle()
        .verify_workload(&w.chain, UnixTime::now(), &provider())
        .expect_err("foreign anchor");
    // Both PKIs use the same names, so webpki finds a candidate issuer whose signature fails.
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err}"
    );

    let old = pki.workload(
        "shop",
        "web",
        OffsetDateTime::now_utc() - 3 * DAY,
        Duration::from_secs(3600),
    );
    let err = pki
        .bundle()
        .verify_workload(&old.chain, UnixTime::now(), &provider())
        .expect_err("expired");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Expired)
        ),
        "{err}"
    );

    assert!(pki
        .bundle()
        .verify_workload(&[], UnixTime::now(), &provider())
        .is_err());
}

#[test]
fn the_store_presents_the_latest_certificate() {
    let pki = Pki::new();
    let store = crate::CertStore::new();
    assert!(store.current().is_none());
    assert!(!rustls::client::ResolvesClientCert::has_certs(&*store));
    for sa in ["first", "second"] {
        let id = SpiffeId::new(TD, "ns", sa).expect("id");
        let req = new_key_and_csr(&id).expect("csr");
        let signed = pki
            .issuer
            .sign_csr(&req.csr_der, &id, DAY, OffsetDateTime::now_utc())
            .expect("signed");
        store.store(crate::certified_key(&signed.chain_der, &req.key, &provider()).expect("key"));
        let current = store.current().expect("stored");
        assert_eq!(
            peer_identity(current.end_entity_cert().expect("leaf")),
            Some(id)
        );
    }
}
