//! Delivery of a DEK to a client under its network password.
//!
//! Registration: the client's password and a random per-client salt go
//! through Argon2id; the 32-byte output seeds an X25519 key pair (through
//! HKDF). The catalog stores only the salt, the Argon2id parameters and the
//! *public* key: no password and nothing from which the DEKs could be opened.
//!
//! Sealing (service side): an ephemeral X25519 key agrees a secret with the
//! client's public key; HKDF-SHA256 turns it into an AES-256-GCM key; the DEK
//! is encrypted with the header (client, pool, DEK id, salt, KDF parameters,
//! ephemeral public key) as associated data. Opening (client side) needs the
//! password. The password itself never crosses the network, and a sealed DEK
//! replayed under another client, pool or DEK id does not open.
//!
//! Wire form: `kbseal1.` followed by base64url (no padding) of
//! ```text
//! "KBS1" | u8 len | client | u8 len | pool | u8 len | dek_id | u8 len | salt
//!        | u32 m_kib | u32 t | u32 p | ephemeral public (32) | nonce (12)
//!        | ciphertext (32) | tag (16)
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::secret::{Dek, ExposeSecret, SecretString, DEK_LEN};
use crate::{Error, Result};

const PREFIX: &str = "kbseal1.";
const MAGIC: &[u8; 4] = b"KBS1";
const SALT_LEN: usize = 16;
const HKDF_CLIENT_KEY: &[u8] = b"keybridge/v1/client-seal-x25519";
const HKDF_SEAL_KEY: &[u8] = b"keybridge/v1/dek-seal-aes256gcm";
const HKDF_AUTH_KEY: &[u8] = b"keybridge/v1/client-auth-ed25519";

/// Argon2id parameters, stored per client so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub alg: KdfAlg,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// The password KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlg {
    Argon2id,
}

impl Default for KdfParams {
    /// OWASP's baseline for Argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        KdfParams { alg: KdfAlg::Argon2id, m_kib: 19 * 1024, t: 2, p: 1 }
    }
}

impl KdfParams {
    /// The cheapest Argon2id cost keybridge accepts, on both sides: at least
    /// 7 MiB, and memory × passes at least 35,840 KiB (OWASP's Argon2id
    /// table: 46 MiB × 1 … 7 MiB × 5). A client checks it before deriving
    /// keys from parameters the service sent (unauthenticated), so a hostile
    /// service cannot make its signatures a cheap password oracle.
    pub const MIN_M_KIB: u32 = KdfBounds::CLIENT.min_m_kib;
    pub const MIN_M_KIB_TIMES_T: u64 = KdfBounds::CLIENT.min_m_kib_times_t;

    /// Refuse parameters below the floor, or large enough that a forged
    /// record could exhaust memory or time (4 GiB, 64 passes, 64 lanes).
    pub fn check(&self) -> std::result::Result<(), String> {
        self.check_within(&KdfBounds::CLIENT)
    }

    /// Refuse parameters outside `bounds`: below its floor (too cheap to
    /// guess against), or above its ceiling (a forged record could exhaust
    /// memory or time).
    pub fn check_within(&self, bounds: &KdfBounds) -> std::result::Result<(), String> {
        if self.m_kib > bounds.max_m_kib || self.t > bounds.max_t || self.p > bounds.max_p || self.t == 0 || self.p == 0 {
            return Err(format!(
                "Argon2id parameters out of range (m={} KiB, t={}, p={}; at most {}, {} passes, {} lanes)",
                self.m_kib,
                self.t,
                self.p,
                kib_text(bounds.max_m_kib),
                bounds.max_t,
                bounds.max_p
            ));
        }
        if self.m_kib < bounds.min_m_kib || u64::from(self.m_kib) * u64::from(self.t) < bounds.min_m_kib_times_t {
            return Err(format!(
                "Argon2id parameters too weak (m={} KiB, t={}): keybridge needs at least {} KiB and memory x passes >= {} KiB",
                self.m_kib, self.t, bounds.min_m_kib, bounds.min_m_kib_times_t
            ));
        }
        Ok(())
    }

    /// Run Argon2id (version 0x13) on `secret` and `salt` with these
    /// parameters: 32 bytes, zeroized on drop. The caller checks the
    /// parameters first ([`KdfParams::check_within`]).
    pub(crate) fn derive_key(&self, secret: &[u8], salt: &[u8]) -> std::result::Result<Zeroizing<[u8; 32]>, String> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| format!("invalid Argon2id parameters: {e}"))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon.hash_password_into(secret, salt, &mut out[..]).map_err(|e| format!("Argon2id failed: {e}"))?;
        Ok(out)
    }
}

/// The floor and ceiling of the Argon2id parameters one format accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfBounds {
    /// Least memory, KiB.
    pub min_m_kib: u32,
    /// Least memory × passes, KiB.
    pub min_m_kib_times_t: u64,
    /// Most memory, KiB.
    pub max_m_kib: u32,
    /// Most passes.
    pub max_t: u32,
    /// Most lanes.
    pub max_p: u32,
}

impl KdfBounds {
    /// A client's network password ([`KdfParams::check`]).
    pub const CLIENT: KdfBounds =
        KdfBounds { min_m_kib: 7 * 1024, min_m_kib_times_t: 35_840, max_m_kib: 4 * 1024 * 1024, max_t: 64, max_p: 64 };
}

/// `m` KiB as an operator reads it: "4 GiB", "256 MiB", "7000 KiB".
fn kib_text(m: u32) -> String {
    match m {
        m if m % (1024 * 1024) == 0 => format!("{} GiB", m / (1024 * 1024)),
        m if m % 1024 == 0 => format!("{} MiB", m / 1024),
        m => format!("{m} KiB"),
    }
}

/// Salt lengths accepted, on both sides.
pub const SALT_LENS: std::ops::RangeInclusive<usize> = 16..=64;

/// What registering a client stores in the catalog: public material only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub kdf: KdfParams,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "hex_array")]
    pub seal_public: [u8; 32],
    #[serde(with = "hex_array")]
    pub auth_public: [u8; 32],
}

mod hex_bytes {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_array {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        super::hex_bytes::serialize(v, s)
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v = super::hex_bytes::deserialize(d)?;
        v.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes (64 hex characters)"))
    }
}

/// Everything a client derives from its network password: the X25519
/// secret that opens sealed DEKs and the Ed25519 key that signs its requests
/// to the service. Both come from one Argon2id run, so a client pays the
/// password KDF once per process.
pub struct ClientKeys {
    salt: Vec<u8>,
    kdf: KdfParams,
    seal: StaticSecret,
    auth: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys").field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

impl ClientKeys {
    /// Run Argon2id on `client`'s `password` with its `salt` and parameters.
    pub fn derive(client: &str, password: &SecretString, salt: &[u8], kdf: &KdfParams) -> Result<ClientKeys> {
        let bad = |reason: String| Error::Seal { client: client.to_owned(), reason };
        kdf.check().map_err(bad)?;
        if !SALT_LENS.contains(&salt.len()) {
            return Err(bad(format!("the KDF salt is {} bytes; keybridge needs 16 to 64", salt.len())));
        }
        let stretched = kdf.derive_key(password.expose_secret().as_bytes(), salt).map_err(bad)?;
        let expand = |info: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            hkdf::Hkdf::<Sha256>::new(None, &stretched[..])
                .expand(info, &mut out[..])
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        Ok(ClientKeys {
            salt: salt.to_vec(),
            kdf: *kdf,
            seal: StaticSecret::from(*expand(HKDF_CLIENT_KEY)),
            auth: ed25519_dalek::SigningKey::from_bytes(&expand(HKDF_AUTH_KEY)),
        })
    }

    /// The public half of the seal key (what the catalog stores).
    pub fn seal_public(&self) -> [u8; 32] {
        PublicKey::from(&self.seal).to_bytes()
    }

    /// The public half of the request-signing key (what the catalog stores).
    pub fn auth_public(&self) -> [u8; 32] {
        self.auth.verifying_key().to_bytes()
    }

    /// Sign `message` (a canonical request, see [`crate::api::auth`]).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.auth.sign(message).to_bytes()
    }

    /// Whether these keys were derived with `salt` and `kdf`.
    fn matches(&self, salt: &[u8], kdf: &KdfParams) -> bool {
        self.salt == salt && self.kdf == *kdf
    }
}

/// Derive `client`'s registration record from its password.
pub fn register(client: &str, password: &SecretString, kdf: KdfParams) -> Result<Registration> {
    if password.expose_secret().chars().count() < 8 {
        return Err(Error::Seal {
            client: client.to_owned(),
            reason: "the network password must be at least 8 characters".into(),
        });
    }
    let salt = crate::crypto::random_array::<SALT_LEN>().map_err(Error::crypto("generating client salt"))?;
    let keys = ClientKeys::derive(client, password, &salt[..], &kdf)?;
    Ok(Registration { kdf, salt: salt.to_vec(), seal_public: keys.seal_public(), auth_public: keys.auth_public() })
}

fn seal_key(shared: &[u8; 32], ephemeral: &[u8; 32], client_public: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(client_public);
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(HKDF_SEAL_KEY, &mut key[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.push(u8::try_from(field.len()).expect("fields are at most 255 bytes"));
    out.extend_from_slice(field);
}

/// Identity of a sealed DEK, readable without the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedHeader {
    pub client: String,
    pub pool: String,
    pub dek_id: String,
}

/// The key agreement for sealing to one client, done ahead of the DEK: an
/// ephemeral X25519 key and the AES-256-GCM key it agrees with the client's
/// public key. It depends only on the client, so it can be computed while
/// the KMS decrypts, or kept for the client's next seals (see
/// [`SealerCache`]); every seal draws its own random nonce. The key is
/// zeroized on drop.
pub struct Sealer {
    client: String,
    salt: Vec<u8>,
    kdf: KdfParams,
    seal_public: [u8; 32],
    ephemeral_public: [u8; 32],
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("client", &self.client).finish_non_exhaustive()
    }
}

/// The registered public material a DEK is sealed to: who the client is and
/// what its password derived at registration (the catalog's client row).
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub name: &'a str,
    pub salt: &'a [u8],
    pub kdf: KdfParams,
    pub seal_public: &'a [u8; 32],
}

impl Sealer {
    /// Agree a fresh seal key with `client`'s public key.
    pub fn new(client: Recipient<'_>) -> Result<Sealer> {
        let ephemeral_bytes = crate::crypto::random_array::<32>().map_err(Error::crypto("generating ephemeral key"))?;
        let ephemeral = StaticSecret::from(*ephemeral_bytes);
        let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&PublicKey::from(*client.seal_public));
        Ok(Sealer {
            client: client.name.to_owned(),
            salt: client.salt.to_owned(),
            kdf: client.kdf,
            seal_public: *client.seal_public,
            ephemeral_public,
            key: seal_key(shared.as_bytes(), &ephemeral_public, client.seal_public),
        })
    }

    /// Whether this agreement was made with exactly `client`'s registration
    /// (name, salt, KDF parameters and public key).
    pub fn serves(&self, client: Recipient<'_>) -> bool {
        self.client == client.name && self.salt == client.salt && self.kdf == client.kdf && self.seal_public == *client.seal_public
    }

    /// Seal `dek` (with its pool and id) into the `kbseal1.` string.
    pub fn seal(&self, dek: &Dek, pool: &str, dek_id: &str) -> Result<String> {
        let nonce = crate::crypto::random_array::<12>().map_err(Error::crypto("generating seal nonce"))?;
        let mut out = Vec::with_capacity(200);
        out.extend_from_slice(MAGIC);
        push_field(&mut out, self.client.as_bytes());
        push_field(&mut out, pool.as_bytes());
        push_field(&mut out, dek_id.as_bytes());
        push_field(&mut out, &self.salt);
        for v in [self.kdf.m_kib, self.kdf.t, self.kdf.p] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.ephemeral_public);
        out.extend_from_slice(&nonce[..]);
        let cipher = Aes256Gcm::new_from_slice(&self.key[..]).expect("32-byte key");
        let ct = cipher
            .encrypt((&nonce[..]).try_into().expect("12-byte nonce"), Payload { msg: dek.expose(), aad: &out })
            .map_err(|_| Error::Seal { client: self.client.clone(), reason: "AES-GCM sealing failed".into() })?;
        out.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)))
    }
}

/// Seal `dek` for `client` (service side), with a fresh key agreement.
pub fn seal(dek: &Dek, client: Recipient<'_>, pool: &str, dek_id: &str) -> Result<String> {
    Sealer::new(client)?.seal(dek, pool, dek_id)
}

/// Each client's latest [`Sealer`], kept for its next seals: the key
/// agreement (an X25519 scalar multiplication and HKDF, about 75 us) is
/// most of a seal's CPU, and a restore recovers many DEKs for one client.
/// An agreement is used for at most `uses` seals and `lifetime`, and only
/// while the client's registration is the one it was made with; then a
/// fresh ephemeral key replaces it. Each seal has its own random 96-bit
/// nonce, so AES-GCM's limit for random nonces (2^32 messages per key) is
/// far away. What reuse gives up: a copy of this process's memory opens
/// the seals of the last `lifetime` to that client (their DEKs passed
/// through the same memory).
pub struct SealerCache {
    kept: std::sync::Mutex<std::collections::HashMap<String, Kept>>,
    lifetime: std::time::Duration,
    uses: u32,
    clients: usize,
}

struct Kept {
    sealer: std::sync::Arc<Sealer>,
    made: std::time::Instant,
    uses: u32,
}

impl Default for SealerCache {
    /// At most 60 s and 1,024 seals per agreement, 4,096 clients kept.
    fn default() -> Self {
        SealerCache::new(std::time::Duration::from_secs(60), 1024, 4096)
    }
}

impl std::fmt::Debug for SealerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealerCache").field("lifetime", &self.lifetime).field("uses", &self.uses).finish_non_exhaustive()
    }
}

impl SealerCache {
    pub fn new(lifetime: std::time::Duration, uses: u32, clients: usize) -> Self {
        SealerCache { kept: Default::default(), lifetime, uses, clients }
    }

    /// Forget every agreement past its limits, so that its key leaves
    /// memory even when its client seals nothing more (the service calls
    /// this on its health interval).
    pub fn purge(&self) {
        self.drop_spent(&mut self.kept.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// How many agreements are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn drop_spent(&self, kept: &mut std::collections::HashMap<String, Kept>) {
        kept.retain(|_, k| k.uses < self.uses && k.made.elapsed() < self.lifetime);
    }

    /// A sealer for `client`: the kept one while it is within its limits,
    /// else a fresh agreement, kept in its place.
    pub fn sealer(&self, client: Recipient<'_>) -> Result<std::sync::Arc<Sealer>> {
        let lock = || self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = lock().get_mut(client.name) {
            if k.uses < self.uses && k.made.elapsed() < self.lifetime && k.sealer.serves(client) {
                k.uses += 1;
                return Ok(k.sealer.clone());
            }
        }
        let sealer = std::sync::Arc::new(Sealer::new(client)?);
        let mut kept = lock();
        self.drop_spent(&mut kept);
        if kept.len() >= self.clients && !kept.contains_key(client.name) {
            kept.clear();
        }
        kept.insert(client.name.to_owned(), Kept { sealer: sealer.clone(), made: std::time::Instant::now(), uses: 1 });
        Ok(sealer)
    }
}

struct Parsed<'a> {
    header: SealedHeader,
    salt: &'a [u8],
    kdf: KdfParams,
    ephemeral: [u8; 32],
    nonce: &'a [u8],
    aad: &'a [u8],
    ct: &'a [u8],
}

fn parse(raw: &[u8]) -> std::result::Result<Parsed<'_>, &'static str> {
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> std::result::Result<&[u8], &'static str> {
        let s = raw.get(*pos..*pos + n).ok_or("it is truncated")?;
        *pos += n;
        Ok(s)
    };
    if take(&mut pos, 4)? != MAGIC {
        return Err("it is not a keybridge sealed DEK (bad magic)");
    }
    let text = |pos: &mut usize| -> std::result::Result<String, &'static str> {
        let n = take(pos, 1)?[0] as usize;
        String::from_utf8(take(pos, n)?.to_vec()).map_err(|_| "a name field is not UTF-8")
    };
    let client = text(&mut pos)?;
    let pool = text(&mut pos)?;
    let dek_id = text(&mut pos)?;
    let n = take(&mut pos, 1)?[0] as usize;
    let salt = take(&mut pos, n)?;
    let mut u32s = [0u32; 3];
    for v in &mut u32s {
        *v = u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes"));
    }
    let ephemeral: [u8; 32] = take(&mut pos, 32)?.try_into().expect("32 bytes");
    let nonce = take(&mut pos, 12)?;
    let aad = &raw[..pos];
    let ct = take(&mut pos, DEK_LEN + 16)?;
    if pos != raw.len() {
        return Err("it has trailing bytes");
    }
    Ok(Parsed {
        header: SealedHeader { client, pool, dek_id },
        salt,
        kdf: KdfParams { alg: KdfAlg::Argon2id, m_kib: u32s[0], t: u32s[1], p: u32s[2] },
        ephemeral,
        nonce,
        aad,
        ct,
    })
}

fn decode(sealed: &str, client: &str) -> Result<Vec<u8>> {
    let bad = |reason: &str| Error::Seal { client: client.to_owned(), reason: reason.to_owned() };
    let body = sealed.trim().strip_prefix(PREFIX).ok_or_else(|| bad("it does not start with 'kbseal1.'"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("it is not valid base64url"))
}

/// Read the header of a sealed DEK without opening it.
pub fn peek(sealed: &str) -> Result<SealedHeader> {
    let raw = decode(sealed, "?")?;
    parse(&raw)
        .map(|p| p.header)
        .map_err(|reason| Error::Seal { client: "?".into(), reason: reason.into() })
}

/// Open a sealed DEK with the client's password (client side).
pub fn open(sealed: &str, client: &str, password: &SecretString) -> Result<(SealedHeader, Dek)> {
    let raw = decode(sealed, client)?;
    let p = parse(&raw).map_err(|r| Error::Seal { client: client.to_owned(), reason: r.into() })?;
    let keys = ClientKeys::derive(client, password, p.salt, &p.kdf)?;
    open_parsed(p, client, &keys)
}

/// Open a sealed DEK with keys already derived from the password (a client
/// that signs its requests has them). Derives afresh if the DEK was sealed
/// under another salt or KDF parameters.
pub fn open_with(sealed: &str, client: &str, keys: &ClientKeys, password: &SecretString) -> Result<(SealedHeader, Dek)> {
    let raw = decode(sealed, client)?;
    let p = parse(&raw).map_err(|r| Error::Seal { client: client.to_owned(), reason: r.into() })?;
    if keys.matches(p.salt, &p.kdf) {
        open_parsed(p, client, keys)
    } else {
        open(sealed, client, password)
    }
}

/// Open a sealed DEK only if it names `keys`' salt and KDF parameters; it
/// never derives. For the fuzz target, which must not run Argon2id with
/// parameters its input chose (the floor and ceiling are checked on their
/// own, [`KdfParams::check`]).
#[cfg(any(test, feature = "fuzzing"))]
pub fn open_with_keys_only(sealed: &str, client: &str, keys: &ClientKeys) -> Result<(SealedHeader, Dek)> {
    let raw = decode(sealed, client)?;
    let p = parse(&raw).map_err(|r| Error::Seal { client: client.to_owned(), reason: r.into() })?;
    if !keys.matches(p.salt, &p.kdf) {
        return Err(Error::Seal { client: client.to_owned(), reason: "it names other KDF parameters".into() });
    }
    open_parsed(p, client, keys)
}

fn open_parsed(p: Parsed<'_>, client: &str, keys: &ClientKeys) -> Result<(SealedHeader, Dek)> {
    let bad = |reason: String| Error::Seal { client: client.to_owned(), reason };
    if p.header.client != client {
        return Err(bad(format!("it was sealed for client '{}'", p.header.client)));
    }
    let shared = keys.seal.diffie_hellman(&PublicKey::from(p.ephemeral));
    let key = seal_key(shared.as_bytes(), &p.ephemeral, &keys.seal_public());
    let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("32-byte key");
    let plain = Zeroizing::new(
        cipher
            .decrypt(p.nonce.try_into().expect("12-byte nonce"), Payload { msg: p.ct, aad: p.aad })
            .map_err(|_| bad("wrong network password, or the sealed DEK was altered".into()))?,
    );
    let bytes: [u8; DEK_LEN] = plain.as_slice().try_into().map_err(|_| bad("the DEK has the wrong length".into()))?;
    Ok((p.header, Dek::from_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept agreement serves the same registration within its limits and
    /// its seals open with the password; a changed registration, the use
    /// limit and the lifetime each give a fresh one.
    #[test]
    fn kept_sealers_are_reused_within_their_limits_only() {
        let kdf = KdfParams { alg: KdfAlg::Argon2id, m_kib: KdfParams::MIN_M_KIB, t: 5, p: 1 };
        let password = SecretString::from("correct horse".to_owned());
        let reg = register("alice", &password, kdf).unwrap();
        let other = register("alice", &SecretString::from("another one".to_owned()), kdf).unwrap();
        let alice = Recipient { name: "alice", salt: &reg.salt, kdf, seal_public: &reg.seal_public };
        let cache = SealerCache::new(std::time::Duration::from_secs(3600), 3, 16);
        let first = cache.sealer(alice).unwrap();
        let again = cache.sealer(alice).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "the same registration within the limits gets the kept agreement");
        for (i, s) in [&first, &again].into_iter().enumerate() {
            let dek = Dek::generate().unwrap();
            let sealed = s.seal(&dek, "pool", &format!("dek-{i}")).unwrap();
            let (header, opened) = open(&sealed, "alice", &password).unwrap();
            assert_eq!((header.dek_id.as_str(), opened.expose()), (format!("dek-{i}").as_str(), dek.expose()));
        }
        let third = cache.sealer(alice).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &third));
        let fourth = cache.sealer(alice).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &fourth), "used past its limit of 3 seals");
        let changed = Recipient { salt: &other.salt, seal_public: &other.seal_public, ..alice };
        let fresh = cache.sealer(changed).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&fourth, &fresh) && fresh.serves(changed) && !fresh.serves(alice), "a changed registration gets its own agreement");
        // An agreement used up leaves memory at the next purge, a fresh
        // one stays.
        assert_eq!(cache.len(), 1);
        cache.purge();
        assert_eq!(cache.len(), 1, "a fresh agreement is kept");
        for _ in 0..2 {
            cache.sealer(changed).unwrap();
        }
        cache.purge();
        assert_eq!(cache.len(), 0, "an agreement past its seals is forgotten");
        let expired = SealerCache::new(std::time::Duration::ZERO, 1024, 16);
        assert!(!std::sync::Arc::ptr_eq(&expired.sealer(alice).unwrap(), &expired.sealer(alice).unwrap()), "past its lifetime");
        expired.purge();
        assert_eq!(expired.len(), 0, "an agreement past its lifetime is forgotten");
    }

    /// The client's floor and ceiling, and what an operator reads when a
    /// record is outside them.
    #[test]
    fn client_kdf_bounds() {
        let kdf = |m_kib, t, p| KdfParams { alg: KdfAlg::Argon2id, m_kib, t, p };
        assert_eq!(KdfParams::default().check(), Ok(()));
        assert_eq!(kdf(KdfParams::MIN_M_KIB, 5, 1).check(), Ok(()));
        assert_eq!(kdf(4 * 1024 * 1024, 64, 64).check(), Ok(()));
        assert_eq!(
            kdf(4 * 1024 * 1024 + 1, 1, 1).check().unwrap_err(),
            "Argon2id parameters out of range (m=4194305 KiB, t=1, p=1; at most 4 GiB, 64 passes, 64 lanes)"
        );
        for (m, t, p) in [(19 * 1024, 65, 1), (19 * 1024, 2, 65), (19 * 1024, 0, 1), (19 * 1024, 2, 0)] {
            assert!(kdf(m, t, p).check().unwrap_err().contains("out of range"), "{m} {t} {p}");
        }
        assert_eq!(
            kdf(8192, 4, 1).check().unwrap_err(),
            "Argon2id parameters too weak (m=8192 KiB, t=4): keybridge needs at least 7168 KiB and memory x passes >= 35840 KiB"
        );
        assert!(kdf(KdfParams::MIN_M_KIB - 1, 64, 1).check().unwrap_err().contains("too weak"));
    }
}
