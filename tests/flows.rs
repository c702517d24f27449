//! The seed's flows and their failure modes, run on every backend: built-in,
//! SoftHSM2, Kryoptic (real tokens initialised by scripts/init-tokens),
//! PyKMIP, and SoftHSM2 through p11-kit's proxy module. Through p11-kit's
//! client module (a token served by `p11-kit server`) pool creation cannot
//! work, and `p11kit_client` checks it is refused clearly.

mod common;

use common::{actor, catalog_digest, password, test_kdf, Kind, Rig};
use keybridge_kms::pkcs11::Pkcs11Backend;
use keybridge::config::KmsConfig;
use keybridge_kms::crypto::PrivateKek;
use keybridge::flows::{backup, clients, pool_creation, pool_lifecycle, restore};
use keybridge::{Error, Keybridge};
use keybridge_proto::seal;

fn pool_name() -> String {
    format!("pool-{}", &uuid::Uuid::new_v4().to_string()[..8])
}

async fn pool_and_client(kb: &Keybridge) -> (String, String) {
    let pool = pool_name();
    pool_creation::create_pool(kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    let client = format!("client-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    clients::add_client(kb, &client, &password("network-password-1"), test_kdf(), &actor()).await.unwrap();
    (pool, client)
}

async fn pkcs11_backend(rig: &Rig) -> Pkcs11Backend {
    match rig.config().kms("kms").unwrap() {
        KmsConfig::Pkcs11(c) => Pkcs11Backend::open(c).await.unwrap(),
        _ => panic!("not a PKCS#11 rig"),
    }
}

/// Pool creation → DEK issue → client opens → DEK recover → same DEK.
async fn full_chain(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let pool = pool_name();
    let p = pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions::default(), &actor()).await.unwrap();
    assert_eq!(p.kek_bits, 3072);
    let (wrap, hash) = match kind {
        Kind::Builtin => ("RFC5649-AES256-KWP", "sha256"),
        Kind::SoftHsm | Kind::P11KitProxy | Kind::P11KitClient => ("CKM_AES_KEY_WRAP_PAD", "sha1"),
        Kind::Kryoptic => ("CKM_AES_KEY_WRAP_KWP", "sha256"),
        Kind::Kmip => ("KMIP-Encrypt-AES-GCM", "sha256"),
    };
    assert_eq!(p.wrap_mechanism, wrap);
    assert_eq!(p.oaep_hash.to_string(), hash);
    assert_eq!(p.params["oaep"]["hash"], hash);

    clients::add_client(&kb, "alice", &password("alice-network-pw"), test_kdf(), &actor()).await.unwrap();
    let grant = backup::issue_dek(&kb, &pool, "alice", &actor()).await.unwrap();
    let (header, issued) = seal::open(&grant.sealed_dek, "alice", &password("alice-network-pw")).unwrap();
    assert_eq!(header.dek_id, grant.dek_id);
    assert_eq!(header.pool, pool);

    // Restore in a fresh instance: nothing cached, the KMS must unwrap.
    let kb2 = rig.open();
    let back = restore::recover_dek(&kb2, &grant.dek_id, "alice", &actor()).await.unwrap();
    assert_ne!(back.sealed_dek, grant.sealed_dek, "each seal uses a fresh ephemeral key");
    let (_, recovered) = seal::open(&back.sealed_dek, "alice", &password("alice-network-pw")).unwrap();
    assert_eq!(recovered, issued);

    // Many DEKs, one pool: all recover to what was issued (warm cache).
    let mut issued_all = Vec::new();
    for _ in 0..5 {
        let g = backup::issue_dek(&kb2, &pool, "alice", &actor()).await.unwrap();
        issued_all.push((g.dek_id.clone(), seal::open(&g.sealed_dek, "alice", &password("alice-network-pw")).unwrap().1));
    }
    for (id, dek) in issued_all {
        let (got, _) = restore::recover_inner(&kb2, &id, "alice", &actor()).await.unwrap();
        assert_eq!(got, dek);
    }
}

/// The catalog holds no private key and no DEK in the clear.
async fn catalog_holds_no_secret(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let (dek, _) = restore::recover_inner(&kb, &g.dek_id, &client, &actor()).await.unwrap();
    drop(kb);
    let conn = rusqlite::Connection::open(rig.dir.path().join("keybridge.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let mut blobs = 0;
    for table in ["kms", "pools", "master_keys", "kek_generations", "wrappings", "clients", "deks"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                if let rusqlite::types::Value::Blob(b) = row.get::<_, rusqlite::types::Value>(i).unwrap() {
                    blobs += 1;
                    assert!(PrivateKek::from_pkcs8_der(&b).is_err(), "{table} column {i} parses as a private key");
                    assert!(!b.windows(32).any(|w| w == dek.expose()), "{table} column {i} contains the DEK");
                }
            }
        }
    }
    assert!(blobs >= 4, "expected the KEK, seal key and DEK blobs, saw {blobs}");
    let file = std::fs::read(rig.dir.path().join("keybridge.db")).unwrap();
    assert!(!file.windows(32).any(|w| w == dek.expose()), "catalog file contains the DEK");
}

fn assert_kms_error(err: Error, needle: &str) {
    let msg = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "expected a KMS error, got {msg}");
    assert!(msg.contains(needle), "error '{msg}' does not mention '{needle}'");
}

/// Tampered wrapped KEK and tampered encrypted DEK: clear errors, catalog unchanged.
async fn tampering(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();

    // Change one byte of the encrypted DEK (to a value it does not have).
    common::execute_raw(&kb, &format!(
        "UPDATE deks SET encrypted_dek = CAST(substr(encrypted_dek, 1, 100) || \
         CASE WHEN substr(encrypted_dek, 101, 1) = x'5a' THEN x'a5' ELSE x'5a' END || substr(encrypted_dek, 102) AS BLOB) WHERE id = '{}'",
        g.dek_id
    )).unwrap();
    let before = catalog_digest(&kb);
    let err = restore::recover_dek(&rig.open(), &g.dek_id, &client, &actor()).await.unwrap_err();
    assert_kms_error(err, "encrypted DEK does not decrypt under the KEK of pool");
    assert_eq!(before, catalog_digest(&kb));

    // Flip one byte of the wrapped private KEK.
    let g2 = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    common::execute_raw(&kb, &format!(
        "UPDATE wrappings SET wrapped = CAST(substr(wrapped, 1, 40) || \
         CASE WHEN substr(wrapped, 41, 1) = x'00' THEN x'01' ELSE x'00' END || substr(wrapped, 42) AS BLOB) \
         WHERE pool_id = (SELECT id FROM pools WHERE name = '{pool}')"
    )).unwrap();
    let before = catalog_digest(&kb);
    let err = restore::recover_dek(&rig.open(), &g2.dek_id, &client, &actor()).await.unwrap_err();
    assert_kms_error(err, &format!("wrapped KEK of pool '{pool}' did not unwrap"));
    assert_eq!(before, catalog_digest(&kb));
}

/// A DEK row moved to another client or pool is refused.
async fn moved_rows(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    clients::add_client(&kb, "mallory", &password("mallory-password"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();

    // Another client asks for it: denied, no KMS call needed.
    let err = restore::recover_dek(&kb, &g.dek_id, "mallory", &actor()).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err}");

    // The row is re-assigned to mallory in the catalog: the binding inside
    // the RSA envelope no longer matches.
    let mallory = kb.catalog().client_by_name("mallory").await.unwrap();
    common::execute_raw(&kb, &format!("UPDATE deks SET client_id = {} WHERE id = '{}'", mallory.id, g.dek_id)).unwrap();
    let err = restore::recover_dek(&kb, &g.dek_id, "mallory", &actor()).await.unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("bound to another pool, client, id or client keys"), "{err}");

    // Moved to another pool: the other pool's KEK cannot decrypt it.
    let original = kb.catalog().client_by_name(&client).await.unwrap();
    common::execute_raw(&kb, &format!("UPDATE deks SET client_id = {} WHERE id = '{}'", original.id, g.dek_id)).unwrap();
    let other = pool_name();
    let p2 = pool_creation::create_pool(&kb, &other, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    common::execute_raw(&kb, &format!("UPDATE deks SET pool_id = {} WHERE id = '{}'", p2.id, g.dek_id)).unwrap();
    let err = restore::recover_dek(&kb, &g.dek_id, &client, &actor()).await.unwrap_err();
    assert_kms_error(err, &format!("KEK of pool '{other}'"));
}

/// Whoever writes the catalog replaces a client's registration (salt, KDF,
/// public keys) with one derived from their own password, to have the
/// service seal the client's DEKs to them: the DEK's binding names the
/// keys it was issued for, so the recover is refused as an integrity error
/// and nothing is sealed. Put back, the row works again.
async fn replaced_client_keys(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let theirs = seal::register(&client, &password("the-dbas-own-password"), test_kdf()).unwrap();
    let original: (String, Vec<u8>, Vec<u8>, Vec<u8>) = {
        let c = kb.catalog().client_by_name(&client).await.unwrap();
        (serde_json::to_string(&c.kdf).unwrap(), c.salt, c.seal_public.to_vec(), c.auth_public.unwrap().to_vec())
    };
    let set = |kdf: &str, salt: &[u8], seal_public: &[u8], auth_public: &[u8]| {
        format!(
            "UPDATE clients SET kdf = '{kdf}', salt = x'{}', seal_public = x'{}', auth_public = x'{}' WHERE name = '{client}'",
            hex::encode(salt),
            hex::encode(seal_public),
            hex::encode(auth_public)
        )
    };
    common::execute_raw(&kb, &set(&serde_json::to_string(&theirs.kdf).unwrap(), &theirs.salt, &theirs.seal_public, &theirs.auth_public)).unwrap();
    let err = restore::recover_dek(&kb, &g.dek_id, &client, &actor()).await.unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert_eq!(err.exit_code(), 6);
    assert!(err.to_string().contains("the client's registration was replaced"), "{err}");
    common::execute_raw(&kb, &set(&original.0, &original.1, &original.2, &original.3)).unwrap();
    let back = restore::recover_dek(&kb, &g.dek_id, &client, &actor()).await.unwrap();
    seal::open(&back.sealed_dek, &client, &password("network-password-1")).unwrap();
}

/// Whoever writes the catalog replaces a pool's public KEK with a key of
/// their own (here: another pool's): no DEK is issued under it, neither by
/// the process that created the pool, nor by a new process on this host
/// (the pin file), nor on a host that never checked it (the KMS round
/// trip). Put back, issuing works again and the new host pins it.
async fn replaced_kek_public(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let original = kb.catalog().pool_by_name(&pool).await.unwrap().kek_public;
    let other = pool_creation::create_pool(&kb, &pool_name(), "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    let set = |spki: &[u8]| format!("UPDATE kek_generations SET kek_public = x'{}' WHERE pool_id = (SELECT id FROM pools WHERE name = '{pool}')", hex::encode(spki));
    common::execute_raw(&kb, &set(&other.kek_public)).unwrap();
    let pool_id = kb.catalog().pool_by_name(&pool).await.unwrap().id;
    let before = kb.catalog().count_deks(pool_id).await.unwrap();
    let pins = rig.dir.path().join("kek-pins.json");
    for (what, needle) in [
        ("the creating process", "not the one this host checked against the KMS"),
        ("a new process", "not the one this host checked against the KMS"),
        ("a host that never checked it", "the KMS cannot decrypt what it encrypts"),
    ] {
        let kb = match what {
            "the creating process" => &kb,
            "a new process" => &rig.open(),
            _ => {
                std::fs::remove_file(&pins).unwrap();
                &rig.open()
            }
        };
        let err = backup::issue_dek(kb, &pool, &client, &actor()).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{what}: {err}");
        assert_eq!(err.exit_code(), 6, "{what}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert_eq!(kb.catalog().count_deks(pool_id).await.unwrap(), before, "{what}: a DEK was stored under the replaced KEK");
    }
    common::execute_raw(&kb, &set(&original)).unwrap();
    let _ = std::fs::remove_file(&pins);
    let fresh = rig.open();
    let g = backup::issue_dek(&fresh, &pool, &client, &actor()).await.unwrap();
    restore::recover_dek(&fresh, &g.dek_id, &client, &actor()).await.unwrap();
    assert!(std::fs::read_to_string(&pins).unwrap().contains(&pool), "the checked KEK was not pinned");
    // Later issues use the key as parsed at its check, in the new process
    // and in the one that saw it replaced and put back.
    for kb in [&fresh, &kb] {
        let g = backup::issue_dek(kb, &pool, &client, &actor()).await.unwrap();
        restore::recover_dek(kb, &g.dek_id, &client, &actor()).await.unwrap();
    }
}

/// Wrong network password: the sealed DEK does not open.
async fn wrong_password(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let err = seal::open(&g.sealed_dek, &client, &password("not-the-password")).unwrap_err();
    assert!(err.to_string().contains("wrong network password"), "{err}");
    let err = seal::open(&g.sealed_dek, "someone-else", &password("network-password-1")).unwrap_err();
    assert!(err.to_string().contains(&format!("sealed for client '{client}'")), "{err}");
    // One flipped character anywhere breaks it.
    let mut s = g.sealed_dek.clone().into_bytes();
    let i = s.len() - 10;
    s[i] = if s[i] == b'A' { b'B' } else { b'A' };
    assert!(seal::open(std::str::from_utf8(&s).unwrap(), &client, &password("network-password-1")).is_err());
}

/// The master key is gone from the KMS: restore says so.
async fn missing_master_key(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let p = kb.catalog().pool_by_name(&pool).await.unwrap();
    match kind {
        Kind::Builtin => {
            common::execute_raw(&kb, &format!("UPDATE master_keys SET material = NULL WHERE id = {}", p.mk_row)).unwrap();
        }
        _ => {
            let backend = kb.backend("kms").await.unwrap();
            backend.destroy_master_key(&p.master_key).await.unwrap();
        }
    }
    let before = catalog_digest(&kb);
    let err = restore::recover_dek(&rig.open(), &g.dek_id, &client, &actor()).await.unwrap_err();
    assert_kms_error(err, "is not in the KMS");
    assert_eq!(before, catalog_digest(&kb));
}

/// A pool whose catalog write of its KEK fails (the creation's commit)
/// leaves no master key behind: the journalled creation rolls back.
async fn no_orphan_master_key(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    common::execute_raw(&kb, "CREATE TRIGGER injected_fault BEFORE INSERT ON kek_generations BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
        .unwrap();
    let pool = pool_name();
    let err = pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert!(kb.catalog().list_pools().await.unwrap().is_empty());
    let [label] = &common::planned_labels(&kb, &pool)[..] else { panic!("one master key planned") };
    match kind {
        Kind::Builtin => {}
        Kind::Kmip => {
            let err = kb.backend("kms").await.unwrap().adopt_master_key(&format!("name:{label}")).await.unwrap_err();
            assert!(err.to_string().contains("is not in the KMS"), "orphan master key {label} left on the KMIP server: {err}");
        }
        _ => {
            let backend = pkcs11_backend(&rig).await;
            assert_eq!(backend.count_keys_labelled(label).await.unwrap(), 0, "orphan master key {label} left in the token");
        }
    }
}

/// Rekey twice: three KEK generations; each DEK restores under its own
/// (fresh instance, nothing cached), new DEKs use the newest, and the
/// rekeys are audited.
async fn rekey_twice(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let pw = password("network-password-1");
    let mut issued = Vec::new();
    let mut publics = Vec::new();
    for generation in 1..=3u32 {
        if generation > 1 {
            let p = pool_lifecycle::rekey(&kb, &pool, None, &actor()).await.unwrap();
            assert_eq!((p.generation, p.kek_bits), (generation, 2048));
        }
        let p = kb.catalog().pool_by_name(&pool).await.unwrap();
        assert_eq!(p.generation, generation);
        publics.push(p.kek_public.clone());
        for _ in 0..2 {
            let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
            assert_eq!(kb.catalog().dek(&g.dek_id).await.unwrap().generation, generation);
            issued.push((g.dek_id.clone(), seal::open(&g.sealed_dek, &client, &pw).unwrap().1));
        }
    }
    assert!(publics[0] != publics[1] && publics[1] != publics[2], "each generation has its own KEK");
    let fresh = rig.open();
    for (id, dek) in &issued {
        let (got, _) = restore::recover_inner(&fresh, id, &client, &actor()).await.unwrap();
        assert_eq!(&got, dek, "DEK {id} restores to what was issued");
    }
    let gens = kb.catalog().generations(kb.catalog().pool_by_name(&pool).await.unwrap().id).await.unwrap();
    assert_eq!(gens.iter().map(|g| (g.generation, g.deks)).collect::<Vec<_>>(), vec![(1, 2), (2, 2), (3, 2)]);
    let rows = kb.catalog().audit_rows(100).await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.action == "pool.rekey" && r.pool.as_deref() == Some(pool.as_str()) && r.result == "ok").count(), 2);
    // Refused by name: an unknown pool, a KEK size keybridge does not make.
    let err = pool_lifecycle::rekey(&kb, "no-such-pool", None, &actor()).await.unwrap_err().to_string();
    assert!(err.contains("no-such-pool"), "{err}");
    let err = pool_lifecycle::rekey(&kb, &pool, Some(1024), &actor()).await.unwrap_err().to_string();
    assert!(err.contains("2048, 3072 or 4096"), "{err}");
}

/// Whoever writes the catalog cannot slip a KEK generation in: not one
/// that copies another pool's KEK and wrapping (it passes a KMS round
/// trip, but is wrapped under the other pool's master key), and not by a
/// trigger that adds such a generation while a rekey stores its own (the
/// rekey pins only the key it made).
async fn forged_generation_is_refused(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (a, client) = pool_and_client(&kb).await;
    let (b, _) = pool_and_client(&kb).await;
    backup::issue_dek(&kb, &a, &client, &actor()).await.unwrap();
    let copy_b_as = |generation: u32| {
        format!(
            "INSERT INTO kek_generations SELECT (SELECT id FROM pools WHERE name = '{a}'), {generation}, bits, kek_public, oaep_hash, params, created_at
                 FROM kek_generations WHERE pool_id = (SELECT id FROM pools WHERE name = '{b}');
             INSERT INTO wrappings SELECT (SELECT id FROM pools WHERE name = '{a}'), {generation}, master_key_id, wrap_mechanism, wrapped, priority, created_at
                 FROM wrappings WHERE pool_id = (SELECT id FROM pools WHERE name = '{b}');"
        )
    };
    // A trigger adds generation 3 (pool b's key) as the rekey stores 2.
    common::execute_raw(&kb, &format!("CREATE TRIGGER slip AFTER INSERT ON wrappings WHEN NEW.generation = 2 BEGIN {} END", copy_b_as(3))).unwrap();
    let new = pool_lifecycle::rekey(&kb, &a, None, &actor()).await.unwrap();
    assert_eq!(new.generation, 2, "the rekey reports the generation it made");
    assert_eq!(kb.catalog().pool_by_name(&a).await.unwrap().generation, 3, "the trigger did add generation 3");
    let err = backup::issue_dek(&kb, &a, &client, &actor()).await.unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    assert!(err.to_string().contains("wrapped under master key"), "{err}");
    // Inserted directly, without the rekey: a fresh instance on this host
    // (pins read from disk) refuses it as well.
    common::execute_raw(&kb, "DROP TRIGGER slip").unwrap();
    common::sqlite(&kb).execute_batch(&copy_b_as(4)).unwrap();
    let err = backup::issue_dek(&rig.open(), &a, &client, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("wrapped under master key"), "{err}");
}

common::on_backends!([builtin: Builtin, softhsm: SoftHsm, kryoptic: Kryoptic, kmip: Kmip, p11kit_proxy: P11KitProxy]; (full_chain, catalog_holds_no_secret, tampering, moved_rows, replaced_client_keys, replaced_kek_public, wrong_password, missing_master_key, no_orphan_master_key, rekey_twice));

/// From the token itself: the MK is sensitive, never extractable; the
/// unwrapped KEK is a sensitive, non-extractable session object.
async fn key_attributes_from_token(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let p = kb.catalog().pool_by_name(&pool).await.unwrap();

    let backend = pkcs11_backend(&rig).await;
    let mk = backend.master_key_facts(&p.master_key).await.unwrap();
    assert!(mk.token && mk.sensitive && mk.always_sensitive, "{mk:?}");
    assert!(!mk.extractable && mk.never_extractable, "{mk:?}");
    assert!(mk.wrap && mk.unwrap && !mk.encrypt && !mk.decrypt, "{mk:?}");
    assert!(mk.label.starts_with(&format!("keybridge-mk-{pool}-")), "{}", mk.label);

    // Restore through this backend instance, then inspect its cached KEK.
    use keybridge_kms::KeyBackend;
    let row = kb.catalog().dek(&g.dek_id).await.unwrap();
    backend.decrypt_dek(&p.kek(), &row.encrypted_dek).await.unwrap();
    let kek_facts = backend.cached_kek_facts(p.id, p.generation).await.unwrap().expect("KEK cached after a restore");
    assert!(!kek_facts.token, "unwrapped KEK must be a session object: {kek_facts:?}");
    assert!(kek_facts.sensitive && !kek_facts.extractable, "{kek_facts:?}");
    backend.clear_cache().await;
    assert!(backend.cached_kek_facts(p.id, p.generation).await.unwrap().is_none());
}

/// An existing key adopted by PKCS#11 URI works as master key and is never destroyed by keybridge.
async fn adopt_existing_master_key(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let backend = pkcs11_backend(&rig).await;
    use keybridge_kms::KeyBackend;
    let label = format!("operator-mk-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    let made = backend.create_master_key(&label).await.unwrap();
    let uri = format!("pkcs11:token=keybridge;object={label};type=secret-key");
    let pool = pool_name();
    let p = pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: Some(&uri) }, &actor()).await.unwrap();
    assert_eq!(p.master_key.id, made.id);
    assert!(!p.master_key.owned);
    clients::add_client(&kb, "c1", &password("client-one-pw"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, &pool, "c1", &actor()).await.unwrap();
    restore::recover_dek(&rig.open(), &g.dek_id, "c1", &actor()).await.unwrap();
    let err = kb.backend("kms").await.unwrap().destroy_master_key(&p.master_key).await.unwrap_err();
    assert!(err.to_string().contains("adopted"), "{err}");
    // A URI naming nothing is a clear error.
    let err = pool_creation::create_pool(&kb, &pool_name(), "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: Some("pkcs11:object=no-such-key") }, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("is not in the KMS"), "{err}");
}

mod token_only {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_key_attributes() { key_attributes_from_token(Kind::SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kryoptic_key_attributes() { key_attributes_from_token(Kind::Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_adopt_master_key() { adopt_existing_master_key(Kind::SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kryoptic_adopt_master_key() { adopt_existing_master_key(Kind::Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn p11kit_proxy_key_attributes() { key_attributes_from_token(Kind::P11KitProxy).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn p11kit_proxy_adopt_master_key() { adopt_existing_master_key(Kind::P11KitProxy).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_forged_generation_is_refused() { forged_generation_is_refused(Kind::Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_forged_generation_is_refused() { forged_generation_is_refused(Kind::SoftHsm).await }
}

/// Many concurrent issuers share group commits; none is lost or mixed up,
/// and each recovers to exactly the DEK it was issued.
async fn concurrent_issue_and_recover(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = std::sync::Arc::new(rig.open());
    let (pool, client) = pool_and_client(&kb).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (kb, pool, client) = (kb.clone(), pool.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
            let issued = seal::open(&g.sealed_dek, &client, &password("network-password-1")).unwrap().1;
            let (recovered, _) = restore::recover_inner(&kb, &g.dek_id, &client, &actor()).await.unwrap();
            assert_eq!(issued, recovered, "DEK {} mixed up", g.dek_id);
            g.dek_id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()));
    }
    let p = kb.catalog().pool_by_name(&pool).await.unwrap();
    assert_eq!(kb.catalog().count_deks(p.id).await.unwrap(), 64);
}

/// Pools created while restores run: each read of the token beside each
/// creation of a master key. SoftHSM2 answered CKR_GENERAL_ERROR to such a
/// creation when a read indexed its object store at the same moment.
async fn pools_created_beside_restores(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = std::sync::Arc::new(rig.open());
    let (pool, client) = pool_and_client(&kb).await;
    let g = backup::issue_dek(&kb, &pool, &client, &actor()).await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rig = std::sync::Arc::new(rig);
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (rig, id, client, done) = (rig.clone(), g.dek_id.clone(), client.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                // A fresh instance every time: it logs in, finds the MK and
                // unwraps the KEK under it.
                restore::recover_inner(&rig.open(), &id, &client, &actor()).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let created = async {
        for _ in 0..6 {
            pool_creation::create_pool(&kb, &pool_name(), "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    created.unwrap();
}

mod concurrency {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_concurrent() { concurrent_issue_and_recover(Kind::Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_concurrent() { concurrent_issue_and_recover(Kind::SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kryoptic_concurrent() { concurrent_issue_and_recover(Kind::Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_concurrent() { concurrent_issue_and_recover(Kind::Kmip).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn p11kit_proxy_concurrent() { concurrent_issue_and_recover(Kind::P11KitProxy).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_pools_beside_restores() { pools_created_beside_restores(Kind::SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kryoptic_pools_beside_restores() { pools_created_beside_restores(Kind::Kryoptic).await }
}

/// Through p11-kit's client module the token is found, the login works and
/// keys are made and destroyed, but p11-kit's RPC forwards no AES key wrap
/// mechanism (its allow-list has neither CKM_AES_KEY_WRAP_PAD nor _KWP):
/// probe says unusable, pool creation is refused with the reason and
/// leaves no master key behind.
mod p11kit_client {
    use super::*;
    use keybridge_kms::KeyBackend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_creation_refused_clearly() {
        let Some(rig) = Rig::new(Kind::P11KitClient) else { return };
        let kb = rig.open();
        let backend = pkcs11_backend(&rig).await;
        let probe = backend.probe().await.unwrap();
        assert_eq!(probe.state, keybridge_kms::ProbeStatus::Unusable, "{probe:?}");
        assert!(probe.details["wrap_mechanism"].is_null(), "{probe:?}");
        assert_eq!(probe.details["mechanisms"]["CKM_RSA_PKCS_OAEP"], true, "{probe:?}");
        assert_eq!(probe.details["token"]["label"], "keybridge", "{probe:?}");

        let pool = pool_name();
        let err = pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap_err();
        assert_kms_error(err, "p11-kit's client module forwards no AES key wrap");
        assert!(kb.catalog().list_pools().await.unwrap().is_empty());
        for label in common::planned_labels(&kb, &pool) {
            assert_eq!(backend.count_keys_labelled(&label).await.unwrap(), 0, "orphan master key {label} left behind");
        }
    }
}
