//! What the lab needs from the machine, and the loud skip for tests when it is missing.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// Set to `1` (CI does) to turn a skip into a failure.
pub const REQUIRE_ENV: &str = "WEFT_REQUIRE_NETNS_TESTS";

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The commands the lab runs.
const TOOLS: [&str; 7] = [
    "ip",
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
    "tcpdump",
    "setpriv",
];
/// The reference plugins the network list uses.
const PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

/// Why the lab cannot run here, if it cannot: not root, or tools or plugins missing.
pub fn missing() -> Option<String> {
    let mut why = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        why.push("needs root for network namespaces and iptables".to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let tools: Vec<&str> = TOOLS
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if !tools.is_empty() {
        why.push(format!("{} not found on PATH", tools.join(", ")));
    }
    let plugins: Vec<PathBuf> = PLUGINS
        .into_iter()
        .map(|p| Path::new(REFERENCE_PLUGIN_DIR).join(p))
        .filter(|p| !p.is_file())
        .collect();
    if !plugins.is_empty() {
        let list: Vec<String> = plugins.iter().map(|p| p.display().to_string()).collect();
        why.push(format!(
            "{} missing (Debian package containernetworking-plugins)",
            list.join(", ")
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// For tests: `true` if `test` can run. Otherwise prints `SKIPPED: <test>: <reason>` straight
/// to stderr (a passing test's captured output is never shown) and returns `false`, or, with
/// `WEFT_REQUIRE_NETNS_TESTS=1`, panics with the reason.
pub fn should_run(test: &str) -> bool {
    let Some(reason) = missing() else {
        return true;
    };
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    assert!(!required, "{test}: {reason}, and {REQUIRE_ENV}=1");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    false
}
