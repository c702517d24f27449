//! The PKCS#11 backend: master keys in an HSM, every master-key operation
//! inside the token.
//!
//! - MK: `C_GenerateKey` AES-256, token object, sensitive, not extractable,
//!   wrap/unwrap only, with CKA_ID and CKA_LABEL (or an existing key adopted
//!   by PKCS#11 URI).
//! - KEK: `C_GenerateKeyPair` RSA as session objects; the private half is
//!   wrapped under the MK with AES key wrap with padding (`C_WrapKey`), then
//!   both halves are destroyed. The private KEK never exists in host memory.
//! - Restore: `C_UnwrapKey` into a sensitive, non-extractable session
//!   object, then `C_Decrypt` RSA-OAEP in the token. The handle is cached per
//!   pool with a TTL and dropped when its session is lost.
//! - Mechanisms are chosen by probing: key wrap with padding is
//!   CKM_AES_KEY_WRAP_KWP (0x210B, PKCS#11 3.0) where offered, else
//!   CKM_AES_KEY_WRAP_PAD (0x210A); OAEP uses SHA-256 where the token
//!   decrypts with it, else SHA-1 (SoftHSM2). The choice is recorded per pool.

mod module;
mod protect;
mod raw;
pub(crate) mod rv;
mod session;
mod uri;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::{Limit, TokenInfo};
use serde::Serialize;
use zeroize::Zeroizing;

pub use self::protect::{Protection, ProtectionReport};
use self::session::{ck_to_backend, tokens_of, Doing, OpError, TokenSessions};
use self::uri::Pkcs11Uri;
use super::cache::{CacheStats, KekId, TtlCache};
use super::{BackendError, DekPlaintext, KeyBackend, KeyStatus, MasterKeyRef, NewKek, PoolKek, ProbeReport, ProbeStatus, WrappedKek};
use crate::config::Pkcs11Config;
use crate::crypto::{OaepHash, PublicKek};
use keybridge_proto::secret::{ExposeSecret, SecretString};

/// CKM_AES_KEY_WRAP_PAD (PKCS#11 2.40; SoftHSM2).
pub const CKM_AES_KEY_WRAP_PAD: u64 = 0x210A;
/// CKM_AES_KEY_WRAP_KWP (PKCS#11 3.0, RFC 5649; Kryoptic).
pub const CKM_AES_KEY_WRAP_KWP: u64 = 0x210B;
const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0000;
const CKM_RSA_PKCS_OAEP: u64 = 0x0009;
const CKM_AES_KEY_GEN: u64 = 0x1080;

const MAX_DEFAULT_SESSIONS: u64 = 16;

/// The key-wrap mechanism a token offers, by preference.
fn wrap_mechanism_name(code: u64) -> Option<&'static str> {
    match code {
        CKM_AES_KEY_WRAP_KWP => Some("CKM_AES_KEY_WRAP_KWP"),
        CKM_AES_KEY_WRAP_PAD => Some("CKM_AES_KEY_WRAP_PAD"),
        _ => None,
    }
}

fn wrap_mechanism_code(name: &str) -> Option<u64> {
    [CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD]
        .into_iter()
        .find(|c| wrap_mechanism_name(*c) == Some(name))
}

fn oaep(hash: OaepHash) -> Mechanism<'static> {
    let (h, mgf) = match hash {
        OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()))
}

/// Attributes of a key as the token reports them (for audits and tests).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyFacts {
    pub label: String,
    pub token: bool,
    pub sensitive: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub encrypt: bool,
    pub decrypt: bool,
}

/// An unwrapped KEK in the token. Shared by the calls using it; when the
/// last user drops it (after it left the cache), its handle goes to the
/// graveyard and is destroyed by the next call, never while in use. Tokens
/// reuse handle numbers, so destroying a handle someone still holds could
/// make their next call hit another object.
#[derive(Debug)]
struct CachedKek {
    handle: ObjectHandle,
    epoch: u64,
    graveyard: Arc<Mutex<Vec<(ObjectHandle, u64)>>>,
}

impl Drop for CachedKek {
    fn drop(&mut self) {
        self.graveyard.lock().unwrap_or_else(|e| e.into_inner()).push((self.handle, self.epoch));
    }
}

/// Unwrapped KEKs per pool (the backends' one TTL cache), and the handles
/// of those no longer used, to destroy.
#[derive(Debug)]
struct KekCache {
    entries: TtlCache<Arc<CachedKek>>,
    graveyard: Arc<Mutex<Vec<(ObjectHandle, u64)>>>,
    stats: CacheStats,
}

impl KekCache {
    fn new(ttl: Duration) -> Self {
        KekCache { entries: TtlCache::new(ttl), graveyard: Arc::default(), stats: CacheStats::default() }
    }

    /// The live KEK for `pool`. Entries from an older session epoch leave
    /// the cache (old-epoch objects died with their session and are never
    /// destroyed by handle).
    fn get(&self, pool: KekId, epoch: u64) -> Option<Arc<CachedKek>> {
        self.entries.get_valid(pool, |k| k.epoch == epoch)
    }

    /// Hold `handle` as `pool`'s KEK: cached for later calls (TTL) or,
    /// with no TTL, destroyed by a later call once this one drops it.
    fn insert(&self, pool: KekId, epoch: u64, handle: ObjectHandle) -> Arc<CachedKek> {
        let k = Arc::new(CachedKek { handle, epoch, graveyard: self.graveyard.clone() });
        self.entries.insert(pool, k.clone());
        k
    }

    /// Drop `pool`'s entry if it is still `k` (a stale or failing handle).
    fn evict(&self, pool: KekId, k: &Arc<CachedKek>) {
        self.entries.remove_if(pool, |cur| Arc::ptr_eq(cur, k));
    }

    fn clear(&self) {
        self.entries.clear();
    }

    /// Handles no longer used by anyone, to destroy in session epoch `epoch`.
    fn buried(&self, epoch: u64) -> Vec<ObjectHandle> {
        let mut g = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        g.drain(..).filter(|(_, e)| *e == epoch).map(|(h, _)| h).collect()
    }
}

/// Static facts about the token, read at open.
#[derive(Debug, Clone, Serialize)]
struct TokenFacts {
    label: String,
    serial: String,
    manufacturer: String,
    model: String,
    library: String,
    max_rw_sessions: String,
    /// Of the mechanisms keybridge uses, those the token offers.
    mechanisms: Vec<u64>,
}

/// A PKCS#11 token used as KMS.
#[derive(Debug)]
pub struct Pkcs11Backend {
    name: String,
    sessions: Arc<TokenSessions>,
    token: TokenFacts,
    /// Preferred key-wrap-with-padding mechanism, if the token has one.
    wrap: Option<u64>,
    kek_cache: Arc<KekCache>,
    oaep_probe: tokio::sync::OnceCell<OaepHash>,
    protection_probe: tokio::sync::OnceCell<ProtectionReport>,
}

fn read_pin(config: &Pkcs11Config) -> Result<SecretString, BackendError> {
    let err = |reason: String| BackendError::Pin { kms: config.name.clone(), reason };
    if let Some(var) = &config.pin_env {
        let v = std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?;
        if v.is_empty() {
            return Err(err(format!("environment variable {var} is empty")));
        }
        return Ok(SecretString::from(v));
    }
    if let Some(path) = &config.pin_file {
        return keybridge_proto::secret::read_secret_file(path, "PIN").map_err(|e| err(e.to_string()));
    }
    Err(err("neither pin_env nor pin_file is set".into()))
}

/// Destroys session objects on drop unless disarmed: no KEK half is left in
/// the token when a step fails half-way.
struct Cleanup<'a> {
    session: &'a Session,
    handles: Vec<ObjectHandle>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            if let Err(e) = self.session.destroy_object(h) {
                tracing::warn!(error = %e, "could not destroy temporary session object");
            }
        }
    }
}

/// A template that carries key material (`CKA_VALUE`, the one-time
/// transport key of [`KeyBackend::wrap_kek`]). cryptoki's
/// `Attribute::Value` is a plain `Vec<u8>`, so the value is wiped when the
/// template is dropped, on every path.
struct SecretTemplate(Vec<Attribute>);

impl SecretTemplate {
    fn wipe(&mut self) {
        for attribute in &mut self.0 {
            if let Attribute::Value(value) = attribute {
                zeroize::Zeroize::zeroize(value.as_mut_slice());
            }
        }
    }
}

impl Drop for SecretTemplate {
    fn drop(&mut self) {
        self.wipe();
    }
}

fn mk_template(mk: &MasterKeyRef) -> Result<Vec<Attribute>, OpError> {
    let id = hex::decode(&mk.id).map_err(|_| {
        OpError::Backend(BackendError::MasterKeyMissing { id: mk.id.clone(), label: mk.label.clone() })
    })?;
    Ok(vec![Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id)])
}

fn find_mk(session: &Session, mk: &MasterKeyRef) -> Result<ObjectHandle, OpError> {
    match session.find_objects(&mk_template(mk)?).doing("finding the master key")?[..] {
        [one] => Ok(one),
        [] => Err(OpError::Backend(BackendError::MasterKeyMissing { id: mk.id.clone(), label: mk.label.clone() })),
        ref several => Err(OpError::Backend(BackendError::Other(format!(
            "{} secret keys carry the CKA_ID {} of master key '{}': which one wraps the pool's KEK is ambiguous; keep the right one and remove the others",
            several.len(),
            mk.id,
            mk.label
        )))),
    }
}

/// Whether `h` is a whole master key made with `label` (an attempt that
/// succeeded but whose reply was lost), not an object left half-made.
fn is_whole_master_key(session: &Session, h: ObjectHandle, label: &str) -> bool {
    session.get_attributes(h, &[AttributeType::Label, AttributeType::Wrap, AttributeType::Unwrap]).is_ok_and(|attrs| {
        attrs.iter().any(|a| matches!(a, Attribute::Label(l) if l == label.as_bytes()))
            && bool_attr(&attrs, AttributeType::Wrap)
            && bool_attr(&attrs, AttributeType::Unwrap)
    })
}

fn bool_attr(attrs: &[Attribute], t: AttributeType) -> bool {
    attrs.iter().any(|a| match (a, t) {
        (Attribute::Token(v), AttributeType::Token)
        | (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::Wrap(v), AttributeType::Wrap)
        | (Attribute::Unwrap(v), AttributeType::Unwrap)
        | (Attribute::Encrypt(v), AttributeType::Encrypt)
        | (Attribute::Decrypt(v), AttributeType::Decrypt) => *v,
        _ => false,
    })
}

fn key_facts(session: &Session, h: ObjectHandle) -> Result<KeyFacts, OpError> {
    use AttributeType as T;
    let types = [T::Label, T::Token, T::Sensitive, T::AlwaysSensitive, T::Extractable, T::NeverExtractable, T::Wrap, T::Unwrap, T::Encrypt, T::Decrypt];
    let attrs = session.get_attributes(h, &types).doing("reading key attributes")?;
    let label = attrs
        .iter()
        .find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(l).into_owned()),
            _ => None,
        })
        .unwrap_or_default();
    Ok(KeyFacts {
        label,
        token: bool_attr(&attrs, T::Token),
        sensitive: bool_attr(&attrs, T::Sensitive),
        always_sensitive: bool_attr(&attrs, T::AlwaysSensitive),
        extractable: bool_attr(&attrs, T::Extractable),
        never_extractable: bool_attr(&attrs, T::NeverExtractable),
        wrap: bool_attr(&attrs, T::Wrap),
        unwrap: bool_attr(&attrs, T::Unwrap),
        encrypt: bool_attr(&attrs, T::Encrypt),
        decrypt: bool_attr(&attrs, T::Decrypt),
    })
}

/// Why a PKCS#11 token never gives a KEK back (see `protect.rs`).
const KEK_STAYS: &str = "a KEK wrapped in a PKCS#11 token never leaves it: the master key's unwrap template makes every KEK it unwraps sensitive, \
and wrappable only under a key the security officer marked trusted (SoftHSM2) or not at all; \
move the pool's new DEKs to another KMS with a new KEK generation there instead";

/// What a private KEK becomes when unwrapped: a sensitive session object
/// that decrypts; `wrappable` (an import, to be wrapped under the MK) or
/// not extractable and, consistent with either unwrap template of the MK
/// (protect.rs), wrappable only under a trusted key.
fn kek_template(wrappable: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(wrappable),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
    ];
    if !wrappable {
        t.push(Attribute::WrapWithTrusted(true));
    }
    t
}

/// Unwrap a private KEK into a sensitive, non-extractable session object.
fn unwrap_kek(session: &Session, mech: u64, mk: ObjectHandle, wrapped: &[u8]) -> Result<ObjectHandle, OpError> {
    raw::unwrap_key(session, mech, mk, wrapped, &kek_template(false)).doing("unwrapping the KEK under the master key")
}

/// The mechanism pool KEK `kek` was wrapped with, if this backend uses it.
fn pool_wrap_mechanism(kek: &PoolKek<'_>) -> Result<u64, BackendError> {
    wrap_mechanism_code(kek.wrap_mechanism)
        .ok_or_else(|| BackendError::Unsupported(format!("pool '{}' was wrapped with {}, which this backend does not use", kek.pool_name, kek.wrap_mechanism)))
}

/// [`unwrap_kek`] of pool `pool`'s stored wrapped KEK: a blob the token
/// refuses under master key `mk` is [`BackendError::KekUnwrap`].
fn unwrap_stored_kek(session: &Session, mech: u64, mk_handle: ObjectHandle, wrapped: &[u8], pool: &str, mk: &MasterKeyRef) -> Result<ObjectHandle, OpError> {
    unwrap_kek(session, mech, mk_handle, wrapped).map_err(|e| match e {
        OpError::Ck { err: CkError::Pkcs11(rv, _), .. } if bad_wrapped_key(rv) => {
            BackendError::KekUnwrap { pool: pool.to_owned(), mk: mk.label.clone(), detail: format!("the token answered {}", rv::ckr_name(rv)) }.into()
        }
        e => e,
    })
}

/// Codes a token returns from C_Decrypt RSA-OAEP when the ciphertext does
/// not decrypt under the key. The standard code is CKR_ENCRYPTED_DATA_INVALID;
/// SoftHSM2 2.6 answers CKR_GENERAL_ERROR and Kryoptic CKR_DEVICE_ERROR for
/// a padding failure. The key handle was valid a moment before, so for these
/// calls they mean "not this key's ciphertext", and are not retried.
fn bad_ciphertext(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::DataLenRange | RvError::GeneralError | RvError::DeviceError
    )
}

/// The error of a failed DEK decryption in pool `pool`.
fn decrypt_error(err: CkError, pool: &str) -> OpError {
    match err {
        CkError::Pkcs11(rv, _) if bad_ciphertext(rv) => {
            BackendError::DekDecrypt { pool: pool.to_owned(), detail: format!("the token answered {}", rv::ckr_name(rv)) }.into()
        }
        err => OpError::Ck { err, doing: format!("decrypting a DEK of pool '{pool}'") },
    }
}

/// Codes a token returns from C_UnwrapKey when the blob fails the key-wrap
/// integrity check or is not a valid private key once unwrapped. Kryoptic
/// answers CKR_DEVICE_ERROR and SoftHSM2 CKR_GENERAL_ERROR for some of them;
/// as above, the MK handle was just found, so these are not retried.
fn bad_wrapped_key(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::TemplateInconsistent
            | RvError::AttributeValueInvalid
            | RvError::GeneralError
            | RvError::DeviceError
    )
}

/// Decrypt with OAEP; a token that rejects the hash answers with one of
/// these codes.
fn hash_unsupported(rv: RvError) -> bool {
    matches!(rv, RvError::MechanismParamInvalid | RvError::ArgumentsBad | RvError::MechanismInvalid)
}

/// Find the OAEP hash this token decrypts with, using `private` (a session
/// object) and its `public` half (encrypting in software, as backups do).
fn probe_oaep(session: &Session, private: ObjectHandle, public: &PublicKek) -> Result<OaepHash, OpError> {
    let secret = crate::crypto::random_array::<32>()
        .map_err(|source| OpError::Backend(BackendError::Crypto { context: "OAEP probe".into(), source }))?;
    for hash in [OaepHash::Sha256, OaepHash::Sha1] {
        let ct = public
            .encrypt(hash, &secret[..])
            .map_err(|source| OpError::Backend(BackendError::Crypto { context: "OAEP probe".into(), source }))?;
        match session.decrypt(&oaep(hash), private, &ct) {
            Ok(pt) if pt.as_slice() == &secret[..] => return Ok(hash),
            Ok(_) => {
                return Err(OpError::Backend(BackendError::Other(format!(
                    "the token's RSA-OAEP {hash} decryption returned wrong plaintext"
                ))))
            }
            Err(CkError::Pkcs11(rv, _)) if hash_unsupported(rv) => continue,
            Err(e) => return Err(OpError::Ck { err: e, doing: format!("probing RSA-OAEP with {hash}") }),
        }
    }
    Err(OpError::Backend(BackendError::Unsupported("the token decrypts RSA-OAEP with neither SHA-256 nor SHA-1".into())))
}

/// Check that `private` (a session object) decrypts, with RSA-OAEP over
/// `hash`, what its `public` half encrypts in software.
fn check_oaep(session: &Session, private: ObjectHandle, public: &PublicKek, hash: OaepHash) -> Result<(), OpError> {
    let probe = |source| OpError::Backend(BackendError::Crypto { context: "OAEP check".into(), source });
    let secret = crate::crypto::random_array::<32>().map_err(probe)?;
    let ct = public.encrypt(hash, &secret[..]).map_err(probe)?;
    match session.decrypt(&oaep(hash), private, &ct) {
        Ok(pt) if pt.as_slice() == &secret[..] => Ok(()),
        Ok(_) => Err(OpError::Backend(BackendError::Other("the wrapped KEK is not the private half of the generation's public KEK".into()))),
        Err(e) => Err(OpError::Ck { err: e, doing: format!("checking the wrapped KEK with RSA-OAEP over {hash}") }),
    }
}

fn public_of(session: &Session, public: ObjectHandle) -> Result<PublicKek, OpError> {
    let attrs = session
        .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .doing("reading the public KEK")?;
    let mut n = None;
    let mut e = None;
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let (n, e) = n.zip(e).ok_or(OpError::Backend(BackendError::AttributesMissing { what: "the public KEK's modulus and exponent" }))?;
    PublicKek::from_components(&n, &e).map_err(|source| OpError::Backend(BackendError::Crypto { context: "reading the public KEK".into(), source }))
}

fn rsa_pair_templates(bits: usize) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(false),
        Attribute::ModulusBits((bits as u64).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Encrypt(true),
        Attribute::Verify(false),
        Attribute::Wrap(false),
    ];
    let private = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        // Extractable only so C_WrapKey can wrap it; it is never extracted otherwise.
        Attribute::Extractable(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Unwrap(false),
    ];
    (public, private)
}

impl Pkcs11Backend {
    /// Load the module, find the token, log in, read its mechanisms.
    pub async fn open(config: &Pkcs11Config) -> Result<Self, BackendError> {
        let timeout = config.timeout();
        let config = config.clone();
        let task = tokio::task::spawn_blocking(move || Self::open_blocking(&config));
        match tokio::time::timeout(timeout, task).await {
            Err(_) => Err(BackendError::Timeout { operation: "opening the PKCS#11 token".into(), secs: timeout.as_secs() }),
            Ok(Err(source)) => Err(BackendError::Task { task: "opening the PKCS#11 backend", source }),
            Ok(Ok(r)) => r,
        }
    }

    fn open_blocking(config: &Pkcs11Config) -> Result<Self, BackendError> {
        let module = module::module(&config.module)?;
        let (want_label, want_serial) = match (&config.token, &config.uri) {
            (Some(label), _) => (Some(label.clone()), None),
            (None, Some(u)) => {
                let u: Pkcs11Uri = u.parse().map_err(|e| BackendError::Other(format!("token URI '{u}': {e}")))?;
                if u.token.is_none() && u.serial.is_none() {
                    return Err(BackendError::Other(format!("token URI for '{}' names neither token nor serial", config.name)));
                }
                (u.token, u.serial)
            }
            (None, None) => return Err(BackendError::Other("no token configured".into())),
        };
        let module_name = config.module.display().to_string();
        // A module that went away since it was loaded (another backend of
        // it saw that, or nobody used it since) is initialised again here.
        let (mut ctx, mut generation) = module.ctx().or_else(|_| {
            module.reinitialize(module.generation(), "opening a backend on a module that was down")?;
            module.ctx()
        })?;
        let matches = |info: &TokenInfo| {
            want_label.as_deref().is_none_or(|l| l == info.label().trim_end()) && want_serial.as_deref().is_none_or(|s| s == info.serial_number().trim_end())
        };
        // Calls outside the workers hold the call gate too (never while
        // asking for a re-initialisation).
        let list = |ctx: &cryptoki::context::Pkcs11| {
            let _calls = module.calls();
            tokens_of(ctx)
        };
        let wanted = match (&want_label, &want_serial) {
            (Some(l), Some(s)) => format!("label '{l}' and serial '{s}'"),
            (Some(l), None) => format!("label '{l}'"),
            (None, Some(s)) => format!("serial '{s}'"),
            (None, None) => unreachable!(),
        };
        let pin = read_pin(config)?;
        if pin.expose_secret().is_empty() {
            return Err(BackendError::Pin { kms: config.name.clone(), reason: "PIN is empty".into() });
        }
        // Initialising the module again cures what opening may meet: a
        // module whose far end was gone (a p11-kit server, a network HSM),
        // when it was first initialised or since, and SoftHSM2, which reads
        // a token once, at C_Initialize: a token whose file another process
        // was rewriting then (a login there) stays unreadable until the
        // module is initialised again, left out of the list (which then
        // shows only the spare slot, an uninitialised token), listed blank,
        // or with its user PIN "not set". Each is
        // met by initialising the module again, up to three times, at most
        // once a second. A wrong label on a SoftHSM2 that lists nothing but
        // its spare slot, and a module that lists no token (then as down),
        // are reported about two seconds later.
        // Four attempts: with two processes logging in without pause,
        // about one open in ten met it, and three attempts failed one
        // probe in 330 (tests/cli.rs::softhsm_open_beside_logins_elsewhere).
        const OPEN_ATTEMPTS: u32 = 4;
        let mut attempt = 1;
        let (slot, info, sessions) = 'open: loop {
            // What this attempt met that initialising the module again may
            // cure.
            let stale: BackendError = 'attempt: {
                let down = |reason: String| BackendError::ModuleDown { module: module_name.clone(), since_secs: 0, reason };
                let mut tokens = match list(&ctx) {
                    Err(CkError::Pkcs11(rv, _)) if session::module_gone_rv(rv) => break 'attempt down(format!("listing slots: {}", rv::ckr_name(rv))),
                    // A module initialised while its far end (a p11-kit
                    // server, a network HSM) was gone, at first or since,
                    // lists no token at all until it is initialised once
                    // more. Reported as down (a restore may wait it out).
                    Ok(t) if t.is_empty() => {
                        break 'attempt down(format!("it lists no token (wanted: {wanted}): its far end (a p11-kit server, a network HSM) may not be up, or this is not the token's module"))
                    }
                    other => other,
                }
                .map_err(|e| ck_to_backend(e, "listing tokens"))?;
                let present: Vec<String> = tokens.iter().map(|(_, info)| format!("'{}'", info.label().trim_end())).collect();
                let Some((slot, info)) = tokens.iter().position(|(_, info)| matches(info)).map(|i| tokens.swap_remove(i)) else {
                    let missing = BackendError::TokenNotFound {
                        wanted: wanted.clone(),
                        module: module_name.clone(),
                        present: if present.is_empty() { "none".into() } else { present.join(", ") },
                    };
                    // Only SoftHSM2 slots showing no readable token listed:
                    // perhaps it could not read this one. Otherwise the
                    // label is wrong, and the module is left alone
                    // (initialising it again would end the sessions of the
                    // tokens listed).
                    if tokens.iter().all(|(_, info)| session::softhsm_unread(info)) {
                        break 'attempt missing;
                    }
                    return Err(missing);
                };
                let token_max = match info.max_rw_session_count() {
                    Limit::Max(n) if n > 0 => n.min(MAX_DEFAULT_SESSIONS),
                    _ => MAX_DEFAULT_SESSIONS,
                };
                let max_sessions = config.max_sessions.map(|m| m as u64).unwrap_or(token_max).max(1) as usize;
                let sessions = Arc::new(TokenSessions::new(module.clone(), (slot, generation), &info, (want_label.clone(), want_serial.clone()), pin.clone(), max_sessions, config.timeout()));
                // Log in now: a wrong PIN is reported at open, not at first use.
                match sessions.open_session() {
                    Ok(first) => {
                        // Keep it: closing the application's last session would log it out.
                        sessions.put_back(first);
                        break 'open (slot, info, sessions);
                    }
                    Err(OpError::Backend(down @ BackendError::ModuleDown { .. })) => break 'attempt down,
                    // The module went between the listing and the session
                    // (a p11-kit server, a network HSM). A failed login is
                    // a backend error, returned next: never tried again.
                    Err(e) if session::module_gone(&e) => break 'attempt down(e.into_backend().to_string()),
                    Err(OpError::Backend(b)) => return Err(b),
                    Err(OpError::Ck { err, doing }) => return Err(ck_to_backend(err, &doing)),
                }
            };
            if attempt >= OPEN_ATTEMPTS {
                return Err(stale);
            }
            attempt += 1;
            module.reinitialize_when_allowed(generation, &format!("opening a backend: {stale}"))?;
            (ctx, generation) = module.ctx()?;
        };
        let label = info.label().trim_end().to_owned();
        // Under the call gate, released before `sessions` can drop (its
        // sessions' drop takes the gate itself).
        let (mechanisms, lib) = {
            let _calls = module.calls();
            let mechanisms: Result<Vec<u64>, CkError> = [CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS_OAEP, CKM_AES_KEY_GEN]
                .into_iter()
                .filter_map(|code| raw::has_mechanism(&ctx, slot, code).map(|has| has.then_some(code)).transpose())
                .collect();
            let lib = ctx.get_library_info().map(|i| format!("{} {}", i.manufacturer_id().trim_end(), i.library_description().trim_end())).unwrap_or_default();
            (mechanisms, lib)
        };
        let mechanisms = mechanisms.map_err(|e| ck_to_backend(e, "reading mechanism information"))?;
        let wrap = [CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD].into_iter().find(|m| mechanisms.contains(m));
        let token = TokenFacts {
            label,
            serial: info.serial_number().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            library: lib,
            max_rw_sessions: format!("{:?}", info.max_rw_session_count()),
            mechanisms,
        };
        tracing::debug!(token = %token.label, serial = %token.serial, max_sessions = sessions.max_sessions, "PKCS#11 token opened");
        Ok(Pkcs11Backend {
            name: config.name.clone(),
            sessions,
            token,
            wrap,
            kek_cache: Arc::new(KekCache::new(config.kek_cache_ttl())),
            oaep_probe: tokio::sync::OnceCell::new(),
            protection_probe: tokio::sync::OnceCell::new(),
        })
    }

    fn wrap_mechanism(&self) -> Result<u64, BackendError> {
        self.wrap.ok_or_else(|| {
            // p11-kit's RPC (client and server) forwards only the mechanisms
            // on its own allow-list, which has no AES key wrap: the token
            // behind it has them, the client module hides them.
            let p11kit_client = self.sessions.module.path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("p11-kit-client"));
            BackendError::Unsupported(format!(
                "token '{}' offers neither CKM_AES_KEY_WRAP_KWP (0x210B) nor CKM_AES_KEY_WRAP_PAD (0x210A){}",
                self.token.label,
                if p11kit_client {
                    " through this module: p11-kit's client module forwards no AES key wrap mechanism (p11-kit's RPC carries only the mechanisms on its own list); load the token's own PKCS#11 module instead"
                } else {
                    ""
                }
            ))
        })
    }

    /// Sessions this backend may hold open at once.
    pub fn max_sessions(&self) -> usize {
        self.sessions.max_sessions
    }

    /// The token's view of a master key's attributes.
    pub async fn master_key_facts(&self, mk: &MasterKeyRef) -> Result<KeyFacts, BackendError> {
        let mk = mk.clone();
        self.sessions
            .run("reading master key attributes", move |s| {
                let h = find_mk(s, &mk)?;
                key_facts(s, h)
            })
            .await
    }

    /// Number of secret keys in the token with this label (operators'
    /// audit of orphans; tests).
    pub async fn count_keys_labelled(&self, label: &str) -> Result<usize, BackendError> {
        let label = label.as_bytes().to_vec();
        self.sessions
            .run("counting keys by label", move |s| {
                let found = s
                    .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.clone())])
                    .doing("finding keys by label")?;
                Ok(found.len())
            })
            .await
    }

    /// The token's view of the cached unwrapped KEK of a pool, if cached.
    pub async fn cached_kek_facts(&self, pool_id: i64, generation: u32) -> Result<Option<KeyFacts>, BackendError> {
        match self.kek_cache.get((pool_id, generation), self.sessions.epoch()) {
            None => Ok(None),
            Some(k) => self.sessions.run("reading KEK attributes", move |s| key_facts(s, k.handle)).await.map(Some),
        }
    }

    /// Which protections against exporting a KEK this token enforces,
    /// found once per process by trying the attacks on throwaway keys
    /// (see `protect.rs`).
    pub async fn key_protection(&self) -> Result<ProtectionReport, BackendError> {
        let mech = self.wrap_mechanism()?;
        self.protection_probe
            .get_or_try_init(|| async {
                self.sessions
                    .run("checking which key protections the token enforces", move |s| {
                        protect::check(s, mech).doing("trying the key-export attacks on throwaway keys")
                    })
                    .await
            })
            .await
            .copied()
    }

    async fn oaep_hash(&self) -> Result<OaepHash, BackendError> {
        self.oaep_probe
            .get_or_try_init(|| async {
                self.sessions
                    .run("probing RSA-OAEP hashes", move |s| {
                        let (pt, pv) = rsa_pair_templates(2048);
                        let (public, private) = s
                            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &pt, &pv)
                            .doing("generating an RSA probe key")?;
                        let _cleanup = Cleanup { session: s, handles: vec![public, private] };
                        let pk = public_of(s, public)?;
                        probe_oaep(s, private, &pk)
                    })
                    .await
            })
            .await
            .copied()
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn identity(&self) -> String {
        format!("pkcs11:token={};serial={};manufacturer={}", self.token.label, self.token.serial, self.token.manufacturer)
    }

    async fn probe(&self) -> Result<ProbeReport, BackendError> {
        // Health: a session round trip; also refreshes the login if lost.
        let sessions = self.sessions.clone();
        self.sessions
            .run("checking the token", move |_s| sessions.with_token(|ctx, slot| session::again_on_general_error(|| ctx.get_token_info(slot)).map(|_| ()).doing("reading token information")))
            .await?;
        let oaep = self.oaep_hash().await?;
        let protection = match self.wrap {
            Some(_) => Some(self.key_protection().await?),
            None => None,
        };
        if let Some(p) = protection.filter(|p| !p.kek_protected()) {
            tracing::warn!(kms = %self.name, protection = ?p, "this token does not enforce every protection against exporting a KEK; a PIN holder with the catalog may read KEKs (docs/security.md)");
        }
        let has = |m: u64| self.token.mechanisms.contains(&m);
        Ok(ProbeReport {
            name: self.name.clone(),
            kind: self.kind(),
            state: if self.wrap.is_some() && has(CKM_RSA_PKCS_KEY_PAIR_GEN) && has(CKM_RSA_PKCS_OAEP) && has(CKM_AES_KEY_GEN) { ProbeStatus::Usable } else { ProbeStatus::Unusable },
            identity: self.identity(),
            details: serde_json::json!({
                "token": { "label": self.token.label, "serial": self.token.serial, "manufacturer": self.token.manufacturer,
                           "model": self.token.model, "max_rw_sessions": self.token.max_rw_sessions },
                "library": self.token.library,
                "session_pool": self.sessions.max_sessions,
                "wrap_mechanism": self.wrap.and_then(wrap_mechanism_name),
                "mechanisms": {
                    "CKM_AES_KEY_WRAP_KWP (0x210B)": has(CKM_AES_KEY_WRAP_KWP),
                    "CKM_AES_KEY_WRAP_PAD (0x210A)": has(CKM_AES_KEY_WRAP_PAD),
                    "CKM_RSA_PKCS_KEY_PAIR_GEN": has(CKM_RSA_PKCS_KEY_PAIR_GEN),
                    "CKM_RSA_PKCS_OAEP": has(CKM_RSA_PKCS_OAEP),
                    "CKM_AES_KEY_GEN": has(CKM_AES_KEY_GEN),
                },
                "oaep_hash": oaep,
                "key_protection": protection,
            }),
        })
    }

    async fn create_master_key(&self, label: &str) -> Result<MasterKeyRef, BackendError> {
        let label = label.to_owned();
        let id = hex::encode(crate::crypto::random_array::<16>().map_err(|source| BackendError::Crypto { context: "generating CKA_ID".into(), source })?);
        let (l, i) = (label.clone(), id.clone());
        // Without a key-wrap mechanism the MK could wrap nothing anyway,
        // and gets no templates (p11-kit's client cannot carry them).
        let templates = match self.wrap {
            Some(_) => protect::master_key_templates(self.key_protection().await?.rewrappable()),
            None => Vec::new(),
        };
        // Named before it exists: a call that times out here may still
        // create the key later, and the operator can find it by these.
        tracing::info!(label = %label, id = %id, "creating a master key");
        self.sessions
            .run_writing("creating the master key", move |s| {
                let mut template = vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                    Attribute::Id(hex::decode(&i).expect("hex we made")),
                    Attribute::Label(l.as_bytes().to_vec()),
                ];
                template.extend(templates.iter().cloned());
                let ours = [Attribute::Token(true), Attribute::Id(hex::decode(&i).expect("hex we made"))];
                // Whatever carries this fresh CKA_ID was made by this call:
                // the worker runs the closure again after a lost session or
                // reply, and a generation that fails may leave a partial
                // object (SoftHSM2 keeps the object file it had begun).
                // A whole key from an earlier attempt is kept (its reply was
                // lost); anything else is removed before generating, and the
                // removal must succeed, so never two keys share the ID.
                let mut tries = 0;
                loop {
                    tries += 1;
                    let earlier = s.find_objects(&ours).doing("looking for a master key of an earlier attempt")?;
                    if let [one] = earlier[..] {
                        if is_whole_master_key(s, one, &l) {
                            return Ok(());
                        }
                    }
                    for h in earlier {
                        s.destroy_object(h).doing("removing a partial master key of an earlier attempt")?;
                    }
                    match s.generate_key(&Mechanism::AesKeyGen, &template) {
                        Ok(_) => return Ok(()),
                        // SoftHSM2 answered one CKR_GENERAL_ERROR here in
                        // about twenty CI runs (pool creation beside
                        // restores; cause not found). rv.rs treats it as
                        // permanent because the token may be inconsistent;
                        // here nothing depends on the new key yet and the
                        // next round removes what it left, so it is tried
                        // once more.
                        Err(e @ CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _)) if tries == 1 => {
                            tracing::warn!(label = %l, id = %i, error = %e, "the token failed to generate the master key; trying once more");
                        }
                        Err(e) => {
                            if let Ok(left) = s.find_objects(&ours) {
                                for h in left {
                                    if s.destroy_object(h).is_err() {
                                        tracing::error!(label = %l, id = %i, "a failed master-key generation left an object that could not be removed; remove it by its CKA_ID");
                                    }
                                }
                            }
                            return Err(e).doing("generating the AES-256 master key");
                        }
                    }
                }
            })
            .await?;
        Ok(MasterKeyRef { id, label, material: None, owned: true })
    }

    async fn adopt_master_key(&self, reference: &str) -> Result<MasterKeyRef, BackendError> {
        let uri: Pkcs11Uri = reference.parse().map_err(|e| BackendError::Other(format!("master key URI '{reference}': {e}")))?;
        if let Some(t) = &uri.token {
            if *t != self.token.label {
                return Err(BackendError::Other(format!("master key URI names token '{t}', but KMS '{}' is token '{}'", self.name, self.token.label)));
            }
        }
        if uri.object_type.as_deref().is_some_and(|t| t != "secret-key") {
            return Err(BackendError::Other("a master key URI must have type=secret-key".into()));
        }
        if uri.id.is_none() && uri.object.is_none() {
            return Err(BackendError::Other("master key URI names neither id nor object (label)".into()));
        }
        let reference = reference.to_owned();
        let token_enforces = self.key_protection().await?.kek_protected();
        let mech = self.wrap_mechanism()?;
        self.sessions
            .run("adopting the master key", move |s| {
                let mut template = vec![Attribute::Class(ObjectClass::SECRET_KEY)];
                if let Some(id) = &uri.id {
                    template.push(Attribute::Id(id.clone()));
                }
                if let Some(label) = &uri.object {
                    template.push(Attribute::Label(label.as_bytes().to_vec()));
                }
                let found = s.find_objects(&template).doing("finding the master key")?;
                let h = match found.as_slice() {
                    [h] => *h,
                    [] => return Err(BackendError::MasterKeyMissing { id: reference.clone(), label: reference.clone() }.into()),
                    _ => return Err(BackendError::Other(format!("{} keys match '{reference}'; name one by id", found.len())).into()),
                };
                let facts = key_facts(s, h)?;
                let unfit = |reason: &str| OpError::Backend(BackendError::MasterKeyUnfit { label: facts.label.clone(), reason: reason.to_owned() });
                if !facts.token {
                    return Err(unfit("it is a session object, not a token object"));
                }
                if !facts.sensitive || facts.extractable {
                    return Err(unfit("it must be sensitive and not extractable"));
                }
                if !facts.wrap || !facts.unwrap {
                    return Err(unfit("it must allow wrap and unwrap"));
                }
                let attrs = s.get_attributes(h, &[AttributeType::Id, AttributeType::KeyType]).doing("reading the master key's id")?;
                let mut id = Vec::new();
                for a in attrs {
                    match a {
                        Attribute::Id(v) => id = v,
                        Attribute::KeyType(k) if k != KeyType::AES => return Err(unfit("it is not an AES key")),
                        _ => {}
                    }
                }
                if id.is_empty() {
                    return Err(unfit("it has no CKA_ID; give it one so keybridge can find it again"));
                }
                match protect::check_master_key(s, mech, h).doing("checking what the master key lets a token user unwrap")? {
                    Protection::NotEnforced if token_enforces => {
                        return Err(unfit(
                            "it lets a token user unwrap keys as readable, non-sensitive objects, or as extractable ones and wrap them under a key of their own; give it a CKA_UNWRAP_TEMPLATE with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false (docs/security.md)",
                        ))
                    }
                    Protection::NotEnforced => {
                        tracing::warn!(label = %facts.label, "the adopted master key lets a token user read what it unwraps, and this token enforces no unwrap template")
                    }
                    Protection::Untested => tracing::warn!(label = %facts.label, "the adopted master key would not wrap a test key; what it lets a token user unwrap was not checked"),
                    Protection::Enforced => {}
                }
                Ok(MasterKeyRef { id: hex::encode(id), label: facts.label, material: None, owned: false })
            })
            .await
    }

    async fn generate_kek(&self, mk: &MasterKeyRef, bits: usize) -> Result<NewKek, BackendError> {
        let wrap = self.wrap_mechanism()?;
        let mk = mk.clone();
        let (public, wrapped, hash) = self
            .sessions
            .run("generating and wrapping the KEK", move |s| {
                let mk_handle = find_mk(s, &mk)?;
                let (pt, pv) = rsa_pair_templates(bits);
                let (public, private) = s
                    .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &pt, &pv)
                    .doing("generating the RSA KEK pair in the token")?;
                let mut cleanup = Cleanup { session: s, handles: vec![public, private] };
                let pk = public_of(s, public)?;
                let wrapped = raw::wrap_key(s, wrap, mk_handle, private).doing("wrapping the private KEK under the master key")?;
                // Verify before anything is stored: the blob unwraps under
                // the MK, and learn which OAEP hash the token decrypts with.
                let check = unwrap_kek(s, wrap, mk_handle, &wrapped)?;
                cleanup.handles.push(check);
                let hash = probe_oaep(s, check, &pk)?;
                drop(cleanup);
                Ok((pk, wrapped, hash))
            })
            .await?;
        let spki = public.to_spki_der().map_err(|source| BackendError::Crypto { context: "encoding the public KEK".into(), source })?;
        let wrap_name = wrap_mechanism_name(wrap).expect("chosen from the known list");
        Ok(NewKek {
            bits,
            public_spki: spki,
            wrapped_private: wrapped,
            wrap_mechanism: wrap_name.into(),
            oaep_hash: hash,
            params: serde_json::json!({
                "kek_generation": "C_GenerateKeyPair CKM_RSA_PKCS_KEY_PAIR_GEN (session objects, destroyed after wrapping)",
                "public_exponent": 65537,
                "wrap": { "mechanism": wrap_name, "code": format!("0x{wrap:04X}"), "format": "PKCS#8 PrivateKeyInfo (C_WrapKey)" },
                "oaep": { "mechanism": "CKM_RSA_PKCS_OAEP", "hash": hash, "mgf": format!("mgf1-{hash}"), "source": "empty" },
                "token": { "label": self.token.label, "serial": self.token.serial },
            }),
        })
    }

    async fn decrypt_dek(&self, kek: &PoolKek<'_>, encrypted: &[u8]) -> Result<DekPlaintext, BackendError> {
        let wrap = pool_wrap_mechanism(kek)?;
        let cache = self.kek_cache.clone();
        let sessions = self.sessions.clone();
        let (pool_id, pool, hash) = ((kek.pool_id, kek.generation), kek.pool_name.to_owned(), kek.oaep_hash);
        let mk = kek.master_key.clone();
        let wrapped = kek.wrapped_private.to_vec();
        let ct = encrypted.to_vec();
        self.sessions
            .run("decrypting a DEK", move |s| {
                // Read the cache inside the call: a retry after a lost
                // session sees the new epoch and unwraps again.
                let epoch = sessions.epoch();
                for h in cache.buried(epoch) {
                    let _ = s.destroy_object(h);
                }
                // Warm path: the KEK is already unwrapped in the token. Any
                // failure other than a lost session sends us to the cold path
                // once (the handle may have died or been reused); errors of
                // the cold path are the ones reported.
                let warm = cache.get(pool_id, epoch);
                cache.stats.record(warm.is_some());
                if let Some(k) = warm {
                    match s.decrypt(&oaep(hash), k.handle, &ct) {
                        Ok(pt) => return Ok(DekPlaintext::new(Zeroizing::new(pt))),
                        Err(e @ CkError::Pkcs11(rv, _)) if !matches!(rv::disposition(rv), rv::Disposition::Permanent) && !bad_ciphertext(rv) => {
                            return Err(decrypt_error(e, &pool));
                        }
                        Err(_) => cache.evict(pool_id, &k),
                    }
                }
                let mk_handle = find_mk(s, &mk)?;
                let h = unwrap_stored_kek(s, wrap, mk_handle, &wrapped, &pool, &mk)?;
                // Held until this call ends; cached for others (TTL) or, with
                // no TTL, destroyed by a later call.
                let kek = cache.insert(pool_id, epoch, h);
                s.decrypt(&oaep(hash), kek.handle, &ct).map(|pt| DekPlaintext::new(Zeroizing::new(pt))).map_err(|e| decrypt_error(e, &pool))
            })
            .await
    }

    async fn destroy_master_key(&self, mk: &MasterKeyRef) -> Result<(), BackendError> {
        if !mk.owned {
            return Err(BackendError::MasterKeyNotOwned { label: mk.label.clone() });
        }
        let mk = mk.clone();
        self.sessions
            .run_writing("destroying the master key", move |s| {
                let h = find_mk(s, &mk)?;
                s.destroy_object(h).doing("destroying the master key")
            })
            .await
    }

    fn kek_release(&self) -> Result<(), String> {
        Err(KEK_STAYS.into())
    }

    async fn accepts_oaep(&self, hash: OaepHash) -> Result<(), String> {
        // The probe prefers SHA-256: a token that settled on SHA-1 has no other.
        match self.oaep_hash().await {
            Ok(OaepHash::Sha1) if hash != OaepHash::Sha1 => Err(format!(
                "token '{}' decrypts RSA-OAEP only with SHA-1, and the DEKs of this KEK generation are encrypted with RSA-OAEP over {hash}; it cannot be wrapped here",
                self.token.label
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn release_kek(&self, _kek: &PoolKek<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        Err(BackendError::Unsupported(KEK_STAYS.into()))
    }

    async fn wrap_kek(&self, mk: &MasterKeyRef, pkcs8: &[u8], public_spki: &[u8], hash: OaepHash) -> Result<WrappedKek, BackendError> {
        self.accepts_oaep(hash).await.map_err(BackendError::Unsupported)?;
        super::check_kek_pair(pkcs8, public_spki)?;
        let public = PublicKek::from_spki_der(public_spki).map_err(|source| BackendError::Crypto { context: "reading the public KEK".into(), source })?;
        let wrap = self.wrap_mechanism()?;
        // Into the token under a one-time transport key (a session object
        // made from a random value), then wrapped under the MK there: the
        // MK never leaves the token. The token's two AES key-wrap-with-
        // padding mechanisms are both RFC 5649, as `kwp` writes.
        let transport = crate::crypto::random_array::<32>().map_err(|source| BackendError::Crypto { context: "making a transport key".into(), source })?;
        let blob = crate::crypto::kwp::wrap(&transport[..], pkcs8).map_err(|source| BackendError::Crypto { context: "wrapping the KEK for the token".into(), source })?;
        let mk = mk.clone();
        let wrapped = self
            .sessions
            .run("importing a KEK under a master key", move |s| {
                let mk_handle = find_mk(s, &mk)?;
                let template = SecretTemplate(vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Unwrap(true),
                    Attribute::Wrap(false),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(false),
                    Attribute::Value(transport.to_vec()),
                ]);
                let t = s.create_object(&template.0).doing("making a one-time transport key")?;
                drop(template);
                let mut cleanup = Cleanup { session: s, handles: vec![t] };
                // Extractable only so C_WrapKey can wrap it under the MK.
                let kek = raw::unwrap_key(s, wrap, t, &blob, &kek_template(true)).doing("unwrapping the KEK under the transport key")?;
                cleanup.handles.push(kek);
                let wrapped = raw::wrap_key(s, wrap, mk_handle, kek).doing("wrapping the KEK under the master key")?;
                // Verify before anything is stored: the blob unwraps under
                // the MK to the private half of the generation's public KEK.
                let check = unwrap_kek(s, wrap, mk_handle, &wrapped)?;
                cleanup.handles.push(check);
                check_oaep(s, check, &public, hash)?;
                drop(cleanup);
                Ok(wrapped)
            })
            .await?;
        Ok(WrappedKek { wrapped, wrap_mechanism: wrap_mechanism_name(wrap).expect("chosen from the known list").into() })
    }

    async fn verify_kek(&self, kek: &PoolKek<'_>, public_spki: &[u8]) -> Result<(), BackendError> {
        // The KEK never leaves the token: unwrapped again under the MK (not
        // the cached handle) and an OAEP probe of the public KEK decrypted.
        let wrap = pool_wrap_mechanism(kek)?;
        let public = PublicKek::from_spki_der(public_spki).map_err(|source| BackendError::Crypto { context: "reading the public KEK".into(), source })?;
        let (pool, hash, mk, wrapped) = (kek.pool_name.to_owned(), kek.oaep_hash, kek.master_key.clone(), kek.wrapped_private.to_vec());
        self.sessions
            .run("checking a wrapped KEK", move |s| {
                let mk_handle = find_mk(s, &mk)?;
                let check = unwrap_stored_kek(s, wrap, mk_handle, &wrapped, &pool, &mk)?;
                let cleanup = Cleanup { session: s, handles: vec![check] };
                let not_it = |detail: String| BackendError::Other(format!("wrapped KEK of pool '{pool}' under master key {} is not the private half of the generation's public KEK ({detail})", mk.label));
                match check_oaep(s, check, &public, hash) {
                    Ok(()) => {}
                    // The handle was unwrapped a moment ago: these codes mean
                    // the probe is not this key's ciphertext (see `bad_ciphertext`).
                    Err(OpError::Ck { err: CkError::Pkcs11(rv, _), .. }) if bad_ciphertext(rv) => {
                        return Err(not_it(format!("the OAEP probe did not decrypt: {}", rv::ckr_name(rv))).into())
                    }
                    Err(OpError::Backend(BackendError::Other(_))) => return Err(not_it("the OAEP probe decrypted to something else".into()).into()),
                    Err(e) => return Err(e),
                }
                drop(cleanup);
                Ok(())
            })
            .await
    }

    async fn master_key_status(&self, mk: &MasterKeyRef) -> Result<KeyStatus, BackendError> {
        match self.master_key_facts(mk).await {
            Ok(facts) => Ok(KeyStatus { present: true, state: None, details: serde_json::to_value(facts).unwrap_or_default() }),
            Err(BackendError::MasterKeyMissing { .. }) => Ok(KeyStatus { present: false, state: None, details: serde_json::json!({}) }),
            Err(e) => Err(e),
        }
    }

    async fn destroy_master_keys_labelled(&self, label: &str) -> Result<usize, BackendError> {
        let label = label.as_bytes().to_vec();
        self.sessions
            .run_writing("destroying master keys by label", move |s| {
                let found = s
                    .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(true), Attribute::Label(label.clone())])
                    .doing("finding master keys by label")?;
                for h in &found {
                    s.destroy_object(*h).doing("destroying a master key")?;
                }
                Ok(found.len())
            })
            .await
    }

    fn cache_stats(&self) -> (u64, u64) {
        self.kek_cache.stats.get()
    }

    async fn clear_cache(&self) {
        self.kek_cache.clear();
        let cache = self.kek_cache.clone();
        let sessions = self.sessions.clone();
        let _ = self
            .sessions
            .run("destroying cached KEKs", move |s| {
                for h in cache.buried(sessions.epoch()) {
                    let _ = s.destroy_object(h);
                }
                Ok(())
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transport key's bytes in a template are wiped, not just freed.
    #[test]
    fn a_secret_template_wipes_its_value() {
        let mut t = SecretTemplate(vec![Attribute::Token(false), Attribute::Value(vec![0xA5; 32])]);
        t.wipe();
        let Attribute::Value(value) = &t.0[1] else { panic!("the value attribute is kept") };
        assert_eq!(value.as_slice(), [0u8; 32], "the bytes themselves are overwritten");
    }
}
