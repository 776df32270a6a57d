//! The file `weft-control-plane --addresses-file FILE` writes once its listeners are bound:
//! `{"grpc":"127.0.0.1:41234","admin":"127.0.0.1:41235"}`. Started on port 0, the control
//! plane tells its ports here, so nothing has to pick a free port first and race for it.

use std::{io, net::SocketAddr, path::Path};

/// Where the control plane's listeners are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

/// An addresses file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AddressesError {
    #[error("reading the addresses file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the addresses file {path} is not {{\"grpc\":\"ip:port\",\"admin\":\"ip:port\"}}: {text:?}"
    )]
    Malformed { path: String, text: String },
}

impl Addresses {
    /// The addresses in `path`; `None` while the file is not there yet. The control plane
    /// renames a finished file into place, so a file that is there is whole.
    pub fn read(path: &Path) -> Result<Option<Addresses>, AddressesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AddressesError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Addresses::parse(&text)
            .map(Some)
            .ok_or_else(|| AddressesError::Malformed {
                path: path.display().to_string(),
                text,
            })
    }

    fn parse(text: &str) -> Option<Addresses> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let addr = |key: &str| v.get(key)?.as_str()?.parse::<SocketAddr>().ok();
        Some(Addresses {
            grpc: addr("grpc")?,
            admin: addr("admin")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_once_it_is_there() {
        let dir = std::env::temp_dir().join(format!("weft-testkit-addr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("addresses.json");
        let _ = std::fs::remove_file(&path);
        assert!(Addresses::read(&path).expect("absent is fine").is_none());
        std::fs::write(
            &path,
            "{\"grpc\":\"127.0.0.1:41234\",\"admin\":\"[::1]:41235\"}\n",
        )
        .expect("write");
        let got = Addresses::read(&path).expect("read").expect("there");
        assert_eq!(got.grpc, "127.0.0.1:41234".parse().expect("addr"));
        assert_eq!(got.admin, "[::1]:41235".parse().expect("addr"));
        std::fs::write(&path, "{\"grpc\":\"127.0.0.1:1\"}").expect("write");
        let e = Addresses::read(&path).expect_err("no admin");
        assert!(e.to_string().contains("addresses.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
