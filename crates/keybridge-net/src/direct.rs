//! Bulk file I/O past the page cache (`O_DIRECT`) where the filesystem
//! takes it: the MediaAgent's stream files, written and read back, and the
//! large files a restore writes.
//!
//! Why: the MediaAgent fsyncs every stream, so the page cache only adds a
//! copy, and on VMs whose host takes freed guest memory back (free page
//! reporting, as on the 2-core machines keybridge is measured on) every
//! fresh page-cache page costs a host fault: writing 1 GiB through the
//! page cache took 2.9-3.3 s of system time there against 0.6-0.9 s with
//! `O_DIRECT` (docs/design.md, "Direct I/O").
//!
//! Both types fall back to ordinary I/O, silently and for the rest of the
//! file, when the filesystem refuses `O_DIRECT` (tmpfs, some network and
//! FUSE filesystems) or a direct transfer (alignment it wants is larger
//! than [`ALIGN`]). Nothing is lost or written twice by a fallback: a
//! refused transfer moved no bytes.

use std::fs::File;
use std::io::{self, Read, Write};

use aligned_vec::{avec, ABox, ConstAlign};
use rustix::fs::OFlags;

/// Alignment of buffer addresses, transfer lengths and file offsets for
/// `O_DIRECT`: a multiple of every logical block size in use (512, 4096).
pub const ALIGN: usize = 4096;

/// Bytes per direct transfer for bulk data (the MediaAgent's large write
/// batches and stream reads, the restore's large files): 1 GiB moved in
/// 0.6-0.9 s in 1 MiB `O_DIRECT` writes here, 1.4 s in 256 KiB ones.
pub const DIRECT_PIECE: usize = 1 << 20;

/// A zeroed buffer whose address is [`ALIGN`]-aligned.
pub type AlignedBuf = ABox<[u8], ConstAlign<ALIGN>>;

/// A zeroed aligned buffer of at least `len` bytes (rounded up to
/// [`ALIGN`]).
pub fn aligned_buf(len: usize) -> AlignedBuf {
    avec![[ALIGN] | 0u8; len.max(1).div_ceil(ALIGN) * ALIGN].into_boxed_slice()
}

/// Turn `O_DIRECT` on or off on an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on { flags | OFlags::DIRECT } else { flags - OFlags::DIRECT };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

/// Go on through the page cache (a no-op if already there).
fn stop_direct(file: &File, direct: &mut bool) -> io::Result<()> {
    if *direct {
        set_direct(file, false)?;
        *direct = false;
    }
    Ok(())
}

/// Whether `e` is the kernel refusing a direct transfer's alignment.
fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Writes a new file from its start, in whole aligned blocks with
/// `O_DIRECT` and its last partial block without. Data is gathered in an
/// aligned buffer and written when the buffer is full and in
/// [`finish`](DirectWriter::finish); a writer dropped without `finish`
/// loses what it gathered (callers then delete the file).
pub struct DirectWriter {
    file: File,
    buf: AlignedBuf,
    len: usize,
    direct: bool,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter").field("buffered", &self.len).field("direct", &self.direct).finish_non_exhaustive()
    }
}

impl DirectWriter {
    /// Write `file` (empty, at offset 0) through `buf`, with `O_DIRECT` if
    /// `direct` asks for it and the filesystem takes it.
    pub fn new(file: File, buf: AlignedBuf, direct: bool) -> DirectWriter {
        let direct = direct && set_direct(&file, true).is_ok();
        DirectWriter { file, buf, len: 0, direct }
    }

    /// Whether writes still bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Copy `data` in; every time the buffer fills it is written.
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (self.buf.len() - self.len).min(data.len());
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            self.flush_if_full()?;
        }
        Ok(())
    }

    /// Write `data[..len]`: when nothing is gathered, its whole blocks
    /// straight from `data` (no copy; every full buffer a caller fills) and
    /// only a partial last block gathered; otherwise as
    /// [`write_all`](DirectWriter::write_all).
    pub fn write_aligned(&mut self, data: &AlignedBuf, len: usize) -> io::Result<()> {
        if self.len == 0 {
            let whole = len / ALIGN * ALIGN;
            put(&self.file, &mut self.direct, &data[..whole])?;
            self.write_all(&data[whole..len])
        } else {
            self.write_all(&data[..len])
        }
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.len == self.buf.len() {
            put(&self.file, &mut self.direct, &self.buf[..self.len])?;
            self.len = 0;
        }
        Ok(())
    }

    /// Write what is gathered (whole blocks directly, the partial last
    /// block through the page cache) and give back the file and buffer.
    /// The data is not fsynced: callers that need it durable sync the file.
    pub fn finish(mut self) -> io::Result<(File, AlignedBuf)> {
        let whole = self.len / ALIGN * ALIGN;
        put(&self.file, &mut self.direct, &self.buf[..whole])?;
        if self.len > whole {
            stop_direct(&self.file, &mut self.direct)?;
            put(&self.file, &mut self.direct, &self.buf[whole..self.len])?;
        }
        Ok((self.file, self.buf))
    }
}

/// Write all of `data` at the file's offset. A direct write the kernel
/// refuses is retried, and the rest of the file written, through the page
/// cache (`*direct` becomes false).
fn put(mut file: &File, direct: &mut bool, data: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        match file.write(&data[at..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes")),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if *direct && refused(&e) => stop_direct(file, direct)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a file from its start in aligned pieces, with `O_DIRECT` where
/// the filesystem takes it.
#[derive(Debug)]
pub struct DirectReader {
    file: File,
    direct: bool,
}

impl DirectReader {
    /// Read `file` (at offset 0), with `O_DIRECT` if `direct` asks for it
    /// and the filesystem takes it.
    pub fn new(file: File, direct: bool) -> DirectReader {
        let direct = direct && set_direct(&file, true).is_ok();
        DirectReader { file, direct }
    }

    /// Whether reads still bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Fill `buf` from the file; fewer bytes than `buf.len()` only at the
    /// end of the file. `buf.len()` should be a multiple of [`ALIGN`].
    pub fn read_into(&mut self, buf: &mut AlignedBuf) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && refused(&e) => stop_direct(&self.file, &mut self.direct)?,
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 4096) as u8).collect()
    }

    /// A directory beside the test binary (target/, on the build's disk,
    /// whose filesystem takes O_DIRECT where keybridge is built), and one
    /// on tmpfs if there is one.
    fn dirs() -> Vec<(tempfile::TempDir, &'static str)> {
        let exe = std::env::current_exe().unwrap();
        let mut v = vec![(tempfile::tempdir_in(exe.parent().unwrap()).unwrap(), "target")];
        if std::path::Path::new("/dev/shm").is_dir() {
            v.push((tempfile::tempdir_in("/dev/shm").unwrap(), "/dev/shm"));
        }
        v
    }

    #[test]
    fn every_length_round_trips_whatever_the_pieces() {
        for (dir, place) in dirs() {
            for len in [0, 1, 511, 4095, 4096, 4097, 3 * 4096, 65536 - 1, 65536, 65536 + 4096 + 7, 300_000] {
                for piece in [1000, 4096, 70_000] {
                    let want = data(len);
                    let path = dir.path().join(format!("f{len}-{piece}"));
                    let mut w = DirectWriter::new(File::create(&path).unwrap(), aligned_buf(65536), true);
                    for p in want.chunks(piece) {
                        w.write_all(p).unwrap();
                    }
                    let (file, buf) = w.finish().unwrap();
                    drop(file);
                    assert_eq!(buf.len(), 65536);
                    assert!(std::fs::read(&path).unwrap() == want, "{place}: {len} bytes in pieces of {piece}");

                    let mut r = DirectReader::new(File::open(&path).unwrap(), true);
                    let mut back = Vec::new();
                    let mut rbuf = aligned_buf(8192);
                    loop {
                        let n = r.read_into(&mut rbuf).unwrap();
                        back.extend_from_slice(&rbuf[..n]);
                        if n < rbuf.len() {
                            break;
                        }
                    }
                    assert!(back == want, "{place}: read back {len} bytes");
                }
            }
        }
    }

    #[test]
    fn whole_aligned_pieces_are_written_directly() {
        let (dir, _) = dirs().remove(0);
        let want = data(1_000_000);
        let path = dir.path().join("f");
        let mut w = DirectWriter::new(File::create(&path).unwrap(), aligned_buf(ALIGN), true);
        // On the build disk (ext4, xfs, btrfs) O_DIRECT is taken; this
        // fails on a filesystem that refuses it, which says so.
        assert!(w.is_direct(), "{} does not take O_DIRECT", dir.path().display());
        let mut piece = aligned_buf(256 * 1024);
        for p in want.chunks(piece.len()) {
            piece[..p.len()].copy_from_slice(p);
            w.write_aligned(&piece, p.len()).unwrap();
        }
        assert!(w.is_direct(), "whole aligned blocks were written directly");
        w.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == want);
        // Direct writes leave nothing of the file in the page cache to
        // flush: its data is on the device before any fsync.
        let r = DirectReader::new(File::open(&path).unwrap(), true);
        assert!(r.is_direct());
    }

    #[test]
    fn aligned_buffers_are_written_as_they_are_and_the_rest_is_gathered() {
        for (dir, place) in dirs() {
            for (piece, len) in [(8192, 8192 * 5), (8192, 8192 * 5 + 100), (8192, 100), (12288, 8192 * 3 + 4096), (12288, 12288 + 5000)] {
                let want = data(len);
                let path = dir.path().join(format!("f{piece}-{len}"));
                let mut w = DirectWriter::new(File::create(&path).unwrap(), aligned_buf(ALIGN), true);
                let mut batch = aligned_buf(piece);
                for p in want.chunks(piece) {
                    batch[..p.len()].copy_from_slice(p);
                    w.write_aligned(&batch, p.len()).unwrap();
                }
                w.finish().unwrap();
                assert!(std::fs::read(&path).unwrap() == want, "{place}: {len} bytes in aligned pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_refused_direct_write_goes_on_through_the_page_cache_without_loss() {
        let (dir, _) = dirs().remove(0);
        let want = data(50_000);
        let path = dir.path().join("f");
        // A 100-byte direct write is not a whole logical block: the kernel
        // refuses it (EINVAL) and the writer must go on without O_DIRECT.
        let mut w = DirectWriter::new(File::create(&path).unwrap(), aligned_buf(16384), true);
        assert!(w.is_direct());
        let mut head = aligned_buf(4096);
        head[..100].copy_from_slice(&want[..100]);
        put(&w.file, &mut w.direct, &head[..100]).unwrap();
        w.write_all(&want[100..]).unwrap();
        assert!(!w.is_direct(), "the unaligned write was refused and the writer fell back");
        w.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == want);
    }
}
