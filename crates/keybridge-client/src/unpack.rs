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

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use keybridge_net::direct::{aligned_buf, AlignedBuf, DirectWriter, DIRECT_PIECE};

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
    /// File data passes through here (lent to each file's writer).
    buf: Option<AlignedBuf>,
    /// Files of [`DIRECT_MIN`] and more bypass the page cache.
    direct_io: bool,
}

/// Files this large and larger are written with `O_DIRECT` (where the
/// filesystem allows); smaller ones, a write or two each, through the
/// page cache.
pub const DIRECT_MIN: u64 = 1 << 20;

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
        Unpacker { root, cwd: None, dirs: Vec::new(), skipped: Vec::new(), buf: Some(aligned_buf(keybridge_net::FILE_IO_BUF)), direct_io: false }
    }

    /// Write files of [`DIRECT_MIN`] and more past the page cache where the
    /// filesystem allows.
    pub fn with_direct_io(mut self, direct_io: bool) -> Self {
        self.direct_io = direct_io;
        if direct_io {
            self.buf = Some(aligned_buf(DIRECT_PIECE));
        }
        self
    }

    /// Unpack every entry of the archive `reader` holds; stops at tar's end
    /// marker. The first refused entry is the error.
    pub fn unpack<R: Read>(&mut self, reader: R) -> io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            self.entry(&mut entry?)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let name = entry.path()?.into_owned();
        let parts = plain_parts(&name)?;
        let (dirs, last) = parts.split_at(parts.len() - 1);
        let last = last[0];
        let header = entry.header();
        let kind = header.entry_type();
        let bits = header.mode()?;
        // Backup stores a time before 1970 as its two's complement (tar's
        // builder takes a u64); this undoes it.
        let mtime = header.mtime()? as i64;
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
            Some(entry.link_name()?.ok_or_else(|| refused(&name, "is a link without a target"))?.into_owned())
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
            // Large writes, read straight into the writer's buffer (tar's
            // own unpacking copies 8 KiB at a time).
            let direct = self.direct_io && entry.size() >= DIRECT_MIN;
            let buf = self.buf.take().unwrap_or_else(|| aligned_buf(DIRECT_PIECE));
            let mut writer = DirectWriter::new(std::fs::File::from(fd), buf, direct);
            while writer.fill_from(entry)? > 0 {}
            let (file, buf) = writer.finish()?;
            self.buf = Some(buf);
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
mod tests {
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

    #[test]
    fn kept_mode_bits_drop_setuid_and_setgid_only() {
        assert_eq!(mode(0o7777).bits(), 0o1777);
        assert_eq!(mode(0o104755).bits(), 0o755);
    }
}
