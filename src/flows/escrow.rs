//! Escrow of a pool's KEKs under a passphrase (issue 13; the file format is
//! `keybridge-proto/src/escrow.rs`, documented in docs/escrow-format.md).
//!
//! - **Export** takes every KEK generation of a pool out of a KMS that can
//!   give it back (built-in, KMIP; never a PKCS#11 token) and seals them in
//!   one file under the operator's passphrase (Argon2id, then AES-256-GCM).
//!   The file is written 0600, never over an existing one, and synced; the
//!   pool records when it was exported, and `pool show` warns about it.
//! - **Import** opens such a file and attaches its generations to the pool
//!   of the same name: each generation must be the catalog's own (the same
//!   public KEK), and is wrapped under a new master key in the KMS chosen,
//!   ahead of the pool's other wrappings. A journalled change, like wrap.
//!   It recovers a pool whose KMS lost its master key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::audited;
use super::journal::{self, Change, Plan, PlannedKey};
use super::pool_lifecycle::{self, ChangeReport};
use crate::context::Keybridge;
use crate::{Error, Result};
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::lifecycle::{KeyChange, NewWrapping};
use keybridge_proto::escrow::{self, EscrowContents, EscrowGeneration, Passphrase};

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub pool: String,
    /// Where it was written (the CLI); `None` when handed to the caller.
    pub file: Option<std::path::PathBuf>,
    pub bytes: usize,
    pub generations: Vec<u32>,
    pub exported_at: String,
}

/// Read a passphrase file (one trailing newline dropped).
pub fn passphrase_from_file(path: &Path) -> Result<Passphrase> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| Error::Io { context: "reading the passphrase file", path: path.to_owned(), source })?);
    Passphrase::from_file_bytes(&bytes).map_err(|e| Error::Input { what: format!("passphrase file {}", path.display()), reason: e.to_string() })
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Export every KEK generation of pool `name` under `passphrase` to `out`.
/// Audited as `pool.export`.
pub async fn export(kb: &Keybridge, name: &str, passphrase: &Passphrase, out: &Path, actor: &Actor) -> Result<Exported> {
    let result = async {
        let (mut e, file) = export_inner(kb, name, passphrase).await?;
        write_new(out, &file)?;
        e.file = Some(out.to_owned());
        Ok(e)
    }
    .await;
    audited(kb, AuditEvent::new(actor, Action::PoolExport).pool(name), result).await
}

/// Export pool `name` as [`export`] does, handing the file's bytes back
/// (the service answers with them). Audited as `pool.export`.
pub async fn export_bytes(kb: &Keybridge, name: &str, passphrase: &Passphrase, actor: &Actor) -> Result<(Exported, Vec<u8>)> {
    let result = export_inner(kb, name, passphrase).await;
    audited(kb, AuditEvent::new(actor, Action::PoolExport).pool(name), result).await
}

/// Write `bytes` to a new file `out` (0600, never over an existing one), synced.
fn write_new(out: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { context: "writing the escrow file", path: out.to_owned(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { what: "file", name: out.display().to_string() },
        _ => io(e),
    })?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)
}

async fn export_inner(kb: &Keybridge, name: &str, passphrase: &Passphrase) -> Result<(Exported, Vec<u8>)> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    let mut generations = Vec::new();
    for at in pool_lifecycle::generations(kb, &pool).await? {
        let pkcs8 = pool_lifecycle::release(kb, &at, &wrappings).await?;
        generations.push(EscrowGeneration {
            generation: at.generation,
            bits: at.kek_bits,
            kek_public: at.kek_public.clone(),
            private_pkcs8: pkcs8,
            oaep_hash: at.oaep_hash.to_string(),
            params: at.params.clone(),
            created_at: at.created_at.clone(),
        });
    }
    let exported_at = now_text();
    let contents = EscrowContents { pool: name.to_owned(), exported_at: exported_at.clone(), generations };
    let file = escrow::seal(&contents, passphrase, escrow::DEFAULT_KDF).map_err(|e| Error::Input { what: format!("escrow export of pool '{name}'"), reason: e.to_string() })?;
    // Recorded before the file exists anywhere: `pool show` may warn of an
    // export that was never written, never miss one that was.
    kb.catalog().apply_key_change(pool.id, &KeyChange { escrow_exported: true, ..Default::default() }).await?;
    tracing::warn!(pool = name, generations = contents.generations.len(), "escrow export made: it and its passphrase restore the pool without any KMS");
    let e = Exported { pool: name.to_owned(), file: None, bytes: file.len(), generations: contents.generations.iter().map(|g| g.generation).collect(), exported_at };
    Ok((e, file))
}

/// Import the escrow `file` (opened with `passphrase`) into the pool of
/// the same name, wrapping its generations under a new master key in
/// `kms`. Audited as `pool.import`.
pub async fn import(kb: &Keybridge, file: &Path, passphrase: &Passphrase, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    let bytes = std::fs::read(file).map_err(|source| Error::Io { context: "reading the escrow file", path: file.to_owned(), source })?;
    import_bytes(kb, &bytes, &file.display().to_string(), None, passphrase, kms, actor).await
}

/// Import an escrow file's `bytes` (named `source` in messages) as
/// [`import`] does; with `pool`, the file must be that pool's.
pub async fn import_bytes(kb: &Keybridge, bytes: &[u8], source: &str, pool: Option<&str>, passphrase: &Passphrase, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    // The pool named in the (unauthenticated) header, for the audit row only.
    let claimed = escrow::peek(bytes).map(|h| h.pool).unwrap_or_default();
    let result = async {
        if let Some(p) = pool.filter(|p| *p != claimed) {
            return Err(Error::Input { what: format!("escrow file {source}"), reason: format!("it belongs to pool '{claimed}', not '{p}'") });
        }
        import_inner(kb, bytes, source, passphrase, kms).await
    }
    .await;
    let event = AuditEvent::new(actor, Action::PoolImport);
    let event = if claimed.is_empty() { event } else { event.pool(&claimed) };
    audited(kb, event, result).await
}

async fn import_inner(kb: &Keybridge, bytes: &[u8], file: &str, passphrase: &Passphrase, kms: &str) -> Result<ChangeReport> {
    let bad = |reason: String| Error::Input { what: format!("escrow file {file}"), reason };
    let contents = escrow::open(bytes, passphrase).map_err(|e| bad(e.to_string()))?;
    let name = contents.pool.clone();
    let pool = kb.catalog().pool_by_name(&name).await?;
    let target = kb.backend(kms).await?;
    // Each generation must be the catalog's own, and decryptable there.
    let mut ats = Vec::new();
    for g in &contents.generations {
        let at = kb.catalog().pool_generation(pool.id, g.generation).await?;
        if at.kek_public != g.kek_public {
            return Err(Error::Integrity {
                what: format!("KEK generation {} of pool '{name}'", g.generation),
                reason: format!("the escrow file {file} holds another key than the catalog (an export of another pool of the same name, or the catalog was edited); nothing was imported"),
            });
        }
        keybridge_kms::check_kek_pair(&g.private_pkcs8, &at.kek_public).map_err(|e| bad(format!("generation {}: {e}", g.generation)))?;
        target.accepts_oaep(at.oaep_hash).await.map_err(|reason| Error::Input { what: format!("KEK generation {} of pool '{name}'", g.generation), reason })?;
        ats.push(at);
    }
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    let priority = wrappings.iter().map(|w| w.priority).min().unwrap_or(0) - 1;
    let plan = Plan { new_keys: vec![PlannedKey { kms: kms.to_owned(), label: pool_lifecycle::new_label(&name), key_ref: None }], ..Default::default() };
    let mut report = ChangeReport::new(&name, "import");
    let (mut change, resumed) = Change::begin(kb, pool.id, "import", plan).await?;
    report.resumed = resumed;
    let built = async {
        let made = change.make_keys().await?;
        journal::fault("import", "keys_made")?;
        let mk = made.first().ok_or_else(|| Error::Internal("no master key was made".into()))?;
        report.new_master_keys.push(pool_lifecycle::key_json(mk));
        let mut kc = KeyChange::default();
        for (g, at) in contents.generations.iter().zip(&ats) {
            let new = target.wrap_kek(&mk.key, &g.private_pkcs8, &at.kek_public, at.oaep_hash).await.map_err(Error::backend(kms))?;
            journal::fault("import", "wrapped")?;
            kc.add.push(NewWrapping { generation: g.generation, mk_row: mk.row, wrap_mechanism: new.wrap_mechanism, wrapped: new.wrapped, priority });
            report.wrapped_generations.push(g.generation);
        }
        Ok(kc)
    }
    .await;
    report.notes.extend(change.conclude(built).await?);
    let missing: Vec<u32> = pool_lifecycle::generations(kb, &pool).await?.iter().map(|g| g.generation).filter(|g| !report.wrapped_generations.contains(g)).collect();
    if !missing.is_empty() {
        report.notes.push(format!("the file holds no KEK generation {missing:?} (made after the export): those stay as they were"));
    }
    kb.clear_caches().await;
    pool_lifecycle::repin(kb, &name, None).await?;
    tracing::warn!(pool = %name, kms, generations = ?report.wrapped_generations, "escrow imported: the pool's KEKs are wrapped under a new master key");
    Ok(report)
}
