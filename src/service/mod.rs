//! `keybridge serve`: the adapter service (the seed's CommServe side).
//!
//! HTTPS JSON API (routes in [`keybridge_proto::api::ROUTES`], documented in
//! `docs/openapi.json`). Operators manage pools and clients with a bearer
//! token; clients issue and recover their own DEKs and record backup jobs
//! with requests signed by their password-derived key. DEKs leave only
//! sealed under the client's password. Every operation goes through
//! [`crate::flows`]; this module only authenticates, routes and measures.
//!
//! A dead HSM or KMIP server does not stop the service from starting: the
//! health checker probes every KMS in the background, `/healthz` reports it
//! unusable, and it recovers when the KMS comes back.

mod auth;
mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use tokio::sync::RwLock;

use keybridge_proto::api::agent_token::{self, AgentKey, AgentOp};
use keybridge_proto::api::{self, ClientKdf, CreatePool, JobStarted, PoolRequest, RegisterClient, RekeyPool, Role};
use keybridge_net::http::ApiError;
use keybridge_catalog::audit::Actor;
use keybridge_catalog::PoolRecord;
use keybridge_kms::ProbeStatus;
use crate::config::ServiceConfig;
use crate::context::Keybridge;
use crate::flows::{backup, clients, pool_creation, pool_lifecycle, restore};
use keybridge_proto::secret::SecretString;
use crate::{Error, Result};
use keybridge_proto::ErrorKind;

pub use metrics::Metrics;

/// Health of one KMS as last probed.
#[derive(Debug, Clone, Serialize)]
pub struct KmsHealth {
    pub name: String,
    pub kind: &'static str,
    /// What the last probe found; `None` before the first probe, shown as
    /// `unknown`.
    #[serde(serialize_with = "state_or_unknown")]
    pub state: Option<ProbeStatus>,
    /// Whether the last probe got an answer from the KMS at all (a KMS can
    /// answer and still be unusable, e.g. a token without key wrap).
    pub reachable: bool,
    pub detail: String,
    pub checked_at: Option<String>,
}

fn state_or_unknown<S: serde::Serializer>(state: &Option<ProbeStatus>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match state {
        Some(state) => state.serialize(s),
        None => s.serialize_str("unknown"),
    }
}

/// The running service's shared state.
#[derive(Debug)]
pub struct Service {
    kb: Arc<Keybridge>,
    cfg: ServiceConfig,
    operator_token: SecretString,
    agent_key: AgentKey,
    metrics: Metrics,
    health: RwLock<Vec<KmsHealth>>,
    /// The service's and the KMIP entries' certificates, read at start.
    certs: Vec<crate::certs::ConfiguredCert>,
}

type Shared = Arc<Service>;

/// Who operator-token requests act as in the audit log: the token names no
/// person, so the audit says "operator:token".
fn operator_actor() -> Actor {
    Actor::Operator("token".to_owned())
}

type ApiResult = std::result::Result<Response, ApiError>;

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorKind::Input, format!("request body: {e}")))
}

impl Service {
    /// Prepare the service: read the operator token, keep the catalog open.
    pub fn new(kb: Keybridge) -> Result<Service> {
        let cfg = kb.config().service.clone().ok_or_else(|| Error::Config {
            path: kb.config().source.clone(),
            reason: "no [service] section; `keybridge serve` needs one (see keybridge.toml.example)".into(),
        })?;
        let operator_token = keybridge_proto::secret::read_secret_file(&cfg.operator_token_file, "reading operator token")?;
        let agent_key = AgentKey::read(&cfg.media_agent_key_file)?;
        let health = kb
            .config()
            .kms
            .iter()
            .map(|k| KmsHealth { name: k.name().to_owned(), kind: k.kind(), state: None, reachable: false, detail: "not probed yet".into(), checked_at: None })
            .collect();
        let (certs, unreadable) = crate::certs::configured(kb.config(), None, true);
        for e in unreadable {
            tracing::warn!(error = %e, "certificate not readable; its expiry is not reported");
        }
        Ok(Service { kb: Arc::new(kb), cfg, operator_token, agent_key, metrics: Metrics::default(), health: RwLock::new(health), certs })
    }

    /// The answer to a refused client request; counts and logs it.
    fn refused(&self, refusal: auth::Refusal) -> ApiError {
        let e = match refusal {
            auth::Refusal::Auth(e) => e,
            auth::Refusal::Catalog(e) => {
                tracing::error!(error = %e, "could not record a request nonce");
                return ApiError::from(e);
            }
        };
        let reason = match e {
            api::auth::AuthError::Replay => "replay",
            api::auth::AuthError::Skew(..) => "clock_skew",
            api::auth::AuthError::BadSignature(_) => "bad_signature",
            api::auth::AuthError::UnknownClient(_) => "unknown_client",
            _ => "malformed",
        };
        self.metrics.auth_failure(reason);
        tracing::warn!(reason, error = %e, "client request refused");
        ApiError::new(ErrorKind::Auth, e.to_string())
    }

    /// A MediaAgent token for `op` on `job`, valid for the next hour.
    fn agent_token(&self, op: AgentOp, job: &str, client: &str) -> String {
        self.agent_key.mint(op, job, client, api::auth::unix_now() + agent_token::TOKEN_TTL_SECS)
    }

    fn operator(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        auth::verify_operator(&self.operator_token, headers).map_err(|reason| {
            self.metrics.auth_failure("operator");
            ApiError::new(ErrorKind::Auth, reason.to_owned())
        })
    }

    /// Record an operation's outcome and latency; count KMS errors.
    fn finish<T: Serialize>(&self, op: &str, kms: &str, started: Instant, result: Result<T>) -> ApiResult {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Backend { kms, .. }) => {
                self.metrics.kms_error(kms);
                "kms_error"
            }
            Err(_) => "error",
        };
        self.metrics.observe(op, kms, outcome, started.elapsed());
        Ok(Json(result?).into_response())
    }

    async fn kms_of_pool(&self, pool: &str) -> String {
        self.kb.catalog().pool_by_name(pool).await.map(|p| p.kms_name).unwrap_or_else(|_| "-".into())
    }

    /// Probe every KMS once and store the results.
    pub async fn check_health(&self) {
        let names: Vec<String> = self.kb.config().kms.iter().map(|k| k.name().to_owned()).collect();
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let kind = self.kb.config().kms(&name).map(|k| k.kind()).unwrap_or("?");
            let probe = tokio::time::timeout(Duration::from_secs(15), self.kb.probe(&name)).await;
            let (state, reachable, detail) = match probe {
                Ok(Ok(report)) => (report.state, true, report.identity),
                Ok(Err(e)) => (ProbeStatus::Unusable, false, e.to_string()),
                Err(_) => (ProbeStatus::Unusable, false, "probe did not answer within 15 s".to_owned()),
            };
            if !state.is_usable() {
                tracing::warn!(kms = %name, detail = %detail, "KMS unusable");
                // Drop the cached backend so the next use reconnects.
                self.kb.forget_backend(&name).await;
            }
            let checked_at = time::UtcDateTime::now().truncate_to_second().format(&Rfc3339).ok();
            results.push(KmsHealth { name, kind, state: Some(state), reachable, detail, checked_at });
        }
        *self.health.write().await = results;
    }
}

/// How often the service repeats its warning about a certificate near
/// expiry.
const CERT_WARNING_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Largest request body the service reads: every request is a small JSON
/// document.
const MAX_BODY: usize = 64 * 1024;
/// How long a caller may take to send its body.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The client whose signature a request carries, verified by [`guard`].
#[derive(Debug, Clone)]
struct Caller(String);

/// Every route passes here first. The caller is authenticated as far as the
/// route's role allows before the body is read (the operator token; a
/// client's headers, timestamp and registration), then the body is read,
/// at most [`MAX_BODY`] within [`BODY_DEADLINE`], and a client's signature
/// over the whole request is verified ([`Caller`]).
async fn guard(State(s): State<Shared>, route: MatchedPath, req: Request, next: Next) -> Response {
    match admit(&s, route.as_str(), req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

async fn admit(s: &Service, route: &str, req: Request) -> std::result::Result<Request, ApiError> {
    // HEAD is GET without the body; a route missing from ROUTES is treated
    // as an operator route.
    let method = if req.method() == axum::http::Method::HEAD { "GET" } else { req.method().as_str() };
    let role = api::ROUTES.iter().find(|(m, p, _)| *m == method && *p == route).map_or(Role::Operator, |r| r.2);
    let claim = match role {
        // Public routes take no body: it is never read.
        Role::Public => return Ok(req),
        Role::Operator => {
            s.operator(req.headers())?;
            None
        }
        Role::Client => Some(auth::claim(s.kb.catalog().as_ref(), s.cfg.max_clock_skew_secs, req.headers()).await.map_err(|r| s.refused(r))?),
    };
    let (mut parts, body) = req.into_parts();
    let too_large = || ApiError::new(ErrorKind::Input, format!("the request body is larger than {MAX_BODY} bytes")).with_status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) if std::error::Error::source(&e).is_some_and(|c| c.is::<http_body_util::LengthLimitError>()) => return Err(too_large()),
        Ok(Err(_)) => return Err(ApiError::new(ErrorKind::Input, "the request body broke off")),
        Err(_) => return Err(ApiError::new(ErrorKind::Input, format!("the request body did not arrive within {} s", BODY_DEADLINE.as_secs())).with_status(StatusCode::REQUEST_TIMEOUT)),
    };
    if let Some(claim) = claim {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let client = claim.verify(s.kb.catalog().as_ref(), parts.method.as_str(), path, &body).await.map_err(|r| s.refused(r))?;
        parts.extensions.insert(Caller(client));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(body)))
}

/// The router with every route of [`api::ROUTES`].
pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route("/v1/pools/{name}", get(show_pool))
        .route("/v1/pools/{name}/rekey", post(rekey_pool))
        .route("/v1/pools/{name}/rotate", post(rotate_pool))
        .route("/v1/pools/{name}/wrap", post(wrap_pool))
        .route("/v1/pools/{name}/unwrap", post(unwrap_pool))
        .route("/v1/pools/{name}/migrate", post(migrate_pool))
        .route("/v1/pools/{name}/retire-keys", post(retire_pool_keys))
        .route("/v1/pools/{name}/shred", post(shred_pool))
        .route("/v1/pools/{name}/export", post(export_pool))
        .route("/v1/pools/{name}/import", post(import_pool))
        .route("/v1/pools/{name}/schedule", post(schedule_pool))
        .route("/v1/pools/{name}/resume", post(resume_pool))
        .route("/v1/clients", post(register_client))
        .route("/v1/clients/{name}/kdf", get(client_kdf))
        .route("/v1/deks", post(issue_dek))
        .route("/v1/deks/{id}/recover", post(recover_dek))
        .route("/v1/jobs", get(list_jobs).post(start_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/complete", post(complete_job))
        // Applies to the routes above it only: handlers do not authenticate
        // themselves, so every route goes above this line.
        .route_layer(axum::middleware::from_fn_with_state(service.clone(), guard))
        .fallback(keybridge_net::http::no_route)
        .with_state(service)
}

async fn healthz(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let health = s.health.read().await.clone();
    let status = if health.iter().all(|h| h.state == Some(ProbeStatus::Usable)) { "ok" } else { "degraded" };
    // 200 even when degraded: issuing DEKs needs no KMS (public KEK), so a
    // dead HSM must not make a load balancer drop the whole service.
    // Token labels, serials, module paths and raw KMS errors are for
    // operators only; anyone else learns up or degraded.
    if auth::verify_operator(&s.operator_token, &headers).is_ok() {
        Json(json!({ "status": status, "kms": health })).into_response()
    } else {
        Json(json!({ "status": status })).into_response()
    }
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    let backends = s.kb.open_backends().await;
    let cache: Vec<_> = backends.iter().map(|(name, b)| {
        let (hits, misses) = b.cache_stats();
        (name.clone(), hits, misses)
    }).collect();
    let up: Vec<_> = s.health.read().await.iter().map(|h| (h.name.clone(), h.state == Some(ProbeStatus::Usable), h.reachable)).collect();
    let now = keybridge_net::cert::now();
    let ages = pool_lifecycle::key_ages(&s.kb, now).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not read the pools' key ages for /metrics");
        Vec::new()
    });
    let text = s.metrics.render(&cache, &up, &s.certs, &ages, now);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn list_pools(State(s): State<Shared>) -> ApiResult {
    let started = Instant::now();
    let pools = s.kb.catalog().list_pools().await.map(|ps| ps.iter().map(PoolRecord::to_json).collect::<Vec<_>>());
    s.finish("pool_list", "-", started, pools.map(|p| json!({ "pools": p })))
}

async fn create_pool(State(s): State<Shared>, body: Bytes) -> ApiResult {
    let req: CreatePool = parse_body(&body)?;
    let started = Instant::now();
    let opts = pool_creation::PoolOptions { kek_bits: req.kek_bits, ..Default::default() };
    let pool = pool_creation::create_pool(&s.kb, &req.name, &req.kms, &opts, &operator_actor()).await.map(|p| p.to_json());
    s.finish("pool_create", &req.kms, started, pool).map(|r| (StatusCode::CREATED, r).into_response())
}

async fn show_pool(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let started = Instant::now();
    let pool = pool_lifecycle::show(&s.kb, &name).await;
    s.finish("pool_show", "-", started, pool)
}

/// Run a lifecycle change of a pool to its end even if the caller goes
/// away: a dropped request must not leave a journalled change half done.
async fn lifecycle<F>(s: Shared, operation: &'static str, change: impl FnOnce(Shared) -> F + Send + 'static) -> ApiResult
where
    F: std::future::Future<Output = Result<pool_lifecycle::ChangeReport>> + Send + 'static,
{
    let started = Instant::now();
    let task = tokio::spawn({
        let s = s.clone();
        async move { change(s).await }
    });
    let report = match task.await {
        Ok(r) => r.map(|r| serde_json::to_value(r).unwrap_or_default()),
        Err(e) => Err(Error::Internal(format!("the {operation} task failed: {e}"))),
    };
    s.finish(operation, "-", started, report)
}

async fn rotate_pool(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    lifecycle(s, "pool_rotate", move |s| async move { pool_lifecycle::rotate(&s.kb, &name, &operator_actor()).await }).await
}

async fn wrap_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::PoolKms = parse_body(&body)?;
    lifecycle(s, "pool_wrap", move |s| async move { pool_lifecycle::wrap(&s.kb, &name, &req.kms, &operator_actor()).await }).await
}

async fn unwrap_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::PoolKms = parse_body(&body)?;
    lifecycle(s, "pool_unwrap", move |s| async move { pool_lifecycle::unwrap(&s.kb, &name, &req.kms, &operator_actor()).await }).await
}

async fn migrate_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::MigratePool = parse_body(&body)?;
    lifecycle(s, "pool_migrate", move |s| async move { pool_lifecycle::migrate(&s.kb, &name, &req.to, &operator_actor()).await }).await
}

async fn retire_pool_keys(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    lifecycle(s, "pool_retire_keys", move |s| async move { pool_lifecycle::retire_keys(&s.kb, &name, &operator_actor()).await }).await
}

async fn export_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::ExportPool = parse_body(&body)?;
    let started = Instant::now();
    let exported = async {
        let pass = keybridge_proto::escrow::Passphrase::new(req.passphrase).map_err(|e| Error::Input { what: "passphrase".into(), reason: e.to_string() })?;
        let (e, file) = crate::flows::escrow::export_bytes(&s.kb, &name, &pass, &operator_actor()).await?;
        let mut v = serde_json::to_value(e).unwrap_or_default();
        v["file"] = json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, file));
        Ok(v)
    }
    .await;
    s.finish("pool_export", "-", started, exported)
}

async fn import_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::ImportPool = parse_body(&body)?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, req.file.as_bytes())
        .map_err(|e| ApiError::new(ErrorKind::Input, format!("file: not standard base64 ({e})")))?;
    let pass = keybridge_proto::escrow::Passphrase::new(req.passphrase).map_err(|e| ApiError::new(ErrorKind::Input, format!("passphrase: {e}")))?;
    lifecycle(s, "pool_import", move |s| async move { crate::flows::escrow::import_bytes(&s.kb, &bytes, "in the request", Some(&name), &pass, &req.kms, &operator_actor()).await }).await
}

async fn shred_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::ShredPool = parse_body(&body)?;
    lifecycle(s, "pool_shred", move |s| async move { pool_lifecycle::shred(&s.kb, &name, &req.confirm, &operator_actor()).await }).await
}

async fn schedule_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::SchedulePool = parse_body(&body)?;
    let days = match (req.rotation_days, req.default) {
        (Some(days), false) => Some(days),
        (None, true) => None,
        _ => return Err(ApiError::new(ErrorKind::Input, "request body: give either rotation_days (0: never) or \"default\": true")),
    };
    let started = Instant::now();
    let schedule = pool_lifecycle::set_schedule(&s.kb, &name, days, &operator_actor()).await;
    s.finish("pool_schedule", "-", started, schedule)
}

async fn resume_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: api::ResumePool = if body.is_empty() { api::ResumePool::default() } else { parse_body(&body)? };
    lifecycle(s, "pool_resume", move |s| async move { pool_lifecycle::resume(&s.kb, &name, req.take_over.as_deref(), &operator_actor()).await }).await
}

async fn rekey_pool(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let req: RekeyPool = if body.is_empty() { RekeyPool::default() } else { parse_body(&body)? };
    if let Some(kms) = req.kms {
        return lifecycle(s, "pool_rekey", move |s| async move { pool_lifecycle::rekey_to(&s.kb, &name, req.kek_bits, &kms, &operator_actor()).await }).await;
    }
    let started = Instant::now();
    let pool = pool_lifecycle::rekey(&s.kb, &name, req.kek_bits, &operator_actor()).await.map(|p| p.to_json());
    s.finish("pool_rekey", "-", started, pool)
}

async fn register_client(State(s): State<Shared>, body: Bytes) -> ApiResult {
    let req: RegisterClient = parse_body(&body)?;
    let started = Instant::now();
    let c = clients::register_client(&s.kb, &req.name, &req.registration, &operator_actor())
        .await
        .map(|c| json!({ "name": c.name, "created_at": c.created_at }));
    s.finish("client_register", "-", started, c).map(|r| (StatusCode::CREATED, r).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct JobsQuery {
    client: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn list_jobs(State(s): State<Shared>, Query(q): Query<JobsQuery>) -> ApiResult {
    let started = Instant::now();
    let jobs = s.kb.catalog().list_jobs(q.client.as_deref(), q.limit.min(10_000)).await;
    s.finish("job_list", "-", started, jobs.map(|j| json!({ "jobs": j })))
}

async fn client_kdf(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let started = Instant::now();
    let c = s.kb.catalog().client_by_name(&name).await.map(|c| ClientKdf { client: c.name, salt: hex::encode(c.salt), kdf: c.kdf });
    s.finish("client_kdf", "-", started, c)
}

async fn issue_dek(State(s): State<Shared>, Extension(Caller(client)): Extension<Caller>, body: Bytes) -> ApiResult {
    let req: PoolRequest = parse_body(&body)?;
    let started = Instant::now();
    let kms = s.kms_of_pool(&req.pool).await;
    let grant = backup::issue_dek(&s.kb, &req.pool, &client, &Actor::Client(client.clone())).await;
    s.finish("dek_issue", &kms, started, grant)
}

async fn recover_dek(State(s): State<Shared>, Extension(Caller(client)): Extension<Caller>, Path(id): Path<String>) -> ApiResult {
    let started = Instant::now();
    let kms = match s.kb.catalog().dek(&id).await {
        Ok(d) => s.kb.catalog().pool_generation(d.pool_id, d.generation).await.map(|p| p.kms_name).unwrap_or_else(|_| "-".into()),
        Err(_) => "-".into(),
    };
    let grant = restore::recover_dek(&s.kb, &id, &client, &Actor::Client(client.clone())).await;
    s.finish("dek_recover", &kms, started, grant)
}

async fn start_job(State(s): State<Shared>, Extension(Caller(client)): Extension<Caller>, body: Bytes) -> ApiResult {
    let req: PoolRequest = parse_body(&body)?;
    let started = Instant::now();
    let kms = s.kms_of_pool(&req.pool).await;
    let job = backup::start_job(&s.kb, &req.pool, &client, &s.cfg.media_agent, &Actor::Client(client.clone()))
        .await
        .map(|(job, grant)| JobStarted { agent_token: s.agent_token(AgentOp::Put, &job.id, &client), job_id: job.id, media_agent: job.media_agent, grant });
    s.finish("job_start", &kms, started, job).map(|r| (StatusCode::CREATED, r).into_response())
}

async fn get_job(State(s): State<Shared>, Extension(Caller(client)): Extension<Caller>, Path(id): Path<String>) -> ApiResult {
    let started = Instant::now();
    let job = backup::own_job(&s.kb, &id, &client).await.map(|job| api::Job { agent_token: s.agent_token(AgentOp::Get, &job.id, &client), job });
    s.finish("job_get", "-", started, job)
}

async fn complete_job(State(s): State<Shared>, Extension(Caller(client)): Extension<Caller>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let req: api::CompleteJob = parse_body(&body)?;
    let started = Instant::now();
    s.finish("job_complete", "-", started, backup::complete_job(&s.kb, &id, &client, &req).await)
}

/// Run the service until `shutdown` resolves; in-flight requests finish
/// within the configured grace period.
pub async fn run(kb: Keybridge, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let service = Arc::new(Service::new(kb)?);
    let cfg = service.cfg.clone();
    let bad_tls = |reason: String| Error::Config { path: service.kb.config().source.clone(), reason: format!("[service] {reason}") };
    let tls = Arc::new(keybridge_net::tls::server_config(&cfg.cert, &cfg.key).map_err(bad_tls)?);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| Error::Io { context: "listening on", path: cfg.listen.clone().into(), source })?;
    crate::certs::log_warnings(&service.certs, keybridge_net::cert::now());
    let health = {
        let service = service.clone();
        let every = Duration::from_secs(cfg.health_interval_secs.max(1));
        tokio::spawn(async move {
            // Certificates near expiry are warned about at start (below)
            // and then once a day.
            let mut certs_checked = Instant::now();
            loop {
                if certs_checked.elapsed() >= CERT_WARNING_INTERVAL {
                    crate::certs::log_warnings(&service.certs, keybridge_net::cert::now());
                    certs_checked = Instant::now();
                }
                service.check_health().await;
                // Seal keys past their minute leave memory even when
                // their clients seal nothing more.
                service.kb.purge_sealers();
                tokio::time::sleep(every).await;
            }
        })
    };
    let rotation = {
        let service = service.clone();
        let every = Duration::from_secs(service.kb.config().lifecycle.rotation_check_secs.max(1));
        tokio::spawn(async move {
            // Changes a crash interrupted are finished or rolled back first.
            match crate::flows::journal::resume(&service.kb, None).await {
                Ok(done) => {
                    for r in done {
                        tracing::warn!(pool = %r.pool, operation = %r.operation, step = %r.step, outcome = r.outcome, "an interrupted key change was dealt with at start");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not finish or roll back the interrupted key changes; the next command on each pool tries again"),
            }
            let actor = Actor::Operator("schedule".into());
            loop {
                match pool_lifecycle::rotate_due(&service.kb, keybridge_net::cert::now(), &actor).await {
                    Ok(done) => {
                        for (pool, r) in done {
                            service.metrics.rotation(&pool, r.is_ok());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not look for pools due for rotation"),
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    tracing::info!(listen = %cfg.listen, "keybridge service listening");
    eprintln!("keybridge: service listening on https://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or(cfg.listen.clone()));
    let left = keybridge_net::http::serve(listener, Some(tls), router(service), shutdown, Duration::from_secs(cfg.shutdown_grace_secs), keybridge_net::http::WRITE_STALL_TIMEOUT).await;
    health.abort();
    rotation.abort();
    if left > 0 {
        tracing::warn!(connections = left, "grace period over with connections still open");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_state_before_and_after_a_probe() {
        let health = |state| KmsHealth { name: "hsm".into(), kind: "pkcs11", state, reachable: false, detail: String::new(), checked_at: None };
        assert_eq!(serde_json::to_value(health(None)).unwrap()["state"], "unknown");
        assert_eq!(serde_json::to_value(health(Some(ProbeStatus::Usable))).unwrap()["state"], "usable");
        assert_eq!(serde_json::to_value(health(Some(ProbeStatus::Unusable))).unwrap()["state"], "unusable");
    }
}
