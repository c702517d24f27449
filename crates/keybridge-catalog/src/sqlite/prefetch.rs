//! Reading the catalog file ahead of a walk of the whole audit table.
//!
//! The audit table's pages are spread through the file, every fourth or
//! fifth page, between the DEK table's (each group commit appends to both).
//! SQLite reads them one 4 KiB page at a time, and with those gaps the
//! kernel sees random reads and reads nothing ahead: a cold walk of a
//! 10^7-row catalog (7.6 GB, 1.7 GB of audit pages) made 418,000 device
//! reads of 4 KiB, 31 s here and 277 s once on a slower day of the same
//! disk. A thread reading the file in order at the same time turns them
//! into about 2,000 large reads (the kernel's readahead); the walk then
//! finds its pages in the page cache: 10.5 s (docs/design.md, growth rows).
//!
//! It runs only when the file fits in half the memory available to this
//! process (the kernel's `MemAvailable`, or what the process's cgroup
//! still allows if that is less): a larger file would push its own first
//! pages out before the walk reached them, and cost the reads twice.
//!
//! The descriptor it reads through is never closed. Closing any
//! descriptor of a file drops every POSIX lock the process holds on it,
//! and SQLite's connections keep theirs on the catalog file for as long as
//! they are open: another process would then take this one for gone (and,
//! closing last, checkpoint and delete the WAL under a running walk, or
//! `catalog restore --force` would replace the file). So one descriptor per
//! catalog file (device and inode) is opened once per process and kept.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Bytes per read: the kernel's readahead makes the device requests large
/// whatever this is; small keeps the copy in the core's cache.
const READ: usize = 256 << 10;

/// A thread reading a file from start to end until dropped.
pub(super) struct Prefetch {
    stop: Arc<AtomicBool>,
    /// Bytes read so far (the tests watch it).
    #[cfg_attr(not(test), allow(dead_code))]
    read: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Start reading `path`, or `None` when it is larger than half the
    /// memory available (or that cannot be told, or the file cannot be
    /// opened: the walk then reads as it always did).
    pub(super) fn start(path: &Path) -> Option<Prefetch> {
        Self::start_within(path, available_memory()?)
    }

    fn start_within(path: &Path, available: u64) -> Option<Prefetch> {
        let file = kept_open(path)?;
        let len = file.metadata().ok()?.len();
        if len > available / 2 {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let (stopped, done) = (stop.clone(), read.clone());
        let thread = std::thread::Builder::new()
            .name("keybridge-audit-prefetch".into())
            .spawn(move || {
                let mut buf = vec![0u8; READ];
                let mut at = 0;
                while at < len && !stopped.load(Ordering::Relaxed) {
                    match file.read_at(&mut buf, at) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => at += n as u64,
                    }
                    done.store(at, Ordering::Relaxed);
                }
            })
            .ok()?;
        Some(Prefetch { stop, read, thread: Some(thread) })
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This process's descriptor of the file at `path`, opened on first use
/// and never closed (see the module notes): a descriptor opened here is
/// kept, or forgotten on the paths that cannot keep it, never dropped.
fn kept_open(path: &Path) -> Option<Arc<File>> {
    /// By device and inode.
    type Kept = HashMap<(u64, u64), Arc<File>>;
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    let mut kept = KEPT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let named = std::fs::metadata(path).ok()?;
    if let Some(file) = kept.get(&(named.dev(), named.ino())) {
        return Some(file.clone());
    }
    let file = File::open(path).ok()?;
    let Ok(opened) = file.metadata() else {
        std::mem::forget(file);
        return None;
    };
    // The name may have been given another file since its stat.
    match kept.entry((opened.dev(), opened.ino())) {
        std::collections::hash_map::Entry::Occupied(e) => {
            std::mem::forget(file);
            Some(e.get().clone())
        }
        std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(Arc::new(file)).clone()),
    }
}

/// Bytes of memory this process may still fill: `MemAvailable`, or less
/// if a cgroup (v2) it is in has a `memory.max` closer to its
/// `memory.current`.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let system = kib.checked_mul(1024)?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok();
    let room = cgroups.as_deref().and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::"))).and_then(|rel| cgroup_room(Path::new("/sys/fs/cgroup"), rel));
    Some(room.map_or(system, |room| room.min(system)))
}

/// The least `memory.max - memory.current` of the cgroup `rel` under `root`
/// and of its ancestors, among those with a limit (`None`: no limit). The
/// current use counts page cache the kernel could reclaim, so this errs
/// towards not reading ahead.
fn cgroup_room(root: &Path, rel: &str) -> Option<u64> {
    let mut dir = root.join(rel.trim_start_matches('/'));
    let mut room: Option<u64> = None;
    while dir.starts_with(root) {
        let number = |name: &str| std::fs::read_to_string(dir.join(name)).ok()?.trim().parse::<u64>().ok();
        // "max" (no limit) does not parse.
        if let (Some(max), Some(current)) = (number("memory.max"), number("memory.current")) {
            let here = max.saturating_sub(current);
            room = Some(room.map_or(here, |r| r.min(here)));
        }
        if !dir.pop() {
            break;
        }
    }
    room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_that_fits_and_leaves_one_that_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        let len = 3 * READ as u64 + 5;
        std::fs::write(&small, vec![7u8; len as usize]).unwrap();
        let p = Prefetch::start_within(&small, 2 * len).expect("a file of half the memory is read ahead");
        while p.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            std::thread::yield_now();
        }
        assert_eq!(p.read.load(Ordering::Relaxed), len, "the whole file is read");
        assert!(Prefetch::start_within(&small, 2 * len - 1).is_none(), "a file over half the memory is not read ahead");
        assert!(available_memory().is_some());
    }

    #[test]
    fn the_tightest_cgroup_limit_on_the_way_up_counts() {
        let root = tempfile::tempdir().unwrap();
        let put = |dir: &str, max: &str, current: &str| {
            let d = root.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("memory.max"), format!("{max}\n")).unwrap();
            std::fs::write(d.join("memory.current"), format!("{current}\n")).unwrap();
        };
        put("a", "1000", "400");
        put("a/b", "max", "100");
        put("a/b/c", "2000", "1900");
        put("free", "max", "5");
        assert_eq!(cgroup_room(root.path(), "/a/b"), Some(600));
        assert_eq!(cgroup_room(root.path(), "/a/b/c"), Some(100));
        assert_eq!(cgroup_room(root.path(), "/free"), None);
    }

    const CHILD_FILE: &str = "KEYBRIDGE_TEST_PREFETCH_LOCK_FILE";

    /// Run by the test below in a child process: can another process take
    /// a write lock on the file? (POSIX locks of one process never
    /// conflict with each other, so the check needs a second process.)
    #[test]
    #[ignore = "run by a_verify_leaves_the_catalog_locked_as_in_use in a child process"]
    fn child_takes_a_write_lock() {
        let Some(path) = std::env::var_os(CHILD_FILE) else { return };
        // A write lock needs a descriptor open for writing.
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let taken = match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => true,
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => false,
            Err(e) => panic!("locking: {e}"),
        };
        println!("write lock taken: {taken}");
    }

    /// The catalog's connections keep POSIX locks on its file; the
    /// prefetch must not close a descriptor of it (which would drop them
    /// all, and another process would take the catalog for unused).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_verify_leaves_the_catalog_locked_as_in_use() {
        use crate::Catalog;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.db");
        let catalog = super::super::SqliteCatalog::open_or_create(&path).unwrap();
        let locked_elsewhere = || {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "sqlite::prefetch::tests::child_takes_a_write_lock", "--ignored", "--nocapture", "--test-threads=1"])
                .env(CHILD_FILE, &path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success() && stdout.contains("write lock taken"), "{}\n{stdout}", out.status);
            !stdout.contains("write lock taken: true")
        };
        // Without these the checks below would mean nothing.
        assert!(locked_elsewhere(), "an open catalog is not seen as in use by another process");
        assert!(Prefetch::start(&path).is_some(), "the catalog is read ahead here");
        for _ in 0..2 {
            // The second run finds the descriptor already kept.
            assert!(catalog.verify_audit().await.unwrap().ok());
            assert!(locked_elsewhere(), "a verify dropped this process's locks on the catalog file");
        }
    }

    #[test]
    fn dropping_it_stops_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge");
        // Sparse: a terabyte of holes reads as zeros without a disk.
        let len = 1u64 << 40;
        std::fs::File::create(&huge).unwrap().set_len(len).unwrap();
        let p = Prefetch::start_within(&huge, u64::MAX).expect("started");
        let read = p.read.clone();
        drop(p);
        assert!(read.load(Ordering::Relaxed) < len, "stopped before the end");
    }
}
