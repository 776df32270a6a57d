//! `weftctl`: the Weft command line.

mod certs;
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a usage error (`EX_USAGE`), as the proxy uses for bad configuration.
const EXIT_USAGE: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "weftctl",
    version,
    about = "The Weft service mesh command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trust anchors, issuers and certificates.
    #[command(subcommand)]
    Certs(certs::Certs),
    /// A live mesh on this machine: pods as network namespaces on the reference CNI bridge,
    /// proxies, the control plane and traffic, with a live table (needs root; Ctrl-C stops).
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Certs(cmd) => certs::run(cmd),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
