//! Client side of the backup flow (seed "Backup", step 5): archive the
//! files (tar: modes, mtimes, symlinks, empty directories), encrypt the
//! archive with the job's DEK in the keybridge stream format, stream it to
//! the MediaAgent, and report the stored stream to the service, which only
//! then marks the job complete.
//!
//! Archiving and encryption run on one blocking thread; the upload runs on
//! the runtime, on a connection of its own (`download::put`); a bounded
//! channel between them keeps memory flat whatever the size of the backup.

use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::Serialize;

use super::ServiceClient;
use keybridge_proto::api::JobCompletion;
use keybridge_proto::stream::Encryptor;
use keybridge_proto::{Error, Result};

/// Plaintext bytes per stream chunk.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// Ciphertext is handed to the upload in batches of about this size.
const BATCH: usize = 512 * 1024;

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub job_id: String,
    pub pool: String,
    pub client: String,
    pub dek_id: String,
    pub media_agent: String,
    pub files: u64,
    pub plain_bytes: u64,
    pub stream_bytes: u64,
    pub stream_checksum: String,
    pub seconds: f64,
    /// Archive names of entries that changed while they were read, each
    /// archived as it was when opened. A regular file written to meanwhile
    /// (a log being appended to, say) is archived at its size when opened:
    /// cut there if it grew, its end padded with zeros if it shrank, so the
    /// archive stays whole.
    pub changed: Vec<String>,
    /// Archive names of entries removed, or replaced by another kind of
    /// file, between their directory's listing and their read: not
    /// archived. (A named input that is gone fails the backup.)
    pub removed: Vec<String>,
}

/// Progress reporting hook (a progress bar on a TTY, nothing otherwise).
pub type Progress = Option<indicatif::ProgressBar>;

/// Check the inputs and, for a progress bar (`count`), count the bytes of
/// their regular files: a walk of the whole tree, which a backup without
/// one does not pay. The walk goes as the archiving does, by directory
/// descriptor and never through a symlink; entries that go away meanwhile
/// (a live tree) are left to the archiving to report.
fn survey(paths: &[PathBuf], count: bool) -> Result<u64> {
    let mut names = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for p in paths {
        let meta = std::fs::symlink_metadata(p).map_err(|source| Error::Io { context: "reading backup input", path: p.clone(), source })?;
        let name = archive_name(p)?;
        if !names.insert(name.clone()) {
            return Err(Error::Input { what: format!("backup input {}", p.display()), reason: format!("two inputs are both named '{name}' in the archive") });
        }
        if meta.is_file() && count {
            bytes += meta.len();
        }
        if !meta.is_dir() {
            continue;
        }
        // A named directory that cannot be listed fails before the job
        // starts, with a progress bar or without.
        let failed = |source: io::Error| Error::Io { context: "listing backup input", path: p.clone(), source };
        let top = At::input(p).open(OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| failed(e.into()))?;
        if !count {
            continue;
        }
        let mut stack = vec![list(top).map_err(failed)?];
        while let Some((entries, _)) = stack.last_mut() {
            let Some((file_name, listed)) = entries.next() else {
                stack.pop();
                continue;
            };
            let deeper = stack.len() <= MAX_DEPTH;
            let (_, dir) = stack.last().expect("the level just read");
            let Ok(dir) = dir.fd() else { continue };
            let at = At { dir, rel: Path::new(&file_name), path: p, listed };
            let kind = match listed {
                FileType::Unknown | FileType::RegularFile => match rustix::fs::statat(at.dir, at.rel, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                        bytes += st.st_size as u64;
                        continue;
                    }
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                },
                kind => kind,
            };
            if kind == FileType::Directory && deeper {
                let Ok(sub) = at.open(OFlags::RDONLY | OFlags::DIRECTORY) else { continue };
                let Ok(level) = list(sub) else { continue };
                stack.push(level);
            }
        }
    }
    Ok(bytes)
}

/// The top-level name an input gets in the archive: its last component.
fn archive_name(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() { p.to_owned() } else { std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_owned()) };
    let normal: PathBuf = abs.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
    normal
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "..")
        .map(str::to_owned)
        .ok_or_else(|| Error::Input { what: format!("backup input {}", p.display()), reason: "it has no usable file name (use a path ending in a name)".into() })
}

/// Encrypts what tar writes and hands ciphertext batches to the upload.
struct EncryptingWriter {
    enc: Option<Encryptor>,
    out: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    stream_bytes: u64,
    progress: Progress,
}

impl EncryptingWriter {
    fn flush_batch(&mut self, force: bool) -> io::Result<()> {
        if self.out.len() >= BATCH || (force && !self.out.is_empty()) {
            let batch = Bytes::from(std::mem::replace(&mut self.out, Vec::with_capacity(BATCH + CHUNK_SIZE as usize + 64)));
            self.stream_bytes += batch.len() as u64;
            self.tx
                .blocking_send(Ok(batch))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload to the MediaAgent stopped"))?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<(u64, u64)> {
        let enc = self.enc.take().expect("finished once");
        let plain = enc.finish(&mut self.out).map_err(|e| io::Error::other(e.to_string()))?;
        self.flush_batch(true)?;
        Ok((plain, self.stream_bytes))
    }
}

impl Write for EncryptingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.enc.as_mut().expect("not finished").push(buf, &mut self.out).map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(p) = &self.progress {
            p.inc(buf.len() as u64);
        }
        self.flush_batch(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What archiving saw, for the summary.
#[derive(Default)]
struct Walk {
    /// Entries archived.
    entries: u64,
    changed: Vec<String>,
    removed: Vec<String>,
    /// Called with each directory's path once it is listed: a test changes
    /// the tree there.
    #[cfg(test)]
    listed: Option<ListedHook>,
}

#[cfg(test)]
type ListedHook = Box<dyn FnMut(&Path) + Send>;

impl std::fmt::Debug for Walk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk").field("entries", &self.entries).field("changed", &self.changed).field("removed", &self.removed).finish_non_exhaustive()
    }
}

impl Walk {
    fn changed(&mut self, name: &Path) {
        self.changed.push(name.display().to_string());
    }

    /// An entry removed or replaced since its directory was listed: not
    /// archived, reported.
    fn removed(&mut self, path: &Path, name: &Path) {
        tracing::warn!(file = %path.display(), "{} was removed or replaced while the backup ran: not archived", name.display());
        self.removed.push(name.display().to_string());
    }
}

/// What reaching the entry at `at` (its `stat` or an open) gave: `None` if
/// it went away, or became another kind of file, since its directory was
/// listed, which is reported; for a named input (`top`) that is an error.
fn reached<T>(result: rustix::io::Result<T>, at: At<'_>, name: &Path, walk: &mut Walk, top: bool) -> io::Result<Option<T>> {
    match result.map_err(io::Error::from) {
        Ok(v) => Ok(Some(v)),
        Err(e) if !top && vanished(&e) => {
            walk.removed(at.path, name);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Does this error mean the entry went away (or became another kind of
/// file) since it was listed?
fn vanished(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error().is_some_and(|n| [Errno::NOTDIR, Errno::LOOP, Errno::NXIO].iter().any(|x| x.raw_os_error() == n))
}

/// Archive and encrypt `paths` into `writer` (blocking). Each input is
/// stored under its own name; directories are walked without following
/// symlinks; headers carry mode, owner, mtime (tar's "complete" mode).
/// Returns the plaintext and stream bytes, and what the walk saw.
fn archive(paths: &[PathBuf], writer: EncryptingWriter) -> io::Result<(u64, u64, Walk)> {
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    let mut walk = Walk::default();
    for p in paths {
        let name = archive_name(p).map_err(|e| io::Error::other(e.to_string()))?;
        append_input(&mut tar, p, Path::new(&name), &mut walk, MAX_DEPTH).map_err(|e| io::Error::new(e.kind(), format!("archiving {}: {e}", p.display())))?;
    }
    let (plain, stream) = tar.into_inner()?.finish()?;
    Ok((plain, stream, walk))
}

/// How many directories deep below a named input a backup goes; deeper is
/// an error naming the directory. The walk holds one open directory per
/// level. (Walking by path stopped at about 2,048 levels: a path is at most
/// 4,096 bytes.)
const MAX_DEPTH: usize = 4096;

/// The walk holds up to [`MAX_DEPTH`] open directories, more than the usual
/// soft limit of 1,024 descriptors: raise it as far as that needs, within
/// the hard limit.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = (MAX_DEPTH + 256) as u64;
    let raised = limit.maximum.map_or(want, |most| most.min(want));
    if limit.current.is_some_and(|now| now < raised) {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum });
    }
}

/// Where an entry is. Below a named input, every entry is reached from its
/// open parent directory by its one name (`openat`), never by its path: a
/// directory replaced by a symlink after it was opened cannot lead the
/// walk outside the tree. A named input is resolved by its path as given.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    /// Its name in `dir` (a named input: its whole path).
    rel: &'a Path,
    /// Its path, for messages only.
    path: &'a Path,
    /// Its type as the listing gave it (`Unknown`: ask the file system).
    /// Only a hint: each open checks what it finds.
    listed: FileType,
}

impl<'a> At<'a> {
    fn input(path: &'a Path) -> Self {
        At { dir: rustix::fs::CWD, rel: path, path, listed: FileType::Unknown }
    }

    fn open(&self, flags: OFlags) -> rustix::io::Result<std::fs::File> {
        rustix::fs::openat(self.dir, self.rel, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map(std::fs::File::from)
    }
}

/// A directory being walked: what is left of its listing, and the
/// directory itself, through which its entries are opened.
type Level = (std::vec::IntoIter<(std::ffi::OsString, FileType)>, rustix::fs::Dir);

/// List the directory `dir` is open on: its entries (not `.` and `..`) in
/// name order, with their types as listed, and the directory kept open.
fn list(dir: std::fs::File) -> io::Result<Level> {
    let mut listing = rustix::fs::Dir::new(dir)?;
    let mut entries = Vec::new();
    // A directory removed while it is listed just ends its listing.
    for entry in listing.by_ref() {
        let e = entry?;
        if !matches!(e.file_name().to_bytes(), b"." | b"..") {
            entries.push((std::ffi::OsString::from_vec(e.file_name().to_bytes().to_vec()), e.file_type()));
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((entries.into_iter(), listing))
}

/// Archive the named input `input` as `name`, and everything below it, in
/// name order. The walk keeps its own stack (a tree deep enough to
/// overflow the thread's stack, more than `max_depth` directories below the
/// input, is an error; [`MAX_DEPTH`] in a backup). Entries
/// below the input that go away meanwhile are reported; an error names the
/// entry it came from.
fn append_input<W: Write>(tar: &mut tar::Builder<W>, input: &Path, name: &Path, walk: &mut Walk, max_depth: usize) -> io::Result<()> {
    let Some(level) = append_entry(tar, At::input(input), name, walk, true)? else { return Ok(()) };
    let (mut path, mut name) = (input.to_path_buf(), name.to_path_buf());
    let mut stack = vec![level];
    while let Some((entries, dir)) = stack.last_mut() {
        let Some((file_name, listed)) = entries.next() else {
            stack.pop();
            path.pop();
            name.pop();
            continue;
        };
        path.push(&file_name);
        name.push(&file_name);
        let at = At { dir: dir.fd()?, rel: Path::new(&file_name), path: &path, listed };
        match append_entry(tar, at, &name, walk, false) {
            // `stack` holds the input and the directories down to this one.
            Ok(Some(_)) if stack.len() > max_depth => {
                return Err(io::Error::other(format!("{}: more than {max_depth} directories deep", path.display())));
            }
            // Its entries next; `path` and `name` stay on it until then.
            Ok(Some(level)) => {
                stack.push(level);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        path.pop();
        name.pop();
    }
    Ok(())
}

/// Archive the entry at `at` as `name`. A directory's header is written
/// and its listing returned, for the caller to walk. Entries that go away
/// meanwhile are reported, except a named input (`top`).
fn append_entry<W: Write>(tar: &mut tar::Builder<W>, at: At<'_>, name: &Path, walk: &mut Walk, top: bool) -> io::Result<Option<Level>> {
    let kind = match at.listed {
        FileType::Unknown => match reached(rustix::fs::statat(at.dir, at.rel, AtFlags::SYMLINK_NOFOLLOW), at, name, walk, top)? {
            Some(st) => FileType::from_raw_mode(st.st_mode),
            None => return Ok(None),
        },
        kind => kind,
    };
    match kind {
        FileType::RegularFile => append_file(tar, at, name, walk, top).map(|()| None),
        FileType::Directory => append_dir(tar, at, name, walk, top),
        // Symlinks, devices, FIFOs and sockets: opened as themselves
        // (`O_PATH`: nothing is read, a device is not opened) so header and
        // link target come from the one entry.
        _ => {
            let Some(entry) = reached(at.open(OFlags::PATH), at, name, walk, top)? else { return Ok(None) };
            let meta = entry.metadata()?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            let ft = meta.file_type();
            if ft.is_symlink() {
                // An empty name: the link `entry` is itself.
                let target = rustix::fs::readlinkat(&entry, c"", Vec::new())?;
                tar.append_link(&mut header, name, std::ffi::OsStr::from_bytes(target.as_bytes()))?;
            } else if ft.is_file() || ft.is_dir() {
                return replaced(at, name, walk, top).map(|()| None);
            } else {
                // Devices, FIFOs and sockets: their header only, as tar does.
                tar.append_data(&mut header, name, io::empty())?;
            }
            walk.entries += 1;
            Ok(None)
        }
    }
}

/// The entry at `at` turned out to be of another type than it was when
/// listed: reported as removed, or an error for a named input.
fn replaced(at: At<'_>, name: &Path, walk: &mut Walk, top: bool) -> io::Result<()> {
    if top {
        return Err(io::Error::other("it was replaced by another kind of file while the backup started"));
    }
    walk.removed(at.path, name);
    Ok(())
}

/// A directory: its header, and its listing for the walk.
fn append_dir<W: Write>(tar: &mut tar::Builder<W>, at: At<'_>, name: &Path, walk: &mut Walk, top: bool) -> io::Result<Option<Level>> {
    let Some(dir) = reached(at.open(OFlags::RDONLY | OFlags::DIRECTORY), at, name, walk, top)? else { return Ok(None) };
    let meta = dir.metadata()?;
    let level = list(dir)?;
    #[cfg(test)]
    if let Some(hook) = walk.listed.as_mut() {
        hook(at.path);
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    tar.append_data(&mut header, name, io::empty())?;
    walk.entries += 1;
    Ok(Some(level))
}

/// A regular file. It is opened without following a symlink and without
/// blocking (a name replaced since the listing by a symlink, a FIFO or a
/// device must neither be followed nor hang the backup), and its header
/// comes from the open file's own status, so header and data describe one
/// file. One that changed while it was read is archived at its size when
/// opened (see [`FileData`]) and reported.
fn append_file<W: Write>(tar: &mut tar::Builder<W>, at: At<'_>, name: &Path, walk: &mut Walk, top: bool) -> io::Result<()> {
    let Some(file) = reached(at.open(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY), at, name, walk, top)? else { return Ok(()) };
    let before = file.metadata()?;
    if !before.is_file() {
        return replaced(at, name, walk, top);
    }
    // Blocking reads again: O_NONBLOCK was for the open, and a FUSE file
    // system may honour it on reads.
    rustix::fs::fcntl_setfl(&file, OFlags::empty())?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&before, tar::HeaderMode::Complete);
    let mut data = FileData { file: &file, left: before.len(), shrank: false };
    // No larger than the file: `FileData` has no `read_buf`, so the buffer
    // is zeroed before its first read, and 256 KiB zeroed for each small
    // file doubled the client's CPU on 100,000 files (0.3 -> 0.6 s).
    let buffer = usize::try_from(before.len()).unwrap_or(usize::MAX).min(keybridge_net::FILE_IO_BUF);
    tar.append_data(&mut header, name, io::BufReader::with_capacity(buffer, &mut data))?;
    walk.entries += 1;
    let after = file.metadata()?;
    if data.shrank || modified(&before, &after) {
        tracing::warn!(
            file = %at.path.display(),
            "{} changed while it was read: archived at the {} bytes it had when opened{}",
            name.display(),
            before.len(),
            if data.shrank { " (its end padded with zeros)" } else { "" }
        );
        walk.changed(name);
    }
    Ok(())
}

/// Whether a file was written to (or its status changed) between two
/// looks: its size, modification or change time differ.
fn modified(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (before.len(), before.mtime(), before.mtime_nsec(), before.ctime(), before.ctime_nsec())
        != (after.len(), after.mtime(), after.mtime_nsec(), after.ctime(), after.ctime_nsec())
}

/// A regular file's data as its tar header declares it: exactly `left`
/// bytes, whatever the file does meanwhile. tar copies a reader to its end,
/// and a header's size is read from the file before its data: a file that
/// grew in between would put its extra bytes where the next header belongs,
/// and one that shrank would pull the next header short, leaving an archive
/// that cannot be restored past that file. Here a file that grew is cut at
/// the declared size and one that shrank is padded with zeros (as GNU tar
/// does); `shrank` tells the second, the file's status after the read the
/// first.
struct FileData<R> {
    file: R,
    left: u64,
    shrank: bool,
}

impl<R: io::Read> io::Read for FileData<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = if self.shrank { 0 } else { self.file.read(&mut buf[..want])? };
        let n = if n == 0 {
            // The file ended before its declared size.
            self.shrank = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Back up `paths` into `pool`: the whole client side of the seed's backup.
pub async fn backup(svc: &ServiceClient, pool: &str, paths: &[PathBuf], progress: Progress) -> Result<BackupSummary> {
    let t0 = Instant::now();
    if paths.is_empty() {
        return Err(Error::Input { what: "backup".into(), reason: "name at least one file or directory".into() });
    }
    raise_open_file_limit();
    let bytes = survey(paths, progress.is_some())?;
    if let Some(p) = &progress {
        p.set_length(bytes);
    }
    // Steps 1-4 (service): a DEK for this job, sealed for us.
    let started = svc.start_job(pool).await?;
    let dek = svc.open(&started.grant)?;
    let (enc, header) = Encryptor::new(&dek, &started.grant.dek_id, CHUNK_SIZE).map_err(|e| Error::Internal(format!("starting the stream: {e}")))?;
    drop(dek);

    // Step 5 (client -> MediaAgent).
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let mut out = Vec::with_capacity(BATCH + CHUNK_SIZE as usize + 64);
    out.extend_from_slice(&header);
    let abort = tx.clone();
    let writer = EncryptingWriter { enc: Some(enc), out, tx, stream_bytes: 0, progress: progress.clone() };
    let inputs = paths.to_vec();
    let producer = tokio::task::spawn_blocking(move || {
        let result = archive(&inputs, writer);
        if let Err(e) = &result {
            // Fail the upload too, so the MediaAgent discards it.
            let _ = abort.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let agent = started.media_agent.trim_end_matches('/').to_owned();
    let url = format!("{agent}/v1/jobs/{}/stream", started.job_id);
    let peer = format!("MediaAgent {agent}");
    let upload = async {
        let (status, answer) = super::download::put(&url, &started.agent_token, svc.tls(), &peer, body).await?;
        super::parse_answer::<serde_json::Value>(&peer, status, &answer)
    };
    let (uploaded, produced) = tokio::join!(upload, producer);
    let produced = produced.map_err(|e| Error::Internal(format!("archiving task failed: {e}")))?;
    // The upload's error is the cause when both failed (a dead agent makes
    // the archiver's sends fail too).
    let stored = uploaded?;
    let (plain_bytes, stream_bytes, walk) = produced.map_err(|e| Error::Input { what: "backup input".into(), reason: e.to_string() })?;
    // TLS carried the bytes intact and every chunk is authenticated, so the
    // count is the check here; the agent's checksum is recorded with the
    // job so a later restore can tell the agent's copy changed.
    let sha = stored["checksum"].as_str().unwrap_or_default().to_owned();
    if stored["bytes"].as_u64() != Some(stream_bytes) {
        return Err(Error::Integrity {
            what: format!("stream of job {}", started.job_id),
            reason: format!("the MediaAgent stored {} bytes, we sent {stream_bytes}", stored["bytes"]),
        });
    }
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    // Only now is the job complete.
    let done = JobCompletion { stream_bytes, stream_checksum: sha.clone(), plain_bytes, files: walk.entries };
    svc.complete_job(&started.job_id, &done).await?;
    Ok(BackupSummary {
        job_id: started.job_id,
        pool: pool.to_owned(),
        client: svc.name().to_owned(),
        dek_id: started.grant.dek_id,
        media_agent: agent,
        files: walk.entries,
        plain_bytes,
        stream_bytes,
        stream_checksum: sha,
        seconds: t0.elapsed().as_secs_f64(),
        changed: walk.changed,
        removed: walk.removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::Trickle;
    use std::io::Read;

    /// An archive of one file whose data reader gives `actual` bytes (at
    /// most `most` a read) while its header declares `declared`, then of a
    /// second file: (the entries as read back, whether it ran short).
    fn archive_with(declared: usize, actual: usize, most: usize) -> (Vec<(String, Vec<u8>)>, bool) {
        let content: Vec<u8> = (0..actual).map(|i| (i % 251) as u8 + 1).collect();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(declared as u64);
        header.set_mode(0o644);
        let mut data = FileData { file: Trickle { data: &content, most }, left: declared as u64, shrank: false };
        tar.append_data(&mut header, "live.log", io::BufReader::with_capacity(4096, &mut data)).unwrap();
        let mut next = tar::Header::new_gnu();
        next.set_size(5);
        next.set_mode(0o644);
        tar.append_data(&mut next, "after.txt", &b"after"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut read = tar::Archive::new(&bytes[..]);
        let entries = read
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                (e.path().unwrap().display().to_string(), body)
            })
            .collect();
        (entries, data.shrank)
    }

    #[test]
    fn a_file_that_changes_size_while_read_keeps_the_archive_whole() {
        let expected = |declared: usize, actual: usize| -> Vec<u8> {
            let mut v: Vec<u8> = (0..actual.min(declared)).map(|i| (i % 251) as u8 + 1).collect();
            v.resize(declared, 0);
            v
        };
        for most in [usize::MAX, 1000] {
            for (declared, actual) in [(100_000, 100_000), (100_000, 150_000), (100_000, 37_000), (70_000, 0), (0, 10)] {
                let (entries, shrank) = archive_with(declared, actual, most);
                let what = format!("declared {declared}, file gave {actual}, at most {most} a read");
                assert_eq!(shrank, actual < declared, "{what}");
                assert_eq!(entries.len(), 2, "{what}: {:?}", entries.iter().map(|e| &e.0).collect::<Vec<_>>());
                assert_eq!(entries[0].0, "live.log", "{what}");
                assert!(entries[0].1 == expected(declared, actual), "{what}: the first entry holds other bytes");
                assert_eq!(entries[1], ("after.txt".to_owned(), b"after".to_vec()), "{what}: the next entry is damaged");
            }
        }
    }

    /// Archive `paths` (named inputs, under their own names) into a tar in
    /// memory: the entries' names and sizes, and what the walk saw.
    fn archive_paths(paths: &[&Path]) -> (Vec<(String, u64)>, Walk) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut walk = Walk::default();
        for p in paths {
            append_input(&mut tar, p, Path::new(p.file_name().unwrap()), &mut walk, MAX_DEPTH).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let mut read = tar::Archive::new(&bytes[..]);
        let names = read.entries().unwrap().map(|e| e.unwrap()).map(|e| (e.path().unwrap().display().to_string(), e.size())).collect();
        (names, walk)
    }

    #[test]
    fn a_proc_file_is_archived_at_its_declared_size() {
        // /proc files declare 0 bytes and read as more: without the cut
        // their bytes would land where the next header belongs.
        let dir = tempfile::tempdir().unwrap();
        let tail = dir.path().join("z.txt");
        std::fs::write(&tail, b"tail").unwrap();
        let (names, walk) = archive_paths(&[Path::new("/proc/self/status"), &tail]);
        assert_eq!(names, [("status".to_owned(), 0), ("z.txt".to_owned(), 4)]);
        // Its status does not change as it is read: not reported (as GNU tar).
        assert!(walk.changed.is_empty() && walk.removed.is_empty(), "{walk:?}");
        assert_eq!(walk.entries, 2);
    }

    #[test]
    fn entries_removed_or_replaced_after_the_listing_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("real"), b"data").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut walk = Walk::default();
        // Listed as regular files, found otherwise when opened: a symlink
        // is not followed, a FIFO does not block.
        for n in ["link", "fifo", "missing"] {
            append_file(&mut tar, At::input(&d.join(n)), Path::new(n), &mut walk, false).unwrap();
        }
        // Removed after its directory was listed.
        assert!(append_entry(&mut tar, At::input(&d.join("gone")), Path::new("gone"), &mut walk, false).unwrap().is_none());
        append_file(&mut tar, At::input(&d.join("real")), Path::new("real"), &mut walk, false).unwrap();
        assert_eq!(walk.removed, ["link", "fifo", "missing", "gone"]);
        assert!(walk.changed.is_empty());
        assert_eq!(walk.entries, 1);
        let bytes = tar.into_inner().unwrap();
        let names: Vec<String> = tar::Archive::new(&bytes[..]).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["real"]);
        // A named input that is gone fails the backup.
        let mut tar = tar::Builder::new(Vec::new());
        let e = append_input(&mut tar, &d.join("gone"), Path::new("gone"), &mut walk, MAX_DEPTH).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = append_file(&mut tar, At::input(&d.join("fifo")), Path::new("fifo"), &mut walk, true).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
    }

    /// A directory holding tree/sub, and outside beside tree.
    fn tree_beside_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (tree, outside) = (dir.path().join("tree"), dir.path().join("outside"));
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (dir, tree, outside)
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_after_its_listing_is_not_followed() {
        // tree/sub/file.txt, and outside/file.txt beside the tree. Once
        // tree/sub is listed, it moves away and a symlink to outside takes
        // its name: its entries are still read from the directory listed.
        let (_dir, tree, outside) = tree_beside_outside();
        std::fs::write(tree.join("sub/file.txt"), b"inside").unwrap();
        std::fs::write(outside.join("file.txt"), b"outside, not to be archived").unwrap();
        // A symlink and a FIFO beside it: the link's own target, the FIFO's
        // header only (opened as itself, so it does not block).
        std::os::unix::fs::symlink("sub/file.txt", tree.join("ln")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, tree.join("p"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let sub = tree.join("sub");
        let (moved, target) = (tree.join("sub.moved"), outside.clone());
        let mut walk = Walk { listed: Some(Box::new(move |listed: &Path| {
            if listed == sub {
                std::fs::rename(&sub, &moved).unwrap();
                std::os::unix::fs::symlink(&target, &sub).unwrap();
            }
        })), ..Walk::default() };
        append_input(&mut tar, &tree, Path::new("tree"), &mut walk, MAX_DEPTH).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut entries = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
            entries.push((e.path().unwrap().display().to_string(), String::from_utf8(body).unwrap(), link));
        }
        assert!(std::fs::symlink_metadata(tree.join("sub")).unwrap().is_symlink(), "the swap did not happen");
        let e = |name: &str, body: &str, link: &str| (name.to_owned(), body.to_owned(), link.to_owned());
        assert_eq!(entries, [e("tree", "", ""), e("tree/ln", "", "sub/file.txt"), e("tree/p", "", ""), e("tree/sub", "", ""), e("tree/sub/file.txt", "inside", "")]);
        assert!(walk.changed.is_empty() && walk.removed.is_empty(), "{walk:?}");
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_before_its_open_is_reported_not_followed() {
        // Once tree is listed, tree/sub becomes a symlink to outside: it is
        // not archived, and nothing of outside is.
        let (_dir, tree, outside) = tree_beside_outside();
        std::fs::write(outside.join("file.txt"), b"outside").unwrap();
        let (listed_tree, sub, target) = (tree.clone(), tree.join("sub"), outside.clone());
        let mut walk = Walk { listed: Some(Box::new(move |listed: &Path| {
            if listed == listed_tree {
                std::fs::remove_dir(&sub).unwrap();
                std::os::unix::fs::symlink(&target, &sub).unwrap();
            }
        })), ..Walk::default() };
        let mut tar = tar::Builder::new(Vec::new());
        append_input(&mut tar, &tree, Path::new("tree"), &mut walk, MAX_DEPTH).unwrap();
        let bytes = tar.into_inner().unwrap();
        let entries: Vec<(String, bool)> = tar::Archive::new(&bytes[..]).entries().unwrap().map(|e| e.unwrap()).map(|e| (e.path().unwrap().display().to_string(), e.header().entry_type().is_symlink())).collect();
        // Listed as a directory (d_type), its open refuses the symlink; a
        // file system without d_type has it looked at once listed, and
        // archives the symlink itself. Never anything of outside.
        let refused = entries == [("tree".to_owned(), false)] && walk.removed == ["tree/sub"];
        let as_link = entries == [("tree".to_owned(), false), ("tree/sub".to_owned(), true)] && walk.removed.is_empty();
        assert!(refused || as_link, "{entries:?} {walk:?}");
    }

    #[test]
    fn a_tree_deeper_than_the_walk_goes_is_an_error_not_a_crash() {
        // A chain of 9 directories below the input: a walk that may go 9
        // deep archives it, one that may go 8 stops at the ninth.
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("deep");
        let mut leaf = top.clone();
        for _ in 0..9 {
            leaf.push("d");
        }
        std::fs::create_dir_all(&leaf).unwrap();
        let mut walk = Walk::default();
        append_input(&mut tar::Builder::new(io::sink()), &top, Path::new("deep"), &mut walk, 9).unwrap();
        assert_eq!(walk.entries, 10);
        let e = append_input(&mut tar::Builder::new(io::sink()), &top, Path::new("deep"), &mut Walk::default(), 8).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: more than 8 directories deep", leaf.display()));
    }

    #[test]
    fn the_survey_counts_regular_files_below_the_inputs_only() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, outside) = (dir.path().join("tree"), dir.path().join("outside"));
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(tree.join("a/b/f"), vec![1u8; 100]).unwrap();
        std::fs::write(tree.join("g"), vec![1u8; 20]).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 5000]).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/out")).unwrap();
        let single = dir.path().join("single");
        std::fs::write(&single, vec![1u8; 3]).unwrap();
        assert_eq!(survey(&[tree.clone(), single.clone()], true).unwrap(), 123);
        assert_eq!(survey(&[tree, single], false).unwrap(), 0);
    }

    #[test]
    fn a_write_between_two_looks_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"1234").unwrap();
        let a = std::fs::metadata(&path).unwrap();
        assert!(!modified(&a, &std::fs::metadata(&path).unwrap()));
        // Same size, new bytes: the times tell it, once the file system's
        // clock (a kernel tick, a few ms) has moved.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(b"5678").unwrap();
        assert!(modified(&a, &std::fs::metadata(&path).unwrap()));
    }
}
