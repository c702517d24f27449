//! The SQLite catalog (WAL, versioned migrations).
//!
//! Every multi-step change is one transaction. DEK inserts and audit records
//! go through a group-commit writer (`writer.rs`) so that durable
//! (`synchronous=FULL`) writes do not cost one fsync per DEK under load; the
//! writer is also the only code that extends the audit hash chain.

mod backup;
mod jobs;
mod lifecycle;
mod prefetch;
mod schema;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditRecord, AuditReport, ChainVerifier};
pub use backup::CatalogRestore;
use crate::lifecycle::{JournalEntry, JournalStep, KeyChange, MasterKeyRecord, PoolLifecycle, WrappingRecord};
use crate::{Catalog, CatalogCopy, ClientRecord, DekRecord, DekRow, GenerationInfo, PoolRecord};
use keybridge_kms::{MasterKeyRef, NewKek};
use keybridge_proto::{Error, Result};

use keybridge_proto::api::{JobCompletion, JobRecord};

/// The SQLite catalog. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteCatalog {
    path: PathBuf,
    conn: Mutex<Connection>,
    writer: writer::DekWriter,
    /// Taken only while `conn` is held.
    kept: Mutex<Kept>,
}

/// Pools, KEK generations and clients as read, kept while the catalog's
/// version (`catalog_version.v`, changed by triggers on every write to a
/// table they are read from) stands: a DEK issue or recover reads the
/// version instead of the pool, its KEK generation, wrapping and master
/// key, and the client.
#[derive(Debug, Default)]
struct Kept {
    version: i64,
    pools: HashMap<String, PoolRecord>,
    clients: HashMap<String, ClientRecord>,
    /// By pool id and KEK generation (the restore path's read).
    generations: HashMap<(i64, u32), PoolRecord>,
}

/// At most this many records of each kind are kept.
const KEPT_MAX: usize = 2048;

impl Kept {
    /// What is kept for `version`: everything, or nothing if the version
    /// moved on.
    fn at(&mut self, version: i64) -> &mut Kept {
        if self.version != version {
            *self = Kept { version, ..Kept::default() };
        }
        self
    }
}

/// Keep `value` as `key` in `map`, emptied first when full.
fn keep<K: std::hash::Hash + Eq, T: Clone>(map: &mut HashMap<K, T>, key: K, value: &T) {
    if map.len() >= KEPT_MAX {
        map.clear();
    }
    map.insert(key, value.clone());
}

type ClientRow = (i64, String, String, Vec<u8>, Vec<u8>, String, Option<Vec<u8>>);

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(Error::catalog(format!("opening {}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(Error::catalog("setting busy timeout"))?;
    // WAL for concurrent readers; FULL so that a committed DEK survives power
    // loss (the group-commit writer amortises the fsync).
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(Error::catalog(format!("configuring {}", path.display())))?;
    // The query planner stability guarantee: plans never depend on bound
    // values. Without it SQLite (built with STAT4) marked the pool reads as
    // value-dependent and prepared them again on every call, so each read
    // of a pool on the restore and issue paths cost 50-95 us instead of
    // about 10 (perf: sqlite3Reprepare under sqlite3_step).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(Error::catalog(format!("configuring {}", path.display())))?;
    Ok(conn)
}

/// Create the catalog file 0600 if it is missing (SQLite gives its WAL and
/// shared-memory files the database file's mode), and warn about an
/// existing one that others may read: it holds wrapped keys and the audit
/// log.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| Error::Io { context: "creating the catalog", path: path.to_owned(), source };
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the catalog is readable or writable by others; chmod 600 it (and its -wal and -shm files)");
            }
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

impl SqliteCatalog {
    /// Open an existing catalog, applying pending migrations.
    pub fn open(path: &Path) -> Result<SqliteCatalog> {
        if !path.exists() {
            return Err(Error::CatalogSchema {
                path: path.to_owned(),
                reason: "does not exist; run `keybridge init` first".into(),
            });
        }
        Self::open_or_create(path)
    }

    /// Open the catalog, creating it if missing, and apply migrations.
    pub fn open_or_create(path: &Path) -> Result<SqliteCatalog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                context: "creating catalog directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        create_private(path)?;
        let mut conn = open_connection(path)?;
        migrate(&mut conn, path)?;
        let writer = writer::DekWriter::new(path.to_owned());
        Ok(SqliteCatalog {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            writer,
            kept: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool matching `clause` (on `p`) at its newest KEK generation.
    fn pool_query(&self, clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<PoolRecord>> {
        pool_in(&self.conn(), clause, param)
    }

    fn client_query(&self, clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<ClientRecord>> {
        client_in(&self.conn(), clause, param)
    }

    /// `key`'s record as `read` finds it, or as kept from an earlier read
    /// (in `map`'s map of [`Kept`]) while the catalog's version stands.
    /// Costs one read of the version when kept.
    fn kept_or_read<Q, K, T>(&self, key: &Q, map: impl Fn(&mut Kept) -> &mut HashMap<K, T>, read: impl FnOnce(&Connection) -> Result<Option<T>>) -> Result<Option<T>>
    where
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
        K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
        T: Clone,
    {
        let mut conn = self.conn();
        let kept = || self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let version = catalog_version(&conn)?;
        if let Some(found) = map(kept().at(version)).get(key) {
            return Ok(Some(found.clone()));
        }
        // The version and the record from one snapshot. Read only: the
        // transaction ends without a commit.
        let tx = conn.transaction().map_err(Error::catalog("starting a read"))?;
        let version = catalog_version(&tx)?;
        let found = read(&tx)?;
        drop(tx);
        if let Some(found) = &found {
            keep(map(kept().at(version)), key.to_owned(), found);
        }
        Ok(found)
    }
}

/// One row or none, through the connection's statement cache: the restore
/// path reads three rows per DEK, and parsing their SQL each time cost more
/// than running it.
fn query_one<T>(conn: &Connection, sql: &str, param: &dyn rusqlite::ToSql, row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached(sql)?.query_row([param], row).optional()
}

/// The catalog's version (migration 8): changed by every write to the
/// tables pools and clients are read from.
fn catalog_version(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT v FROM catalog_version WHERE id = 1")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(Error::catalog("reading the catalog's version"))
}

/// The pool matching `clause` (on `p`) at its newest KEK generation.
fn pool_in(conn: &Connection, clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<PoolRecord>> {
    query_one(conn, &newest_sql(clause), param, pool_from_row).map_err(pool_read_error("reading pool"))
}

fn client_in(conn: &Connection, clause: &str, param: &dyn rusqlite::ToSql) -> Result<Option<ClientRecord>> {
    query_one(
        conn,
        &format!("SELECT id, name, kdf, salt, seal_public, created_at, auth_public FROM clients WHERE {clause}"),
        param,
        |r| {
            let kdf: String = r.get(2)?;
            let public: Vec<u8> = r.get(4)?;
            let auth: Option<Vec<u8>> = r.get(6)?;
            Ok((r.get(0)?, r.get(1)?, kdf, r.get(3)?, public, r.get(5)?, auth))
        },
    )
    .map_err(Error::catalog("reading client"))?
    .map(|(id, name, kdf, salt, public, created_at, auth): ClientRow| {
        let corrupt = |reason: &str| Error::Integrity {
            what: format!("client '{name}' in the catalog"),
            reason: reason.to_owned(),
        };
        let kdf = serde_json::from_str(&kdf).map_err(|_| corrupt("KDF parameters are not valid JSON"))?;
        let seal_public: [u8; 32] =
            public.as_slice().try_into().map_err(|_| corrupt("seal public key is not 32 bytes"))?;
        let auth_public = auth
            .map(|a| <[u8; 32]>::try_from(a.as_slice()).map_err(|_| corrupt("auth public key is not 32 bytes")))
            .transpose()?;
        Ok(ClientRecord { id, name, kdf, salt, seal_public, auth_public, created_at })
    })
    .transpose()
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn pool_by_name(&self, name: &str) -> Result<PoolRecord> {
        self.kept_or_read(name, |k| &mut k.pools, |c| pool_in(c, "p.name = ?1", &name))?
            .ok_or_else(|| Error::NotFound { what: "pool", name: name.to_owned() })
    }

    async fn pool_by_id(&self, id: i64) -> Result<PoolRecord> {
        self.pool_query("p.id = ?1", &id)?
            .ok_or_else(|| Error::NotFound { what: "pool id", name: id.to_string() })
    }

    async fn pool_generation(&self, id: i64, generation: u32) -> Result<PoolRecord> {
        self.kept_or_read(&(id, generation), |k| &mut k.generations, |c| generation_query(c, id, generation))?
            .ok_or_else(|| generation_missing(id, generation))
    }

    async fn add_generation(&self, pool: &PoolRecord, kek: &NewKek) -> Result<PoolRecord> {
        let id = pool.id;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::catalog("starting a KEK generation"))?;
        {
            let newest: u32 = tx
                .query_row("SELECT MAX(generation) FROM kek_generations WHERE pool_id = ?1", [id], |r| r.get(0))
                .map_err(Error::catalog("reading the newest KEK generation"))?;
            // A pool shredded, or whose key a rotation retired, since it was read.
            let (shredded, state): (Option<String>, Option<String>) = tx
                .query_row("SELECT p.shredded_at, m.state FROM pools p LEFT JOIN master_keys m ON m.id = ?2 WHERE p.id = ?1", params![id, pool.mk_row], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(Error::catalog("reading the pool's state"))?;
            if let Some(at) = shredded {
                return Err(Error::KeysDestroyed { pool: pool.name.clone(), at });
            }
            if state.as_deref() != Some("active") {
                return Err(Error::Input {
                    what: format!("new KEK generation of pool '{}'", pool.name),
                    reason: "the pool's master key was rotated meanwhile; run the command again".into(),
                });
            }
            // Two rekeys at once: the second is refused, not stacked.
            if newest != pool.generation {
                return Err(Error::Input {
                    what: format!("new KEK generation of pool '{}'", pool.name),
                    reason: format!("the pool changed meanwhile (its newest generation is {newest}, not {}); run the command again", pool.generation),
                });
            }
            let next = newest.checked_add(1).ok_or_else(|| Error::Integrity { what: format!("KEK generations of pool '{}'", pool.name), reason: "the newest generation number is the largest there is".into() })?;
            insert_generation(&tx, id, next, pool.mk_row, kek).map_err(Error::catalog(format!("adding a KEK generation to pool '{}'", pool.name)))?;
            // Read back inside the transaction, by the generation made here.
            let new = generation_in(&tx, id, next)?;
            tx.commit().map_err(Error::catalog(format!("committing a KEK generation of pool '{}'", pool.name)))?;
            Ok(new)
        }
    }

    async fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("{POOL_SELECT} WHERE {NEWEST} AND p.shredded_at IS NULL ORDER BY p.name"))
            .map_err(Error::catalog("listing pools"))?;
        let rows = stmt
            .query_map([], pool_from_row)
            .map_err(Error::catalog("listing pools"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(pool_read_error("listing pools"))?;
        Ok(rows)
    }

    async fn generations(&self, pool_id: i64) -> Result<Vec<GenerationInfo>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT g.generation, g.bits, g.created_at, (SELECT COUNT(*) FROM deks d WHERE d.pool_id = g.pool_id AND d.generation = g.generation)
                 FROM kek_generations g WHERE g.pool_id = ?1 ORDER BY g.generation",
            )
            .map_err(Error::catalog("listing KEK generations"))?;
        let rows = stmt
            .query_map([pool_id], |r| Ok(GenerationInfo { generation: r.get(0)?, bits: r.get::<_, i64>(1)? as usize, created_at: r.get(2)?, deks: r.get::<_, i64>(3)? as u64 }))
            .map_err(Error::catalog("listing KEK generations"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::catalog("listing KEK generations"))?;
        Ok(rows)
    }

    async fn wrappings(&self, pool_id: i64) -> Result<Vec<WrappingRecord>> {
        self.wrappings_of(pool_id)
    }

    async fn pool_master_keys(&self, pool_id: i64) -> Result<Vec<MasterKeyRecord>> {
        self.master_keys_of(pool_id)
    }

    async fn master_key_uses(&self, row: i64) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM wrappings WHERE master_key_id = ?1", [row], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(Error::catalog("counting a master key's wrappings"))
    }

    async fn pool_lifecycle(&self, pool_id: i64) -> Result<PoolLifecycle> {
        self.lifecycle_of(pool_id)
    }

    async fn set_rotation_days(&self, pool_id: i64, days: Option<u32>) -> Result<()> {
        self.set_rotation(pool_id, days)
    }

    async fn journal_begin(&self, pool_id: i64, operation: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry> {
        self.journal_open(pool_id, operation, owner, detail)
    }

    async fn journal_begin_pool(&self, name: &str, kms_name: &str, kms_kind: &str, kms_identity: &str, owner: &str, detail: &serde_json::Value) -> Result<JournalEntry> {
        self.pool_reserve(name, kms_name, kms_kind, kms_identity, owner, detail)
    }

    async fn open_journal(&self, pool_id: Option<i64>) -> Result<Vec<JournalEntry>> {
        self.journal_list(pool_id)
    }

    async fn journal_take_over(&self, id: i64, from: &str, to: &str) -> Result<bool> {
        self.journal_owner(id, from, to)
    }

    async fn record_master_key(&self, pool_id: i64, kms_name: &str, kms_kind: &str, kms_identity: &str, mk: &MasterKeyRef, step: &JournalStep) -> Result<MasterKeyRecord> {
        self.insert_master_key(pool_id, kms_name, kms_kind, kms_identity, mk, step)
    }

    async fn forget_master_key(&self, row: i64, step: &JournalStep) -> Result<()> {
        self.delete_master_key(row, step)
    }

    async fn apply_key_change(&self, pool_id: i64, change: &KeyChange) -> Result<()> {
        self.key_change(pool_id, change)
    }

    async fn count_deks(&self, pool_id: i64) -> Result<u64> {
        let conn = self.conn();
        conn.query_row("SELECT COUNT(*) FROM deks WHERE pool_id = ?1", [pool_id], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(Error::catalog("counting DEKs"))
    }

    async fn insert_client(&self, name: &str, reg: &keybridge_proto::seal::Registration) -> Result<ClientRecord> {
        let kdf_json = serde_json::to_string(&reg.kdf).expect("KdfParams serialises");
        let res = self.conn().execute(
            &format!(
                "INSERT INTO clients(name, kdf, salt, seal_public, auth_public, created_at) VALUES (?1, ?2, ?3, ?4, ?5, {NOW})"
            ),
            params![name, kdf_json, reg.salt, &reg.seal_public[..], &reg.auth_public[..]],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(Error::AlreadyExists { what: "client", name: name.to_owned() })
            }
            other => other.map_err(Error::catalog(format!("inserting client '{name}'")))?,
        };
        self.client_by_name(name).await
    }

    async fn client_by_name(&self, name: &str) -> Result<ClientRecord> {
        self.kept_or_read(name, |k| &mut k.clients, |c| client_in(c, "name = ?1", &name))?
            .ok_or_else(|| Error::NotFound { what: "client", name: name.to_owned() })
    }

    async fn client_by_id(&self, id: i64) -> Result<ClientRecord> {
        self.client_query("id = ?1", &id)?
            .ok_or_else(|| Error::NotFound { what: "client id", name: id.to_string() })
    }

    async fn insert_dek(&self, row: DekRow, event: AuditEvent) -> Result<String> {
        self.writer.submit(Some(row), event).await
    }

    async fn audit(&self, event: AuditEvent) -> Result<()> {
        self.writer.submit(None, event).await.map(drop)
    }

    async fn consume_nonce(&self, client: &str, nonce: &str, expires: u64) -> Result<bool> {
        self.writer.consume_nonce(client, nonce, expires).await
    }

    fn audit_detached(&self, event: AuditEvent) -> Result<()> {
        self.writer.submit_detached(event)
    }

    async fn flush(&self) -> Result<()> {
        self.writer.flush()
    }

    async fn audit_rows(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.flush().await?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT * FROM (SELECT seq, at, actor, action, pool, client, dek_id, result, prev_hash, hash
                                FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )
            .map_err(Error::catalog("listing audit rows"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map([limit], audit_from_row)
            .map_err(Error::catalog("listing audit rows"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Error::catalog("listing audit rows"))?;
        Ok(rows)
    }

    async fn audit_seq_of_hash(&self, hash: &[u8]) -> Result<Option<i64>> {
        self.conn()
            .query_row("SELECT seq FROM audit WHERE hash = ?1", [hash], |r| r.get(0))
            .optional()
            .map_err(Error::catalog("looking up an audit row by hash"))
    }

    async fn verify_audit(&self) -> Result<AuditReport> {
        self.flush().await?;
        let _ahead = prefetch::Prefetch::start(&self.path);
        walk_audit(&self.conn())
    }

    async fn backup_to(&self, dest: &Path, replace: bool) -> Result<CatalogCopy> {
        // Every row this process queued is in the copy.
        self.flush().await?;
        let (src, dest) = (self.path.clone(), dest.to_owned());
        tokio::task::spawn_blocking(move || backup::backup_file(&src, &dest, replace))
            .await
            .map_err(|e| Error::Internal(format!("catalog backup task: {e}")))?
    }

    async fn dek(&self, id: &str) -> Result<DekRecord> {
        query_one(
            &self.conn(),
            "SELECT id, pool_id, client_id, encrypted_dek, created_at, generation FROM deks WHERE id = ?1",
            &id,
            |r| {
                Ok(DekRecord {
                    id: r.get(0)?,
                    pool_id: r.get(1)?,
                    client_id: r.get(2)?,
                    encrypted_dek: r.get(3)?,
                    created_at: r.get(4)?,
                    generation: r.get(5)?,
                })
            },
        )
        .map_err(Error::catalog(format!("reading DEK {id}")))?
        .ok_or_else(|| Error::NotFound { what: "DEK", name: id.to_owned() })
    }

    async fn insert_job(&self, id: &str, pool_id: i64, client_id: i64, dek_id: &str, media_agent: &str) -> Result<JobRecord> {
        self.insert_job_row(id, pool_id, client_id, dek_id, media_agent)
    }

    async fn job(&self, id: &str) -> Result<JobRecord> {
        self.job_row(id)
    }

    async fn list_jobs(&self, client: Option<&str>, limit: u32) -> Result<Vec<JobRecord>> {
        self.list_job_rows(client, limit)
    }

    async fn complete_job(&self, id: &str, done: &JobCompletion) -> Result<JobRecord> {
        self.complete_job_row(id, done)
    }
}

/// Walk the whole audit chain on `conn` (one read snapshot) and report the
/// first break, if any.
pub(crate) fn walk_audit(conn: &Connection) -> Result<AuditReport> {
    let mut stmt = conn
        .prepare("SELECT seq, at, actor, action, pool, client, dek_id, result, prev_hash, hash FROM audit ORDER BY seq")
        .map_err(Error::catalog("reading the audit log"))?;
    let mut rows = stmt.query([]).map_err(Error::catalog("reading the audit log"))?;
    let mut verifier = ChainVerifier::new();
    while let Some(row) = rows.next().map_err(Error::catalog("reading the audit log"))? {
        let record = match audit_from_row(row) {
            Ok(r) => r,
            // A value of the wrong type (text where a hash belongs...)
            // is an edit: report it as one rather than as a catalog error.
            Err(rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..)) => {
                let seq: i64 = row.get(0).unwrap_or(0);
                return Ok(verifier.finish_with_unreadable(seq));
            }
            Err(e) => return Err(Error::catalog("reading the audit log")(e)),
        };
        if !verifier.push(&record) {
            break;
        }
    }
    Ok(verifier.finish())
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        pool: r.get(4)?,
        client: r.get(5)?,
        dek_id: r.get(6)?,
        result: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// A pool at one KEK generation, with the generation's first wrapping (by
/// priority) and its master key (`kms_name` is that key's KMS). Filter on `p` (pools), `g` (the
/// generation) and add [`NEWEST`] for the current generation.
const POOL_SELECT: &str = "SELECT p.id, p.name, m.kms_name, m.key_ref, m.label, m.material, m.owned, g.bits, g.kek_public,
        w.wrapped, w.wrap_mechanism, g.oaep_hash, g.params, p.created_at, g.generation, m.id, p.shredded_at
    FROM pools p
    JOIN kek_generations g ON g.pool_id = p.id
    LEFT JOIN wrappings w ON w.pool_id = p.id AND w.generation = g.generation
        AND w.master_key_id = (SELECT w2.master_key_id FROM wrappings w2 WHERE w2.pool_id = p.id AND w2.generation = g.generation
                               ORDER BY w2.priority, w2.created_at, w2.master_key_id LIMIT 1)
    LEFT JOIN master_keys m ON m.id = w.master_key_id";

/// The pool matching `clause` (on `p`) at its newest KEK generation.
fn newest_sql(clause: &str) -> String {
    format!("{POOL_SELECT} WHERE {clause} AND {NEWEST}")
}

/// A pool at one KEK generation (parameters: pool id, generation).
fn generation_sql() -> String {
    format!("{POOL_SELECT} WHERE p.id = ?1 AND g.generation = ?2")
}

/// Pool `id` at KEK generation `generation`, on `conn` (or a transaction).
fn generation_in(conn: &Connection, id: i64, generation: u32) -> Result<PoolRecord> {
    generation_query(conn, id, generation)?.ok_or_else(|| generation_missing(id, generation))
}

fn generation_query(conn: &Connection, id: i64, generation: u32) -> Result<Option<PoolRecord>> {
    conn.prepare_cached(&generation_sql())
        .and_then(|mut st| st.query_row(params![id, generation], pool_from_row).optional())
        .map_err(pool_read_error("reading a KEK generation"))
}

fn generation_missing(id: i64, generation: u32) -> Error {
    Error::NotFound { what: "KEK generation", name: format!("{generation} of pool id {id}") }
}

/// [`POOL_SELECT`] at the pool's newest generation.
const NEWEST: &str = "g.generation = (SELECT MAX(g2.generation) FROM kek_generations g2 WHERE g2.pool_id = p.id)";

/// KEK generation `generation` of pool `pool_id`, wrapped under master-key
/// row `mk_row`, in `tx`.
pub(super) fn insert_generation(tx: &rusqlite::Transaction<'_>, pool_id: i64, generation: u32, mk_row: i64, kek: &NewKek) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO kek_generations(pool_id, generation, bits, kek_public, oaep_hash, params, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})"),
        params![pool_id, generation, kek.bits as i64, kek.public_spki, kek.oaep_hash.to_string(), kek.params.to_string()],
    )?;
    tx.execute(
        &format!("INSERT INTO wrappings(pool_id, generation, master_key_id, wrap_mechanism, wrapped, priority, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, {NOW})"),
        params![pool_id, generation, mk_row, kek.wrap_mechanism, kek.wrapped_private],
    )?;
    Ok(())
}

/// A shredded pool's generation read as a row: no wrapping remains.
#[derive(Debug, thiserror::Error)]
#[error("pool '{pool}' was shredded at {at}")]
struct Shredded {
    pool: String,
    at: String,
}

/// A pool read failed: a shredded pool's is [`Error::KeysDestroyed`].
fn pool_read_error(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| match e {
        rusqlite::Error::FromSqlConversionFailure(column, kind, source) => match source.downcast::<Shredded>() {
            Ok(s) => Error::KeysDestroyed { pool: s.pool, at: s.at },
            Err(source) => Error::catalog(context)(rusqlite::Error::FromSqlConversionFailure(column, kind, source)),
        },
        e => Error::catalog(context)(e),
    }
}

fn pool_from_row(r: &Row<'_>) -> rusqlite::Result<PoolRecord> {
    // A generation without a wrapping (joined LEFT, so the pool does not
    // vanish from listings) cannot restore: say so.
    if r.get::<_, Option<i64>>(15)?.is_none() {
        let (name, generation): (String, u32) = (r.get(1)?, r.get(14)?);
        if let Some(at) = r.get::<_, Option<String>>(16)? {
            return Err(rusqlite::Error::FromSqlConversionFailure(16, rusqlite::types::Type::Null, Box::new(Shredded { pool: name, at })));
        }
        return Err(rusqlite::Error::FromSqlConversionFailure(
            15,
            rusqlite::types::Type::Null,
            format!("KEK generation {generation} of pool '{name}' has no wrapping under any master key (the catalog was edited)").into(),
        ));
    }
    let hash: String = r.get(11)?;
    let params: String = r.get(12)?;
    let bits: i64 = r.get(7)?;
    Ok(PoolRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        kms_name: r.get(2)?,
        master_key: MasterKeyRef {
            id: r.get(3)?,
            label: r.get(4)?,
            material: r.get(5)?,
            owned: r.get(6)?,
        },
        kek_bits: bits as usize,
        kek_public: r.get(8)?,
        kek_wrapped: r.get(9)?,
        wrap_mechanism: r.get(10)?,
        oaep_hash: hash.parse().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, format!("unknown OAEP hash '{hash}'").into())
        })?,
        params: serde_json::from_str(&params).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(13)?,
        generation: r.get(14)?,
        mk_row: r.get(15)?,
    })
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(Error::catalog("reading schema version"))?;
    let known = schema::MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::CatalogSchema {
            path: path.to_owned(),
            reason: format!("schema version {version} is newer than this keybridge understands ({known}); upgrade keybridge"),
        });
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(Error::catalog("starting migration"))?;
        tx.execute_batch(sql).map_err(Error::catalog(format!("applying migration {}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(Error::catalog("recording schema version"))?;
        tx.commit().map_err(Error::catalog(format!("committing migration {}", i + 1)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog at schema 4 (before KEK generations) in `dir`: pools 7
    /// ('old') and 9 ('shared') on one key, client 3, DEK 'd1' of pool 7.
    fn schema_4_catalog(dir: &Path) -> PathBuf {
        let path = dir.join("old.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.execute_batch(
                "INSERT INTO kms VALUES ('hsm', 'pkcs11', 'token keybridge', '2026-01-01T00:00:00.000Z');
                 INSERT INTO pools(id, name, kms_name, mk_id, mk_label, mk_material, mk_owned, kek_bits, kek_public, kek_wrapped,
                                   wrap_mechanism, oaep_hash, params, created_at)
                     VALUES (7, 'old', 'hsm', '00aa', 'keybridge-mk-old', NULL, 1, 3072, X'3082', X'beef',
                             'CKM_AES_KEY_WRAP_PAD', 'sha1', '{\"k\":1}', '2026-01-01T00:00:00.000Z');
                 INSERT INTO pools(id, name, kms_name, mk_id, mk_label, mk_material, mk_owned, kek_bits, kek_public, kek_wrapped,
                                   wrap_mechanism, oaep_hash, params, created_at)
                     VALUES (9, 'shared', 'hsm', '00aa', 'keybridge-mk-old', NULL, 0, 2048, X'3083', X'cafe',
                             'CKM_AES_KEY_WRAP_PAD', 'sha1', '{}', '2026-01-03T00:00:00.000Z');
                 INSERT INTO clients(id, name, kdf, salt, seal_public, created_at) VALUES (3, 'c', '{}', X'00', X'00', '2026-01-01T00:00:00.000Z');
                 INSERT INTO deks VALUES ('d1', 7, 3, X'0102', '2026-01-02T00:00:00.000Z');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        path
    }

    /// A catalog written before KEK generations (schema 4) migrates: its
    /// pool becomes generation 1 wrapped under its master key, its DEKs
    /// name generation 1, and nothing the pool row held is lost.
    #[tokio::test]
    async fn a_schema_4_catalog_migrates_to_generations() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(&schema_4_catalog(dir.path())).unwrap();
        let p = c.pool_by_name("old").await.unwrap();
        assert_eq!((p.id, p.generation, p.kms_name.as_str(), p.kek_bits), (7, 1, "hsm", 3072));
        assert_eq!((p.master_key.id.as_str(), p.master_key.label.as_str(), p.master_key.owned), ("00aa", "keybridge-mk-old", true));
        assert_eq!((p.kek_public.as_slice(), p.kek_wrapped.as_slice()), (&[0x30, 0x82][..], &[0xbe, 0xef][..]));
        assert_eq!((p.wrap_mechanism.as_str(), p.oaep_hash.to_string().as_str(), p.params["k"].as_i64()), ("CKM_AES_KEY_WRAP_PAD", "sha1", Some(1)));
        assert_eq!(c.dek("d1").await.unwrap().generation, 1);
        assert_eq!(c.pool_generation(7, 1).await.unwrap().kek_wrapped, p.kek_wrapped);
        assert!(c.pool_generation(7, 2).await.is_err());
        let gens = c.generations(7).await.unwrap();
        assert_eq!((gens.len(), gens[0].deks), (1, 1));
        // Two pools on one (adopted) key: one master key row, both wrap under it.
        let shared = c.pool_by_name("shared").await.unwrap();
        assert_eq!((shared.mk_row, shared.kek_wrapped.as_slice()), (p.mk_row, &[0xca, 0xfe][..]));
        let rows: i64 = c.conn().query_row("SELECT COUNT(*) FROM master_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }

    /// Pools and clients read by name are kept only while nothing they are
    /// read from has changed, whoever changed it: each write below, made
    /// through a connection of its own (another process, say an operator's
    /// CLI), must show in the next read, though the record was just read
    /// and kept.
    #[tokio::test]
    async fn kept_pools_and_clients_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_4_catalog(dir.path());
        let c = SqliteCatalog::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        // The fixture's client, made readable.
        other.execute_batch("UPDATE clients SET seal_public = zeroblob(32), kdf = '{\"alg\":\"argon2id\",\"m_kib\":8,\"t\":1,\"p\":1}'").unwrap();
        type Check = fn(&Result<PoolRecord>, &Result<PoolRecord>, &Result<ClientRecord>) -> bool;
        let writes: [(&str, Check); 10] = [
            ("UPDATE pools SET created_at = 'then' WHERE id = 7", |old, _, _| old.as_ref().is_ok_and(|p| p.created_at == "then")),
            ("UPDATE kek_generations SET kek_public = X'3084' WHERE pool_id = 7", |old, _, _| old.as_ref().is_ok_and(|p| p.kek_public == [0x30, 0x84])),
            ("UPDATE wrappings SET wrapped = X'f00d' WHERE pool_id = 7", |old, _, _| old.as_ref().is_ok_and(|p| p.kek_wrapped == [0xf0, 0x0d])),
            ("UPDATE master_keys SET label = 'relabelled'", |old, shared, _| [old, shared].iter().all(|p| p.as_ref().is_ok_and(|p| p.master_key.label == "relabelled"))),
            ("UPDATE clients SET salt = X'0102'", |_, _, client| client.as_ref().is_ok_and(|c| c.salt == [1, 2])),
            (
                "INSERT INTO kek_generations(pool_id, generation, bits, kek_public, oaep_hash, params, created_at) VALUES (9, 2, 2048, X'3085', 'sha1', '{}', 'now')",
                |_, shared, _| shared.as_ref().is_err_and(|e| e.to_string().contains("generation 2 of pool 'shared' has no wrapping")),
            ),
            (
                "INSERT INTO wrappings(pool_id, generation, master_key_id, wrap_mechanism, wrapped, priority, created_at) SELECT 9, 2, master_key_id, wrap_mechanism, X'0bad', 0, 'now' FROM wrappings WHERE pool_id = 9",
                |_, shared, _| shared.as_ref().is_ok_and(|p| p.generation == 2 && p.kek_wrapped == [0x0b, 0xad]),
            ),
            ("DELETE FROM wrappings WHERE pool_id = 9 AND generation = 2", |_, shared, _| shared.is_err()),
            ("DELETE FROM kek_generations WHERE pool_id = 9 AND generation = 2", |_, shared, _| shared.as_ref().is_ok_and(|p| p.generation == 1)),
            ("DELETE FROM clients", |_, _, client| matches!(client, Err(Error::NotFound { .. }))),
        ];
        for (sql, shows) in writes {
            let read = || async { (c.pool_by_name("old").await, c.pool_by_name("shared").await, c.client_by_name("c").await) };
            let (old, shared, client) = read().await;
            assert!(!shows(&old, &shared, &client), "already shows before it ran: {sql}");
            other.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}")).unwrap();
            let (old, shared, client) = read().await;
            assert!(shows(&old, &shared, &client), "not seen after: {sql}\n{old:?}\n{shared:?}\n{client:?}");
            // Pool 7 stays at generation 1: read by id and generation (the
            // restore path's read, kept too), it is the same record.
            assert_eq!(format!("{:?}", c.pool_generation(7, 1).await), format!("{old:?}"), "after {sql}");
        }
        // Every table a pool or a client is read from moves the version on
        // every kind of write (the writes above try most of them).
        for table in ["pools", "kek_generations", "wrappings", "master_keys", "clients"] {
            for event in ["INSERT", "UPDATE", "DELETE"] {
                let sql: String = other
                    .query_row("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND sql LIKE ?2", params![table, format!("%AFTER {event} ON {table} %")], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("no {event} trigger on {table}: {e}"));
                assert!(sql.contains("UPDATE catalog_version SET v = random()"), "{sql}");
            }
        }
    }

    /// The pool reads of the restore and issue paths run their cached
    /// statements as prepared. Before the connection took the query planner
    /// stability guarantee, SQLite prepared them again on every call.
    #[tokio::test]
    async fn pool_reads_are_not_prepared_again_on_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteCatalog::open(&schema_4_catalog(dir.path())).unwrap();
        for _ in 0..3 {
            for (id, name) in [(7, "old"), (9, "shared")] {
                assert_eq!(c.pool_generation(id, 1).await.unwrap().name, name);
                assert_eq!(c.pool_by_name(name).await.unwrap().id, id);
            }
        }
        let conn = c.conn();
        for sql in [generation_sql(), newest_sql("p.name = ?1")] {
            let st = conn.prepare_cached(&sql).unwrap();
            // The statement the reads used (it ran), never prepared again.
            assert!(st.get_status(rusqlite::StatementStatus::VmStep) > 0, "not the statement the reads used: {sql}");
            assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0, "prepared again: {sql}");
        }
    }
}
