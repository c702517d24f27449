//! The KMIP backend: master keys on KMIP appliances over mutual TLS.
//!
//! - MK: Create (AES-256, usage Encrypt|Decrypt, Name = the pool's label,
//!   Object Group "keybridge"), then Activate.
//! - KEK: generated in software; its PKCS#8 is encrypted by the server's
//!   Encrypt under the MK: AES-GCM from KMIP 1.4 on (12-byte IV and AAD
//!   chosen here, tag returned by the server; blob `KBW1 | iv | tag | ct`);
//!   on KMIP 1.2/1.3, which have no AEAD fields, AES-CBC with PKCS#5
//!   padding plus an integrity check kept with the blob (`KBC1 | iv(16) |
//!   SHA-256(PKCS#8)[..16] | ct`). Pool creation decrypts the blob once
//!   through the server before storing it.
//! - Restore: the server's Decrypt returns the PKCS#8, held in zeroizing
//!   memory and cached per pool with a TTL; the DEK is decrypted in software.
//! - A server without Encrypt/Decrypt (KMIP 1.0/1.1) is refused unless the
//!   entry says `allow_key_export = true`: then the MK is fetched with Get
//!   (the seed's literal flow) and used locally, logged as a weaker mode.
//!
//! The MK never leaves the appliance except in that explicit export mode.

pub mod client;

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use async_trait::async_trait;
use zeroize::Zeroizing;

use self::client::{KmipClient, KmipError};
use super::cache::SoftwareKeks;
use super::{BackendError, DekPlaintext, KeyBackend, KeyStatus, MasterKeyRef, NewKek, PoolKek, ProbeReport, ProbeStatus, WrappedKek};
use crate::config::KmipConfig;
use crate::crypto::{OaepHash, PrivateKek};
use keybridge_kmip::messages::{Attribute, CipherMode, Request, ResponseError};
use keybridge_kmip::tags as enums;

/// Wrap mechanism: the server's Encrypt, AES-256-GCM under the MK.
pub const WRAP_SERVER_GCM: &str = "KMIP-Encrypt-AES-GCM";
/// Wrap mechanism on KMIP 1.2/1.3: the server's Encrypt, AES-256-CBC/PKCS#5.
pub const WRAP_SERVER_CBC: &str = "KMIP-Encrypt-AES-CBC-PKCS5";
/// Wrap mechanism in export mode: AES-256-GCM here, under the fetched MK.
pub const WRAP_EXPORTED_GCM: &str = "KMIP-Get-AES-GCM-local";

const BLOB_MAGIC: &[u8; 4] = b"KBW1";
const CBC_MAGIC: &[u8; 4] = b"KBC1";
const IV_LEN: usize = 12;
const CBC_IV_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// How the master key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// KMIP >= 1.4: the server's Encrypt/Decrypt with AES-GCM.
    ServerGcm,
    /// KMIP 1.2/1.3: the server's Encrypt/Decrypt with AES-CBC.
    ServerCbc,
    /// No Encrypt/Decrypt; Get of the MK (allow_key_export = true).
    Export,
}

impl Mode {
    fn mechanism(self) -> &'static str {
        match self {
            Mode::ServerGcm => WRAP_SERVER_GCM,
            Mode::ServerCbc => WRAP_SERVER_CBC,
            Mode::Export => WRAP_EXPORTED_GCM,
        }
    }
}
/// Object Group given to every master key keybridge creates.
pub const OBJECT_GROUP: &str = "keybridge";

/// A KMIP server (or replicated servers) as KMS.
pub struct KmipBackend {
    name: String,
    client: Arc<KmipClient>,
    allow_key_export: bool,
    keks: SoftwareKeks,
    servers: Vec<String>,
}

impl std::fmt::Debug for KmipBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipBackend").field("name", &self.name).field("servers", &self.servers).finish_non_exhaustive()
    }
}

/// The AAD binding a wrapped KEK to its master key.
fn wrap_aad(mk: &MasterKeyRef) -> Vec<u8> {
    format!("keybridge/v1/kek-wrap/{}", mk.id).into_bytes()
}

/// Split `magic | iv | check | ciphertext`.
fn split_blob<'a>(blob: &'a [u8], magic: &[u8; 4], iv_len: usize) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
    let rest = blob.strip_prefix(magic)?;
    if rest.len() < iv_len + TAG_LEN + 1 {
        return None;
    }
    let (iv, rest) = rest.split_at(iv_len);
    let (check, ct) = rest.split_at(TAG_LEN);
    Some((iv, check, ct))
}

fn join_blob(magic: &[u8; 4], iv: &[u8], check: &[u8], ct: &[u8]) -> Vec<u8> {
    [magic.as_slice(), iv, check, ct].concat()
}

/// Integrity check kept with a CBC blob: SHA-256 of the PKCS#8, 16 bytes.
fn cbc_check(pkcs8: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(pkcs8)[..TAG_LEN].to_vec()
}

impl KmipBackend {
    pub fn open(config: &KmipConfig) -> Result<Self, BackendError> {
        Ok(KmipBackend {
            name: config.name.clone(),
            client: Arc::new(KmipClient::new(config)?),
            allow_key_export: config.allow_key_export,
            keks: SoftwareKeks::new(config.kek_cache_ttl()),
            servers: config.servers.clone(),
        })
    }

    /// The client, for tests and tools.
    pub fn client(&self) -> &Arc<KmipClient> {
        &self.client
    }

    /// How the MK can be used on these servers. Export mode only when
    /// allowed explicitly.
    async fn mode(&self) -> Result<Mode, BackendError> {
        use keybridge_kmip::messages::Version;
        let facts = self.client.facts().await?;
        let crypto = facts.query.supports(enums::operation::ENCRYPT) && facts.query.supports(enums::operation::DECRYPT) && facts.version >= Version::new(1, 2);
        if crypto {
            return Ok(if facts.version >= Version::new(1, 4) { Mode::ServerGcm } else { Mode::ServerCbc });
        }
        if self.allow_key_export {
            tracing::warn!(kms = %self.name, version = %facts.version, "KMIP server lacks Encrypt/Decrypt: using Get of the master key (allow_key_export = true); the master key leaves the appliance");
            Ok(Mode::Export)
        } else {
            Err(BackendError::Unsupported(format!(
                "KMIP server {} (KMIP {}) does not offer Encrypt and Decrypt, so the master key could only be used by exporting it; set allow_key_export = true to accept that weaker mode",
                facts.server, facts.version
            )))
        }
    }

    /// GCM under a locally held key (export mode).
    fn local_gcm(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8], encrypt: bool) -> Result<Vec<u8>, BackendError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| BackendError::Other("exported master key is not 32 bytes".into()))?;
        let nonce = iv.try_into().map_err(|_| BackendError::Other("bad IV length".into()))?;
        let payload = Payload { msg: data, aad };
        if encrypt {
            cipher.encrypt(nonce, payload).map_err(|_| BackendError::Other("AES-GCM encryption failed".into()))
        } else {
            cipher.decrypt(nonce, payload).map_err(|_| BackendError::Other("AES-GCM tag check failed".into()))
        }
    }

    async fn export_mk(&self, mk: &MasterKeyRef) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let r = self.client.call_one(Request::Get { uid: mk.id.clone() }).await.map_err(|e| missing_or(e, mk))?;
        r.key_material()
            .map_err(|source| KmipError::Incomplete { context: Some(format!("Get of master key {}", mk.label)), source }.into())
    }

    /// Wrap `pkcs8` under the MK.
    async fn wrap(&self, mk: &MasterKeyRef, pkcs8: &[u8], mode: Mode) -> Result<Vec<u8>, BackendError> {
        let random = |source| BackendError::Crypto { context: "generating an IV".into(), source };
        let aad = wrap_aad(mk);
        match mode {
            Mode::ServerGcm => {
                let iv = crate::crypto::random_array::<IV_LEN>().map_err(random)?;
                let r = self
                    .client
                    .call_one(Request::Encrypt { uid: mk.id.clone(), mode: CipherMode::Gcm, data: Zeroizing::new(pkcs8.to_vec()), iv: iv.to_vec(), aad })
                    .await
                    .map_err(|e| missing_or(e, mk))?;
                let enc = r.encrypted().map_err(incomplete)?;
                let ct = enc.data;
                let tag = enc.tag.filter(|t| t.len() == TAG_LEN).ok_or_else(|| BackendError::Unsupported("the KMIP server returned no 16-byte AES-GCM tag".into()))?;
                Ok(join_blob(BLOB_MAGIC, &iv[..], &tag, &ct))
            }
            Mode::ServerCbc => {
                let iv = crate::crypto::random_array::<CBC_IV_LEN>().map_err(random)?;
                let r = self
                    .client
                    .call_one(Request::Encrypt { uid: mk.id.clone(), mode: CipherMode::CbcPkcs5, data: Zeroizing::new(pkcs8.to_vec()), iv: iv.to_vec(), aad: Vec::new() })
                    .await
                    .map_err(|e| missing_or(e, mk))?;
                let ct = r.encrypted().map_err(incomplete)?.data;
                Ok(join_blob(CBC_MAGIC, &iv[..], &cbc_check(pkcs8), &ct))
            }
            Mode::Export => {
                let iv = crate::crypto::random_array::<IV_LEN>().map_err(random)?;
                let key = self.export_mk(mk).await?;
                let out = Self::local_gcm(&key, &iv[..], &aad, pkcs8, true)?;
                let (ct, tag) = out.split_at(out.len() - TAG_LEN);
                Ok(join_blob(BLOB_MAGIC, &iv[..], tag, ct))
            }
        }
    }

    /// Unwrap a KEK blob into its PKCS#8.
    async fn unwrap(&self, kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let unwrap_err = |detail: String| BackendError::KekUnwrap { pool: kek.pool_name.to_owned(), mk: kek.master_key.label.clone(), detail };
        let not_ours = || unwrap_err("the blob is not a keybridge KMIP wrap (bad magic or too short)".into());
        let refused = |e: KmipError| match e {
            KmipError::Refused { reason, code, .. } if code != Some(enums::result_reason::ITEM_NOT_FOUND) => unwrap_err(format!("the server's Decrypt refused it: {reason}")),
            other => missing_or(other, kek.master_key),
        };
        let aad = wrap_aad(kek.master_key);
        match kek.wrap_mechanism {
            WRAP_SERVER_GCM => {
                let (iv, tag, ct) = split_blob(kek.wrapped_private, BLOB_MAGIC, IV_LEN).ok_or_else(not_ours)?;
                let r = self
                    .client
                    .call_one(Request::Decrypt { uid: kek.master_key.id.clone(), mode: CipherMode::Gcm, data: ct.to_vec(), iv: iv.to_vec(), aad, tag: tag.to_vec() })
                    .await
                    .map_err(refused)?;
                r.decrypted().map_err(incomplete)
            }
            WRAP_SERVER_CBC => {
                let (iv, check, ct) = split_blob(kek.wrapped_private, CBC_MAGIC, CBC_IV_LEN).ok_or_else(not_ours)?;
                // A server that refuses the padding and a check that fails
                // after it are one error, word for word: two answers to an
                // altered CBC blob would be a padding oracle.
                let altered = || unwrap_err("AES-CBC decryption did not give back what was wrapped (the blob was altered, or belongs to another key)".into());
                let r = self
                    .client
                    .call_one(Request::Decrypt { uid: kek.master_key.id.clone(), mode: CipherMode::CbcPkcs5, data: ct.to_vec(), iv: iv.to_vec(), aad: Vec::new(), tag: Vec::new() })
                    .await
                    .map_err(|e| match e {
                        KmipError::Refused { code, .. } if code != Some(enums::result_reason::ITEM_NOT_FOUND) => altered(),
                        other => missing_or(other, kek.master_key),
                    })?;
                let pkcs8 = r.decrypted().map_err(incomplete)?;
                if cbc_check(&pkcs8) != check {
                    return Err(altered());
                }
                Ok(pkcs8)
            }
            WRAP_EXPORTED_GCM => {
                if !self.allow_key_export {
                    return Err(BackendError::Unsupported(format!("pool '{}' was wrapped in export mode; set allow_key_export = true", kek.pool_name)));
                }
                let (iv, tag, ct) = split_blob(kek.wrapped_private, BLOB_MAGIC, IV_LEN).ok_or_else(not_ours)?;
                let key = self.export_mk(kek.master_key).await?;
                let mut data = ct.to_vec();
                data.extend_from_slice(tag);
                Self::local_gcm(&key, iv, &aad, &data, false).map(Zeroizing::new).map_err(|e| unwrap_err(e.to_string()))
            }
            other => Err(BackendError::Unsupported(format!("pool '{}' was wrapped with {other}, which the KMIP backend does not use", kek.pool_name))),
        }
    }
}

impl KmipBackend {
    /// The KMIP State of `mk` and its other attributes, as the server has them.
    async fn key_attributes(&self, mk: &MasterKeyRef) -> Result<Vec<Attribute>, BackendError> {
        let names = ["State", "Name", "Activation Date", "Deactivation Date", "Initial Date"].map(String::from).to_vec();
        let r = self.client.call_one(Request::GetAttributes { uid: mk.id.clone(), names }).await.map_err(|e| missing_or(e, mk))?;
        r.attributes().map_err(incomplete)
    }

    async fn key_state(&self, mk: &MasterKeyRef) -> Result<u32, BackendError> {
        self.key_attributes(mk)
            .await?
            .iter()
            .find_map(|a| if let Attribute::State(s) = a { Some(*s) } else { None })
            .ok_or_else(|| incomplete(ResponseError(format!("no State attribute for master key {}", mk.label))))
    }
}

/// A successful answer that lacks what the operation returns.
fn incomplete(e: ResponseError) -> BackendError {
    KmipError::incomplete(e).into()
}

/// "Item Not Found" from the server means the MK is gone.
fn missing_or(e: KmipError, mk: &MasterKeyRef) -> BackendError {
    match &e {
        KmipError::Refused { code: Some(enums::result_reason::ITEM_NOT_FOUND), .. } => BackendError::MasterKeyMissing { id: mk.id.clone(), label: mk.label.clone() },
        _ => e.into(),
    }
}

#[async_trait]
impl KeyBackend for KmipBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kmip"
    }

    fn identity(&self) -> String {
        format!("kmip:{}", self.servers.join(","))
    }

    async fn probe(&self) -> Result<ProbeReport, BackendError> {
        let facts = self.client.facts().await?.clone();
        let latency = self.client.ping().await?;
        let mode = self.mode().await;
        let (state, mode_text, mechanism) = match &mode {
            Ok(Mode::Export) => (ProbeStatus::Usable, "export mode: Get of the master key (allow_key_export = true)".to_owned(), Some(WRAP_EXPORTED_GCM)),
            Ok(m) => (ProbeStatus::Usable, "server-side Encrypt/Decrypt (master key never leaves the server)".to_owned(), Some(m.mechanism())),
            Err(e) => (ProbeStatus::Unusable, e.to_string(), None),
        };
        Ok(ProbeReport {
            name: self.name.clone(),
            kind: self.kind(),
            state,
            identity: self.identity(),
            details: serde_json::json!({
                "server": facts.server,
                "servers": self.servers,
                "version": facts.version.to_string(),
                "vendor": facts.vendor,
                "operations": facts.operations,
                "latency_ms": (latency.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
                "mode": mode_text,
                "wrap_mechanism": mechanism,
                "oaep_hash": OaepHash::Sha256,
                "kek_generation": "software",
            }),
        })
    }

    async fn create_master_key(&self, label: &str) -> Result<MasterKeyRef, BackendError> {
        self.mode().await?;
        use enums::cryptographic_usage_mask as usage;
        // Create, then Activate by identifier. (Batching the two with the
        // ID placeholder would save a round trip, but PyKMIP 0.11 cannot
        // parse an Activate without an identifier; pool creation is rare.)
        let created = self
            .client
            .call_one(Request::CreateAes {
                bits: 256,
                usage_mask: (usage::ENCRYPT | usage::DECRYPT) as i32,
                attributes: vec![Attribute::Name(label.to_owned()), Attribute::ObjectGroup(OBJECT_GROUP.into())],
            })
            .await?;
        let id = created.uid().map_err(incomplete)?;
        let mk = MasterKeyRef { id: id.clone(), label: label.to_owned(), material: None, owned: true };
        if let Err(e) = self.client.call_one(Request::Activate { uid: id.clone() }).await {
            // Do not leave a pre-active key behind.
            if let Err(cleanup) = self.client.call_one(Request::Destroy { uid: id.clone() }).await {
                tracing::error!(mk = %label, id = %id, error = %cleanup, "could not destroy a master key that failed to activate");
            }
            return Err(e.into());
        }
        Ok(mk)
    }

    async fn adopt_master_key(&self, reference: &str) -> Result<MasterKeyRef, BackendError> {
        // A Unique Identifier, or `name:<Name>` located on the server.
        let uid = match reference.strip_prefix("name:") {
            Some(name) => {
                let r = self.client.call_one(Request::Locate { attributes: vec![Attribute::Name(name.to_owned())], max_items: Some(2) }).await?;
                match r.located().map_err(incomplete)?.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(BackendError::MasterKeyMissing { id: reference.into(), label: name.into() }),
                    _ => return Err(BackendError::Other(format!("more than one object is named '{name}'; give its Unique Identifier"))),
                }
            }
            None => reference.to_owned(),
        };
        let r = self
            .client
            .call_one(Request::GetAttributes { uid: uid.clone(), names: vec!["Cryptographic Algorithm".into(), "Cryptographic Length".into(), "State".into(), "Name".into()] })
            .await
            .map_err(|e| missing_or(e, &MasterKeyRef { id: uid.clone(), label: reference.into(), material: None, owned: false }))?;
        let attrs = r.attributes().map_err(incomplete)?;
        let label = attrs.iter().find_map(|a| if let Attribute::Name(n) = a { Some(n.clone()) } else { None }).unwrap_or_else(|| uid.clone());
        let unfit = |reason: &str| BackendError::MasterKeyUnfit { label: label.clone(), reason: reason.into() };
        if !attrs.contains(&Attribute::CryptographicAlgorithm(enums::cryptographic_algorithm::AES)) || !attrs.contains(&Attribute::CryptographicLength(256)) {
            return Err(unfit("it is not an AES-256 key"));
        }
        if !attrs.contains(&Attribute::State(enums::state::ACTIVE)) {
            return Err(unfit("it is not in the Active state"));
        }
        Ok(MasterKeyRef { id: uid, label, material: None, owned: false })
    }

    async fn generate_kek(&self, mk: &MasterKeyRef, bits: usize) -> Result<NewKek, BackendError> {
        let mode = self.mode().await?;
        let private = tokio::task::spawn_blocking(move || PrivateKek::generate(bits))
            .await
            .map_err(|source| BackendError::Task { task: "KEK generation task", source })?
            .map_err(|source| BackendError::Crypto { context: format!("generating a {bits}-bit KEK"), source })?;
        let pkcs8 = private.to_pkcs8_der().map_err(|source| BackendError::Crypto { context: "encoding the KEK".into(), source })?;
        let public = private.public().to_spki_der().map_err(|source| BackendError::Crypto { context: "encoding the public KEK".into(), source })?;
        // Wrapped, and verified before anything is stored, as any KEK is.
        let wrapped = self.wrap_kek(mk, &pkcs8, &public, OaepHash::Sha256).await?.wrapped;
        let mechanism = mode.mechanism();
        let facts = self.client.facts().await?;
        Ok(NewKek {
            bits,
            public_spki: public,
            wrapped_private: wrapped,
            wrap_mechanism: mechanism.into(),
            oaep_hash: OaepHash::Sha256,
            params: serde_json::json!({
                "kek_generation": "software",
                "wrap": {
                    "mechanism": mechanism,
                    "operation": if mode == Mode::Export { "KMIP Get of the master key, AES-GCM locally" } else { "KMIP Encrypt/Decrypt on the server" },
                    "cipher": if mode == Mode::ServerCbc { "AES-256-CBC-PKCS5" } else { "AES-256-GCM" },
                    "aad": if mode == Mode::ServerCbc { String::new() } else { String::from_utf8_lossy(&wrap_aad(mk)).into_owned() },
                    "blob": if mode == Mode::ServerCbc { "KBC1 | iv(16) | SHA-256(PKCS#8)[..16] | ciphertext" } else { "KBW1 | iv(12) | tag(16) | ciphertext of PKCS#8 PrivateKeyInfo" },
                },
                "oaep": { "hash": "sha256", "mgf": "mgf1-sha256", "label": "" },
                "kmip": { "version": facts.version.to_string(), "server": facts.server, "vendor": facts.vendor },
            }),
        })
    }

    async fn decrypt_dek(&self, kek: &PoolKek<'_>, encrypted: &[u8]) -> Result<DekPlaintext, BackendError> {
        self.keks.decrypt_dek(kek, encrypted, || self.unwrap(kek)).await
    }

    async fn destroy_master_key(&self, mk: &MasterKeyRef) -> Result<(), BackendError> {
        if !mk.owned {
            return Err(BackendError::MasterKeyNotOwned { label: mk.label.clone() });
        }
        // An Active key must be revoked first; a Deactivated one (rotated
        // out) cannot be revoked again, only destroyed.
        let mut batch = Vec::with_capacity(2);
        if self.key_state(mk).await? == enums::state::ACTIVE {
            batch.push(Request::Revoke { uid: mk.id.clone(), reason_code: enums::revocation_reason_code::CESSATION_OF_OPERATION, message: Some("keybridge: master key destroyed".into()) });
        }
        batch.push(Request::Destroy { uid: mk.id.clone() });
        self.client.call(&batch).await.map_err(|e| missing_or(e, mk))?;
        Ok(())
    }

    async fn release_kek(&self, kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.unwrap(kek).await
    }

    async fn wrap_kek(&self, mk: &MasterKeyRef, pkcs8: &[u8], public_spki: &[u8], _hash: OaepHash) -> Result<WrappedKek, BackendError> {
        super::check_kek_pair(pkcs8, public_spki)?;
        let mode = self.mode().await?;
        let wrapped = self.wrap(mk, pkcs8, mode).await?;
        let mechanism = mode.mechanism();
        // Verify before anything is stored: the blob opens through the server.
        let check = PoolKek { pool_id: -1, generation: 0, pool_name: &mk.label, master_key: mk, wrapped_private: &wrapped, wrap_mechanism: mechanism, oaep_hash: OaepHash::Sha256 };
        if self.unwrap(&check).await?.as_slice() != pkcs8 {
            return Err(BackendError::Other("the KMIP server's Decrypt did not return what its Encrypt was given".into()));
        }
        Ok(WrappedKek { wrapped, wrap_mechanism: mechanism.into() })
    }

    async fn deactivate_master_key(&self, mk: &MasterKeyRef) -> Result<(), BackendError> {
        if self.key_state(mk).await? != enums::state::ACTIVE {
            return Ok(());
        }
        self.client
            .call_one(Request::Revoke { uid: mk.id.clone(), reason_code: enums::revocation_reason_code::CESSATION_OF_OPERATION, message: Some("keybridge: master key rotated out".into()) })
            .await
            .map_err(|e| missing_or(e, mk))?;
        Ok(())
    }

    async fn master_key_status(&self, mk: &MasterKeyRef) -> Result<KeyStatus, BackendError> {
        let attrs = match self.key_attributes(mk).await {
            Ok(a) => a,
            Err(BackendError::MasterKeyMissing { .. }) => return Ok(KeyStatus { present: false, state: None, details: serde_json::json!({}) }),
            Err(e) => return Err(e),
        };
        let mut state = None;
        let mut details = serde_json::Map::new();
        for a in &attrs {
            match a {
                Attribute::State(s) => state = enums::enum_name(keybridge_kmip::tags::STATE, *s).map(str::to_owned),
                Attribute::Other { name, value } => {
                    if let keybridge_kmip::ttlv::Value::DateTime(t) = value.value {
                        details.insert(name.clone(), serde_json::json!(t));
                    }
                }
                _ => {}
            }
        }
        Ok(KeyStatus { present: true, state, details: details.into() })
    }

    async fn destroy_master_keys_labelled(&self, label: &str) -> Result<usize, BackendError> {
        let r = self.client.call_one(Request::Locate { attributes: vec![Attribute::Name(label.to_owned()), Attribute::ObjectGroup(OBJECT_GROUP.into())], max_items: None }).await?;
        let found = r.located().map_err(incomplete)?;
        for uid in &found {
            self.destroy_master_key(&MasterKeyRef { id: uid.clone(), label: label.to_owned(), material: None, owned: true }).await?;
        }
        Ok(found.len())
    }

    fn cache_stats(&self) -> (u64, u64) {
        self.keks.stats.get()
    }

    async fn clear_cache(&self) {
        self.keks.clear();
    }
}
