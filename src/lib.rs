//! keybridge: keeps the encryption keys of a backup system under master keys
//! that live in hardware (PKCS#11 HSMs, KMIP appliances) or in a built-in
//! software KMS.
//!
//! Layout: [`flows`] holds the seed's three flows (pool creation, backup,
//! restore); [`backend`] the one trait every KMS implements and one folder
//! per KMS; [`catalog`] the SQLite catalog; [`seal`] DEK delivery under the
//! client's network password; [`crypto`] the software primitives;
//! [`audit`] the hash-chained audit log of every key operation.

pub mod audit;
pub mod backend;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod context;
pub mod crypto;
pub mod error;
pub mod flows;
pub mod kmip;
pub mod seal;
pub mod secret;

pub use context::Keybridge;
pub use error::{Error, Result};
