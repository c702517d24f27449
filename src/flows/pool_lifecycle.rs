//! A pool's keys over its life (issue 13; the model is in docs/design.md,
//! "Key lifecycle"): rekey, rotate, wrap, unwrap, migrate, retire-keys and
//! shred. Every change of more than one step is journalled (`journal.rs`).
//!
//! **Rekey** makes the pool's next KEK generation: a new RSA KEK pair from
//! the KMS, its private half wrapped under the master key that wraps the
//! newest generation. New DEKs are issued under it; every DEK keeps the
//! generation it was issued under, and that generation stays restorable.
//! Nothing in the KMS outlives a failure (the KEK pair is made and wrapped
//! in the KMS's session, nothing is stored there), so a rekey needs no
//! journal: it is one catalog transaction after the KMS call.

use serde::Serialize;
use zeroize::Zeroizing;

use super::audited;
use super::journal::{self, Change, Plan, PlannedKey, Resumed};
use super::pool_creation::KEK_BITS;
use crate::context::Keybridge;
use crate::{Error, Result};
use keybridge_catalog::audit::{Action, Actor, AuditEvent};
use keybridge_catalog::lifecycle::{JournalState, KeyChange, MasterKeyRecord, MasterKeyState, NewGeneration, NewWrapping, WrappingRecord};
use keybridge_catalog::PoolRecord;
use keybridge_kms::PoolKek;

/// Give pool `name` its next KEK generation, of `bits` (default: the size
/// of its newest). Audited as `pool.rekey`; returns the pool at the new
/// generation once its audit record is durable.
pub async fn rekey(kb: &Keybridge, name: &str, bits: Option<usize>, actor: &Actor) -> Result<PoolRecord> {
    let result = rekey_inner(kb, name, bits).await;
    audited(kb, AuditEvent::new(actor, Action::PoolRekey).pool(name), result).await
}

/// Give pool `name` its next KEK generation under a new master key in KMS
/// `kms` (any kind, including one its other generations are not in): new
/// DEKs go there; older generations stay where they are. The way a pool
/// moves its new DEKs off a PKCS#11 token, which never lets a KEK out.
/// Journalled (a key is made); audited as `pool.rekey`.
pub async fn rekey_to(kb: &Keybridge, name: &str, bits: Option<usize>, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = rekey_to_inner(kb, name, bits, kms).await;
    audited(kb, AuditEvent::new(actor, Action::PoolRekey).pool(name), result).await
}

async fn rekey_to_inner(kb: &Keybridge, name: &str, bits: Option<usize>, kms: &str) -> Result<ChangeReport> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let bits = checked_bits(bits.unwrap_or(pool.kek_bits))?;
    let backend = kb.backend(kms).await?;
    let plan = Plan { new_keys: vec![PlannedKey { kms: kms.to_owned(), label: new_label(name), key_ref: None }], ..Default::default() };
    let mut report = ChangeReport::new(name, "rekey");
    let (mut change, resumed) = Change::begin(kb, pool.id, "rekey", plan).await?;
    report.resumed = resumed;
    let mut public = Vec::new();
    let built = async {
        let made = change.make_keys().await?;
        journal::fault("rekey", "keys_made")?;
        let mk = made.first().ok_or_else(|| Error::Internal("no master key was made".into()))?;
        report.new_master_keys.push(key_json(mk));
        let kek = backend.generate_kek(&mk.key, bits).await.map_err(Error::backend(kms))?;
        public = kek.public_spki.clone();
        report.new_generation = Some(pool.generation + 1);
        Ok(KeyChange { new_generation: Some(NewGeneration { generation: pool.generation + 1, mk_row: mk.row, kek }), ..Default::default() })
    }
    .await;
    report.notes.extend(change.conclude(built).await?);
    repin(kb, name, Some(&public)).await?;
    tracing::info!(pool = name, kms, generation = pool.generation + 1, "pool rekeyed into another KMS: new DEKs use it");
    Ok(report)
}

fn checked_bits(bits: usize) -> Result<usize> {
    if !KEK_BITS.contains(&bits) {
        return Err(Error::InvalidName { what: "KEK size", value: bits.to_string(), reason: "must be 2048, 3072 or 4096 bits" });
    }
    Ok(bits)
}

async fn rekey_inner(kb: &Keybridge, name: &str, bits: Option<usize>) -> Result<PoolRecord> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let bits = checked_bits(bits.unwrap_or(pool.kek_bits))?;
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

/// What a lifecycle command did (CLI `--json` and the service's answer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangeReport {
    pub pool: String,
    pub operation: &'static str,
    /// Master keys made: KMS, id, label.
    pub new_master_keys: Vec<serde_json::Value>,
    /// KEK generations given a wrapping under a new master key.
    pub wrapped_generations: Vec<u32>,
    /// A new KEK generation made instead, where a KMS cannot re-wrap.
    pub new_generation: Option<u32>,
    /// Wrappings removed.
    pub removed_wrappings: usize,
    /// Master keys deactivated, destroyed, or left (adopted ones).
    pub deactivated: Vec<serde_json::Value>,
    pub destroyed: Vec<serde_json::Value>,
    pub kept: Vec<serde_json::Value>,
    /// What an operator should know.
    pub notes: Vec<String>,
    /// Interrupted changes of the pool finished or rolled back first.
    pub resumed: Vec<Resumed>,
}

impl ChangeReport {
    pub(crate) fn new(pool: &str, operation: &'static str) -> Self {
        ChangeReport { pool: pool.to_owned(), operation, ..Default::default() }
    }

    /// One line per fact, for the CLI.
    pub fn to_text(&self) -> String {
        let mut out = format!("pool '{}': {}", self.pool, self.operation);
        let keys = |v: &[serde_json::Value]| v.iter().map(|k| format!("{} on KMS '{}'", k["label"].as_str().unwrap_or("?"), k["kms"].as_str().unwrap_or("?"))).collect::<Vec<_>>().join(", ");
        if !self.new_master_keys.is_empty() {
            out += &format!("; new master key(s): {}", keys(&self.new_master_keys));
        }
        if !self.wrapped_generations.is_empty() {
            out += &format!("; KEK generation(s) {:?} wrapped under them", self.wrapped_generations);
        }
        if let Some(g) = self.new_generation {
            out += &format!("; new KEK generation {g}");
        }
        if self.removed_wrappings > 0 {
            out += &format!("; {} old wrapping(s) removed", self.removed_wrappings);
        }
        if !self.deactivated.is_empty() {
            out += &format!("; deactivated: {}", keys(&self.deactivated));
        }
        if !self.destroyed.is_empty() {
            out += &format!("; destroyed: {}", keys(&self.destroyed));
        }
        if !self.kept.is_empty() {
            out += &format!("; kept: {}", keys(&self.kept));
        }
        out.push('\n');
        for r in &self.resumed {
            out += &format!("note: an interrupted {} of pool '{}' (journal {}, at step {}) was {} first\n", r.operation, r.pool, r.journal_id, r.step, r.outcome);
        }
        for n in &self.notes {
            out += &format!("note: {n}\n");
        }
        out
    }
}

pub(crate) fn key_json(mk: &MasterKeyRecord) -> serde_json::Value {
    serde_json::json!({ "kms": mk.kms_name, "id": mk.key.id, "label": mk.key.label })
}

/// Have `change` deactivate `mk` (once), and report it.
fn retire(change: &mut KeyChange, report: &mut ChangeReport, mk: &MasterKeyRecord) {
    if !change.deactivate.contains(&mk.row) {
        change.deactivate.push(mk.row);
        report.deactivated.push(key_json(mk));
    }
}

/// A label for a master key made for pool `pool` by one change, unique so
/// that a key made but not yet recorded is found again by it.
pub(crate) fn new_label(pool: &str) -> String {
    format!("keybridge-mk-{pool}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// What a backend needs to use wrapping `w` of generation `at`.
fn wrapping_kek<'a>(at: &'a PoolRecord, w: &'a WrappingRecord) -> PoolKek<'a> {
    PoolKek {
        pool_id: at.id,
        generation: w.generation,
        pool_name: &at.name,
        master_key: &w.master_key.key,
        wrapped_private: &w.wrapped,
        wrap_mechanism: &w.wrap_mechanism,
        oaep_hash: at.oaep_hash,
    }
}

/// The backend of wrapping `w`'s KMS, if it is configured and can give a
/// KEK back; else why not.
async fn releasing(kb: &Keybridge, w: &WrappingRecord) -> std::result::Result<std::sync::Arc<dyn keybridge_kms::KeyBackend>, String> {
    let kms = &w.master_key.kms_name;
    let backend = kb.backend(kms).await.map_err(|e| format!("KMS '{kms}': {e}"))?;
    backend.kek_release().map_err(|reason| format!("KMS '{kms}': {reason}"))?;
    Ok(backend)
}

/// The private KEK of generation `at` (PKCS#8), from the first of its
/// wrappings whose KMS is configured and can give it back.
pub(crate) async fn release(kb: &Keybridge, at: &PoolRecord, wrappings: &[WrappingRecord]) -> Result<Zeroizing<Vec<u8>>> {
    let mut refused = Vec::new();
    let mut failed = None;
    for w in wrappings.iter().filter(|w| w.generation == at.generation && w.master_key.state != MasterKeyState::Destroyed) {
        let kms = &w.master_key.kms_name;
        let backend = match releasing(kb, w).await {
            Ok(b) => b,
            Err(why) => {
                refused.push(why);
                continue;
            }
        };
        match backend.release_kek(&wrapping_kek(at, w)).await {
            Ok(pkcs8) => return Ok(pkcs8),
            Err(e) => {
                tracing::warn!(pool = %at.name, generation = at.generation, kms = %kms, error = %e, "could not take a KEK out of this KMS; trying the next wrapping");
                failed.get_or_insert(Error::backend(kms)(e));
            }
        }
    }
    Err(failed.unwrap_or_else(|| Error::Input {
        what: format!("KEK generation {} of pool '{}'", at.generation, at.name),
        reason: format!("no KMS that wraps it can give it back ({})", refused.join("; ")),
    }))
}

/// Refuse, before any key is made, a move of `pool`'s generations to KMS
/// `kms` that cannot succeed: a generation no configured KMS can give
/// back, or one whose DEKs `kms` cannot decrypt.
async fn can_move(kb: &Keybridge, pool: &PoolRecord, wrappings: &[WrappingRecord], kms: &str) -> Result<()> {
    let target = kb.backend(kms).await?;
    for at in generations(kb, pool).await? {
        target.accepts_oaep(at.oaep_hash).await.map_err(|reason| Error::Input { what: format!("KEK generation {} of pool '{}'", at.generation, pool.name), reason })?;
        let mut why = Vec::new();
        let mut releasable = false;
        for w in wrappings.iter().filter(|w| w.generation == at.generation) {
            match releasing(kb, w).await {
                Ok(_) => releasable = true,
                Err(reason) => why.push(reason),
            }
        }
        if !releasable {
            return Err(Error::Input { what: format!("KEK generation {} of pool '{}'", at.generation, pool.name), reason: format!("no KMS that wraps it can give it back ({})", why.join("; ")) });
        }
    }
    Ok(())
}

/// The pool's generations, each as a record (public KEK, OAEP hash).
pub(crate) async fn generations(kb: &Keybridge, pool: &PoolRecord) -> Result<Vec<PoolRecord>> {
    let mut out = Vec::new();
    for g in kb.catalog().generations(pool.id).await? {
        out.push(kb.catalog().pool_generation(pool.id, g.generation).await?);
    }
    Ok(out)
}

/// Wrap every generation of `pool` under `mk` (made in its KMS), taking
/// each private KEK from the wrappings it has.
async fn wrap_all(kb: &Keybridge, pool: &PoolRecord, wrappings: &[WrappingRecord], mk: &MasterKeyRecord, priority: i64, report: &mut ChangeReport) -> Result<Vec<NewWrapping>> {
    let target = kb.backend(&mk.kms_name).await?;
    let mut add = Vec::new();
    for at in generations(kb, pool).await? {
        let pkcs8 = release(kb, &at, wrappings).await?;
        let new = target.wrap_kek(&mk.key, &pkcs8, &at.kek_public, at.oaep_hash).await.map_err(Error::backend(&mk.kms_name))?;
        journal::fault(report.operation, "wrapped")?;
        add.push(NewWrapping { generation: at.generation, mk_row: mk.row, wrap_mechanism: new.wrap_mechanism, wrapped: new.wrapped, priority });
        report.wrapped_generations.push(at.generation);
    }
    Ok(add)
}

/// Check the wrappings of `pool` that KMS `kms` holds already, before a
/// migration there removes every other: each generation has one, and
/// each unwraps under its master key to the generation's KEK, checked as
/// a new wrapping is ([`keybridge_kms::KeyBackend::verify_kek`]). Returns
/// a note for the report.
async fn verify_kept(kb: &Keybridge, pool: &PoolRecord, wrappings: &[WrappingRecord], kms: &str) -> Result<String> {
    let backend = kb.backend(kms).await?;
    let mut verified = Vec::new();
    for at in generations(kb, pool).await? {
        let kept: Vec<&WrappingRecord> = wrappings.iter().filter(|w| w.generation == at.generation && w.master_key.kms_name == kms).collect();
        if kept.is_empty() {
            return Err(Error::Input {
                what: format!("migration of pool '{}' to KMS '{kms}'", pool.name),
                reason: format!(
                    "KMS '{kms}' wraps the pool already, but not its KEK generation {}; nothing was changed (`pool unwrap {} --kms {kms}`, then migrate again: that wraps every generation under a new master key there)",
                    at.generation, pool.name
                ),
            });
        }
        for w in kept {
            backend.verify_kek(&wrapping_kek(&at, w), &at.kek_public).await.map_err(|e| {
                if e.is_transient() {
                    return Error::backend(kms)(e);
                }
                Error::Integrity {
                    what: format!("wrapping of KEK generation {} of pool '{}' under master key {} in KMS '{kms}'", at.generation, pool.name, w.master_key.key.label),
                    reason: format!("{e}; the migration is refused and every wrapping kept"),
                }
            })?;
        }
        verified.push(at.generation);
    }
    Ok(format!("KMS '{kms}' wrapped the pool already: its wrappings of KEK generation(s) {verified:?} were unwrapped and checked against the public KEK before the others were removed"))
}

/// Pin what this host just made or moved: the newest generation's public
/// KEK (if `new_generation`) and the master key that wraps it first.
pub(crate) async fn repin(kb: &Keybridge, name: &str, new_generation: Option<&[u8]>) -> Result<()> {
    let now = kb.catalog().pool_by_name(name).await?;
    if let Some(public) = new_generation {
        if now.kek_public != public {
            return Err(Error::Integrity { what: format!("new KEK generation of pool '{name}'"), reason: "the catalog returned another key than the one just stored (the catalog was edited); nothing was pinned".into() });
        }
        kb.pin_kek(&now.pin_name(), now.kek_public_sha256());
    }
    let (mk_pin, mk_id) = now.mk_pin();
    kb.pin_kek(&mk_pin, mk_id);
    Ok(())
}

/// Give pool `name` new master keys, one in each KMS that wraps it, and
/// move its wrappings there; the old keys become deactivated. Where a KMS
/// cannot re-wrap a KEK (PKCS#11: it never lets one out), the new master
/// key wraps a new KEK generation instead. Audited as `pool.rotate`.
pub async fn rotate(kb: &Keybridge, name: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = rotate_inner(kb, name).await;
    audited(kb, AuditEvent::new(actor, Action::PoolRotate).pool(name), result).await
}

async fn rotate_inner(kb: &Keybridge, name: &str) -> Result<ChangeReport> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    let mut kmss: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    for w in &wrappings {
        let kms = &w.master_key.kms_name;
        if kmss.contains(kms) || skipped.contains(kms) {
            continue;
        }
        // A KMS that cannot re-wrap and does not hold the newest generation
        // has nothing a rotation could move; it keeps its wrappings.
        let releases = match kb.backend(kms).await {
            Ok(b) => b.kek_release().is_ok(),
            Err(_) => false,
        };
        if releases || *kms == pool.kms_name {
            kmss.push(kms.clone());
        } else {
            skipped.push(kms.clone());
        }
    }
    let plan = Plan { new_keys: kmss.iter().map(|k| PlannedKey { kms: k.clone(), label: new_label(name), key_ref: None }).collect(), ..Default::default() };
    let mut report = ChangeReport::new(name, "rotate");
    for kms in &skipped {
        report.notes.push(format!("KMS '{kms}' keeps its wrappings and master key: it cannot re-wrap a KEK, and new DEKs are not issued there"));
    }
    let (mut change, resumed) = Change::begin(kb, pool.id, "rotate", plan).await?;
    report.resumed = resumed;
    let mut new_public = None;
    let built = async {
        let made = change.make_keys().await?;
        journal::fault("rotate", "keys_made")?;
        let mut kc = KeyChange { rotated: true, ..Default::default() };
        for mk in &made {
            report.new_master_keys.push(key_json(mk));
            let backend = kb.backend(&mk.kms_name).await?;
            let old: Vec<&WrappingRecord> = wrappings.iter().filter(|w| w.master_key.kms_name == mk.kms_name).collect();
            match backend.kek_release() {
                Ok(()) => {
                    for w in old {
                        let at = kb.catalog().pool_generation(pool.id, w.generation).await?;
                        let new = backend.rewrap_kek(&wrapping_kek(&at, w), &mk.key, &at.kek_public).await.map_err(Error::backend(&mk.kms_name))?;
                        journal::fault("rotate", "wrapped")?;
                        kc.add.push(NewWrapping { generation: w.generation, mk_row: mk.row, wrap_mechanism: new.wrap_mechanism, wrapped: new.wrapped, priority: w.priority });
                        kc.remove.push((w.generation, w.master_key.row));
                        report.wrapped_generations.push(w.generation);
                        retire(&mut kc, &mut report, &w.master_key);
                    }
                }
                Err(reason) if mk.kms_name == pool.kms_name && kc.new_generation.is_none() => {
                    // The KEKs stay under their keys; new DEKs move to a new
                    // generation under the new key.
                    let kek = backend.generate_kek(&mk.key, pool.kek_bits).await.map_err(Error::backend(&mk.kms_name))?;
                    new_public = Some(kek.public_spki.clone());
                    kc.new_generation = Some(NewGeneration { generation: pool.generation + 1, mk_row: mk.row, kek });
                    report.new_generation = Some(pool.generation + 1);
                    for w in old {
                        retire(&mut kc, &mut report, &w.master_key);
                    }
                    report.notes.push(format!(
                        "KMS '{}' cannot re-wrap a KEK ({reason}); new DEKs use KEK generation {} under the new master key, and generations up to {} stay wrapped under the deactivated key(s) until `pool retire-keys` may destroy them",
                        mk.kms_name,
                        pool.generation + 1,
                        pool.generation
                    ));
                }
                Err(reason) => {
                    return Err(Error::Input { what: format!("rotation of pool '{name}' on KMS '{}'", mk.kms_name), reason });
                }
            }
        }
        report.removed_wrappings = kc.remove.len();
        Ok(kc)
    }
    .await;
    report.notes.extend(change.conclude(built).await?);
    kb.clear_caches().await;
    repin(kb, name, new_public.as_deref()).await?;
    tracing::info!(pool = name, keys = report.new_master_keys.len(), generations = ?report.wrapped_generations, new_generation = ?report.new_generation, "pool rotated");
    Ok(report)
}

/// Add a wrapping of every KEK generation of pool `name` under a new
/// master key in KMS `kms` (`pool wrap`), or move the pool there (`pool
/// migrate`: the other wrappings removed, their keys deactivated).
pub async fn wrap(kb: &Keybridge, name: &str, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = wrap_inner(kb, name, kms, false).await;
    audited(kb, AuditEvent::new(actor, Action::PoolWrap).pool(name), result).await
}

/// Move pool `name` to KMS `kms`: wrap it there, then remove every other
/// wrapping, in one resumable change. Audited as `pool.migrate`.
pub async fn migrate(kb: &Keybridge, name: &str, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = wrap_inner(kb, name, kms, true).await;
    audited(kb, AuditEvent::new(actor, Action::PoolMigrate).pool(name), result).await
}

async fn wrap_inner(kb: &Keybridge, name: &str, kms: &str, migrate: bool) -> Result<ChangeReport> {
    let operation = if migrate { "migrate" } else { "wrap" };
    let pool = kb.catalog().pool_by_name(name).await?;
    kb.backend(kms).await?;
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    let there = wrappings.iter().any(|w| w.master_key.kms_name == kms);
    if there && !migrate {
        return Err(Error::Input { what: format!("wrap of pool '{name}'"), reason: format!("KMS '{kms}' wraps it already; `pool rotate` gives it a new master key there") });
    }
    if !there {
        can_move(kb, &pool, &wrappings, kms).await?;
    }
    let plan = Plan { new_keys: if there { vec![] } else { vec![PlannedKey { kms: kms.to_owned(), label: new_label(name), key_ref: None }] }, ..Default::default() };
    let mut report = ChangeReport::new(name, operation);
    let (mut change, resumed) = Change::begin(kb, pool.id, operation, plan).await?;
    report.resumed = resumed;
    let built = async {
        let made = change.make_keys().await?;
        journal::fault(operation, "keys_made")?;
        let mut kc = KeyChange::default();
        if let Some(mk) = made.first() {
            report.new_master_keys.push(key_json(mk));
            let priority = if migrate { 0 } else { wrappings.iter().map(|w| w.priority).max().unwrap_or(0) + 1 };
            kc.add = wrap_all(kb, &pool, &wrappings, mk, priority, &mut report).await?;
        } else if migrate {
            report.notes.push(verify_kept(kb, &pool, &wrappings, kms).await?);
        }
        if migrate {
            for w in wrappings.iter().filter(|w| w.master_key.kms_name != kms) {
                kc.remove.push((w.generation, w.master_key.row));
                retire(&mut kc, &mut report, &w.master_key);
            }
        }
        report.removed_wrappings = kc.remove.len();
        Ok(kc)
    }
    .await;
    report.notes.extend(change.conclude(built).await?);
    if migrate {
        kb.clear_caches().await;
        repin(kb, name, None).await?;
    }
    tracing::info!(pool = name, kms, operation, "pool wrapped in another KMS");
    Ok(report)
}

/// Remove every wrapping of pool `name` under master keys in KMS `kms`;
/// refused if a KEK generation would be left without one. The keys become
/// deactivated. Audited as `pool.unwrap`.
pub async fn unwrap(kb: &Keybridge, name: &str, kms: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = unwrap_inner(kb, name, kms).await;
    audited(kb, AuditEvent::new(actor, Action::PoolUnwrap).pool(name), result).await
}

async fn unwrap_inner(kb: &Keybridge, name: &str, kms: &str) -> Result<ChangeReport> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    let (gone, kept): (Vec<&WrappingRecord>, Vec<&WrappingRecord>) = wrappings.iter().partition(|w| w.master_key.kms_name == kms);
    if gone.is_empty() {
        return Err(Error::Input { what: format!("unwrap of pool '{name}'"), reason: format!("no master key in KMS '{kms}' wraps it") });
    }
    if let Some(w) = gone.iter().find(|w| !kept.iter().any(|k| k.generation == w.generation)) {
        return Err(Error::Input {
            what: format!("unwrap of pool '{name}'"),
            reason: format!("KMS '{kms}' holds the only wrapping of KEK generation {}; wrap the pool in another KMS first (`pool wrap`), or move it (`pool migrate`)", w.generation),
        });
    }
    let mut report = ChangeReport::new(name, "unwrap");
    let (change, resumed) = Change::begin(kb, pool.id, "unwrap", Plan::default()).await?;
    report.resumed = resumed;
    let mut kc = KeyChange::default();
    for w in gone {
        kc.remove.push((w.generation, w.master_key.row));
        retire(&mut kc, &mut report, &w.master_key);
    }
    report.removed_wrappings = kc.remove.len();
    report.notes.extend(change.commit(kc).await?);
    kb.clear_caches().await;
    repin(kb, name, None).await?;
    Ok(report)
}

/// Finish or roll back the unfinished change of pool `name` (`pool
/// resume`): as the next command on the pool would, if its process is
/// gone; with `take_over`, one owned by that process (`host:pid:start`,
/// exactly as `pool show` names it), which this host cannot see, taken
/// over on the operator's word first (`journal::take_over`). Audited as
/// `pool.resume`, or `pool.take_over`.
pub async fn resume(kb: &Keybridge, name: &str, take_over: Option<&str>, actor: &Actor) -> Result<ChangeReport> {
    let action = if take_over.is_some() { Action::PoolTakeOver } else { Action::PoolResume };
    let result = resume_inner(kb, name, take_over).await;
    audited(kb, AuditEvent::new(actor, action).pool(name), result).await
}

async fn resume_inner(kb: &Keybridge, name: &str, take_over: Option<&str>) -> Result<ChangeReport> {
    let mut report = ChangeReport::new(name, "resume");
    // By name from the journal: a pool being created has no generation, so
    // no pool read finds it yet.
    let open: Vec<_> = kb.catalog().open_journal(None).await?.into_iter().filter(|e| e.pool == name).collect();
    let Some(first) = open.first() else {
        kb.catalog().pool_by_name(name).await?;
        report.notes.push("the pool has no unfinished change".into());
        return Ok(report);
    };
    report.resumed = match take_over {
        Some(owner) => vec![journal::take_over(kb, name, owner).await?],
        None => journal::resume(kb, Some(first.pool_id)).await?,
    };
    if report.resumed.iter().any(|r| r.outcome == "taken over") {
        report.notes.push(format!("the shred was taken over, not finished: run `pool shred {name} --yes-destroy {name}` again to finish it"));
    }
    for e in open.iter().filter(|e| !report.resumed.iter().any(|r| r.journal_id == e.id)) {
        report.notes.push(if e.operation == "shred" {
            format!("an interrupted shred (journal {}) is finished only by running `pool shred {name} --yes-destroy {name}` again", e.id)
        } else {
            format!(
                "the unfinished {} (journal {}, step {}) was left to {}: it still runs, or runs on another host; if that process is gone for good, `pool resume {name} --take-over {}`",
                e.operation, e.id, e.step, e.owner, e.owner
            )
        });
    }
    kb.clear_caches().await;
    Ok(report)
}

/// Destroy the deactivated master keys of pool `name` that no wrapping
/// uses any more. Adopted keys are left to their owner. Audited as
/// `key.retire`.
pub async fn retire_keys(kb: &Keybridge, name: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = retire_inner(kb, name).await;
    audited(kb, AuditEvent::new(actor, Action::KeyRetire).pool(name), result).await
}

async fn retire_inner(kb: &Keybridge, name: &str) -> Result<ChangeReport> {
    let pool = kb.catalog().pool_by_name(name).await?;
    let mut report = ChangeReport::new(name, "retire-keys");
    report.resumed = journal::resume(kb, Some(pool.id)).await?;
    let wrappings = kb.catalog().wrappings(pool.id).await?;
    for mk in kb.catalog().pool_master_keys(pool.id).await? {
        if mk.state != MasterKeyState::Deactivated {
            continue;
        }
        if let Some(w) = wrappings.iter().find(|w| w.master_key.row == mk.row) {
            report.notes.push(format!("{} on KMS '{}' still wraps KEK generation {}; kept", mk.key.label, mk.kms_name, w.generation));
            continue;
        }
        if !mk.key.owned {
            report.kept.push(key_json(&mk));
            report.notes.push(format!("{} on KMS '{}' was adopted, not made by keybridge; destroy it in the KMS when nothing else uses it", mk.key.label, mk.kms_name));
            continue;
        }
        // Another pool's wrapping, or this host's pin of some pool's master
        // key, outweighs what the catalog says of the key's state.
        if kb.catalog().master_key_uses(mk.row).await? > 0 || kb.pinned_as_master_key(&mk.kms_name, &mk.key.id).is_some() {
            report.kept.push(key_json(&mk));
            report.notes.push(format!("{} on KMS '{}' is still used (a wrapping of another pool, or pinned on this host as a pool's master key); kept", mk.key.label, mk.kms_name));
            continue;
        }
        // Destroyed, then recorded: a crash between leaves a deactivated
        // row whose key is gone, and the next run records it.
        journal::destroy_in_kms(kb, &mk.key, &mk.kms_name).await?;
        // Nothing else names the key; the catalog refuses if a wrapping
        // appeared meanwhile.
        kb.catalog().apply_key_change(pool.id, &KeyChange { destroyed: vec![mk.row], ..Default::default() }).await?;
        report.destroyed.push(key_json(&mk));
    }
    Ok(report)
}

/// Destroy every master key of pool `name` in every KMS and delete its
/// wrapped KEKs: nothing of the pool can be restored afterwards. `confirm`
/// must repeat the pool's name. Audited as `pool.shred`.
pub async fn shred(kb: &Keybridge, name: &str, confirm: &str, actor: &Actor) -> Result<ChangeReport> {
    let result = shred_inner(kb, name, confirm).await;
    audited(kb, AuditEvent::new(actor, Action::PoolShred).pool(name), result).await
}

async fn shred_inner(kb: &Keybridge, name: &str, confirm: &str) -> Result<ChangeReport> {
    if confirm != name {
        return Err(Error::Input { what: format!("shred of pool '{name}'"), reason: format!("confirm by repeating the pool's name (--yes-destroy {name}); nothing was destroyed") });
    }
    let mut report = ChangeReport::new(name, "shred");
    let (destroyed, kept) = match kb.catalog().pool_by_name(name).await {
        Ok(pool) => {
            let keys = kb.catalog().pool_master_keys(pool.id).await?;
            let doomed: Vec<MasterKeyRecord> = keys.into_iter().filter(|k| k.state != MasterKeyState::Destroyed).collect();
            let plan = Plan { destroy: doomed.iter().map(|k| k.row).collect(), ..Default::default() };
            let (change, resumed) = Change::begin(kb, pool.id, "shred", plan).await?;
            report.resumed = resumed;
            journal::note_retiring(kb, change.id, &doomed)?;
            if let Some(at) = kb.catalog().pool_lifecycle(pool.id).await?.escrow_exported_at {
                report.notes.push(format!("an escrow export of this pool was made at {at}: whoever holds it and its passphrase can still restore the pool; destroy it too"));
            }
            // From here the shred only goes forward: an interrupted one is
            // finished by running `pool shred` again.
            let done = finish_shred(kb, pool.id, change.id, &change.plan, false).await?;
            drop(change);
            done
        }
        // Shredded in the catalog, but the keys' destruction was interrupted.
        Err(Error::KeysDestroyed { .. }) => {
            let entry = kb.catalog().open_journal(None).await?.into_iter().find(|e| e.pool == name && e.operation == "shred");
            let Some(entry) = entry else { return Err(kb.catalog().pool_by_name(name).await.err().unwrap_or(Error::Internal("pool reappeared".into()))) };
            report.resumed = journal::resume_shred(kb, &entry).await?;
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.destroyed = destroyed.iter().map(key_json).collect();
    report.kept = kept.iter().map(key_json).collect();
    for k in &kept {
        report.notes.push(format!(
            "{} on KMS '{}' was not destroyed: it was adopted, not made by keybridge, or another pool still uses it; nothing of this pool is wrapped under it any more",
            k.key.label, k.kms_name
        ));
    }
    kb.clear_caches().await;
    tracing::warn!(pool = name, destroyed = report.destroyed.len(), "pool shredded: its master keys are destroyed");
    Ok(report)
}

/// Carry out shred `id` of pool `pool_id`: first every wrapping removed and
/// the pool marked shredded (from then on nothing restores or issues),
/// unless `committed` says that is done; then each planned key destroyed
/// in its KMS, if keybridge made it, this host noted it for the shred, and
/// no other pool wraps under it; the rest are kept. Returns (destroyed, kept).
pub(crate) async fn finish_shred(kb: &Keybridge, pool_id: i64, id: i64, plan: &Plan, committed: bool) -> Result<(Vec<MasterKeyRecord>, Vec<MasterKeyRecord>)> {
    let step = |step: &str, close| Some(keybridge_catalog::lifecycle::JournalStep { id, step: step.into(), detail: serde_json::to_value(plan).expect("a plan serialises"), close });
    // Read before the wrappings go: a key shared with another pool is the
    // pool's only through them.
    let keys = kb.catalog().pool_master_keys(pool_id).await?;
    if !committed {
        let wrappings = kb.catalog().wrappings(pool_id).await?;
        let change = KeyChange { remove: wrappings.iter().map(|w| (w.generation, w.master_key.row)).collect(), shredded: true, journal: step("committed", None), ..Default::default() };
        kb.catalog().apply_key_change(pool_id, &change).await?;
    }
    let pool = format!("id {pool_id}");
    let (mut destroyed, mut kept) = (Vec::new(), Vec::new());
    for mk in keys.into_iter().filter(|k| plan.destroy.contains(&k.row) && k.state != MasterKeyState::Destroyed) {
        if !mk.key.owned || kb.catalog().master_key_uses(mk.row).await? > 0 {
            kept.push(mk);
            continue;
        }
        journal::may_retire(kb, id, &pool, &mk)?;
        journal::fault("shred", "destroy")?;
        journal::destroy_in_kms(kb, &mk.key, &mk.kms_name).await?;
        // Recorded one by one: a crash leaves the rest to the rerun.
        kb.catalog().apply_key_change(pool_id, &KeyChange { destroyed: vec![mk.row], shredded: true, ..Default::default() }).await?;
        destroyed.push(mk);
    }
    let change = KeyChange { deactivate: kept.iter().filter(|k| k.key.owned).map(|k| k.row).collect(), shredded: true, journal: step("done", Some(JournalState::Done)), ..Default::default() };
    kb.catalog().apply_key_change(pool_id, &change).await?;
    journal::forget_record(kb, id);
    Ok((destroyed, kept))
}

/// When a catalog timestamp (`2026-12-03T10:00:00.000Z`) is, as Unix seconds.
fn unix_seconds(at: &str) -> Option<i64> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Days between rotations of a pool: its own, or the configuration's (0: never).
fn rotation_days(kb: &Keybridge, own: Option<u32>) -> u32 {
    own.unwrap_or(kb.config().lifecycle.rotation_days)
}

/// When pool `pool` is next due for rotation (Unix seconds), counted from
/// its last rotation or its creation; `None` if it is never rotated.
pub(crate) fn rotation_due(kb: &Keybridge, pool: &PoolRecord, life: &keybridge_catalog::lifecycle::PoolLifecycle) -> Option<i64> {
    let days = rotation_days(kb, life.rotation_days);
    if days == 0 {
        return None;
    }
    let since = unix_seconds(life.rotated_at.as_deref().unwrap_or(&pool.created_at))?;
    Some(since + i64::from(days) * 86_400)
}

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix).ok()?.format(&time::format_description::well_known::Rfc3339).ok()
}

/// Pool `name` for operators: its newest generation, every generation and
/// wrapping, every master key with its state in the catalog and in its KMS
/// now, the rotation schedule, and warnings (an escrow export exists, a key
/// the catalog calls live is missing from its KMS, an unfinished change).
pub async fn show(kb: &Keybridge, name: &str) -> Result<serde_json::Value> {
    let catalog = kb.catalog();
    let p = catalog.pool_by_name(name).await?;
    let life = catalog.pool_lifecycle(p.id).await?;
    let mut v = p.to_json();
    v["deks"] = serde_json::json!(catalog.count_deks(p.id).await?);
    v["kek_generations"] = serde_json::json!(catalog.generations(p.id).await?);
    let wrappings = catalog.wrappings(p.id).await?;
    v["wrappings"] = wrappings
        .iter()
        .map(|w| serde_json::json!({ "generation": w.generation, "kms": w.master_key.kms_name, "master_key": w.master_key.key.label, "wrap_mechanism": w.wrap_mechanism, "priority": w.priority, "created_at": w.created_at }))
        .collect();
    let mut warnings = Vec::new();
    let mut keys = Vec::new();
    for mk in catalog.pool_master_keys(p.id).await? {
        let mut k = mk.to_json();
        if mk.state != MasterKeyState::Destroyed {
            k["in_kms"] = match kb.backend(&mk.kms_name).await {
                Ok(backend) => match backend.master_key_status(&mk.key).await {
                    Ok(status) => {
                        if !status.present {
                            warnings.push(format!("master key {} is {} in the catalog but missing from KMS '{}'", mk.key.label, mk.state.as_str(), mk.kms_name));
                        }
                        serde_json::to_value(status).unwrap_or_default()
                    }
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                },
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
        }
        keys.push(k);
    }
    v["master_keys"] = keys.into();
    let days = rotation_days(kb, life.rotation_days);
    v["rotation"] = serde_json::json!({
        "rotation_days": days,
        "own_schedule": life.rotation_days.is_some(),
        "last_rotation": life.rotated_at,
        "next_due": rotation_due(kb, &p, &life).and_then(rfc3339),
    });
    v["escrow_exported_at"] = serde_json::json!(life.escrow_exported_at);
    if let Some(at) = &life.escrow_exported_at {
        warnings.push(format!("an escrow export of this pool was made at {at}: whoever holds it and its passphrase can restore the pool without any KMS"));
    }
    let open = catalog.open_journal(Some(p.id)).await?;
    for e in &open {
        warnings.push(format!(
            "an unfinished {} (journal {}, step {}, by {}) is finished or rolled back by the next command on the pool or by `keybridge serve`, once its process is gone; if that process ran on another host that is gone for good, `pool resume {name} --take-over {}`",
            e.operation, e.id, e.step, e.owner, e.owner
        ));
    }
    v["unfinished_changes"] = serde_json::to_value(&open).unwrap_or_default();
    v["warnings"] = warnings.into();
    Ok(v)
}

/// Set pool `name`'s rotation period: `Some(days)` (0: never), or `None`
/// for the configuration's default. Audited as `pool.schedule`.
pub async fn set_schedule(kb: &Keybridge, name: &str, days: Option<u32>, actor: &Actor) -> Result<serde_json::Value> {
    let result = set_schedule_inner(kb, name, days).await;
    audited(kb, AuditEvent::new(actor, Action::PoolSchedule).pool(name), result).await
}

async fn set_schedule_inner(kb: &Keybridge, name: &str, days: Option<u32>) -> Result<serde_json::Value> {
    let pool = kb.catalog().pool_by_name(name).await?;
    kb.catalog().set_rotation_days(pool.id, days).await?;
    let life = kb.catalog().pool_lifecycle(pool.id).await?;
    Ok(serde_json::json!({ "pool": name, "rotation_days": rotation_days(kb, life.rotation_days), "own_schedule": days.is_some(), "next_due": rotation_due(kb, &pool, &life).and_then(rfc3339) }))
}

/// A pool's key age: seconds since its last rotation or its creation.
pub async fn key_ages(kb: &Keybridge, now: i64) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for pool in kb.catalog().list_pools().await? {
        let life = kb.catalog().pool_lifecycle(pool.id).await?;
        if let Some(since) = unix_seconds(life.rotated_at.as_deref().unwrap_or(&pool.created_at)) {
            out.push((pool.name, now - since));
        }
    }
    Ok(out)
}

/// Rotate every pool due at `now` (Unix seconds), as `actor`; one result
/// per pool rotated or tried. Shredded pools are not listed, so never due.
pub async fn rotate_due(kb: &Keybridge, now: i64, actor: &Actor) -> Result<Vec<(String, Result<ChangeReport>)>> {
    let mut out = Vec::new();
    let limit = kb.config().lifecycle.rotations_per_check;
    for pool in kb.catalog().list_pools().await? {
        // A bounded number per check: an upgrade that finds every pool due
        // spreads their rotations out instead of running them all at once.
        if out.len() >= limit {
            tracing::info!(limit, "more pools are due for rotation; they are rotated at the next checks");
            break;
        }
        let life = kb.catalog().pool_lifecycle(pool.id).await?;
        if rotation_due(kb, &pool, &life).is_some_and(|due| due <= now) {
            let r = rotate(kb, &pool.name, actor).await;
            match &r {
                Ok(report) => tracing::info!(pool = %pool.name, keys = report.new_master_keys.len(), "scheduled rotation done"),
                Err(e) => tracing::warn!(pool = %pool.name, error = %e, "scheduled rotation failed; tried again at the next check"),
            }
            out.push((pool.name, r));
        }
    }
    Ok(out)
}
