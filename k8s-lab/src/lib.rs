#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod addons;
pub mod bins;
pub mod cluster;
pub mod crds;
pub mod error;
pub mod helm;
pub mod image;
pub mod kubectl;
pub mod node;
pub mod pki;
pub mod weft;

pub use cluster::{Cluster, ClusterOptions};
pub use error::{Error, Result};
pub use helm::Helm;
pub use kubectl::Kubectl;
