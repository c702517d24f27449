//! Restore (seed, "Restore"): recover a DEK for a client.
//!
//! 1. The wrapped private KEK and the encrypted DEK are read from the catalog.
//! 2. The KMS unwraps the KEK with the master key and decrypts the DEK
//!    (PKCS#11: both inside the token; the unwrapped KEK is a
//!    non-extractable session object cached per pool).
//! 3. The DEK's binding to its row is checked; the DEK is returned sealed
//!    under the client's network password.
//!
//! Audit: a recover that reaches the KMS writes a durable "started" row
//! while the KMS decrypts (the fsync overlaps the token call instead of
//! following it), and no DEK leaves before that row is committed. The
//! outcome row ("ok", or the error) is queued for the next commit without
//! waiting for it. A recover refused before the KMS call (unknown DEK,
//! another client's DEK) leaves one row, its error, committed before the
//! error is returned.

use super::{audit_failure, envelope, DekGrant};
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use crate::context::Keybridge;
use keybridge_proto::secret::Dek;
use crate::{Error, Result};

/// Recover DEK `dek_id` for `client`, as `actor`. A client can recover only
/// its own DEKs.
pub async fn recover_dek(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor) -> Result<DekGrant> {
    let (dek, grant) = recover_inner(kb, dek_id, client, actor).await?;
    drop(dek);
    Ok(grant)
}

/// Recover and return the DEK itself alongside the grant (service-internal
/// and tests; the CLI never prints it). Audited (see the module notes): the
/// DEK is returned only once its "started" row is durable; a failure is
/// recorded with its error.
pub async fn recover_inner(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor) -> Result<(Dek, DekGrant)> {
    let mut pool_name = None;
    let result = recover(kb, dek_id, client, actor, &mut pool_name).await;
    let event = recover_event(actor, pool_name.as_deref(), client, dek_id);
    match result {
        Ok(v) => {
            if let Err(e) = kb.catalog().audit_detached(event) {
                // The started row is durable; only the outcome is missing.
                tracing::error!(dek = dek_id, error = %e, "could not queue the outcome row of a DEK recover");
            }
            Ok(v)
        }
        Err(e) => Err(audit_failure(kb, event, e).await),
    }
}

fn recover_event(actor: &Actor, pool: Option<&str>, client: &str, dek_id: &str) -> AuditEvent {
    let event = AuditEvent::new(actor, Action::DekRecover);
    let event = match pool {
        Some(pool) => event.pool(pool),
        None => event,
    };
    event.client(client).dek(dek_id)
}

/// The recover itself; sets `pool_name` once the pool is known.
async fn recover(kb: &Keybridge, dek_id: &str, client: &str, actor: &Actor, pool_name: &mut Option<String>) -> Result<(Dek, DekGrant)> {
    let catalog = kb.catalog();
    let row = catalog.dek(dek_id).await?;
    // The KEK generation the DEK was issued under, not necessarily the newest.
    let pool = catalog.pool_generation(row.pool_id, row.generation).await?;
    *pool_name = Some(pool.name.clone());
    let requester = catalog.client_by_name(client).await?;
    if row.client_id != requester.id {
        return Err(Error::Denied(format!("DEK {dek_id} was not issued to client '{client}'")));
    }
    // While the KMS decrypts: the started row is committed by the catalog
    // writer, and the seal's key agreement (which depends only on the
    // client, and is usually kept from its last seal) runs on this thread. join! polls in order: the decryption
    // hands the KMS call to another thread, the audit row is queued, then
    // the seal work runs.
    let (plain, started, sealer) = tokio::join!(
        super::decrypt_dek(kb, &pool, &row.encrypted_dek),
        catalog.audit(recover_event(actor, Some(&pool.name), client, dek_id).started()),
        async { kb.sealer(requester.recipient()) }
    );
    started?;
    let plain = plain?;
    let sealer = sealer?;
    let dek = envelope::open(plain.expose(), dek_id, &pool.name, &requester)?;
    let sealed_dek = sealer.seal(&dek, &pool.name, dek_id)?;
    tracing::info!(pool = %pool.name, client, dek = dek_id, %actor, "DEK recovered");
    Ok((dek, DekGrant { dek_id: dek_id.to_owned(), pool: pool.name, client: requester.name, sealed_dek, created_at: row.created_at }))
}
