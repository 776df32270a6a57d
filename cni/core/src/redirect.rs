//! The redirect config and the one rule set it renders.
//!
//! Both tables go through the `nat` table of the pod's own network namespace:
//!
//! - `PREROUTING -> WEFT_PREROUTING`: TCP arriving at the pod goes to the proxy's inbound port,
//!   except the inbound port itself (peer proxies connect to it directly), the admin port, and
//!   the skip-inbound ports.
//! - `OUTPUT -> WEFT_OUTPUT`: TCP the pod sends goes to the proxy's outbound port, except the
//!   proxy's own (its UID; without this rule every upstream connection would loop back into the
//!   proxy), loopback, and the skip-outbound ports and CIDRs. Its first rule is the proxy's
//!   redirect self-check: the proxy's own connection to the check port on loopback is sent to the
//!   outbound port, so the proxy can prove, continuously, that the hook, the chain and the
//!   redirect port are in place.
//!
//! Rules are rendered exactly as `iptables-save` prints them back (legacy and nft backends alike,
//! checked by the root-only tests in `cni/tests`), so "is what is installed what we want" is a
//! comparison of lines, and applying twice changes nothing.

use std::{fmt::Write as _, net::IpAddr};

use weft_pod::{ids, Cidr, CidrList, PortList};

use crate::multiport;

/// The chain that `PREROUTING` jumps to.
pub const PREROUTING_CHAIN: &str = "WEFT_PREROUTING";
/// The chain that `OUTPUT` jumps to.
pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";
/// Every chain the rule set owns; nothing else is ever created, changed or removed.
pub const CHAINS: [&str; 2] = [PREROUTING_CHAIN, OUTPUT_CHAIN];

/// The address family a rule set is for: `iptables` or `ip6tables`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// What to redirect where. [`Redirect::default`] is the contract in DESIGN.md, with the ports and
/// the UID of `weft_pod::ids`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub admin_port: u16,
    pub check_port: u16,
    pub skip_inbound_ports: PortList,
    pub skip_outbound_ports: PortList,
    pub skip_outbound_cidrs: CidrList,
}

/// Why a redirect config cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the proxy UID is 0: the proxy must not run as root, and root's own traffic would escape the mesh")]
    RootProxy,
    #[error("the {what} port is 0")]
    ZeroPort { what: &'static str },
    #[error("the {a} and {b} ports are both {port}; each needs its own port")]
    SamePort {
        a: &'static str,
        b: &'static str,
        port: u16,
    },
}

/// The rules for one family, each line as `iptables-save` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub family: Family,
    /// Our chains with their rules (`-A WEFT_... ...`), in [`CHAINS`] order.
    pub chains: Vec<(&'static str, Vec<String>)>,
    /// The jumps from the built-in chains (`-A PREROUTING ... -j WEFT_PREROUTING`).
    pub jumps: Vec<String>,
}

impl Family {
    /// Loopback as a `-d` match.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, net: &Cidr) -> bool {
        matches!(
            (self, net.addr()),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }

    /// The command that applies this family's rules.
    pub fn restore_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    pub fn save_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl Default for Redirect {
    fn default() -> Self {
        Self {
            proxy_uid: ids::PROXY_UID,
            inbound_port: ids::INBOUND_PORT,
            outbound_port: ids::OUTBOUND_PORT,
            admin_port: ids::ADMIN_PORT,
            check_port: ids::REDIRECT_CHECK_PORT,
            skip_inbound_ports: PortList::default(),
            skip_outbound_ports: PortList::default(),
            skip_outbound_cidrs: CidrList::default(),
        }
    }
}

impl Redirect {
    /// Checks what rendering relies on: a non-root UID and four distinct, non-zero ports.
    pub fn validate(&self) -> Result<(), RedirectError> {
        if self.proxy_uid == 0 {
            return Err(RedirectError::RootProxy);
        }
        let ports = [
            ("inbound", self.inbound_port),
            ("outbound", self.outbound_port),
            ("admin", self.admin_port),
            ("redirect check", self.check_port),
        ];
        for (i, &(a, pa)) in ports.iter().enumerate() {
            if pa == 0 {
                return Err(RedirectError::ZeroPort { what: a });
            }
            if let Some(&(b, _)) = ports[i + 1..].iter().find(|(_, pb)| *pb == pa) {
                return Err(RedirectError::SamePort { a, b, port: pa });
            }
        }
        Ok(())
    }

    /// The rule set for one family. The skip-outbound CIDRs of the other family are left out.
    pub fn render(&self, family: Family) -> Result<RuleSet, RedirectError> {
        self.validate()?;
        let mut inbound = Vec::new();
        let pre = PREROUTING_CHAIN;
        inbound.push(format!(
            "-A {pre} -p tcp -m tcp --dport {} {} -j RETURN",
            self.inbound_port,
            comment("peer proxies connect to the inbound port directly"),
        ));
        inbound.push(format!(
            "-A {pre} -p tcp -m tcp --dport {} {} -j RETURN",
            self.admin_port,
            comment("the admin port is never redirected"),
        ));
        for group in multiport::groups(self.skip_inbound_ports.ranges()) {
            inbound.push(format!(
                "-A {pre} -p tcp -m multiport --dports {} {} -j RETURN",
                multiport::dports(group),
                comment("skip-inbound-ports reach the app directly"),
            ));
        }
        inbound.push(format!(
            "-A {pre} -p tcp {} -j REDIRECT --to-ports {}",
            comment("all other inbound TCP goes to the inbound port of the proxy"),
            self.inbound_port,
        ));

        let out = OUTPUT_CHAIN;
        let uid = self.proxy_uid;
        let mut outbound = vec![
            format!(
                "-A {out} -d {} -p tcp -m tcp --dport {} -m owner --uid-owner {uid} {} -j REDIRECT --to-ports {}",
                family.loopback(),
                self.check_port,
                comment("the redirect self-check of the proxy lands on its outbound port"),
                self.outbound_port,
            ),
            format!(
                "-A {out} -m owner --uid-owner {uid} {} -j RETURN",
                comment("traffic of the proxy itself is never redirected"),
            ),
            format!(
                "-A {out} -o lo {} -j RETURN",
                comment("loopback traffic stays inside the pod"),
            ),
        ];
        for group in multiport::groups(self.skip_outbound_ports.ranges()) {
            outbound.push(format!(
                "-A {out} -p tcp -m multiport --dports {} {} -j RETURN",
                multiport::dports(group),
                comment("skip-outbound-ports bypass the proxy"),
            ));
        }
        for net in self.skip_outbound_cidrs.iter().filter(|n| family.holds(n)) {
            // A `Cidr`'s host bits are clear, as iptables itself prints the rule back.
            outbound.push(format!(
                "-A {out} -d {net} {} -j RETURN",
                comment("skip-outbound-cidrs bypass the proxy"),
            ));
        }
        outbound.push(format!(
            "-A {out} -p tcp {} -j REDIRECT --to-ports {}",
            comment("all other outbound TCP goes to the outbound port of the proxy"),
            self.outbound_port,
        ));

        Ok(RuleSet {
            family,
            chains: vec![(PREROUTING_CHAIN, inbound), (OUTPUT_CHAIN, outbound)],
            jumps: vec![
                format!(
                    "-A PREROUTING -p tcp {} -j {PREROUTING_CHAIN}",
                    comment("inbound TCP goes through the Weft proxy"),
                ),
                format!(
                    "-A OUTPUT -p tcp {} -j {OUTPUT_CHAIN}",
                    comment("outbound TCP goes through the Weft proxy"),
                ),
            ],
        })
    }
}

impl RuleSet {
    /// `iptables-restore` input that installs this rule set on an empty `nat` table: what
    /// `weft-init --dry-run` prints. Applying to a table that may already hold it goes through
    /// [`crate::plan::apply`] instead.
    pub fn restore_input(&self) -> String {
        let mut text = String::from("*nat\n");
        for (chain, _) in &self.chains {
            let _ = writeln!(text, ":{chain} - [0:0]");
        }
        for (_, rules) in &self.chains {
            for rule in rules {
                text.push_str(rule);
                text.push('\n');
            }
        }
        for jump in &self.jumps {
            text.push_str(jump);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// A rule comment as `iptables-save` prints it. The texts are ours, never the user's, so no
/// quote or newline can reach the restore input through them; and they hold no character that
/// `iptables-save` would print escaped (it writes `'` as `\'`), so they read back as written.
fn comment(text: &str) -> String {
    debug_assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -:,.".contains(&b)),
        "{text}"
    );
    format!("-m comment --comment \"weft: {text}\"")
}

#[cfg(test)]
mod tests;
