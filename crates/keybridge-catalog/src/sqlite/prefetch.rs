//! Reading the catalog file ahead of a walk of the whole audit table.
//!
//! The audit table's pages are spread through the file, every fourth or
//! fifth page, between the DEK table's (each group commit appends to both).
//! SQLite reads them one 4 KiB page at a time, and with those gaps the
//! kernel sees random reads and reads nothing ahead: a cold walk of a
//! 10^7-row catalog (7.6 GB, 1.7 GB of audit pages) made 418,000 device
//! reads of 4 KiB, 31 s here and 277 s once on a slower day of the same
//! disk. A thread reading the file in order at the same time turns them
//! into about 1,900 large reads (the kernel's readahead); the walk then
//! finds its pages in the page cache: 11 s (docs/design.md, growth rows).
//!
//! It runs only when the file fits in half the memory the kernel reports
//! available: a larger file would push its own first pages out before the
//! walk reached them, and cost the reads twice.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes per read: the kernel's readahead makes the device requests large
/// whatever this is; small keeps the copy in the core's cache.
const READ: usize = 256 << 10;

/// A thread reading a file from start to end until dropped.
pub(super) struct Prefetch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Start reading `path`, or `None` when it is larger than half the
    /// available memory (or the memory cannot be told, or it cannot be
    /// opened: the walk then reads as it always did).
    pub(super) fn start(path: &Path) -> Option<Prefetch> {
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        if len > available_memory()? / 2 {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keybridge-audit-prefetch".into())
            .spawn(move || {
                let mut file = file;
                let mut buf = vec![0u8; READ];
                while !stopped.load(Ordering::Relaxed) {
                    match file.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .ok()?;
        Some(Prefetch { stop, thread: Some(thread) })
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

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_that_fits_and_leaves_one_that_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, vec![7u8; 3 * READ + 5]).unwrap();
        let p = Prefetch::start(&small).expect("a small file is read ahead");
        drop(p);
        // Sparse, so nothing is written: just over half the memory.
        let available = available_memory().expect("MemAvailable in /proc/meminfo");
        let huge = dir.path().join("huge");
        std::fs::File::create(&huge).unwrap().set_len(available / 2 + (64 << 20)).unwrap();
        assert!(Prefetch::start(&huge).is_none(), "a file larger than half the available memory is not read ahead");
    }
}
