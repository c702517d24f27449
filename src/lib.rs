//! keybridge: keeps the encryption keys of a backup system under master keys
//! that live in hardware (PKCS#11 HSMs, KMIP appliances) or in a built-in
//! software KMS.
//!
//! This crate is the top of the workspace: the seed's three flows
//! ([`flows`]: pool creation, backup, restore), the adapter service
//! ([`service`], `keybridge serve`), the configuration file ([`config`]),
//! the shared state ([`Keybridge`]) and the command line ([`cli`]). Below it,
//! and never depending on it: `keybridge-kms` (the KMS backends),
//! `keybridge-catalog` (the catalog and audit log), `keybridge-client` (the
//! backup client), `keybridge-agent` (the MediaAgent), `keybridge-net` (TLS
//! and the HTTP server loop), `keybridge-kmip` (the TTLV codec) and
//! `keybridge-proto` (the wire contract). `docs/architecture.md` draws the
//! graph.

pub mod certs;
pub mod cli;
pub mod config;
pub mod context;
pub mod flows;
pub mod service;

pub use context::Keybridge;
pub use keybridge_proto::{Error, Result};
