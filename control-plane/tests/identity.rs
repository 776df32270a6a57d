//! The identity service end to end: the real `weft-control-plane` binary on loopback, a client
//! that dials it as a proxy would (TLS 1.3, ALPN h2, the control plane's SPIFFE ID checked),
//! and, for Kubernetes mode, a fake API server answering TokenReviews.

mod support;

use std::time::Duration;

use support::{
    certify, cp_id, csr_for, encode_certify, grpc_frame, id, identity_client, raw_certify,
    tls_connect, verify_chain, ControlPlane, Pki, Tokens, TD,
};
use tonic::Code;
use weft_certs::{inspect, SpiffeId};
use weft_testkit::{assert_eventually, FakeKube, Verdict};

const SHOP_WEB: &str = "tok-shop-web-0123456789";
const PAY_API: &str = "tok-pay-api-0123456789";

const ISSUED: &str = "weft_identity_certificates_issued_total";
const ISSUER_EXPIRY: &str = "weft_identity_issuer_expiry_timestamp_seconds";
const ANCHOR_EXPIRY: &str = "weft_identity_trust_anchor_expiry_timestamp_seconds";

fn refusals(reason: &str) -> String {
    format!("weft_identity_refusals_total{{reason=\"{reason}\"}}")
}

fn reloads(file: &str, result: &str) -> String {
    format!("weft_identity_file_reloads_total{{file=\"{file}\",result=\"{result}\"}}")
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A PKI with one anchor and a tokens file holding `shop/web`, and a control plane on it.
async fn local(extra: &[&str]) -> (Pki, ControlPlane) {
    let pki = Pki::new(1);
    pki.write_tokens(&format!("# test tokens\n{SHOP_WEB} shop web\n"));
    let cp = ControlPlane::start(&pki, Tokens::File(&pki.tokens_path()), extra).await;
    (pki, cp)
}

/// Asserts `result` is a refusal with `code` whose message holds every one of `needles`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    needles: &[&str],
) -> tonic::Status {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "message {:?} lacks {needle:?}",
            status.message()
        );
    }
    status
}

#[tokio::test]
async fn a_valid_token_gets_a_chain_for_its_workload() {
    let (pki, cp) = local(&["--cert-lifetime", "1h"]).await;
    let mut client = cp.client(&pki).await;
    let web = id("shop", "web");
    let req = csr_for(&web);

    let rsp = certify(&mut client, &web.to_string(), SHOP_WEB, req.csr_der.clone())
        .await
        .expect("certificate issued");

    let leaf = inspect(&rsp.leaf_certificate).expect("leaf parses");
    assert_eq!(leaf.spiffe_ids, vec![web.clone()], "exactly the proven ID");
    assert_eq!(
        leaf.spiffe_ids[0].to_string(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert!(!leaf.is_ca, "a workload certificate is no CA");
    assert_eq!(
        leaf.public_key_der,
        req.key.public_key_raw(),
        "the certificate is for the key in the CSR"
    );
    assert_eq!(rsp.intermediate_certificates.len(), 1, "issuer only");
    let issuer = inspect(&rsp.intermediate_certificates[0]).expect("issuer parses");
    assert!(issuer.is_ca);
    assert_eq!(leaf.issuer, issuer.subject);

    assert_eq!(
        verify_chain(&rsp, &pki.bundle_of(0)),
        Ok(web.clone()),
        "verifies against the anchor as a peer would"
    );
    let other_anchor = Pki::new(1);
    assert!(
        verify_chain(&rsp, &other_anchor.bundle_of(0)).is_err(),
        "and not against an unrelated anchor"
    );

    let expected_expiry = unix_now() + 3600;
    let not_after = leaf.not_after.unix_timestamp();
    assert!(
        (not_after - expected_expiry).abs() <= 30,
        "not_after {not_after} is not about now + 1h ({expected_expiry})"
    );
    assert_eq!(rsp.not_after_unix_seconds, not_after);
    assert!(leaf.not_before.unix_timestamp() <= unix_now(), "valid now");

    assert_eq!(cp.metric_now(ISSUED).await, 1.0);
    assert_eq!(cp.metric_now(&refusals("token_rejected")).await, 0.0);
}

#[tokio::test]
async fn a_token_for_one_namespace_cannot_get_another() {
    let (pki, cp) = local(&[]).await;
    let mut client = cp.client(&pki).await;
    assert_eq!(cp.metric_now(&refusals("identity_mismatch")).await, 0.0);

    for (n, asked) in [id("bank", "web"), id("shop", "admin")].iter().enumerate() {
        let result = certify(
            &mut client,
            &asked.to_string(),
            SHOP_WEB,
            csr_for(asked).csr_der,
        )
        .await;
        assert_refused(
            result,
            Code::PermissionDenied,
            &["spiffe://cluster.local/ns/shop/sa/web", &asked.to_string()],
        );
        assert_eq!(
            cp.metric_now(&refusals("identity_mismatch")).await,
            (n + 1) as f64
        );
    }
    assert_eq!(cp.metric_now(ISSUED).await, 0.0);
}

#[tokio::test]
async fn malformed_requests_get_clear_errors_and_are_counted() {
    let (pki, cp) = local(&[]).await;
    let mut client = cp.client(&pki).await;
    let web = id("shop", "web");
    let good_csr = csr_for(&web).csr_der;
    let p384_csr = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            web.to_string().try_into().expect("URI"),
        )];
        params.serialize_request(&key).expect("CSR").der().to_vec()
    };
    let mut forged_csr = good_csr.clone();
    *forged_csr.last_mut().expect("non-empty") ^= 0x01;
    let bank_csr = csr_for(&id("bank", "web")).csr_der;
    let web_s = web.to_string();
    let long_token = "t".repeat(16 * 1024 + 1);

    struct Case<'a> {
        what: &'a str,
        identity: &'a str,
        token: &'a str,
        csr: Vec<u8>,
        code: Code,
        needles: &'a [&'a str],
        reason: &'a str,
    }
    let cases = [
        Case {
            what: "not a SPIFFE ID",
            identity: "shop/web",
            token: SHOP_WEB,
            csr: good_csr.clone(),
            code: Code::InvalidArgument,
            needles: &["identity \"shop/web\"", "spiffe://"],
            reason: "malformed_identity",
        },
        Case {
            what: "namespace not a DNS label",
            identity: "spiffe://cluster.local/ns/Shop_1/sa/web",
            token: SHOP_WEB,
            csr: good_csr.clone(),
            code: Code::InvalidArgument,
            needles: &["invalid namespace \"Shop_1\""],
            reason: "malformed_identity",
        },
        Case {
            what: "foreign trust domain",
            identity: "spiffe://evil.example/ns/shop/sa/web",
            token: SHOP_WEB,
            csr: good_csr.clone(),
            code: Code::InvalidArgument,
            needles: &["spiffe://evil.example/ns/shop/sa/web", "\"cluster.local\""],
            reason: "foreign_trust_domain",
        },
        Case {
            what: "empty token",
            identity: &web_s,
            token: "",
            csr: good_csr.clone(),
            code: Code::InvalidArgument,
            needles: &["token", "got 0"],
            reason: "malformed_token",
        },
        Case {
            what: "oversized token",
            identity: &web_s,
            token: &long_token,
            csr: good_csr.clone(),
            code: Code::InvalidArgument,
            needles: &["token", "16385"],
            reason: "malformed_token",
        },
        Case {
            what: "unknown token",
            identity: &web_s,
            token: "tok-nobody-knows-this-one",
            csr: good_csr.clone(),
            code: Code::Unauthenticated,
            needles: &["not a known token"],
            reason: "token_rejected",
        },
        Case {
            // The token is checked before the CSR is parsed: an unauthenticated caller never
            // makes the CA parse anything.
            what: "unknown token with a garbage CSR",
            identity: &web_s,
            token: "tok-nobody-knows-this-one",
            csr: b"garbage".to_vec(),
            code: Code::Unauthenticated,
            needles: &["not a known token"],
            reason: "token_rejected",
        },
        Case {
            what: "garbage CSR",
            identity: &web_s,
            token: SHOP_WEB,
            csr: b"\x30\x03garbage".to_vec(),
            code: Code::InvalidArgument,
            needles: &["certificate_signing_request", "could not be parsed"],
            reason: "malformed_csr",
        },
        Case {
            what: "empty CSR",
            identity: &web_s,
            token: SHOP_WEB,
            csr: Vec::new(),
            code: Code::InvalidArgument,
            needles: &["certificate_signing_request"],
            reason: "malformed_csr",
        },
        Case {
            what: "CSR signature does not verify",
            identity: &web_s,
            token: SHOP_WEB,
            csr: forged_csr,
            code: Code::InvalidArgument,
            needles: &["certificate_signing_request", "signature"],
            reason: "malformed_csr",
        },
        Case {
            what: "P-384 key",
            identity: &web_s,
            token: SHOP_WEB,
            csr: p384_csr,
            code: Code::InvalidArgument,
            needles: &["certificate_signing_request", "not ECDSA P-256"],
            reason: "malformed_csr",
        },
        Case {
            what: "CSR names another identity",
            identity: &web_s,
            token: SHOP_WEB,
            csr: bank_csr,
            code: Code::InvalidArgument,
            needles: &[
                "certificate_signing_request",
                "spiffe://cluster.local/ns/bank/sa/web",
                "spiffe://cluster.local/ns/shop/sa/web",
            ],
            reason: "malformed_csr",
        },
    ];
    for case in cases {
        let before = cp.metric_now(&refusals(case.reason)).await;
        let result = certify(&mut client, case.identity, case.token, case.csr).await;
        let status = result.expect_err(case.what);
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.what);
        for needle in case.needles {
            assert!(
                status.message().contains(needle),
                "{}: message {:?} lacks {needle:?}",
                case.what,
                status.message()
            );
        }
        assert_eq!(
            cp.metric_now(&refusals(case.reason)).await,
            before + 1.0,
            "{}: counted as {}",
            case.what,
            case.reason
        );
    }
    assert_eq!(cp.metric_now(ISSUED).await, 0.0, "nothing issued");

    // The same connection still works for a good request.
    certify(&mut client, &web_s, SHOP_WEB, good_csr)
        .await
        .expect("a good request after the bad ones");
    assert_eq!(cp.metric_now(ISSUED).await, 1.0);
}

#[tokio::test]
async fn broken_and_oversized_grpc_messages_are_refused_and_serving_goes_on() {
    let (pki, cp) = local(&[]).await;
    let bundle = pki.bundle_pem();
    let web = id("shop", "web");
    let limit = weft_api::MAX_MESSAGE_BYTES;

    // The raw path itself is right: a well-formed request sent this way is answered with OK.
    let good = encode_certify(&web.to_string(), SHOP_WEB, &csr_for(&web).csr_der);
    let ok = raw_certify(cp.grpc, &bundle, grpc_frame(&good)).await;
    assert_eq!((ok.http_status, ok.code), (200, Some(0)), "{ok:?}");
    assert_eq!(cp.metric_now(ISSUED).await, 1.0);

    // Not protobuf: field 1 with wire type 7, which does not exist.
    let garbage = raw_certify(cp.grpc, &bundle, grpc_frame(b"\x0f\x00garbage")).await;
    assert_eq!(garbage.code, Some(Code::Internal as i32), "{garbage:?}");
    assert!(garbage.message.contains("decode"), "{garbage:?}");

    // Protobuf, but a string field that is not UTF-8.
    let not_utf8 = raw_certify(cp.grpc, &bundle, grpc_frame(b"\x0a\x02\xff\xfe")).await;
    assert_eq!(not_utf8.code, Some(Code::Internal as i32), "{not_utf8:?}");
    assert!(not_utf8.message.contains("UTF-8"), "{not_utf8:?}");

    // A frame cut short: the header promises more than the stream holds.
    let mut cut = grpc_frame(&good);
    cut.truncate(cut.len() / 2);
    let truncated = raw_certify(cp.grpc, &bundle, cut).await;
    assert!(
        truncated.code.is_some_and(|c| c != 0),
        "a truncated message is an error: {truncated:?}"
    );

    // A message over the limit, sent in full, and one that only claims to be huge: both are
    // refused from the 5-byte header, without buffering the body.
    let oversized = encode_certify(&web.to_string(), SHOP_WEB, &vec![0x30; limit + 1024]);
    assert!(oversized.len() > limit);
    let mut claims_huge = vec![0u8];
    claims_huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
    claims_huge.extend_from_slice(b"tiny");
    for (what, body) in [
        ("oversized", grpc_frame(&oversized)),
        ("claims 1 GiB", claims_huge),
    ] {
        let refused = raw_certify(cp.grpc, &bundle, body).await;
        assert!(
            matches!(
                refused.code,
                Some(c) if c == Code::OutOfRange as i32 || c == Code::ResourceExhausted as i32
            ),
            "{what}: {refused:?}"
        );
        assert!(
            refused.message.contains("too large") && refused.message.contains(&limit.to_string()),
            "{what}: the message names the limit: {refused:?}"
        );
    }

    // None of that reached the service or hurt the server.
    assert_eq!(cp.metric_now(ISSUED).await, 1.0);
    let mut client = cp.client(&pki).await;
    certify(
        &mut client,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("still serving");
    assert_eq!(cp.metric_now(ISSUED).await, 2.0);
}

#[tokio::test]
async fn the_control_planes_own_certificate_is_checked() {
    let (pki, cp) = local(&[]).await;

    // The expected identity, chaining to the anchor: the handshake succeeds and the server's
    // certificate is the control plane's.
    let tls = tls_connect(cp.grpc, support::client_config(&pki.bundle_pem(), &cp_id()))
        .await
        .expect("handshake with the right identity");
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let presented = session.peer_certificates().expect("server certificate");
    let served = inspect(&presented[0]).expect("parses");
    assert_eq!(served.spiffe_ids, vec![cp_id()]);
    drop(tls);

    // Someone else's identity: the client refuses the handshake, naming both.
    let impostor = SpiffeId::new(TD, "weft", "someone-else").expect("id");
    let err = tls_connect(
        cp.grpc,
        support::client_config(&pki.bundle_pem(), &impostor),
    )
    .await
    .expect_err("wrong identity must fail the handshake");
    let msg = err.to_string();
    assert!(
        msg.contains("spiffe://cluster.local/ns/weft/sa/weft-control-plane")
            && msg.contains("spiffe://cluster.local/ns/weft/sa/someone-else"),
        "{msg}"
    );

    // The right identity under an anchor we do not trust: refused too.
    let stranger = Pki::new(1);
    let err = tls_connect(
        cp.grpc,
        support::client_config(&stranger.bundle_pem(), &cp_id()),
    )
    .await
    .expect_err("unknown issuer must fail the handshake");
    // (Every test anchor has the same subject, so webpki finds it and the signature fails.)
    assert!(
        err.to_string()
            .contains("invalid peer certificate: BadSignature"),
        "{err}"
    );

    // A client that does not offer h2 gets no TLS session either (ALPN is required).
    let mut no_alpn = (*support::client_config(&pki.bundle_pem(), &cp_id())).clone();
    no_alpn.alpn_protocols = vec![b"http/1.1".to_vec()];
    let err = tls_connect(cp.grpc, std::sync::Arc::new(no_alpn))
        .await
        .expect_err("no common ALPN protocol");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("application protocol")
            || err.to_string().contains("NoApplicationProtocol"),
        "{err}"
    );
}

#[tokio::test]
async fn issuer_rotation_takes_effect_without_restart_and_a_broken_one_is_refused() {
    let pki = Pki::new(2);
    pki.write_tokens(&format!("{SHOP_WEB} shop web\n"));
    let cp = ControlPlane::start(
        &pki,
        Tokens::File(&pki.tokens_path()),
        &["--reload-interval", "200ms"],
    )
    .await;
    let web = id("shop", "web");
    let mut client = cp.client(&pki).await;

    let before = certify(
        &mut client,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("issued");
    assert_eq!(verify_chain(&before, &pki.bundle_of(0)), Ok(web.clone()));
    assert!(verify_chain(&before, &pki.bundle_of(1)).is_err());
    let first_expiry = cp.metric_now(ISSUER_EXPIRY).await;
    let first_anchor = pki
        .anchors
        .iter()
        .map(|a| a.not_after().unix_timestamp())
        .min()
        .expect("anchors");
    assert_eq!(
        cp.metric_now(ANCHOR_EXPIRY).await,
        first_anchor as f64,
        "the first of anchors.pem to expire"
    );
    assert_eq!(cp.metric_now(&reloads("issuer", "applied")).await, 0.0);

    // Rotate to an issuer under anchor 1 that lives longer.
    let second = pki.new_issuer(1, Duration::from_secs(2 * 365 * 24 * 3600));
    pki.publish(second.cert_pem(), &second.key_pem());
    assert_eventually!(
        cp.metric(&reloads("issuer", "applied")).await == Some(1.0),
        "the new issuer applied; logs:\n{}",
        cp.logs()
    );
    let after = certify(
        &mut client,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("issued after rotation, on the same connection");
    assert_eq!(
        verify_chain(&after, &pki.bundle_of(1)),
        Ok(web.clone()),
        "new leaves chain to anchor 1"
    );
    assert!(
        verify_chain(&after, &pki.bundle_of(0)).is_err(),
        "not to anchor 0"
    );
    assert_eq!(
        after.intermediate_certificates,
        vec![second.cert_der().to_vec()]
    );
    let second_expiry = cp.metric_now(ISSUER_EXPIRY).await;
    assert_ne!(second_expiry, first_expiry, "the expiry gauge moved");
    assert_eq!(second_expiry, second.not_after().unix_timestamp() as f64);

    // The control plane's own certificate follows the new issuer: a client trusting anchor 1
    // alone gets through.
    let anchor1_only = pki.anchors[1].cert_pem().to_string();
    let mut fresh = identity_client(cp.grpc, &anchor1_only, &cp_id()).await;
    certify(
        &mut fresh,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("issued on a connection that trusts only anchor 1");

    // A broken key: refused, counted once, and the second issuer stays in force.
    let broken_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    pki.publish(second.cert_pem(), broken_key);
    assert_eventually!(
        cp.metric(&reloads("issuer", "refused")).await == Some(1.0),
        "the broken issuer refused; logs:\n{}",
        cp.logs()
    );
    let kept = certify(
        &mut client,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("still issuing with the previous issuer");
    assert_eq!(verify_chain(&kept, &pki.bundle_of(1)), Ok(web.clone()));
    assert_eq!(cp.metric_now(&reloads("issuer", "applied")).await, 1.0);
    assert_eq!(cp.metric_now(ISSUER_EXPIRY).await, second_expiry);
    let logs = cp.logs();
    assert!(logs.contains("previous issuer stays in force"), "{logs}");
    assert!(
        logs.contains("issuer/issuer.key: ") && logs.contains("Could not parse key pair"),
        "the log names the broken file:\n{logs}"
    );

    // Put the good files back, then break them the same way again: the second breakage is a
    // new event and is counted and logged too. (A tokens change published after the revert
    // tells us when the control plane has seen it: both are read in the same pass.)
    pki.publish(second.cert_pem(), &second.key_pem());
    pki.write_tokens(&format!("{SHOP_WEB} shop web\n{PAY_API} pay api\n"));
    assert_eventually!(
        cp.metric(&reloads("tokens", "applied")).await == Some(1.0),
        "the tokens change seen"
    );
    assert_eq!(
        cp.metric_now(&reloads("issuer", "applied")).await,
        1.0,
        "same files"
    );
    pki.publish(second.cert_pem(), broken_key);
    assert_eventually!(
        cp.metric(&reloads("issuer", "refused")).await == Some(2.0),
        "the second breakage counted; logs:\n{}",
        cp.logs()
    );
}

#[tokio::test]
async fn tokens_file_changes_add_and_revoke_without_restart() {
    let pki = Pki::new(1);
    pki.write_tokens(&format!("{SHOP_WEB} shop web\n"));
    let cp = ControlPlane::start(
        &pki,
        Tokens::File(&pki.tokens_path()),
        &["--reload-interval", "100ms"],
    )
    .await;
    let mut client = cp.client(&pki).await;
    let web = id("shop", "web");
    let api = id("pay", "api");
    let ask = |who: &SpiffeId| (who.to_string(), csr_for(who).csr_der);

    let (i, csr) = ask(&api);
    assert_refused(
        certify(&mut client, &i, PAY_API, csr).await,
        Code::Unauthenticated,
        &[],
    );

    // Added.
    pki.write_tokens(&format!("{SHOP_WEB} shop web\n{PAY_API} pay api\n"));
    assert_eventually!(
        cp.metric(&reloads("tokens", "applied")).await == Some(1.0),
        "tokens reloaded"
    );
    let (i, csr) = ask(&api);
    let rsp = certify(&mut client, &i, PAY_API, csr)
        .await
        .expect("new token works");
    assert_eq!(
        inspect(&rsp.leaf_certificate).expect("leaf").spiffe_ids,
        vec![api.clone()]
    );

    // Revoked.
    pki.write_tokens(&format!("{PAY_API} pay api\n"));
    assert_eventually!(
        cp.metric(&reloads("tokens", "applied")).await == Some(2.0),
        "tokens reloaded again"
    );
    let (i, csr) = ask(&web);
    assert_refused(
        certify(&mut client, &i, SHOP_WEB, csr).await,
        Code::Unauthenticated,
        &["not a known token"],
    );

    // A broken edit is refused and the previous tokens stay.
    pki.write_tokens(&format!("{PAY_API} pay api\n{SHOP_WEB} shop\n"));
    assert_eventually!(
        cp.metric(&reloads("tokens", "refused")).await == Some(1.0),
        "broken tokens file refused"
    );
    // The log line may reach the test's reader after the metric moved: waited for.
    assert_eventually!(cp.logs().contains("line 2"), "the log names the line");
    let (i, csr) = ask(&api);
    certify(&mut client, &i, PAY_API, csr)
        .await
        .expect("old tokens kept");
    let (i, csr) = ask(&web);
    assert_refused(
        certify(&mut client, &i, SHOP_WEB, csr).await,
        Code::Unauthenticated,
        &[],
    );

    // Reverted to the tokens in force, then broken the same way again: counted again. (A new
    // issuer published after the revert tells us when the control plane has seen it: the
    // issuer is read first in each pass, the tokens file after it.)
    pki.write_tokens(&format!("{PAY_API} pay api\n"));
    let issuer = pki.new_issuer(0, Duration::from_secs(3600 * 24 * 30));
    pki.publish(issuer.cert_pem(), &issuer.key_pem());
    assert_eventually!(
        cp.metric(&reloads("issuer", "applied")).await == Some(1.0),
        "the new issuer seen"
    );
    assert_eq!(
        cp.metric_now(&reloads("tokens", "applied")).await,
        2.0,
        "same tokens"
    );
    pki.write_tokens(&format!("{PAY_API} pay api\n{SHOP_WEB} shop\n"));
    assert_eventually!(
        cp.metric(&reloads("tokens", "refused")).await == Some(2.0),
        "the second breakage counted"
    );
}

#[tokio::test]
async fn kubernetes_token_review_decides_who_gets_a_certificate() {
    let api = FakeKube::builder()
        .token(
            "sa-token",
            Verdict::ServiceAccount {
                ns: "shop".into(),
                sa: "web".into(),
            },
        )
        .token(
            "other-audience",
            Verdict::OtherAudience {
                ns: "shop".into(),
                sa: "web".into(),
            },
        )
        .token("alice", Verdict::User("alice@example.com".into()))
        .token("boom", Verdict::ServerError)
        .start();
    let pki = Pki::new(1);
    let kubeconfig = api.kubeconfig(pki.dir.path());
    // This fake API server speaks only TokenReview: discovery reads an (empty) folder.
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    let source = format!("local:{}", config.display());
    let cp = ControlPlane::start(
        &pki,
        Tokens::Kube {
            kubeconfig: &kubeconfig,
        },
        &["--source", &source],
    )
    .await;
    assert_eventually!(
        cp.logs().contains("TokenReview"),
        "Kubernetes mode is logged"
    );
    let mut client = cp.client(&pki).await;
    let web = id("shop", "web");
    let web_s = web.to_string();

    let rsp = certify(&mut client, &web_s, "sa-token", csr_for(&web).csr_der)
        .await
        .expect("a service account token the API server accepts");
    assert_eq!(verify_chain(&rsp, &pki.bundle_of(0)), Ok(web.clone()));

    let bank = id("bank", "web");
    assert_refused(
        certify(
            &mut client,
            &bank.to_string(),
            "sa-token",
            csr_for(&bank).csr_der,
        )
        .await,
        Code::PermissionDenied,
        &[&web_s, &bank.to_string()],
    );
    assert_refused(
        certify(
            &mut client,
            &web_s,
            "not-a-real-token",
            csr_for(&web).csr_der,
        )
        .await,
        Code::Unauthenticated,
        &["invalid bearer token"],
    );
    assert_refused(
        certify(&mut client, &web_s, "other-audience", csr_for(&web).csr_der).await,
        Code::Unauthenticated,
        &["audience", "identity.weft.dev"],
    );
    assert_refused(
        certify(&mut client, &web_s, "alice", csr_for(&web).csr_der).await,
        Code::Unauthenticated,
        &["alice@example.com", "not a service account"],
    );
    assert_eq!(cp.metric_now(&refusals("token_rejected")).await, 3.0);

    // The API server failing is not the caller's fault: retryable, never accepted.
    assert_refused(
        certify(&mut client, &web_s, "boom", csr_for(&web).csr_der).await,
        Code::Unavailable,
        &["TokenReview"],
    );
    assert_eq!(
        cp.metric_now(&refusals("token_review_unavailable")).await,
        1.0
    );

    assert_eq!(
        api.reviewed_tokens(),
        [
            "sa-token",
            "sa-token",
            "not-a-real-token",
            "other-audience",
            "alice",
            "boom"
        ],
        "every token reviewed once, in order"
    );
    api.assert_no_problems();

    // The API server gone: retryable too.
    api.set_down(true);
    assert_refused(
        certify(&mut client, &web_s, "sa-token", csr_for(&web).csr_der).await,
        Code::Unavailable,
        &["TokenReview"],
    );
    assert_eq!(
        cp.metric_now(&refusals("token_review_unavailable")).await,
        2.0
    );
    assert_eq!(cp.metric_now(ISSUED).await, 1.0);
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let (pki, mut cp) = local(&[]).await;
    // An established HTTP/2 connection that has made a call, and a TCP connection that never
    // starts its TLS handshake: neither may hold the process up.
    let mut client = cp.client(&pki).await;
    let web = id("shop", "web");
    certify(
        &mut client,
        &web.to_string(),
        SHOP_WEB,
        csr_for(&web).csr_der,
    )
    .await
    .expect("issued");
    let _stalled = tokio::net::TcpStream::connect(cp.grpc)
        .await
        .expect("connect");

    cp.sigterm();
    let code = cp.wait_exit(Duration::from_secs(3)).await;
    assert_eq!(
        code,
        Some(Some(0)),
        "exit 0 within 3s of SIGTERM; logs:\n{}",
        cp.logs()
    );
    assert_eventually!(
        cp.logs().contains("shutting down"),
        "the shutdown is logged"
    );
}

#[tokio::test]
async fn sigterm_cuts_a_call_that_never_finishes_after_the_grace() {
    let (pki, mut cp) = local(&[]).await;
    let web = id("shop", "web");
    let mut tx = support::raw_connection(cp.grpc, &pki.bundle_pem()).await;

    // A call whose body stops halfway and never ends...
    let frame = grpc_frame(&encode_certify(
        &web.to_string(),
        SHOP_WEB,
        &csr_for(&web).csr_der,
    ));
    let half = frame[..frame.len() / 2].to_vec();
    let stuck = tokio::spawn(tx.send_request(support::certify_request(support::stalled(half))));
    // ...and a complete one after it on the same connection: once that is answered, the
    // server has the stuck one too (HTTP/2 frames arrive in order).
    let good = encode_certify(&web.to_string(), SHOP_WEB, &csr_for(&web).csr_der);
    let ok = support::raw_exchange(&mut tx, support::full(grpc_frame(&good))).await;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(!stuck.is_finished(), "the stalled call is still in flight");

    cp.sigterm();
    let patience = weft_control_plane::SHUTDOWN_GRACE + Duration::from_secs(3);
    let code = cp.wait_exit(patience).await;
    assert_eq!(
        code,
        Some(Some(0)),
        "exit 0 within the grace (+3s) of SIGTERM; logs:\n{}",
        cp.logs()
    );
    assert!(
        cp.logs()
            .contains("calls still in flight after the shutdown grace"),
        "{}",
        cp.logs()
    );
    stuck.abort();
}

#[tokio::test]
async fn a_token_review_the_api_server_never_answers_is_unavailable_not_hung() {
    use weft_control_plane::{
        kube_tokens::{KubeTokenReviewer, AUDIENCE},
        tokens::{TokenError, TokenReviewer, Workload},
    };
    let api = FakeKube::builder()
        .token("hang", Verdict::Hang)
        .token(
            "sa-token",
            Verdict::ServiceAccount {
                ns: "shop".into(),
                sa: "web".into(),
            },
        )
        .start();
    let url = api.url().parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("kube client");
    let reviewer =
        KubeTokenReviewer::new(client, AUDIENCE).with_timeout(Duration::from_millis(300));

    assert_eq!(
        reviewer.review("sa-token").await.expect("reviewed"),
        Workload {
            namespace: "shop".into(),
            service_account: "web".into()
        }
    );

    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), reviewer.review("hang"))
        .await
        .expect("the review gives up by itself")
        .expect_err("no answer is no identity");
    assert!(matches!(err, TokenError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(api.reviewed_tokens(), ["sa-token", "hang"]);
    api.assert_no_problems();
}
