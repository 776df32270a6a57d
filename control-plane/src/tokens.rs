//! Checking the token a proxy sends with its CSR: which workload (namespace and service
//! account) does it prove?
//!
//! One trait, two real sources: a tokens file for local mode ([`TokensFile`]) and Kubernetes
//! TokenReview ([`crate::kube_tokens`]).

use std::{collections::HashMap, fmt, future::Future, path::PathBuf, pin::Pin, sync::Arc};

use arc_swap::ArcSwap;

use crate::files::{read_bounded, ReadError};

/// The workload a token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
}

/// Why a token proves nothing.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not acceptable (unknown, expired, wrong audience, not a service account).
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The token could not be checked now (the API server is away); the caller should retry.
    #[error("token could not be checked: {0}")]
    Unavailable(String),
}

/// A boxed future, so reviewers can be trait objects.
pub type ReviewFuture<'a> = Pin<Box<dyn Future<Output = Result<Workload, TokenError>> + Send + 'a>>;

/// Something that can tell which workload a token belongs to.
pub trait TokenReviewer: Send + Sync + fmt::Debug + 'static {
    /// Reviews `token`. Must not log the token.
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a>;
}

/// Tokens from a file, for local mode. One token per line:
///
/// ```text
/// # token                            namespace  service-account
/// 9f86d081884c7d659a2feaa0c55ad015   shop       web
/// ```
///
/// Blank lines and `#` comments are ignored. The file is re-read when it changes, so tokens can
/// be added or revoked without a restart; a file that fails to parse leaves the previous tokens
/// in force. Tokens are kept as SHA-256 digests, never in the clear, and looked up by digest.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    tokens: ArcSwap<Tokens>,
}

#[derive(Debug, Default)]
struct Tokens {
    /// The raw file, to notice changes.
    raw: Vec<u8>,
    by_digest: HashMap<[u8; 32], Workload>,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl TokensFile {
    /// Loads `path`; fails if it cannot be read or parsed.
    pub fn load(path: PathBuf) -> Result<Arc<Self>, TokensFileError> {
        let raw = read(&path)?;
        let tokens = parse(&path, raw)?;
        Ok(Arc::new(Self {
            path,
            tokens: ArcSwap::from_pointee(tokens),
        }))
    }

    /// Re-reads the file if it changed. Returns whether new tokens took effect; on error the
    /// old tokens stay.
    pub fn reload(&self) -> Result<bool, TokensFileError> {
        let raw = read(&self.path)?;
        if raw == self.tokens.load().raw {
            return Ok(false);
        }
        let tokens = parse(&self.path, raw)?;
        self.tokens.store(Arc::new(tokens));
        Ok(true)
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.tokens.load().by_digest.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file this reads.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl TokenReviewer for TokensFile {
    fn review<'a>(&'a self, token: &'a str) -> ReviewFuture<'a> {
        let found = self.tokens.load().by_digest.get(&digest(token)).cloned();
        Box::pin(async move {
            found.ok_or_else(|| TokenError::Rejected("not a known token".to_string()))
        })
    }
}

/// Largest tokens file read; a bound on what a mistaken path can make us hold.
const MAX_FILE_BYTES: u64 = 4 << 20;

fn read(path: &std::path::Path) -> Result<Vec<u8>, TokensFileError> {
    read_bounded(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadError::Io(source) => TokensFileError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadError::TooLarge(max) => TokensFileError::Parse {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("larger than {max} bytes"),
        },
    })
}

fn parse(path: &std::path::Path, raw: Vec<u8>) -> Result<Tokens, TokensFileError> {
    let fail = |line: usize, reason: String| TokensFileError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(&raw).map_err(|e| fail(0, format!("not UTF-8: {e}")))?;
    let mut by_digest = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, namespace, service_account] = fields[..] else {
            return Err(fail(
                n,
                format!(
                    "expected `token namespace service-account`, found {} fields",
                    fields.len()
                ),
            ));
        };
        if token.len() < 16 {
            return Err(fail(n, "token shorter than 16 characters".to_string()));
        }
        // The identity must be one the CA can sign: check it now, not at the first request.
        weft_certs::SpiffeId::new("cluster.local", namespace, service_account)
            .map_err(|e| fail(n, e.to_string()))?;
        let workload = Workload {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        if by_digest.insert(digest(token), workload).is_some() {
            return Err(fail(n, "token listed twice".to_string()));
        }
    }
    Ok(Tokens { raw, by_digest })
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, contents).expect("write");
        (dir, path)
    }

    #[tokio::test]
    async fn known_tokens_prove_their_workload_and_others_are_rejected() {
        let (_dir, path) =
            file("# comment\n\naaaaaaaaaaaaaaaa shop web  # trailing\nbbbbbbbbbbbbbbbb pay api\n");
        let tokens = TokensFile::load(path).expect("load");
        assert_eq!(tokens.len(), 2);
        let w = tokens.review("aaaaaaaaaaaaaaaa").await.expect("known");
        assert_eq!(
            w,
            Workload {
                namespace: "shop".into(),
                service_account: "web".into()
            }
        );
        let err = tokens
            .review("cccccccccccccccc")
            .await
            .expect_err("unknown");
        assert!(matches!(err, TokenError::Rejected(_)), "{err}");
        assert!(tokens.review("").await.is_err());
    }

    #[test]
    fn malformed_files_name_the_line_and_reason() {
        for (contents, line, reason) in [
            ("aaaaaaaaaaaaaaaa shop\n", 1, "found 2 fields"),
            ("# x\nshort shop web\n", 2, "shorter than 16"),
            ("aaaaaaaaaaaaaaaa Shop! web\n", 1, "namespace"),
            (
                "aaaaaaaaaaaaaaaa a b\naaaaaaaaaaaaaaaa c d\n",
                2,
                "listed twice",
            ),
        ] {
            let (_dir, path) = file(contents);
            let err = TokensFile::load(path).expect_err(contents);
            let msg = err.to_string();
            assert!(
                matches!(err, TokensFileError::Parse { line: l, .. } if l == line),
                "{contents:?}: {msg}"
            );
            assert!(msg.contains(reason), "{contents:?}: {msg}");
        }
        let err = TokensFile::load(PathBuf::from("/nonexistent/tokens")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/tokens"), "{err}");
    }

    #[tokio::test]
    async fn reload_swaps_tokens_and_a_bad_edit_keeps_the_old_ones() {
        let (_dir, path) = file("aaaaaaaaaaaaaaaa shop web\n");
        let tokens = TokensFile::load(path.clone()).expect("load");
        assert!(!tokens.reload().expect("unchanged"));

        std::fs::write(&path, "bbbbbbbbbbbbbbbb shop web\n").expect("write");
        assert!(tokens.reload().expect("changed"));
        assert!(tokens.review("aaaaaaaaaaaaaaaa").await.is_err(), "revoked");
        assert!(tokens.review("bbbbbbbbbbbbbbbb").await.is_ok(), "added");

        std::fs::write(&path, "broken\n").expect("write");
        assert!(tokens.reload().is_err());
        assert!(tokens.review("bbbbbbbbbbbbbbbb").await.is_ok(), "kept");
    }
}
