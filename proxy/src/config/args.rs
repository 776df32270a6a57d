//! The command line: `--kebab-name VALUE` for every variable of [`VARS`], `--help` and
//! `--version`.

use std::{collections::HashMap, ffi::OsString};

use super::{vars::VARS, ConfigError};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run with these flag values (keys are `WEFT_*` names).
    Run(HashMap<String, String>),
    /// Print the settings and exit.
    Help,
    /// Print the version and exit.
    Version,
    /// `await-ready [--timeout DURATION]`: wait until this pod's proxy is ready (a classic
    /// sidecar's `postStart` hook), at most `timeout` (default two minutes).
    AwaitReady { timeout: std::time::Duration },
}

/// How long `await-ready` waits unless told: as long as the native sidecar's startup probe.
pub const AWAIT_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Parses `--kebab-name VALUE` or `--kebab-name=VALUE` into `WEFT_KEBAB_NAME`, accepting only
/// names in [`VARS`].
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, ConfigError> {
    let mut flags = HashMap::new();
    let mut args = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .peekable();
    if args.peek().map(String::as_str) == Some("await-ready") {
        args.next();
        let mut timeout = AWAIT_READY_TIMEOUT;
        while let Some(arg) = args.next() {
            let value = match arg.strip_prefix("--timeout") {
                Some("") => args
                    .next()
                    .ok_or_else(|| ConfigError::MissingValue("timeout".into()))?,
                Some(v) if v.starts_with('=') => v[1..].to_string(),
                _ => return Err(ConfigError::UnknownFlag(arg)),
            };
            timeout =
                super::parse::parse_duration(&value).map_err(|reason| ConfigError::Invalid {
                    key: "await-ready --timeout",
                    value: value.clone(),
                    reason,
                })?;
        }
        return Ok(Command::AwaitReady { timeout });
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnknownFlag(arg));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let key = format!("WEFT_{}", name.replace('-', "_").to_ascii_uppercase());
        if !VARS.iter().any(|v| v.key == key) {
            return Err(ConfigError::UnknownFlag(arg));
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| ConfigError::MissingValue(name.to_string()))?,
        };
        flags.insert(key, value);
    }
    Ok(Command::Run(flags))
}

/// The `--help` text: every variable with its flag, default and meaning.
pub fn help() -> String {
    let mut out = String::from(
        "weft-proxy: the Weft sidecar proxy\n\n\
         Every setting is an environment variable, or a flag of the same name\n\
         (WEFT_OUTBOUND_PORT is --outbound-port). A flag wins over the environment.\n\n",
    );
    for v in VARS {
        let flag = v.key["WEFT_".len()..]
            .to_ascii_lowercase()
            .replace('_', "-");
        let default = if v.default.is_unset() {
            "unset".to_string()
        } else {
            v.default.to_string()
        };
        out.push_str(&format!(
            "  {} (--{flag}), default {default}\n      {}\n",
            v.key, v.doc
        ));
    }
    out
}
