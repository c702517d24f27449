//! Client registration: store only public material derived from the
//! client's network password (see [`crate::seal`]).

use crate::catalog::ClientRecord;
use crate::context::Keybridge;
use crate::error::check_name;
use crate::seal::{self, KdfParams};
use crate::secret::SecretString;
use crate::{Error, Result};

/// Register a client with its network password.
pub async fn add_client(kb: &Keybridge, name: &str, password: &SecretString, kdf: KdfParams) -> Result<ClientRecord> {
    check_name("client name", name)?;
    if kb.catalog().client_by_name(name).is_ok() {
        return Err(Error::AlreadyExists { what: "client", name: name.to_owned() });
    }
    let password = password.clone();
    let reg = tokio::task::spawn_blocking(move || seal::register(&password, kdf))
        .await
        .map_err(|e| Error::Internal(format!("client registration task failed: {e}")))?
        .map_err(|e| match e {
            Error::Seal { reason, .. } => Error::Seal { client: name.to_owned(), reason },
            other => other,
        })?;
    kb.catalog().insert_client(name, &reg.kdf, &reg.salt, &reg.seal_public)
}
