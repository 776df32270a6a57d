//! `weft-cni-install`: the chart's CNI DaemonSet. Installs `weft-cni` on its node, chains it
//! into the node's CNI configuration with a kubeconfig of its own, keeps all of it in place while
//! it runs and takes it away on SIGTERM or SIGINT. `weft-cni-install check` is the readiness
//! probe: exit 0 when the node has all of it, 1 saying what is missing. See
//! `weft_cni::install`.
//!
//! Exits 0 after a clean uninstall, 1 when the uninstall failed, 64 on bad usage.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use weft_cni::install::{api_server_url, Installer, Settings};

/// Exit status for bad usage or configuration (`EX_USAGE` of sysexits.h).
const EXIT_USAGE: u8 = 64;

/// Installs Weft's CNI plugin on this node and keeps it chained.
#[derive(Debug, Parser)]
#[command(name = "weft-cni-install", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The plugin binary to install.
    #[arg(
        long,
        env = "WEFT_CNI_PLUGIN",
        default_value = "/usr/local/bin/weft-cni"
    )]
    plugin: PathBuf,
    /// The node's CNI binary folder, as mounted in this container.
    #[arg(long, env = "WEFT_CNI_BIN_DIR", default_value = "/host/cni/bin")]
    bin_dir: PathBuf,
    /// The node's CNI configuration folder, as mounted in this container.
    #[arg(long, env = "WEFT_CNI_CONF_DIR", default_value = "/host/cni/net.d")]
    conf_dir: PathBuf,
    /// The same folder as the node sees it (where the plugin finds its kubeconfig).
    #[arg(long, env = "WEFT_CNI_HOST_CONF_DIR", default_value = "/etc/cni/net.d")]
    host_conf_dir: PathBuf,
    /// The API server's address as the node reaches it; by default the one Kubernetes gives
    /// every pod (`KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`).
    #[arg(long, env = "WEFT_CNI_API_SERVER")]
    api_server: Option<String>,
    #[arg(
        long,
        env = "WEFT_CNI_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_file: PathBuf,
    #[arg(
        long,
        env = "WEFT_CNI_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    ca_file: PathBuf,
    /// Namespaces whose pods the plugin leaves alone, comma-separated.
    #[arg(
        long,
        env = "WEFT_CNI_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    exclude_namespaces: Vec<String>,
    /// The plugin's log filter.
    #[arg(long, env = "WEFT_CNI_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// The plugin's log file on the node (its default: /var/log/weft-cni.log).
    #[arg(long, env = "WEFT_CNI_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// How often the files are checked, in milliseconds.
    #[arg(long, env = "WEFT_CNI_INTERVAL_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    interval_ms: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the plugin, its kubeconfig and its entry are in place; 1 saying what is not.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    let checking = matches!(args.command, Some(Command::Check));
    let settings = match settings(&args, !checking) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft-cni-install: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut installer = Installer::new(settings);
    if checking {
        return match installer.check() {
            Ok(path) => {
                println!("weft-cni is chained in {}", path.display());
                ExitCode::SUCCESS
            }
            Err(why) => {
                println!("weft-cni is not installed: {why}");
                ExitCode::FAILURE
            }
        };
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("weft-cni-install: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let interval = installer.settings().interval;
    tracing::info!(
        bin_dir = %installer.settings().bin_dir.display(),
        conf_dir = %installer.settings().conf_dir.display(),
        api_server = %installer.settings().api_server,
        "installing weft-cni"
    );
    let mut last_error = None;
    while !stop.load(Ordering::Relaxed) {
        match installer.reconcile() {
            Ok(round) => {
                if round.changed() || last_error.is_some() {
                    tracing::info!(
                        config = %round.chained.display(),
                        binary = round.binary_written,
                        kubeconfig = round.kubeconfig_written,
                        entry = round.config_written,
                        "weft-cni is chained"
                    );
                }
                last_error = None;
            }
            Err(e) => {
                // Each distinct problem once, not every round.
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!("{text}; trying again every {interval:?}");
                }
                last_error = Some(text);
            }
        }
        sleep_unless(&stop, interval);
    }
    match installer.uninstall() {
        Ok(unchained) => {
            tracing::info!(?unchained, "weft-cni removed from this node");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("removing weft-cni from this node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings from the flags; the API server's address only when `need_api` (the check does
/// not write a kubeconfig).
fn settings(args: &Args, need_api: bool) -> Result<Settings, String> {
    let api_server = match &args.api_server {
        Some(url) => url.clone(),
        None if !need_api => String::new(),
        None => {
            let var = |name| {
                std::env::var(name).map_err(|_| {
                    format!("{name} is not set; give --api-server (WEFT_CNI_API_SERVER)")
                })
            };
            api_server_url(
                &var("KUBERNETES_SERVICE_HOST")?,
                &var("KUBERNETES_SERVICE_PORT")?,
            )
        }
    };
    if need_api && !api_server.starts_with("https://") {
        return Err(format!(
            "--api-server {api_server:?} must be an https:// URL"
        ));
    }
    Ok(Settings {
        plugin: args.plugin.clone(),
        bin_dir: args.bin_dir.clone(),
        conf_dir: args.conf_dir.clone(),
        host_conf_dir: args.host_conf_dir.clone(),
        api_server,
        token_file: args.token_file.clone(),
        ca_file: args.ca_file.clone(),
        exclude_namespaces: args
            .exclude_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        log_level: args.log_level.clone(),
        log_file: args.log_file.clone(),
        interval: Duration::from_millis(args.interval_ms),
    })
}

/// Sleeps `total`, waking every 50 ms to see whether a signal asked to stop.
fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
