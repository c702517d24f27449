//! Client registration: store only public material derived from the
//! client's network password (see [`keybridge_proto::seal`]).

use super::audited;
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::ClientRecord;
use crate::context::Keybridge;
use keybridge_proto::error::check_name;
use keybridge_proto::seal::{self, KdfParams, Registration};
use keybridge_proto::secret::SecretString;
use crate::{Error, Result};

/// Register a client with its network password; audited as `actor`'s.
pub async fn add_client(kb: &Keybridge, name: &str, password: &SecretString, kdf: KdfParams, actor: &Actor) -> Result<ClientRecord> {
    let result = add(kb, name, password, kdf).await;
    audited(kb, AuditEvent::new(actor, Action::ClientAdd).client(name), result).await
}

async fn add(kb: &Keybridge, name: &str, password: &SecretString, kdf: KdfParams) -> Result<ClientRecord> {
    check_name("client name", name)?;
    if kb.catalog().client_by_name(name).await.is_ok() {
        return Err(Error::AlreadyExists { what: "client", name: name.to_owned() });
    }
    let password = password.clone();
    let client = name.to_owned();
    let reg = tokio::task::spawn_blocking(move || seal::register(&client, &password, kdf))
        .await
        .map_err(|e| Error::Internal(format!("client registration task failed: {e}")))??;
    kb.catalog().insert_client(name, &reg).await
}

/// Register a client from public material the client derived itself (the
/// service's registration call: the password never leaves the client).
pub async fn register_client(kb: &Keybridge, name: &str, reg: &Registration, actor: &Actor) -> Result<ClientRecord> {
    let result = register(kb, name, reg).await;
    audited(kb, AuditEvent::new(actor, Action::ClientAdd).client(name), result).await
}

async fn register(kb: &Keybridge, name: &str, reg: &Registration) -> Result<ClientRecord> {
    check_name("client name", name)?;
    let bad = |reason: &str| Error::Input { what: format!("registration of client '{name}'"), reason: reason.to_owned() };
    reg.kdf.check().map_err(|reason| bad(&reason))?;
    if !keybridge_proto::seal::SALT_LENS.contains(&reg.salt.len()) {
        return Err(bad("the salt must be 16 to 64 bytes"));
    }
    if ed25519_dalek::VerifyingKey::from_bytes(&reg.auth_public).is_err() {
        return Err(bad("auth_public is not an Ed25519 public key"));
    }
    kb.catalog().insert_client(name, reg).await
}
