//! Key lifecycle benchmark (issue 13): ratios against baselines measured in
//! the same run, as in benches/keybridge.rs.
//!
//! - **rotate**: `pool_lifecycle::rotate` of N pools (default 1,000,
//!   `KEYBRIDGE_BENCH_POOLS`) on a PyKMIP server, one after another, against
//!   N × (KMIP Decrypt + Encrypt of a blob the size of a wrapped 2048-bit
//!   KEK) issued raw on the same server, one after another: the issue's
//!   row. Its baseline does less work than a rotation, which also makes and
//!   activates the new master key, checks the new wrapping with one more
//!   Decrypt, reads the old key's State and revokes it, and journals the
//!   change (four durable catalog transactions) and audits it. An info row
//!   compares against a raw baseline doing the same KMS calls, which leaves
//!   keybridge's own cost (catalog, journal, audit).
//! - **restore through generations**: DEK recover (1 caller, warm KEK
//!   cache, built-in KMS) of DEKs of generation 1 of a pool with three KEK
//!   generations and a second wrapping in another KMS, against recover of
//!   DEKs of a plain pool; interleaved slices.
//!
//! Needs `KEYBRIDGE_BENCH_KMIP_SERVER` and `KEYBRIDGE_TEST_KMIP_PKI` for the
//! rotate rows (`scripts/bench` starts PyKMIP); without them those rows are
//! skipped loudly. Prints a table, then one JSON line with every ratio.

use std::path::Path;
use std::time::{Duration, Instant};

use keybridge::config::{Config, KmsConfig};
use keybridge::flows::{backup, clients, pool_creation, pool_lifecycle, restore};
use keybridge::Keybridge;
use keybridge_kmip::messages::{Attribute, CipherMode, Request};
use serde_json::{json, Map};
use zeroize::Zeroizing;

const PASSWORD: &str = "bench-network-password";

fn actor() -> keybridge_catalog::audit::Actor {
    keybridge_catalog::audit::Actor::Operator("bench".into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A keybridge installation in `dir` with the `[[kms]]` blocks given.
fn install(dir: &Path, kms: &str) -> Keybridge {
    let path = dir.join("keybridge.toml");
    std::fs::write(&path, format!("[catalog]\npath = \"keybridge.db\"\n\n{kms}")).unwrap();
    let config = Config::load(&path).unwrap();
    keybridge_catalog::SqliteCatalog::open_or_create(&config.catalog.path).unwrap();
    Keybridge::open(config).unwrap()
}

fn builtin_block(dir: &Path, name: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    keybridge_kms::builtin::create_root_key(&key).unwrap();
    format!("[[kms]]\nname = \"{name}\"\nkind = \"builtin\"\nroot_key = \"{}\"\n\n", key.display())
}

fn kmip_block(server: &str) -> Option<String> {
    let pki = std::path::PathBuf::from(std::env::var_os("KEYBRIDGE_TEST_KMIP_PKI")?);
    Some(format!(
        "[[kms]]\nname = \"kmip\"\nkind = \"kmip\"\nservers = [\"{server}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
        pki.join("ca.crt").display(),
        pki.join("client.crt").display(),
        pki.join("client.key").display()
    ))
}

struct Row {
    key: &'static str,
    metric: String,
    base: f64,
    kb: f64,
    target: Option<f64>,
}

async fn new_client(kb: &Keybridge) {
    let kdf = keybridge_proto::seal::KdfParams { m_kib: keybridge_proto::seal::KdfParams::MIN_M_KIB, t: 5, ..Default::default() };
    clients::add_client(kb, "bench", &keybridge_proto::secret::SecretString::from(PASSWORD.to_owned()), kdf, &actor()).await.unwrap();
}

/// Rotate N KMIP pools against N raw Decrypt + Encrypt pairs (and the same
/// KMS calls a rotation makes, for the info row).
async fn rotate_rows(rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let Some(server) = std::env::var("KEYBRIDGE_BENCH_KMIP_SERVER").ok().filter(|s| !s.is_empty()) else {
        eprintln!("\n!!!!!!!! SKIPPED rotate rows: KEYBRIDGE_BENCH_KMIP_SERVER unset (scripts/bench starts PyKMIP) !!!!!!!!\n");
        return;
    };
    let Some(block) = kmip_block(&server) else {
        eprintln!("\n!!!!!!!! SKIPPED rotate rows: KEYBRIDGE_TEST_KMIP_PKI unset !!!!!!!!\n");
        return;
    };
    let n: usize = env_or("KEYBRIDGE_BENCH_POOLS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let kb = install(dir.path(), &block);
    let started = Instant::now();
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("rot-{i}");
        pool_creation::create_pool(&kb, &name, "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
        names.push(name);
    }
    notes.push(format!("rotate: {n} KMIP pools made in {:.0} s", started.elapsed().as_secs_f64()));
    let KmsConfig::Kmip(cfg) = kb.config().kms("kmip").unwrap().clone() else { unreachable!() };
    let client = keybridge_kms::kmip::client::KmipClient::new(&cfg).unwrap();
    use keybridge_kmip::tags::cryptographic_usage_mask as usage;
    let mask = (usage::ENCRYPT | usage::DECRYPT) as i32;
    let made = client.call_one(Request::CreateAes { bits: 256, usage_mask: mask, attributes: vec![Attribute::Name("keybridge-bench-raw".into())] }).await.unwrap();
    let key = made.uid().unwrap();
    client.call_one(Request::Activate { uid: key.clone() }).await.unwrap();
    // A wrapped 2048-bit KEK: a PKCS#8 of about 1,218 bytes.
    let blob = Zeroizing::new(vec![7u8; 1218]);
    let raw_pair = |uid: String| {
        let client = &client;
        let blob = blob.clone();
        async move {
            let iv = vec![1u8; 12];
            let aad = b"bench".to_vec();
            let enc = client.call_one(Request::Encrypt { uid: uid.clone(), mode: CipherMode::Gcm, data: blob, iv: iv.clone(), aad: aad.clone() }).await.unwrap().encrypted().unwrap();
            client.call_one(Request::Decrypt { uid, mode: CipherMode::Gcm, data: enc.data, iv, aad, tag: enc.tag.unwrap_or_default() }).await.unwrap();
        }
    };
    // The raw baseline: N × (Encrypt + Decrypt).
    let t = Instant::now();
    for _ in 0..n {
        raw_pair(key.clone()).await;
    }
    let raw = t.elapsed();
    // The same KMS calls a rotation makes: Create, Activate, Decrypt,
    // Encrypt, Decrypt (check), GetAttributes, Revoke.
    let t = Instant::now();
    for i in 0..n {
        let made = client.call_one(Request::CreateAes { bits: 256, usage_mask: mask, attributes: vec![Attribute::Name(format!("keybridge-bench-same-{i}"))] }).await.unwrap();
        let uid = made.uid().unwrap();
        client.call_one(Request::Activate { uid: uid.clone() }).await.unwrap();
        raw_pair(uid.clone()).await;
        raw_pair(uid.clone()).await;
        client.call_one(Request::GetAttributes { uid: uid.clone(), names: vec!["State".into()] }).await.unwrap();
        client
            .call_one(Request::Revoke { uid, reason_code: keybridge_kmip::tags::revocation_reason_code::CESSATION_OF_OPERATION, message: None })
            .await
            .unwrap();
    }
    let same = t.elapsed();
    // keybridge: rotate each pool.
    let t = Instant::now();
    for name in &names {
        pool_lifecycle::rotate(&kb, name, &actor()).await.unwrap();
    }
    let rotated = t.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    rows.push(Row {
        key: "lifecycle.rotate_vs_raw_unwrap_wrap",
        metric: format!("rotate {n} KMIP pools vs {n} x raw (Decrypt+Encrypt); baseline makes no key, no check, no revoke, no catalog write"),
        base: rate(raw),
        kb: rate(rotated),
        target: Some(0.8),
    });
    rows.push(Row {
        key: "lifecycle.rotate_vs_same_kms_calls",
        metric: format!("rotate {n} KMIP pools vs {n} x the same 8 KMIP calls raw (keybridge's own cost: journal, catalog, audit)"),
        base: rate(same),
        kb: rate(rotated),
        target: None,
    });
    notes.push(format!(
        "rotate per pool: {:.1} ms keybridge, {:.1} ms raw Decrypt+Encrypt, {:.1} ms the same KMIP calls raw",
        rotated.as_secs_f64() * 1e3 / n as f64,
        raw.as_secs_f64() * 1e3 / n as f64,
        same.as_secs_f64() * 1e3 / n as f64
    ));
}

/// Recover rates of DEKs of a pool with three generations and two
/// wrappings (generation 1) against a plain pool's, in interleaved slices.
async fn restore_rows(rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let kms = builtin_block(dir.path(), "builtin") + &builtin_block(dir.path(), "second");
    let kb = install(dir.path(), &kms);
    new_client(&kb).await;
    let opts = pool_creation::PoolOptions { kek_bits: 2048, master_key: None };
    pool_creation::create_pool(&kb, "plain", "builtin", &opts, &actor()).await.unwrap();
    pool_creation::create_pool(&kb, "aged", "builtin", &opts, &actor()).await.unwrap();
    let issue = |pool: &'static str| {
        let kb = &kb;
        async move {
            let mut ids = Vec::new();
            for _ in 0..32 {
                ids.push(backup::issue_dek(kb, pool, "bench", &actor()).await.unwrap().dek_id);
            }
            ids
        }
    };
    let plain = issue("plain").await;
    let aged = issue("aged").await;
    pool_lifecycle::rekey(&kb, "aged", None, &actor()).await.unwrap();
    pool_lifecycle::rekey(&kb, "aged", None, &actor()).await.unwrap();
    pool_lifecycle::wrap(&kb, "aged", "second", &actor()).await.unwrap();
    assert_eq!(kb.catalog().wrappings(kb.catalog().pool_by_name("aged").await.unwrap().id).await.unwrap().len(), 6);
    let secs: f64 = env_or("KEYBRIDGE_BENCH_SECS", 3.0);
    let slices: u32 = env_or("KEYBRIDGE_BENCH_SLICES", 6);
    let slice = Duration::from_secs_f64(secs / f64::from(slices));
    let run = |ids: &Vec<String>| {
        let kb = &kb;
        let ids = ids.clone();
        async move {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < slice {
                restore::recover_dek(kb, &ids[n as usize % ids.len()], "bench", &actor()).await.unwrap();
                n += 1;
            }
            (n, t.elapsed())
        }
    };
    run(&plain).await;
    run(&aged).await;
    let (mut base, mut kbside) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    for i in 0..slices * 2 {
        // A B B A ...
        let plain_first = i % 4 == 0 || i % 4 == 3;
        let (n, d) = if plain_first { run(&plain).await } else { run(&aged).await };
        let side = if plain_first { &mut base } else { &mut kbside };
        side.0 += n;
        side.1 += d;
    }
    let rate = |(n, d): (u64, Duration)| n as f64 / d.as_secs_f64();
    rows.push(Row {
        key: "lifecycle.restore_3_generations_2_wrappings",
        metric: "recover (1 caller, built-in, warm): generation 1 of a pool with 3 generations and 2 wrappings vs a plain pool".into(),
        base: rate(base),
        kb: rate(kbside),
        target: Some(0.95),
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    rt.block_on(async {
        restore_rows(&mut rows).await;
        rotate_rows(&mut rows, &mut notes).await;
    });
    println!();
    println!("keybridge lifecycle benchmark; ratio = keybridge side / baseline side");
    let mut ratios = Map::new();
    for r in &rows {
        let ratio = r.kb / r.base;
        let verdict = match r.target {
            Some(t) if ratio >= t => "PASS",
            Some(_) => "SHORT",
            None => "info",
        };
        println!("{:<120} {:>9.1} {:>9.1} {:>7.3} {:>6} {verdict}", r.metric, r.base, r.kb, ratio, r.target.map(|t| format!(">={t}")).unwrap_or_else(|| "-".into()));
        ratios.insert(r.key.into(), json!((ratio * 10_000.0).round() / 10_000.0));
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!("{}", json!({ "bench": "lifecycle", "ratios": ratios }));
}
