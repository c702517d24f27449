//! The MediaAgent's storage directory. No HTTP here.
//!
//! Layout under the store root:
//! ```text
//! jobs/<job id>/stream       the encrypted stream, exactly as received
//! jobs/<job id>/index.json   per-job index: objects, sizes, CRC-32C, times
//! tmp/                       uploads in progress
//! ```
//! An upload is written to `tmp/`, fsynced, then renamed into its job
//! directory, and the index is written the same way; the directories are
//! fsynced after each rename. Streams are written and read with `O_DIRECT`
//! where the filesystem takes it (see `keybridge_net::direct`): the fsync
//! makes every byte go to the device anyway, so the page cache would only
//! add a copy and memory to allocate. A job therefore either has its whole stream
//! and index or does not exist; an upload that fails (full disk, client
//! gone) leaves nothing behind. Job ids are UUIDs and nothing else, so no
//! request can name a path outside the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use keybridge_net::direct::{aligned_buf, AlignedBuf, DirectWriter};

use serde::{Deserialize, Serialize};

/// Errors of the store; each names the job and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid job id '{0}': job ids are UUIDs (8-4-4-4-12 hex digits)")]
    BadJobId(String),
    #[error("job {0} is not in this store")]
    UnknownJob(String),
    #[error("job {0} is already stored; a job's stream is written once")]
    Exists(String),
    #[error("store {path}: no space left on device while storing job {job}; nothing was stored")]
    Full { path: PathBuf, job: String },
    #[error("store {path}: {doing}: {source}")]
    Io { path: PathBuf, doing: &'static str, source: io::Error },
    #[error("index of job {job} is unreadable: {reason}")]
    BadIndex { job: String, reason: String },
}

/// One stored object of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub bytes: u64,
    /// `crc32c:` and 8 hex digits: a scrub checksum of the stored bytes
    /// against bit rot, checkable without any key. Authenticity is the
    /// client's: every chunk of the stream is AES-GCM authenticated.
    pub checksum: String,
    pub stored_at_unix: u64,
}

/// `jobs/<id>/index.json`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobIndex {
    pub job: String,
    /// The client the upload's token named (none with `--no-auth`, and in
    /// indexes written before quotas): whose quota the job counts against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub objects: Vec<ObjectInfo>,
}

const STREAM: &str = "stream";
const INDEX: &str = "index.json";

/// Accept only the canonical UUID text form.
pub fn check_job_id(id: &str) -> Result<(), StoreError> {
    let ok = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadJobId(id.chars().take(80).collect()))
    }
}

fn io_err<'a>(path: &'a Path, doing: &'static str) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { path: path.to_owned(), doing, source }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir, "syncing directory"))
}

/// The store at a root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Streams bypass the page cache where the filesystem allows it.
    direct_io: bool,
}

impl Store {
    /// Open (create) the store; uploads left in `tmp/` by a crash are
    /// removed.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in [root.join("jobs"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir, "creating directory"))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp, "listing"))?.flatten() {
            tracing::warn!(file = %entry.path().display(), "removing an upload left by an earlier run");
            let _ = fs::remove_file(entry.path());
        }
        Ok(Store { root: root.to_owned(), direct_io: true })
    }

    /// Write and read streams through the page cache (`false`) or past it
    /// where the filesystem allows (`true`, the default).
    pub fn with_direct_io(self, direct_io: bool) -> Store {
        Store { direct_io, ..self }
    }

    /// Whether streams bypass the page cache where the filesystem allows.
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn job_dir(&self, job: &str) -> Result<PathBuf, StoreError> {
        check_job_id(job)?;
        Ok(self.root.join("jobs").join(job))
    }

    /// Bytes stored per client (for quotas): each job's stream as it is on
    /// disk, counted against the client its index names. The sizes an
    /// index declares are not trusted (whoever can write the store can
    /// edit an index). An index that cannot be read is reported and
    /// counted for nobody.
    pub fn usage_by_client(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let jobs = self.root.join("jobs");
        let mut usage = std::collections::HashMap::new();
        for entry in fs::read_dir(&jobs).map_err(io_err(&jobs, "listing"))? {
            let entry = entry.map_err(io_err(&jobs, "listing"))?;
            let job = entry.file_name().to_string_lossy().into_owned();
            match self.index(&job) {
                Ok(JobIndex { client: Some(client), .. }) => {
                    let stream = jobs.join(&job).join(STREAM);
                    let bytes = fs::symlink_metadata(&stream).map(|m| m.len()).unwrap_or_else(|e| {
                        tracing::warn!(job, error = %e, "job's stream missing; not counted against its client's quota");
                        0
                    });
                    let used: &mut u64 = usage.entry(client).or_insert(0);
                    *used = used.saturating_add(bytes);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(job, error = %e, "job not counted against any client's quota"),
            }
        }
        Ok(usage)
    }

    /// Start receiving the stream of a new job of `client`.
    pub fn begin(&self, job: &str, client: Option<&str>) -> Result<Upload, StoreError> {
        let dir = self.job_dir(job)?;
        if dir.exists() {
            return Err(StoreError::Exists(job.to_owned()));
        }
        let nonce = hex::encode(*keybridge_proto::crypto::random_array::<8>().map_err(|e| StoreError::Io {
            path: self.root.clone(),
            doing: "generating a temporary name",
            source: io::Error::other(e.to_string()),
        })?);
        let tmp = self.root.join("tmp").join(format!("{job}.{nonce}.part"));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| self.classify(e, job, &tmp, "creating upload"))?;
        // Whole buffers are written from the caller's (write_aligned); the
        // writer's own block only gathers an unaligned rest.
        let writer = DirectWriter::new(file, aligned_buf(keybridge_net::direct::ALIGN), self.direct_io);
        // Through the page cache, writeback starts while the upload runs.
        let syncer = if writer.is_direct() {
            None
        } else {
            Some(Syncer::start(writer.file()).map_err(|e| self.classify(e, job, &tmp, "starting writeback"))?)
        };
        Ok(Upload {
            store: self.clone(),
            job: job.to_owned(),
            client: client.map(str::to_owned),
            tmp,
            file: Some(writer),
            bytes: 0,
            unsynced: 0,
            syncer,
            crc: 0,
        })
    }

    fn classify(&self, e: io::Error, job: &str, path: &Path, doing: &'static str) -> StoreError {
        if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
            StoreError::Full { path: self.root.clone(), job: job.to_owned() }
        } else {
            StoreError::Io { path: path.to_owned(), doing, source: e }
        }
    }

    /// The index of a stored job.
    pub fn index(&self, job: &str) -> Result<JobIndex, StoreError> {
        let path = self.job_dir(job)?.join(INDEX);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::UnknownJob(job.to_owned())),
            Err(e) => return Err(StoreError::Io { path, doing: "reading index", source: e }),
        };
        serde_json::from_slice(&text).map_err(|e| StoreError::BadIndex { job: job.to_owned(), reason: e.to_string() })
    }

    /// Path and description of a job's stream, for reading back.
    pub fn stream(&self, job: &str) -> Result<(PathBuf, ObjectInfo), StoreError> {
        let index = self.index(job)?;
        let info = index
            .objects
            .into_iter()
            .find(|o| o.name == STREAM)
            .ok_or_else(|| StoreError::BadIndex { job: job.to_owned(), reason: "no stream object".into() })?;
        Ok((self.job_dir(job)?.join(STREAM), info))
    }
}

/// A stream being received. Dropped without [`Upload::commit`], it removes
/// its temporary file: nothing partial is ever visible.
pub struct Upload {
    store: Store,
    job: String,
    client: Option<String>,
    tmp: PathBuf,
    file: Option<DirectWriter>,
    bytes: u64,
    unsynced: u64,
    syncer: Option<Syncer>,
    crc: u32,
}

/// Start writeback of a large upload while it is still arriving, so the
/// final fsync has little left to flush: a helper thread calls fdatasync on
/// a second handle of the file whenever asked (at most one request
/// pending; the writer never waits for it).
struct Syncer {
    ask: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

/// Ask for writeback after this many new bytes.
const SYNC_EVERY: u64 = 64 << 20;

impl Syncer {
    fn start(file: &File) -> io::Result<Syncer> {
        let handle = file.try_clone()?;
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new().name("media-agent-sync".into()).spawn(move || {
            while asked.recv().is_ok() {
                handle.sync_data()?;
            }
            Ok(())
        })?;
        Ok(Syncer { ask, thread })
    }

    fn poke(&self) {
        let _ = self.ask.try_send(());
    }

    /// Stop the helper; its first error, if any.
    fn stop(self) -> io::Result<()> {
        drop(self.ask);
        self.thread.join().unwrap_or_else(|_| Err(io::Error::other("writeback thread panicked")))
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("job", &self.job).field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl Upload {
    /// Append received bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("upload not committed");
        let written = file.write_all(data);
        self.written(written, data)
    }

    /// Append `data[..len]`, written from `data` itself when the upload is
    /// at a block boundary and `len` is whole blocks (no copy).
    pub fn write_aligned(&mut self, data: &AlignedBuf, len: usize) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("upload not committed");
        let written = file.write_aligned(data, len);
        self.written(written, &data[..len])
    }

    fn written(&mut self, result: io::Result<()>, data: &[u8]) -> Result<(), StoreError> {
        result.map_err(|e| self.store.classify(e, &self.job, &self.tmp, "writing upload"))?;
        // A writer that fell back to the page cache gets writeback help
        // from here on, as one that never went direct has.
        if self.syncer.is_none() {
            if let Some(w) = self.file.as_ref().filter(|w| !w.is_direct()) {
                self.syncer = Some(Syncer::start(w.file()).map_err(|e| self.store.classify(e, &self.job, &self.tmp, "starting writeback"))?);
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        let len = data.len() as u64;
        self.bytes += len;
        self.unsynced += len;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            if let Some(s) = &self.syncer {
                s.poke();
            }
        }
        Ok(())
    }

    /// Make the stream durable and visible: fsync, rename into the job
    /// directory, write the index, fsync the directories.
    pub fn commit(mut self) -> Result<ObjectInfo, StoreError> {
        let writer = self.file.take().expect("upload committed once");
        let (file, _) = writer.finish().map_err(|e| self.store.classify(e, &self.job, &self.tmp, "writing upload"))?;
        if let Some(s) = self.syncer.take() {
            s.stop().map_err(|e| self.store.classify(e, &self.job, &self.tmp, "syncing upload"))?;
        }
        file.sync_all().map_err(|e| self.store.classify(e, &self.job, &self.tmp, "syncing upload"))?;
        drop(file);
        let dir = self.store.job_dir(&self.job)?;
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(StoreError::Exists(self.job.clone())),
            Err(e) => return Err(self.store.classify(e, &self.job, &dir, "creating job directory")),
        }
        let info = ObjectInfo {
            name: STREAM.to_owned(),
            bytes: self.bytes,
            checksum: format!("crc32c:{:08x}", self.crc),
            stored_at_unix: keybridge_proto::api::auth::unix_now(),
        };
        let result = (|| {
            // The index is written first (to tmp) so that a job directory
            // with a stream always has its index.
            let index = JobIndex { job: self.job.clone(), client: self.client.clone(), objects: vec![info.clone()] };
            let index_tmp = self.tmp.with_extension("index");
            let mut f = File::create(&index_tmp).map_err(|e| self.store.classify(e, &self.job, &index_tmp, "writing index"))?;
            f.write_all(&serde_json::to_vec_pretty(&index).expect("index serialises"))
                .and_then(|()| f.sync_all())
                .map_err(|e| {
                    let _ = fs::remove_file(&index_tmp);
                    self.store.classify(e, &self.job, &index_tmp, "writing index")
                })?;
            fs::rename(&self.tmp, dir.join(STREAM)).map_err(io_err(&dir, "moving stream into place"))?;
            fs::rename(&index_tmp, dir.join(INDEX)).map_err(io_err(&dir, "moving index into place"))?;
            fsync_dir(&dir)?;
            fsync_dir(&self.store.root.join("jobs"))
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(dir.join(STREAM));
            let _ = fs::remove_file(dir.join(INDEX));
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(info)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // After a successful commit both names were renamed away and these
        // fail harmlessly; after any failure they remove the leftovers.
        let _ = fs::remove_file(&self.tmp);
        let _ = fs::remove_file(self.tmp.with_extension("index"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01900000-0000-7000-8000-00000000000a";
    const B: &str = "01900000-0000-7000-8000-00000000000b";
    const C: &str = "01900000-0000-7000-8000-00000000000c";

    fn stored(store: &Store, job: &str, client: &str, bytes: usize) {
        let mut up = store.begin(job, Some(client)).unwrap();
        up.write(&vec![7u8; bytes]).unwrap();
        up.commit().unwrap();
    }

    /// Quotas count what is on disk: an index edited to declare huge sizes,
    /// one naming a client whose stream is gone, and one that is not JSON
    /// neither overflow, nor stop the count, nor count what is not there.
    #[test]
    fn usage_counts_streams_on_disk_not_what_indexes_declare() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        stored(&store, A, "alice", 1000);
        stored(&store, B, "alice", 24);
        stored(&store, C, "bob", 10);
        let jobs = dir.path().join("jobs");
        for job in [A, B] {
            let mut index = store.index(job).unwrap();
            index.objects[0].bytes = u64::MAX;
            fs::write(jobs.join(job).join(INDEX), serde_json::to_vec(&index).unwrap()).unwrap();
        }
        fs::remove_file(jobs.join(C).join(STREAM)).unwrap();
        let garbage = jobs.join("01900000-0000-7000-8000-0000000000ff");
        fs::create_dir(&garbage).unwrap();
        fs::write(garbage.join(INDEX), b"{ not json").unwrap();
        fs::create_dir(jobs.join("not-a-job")).unwrap();

        let usage = store.usage_by_client().unwrap();
        assert_eq!(usage.get("alice"), Some(&1024));
        assert_eq!(usage.get("bob"), Some(&0));
        assert_eq!(usage.len(), 2);
    }
}
