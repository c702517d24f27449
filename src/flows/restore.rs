//! Restore (seed, "Restore"): recover a DEK for a client.
//!
//! 1. The wrapped private KEK and the encrypted DEK are read from the catalog.
//! 2. The KMS unwraps the KEK with the master key and decrypts the DEK
//!    (PKCS#11: both inside the token; the unwrapped KEK is a
//!    non-extractable session object cached per pool).
//! 3. The DEK's binding to its row is checked; the DEK is returned sealed
//!    under the client's network password.

use super::{audited, dek_binding, DekGrant, BINDING_LEN};
use crate::audit::{Action, Actor, AuditEvent};
use crate::backend::PoolKek;
use crate::context::Keybridge;
use crate::secret::{Dek, DEK_LEN};
use crate::{seal, Error, Result};

/// Recover DEK `dek_id` for `client`, as `actor`. A client can recover only
/// its own DEKs.
pub async fn recover_dek(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor) -> Result<DekGrant> {
    let (dek, grant) = recover_inner(kb, dek_id, client, actor).await?;
    drop(dek);
    Ok(grant)
}

/// Recover and return the DEK itself alongside the grant (service-internal
/// and tests; the CLI never prints it). Audited: the DEK is returned only
/// once its audit record is durable; a failure is recorded with its error.
pub async fn recover_inner(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor) -> Result<(Dek, DekGrant)> {
    let mut pool_name = None;
    let result = recover(kb, dek_id, client, actor, &mut pool_name).await;
    let mut event = AuditEvent::new(actor, Action::DekRecover);
    if let Some(pool) = &pool_name {
        event = event.pool(pool);
    }
    audited(kb, event.client(client).dek(dek_id), result).await
}

async fn recover(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor, pool_name: &mut Option<String>) -> Result<(Dek, DekGrant)> {
    let catalog = kb.catalog();
    let row = catalog.dek(dek_id)?;
    let pool = catalog.pool_by_id(row.pool_id)?;
    *pool_name = Some(pool.name.clone());
    let requester = catalog.client_by_name(client)?;
    if row.client_id != requester.id {
        return Err(Error::Denied(format!("DEK {dek_id} was not issued to client '{client}'")));
    }
    let backend = kb.backend(&pool.kms_name).await?;
    let kek = PoolKek {
        pool_id: pool.id,
        pool_name: &pool.name,
        master_key: &pool.master_key,
        wrapped_private: &pool.kek_wrapped,
        wrap_mechanism: &pool.wrap_mechanism,
        oaep_hash: pool.oaep_hash,
    };
    // The seal's key agreement depends only on the client: do it on this
    // thread while the KMS decrypts (join! polls the decryption first, which
    // hands the KMS call to another thread).
    let (plain, sealer) = tokio::join!(backend.decrypt_dek(&kek, &row.encrypted_dek), async { seal::Sealer::new(&requester) });
    let plain = plain.map_err(Error::backend(&pool.kms_name))?;
    let sealer = sealer?;
    let what = || format!("DEK {dek_id}");
    if plain.len() != DEK_LEN + BINDING_LEN {
        return Err(Error::Integrity { what: what(), reason: format!("decrypted envelope is {} bytes, expected {}", plain.len(), DEK_LEN + BINDING_LEN) });
    }
    let expected = dek_binding(dek_id, &pool.name, &requester.name);
    if plain[DEK_LEN..] != expected {
        return Err(Error::Integrity {
            what: what(),
            reason: format!("it is bound to another pool, client or id than its catalog row (pool '{}', client '{}'): the row was moved or edited", pool.name, requester.name),
        });
    }
    let dek = Dek::from_bytes(plain[..DEK_LEN].try_into().expect("length checked"));
    let sealed_dek = sealer.seal(&dek, &pool.name, dek_id)?;
    tracing::info!(pool = %pool.name, client, dek = dek_id, %actor, "DEK recovered");
    Ok((dek, DekGrant { dek_id: dek_id.to_owned(), pool: pool.name, client: requester.name, sealed_dek, created_at: row.created_at }))
}
