//! Sealed DEKs as a hostile service (or a man in the middle) could send
//! them: arbitrary text, and real seals with arbitrary bytes changed.
//!
//! Nothing may panic, and nothing but the untouched seal may open to the
//! sealed DEK and header: a changed seal is refused, or (where base64 has
//! two spellings of the same bytes) opens to exactly the same DEK and
//! header. The client's keys are derived once; seals naming other KDF
//! parameters are refused without deriving (the harness must not run
//! Argon2id with parameters its input chose).
#![no_main]

use std::sync::LazyLock;

use keybridge_proto::seal::{self, ClientKeys, KdfParams, Recipient, Registration};
use keybridge_proto::secret::{Dek, SecretString};
use libfuzzer_sys::fuzz_target;

const CLIENT: &str = "fuzz-client";

static KEYS: LazyLock<(ClientKeys, Registration)> = LazyLock::new(|| {
    let password = SecretString::from("fuzz-network-password".to_owned());
    let kdf = KdfParams { m_kib: KdfParams::MIN_M_KIB, t: 5, ..Default::default() };
    let reg = seal::register(CLIENT, &password, kdf).unwrap();
    let keys = ClientKeys::derive(CLIENT, &password, &reg.salt, &reg.kdf).unwrap();
    (keys, reg)
});

fuzz_target!(|data: &[u8]| {
    let (keys, reg) = &*KEYS;
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Arbitrary text as the sealed DEK.
        let _ = seal::open_with_keys_only(&String::from_utf8_lossy(rest), CLIENT, keys);
        return;
    }
    // A real seal, then edits: (position u16, xor byte) triples.
    let dek = Dek::from_bytes([0x42; 32]);
    let sealed = seal::seal(&dek, Recipient { name: CLIENT, salt: &reg.salt, kdf: reg.kdf, seal_public: &reg.seal_public }, "pool", "dek-1").unwrap();
    let mut bytes = sealed.clone().into_bytes();
    for edit in rest.chunks_exact(3) {
        let at = u16::from_be_bytes([edit[0], edit[1]]) as usize % bytes.len();
        bytes[at] ^= edit[2];
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match seal::open_with_keys_only(&text, CLIENT, keys) {
        Ok((header, opened)) => {
            assert_eq!(opened.expose(), dek.expose(), "an edited seal opened to another DEK");
            assert_eq!((header.client.as_str(), header.pool.as_str(), header.dek_id.as_str()), (CLIENT, "pool", "dek-1"), "an edited seal opened with another header");
        }
        Err(e) => assert_ne!(text, sealed, "the untouched seal did not open: {e}"),
    }
});
