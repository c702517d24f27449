//! Test rig: real KMS backends from the environment written by
//! `scripts/init-tokens` (sourced by `scripts/test`).
//!
//! A backend whose module is not available is skipped with a loud message,
//! except under `CI=true`, where it fails the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use keybridge::config::Config;
use keybridge::Keybridge;

/// One `#[tokio::test]` per listed backend and test:
/// `on_backends!([builtin: Builtin, kmip: Kmip]; (full_chain, tampering));`
/// in a test file makes `builtin::full_chain`, `kmip::full_chain`, ...,
/// each calling that file's `async fn full_chain(kind: Kind)` with its
/// backend.
#[allow(unused_macros)]
macro_rules! on_backends {
    ([$($module:ident: $kind:ident),* $(,)?]; $tests:tt) => {
        $( $crate::common::on_backends!(@module $module $kind $tests); )*
    };
    (@module $module:ident $kind:ident ($($test:ident),* $(,)?)) => {
        mod $module {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Kind::$kind).await } )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_backends;

/// Which KMS a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Builtin,
    SoftHsm,
    Kryoptic,
    /// The PyKMIP server started by scripts/test (KEYBRIDGE_TEST_KMIP_SERVER).
    Kmip,
    /// The SoftHSM2 token through p11-kit's proxy module, which offers the
    /// modules registered with p11-kit (Debian's softhsm2 package registers
    /// SoftHSM2). In one process this is the same SoftHSM2 instance, and so
    /// the same token, as `SoftHsm`.
    P11KitProxy,
    /// p11-kit's client module, talking to the `p11-kit server` started by
    /// scripts/test (P11_KIT_SERVER_ADDRESS), which serves a SoftHSM2 token
    /// of its own (KEYBRIDGE_TEST_P11KIT_SOFTHSM2_CONF).
    P11KitClient,
}

impl Kind {
    fn module_var(self) -> Option<&'static str> {
        match self {
            Kind::Builtin | Kind::Kmip => None,
            Kind::SoftHsm => Some("KEYBRIDGE_TEST_SOFTHSM_MODULE"),
            Kind::Kryoptic => Some("KEYBRIDGE_TEST_KRYOPTIC_MODULE"),
            Kind::P11KitProxy => Some("KEYBRIDGE_TEST_P11KIT_PROXY_MODULE"),
            Kind::P11KitClient => Some("KEYBRIDGE_TEST_P11KIT_CLIENT_MODULE"),
        }
    }

    /// Other variables the kind needs.
    fn extra_vars(self) -> &'static [&'static str] {
        match self {
            Kind::P11KitClient => &["P11_KIT_SERVER_ADDRESS"],
            _ => &[],
        }
    }

    /// The module path, or `None` after a loud skip (panics under CI=true).
    pub(crate) fn module(self) -> Option<PathBuf> {
        let var = self.module_var()?;
        let missing: Vec<&str> = self.extra_vars().iter().copied().filter(|v| std::env::var_os(v).is_none_or(|s| s.is_empty())).collect();
        match std::env::var_os(var).map(PathBuf::from) {
            Some(p) if p.exists() && std::env::var_os("KEYBRIDGE_TEST_PIN").is_some() && missing.is_empty() => Some(p),
            _ => {
                let msg = format!(
                    "{self:?} is not available ({var} unset or missing, or KEYBRIDGE_TEST_PIN unset{}); run scripts/test, which installs and initialises the tokens",
                    if missing.is_empty() { String::new() } else { format!(", or {} unset", missing.join(", ")) }
                );
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true: {msg}");
                }
                eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
                None
            }
        }
    }

    pub(crate) fn available(self) -> bool {
        match self {
            Kind::Builtin => true,
            Kind::Kmip => kmip::shared_server().is_some(),
            _ => self.module().is_some(),
        }
    }
}

/// The `[[kms]]` block for `kind`, named `kms`.
pub(crate) fn kms_toml(kind: Kind, dir: &Path) -> Option<String> {
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
pub(crate) struct Rig {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub kind: Kind,
}

impl Rig {
    pub(crate) fn new(kind: Kind) -> Option<Rig> {
        let dir = tempfile::tempdir().expect("tempdir");
        let kms = kms_toml(kind, dir.path())?;
        let config_path = dir.path().join("keybridge.toml");
        std::fs::write(&config_path, format!("[catalog]\npath = \"keybridge.db\"\n\n{kms}")).unwrap();
        let config = Config::load(&config_path).unwrap();
        keybridge_catalog::SqliteCatalog::open_or_create(&config.catalog.path).unwrap();
        if kind == Kind::Builtin {
            keybridge_kms::builtin::create_root_key(&dir.path().join("root.key")).unwrap();
        }
        Some(Rig { dir, config_path, kind })
    }

    /// A fresh `Keybridge` (own backend instances, empty KEK caches).
    pub(crate) fn open(&self) -> Keybridge {
        Keybridge::open(Config::load(&self.config_path).unwrap()).unwrap()
    }

    pub(crate) fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }
}

/// A free TCP port on 127.0.0.1, never the same twice in one test binary:
/// the port is only reserved until the process meant for it binds, and the
/// kernel may hand a just-released port to a concurrent test meanwhile (a
/// service then failed to bind, and its URL reached another test's
/// MediaAgent).
pub(crate) fn free_port() -> u16 {
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
pub(crate) fn password(s: &str) -> keybridge_proto::secret::SecretString {
    keybridge_proto::secret::SecretString::from(s.to_owned())
}

/// The actor the flow tests act as.
pub(crate) fn actor() -> keybridge_catalog::audit::Actor {
    keybridge_catalog::audit::Actor::Operator("test".into())
}

/// The cheapest Argon2id parameters keybridge accepts (its floor).
pub(crate) fn test_kdf() -> keybridge_proto::seal::KdfParams {
    keybridge_proto::seal::KdfParams { m_kib: keybridge_proto::seal::KdfParams::MIN_M_KIB, t: 5, ..Default::default() }
}

/// A connection of its own to `kb`'s SQLite catalog, as anyone who can
/// write the file (a DBA, an attacker) has one.
pub(crate) fn sqlite(kb: &Keybridge) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(&kb.config().catalog.path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    conn
}

/// The labels of the master keys the journal planned for pool `pool`
/// (its creation's first), oldest first.
pub(crate) fn planned_labels(kb: &Keybridge, pool: &str) -> Vec<String> {
    let conn = sqlite(kb);
    let mut st = conn.prepare("SELECT j.detail FROM journal j JOIN pools p ON p.id = j.pool_id WHERE p.name = ?1 ORDER BY j.id").unwrap();
    let details: Vec<String> = st.query_map([pool], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    details
        .iter()
        .flat_map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["new_keys"].as_array().cloned().unwrap_or_default())
        .map(|k| k["label"].as_str().unwrap().to_owned())
        .collect()
}

/// Run one SQL statement on `kb`'s catalog behind keybridge's back.
pub(crate) fn execute_raw(kb: &Keybridge, sql: &str) -> rusqlite::Result<usize> {
    sqlite(kb).execute(sql, [])
}

/// SHA-256 over every row of every table: "nothing changed in the catalog".
pub(crate) fn catalog_digest(kb: &Keybridge) -> String {
    use sha2::{Digest, Sha256};
    let conn = sqlite(kb);
    let mut h = Sha256::new();
    for table in ["kms", "pools", "master_keys", "kek_generations", "wrappings", "clients", "deks"] {
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

pub(crate) mod deployment;

/// PyKMIP servers for tests (real servers, started by scripts/pykmip-server).
pub(crate) mod kmip {
    use std::path::PathBuf;
    use std::process::Command;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Test PKI made by scripts/kmip-certs.
    pub(crate) fn pki() -> PathBuf {
        std::env::var_os("KEYBRIDGE_TEST_KMIP_PKI").map(PathBuf::from).unwrap_or_else(|| repo().join("target/kmip/pki"))
    }

    fn skip_or_fail(msg: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: {msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }

    /// `host:port` of the shared PyKMIP server, or a loud skip.
    pub(crate) fn shared_server() -> Option<String> {
        match std::env::var("KEYBRIDGE_TEST_KMIP_SERVER") {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                skip_or_fail("PyKMIP is not running (KEYBRIDGE_TEST_KMIP_SERVER unset); run scripts/test, which installs and starts it");
                None
            }
        }
    }

    /// A `[[kms]]` block for a KMIP entry; `cert` names a client cert in the PKI.
    pub(crate) fn kms_toml(name: &str, servers: &[String], cert: &str, extra: &str) -> String {
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
    pub(crate) struct PyKmip {
        pub name: String,
        pub port: u16,
        pub db: Option<PathBuf>,
        pub cert: &'static str,
    }

    impl PyKmip {
        /// Start a server with its own name and a free port. `db`: a shared
        /// or persistent database file (replicas, restarts).
        pub(crate) fn start(name: &str, db: Option<PathBuf>, cert: &'static str) -> Option<PyKmip> {
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

        pub(crate) fn addr(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        /// SIGKILL the server's process group (a crash).
        pub(crate) fn kill(&self) {
            let out = Command::new(repo().join("scripts/pykmip-server")).args(["kill", &self.name]).output().expect("run scripts/pykmip-server");
            assert!(out.status.success(), "killing PyKMIP {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }

        /// Start it again on the same port (and database, if shared).
        pub(crate) fn restart(&self) {
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

/// `p11-kit server` processes for tests (started by scripts/p11kit-server).
pub(crate) mod p11kit {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/p11kit-server")
    }

    /// A server owned by one test, serving the SoftHSM2 token of
    /// `softhsm2_conf`; killed when dropped.
    pub(crate) struct Server {
        pub name: String,
        /// For P11_KIT_SERVER_ADDRESS.
        pub address: String,
    }

    impl Server {
        pub(crate) fn start(name: &str, softhsm2_conf: &Path) -> Server {
            let name = format!("{name}-{}", std::process::id());
            let out = Command::new(script()).args(["start", &name, "--softhsm-conf"]).arg(softhsm2_conf).output().expect("run scripts/p11kit-server");
            assert!(out.status.success(), "starting p11-kit server {name}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let address = stdout
                .lines()
                .find_map(|l| l.strip_prefix("P11_KIT_SERVER_ADDRESS="))
                .unwrap_or_else(|| panic!("scripts/p11kit-server start printed no address: {stdout}"))
                .to_owned();
            Server { name, address }
        }

        /// SIGKILL the server's process group (a crash of the HSM's host).
        pub(crate) fn kill(&self) {
            let out = Command::new(script()).args(["kill", &self.name]).output().expect("run scripts/p11kit-server");
            assert!(out.status.success(), "killing p11-kit server {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }

        /// Start it again on the same socket, serving the same token.
        pub(crate) fn restart(&self, softhsm2_conf: &Path) {
            let out = Command::new(script()).args(["start", &self.name, "--softhsm-conf"]).arg(softhsm2_conf).output().expect("run scripts/p11kit-server");
            assert!(out.status.success(), "restarting p11-kit server {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains(&self.address), "the restarted server listens elsewhere");
        }
    }

    /// A SoftHSM2 configuration in `dir` with a fresh token directory and
    /// the test token initialised in it (for a p11-kit server of a test's
    /// own).
    pub(crate) fn fresh_softhsm_token(dir: &Path) -> PathBuf {
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-config/softhsm2.conf.in")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, template.replace("@TOKENDIR@", &tokens.display().to_string())).unwrap();
        let var = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} is set by scripts/init-tokens"));
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &var("KEYBRIDGE_TEST_TOKEN"), "--so-pin", &var("KEYBRIDGE_TEST_SO_PIN"), "--pin", &var("KEYBRIDGE_TEST_PIN")])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util");
        assert!(out.status.success(), "softhsm2-util --init-token: {}", String::from_utf8_lossy(&out.stderr));
        conf
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new(script()).args(["kill", &self.name]).output();
        }
    }
}

/// A child process killed when dropped.
pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON a command printed, which must have exited 0.
#[track_caller]
pub(crate) fn ok_json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A command that must have exited `code` with `needle` in its stderr;
/// returns the stderr.
#[track_caller]
pub(crate) fn fails(out: &Output, code: i32, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "stderr '{err}' does not mention '{needle}'");
    err
}

/// A copy of the SoftHSM2 token directory named by `$SOFTHSM2_CONF` in
/// `dir`, and a configuration pointing at it; returns that configuration's
/// path. Each SoftHSM2 deployment works on its own copy, so no process of
/// another test (or one killed at a test's end) touches its token files.
pub(crate) fn private_softhsm(dir: &Path) -> PathBuf {
    let conf = std::fs::read_to_string(std::env::var("SOFTHSM2_CONF").expect("SoftHSM2 deployments need SOFTHSM2_CONF")).unwrap();
    let shared = conf.lines().find_map(|l| l.trim().strip_prefix("directories.tokendir")).map(|v| v.trim().trim_start_matches('=').trim().to_owned());
    let shared = PathBuf::from(shared.expect("no directories.tokendir in SOFTHSM2_CONF"));
    let private = dir.join("softhsm-tokens");
    let status = Command::new("cp").arg("-r").arg(&shared).arg(&private).status().unwrap();
    assert!(status.success(), "copying the SoftHSM2 token directory {}", shared.display());
    let private_conf = dir.join("softhsm2.conf");
    let conf: String = conf
        .lines()
        .map(|l| if l.trim().starts_with("directories.tokendir") { format!("directories.tokendir = {}", private.display()) } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&private_conf, conf + "\n").unwrap();
    private_conf
}

/// The test token's module as another part of this process sees it: a
/// context on the module (initialised, or already initialised by
/// keybridge) and the slot of the token labelled `$KEYBRIDGE_TEST_TOKEN`.
pub(crate) fn test_token(kind: Kind) -> (cryptoki::context::Pkcs11, cryptoki::slot::Slot) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error, RvError};
    let module = kind.module().expect("module checked by the caller");
    let ctx = Pkcs11::new(&module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let label = std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into());
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .expect("test token present");
    (ctx, slot)
}
