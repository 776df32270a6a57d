//! The issuer (intermediate CA) and trust anchors, read from a directory and reloaded when the
//! files change, so rotating them needs no restart.
//!
//! The directory holds `issuer.crt`, `issuer.key` and `anchors.pem`, the layout `weftctl certs
//! create-issuer` writes and a Kubernetes Secret mounts. Files are polled rather than watched
//! with inotify: a Secret volume updates by swapping a `..data` symlink, which inotify sees
//! awkwardly, while a content comparison every few seconds is cheap and always right.
//!
//! A new set is only taken if it is usable: the key matches the certificate, the issuer is
//! valid now, and a certificate it signs verifies against the anchors, exactly as a proxy would
//! check it. Otherwise the old set stays and the error is reported.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{crypto::CryptoProvider, pki_types::CertificateDer, pki_types::UnixTime};
use time::OffsetDateTime;
use weft_certs::{new_key_and_csr, Ca, CaError, SpiffeId, TrustBundle};

use crate::files::{read_bounded, ReadError};

/// File names inside the issuer directory.
pub const ISSUER_CERT: &str = "issuer.crt";
pub const ISSUER_KEY: &str = "issuer.key";
pub const ANCHORS: &str = "anchors.pem";

/// A usable issuer and the anchors its certificates chain to.
#[derive(Debug)]
pub struct Issuer {
    pub ca: Ca,
    pub anchors: TrustBundle,
    /// When the first of the anchors expires (after it, what it signed no longer verifies).
    pub anchors_not_after: OffsetDateTime,
    /// The raw files, to notice changes.
    raw: [Vec<u8>; 3],
}

/// Why an issuer directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{dir}/{ISSUER_CERT} is not usable with {dir}/{ANCHORS}: a certificate it signs fails \
         verification ({reason}); is the issuer signed by one of the anchors, and valid now?"
    )]
    Unverifiable { dir: String, reason: String },
}

/// The issuer currently in force, and where it comes from.
#[derive(Debug)]
pub struct IssuerSource {
    dir: PathBuf,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Issuer>,
}

impl IssuerSource {
    /// Loads and checks the issuer in `dir`.
    pub fn load(
        dir: PathBuf,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, IssuerError> {
        let raw = read_all(&dir)?;
        let issuer = check(&dir, trust_domain, &provider, raw)?;
        Ok(Arc::new(Self {
            dir,
            trust_domain: trust_domain.to_string(),
            provider,
            current: ArcSwap::from_pointee(issuer),
        }))
    }

    /// The issuer in force.
    pub fn current(&self) -> Arc<Issuer> {
        self.current.load_full()
    }

    /// Re-reads the files; takes them if they changed and are usable. Returns whether a new
    /// issuer took effect. On error the old one stays.
    pub fn reload(&self) -> Result<bool, IssuerError> {
        let raw = read_all(&self.dir)?;
        if raw == self.current.load().raw {
            return Ok(false);
        }
        let issuer = check(&self.dir, &self.trust_domain, &self.provider, raw)?;
        self.current.store(Arc::new(issuer));
        Ok(true)
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Largest file read from the directory.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_all(dir: &Path) -> Result<[Vec<u8>; 3], IssuerError> {
    Ok([
        read(&dir.join(ISSUER_CERT))?,
        read(&dir.join(ISSUER_KEY))?,
        read(&dir.join(ANCHORS))?,
    ])
}

fn read(path: &Path) -> Result<Vec<u8>, IssuerError> {
    read_bounded(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadError::Io(source) => IssuerError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadError::TooLarge(max) => IssuerError::Invalid {
            path: path.to_path_buf(),
            reason: format!("larger than {max} bytes"),
        },
    })
}

/// The file to name when a CA does not load: the key when the key is what failed.
fn file_at_fault(e: &CaError) -> &'static str {
    match e {
        CaError::KeyAlgorithm
        | CaError::Rcgen(rcgen::Error::CouldNotParseKeyPair | rcgen::Error::PemError(_)) => {
            ISSUER_KEY
        }
        CaError::Rcgen(_) | CaError::NotCa | CaError::KeyMismatch => ISSUER_CERT,
    }
}

fn check(
    dir: &Path,
    trust_domain: &str,
    provider: &CryptoProvider,
    raw: [Vec<u8>; 3],
) -> Result<Issuer, IssuerError> {
    let text = |i: usize, name: &str| {
        std::str::from_utf8(&raw[i]).map_err(|_| IssuerError::Invalid {
            path: dir.join(name),
            reason: "not PEM text".to_string(),
        })
    };
    let ca = Ca::from_pem(text(0, ISSUER_CERT)?, text(1, ISSUER_KEY)?).map_err(|e| {
        IssuerError::Invalid {
            path: dir.join(file_at_fault(&e)),
            reason: e.to_string(),
        }
    })?;
    let anchors = TrustBundle::from_pem(text(2, ANCHORS)?).map_err(|e| IssuerError::Invalid {
        path: dir.join(ANCHORS),
        reason: e.to_string(),
    })?;
    let anchors_not_after =
        first_expiry(text(2, ANCHORS)?).map_err(|reason| IssuerError::Invalid {
            path: dir.join(ANCHORS),
            reason,
        })?;

    // Sign a throwaway certificate and check it as a peer would.
    let unverifiable = |reason: String| IssuerError::Unverifiable {
        dir: dir.display().to_string(),
        reason,
    };
    let probe = SpiffeId::new(trust_domain, "weft", "issuer-check")
        .map_err(|e| unverifiable(e.to_string()))?;
    let req = new_key_and_csr(&probe).map_err(|e| unverifiable(e.to_string()))?;
    let signed = ca
        .sign_csr(
            &req.csr_der,
            &probe,
            Duration::from_secs(60),
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| unverifiable(e.to_string()))?;
    let chain: Vec<CertificateDer<'_>> = signed
        .chain_der
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    anchors
        .verify_workload(&chain, UnixTime::now(), provider)
        .map_err(|e| unverifiable(e.to_string()))?;
    Ok(Issuer {
        ca,
        anchors,
        anchors_not_after,
        raw,
    })
}

/// The earliest `notAfter` of the certificates in `pem`.
fn first_expiry(pem: &str) -> Result<OffsetDateTime, String> {
    use rustls::pki_types::pem::PemObject;
    let mut first: Option<OffsetDateTime> = None;
    for (index, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let der = der.map_err(|e| format!("certificate {index}: {e}"))?;
        let info = weft_certs::inspect(&der).map_err(|e| format!("certificate {index}: {e}"))?;
        first = Some(first.map_or(info.not_after, |f| f.min(info.not_after)));
    }
    first.ok_or_else(|| "no certificate".to_string())
}
