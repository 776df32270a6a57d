//! The CPU cost of one full mutual TLS 1.3 handshake of the mesh hop, both ends in one thread,
//! in memory: what a new peer connection costs (the configs, verifiers and P-256 certificates
//! the proxies use; no network). 1 / time = new mTLS connections per second per core, for the
//! two ends together.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::{pki_types::ServerName, ClientConnection, ServerConnection};
use weft_certs::{certified_key, new_key_and_csr, Ca, CertStore, SpiffeId, TrustBundle};
use weft_proxy_identity::MeshTls;

const TD: &str = "cluster.local";

fn mesh_tls(issuer: &Ca, bundle: &TrustBundle, sa: &str) -> MeshTls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let id = SpiffeId::new(TD, "bench", sa).expect("id");
    let req = new_key_and_csr(&id).expect("csr");
    let signed = issuer
        .sign_csr(
            &req.csr_der,
            &id,
            Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .expect("signed");
    let store = CertStore::new();
    store.store(certified_key(&signed.chain_der, &req.key, &provider).expect("key"));
    MeshTls::new(id, bundle.clone(), provider, store).expect("tls")
}

fn handshake(c: &mut Criterion) {
    let now = time::OffsetDateTime::now_utc();
    let anchor = Ca::new_anchor(TD, Duration::from_secs(86400), now).expect("anchor");
    let issuer = anchor
        .new_issuer(TD, Duration::from_secs(86400), now)
        .expect("issuer");
    let bundle = TrustBundle::from_pem(anchor.cert_pem()).expect("bundle");
    let client = mesh_tls(&issuer, &bundle, "client");
    let server = mesh_tls(&issuer, &bundle, "server");
    let client_config = client.client_config(server.id()).expect("client config");
    let server_config = server.server_config();
    let name = ServerName::try_from("127.0.0.1").expect("name");

    c.bench_function("mtls_handshake", |b| {
        b.iter(|| {
            let mut cc =
                ClientConnection::new(client_config.clone(), name.clone()).expect("client");
            let mut sc = ServerConnection::new(server_config.clone()).expect("server");
            let mut buf = Vec::with_capacity(8192);
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
        })
    });
}

criterion_group!(benches, handshake);
criterion_main!(benches);
