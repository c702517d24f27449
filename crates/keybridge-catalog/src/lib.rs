//! The catalog: what keybridge stores about pools, clients, DEKs and jobs,
//! and the hash-chained audit log ([`audit`]). It never holds a key in the
//! clear: the private KEK only wrapped by the master key, DEKs only RSA-OAEP
//! encrypted, clients only as public key material derived from their
//! password.
//!
//! [`Catalog`] is the set of operations the flows, the service and the CLI
//! need; an engine implements it. [`SqliteCatalog`] is the one engine today
//! (the embedded default); a second one (PostgreSQL, for several instances)
//! is another implementation of the same trait.
//!
//! It depends on the wire contract (keybridge-proto) and on the KMS layer's
//! key references (keybridge-kms); never on the flows, the service or the
//! CLI.

pub mod audit;
pub mod lifecycle;
mod sqlite;

use async_trait::async_trait;

use keybridge_kms::crypto::OaepHash;
use keybridge_kms::{MasterKeyRef, NewKek};
use keybridge_proto::api::{JobCompletion, JobRecord};
use keybridge_proto::Result;

use crate::audit::{AuditEvent, AuditRecord, AuditReport};
use crate::lifecycle::{JournalEntry, KeyChange, MasterKeyRecord, PoolLifecycle, WrappingRecord};

pub use keybridge_proto::api::JobState;
pub use sqlite::{CatalogRestore, SqliteCatalog};

/// A storage pool at one KEK generation (the newest, unless read with
/// [`Catalog::pool_generation`]), with that generation's first wrapping.
#[derive(Debug, Clone)]
pub struct PoolRecord {
    pub id: i64,
    pub name: String,
    pub kms_name: String,
    pub master_key: MasterKeyRef,
    pub kek_bits: usize,
    pub kek_public: Vec<u8>,
    pub kek_wrapped: Vec<u8>,
    pub wrap_mechanism: String,
    pub oaep_hash: OaepHash,
    pub params: serde_json::Value,
    pub created_at: String,
    /// The KEK generation this record describes (1, 2, ...).
    pub generation: u32,
    /// Catalog row of `master_key`.
    pub mk_row: i64,
}

/// One KEK generation of a pool, for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationInfo {
    pub generation: u32,
    pub bits: usize,
    pub created_at: String,
    /// DEKs issued under it.
    pub deks: u64,
}

impl PoolRecord {
    /// SHA-256 (hex) of the public KEK: what a host pins once it has
    /// checked the key against the KMS.
    pub fn kek_public_sha256(&self) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&self.kek_public))
    }

    /// The name a host pins this generation's public KEK under: the pool's
    /// name for generation 1 (as before generations existed), `NAME#N`
    /// after. (Pool names never hold '#' or '@': `check_name`.)
    pub fn pin_name(&self) -> String {
        match self.generation {
            1 => self.name.clone(),
            n => format!("{}#{n}", self.name),
        }
    }

    /// The name a host pins the pool's master key under (`NAME@mk`), and
    /// the value: the KMS and the key's reference there. A generation
    /// first seen on a host must be wrapped under the pinned master key.
    pub fn mk_pin(&self) -> (String, String) {
        (format!("{}@mk", self.name), format!("{}/{}", self.kms_name, self.master_key.id))
    }

    /// What a backend needs to decrypt under this pool's KEK.
    pub fn kek(&self) -> keybridge_kms::PoolKek<'_> {
        keybridge_kms::PoolKek {
            pool_id: self.id,
            generation: self.generation,
            pool_name: &self.name,
            master_key: &self.master_key,
            wrapped_private: &self.kek_wrapped,
            wrap_mechanism: &self.wrap_mechanism,
            oaep_hash: self.oaep_hash,
        }
    }

    /// The pool as shown to operators (CLI and service): no key material
    /// beyond what is public.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "kms": self.kms_name,
            "master_key": { "id": self.master_key.id, "label": self.master_key.label, "created_by_keybridge": self.master_key.owned },
            "kek_bits": self.kek_bits,
            "kek_generation": self.generation,
            "wrap_mechanism": self.wrap_mechanism,
            "oaep_hash": self.oaep_hash,
            "params": self.params,
            "created_at": self.created_at,
        })
    }
}

/// A registered client: only public, password-derived material.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub id: i64,
    pub name: String,
    pub kdf: keybridge_proto::seal::KdfParams,
    pub salt: Vec<u8>,
    pub seal_public: [u8; 32],
    /// Ed25519 key that verifies the client's signed requests to the
    /// service. `None` for clients registered before the service existed:
    /// they must be registered again to use it.
    pub auth_public: Option<[u8; 32]>,
    pub created_at: String,
}

impl ClientRecord {
    /// The public material a DEK is sealed to for this client.
    pub fn recipient(&self) -> keybridge_proto::seal::Recipient<'_> {
        keybridge_proto::seal::Recipient { name: &self.name, salt: &self.salt, kdf: self.kdf, seal_public: &self.seal_public }
    }
}

/// A DEK row: the RSA-OAEP ciphertext and what it belongs to.
#[derive(Debug, Clone)]
pub struct DekRecord {
    pub id: String,
    pub pool_id: i64,
    pub client_id: i64,
    pub encrypted_dek: Vec<u8>,
    pub created_at: String,
    /// The pool's KEK generation it is encrypted under.
    pub generation: u32,
}

/// A DEK row to insert.
#[derive(Debug, Clone)]
pub struct DekRow {
    pub id: String,
    pub pool_id: i64,
    pub client_id: i64,
    pub encrypted_dek: Vec<u8>,
    pub generation: u32,
}

/// A copy of the catalog, as written by [`Catalog::backup_to`] or checked
/// by a restore: what it holds, for the operator to record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogCopy {
    /// The copy's file.
    pub path: std::path::PathBuf,
    pub bytes: u64,
    /// The copy's schema version (`PRAGMA user_version` for SQLite).
    pub schema_version: i64,
    /// Rows in the copy's audit chain, all verified.
    pub audit_rows: u64,
    /// Hash (hex) of the copy's last audit row: the value to give
    /// `audit verify --expect-head` after a restore from this copy.
    pub audit_head: Option<String>,
}

/// The operations on the catalog. Every write that must survive a crash is
/// durable when the call returns.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Where the catalog is, for messages (a file path, a database name;
    /// never a password).
    fn location(&self) -> String;

    /// The pool named `name` (`NotFound` if none).
    async fn pool_by_name(&self, name: &str) -> Result<PoolRecord>;

    /// The pool with catalog id `id` (`NotFound` if none).
    async fn pool_by_id(&self, id: i64) -> Result<PoolRecord>;

    /// Every pool, by name, but shredded ones.
    async fn list_pools(&self) -> Result<Vec<PoolRecord>>;

    /// Pool `id` at KEK generation `generation` (`NotFound` if it has none).
    async fn pool_generation(&self, id: i64, generation: u32) -> Result<PoolRecord>;

    /// Add the next KEK generation to `pool` (read at its newest), wrapped
    /// under the same master key; new DEKs use it. Refused if another
    /// generation was added since `pool` was read.
    async fn add_generation(&self, pool: &PoolRecord, kek: &NewKek) -> Result<PoolRecord>;

    /// The KEK generations of pool `id`, oldest first.
    async fn generations(&self, pool_id: i64) -> Result<Vec<GenerationInfo>>;

    /// Every wrapping of every KEK generation of pool `id`, by generation
    /// then priority.
    async fn wrappings(&self, pool_id: i64) -> Result<Vec<WrappingRecord>>;

    /// The master keys made for pool `id` or wrapping one of its
    /// generations, in any state, oldest first.
    async fn pool_master_keys(&self, pool_id: i64) -> Result<Vec<MasterKeyRecord>>;

    /// Wrappings of any pool under master-key row `row`.
    async fn master_key_uses(&self, row: i64) -> Result<u64>;

    /// Rotation schedule, history, escrow exports and shredding of pool `id`.
    async fn pool_lifecycle(&self, pool_id: i64) -> Result<PoolLifecycle>;

    /// Set pool `id`'s rotation period (`None`: the configuration's default).
    async fn set_rotation_days(&self, pool_id: i64, days: Option<u32>) -> Result<()>;

    /// Open a journal entry for a multi-step change of pool `id`, durable
    /// before the change starts. Refused (an `Input` error naming the open
    /// entry) while another entry of the pool is open.
    async fn journal_begin(&self, pool_id: i64, operation: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry>;

    /// Open the journal entry (operation `create`) of the creation of pool
    /// `name` on KMS `kms_name` (recorded on first use), durable before the
    /// creation starts. The pool's row is reserved in the same transaction:
    /// it has no KEK generation, so no pool read finds it, until the
    /// creation commits generation 1 ([`Catalog::apply_key_change`]). A row
    /// left by a creation rolled back earlier is taken again. Refused if a
    /// pool of that name exists (`AlreadyExists`), or is being created (an
    /// `Input` error naming the open entry).
    async fn journal_begin_pool(&self, name: &str, kms_name: &str, kms_kind: &str, kms_identity: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry>;

    /// Open journal entries (of pool `id` only, if given), oldest first.
    async fn open_journal(&self, pool_id: Option<i64>) -> Result<Vec<JournalEntry>>;

    /// Take over open entry `id` from `from` (a process that died): true if
    /// this caller now owns it, false if someone else took it first.
    async fn journal_take_over(&self, id: i64, from: &str, to: &str) -> Result<bool>;

    /// Record master key `mk`, just made (or adopted) in KMS `kms_name` for
    /// pool `pool_id` (state active), and journal step `step`, in one
    /// transaction. An adopted key already recorded (another pool adopted
    /// it too) keeps its one row.
    async fn record_master_key(&self, pool_id: i64, kms_name: &str, kms_kind: &str, kms_identity: &str, mk: &MasterKeyRef, step: &lifecycle::JournalStep) -> Result<MasterKeyRecord>;

    /// Delete master-key row `row` (a key made by a change being rolled
    /// back, destroyed in its KMS), with journal step `step`. Refused if a
    /// wrapping names it.
    async fn forget_master_key(&self, row: i64, step: &lifecycle::JournalStep) -> Result<()>;

    /// Apply one lifecycle change of pool `pool_id` in one transaction.
    /// Refused, with nothing changed, if it would leave a KEK generation
    /// without a wrapping (unless the pool is being shredded).
    async fn apply_key_change(&self, pool_id: i64, change: &KeyChange) -> Result<()>;

    /// Number of DEKs issued under a pool.
    async fn count_deks(&self, pool_id: i64) -> Result<u64>;

    /// Register a client.
    async fn insert_client(&self, name: &str, reg: &keybridge_proto::seal::Registration) -> Result<ClientRecord>;

    /// The client named `name` (`NotFound` if none).
    async fn client_by_name(&self, name: &str) -> Result<ClientRecord>;

    /// The client with catalog id `id` (`NotFound` if none).
    async fn client_by_id(&self, id: i64) -> Result<ClientRecord>;

    /// Durably store one DEK row together with its audit record (one
    /// transaction); returns its `created_at`. Concurrent callers share one
    /// commit.
    async fn insert_dek(&self, row: DekRow, event: AuditEvent) -> Result<String>;

    /// Append `event` to the audit chain; returns once it is durable.
    /// Concurrent callers share one commit.
    async fn audit(&self, event: AuditEvent) -> Result<()>;

    /// Record the nonce of a signed request from `client`, kept until
    /// `expires` (Unix seconds); false if it was recorded before, by this
    /// or any other process on the catalog (the request is a replay).
    /// Returns once durable; concurrent callers share one commit.
    async fn consume_nonce(&self, client: &str, nonce: &str, expires: u64) -> Result<bool>;

    /// Queue `event` for the audit chain's next commit and return at once.
    /// Only for a record whose operation already has a durable row (the
    /// outcome of a recover after its "started" row); [`Catalog::flush`],
    /// [`Catalog::audit_rows`] and dropping the catalog wait for it.
    fn audit_detached(&self, event: AuditEvent) -> Result<()>;

    /// Wait until every audit record and DEK row this process queued is
    /// committed. Blocks the calling thread for the commits ahead of it.
    async fn flush(&self) -> Result<()>;

    /// The last `limit` audit rows, oldest first, including every record
    /// this process queued before the call.
    async fn audit_rows(&self, limit: usize) -> Result<Vec<AuditRecord>>;

    /// The `seq` of the audit row whose hash is `hash`, if any.
    async fn audit_seq_of_hash(&self, hash: &[u8]) -> Result<Option<i64>>;

    /// Walk the whole audit chain (one read snapshot) and report the first
    /// break, if any. A broken chain is a report, not an `Err`.
    async fn verify_audit(&self) -> Result<AuditReport>;

    /// The DEK row `id` (`NotFound` if none).
    async fn dek(&self, id: &str) -> Result<DekRecord>;

    /// Record a new running job for a DEK already stored.
    async fn insert_job(&self, id: &str, pool_id: i64, client_id: i64, dek_id: &str, media_agent: &str) -> Result<JobRecord>;

    /// The job `id` (`NotFound` if none).
    async fn job(&self, id: &str) -> Result<JobRecord>;

    /// Jobs, newest first; only `client`'s if given.
    async fn list_jobs(&self, client: Option<&str>, limit: u32) -> Result<Vec<JobRecord>>;

    /// Write a consistent copy of the whole catalog to `dest` while other
    /// callers and processes go on reading and writing: the state after
    /// some commit, never half of one. The copy is written 0600 to a
    /// temporary file next to `dest`, checked as a restore would check it
    /// (integrity, schema version, audit chain), synced, then renamed over
    /// `dest` (an existing `dest` is refused unless `replace`). Every row
    /// this process queued before the call is in the copy. The caller
    /// audits the backup.
    async fn backup_to(&self, dest: &std::path::Path, replace: bool) -> Result<CatalogCopy>;

    /// Mark a running job complete. Completing a job twice with the same
    /// figures is accepted (a retried request); with other figures it is
    /// refused.
    async fn complete_job(&self, id: &str, done: &JobCompletion) -> Result<JobRecord>;
}
