//! Test rig: real KMS backends from the environment written by
//! `scripts/init-tokens` (sourced by `scripts/test`).
//!
//! A backend whose module is not available is skipped with a loud message,
//! except under `CI=true`, where it fails the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use keybridge::config::Config;
use keybridge::Keybridge;

/// Which KMS a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Builtin,
    SoftHsm,
    Kryoptic,
}

impl Kind {
    fn module_var(self) -> Option<&'static str> {
        match self {
            Kind::Builtin => None,
            Kind::SoftHsm => Some("KEYBRIDGE_TEST_SOFTHSM_MODULE"),
            Kind::Kryoptic => Some("KEYBRIDGE_TEST_KRYOPTIC_MODULE"),
        }
    }

    /// The module path, or `None` after a loud skip (panics under CI=true).
    pub fn module(self) -> Option<PathBuf> {
        let var = self.module_var()?;
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.exists() && std::env::var_os("KEYBRIDGE_TEST_PIN").is_some() => Some(p),
            _ => {
                let msg = format!(
                    "{self:?} is not available ({var} unset or missing, or KEYBRIDGE_TEST_PIN unset); run scripts/test, which installs and initialises the tokens"
                );
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true: {msg}");
                }
                eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
                None
            }
        }
    }

    pub fn available(self) -> bool {
        self == Kind::Builtin || self.module().is_some()
    }
}

/// The `[[kms]]` block for `kind`, named `kms`.
pub fn kms_toml(kind: Kind, dir: &Path) -> Option<String> {
    Some(match kind {
        Kind::Builtin => format!("[[kms]]\nname = \"kms\"\nkind = \"builtin\"\nroot_key = \"{}\"\n", dir.join("root.key").display()),
        _ => {
            let module = kind.module()?;
            let token = std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into());
            format!(
                "[[kms]]\nname = \"kms\"\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken = \"{token}\"\npin_env = \"KEYBRIDGE_TEST_PIN\"\n",
                module.display()
            )
        }
    })
}

/// A temporary keybridge installation on one KMS.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub kind: Kind,
}

impl Rig {
    pub fn new(kind: Kind) -> Option<Rig> {
        let dir = tempfile::tempdir().expect("tempdir");
        let kms = kms_toml(kind, dir.path())?;
        let config_path = dir.path().join("keybridge.toml");
        std::fs::write(&config_path, format!("[catalog]\npath = \"keybridge.db\"\n\n{kms}")).unwrap();
        let config = Config::load(&config_path).unwrap();
        keybridge::catalog::Catalog::open_or_create(&config.catalog.path).unwrap();
        if kind == Kind::Builtin {
            keybridge::backend::builtin::create_root_key(&dir.path().join("root.key")).unwrap();
        }
        Some(Rig { dir, config_path, kind })
    }

    /// A fresh `Keybridge` (own backend instances, empty KEK caches).
    pub fn open(&self) -> Keybridge {
        Keybridge::open(Config::load(&self.config_path).unwrap()).unwrap()
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }
}

/// A password for tests.
pub fn password(s: &str) -> keybridge::secret::SecretString {
    keybridge::secret::SecretString::from(s.to_owned())
}

/// Cheap Argon2id parameters: tests are about the flow, not the KDF cost.
pub fn test_kdf() -> keybridge::seal::KdfParams {
    keybridge::seal::KdfParams { m_kib: 1024, t: 1, ..Default::default() }
}

/// SHA-256 over every row of every table: "nothing changed in the catalog".
pub fn catalog_digest(kb: &Keybridge) -> String {
    use sha2::{Digest, Sha256};
    let conn = rusqlite::Connection::open(kb.catalog().path()).unwrap();
    let mut h = Sha256::new();
    for table in ["kms", "pools", "clients", "deks"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                h.update(format!("{v:?}|").as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}
