//! The CNI plugin logs to a file: the runtime reads its stdout as the result and often drops its
//! stderr. One line per event, appended, no colours.

use std::{fs::OpenOptions, path::Path, sync::Mutex};

use tracing_subscriber::EnvFilter;
use weft_cni_core::spec::NetConf;

/// Where the plugin logs when its config names no `logFile`.
pub const DEFAULT_LOG_FILE: &str = "/var/log/weft-cni.log";

/// Sends this process's logs to the config's `logFile` at its `logLevel` (default `info`). If
/// the file cannot be opened the plugin still runs, and says so on stderr.
pub fn to_file(conf: &NetConf) {
    let path = conf
        .log_file
        .as_deref()
        .unwrap_or_else(|| Path::new(DEFAULT_LOG_FILE));
    let level = conf.log_level.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("weft-cni: logLevel {level:?} is not a log filter ({e}); using info");
        EnvFilter::new("info")
    });
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init();
        }
        Err(e) => eprintln!(
            "weft-cni: cannot open the log file {}: {e}; not logging",
            path.display()
        ),
    }
}
