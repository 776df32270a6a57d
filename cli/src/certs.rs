//! `weftctl certs`: make a trust anchor and an issuer, and read certificates.
//!
//! Files land in the layout the control plane reads with `--issuer DIR`: `issuer.crt`,
//! `issuer.key` and `anchors.pem`. Private keys are written owner-read-only (0600) and never
//! overwritten unless `--force`.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use time::OffsetDateTime;
use weft_certs::{inspect, Ca, SpiffeId};

#[derive(Subcommand, Debug)]
pub(crate) enum Certs {
    /// Make a self-signed trust anchor: DIR/anchor.crt and DIR/anchor.key.
    CreateAnchor {
        #[command(flatten)]
        common: Common,
        /// How long the anchor is valid.
        #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Make an issuer signed by an anchor: DIR/issuer.crt, DIR/issuer.key, DIR/anchors.pem.
    CreateIssuer {
        #[command(flatten)]
        common: Common,
        /// The anchor's certificate (PEM).
        #[arg(long)]
        anchor_cert: PathBuf,
        /// The anchor's private key (PEM).
        #[arg(long)]
        anchor_key: PathBuf,
        /// How long the issuer is valid (never past the anchor).
        #[arg(long, default_value = "1y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Print the SPIFFE ID, issuer and validity of every certificate in a PEM file.
    Inspect {
        /// A PEM file with one or more certificates.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub(crate) struct Common {
    /// The trust domain.
    #[arg(long, default_value = "cluster.local", value_parser = trust_domain)]
    trust_domain: String,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(cmd: Certs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        Certs::CreateAnchor { common, lifetime } => {
            let anchor = Ca::new_anchor(&common.trust_domain, lifetime, now)?;
            write(&common, "anchor.crt", anchor.cert_pem(), 0o644)?;
            write(&common, "anchor.key", &anchor.key_pem(), 0o600)?;
            say!(
                "trust anchor for {} valid until {}",
                common.trust_domain,
                anchor.not_after()
            );
            say!(
                "wrote {0}/anchor.crt and {0}/anchor.key (keep the key offline)",
                common.out.display()
            );
        }
        Certs::CreateIssuer {
            common,
            anchor_cert,
            anchor_key,
            lifetime,
        } => {
            let cert_pem = read(&anchor_cert)?;
            let anchor = Ca::from_pem(&cert_pem, &read(&anchor_key)?).with_context(|| {
                format!(
                    "loading the anchor from {} and {}",
                    anchor_cert.display(),
                    anchor_key.display()
                )
            })?;
            let issuer = anchor.new_issuer(&common.trust_domain, lifetime, now)?;
            write(&common, "issuer.crt", issuer.cert_pem(), 0o644)?;
            write(&common, "issuer.key", &issuer.key_pem(), 0o600)?;
            write(&common, "anchors.pem", &cert_pem, 0o644)?;
            say!(
                "issuer for {} valid until {}",
                common.trust_domain,
                issuer.not_after()
            );
            say!(
                "wrote {0}/issuer.crt, {0}/issuer.key and {0}/anchors.pem: the control plane's --issuer {0}",
                common.out.display()
            );
        }
        Certs::Inspect { file } => {
            let pem = read(&file)?;
            let mut count = 0;
            for (i, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
                let der = der.with_context(|| format!("certificate {i} of {}", file.display()))?;
                let info = inspect(&der)
                    .with_context(|| format!("certificate {i} of {}", file.display()))?;
                let ids: Vec<String> = info.spiffe_ids.iter().map(ToString::to_string).collect();
                say!("certificate {i}:");
                say!(
                    "  spiffe id:  {}",
                    if ids.is_empty() {
                        "-".into()
                    } else {
                        ids.join(", ")
                    }
                );
                say!("  subject:    {}", info.subject);
                say!("  issuer:     {}", info.issuer);
                say!("  ca:         {}", if info.is_ca { "yes" } else { "no" });
                say!("  not before: {}", info.not_before);
                say!(
                    "  not after:  {}{}",
                    info.not_after,
                    if info.not_after < now {
                        " (EXPIRED)"
                    } else {
                        ""
                    }
                );
                count += 1;
            }
            if count == 0 {
                bail!("{} holds no PEM certificate", file.display());
            }
        }
    }
    Ok(())
}

/// `--trust-domain`, checked while the command line is parsed, so a bad one is a usage error
/// (exit 64) like any other bad flag.
fn trust_domain(td: &str) -> Result<String, weft_certs::SpiffeIdError> {
    SpiffeId::new(td, "default", "default").map(|_| td.to_owned())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a file created with `mode` (so a key is never readable by others, not even briefly).
fn write(common: &Common, name: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.out)
        .with_context(|| format!("creating {}", common.out.display()))?;
    let path = common.out.join(name);
    if common.force && path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| {
            format!(
                "creating {} (it exists? use --force to replace it)",
                path.display()
            )
        })?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
