//! Compiles the .proto files with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/weft/identity/v1/identity.proto",
        "proto/weft/destination/v1/destination.proto",
        "proto/weft/route/v1/route.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(cfg!(feature = "server"))
        .build_client(cfg!(feature = "client"))
        .build_transport(false)
        // prost with buffers sized for Weft's messages (src/codec.rs).
        .codec_path("crate::codec::Codec")
        // Hand-written Debug that leaves the token out: requests must be safe to log.
        .skip_debug(["weft.identity.v1.CertifyRequest"])
        .compile_fds(fds)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
