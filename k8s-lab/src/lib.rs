//! The k8s tier: a real single-node Kubernetes for Weft's tests and for `make cluster`.

#![forbid(unsafe_code)]

pub mod error;
pub mod image;

pub use error::{Error, Result};
