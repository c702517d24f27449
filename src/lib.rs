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

/// Bulk file data is read and written in pieces of this size: the backup
/// client's file reads, the restore's file writes and the MediaAgent's
/// stream writes. Large enough that system calls are few (tar's own copy
/// loops move 8 KiB per call); small enough to stay under a cliff measured
/// on Linux 6.18/ext4 in some memory states, where 1 MiB and 2 MiB write()
/// calls cost 3-5 times the kernel CPU of 256 KiB calls for the same data
/// (1 GiB: 1.0-2.7 s of system time against 0.33-0.7 s; in other states
/// both took 0.3-0.4 s; see docs/design.md, "Performance notes").
pub(crate) const FILE_IO_BUF: usize = 256 * 1024;
