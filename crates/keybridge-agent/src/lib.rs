//! `keybridge media-agent --store DIR`: receives encrypted backup streams
//! and serves them back. It never holds a key: what it stores is the
//! client's AES-256-GCM stream, authenticated end to end, so the agent (and
//! its disk) can corrupt or lose data but not read or forge it.
//!
//! Every job route needs the service's token for that job and operation
//! (`Authorization: Bearer`, see [`keybridge_proto::api::agent_token`]), checked with
//! the key shared with the service (`--token-key`); `--no-auth` turns the
//! check off, for a trusted network only.
//!
//! Routes (HTTP, or HTTPS with `--cert/--key`):
//! - `PUT  /v1/jobs/{job}/stream`: store a job's stream (written once,
//!   atomically; see [`store`]); answers `{job, bytes, checksum}`.
//! - `GET  /v1/jobs/{job}/stream`: the stream back.
//! - `GET  /v1/jobs/{job}`: the job's index.
//! - `GET  /healthz`.
//!
//! It depends on the wire contract (keybridge-proto, for the tokens and
//! error bodies) and the server loop (keybridge-net); never on the catalog,
//! a KMS or the flows: it holds no key and no catalog row.

pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::json;

use keybridge_proto::api::agent_token::{AgentKey, AgentOp, TokenError};
use keybridge_net::direct::{aligned_buf, AlignedBuf, DIRECT_PIECE};
use keybridge_net::http::ApiError;
use keybridge_proto::ErrorKind;
use store::{Store, StoreError};

/// A piece of a stream being served: an aligned read buffer, handed back
/// to the reading thread when the connection drops the piece.
struct ReadPiece {
    buf: Option<AlignedBuf>,
    len: usize,
    back: std::sync::mpsc::Sender<AlignedBuf>,
}

impl AsRef<[u8]> for ReadPiece {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_ref().expect("present until dropped")[..self.len]
    }
}

impl Drop for ReadPiece {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The reader may be gone (the stream ended): then it is freed.
            let _ = self.back.send(buf);
        }
    }
}

/// After a failed write, at most this much of the rest of the upload is
/// read and dropped before answering.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Bytes gathered from the request body before each disk write. Large
/// batches ([`DIRECT_PIECE`]) come from a pool of [`LARGE_BATCHES`] shared
/// by all uploads; when it is empty an upload writes small ones. Memory
/// therefore stays
/// bounded however many uploads run (64 concurrent uploads with 1 MiB
/// batches for the first and shares of a budget for the rest peaked at
/// 57-61 MiB, heap fragmentation included; with 64 KiB batches only, at
/// 27-38 MiB), and no upload waits for another's buffers.
const SMALL_BATCH: usize = 64 << 10;
/// Large batches in the pool: an upload holds up to three (one filling, one
/// queued, one being written), so four uploads run at full speed at once.
const LARGE_BATCHES: usize = 12;

/// An upload that sends nothing for this long is dropped (nothing stored),
/// so a stalled client does not hold its writer thread; a download or
/// answer the client takes nothing of for as long is cut off; unless
/// `--upload-idle-secs`.
pub const UPLOAD_IDLE_SECS: u64 = 60;
/// Uploads one client may run at once, unless `--uploads-per-client`.
pub const UPLOADS_PER_CLIENT: usize = 8;

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub store: PathBuf,
    pub listen: String,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The key job tokens are checked with; `None` accepts every request.
    pub token_key: Option<AgentKey>,
    /// Uploads one client may run at once (the token names the client).
    pub uploads_per_client: usize,
    /// An upload that sends nothing for this long is dropped.
    pub upload_idle: Duration,
    /// Bytes one client may have stored here, counting uploads in
    /// progress; `None` for no quota.
    pub client_quota: Option<u64>,
    /// Streams bypass the page cache where the store's filesystem allows.
    pub direct_io: bool,
    pub shutdown_grace: Duration,
}

/// The per-client limits of [`router`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub uploads_per_client: usize,
    pub upload_idle: Duration,
    pub client_quota: Option<u64>,
}

/// What the handlers share.
struct Agent {
    store: Store,
    token_key: Option<AgentKey>,
    limits: Limits,
    /// What each client runs and holds here.
    clients: std::sync::Mutex<std::collections::HashMap<String, ClientUse>>,
    /// The large write batches not in use.
    large: Arc<BatchPool>,
}

/// The large write batches: made on demand up to [`LARGE_BATCHES`], then
/// reused, never freed.
#[derive(Default)]
struct BatchPool {
    free: std::sync::Mutex<Vec<AlignedBuf>>,
    made: std::sync::atomic::AtomicUsize,
}

impl BatchPool {
    /// Every large batch is made and in use.
    fn exhausted(&self) -> bool {
        self.made.load(std::sync::atomic::Ordering::Relaxed) >= LARGE_BATCHES && self.free.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// An upload's write batch; a large one returns to its pool when dropped.
struct Batch {
    buf: Option<AlignedBuf>,
    pool: Option<Arc<BatchPool>>,
}

impl Batch {
    /// A large batch if the pool has one to spare, else a small one.
    fn take(pool: &Arc<BatchPool>) -> Batch {
        let large = pool.free.lock().unwrap_or_else(|e| e.into_inner()).pop().or_else(|| {
            let made = pool.made.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |n| (n < LARGE_BATCHES).then_some(n + 1));
            made.is_ok().then(|| aligned_buf(DIRECT_PIECE))
        });
        match large {
            Some(buf) => Batch { buf: Some(buf), pool: Some(pool.clone()) },
            None => Batch::small(),
        }
    }

    fn small() -> Batch {
        Batch { buf: Some(aligned_buf(SMALL_BATCH)), pool: None }
    }
}

impl std::ops::Deref for Batch {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.buf.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Batch {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("present until dropped")
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let (Some(pool), Some(buf)) = (&self.pool, self.buf.take()) {
            pool.free.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }
}

/// One client's uploads and bytes at this agent.
#[derive(Debug, Default)]
struct ClientUse {
    uploads: usize,
    /// Bytes of its committed jobs.
    stored: u64,
    /// Bytes received so far by its uploads in progress.
    receiving: u64,
}

/// One running upload of a client; counted out when dropped, with the
/// bytes it received unless they were stored.
struct UploadSlot {
    agent: Shared,
    client: String,
    received: u64,
}

impl UploadSlot {
    fn quota_error(&self, quota: u64, stored: u64, more: u64) -> ApiError {
        tracing::warn!(client = %self.client, quota, stored, "upload refused: the client's quota at this MediaAgent is used up");
        ApiError::new(
            ErrorKind::StorageFull,
            format!(
                "client '{}' would exceed its quota of {quota} bytes at this MediaAgent (it holds {stored}, this upload {more} more); nothing was stored",
                self.client
            ),
        )
    }

    /// Refuse an upload that declares more bytes than the client has left.
    fn admit(&self, declared: Option<u64>) -> Result<(), ApiError> {
        let (Some(quota), Some(declared)) = (self.agent.limits.client_quota, declared) else { return Ok(()) };
        let clients = self.agent.clients.lock().unwrap_or_else(|e| e.into_inner());
        let held = clients.get(&self.client).map_or(0, |c| c.stored + c.receiving);
        if held.saturating_add(declared) > quota {
            return Err(self.quota_error(quota, held, declared));
        }
        Ok(())
    }

    /// Count `n` more received bytes, or refuse them over the quota.
    fn receive(&mut self, n: u64) -> Result<(), ApiError> {
        let mut clients = self.agent.clients.lock().unwrap_or_else(|e| e.into_inner());
        let c = clients.entry(self.client.clone()).or_default();
        if let Some(quota) = self.agent.limits.client_quota {
            if (c.stored + c.receiving).saturating_add(n) > quota {
                let held = c.stored + c.receiving - self.received;
                drop(clients);
                return Err(self.quota_error(quota, held, self.received + n));
            }
        }
        c.receiving += n;
        self.received += n;
        Ok(())
    }

    /// The upload was committed: its bytes are stored.
    fn stored(mut self) {
        let mut clients = self.agent.clients.lock().unwrap_or_else(|e| e.into_inner());
        let c = clients.entry(self.client.clone()).or_default();
        c.receiving -= self.received;
        c.stored += self.received;
        self.received = 0;
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut clients = self.agent.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get_mut(&self.client) {
            c.uploads -= 1;
            c.receiving -= self.received;
            if c.uploads == 0 && c.stored == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

type Shared = Arc<Agent>;

impl Agent {
    /// Refuse a request without a valid token for `op` on `job` (401);
    /// the client the token names (`None` with `--no-auth`).
    fn authorize(&self, headers: &HeaderMap, op: AgentOp, job: &str) -> Result<Option<String>, ApiError> {
        let Some(key) = &self.token_key else { return Ok(None) };
        let token = keybridge_net::http::bearer(headers).map_err(|_| TokenError::Missing);
        token.and_then(|t| key.verify(t.trim(), op, job, keybridge_proto::api::auth::unix_now())).map(Some).map_err(|e| {
            tracing::warn!(job, op = op.as_str(), error = %e, "media agent request refused");
            ApiError::new(ErrorKind::Auth, e.to_string())
        })
    }
}

/// Count an upload of `client` in, or refuse it (429) when the client
/// already runs its limit.
fn start_upload(agent: &Shared, client: Option<String>) -> Result<Option<UploadSlot>, ApiError> {
    let Some(client) = client else { return Ok(None) };
    let limit = agent.limits.uploads_per_client;
    let mut clients = agent.clients.lock().unwrap_or_else(|e| e.into_inner());
    let c = clients.entry(client.clone()).or_default();
    if c.uploads >= limit {
        tracing::warn!(client, limit, "upload refused: the client runs its limit of uploads");
        return Err(ApiError::new(ErrorKind::Busy, format!("client '{client}' already runs {limit} uploads at this MediaAgent (its limit); retry when one ends")));
    }
    c.uploads += 1;
    Ok(Some(UploadSlot { agent: agent.clone(), client, received: 0 }))
}

fn error_response(e: StoreError) -> Response {
    let kind = match &e {
        StoreError::BadJobId(_) => ErrorKind::Input,
        StoreError::UnknownJob(_) => ErrorKind::NotFound,
        StoreError::Exists(_) => ErrorKind::AlreadyExists,
        StoreError::Full { .. } => ErrorKind::StorageFull,
        StoreError::Io { .. } | StoreError::BadIndex { .. } => ErrorKind::Io,
    };
    if kind.http_status() >= 500 {
        tracing::error!(error = %e, "media agent request failed");
    }
    ApiError::new(kind, e.to_string()).into_response()
}

/// The agent's router over a store; with a key, job routes need tokens.
/// Fails only if, with a quota, the store's job indexes cannot be listed
/// (to count what each client holds).
pub fn router(store: Store, token_key: Option<AgentKey>, limits: Limits) -> Result<Router, StoreError> {
    // What each client holds matters only to a quota; without one the
    // store's indexes are not read at start.
    let stored = if limits.client_quota.is_some() { store.usage_by_client()? } else { Default::default() };
    let clients = stored.into_iter().map(|(client, stored)| (client, ClientUse { stored, ..Default::default() })).collect();
    let auth = if token_key.is_some() { "token" } else { "none" };
    Ok(Router::new()
        .route("/healthz", get(move |State(s): State<Shared>| async move { Json(json!({ "status": "ok", "store": s.store.root(), "auth": auth })) }))
        .route("/v1/jobs/{job}", get(job_index))
        .route("/v1/jobs/{job}/stream", get(get_stream).put(put_stream))
        .fallback(keybridge_net::http::no_route)
        .with_state(Arc::new(Agent {
            store,
            token_key,
            limits: Limits { uploads_per_client: limits.uploads_per_client.max(1), ..limits },
            clients: std::sync::Mutex::new(clients),
            large: Default::default(),
        })))
}

async fn job_index(State(agent): State<Shared>, headers: HeaderMap, Path(job): Path<String>) -> Response {
    if let Err(refused) = agent.authorize(&headers, AgentOp::Get, &job) {
        return refused.into_response();
    }
    match agent.store.index(&job) {
        Ok(index) => Json(index).into_response(),
        Err(e) => error_response(e),
    }
}

async fn get_stream(State(agent): State<Shared>, headers: HeaderMap, Path(job): Path<String>) -> Response {
    if let Err(refused) = agent.authorize(&headers, AgentOp::Get, &job) {
        return refused.into_response();
    }
    let (path, info) = match agent.store.stream(&job) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f.into_std().await,
        Err(source) => return error_response(StoreError::Io { path, doing: "opening stream", source }),
    };
    // The length sent is the file's, not the index's: if the disk changed
    // the stream, the client's decoder (not a broken connection) says how.
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(source) => return error_response(StoreError::Io { path, doing: "reading stream size", source }),
    };
    // Read past the page cache where the store does, each piece on a
    // blocking thread of its own (no thread waits on the client), into
    // aligned buffers that are sent as they are (no copy) and come back for
    // reuse once the connection has written them; two pieces wait for the
    // socket. A client that takes nothing for the idle limit loses the
    // stream, as an upload that sends nothing does.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<axum::body::Bytes>>(2);
    let (direct, idle) = (agent.store.direct_io(), agent.limits.upload_idle);
    tokio::spawn(async move {
        let (back, returned) = std::sync::mpsc::channel::<AlignedBuf>();
        let mut reader = Some(keybridge_net::direct::DirectReader::new(file, direct));
        while let Some(mut r) = reader.take() {
            let buf = returned.try_recv().unwrap_or_else(|_| aligned_buf(DIRECT_PIECE));
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = buf;
                let n = r.read_into(&mut buf);
                (r, buf, n)
            })
            .await;
            let (piece, end) = match read {
                Ok((r, buf, Ok(n))) => {
                    reader = Some(r);
                    (Ok(axum::body::Bytes::from_owner(ReadPiece { buf: Some(buf), len: n, back: back.clone() })), n < DIRECT_PIECE)
                }
                Ok((_, _, Err(e))) => (Err(e), true),
                Err(e) => (Err(std::io::Error::other(format!("reading the stream: {e}"))), true),
            };
            match tokio::time::timeout(idle, tx.send(piece)).await {
                Ok(Ok(())) if !end => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::warn!(job = %job, secs = idle.as_secs(), "stream download dropped: the client took nothing for the idle limit");
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) }));
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
            (axum::http::HeaderName::from_static("x-keybridge-checksum"), info.checksum),
        ],
        body,
    )
        .into_response()
}

/// Read and drop a bounded amount of what a client is still sending after
/// its upload failed, so it gets the answer instead of a reset.
async fn drain(frames: &mut axum::body::BodyDataStream) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained = 0usize;
    while drained < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(data))) => drained += data.len(),
            _ => break,
        }
    }
}

async fn put_stream(State(agent): State<Shared>, headers: HeaderMap, Path(job): Path<String>, body: Body) -> Response {
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut slot = match agent
        .authorize(&headers, AgentOp::Put, &job)
        .and_then(|client| start_upload(&agent, client))
        .and_then(|slot| slot.as_ref().map_or(Ok(()), |s| s.admit(declared)).map(|()| slot))
    {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let upload = match agent.store.begin(&job, slot.as_ref().map(|s| s.client.as_str())) {
        Ok(u) => u,
        Err(e) => return error_response(e),
    };
    // Disk writes run on a blocking thread fed through a bounded channel;
    // `None` marks a body that ended in error (the upload is dropped and
    // its temporary file removed). Received frames are copied into aligned
    // batches and dropped at once, so hyper can reuse its read buffer;
    // holding the frames until their write made it allocate fresh memory
    // for every read (1 GiB upload: 160 000 page faults, against a few
    // thousand with the copy). A full batch is written from where it is
    // (O_DIRECT, see `store`), then comes back for reuse.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<(Batch, usize)>>(1);
    let (spare_tx, mut spare_rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
    let writer = tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Some((batch, len)) => {
                    upload.write_aligned(&batch, len)?;
                    let _ = spare_tx.send(batch);
                }
                None => return Ok(None),
            }
        }
        upload.commit().map(Some)
    });
    let mut frames = body.into_data_stream();
    let mut body_error = None;
    let mut refused = None;
    // The first batch is small: an upload that stalls before its first
    // 64 KiB takes nothing from the pool of large ones.
    let mut batch = Batch::small();
    let mut filled = 0;
    'body: loop {
        let frame = match tokio::time::timeout(agent.limits.upload_idle, frames.next()).await {
            Ok(frame) => frame,
            Err(_) => Some(Err(axum::Error::new(format!("nothing arrived for {} s", agent.limits.upload_idle.as_secs())))),
        };
        let end = frame.is_none();
        let mut data: &[u8] = &[];
        if let Some(Ok(bytes)) = &frame {
            if let Some(Err(e)) = slot.as_mut().map(|s| s.receive(bytes.len() as u64)) {
                refused = Some(e);
                let _ = tx.send(None).await;
                drain(&mut frames).await;
                break;
            }
            data = bytes;
        }
        // Whole batches go as soon as they fill; the rest with the end.
        while !data.is_empty() || (end && filled > 0) {
            let n = (batch.len() - filled).min(data.len());
            batch[filled..filled + n].copy_from_slice(&data[..n]);
            filled += n;
            data = &data[n..];
            if filled == batch.len() || (end && data.is_empty()) {
                // A written batch comes back for reuse; a small one only
                // while the pool has no large one to give instead.
                let next = match spare_rx.try_recv() {
                    Ok(b) if b.pool.is_some() || agent.large.exhausted() => b,
                    _ => Batch::take(&agent.large),
                };
                if tx.send(Some((std::mem::replace(&mut batch, next), filled))).await.is_err() {
                    // The writer failed (its error is reported below).
                    drain(&mut frames).await;
                    break 'body;
                }
                filled = 0;
            }
        }
        match frame {
            None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                body_error = Some(e.to_string());
                let _ = tx.send(None).await;
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await;
    if let Some(refused) = refused {
        return refused.into_response();
    }
    match written {
        Ok(Ok(Some(info))) => {
            if let Some(slot) = slot {
                slot.stored();
            }
            tracing::info!(job = %job, bytes = info.bytes, "stream stored");
            (StatusCode::CREATED, Json(json!({ "job": job, "bytes": info.bytes, "checksum": info.checksum }))).into_response()
        }
        Ok(Ok(None)) => {
            let reason = body_error.unwrap_or_default();
            tracing::warn!(job = %job, reason = %reason, "upload aborted by the client; nothing stored");
            ApiError::new(ErrorKind::Input, format!("upload of job {job} ended early ({reason}); nothing was stored")).into_response()
        }
        Ok(Err(e)) => error_response(e),
        Err(e) => ApiError::new(ErrorKind::Internal, format!("writer task failed: {e}")).into_response(),
    }
}

/// Run the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> keybridge_proto::Result<()> {
    let store = Store::open(&cfg.store).map_err(|e| keybridge_proto::Error::Input { what: format!("media agent store {}", cfg.store.display()), reason: e.to_string() })?.with_direct_io(cfg.direct_io);
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(Arc::new(
            keybridge_net::tls::server_config(cert, key).map_err(|reason| keybridge_proto::Error::Input { what: "media agent TLS".into(), reason })?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| keybridge_proto::Error::Io { context: "listening on", path: cfg.listen.clone().into(), source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "keybridge: media agent listening on {scheme}://{}, store {}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or(cfg.listen.clone()),
        cfg.store.display()
    );
    if cfg.token_key.is_none() {
        eprintln!("keybridge: media agent started with --no-auth: anyone who can reach it can store and read job streams");
        tracing::warn!("media agent accepts requests without job tokens (--no-auth)");
    }
    let limits = Limits { uploads_per_client: cfg.uploads_per_client, upload_idle: cfg.upload_idle, client_quota: cfg.client_quota };
    let router = router(store, cfg.token_key, limits).map_err(|e| keybridge_proto::Error::Input { what: format!("media agent store {}", cfg.store.display()), reason: e.to_string() })?;
    // A download's peer is held to the same idle limit as an upload's.
    keybridge_net::http::serve(listener, tls, router, shutdown, cfg.shutdown_grace, cfg.upload_idle).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool bounds the large batches whatever the number of uploads,
    /// hands back what returns, and never makes an upload wait.
    #[test]
    fn large_batches_are_bounded_and_reused() {
        let pool = Arc::new(BatchPool::default());
        let held: Vec<Batch> = (0..LARGE_BATCHES).map(|_| Batch::take(&pool)).collect();
        assert!(held.iter().all(|b| b.len() == DIRECT_PIECE && b.pool.is_some()));
        let extra = Batch::take(&pool);
        assert_eq!(extra.len(), SMALL_BATCH, "the pool is empty: a small batch, at once");
        assert!(pool.exhausted());
        assert!(extra.pool.is_none());
        let first = held[0].as_ptr();
        drop(held);
        drop(extra);
        assert_eq!(pool.free.lock().unwrap().len(), LARGE_BATCHES, "every large batch came back; small ones are freed");
        assert!(!pool.exhausted());
        let again = Batch::take(&pool);
        assert_eq!(again.len(), DIRECT_PIECE);
        assert_eq!(pool.made.load(std::sync::atomic::Ordering::Relaxed), LARGE_BATCHES, "reused, not made again");
        assert!(pool.free.lock().unwrap().iter().chain([&*again]).any(|b| b.as_ptr() == first));
    }
}
