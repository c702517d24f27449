//! The key lifecycle's tables: master keys and their states, wrappings,
//! the pool's rotation and escrow facts, and the journal.

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::{insert_generation, SqliteCatalog, NOW};
use crate::lifecycle::{JournalEntry, JournalState, JournalStep, KeyChange, MasterKeyRecord, MasterKeyState, PoolLifecycle, WrappingRecord};
use keybridge_kms::MasterKeyRef;
use keybridge_proto::{Error, Result};

const MK_COLUMNS: &str = "m.id, m.kms_name, m.key_ref, m.label, m.material, m.owned, m.state, m.pool_id, m.created_at, m.deactivated_at, m.destroyed_at";

/// A master-key row read from [`MK_COLUMNS`] starting at column `at`.
fn mk_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<MasterKeyRecord> {
    let state: String = r.get(at + 6)?;
    let state = MasterKeyState::parse(&state)
        .ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(at + 6, rusqlite::types::Type::Text, format!("unknown master-key state '{state}'").into()))?;
    Ok(MasterKeyRecord {
        row: r.get(at)?,
        kms_name: r.get(at + 1)?,
        key: MasterKeyRef { id: r.get(at + 2)?, label: r.get(at + 3)?, material: r.get(at + 4)?, owned: r.get(at + 5)? },
        state,
        pool_id: r.get(at + 7)?,
        created_at: r.get(at + 8)?,
        deactivated_at: r.get(at + 9)?,
        destroyed_at: r.get(at + 10)?,
    })
}

const JOURNAL_SELECT: &str = "SELECT j.id, j.pool_id, p.name, j.operation, j.step, j.owner, j.detail, j.started_at, j.updated_at FROM journal j JOIN pools p ON p.id = j.pool_id";

fn journal_from_row(r: &Row<'_>) -> rusqlite::Result<JournalEntry> {
    let detail: String = r.get(6)?;
    Ok(JournalEntry {
        id: r.get(0)?,
        pool_id: r.get(1)?,
        pool: r.get(2)?,
        operation: r.get(3)?,
        step: r.get(4)?,
        owner: r.get(5)?,
        detail: serde_json::from_str(&detail).map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e)))?,
        started_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// Open a journal entry (step `planned`) for `operation` of pool `pool_id`
/// in `tx`.
fn journal_insert(tx: &Transaction<'_>, pool_id: i64, operation: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry> {
    tx.execute(
        &format!("INSERT INTO journal(pool_id, operation, step, state, owner, detail, started_at, updated_at) VALUES (?1, ?2, 'planned', 'open', ?3, ?4, {NOW}, {NOW})"),
        params![pool_id, operation, owner, detail.to_string()],
    )
    .map_err(Error::catalog("writing a journal entry"))?;
    let id = tx.last_insert_rowid();
    tx.query_row(&format!("{JOURNAL_SELECT} WHERE j.id = ?1"), [id], journal_from_row).map_err(Error::catalog("reading a journal entry"))
}

/// Write journal step `step` in `tx`; the entry must be open.
fn journal_step(tx: &Transaction<'_>, step: &JournalStep) -> Result<()> {
    let state = step.close.unwrap_or(JournalState::Open);
    let n = tx
        .execute(
            &format!("UPDATE journal SET step = ?2, detail = ?3, state = ?4, updated_at = {NOW} WHERE id = ?1 AND state = 'open'"),
            params![step.id, step.step, step.detail.to_string(), state.as_str()],
        )
        .map_err(Error::catalog("writing a journal step"))?;
    if n != 1 {
        return Err(Error::Integrity { what: format!("journal entry {}", step.id), reason: "it is not open any more (another process finished or rolled it back)".into() });
    }
    Ok(())
}

impl SqliteCatalog {
    pub(super) fn wrappings_of(&self, pool_id: i64) -> Result<Vec<WrappingRecord>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT w.generation, w.wrap_mechanism, w.wrapped, w.priority, w.created_at, {MK_COLUMNS}
                 FROM wrappings w JOIN master_keys m ON m.id = w.master_key_id
                 WHERE w.pool_id = ?1 ORDER BY w.generation, w.priority, w.created_at, m.id"
            ))
            .map_err(Error::catalog("reading wrappings"))?;
        let rows = st
            .query_map([pool_id], |r| {
                Ok(WrappingRecord { generation: r.get(0)?, wrap_mechanism: r.get(1)?, wrapped: r.get(2)?, priority: r.get(3)?, created_at: r.get(4)?, master_key: mk_from_row(r, 5)? })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::catalog("reading wrappings"))?;
        Ok(rows)
    }

    pub(super) fn master_keys_of(&self, pool_id: i64) -> Result<Vec<MasterKeyRecord>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {MK_COLUMNS} FROM master_keys m
                 WHERE m.pool_id = ?1 OR m.id IN (SELECT master_key_id FROM wrappings WHERE pool_id = ?1)
                 ORDER BY m.created_at, m.id"
            ))
            .map_err(Error::catalog("reading master keys"))?;
        let rows = st
            .query_map([pool_id], |r| mk_from_row(r, 0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::catalog("reading master keys"))?;
        Ok(rows)
    }

    pub(super) fn lifecycle_of(&self, pool_id: i64) -> Result<PoolLifecycle> {
        self.conn()
            .query_row("SELECT rotation_days, rotated_at, escrow_exported_at, shredded_at FROM pools WHERE id = ?1", [pool_id], |r| {
                Ok(PoolLifecycle { rotation_days: r.get(0)?, rotated_at: r.get(1)?, escrow_exported_at: r.get(2)?, shredded_at: r.get(3)? })
            })
            .optional()
            .map_err(Error::catalog("reading the pool's lifecycle"))?
            .ok_or_else(|| Error::NotFound { what: "pool id", name: pool_id.to_string() })
    }

    pub(super) fn set_rotation(&self, pool_id: i64, days: Option<u32>) -> Result<()> {
        let n = self
            .conn()
            .execute("UPDATE pools SET rotation_days = ?2 WHERE id = ?1", params![pool_id, days])
            .map_err(Error::catalog("setting the rotation period"))?;
        if n == 0 {
            return Err(Error::NotFound { what: "pool id", name: pool_id.to_string() });
        }
        Ok(())
    }

    pub(super) fn journal_open(&self, pool_id: i64, operation: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("starting a journal entry"))?;
        let open: Option<JournalEntry> = tx
            .query_row(&format!("{JOURNAL_SELECT} WHERE j.pool_id = ?1 AND j.state = 'open'"), [pool_id], journal_from_row)
            .optional()
            .map_err(Error::catalog("reading the journal"))?;
        if let Some(e) = open {
            return Err(Error::Input {
                what: format!("{operation} of pool '{}'", e.pool),
                reason: format!(
                    "another change of the pool is unfinished: journal entry {} ({}, step {}, started {} by {}); it is finished or rolled back when its process ends or the command is run again (a process on another host that is gone for good: `pool resume {} --take-over {}`)",
                    e.id, e.operation, e.step, e.started_at, e.owner, e.pool, e.owner
                ),
            });
        }
        let entry = journal_insert(&tx, pool_id, operation, owner, detail)?;
        tx.commit().map_err(Error::catalog("committing a journal entry"))?;
        Ok(entry)
    }

    pub(super) fn pool_reserve(&self, name: &str, kms_name: &str, kms_kind: &str, kms_identity: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("starting a pool's creation"))?;
        tx.execute(
            &format!("INSERT INTO kms(name, kind, identity, first_used) VALUES (?1, ?2, ?3, {NOW}) ON CONFLICT(name) DO NOTHING"),
            params![kms_name, kms_kind, kms_identity],
        )
        .map_err(Error::catalog("recording KMS entry"))?;
        let found: Option<(i64, bool)> = tx
            .query_row("SELECT p.id, EXISTS (SELECT 1 FROM kek_generations g WHERE g.pool_id = p.id) FROM pools p WHERE p.name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(Error::catalog("checking pool name"))?;
        let pool_id = match found {
            Some((_, true)) => return Err(Error::AlreadyExists { what: "pool", name: name.to_owned() }),
            Some((id, false)) => {
                let open: Option<JournalEntry> = tx
                    .query_row(&format!("{JOURNAL_SELECT} WHERE j.pool_id = ?1 AND j.state = 'open'"), [id], journal_from_row)
                    .optional()
                    .map_err(Error::catalog("reading the journal"))?;
                if let Some(e) = open {
                    return Err(Error::Input {
                        what: format!("creation of pool '{name}'"),
                        reason: format!(
                            "it is being created: journal entry {} ({}, step {}, started {} by {}); it is finished or rolled back when its process ends and `pool create` is run again (a process on another host that is gone for good: `pool resume {name} --take-over {}`)",
                            e.id, e.operation, e.step, e.started_at, e.owner, e.owner
                        ),
                    });
                }
                // The row of a creation rolled back: taken again. Adopted
                // keys it recorded that nothing wraps under are forgotten
                // (they stay in their KMS, as adopted keys always do).
                tx.execute(
                    "DELETE FROM master_keys WHERE pool_id = ?1 AND owned = 0 AND NOT EXISTS (SELECT 1 FROM wrappings w WHERE w.master_key_id = master_keys.id)",
                    [id],
                )
                .map_err(Error::catalog(format!("reserving pool '{name}'")))?;
                tx.execute(&format!("UPDATE pools SET kms_name = ?2, created_at = {NOW}, rotation_days = NULL WHERE id = ?1"), params![id, kms_name])
                    .map_err(Error::catalog(format!("reserving pool '{name}'")))?;
                id
            }
            None => {
                tx.execute(&format!("INSERT INTO pools(name, kms_name, created_at) VALUES (?1, ?2, {NOW})"), params![name, kms_name])
                    .map_err(Error::catalog(format!("inserting pool '{name}'")))?;
                tx.last_insert_rowid()
            }
        };
        let entry = journal_insert(&tx, pool_id, "create", owner, detail)?;
        tx.commit().map_err(Error::catalog(format!("committing the start of pool '{name}'")))?;
        Ok(entry)
    }

    pub(super) fn journal_list(&self, pool_id: Option<i64>) -> Result<Vec<JournalEntry>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("{JOURNAL_SELECT} WHERE j.state = 'open' AND (?1 IS NULL OR j.pool_id = ?1) ORDER BY j.id"))
            .map_err(Error::catalog("reading the journal"))?;
        let rows = st
            .query_map([pool_id], journal_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(Error::catalog("reading the journal"))?;
        Ok(rows)
    }

    pub(super) fn journal_owner(&self, id: i64, from: &str, to: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(&format!("UPDATE journal SET owner = ?3, updated_at = {NOW} WHERE id = ?1 AND owner = ?2 AND state = 'open'"), params![id, from, to])
            .map_err(Error::catalog("taking over a journal entry"))?;
        Ok(n == 1)
    }

    pub(super) fn insert_master_key(&self, pool_id: i64, kms_name: &str, kms_kind: &str, kms_identity: &str, mk: &MasterKeyRef, step: &JournalStep) -> Result<MasterKeyRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("recording a master key"))?;
        tx.execute(
            &format!("INSERT INTO kms(name, kind, identity, first_used) VALUES (?1, ?2, ?3, {NOW}) ON CONFLICT(name) DO NOTHING"),
            params![kms_name, kms_kind, kms_identity],
        )
        .map_err(Error::catalog("recording KMS entry"))?;
        // One row per key in a KMS: an adopted key that another pool adopted
        // too keeps its row (a key keybridge made is new, or an error).
        let shared = if mk.owned { "" } else { " ON CONFLICT(kms_name, key_ref) DO NOTHING" };
        tx.execute(
            &format!("INSERT INTO master_keys(kms_name, key_ref, label, material, owned, state, created_at, pool_id) VALUES (?1, ?2, ?3, ?4, ?5, 'active', {NOW}, ?6){shared}"),
            params![kms_name, mk.id, mk.label, mk.material, mk.owned, pool_id],
        )
        .map_err(Error::catalog(format!("recording master key {}", mk.label)))?;
        journal_step(&tx, step)?;
        let record = tx
            .query_row(&format!("SELECT {MK_COLUMNS} FROM master_keys m WHERE m.kms_name = ?1 AND m.key_ref = ?2"), params![kms_name, mk.id], |r| mk_from_row(r, 0))
            .map_err(Error::catalog("reading a master key"))?;
        tx.commit().map_err(Error::catalog(format!("committing master key {}", mk.label)))?;
        Ok(record)
    }

    pub(super) fn delete_master_key(&self, row: i64, step: &JournalStep) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("forgetting a master key"))?;
        let used: i64 = tx
            .query_row("SELECT COUNT(*) FROM wrappings WHERE master_key_id = ?1", [row], |r| r.get(0))
            .map_err(Error::catalog("checking a master key's wrappings"))?;
        if used > 0 {
            return Err(Error::Integrity { what: format!("master key row {row}"), reason: format!("{used} wrapping(s) still use it; it is not forgotten") });
        }
        tx.execute("DELETE FROM master_keys WHERE id = ?1", [row]).map_err(Error::catalog("forgetting a master key"))?;
        journal_step(&tx, step)?;
        tx.commit().map_err(Error::catalog("committing a forgotten master key"))
    }

    pub(super) fn key_change(&self, pool_id: i64, change: &KeyChange) -> Result<()> {
        let name = |e| Error::catalog("applying a key change")(e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("starting a key change"))?;
        if let Some(g) = &change.new_generation {
            // 0 for a pool being created, whose first generation this is.
            let newest: u32 = tx
                .query_row("SELECT COALESCE(MAX(generation), 0) FROM kek_generations WHERE pool_id = ?1", [pool_id], |r| r.get(0))
                .map_err(Error::catalog("reading the newest KEK generation"))?;
            if g.generation != newest + 1 {
                return Err(Error::Input {
                    what: format!("new KEK generation {} of pool id {pool_id}", g.generation),
                    reason: format!("the pool changed meanwhile (its newest generation is {newest}); run the command again"),
                });
            }
            insert_generation(&tx, pool_id, g.generation, g.mk_row, &g.kek).map_err(name)?;
        }
        for (generation, mk_row) in &change.remove {
            tx.execute("DELETE FROM wrappings WHERE pool_id = ?1 AND generation = ?2 AND master_key_id = ?3", params![pool_id, generation, mk_row]).map_err(name)?;
        }
        for w in &change.add {
            tx.execute(
                &format!("INSERT INTO wrappings(pool_id, generation, master_key_id, wrap_mechanism, wrapped, priority, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})"),
                params![pool_id, w.generation, w.mk_row, w.wrap_mechanism, w.wrapped, w.priority],
            )
            .map_err(Error::catalog(format!("adding a wrapping of KEK generation {}", w.generation)))?;
        }
        for row in &change.deactivate {
            // Not while another pool still wraps under it (an adopted key
            // several pools share).
            tx.execute(
                &format!(
                    "UPDATE master_keys SET state = 'deactivated', deactivated_at = {NOW} WHERE id = ?1 AND state = 'active'
                     AND NOT EXISTS (SELECT 1 FROM wrappings w WHERE w.master_key_id = ?1 AND w.pool_id != ?2)"
                ),
                params![row, pool_id],
            )
            .map_err(name)?;
        }
        for row in &change.destroyed {
            tx.execute(&format!("UPDATE master_keys SET state = 'destroyed', material = NULL, destroyed_at = {NOW}, deactivated_at = COALESCE(deactivated_at, {NOW}) WHERE id = ?1"), [row]).map_err(name)?;
        }
        // A key deactivated must not be left wrapping a generation of the
        // pool, unless the change makes a new generation for new DEKs (a
        // token's rotation, whose old generations stay under the old key).
        if change.new_generation.is_none() {
            for row in &change.deactivate {
                let still: Option<u32> = tx
                    .query_row("SELECT generation FROM wrappings WHERE pool_id = ?1 AND master_key_id = ?2 LIMIT 1", params![pool_id, row], |r| r.get(0))
                    .optional()
                    .map_err(name)?;
                if let Some(generation) = still {
                    return Err(Error::Input {
                        what: format!("key change of pool id {pool_id}"),
                        reason: format!("the master key it retires still wraps KEK generation {generation} (made meanwhile by a rekey?); nothing was changed, run the command again"),
                    });
                }
            }
        }
        if change.rotated {
            tx.execute(&format!("UPDATE pools SET rotated_at = {NOW} WHERE id = ?1"), [pool_id]).map_err(name)?;
        }
        if change.escrow_exported {
            tx.execute(&format!("UPDATE pools SET escrow_exported_at = {NOW} WHERE id = ?1"), [pool_id]).map_err(name)?;
        }
        if change.shredded {
            tx.execute(&format!("UPDATE pools SET shredded_at = COALESCE(shredded_at, {NOW}) WHERE id = ?1"), [pool_id]).map_err(name)?;
        } else {
            // Every generation keeps at least one wrapping.
            let bare: Option<u32> = tx
                .query_row(
                    "SELECT g.generation FROM kek_generations g WHERE g.pool_id = ?1
                     AND NOT EXISTS (SELECT 1 FROM wrappings w WHERE w.pool_id = g.pool_id AND w.generation = g.generation) LIMIT 1",
                    [pool_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(name)?;
            if let Some(generation) = bare {
                return Err(Error::Input {
                    what: format!("key change of pool id {pool_id}"),
                    reason: format!("it would leave KEK generation {generation} without any wrapping; nothing was changed"),
                });
            }
        }
        // A destroyed key wraps nothing.
        let wraps_destroyed: i64 = tx
            .query_row("SELECT COUNT(*) FROM wrappings w JOIN master_keys m ON m.id = w.master_key_id WHERE w.pool_id = ?1 AND m.state = 'destroyed'", [pool_id], |r| r.get(0))
            .map_err(name)?;
        if wraps_destroyed > 0 {
            return Err(Error::Integrity { what: format!("key change of pool id {pool_id}"), reason: "a wrapping would name a destroyed master key; nothing was changed".into() });
        }
        if let Some(step) = &change.journal {
            journal_step(&tx, step)?;
        }
        tx.commit().map_err(Error::catalog("committing a key change"))
    }
}
