//! Backup (seed, "Backup"): issue a DEK to a client.
//!
//! 1. DEK = 32 bytes from the OS CSPRNG.
//! 2. DEK (plus its catalog binding) encrypted with the pool's *public* KEK,
//!    RSA-OAEP with the hash recorded for the pool. No KMS call: issuing a
//!    DEK never waits on the HSM.
//! 3. The ciphertext is stored durably before the DEK is handed out.
//! 4. The DEK is returned sealed under the client's network password.
//!
//! Steps 5 and 6 (client-side encryption, MediaAgent) live in the client and
//! media-agent modules.

use std::sync::Arc;

use super::{audit_failure, envelope, DekGrant};
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::{ClientRecord, DekRow, PoolRecord};
use keybridge_proto::api::{JobCompletion, JobRecord};
use crate::context::Keybridge;
use keybridge_kms::crypto::PublicKek;
use keybridge_proto::secret::Dek;
use crate::{Error, Result};

/// Issue a new DEK for `client` in `pool`, as `actor`. Every outcome is
/// audited: the success row is committed with the DEK row, a failure gets
/// its own row.
pub async fn issue_dek(kb: &Keybridge, pool: &str, client: &str, actor: &Actor) -> Result<DekGrant> {
    let (pool, client, public) = lookup(kb, pool, client, actor).await?;
    issue_with(kb, &pool, &public, &client, actor).await
}

/// The pool, the client and the pool's public KEK for a DEK issue; a
/// failure is audited as a failed `dek.issue`.
async fn lookup(kb: &Keybridge, pool: &str, client: &str, actor: &Actor) -> Result<(PoolRecord, ClientRecord, Arc<PublicKek>)> {
    match find(kb, pool, client).await {
        Ok(found) => Ok(found),
        Err(e) => Err(audit_failure(kb, AuditEvent::new(actor, Action::DekIssue).pool(pool).client(client), e).await),
    }
}

/// The pool's public KEK must be the one whose private half the KMS holds:
/// whoever writes the catalog could otherwise put in their own key, and
/// every DEK issued after that would be readable by them and by nobody
/// else (the KMS could never decrypt it). The first issue of a pool on this
/// host checks it with a round trip (a random value encrypted under it,
/// decrypted by the KMS) and pins its SHA-256 in `[catalog] kek_pins`, a
/// file outside the catalog; after that an issue compares the hash and
/// needs no KMS. A public KEK that differs from the pin, or that the KMS
/// cannot decrypt for, is an integrity error: no DEK is issued under it.
/// A KMS that cannot be reached for the first check is a KMS error.
async fn checked_kek(kb: &Keybridge, pool: &PoolRecord, public: &PublicKek) -> Result<()> {
    // Pinned per KEK generation: `pool` for the first, `pool#N` after.
    let pin = pool.pin_name();
    if kb.kek_checked(&pin, &pool.kek_public) {
        return Ok(());
    }
    let sha256 = pool.kek_public_sha256();
    let replaced = |reason: String| Error::Integrity { what: format!("public KEK of pool '{}' (generation {})", pool.name, pool.generation), reason };
    // A name from the catalog is not trusted either: one holding '#' or
    // '@' could take over another pool's pins.
    keybridge_proto::error::check_name("pool name", &pool.name).map_err(|e| replaced(format!("the catalog holds an invalid pool name: {e}")))?;
    match kb.kek_pin(&pin) {
        Some(pinned) if pinned == sha256 => {
            // Pins written before master keys were pinned: the key of a
            // generation this host checked becomes the pool's.
            let (mk_pin, mk_id) = pool.mk_pin();
            if kb.kek_pin(&mk_pin).is_none() {
                kb.pin_kek(&mk_pin, mk_id);
            }
            kb.set_kek_checked(&pin, &pool.kek_public, public);
            return Ok(());
        }
        Some(_) => return Err(replaced("it is not the one this host checked against the KMS: the catalog row was replaced; no DEK is issued under it".into())),
        None => {}
    }
    // A generation this host has not seen: it must be wrapped under the
    // master key this host pinned for the pool, or a catalog writer could
    // add a generation that copies another pool's KEK and wrapping (under
    // another, perhaps weaker, KMS) and pass the round trip below.
    let (mk_pin, mk_id) = pool.mk_pin();
    let mut pinned_mk = kb.kek_pin(&mk_pin);
    if pinned_mk.as_deref().is_some_and(|p| p != mk_id) {
        // A lifecycle command of another process on this host may have
        // moved the pool to a new master key since this process read the pins.
        kb.reload_kek_pins();
        pinned_mk = kb.kek_pin(&mk_pin);
    }
    if pinned_mk.as_deref().is_some_and(|p| p != mk_id) {
        return Err(replaced(format!(
            "it is wrapped under master key {mk_id}, not {} which this host pinned for the pool; no DEK is issued under it",
            pinned_mk.unwrap_or_default()
        )));
    }
    let probe = keybridge_proto::crypto::random_array::<32>().map_err(Error::crypto("making a KEK check value"))?;
    let encrypted = public.encrypt(pool.oaep_hash, &probe[..]).map_err(Error::crypto(format!("encrypting under the KEK of pool '{}'", pool.name)))?;
    // Through the wrapping under the pinned master key only, never another:
    // a forged generation could pair a pinned key's wrapping with another
    // pool's KEK and wrapping.
    let backend = kb.backend(&pool.kms_name).await?;
    match backend.decrypt_dek(&pool.kek(), &encrypted).await {
        Ok(plain) if plain.expose() == &probe[..] => {}
        Ok(_) | Err(keybridge_kms::BackendError::DekDecrypt { .. }) => {
            return Err(replaced("the KMS cannot decrypt what it encrypts: it does not belong to the pool's private KEK (the catalog row was replaced); no DEK is issued under it".into()))
        }
        Err(e) => return Err(Error::backend(&pool.kms_name)(e)),
    }
    kb.pin_kek(&pin, sha256);
    if pinned_mk.is_none() {
        kb.pin_kek(&mk_pin, mk_id);
    }
    kb.set_kek_checked(&pin, &pool.kek_public, public);
    Ok(())
}

/// The pool, the client and the pool's public KEK, parsed, or as this
/// process parsed it when it checked these same bytes.
async fn find(kb: &Keybridge, pool: &str, client: &str) -> Result<(PoolRecord, ClientRecord, Arc<PublicKek>)> {
    let pool = kb.catalog().pool_by_name(pool).await?;
    let client = kb.catalog().client_by_name(client).await?;
    let public = match kb.checked_public_kek(&pool.pin_name(), &pool.kek_public) {
        Some(public) => public,
        None => Arc::new(PublicKek::from_spki_der(&pool.kek_public).map_err(|e| Error::Integrity {
            what: format!("public KEK of pool '{}'", pool.name),
            reason: e.to_string(),
        })?),
    };
    Ok((pool, client, public))
}

/// Start a backup job: a DEK of its own for this job (steps 1-4) and a
/// `running` job row naming the MediaAgent the client streams to (step 5).
pub async fn start_job(kb: &Keybridge, pool: &str, client: &str, media_agent: &str, actor: &Actor) -> Result<(JobRecord, DekGrant)> {
    let (pool, client, public) = lookup(kb, pool, client, actor).await?;
    let grant = issue_with(kb, &pool, &public, &client, actor).await?;
    let job_id = uuid::Uuid::now_v7().to_string();
    let job = kb.catalog().insert_job(&job_id, pool.id, client.id, &grant.dek_id, media_agent).await?;
    tracing::info!(job = %job.id, pool = %pool.name, client = %client.name, "backup job started");
    Ok((job, grant))
}

/// Finish a backup job: the client reports the stream the MediaAgent
/// stored. Only the job's own client may complete it.
pub async fn complete_job(kb: &Keybridge, job_id: &str, client: &str, done: &JobCompletion) -> Result<JobRecord> {
    let job = own_job(kb, job_id, client).await?;
    let valid = done.stream_checksum.strip_prefix("crc32c:").is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(Error::Input { what: format!("completion of job {job_id}"), reason: "stream_checksum must be 'crc32c:' and 8 hex digits".into() });
    }
    let job = kb.catalog().complete_job(&job.id, done).await?;
    tracing::info!(job = %job.id, bytes = done.stream_bytes, "backup job complete");
    Ok(job)
}

/// A job, if it belongs to `client`. Another client's job is reported as
/// not found, so job ids cannot be probed.
pub async fn own_job(kb: &Keybridge, job_id: &str, client: &str) -> Result<JobRecord> {
    let job = kb.catalog().job(job_id).await?;
    if job.client != client {
        return Err(Error::NotFound { what: "job", name: job_id.to_owned() });
    }
    Ok(job)
}

/// A DEK that is durably stored, not yet sealed for its client.
#[derive(Debug)]
pub struct StoredDek {
    pub dek: Dek,
    pub dek_id: String,
    pub created_at: String,
}

/// Backup steps 1-3: generate a DEK, encrypt it (with its binding) under the
/// pool's public KEK, store the ciphertext durably, in the same transaction
/// as its audit record (`actor` issued it). A failure is audited too.
pub async fn store_new_dek(kb: &Keybridge, pool: &PoolRecord, public: &PublicKek, client: &ClientRecord, actor: &Actor) -> Result<StoredDek> {
    // Time-ordered (UUIDv7): catalog inserts append to the id index instead
    // of touching a random leaf page per DEK, which multiplied WAL traffic.
    let dek_id = uuid::Uuid::now_v7().to_string();
    let event = AuditEvent::new(actor, Action::DekIssue).pool(&pool.name).client(&client.name).dek(&dek_id);
    let stored = match checked_kek(kb, pool, public).await {
        Ok(()) => store(kb, pool, public, client, &dek_id, event.clone()).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok((dek, created_at)) => Ok(StoredDek { dek, dek_id, created_at }),
        Err(e) => Err(audit_failure(kb, event, e).await),
    }
}

async fn store(kb: &Keybridge, pool: &PoolRecord, public: &PublicKek, client: &ClientRecord, dek_id: &str, event: AuditEvent) -> Result<(Dek, String)> {
    let dek = Dek::generate().map_err(Error::crypto("generating DEK"))?;
    let plain = envelope::build(&dek, dek_id, &pool.name, client);
    let encrypted = public
        .encrypt(pool.oaep_hash, &plain)
        .map_err(Error::crypto(format!("encrypting DEK under the KEK of pool '{}'", pool.name)))?;
    let row = DekRow { id: dek_id.to_owned(), pool_id: pool.id, client_id: client.id, encrypted_dek: encrypted, generation: pool.generation };
    let created_at = kb.catalog().insert_dek(row, event).await?;
    Ok((dek, created_at))
}

/// Issue a DEK with an already parsed public KEK (for callers issuing many):
/// steps 1-3, then step 4, the seal under the client's password. A seal
/// failure after the DEK was stored (and audited as issued) is audited as a
/// second, failed `dek.issue` row for the same DEK: it was never delivered.
pub async fn issue_with(kb: &Keybridge, pool: &PoolRecord, public: &PublicKek, client: &ClientRecord, actor: &Actor) -> Result<DekGrant> {
    let stored = store_new_dek(kb, pool, public, client, actor).await?;
    let sealed_dek = match kb.sealer(client.recipient()).and_then(|s| s.seal(&stored.dek, &pool.name, &stored.dek_id)) {
        Ok(s) => s,
        Err(e) => {
            let event = AuditEvent::new(actor, Action::DekIssue).pool(&pool.name).client(&client.name).dek(&stored.dek_id);
            return Err(audit_failure(kb, event, e).await);
        }
    };
    tracing::info!(pool = %pool.name, client = %client.name, dek = %stored.dek_id, %actor, "DEK issued");
    Ok(DekGrant { dek_id: stored.dek_id, pool: pool.name.clone(), client: client.name.clone(), sealed_dek, created_at: stored.created_at })
}
