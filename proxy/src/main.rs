//! `weft-proxy`: parse the config, start logging, build the app, serve, drain.

use std::process::ExitCode;

use anyhow::Context as _;
use tracing::{info, warn};
use weft_proxy::{
    config::{self, Command, Config, Env, Layered},
    drain::Drain,
    telemetry,
};

/// Exit status for a configuration error (`EX_USAGE` of sysexits.h).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let flags = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(flags)) => flags,
        Ok(Command::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("weft-proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::AwaitReady { timeout }) => return await_ready(timeout),
        Err(e) => return config_error(e),
    };
    let config = match Config::from_source(&Layered(flags, Env)) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    // On AMD, start again with glibc's memcpy tuned (`weft_proxy::memcpy`), before any thread.
    let untuned = weft_proxy::memcpy::restart_tuned().err();
    match run(config, untuned) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy: {e:#}");
            let config_error = e
                .downcast_ref::<weft_proxy::app::BuildError>()
                .is_some_and(|e| e.is_config());
            if config_error {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `await-ready`: the admin port from `WEFT_ADMIN_PORT` (the one the proxy itself reads).
fn await_ready(timeout: std::time::Duration) -> ExitCode {
    let port = match std::env::var(config::keys::ADMIN_PORT) {
        Ok(v) => match v.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                eprintln!(
                    "weft-proxy await-ready: {}={v:?} is not a port",
                    config::keys::ADMIN_PORT
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Err(_) => weft_pod::ids::ADMIN_PORT,
    };
    match weft_proxy::await_ready::await_ready(port, timeout) {
        Ok(took) => {
            println!("weft-proxy await-ready: ready after {took:.1?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-proxy await-ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: config::ConfigError) -> ExitCode {
    eprintln!("weft-proxy: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn run(config: Config, untuned: Option<std::io::Error>) -> anyhow::Result<()> {
    let log = telemetry::init(&config.log, config.log_format).context("logging")?;
    info!(version = env!("CARGO_PKG_VERSION"), config = ?config, "starting");
    if let Some(e) = untuned {
        warn!(error = %e, "could not start again with memcpy tuned for this AMD CPU; going on");
    }
    // Each proxied connection holds two descriptors; the default soft limit (often 1024) is far
    // below what a busy pod needs. Raise it to the hard limit, as Go's runtime does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(nofile = n, "file descriptor limit"),
        Err(e) => warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("weft-proxy")
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(async {
        let app = weft_proxy::build(config, Some(log)).await?;
        tokio::spawn(on_signals(app.drain()));
        app.run().await?;
        Ok(())
    })
}

/// The first SIGTERM or SIGINT starts the drain; a second one exits at once.
async fn on_signals(drain: Drain) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for SIGTERM/SIGINT; use POST /shutdown to stop");
        return;
    };
    for n in 0..2 {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if n == 0 {
            info!(signal = name, "draining");
            drain.start();
        } else {
            warn!(signal = name, "second signal: exiting without waiting");
            std::process::exit(1);
        }
    }
}
