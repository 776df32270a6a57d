//! Link settings for the proxy binary, which every meshed pod runs: what it costs in memory
//! is paid once per pod (BENCHMARKS.md, "Idle RSS").

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): 600 KiB of `.rela.dyn`,
    // which the dynamic loader reads whole at every start, become 8 KiB. The binary stays
    // position-independent.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // Functions laid out start-up first, then serving (scripts/symbol-order.sh), so the code a
    // proxy runs sits in few of the 64 KiB windows the kernel maps a binary's code in by.
    // Release builds only: debug builds' symbols differ and nobody measures their memory.
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={dir}/symbol-order.txt");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
