//! Group commit for DEK rows.
//!
//! Issuing a DEK must be durable before the DEK is handed out (a DEK that
//! encrypted a backup but is not in the catalog is lost data). With
//! `synchronous=FULL` every commit costs an fsync, which would cap DEK issue
//! at the disk's fsync rate. One writer thread owns its own connection,
//! takes every row queued while the previous commit ran, and commits them
//! together; each caller is answered only after the commit that holds its
//! row succeeded.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::params;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Largest number of rows in one commit.
const MAX_BATCH: usize = 512;
/// Under load, how long the writer keeps gathering rows after the first one
/// before it commits. Each commit costs the writer thread CPU (WAL frames,
/// checksums, the fsync's system call), which competes with DEK issuing
/// for the cores; gathering for a moment cuts the number of commits several
/// fold. A lone row (no load) is committed at once: the window only opens
/// when the previous commit held more than one row.
const GATHER_WINDOW: Duration = Duration::from_millis(5);

/// A DEK row to insert.
#[derive(Debug, Clone)]
pub struct DekRow {
    pub id: String,
    pub pool_id: i64,
    pub client_id: i64,
    pub encrypted_dek: Vec<u8>,
}

type Job = (DekRow, oneshot::Sender<Result<String>>);

#[derive(Debug)]
pub(super) struct DekWriter {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl DekWriter {
    pub(super) fn new(path: PathBuf) -> Self {
        DekWriter { path, tx: Mutex::new(None) }
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>> {
        let mut guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = guard.as_ref() {
            return Ok(tx.clone());
        }
        let conn = super::open_connection(&self.path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keybridge-dek-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|source| Error::Io { context: "starting catalog writer thread for", path: self.path.clone(), source })?;
        *guard = Some(tx.clone());
        Ok(tx)
    }

    /// Insert `row`; returns its `created_at` once the commit is durable.
    pub(super) async fn insert(&self, row: DekRow) -> Result<String> {
        let (done_tx, done_rx) = oneshot::channel();
        let id = row.id.clone();
        self.sender()?
            .send((row, done_tx))
            .map_err(|_| Error::Internal(format!("catalog writer thread for {} stopped", self.path.display())))?;
        done_rx
            .await
            .map_err(|_| Error::Internal(format!("catalog writer thread for {} stopped before DEK {id} was committed", self.path.display())))?
    }
}

fn run(mut conn: rusqlite::Connection, rx: mpsc::Receiver<Job>) {
    let mut loaded = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + if loaded { GATHER_WINDOW } else { Duration::ZERO };
        while batch.len() < MAX_BATCH {
            let wait = deadline.saturating_duration_since(Instant::now());
            let next = if wait.is_zero() { rx.try_recv().ok() } else { rx.recv_timeout(wait).ok() };
            match next {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        loaded = batch.len() > 1;
        match commit(&mut conn, &batch) {
            Ok(stamps) => {
                for ((_, done), stamp) in batch.into_iter().zip(stamps) {
                    let _ = done.send(Ok(stamp));
                }
            }
            // One bad row must not fail its neighbours: retry each alone.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = commit(&mut conn, std::slice::from_ref(&job));
                    answer(job, result.map(|mut s| s.remove(0)));
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

fn answer((row, done): Job, result: rusqlite::Result<String>) {
    let _ = done.send(result.map_err(|source| Error::Catalog { context: format!("storing DEK {} (not issued)", row.id), source }));
}

fn commit(conn: &mut rusqlite::Connection, batch: &[Job]) -> rusqlite::Result<Vec<String>> {
    let tx = conn.transaction()?;
    let mut stamps = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO deks(id, pool_id, client_id, encrypted_dek, created_at)
             VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ','now')) RETURNING created_at",
        )?;
        for (row, _) in batch {
            stamps.push(stmt.query_row(params![row.id, row.pool_id, row.client_id, row.encrypted_dek], |r| r.get(0))?);
        }
    }
    tx.commit()?;
    Ok(stamps)
}
