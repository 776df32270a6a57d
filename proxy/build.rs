//! Link settings for the proxy binary, which every meshed pod runs: what it costs in memory
//! is paid once per pod (BENCHMARKS.md, "the binary laid out by when its code runs").

use std::{fmt::Write as _, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): 616 KiB of `.rela.dyn`,
    // which the dynamic loader reads whole at every start, become 11 KiB. The binary stays
    // position-independent.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // Release builds only: debug builds' symbols differ and nobody measures their memory.
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let order = std::fs::read_to_string(dir.join("symbol-order.txt"))
        .expect("proxy/symbol-order.txt is part of the source (scripts/symbol-order.sh)");
    let script = out.join("symbol-order.ld");
    std::fs::write(&script, linker_script(&order)).expect("OUT_DIR is writable");
    // Functions laid out by the phase of a proxy's life that first runs them
    // (scripts/symbol-order.sh), so the code a proxy runs sits in few of the 64 KiB windows the
    // kernel maps a binary's code in by. Two ways, for two kinds of name: the linker script
    // places functions by section name with ThinLTO's `.llvm.<hash>` suffix matched by a
    // pattern (the hash covers the module's bytes, paths in its debug information included, so
    // it differs from one checkout to another); the ordering file sorts, by symbol, what has no
    // section of its own (assembly) and the functions within each phase.
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        dir.join("symbol-order.txt").display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// The `.text` output section, filled phase by phase with the functions the ordering file
/// names, each matched with or without ThinLTO's suffix and as cold code; after the first phase,
/// the code that has no section per function (assembly, the C run-time), which the ordering file
/// sorts so that what ran comes first. Everything else follows as the linker places it. The
/// section keeps its name: valgrind (`make profile`, `make symbol-order`) reads symbols only
/// from `.text`.
fn linker_script(order: &str) -> String {
    let mut script = String::from("SECTIONS {\n  .text : {\n");
    let mut phase = String::new();
    let mut assembly_placed = false;
    for line in order.lines().map(str::trim) {
        if line.starts_with("# phase") {
            if flush(&mut phase, &mut script) && !assembly_placed {
                script.push_str("    *(.text)\n");
                assembly_placed = true;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split_once(".llvm.").map_or(line, |(name, _)| name);
        // Names the linker-script lexer would split or read as a pattern are left to the
        // ordering file.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b))
        {
            continue;
        }
        let _ = write!(
            phase,
            " .text.{name} .text.{name}.llvm.* .text.unlikely.{name} .text.unlikely.{name}.llvm.*"
        );
    }
    flush(&mut phase, &mut script);
    script.push_str("  }\n} INSERT BEFORE .init;\n");
    script
}

/// Ends one phase's input-section description; whether it had any function.
fn flush(phase: &mut String, script: &mut String) -> bool {
    if phase.is_empty() {
        return false;
    }
    let _ = writeln!(script, "    *({phase})");
    phase.clear();
    true
}
