//! The one joint between keybridge and a key-management system.
//!
//! A [`KeyBackend`] holds master keys (MKs) and performs every operation that
//! needs one: creating the MK, producing a KEK pair whose private half comes
//! out only wrapped by the MK, and decrypting a DEK with that wrapped KEK.
//! Implementations: [`builtin`] (software, root key file), [`pkcs11`]
//! (HSMs through cryptoki) and [`kmip`] (KMIP appliances over mutual TLS),
//! each configured by its `[[kms]]` entry ([`config`]); [`crypto`] holds the
//! software primitives they share (AES key wrap, RSA-OAEP).
//!
//! It knows nothing of pools as stored, clients, jobs or the wire: it
//! depends on keybridge-proto (secrets, the error), keybridge-kmip (the
//! codec) and keybridge-net (TLS configuration), never on the catalog, the
//! flows or the service.

pub mod builtin;
mod cache;
pub mod config;
pub mod crypto;
pub mod kmip;
pub mod pkcs11;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::KmsConfig;
use crate::crypto::{CryptoError, OaepHash};

/// How the catalog finds a master key again.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeyRef {
    /// Identifier inside the KMS (PKCS#11: hex CKA_ID; built-in: UUID).
    pub id: String,
    /// Human-readable label (PKCS#11 CKA_LABEL), so operators find the key.
    pub label: String,
    /// Built-in KMS only: the MK sealed under the root key (the seed's
    /// "scrambled master key"). `None` for hardware backends.
    pub material: Option<Vec<u8>>,
    /// True when keybridge created the key (and may destroy it on rollback).
    pub owned: bool,
}

impl fmt::Debug for MasterKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyRef")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("material", &self.material.as_ref().map(|m| format!("<{} sealed bytes>", m.len())))
            .field("owned", &self.owned)
            .finish()
    }
}

/// A freshly generated KEK: public half in clear, private half wrapped.
#[derive(Debug, Clone)]
pub struct NewKek {
    pub bits: usize,
    /// SubjectPublicKeyInfo DER.
    pub public_spki: Vec<u8>,
    /// The private half (PKCS#8) wrapped under the MK.
    pub wrapped_private: Vec<u8>,
    /// Name of the wrapping mechanism, e.g. `CKM_AES_KEY_WRAP_KWP`.
    pub wrap_mechanism: String,
    /// The OAEP hash the KMS can decrypt with (probed).
    pub oaep_hash: OaepHash,
    /// Exact mechanisms and parameters, recorded with the pool.
    pub params: serde_json::Value,
}

/// What a backend needs to decrypt a DEK of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolKek<'a> {
    /// Catalog id of the pool; the cache key for the unwrapped KEK.
    pub pool_id: i64,
    pub pool_name: &'a str,
    pub master_key: &'a MasterKeyRef,
    pub wrapped_private: &'a [u8],
    pub wrap_mechanism: &'a str,
    pub oaep_hash: OaepHash,
}

/// What a DEK's RSA-OAEP ciphertext decrypts to: the DEK envelope (the DEK
/// and its binding to its catalog row; the flows' `envelope` module builds
/// and opens it). Zeroized on drop, not `Clone`, never printed.
pub struct DekPlaintext(Zeroizing<Vec<u8>>);

impl DekPlaintext {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        DekPlaintext(bytes)
    }

    /// The envelope's bytes, for the one place that opens it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DekPlaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DekPlaintext(<{} bytes>)", self.0.len())
    }
}

/// Result of a capability and health probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub name: String,
    pub kind: &'static str,
    /// `usable` or `unusable`.
    pub state: &'static str,
    /// Stable description of what the KMS is (token label + serial, ...).
    pub identity: String,
    /// Backend-specific details: mechanisms chosen, OAEP hash, limits.
    pub details: serde_json::Value,
}

/// Errors of a backend. Messages name the operation and object; they never
/// contain key material or PINs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A PKCS#11 function returned an error.
    #[error("{function} failed while {doing}: {rv}{hint}")]
    Pkcs11 {
        function: String,
        rv: String,
        doing: String,
        hint: &'static str,
    },
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {reason}")]
    Module { module: String, reason: String },
    /// No token matches the configuration.
    #[error("no token with {wanted} in module {module} (tokens present: {present})")]
    TokenNotFound { wanted: String, module: String, present: String },
    /// Login refused.
    #[error("login to token '{token}' refused: {reason}")]
    Login { token: String, reason: String },
    /// The PIN could not be obtained.
    #[error("PIN for KMS '{kms}': {reason}")]
    Pin { kms: String, reason: String },
    /// The master key named by the catalog is not in the KMS.
    #[error("master key {label} (id {id}) is not in the KMS: deleted, or the configuration points at another token")]
    MasterKeyMissing { id: String, label: String },
    /// The master key exists but is not usable as a master key.
    #[error("master key {label}: {reason}")]
    MasterKeyUnfit { label: String, reason: String },
    /// The wrapped private KEK did not unwrap under the MK.
    #[error("wrapped KEK of pool '{pool}' did not unwrap under master key {mk}: the blob is tampered or corrupted, or belongs to another master key ({detail})")]
    KekUnwrap { pool: String, mk: String, detail: String },
    /// The encrypted DEK did not decrypt under the pool's KEK.
    #[error("encrypted DEK does not decrypt under the KEK of pool '{pool}': it was tampered with, corrupted, or belongs to another pool ({detail})")]
    DekDecrypt { pool: String, detail: String },
    /// The KMS lacks something keybridge needs.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An operation did not finish in time.
    #[error("{operation} did not finish within {secs} s; the session was discarded")]
    Timeout { operation: String, secs: u64 },
    /// A software primitive used by the backend failed.
    #[error("{context}: {source}")]
    Crypto {
        context: String,
        #[source]
        source: CryptoError,
    },
    /// A KMIP server failed or refused.
    #[error("{0}")]
    Kmip(String),
    /// Root key file problems (built-in KMS).
    #[error("root key {path}: {reason}")]
    RootKey { path: String, reason: String },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// The one trait every KMS implements.
#[async_trait]
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// The `[[kms]]` name.
    fn name(&self) -> &str;
    /// `pkcs11`, `builtin`, ...
    fn kind(&self) -> &'static str;

    /// Stable description of the KMS instance (token label and serial, root
    /// key path, ...), recorded in the catalog on first use.
    fn identity(&self) -> String;

    /// Learn what the KMS can do and whether it is healthy.
    async fn probe(&self) -> Result<ProbeReport, BackendError>;

    /// Create a new master key, labelled so operators can find it.
    async fn create_master_key(&self, label: &str) -> Result<MasterKeyRef, BackendError>;

    /// Adopt an existing master key named by a KMS-specific reference (a
    /// PKCS#11 URI). The key is checked to be fit (sensitive, not
    /// extractable, can wrap and unwrap).
    async fn adopt_master_key(&self, reference: &str) -> Result<MasterKeyRef, BackendError> {
        let _ = reference;
        Err(BackendError::Unsupported(format!("KMS kind '{}' cannot adopt an existing master key", self.kind())))
    }

    /// Generate a KEK pair of `bits` and return its public half and its
    /// private half wrapped under `mk`. The private half never leaves the
    /// KMS unwrapped where the KMS can generate keys itself.
    async fn generate_kek(&self, mk: &MasterKeyRef, bits: usize) -> Result<NewKek, BackendError>;

    /// Decrypt an RSA-OAEP encrypted DEK with the pool's KEK. The unwrapped
    /// KEK is cached per pool for the configured TTL.
    async fn decrypt_dek(&self, kek: &PoolKek<'_>, encrypted: &[u8]) -> Result<DekPlaintext, BackendError>;

    /// Destroy a master key created by keybridge (rollback of a failed pool
    /// creation, or pool deletion).
    async fn destroy_master_key(&self, mk: &MasterKeyRef) -> Result<(), BackendError>;

    /// Drop every cached unwrapped KEK.
    async fn clear_cache(&self);

    /// KEK cache (hits, misses) since the backend was opened.
    fn cache_stats(&self) -> (u64, u64);
}

/// Open the backend for a `[[kms]]` entry.
pub async fn open(config: &KmsConfig) -> Result<Arc<dyn KeyBackend>, BackendError> {
    Ok(match config {
        KmsConfig::Builtin(c) => Arc::new(builtin::BuiltinBackend::open(c)?),
        KmsConfig::Pkcs11(c) => Arc::new(pkcs11::Pkcs11Backend::open(c).await?),
        KmsConfig::Kmip(c) => Arc::new(kmip::KmipBackend::open(c)?),
    })
}
