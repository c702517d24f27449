//! What the catalog records of a pool's key lifecycle (docs/design.md, "Key
//! lifecycle"): master keys with their states, the wrappings of each KEK
//! generation, the pool's rotation and escrow history, and the journal of
//! multi-step changes that a crash may interrupt.

use keybridge_kms::{MasterKeyRef, NewKek};
use serde::Serialize;

/// A master key's state, kept in the catalog and, where the KMS has
/// states (KMIP), mirrored there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterKeyState {
    /// Wraps new KEK generations and unwraps existing ones.
    Active,
    /// Superseded: no longer wraps anything new; unwraps what it still
    /// wraps until `pool retire-keys` destroys it.
    Deactivated,
    /// Destroyed in its KMS.
    Destroyed,
}

impl MasterKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            MasterKeyState::Active => "active",
            MasterKeyState::Deactivated => "deactivated",
            MasterKeyState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => MasterKeyState::Active,
            "deactivated" => MasterKeyState::Deactivated,
            "destroyed" => MasterKeyState::Destroyed,
            _ => return None,
        })
    }
}

/// A master key as the catalog knows it.
#[derive(Debug, Clone)]
pub struct MasterKeyRecord {
    /// Catalog row.
    pub row: i64,
    pub kms_name: String,
    pub key: MasterKeyRef,
    pub state: MasterKeyState,
    /// The pool it was made for (adopted keys may serve others too).
    pub pool_id: Option<i64>,
    pub created_at: String,
    pub deactivated_at: Option<String>,
    pub destroyed_at: Option<String>,
}

impl MasterKeyRecord {
    /// As shown to operators: no key material.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kms": self.kms_name,
            "id": self.key.id,
            "label": self.key.label,
            "created_by_keybridge": self.key.owned,
            "state": self.state,
            "created_at": self.created_at,
            "deactivated_at": self.deactivated_at,
            "destroyed_at": self.destroyed_at,
        })
    }
}

/// One KEK generation's private half wrapped under one master key.
#[derive(Debug, Clone)]
pub struct WrappingRecord {
    pub generation: u32,
    pub master_key: MasterKeyRecord,
    pub wrap_mechanism: String,
    pub wrapped: Vec<u8>,
    /// Restore tries a generation's wrappings lowest first.
    pub priority: i64,
    pub created_at: String,
}

/// A wrapping to add.
#[derive(Debug, Clone)]
pub struct NewWrapping {
    pub generation: u32,
    /// Catalog row of the master key.
    pub mk_row: i64,
    pub wrap_mechanism: String,
    pub wrapped: Vec<u8>,
    pub priority: i64,
}

/// A new KEK generation to add, wrapped under master-key row `mk_row`.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// Must be the pool's newest generation + 1.
    pub generation: u32,
    pub mk_row: i64,
    pub kek: NewKek,
}

/// Where a journal entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    Open,
    Done,
    RolledBack,
}

impl JournalState {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Open => "open",
            JournalState::Done => "done",
            JournalState::RolledBack => "rolled_back",
        }
    }
}

/// One multi-step change of a pool, written before it starts and after
/// each step.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub pool_id: i64,
    pub pool: String,
    pub operation: String,
    pub step: String,
    /// The process running it (`host:pid:start`).
    pub owner: String,
    pub detail: serde_json::Value,
    pub started_at: String,
    pub updated_at: String,
}

/// A journal entry's next step, written in the same transaction as the
/// change it records.
#[derive(Debug, Clone)]
pub struct JournalStep {
    pub id: i64,
    pub step: String,
    pub detail: serde_json::Value,
    /// Close the entry (done or rolled back) with this step.
    pub close: Option<JournalState>,
}

/// One transaction of a lifecycle change of one pool.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub add: Vec<NewWrapping>,
    /// Wrappings to remove, as (generation, master-key row).
    pub remove: Vec<(u32, i64)>,
    pub new_generation: Option<NewGeneration>,
    /// Master-key rows that become deactivated.
    pub deactivate: Vec<i64>,
    /// Master-key rows destroyed in their KMS.
    pub destroyed: Vec<i64>,
    /// Record a master-key rotation now.
    pub rotated: bool,
    /// Record an escrow export now.
    pub escrow_exported: bool,
    /// Every master key of the pool is destroyed.
    pub shredded: bool,
    pub journal: Option<JournalStep>,
}

/// A pool's lifecycle facts beyond its keys.
#[derive(Debug, Clone, Serialize)]
pub struct PoolLifecycle {
    /// Days between scheduled rotations; `None`: the configuration's default.
    pub rotation_days: Option<u32>,
    pub rotated_at: Option<String>,
    pub escrow_exported_at: Option<String>,
    pub shredded_at: Option<String>,
}
