//! glibc's `memcpy` on AMD CPUs.
//!
//! glibc copies anything longer than 2 to 8 KiB (by the CPU's features) with `rep movsb` on CPUs
//! that advertise fast string moves. On AMD Zen that instruction runs many times slower when the
//! destination is not aligned like the source (glibc bug 30994; releases before its fix, such
//! as Debian 12's 2.36, still do it). rustls copies each received record's plaintext from 5
//! bytes into the record to a fresh buffer, so on an AMD EPYC that one copy was 12-13 % of a
//! mesh proxy's CPU in bulk transfers (`BENCHMARKS.md`, "memcpy on AMD").
//!
//! glibc's tunable [`TUNABLE`] moves the point where `rep movsb` starts beyond any copy the
//! proxy makes, so copies take the vector loop, which does not care about alignment. glibc reads
//! tunables only when a program starts, so on AMD the proxy starts itself again, once, with the
//! tunable added to `GLIBC_TUNABLES`, before any thread or socket exists. An operator who sets
//! the tunable (to any value) decides instead; other CPUs and other C libraries are left alone.

use std::ffi::OsString;

/// The glibc tunable: copies at least this long use `rep movsb`.
pub const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// 1 GiB: far above any copy the proxy makes (its largest buffers are 64 KiB); copies past
/// glibc's non-temporal threshold take its non-temporal path either way.
pub const THRESHOLD: u64 = 1 << 30;

/// The `GLIBC_TUNABLES` value to start again with, or `None` to go on as started: the CPU is not
/// AMD's, or `current` already sets [`TUNABLE`] (the operator did, or this is the restart).
pub fn tunables_for(amd: bool, current: Option<&str>) -> Option<String> {
    if !amd {
        return None;
    }
    let ours = format!("{TUNABLE}={THRESHOLD}");
    match current {
        None | Some("") => Some(ours),
        // Tunables are colon-separated `name=value` pairs.
        Some(c) if c.split(':').any(|t| t.split('=').next() == Some(TUNABLE)) => None,
        Some(c) => Some(format!("{c}:{ours}")),
    }
}

/// Starts the proxy again with `memcpy` tuned, when [`tunables_for`] says so; returns only if it
/// did not (nothing to do, or the new start failed: then this process goes on untuned and the
/// error says why).
pub fn restart_tuned() -> Result<(), std::io::Error> {
    if !cfg!(target_env = "gnu") {
        return Ok(());
    }
    let current = std::env::var_os("GLIBC_TUNABLES");
    let current = match current.as_deref().map(|c| c.to_str()) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => return Ok(()), // not UTF-8: not ours to edit
    };
    let Some(tunables) = tunables_for(cpu_is_amd(), current) else {
        return Ok(());
    };
    restart(tunables)
}

#[cfg(target_os = "linux")]
fn restart(tunables: String) -> Result<(), std::io::Error> {
    use std::os::unix::process::CommandExt;
    // The program's own path (not `/proc/self/exe`, which would name the process `exe`).
    let exe = std::env::current_exe()?;
    // Started through the dynamic loader (`ld-linux-x86-64.so.2 weft-proxy`): the loader is not
    // the program, and running it again without its argument would not start the proxy.
    if exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ld-") || n.starts_with("ld."))
    {
        return Ok(());
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("weft-proxy"));
    // `exec` replaces this process (same PID) and returns only on failure.
    Err(std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec())
}

#[cfg(not(target_os = "linux"))]
fn restart(_: String) -> Result<(), std::io::Error> {
    Ok(())
}

/// Whether the CPU is AMD's (CPUID's vendor string).
#[cfg(target_arch = "x86_64")]
pub fn cpu_is_amd() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&id.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&id.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&id.ecx.to_le_bytes());
    &vendor == b"AuthenticAMD"
}

/// Whether the CPU is AMD's: never, off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn cpu_is_amd() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_amd_without_the_tunable_starts_again() {
        let ours = format!("{TUNABLE}={THRESHOLD}");
        assert_eq!(tunables_for(false, None), None);
        assert_eq!(tunables_for(false, Some("glibc.malloc.arena_max=2")), None);
        assert_eq!(tunables_for(true, None).as_deref(), Some(ours.as_str()));
        assert_eq!(tunables_for(true, Some("")).as_deref(), Some(ours.as_str()));
        // Other tunables are kept.
        assert_eq!(
            tunables_for(true, Some("glibc.malloc.arena_max=2")),
            Some(format!("glibc.malloc.arena_max=2:{ours}"))
        );
        // The operator's value wins, wherever it is; the restart sees its own and stops.
        assert_eq!(tunables_for(true, Some(&format!("{TUNABLE}=4096"))), None);
        assert_eq!(
            tunables_for(true, Some(&format!("glibc.malloc.arena_max=2:{TUNABLE}=0"))),
            None
        );
        let once = tunables_for(true, Some("glibc.malloc.arena_max=2")).expect("restart");
        assert_eq!(tunables_for(true, Some(&once)), None);
        // A longer name that starts the same is another tunable.
        assert!(tunables_for(true, Some(&format!("{TUNABLE}x=1"))).is_some());
    }
}
