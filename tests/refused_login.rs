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
    let Some(module) = kind.module() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wrong.pin"), "not-the-pin-0000\n").unwrap();
    let token = std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into());
    let path = dir.path().join("keybridge.toml");
    std::fs::write(
        &path,
        format!(
            "[catalog]\npath = \"keybridge.db\"\n[[kms]]\nname = \"kms\"\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken = \"{token}\"\npin_file = \"wrong.pin\"\n",
            module.display()
        ),
    )
    .unwrap();
    let config = keybridge::config::Config::load(&path).unwrap();
    keybridge::catalog::Catalog::open_or_create(&config.catalog.path).unwrap();
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
