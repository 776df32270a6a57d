//! `weft-control-plane`: see the library docs, and `--help`.

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let args = weft_control_plane::Args::parse();
    if let Err(e) = weft_control_plane::init_logging(&args.log, &args.log_format) {
        eprintln!("weft-control-plane: {e:#}");
        return std::process::ExitCode::from(64);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-control-plane: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    rt.spawn(signals(shutdown.clone()));
    match rt.block_on(weft_control_plane::run(args, shutdown)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("weft-control-plane: {e:#}");
            std::process::ExitCode::FAILURE
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
