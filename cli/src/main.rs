//! `weftctl`: the Weft command line.
//!
//! Exit status: 0 on success (and for `--help` and `--version`), 64 (`EX_USAGE`) for a bad
//! command line, whatever clap refuses, values included, and 1 when the command itself fails.

/// `println!` that ignores a closed stdout. Ctrl-C on `weftctl demo | tee log` ends `tee`
/// first; `println!` would then panic on the broken pipe in the middle of the cleanup, which
/// must not depend on anyone reading.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout (see [`say!`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod certs;
mod check;
mod demo;
mod inject;
mod kubeconfig;
mod lab;
mod stat;
mod tap;

use std::process::ExitCode;

use clap::{error::ErrorKind, Parser, Subcommand};

/// Exit status for a usage error (`EX_USAGE`), as the proxy uses for bad configuration.
const EXIT_USAGE: u8 = 64;
/// Exit status when a well-formed command fails while it runs.
const EXIT_FAILURE: u8 = 1;

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
    /// A folder of Kubernetes YAML as a live mesh on this machine (needs root).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Adds the proxy to the pods and pod templates of Kubernetes manifests, as the injector
    /// webhook would (YAML or JSON in, YAML out).
    Inject(inject::InjectArgs),
    /// Takes out what `inject` added.
    Uninject(inject::UninjectArgs),
    /// Checks that Weft can be installed on the cluster (`--pre`) or that it is healthy there:
    /// a line per check, each with its fix; exit 1 when one failed.
    Check(check::CheckArgs),
    /// The golden metrics of namespaces, workloads, pods, Services or routes over a window:
    /// success rate, requests per second, latency p50/p95/p99 and the share over mTLS (as
    /// `linkerd viz stat`), from Prometheus or straight from the proxies.
    Stat(stat::StatArgs),
    /// A caller's routes and each route's backends: success, requests per second, latency,
    /// timeouts and retries (as `linkerd viz stat-outbound`).
    StatOutbound(stat::OutboundArgs),
    /// A live stream of the requests meshed pods serve (method, authority, path, status,
    /// latency, identities, route, backend), from their proxies' /tap.
    Tap(tap::TapArgs),
    /// The busiest paths of meshed pods, live, from their proxies' /tap.
    Top(tap::TopArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                // Everything else, a missing subcommand (which prints the help) included, is
                // a command line clap refused.
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    let result = match cli.command {
        Command::Certs(cmd) => certs::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Inject(args) => inject::inject(args),
        Command::Uninject(args) => inject::uninject(args),
        Command::Check(args) => check::run(args),
        Command::Stat(args) => stat::stat(args),
        Command::StatOutbound(args) => stat::stat_outbound(args),
        Command::Tap(args) => tap::tap(args),
        Command::Top(args) => tap::top(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftctl: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
