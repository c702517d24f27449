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

/// A KEK's private half wrapped under a master key (a wrapping to store).
#[derive(Debug, Clone)]
pub struct WrappedKek {
    pub wrapped: Vec<u8>,
    /// Name of the wrapping mechanism, as in [`NewKek::wrap_mechanism`].
    pub wrap_mechanism: String,
}

/// A master key as its KMS sees it now, for `pool show`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    /// The KMS holds the key.
    pub present: bool,
    /// The KMS's own state name (KMIP: `Active`, `Deactivated`, ...), where
    /// it has states.
    pub state: Option<String>,
    /// Backend-specific facts (KMIP dates; PKCS#11 attributes).
    pub details: serde_json::Value,
}

/// Check that `pkcs8` is the private half of `public_spki`: what a KMS
/// is asked to wrap, or gave back, is the generation's KEK.
pub fn check_kek_pair(pkcs8: &[u8], public_spki: &[u8]) -> Result<(), BackendError> {
    let private = crypto::PrivateKek::from_pkcs8_der(pkcs8).map_err(|source| BackendError::Crypto { context: "reading a private KEK".into(), source })?;
    let public = private.public().to_spki_der().map_err(|source| BackendError::Crypto { context: "encoding a public KEK".into(), source })?;
    if public != public_spki {
        return Err(BackendError::Other("the private KEK does not belong to the generation's public KEK".into()));
    }
    Ok(())
}

/// What a backend needs to decrypt a DEK of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolKek<'a> {
    /// Catalog id of the pool and the KEK generation: the cache key for
    /// the unwrapped KEK.
    pub pool_id: i64,
    pub generation: u32,
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

/// Whether a probed KMS can serve keybridge. Serialised in lowercase
/// (`"usable"`, `"unusable"`), as `kms probe --json` and the service's
/// health answer show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    /// The KMS answered and offers everything keybridge needs.
    Usable,
    /// The KMS did not answer, or lacks something keybridge needs; the
    /// report's details or the error say what.
    Unusable,
}

impl ProbeStatus {
    /// The name in reports and JSON: `usable` or `unusable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::Usable => "usable",
            ProbeStatus::Unusable => "unusable",
        }
    }

    pub fn is_usable(self) -> bool {
        self == ProbeStatus::Usable
    }
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of a capability and health probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub name: String,
    pub kind: &'static str,
    pub state: ProbeStatus,
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
    /// A PKCS#11 function returned an error, e.g. "C_Decrypt failed while
    /// decrypting a DEK of pool 'p': CKR_DEVICE_REMOVED (the token is not
    /// present)".
    #[error("{} failed while {doing}: {}{}", pkcs11::rv::function_name(*.function), pkcs11::rv::ckr_name(*.rv), pkcs11::rv::hint(*.rv))]
    Pkcs11 {
        /// The C function that failed.
        function: cryptoki::context::Function,
        /// What it returned.
        rv: cryptoki::error::RvError,
        /// What keybridge was doing.
        doing: String,
    },
    /// cryptoki failed around a PKCS#11 call without a return value from the
    /// module (a conversion, a missing function, a value it does not know).
    #[error("{doing}: {source}")]
    Cryptoki {
        doing: String,
        #[source]
        source: cryptoki::error::Error,
    },
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {reason}")]
    Module { module: String, reason: String },
    /// The PKCS#11 module went away (its sessions could not be reopened,
    /// or it lists no token) and initialising it again failed or did not
    /// bring the token back; tried again at most once a second.
    #[error("PKCS#11 module {module} is down ({reason}, {since_secs} s ago); keybridge initialises it again on the next call, at most once a second")]
    ModuleDown { module: String, since_secs: u64, reason: String },
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
    /// Destroying a master key keybridge did not create (an adopted one)
    /// is refused.
    #[error("master key {label} was adopted, not created by keybridge; refusing to destroy it")]
    MasterKeyNotOwned { label: String },
    /// The token's answer lacks attributes it was asked for.
    #[error("the token did not return {what}")]
    AttributesMissing { what: &'static str },
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
    /// Work handed to a blocking thread (key generation, a software
    /// decryption, opening a token) panicked or was cancelled.
    #[error("{task} failed: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A software primitive used by the backend failed.
    #[error("{context}: {source}")]
    Crypto {
        context: String,
        #[source]
        source: CryptoError,
    },
    /// A KMIP server failed or refused, or its answer lacks what the
    /// operation returns.
    #[error(transparent)]
    Kmip(#[from] kmip::client::KmipError),
    /// Root key file problems (built-in KMS).
    #[error("root key {path}: {reason}")]
    RootKey { path: String, reason: String },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// Whether the same request may succeed later with nobody changing
    /// anything (a token re-inserted, a KMIP server back, an overloaded HSM
    /// answering again). Decided by the typed cause: the PKCS#11 return
    /// value (the PKCS#11 retry table), the KMIP client's error
    /// ([`kmip::client::KmipError::is_transient`]), and a timeout. Everything
    /// else is not: configuration and module loading; a token no slot holds
    /// (an absent token cannot be told from a wrong label); a refused login
    /// whatever code refused it (retrying a PIN only burns tries, and
    /// keybridge does not retry one; a login that failed with a transient
    /// code is a failed call instead, `pkcs11::rv::refuses_login`); missing
    /// or unfit keys; data that does not
    /// decrypt; and messages keybridge cannot classify.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Pkcs11 { rv, .. } => pkcs11::rv::is_transient(*rv),
            BackendError::Kmip(e) => e.is_transient(),
            BackendError::Timeout { .. } | BackendError::ModuleDown { .. } => true,
            BackendError::Cryptoki { .. }
            | BackendError::Module { .. }
            | BackendError::TokenNotFound { .. }
            | BackendError::Login { .. }
            | BackendError::Pin { .. }
            | BackendError::MasterKeyMissing { .. }
            | BackendError::MasterKeyUnfit { .. }
            | BackendError::MasterKeyNotOwned { .. }
            | BackendError::AttributesMissing { .. }
            | BackendError::Task { .. }
            | BackendError::KekUnwrap { .. }
            | BackendError::DekDecrypt { .. }
            | BackendError::Unsupported(_)
            | BackendError::Crypto { .. }
            | BackendError::RootKey { .. }
            | BackendError::Other(_) => false,
        }
    }
}

impl keybridge_proto::error::BackendFault for BackendError {
    fn is_transient(&self) -> bool {
        BackendError::is_transient(self)
    }
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

    /// Whether this KMS can give a KEK's private half back to keybridge,
    /// to move it to another KMS or escrow it (`Err`: why not).
    fn kek_release(&self) -> Result<(), String> {
        Ok(())
    }

    /// The private half (PKCS#8 DER) of a KEK wrapped in this KMS. Refused
    /// where [`KeyBackend::kek_release`] says why.
    async fn release_kek(&self, kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError>;

    /// Whether this KMS can decrypt DEKs encrypted with RSA-OAEP over
    /// `hash` (`Err`: why not); asked before a KEK generation moves here.
    async fn accepts_oaep(&self, hash: OaepHash) -> Result<(), String> {
        let _ = hash;
        Ok(())
    }

    /// Wrap a KEK's private half (PKCS#8 DER) under `mk` in this KMS, and
    /// check that the wrapping unwraps, under `mk`, to the private half of
    /// `public_spki`, which decrypts RSA-OAEP over `hash` here.
    async fn wrap_kek(&self, mk: &MasterKeyRef, pkcs8: &[u8], public_spki: &[u8], hash: OaepHash) -> Result<WrappedKek, BackendError>;

    /// Check an existing wrapping as [`KeyBackend::wrap_kek`] checks a new
    /// one: `kek` unwraps, under its master key, to the private half of
    /// `public_spki`, which decrypts RSA-OAEP over `kek.oaep_hash` here.
    /// Asked of the KMS each time, never answered from a cache.
    async fn verify_kek(&self, kek: &PoolKek<'_>, public_spki: &[u8]) -> Result<(), BackendError> {
        let pkcs8 = self.release_kek(kek).await?;
        check_kek_pair(&pkcs8, public_spki).map_err(|e| BackendError::Other(format!("wrapped KEK of pool '{}' under master key {}: {e}", kek.pool_name, kek.master_key.label)))
    }

    /// Move a KEK's wrapping from its master key to `to`, another master key
    /// of this KMS (rotation), checked as [`KeyBackend::wrap_kek`] checks.
    async fn rewrap_kek(&self, kek: &PoolKek<'_>, to: &MasterKeyRef, public_spki: &[u8]) -> Result<WrappedKek, BackendError> {
        let pkcs8 = self.release_kek(kek).await?;
        self.wrap_kek(to, &pkcs8, public_spki, kek.oaep_hash).await
    }

    /// Mark `mk` deactivated where the KMS has states (KMIP: Revoke with
    /// Cessation of Operation): it may still unwrap, never wrap. Elsewhere
    /// the catalog alone holds the state. Done already is not an error.
    async fn deactivate_master_key(&self, mk: &MasterKeyRef) -> Result<(), BackendError> {
        let _ = mk;
        Ok(())
    }

    /// What the KMS says of `mk` now.
    async fn master_key_status(&self, mk: &MasterKeyRef) -> Result<KeyStatus, BackendError>;

    /// Destroy the master keys keybridge made with `label` (a change whose
    /// key was made but not yet recorded is rolled back by label); returns
    /// how many were destroyed.
    async fn destroy_master_keys_labelled(&self, label: &str) -> Result<usize, BackendError> {
        let _ = label;
        Ok(0)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_status_is_written_in_lowercase() {
        for (status, name) in [(ProbeStatus::Usable, "usable"), (ProbeStatus::Unusable, "unusable")] {
            assert_eq!(serde_json::to_value(status).unwrap(), name);
            assert_eq!(status.to_string(), name);
        }
        let report = ProbeReport {
            name: "hsm".into(),
            kind: "pkcs11",
            state: ProbeStatus::Unusable,
            identity: "pkcs11:token=t".into(),
            details: serde_json::json!({}),
        };
        assert_eq!(serde_json::to_value(&report).unwrap()["state"], "unusable");
        assert!(ProbeStatus::Usable.is_usable() && !ProbeStatus::Unusable.is_usable());
    }

    fn pkcs11(rv: cryptoki::error::RvError) -> BackendError {
        BackendError::Pkcs11 { function: cryptoki::context::Function::Decrypt, rv, doing: "decrypting a DEK of pool 'p'".into() }
    }

    #[test]
    fn pkcs11_errors_read_as_before() {
        use cryptoki::error::{Error as CkError, RvError};
        assert_eq!(
            pkcs11(RvError::DeviceRemoved).to_string(),
            "C_Decrypt failed while decrypting a DEK of pool 'p': CKR_DEVICE_REMOVED (the token is not present)"
        );
        assert_eq!(pkcs11(RvError::FunctionFailed).to_string(), "C_Decrypt failed while decrypting a DEK of pool 'p': CKR_FUNCTION_FAILED");
        let e = BackendError::Cryptoki { doing: "reading mechanism information".into(), source: CkError::NotSupported };
        assert_eq!(e.to_string(), "reading mechanism information: Feature not supported");
    }

    fn all_failed(failures: Vec<kmip::client::Failure>) -> BackendError {
        let failures = failures
            .into_iter()
            .enumerate()
            .map(|(i, failure)| kmip::client::ServerFailure { server: format!("kmip{i}:5696"), failure })
            .collect();
        BackendError::Kmip(kmip::client::KmipError::AllServersFailed(failures))
    }

    #[test]
    fn kmip_errors_read_as_before() {
        use kmip::client::{Failure, KmipError};
        let e = all_failed(vec![Failure::Connect(std::io::ErrorKind::ConnectionRefused.into()), Failure::Timeout(10)]);
        assert_eq!(e.to_string(), "no KMIP server could serve the request: kmip0:5696: cannot connect: connection refused; kmip1:5696: no answer within 10 s");
        let missing = || keybridge_kmip::messages::ResponseError("no Key Block in the Get response".into());
        assert_eq!(BackendError::from(KmipError::incomplete(missing())).to_string(), "no Key Block in the Get response");
        let e = BackendError::from(KmipError::Incomplete { context: Some("Get of master key mk".into()), source: missing() });
        assert_eq!(e.to_string(), "Get of master key mk: no Key Block in the Get response");
    }

    #[test]
    fn transient_errors() {
        use cryptoki::error::RvError;
        use keybridge_kmip::messages::ResponseError;
        use kmip::client::{Failure, KmipError};
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let table = [
            (pkcs11(RvError::DeviceRemoved), true),
            (pkcs11(RvError::TokenNotPresent), true),
            (pkcs11(RvError::SessionClosed), true),
            (pkcs11(RvError::FunctionFailed), true),
            (pkcs11(RvError::CryptokiNotInitialized), true),
            (pkcs11(RvError::DeviceError), true),
            (BackendError::ModuleDown { module: "p11-kit-client.so".into(), since_secs: 0, reason: "CKR_DEVICE_ERROR".into() }, true),
            (pkcs11(RvError::PinIncorrect), false),
            (pkcs11(RvError::GeneralError), false),
            (BackendError::Timeout { operation: "decrypting a DEK".into(), secs: 30 }, true),
            (all_failed(vec![Failure::Connect(refused())]), true),
            (all_failed(vec![Failure::Refused("no".into()), Failure::Timeout(10)]), true),
            (all_failed(vec![Failure::Refused("no".into())]), false),
            // A certificate or a TLS setting stays wrong until an operator acts.
            (all_failed(vec![Failure::TlsRefused { cause: keybridge_net::tls::TlsCause::Expired, message: "certificate expired".into() }]), false),
            (all_failed(vec![Failure::TlsRefused { cause: keybridge_net::tls::TlsCause::NoSharedVersion, message: "no TLS version in common".into() }]), false),
            (all_failed(vec![Failure::TlsRefused { cause: keybridge_net::tls::TlsCause::Other, message: "handshake broke off".into() }]), true),
            (all_failed(vec![]), false),
            (
                BackendError::Kmip(KmipError::Refused { server: "kmip0:5696".into(), operation: "Decrypt".into(), reason: "Permission Denied".into(), code: Some(0x0C) }),
                false,
            ),
            (BackendError::Kmip(KmipError::incomplete(ResponseError("no Data in the response".into()))), false),
            (BackendError::Login { token: "keybridge".into(), reason: "CKR_PIN_INCORRECT (wrong PIN)".into() }, false),
            (BackendError::MasterKeyMissing { id: "00".into(), label: "mk".into() }, false),
            (BackendError::MasterKeyNotOwned { label: "mk".into() }, false),
            (BackendError::AttributesMissing { what: "the public KEK's modulus and exponent" }, false),
            (BackendError::Other("anything".into()), false),
        ];
        for (e, transient) in table {
            let what = e.to_string();
            assert_eq!(e.is_transient(), transient, "{what}");
            // And through the top-level error, which does not know BackendError.
            assert_eq!(keybridge_proto::Error::backend("kms")(e).is_transient(), transient, "{what}");
        }
    }

    #[tokio::test]
    async fn recurring_conditions_read_as_before() {
        let e = BackendError::MasterKeyNotOwned { label: "keybridge-mk-p".into() };
        assert_eq!(e.to_string(), "master key keybridge-mk-p was adopted, not created by keybridge; refusing to destroy it");
        let e = BackendError::AttributesMissing { what: "the public KEK's modulus and exponent" };
        assert_eq!(e.to_string(), "the token did not return the public KEK's modulus and exponent");
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = BackendError::Task { task: "KEK generation task", source: task.await.unwrap_err() };
        let (message, transient) = (e.to_string(), e.is_transient());
        assert!(message.starts_with("KEK generation task failed: task ") && message.ends_with(" was cancelled"), "{message}");
        assert!(!transient);
    }
}
