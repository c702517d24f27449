//! A PKCS#11 module that goes away and comes back: SoftHSM2 served by a
//! `p11-kit server` of this test's own, reached through p11-kit's client
//! module, the server SIGKILLed and restarted (a network HSM rebooting).
//! Without re-initialisation p11-kit's client answers CKR_DEVICE_ERROR to
//! every call until the process restarts. keybridge must: fail calls fast
//! with a retriable error while the server is gone, then finalise and
//! initialise the module again, find the token by label, log in, and find
//! its master key by CKA_ID again, without reopening the backend. Its own
//! test binary: re-initialising p11-kit's client is process-wide.

mod common;

use std::time::{Duration, Instant};

use common::{Kind, Rig};
use keybridge_kms::config::KmsConfig;
use keybridge_kms::pkcs11::Pkcs11Backend;
use keybridge_kms::KeyBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p11kit_server_restart_is_survived() {
    if Kind::P11KitClient.module().is_none() {
        return;
    }
    let tokens = tempfile::tempdir().unwrap();
    let conf = common::p11kit::fresh_softhsm_token(tokens.path());
    let server = common::p11kit::Server::start("restart", &conf);
    // The client module reads its server's address from the environment.
    std::env::set_var("P11_KIT_SERVER_ADDRESS", &server.address);
    let rig = Rig::new(Kind::P11KitClient).unwrap();
    let backend = match rig.config().kms("kms").unwrap() {
        KmsConfig::Pkcs11(c) => Pkcs11Backend::open(c).await.unwrap(),
        _ => unreachable!(),
    };
    backend.probe().await.unwrap();
    let mk = backend.create_master_key(&format!("restart-{}", std::process::id())).await.unwrap();

    server.kill();
    // While it is gone: every call fails fast, retriable, naming the module.
    for _ in 0..3 {
        let t0 = Instant::now();
        let err = backend.master_key_facts(&mk).await.expect_err("a call succeeded with the HSM gone");
        assert!(t0.elapsed() < Duration::from_secs(5), "a call took {:?} to fail", t0.elapsed());
        assert!(err.is_transient(), "not retriable: {err}");
        assert!(err.to_string().contains("CKR_DEVICE_ERROR") || err.to_string().contains("is down"), "{err}");
    }

    server.restart(&conf);
    // Back, without reopening the backend: the token is found by label,
    // the login is redone, the master key is found by its CKA_ID.
    let deadline = Instant::now() + Duration::from_secs(15);
    let facts = loop {
        match backend.master_key_facts(&mk).await {
            Ok(f) => break f,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the backend did not recover after the server came back: {e}"),
        }
    };
    assert!(facts.token && facts.sensitive && !facts.extractable, "{facts:?}");
    backend.probe().await.unwrap();
    backend.destroy_master_key(&mk).await.unwrap();
}
