//! Copies of the SQLite catalog for disaster recovery: an online backup
//! (SQLite's backup API, one read snapshot, so writers go on) and a
//! file-level restore that checks a copy before it takes the catalog's
//! place.
//!
//! Both write the new file the same way: created 0600 next to its final
//! name, filled, checked, `fsync`ed, renamed, and the directory `fsync`ed.
//! A crash leaves either the old file or the new one, and at most a
//! temporary file beside it (named `.NAME.tmp-…`).
//!
//! What a copy must pass, at backup and again at restore:
//! `PRAGMA integrity_check` says `ok`, `PRAGMA foreign_key_check` finds
//! nothing, the schema version is one this keybridge knows (1 to the
//! number of migrations), and the audit chain verifies from row 1 to its
//! head.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use keybridge_proto::{Error, Result};

use super::{schema, walk_audit};
use crate::CatalogCopy;

/// How long a backup step may keep finding the source busy (a writer
/// checkpointing, another process's exclusive lock) before giving up.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// What `restore_from` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogRestore {
    /// The catalog file that now holds the copy.
    pub catalog: PathBuf,
    /// The copy it came from, as checked.
    pub from: CatalogCopy,
    /// Where the catalog that was there before was moved (`--force`).
    pub replaced: Option<PathBuf>,
    /// Why the replaced catalog could not be read, if it could not (a
    /// damaged catalog is replaced like any other; its `-wal` moves with
    /// it).
    pub replaced_unreadable: Option<String>,
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { context, path: path.to_owned(), source }
}

/// A temporary file next to `target`, created 0600 (never an existing
/// file); removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn beside(target: &Path) -> Result<TempFile> {
        let dir = parent(target);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "catalog".into());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io("creating a temporary file", &path))?;
        Ok(TempFile { path, keep: false })
    }

    /// `fsync` the file, rename it to `target`, `fsync` the directory.
    fn persist(mut self, target: &Path) -> Result<()> {
        File::open(&self.path).and_then(|f| f.sync_all()).map_err(io("syncing", &self.path))?;
        std::fs::rename(&self.path, target).map_err(io("renaming the new file to", target))?;
        self.keep = true;
        sync_dir(target)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            // SQLite's own files for it, if a connection left any.
            for suffix in ["-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(with_suffix(&self.path, suffix));
            }
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = parent(path);
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io("syncing directory", &dir))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Check a copy on `conn`: integrity, foreign keys, schema version, audit
/// chain. The reason for a refusal names what failed.
fn check_copy(conn: &Connection) -> std::result::Result<(i64, crate::audit::AuditReport), String> {
    let sqlite = |what: &str| {
        let what = what.to_owned();
        move |e: rusqlite::Error| format!("{what}: {e}")
    };
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(sqlite("PRAGMA integrity_check could not read it"))?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        return Err(format!("PRAGMA integrity_check found {} problem(s): {}", problems.len(), shown.join("; ")));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sqlite("reading the schema version"))?;
    let known = schema::MIGRATIONS.len() as i64;
    if version == 0 {
        return Err("schema version 0: this is not a keybridge catalog".into());
    }
    if version > known {
        return Err(format!("schema version {version} is newer than this keybridge understands ({known}); restore it with a newer keybridge"));
    }
    let orphans: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
        .map_err(sqlite("checking foreign keys"))?;
    if orphans != 0 {
        return Err(format!("PRAGMA foreign_key_check found {orphans} row(s) pointing at rows that are not there"));
    }
    let report = walk_audit(conn).map_err(|e| e.to_string())?;
    if let Some(b) = &report.broken {
        let verified = if report.head_seq == 0 { "no row before it verifies".to_owned() } else { format!("rows 1 to {} verify", report.head_seq) };
        return Err(format!("the audit chain is broken: {} ({verified})", b.message));
    }
    Ok((version, report))
}

fn copy_facts(path: &Path, version: i64, report: &crate::audit::AuditReport) -> Result<CatalogCopy> {
    let bytes = std::fs::metadata(path).map_err(io("reading the size of", path))?.len();
    Ok(CatalogCopy { path: path.to_owned(), bytes, schema_version: version, audit_rows: report.rows, audit_head: report.head_hash.clone() })
}

/// Copy the catalog at `src` to `dest` with SQLite's online backup API.
pub(super) fn backup_file(src: &Path, dest: &Path, replace: bool) -> Result<CatalogCopy> {
    if same_file(src, dest) {
        return Err(Error::Input { what: format!("backup destination {}", dest.display()), reason: "is the catalog itself".into() });
    }
    if dest.exists() && !replace {
        return Err(Error::AlreadyExists { what: "backup file", name: dest.display().to_string() });
    }
    let source = Connection::open(src).map_err(Error::catalog(format!("opening {} to back it up", src.display())))?;
    let tmp = TempFile::beside(dest)?;
    let mut copy = Connection::open(&tmp.path).map_err(Error::catalog(format!("opening {}", tmp.path.display())))?;
    {
        let backup = Backup::new(&source, &mut copy).map_err(Error::catalog("starting the backup"))?;
        let deadline = std::time::Instant::now() + BUSY_FOR;
        // All pages in one step: one read transaction on the source, so
        // the copy is one committed state while writers go on (WAL).
        loop {
            match backup.step(-1).map_err(Error::catalog(format!("copying {}", src.display())))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => {
                    return Err(Error::CatalogSchema {
                        path: src.to_owned(),
                        reason: format!("stayed locked for {} s while being copied ({other:?})", BUSY_FOR.as_secs()),
                    })
                }
            }
        }
    }
    drop(source);
    // A self-contained file: no write-ahead log beside it.
    copy.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get::<_, String>(0))
        .map_err(Error::catalog(format!("settling {}", tmp.path.display())))?;
    let (version, report) = check_copy(&copy).map_err(|reason| Error::Integrity {
        what: format!("the copy of {} (the catalog itself is damaged; nothing was written to {})", src.display(), dest.display()),
        reason,
    })?;
    drop(copy);
    let facts = copy_facts(&tmp.path, version, &report)?;
    tmp.persist(dest)?;
    Ok(CatalogCopy { path: dest.to_owned(), ..facts })
}

/// Proof that nothing has the catalog open, held until dropped.
enum CatalogLock {
    /// SQLite's exclusive lock: no other connection, in this process or
    /// another, has the catalog open.
    Sqlite(Connection),
    /// The catalog is not a readable database (the reason), so SQLite
    /// cannot lock it: a POSIX write lock over the whole file, which no
    /// other process's SQLite connection would let us take. (Connections
    /// of this process are not seen by it; the CLI has none.)
    Unreadable(File, String),
}

/// Whether some connection (this process's or another's) has `catalog`
/// open: only a connection with the file to itself can take SQLite's
/// exclusive lock in WAL mode.
fn lock_unused(catalog: &Path) -> Result<CatalogLock> {
    // A file that does not even start like SQLite is not handed to SQLite,
    // which could remove a log beside it that it cannot use.
    let mut magic = Vec::with_capacity(16);
    {
        use std::io::Read;
        File::open(catalog).and_then(|f| f.take(16).read_to_end(&mut magic)).map_err(io("reading", catalog))?;
    }
    if !magic.is_empty() && magic != b"SQLite format 3\0" {
        return lock_unreadable(catalog, "file is not a database (no SQLite header)".into());
    }
    let conn = Connection::open(catalog).map_err(Error::catalog(format!("opening {}", catalog.display())))?;
    conn.busy_timeout(Duration::ZERO).map_err(Error::catalog("setting busy timeout"))?;
    conn.query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get::<_, String>(0))
        .map_err(Error::catalog("setting the locking mode"))?;
    match conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        Ok(()) => Ok(CatalogLock::Sqlite(conn)),
        Err(rusqlite::Error::SqliteFailure(e, msg)) if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Err(in_use(catalog, msg.unwrap_or_else(|| e.to_string())))
        }
        // The catalog being replaced is damaged: often why it is replaced.
        Err(rusqlite::Error::SqliteFailure(e, msg)) if matches!(e.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            drop(conn);
            lock_unreadable(catalog, msg.unwrap_or_else(|| e.to_string()))
        }
        Err(e) => Err(Error::catalog(format!("locking {}", catalog.display()))(e)),
    }
}

fn in_use(catalog: &Path, detail: String) -> Error {
    Error::CatalogSchema {
        path: catalog.to_owned(),
        reason: format!("is in use ({detail}); stop every keybridge process using it (`keybridge serve`, a running CLI command) before restoring over it"),
    }
}

/// [`CatalogLock::Unreadable`]: a POSIX write lock over the whole file, not
/// granted while another process's SQLite connection holds its lock.
fn lock_unreadable(catalog: &Path, reason: String) -> Result<CatalogLock> {
    let file = OpenOptions::new().read(true).write(true).open(catalog).map_err(io("opening", catalog))?;
    match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(CatalogLock::Unreadable(file, reason)),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => {
            Err(in_use(catalog, format!("it is unreadable ({reason}), and another process holds a lock on it")))
        }
        Err(e) => Err(io("locking", catalog)(e.into())),
    }
}

impl super::SqliteCatalog {
    /// Put the catalog file `catalog` back from the copy `from`.
    ///
    /// `from` is copied to a temporary file next to `catalog` (0600) and
    /// that file is checked (integrity, foreign keys, schema version, audit
    /// chain); only then does it take the catalog's place. An existing
    /// catalog is refused unless `replace`, and always while any process
    /// has it open; a replaced catalog is moved aside (`NAME.replaced-UNIX
    /// SECONDS`), never deleted. A refused copy leaves `catalog` as it was.
    ///
    /// A file-level operation, for SQLite only; nothing may have the
    /// catalog open, so the caller audits the restore by opening the
    /// restored catalog afterwards.
    pub fn restore_from(from: &Path, catalog: &Path, replace: bool) -> Result<CatalogRestore> {
        let meta = std::fs::metadata(from).map_err(io("reading the catalog backup", from))?;
        if !meta.is_file() {
            return Err(Error::Input { what: format!("catalog backup {}", from.display()), reason: "is not a regular file".into() });
        }
        if same_file(from, catalog) {
            return Err(Error::Input { what: format!("catalog backup {}", from.display()), reason: "is the catalog itself".into() });
        }
        if with_suffix(from, "-wal").exists() {
            return Err(Error::Input {
                what: format!("catalog backup {}", from.display()),
                reason: format!(
                    "has a write-ahead log beside it ({}): it is a live catalog, not a copy made by `keybridge catalog backup`; copy it with that command",
                    with_suffix(from, "-wal").display()
                ),
            });
        }
        let exists = catalog.exists();
        if exists && !replace {
            return Err(Error::Input {
                what: format!("catalog {}", catalog.display()),
                reason: "exists already; pass --force to replace it (it is then kept as NAME.replaced-TIME, not deleted)".into(),
            });
        }
        std::fs::create_dir_all(parent(catalog)).map_err(io("creating catalog directory", catalog))?;
        // Held while the copy is checked: a process opening the catalog
        // meanwhile waits rather than using the file about to be replaced.
        let lock = if exists { Some(lock_unused(catalog)?) } else { None };

        let tmp = TempFile::beside(catalog)?;
        {
            let mut input = File::open(from).map_err(io("reading the catalog backup", from))?;
            let mut output = OpenOptions::new().write(true).open(&tmp.path).map_err(io("writing", &tmp.path))?;
            std::io::copy(&mut input, &mut output).map_err(io("copying the catalog backup to", &tmp.path))?;
        }
        let refused = |reason: String| Error::Integrity {
            what: format!("catalog backup {} (nothing was restored; {} is unchanged)", from.display(), catalog.display()),
            reason,
        };
        let (version, report) = {
            let conn = Connection::open(&tmp.path).map_err(|e| refused(format!("not a readable SQLite database: {e}")))?;
            // Checked as it will be used: a standalone file, no log beside it.
            conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get::<_, String>(0))
                .map_err(|e| refused(format!("not a readable SQLite database: {e}")))?;
            check_copy(&conn).map_err(refused)?
        };
        let facts = copy_facts(&tmp.path, version, &report)?;

        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let aside = with_suffix(catalog, &format!(".replaced-{secs}"));
        let (replaced, replaced_unreadable) = match lock {
            None => (None, None),
            Some(CatalogLock::Sqlite(lock)) => {
                // The last connection to close checkpoints the log into the
                // file and removes it: the old catalog moves aside whole.
                drop(lock);
                if with_suffix(catalog, "-wal").exists() {
                    return Err(Error::CatalogSchema {
                        path: catalog.to_owned(),
                        reason: "still has a write-ahead log after its last connection closed (another process opened it meanwhile?); nothing was restored".into(),
                    });
                }
                std::fs::rename(catalog, &aside).map_err(io("moving the old catalog aside to", &aside))?;
                (Some(aside), None)
            }
            Some(CatalogLock::Unreadable(file, reason)) => {
                drop(file);
                std::fs::rename(catalog, &aside).map_err(io("moving the old catalog aside to", &aside))?;
                // Its log goes with it: left in place, SQLite would replay
                // it into the restored catalog.
                let wal = with_suffix(catalog, "-wal");
                if wal.exists() {
                    let to = with_suffix(&aside, "-wal");
                    std::fs::rename(&wal, &to).map_err(io("moving the old catalog's log aside to", &to))?;
                }
                (Some(aside), Some(reason))
            }
        };
        let _ = std::fs::remove_file(with_suffix(catalog, "-shm"));
        tmp.persist(catalog)?;
        Ok(CatalogRestore { catalog: catalog.to_owned(), from: CatalogCopy { path: from.to_owned(), ..facts }, replaced, replaced_unreadable })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use super::*;
    use crate::audit::{Action, Actor, AuditEvent};
    use crate::{Catalog, SqliteCatalog};

    fn event(n: usize) -> AuditEvent {
        AuditEvent::new(&Actor::Operator("test".into()), Action::ClientAdd).client(&format!("c{n}"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    async fn catalog_with_rows(path: &Path, rows: usize) -> SqliteCatalog {
        let c = SqliteCatalog::open_or_create(path).unwrap();
        for i in 0..rows {
            c.audit(event(i)).await.unwrap();
        }
        c
    }

    /// Rows appended by another task while the copy runs: the copy is one
    /// committed state (its chain verifies, its row count is between the
    /// count before and after), and restores to exactly that state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backup_while_writing_is_consistent_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(catalog_with_rows(&dir.path().join("live.db"), 50).await);
        let writer = {
            let live = live.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    live.audit(event(1000 + i)).await.unwrap();
                }
            })
        };
        let out = dir.path().join("copy.db");
        let copy = live.backup_to(&out, false).await.unwrap();
        writer.await.unwrap();
        assert!(copy.audit_rows >= 50 && copy.audit_rows <= 450, "{copy:?}");
        assert_eq!(mode(&out), 0o600);
        assert!(!with_suffix(&out, "-wal").exists() && !with_suffix(&out, "-journal").exists(), "the copy is not self-contained");
        // No temporary file left.
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
        // An existing destination is refused without `replace`.
        let again = live.backup_to(&out, false).await.unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        // The copy is not the catalog.
        let itself = live.backup_to(&dir.path().join("live.db"), true).await.unwrap_err();
        assert!(itself.to_string().contains("is the catalog itself"), "{itself}");

        let restored_path = dir.path().join("restored").join("keybridge.db");
        let r = SqliteCatalog::restore_from(&out, &restored_path, false).unwrap();
        assert_eq!(r.from.audit_rows, copy.audit_rows);
        assert_eq!(r.from.audit_head, copy.audit_head);
        assert_eq!(mode(&restored_path), 0o600);
        let restored = SqliteCatalog::open(&restored_path).unwrap();
        let report = restored.verify_audit().await.unwrap();
        assert!(report.ok());
        assert_eq!(report.rows, copy.audit_rows);
        assert_eq!(report.head_hash, copy.audit_head);
    }

    /// Garbage, a truncated copy, a copy with an edited audit row: each
    /// refused naming the reason, and the catalog in place is unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_copies_are_refused_and_the_catalog_stays() {
        let dir = tempfile::tempdir().unwrap();
        let live = catalog_with_rows(&dir.path().join("live.db"), 200).await;
        let good = dir.path().join("good.db");
        live.backup_to(&good, false).await.unwrap();
        drop(live);
        let target = dir.path().join("keybridge.db");
        drop(catalog_with_rows(&target, 3).await);
        let before = std::fs::read(&target).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let truncated = dir.path().join("truncated.db");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let edited = dir.path().join("edited.db");
        std::fs::copy(&good, &edited).unwrap();
        Connection::open(&edited).unwrap().execute("UPDATE audit SET client = 'mallory' WHERE seq = 7", []).unwrap();
        let empty = dir.path().join("empty.db");
        Connection::open(&empty).unwrap().execute_batch("CREATE TABLE t(x)").unwrap();

        for (file, needle) in [
            (&garbage, "not a readable SQLite database"),
            (&truncated, "database disk image is malformed"),
            (&edited, "the audit chain is broken: row 7"),
            (&empty, "not a keybridge catalog"),
        ] {
            let err = SqliteCatalog::restore_from(file, &target, true).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.kind(), keybridge_proto::error::ErrorKind::Integrity, "{msg}");
            assert!(msg.contains(needle) && msg.contains("is unchanged"), "{}: {msg}", file.display());
            assert_eq!(std::fs::read(&target).unwrap(), before, "{} changed the catalog", file.display());
        }
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-") || n.contains("replaced")), "{names:?}");
        // The good copy restores over it.
        let r = SqliteCatalog::restore_from(&good, &target, true).unwrap();
        assert_eq!(r.from.audit_rows, 200);
        assert_eq!(std::fs::read(r.replaced.unwrap()).unwrap(), before, "the replaced catalog was not kept whole");
    }

    /// A catalog too damaged to open (often why it is restored) is
    /// replaced like any other, and its stale log moves aside with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_catalog_is_replaced_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.db");
        catalog_with_rows(&dir.path().join("live.db"), 4).await.backup_to(&good, false).await.unwrap();
        let target = dir.path().join("keybridge.db");
        std::fs::write(&target, vec![0xa5; 16384]).unwrap();
        std::fs::write(with_suffix(&target, "-wal"), b"a stale log").unwrap();
        let r = SqliteCatalog::restore_from(&good, &target, true).unwrap();
        let aside = r.replaced.unwrap();
        assert!(r.replaced_unreadable.unwrap().contains("not a database"));
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0xa5; 16384]);
        assert_eq!(std::fs::read(with_suffix(&aside, "-wal")).unwrap(), b"a stale log");
        assert!(!with_suffix(&target, "-wal").exists());
        assert_eq!(SqliteCatalog::open(&target).unwrap().verify_audit().await.unwrap().rows, 4);
    }

    /// An existing catalog needs `replace`; one that is open is refused
    /// even with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn existing_and_open_catalogs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.db");
        catalog_with_rows(&dir.path().join("live.db"), 5).await.backup_to(&good, false).await.unwrap();
        let target = dir.path().join("keybridge.db");
        let open = catalog_with_rows(&target, 3).await;
        let err = SqliteCatalog::restore_from(&good, &target, false).unwrap_err();
        assert!(err.to_string().contains("exists already; pass --force"), "{err}");
        let err = SqliteCatalog::restore_from(&good, &target, true).unwrap_err();
        assert!(err.to_string().contains("is in use"), "{err}");
        assert_eq!(open.verify_audit().await.unwrap().rows, 3);
        drop(open);
        SqliteCatalog::restore_from(&good, &target, true).unwrap();
        assert_eq!(SqliteCatalog::open(&target).unwrap().verify_audit().await.unwrap().rows, 5);
    }
}
