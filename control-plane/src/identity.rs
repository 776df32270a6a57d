//! The identity service: `Certify(identity, token, csr) -> chain`.
//!
//! Checks run cheapest first, so an unauthenticated caller never makes the CA parse a CSR:
//! the identity's syntax, its trust domain, the token, the identity the token proves, and only
//! then the CSR, which the CA signs for the proven identity alone.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use tracing::{debug, info};
use weft_api::identity::{identity_server, CertifyRequest, CertifyResponse};
use weft_certs::{CsrError, SpiffeId};

use crate::{
    issuer::IssuerSource,
    metrics::{Metrics, Refusal},
    tokens::{TokenError, TokenReviewer},
};

/// Longest token accepted; a Kubernetes service-account token is about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The service behind `weft.identity.v1.Identity`.
#[derive(Debug, Clone)]
pub struct IdentityService {
    pub(crate) trust_domain: String,
    pub(crate) issuer: Arc<IssuerSource>,
    pub(crate) reviewer: Arc<dyn TokenReviewer>,
    pub(crate) lifetime: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

impl IdentityService {
    pub fn new(
        trust_domain: String,
        issuer: Arc<IssuerSource>,
        reviewer: Arc<dyn TokenReviewer>,
        lifetime: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            trust_domain,
            issuer,
            reviewer,
            lifetime,
            metrics,
        }
    }

    fn refuse(&self, reason: Refusal, status: Status) -> Status {
        self.metrics.refused(reason);
        debug!(
            reason = reason.as_str(),
            message = status.message(),
            "certificate refused"
        );
        status
    }

    async fn certify(&self, req: CertifyRequest) -> Result<CertifyResponse, Status> {
        let asked: SpiffeId = req.identity.parse().map_err(|e| {
            self.refuse(
                Refusal::MalformedIdentity,
                Status::invalid_argument(format!("identity {:?}: {e}", req.identity)),
            )
        })?;
        if asked.trust_domain() != self.trust_domain {
            return Err(self.refuse(
                Refusal::ForeignTrustDomain,
                Status::invalid_argument(format!(
                    "identity {asked} is outside this control plane's trust domain {:?}",
                    self.trust_domain
                )),
            ));
        }
        if req.token.is_empty() || req.token.len() > MAX_TOKEN_BYTES {
            return Err(self.refuse(
                Refusal::MalformedToken,
                Status::invalid_argument(format!(
                    "token: must be 1 to {MAX_TOKEN_BYTES} bytes, got {}",
                    req.token.len()
                )),
            ));
        }
        let workload = self
            .reviewer
            .review(&req.token)
            .await
            .map_err(|e| match e {
                TokenError::Rejected(_) => self.refuse(
                    Refusal::TokenRejected,
                    Status::unauthenticated(e.to_string()),
                ),
                TokenError::Unavailable(_) => self.refuse(
                    Refusal::TokenReviewUnavailable,
                    Status::unavailable(e.to_string()),
                ),
            })?;
        let proven = SpiffeId::new(
            &self.trust_domain,
            &workload.namespace,
            &workload.service_account,
        )
        .map_err(|e| {
            self.refuse(
                Refusal::TokenRejected,
                Status::unauthenticated(format!(
                    "the token's workload is not a valid identity: {e}"
                )),
            )
        })?;
        if proven != asked {
            return Err(self.refuse(
                Refusal::IdentityMismatch,
                Status::permission_denied(format!("the token proves {proven}, not {asked}")),
            ));
        }

        let issuer = self.issuer.current();
        let signed = issuer
            .ca
            .sign_csr(
                &req.certificate_signing_request,
                &proven,
                self.lifetime,
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| match e {
                CsrError::Malformed(_)
                | CsrError::KeyAlgorithm
                | CsrError::IdentityMismatch { .. } => self.refuse(
                    Refusal::MalformedCsr,
                    Status::invalid_argument(format!("certificate_signing_request: {e}")),
                ),
                CsrError::IssuerExpired(_) | CsrError::IssuerNotYetValid(_) | CsrError::Sign(_) => {
                    self.refuse(
                        Refusal::IssuerUnusable,
                        Status::failed_precondition(e.to_string()),
                    )
                }
            })?;
        self.metrics.issued();
        info!(identity = %proven, not_after = %signed.not_after, "certificate issued");
        let mut chain = signed.chain_der.into_iter();
        Ok(CertifyResponse {
            leaf_certificate: chain.next().unwrap_or_default(),
            intermediate_certificates: chain.collect(),
            not_after_unix_seconds: signed.not_after.unix_timestamp(),
        })
    }
}

#[tonic::async_trait]
impl identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        IdentityService::certify(self, request.into_inner())
            .await
            .map(Response::new)
    }
}
