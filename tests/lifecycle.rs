//! The key lifecycle (issue 13) on real KMSs: rotate, wrap, unwrap,
//! migrate between kinds, retire-keys and shred, each followed by restores
//! of everything issued before and after; the journal's crash safety, with
//! a fault injected at each step of a change in a real `keybridge`
//! process; and restores running while a pool rotates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{actor, password, test_kdf, Kind};
use keybridge::config::{Config, KmsConfig};
use keybridge::flows::{backup, clients, pool_creation, pool_lifecycle, restore};
use keybridge::Keybridge;
use keybridge_catalog::lifecycle::MasterKeyState;
use keybridge_kms::pkcs11::Pkcs11Backend;
use keybridge_proto::seal;

/// The `[[kms]]` name of each kind in these tests.
fn kms_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Builtin => "builtin",
        Kind::SoftHsm => "softhsm",
        Kind::Kryoptic => "kryoptic",
        Kind::Kmip => "kmip",
        other => panic!("{other:?} is not used here"),
    }
}

/// A keybridge installation with several KMSs, and configurations that
/// name only some of them (a KMS removed after a migration).
struct Site {
    dir: tempfile::TempDir,
    kinds: Vec<Kind>,
    /// A PyKMIP server of the test's own instead of the shared one.
    kmip: Option<String>,
}

impl Site {
    fn new(kinds: &[Kind]) -> Option<Site> {
        let dir = tempfile::tempdir().unwrap();
        for k in kinds {
            common::kms_toml(*k, dir.path())?;
        }
        keybridge_kms::builtin::create_root_key(&dir.path().join("root.key")).unwrap();
        let site = Site { dir, kinds: kinds.to_vec(), kmip: None };
        keybridge_catalog::SqliteCatalog::open_or_create(&site.config_with(kinds).catalog.path).unwrap();
        Some(site)
    }

    /// The configuration file naming `kinds`.
    fn config_path(&self, kinds: &[Kind]) -> PathBuf {
        let mut toml = "[catalog]\npath = \"keybridge.db\"\n\n".to_owned();
        for k in kinds {
            let block = match (&self.kmip, k) {
                (Some(addr), Kind::Kmip) => common::kmip::kms_toml("kms", std::slice::from_ref(addr), "client", ""),
                _ => common::kms_toml(*k, self.dir.path()).unwrap(),
            };
            toml += &block.replacen("name = \"kms\"", &format!("name = \"{}\"", kms_name(*k)), 1);
            toml += "\n";
        }
        let names: Vec<&str> = kinds.iter().map(|k| kms_name(*k)).collect();
        let path = self.dir.path().join(format!("keybridge-{}.toml", names.join("-")));
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn config_with(&self, kinds: &[Kind]) -> Config {
        Config::load(&self.config_path(kinds)).unwrap()
    }

    /// A fresh instance (empty caches) configured with every KMS.
    fn open(&self) -> Keybridge {
        self.open_with(&self.kinds)
    }

    fn open_with(&self, kinds: &[Kind]) -> Keybridge {
        Keybridge::open(self.config_with(kinds)).unwrap()
    }

    /// Master keys labelled `label` in KMS `kind` right now.
    async fn keys_labelled(&self, kind: Kind, label: &str) -> usize {
        match kind {
            Kind::Builtin => 0,
            Kind::Kmip => {
                let KmsConfig::Kmip(c) = self.config_with(&[kind]).kms("kmip").unwrap().clone() else { unreachable!() };
                let backend = keybridge_kms::kmip::KmipBackend::open(&c).unwrap();
                let located = backend
                    .client()
                    .call_one(keybridge_kmip::messages::Request::Locate { attributes: vec![keybridge_kmip::messages::Attribute::Name(label.to_owned())], max_items: None })
                    .await
                    .unwrap();
                located.located().unwrap().len()
            }
            _ => {
                let KmsConfig::Pkcs11(c) = self.config_with(&[kind]).kms(kms_name(kind)).unwrap().clone() else { unreachable!() };
                Pkcs11Backend::open(&c).await.unwrap().count_keys_labelled(label).await.unwrap()
            }
        }
    }

    /// No master key keybridge planned for `pool` is in a KMS without a
    /// live catalog row naming it, and every live row's key is there.
    async fn assert_no_orphans(&self, kb: &Keybridge, pool: &str) {
        let conn = common::sqlite(kb);
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut st = conn.prepare("SELECT j.detail FROM journal j JOIN pools p ON p.id = j.pool_id WHERE p.name = ?1").unwrap();
        for detail in st.query_map([pool], |r| r.get::<_, String>(0)).unwrap() {
            let v: serde_json::Value = serde_json::from_str(&detail.unwrap()).unwrap();
            for k in v["new_keys"].as_array().into_iter().flatten() {
                labels.push((k["kms"].as_str().unwrap().to_owned(), k["label"].as_str().unwrap().to_owned()));
            }
        }
        let mut st = conn
            .prepare("SELECT m.kms_name, m.label FROM master_keys m JOIN pools p ON p.id = m.pool_id WHERE p.name = ?1 AND m.state != 'destroyed'")
            .unwrap();
        let live: Vec<(String, String)> = st.query_map([pool], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        for (kms, label) in labels.iter().chain(live.iter()) {
            let kind = *self.kinds.iter().find(|k| kms_name(**k) == kms).unwrap();
            if kind == Kind::Builtin {
                continue;
            }
            let expected = usize::from(live.contains(&(kms.clone(), label.clone())));
            assert_eq!(self.keys_labelled(kind, label).await, expected, "master key {label} in KMS '{kms}': {expected} expected (catalog rows: {live:?})");
        }
    }
}

/// A pool on `kms` and a client; returns their names.
async fn pool_and_client(kb: &Keybridge, kms: &str) -> (String, String) {
    let pool = format!("pool-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    pool_creation::create_pool(kb, &pool, kms, &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    let client = format!("client-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    clients::add_client(kb, &client, &password("network-password-1"), test_kdf(), &actor()).await.unwrap();
    (pool, client)
}

type Issued = Vec<(String, keybridge_proto::secret::Dek)>;

async fn issue(kb: &Keybridge, pool: &str, client: &str, n: usize, issued: &mut Issued) {
    for _ in 0..n {
        let g = backup::issue_dek(kb, pool, client, &actor()).await.unwrap();
        issued.push((g.dek_id.clone(), seal::open(&g.sealed_dek, client, &password("network-password-1")).unwrap().1));
    }
}

/// Every DEK in `issued` restores, through `kb`, to what was issued.
async fn assert_restores(kb: &Keybridge, client: &str, issued: &Issued) {
    for (id, dek) in issued {
        let (got, _) = restore::recover_inner(kb, id, client, &actor()).await.unwrap_or_else(|e| panic!("DEK {id}: {e}"));
        assert_eq!(&got, dek, "DEK {id} restores to what was issued");
    }
}

fn audited(kb: &Keybridge, action: &str, pool: &str) -> usize {
    let conn = common::sqlite(kb);
    conn.query_row("SELECT COUNT(*) FROM audit WHERE action = ?1 AND pool = ?2 AND result = 'ok'", [action, pool], |r| r.get::<_, i64>(0)).unwrap() as usize
}

/// Rotate twice, then restore every DEK issued before and between; the
/// old keys are deactivated (in the KMS too, where it has states) and
/// `retire-keys` destroys those nothing uses. A KMS that cannot re-wrap
/// (PKCS#11) rotates into a new KEK generation instead.
async fn rotate_restores_old_and_new(kind: Kind) {
    let Some(site) = Site::new(&[kind]) else { return };
    let kms = kms_name(kind);
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    let first = kb.catalog().pool_by_name(&pool).await.unwrap();
    let rewraps = kind != Kind::SoftHsm && kind != Kind::Kryoptic;
    for round in 1..=2u32 {
        let r = pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();
        assert_eq!(r.new_master_keys.len(), 1, "{r:?}");
        if rewraps {
            assert_eq!((r.wrapped_generations.clone(), r.new_generation), (vec![1], None), "{r:?}");
        } else {
            assert_eq!((r.wrapped_generations.len(), r.new_generation), (0, Some(round + 1)), "{r:?}");
            assert!(r.notes.iter().any(|n| n.contains("never leaves")), "{r:?}");
        }
        issue(&kb, &pool, &client, 2, &mut issued).await;
    }
    assert_restores(&site.open(), &client, &issued).await;
    assert_eq!(audited(&kb, "pool.rotate", &pool), 2);

    // The first key is deactivated, in the catalog and (KMIP) in the KMS.
    let keys = kb.catalog().pool_master_keys(first.id).await.unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let old = keys.iter().find(|k| k.row == first.mk_row).unwrap();
    assert_eq!(old.state, MasterKeyState::Deactivated);
    let status = kb.backend(kms).await.unwrap().master_key_status(&old.key).await.unwrap();
    assert!(status.present);
    if kind == Kind::Kmip {
        assert_eq!(status.state.as_deref(), Some("Deactivated"));
    }

    // Retire: a rewrapping KMS lets both old keys go; a token keeps each
    // key that still wraps a generation.
    let r = pool_lifecycle::retire_keys(&kb, &pool, &actor()).await.unwrap();
    let keys = kb.catalog().pool_master_keys(first.id).await.unwrap();
    if rewraps {
        assert_eq!(r.destroyed.len(), 2, "{r:?}");
        assert_eq!(keys.iter().filter(|k| k.state == MasterKeyState::Destroyed).count(), 2);
        let old = keys.iter().find(|k| k.row == first.mk_row).unwrap();
        let status = kb.backend(kms).await.unwrap().master_key_status(&old.key).await.unwrap();
        assert!(!status.present || status.state.as_deref() == Some("Destroyed"), "{status:?}");
    } else {
        assert!(r.destroyed.is_empty(), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("still wraps KEK generation")), "{r:?}");
    }
    assert_eq!(audited(&kb, "key.retire", &pool), 1);
    assert_restores(&site.open(), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
}

/// Move a pool from `from` to `to`; then take `from` out of the
/// configuration: every DEK of both KEK generations still restores.
async fn migrate(from: Kind, to: Kind) {
    let Some(site) = Site::new(&[from, to]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms_name(from)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    pool_lifecycle::rekey(&kb, &pool, None, &actor()).await.unwrap();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    let r = pool_lifecycle::migrate(&kb, &pool, kms_name(to), &actor()).await.unwrap();
    assert_eq!((r.wrapped_generations.clone(), r.removed_wrappings), (vec![1, 2], 2), "{r:?}");
    assert_eq!(audited(&kb, "pool.migrate", &pool), 1);
    // New DEKs go to the new KMS too.
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let only_new = site.open_with(&[to]);
    assert_eq!(only_new.catalog().pool_by_name(&pool).await.unwrap().kms_name, kms_name(to));
    assert_restores(&only_new, &client, &issued).await;
    pool_lifecycle::rekey(&only_new, &pool, None, &actor()).await.unwrap();
    issue(&only_new, &pool, &client, 1, &mut issued).await;
    assert_restores(&site.open_with(&[to]), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
}

/// A migration that cannot succeed is refused, clearly, before anything
/// changes: a KEK generation on a token cannot leave it, and SoftHSM2
/// cannot decrypt DEKs encrypted with RSA-OAEP over SHA-256.
async fn migrate_is_refused(from: Kind, to: Kind, why: &str) {
    let Some(site) = Site::new(&[from, to]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms_name(from)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let before = common::catalog_digest(&kb);
    let err = pool_lifecycle::migrate(&kb, &pool, kms_name(to), &actor()).await.unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    assert_eq!(before, common::catalog_digest(&kb), "a refused migration changes nothing");
    assert_restores(&site.open(), &client, &issued).await;
    if why == "never leaves" {
        // What moves the pool's new DEKs off the token instead.
        let r = pool_lifecycle::rekey_to(&kb, &pool, None, kms_name(to), &actor()).await.unwrap();
        assert_eq!((r.new_generation, r.new_master_keys.len()), (Some(2), 1), "{r:?}");
        let mut new = Vec::new();
        issue(&kb, &pool, &client, 2, &mut new).await;
        assert_eq!(kb.catalog().pool_by_name(&pool).await.unwrap().kms_name, kms_name(to));
        assert_restores(&site.open_with(&[to]), &client, &new).await;
        assert_restores(&site.open(), &client, &issued).await;
    }
    site.assert_no_orphans(&kb, &pool).await;
}

/// `pool migrate --to K` where K wraps the pool already keeps K's
/// wrappings and removes the others, so it checks K's first, as a new
/// wrapping is checked: one with a byte flipped, or holding another
/// generation's KEK, makes the migration refuse with every wrapping kept.
async fn migrate_checks_the_wrappings_it_keeps(from: Kind, to: Kind) {
    let Some(site) = Site::new(&[from, to]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms_name(from)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    pool_lifecycle::rekey(&kb, &pool, None, &actor()).await.unwrap();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    pool_lifecycle::wrap(&kb, &pool, kms_name(to), &actor()).await.unwrap();
    let conn = common::sqlite(&kb);
    let (in_to, params) = (
        "pool_id = (SELECT id FROM pools WHERE name = ?1) AND generation = ?2 AND master_key_id IN (SELECT id FROM master_keys WHERE kms_name = ?3)",
        |g: u32| (pool.clone(), g, kms_name(to)),
    );
    let wrapped = |g: u32| conn.query_row(&format!("SELECT wrapped FROM wrappings WHERE {in_to}"), params(g), |r| r.get::<_, Vec<u8>>(0)).unwrap();
    let set = |g: u32, blob: &[u8]| {
        let (p, g, k) = params(g);
        assert_eq!(conn.execute(&format!("UPDATE wrappings SET wrapped = ?4 WHERE {in_to}"), rusqlite::params![p, g, k, blob]).unwrap(), 1);
    };
    let sound = wrapped(1);
    let mut flipped = sound.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    for bad in [flipped, wrapped(2)] {
        set(1, &bad);
        let before = common::catalog_digest(&kb);
        let err = pool_lifecycle::migrate(&kb, &pool, kms_name(to), &actor()).await.unwrap_err();
        assert!(err.to_string().contains("wrapping of KEK generation 1") && err.to_string().contains("every wrapping kept"), "{err}");
        assert_eq!(err.exit_code(), 6, "{err}");
        assert_eq!(before, common::catalog_digest(&kb), "a refused migration keeps every wrapping");
        assert_eq!(open_entries(&kb), 0);
        assert_restores(&site.open_with(&[from]), &client, &issued).await;
        set(1, &sound);
    }
    // Sound, they are kept and the others removed.
    let r = pool_lifecycle::migrate(&kb, &pool, kms_name(to), &actor()).await.unwrap();
    assert_eq!((r.new_master_keys.len(), r.removed_wrappings), (0, 2), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("generation(s) [1, 2] were unwrapped and checked")), "{r:?}");
    assert_restores(&site.open_with(&[to]), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
}

/// A pool wrapped in two KMSs survives losing either; the last wrapping
/// cannot be removed.
async fn wrapped_twice_survives_either_kms(first: Kind, second: Kind) {
    let Some(site) = Site::new(&[first, second]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms_name(first)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    let r = pool_lifecycle::wrap(&kb, &pool, kms_name(second), &actor()).await.unwrap();
    assert_eq!(r.wrapped_generations, vec![1], "{r:?}");
    let err = pool_lifecycle::wrap(&kb, &pool, kms_name(second), &actor()).await.unwrap_err();
    assert!(err.to_string().contains("wraps it already"), "{err}");
    // The first wrapping comes first; without its KMS, the second serves.
    assert_restores(&site.open_with(&[second]), &client, &issued).await;
    assert_restores(&site.open_with(&[first]), &client, &issued).await;
    let r = pool_lifecycle::unwrap(&kb, &pool, kms_name(first), &actor()).await.unwrap();
    assert_eq!(r.removed_wrappings, 1, "{r:?}");
    let err = pool_lifecycle::unwrap(&kb, &pool, kms_name(second), &actor()).await.unwrap_err();
    assert!(err.to_string().contains("only wrapping of KEK generation 1"), "{err}");
    assert_restores(&site.open_with(&[second]), &client, &issued).await;
    assert_eq!((audited(&kb, "pool.wrap", &pool), audited(&kb, "pool.unwrap", &pool)), (1, 1));
}

/// Shred: every master key of the pool destroyed in its KMS, every
/// restore refused with exit code 5, and the refusals audited.
async fn shred_destroys_every_key(kind: Kind) {
    let Some(site) = Site::new(&[kind]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, kms_name(kind)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    // Warm caches must not outlive the shred either.
    assert_restores(&kb, &client, &issued).await;
    let labels: Vec<String> = kb.catalog().pool_master_keys(kb.catalog().pool_by_name(&pool).await.unwrap().id).await.unwrap().into_iter().map(|k| k.key.label).collect();
    let err = pool_lifecycle::shred(&kb, &pool, "another-pool", &actor()).await.unwrap_err();
    assert!(err.to_string().contains("nothing was destroyed"), "{err}");
    let r = pool_lifecycle::shred(&kb, &pool, &pool, &actor()).await.unwrap();
    assert_eq!(r.destroyed.len(), 2, "{r:?}");
    for label in &labels {
        assert_eq!(site.keys_labelled(kind, label).await, 0, "{label} is still in the KMS");
    }
    for k in [&kb, &site.open()] {
        for (id, _) in &issued {
            let err = restore::recover_dek(k, id, &client, &actor()).await.unwrap_err();
            assert_eq!(err.exit_code(), 5, "{err}");
            assert!(err.to_string().contains("were destroyed"), "{err}");
        }
        let err = backup::issue_dek(k, &pool, &client, &actor()).await.unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
    }
    assert_eq!(audited(&kb, "pool.shred", &pool), 1);
}

common::on_backends!([builtin: Builtin, softhsm: SoftHsm, kryoptic: Kryoptic, kmip: Kmip]; (rotate_restores_old_and_new, shred_destroys_every_key));

mod between_kinds {
    use super::Kind::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_softhsm_is_refused() { super::migrate_is_refused(Builtin, SoftHsm, "only with SHA-1").await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_kryoptic() { super::migrate(Builtin, Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_kmip() { super::migrate(Builtin, Kmip).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_to_builtin() { super::migrate(Kmip, Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_to_softhsm_is_refused() { super::migrate_is_refused(Kmip, SoftHsm, "only with SHA-1").await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_to_kryoptic() { super::migrate(Kmip, Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_to_builtin_is_refused() { super::migrate_is_refused(SoftHsm, Builtin, "never leaves").await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kryoptic_to_kmip_is_refused() { super::migrate_is_refused(Kryoptic, Kmip, "never leaves").await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_kryoptic_there_already_checks_it() { super::migrate_checks_the_wrappings_it_keeps(Builtin, Kryoptic).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_to_builtin_there_already_checks_it() { super::migrate_checks_the_wrappings_it_keeps(Kmip, Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_and_kmip_each_survive_the_other() { super::wrapped_twice_survives_either_kms(Builtin, Kmip).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_and_kryoptic_each_survive_the_other() { super::wrapped_twice_survives_either_kms(Kmip, Kryoptic).await }
}

/// Restores keep working while the pool rotates: no recover fails during
/// the switch.
async fn restores_during_rotation(kind: Kind) {
    let Some(site) = Site::new(&[kind]) else { return };
    let kb = std::sync::Arc::new(site.open());
    let (pool, client) = pool_and_client(&kb, kms_name(kind)).await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 4, &mut issued).await;
    let issued = std::sync::Arc::new(issued);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for i in 0..2 {
        let (kb, client, issued, stop) = (kb.clone(), client.clone(), issued.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (id, dek) = &issued[(n + i) % issued.len()];
                let (got, _) = restore::recover_inner(&kb, id, &client, &actor()).await.unwrap_or_else(|e| panic!("recover {n} of loop {i} failed during a rotation: {e}"));
                assert_eq!(&got, dek);
                n += 1;
            }
            n
        }));
    }
    for _ in 0..3 {
        pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        assert!(l.await.unwrap() > 0, "the restore loop ran");
    }
}

mod concurrency {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_restores_during_rotation() { super::restores_during_rotation(super::Kind::Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_restores_during_rotation() { super::restores_during_rotation(super::Kind::SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_restores_during_rotation() { super::restores_during_rotation(super::Kind::Kmip).await }
}

/// `keybridge` as a process, on `config`, with a test fault point set.
fn cli(config: &Path, fault: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keybridge"));
    cmd.arg("--config").arg(config).arg("--json").args(args);
    match fault {
        Some(f) => cmd.env("KEYBRIDGE_TEST_FAULT", f),
        None => cmd.env_remove("KEYBRIDGE_TEST_FAULT"),
    };
    cmd.output().unwrap()
}

/// A `keybridge` process crashes (exits at once, no cleanup) or fails at
/// every step of `operation` in turn; the next command on the pool rolls
/// the change back or finishes it, then does its own work; every DEK
/// restores and no master key is left in a KMS without a catalog row.
async fn crash_at_every_step(kinds: &[Kind], operation: &str, points: &[&str]) {
    let Some(site) = Site::new(kinds) else { return };
    let kb = site.open();
    let home = kms_name(kinds[0]);
    let config = site.config_path(kinds);
    for point in points {
        for action in ["exit", "fail"] {
            let (pool, client) = pool_and_client(&kb, home).await;
            let mut issued = Vec::new();
            issue(&kb, &pool, &client, 2, &mut issued).await;
            let target = kinds.get(1).map(|k| kms_name(*k)).unwrap_or(home);
            let (file, pass) = (site.dir.path().join(format!("{pool}.kbe")), site.dir.path().join("pass"));
            if operation == "import" {
                std::fs::write(&pass, "correct horse battery staple\n").unwrap();
                let p = keybridge::flows::escrow::passphrase_from_file(&pass).unwrap();
                keybridge::flows::escrow::export(&kb, &pool, &p, &file, &actor()).await.unwrap();
            }
            let (file, pass) = (file.to_str().unwrap().to_owned(), pass.to_str().unwrap().to_owned());
            let args: Vec<&str> = match operation {
                "import" => vec!["pool", "import", &file, "--passphrase-file", &pass, "--kms", target],
                "rotate" => vec!["pool", "rotate", &pool],
                "migrate" => vec!["pool", "migrate", &pool, "--to", target],
                "wrap" => vec!["pool", "wrap", &pool, "--kms", target],
                "rekey" => vec!["pool", "rekey", &pool, "--kms", target],
                other => panic!("{other}"),
            };
            let fault = format!("{operation}.{point}:{action}");
            let out = cli(&config, Some(&fault), &args);
            assert!(!out.status.success(), "{fault}: the command should have stopped: {}", String::from_utf8_lossy(&out.stdout));
            let open: i64 = common::sqlite(&kb).query_row("SELECT COUNT(*) FROM journal j JOIN pools p ON p.id = j.pool_id WHERE p.name = ?1 AND j.state = 'open'", [&pool], |r| r.get(0)).unwrap();
            match (action, *point) {
                // A crash leaves the entry open; a failure before the
                // commit rolls back at once; one after it is finished at once.
                ("exit", _) => assert_eq!(open, 1, "{fault}"),
                ("fail", _) => assert_eq!(open, if *point == "committed" { 1 } else { 0 }, "{fault}"),
                _ => unreachable!(),
            }
            // Every DEK restores meanwhile, under the old wrapping or the new.
            assert_restores(&site.open(), &client, &issued).await;
            // The next command deals with the interrupted change, then works.
            let out = cli(&config, None, &args);
            assert!(out.status.success(), "{fault}: rerun failed: {}", String::from_utf8_lossy(&out.stderr));
            let open: i64 = common::sqlite(&kb).query_row("SELECT COUNT(*) FROM journal j JOIN pools p ON p.id = j.pool_id WHERE p.name = ?1 AND j.state = 'open'", [&pool], |r| r.get(0)).unwrap();
            assert_eq!(open, 0, "{fault}: the journal is closed after the rerun");
            issue(&kb, &pool, &client, 1, &mut issued).await;
            assert_restores(&site.open(), &client, &issued).await;
            site.assert_no_orphans(&kb, &pool).await;
        }
    }
}

/// Pool creation is journalled like the other changes: a `keybridge pool
/// create` that crashes (exits at once) or fails at each step leaves the
/// name unseen by pool reads until its commit; the next `pool create` of
/// the name rolls the creation back (destroying the key it made, by label
/// if it was not yet recorded) and creates the pool, or, after the commit,
/// finishes it and answers with the pool asked for. Then the pool works,
/// and no master key is left in the KMS without a catalog row.
async fn crash_creating_a_pool(kind: Kind) {
    let Some(site) = Site::new(&[kind]) else { return };
    let kb = site.open();
    let kms = kms_name(kind);
    let config = site.config_path(&[kind]);
    for point in CREATE_POINTS {
        for action in ["exit", "fail"] {
            let pool = format!("pool-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let args = ["pool", "create", pool.as_str(), "--kms", kms, "--kek-bits", "2048"];
            let fault = format!("create.{point}:{action}");
            let out = cli(&config, Some(&fault), &args);
            assert!(!out.status.success(), "{fault}: the command should have stopped: {}", String::from_utf8_lossy(&out.stdout));
            let open = || -> i64 { common::sqlite(&kb).query_row("SELECT COUNT(*) FROM journal j JOIN pools p ON p.id = j.pool_id WHERE p.name = ?1 AND j.state = 'open'", [&pool], |r| r.get(0)).unwrap() };
            let committed = *point == "committed";
            match action {
                "exit" => assert_eq!(open(), 1, "{fault}"),
                _ => assert_eq!(open(), i64::from(committed), "{fault}"),
            }
            assert_eq!(kb.catalog().pool_by_name(&pool).await.is_ok(), committed, "{fault}: the pool is seen once committed, not before");
            // Another pool is created meanwhile, undisturbed.
            let (other, _) = pool_and_client(&kb, kms).await;
            let out = cli(&config, None, &args);
            assert!(out.status.success(), "{fault}: rerun failed: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!((v["name"].as_str(), v["kek_generation"].as_u64()), (Some(pool.as_str()), Some(1)), "{fault}: {v}");
            assert_eq!(open(), 0, "{fault}: the journal is closed after the rerun");
            let p = kb.catalog().pool_by_name(&pool).await.unwrap();
            assert_eq!(kb.catalog().pool_master_keys(p.id).await.unwrap().len(), 1, "{fault}: one master key");
            let client = format!("client-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            clients::add_client(&kb, &client, &password("network-password-1"), test_kdf(), &actor()).await.unwrap();
            let mut issued = Vec::new();
            issue(&kb, &pool, &client, 1, &mut issued).await;
            assert_restores(&site.open(), &client, &issued).await;
            assert_eq!(audited(&kb, "pool.create", &pool), 1, "{fault}");
            site.assert_no_orphans(&kb, &pool).await;
            site.assert_no_orphans(&kb, &other).await;
        }
    }
}

const CREATE_POINTS: &[&str] = &["make_key", "key_made", "keys_made", "wrapped", "before_commit", "committed"];

const ROTATE_POINTS: &[&str] = &["make_key", "key_made", "keys_made", "wrapped", "before_commit", "committed"];
const MIGRATE_POINTS: &[&str] = &["make_key", "key_made", "keys_made", "wrapped", "before_commit", "committed"];

mod crash {
    use super::Kind::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_create() { super::crash_creating_a_pool(Builtin).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_create() { super::crash_creating_a_pool(SoftHsm).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_create() { super::crash_creating_a_pool(Kmip).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_rotate() { super::crash_at_every_step(&[Builtin], "rotate", super::ROTATE_POINTS).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_rotate() { super::crash_at_every_step(&[Kmip], "rotate", super::ROTATE_POINTS).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_rotate() { super::crash_at_every_step(&[SoftHsm], "rotate", &["make_key", "key_made", "keys_made", "before_commit", "committed"]).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_kryoptic_migrate() { super::crash_at_every_step(&[Builtin, Kryoptic], "migrate", super::MIGRATE_POINTS).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builtin_to_kmip_import() { super::crash_at_every_step(&[Builtin, Kmip], "import", super::MIGRATE_POINTS).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_to_kmip_rekey() { super::crash_at_every_step(&[SoftHsm, Kmip], "rekey", &["make_key", "key_made", "keys_made", "before_commit", "committed"]).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_to_builtin_migrate() { super::crash_at_every_step(&[Kmip, Builtin], "migrate", super::MIGRATE_POINTS).await }
}

/// Scheduled rotation: a pool past its rotation period is rotated by
/// `rotate_due` (what `keybridge serve` runs), once; one with rotation
/// off, or not yet due, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_rotates_pools_that_are_due() {
    let Some(site) = Site::new(&[Kind::Builtin]) else { return };
    let kb = site.open();
    let (due, client) = pool_and_client(&kb, "builtin").await;
    let (never, _) = pool_and_client(&kb, "builtin").await;
    let (fresh, _) = pool_and_client(&kb, "builtin").await;
    let mut issued = Vec::new();
    issue(&kb, &due, &client, 2, &mut issued).await;
    pool_lifecycle::set_schedule(&kb, &due, Some(7), &actor()).await.unwrap();
    pool_lifecycle::set_schedule(&kb, &never, Some(0), &actor()).await.unwrap();
    // The first two were made (as if) 8 days ago.
    common::execute_raw(&kb, &format!("UPDATE pools SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days') WHERE name IN ('{due}', '{never}')")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let done = pool_lifecycle::rotate_due(&kb, now, &actor()).await.unwrap();
    let rotated: Vec<&str> = done.iter().map(|(p, r)| {
        assert!(r.is_ok(), "{p}: {r:?}");
        p.as_str()
    }).collect();
    assert_eq!(rotated, [due.as_str()], "only the pool past its period is rotated ({fresh} is 0 days old, {never} never rotates)");
    assert!(pool_lifecycle::rotate_due(&kb, now, &actor()).await.unwrap().is_empty(), "rotated: due again in 7 days");
    let later = pool_lifecycle::rotate_due(&kb, now + 91 * 86_400, &actor()).await.unwrap();
    let mut later: Vec<&str> = later.iter().map(|(p, _)| p.as_str()).collect();
    later.sort();
    let mut expected = vec![due.as_str(), fresh.as_str()];
    expected.sort();
    assert_eq!(later, expected, "after 91 days: the default 90 applies to {fresh}");
    assert_restores(&site.open(), &client, &issued).await;
    let show = pool_lifecycle::show(&kb, &due).await.unwrap();
    assert_eq!(show["rotation"]["rotation_days"], 7, "{show}");
}

/// Start `keybridge pool rotate --all` on `config` with `fault`; return it
/// once it reports reaching the fault point.
fn rotate_all_until_fault(config: &Path, fault: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keybridge"))
        .arg("--config")
        .arg(config)
        .args(["pool", "rotate", "--all"])
        .env("KEYBRIDGE_TEST_FAULT", fault)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "the rotation never reached {fault}");
        match lines.next() {
            Some(Ok(line)) if line.contains("test fault point reached") => break,
            Some(Ok(_)) => continue,
            _ => panic!("the rotation ended before reaching {fault}: {:?}", child.wait()),
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn open_entries(kb: &Keybridge) -> i64 {
    common::sqlite(kb).query_row("SELECT COUNT(*) FROM journal WHERE state = 'open'", [], |r| r.get(0)).unwrap()
}

/// A real `kill -9` of `keybridge pool rotate --all` in the middle of
/// rotating many pools (stopped at its 5th re-wrap); then the rerun
/// finishes: every journal entry is closed, every DEK restores, and no
/// master key is left in the KMS without a catalog row.
async fn kill_9_mid_rotation_of_many_pools(kind: Kind) {
    let Some(site) = Site::new(&[kind]) else { return };
    let kb = site.open();
    let mut pools = Vec::new();
    for _ in 0..8 {
        let (pool, client) = pool_and_client(&kb, kms_name(kind)).await;
        let mut issued = Vec::new();
        issue(&kb, &pool, &client, 1, &mut issued).await;
        pools.push((pool, client, issued));
    }
    let config = site.config_path(&[kind]);
    let point = if kind == Kind::Kmip || kind == Kind::Builtin { "rotate.wrapped:hang@5" } else { "rotate.keys_made:hang@5" };
    let mut child = rotate_all_until_fault(&config, point);
    let killed = Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    assert_eq!(open_entries(&kb), 1, "the killed rotation left its change open");
    for (_, client, issued) in &pools {
        assert_restores(&site.open(), client, issued).await;
    }
    let out = cli(&config, None, &["pool", "rotate", "--all"]);
    assert!(out.status.success(), "rerun: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resumed: Vec<&serde_json::Value> = v["rotated"].as_array().unwrap().iter().flat_map(|r| r["resumed"].as_array().unwrap().iter()).collect();
    assert_eq!(resumed.len(), 1, "{v}");
    assert_eq!(resumed[0]["outcome"], "rolled back", "{v}");
    assert_eq!(open_entries(&kb), 0);
    for (pool, client, issued) in &pools {
        assert_restores(&site.open(), client, issued).await;
        site.assert_no_orphans(&kb, pool).await;
    }
}

/// `pool rotate` of several pools goes on past one that fails: every
/// pool's outcome is reported (JSON and text), and the command exits with
/// the first failure's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_goes_on_past_a_failing_pool() {
    let Some(site) = Site::new(&[Kind::Builtin]) else { return };
    let kb = site.open();
    let mut pools = Vec::new();
    for _ in 0..3 {
        let (pool, client) = pool_and_client(&kb, "builtin").await;
        let mut issued = Vec::new();
        issue(&kb, &pool, &client, 1, &mut issued).await;
        pools.push((pool, client, issued));
    }
    let config = site.config_path(&[Kind::Builtin]);
    // A pool that does not exist, between two that do.
    let (a, c) = (pools[0].0.as_str(), pools[2].0.as_str());
    let out = cli(&config, None, &["pool", "rotate", a, "no-such-pool", c]);
    assert_eq!(out.status.code(), Some(4), "the first failure's code: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rotated: Vec<&str> = v["rotated"].as_array().unwrap().iter().map(|r| r["pool"].as_str().unwrap()).collect();
    assert_eq!(rotated, [a, c], "{v}");
    assert_eq!((v["failed"][0]["pool"].as_str(), v["failed"][0]["error"]["exit_code"].as_i64()), (Some("no-such-pool"), Some(4)), "{v}");
    assert_eq!(v["error"]["exit_code"], 4, "{v}");
    // Every pool, the second failing before its commit (rolled back).
    let out = cli(&config, Some("rotate.before_commit:fail@2"), &["pool", "rotate", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["rotated"].as_array().unwrap().len(), v["failed"].as_array().unwrap().len()), (2, 1), "{v}");
    assert!(v["failed"][0]["error"]["message"].as_str().unwrap().contains("test fault"), "{v}");
    assert_eq!(open_entries(&kb), 0);
    // The same in text.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keybridge"));
    let out = cmd.arg("--config").arg(&config).args(["pool", "rotate", a, "no-such-pool", c]).env_remove("KEYBRIDGE_TEST_FAULT").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("pool '{a}': rotate")) && text.contains(&format!("pool '{c}': rotate")), "{text}");
    assert!(text.contains("pool 'no-such-pool': rotation failed") && text.contains("rotated 2 of 3 pool(s); 1 failed"), "{text}");
    for (_, client, issued) in &pools {
        assert_restores(&site.open(), client, issued).await;
    }
    let rotations: usize = pools.iter().map(|(pool, _, _)| audited(&kb, "pool.rotate", pool)).sum();
    assert_eq!(rotations, 6, "two rotations in each of the three runs");
}

/// A change owned by a process on another host (a container recreated
/// under a new host name) is never taken for dead: the next command on the
/// pool is refused, naming the owner. `pool resume --take-over` with that
/// exact owner takes it over (audited as `pool.take_over`) and rolls it
/// back, destroying the key it made in the token, even though this host's
/// record of key changes never had it. A wrong owner, or a process of this
/// host that still runs, is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_a_change_whose_host_is_gone() {
    let Some(site) = Site::new(&[Kind::SoftHsm]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "softhsm").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let config = site.config_path(&[Kind::SoftHsm]);
    // A rotation dies once its key is made and recorded, on a host whose
    // name is gone, and whose record of key changes this host never saw.
    let out = cli(&config, Some("rotate.keys_made:exit"), &["pool", "rotate", &pool]);
    assert_eq!(out.status.code(), Some(86), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = "old-container:4242:12345";
    common::execute_raw(&kb, &format!("UPDATE journal SET owner = '{gone}' WHERE state = 'open'")).unwrap();
    std::fs::remove_file(kb.config().catalog.kek_pins.with_extension("changes.json")).unwrap();
    let out = cli(&config, None, &["pool", "rotate", &pool]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("--take-over {gone}")), "{}", String::from_utf8_lossy(&out.stderr));
    let show: serde_json::Value = serde_json::from_slice(&cli(&config, None, &["pool", "show", &pool]).stdout).unwrap();
    assert_eq!(show["unfinished_changes"][0]["owner"], gone, "{show}");
    // A plain resume leaves it; so does a take-over naming another owner.
    let out = cli(&config, None, &["pool", "resume", &pool]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success() && v["resumed"].as_array().unwrap().is_empty() && v["notes"].to_string().contains("--take-over"), "{v}");
    let before = common::catalog_digest(&kb);
    let out = cli(&config, None, &["pool", "resume", &pool, "--take-over", "old-container:4242:1"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!((open_entries(&kb), common::catalog_digest(&kb)), (1, before), "nothing was taken over");
    // The exact owner: taken over and rolled back, its key destroyed.
    let out = cli(&config, None, &["pool", "resume", &pool, "--take-over", gone]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["resumed"][0]["operation"].as_str(), v["resumed"][0]["outcome"].as_str()), (Some("rotate"), Some("rolled back")), "{v}");
    assert_eq!(open_entries(&kb), 0);
    site.assert_no_orphans(&kb, &pool).await;
    assert_eq!(audited(&kb, "pool.take_over", &pool), 1);
    assert_restores(&site.open(), &client, &issued).await;
    pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();

    // A process of this host that still runs is never taken over.
    let mut child = rotate_all_until_fault(&config, "rotate.keys_made:hang");
    let show: serde_json::Value = serde_json::from_slice(&cli(&config, None, &["pool", "show", &pool]).stdout).unwrap();
    let live = show["unfinished_changes"][0]["owner"].as_str().unwrap().to_owned();
    let out = cli(&config, None, &["pool", "resume", &pool, "--take-over", &live]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still runs"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(open_entries(&kb), 1);
    assert!(Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    // Gone now: a plain resume rolls it back.
    let out = cli(&config, None, &["pool", "resume", &pool]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["resumed"][0]["outcome"], "rolled back", "{v}");
    assert_eq!((open_entries(&kb), audited(&kb, "pool.resume", &pool)), (0, 2));
    assert_restores(&site.open(), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
}

mod kill_9 {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kmip_rotate_all() { super::kill_9_mid_rotation_of_many_pools(super::Kind::Kmip).await }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn softhsm_rotate_all() { super::kill_9_mid_rotation_of_many_pools(super::Kind::SoftHsm).await }
}

/// The KMIP server is killed in the middle of a rotation: the rotation
/// fails and cannot roll back (the server is gone), leaving its change
/// open; once the server is back, the next rotation rolls it back,
/// destroying the key it had made, and rotates. Every DEK restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmip_server_killed_mid_rotation() {
    let db = tempfile::tempdir().unwrap();
    let Some(server) = common::kmip::PyKmip::start("rotation", Some(db.path().join("pykmip.db")), "server") else { return };
    let Some(mut site) = Site::new(&[Kind::Kmip]) else { return };
    site.kmip = Some(server.addr());
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "kmip").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    let config = site.config_path(&[Kind::Kmip]);
    let child = rotate_all_until_fault(&config, "rotate.keys_made:pause");
    server.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the rotation cannot succeed without its server");
    assert_eq!(open_entries(&kb), 1, "the change could not be rolled back without the server");
    server.restart();
    let out = cli(&config, None, &["pool", "rotate", &pool]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rotated"][0]["resumed"][0]["outcome"], "rolled back", "{v}");
    assert_eq!(open_entries(&kb), 0);
    assert_restores(&site.open(), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
}

/// Escrow: a pool exported under a passphrase, then moved into a token
/// whose master key is deleted behind keybridge's back (`pkcs11-tool
/// --delete-object`): restores fail (exit 5); importing the export under
/// the built-in KMS brings every DEK back. A wrong passphrase changes
/// nothing, and a pool only a token wraps cannot be exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_recovers_a_pool_whose_token_lost_its_key() {
    use keybridge::flows::escrow;
    let Some(site) = Site::new(&[Kind::Builtin, Kind::Kryoptic]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "builtin").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    pool_lifecycle::rekey(&kb, &pool, None, &actor()).await.unwrap();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let dir = site.dir.path();
    std::fs::write(dir.join("pass"), "correct horse battery staple\n").unwrap();
    std::fs::write(dir.join("wrong"), "incorrect horse battery staple\n").unwrap();
    let pass = escrow::passphrase_from_file(&dir.join("pass")).unwrap();
    let file = dir.join("escrow.kbe");
    let e = escrow::export(&kb, &pool, &pass, &file, &actor()).await.unwrap();
    assert_eq!(e.generations, vec![1, 2]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let again = escrow::export(&kb, &pool, &pass, &file, &actor()).await.unwrap_err();
    assert_eq!(again.exit_code(), 8, "{again}");
    let show = pool_lifecycle::show(&kb, &pool).await.unwrap();
    assert!(show["warnings"].to_string().contains("escrow export"), "{show}");

    pool_lifecycle::migrate(&kb, &pool, "kryoptic", &actor()).await.unwrap();
    assert_restores(&site.open(), &client, &issued).await;
    // The token loses the pool's master key.
    let label = kb.catalog().pool_by_name(&pool).await.unwrap().master_key.label;
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(std::env::var("KEYBRIDGE_TEST_KRYOPTIC_MODULE").unwrap())
        .args(["--token-label", &std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into()), "--login", "--pin"])
        .arg(std::env::var("KEYBRIDGE_TEST_PIN").unwrap())
        .args(["--delete-object", "--type", "secrkey", "--label", &label])
        .output()
        .unwrap();
    assert!(out.status.success(), "pkcs11-tool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(site.keys_labelled(Kind::Kryoptic, &label).await, 0);
    let err = restore::recover_dek(&site.open(), &issued[0].0, &client, &actor()).await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(err.to_string().contains("is not in the KMS"), "{err}");
    // A pool only the token wraps cannot be exported any more.
    let err = escrow::export(&kb, &pool, &pass, &dir.join("second.kbe"), &actor()).await.unwrap_err();
    assert!(err.to_string().contains("never leaves"), "{err}");

    let before = common::catalog_digest(&kb);
    let wrong = escrow::passphrase_from_file(&dir.join("wrong")).unwrap();
    let err = escrow::import(&kb, &file, &wrong, "builtin", &actor()).await.unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert_eq!(before, common::catalog_digest(&kb), "a refused import changes nothing");

    let r = escrow::import(&kb, &file, &pass, "builtin", &actor()).await.unwrap();
    assert_eq!(r.wrapped_generations, vec![1, 2], "{r:?}");
    assert_restores(&site.open(), &client, &issued).await;
    assert_restores(&site.open_with(&[Kind::Builtin]), &client, &issued).await;
    issue(&kb, &pool, &client, 1, &mut issued).await;
    assert_restores(&site.open(), &client, &issued).await;
    assert_eq!((audited(&kb, "pool.export", &pool), audited(&kb, "pool.import", &pool)), (1, 1));
}

/// A catalog writer forges unfinished journal entries naming the pool's
/// live master key (by label, and by reference): the next command on the
/// pool refuses to roll them back, and the key stays in the KMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_journal_destroys_nothing() {
    let Some(site) = Site::new(&[Kind::Kmip]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "kmip").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();
    let live = kb.catalog().pool_by_name(&pool).await.unwrap().master_key;
    for key_ref in [serde_json::Value::Null, serde_json::json!(live.id)] {
        let detail = serde_json::json!({ "new_keys": [{ "kms": "kmip", "label": live.label, "key_ref": key_ref }] });
        common::execute_raw(
            &kb,
            &format!(
                "INSERT INTO journal(pool_id, operation, step, state, owner, detail, started_at, updated_at)
                 SELECT id, 'rotate', 'keys_made', 'open', 'gone-host:1:1', '{detail}', 'x', 'x' FROM pools WHERE name = '{pool}'"
            ),
        )
        .unwrap();
        // "gone-host" cannot be checked from here: made to look local and dead.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        common::execute_raw(&kb, &format!("UPDATE journal SET owner = '{}:4194304:1' WHERE state = 'open'", host.trim())).unwrap();
        let err = pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap_err();
        assert!(err.to_string().contains("nothing was destroyed") || err.to_string().contains("wrapping"), "{err}");
        assert_eq!(site.keys_labelled(Kind::Kmip, &live.label).await, 1, "the live key is still in the KMS");
        assert_restores(&site.open(), &client, &issued).await;
        common::execute_raw(&kb, "DELETE FROM journal WHERE state = 'open'").unwrap();
    }
}

/// A forged unfinished shred naming the pool's live key is never finished
/// on its own (not by the sweep `keybridge serve` runs at start): the key
/// stays, and the pool restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_shred_is_not_finished_on_its_own() {
    let Some(site) = Site::new(&[Kind::Kmip]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "kmip").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let live = kb.catalog().pool_by_name(&pool).await.unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let detail = serde_json::json!({ "destroy": [live.mk_row] });
    common::execute_raw(
        &kb,
        &format!("INSERT INTO journal(pool_id, operation, step, state, owner, detail, started_at, updated_at) VALUES ({}, 'shred', 'planned', 'open', '{}:4194304:1', '{detail}', 'x', 'x')", live.id, host.trim()),
    )
    .unwrap();
    let done = keybridge::flows::journal::resume(&kb, None).await.unwrap();
    assert!(done.is_empty(), "{done:?}");
    assert_eq!(site.keys_labelled(Kind::Kmip, &live.master_key.label).await, 1);
    assert_restores(&site.open(), &client, &issued).await;
    // Run by the operator, it is refused: this host never planned it.
    let err = pool_lifecycle::shred(&kb, &pool, &pool, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("does not name master key"), "{err}");
    assert_eq!(site.keys_labelled(Kind::Kmip, &live.master_key.label).await, 1);
}

/// A rekey that lands while a rotation is under way: the rotation, which
/// would retire the key the new generation is wrapped under, is refused and
/// rolled back; every DEK, including those of the new generation, restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_during_rotation_loses_nothing() {
    let Some(site) = Site::new(&[Kind::Kmip]) else { return };
    let kb = site.open();
    let (pool, client) = pool_and_client(&kb, "kmip").await;
    let mut issued = Vec::new();
    issue(&kb, &pool, &client, 1, &mut issued).await;
    let config = site.config_path(&[Kind::Kmip]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keybridge"))
        .arg("--config")
        .arg(&config)
        .args(["pool", "rotate", &pool])
        .env("KEYBRIDGE_TEST_FAULT", "rotate.before_commit:pause")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        assert!(lines.any(|l| l.is_ok_and(|l| l.contains("test fault point reached"))), "the rotation never paused");
        std::thread::spawn(move || for _ in lines {});
    }
    pool_lifecycle::rekey(&kb, &pool, None, &actor()).await.unwrap();
    issue(&kb, &pool, &client, 2, &mut issued).await;
    let status = child.wait().unwrap();
    assert!(!status.success(), "the rotation must not retire the key generation 2 is wrapped under");
    assert_eq!(open_entries(&kb), 0, "refused before its commit, the rotation rolled back");
    assert_restores(&site.open(), &client, &issued).await;
    site.assert_no_orphans(&kb, &pool).await;
    // A rotation now moves both generations.
    let r = pool_lifecycle::rotate(&kb, &pool, &actor()).await.unwrap();
    assert_eq!(r.wrapped_generations, vec![1, 2], "{r:?}");
    assert_restores(&site.open(), &client, &issued).await;
}

/// Keys keybridge did not make, or that another pool uses, survive: a
/// rotation leaves an adopted KMIP key Active, and shredding a pool that
/// adopted another pool's key destroys nothing the other pool needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_and_shared_keys_survive() {
    let Some(site) = Site::new(&[Kind::Kmip]) else { return };
    let kb = site.open();
    let (a, client) = pool_and_client(&kb, "kmip").await;
    let mut issued_a = Vec::new();
    issue(&kb, &a, &client, 1, &mut issued_a).await;
    let a_key = kb.catalog().pool_by_name(&a).await.unwrap().master_key;
    // B adopts A's key, and is rotated.
    let b = format!("{a}-b");
    pool_creation::create_pool(&kb, &b, "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: Some(&a_key.id) }, &actor()).await.unwrap();
    let mut issued_b = Vec::new();
    issue(&kb, &b, &client, 1, &mut issued_b).await;
    pool_lifecycle::rotate(&kb, &b, &actor()).await.unwrap();
    let status = kb.backend("kmip").await.unwrap().master_key_status(&a_key).await.unwrap();
    assert_eq!(status.state.as_deref(), Some("Active"), "a key another pool uses is not revoked by this pool's rotation");
    let r = pool_lifecycle::shred(&kb, &b, &b, &actor()).await.unwrap();
    assert!(!r.destroyed.iter().any(|k| k["id"] == a_key.id.as_str()), "{r:?}");
    assert_eq!(site.keys_labelled(Kind::Kmip, &a_key.label).await, 1, "pool {a}'s key survives the shred of {b}");
    // C adopts A's key and is shredded while still wrapped under it.
    let c = format!("{a}-c");
    pool_creation::create_pool(&kb, &c, "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: Some(&a_key.id) }, &actor()).await.unwrap();
    let r = pool_lifecycle::shred(&kb, &c, &c, &actor()).await.unwrap();
    assert!(r.kept.iter().any(|k| k["id"] == a_key.id.as_str()) && r.destroyed.is_empty(), "{r:?}");
    assert_eq!(site.keys_labelled(Kind::Kmip, &a_key.label).await, 1, "pool {a}'s key survives the shred of {c}");
    assert_restores(&site.open(), &client, &issued_a).await;
}
