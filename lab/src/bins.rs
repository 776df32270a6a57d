//! The Weft binaries the lab runs, found in the cargo target directory next to the running
//! executable: a test runs from `target/<profile>/deps/`, a tool such as `weftctl` from
//! `target/<profile>/`. `cargo test --workspace` builds all three before any test runs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Paths to `weft-proxy`, `weft-control-plane`, `weft-cni` and `weft-init`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub proxy: PathBuf,
    pub control_plane: PathBuf,
    /// Needed only when pods are redirected by the CNI plugin ([`crate::Redirect::WeftCni`]).
    cni: Result<PathBuf, PathBuf>,
    /// `weft-init`, for tests that put a pod's rules back as the init container would.
    init: Result<PathBuf, PathBuf>,
}

impl Binaries {
    /// Finds them next to the current executable; an error names the first one missing and
    /// the `cargo build -p ...` that makes it.
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe().map_err(Error::io("find the running executable"))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        Binaries::in_dir(&dir)
    }

    /// Finds them in `dir`.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let need = |binary: &'static str| {
            let path = dir.join(binary);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingBinary {
                    binary,
                    package: binary,
                    path,
                })
            }
        };
        let maybe = |binary: &str| {
            let path = dir.join(binary);
            if path.is_file() {
                Ok(path)
            } else {
                Err(path)
            }
        };
        Ok(Binaries {
            proxy: need("weft-proxy")?,
            control_plane: need("weft-control-plane")?,
            cni: maybe("weft-cni"),
            init: maybe("weft-init"),
        })
    }

    /// `weft-cni`, or which `cargo build` makes it.
    pub fn cni(&self) -> Result<&Path> {
        self.cni.as_deref().map_err(|path| Error::MissingBinary {
            binary: "weft-cni",
            package: "weft-cni",
            path: path.clone(),
        })
    }

    /// `weft-init`, or which `cargo build` makes it.
    pub fn init(&self) -> Result<&Path> {
        self.init.as_deref().map_err(|path| Error::MissingBinary {
            binary: "weft-init",
            package: "weft-cni",
            path: path.clone(),
        })
    }
}
