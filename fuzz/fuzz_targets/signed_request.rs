//! The signed-request check the service runs on what a client sends: the
//! signature header (base64 of an Ed25519 signature) over the canonical
//! request, with method, path and query, timestamp, nonce and body as the
//! input chose them.
//!
//! Nothing may panic, and a signature verifies only for the exact request
//! it was made over.
#![no_main]

use std::sync::LazyLock;

use keybridge_proto::api::auth::{canonical, sign, verify};
use keybridge_proto::seal::{self, ClientKeys, KdfParams};
use keybridge_proto::secret::SecretString;
use libfuzzer_sys::fuzz_target;

const BODY: &[u8] = b"{\"pool\":\"p\"}";

/// The client's public key, and the timestamp, nonce and signature of one
/// real request (POST /v1/deks with BODY).
static SIGNED: LazyLock<([u8; 32], u64, String, String)> = LazyLock::new(|| {
    let password = SecretString::from("fuzz-network-password".to_owned());
    let kdf = KdfParams { m_kib: KdfParams::MIN_M_KIB, t: 5, ..Default::default() };
    let reg = seal::register("c", &password, kdf).unwrap();
    let keys = ClientKeys::derive("c", &password, &reg.salt, &reg.kdf).unwrap();
    let [_, (_, timestamp), (_, nonce), (_, signature)] = sign(&keys, "c", "POST", "/v1/deks", BODY).unwrap();
    (reg.auth_public, timestamp.parse().unwrap(), nonce, signature)
});

fuzz_target!(|data: &[u8]| {
    let (public, timestamp, real_nonce, signature) = &*SIGNED;
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(5, '\n');
    let (method, path, nonce, sig, body) = (
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
    );
    let message = canonical(method, path, "c", *timestamp, nonce, body.as_bytes());
    // The input's own signature text: never a valid signature for it.
    if verify(public, &message, sig, "c").is_ok() {
        assert_eq!(sig, signature.as_str(), "a signature nobody made verified");
    }
    // The real signature: only over the request it was made for.
    let original = canonical("POST", "/v1/deks", "c", *timestamp, real_nonce, BODY);
    assert_eq!(verify(public, &message, signature, "c").is_ok(), message == original, "the signature verified over another request");
});
