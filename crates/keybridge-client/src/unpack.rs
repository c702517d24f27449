//! The restore's unpacker: writes the entries of a tar archive below one
//! directory and nowhere else, whatever the archive says.
//!
//! The archive is hostile input even after its stream authenticated: the
//! backed-up host itself (compromised before its backup is restored on a
//! clean machine), or anyone holding the job's DEK, can write any entry.
//! So:
//! - every name is built only from plain components; an absolute name, a
//!   `..`, or a name that is only `.` refuses the whole restore;
//! - every file system call is made relative to a directory descriptor with
//!   one plain name, and each directory on the way is opened with
//!   `O_NOFOLLOW`: a symlink planted by an earlier entry is never followed
//!   (an entry that goes through one refuses the restore), and modes and
//!   times are set through descriptors (`fchmod`, `futimens`), never
//!   through a path string a symlink could redirect;
//! - nothing is replaced: files are created with `O_EXCL`, so a second
//!   entry of the same name refuses the restore;
//! - hard links may only name an earlier regular file of the archive;
//! - device nodes and FIFOs are skipped with a warning (keybridge backs up
//!   their headers only, and a device node restored by root is a way into
//!   the machine); sparse entries, which keybridge never writes, refuse the
//!   restore (a few bytes of archive could claim terabytes of holes);
//! - names are quoted and escaped in messages, so an archive cannot write
//!   terminal control sequences;
//! - ownership is not restored (the restore runs as whoever runs it), so the
//!   setuid and setgid bits are stripped, as GNU tar does for a user who
//!   does not restore owners: a user's own `chmod 4755` must not become a
//!   setuid file of the restoring user (root). The sticky bit is kept: it
//!   only restricts who may delete in a directory.
//!
//! Directory modes and times are applied by [`Unpacker::finish`], deepest
//! first, so read-only directories can still be filled and their times are
//! not disturbed by what is written into them; those of top-level
//! directories are left to the caller ([`Unpacked::top_dirs`], see
//! [`apply_dir`]), since a directory without write permission cannot be
//! moved to another parent by a user other than root.
//!
//! A file larger than one [`DIRECT_PIECE`] written with `O_DIRECT` is
//! written by a thread of its own, so that reading the archive and writing
//! the disk overlap: while one piece is written (a direct write returns
//! only when the device has it), the next is read from the archive, with at
//! most [`WRITE_AHEAD`] pieces in flight. The file's mode and times are set
//! once that thread has written the last byte. A file that cannot be
//! written, or whose data cannot be read, is removed, and the error names
//! it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::mpsc;

use keybridge_net::direct::{aligned_buf, AlignedBuf, DirectWriter, ALIGN, DIRECT_PIECE};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Mode bits a restore applies: permissions and the sticky bit, never
/// setuid or setgid (see the module documentation).
pub const KEPT_MODE_BITS: u32 = 0o1777;

/// What an unpack produced.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// The top-level names written, sorted.
    pub names: Vec<OsString>,
    /// Entries not restored, each with the reason (also logged as warnings).
    pub skipped: Vec<String>,
    /// Mode and mtime of each top-level directory, still to be applied.
    pub top_dirs: Vec<(OsString, u32, i64)>,
}

impl Unpacked {
    /// The top-level names for people (not UTF-8 shown lossily).
    pub fn display_names(&self) -> Vec<String> {
        self.names.iter().map(|n| n.to_string_lossy().into_owned()).collect()
    }
}

/// Unpacks archives below one directory (see the module documentation).
#[derive(Debug)]
pub struct Unpacker {
    root: OwnedFd,
    /// The parent directory of the last entry, kept open: archives list the
    /// entries of one directory together.
    cwd: Option<(Vec<OsString>, OwnedFd)>,
    /// Directories to finish: components, mode, mtime.
    dirs: Vec<(Vec<OsString>, u32, i64)>,
    skipped: Vec<String>,
    /// File data is read into these pieces and written from them: each
    /// [`DIRECT_PIECE`] long with direct I/O, [`keybridge_net::FILE_IO_BUF`]
    /// without; made when first needed, at most [`WRITE_AHEAD`], reused.
    pieces: Vec<AlignedBuf>,
    /// Gathers the last partial block of a file.
    tail: Option<AlignedBuf>,
    /// Files of [`DIRECT_MIN`] and more bypass the page cache.
    direct_io: bool,
}

/// Files this large and larger are written with `O_DIRECT` (where the
/// filesystem allows); smaller ones, a write or two each, through the
/// page cache.
pub const DIRECT_MIN: u64 = 1 << 20;

/// Pieces of a file in flight while a thread writes it (see the module
/// documentation): one being read from the archive, the others queued or
/// being written.
pub const WRITE_AHEAD: usize = 3;

/// A file that could not be written, by its name in the archive; the
/// system's error (with its errno) stays reachable as the source.
#[derive(Debug)]
struct WriteFailed {
    name: std::path::PathBuf,
    source: io::Error,
}

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing {:?}: {}", self.name, self.source)
    }
}

impl std::error::Error for WriteFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Why a file's data stopped before its end.
enum Stop {
    /// Reading the archive failed.
    Read(io::Error),
    /// Writing the file failed.
    Write(io::Error),
}

/// Read from `reader` until `buf` is full or the reader's end; returns the
/// bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// An error of the tar parser (kind `Other`): a damaged archive. Its
/// message may quote the archive's own bytes (a name, a numeric field), so
/// they are escaped and cut short before they reach a terminal or a log.
/// Errors of other kinds (the stream's reader, the file system) pass as
/// they are.
fn damaged(e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::Other {
        return e;
    }
    let text = e.to_string();
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(DAMAGE_QUOTED).flat_map(char::escape_debug).collect();
    if chars.next().is_some() {
        quoted.push_str("...");
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("the archive is damaged: {quoted}; nothing restored"))
}

/// Characters of a tar parser's message quoted in an error (before
/// escaping, so no escape is cut in half).
const DAMAGE_QUOTED: usize = 240;

/// Why an entry refuses the restore.
fn refused(name: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("archive entry {name:?} {why}: refused, nothing restored"))
}

/// The plain components of an archive name (`.` components dropped).
fn plain_parts(name: &Path) -> io::Result<Vec<&OsStr>> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(refused(name, "has an absolute name")),
            Component::ParentDir => return Err(refused(name, "climbs out of the target with '..'")),
        }
    }
    if parts.is_empty() {
        return Err(refused(name, "names the restore target itself"));
    }
    Ok(parts)
}

fn open_dir(at: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(at, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// Open `dirs` below `root` one component at a time, never following a
/// symlink; `create` makes missing ones (0700). `name` is the entry this is
/// for, named in a refusal.
fn walk(root: &OwnedFd, dirs: &[&OsStr], name: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut fd = open_dir(root, ".")?;
    for (i, d) in dirs.iter().enumerate() {
        let next = match open_dir(&fd, *d) {
            Err(Errno::NOENT) if create => {
                rustix::fs::mkdirat(&fd, *d, Mode::from_raw_mode(0o700))?;
                open_dir(&fd, *d)
            }
            other => other,
        };
        fd = match next {
            Ok(next) => next,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let through: std::path::PathBuf = dirs[..=i].iter().collect();
                return Err(refused(name, format!("goes through {through:?}, which is a symlink or not a directory")));
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(fd)
}

/// Set a directory's mode and mtime through its descriptor (`dir` holds
/// `name`, which is opened without following a symlink).
pub fn apply_dir(dir: impl AsFd, name: &OsStr, bits: u32, mtime: i64) -> io::Result<()> {
    let fd = open_dir(dir, name)?;
    rustix::fs::fchmod(&fd, mode(bits))?;
    rustix::fs::futimens(&fd, &times(mtime))?;
    Ok(())
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits & KEPT_MODE_BITS)
}

impl Unpacker {
    /// An unpacker writing below `root`, which must be a directory (a
    /// symlink is refused).
    pub fn new(root: &Path) -> io::Result<Self> {
        Ok(Self::at(open_dir(rustix::fs::CWD, root)?))
    }

    /// An unpacker writing below the directory `root` is open on.
    pub fn at(root: OwnedFd) -> Self {
        Unpacker { root, cwd: None, dirs: Vec::new(), skipped: Vec::new(), pieces: Vec::new(), tail: None, direct_io: false }
    }

    /// Write files of [`DIRECT_MIN`] and more past the page cache where the
    /// filesystem allows, those larger than a [`DIRECT_PIECE`] on a thread
    /// of their own (see the module documentation).
    pub fn with_direct_io(mut self, direct_io: bool) -> Self {
        self.direct_io = direct_io;
        self.pieces.clear();
        self
    }

    fn piece_len(&self) -> usize {
        if self.direct_io {
            DIRECT_PIECE
        } else {
            keybridge_net::FILE_IO_BUF
        }
    }

    /// Write the data of `entry` to `file`, the whole of it read and
    /// written here.
    fn write_here(&mut self, entry: &mut impl Read, file: File, direct: bool) -> Result<File, Stop> {
        let mut piece = self.pieces.pop().unwrap_or_else(|| aligned_buf(self.piece_len()));
        let mut writer = DirectWriter::new(file, self.tail.take().unwrap_or_else(|| aligned_buf(ALIGN)), direct);
        let copied = loop {
            let len = match fill(entry, &mut piece) {
                Ok(len) => len,
                Err(e) => break Err(Stop::Read(e)),
            };
            if let Err(e) = writer.write_aligned(&piece, len) {
                break Err(Stop::Write(e));
            }
            if len < piece.len() {
                break Ok(());
            }
        };
        self.pieces.push(piece);
        copied?;
        let (file, tail) = writer.finish().map_err(Stop::Write)?;
        self.tail = Some(tail);
        Ok(file)
    }

    /// Write the data of `entry` to `file` on a thread of its own while the
    /// next pieces are read here (see the module documentation); returns
    /// once the last byte is written.
    fn write_beside(&mut self, entry: &mut impl Read, file: File, direct: bool) -> Result<File, Stop> {
        let mut free: Vec<AlignedBuf> = (0..WRITE_AHEAD).map(|_| self.pieces.pop().unwrap_or_else(|| aligned_buf(DIRECT_PIECE))).collect();
        let (full_tx, full_rx) = mpsc::sync_channel::<(AlignedBuf, usize)>(WRITE_AHEAD);
        let (spent_tx, spent_rx) = mpsc::sync_channel::<AlignedBuf>(WRITE_AHEAD);
        let tail = self.tail.take().unwrap_or_else(|| aligned_buf(ALIGN));
        let (read, written) = std::thread::scope(|s| {
            let writing = std::thread::Builder::new().spawn_scoped(s, move || {
                // Every piece but the last is whole and written as it is;
                // the last one's partial block is gathered in `tail`.
                let mut writer = DirectWriter::new(file, tail, direct);
                for (piece, len) in full_rx {
                    writer.write_aligned(&piece, len)?;
                    let _ = spent_tx.send(piece);
                }
                writer.finish()
            });
            // No thread to be had (a process or thread limit): the file
            // is an error naming it, as a failed write is.
            let writing = match writing {
                Ok(handle) => handle,
                Err(e) => return (Ok(()), Err(e)),
            };
            let read = loop {
                // None: the writer stopped, and its error is the one.
                let Some(mut piece) = free.pop().or_else(|| spent_rx.recv().ok()) else { break Ok(()) };
                let len = match fill(entry, &mut piece) {
                    Ok(len) => len,
                    Err(e) => {
                        free.push(piece);
                        break Err(e);
                    }
                };
                if len == 0 {
                    free.push(piece);
                    break Ok(());
                }
                if let Err(mpsc::SendError((piece, _))) = full_tx.send((piece, len)) {
                    free.push(piece);
                    break Ok(());
                }
                if len < DIRECT_PIECE {
                    break Ok(());
                }
            };
            // The writer writes what it was given and stops.
            drop(full_tx);
            (read, writing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        self.pieces.extend(free.into_iter().chain(spent_rx.try_iter()));
        read.map_err(Stop::Read)?;
        let (file, tail) = written.map_err(Stop::Write)?;
        self.tail = Some(tail);
        Ok(file)
    }

    /// Unpack every entry of the archive `reader` holds; stops at tar's end
    /// marker. The first refused entry is the error.
    pub fn unpack<R: Read>(&mut self, reader: R) -> io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(damaged)? {
            self.entry(&mut entry.map_err(damaged)?)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let name = entry.path().map_err(damaged)?.into_owned();
        let parts = plain_parts(&name)?;
        let (dirs, last) = parts.split_at(parts.len() - 1);
        let last = last[0];
        let header = entry.header();
        let kind = header.entry_type();
        let bits = header.mode().map_err(damaged)?;
        // Backup stores a time before 1970 as its two's complement (tar's
        // builder takes a u64); this undoes it.
        let mtime = header.mtime().map_err(damaged)? as i64;
        if kind.is_gnu_sparse() {
            return Err(refused(&name, "is a sparse file, which keybridge's backup never writes"));
        }
        let regular = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
        if !(regular || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            let why = match kind {
                tar::EntryType::Char | tar::EntryType::Block => "a device node".to_owned(),
                tar::EntryType::Fifo => "a FIFO".to_owned(),
                other => format!("of tar type {:?}", other.as_byte() as char),
            };
            let note = format!("{name:?} skipped: {why} is not restored");
            tracing::warn!("{note}");
            self.skipped.push(note);
            return Ok(());
        }
        let link = if kind.is_symlink() || kind.is_hard_link() {
            Some(entry.link_name().map_err(damaged)?.ok_or_else(|| refused(&name, "is a link without a target"))?.into_owned())
        } else {
            None
        };
        self.enter(dirs, &name)?;
        let at = &self.cwd.as_ref().expect("entered above").1;
        let exists = |e: Errno| {
            if e == Errno::EXIST {
                refused(&name, "appears twice in the archive or replaces an earlier entry")
            } else {
                io::Error::from(e)
            }
        };
        if kind.is_dir() {
            match rustix::fs::mkdirat(at, last, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    let st = rustix::fs::statat(at, last, AtFlags::SYMLINK_NOFOLLOW)?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        return Err(refused(&name, "would replace an earlier entry that is not a directory"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
            self.dirs.push((parts.iter().map(|p| p.to_os_string()).collect(), bits, mtime));
        } else if kind.is_symlink() {
            // Created as it is and never followed by the restore.
            let target = link.expect("symlinks carry a target");
            rustix::fs::symlinkat(target.as_path(), at, last).map_err(exists)?;
            rustix::fs::utimensat(at, last, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?;
        } else if kind.is_hard_link() {
            let target = link.expect("hard links carry a target");
            let tparts = plain_parts(&target).map_err(|_| refused(&name, format!("is a hard link to {target:?}, outside the archive")))?;
            let (tdirs, tlast) = tparts.split_at(tparts.len() - 1);
            let from = walk(&self.root, tdirs, &name, false)?;
            let st = rustix::fs::statat(&from, tlast[0], AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|_| refused(&name, format!("is a hard link to {target:?}, which the archive does not hold")))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(refused(&name, format!("is a hard link to {target:?}, which is not a regular file")));
            }
            rustix::fs::linkat(&from, tlast[0], at, last, AtFlags::empty()).map_err(exists)?;
        } else {
            let fd = rustix::fs::openat(at, last, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
                .map_err(exists)?;
            // Large writes, read straight into an aligned piece (tar's own
            // unpacking copies 8 KiB at a time).
            let direct = self.direct_io && entry.size() >= DIRECT_MIN;
            let file = File::from(fd);
            let written = if direct && entry.size() > DIRECT_PIECE as u64 { self.write_beside(entry, file, direct) } else { self.write_here(entry, file, direct) };
            let file = match written {
                Ok(file) => file,
                Err(stop) => {
                    // Ours (created above with O_EXCL), and incomplete.
                    let at = &self.cwd.as_ref().expect("entered above").1;
                    let _ = rustix::fs::unlinkat(at, last, AtFlags::empty());
                    return Err(match stop {
                        // The stream's own error (a failed authentication,
                        // a broken download), as it is.
                        Stop::Read(e) => e,
                        Stop::Write(source) => io::Error::new(source.kind(), WriteFailed { name, source }),
                    });
                }
            };
            // Only now: every byte is written.
            rustix::fs::fchmod(&file, mode(bits))?;
            rustix::fs::futimens(&file, &times(mtime))?;
        }
        Ok(())
    }

    /// The open parent directory `dirs` of entry `name`, created (0700) where
    /// missing; the last one is reused.
    fn enter(&mut self, dirs: &[&OsStr], name: &Path) -> io::Result<()> {
        let same = matches!(&self.cwd, Some((p, _)) if p.iter().map(OsString::as_os_str).eq(dirs.iter().copied()));
        if !same {
            let fd = walk(&self.root, dirs, name, true)?;
            self.cwd = Some((dirs.iter().map(|d| d.to_os_string()).collect(), fd));
        }
        Ok(())
    }

    /// Apply the modes and times of directories below the top level
    /// (deepest first) and list the top-level names; the top-level
    /// directories' are returned (see the module documentation).
    pub fn finish(mut self) -> io::Result<Unpacked> {
        use std::os::unix::ffi::OsStrExt;
        self.cwd = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        let mut top_dirs = Vec::new();
        for (mut parts, bits, mtime) in dirs {
            if parts.len() == 1 {
                top_dirs.push((parts.remove(0), bits, mtime));
                continue;
            }
            let parts: Vec<&OsStr> = parts.iter().map(OsString::as_os_str).collect();
            let name: std::path::PathBuf = parts.iter().collect();
            let parent = walk(&self.root, &parts[..parts.len() - 1], &name, false)?;
            apply_dir(&parent, parts[parts.len() - 1], bits, mtime)?;
        }
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.root)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        Ok(Unpacked { names, skipped: self.skipped, top_dirs })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_are_plain_components_only() {
        for (name, why) in [
            ("/", "absolute"),
            ("/etc", "absolute"),
            ("/usr/bin/python3", "absolute"),
            ("..", "'..'"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a/..", "'..'"),
            (".", "target itself"),
            ("./", "target itself"),
            ("./.", "target itself"),
        ] {
            let e = plain_parts(Path::new(name)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(why) && e.to_string().contains("refused"), "{name}: {e}");
        }
        assert_eq!(plain_parts(Path::new("./a//b/./c")).unwrap(), ["a", "b", "c"]);
        assert_eq!(plain_parts(Path::new("...")).unwrap(), ["..."]);
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 4096) as u8 ^ seed).collect()
    }

    /// A directory beside the test binary (target/, on the build's disk,
    /// whose filesystem takes O_DIRECT), and one on tmpfs if there is one.
    fn dirs() -> Vec<(tempfile::TempDir, &'static str)> {
        let exe = std::env::current_exe().unwrap();
        let mut v = vec![(tempfile::tempdir_in(exe.parent().unwrap()).unwrap(), "target")];
        if Path::new("/dev/shm").is_dir() {
            v.push((tempfile::tempdir_in("/dev/shm").unwrap(), "/dev/shm"));
        }
        v
    }

    const MTIME: u64 = 1_000_000_000;

    /// A tar archive of regular files, mode 0640, the i-th with mtime
    /// `MTIME + i`.
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (i, (name, data)) in files.iter().enumerate() {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_mtime(MTIME + i as u64);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Hands over at most `most` bytes a read, as the download's batches do
    /// (and as a file may).
    pub(crate) struct Trickle<'a> {
        pub(crate) data: &'a [u8],
        pub(crate) most: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.most).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn files_large_and_small_come_out_whole_with_their_modes_and_times() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let piece = DIRECT_PIECE;
        let files = [
            // Pieces through the writing thread, the last partial with a
            // partial block.
            ("big", data(5 * piece + 3 * ALIGN + 123, 1)),
            ("d/exact", data(3 * piece, 2)),
            ("d/one-piece", data(piece, 3)),
            ("d/one-byte-over", data(piece + 1, 4)),
            ("small", data(5000, 5)),
            ("empty", Vec::new()),
        ];
        let tar = archive(&files.iter().map(|(n, d)| (*n, &d[..])).collect::<Vec<_>>());
        for (dir, place) in dirs() {
            for direct_io in [true, false] {
                for most in [keybridge_net::FILE_IO_BUF, 100_003] {
                    let root = dir.path().join(format!("{direct_io}-{most}"));
                    std::fs::create_dir(&root).unwrap();
                    let mut u = Unpacker::new(&root).unwrap().with_direct_io(direct_io);
                    u.unpack(Trickle { data: &tar, most }).unwrap();
                    assert!(u.pieces.len() <= WRITE_AHEAD, "at most {WRITE_AHEAD} pieces kept, not {}", u.pieces.len());
                    u.finish().unwrap();
                    for (i, (name, want)) in files.iter().enumerate() {
                        let path = root.join(name);
                        let what = format!("{place}, direct {direct_io}, reads of {most}: {name}");
                        assert!(std::fs::read(&path).unwrap() == *want, "{what}: the bytes differ");
                        let meta = std::fs::metadata(&path).unwrap();
                        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "{what}");
                        // Set after the last write, which would have moved it.
                        assert_eq!(meta.mtime() as u64, MTIME + i as u64, "{what}: mtime");
                    }
                }
            }
        }
    }

    /// Set in the child process `a_file_that_cannot_be_written_...` runs.
    const CHILD_DIR: &str = "KEYBRIDGE_TEST_UNPACK_FSIZE_DIR";

    #[test]
    #[ignore = "run by a_file_that_cannot_be_written_is_an_error_naming_it_and_is_removed in a child process"]
    fn unpack_with_a_file_size_limit() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
        // Five whole pieces, then a write the kernel shortens to the
        // limit, then EFBIG (SIGXFSZ is ignored by the parent's shell).
        let limit = 5 * DIRECT_PIECE as u64 + 512 * 1024;
        let unlimited = rustix::process::getrlimit(rustix::process::Resource::Fsize);
        rustix::process::setrlimit(rustix::process::Resource::Fsize, rustix::process::Rlimit { current: Some(limit), ..unlimited }).unwrap();
        let big = data(8 * DIRECT_PIECE + 100, 6);
        let tar = archive(&[("d/big", &big), ("d/after", b"not reached")]);
        for direct_io in [true, false] {
            let root = Path::new(&dir).join(format!("{direct_io}"));
            std::fs::create_dir(&root).unwrap();
            let mut u = Unpacker::new(&root).unwrap().with_direct_io(direct_io);
            let e = u.unpack(Trickle { data: &tar, most: keybridge_net::FILE_IO_BUF }).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "direct {direct_io}: {e}");
            assert!(e.to_string().starts_with("writing \"d/big\": File too large"), "direct {direct_io}: {e}");
            let errno = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()).and_then(io::Error::raw_os_error);
            assert_eq!(errno, Some(rustix::io::Errno::FBIG.raw_os_error()), "direct {direct_io}: the system's error is kept as the source");
            assert!(!root.join("d/big").exists(), "direct {direct_io}: the partial file is removed");
            assert!(!root.join("d/after").exists(), "direct {direct_io}: the unpacking stopped");
        }
        println!("the child's checks passed");
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_error_naming_it_and_is_removed() {
        let (dir, _) = dirs().remove(0);
        let mut child = std::process::Command::new("sh")
            .args(["-c", r#"trap '' XFSZ; exec "$0" "$@""#])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "unpack::tests::unpack_with_a_file_size_limit", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A writer that never returns would hang the unpacker.
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > std::time::Duration::from_secs(120) {
                child.kill().unwrap();
                panic!("the unpacking did not stop within 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("the child's checks passed"), "{}\n{stdout}", out.status);
    }

    #[test]
    fn a_damaged_archive_is_an_integrity_error_quoting_no_raw_bytes() {
        // What an older backup made of a file that grew while it was read:
        // its extra bytes (here with a terminal escape) where the next
        // header belongs.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(10);
        h.set_mode(0o644);
        let mut grown = vec![b'x'; 10];
        grown.extend(std::iter::repeat_n(&b"\x1b[2J\x07\x00\x9b"[..], 200).flatten());
        b.append_data(&mut h, "grew.log", &grown[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let (dir, _) = dirs().remove(0);
        let mut u = Unpacker::new(dir.path()).unwrap();
        let e = u.unpack(&tar[..]).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{text}");
        assert!(text.starts_with("the archive is damaged: "), "{text}");
        assert!(!text.chars().any(|c| c.is_control()), "raw control characters in {text:?}");
        assert!(text.contains("\\u{1b}"), "{text}");
        // A long message is cut before it is escaped.
        let long = damaged(io::Error::other("\u{1b}".repeat(1000))).to_string();
        assert!(long.ends_with("...; nothing restored") && long.matches("\\u{1b}").count() == DAMAGE_QUOTED, "{long}");
        // Other kinds pass unchanged.
        assert_eq!(damaged(io::Error::new(io::ErrorKind::ConnectionAborted, "x")).kind(), io::ErrorKind::ConnectionAborted);
    }

    #[test]
    fn kept_mode_bits_drop_setuid_and_setgid_only() {
        assert_eq!(mode(0o7777).bits(), 0o1777);
        assert_eq!(mode(0o104755).bits(), 0o755);
    }
}
