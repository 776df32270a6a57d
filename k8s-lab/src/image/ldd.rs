//! What a dynamically linked executable needs at run time, as `ldd` reports it.
//!
//! `ldd` is glibc's own answer (it asks the dynamic loader to trace the binary's loading, so
//! `DT_RUNPATH`, the loader's default directories and `ld.so.cache` all count). Parsing ELF
//! here would have to redo that search. Only the project's own and the machine's packaged
//! binaries go through here, so letting the loader look at them is no risk.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use weft_lab::process::{run_with_input, COMMAND_TIMEOUT};

/// Why the libraries could not be found.
#[derive(Debug)]
pub(super) enum Failure {
    /// Running `ldd` failed (it could not start, or did not finish in time).
    Lab(weft_lab::Error),
    /// `ldd` said something other than a list of libraries.
    Output(String),
}

/// Whether `path` starts like an ELF file; a script would need its interpreter instead.
pub(super) fn check_elf(path: &Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if &magic != b"\x7fELF" {
        return Err(
            "is not an ELF executable (a script needs its interpreter added as a \
                    binary, and the script as a file)"
                .into(),
        );
    }
    Ok(())
}

/// The loader and shared libraries `binary` needs, as the absolute paths `ldd` names (not
/// resolved); empty for a static binary.
pub(super) fn shared_objects(binary: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut cmd = Command::new("ldd");
    // The test harness (cargo) sets LD_LIBRARY_PATH to its own directories; the image gets
    // what the binary finds by default, as it would on a clean host.
    cmd.arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD");
    let out = run_with_input(&mut cmd, b"", COMMAND_TIMEOUT).map_err(Failure::Lab)?;
    let printed = format!("{}{}", out.stdout, out.stderr);
    if !out.status.success() {
        // A static binary that is not position-independent (Go's): ldd exits 1.
        if printed.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Failure::Output(format!(
            "`ldd {}` failed ({}): {}",
            binary.display(),
            out.status,
            printed.trim()
        )));
    }
    parse(&out.stdout).map_err(Failure::Output)
}

/// The absolute paths in `ldd`'s output: `name => /path (0x...)` lines and the loader's
/// `/path (0x...)` line. The vDSO (`linux-vdso.so.1 (0x...)`, no path) is the kernel's, and
/// `statically linked` (static-pie) names nothing. A library `=> not found` is an error.
pub(super) fn parse(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(format!(
                        "the library {} is not found on this machine",
                        name.trim()
                    ));
                }
                target.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            found.push(PathBuf::from(path));
        }
    }
    Ok(found)
}
