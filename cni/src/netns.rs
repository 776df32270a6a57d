//! Entering a pod's network namespace.

use std::{fs::File, path::Path};

use nix::sched::{setns, CloneFlags};

/// Why the namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the network namespace {path} does not exist")]
    Missing { path: String },
    #[error("cannot open the network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace: {source}")]
    Enter { path: String, source: nix::Error },
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/x`,
/// `/proc/<pid>/ns/net`). Commands it starts afterwards run there too. The plugin calls this
/// once, from its only thread, after everything that needs the host's network is done.
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => NetnsError::Missing {
            path: shown.clone(),
        },
        _ => NetnsError::Open {
            path: shown.clone(),
            source,
        },
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: shown,
        source,
    })
}
