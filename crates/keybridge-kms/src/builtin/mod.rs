//! The built-in software KMS: the embedded default for a first run.
//!
//! A 32-byte root key lives in a file readable only by its owner (0600). Each
//! master key is 32 random bytes sealed under the root key with AES key wrap
//! with padding (RFC 5649) and stored in the catalog beside its pool: the
//! seed's "scrambled master key". KEKs are generated in software and their
//! PKCS#8 is wrapped under the MK with the same RFC 5649 algorithm the
//! PKCS#11 backend asks the token for, so the catalog format is the same.
//!
//! This backend is as strong as the root key file's protection; use an HSM
//! or KMIP appliance where that is not enough.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::cache::SoftwareKeks;
use super::{BackendError, DekPlaintext, KeyBackend, KeyStatus, MasterKeyRef, NewKek, PoolKek, ProbeReport, ProbeStatus, WrappedKek};
use crate::config::BuiltinConfig;
use crate::crypto::{kwp, OaepHash, PrivateKek};

/// Mechanism name recorded for pools of this backend.
pub const WRAP_MECHANISM: &str = "RFC5649-AES256-KWP";

const ROOT_KEY_LEN: usize = 32;

/// The built-in KMS.
pub struct BuiltinBackend {
    name: String,
    root_key_path: PathBuf,
    root_key: Zeroizing<[u8; ROOT_KEY_LEN]>,
    keks: SoftwareKeks,
}

impl std::fmt::Debug for BuiltinBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinBackend")
            .field("name", &self.name)
            .field("root_key_path", &self.root_key_path)
            .finish_non_exhaustive()
    }
}

fn root_err(path: &Path, reason: impl Into<String>) -> BackendError {
    BackendError::RootKey { path: path.display().to_string(), reason: reason.into() }
}

/// Create a new root key file (mode 0600). Refuses to overwrite one.
pub fn create_root_key(path: &Path) -> Result<(), BackendError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| root_err(path, format!("cannot create directory: {e}")))?;
    }
    let key = crate::crypto::random_array::<ROOT_KEY_LEN>()
        .map_err(|source| BackendError::Crypto { context: "generating root key".into(), source })?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => root_err(path, "exists already; refusing to overwrite a root key"),
            _ => root_err(path, format!("cannot create: {e}")),
        })?;
    file.write_all(&key[..])
        .and_then(|_| file.sync_all())
        .map_err(|e| root_err(path, format!("cannot write: {e}")))?;
    Ok(())
}

fn load_root_key(path: &Path) -> Result<Zeroizing<[u8; ROOT_KEY_LEN]>, BackendError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => root_err(path, "does not exist; run `keybridge init`"),
        _ => root_err(path, format!("cannot read: {e}")),
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(root_err(
            path,
            format!("mode {mode:o} lets other users read it; run `chmod 600 {}`", path.display()),
        ));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| root_err(path, format!("cannot read: {e}")))?);
    let key: [u8; ROOT_KEY_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| root_err(path, format!("is {} bytes, expected {ROOT_KEY_LEN}", bytes.len())))?;
    Ok(Zeroizing::new(key))
}

impl BuiltinBackend {
    pub fn open(config: &BuiltinConfig) -> Result<Self, BackendError> {
        Ok(BuiltinBackend {
            name: config.name.clone(),
            root_key_path: config.root_key.clone(),
            root_key: load_root_key(&config.root_key)?,
            keks: SoftwareKeks::new(config.kek_cache_ttl()),
        })
    }

    fn unseal_master_key(&self, mk: &MasterKeyRef) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let sealed = mk.material.as_deref().ok_or_else(|| BackendError::MasterKeyMissing {
            id: mk.id.clone(),
            label: mk.label.clone(),
        })?;
        kwp::unwrap(&self.root_key[..], sealed).map_err(|e| BackendError::MasterKeyUnfit {
            label: mk.label.clone(),
            reason: format!(
                "sealed master key does not open under root key {}: wrong root key file, or the catalog row was altered ({e})",
                self.root_key_path.display()
            ),
        })
    }

    /// The PKCS#8 of a pool's KEK: unseal the MK, unwrap the blob.
    fn unwrap_kek(&self, kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if kek.wrap_mechanism != WRAP_MECHANISM {
            return Err(BackendError::Unsupported(format!(
                "pool '{}' was wrapped with {}, which the built-in KMS does not use",
                kek.pool_name, kek.wrap_mechanism
            )));
        }
        let mk = self.unseal_master_key(kek.master_key)?;
        kwp::unwrap(&mk, kek.wrapped_private).map_err(|e| BackendError::KekUnwrap {
            pool: kek.pool_name.to_owned(),
            mk: kek.master_key.label.clone(),
            detail: e.to_string(),
        })
    }
}

#[async_trait]
impl KeyBackend for BuiltinBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn identity(&self) -> String {
        format!("builtin:{}", self.root_key_path.display())
    }

    async fn probe(&self) -> Result<ProbeReport, BackendError> {
        // Re-read the file: a probe reports the state on disk now.
        load_root_key(&self.root_key_path)?;
        Ok(ProbeReport {
            name: self.name.clone(),
            kind: self.kind(),
            state: ProbeStatus::Usable,
            identity: self.identity(),
            details: serde_json::json!({
                "root_key": self.root_key_path.display().to_string(),
                "wrap_mechanism": WRAP_MECHANISM,
                "oaep_hash": OaepHash::Sha256,
                "kek_generation": "software",
            }),
        })
    }

    async fn create_master_key(&self, label: &str) -> Result<MasterKeyRef, BackendError> {
        let mk = crate::crypto::random_array::<32>()
            .map_err(|source| BackendError::Crypto { context: "generating master key".into(), source })?;
        let sealed = kwp::wrap(&self.root_key[..], &mk[..])
            .map_err(|source| BackendError::Crypto { context: "sealing master key under the root key".into(), source })?;
        Ok(MasterKeyRef {
            id: uuid::Uuid::new_v4().to_string(),
            label: label.to_owned(),
            material: Some(sealed),
            owned: true,
        })
    }

    async fn generate_kek(&self, mk: &MasterKeyRef, bits: usize) -> Result<NewKek, BackendError> {
        let mk_key = self.unseal_master_key(mk)?;
        let (public, wrapped) = tokio::task::spawn_blocking(move || {
            let private = PrivateKek::generate(bits)?;
            let pkcs8 = private.to_pkcs8_der()?;
            Ok::<_, crate::crypto::CryptoError>((private.public().to_spki_der()?, kwp::wrap(&mk_key, &pkcs8)?))
        })
        .await
        .map_err(|source| BackendError::Task { task: "KEK generation task", source })?
        .map_err(|source| BackendError::Crypto { context: format!("generating a {bits}-bit KEK"), source })?;
        Ok(NewKek {
            bits,
            public_spki: public,
            wrapped_private: wrapped,
            wrap_mechanism: WRAP_MECHANISM.into(),
            oaep_hash: OaepHash::Sha256,
            params: serde_json::json!({
                "kek_generation": "software",
                "wrap": { "mechanism": WRAP_MECHANISM, "format": "PKCS#8 PrivateKeyInfo" },
                "oaep": { "hash": "sha256", "mgf": "mgf1-sha256", "label": "" },
            }),
        })
    }

    async fn decrypt_dek(&self, kek: &PoolKek<'_>, encrypted: &[u8]) -> Result<DekPlaintext, BackendError> {
        self.keks.decrypt_dek(kek, encrypted, || async { self.unwrap_kek(kek) }).await
    }

    async fn release_kek(&self, kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.unwrap_kek(kek)
    }

    async fn wrap_kek(&self, mk: &MasterKeyRef, pkcs8: &[u8], public_spki: &[u8], _hash: OaepHash) -> Result<WrappedKek, BackendError> {
        super::check_kek_pair(pkcs8, public_spki)?;
        let mk_key = self.unseal_master_key(mk)?;
        let wrapped = kwp::wrap(&mk_key, pkcs8).map_err(|source| BackendError::Crypto { context: format!("wrapping a KEK under master key {}", mk.label), source })?;
        // Verify before anything is stored: the blob opens to what was wrapped.
        let back = kwp::unwrap(&mk_key, &wrapped).map_err(|source| BackendError::Crypto { context: format!("checking a KEK wrapped under master key {}", mk.label), source })?;
        if back.as_slice() != pkcs8 {
            return Err(BackendError::Other(format!("a KEK wrapped under master key {} did not unwrap to itself", mk.label)));
        }
        Ok(WrappedKek { wrapped, wrap_mechanism: WRAP_MECHANISM.into() })
    }

    async fn master_key_status(&self, mk: &MasterKeyRef) -> Result<KeyStatus, BackendError> {
        // The sealed key is the catalog row: present if it opens under the root key.
        let present = self.unseal_master_key(mk).is_ok();
        Ok(KeyStatus { present, state: None, details: serde_json::json!({ "sealed_under": self.root_key_path.display().to_string() }) })
    }

    async fn destroy_master_key(&self, _mk: &MasterKeyRef) -> Result<(), BackendError> {
        // The sealed MK lives only in the catalog row; removing the row (or
        // rolling back its transaction) destroys it.
        Ok(())
    }

    fn cache_stats(&self) -> (u64, u64) {
        self.keks.stats.get()
    }

    async fn clear_cache(&self) {
        self.keks.clear();
    }
}
