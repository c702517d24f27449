//! Client request signatures.
//!
//! A client proves it knows its network password without sending it: the
//! password (through Argon2id, see [`crate::seal::ClientKeys`]) gives an
//! Ed25519 key whose public half the catalog holds. Every client request
//! carries four headers and is signed over a canonical form that binds the
//! method, path, client, timestamp, nonce and body hash:
//!
//! ```text
//! keybridge-request-v1 \n METHOD \n /path?query \n client \n timestamp \n nonce \n hex(SHA-256(body))
//! ```
//!
//! The service refuses a timestamp outside its clock-skew window and any
//! nonce it has already accepted within that window (replays).
//!
//! A signature rather than an HMAC: a MAC key would have to be stored by the
//! service, and anyone holding the catalog could then act as the client. A
//! verifying key lets the catalog stay free of secrets.

use base64::Engine;
use sha2::{Digest, Sha256};

pub const HEADER_CLIENT: &str = "x-keybridge-client";
pub const HEADER_TIMESTAMP: &str = "x-keybridge-timestamp";
pub const HEADER_NONCE: &str = "x-keybridge-nonce";
pub const HEADER_SIGNATURE: &str = "x-keybridge-signature";

/// Nonces are 16 random bytes, hex.
pub const NONCE_HEX_LEN: usize = 32;

/// The bytes a client signs for one request.
pub fn canonical(method: &str, path_and_query: &str, client: &str, timestamp: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!("keybridge-request-v1\n{method}\n{path_and_query}\n{client}\n{timestamp}\n{nonce}\n{body_hash}").into_bytes()
}

/// The four signature headers for a request (client side).
pub fn sign(
    keys: &crate::seal::ClientKeys,
    client: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> crate::Result<[(&'static str, String); 4]> {
    let timestamp = unix_now();
    let nonce = hex::encode(*crate::crypto::random_array::<16>().map_err(crate::Error::crypto("generating request nonce"))?);
    let sig = keys.sign(&canonical(method, path_and_query, client, timestamp, &nonce, body));
    Ok([
        (HEADER_CLIENT, client.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_NONCE, nonce),
        (HEADER_SIGNATURE, base64::engine::general_purpose::STANDARD.encode(sig)),
    ])
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why a signed request was refused (service side). Messages name the
/// header at fault and never echo the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed header {0}")]
    Malformed(&'static str),
    #[error("timestamp is {0} s away from the service clock (allowed: {1} s); check the client's clock")]
    Skew(u64, u64),
    #[error("nonce already used: the request is a replay")]
    Replay,
    #[error("signature does not verify for client '{0}' (wrong network password, or the request was altered)")]
    BadSignature(String),
    #[error("unknown client '{0}'")]
    UnknownClient(String),
    #[error("client '{0}' was registered before request signing existed; register it again")]
    NoAuthKey(String),
}

/// Verify a signature over the canonical request with a client's public key.
pub fn verify(public: &[u8; 32], message: &[u8], signature_b64: &str, client: &str) -> Result<(), AuthError> {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
    let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|_| AuthError::BadSignature(client.to_owned()))?;
    key.verify_strict(message, &sig).map_err(|_| AuthError::BadSignature(client.to_owned()))
}
