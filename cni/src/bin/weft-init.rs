//! `weft-init`: the init-container mode of Weft's traffic redirection. It runs in the pod's
//! network namespace (as the pod's first init container, with `NET_ADMIN` and `NET_RAW`) and
//! installs the same rule set as `weft-cni`. See `cni/README.md`.
//!
//! Exits 0 on success, 64 on bad usage (a bad flag or variable, a config that cannot be
//! rendered), 1 when the work fails (no iptables, a refused restore) or `--check` finds the rules
//! not in place.

use std::process::ExitCode;

use clap::Parser;
use weft_cni::{
    iptables::Iptables,
    redirector::{Ipv6, Redirector},
};
use weft_cni_core::{spec::Backend, Redirect};
use weft_pod::{ids, CidrList, PortList};

/// Exit status for bad usage or configuration (`EX_USAGE` of sysexits.h).
const EXIT_USAGE: u8 = 64;

/// Redirects the pod's TCP through the Weft proxy with iptables (nat table, IPv4 and IPv6).
#[derive(Debug, Parser)]
#[command(name = "weft-init", version)]
struct Args {
    /// The proxy's UID; its own traffic is never redirected.
    #[arg(long, env = "WEFT_PROXY_UID", default_value_t = ids::PROXY_UID)]
    proxy_uid: u32,
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = ids::INBOUND_PORT)]
    inbound_port: u16,
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = ids::OUTBOUND_PORT)]
    outbound_port: u16,
    #[arg(long, env = "WEFT_ADMIN_PORT", default_value_t = ids::ADMIN_PORT)]
    admin_port: u16,
    /// The proxy's redirect self-check port (nothing listens there).
    #[arg(long, env = "WEFT_REDIRECT_CHECK_PORT", default_value_t = ids::REDIRECT_CHECK_PORT)]
    check_port: u16,
    /// Inbound ports that reach the app directly: `22,9000-9100`.
    #[arg(long, env = "WEFT_SKIP_INBOUND_PORTS", default_value = "", value_parser = PortList::parse)]
    skip_inbound_ports: PortList,
    /// Outbound ports that bypass the proxy.
    #[arg(long, env = "WEFT_SKIP_OUTBOUND_PORTS", default_value = "", value_parser = PortList::parse)]
    skip_outbound_ports: PortList,
    /// Destinations that bypass the proxy: `10.96.0.0/12,fd00::/8`.
    #[arg(long, env = "WEFT_SKIP_OUTBOUND_CIDRS", default_value = "", value_parser = CidrList::parse)]
    skip_outbound_cidrs: CidrList,
    /// The iptables backend; `auto` uses the one that holds rules, else the system default.
    #[arg(long, env = "WEFT_IPTABLES_BACKEND", default_value = "auto", value_parser = backend)]
    iptables_backend: Backend,
    /// Whether to write IPv6 rules too.
    #[arg(long, env = "WEFT_IPV6", value_enum, default_value_t = Ipv6::Auto)]
    ipv6: Ipv6,
    /// Print the iptables-restore input and change nothing.
    #[arg(long, conflicts_with_all = ["remove", "check"])]
    dry_run: bool,
    /// Take every Weft rule away (nothing to remove is not an error).
    #[arg(long, conflicts_with = "check")]
    remove: bool,
    /// Exit 0 if exactly these rules are installed, 1 (saying what differs) if not.
    #[arg(long)]
    check: bool,
}

fn backend(s: &str) -> Result<Backend, String> {
    match s {
        "auto" => Ok(Backend::Auto),
        "nft" => Ok(Backend::Nft),
        "legacy" => Ok(Backend::Legacy),
        other => Err(format!("{other:?} is not auto, nft or legacy")),
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // clap prints the message (help and version on stdout, errors on stderr); its own
            // status for a usage error would be 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let redirect = Redirect {
        proxy_uid: args.proxy_uid,
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        admin_port: args.admin_port,
        check_port: args.check_port,
        skip_inbound_ports: args.skip_inbound_ports,
        skip_outbound_ports: args.skip_outbound_ports,
        skip_outbound_cidrs: args.skip_outbound_cidrs,
    };
    if let Err(e) = redirect.validate() {
        eprintln!("weft-init: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let families = args.ipv6.families();
    if args.dry_run {
        for &family in families {
            let rules = match redirect.render(family) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("weft-init: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            println!("# {family}: {} --noflush", family.restore_command());
            print!("{}", rules.restore_input());
        }
        return ExitCode::SUCCESS;
    }
    let iptables = match Iptables::resolve(args.iptables_backend) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("weft-init: {e}");
            return ExitCode::FAILURE;
        }
    };
    let redirector = Redirector { iptables, families };
    let backend = iptables.backend.name();
    let outcome = if args.remove {
        redirector
            .remove()
            .map(|()| format!("removed the Weft rules ({backend})"))
    } else if args.check {
        match redirector.check(&redirect) {
            Ok(Ok(())) => Ok(format!("the Weft rules are in place ({backend})")),
            Ok(Err(mismatch)) => {
                eprintln!("weft-init: the rules are not in place ({backend}): {mismatch}");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        }
    } else {
        redirector.apply(&redirect).map(|()| {
            format!(
                "installed the Weft rules ({backend}, {}): inbound to {}, outbound to {}, UID {} exempt",
                if families.len() == 2 { "IPv4 and IPv6" } else { "IPv4" },
                redirect.inbound_port,
                redirect.outbound_port,
                redirect.proxy_uid,
            )
        })
    };
    match outcome {
        Ok(line) => {
            println!("weft-init: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-init: {e}");
            ExitCode::FAILURE
        }
    }
}
