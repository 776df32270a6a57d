//! The cluster's identity material in its temp dir: a trust anchor, an issuer directory for
//! the control plane (`issuer.crt`, `issuer.key`, `anchors.pem`), and the local-mode tokens
//! file (`<token> <namespace> <service-account>` per line) with one token file per proxy.

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use weft_certs::Ca;

use crate::error::{Error, Result};

/// The trust domain of every identity in the lab.
pub const TRUST_DOMAIN: &str = "cluster.local";

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `spiffe://cluster.local/ns/<namespace>/sa/<service_account>`.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// Paths of the identity material; the files live as long as the cluster's temp dir.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes an anchor and an issuer under `dir/pki`. The proxies run as UID 2121, so the
    /// anchors and token files are world-readable; the issuer key is root's only.
    pub fn create(dir: &Path) -> Result<Pki> {
        let dir = dir.join("pki");
        let issuer_dir = dir.join("issuer");
        fs::create_dir_all(&issuer_dir)
            .map_err(Error::io(format!("mkdir {}", issuer_dir.display())))?;
        let now = time::OffsetDateTime::now_utc();
        let anchor = Ca::new_anchor(TRUST_DOMAIN, 10 * YEAR, now)?;
        let issuer = anchor.new_issuer(TRUST_DOMAIN, YEAR, now)?;
        let pki = Pki { dir };
        write(&pki.anchors(), anchor.cert_pem(), 0o644)?;
        write(&issuer_dir.join("anchors.pem"), anchor.cert_pem(), 0o644)?;
        write(&issuer_dir.join("issuer.crt"), issuer.cert_pem(), 0o644)?;
        write(&issuer_dir.join("issuer.key"), &issuer.key_pem(), 0o600)?;
        write(&pki.tokens(), "", 0o600)?;
        set_mode(&pki.dir, 0o755)?;
        Ok(pki)
    }

    /// The trust bundle the proxies read (`WEFT_TRUST_ANCHORS`).
    pub fn anchors(&self) -> PathBuf {
        self.dir.join("anchors.pem")
    }

    /// The control plane's `--issuer` directory.
    pub fn issuer_dir(&self) -> PathBuf {
        self.dir.join("issuer")
    }

    /// The control plane's `--tokens` file.
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// Registers a fresh token for `namespace`/`service_account` with the control plane and
    /// writes it to a file for one proxy (`WEFT_IDENTITY_TOKEN_FILE`); returns that file.
    pub fn token(&self, namespace: &str, service_account: &str, holder: &str) -> Result<PathBuf> {
        let token = format!("lab-{namespace}-{service_account}-{}", random_hex(16)?);
        let tokens = self.tokens();
        let mut all =
            fs::read_to_string(&tokens).map_err(Error::io(format!("read {}", tokens.display())))?;
        all.push_str(&format!("{token} {namespace} {service_account}\n"));
        // Replaced whole, so the control plane's poll never reads half a file.
        write(&tokens, &all, 0o600)?;
        let path = self.dir.join(format!("{holder}.token"));
        write(&path, &token, 0o644)?;
        Ok(path)
    }
}

/// `bytes` random bytes from the kernel, in hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `contents` to `path` through a temp file and a rename, with `mode`.
pub(crate) fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, contents).map_err(Error::io(format!("write {}", tmp.display())))?;
    set_mode(&tmp, mode)?;
    fs::rename(&tmp, path).map_err(Error::io(format!(
        "rename {} to {}",
        tmp.display(),
        path.display()
    )))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(Error::io(format!("chmod {mode:o} {}", path.display())))
}
