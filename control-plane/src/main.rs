//! `weft-control-plane`: see the library docs, and `--help`.
//!
//! Exit codes: 0 after a clean shutdown (and for `--help`, `--version`), 64 for bad usage or
//! configuration (flags, the issuer directory, the tokens file, the config source at start),
//! 1 for a failure at run time.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use weft_control_plane::{EXIT_CONFIG, EXIT_RUNTIME};

fn main() -> ExitCode {
    let args = match weft_control_plane::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // clap's own rendering: usage errors on stderr, --help and --version on stdout.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = weft_control_plane::init_logging(&args.log, &args.log_format) {
        eprintln!("weft-control-plane: {e}");
        return ExitCode::from(e.exit_code());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-control-plane: starting the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let shutdown = CancellationToken::new();
    rt.spawn(signals(shutdown.clone()));
    match rt.block_on(weft_control_plane::run(args, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, config = e.is_config(), "the control plane stopped");
            eprintln!("weft-control-plane: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
