//! The seed's three flows, one module each, plus client registration.
//!
//! - [`pool_creation`]: master key in the KMS, KEK pair, wrapped private KEK
//!   stored with the public KEK in one transaction.
//! - [`backup`]: a fresh DEK, RSA-OAEP encrypted under the public KEK and
//!   stored durably, handed to the client sealed under its password.
//! - [`restore`]: the wrapped KEK unwrapped inside the KMS, the DEK decrypted
//!   there, handed to the client sealed under its password.

pub mod backup;
pub mod catalog;
pub mod clients;
mod envelope;
pub mod escrow;
pub mod journal;
pub mod pool_creation;
pub mod pool_lifecycle;
pub mod restore;

pub use keybridge_proto::api::DekGrant;


/// Record a failed operation in the audit log and hand back the original
/// error. If the audit append itself fails, the original error still wins;
/// the audit failure is logged.
pub(crate) async fn audit_failure(kb: &crate::Keybridge, event: keybridge_catalog::audit::AuditEvent, err: crate::Error) -> crate::Error {
    let event = event.failed(&err);
    let action = event.action;
    if let Err(audit_err) = kb.catalog().audit(event).await {
        tracing::error!(%action, error = %err, audit_error = %audit_err, "could not append the audit record of a failed operation");
    }
    err
}

/// Audit the outcome of `result`: success durably before returning it (so
/// nothing is released before its audit record is committed), failure as
/// [`audit_failure`].
pub(crate) async fn audited<T>(kb: &crate::Keybridge, event: keybridge_catalog::audit::AuditEvent, result: crate::Result<T>) -> crate::Result<T> {
    match result {
        Ok(v) => {
            kb.catalog().audit(event).await?;
            Ok(v)
        }
        Err(e) => Err(audit_failure(kb, event, e).await),
    }
}

/// Decrypt `encrypted` (RSA-OAEP under `pool`'s KEK generation) in the KMS
/// of the generation's first wrapping; if that KMS fails or is no longer
/// configured, through its other wrappings, by priority. Losing one KMS of
/// a pool wrapped in several loses nothing.
pub(crate) async fn decrypt_dek(kb: &crate::Keybridge, pool: &keybridge_catalog::PoolRecord, encrypted: &[u8]) -> crate::Result<keybridge_kms::DekPlaintext> {
    let first = match kb.backend(&pool.kms_name).await {
        Ok(backend) => backend.decrypt_dek(&pool.kek(), encrypted).await.map_err(crate::Error::backend(&pool.kms_name)),
        Err(e) => Err(e),
    };
    let error = match first {
        Ok(plain) => return Ok(plain),
        Err(e) => e,
    };
    // A ciphertext that does not decrypt under the KEK does not under any
    // wrapping of it either.
    let bad_ciphertext = matches!(&error, crate::Error::Backend { source, .. } if matches!(source.downcast_ref::<keybridge_kms::BackendError>(), Some(keybridge_kms::BackendError::DekDecrypt { .. })));
    if bad_ciphertext || !matches!(error, crate::Error::Backend { .. } | crate::Error::Config { .. } | crate::Error::NotFound { .. }) {
        return Err(error);
    }
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    for w in wrappings.iter().filter(|w| w.generation == pool.generation && w.master_key.row != pool.mk_row) {
        let kms = &w.master_key.kms_name;
        let Ok(backend) = kb.backend(kms).await else { continue };
        let kek = keybridge_kms::PoolKek { master_key: &w.master_key.key, wrapped_private: &w.wrapped, wrap_mechanism: &w.wrap_mechanism, ..pool.kek() };
        match backend.decrypt_dek(&kek, encrypted).await {
            Ok(plain) => {
                tracing::warn!(pool = %pool.name, generation = pool.generation, first = %pool.kms_name, through = %kms, error = %error, "the first wrapping's KMS failed; decrypted through another wrapping");
                return Ok(plain);
            }
            Err(e) => tracing::warn!(pool = %pool.name, generation = pool.generation, kms = %kms, error = %e, "another wrapping's KMS failed too"),
        }
    }
    Err(error)
}
