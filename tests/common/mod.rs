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
    /// The PyKMIP server started by scripts/test (KEYBRIDGE_TEST_KMIP_SERVER).
    Kmip,
}

impl Kind {
    fn module_var(self) -> Option<&'static str> {
        match self {
            Kind::Builtin | Kind::Kmip => None,
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
        match self {
            Kind::Builtin => true,
            Kind::Kmip => kmip::shared_server().is_some(),
            _ => self.module().is_some(),
        }
    }
}

/// The `[[kms]]` block for `kind`, named `kms`.
pub fn kms_toml(kind: Kind, dir: &Path) -> Option<String> {
    Some(match kind {
        Kind::Builtin => format!("[[kms]]\nname = \"kms\"\nkind = \"builtin\"\nroot_key = \"{}\"\n", dir.join("root.key").display()),
        Kind::Kmip => kmip::kms_toml("kms", &[kmip::shared_server()?], "client", ""),
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

/// A free TCP port on 127.0.0.1, never the same twice in one test binary:
/// the port is only reserved until the process meant for it binds, and the
/// kernel may hand a just-released port to a concurrent test meanwhile (a
/// service then failed to bind, and its URL reached another test's
/// MediaAgent).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A password for tests.
pub fn password(s: &str) -> keybridge::secret::SecretString {
    keybridge::secret::SecretString::from(s.to_owned())
}

/// The actor the flow tests act as.
pub fn actor() -> keybridge::audit::Actor {
    keybridge::audit::Actor::Operator("test".into())
}

/// The cheapest Argon2id parameters keybridge accepts (its floor).
pub fn test_kdf() -> keybridge::seal::KdfParams {
    keybridge::seal::KdfParams { m_kib: keybridge::seal::KdfParams::MIN_M_KIB, t: 5, ..Default::default() }
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

/// PyKMIP servers for tests (real servers, started by scripts/pykmip-server).
pub mod kmip {
    use std::path::PathBuf;
    use std::process::Command;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Test PKI made by scripts/kmip-certs.
    pub fn pki() -> PathBuf {
        std::env::var_os("KEYBRIDGE_TEST_KMIP_PKI").map(PathBuf::from).unwrap_or_else(|| repo().join("target/kmip/pki"))
    }

    fn skip_or_fail(msg: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: {msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }

    /// `host:port` of the shared PyKMIP server, or a loud skip.
    pub fn shared_server() -> Option<String> {
        match std::env::var("KEYBRIDGE_TEST_KMIP_SERVER") {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                skip_or_fail("PyKMIP is not running (KEYBRIDGE_TEST_KMIP_SERVER unset); run scripts/test, which installs and starts it");
                None
            }
        }
    }

    /// A `[[kms]]` block for a KMIP entry; `cert` names a client cert in the PKI.
    pub fn kms_toml(name: &str, servers: &[String], cert: &str, extra: &str) -> String {
        let p = pki();
        let list = servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "[[kms]]\nname = \"{name}\"\nkind = \"kmip\"\nservers = [{list}]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            p.join("ca.crt").display(),
            p.join(format!("{cert}.crt")).display(),
            p.join(format!("{cert}.key")).display()
        )
    }

    /// A PyKMIP server owned by one test; killed when dropped.
    pub struct PyKmip {
        pub name: String,
        pub port: u16,
        pub db: Option<PathBuf>,
        pub cert: &'static str,
    }

    impl PyKmip {
        /// Start a server with its own name and a free port. `db`: a shared
        /// or persistent database file (replicas, restarts).
        pub fn start(name: &str, db: Option<PathBuf>, cert: &'static str) -> Option<PyKmip> {
            shared_server()?;
            let name = format!("{name}-{}", std::process::id());
            let s = PyKmip { name, port: super::free_port(), db, cert };
            s.run_start();
            Some(s)
        }

        fn run_start(&self) {
            let mut cmd = Command::new(repo().join("scripts/pykmip-server"));
            cmd.args(["start", &self.name, &self.port.to_string(), "--cert", self.cert]);
            if let Some(db) = &self.db {
                cmd.arg("--db").arg(db);
            }
            let out = cmd.output().expect("run scripts/pykmip-server");
            assert!(out.status.success(), "starting PyKMIP {}: {}{}", self.name, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }

        pub fn addr(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        /// SIGKILL the server's process group (a crash).
        pub fn kill(&self) {
            let out = Command::new(repo().join("scripts/pykmip-server")).args(["kill", &self.name]).output().expect("run scripts/pykmip-server");
            assert!(out.status.success(), "killing PyKMIP {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }

        /// Start it again on the same port (and database, if shared).
        pub fn restart(&self) {
            self.kill();
            self.run_start();
        }
    }

    impl Drop for PyKmip {
        fn drop(&mut self) {
            let _ = Command::new(repo().join("scripts/pykmip-server")).args(["kill", &self.name]).output();
        }
    }
}
