//! The cluster's certificates, made fresh for every cluster: one CA that signs the API server's
//! serving certificate, the kubelet's, and one client certificate per identity the components
//! use (as kubeadm lays them out, with fewer files: one CA serves clients and servers), plus the
//! service-account signing key. Files are PEM in the cluster's `pki/` folder, keys mode 0600.
//!
//! Who is who follows the API server's bootstrap RBAC: `system:kube-controller-manager`,
//! `system:kube-scheduler` and `system:kube-proxy` are bound to their roles by name, the
//! kubelet is `system:node:<node>` in group `system:nodes` (the Node authorizer), and the
//! admin and the API server's kubelet client are in `system:masters`.

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// How long the cluster's certificates live: a test cluster lives minutes, a `make cluster`
/// session a working day or two.
const LIFETIME: Duration = Duration::days(7);

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// The files of a cluster's PKI.
#[derive(Debug)]
pub struct Pki {
    /// The CA every component trusts, for servers and clients.
    pub ca: Pair,
    /// The API server's serving certificate.
    pub apiserver: Pair,
    /// The API server's client certificate towards kubelets (logs, exec).
    pub apiserver_kubelet_client: Pair,
    /// The kubelet's serving certificate.
    pub kubelet_serving: Pair,
    /// The service-account token signing key (private) ...
    pub sa_key: PathBuf,
    /// ... and its public half, what the API server checks tokens with.
    pub sa_pub: PathBuf,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// Where the API server is reached, for its certificate's names.
#[derive(Debug, Clone, Copy)]
pub struct ApiAddresses {
    /// The node address it advertises.
    pub advertise: IpAddr,
    /// The `kubernetes` Service's cluster IP.
    pub service: IpAddr,
}

impl Pki {
    /// Makes the CA, the servers' certificates and the service-account key in `dir`.
    pub fn create(dir: &Path, node: &str, api: ApiAddresses) -> Result<Pki> {
        fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let now = OffsetDateTime::now_utc() - Duration::minutes(5);

        let ca_key = key("the CA")?;
        let mut ca_params = params("weft-k8s-lab CA", now);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki("the CA"))?;
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut pki = Pki {
            ca,
            apiserver: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            apiserver_kubelet_client: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            kubelet_serving: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            dir: dir.to_path_buf(),
            issuer,
        };

        let mut names: Vec<SanType> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ]
        .into_iter()
        .map(dns)
        .collect::<Result<_>>()?;
        names.extend(
            [api.advertise, api.service, IpAddr::from([127, 0, 0, 1])]
                .into_iter()
                .map(SanType::IpAddress),
        );
        pki.apiserver = pki.server("apiserver", "kube-apiserver", names)?;
        pki.kubelet_serving = pki.server(
            "kubelet-serving",
            &format!("system:node:{node}"),
            vec![dns(node)?, SanType::IpAddress(api.advertise)],
        )?;
        pki.apiserver_kubelet_client = pki.client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        )?;

        let sa = key("the service-account signing key")?;
        write_secret(&pki.sa_key, &sa.serialize_pem())?;
        fs::write(&pki.sa_pub, sa.public_key_pem())
            .map_err(Error::io(format!("write {}", pki.sa_pub.display())))?;
        Ok(pki)
    }

    /// A client certificate for user `user` in group `group`, signed by the CA, written as
    /// `<file>.crt` and `<file>.key`.
    pub fn client(&self, file: &str, user: &str, group: Option<&str>) -> Result<Pair> {
        let now = OffsetDateTime::now_utc() - Duration::minutes(5);
        let mut params = params(user, now);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn server(&self, file: &str, name: &str, sans: Vec<SanType>) -> Result<Pair> {
        let now = OffsetDateTime::now_utc() - Duration::minutes(5);
        let mut params = params(name, now);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, mut params: CertificateParams) -> Result<Pair> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = key(file)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki(file))?;
        write_pair(&self.dir, file, &cert.pem(), &key.serialize_pem())
    }
}

fn params(common_name: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = now;
    params.not_after = now + LIFETIME;
    params
}

fn key(what: &str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki(what))
}

fn dns(name: &str) -> Result<SanType> {
    Ok(SanType::DnsName(
        name.to_string().try_into().map_err(pki(name))?,
    ))
}

fn pki(what: &str) -> impl FnOnce(rcgen::Error) -> Error {
    let what = what.to_string();
    move |source| Error::Pki { what, source }
}

fn write_pair(dir: &Path, file: &str, cert: &str, key: &str) -> Result<Pair> {
    let pair = Pair {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    fs::write(&pair.cert, cert).map_err(Error::io(format!("write {}", pair.cert.display())))?;
    write_secret(&pair.key, key)?;
    Ok(pair)
}

fn write_secret(path: &Path, pem: &str) -> Result<()> {
    fs::write(path, pem).map_err(Error::io(format!("write {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("chmod 0600 {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_every_file_with_private_keys_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::create(
            dir.path(),
            "weft-node",
            ApiAddresses {
                advertise: [198, 18, 0, 1].into(),
                service: [198, 19, 0, 1].into(),
            },
        )
        .expect("pki");
        let admin = pki
            .client("admin", "weft-admin", Some("system:masters"))
            .expect("client");
        for pair in [&pki.ca, &pki.apiserver, &pki.kubelet_serving, &admin] {
            let cert = fs::read_to_string(&pair.cert).expect("cert");
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
            let mode = fs::metadata(&pair.key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", pair.key.display());
        }
        let public = fs::read_to_string(&pki.sa_pub).expect("sa.pub");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    }
}
