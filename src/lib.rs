//! keybridge: keeps the encryption keys of a backup system under master keys
//! that live in hardware (PKCS#11 HSMs, KMIP appliances) or in a built-in
//! software KMS.
//!
//! Layout: [`flows`] holds the seed's three flows (pool creation, backup,
//! restore); [`backend`] the one trait every KMS implements and one folder
//! per KMS; [`catalog`] the SQLite catalog; [`seal`] DEK delivery under the
//! client's network password; [`stream`] the client-data stream format
//! (chunked AES-256-GCM, sans-IO); [`crypto`] the software primitives;
//! [`audit`] the hash-chained audit log of every key operation.
//!
//! Around the flows: [`service`] (`keybridge serve`, the HTTPS API),
//! [`client`] (`keybridge backup` / `restore`), [`media_agent`] (stores the
//! encrypted streams), [`api`] (the wire types both sides share), [`http`]
//! and [`tls`] (serving and TLS plumbing), [`cli`].

pub mod api;
pub mod audit;
pub mod backend;
pub mod catalog;
pub mod client;
pub mod cli;
pub mod config;
pub mod context;
pub mod crypto;
pub mod error;
pub mod flows;
pub mod http;
pub mod kmip;
pub mod media_agent;
pub mod seal;
pub mod secret;
pub mod service;
pub mod stream;
pub mod tls;

pub use context::Keybridge;
pub use error::{Error, Result};
