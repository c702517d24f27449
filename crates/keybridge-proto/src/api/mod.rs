//! The service's HTTP API as data: request and response bodies, and the
//! request signature both sides compute. No I/O here; `service` serves it and
//! `client` calls it. The routes are listed in [`ROUTES`] and documented in
//! `docs/openapi.json` (a test keeps the two equal).

pub mod agent_token;
pub mod auth;

use serde::{Deserialize, Serialize};

use crate::seal::KdfParams;

/// Every route the service answers: (method, path template, role).
pub const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/healthz", Role::Public),
    ("GET", "/metrics", Role::Public),
    ("GET", "/v1/pools", Role::Operator),
    ("POST", "/v1/pools", Role::Operator),
    ("GET", "/v1/pools/{name}", Role::Operator),
    ("POST", "/v1/pools/{name}/rekey", Role::Operator),
    ("POST", "/v1/pools/{name}/rotate", Role::Operator),
    ("POST", "/v1/pools/{name}/wrap", Role::Operator),
    ("POST", "/v1/pools/{name}/unwrap", Role::Operator),
    ("POST", "/v1/pools/{name}/migrate", Role::Operator),
    ("POST", "/v1/pools/{name}/retire-keys", Role::Operator),
    ("POST", "/v1/pools/{name}/shred", Role::Operator),
    ("POST", "/v1/pools/{name}/export", Role::Operator),
    ("POST", "/v1/pools/{name}/import", Role::Operator),
    ("POST", "/v1/pools/{name}/schedule", Role::Operator),
    ("POST", "/v1/pools/{name}/resume", Role::Operator),
    ("POST", "/v1/clients", Role::Operator),
    ("GET", "/v1/jobs", Role::Operator),
    ("GET", "/v1/clients/{name}/kdf", Role::Public),
    ("POST", "/v1/deks", Role::Client),
    ("POST", "/v1/deks/{id}/recover", Role::Client),
    ("POST", "/v1/jobs", Role::Client),
    ("GET", "/v1/jobs/{id}", Role::Client),
    ("POST", "/v1/jobs/{id}/complete", Role::Client),
];

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No authentication (health, metrics, a client's public KDF salt).
    Public,
    /// `Authorization: Bearer <operator token>`.
    Operator,
    /// A request signed with the client's password-derived key.
    Client,
}

/// `POST /v1/pools`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    pub name: String,
    pub kms: String,
    #[serde(default = "default_kek_bits")]
    pub kek_bits: usize,
}

fn default_kek_bits() -> usize {
    3072
}

/// `POST /v1/pools/{name}/rekey` (the body may be empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RekeyPool {
    /// Size of the new KEK; default: that of the newest generation.
    #[serde(default)]
    pub kek_bits: Option<usize>,
    /// Make the new generation under a new master key in this KMS; the
    /// answer is then the change's report.
    #[serde(default)]
    pub kms: Option<String>,
}

/// `POST /v1/pools/{name}/wrap` and `/unwrap`: the KMS to add a wrapping
/// in, or to remove the pool's wrappings from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolKms {
    pub kms: String,
}

/// `POST /v1/pools/{name}/migrate`: the KMS to move the pool to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePool {
    pub to: String,
}

/// `POST /v1/pools/{name}/schedule`: how often `keybridge serve` rotates
/// the pool, as `pool schedule` sets it: `rotation_days` (0: never), or
/// `default: true` for the configuration's `[lifecycle] rotation_days`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePool {
    #[serde(default)]
    pub rotation_days: Option<u32>,
    #[serde(default)]
    pub default: bool,
}

/// `POST /v1/pools/{name}/resume` (the body may be empty): finish or roll
/// back the pool's unfinished change, as `pool resume` does; with
/// `take_over`, first take it over from that owner (`host:pid:start`,
/// exactly as `GET /v1/pools/{name}` names it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumePool {
    #[serde(default)]
    pub take_over: Option<String>,
}

/// `POST /v1/pools/{name}/shred`: the pool's name again, to confirm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShredPool {
    pub confirm: String,
}

/// `POST /v1/pools/{name}/export`: the passphrase to seal the escrow file
/// under (at least 12 characters). Never written back or logged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPool {
    pub passphrase: crate::secret::SecretString,
}

/// `POST /v1/pools/{name}/import`: an escrow file (standard base64), its
/// passphrase, and the KMS to wrap its KEK generations in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportPool {
    pub file: String,
    pub passphrase: crate::secret::SecretString,
    pub kms: String,
}

/// `POST /v1/clients`: the public material the client derived from its
/// password (the password never crosses the network).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterClient {
    pub name: String,
    #[serde(flatten)]
    pub registration: crate::seal::Registration,
}

/// `GET /v1/clients/{name}/kdf`: what a client needs to derive its keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientKdf {
    pub client: String,
    pub salt: String,
    pub kdf: KdfParams,
}

/// `POST /v1/deks` and `POST /v1/jobs`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRequest {
    pub pool: String,
}

/// `POST /v1/jobs` answer: the job, its DEK sealed for the client, the
/// MediaAgent to stream to and the token that lets it upload there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStarted {
    pub job_id: String,
    pub media_agent: String,
    pub grant: DekGrant,
    /// `put` token for this job at the MediaAgent ([`agent_token`]).
    pub agent_token: String,
}

/// `POST /v1/jobs/{id}/complete`
pub type CompleteJob = JobCompletion;

/// `GET /v1/jobs/{id}` answer: the job record and the token that lets its
/// owner download the stream from the MediaAgent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(flatten)]
    pub job: JobRecord,
    /// `get` token for this job at the MediaAgent ([`agent_token`]).
    pub agent_token: String,
}

/// Every error answer: `{"error": {"kind": ..., "message": ..., "retriable": true}}`
/// (`retriable` only when true).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub kind: crate::ErrorKind,
    pub message: String,
    /// The same request may succeed later with nobody changing anything
    /// (a KMS that is unreachable or failing for now, a per-client limit);
    /// nothing was changed by this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retriable: bool,
}

/// What the client receives for a DEK: the DEK only sealed under its
/// network password, with the ids it is bound to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DekGrant {
    pub dek_id: String,
    pub pool: String,
    pub client: String,
    pub sealed_dek: String,
    pub created_at: String,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Complete,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Complete => "complete",
        }
    }
}

/// What the client reports when the MediaAgent has stored its stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCompletion {
    pub stream_bytes: u64,
    pub stream_checksum: String,
    pub plain_bytes: u64,
    pub files: u64,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub pool: String,
    pub client: String,
    pub dek_id: String,
    pub media_agent: String,
    pub state: JobState,
    #[serde(flatten)]
    pub completion: Option<JobCompletion>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

