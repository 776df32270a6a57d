//! The webhook's serving certificate, read from two files and read again when they change
//! (cert-manager, or the chart on upgrade, rewrites them in place; a Secret mounted as a volume
//! is swapped by the kubelet): each new handshake gets the newest pair that loaded, and a pair
//! that does not load leaves the last good one serving.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// How often the files are looked at.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The certificate and key files, and the pair in force.
#[derive(Debug)]
pub(crate) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when they were read.
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

impl Reloading {
    /// Reads the pair once: a webhook that cannot serve TLS at start is refused at start.
    pub(crate) fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let stamps = (modified(cert), modified(key));
        let loaded = read(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Loaded {
                key: Arc::new(loaded),
                stamps,
            }),
        })
    }

    /// Reads the pair again if either file changed: `Ok(true)` when a new pair is in force,
    /// `Ok(false)` when nothing changed, `Err` (the last good pair serving on) when the new
    /// files do not load.
    pub(crate) fn reload(&self) -> anyhow::Result<bool> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let seen = self
            .current
            .read()
            .map(|c| c.stamps)
            .unwrap_or((None, None));
        if stamps == seen {
            return Ok(false);
        }
        let result = read(&self.cert, &self.key, &self.provider);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // Remembered either way: a bad pair is reported once, not every few seconds.
        current.stamps = stamps;
        current.key = Arc::new(result?);
        Ok(true)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    use anyhow::Context as _;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("read the serving certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in it", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("read the serving key {}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{}: the key cannot sign", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.weft.svc")])
            .expect("a certificate");
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert.cert.pem()).expect("write");
        std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write");
        (c, k)
    }

    fn serial(r: &Reloading) -> Vec<u8> {
        r.current.read().expect("lock").key.cert[0].to_vec()
    }

    #[test]
    fn a_new_pair_is_taken_and_a_bad_one_leaves_the_last_good_serving() {
        let dir = std::env::temp_dir().join(format!("weft-injector-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (c, k) = pair(&dir, "one");
        let tls = Reloading::load(&c, &k, provider).expect("loads");
        let first = serial(&tls);
        assert!(!tls.reload().expect("unchanged"));

        // Rewritten in place (mtimes have a coarse grain on some file systems: step them).
        std::thread::sleep(Duration::from_millis(20));
        pair(&dir, "two");
        let later = SystemTime::now() + Duration::from_secs(2);
        for f in [&c, &k] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .and_then(|f| f.set_modified(later))
                .expect("touch");
        }
        assert!(tls.reload().expect("a new pair"));
        let second = serial(&tls);
        assert_ne!(first, second);

        std::fs::write(&k, "not a key").expect("write");
        let even_later = later + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&k)
            .and_then(|f| f.set_modified(even_later))
            .expect("touch");
        assert!(tls.reload().is_err(), "a bad key is reported");
        assert_eq!(serial(&tls), second, "the last good pair serves on");
        assert!(!tls.reload().expect("reported once"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
