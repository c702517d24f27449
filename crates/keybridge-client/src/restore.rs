//! Client side of the restore flow: the job from the service (own and
//! complete), the DEK recovered through the KMS and sealed for us, the
//! stream from the MediaAgent, decrypted and unpacked.
//!
//! Nothing is written outside the target directory, and nothing appears in
//! it unless the whole stream authenticated: entries are unpacked into a
//! staging directory inside the target and moved into place only after the
//! final chunk verified. A reordered, truncated, appended or altered stream
//! fails with the stream decoder's error and the staging directory is
//! removed.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::backup::Progress;
use super::unpack::{Unpacked, Unpacker};
use super::ServiceClient;
use keybridge_proto::api::{JobRecord, JobState};
use keybridge_proto::secret::Dek;
use keybridge_proto::stream::{Decryptor, Header};
use keybridge_proto::{Error, Result};

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub job_id: String,
    pub dek_id: String,
    pub to: PathBuf,
    pub entries: Vec<String>,
    /// Entries not restored (device nodes, FIFOs), each with the reason.
    pub skipped: Vec<String>,
    pub plain_bytes: u64,
    pub stream_bytes: u64,
    pub seconds: f64,
}

/// The download side of a restore: checks the stream's header and
/// decrypts each piece as it arrives, so the unpacking thread only parses
/// and writes. A stream that fails to authenticate fails here.
struct Opener {
    dek: Dek,
    dek_id: String,
    head: Vec<u8>,
    dec: Option<Decryptor>,
}

fn stream_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Opener {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if let Some(dec) = &mut self.dec {
            return dec.push(data, out).map_err(stream_err);
        }
        self.head.extend_from_slice(data);
        if let Some((header, used)) = Header::parse(&self.head).map_err(stream_err)? {
            header.check_dek_id(&self.dek_id).map_err(stream_err)?;
            let mut dec = Decryptor::new(&self.dek, &header).map_err(stream_err)?;
            dec.push(&self.head[used..], out).map_err(stream_err)?;
            self.head = Vec::new();
            self.dec = Some(dec);
        }
        Ok(())
    }

    /// The end of the download: the final chunk must have been seen.
    /// Returns the plaintext length.
    fn finish(self, out: &mut Vec<u8>) -> io::Result<u64> {
        let dec = self.dec.ok_or_else(|| stream_err("the stream ends inside its header: truncated"))?;
        dec.finish(out).map_err(stream_err)
    }
}

/// What the download hands the unpacking thread.
enum Piece {
    Plain(Vec<u8>),
    /// The whole stream authenticated.
    End,
}

/// Reads the plaintext batches the download decrypted; gives each spent
/// batch back for reuse.
struct PlainReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Piece>>,
    spare: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
    /// The first stream error: tar wraps what its reader returns, and this
    /// is the cause worth reporting.
    failure: Option<String>,
}

impl PlainReader {
    /// Wait for the next batch, or the end of the stream.
    fn fill(&mut self) -> io::Result<()> {
        let mut spent = std::mem::take(&mut self.plain);
        if spent.capacity() > 0 {
            spent.clear();
            let _ = self.spare.send(spent);
        }
        self.pos = 0;
        while self.plain.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Plain(batch))) => self.plain = batch,
                Some(Ok(Piece::End)) => self.done = true,
                Some(Err(e)) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        self.failure.get_or_insert_with(|| e.to_string());
                    }
                    return Err(e);
                }
                None => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the download stopped before the end of the stream")),
            }
        }
        Ok(())
    }

    /// Read to the end (tar stops at its end-of-archive marker) so the
    /// final chunk is known to be authenticated.
    fn drain(&mut self) -> io::Result<()> {
        while !self.done {
            self.fill()?;
        }
        Ok(())
    }
}

impl Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Unpack into `staging` (see [`super::unpack`]), verify the whole stream,
/// then apply directory modes and times (blocking).
fn unpack(mut reader: PlainReader, staging: OwnedFd, direct_io: bool) -> io::Result<Unpacked> {
    let mut u = Unpacker::at(staging).with_direct_io(direct_io);
    let unpacked = u.unpack(&mut reader).and_then(|()| reader.drain()).and_then(|()| u.finish());
    unpacked.map_err(|e| match reader.failure.take() {
        Some(cause) => io::Error::new(io::ErrorKind::InvalidData, cause),
        None => e,
    })
}

/// Restore backup job `job_id` into `to` (created if missing).
/// Restore job `job_id` into `to`. A DEK recovery the service answers as
/// retriable (its KMS unreachable or failing for now) is tried again with
/// backoff for up to `retry_for`.
///
/// With `direct_io`, files of [`DIRECT_MIN`](super::unpack::DIRECT_MIN) and
/// more are written past the page cache where the filesystem allows.
pub async fn restore(svc: &ServiceClient, job_id: &str, to: &Path, progress: Progress, retry_for: Duration, direct_io: bool) -> Result<RestoreSummary> {
    let t0 = Instant::now();
    let keybridge_proto::api::Job { job, agent_token } = svc.job(job_id).await?;
    if job.state != JobState::Complete {
        return Err(Error::Input { what: format!("job {job_id}"), reason: "it never completed (the backup was interrupted); it cannot be restored".into() });
    }
    let expected = job.completion.clone().ok_or_else(|| Error::Internal(format!("job {job_id} is complete without its stream figures")))?;
    // Restore steps 1-3 (service and KMS): the DEK, sealed for us.
    let grant = super::retrying(retry_for, "recovering the job's DEK", || svc.recover_dek(&job.dek_id)).await?;
    let dek = svc.open(&grant)?;

    // The target and the staging directory are held open, and every later
    // step works through these descriptors: a local user who can write the
    // target cannot redirect the final moves by swapping staging for a
    // symlink. The staging name is unpredictable, so it cannot be planted.
    std::fs::create_dir_all(to).map_err(|source| Error::Io { context: "creating restore target", path: to.to_owned(), source })?;
    let io = |context: &'static str, path: PathBuf| move |e: rustix::io::Errno| Error::Io { context, path, source: e.into() };
    let target = rustix::fs::open(to, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io("opening restore target", to.to_owned()))?;
    let prefix = format!(".keybridge-restore-{job_id}-");
    remove_leftovers(to, &prefix);
    let nonce = keybridge_proto::crypto::random_array::<8>().map_err(Error::crypto("naming the staging directory"))?;
    let staging_name = format!("{prefix}{}", hex::encode(*nonce));
    let staging = to.join(&staging_name);
    rustix::fs::mkdirat(&target, staging_name.as_str(), Mode::from_raw_mode(0o700)).map_err(io("creating staging directory", staging.clone()))?;
    let staging_fd = rustix::fs::openat(&target, staging_name.as_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(io("opening staging directory", staging.clone()))?;
    let unpack_fd = staging_fd.try_clone().map_err(|source| Error::Io { context: "opening staging directory", path: staging.clone(), source })?;
    let result = fetch_and_unpack(svc, &job, &agent_token, dek, unpack_fd, &staging, progress, direct_io).await;
    let result = result.and_then(|(unpacked, plain_bytes, stream_bytes)| {
        // Every chunk authenticated and the final chunk was seen, so a
        // different length cannot happen unless the decoder is wrong.
        if stream_bytes != expected.stream_bytes {
            return Err(Error::Integrity {
                what: format!("stream of job {job_id}"),
                reason: format!("the MediaAgent returned {stream_bytes} bytes; the job recorded {}", expected.stream_bytes),
            });
        }
        move_into_place(&staging_fd, &target, to, &unpacked)?;
        Ok((unpacked, plain_bytes, stream_bytes))
    });
    let _ = std::fs::remove_dir_all(&staging);
    let (unpacked, plain_bytes, stream_bytes) = result?;
    let entries = unpacked.display_names();
    let skipped = unpacked.skipped;
    Ok(RestoreSummary {
        job_id: job_id.to_owned(),
        dek_id: job.dek_id,
        to: to.to_owned(),
        entries,
        skipped,
        plain_bytes,
        stream_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn fetch_and_unpack(
    svc: &ServiceClient,
    job: &JobRecord,
    agent_token: &str,
    dek: Dek,
    staging_fd: OwnedFd,
    staging: &Path,
    progress: Progress,
    direct_io: bool,
) -> Result<(Unpacked, u64, u64)> {
    let (agent, job_id) = (job.media_agent.trim_end_matches('/'), job.id.as_str());
    let peer = format!("MediaAgent {agent}");
    let mut resp = super::download::get(&format!("{agent}/v1/jobs/{job_id}/stream"), agent_token, svc.tls(), &peer).await?;
    if resp.status != 200 {
        let status = resp.status;
        return Err(super::remote_error(&peer, status, &resp.head().await));
    }
    // An agent index that disagrees with the job record means its copy was
    // replaced; the stream's own authentication decides, this only logs.
    let agent_sum = resp.headers.get("x-keybridge-checksum").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if let Some(done) = &job.completion {
        if !agent_sum.is_empty() && agent_sum != done.stream_checksum {
            tracing::warn!(job = job_id, agent_sum, recorded = %done.stream_checksum, "the MediaAgent's index differs from the job record");
        }
    }
    let content_length = resp.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let (Some(p), Some(len)) = (&progress, content_length) {
        p.set_length(len);
    }
    // Plaintext goes to the unpacking thread in batches, with room for
    // 8 MiB so a slow disk write there does not stall the download at once.
    // Each received frame is decrypted and dropped at once, so hyper can
    // reuse its read buffer (holding frames in the queue made it allocate
    // fresh memory for most reads: 30 000 page faults per GiB).
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Piece>>(32);
    let (spare_tx, mut spare_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let reader = PlainReader { rx, spare: spare_tx, plain: Vec::new(), pos: 0, done: false, failure: None };
    let consumer = tokio::task::spawn_blocking(move || unpack(reader, staging_fd, direct_io));
    let opener = Opener { dek, dek_id: job.dek_id.clone(), head: Vec::new(), dec: None };
    let pump_progress = progress.clone();
    // Owns the sender: once it is done the unpacking thread sees the queue
    // close, whatever happened.
    let pump = async move {
        match decrypt_download(&mut resp, opener, &tx, &mut spare_rx, &pump_progress).await {
            Ok(figures) => Some(figures),
            // The unpacking thread reports the error (or its own, if it
            // stopped first).
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                None
            }
        }
    };
    let (figures, unpacked) = tokio::join!(pump, consumer);
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    let entries = unpacked.map_err(|e| Error::Internal(format!("restore task failed: {e}")))?.map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => Error::Integrity { what: format!("stream of job {job_id}"), reason: e.to_string() },
        io::ErrorKind::ConnectionAborted => Error::Unreachable { peer, reason: format!("the download broke: {e}") },
        _ => Error::Io { context: "restoring into", path: staging.to_owned(), source: e },
    })?;
    // The unpacking thread saw the end marker, which is sent only after the
    // whole stream authenticated.
    let (plain_bytes, stream_bytes) = figures.ok_or_else(|| Error::Internal(format!("job {job_id}: the stream was unpacked without its end")))?;
    Ok((entries, plain_bytes, stream_bytes))
}

/// Read the download to its end, decrypt each piece as it arrives and send
/// the plaintext on in batches, then the end marker; returns the plaintext
/// and stream lengths.
async fn decrypt_download(
    resp: &mut super::download::Download,
    mut opener: Opener,
    tx: &tokio::sync::mpsc::Sender<io::Result<Piece>>,
    spare: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    progress: &Progress,
) -> io::Result<(u64, u64)> {
    let send = |piece| async { tx.send(Ok(piece)).await.map_err(|_| io::Error::other("unpacking stopped")) };
    let mut stream_bytes = 0u64;
    let mut batch = Vec::with_capacity(keybridge_net::FILE_IO_BUF);
    while let Some(item) = resp.next().await {
        // Never kind `Other`: through tar, that kind means a damaged archive
        // (`unpack::damaged`), and this is the download failing.
        let data = item.map_err(|e| match e {
            Error::Unreachable { reason, .. } => io::Error::new(io::ErrorKind::ConnectionAborted, reason),
            other => io::Error::new(io::ErrorKind::ConnectionAborted, other.to_string()),
        })?;
        stream_bytes += data.len() as u64;
        if let Some(p) = progress {
            p.inc(data.len() as u64);
        }
        opener.push(&data, &mut batch)?;
        if batch.len() >= keybridge_net::FILE_IO_BUF {
            let next = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(keybridge_net::FILE_IO_BUF));
            send(Piece::Plain(std::mem::replace(&mut batch, next))).await?;
        }
    }
    let plain_bytes = opener.finish(&mut batch)?;
    if !batch.is_empty() {
        send(Piece::Plain(batch)).await?;
    }
    send(Piece::End).await?;
    Ok((plain_bytes, stream_bytes))
}

/// Move the verified entries from staging into the target, through the
/// two directories' descriptors; refuse (before moving anything) if one of
/// them exists there already. Each move refuses to replace what appeared
/// meanwhile (`RENAME_NOREPLACE`, where the file system has it). Then the
/// top-level directories get their modes and times.
fn move_into_place(staging: &OwnedFd, target: &OwnedFd, to: &Path, unpacked: &Unpacked) -> Result<()> {
    let exists = |name: &OsStr| Error::Input {
        what: format!("restore target {}", to.display()),
        reason: format!("{name:?} exists already; restore into an empty directory or remove it"),
    };
    let io = |context: &'static str, name: &OsStr| {
        let path = to.join(name);
        move |e: rustix::io::Errno| Error::Io { context, path, source: e.into() }
    };
    for name in &unpacked.names {
        match rustix::fs::statat(target, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {}
            Ok(_) => return Err(exists(name)),
            Err(e) => return Err(io("checking the restore target", name)(e)),
        }
    }
    for name in &unpacked.names {
        let moved = match rustix::fs::renameat_with(staging, name.as_os_str(), target, name.as_os_str(), RenameFlags::NOREPLACE) {
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => rustix::fs::renameat(staging, name.as_os_str(), target, name.as_os_str()),
            other => other,
        };
        moved.map_err(|e| if e == rustix::io::Errno::EXIST { exists(name) } else { io("moving restored entry into place", name)(e) })?;
    }
    for (name, bits, mtime) in &unpacked.top_dirs {
        super::unpack::apply_dir(target, name, *bits, *mtime).map_err(|source| Error::Io { context: "setting mode and time", path: to.join(name), source })?;
    }
    Ok(())
}

/// Remove staging directories an interrupted restore of the same job left
/// in `to` (by path: a symlink planted under such a name is removed, not
/// followed).
fn remove_leftovers(to: &Path, prefix: &str) {
    let Ok(dir) = std::fs::read_dir(to) else { return };
    for e in dir.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
