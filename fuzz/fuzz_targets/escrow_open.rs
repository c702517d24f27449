//! Escrow files (keybridge-proto/src/escrow.rs) as a recovery host could be
//! handed them: arbitrary bytes, a real file with bytes changed, and
//! arbitrary bodies behind a valid header and tag.
//!
//! Argon2id runs with the `fuzzing` feature's cheap parameters
//! (`escrow::insecure`: 8 KiB, 1 pass; a header may name at most 64 KiB and
//! 2 passes), so the time goes to the parser and the body checks.
//!
//! The first input byte picks a mode:
//!
//! * 0: the rest is a file. Nothing may panic, and a file `peek` refuses
//!   does not open.
//! * 1: a real file with (position u16, xor byte) edits. It opens only if
//!   it is byte for byte the original, and then to the original contents.
//! * 2: the rest is the body, sealed as it is under a valid header. Whatever
//!   opens must seal again and open to the same contents: `open` accepts
//!   nothing `seal` would refuse.
#![no_main]

use std::sync::LazyLock;

use keybridge_proto::escrow::{self, insecure, EscrowContents, EscrowGeneration, Passphrase};
use keybridge_proto::secret::SecretString;
use libfuzzer_sys::fuzz_target;

const POOL: &str = "fuzz-pool";

static PASSPHRASE: LazyLock<Passphrase> =
    LazyLock::new(|| Passphrase::new(SecretString::from("fuzz escrow passphrase")).unwrap());

/// One real file and its contents, sealed once per process.
static FILE: LazyLock<(Vec<u8>, EscrowContents)> = LazyLock::new(|| {
    let (kek_public, private_pkcs8) = insecure::key_pair();
    let contents = EscrowContents {
        pool: POOL.into(),
        exported_at: "2025-02-01T08:30:00.000Z".into(),
        generations: vec![EscrowGeneration {
            generation: 1,
            bits: 2048,
            kek_public,
            private_pkcs8,
            oaep_hash: "sha256".into(),
            params: Default::default(),
            created_at: "2025-01-01T12:00:00.000Z".into(),
        }],
    };
    (insecure::seal(&contents, &PASSPHRASE).unwrap(), contents)
});

/// The fields of two contents, private keys included, are equal.
fn same(a: &EscrowContents, b: &EscrowContents) -> bool {
    a.pool == b.pool
        && a.exported_at == b.exported_at
        && a.generations.len() == b.generations.len()
        && a.generations.iter().zip(&b.generations).all(|(x, y)| {
            (
                x.generation,
                x.bits,
                &x.kek_public,
                &x.oaep_hash,
                &x.params,
                &x.created_at,
            ) == (
                y.generation,
                y.bits,
                &y.kek_public,
                &y.oaep_hash,
                &y.params,
                &y.created_at,
            ) && x.private_pkcs8 == y.private_pkcs8
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let opened = insecure::open(rest, &PASSPHRASE);
            if let Err(e) = escrow::peek(rest) {
                assert!(opened.is_err(), "peek refused the file ({e}) but it opened");
            }
        }
        1 => {
            let (file, original) = &*FILE;
            let mut bytes = file.clone();
            for edit in rest.chunks_exact(3) {
                let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % bytes.len();
                bytes[at] ^= edit[2];
            }
            match insecure::open(&bytes, &PASSPHRASE) {
                Ok(opened) => {
                    assert!(bytes == *file, "an edited file opened");
                    assert!(same(&opened, original), "the file opened to other contents");
                }
                Err(e) => assert!(bytes != *file, "the untouched file did not open: {e}"),
            }
        }
        _ => {
            let file = insecure::seal_body(POOL, rest, &PASSPHRASE).unwrap();
            if let Ok(opened) = insecure::open(&file, &PASSPHRASE) {
                let again = insecure::seal(&opened, &PASSPHRASE)
                    .unwrap_or_else(|e| panic!("open accepted contents seal refuses: {e}"));
                let reopened = insecure::open(&again, &PASSPHRASE).unwrap();
                assert!(
                    same(&opened, &reopened),
                    "sealing again changed the contents"
                );
            }
        }
    }
});
