//! `weft-cni`: Weft's chained CNI plugin. The container runtime runs it after the plugin that
//! creates the pod's interface; it installs the redirect rules inside meshed pods' network
//! namespaces and passes the previous result through. See `cni/README.md`.
//!
//! Exits 0 on success; on an error, prints the CNI error on stdout (as the spec asks) and exits
//! 64 when the input was wrong (network config, environment, version) or 1 when the work failed.

use std::{io::Read, process::ExitCode};

use weft_cni::{
    logging,
    plugin::{self, Env},
};
use weft_cni_core::spec::MAX_CONFIG_BYTES;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // One byte more than the limit, so an oversized config is refused rather than cut short.
    if let Err(e) = std::io::stdin()
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut stdin)
    {
        eprintln!("weft-cni: cannot read the network config from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let outcome = plugin::run(&Env::from_process(), &stdin, &logging::to_file);
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    ExitCode::from(outcome.exit.code())
}
