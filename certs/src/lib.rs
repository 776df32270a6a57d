//! Weft identity, pure: no I/O, no clock of its own (callers pass `now`).
//!
//! # Layout
//! - [`spiffe`]: [`SpiffeId`], parsed and validated per the SPIFFE spec and Weft's
//!   `/ns/<namespace>/sa/<service-account>` shape.
//! - [`ca`]: trust anchors and issuers (ECDSA P-256, rcgen), and CSR checking and signing: the
//!   issuer signs only the identity the caller proved.
//! - [`csr`]: the proxy's side, a key kept in memory and a CSR for its identity.
//! - [`renew`]: renewal at 70 % of a certificate's life, with jitter.
//! - [`inspect`](mod@inspect): what a certificate says (identities, issuer, validity).
//! - [`store`]: the certificate a process presents, swapped in place on renewal.
//! - [`verify`]: rustls verifiers that check a peer's chain against a bundle of several trust
//!   anchors and its SPIFFE ID.

#![forbid(unsafe_code)]

pub mod ca;
pub mod csr;
pub mod inspect;
pub mod renew;
pub mod spiffe;
pub mod store;
pub mod verify;

pub use ca::{Ca, CaError, CsrError, Signed};
pub use csr::{new_key_and_csr, KeyAndCsr};
pub use inspect::{inspect, CertInfo, InspectError};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use store::{certified_key, CertStore};
pub use verify::{peer_identity, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundle};

#[cfg(test)]
mod tests;
