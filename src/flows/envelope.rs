//! The DEK envelope: what is RSA-OAEP encrypted under a pool's public KEK.
//! One place builds it ([`build`]) and one place checks it ([`open`]).
//!
//! ```text
//! v2:  DEK (32) ‖ 0x02 ‖ SHA-256("keybridge/v2/dek-binding", dek id, pool, client,
//!                                seal_public, auth_public)      65 bytes
//! v1:  DEK (32) ‖ SHA-256("keybridge/v1/dek-binding", dek id, pool, client)  64 bytes
//! ```
//!
//! The binding ties the DEK to its catalog row, and (v2) to the public keys
//! the client registered with. Whoever can write the catalog but holds no
//! KMS key can move a DEK row to another pool, client or id, or replace a
//! client's row with keys derived from their own password; either makes the
//! binding fail at restore (exit 6), so the service never seals a DEK to
//! keys it was not issued for. The version is told by the plaintext's
//! length, which nobody without the KEK's private half can change in an
//! existing ciphertext. v1 envelopes (DEKs issued before v2) are still
//! opened, with the weaker check: they do not name the client's keys.
//! (RSA-OAEP labels would bind the same way, but SoftHSM2 does not accept
//! them.)

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use keybridge_catalog::ClientRecord;
use keybridge_proto::secret::{Dek, DEK_LEN};
use crate::{Error, Result};

const V1_LEN: usize = DEK_LEN + 32;
const V2_LEN: usize = DEK_LEN + 1 + 32;
const V2: u8 = 2;

fn binding(domain: &[u8], dek_id: &str, pool: &str, client: &str, keys: Option<&ClientRecord>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    let mut part = |p: &[u8]| {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    };
    part(dek_id.as_bytes());
    part(pool.as_bytes());
    part(client.as_bytes());
    if let Some(c) = keys {
        part(&c.seal_public);
        part(c.auth_public.as_ref().map_or(&[][..], |k| &k[..]));
    }
    h.finalize().into()
}

/// The v2 envelope of `dek`, issued as `dek_id` in `pool` to `client`.
pub(crate) fn build(dek: &Dek, dek_id: &str, pool: &str, client: &ClientRecord) -> Zeroizing<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::with_capacity(V2_LEN));
    plain.extend_from_slice(dek.expose());
    plain.push(V2);
    plain.extend_from_slice(&binding(b"keybridge/v2/dek-binding", dek_id, pool, &client.name, Some(client)));
    plain
}

/// The DEK in a decrypted envelope, if its binding names this row: `dek_id`
/// in `pool`, issued to `client` as the catalog describes it now.
pub(crate) fn open(plain: &[u8], dek_id: &str, pool: &str, client: &ClientRecord) -> Result<Dek> {
    let what = || format!("DEK {dek_id}");
    let (bound, expected) = match plain.len() {
        V2_LEN if plain[DEK_LEN] == V2 => (&plain[DEK_LEN + 1..], binding(b"keybridge/v2/dek-binding", dek_id, pool, &client.name, Some(client))),
        V1_LEN => (&plain[DEK_LEN..], binding(b"keybridge/v1/dek-binding", dek_id, pool, &client.name, None)),
        n => return Err(Error::Integrity { what: what(), reason: format!("decrypted envelope is {n} bytes, expected {V2_LEN} (or {V1_LEN} from before v2)") }),
    };
    if bound != expected {
        return Err(Error::Integrity {
            what: what(),
            reason: format!(
                "it is bound to another pool, client, id or client keys than its catalog row (pool '{pool}', client '{}'): the row was moved or edited, or the client's registration was replaced",
                client.name
            ),
        });
    }
    Ok(Dek::from_bytes(plain[..DEK_LEN].try_into().expect("length checked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(seal: u8) -> ClientRecord {
        ClientRecord {
            id: 1,
            name: "c".into(),
            kdf: keybridge_proto::seal::KdfParams::default(),
            salt: vec![0; 16],
            seal_public: [seal; 32],
            auth_public: Some([9; 32]),
            created_at: String::new(),
        }
    }

    #[test]
    fn v2_names_row_and_client_keys() {
        let dek = Dek::from_bytes([7; 32]);
        let plain = build(&dek, "d1", "p", &client(1));
        assert_eq!(plain.len(), V2_LEN);
        assert_eq!(open(&plain, "d1", "p", &client(1)).unwrap().expose(), dek.expose());
        for (id, pool, c) in [("d2", "p", client(1)), ("d1", "q", client(1)), ("d1", "p", client(2))] {
            let err = open(&plain, id, pool, &c).unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "{err}");
        }
        let mut renamed = client(1);
        renamed.name = "other".into();
        assert!(open(&plain, "d1", "p", &renamed).is_err());
        let mut no_auth = client(1);
        no_auth.auth_public = None;
        assert!(open(&plain, "d1", "p", &no_auth).is_err());
    }

    #[test]
    fn v1_envelopes_still_open_and_other_lengths_do_not() {
        let mut v1 = vec![5u8; DEK_LEN];
        v1.extend_from_slice(&binding(b"keybridge/v1/dek-binding", "d1", "p", "c", None));
        assert_eq!(open(&v1, "d1", "p", &client(1)).unwrap().expose(), &[5; 32]);
        assert!(open(&v1, "d1", "q", &client(1)).is_err());
        // A v2-length envelope whose version byte is not 2 is not read as v1.
        let mut odd = build(&Dek::from_bytes([7; 32]), "d1", "p", &client(1)).to_vec();
        odd[DEK_LEN] = 1;
        assert!(open(&odd, "d1", "p", &client(1)).unwrap_err().to_string().contains("expected 65"));
        assert!(open(&[0u8; 40], "d1", "p", &client(1)).is_err());
    }
}
