//! `weftctl inject` and `weftctl uninject`: the injector's own code (`weft-injector-core`) over
//! manifests, offline, as `linkerd inject` does. YAML or JSON in (files or stdin, many
//! documents, `List`s), YAML out on stdout, one line per workload on stderr saying what was
//! done. `weftctl inject | weftctl inject` changes nothing the second time.

use std::{
    io::{Read, Write},
    path::PathBuf,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::Value;
use weft_injector_core::{inject::Config, manifest};

/// The most input read: manifests are text a person wrote, not data sets.
const MAX_INPUT: u64 = 64 << 20;

#[derive(clap::Args, Debug)]
pub(crate) struct InjectArgs {
    /// Manifests to read (`-` or none: standard input).
    files: Vec<PathBuf>,
    /// The trust anchors (PEM) the proxies verify peers with, as the chart holds them.
    #[arg(long)]
    trust_anchors: PathBuf,
    /// The proxy's image.
    #[arg(long, default_value_t = format!("{}:{}", weft_injector_core::DEFAULT_PROXY_IMAGE, env!("CARGO_PKG_VERSION")))]
    proxy_image: String,
    /// The init container's image.
    #[arg(long, default_value_t = format!("{}:{}", weft_injector_core::DEFAULT_INIT_IMAGE, env!("CARGO_PKG_VERSION")))]
    init_image: String,
    /// The control plane's gRPC address.
    #[arg(long, default_value = weft_injector_core::DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// Weft's own namespace (never injected).
    #[arg(long, default_value = weft_injector_core::DEFAULT_NAMESPACE)]
    weft_namespace: String,
    /// The CNI plugin redirects traffic: no init container.
    #[arg(long)]
    cni: bool,
    /// Nodes older than Kubernetes 1.29: the proxy as a classic first container (Jobs are then
    /// left alone).
    #[arg(long)]
    classic_sidecar: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct UninjectArgs {
    /// Manifests to read (`-` or none: standard input).
    files: Vec<PathBuf>,
}

pub(crate) fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let anchors = std::fs::read_to_string(&args.trust_anchors)
        .with_context(|| format!("read the trust anchors {}", args.trust_anchors.display()))?;
    if !anchors.contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "{}: no PEM certificate in it (the trust anchors, as `weftctl certs` writes them)",
            args.trust_anchors.display()
        );
    }
    let config = Config {
        cni: args.cni,
        native_sidecars: !args.classic_sidecar,
        ..Config::new(
            args.proxy_image,
            args.init_image,
            args.control_plane,
            anchors,
        )
    };
    let weft_namespace = args.weft_namespace;
    each_document(&args.files, "injected", &mut |doc, reports| {
        manifest::inject(doc, &config, &weft_namespace, reports).map_err(Into::into)
    })
}

pub(crate) fn uninject(args: UninjectArgs) -> anyhow::Result<()> {
    each_document(&args.files, "uninjected", &mut |doc, reports| {
        manifest::uninject(doc, reports).map_err(Into::into)
    })
}

type Treat<'a> = dyn FnMut(&mut Value, &mut Vec<manifest::Report>) -> anyhow::Result<()> + 'a;

/// Reads every document of every input, treats it, writes it out as YAML (`---` between
/// documents) and reports each workload on stderr. Nothing is written when any document fails.
fn each_document(files: &[PathBuf], done: &str, treat: &mut Treat<'_>) -> anyhow::Result<()> {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut out = String::new();
    let mut reports = Vec::new();
    for file in files {
        let text = read(file)?;
        let name = if file.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            file.display().to_string()
        };
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let mut doc = Value::deserialize(document)
                .with_context(|| format!("{name}: document {}", i + 1))?;
            if doc.is_null() {
                continue; // an empty document (a trailing `---`)
            }
            treat(&mut doc, &mut reports).with_context(|| format!("{name}: document {}", i + 1))?;
            if !out.is_empty() {
                out.push_str("---\n");
            }
            out.push_str(&serde_yaml::to_string(&doc).context("write YAML")?);
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("write the manifests")?;
    for report in reports {
        match report.skipped {
            None => eprintln!("{} {done}", report.object),
            Some(why) => eprintln!("{} skipped: {why}", report.object),
        }
    }
    Ok(())
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text))
    };
    read.with_context(|| format!("read {}", file.display()))?;
    if text.len() as u64 > MAX_INPUT {
        bail!("{}: more than {MAX_INPUT} bytes", file.display());
    }
    Ok(text)
}
