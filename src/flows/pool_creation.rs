//! Storage pool creation (seed, "Storage Pool Creation").
//!
//! 1. The master key is created in the KMS (or an existing one adopted).
//! 2. The KMS produces a KEK pair; the private half comes out only wrapped by
//!    the master key (PKCS#11: generated and wrapped inside the token).
//! 3. The public KEK, the wrapped private KEK, the master key reference and
//!    the exact mechanisms are stored in one catalog transaction.
//!
//! A failure after step 1 destroys the master key keybridge created, so no
//! orphan key is left in the token; if even that fails, the error names the
//! orphan so an operator can remove it.

use super::audited;
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::PoolRecord;
use crate::context::Keybridge;
use keybridge_proto::error::check_name;
use crate::{Error, Result};

/// KEK sizes accepted.
pub const KEK_BITS: &[usize] = &[2048, 3072, 4096];

/// Options for [`create_pool`].
#[derive(Debug, Clone)]
pub struct PoolOptions<'a> {
    pub kek_bits: usize,
    /// Adopt this existing master key (a PKCS#11 URI) instead of creating one.
    pub master_key: Option<&'a str>,
}

impl Default for PoolOptions<'_> {
    fn default() -> Self {
        PoolOptions { kek_bits: 3072, master_key: None }
    }
}

/// Create a storage pool whose master key lives in `kms`. Success and
/// failure are recorded in the audit log as `actor`'s; the pool is returned
/// only once its audit record is durable.
pub async fn create_pool(kb: &Keybridge, name: &str, kms: &str, opts: &PoolOptions<'_>, actor: &Actor) -> Result<PoolRecord> {
    let result = create(kb, name, kms, opts).await;
    audited(kb, AuditEvent::new(actor, Action::PoolCreate).pool(name), result).await
}

async fn create(kb: &Keybridge, name: &str, kms: &str, opts: &PoolOptions<'_>) -> Result<PoolRecord> {
    check_name("pool name", name)?;
    if !KEK_BITS.contains(&opts.kek_bits) {
        return Err(Error::InvalidName {
            what: "KEK size",
            value: opts.kek_bits.to_string(),
            reason: "must be 2048, 3072 or 4096 bits",
        });
    }
    if kb.catalog().pool_by_name(name).await.is_ok() {
        return Err(Error::AlreadyExists { what: "pool", name: name.to_owned() });
    }
    let backend = kb.backend(kms).await?;
    let on_kms = Error::backend(kms);
    let identity = backend.identity();

    // Step 1: the master key.
    let mk = match opts.master_key {
        Some(reference) => backend.adopt_master_key(reference).await,
        None => backend.create_master_key(&format!("keybridge-mk-{name}")).await,
    }
    .map_err(Error::backend(kms))?;

    // Steps 2 and 3; on failure, remove what step 1 created.
    let result = async {
        let kek = backend.generate_kek(&mk, opts.kek_bits).await.map_err(on_kms)?;
        let pool = kb.catalog().insert_pool(name, kms, backend.kind(), &identity, &mk, &kek).await?;
        if pool.generation != 1 || pool.kek_public != kek.public_spki {
            return Err(Error::Integrity {
                what: format!("pool '{name}'"),
                reason: "the catalog returned another key than the one just stored (the catalog was edited); nothing was pinned".into(),
            });
        }
        Ok(pool)
    }
    .await;
    match result {
        Ok(pool) => {
            tracing::info!(pool = name, kms, mk = %mk.label, wrap = %pool.wrap_mechanism, oaep = %pool.oaep_hash, "pool created");
            // The KEK pair was made here, so its public half is known good
            // (see `backup::checked_kek`).
            kb.pin_kek(&pool.pin_name(), pool.kek_public_sha256());
            let (mk_pin, mk_id) = pool.mk_pin();
            kb.pin_kek(&mk_pin, mk_id);
            Ok(pool)
        }
        Err(err) if mk.owned => match backend.destroy_master_key(&mk).await {
            Ok(()) => Err(err),
            Err(cleanup) => {
                tracing::error!(mk = %mk.label, id = %mk.id, error = %cleanup, "orphan master key left in KMS");
                Err(Error::backend(kms)(keybridge_kms::BackendError::Other(format!(
                    "pool creation failed ({err}) and the new master key {} (id {}) could not be destroyed: {cleanup}; remove it by hand",
                    mk.label, mk.id
                ))))
            }
        },
        Err(err) => Err(err),
    }
}
