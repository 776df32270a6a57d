//! The addresses file (`--addresses-file`): the gRPC and admin addresses the listeners really
//! got, so that whoever started the control plane on port 0 (a test fixture, a script) learns
//! its ports without choosing free ones first and racing for them.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// The addresses file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the addresses file {}: {source}; is its folder there and writable?", path.display())]
pub struct AddressesFileError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Writes `{"grpc":"<grpc>","admin":"<admin>"}` to `path` atomically: to a temporary file in the
/// same folder, then renamed over `path`, so a reader never sees half of it.
pub fn write(path: &Path, grpc: SocketAddr, admin: SocketAddr) -> Result<(), AddressesFileError> {
    let error = |source| AddressesFileError {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| error(io::Error::other("the path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let text = serde_json::json!({ "grpc": grpc.to_string(), "admin": admin.to_string() });
    std::fs::write(&tmp, format!("{text}\n")).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        error(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_both_addresses_and_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addresses.json");
        std::fs::write(&path, "stale").expect("write");
        let grpc: SocketAddr = "127.0.0.1:41234".parse().expect("addr");
        let admin: SocketAddr = "[::1]:41235".parse().expect("addr");
        write(&path, grpc, admin).expect("written");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"grpc": "127.0.0.1:41234", "admin": "[::1]:41235"})
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["addresses.json"], "no temporary file left");
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope/addresses.json");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let e = write(&path, addr, addr).expect_err("no folder");
        assert!(e.to_string().contains("nope/addresses.json"), "{e}");
    }
}
