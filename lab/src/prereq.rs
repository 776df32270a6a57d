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
    let mut why: Vec<String> = missing_tools(&TOOLS).into_iter().collect();
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

/// Why a test that runs `tools` in network namespaces cannot run here, if it cannot: not root,
/// or some of `tools` not on `PATH`. For tests that need less than the whole lab (one
/// namespace and iptables, say).
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    let mut why = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        why.push("needs root for network namespaces and iptables".to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if !absent.is_empty() {
        why.push(format!("{} not found on PATH", absent.join(", ")));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// For tests: `true` if the lab can run here ([`missing`]); otherwise the loud skip of
/// [`run_or_skip`].
pub fn should_run(test: &str) -> bool {
    run_or_skip(test, missing())
}

/// For tests: `true` if `why_not` is `None`. Otherwise prints `SKIPPED: <test>: <why_not>`
/// straight to stderr (a passing test's captured output is never shown) and returns `false`,
/// or, with `WEFT_REQUIRE_NETNS_TESTS=1`, panics with the reason. Every root-only test tier
/// skips through here, so CI's "a missing prerequisite is a failure" holds for all of them.
pub fn run_or_skip(test: &str, why_not: Option<String>) -> bool {
    run_or_skip_unless(REQUIRE_ENV, test, why_not)
}

/// [`run_or_skip`] for a tier of its own: `require_env=1` turns the skip into a failure (the
/// k8s tier's is `WEFT_REQUIRE_K8S_TESTS`).
pub fn run_or_skip_unless(require_env: &str, test: &str, why_not: Option<String>) -> bool {
    let Some(reason) = why_not else {
        return true;
    };
    let required = std::env::var(require_env).is_ok_and(|v| v == "1");
    assert!(!required, "{test}: {reason}, and {require_env}=1");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    false
}
