//! The proxy's certificate: a fresh key in memory (never on disk), a CSR and the workload's
//! token sent to the control plane's identity service, the answer checked and swapped into the
//! [`CertStore`] every TLS config reads. Renewed at 60–70 % of its life; failures retry with
//! capped, jittered exponential backoff while the current certificate keeps serving.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::{io::AsyncReadExt, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_api::{
    client::H2Connection,
    identity::{identity_client::IdentityClient, CertifyRequest},
};
use weft_certs::{certified_key, new_key_and_csr, renew::renew_at, SpiffeId};

use crate::{
    control_plane::{origin, ControlPlaneDialer, DialError},
    MeshTls,
};

/// The shortest wait before renewing, so a certificate issued nearly expired cannot make the
/// proxy hammer the control plane.
const MIN_RENEW_WAIT: Duration = Duration::from_millis(500);

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Where and how to ask for certificates.
#[derive(Clone, Debug)]
pub struct CertifyConfig {
    /// The control plane's gRPC address, `host:port`.
    pub control_plane: String,
    /// The identity the control plane must present.
    pub control_plane_id: SpiffeId,
    /// The file holding the workload's token; re-read for every request, since projected
    /// service-account tokens rotate.
    pub token_file: PathBuf,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on one Certify call.
    pub request_timeout: Duration,
    /// First retry delay; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Why one attempt failed. Each names what to check.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("reading the token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty or larger than 64 KiB")]
    TokenSize(PathBuf),
    #[error("making a key and CSR: {0}")]
    Key(String),
    #[error("resolving the control plane {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("connecting to the control plane {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the control plane refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the control plane's certificate is unusable: {0}")]
    BadCertificate(String),
}

/// The certificate currently held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Gets and renews the proxy's certificate.
#[derive(Debug)]
pub struct Certifier {
    config: CertifyConfig,
    tls: Arc<MeshTls>,
    dialer: ControlPlaneDialer,
    held: watch::Sender<Option<Held>>,
}

impl Certifier {
    pub fn new(config: CertifyConfig, tls: Arc<MeshTls>) -> Result<Self, rustls::Error> {
        let dialer = ControlPlaneDialer::new(
            config.control_plane.clone(),
            config.control_plane_id.clone(),
            tls.bundle().clone(),
            config.connect_timeout,
            Some(tls.store().clone()),
        )?;
        Ok(Self {
            config,
            tls,
            dialer,
            held: watch::channel(None).0,
        })
    }

    /// The dialer this certifier reaches the control plane with (discovery shares it).
    pub fn dialer(&self) -> &ControlPlaneDialer {
        &self.dialer
    }

    /// The certificate held, updated on every renewal: `/ready` and the expiry metric follow it.
    pub fn subscribe(&self) -> watch::Receiver<Option<Held>> {
        self.held.subscribe()
    }

    /// Certifies, then renews, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.certify_once().await {
                Ok(held) => {
                    failures = 0;
                    // The life is measured from now, not from not_before: the CA backdates that
                    // for clock skew, which would put a short certificate's renewal in the past.
                    let now = SystemTime::now();
                    let at = renew_at(now, held.not_after, rand::random());
                    at.duration_since(now)
                        .unwrap_or(Duration::ZERO)
                        .max(MIN_RENEW_WAIT)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = self.backoff(failures);
                    let expires = self.held.borrow().map(|h| h.not_after);
                    warn!(error = %e, retry_in = ?delay, current_expires = ?expires.map(humantime_ts), "certificate request failed");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `min * 2^(n-1)`, capped, with up to 50 % random reduction so a fleet does not retry
    /// in step.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .config
            .min_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.config.max_backoff);
        exp.mul_f64(1.0 - 0.5 * rand::random::<f64>())
    }

    async fn certify_once(&self) -> Result<Held, CertifyError> {
        let token = self.read_token().await?;
        let id = self.tls.id();
        let req = new_key_and_csr(id).map_err(|e| CertifyError::Key(e.to_string()))?;
        let conn = self.connect().await?;
        let mut client = IdentityClient::with_origin(conn, origin())
            .max_decoding_message_size(weft_api::MAX_MESSAGE_BYTES);
        let call = client.certify(CertifyRequest {
            identity: id.to_string(),
            token,
            certificate_signing_request: req.csr_der,
        });
        let rsp = match tokio::time::timeout(self.config.request_timeout, call).await {
            Ok(Ok(rsp)) => rsp.into_inner(),
            Ok(Err(status)) => {
                return Err(CertifyError::Refused {
                    code: status.code(),
                    message: status.message().to_string(),
                })
            }
            Err(_) => {
                return Err(CertifyError::Refused {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {:?}", self.config.request_timeout),
                })
            }
        };

        // Check what we got as a peer would, before presenting it to anyone.
        let mut chain_der = vec![rsp.leaf_certificate];
        chain_der.extend(rsp.intermediate_certificates);
        let chain: Vec<CertificateDer<'_>> = chain_der
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let provider = rustls::crypto::ring::default_provider();
        let got = self
            .tls
            .bundle()
            .verify_workload(&chain, UnixTime::now(), &provider)
            .map_err(|e| CertifyError::BadCertificate(e.to_string()))?;
        if &got != id {
            return Err(CertifyError::BadCertificate(format!(
                "issued for {got}, not {id}"
            )));
        }
        let info = weft_certs::inspect(&chain_der[0])
            .map_err(|e| CertifyError::BadCertificate(e.to_string()))?;
        let key = certified_key(&chain_der, &req.key, &provider)
            .map_err(|e| CertifyError::BadCertificate(e.to_string()))?;
        self.tls.store().store(key);
        let held = Held {
            not_before: info.not_before.into(),
            not_after: info.not_after.into(),
        };
        info!(identity = %id, not_after = %info.not_after, "certificate installed");
        self.held.send_replace(Some(held));
        Ok(held)
    }

    async fn read_token(&self) -> Result<String, CertifyError> {
        let path = &self.config.token_file;
        let err = |source| CertifyError::Token {
            path: path.clone(),
            source,
        };
        let mut token = String::new();
        tokio::fs::File::open(path)
            .await
            .map_err(err)?
            .take(MAX_TOKEN_BYTES + 1)
            .read_to_string(&mut token)
            .await
            .map_err(err)?;
        let token = token.trim();
        if token.is_empty() || token.len() as u64 > MAX_TOKEN_BYTES {
            return Err(CertifyError::TokenSize(path.clone()));
        }
        Ok(token.to_string())
    }

    async fn connect(&self) -> Result<H2Connection, CertifyError> {
        self.dialer.connect().await.map_err(|e| match e {
            DialError::Resolve { addr, reason } => CertifyError::Resolve { addr, reason },
            DialError::Connect { addr, reason } => CertifyError::Connect { addr, reason },
        })
    }
}

fn humantime_ts(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).to_string()
}
