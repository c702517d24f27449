//! A refused PKCS#11 login is never retried by the process that saw it.
//!
//! In a test binary of its own: SoftHSM2 logs the whole application out of
//! the token when a C_Login fails, which would break every other test in
//! the same process that is logged in to the same token.

mod common;

use common::Kind;

/// A refused login is not retried by the same process: a long-running
/// service would otherwise spend the token's PIN attempts on every request
/// and health probe until the token locks the PIN.
async fn refused_login_is_not_retried(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let Some(kms) = common::kms_toml(kind, dir.path()) else { return };
    std::fs::write(dir.path().join("wrong.pin"), "not-the-pin-0000\n").unwrap();
    let kms = kms.replace("pin_env = \"KEYBRIDGE_TEST_PIN\"", "pin_file = \"wrong.pin\"");
    assert!(kms.contains("wrong.pin"), "the test rig's PKCS#11 entry changed: {kms}");
    let path = dir.path().join("keybridge.toml");
    std::fs::write(&path, format!("[catalog]\npath = \"keybridge.db\"\n{kms}")).unwrap();
    let config = keybridge::config::Config::load(&path).unwrap();
    keybridge_catalog::SqliteCatalog::open_or_create(&config.catalog.path).unwrap();
    let kb = keybridge::Keybridge::open(config).unwrap();
    let first = kb.backend("kms").await.unwrap_err().to_string();
    assert!(first.contains("CKR_PIN_INCORRECT"), "{first}");
    let second = kb.backend("kms").await.unwrap_err().to_string();
    assert!(second.contains("CKR_PIN_INCORRECT") && second.contains("not retried"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm() {
    refused_login_is_not_retried(Kind::SoftHsm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic() {
    refused_login_is_not_retried(Kind::Kryoptic).await
}
