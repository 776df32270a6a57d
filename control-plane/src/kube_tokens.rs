//! Tokens checked by Kubernetes: a `TokenReview` (authentication.k8s.io/v1) for audience
//! `identity.weft.dev`, through kube-rs.
//!
//! The token must be authenticated, bound to our audience, and belong to a service account
//! (`system:serviceaccount:<namespace>:<name>`). Anything else is rejected; an API server that
//! cannot be reached, or answers with an error, makes the request retryable (`Unavailable`),
//! never accepted.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{api::PostParams, Api, Client};

use crate::tokens::{ReviewFuture, TokenError, TokenReviewer, Workload};

/// The audience a proxy's projected token must carry.
pub const AUDIENCE: &str = "identity.weft.dev";

/// How long a TokenReview may take. kube-rs sets no read timeout, so without this an API
/// server that accepts the request and never answers would hold the call (and a shutdown
/// waiting for it) forever. A review takes milliseconds when the API server is well.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Reviews tokens with the Kubernetes API server.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTokenReviewer")
            .field("audience", &self.audience)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubeTokenReviewer {
    /// Reviews with `client` (in-cluster config, a kubeconfig, or a test server).
    pub fn new(client: Client, audience: &str) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.to_string(),
            timeout: REVIEW_TIMEOUT,
        }
    }

    /// Gives up on a review after `timeout` instead of [`REVIEW_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn check(&self, token: &str) -> Result<Workload, TokenError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviewed = tokio::time::timeout(
            self.timeout,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            TokenError::Unavailable(format!(
                "TokenReview got no answer within {:?}; is the API server overloaded?",
                self.timeout
            ))
        })?
        .map_err(|e| TokenError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = reviewed
            .status
            .ok_or_else(|| TokenError::Unavailable("TokenReview has no status".to_string()))?;
        if let Some(error) = status.error.filter(|e| !e.is_empty()) {
            return Err(TokenError::Rejected(error));
        }
        if status.authenticated != Some(true) {
            return Err(TokenError::Rejected("not authenticated".to_string()));
        }
        // An API server that ignores audiences returns none; one that honours them returns
        // the ones the token is bound to. Either way ours must be among them.
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.contains(&self.audience) {
            return Err(TokenError::Rejected(format!(
                "token is not bound to audience {:?} (bound to {audiences:?})",
                self.audience
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        parse_service_account(&username)
            .ok_or_else(|| TokenError::Rejected(format!("{username:?} is not a service account")))
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a> {
        Box::pin(self.check(token))
    }
}

/// `system:serviceaccount:<namespace>:<name>` into its parts.
fn parse_service_account(username: &str) -> Option<Workload> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some(Workload {
        namespace: namespace.to_string(),
        service_account: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            parse_service_account("system:serviceaccount:shop:web"),
            Some(Workload {
                namespace: "shop".into(),
                service_account: "web".into()
            })
        );
        for bad in [
            "",
            "alice",
            "system:serviceaccount:",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:web:extra",
            "system:node:shop:web",
        ] {
            assert_eq!(parse_service_account(bad), None, "{bad:?}");
        }
    }
}
