use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType, PKCS_ECDSA_P384_SHA384};
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).expect("valid id")
}

fn anchor_and_issuer(now: OffsetDateTime) -> (Ca, Ca) {
    let anchor = Ca::new_anchor("cluster.local", 365 * DAY, now).expect("anchor");
    let issuer = anchor
        .new_issuer("cluster.local", 30 * DAY, now)
        .expect("issuer");
    (anchor, issuer)
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).expect("certificate").1
}

#[test]
fn signs_exactly_the_proven_identity_and_the_chain_verifies() {
    let now = OffsetDateTime::now_utc();
    let (anchor, issuer) = anchor_and_issuer(now);
    let me = id("shop", "orders");
    let req = new_key_and_csr(&me).expect("csr");
    let signed = issuer
        .sign_csr(&req.csr_der, &me, DAY, now)
        .expect("signed");
    assert_eq!(signed.chain_der.len(), 2);

    let info = inspect(&signed.chain_der[0]).expect("leaf");
    assert_eq!(info.spiffe_ids, vec![me]);
    assert!(!info.is_ca);
    assert_eq!(
        info.public_key_der,
        req.key.public_key_raw(),
        "the CSR's key is certified"
    );
    assert!(info.not_after <= now + DAY && info.not_after > now + DAY - Duration::from_secs(2));

    let leaf = parse(&signed.chain_der[0]);
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let issuer_cert = parse(issuer.cert_der());
    let anchor_cert = parse(anchor.cert_der());
    leaf.verify_signature(Some(issuer_cert.public_key()))
        .expect("leaf signed by the issuer");
    issuer_cert
        .verify_signature(Some(anchor_cert.public_key()))
        .expect("issuer signed by the anchor");
    assert!(leaf
        .verify_signature(Some(anchor_cert.public_key()))
        .is_err());
    let constraints = issuer_cert
        .basic_constraints()
        .expect("bc")
        .expect("present")
        .value;
    assert_eq!(
        (constraints.ca, constraints.path_len_constraint),
        (true, Some(0))
    );
}

#[test]
fn a_token_for_one_namespace_cannot_get_another() {
    let now = OffsetDateTime::now_utc();
    let (_, issuer) = anchor_and_issuer(now);
    let req = new_key_and_csr(&id("payments", "api")).expect("csr");
    let err = issuer
        .sign_csr(&req.csr_der, &id("shop", "api"), DAY, now)
        .expect_err("mismatch");
    assert!(matches!(err, CsrError::IdentityMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("spiffe://cluster.local/ns/payments/sa/api"),
        "{err}"
    );
}

#[test]
fn the_csr_cannot_ask_for_more_than_the_identity() {
    let now = OffsetDateTime::now_utc();
    let (_, issuer) = anchor_and_issuer(now);
    let me = id("shop", "orders");
    // A CSR that asks to be a CA, for a DNS name besides its identity.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).expect("csr");
    let err = issuer
        .sign_csr(csr.der(), &me, DAY, now)
        .expect_err("extra SAN");
    assert!(matches!(err, CsrError::IdentityMismatch { .. }), "{err}");

    // Only CA:true, no SAN: signed, but as a leaf for the proven identity.
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![SanType::URI(me.to_string().try_into().expect("uri"))];
    let csr = params.serialize_request(&key).expect("csr");
    let signed = issuer.sign_csr(csr.der(), &me, DAY, now).expect("signed");
    let info = inspect(&signed.chain_der[0]).expect("leaf");
    assert!(!info.is_ca, "a CSR must not make itself a CA");
}

#[test]
fn malformed_tampered_and_wrong_key_csrs_are_refused() {
    let now = OffsetDateTime::now_utc();
    let (_, issuer) = anchor_and_issuer(now);
    let me = id("shop", "orders");
    for garbage in [&b""[..], b"\x30\x03\x02\x01\x00", b"not a csr at all"] {
        let err = issuer
            .sign_csr(garbage, &me, DAY, now)
            .expect_err("garbage");
        assert!(matches!(err, CsrError::Malformed(_)), "{err}");
    }
    let mut tampered = new_key_and_csr(&me).expect("csr").csr_der;
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let err = issuer
        .sign_csr(&tampered, &me, DAY, now)
        .expect_err("tampered");
    assert!(matches!(err, CsrError::Malformed(_)), "{err}");

    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(me.to_string().try_into().expect("uri"))];
    let csr = params.serialize_request(&p384).expect("csr");
    let err = issuer
        .sign_csr(csr.der(), &me, DAY, now)
        .expect_err("P-384");
    assert!(matches!(err, CsrError::KeyAlgorithm), "{err}");
}

#[test]
fn lifetimes_are_clamped_to_the_issuer_and_an_expired_issuer_signs_nothing() {
    let now = OffsetDateTime::now_utc();
    let anchor = Ca::new_anchor("cluster.local", 10 * DAY, now).expect("anchor");
    let issuer = anchor
        .new_issuer("cluster.local", 30 * DAY, now)
        .expect("issuer");
    assert_eq!(
        issuer.not_after(),
        anchor.not_after(),
        "an issuer never outlives its anchor"
    );
    let me = id("shop", "orders");
    let req = new_key_and_csr(&me).expect("csr");
    let signed = issuer
        .sign_csr(&req.csr_der, &me, 100 * DAY, now)
        .expect("signed");
    assert_eq!(signed.not_after, issuer.not_after());
    let err = issuer
        .sign_csr(
            &req.csr_der,
            &me,
            DAY,
            issuer.not_after() + Duration::from_secs(1),
        )
        .expect_err("expired");
    assert!(matches!(err, CsrError::IssuerExpired(_)), "{err}");
}

#[test]
fn loads_from_pem_and_checks_what_it_loads() {
    let now = OffsetDateTime::now_utc();
    let (anchor, issuer) = anchor_and_issuer(now);
    let loaded = Ca::from_pem(issuer.cert_pem(), &issuer.key_pem()).expect("load");
    let me = id("shop", "orders");
    let req = new_key_and_csr(&me).expect("csr");
    let signed = loaded
        .sign_csr(&req.csr_der, &me, DAY, now)
        .expect("signed by the loaded issuer");
    parse(&signed.chain_der[0])
        .verify_signature(Some(parse(issuer.cert_der()).public_key()))
        .expect("same key");

    let err = Ca::from_pem(issuer.cert_pem(), &anchor.key_pem()).expect_err("wrong key");
    assert!(matches!(err, CaError::KeyMismatch), "{err}");
    let leaf_pem = rcgen::CertificateParams::default()
        .self_signed(&KeyPair::generate().expect("key"))
        .expect("leaf")
        .pem();
    let err = Ca::from_pem(&leaf_pem, &anchor.key_pem()).expect_err("not a CA");
    assert!(
        matches!(err, CaError::NotCa | CaError::KeyMismatch),
        "{err}"
    );
}
