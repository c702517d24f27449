//! What crosses the boundary between the keybridge backup client, the
//! service and the MediaAgent, and nothing else: the API's request and
//! response bodies ([`api`]), the signed-request canonical form
//! ([`api::auth`]), the MediaAgent's job tokens ([`api::agent_token`]), the
//! DEK seal under a client's network password ([`seal`]), the client-data
//! stream format ([`stream`]), the escrow file that carries a pool's KEKs
//! under an operator passphrase ([`escrow`]), secrets ([`secret`]) and the
//! one error type with its wire kind and exit code ([`error`]).
//!
//! Both sides of every wire link this crate, so it must not depend on a
//! server runtime, a catalog engine or a KMS: no tokio, no rusqlite, no
//! cryptoki. `cargo tree -p keybridge-proto` shows it.

pub mod api;
pub mod crypto;
pub mod error;
pub mod escrow;
pub mod seal;
pub mod secret;
pub mod stream;

pub use error::{Error, ErrorKind, Result};
