//! Client registration: store only public material derived from the
//! client's network password (see [`crate::seal`]).

use super::audited;
use crate::audit::{Action, Actor, AuditEvent};
use crate::catalog::ClientRecord;
use crate::context::Keybridge;
use crate::error::check_name;
use crate::seal::{self, KdfParams};
use crate::secret::SecretString;
use crate::{Error, Result};

/// Register a client with its network password; audited as `actor`'s.
pub async fn add_client(kb: &Keybridge, name: &str, password: &SecretString, kdf: KdfParams, actor: &Actor) -> Result<ClientRecord> {
    let result = add(kb, name, password, kdf).await;
    audited(kb, AuditEvent::new(actor, Action::ClientAdd).client(name), result).await
}

async fn add(kb: &Keybridge, name: &str, password: &SecretString, kdf: KdfParams) -> Result<ClientRecord> {
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
