//! The KMIP client and backend against real PyKMIP servers over mutual TLS
//! (started by scripts/pykmip-server): every operation at several protocol
//! versions, failover, restarts, refused certificates, and the faults a real
//! server cannot produce (an idle-dropping middlebox, a peer answering
//! garbage) added by small loopback peers in this file.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kmip::{kms_toml, shared_server, PyKmip};
use common::{actor, free_port, password, test_kdf};
use keybridge_kms::kmip::client::KmipClient;
use keybridge_kms::kmip::KmipBackend;
use keybridge::config::{Config, KmipConfig, KmsConfig};
use keybridge::flows::{backup, clients, pool_creation, restore};
use keybridge_kmip::messages::{Attribute, CipherMode, Request};
use keybridge_kmip::tags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn kmip_config(servers: &[String], cert: &str, extra: &str) -> KmipConfig {
    let text = format!("[catalog]\npath = \"x.db\"\n{}", kms_toml("kmip", servers, cert, extra));
    match Config::parse(&text, std::path::Path::new("/tmp/keybridge.toml")).unwrap().kms.remove(0) {
        KmsConfig::Kmip(c) => c,
        _ => unreachable!(),
    }
}

/// A keybridge installation whose only KMS is `servers`.
fn rig(servers: &[String], extra: &str) -> (tempfile::TempDir, keybridge::Keybridge) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keybridge.toml");
    std::fs::write(&path, format!("[catalog]\npath = \"keybridge.db\"\n{}", kms_toml("kmip", servers, "client", extra))).unwrap();
    let config = Config::load(&path).unwrap();
    keybridge_catalog::SqliteCatalog::open_or_create(&config.catalog.path).unwrap();
    let kb = keybridge::Keybridge::open(config).unwrap();
    (dir, kb)
}

/// Every operation keybridge uses, at KMIP 1.2, 1.4 and 2.0 (and negotiated).
#[tokio::test]
async fn every_operation_at_each_version() {
    let Some(server) = shared_server() else { return };
    for version in ["", "version = \"1.2\"\n", "version = \"1.4\"\n", "version = \"2.0\"\n"] {
        let client = KmipClient::new(&kmip_config(std::slice::from_ref(&server), "client", version)).unwrap();
        let facts = client.facts().await.unwrap().clone();
        if version.is_empty() {
            assert_eq!(facts.version.to_string(), "2.0", "negotiated the highest common version");
        }
        assert_eq!(facts.vendor.as_deref(), Some("PyKMIP 0.11.0 Software Server"));
        for op in ["Create", "Activate", "Encrypt", "Decrypt", "Get", "Locate", "GetAttributes", "Revoke", "Destroy", "Query", "DiscoverVersions"] {
            assert!(facts.operations.iter().any(|o| o == op), "{version}: Query lacks {op}: {:?}", facts.operations);
        }
        let name = format!("kb-test-{}", uuid::Uuid::new_v4());
        let uid = client
            .call_one(Request::CreateAes {
                bits: 256,
                usage_mask: (tags::cryptographic_usage_mask::ENCRYPT | tags::cryptographic_usage_mask::DECRYPT) as i32,
                attributes: vec![Attribute::Name(name.clone())],
            })
            .await
            .unwrap()
            .uid()
            .unwrap();
        client.call_one(Request::Activate { uid: uid.clone() }).await.unwrap();

        let located = client.call_one(Request::Locate { attributes: vec![Attribute::Name(name.clone())], max_items: None }).await.unwrap().located().unwrap();
        assert_eq!(located, vec![uid.clone()], "{version}");

        let attrs = client
            .call_one(Request::GetAttributes { uid: uid.clone(), names: vec!["Cryptographic Algorithm".into(), "Cryptographic Length".into(), "State".into(), "Name".into()] })
            .await
            .unwrap()
            .attributes()
            .unwrap();
        assert!(attrs.contains(&Attribute::CryptographicAlgorithm(tags::cryptographic_algorithm::AES)), "{version}: {attrs:?}");
        assert!(attrs.contains(&Attribute::CryptographicLength(256)), "{version}: {attrs:?}");
        assert!(attrs.contains(&Attribute::State(tags::state::ACTIVE)), "{version}: {attrs:?}");
        assert!(attrs.contains(&Attribute::Name(name.clone())), "{version}: {attrs:?}");

        // AES-GCM with AAD from KMIP 1.4 on; CBC with PKCS#5 before.
        let (mode, iv) = if version == "version = \"1.2\"\n" { (CipherMode::CbcPkcs5, vec![7u8; 16]) } else { (CipherMode::Gcm, vec![7u8; 12]) };
        let plain = b"sixty-four bytes of data for the benchmark and the tests.......".to_vec();
        let enc = client.call_one(Request::Encrypt { uid: uid.clone(), mode, data: plain.clone().into(), iv: iv.clone(), aad: b"aad".to_vec() }).await.unwrap();
        let enc = enc.encrypted().unwrap();
        let (ct, tag) = (enc.data, enc.tag);
        let tag = if mode == CipherMode::Gcm { tag.expect("GCM tag") } else { Vec::new() };
        let pt = client
            .call_one(Request::Decrypt { uid: uid.clone(), mode, data: ct.clone(), iv: iv.clone(), aad: b"aad".to_vec(), tag: tag.clone() })
            .await
            .unwrap()
            .decrypted()
            .unwrap();
        assert_eq!(*pt, plain, "{version}");
        if mode == CipherMode::Gcm {
            // Wrong AAD: the server refuses, with its reason.
            let err = client.call_one(Request::Decrypt { uid: uid.clone(), mode, data: ct, iv, aad: b"other".to_vec(), tag }).await.unwrap_err();
            assert!(err.to_string().contains("refused"), "{err}");
        }
        let key = client.call_one(Request::Get { uid: uid.clone() }).await.unwrap().key_material().unwrap();
        assert_eq!(key.len(), 32);

        client
            .call(&[
                Request::Revoke { uid: uid.clone(), reason_code: tags::revocation_reason_code::CESSATION_OF_OPERATION, message: None },
                Request::Destroy { uid: uid.clone() },
            ])
            .await
            .unwrap();
        let err = client.call_one(Request::Get { uid: uid.clone() }).await.unwrap_err();
        assert!(err.to_string().contains("ItemNotFound"), "{version}: {err}");
    }
}

/// KMIP 1.1 has no Encrypt/Decrypt: refused unless export is allowed; with
/// `allow_key_export` the seed's literal flow (Get of the MK) works.
#[tokio::test]
async fn key_export_mode_only_when_allowed() {
    let Some(server) = shared_server() else { return };
    let (_d, kb) = rig(std::slice::from_ref(&server), "version = \"1.1\"\n");
    let err = pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap_err();
    assert!(err.to_string().contains("allow_key_export = true"), "{err}");

    let (_d, kb) = rig(&[server], "version = \"1.1\"\nallow_key_export = true\n");
    let p = pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    assert_eq!(p.wrap_mechanism, "KMIP-Get-AES-GCM-local");
    clients::add_client(&kb, "c", &password("client-password"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap();
    let (dek, _) = restore::recover_inner(&kb, &g.dek_id, "c", &actor()).await.unwrap();
    assert_eq!(dek, keybridge_proto::seal::open(&g.sealed_dek, "c", &password("client-password")).unwrap().1);
}

/// KMIP 1.2 has Encrypt/Decrypt but no AEAD fields: the KEK is wrapped with
/// AES-CBC on the server and an integrity check kept with the blob.
#[tokio::test]
async fn cbc_wrap_on_kmip_1_2() {
    let Some(server) = shared_server() else { return };
    let (_d, kb) = rig(&[server], "version = \"1.2\"\n");
    let p = pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    assert_eq!(p.wrap_mechanism, "KMIP-Encrypt-AES-CBC-PKCS5");
    clients::add_client(&kb, "c", &password("client-password"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap();
    restore::recover_dek(&kb, &g.dek_id, "c", &actor()).await.unwrap();
    // A flipped ciphertext byte in the middle garbles a block (the server's
    // padding check passes, keybridge's integrity check fails); one in the
    // second-to-last block garbles the padding (the server refuses). Both
    // give the same error, word for word: no padding oracle.
    let original: Vec<u8> = kb.catalog().pool_by_name("p").await.unwrap().kek_wrapped;
    let mut answers = Vec::new();
    for at in [60, original.len() - 17] {
        let mut blob = original.clone();
        blob[at] ^= 0x01;
        common::execute_raw(&kb, &format!("UPDATE wrappings SET wrapped = x'{}' WHERE pool_id = (SELECT id FROM pools WHERE name = 'p')", hex::encode(&blob))).unwrap();
        kb.backend("kmip").await.unwrap().clear_cache().await;
        let err = restore::recover_dek(&kb, &g.dek_id, "c", &actor()).await.unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
        let err = err.to_string();
        assert!(err.contains("did not unwrap") && err.contains("did not give back what was wrapped"), "{err}");
        answers.push(err);
    }
    assert_eq!(answers[0], answers[1], "a padding failure and an integrity failure must read the same");
}

/// An existing key adopted by name; keybridge never destroys it.
#[tokio::test]
async fn adopt_existing_key_by_name() {
    let Some(server) = shared_server() else { return };
    let (_d, kb) = rig(std::slice::from_ref(&server), "");
    let backend = kb.backend("kmip").await.unwrap();
    let label = format!("operator-key-{}", uuid::Uuid::new_v4());
    let made = backend.create_master_key(&label).await.unwrap();
    let p = pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: Some(&format!("name:{label}")) }, &actor()).await.unwrap();
    assert_eq!(p.master_key.id, made.id);
    assert!(!p.master_key.owned);
    assert!(backend.destroy_master_key(&p.master_key).await.unwrap_err().to_string().contains("adopted"));
    let err = backend.adopt_master_key("name:no-such-key-anywhere").await.unwrap_err();
    assert!(err.to_string().contains("is not in the KMS"), "{err}");
}

/// Two servers sharing one database (replicas). The first is killed in the
/// middle of a run: every restore still succeeds, served by the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_first_server_dies() {
    let db = tempfile::tempdir().unwrap();
    let shared_db: PathBuf = db.path().join("replicated.db");
    let Some(a) = PyKmip::start("failover-a", Some(shared_db.clone()), "server") else { return };
    let Some(b) = PyKmip::start("failover-b", Some(shared_db), "server") else { return };
    let (_d, kb) = rig(&[a.addr(), b.addr()], "kek_cache_ttl_secs = 0\n");
    pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    clients::add_client(&kb, "c", &password("client-password"), test_kdf(), &actor()).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap().dek_id);
    }
    // With the cache off, every restore is a Decrypt on the server.
    for (i, id) in ids.iter().enumerate() {
        if i == 3 {
            a.kill();
        }
        restore::recover_dek(&kb, id, "c", &actor()).await.unwrap_or_else(|e| panic!("restore {i} lost after the first server died: {e}"));
    }
    // Both gone: a clear error naming each server.
    b.kill();
    let err = restore::recover_dek(&kb, &ids[0], "c", &actor()).await.unwrap_err().to_string();
    assert!(err.contains(&a.addr()) && err.contains(&b.addr()) && err.contains("no KMIP server could serve"), "{err}");
}

/// The server restarts: the pooled connection is dead, the next request
/// reconnects on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_transparent() {
    let db = tempfile::tempdir().unwrap();
    let Some(s) = PyKmip::start("restart", Some(db.path().join("kept.db")), "server") else { return };
    let (_d, kb) = rig(&[s.addr()], "kek_cache_ttl_secs = 0\n");
    pool_creation::create_pool(&kb, "p", "kmip", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    clients::add_client(&kb, "c", &password("client-password"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap();
    restore::recover_dek(&kb, &g.dek_id, "c", &actor()).await.unwrap();
    s.restart();
    restore::recover_dek(&kb, &g.dek_id, "c", &actor()).await.expect("restore after a server restart");
}

#[tokio::test]
async fn wrong_client_certificate_is_refused() {
    let Some(server) = shared_server() else { return };
    let client = KmipClient::new(&kmip_config(&[server], "wrong-client", "")).unwrap();
    let err = client.facts().await.unwrap_err().to_string();
    // The server refuses a client certificate from a CA it does not know,
    // with TLS's own alert, during the handshake.
    assert!(err.contains("no KMIP server could serve"), "{err}");
    assert!(err.contains("TLS handshake failed: client certificate refused: the server refused keybridge's client certificate"), "{err}");
    assert!(err.contains("wrong-client.crt (`cert` of [[kms]] 'kmip') with TLS alert unknown_ca: it does not trust the CA that issued the certificate"), "{err}");
}

#[tokio::test]
async fn untrusted_server_certificate_is_refused() {
    let Some(s) = PyKmip::start("untrusted", None, "untrusted") else { return };
    let client = KmipClient::new(&kmip_config(&[s.addr()], "client", "")).unwrap();
    let err = client.facts().await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed: unknown CA: the server presented a certificate that no CA in the `ca` file"), "{err}");
    assert!(err.contains("ca.crt of [[kms]] 'kmip' signed"), "{err}");
}

/// A proxy that forwards to `upstream` and silently drops connections that
/// stay idle for `idle` (what appliances and firewalls do).
async fn idle_dropping_proxy(upstream: String, idle: Duration) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let mut a = [0u8; 16384];
                let mut b = [0u8; 16384];
                loop {
                    tokio::select! {
                        r = ri.read(&mut a) => match r { Ok(0) | Err(_) => return, Ok(n) => if wo.write_all(&a[..n]).await.is_err() { return } },
                        r = ro.read(&mut b) => match r { Ok(0) | Err(_) => return, Ok(n) => if wi.write_all(&b[..n]).await.is_err() { return } },
                        _ = tokio::time::sleep(idle) => return, // drop both ends without a word
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Connections dropped while idle are replaced without failing a request,
/// whether or not the pool's idle timeout is below the middlebox's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dropping_idle_connections() {
    let Some(server) = shared_server() else { return };
    let (proxy, task) = idle_dropping_proxy(server, Duration::from_millis(300)).await;
    for idle in ["idle_timeout_secs = 0\n", "idle_timeout_secs = 60\n"] {
        let client = KmipClient::new(&kmip_config(std::slice::from_ref(&proxy), "client", idle)).unwrap();
        for _ in 0..3 {
            client.ping().await.unwrap_or_else(|e| panic!("{idle}: {e}"));
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    task.abort();
}

/// A loopback peer that answers with random bytes: a clear error, quickly,
/// no panic. Once at the TCP level (the TLS handshake fails) and once
/// after a real TLS handshake (the TTLV decoder refuses the reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answering_peer() {
    if shared_server().is_none() {
        return;
    }
    // Plain TCP garbage.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tcp = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            let _ = s.write_all(&junk).await;
        }
    });
    let client = KmipClient::new(&kmip_config(&[addr], "client", "timeout_secs = 5\nconnect_timeout_secs = 5\n")).unwrap();
    let start = Instant::now();
    let err = client.facts().await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    tcp.abort();

    // TLS, then garbage where a KMIP response should be.
    let pki = common::kmip::pki();
    let certs = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_file_iter(pki.join("server.crt")).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    };
    let key = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap()
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let silent_acceptor = acceptor.clone();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let tls = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else { return };
                let mut req = [0u8; 8];
                let _ = s.read(&mut req).await;
                // A plausible header claiming a huge structure, then noise.
                let _ = s.write_all(&[0x42, 0x00, 0x7B, 0x01, 0x7F, 0xFF, 0xFF, 0xF8]).await;
                let _ = s.write_all(&[0xAB; 64]).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let client = KmipClient::new(&kmip_config(&[format!("127.0.0.1:{port}")], "client", "timeout_secs = 3\n")).unwrap();
    let start = Instant::now();
    let err = client.facts().await.unwrap_err().to_string();
    assert!(err.contains("did not answer with KMIP") && err.contains("exceeds the limit"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    tls.abort();

    // And a peer that completes the TLS handshake, then says nothing: the
    // request fails as a KMS error (exit 5) naming the timeout, within
    // `timeout_secs` and not much later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = silent_acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else { return };
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(s);
            });
        }
    });
    let backend = KmipBackend::open(&kmip_config(&[addr], "client", "timeout_secs = 2\nconnect_timeout_secs = 2\n")).unwrap();
    let start = Instant::now();
    let err = keybridge_kms::KeyBackend::probe(&backend).await.unwrap_err();
    let elapsed = start.elapsed();
    let err = keybridge::Error::backend("kmip")(err);
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(err.to_string().contains("no answer within 2 s"), "{err}");
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    silent.abort();
}
