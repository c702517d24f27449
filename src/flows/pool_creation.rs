//! Storage pool creation (seed, "Storage Pool Creation").
//!
//! 1. The master key is created in the KMS (or an existing one adopted).
//! 2. The KMS produces a KEK pair; the private half comes out only wrapped by
//!    the master key (PKCS#11: generated and wrapped inside the token).
//! 3. The public KEK, the wrapped private KEK, the master key reference and
//!    the exact mechanisms are stored in one catalog transaction.
//!
//! The creation is journalled like every other key change (`journal.rs`):
//! the entry (with the pool's row, reserved but seen by no read) is written
//! before the master key is made, the key is recorded once made, and
//! generation 1 is the commit. A creation that fails, or whose process dies,
//! before the commit is rolled back, its master key destroyed (by label if
//! the crash came before it was recorded), by itself, by the next `pool
//! create` of the name or by `keybridge serve` at start; one after the
//! commit is finished. No key is left in a KMS without the journal or a
//! catalog row naming it.

use super::audited;
use super::journal::{self, Change, Plan, PlannedKey};
use super::pool_lifecycle::new_label;
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::lifecycle::{KeyChange, NewGeneration};
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
    let backend = kb.backend(kms).await?;
    // An interrupted creation of this name is rolled back, or finished,
    // first.
    let resumed = journal::resume_creation(kb, name).await?;
    // A label unique to this creation: a key made but not yet recorded is
    // found by it, and only it.
    let plan = match opts.master_key {
        Some(_) => Plan::default(),
        None => Plan { new_keys: vec![PlannedKey { kms: kms.to_owned(), label: new_label(name), key_ref: None }], ..Default::default() },
    };
    let mut change = match Change::begin_creation(kb, name, kms, backend.kind(), &backend.identity(), plan).await {
        Ok(change) => change,
        // This very creation, interrupted after its commit and finished
        // just now: the pool asked for exists.
        Err(Error::AlreadyExists { .. }) if resumed.iter().any(|r| r.operation == "create" && r.outcome == "finished") => {
            let pool = kb.catalog().pool_by_name(name).await?;
            if pool.kms_name == kms && pool.kek_bits == opts.kek_bits && pool.generation == 1 {
                tracing::warn!(pool = name, kms, "an interrupted creation of this pool was finished; it is the pool asked for");
                return Ok(pool);
            }
            return Err(Error::AlreadyExists { what: "pool", name: name.to_owned() });
        }
        Err(e) => return Err(e),
    };
    let mut public = Vec::new();
    let built = async {
        let mk = match opts.master_key {
            Some(reference) => {
                let mk = backend.adopt_master_key(reference).await.map_err(Error::backend(kms))?;
                change.record_adopted(kms, &mk).await?
            }
            None => change.make_keys().await?.into_iter().next().ok_or_else(|| Error::Internal("no master key was made".into()))?,
        };
        journal::fault("create", "keys_made")?;
        let kek = backend.generate_kek(&mk.key, opts.kek_bits).await.map_err(Error::backend(kms))?;
        journal::fault("create", "wrapped")?;
        public = kek.public_spki.clone();
        Ok(KeyChange { new_generation: Some(NewGeneration { generation: 1, mk_row: mk.row, kek }), ..Default::default() })
    }
    .await;
    for note in change.conclude(built).await? {
        tracing::warn!(pool = name, "{note}");
    }
    let pool = kb.catalog().pool_by_name(name).await?;
    if pool.generation != 1 || pool.kek_public != public {
        return Err(Error::Integrity {
            what: format!("pool '{name}'"),
            reason: "the catalog returned another key than the one just stored (the catalog was edited); nothing was pinned".into(),
        });
    }
    tracing::info!(pool = name, kms, mk = %pool.master_key.label, wrap = %pool.wrap_mechanism, oaep = %pool.oaep_hash, "pool created");
    // The KEK pair was made here, so its public half is known good (see
    // `backup::checked_kek`).
    kb.pin_kek(&pool.pin_name(), pool.kek_public_sha256());
    let (mk_pin, mk_id) = pool.mk_pin();
    kb.pin_kek(&mk_pin, mk_id);
    Ok(pool)
}
