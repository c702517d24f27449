//! Group commit for DEK rows and audit records.
//!
//! Issuing a DEK must be durable before the DEK is handed out (a DEK that
//! encrypted a backup but is not in the catalog is lost data), and so must
//! the audit record of every key operation. With `synchronous=FULL` every
//! commit costs an fsync, which would cap DEK issue at the disk's fsync
//! rate. One writer thread owns its own connection, takes every job queued
//! while the previous commit ran, and commits them together; each caller is
//! answered only after the commit that holds its rows succeeded.
//!
//! The writer is also the only appender of the audit hash chain: inside
//! each batch's `BEGIN IMMEDIATE` transaction (which serialises it with any
//! other process writing the same catalog file) it reads the chain's head
//! and extends it, one row per job. A DEK row and its audit row are in the
//! same transaction: neither is committed without the other.
//!
//! The writer also records the nonces of signed service requests
//! ([`DekWriter::consume_nonce`]): one table shared by every process on the
//! catalog and kept across restarts, so a captured request cannot be
//! replayed to another instance or after a restart while its timestamp is
//! still accepted. A nonce rides in the same group commits.
//!
//! A caller either waits for its commit ([`DekWriter::submit`]) or hands
//! the job over and goes on ([`DekWriter::submit_detached`]: the outcome row
//! of a recover whose "started" row is already durable). Jobs are committed
//! in the order they were queued, so [`DekWriter::flush`] (a job with no
//! rows) returns once everything queued before it is durable; dropping the
//! writer commits what is queued and joins the thread.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::audit::{row_hash, AuditEvent, RowFields, GENESIS};
use crate::DekRow;
use keybridge_proto::{Error, Result};

/// Largest number of jobs in one commit.
const MAX_BATCH: usize = 512;
/// Under load, how long at most the writer keeps gathering rows after the
/// first one before it commits (it stops sooner at [`GROUP`] jobs, or at a
/// [`GATHER_GAP`] step that brought nothing). Each commit costs the writer
/// thread CPU (WAL frames, checksums, the fsync's system call), which
/// competes with DEK issuing for the cores; gathering for a moment cuts
/// the number of commits several fold. The window opens only when the previous commit held at least
/// [`LOADED_BATCH`] rows: a few callers waiting on each commit in turn (two
/// restores, say, each releasing a key only once its audit row is durable)
/// must not pay the window as latency.
const GATHER_WINDOW: Duration = Duration::from_millis(5);
/// How long a batch of detached rows only (the outcome of a recover,
/// queued after its durable "started" row) waits for a row somebody waits
/// for. A restore loop's next "started" row comes within this, so each
/// recover costs one commit, not two: half the writer's CPU and fsyncs,
/// which compete with the token's decryptions when every core is busy.
const DETACHED_WAIT: Duration = Duration::from_millis(2);
/// A commit of this many rows means many concurrent writers.
const LOADED_BATCH: usize = 8;
/// Gathering stops once a batch holds this many jobs (rows already queued
/// are still taken, up to [`MAX_BATCH`]). Past it a commit's fixed cost
/// (the fsync, locks, WAL header) is mostly shared, and waiting for more
/// only makes more issuers wait together: with 32 concurrent issuers on
/// two cores all 32 gathered into one batch, and both cores idled during
/// its commit. Closed at 16, half the issuers compute their next rows
/// while the other half's commit runs. Every job counts, whoever waits for
/// it (a signed request's nonce, a recover's detached outcome row). The
/// values tried and their figures, including the few percent it may cost
/// at 256 issuers: design.md, "Performance notes", session 16.
const GROUP: usize = 16;
// The window must be able to open (a batch of GROUP is loaded) and GROUP
// must be a real limit.
const _: () = assert!(LOADED_BATCH <= GROUP && GROUP <= MAX_BATCH);
/// Within the window the writer sleeps in steps this long and takes what
/// arrived; a step that brought nothing ends the gathering (the callers
/// answered by the previous commit are back). It sleeps rather than waits
/// on the channel: a writer blocked in `recv` is woken by every send, a
/// system call for the caller and a context switch here per row. Bench,
/// DEK issue vs raw encrypt with 32 / 128 / 256 concurrent issuers: 0.44-0.49
/// / 0.79 / 0.79-0.85 with the full window every time; 0.56-0.59 / 0.79 /
/// 0.79-0.85 with a 1 ms gap waited on the channel; 0.61-0.67 / 0.87-0.88 /
/// 0.87-0.92 with 250 us sleeps (500 us: 0.63 / 0.82-0.84 / 0.87-0.96).
const GATHER_GAP: Duration = Duration::from_micros(250);
/// Expired nonces are deleted at most this often (in a commit that
/// records one).
const NONCE_PURGE_EVERY: Duration = Duration::from_secs(60);

/// One unit of work, answered with [`Committed`].
#[derive(Debug)]
struct Job {
    work: Work,
    done: Reply,
}

#[derive(Debug)]
enum Work {
    /// An audit event, with the DEK row it records (DEK issue) or alone
    /// (every other operation).
    Rows(Option<DekRow>, AuditEvent),
    /// A signed request's nonce, valid until `expires` (Unix seconds).
    Nonce { client: String, nonce: String, expires: u64 },
    /// Nothing: answered once everything queued before it is committed.
    Flush,
}

/// A job's answer: the commit's timestamp (the DEK's `created_at`, the
/// audit row's `at`), and for a nonce whether it was new.
#[derive(Debug)]
struct Committed {
    at: String,
    fresh: bool,
}

/// Who waits for a job's commit.
#[derive(Debug)]
enum Reply {
    Async(oneshot::Sender<Result<Committed>>),
    Blocking(mpsc::Sender<Result<Committed>>),
    /// Nobody: a failure is logged by the writer.
    Detached,
}

#[derive(Debug)]
pub(super) struct DekWriter {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for DekWriter {
    /// Commit what is queued (detached outcome rows) before the catalog
    /// goes away: closing the channel ends the thread after its last batch.
    fn drop(&mut self) {
        drop(self.tx.get_mut().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl DekWriter {
    pub(super) fn new(path: PathBuf) -> Self {
        DekWriter { path, tx: Mutex::new(None), thread: Mutex::new(None) }
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>> {
        let mut guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = guard.as_ref() {
            return Ok(tx.clone());
        }
        let conn = super::open_connection(&self.path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("keybridge-catalog-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|source| Error::Io { context: "starting catalog writer thread for", path: self.path.clone(), source })?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        *guard = Some(tx.clone());
        Ok(tx)
    }

    fn send(&self, job: Job) -> Result<()> {
        self.sender()?
            .send(job)
            .map_err(|_| Error::Internal(format!("catalog writer thread for {} stopped", self.path.display())))
    }

    fn stopped(&self, what: &str) -> Error {
        Error::Internal(format!("catalog writer thread for {} stopped before {what} was committed", self.path.display()))
    }

    /// Commit `dek` (if any) and `event`; returns the commit's timestamp
    /// once it is durable.
    pub(super) async fn submit(&self, dek: Option<DekRow>, event: AuditEvent) -> Result<String> {
        let work = Work::Rows(dek, event);
        Ok(self.wait(work).await?.at)
    }

    /// Record a signed request's nonce until `expires`; false if it was
    /// recorded before (the request is a replay). Returns once durable.
    pub(super) async fn consume_nonce(&self, client: &str, nonce: &str, expires: u64) -> Result<bool> {
        let work = Work::Nonce { client: client.to_owned(), nonce: nonce.to_owned(), expires };
        Ok(self.wait(work).await?.fresh)
    }

    async fn wait(&self, work: Work) -> Result<Committed> {
        let (done_tx, done_rx) = oneshot::channel();
        let what = work.what();
        self.send(Job { work, done: Reply::Async(done_tx) })?;
        done_rx.await.map_err(|_| self.stopped(&what))?
    }

    /// Queue `event` for the next commit and return at once; a failure to
    /// commit it is logged by the writer.
    pub(super) fn submit_detached(&self, event: AuditEvent) -> Result<()> {
        self.send(Job { work: Work::Rows(None, event), done: Reply::Detached })
    }

    /// Wait until every job queued before this call is committed (or has
    /// failed). Blocks the calling thread for the commits ahead of it; a no-op
    /// when the writer never started.
    pub(super) fn flush(&self) -> Result<()> {
        let running = self.tx.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if !running {
            return Ok(());
        }
        let (done_tx, done_rx) = mpsc::channel();
        self.send(Job { work: Work::Flush, done: Reply::Blocking(done_tx) })?;
        done_rx.recv().map_err(|_| self.stopped("a flush"))?.map(drop)
    }
}

impl Work {
    /// What this job stores, for messages.
    fn what(&self) -> String {
        match self {
            Work::Rows(Some(row), _) => format!("DEK {}", row.id),
            Work::Rows(None, event) => format!("the audit record of {} ({})", event.action, event.result),
            Work::Nonce { client, .. } => format!("the nonce of a request from client '{client}'"),
            Work::Flush => "a flush".to_owned(),
        }
    }
}

impl Reply {
    fn send(self, result: Result<Committed>, what: impl FnOnce() -> String) {
        match self {
            Reply::Async(tx) => drop(tx.send(result)),
            Reply::Blocking(tx) => drop(tx.send(result)),
            Reply::Detached => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "could not commit {}", what());
                }
            }
        }
    }
}

fn run(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Job>) {
    let mut loaded = false;
    let mut purged: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let take = |batch: &mut Vec<Job>| {
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch.len() > before
        };
        take(&mut batch);
        if !loaded && batch.iter().all(|job| matches!(job.done, Reply::Detached)) {
            // Nobody waits for these rows: give the next row somebody waits
            // for a moment to arrive and share the commit.
            if let Ok(job) = rx.recv_timeout(DETACHED_WAIT) {
                batch.push(job);
                take(&mut batch);
            }
        }
        if loaded {
            // Sleep between looks instead of waiting on the channel: a
            // writer blocked in recv is woken by every send (a system call
            // for the caller and a context switch here, per row).
            let deadline = Instant::now() + GATHER_WINDOW;
            while batch.len() < GROUP {
                let wait = deadline.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                std::thread::sleep(wait.min(GATHER_GAP));
                if !take(&mut batch) {
                    break;
                }
            }
        }
        loaded = batch.len() >= LOADED_BATCH;
        let purge = batch.iter().any(|j| matches!(j.work, Work::Nonce { .. })) && purged.is_none_or(|t| t.elapsed() >= NONCE_PURGE_EVERY);
        if purge {
            purged = Some(Instant::now());
        }
        match commit(&mut conn, &batch, purge) {
            Ok((at, fresh)) => {
                for (job, fresh) in batch.into_iter().zip(fresh) {
                    job.done.send(Ok(Committed { at: at.clone(), fresh }), String::new);
                }
            }
            // One bad row must not fail its neighbours: retry each alone.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = commit(&mut conn, std::slice::from_ref(&job), false);
                    answer(job, result);
                }
            }
            Err(e) => {
                if let Some(job) = batch.pop() {
                    answer(job, Err(e));
                }
            }
        }
    }
}

fn answer(job: Job, result: rusqlite::Result<(String, Vec<bool>)>) {
    let context = match &job.work {
        Work::Rows(Some(row), _) => format!("storing DEK {} and its audit record (not issued)", row.id),
        Work::Rows(None, event) => format!("appending the audit record of {} ({})", event.action, event.result),
        Work::Nonce { client, .. } => format!("recording the nonce of a request from client '{client}'"),
        Work::Flush => "committing queued audit records".to_owned(),
    };
    let result = result
        .map(|(at, fresh)| Committed { at, fresh: fresh.first().copied().unwrap_or(true) })
        .map_err(|source| Error::Catalog { context: context.clone(), source: Box::new(source) });
    job.done.send(result, || context);
}

/// One transaction for the whole batch: every DEK row and nonce, and the
/// audit chain extended by one row per event; with `purge`, expired nonces
/// are deleted too. Returns the batch's timestamp and, per job, whether it
/// was new (false only for a nonce recorded before).
fn commit(conn: &mut rusqlite::Connection, batch: &[Job], purge: bool) -> rusqlite::Result<(String, Vec<bool>)> {
    // IMMEDIATE: take the write lock before reading the chain's head, so no
    // other connection (another keybridge process) can extend it between
    // our read and our insert.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut fresh = Vec::with_capacity(batch.len());
    let at = {
        let at: String = tx.prepare_cached("SELECT strftime('%Y-%m-%dT%H:%M:%fZ','now')")?.query_row([], |r| r.get(0))?;
        let head: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (mut seq, mut prev) = match head {
            None => (0, GENESIS),
            Some((seq, hash)) => {
                // A head whose hash is not 32 bytes was edited; chain on from
                // its SHA-256 so the link stays well defined (verify reports
                // the edited row).
                let prev = <[u8; 32]>::try_from(hash.as_slice()).unwrap_or_else(|_| <sha2::Sha256 as sha2::Digest>::digest(&hash).into());
                (seq, prev)
            }
        };
        if purge {
            tx.prepare_cached("DELETE FROM request_nonces WHERE expires < ?1")?.execute(params![keybridge_proto::api::auth::unix_now() as i64])?;
        }
        let mut dek_stmt = tx.prepare_cached(
            "INSERT INTO deks(id, pool_id, client_id, encrypted_dek, generation, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut audit_stmt = tx.prepare_cached(
            "INSERT INTO audit(seq, at, actor, action, pool, client, dek_id, result, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut nonce_stmt = tx.prepare_cached("INSERT INTO request_nonces(client, nonce, expires) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?;
        for job in batch {
            let (dek, e) = match &job.work {
                Work::Rows(dek, e) => (dek, e),
                Work::Nonce { client, nonce, expires } => {
                    fresh.push(nonce_stmt.execute(params![client, nonce, *expires as i64])? == 1);
                    continue;
                }
                Work::Flush => {
                    fresh.push(true);
                    continue;
                }
            };
            fresh.push(true);
            if let Some(row) = dek {
                dek_stmt.execute(params![row.id, row.pool_id, row.client_id, row.encrypted_dek, row.generation, at])?;
            }
            seq += 1;
            let fields = RowFields {
                seq,
                at: &at,
                actor: &e.actor,
                action: e.action.as_str(),
                pool: e.pool.as_deref(),
                client: e.client.as_deref(),
                dek_id: e.dek_id.as_deref(),
                result: &e.result,
                prev_hash: &prev,
            };
            let hash = row_hash(&fields);
            audit_stmt.execute(params![seq, at, e.actor, e.action.as_str(), e.pool, e.client, e.dek_id, e.result, &prev[..], &hash[..]])?;
            prev = hash;
        }
        at
    };
    tx.commit()?;
    Ok((at, fresh))
}

#[cfg(test)]
mod tests {
    use super::super::SqliteCatalog;
    use crate::Catalog;
    use keybridge_proto::api::auth::unix_now;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nonce_is_fresh_once_per_client_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.db");
        let later = unix_now() + 300;
        {
            let catalog = SqliteCatalog::open_or_create(&path).unwrap();
            // Two uses of one nonce queued at once share a commit: only the
            // first is fresh.
            let (a, b) = tokio::join!(catalog.consume_nonce("alice", "n1", later), catalog.consume_nonce("alice", "n1", later));
            assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|f| **f).count(), 1);
            // Nonces are per client.
            assert!(catalog.consume_nonce("bob", "n1", later).await.unwrap());
        }
        // Another process (here: a reopened catalog) sees them.
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert!(!catalog.consume_nonce("alice", "n1", later).await.unwrap());
        assert!(catalog.consume_nonce("alice", "n2", later).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_nonces_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open_or_create(&dir.path().join("kb.db")).unwrap();
        // The writer's first commit with a nonce purges.
        assert!(catalog.consume_nonce("alice", "old", 1).await.unwrap());
        assert!(catalog.consume_nonce("alice", "new", unix_now() + 300).await.unwrap());
        let count = |c: &SqliteCatalog| c.conn().query_row("SELECT count(*) FROM request_nonces", [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count(&catalog), 2);
        drop(catalog);
        // A new writer purges on its first nonce commit: "old" expired long ago.
        let catalog = SqliteCatalog::open(&dir.path().join("kb.db")).unwrap();
        assert!(catalog.consume_nonce("alice", "newer", unix_now() + 300).await.unwrap());
        assert_eq!(count(&catalog), 2);
    }
}
