//! A pool's keys over its life (issue 13; the model is in docs/design.md,
//! "Key lifecycle"). So far: rekey.
//!
//! **Rekey** makes the pool's next KEK generation: a new RSA KEK pair from
//! the KMS, its private half wrapped under the master key that wraps the
//! newest generation. New DEKs are issued under it; every DEK keeps the
//! generation it was issued under, and that generation stays restorable.
//! Nothing in the KMS outlives a failure (the KEK pair is made and wrapped
//! in the KMS's session, nothing is stored there), so a rekey needs no
//! journal: it is one catalog transaction after the KMS call.

use super::audited;
use super::pool_creation::KEK_BITS;
use crate::context::Keybridge;
use crate::{Error, Result};
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::PoolRecord;

/// Give pool `name` its next KEK generation, of `bits` (default: the size
/// of its newest). Audited as `pool.rekey`; returns the pool at the new
/// generation once its audit record is durable.
pub async fn rekey(kb: &Keybridge, name: &str, bits: Option<usize>, actor: &Actor) -> Result<PoolRecord> {
    let result = rekey_inner(kb, name, bits).await;
    audited(kb, AuditEvent::new(actor, Action::PoolRekey).pool(name), result).await
}

async fn rekey_inner(kb: &Keybridge, name: &str, bits: Option<usize>) -> Result<PoolRecord> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let bits = bits.unwrap_or(pool.kek_bits);
    if !KEK_BITS.contains(&bits) {
        return Err(Error::InvalidName { what: "KEK size", value: bits.to_string(), reason: "must be 2048, 3072 or 4096 bits" });
    }
    let backend = kb.backend(&pool.kms_name).await?;
    let kek = backend.generate_kek(&pool.master_key, bits).await.map_err(Error::backend(&pool.kms_name))?;
    let new = kb.catalog().add_generation(&pool, &kek).await?;
    if new.generation != pool.generation + 1 || new.kek_public != kek.public_spki || new.mk_row != pool.mk_row {
        return Err(Error::Integrity {
            what: format!("new KEK generation of pool '{name}'"),
            reason: "the catalog returned another key than the one just stored (the catalog was edited); nothing was pinned".into(),
        });
    }
    // Made here, so its public half is known good (see `backup::checked_kek`).
    kb.pin_kek(&new.pin_name(), new.kek_public_sha256());
    let (mk_pin, mk_id) = new.mk_pin();
    if kb.kek_pin(&mk_pin).is_none() {
        kb.pin_kek(&mk_pin, mk_id);
    }
    tracing::info!(pool = name, generation = new.generation, bits, "pool rekeyed: new DEKs use the new KEK generation");
    Ok(new)
}
