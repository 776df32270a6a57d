//! The workspace's binaries as cargo built them, for a test of another package: a test runs
//! from `target/<profile>/deps/`, and the binaries are in `target/<profile>/`.
//!
//! A package's own tests get its binaries from `env!("CARGO_BIN_EXE_<name>")`, which cargo
//! builds first. Another package's binary is built by `cargo test --workspace` (and by `cargo
//! test -p a -p b` for the packages named) before any test runs; `cargo test -p one` alone does
//! not build other packages' binaries, and may find a stale one from an earlier build.

use std::path::{Path, PathBuf};

/// A binary that is not in the target directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{binary} is not built: no {path}. Build it with `cargo build -p {package}` \
     (`cargo test --workspace` builds every package's binaries before the tests run)"
)]
pub struct MissingBinary {
    pub binary: String,
    pub package: String,
    pub path: PathBuf,
}

/// The target directory of the running executable's profile: its folder, less a trailing
/// `deps`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Binary `binary` of package `package` (they are often the same name), next to the running
/// test's profile.
pub fn binary(package: &str, binary: &str) -> Result<PathBuf, MissingBinary> {
    binary_in(&target_dir(), package, binary)
}

/// Binary `binary` of package `package` in `dir`.
pub fn binary_in(dir: &Path, package: &str, binary: &str) -> Result<PathBuf, MissingBinary> {
    let path = dir.join(binary);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingBinary {
            binary: binary.to_string(),
            package: package.to_string(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_is_the_profile_folder() {
        let dir = target_dir();
        assert!(dir.join("deps").is_dir(), "{} holds deps/", dir.display());
    }

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let dir = std::env::temp_dir();
        let e = binary_in(&dir, "weft-cni", "weft-init-not-here").expect_err("missing");
        let msg = e.to_string();
        assert!(msg.contains("cargo build -p weft-cni"), "{msg}");
        assert!(msg.contains("weft-init-not-here"), "{msg}");
        let exe = std::env::current_exe().expect("current exe");
        let (dir, name) = (exe.parent().expect("dir"), exe.file_name().expect("name"));
        let found = binary_in(dir, "weft-testkit", &name.to_string_lossy()).expect("found");
        assert_eq!(found, exe);
    }
}
