//! The disaster-recovery drill of docs/operations.md, with real processes:
//! `keybridge serve` and a `keybridge media-agent` spawned from the built
//! binary, real SQLite, real KMS (built-in, SoftHSM2, Kryoptic, PyKMIP).
//!
//! The service's machine is lost: everything keybridge keeps on it is
//! wiped except the KMS (the built-in KMS's root key file, the token). What
//! an operator keeps elsewhere comes back: the configuration and a catalog
//! copy taken with `keybridge catalog backup` while the service ran, a
//! backup job in flight and DEKs being issued. The MediaAgent is another
//! machine and keeps its store. Then every job that was complete in the
//! copy restores byte for byte, and what the copy could not hold is
//! refused, by name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fails, free_port, ok_json, password, private_softhsm, test_kdf, Kind, Proc, Rig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keybridge");

/// The configuration files `keybridge init` makes for `[service]`: kept
/// with the configuration (docs/operations.md).
const SERVICE_FILES: [&str; 4] = ["service.crt", "service.key", "operator.token", "media-agent.key"];

/// The service's machine (the rig's directory: configuration, catalog,
/// KMS) and the MediaAgent's machine (its own directory and store).
struct Site {
    rig: Rig,
    env: Vec<(&'static str, PathBuf)>,
    agent_dir: tempfile::TempDir,
    service: Option<Proc>,
    agent: Option<Proc>,
    port: u16,
    agent_port: u16,
}

impl Site {
    fn start(kind: Kind) -> Option<Site> {
        let rig = Rig::new(kind)?;
        let (port, agent_port) = (free_port(), free_port());
        let mut cfg = std::fs::read_to_string(&rig.config_path).unwrap();
        cfg += &format!(
            "\n[service]\nlisten = \"127.0.0.1:{port}\"\ncert = \"service.crt\"\nkey = \"service.key\"\n\
             operator_token_file = \"operator.token\"\nmedia_agent = \"https://127.0.0.1:{agent_port}\"\n\
             media_agent_key_file = \"media-agent.key\"\nhealth_interval_secs = 1\n"
        );
        std::fs::write(&rig.config_path, cfg).unwrap();
        let env = match kind {
            Kind::SoftHsm => vec![("SOFTHSM2_CONF", private_softhsm(rig.dir.path()))],
            _ => Vec::new(),
        };
        let mut site = Site { rig, env, agent_dir: tempfile::tempdir().unwrap(), service: None, agent: None, port, agent_port };
        ok_json(&site.cli(&["--json", "init"]));
        ok_json(&site.cli(&["--json", "pool", "create", "p", "--kms", "kms", "--kek-bits", "2048"]));
        // The MediaAgent's machine has its own copy of its TLS key pair and
        // of the key the service signs job tokens with.
        for f in ["service.crt", "service.key", "media-agent.key"] {
            std::fs::copy(site.dir().join(f), site.agent_dir.path().join(f)).unwrap();
        }
        site.start_agent();
        site.start_service();
        Some(site)
    }

    fn dir(&self) -> &Path {
        self.rig.dir.path()
    }

    fn store(&self) -> PathBuf {
        self.agent_dir.path().join("store")
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&self, dir: &Path, args: &[&str], log: &str) -> Proc {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Proc(
            Command::new(BIN)
                .current_dir(dir)
                .args(args)
                .envs(self.env.iter().cloned())
                .env("KEYBRIDGE_CONFIG", &self.rig.config_path)
                .env("KEYBRIDGE_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn start_service(&mut self) {
        self.service = Some(self.spawn(self.dir(), &["serve"], "service.log"));
        self.wait_up(&format!("{}/healthz", self.url()), &self.dir().join("service.log"));
    }

    fn start_agent(&mut self) {
        let listen = format!("127.0.0.1:{}", self.agent_port);
        let store = self.store().display().to_string();
        let args = ["media-agent", "--store", &store, "--listen", &listen, "--cert", "service.crt", "--key", "service.key", "--token-key", "media-agent.key"];
        self.agent = Some(self.spawn(self.agent_dir.path(), &args, "agent.log"));
        self.wait_up(&format!("https://127.0.0.1:{}/healthz", self.agent_port), &self.agent_dir.path().join("agent.log"));
    }

    fn wait_up(&self, url: &str, log: &Path) {
        for _ in 0..300 {
            let ok = Command::new("curl").args(["-fsS", "--cacert"]).arg(self.agent_dir.path().join("service.crt")).arg(url).output().map(|o| o.status.success()).unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{url} did not come up: {}", std::fs::read_to_string(log).unwrap_or_default());
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir())
            .args(args)
            .envs(self.env.iter().cloned())
            .env("KEYBRIDGE_CONFIG", &self.rig.config_path)
            .env("KEYBRIDGE_SERVICE", self.url())
            // The client machine trusts the CA it was given at setup.
            .env("KEYBRIDGE_CA", self.agent_dir.path().join("service.crt"));
        cmd
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Register `name` through the operator API; its password file.
    async fn register(&self, name: &str, pw: &str) -> PathBuf {
        let reg = keybridge_proto::seal::register(name, &password(pw), test_kdf()).unwrap();
        let body = keybridge_proto::api::RegisterClient { name: name.to_owned(), registration: reg };
        let http = keybridge_client::http_client(Some(&self.dir().join("service.crt"))).unwrap();
        let token = std::fs::read_to_string(self.dir().join("operator.token")).unwrap();
        let resp = http.post(format!("{}/v1/clients", self.url())).bearer_auth(token.trim()).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let file = self.agent_dir.path().join(format!("{name}.pw"));
        std::fs::write(&file, format!("{pw}\n")).unwrap();
        file
    }

    async fn client(&self, name: &str, pw: &str) -> keybridge_client::ServiceClient {
        keybridge_client::ServiceClient::connect(&keybridge_client::ClientOptions {
            service: self.url(),
            ca: Some(self.agent_dir.path().join("service.crt")),
            client: name.to_owned(),
            password: password(pw),
        })
        .await
        .unwrap()
    }

    fn backup_args(pw: &Path, paths: &[&Path]) -> Vec<String> {
        let mut args: Vec<String> = ["--json", "backup", "--pool", "p", "--client", "alice", "--password-file"].iter().map(|s| s.to_string()).collect();
        args.push(pw.display().to_string());
        args.extend(paths.iter().map(|p| p.display().to_string()));
        args
    }

    fn backup(&self, pw: &Path, paths: &[&Path]) -> Output {
        self.cli(&Self::backup_args(pw, paths).iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn restore(&self, pw: &Path, job: &str, to: &Path) -> Output {
        self.cli(&["--json", "restore", job, "--to", to.to_str().unwrap(), "--client", "alice", "--password-file", pw.to_str().unwrap()])
    }

    fn catalog_path(&self) -> PathBuf {
        self.dir().join("keybridge.db")
    }
}

/// What is the KMS on the service's machine, and survives the wipe
/// (Kryoptic's store and the KMIP server are elsewhere already; the KMIP
/// client's certificate and key are in the test PKI outside the site).
fn kms_files(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Builtin => &["root.key"],
        Kind::SoftHsm => &["softhsm-tokens", "softhsm2.conf"],
        _ => &[],
    }
}

/// Files to back up: text, a 700 kB file of several chunks, a nested one.
fn sample_tree(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("docs/deep")).unwrap();
    std::fs::write(data.join("docs/report.txt"), "quarterly figures\n").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(data.join("docs/deep/big.bin"), &big).unwrap();
    std::fs::write(data.join("empty.txt"), "").unwrap();
    data
}

/// (relative path, contents) of every regular file under `root`, sorted.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// SHA-256 over every row of every table of the SQLite file `path` (its
/// log included): "the catalog holds the same rows".
fn rows_digest(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut h = Sha256::new();
    let tables: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        names
    };
    assert!(tables.iter().any(|t| t == "audit"), "{} has no audit table", path.display());
    for table in tables {
        h.update(format!("table {table}\n").as_bytes());
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

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn drill(kind: Kind) {
    let Some(mut site) = Site::start(kind) else { return };
    let pw = site.register("alice", "alice-network-pw").await;
    let src = tempfile::tempdir().unwrap();
    let data = sample_tree(src.path());
    let job1 = ok_json(&site.backup(&pw, &[&data]))["job_id"].as_str().unwrap().to_owned();

    // A backup in flight: its job is running (its DEK issued) and its
    // client frozen mid-stream while the copy is taken.
    let big = src.path().join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(256 << 20).unwrap();
    let in_flight = site.command(&Site::backup_args(&pw, &[&big]).iter().map(String::as_str).collect::<Vec<_>>()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let running_job = || -> Option<String> {
        let conn = rusqlite::Connection::open(site.catalog_path()).ok()?;
        conn.query_row("SELECT id FROM jobs WHERE id != ?1", [&job1], |r| r.get(0)).ok()
    };
    let mut job2 = None;
    for _ in 0..5000 {
        job2 = running_job();
        if job2.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let job2 = job2.expect("the second backup never started its job");
    assert!(Command::new("kill").args(["-STOP", &in_flight.id().to_string()]).status().unwrap().success());

    // DEKs issued while the copy is taken.
    let alice = Arc::new(site.client("alice", "alice-network-pw").await);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let issuer = {
        let (alice, stop, count) = (alice.clone(), stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut issued = Vec::new();
            while !stop.load(Ordering::Relaxed) || issued.len() < 3 {
                let grant = alice.issue_dek("p").await.unwrap();
                let dek = alice.open(&grant).unwrap();
                issued.push((grant.dek_id.clone(), dek.expose_hex().as_str().to_owned()));
                count.store(issued.len(), Ordering::SeqCst);
            }
            issued
        })
    };
    // At least one DEK issued (and so durable) before the copy starts,
    // however slow this machine is; more are issued while it runs.
    while count.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Offsite: the catalog copy and the configuration.
    let offsite = tempfile::tempdir().unwrap();
    let copy_path = offsite.path().join("catalog.db");
    let copy_cmd = site.command(&["--json", "catalog", "backup", "--out", copy_path.to_str().unwrap()]);
    let copy = ok_json(&tokio::task::spawn_blocking(move || { let mut c = copy_cmd; c.output().unwrap() }).await.unwrap());
    stop.store(true, Ordering::Relaxed);
    let issued = issuer.await.unwrap();
    assert_eq!(mode(&copy_path), 0o600, "the catalog copy is readable by others");
    assert_eq!(copy["out"], Value::from(copy_path.to_str().unwrap()));
    assert_eq!(copy["mode"], "0600");
    let copy_head = copy["audit_head"].as_str().expect("the copy has an audit head").to_owned();
    // The backup is audited in the live catalog, after the copy's head.
    let audit = ok_json(&site.cli(&["--json", "audit", "list", "--limit", "1000"]));
    let rows = audit["rows"].as_array().unwrap();
    let head_at = rows.iter().position(|r| r["hash"] == copy_head.as_str()).expect("the copy's head is not in the live chain");
    assert!(rows[head_at + 1..].iter().any(|r| r["action"] == "catalog.backup" && r["result"] == "ok" && r["actor"].as_str().unwrap().starts_with("local:")), "no catalog.backup row after the copy's head");
    for f in std::iter::once("keybridge.toml").chain(SERVICE_FILES) {
        std::fs::copy(site.dir().join(f), offsite.path().join(f)).unwrap();
    }

    // The frozen backup finishes after the copy, as does one more.
    assert!(Command::new("kill").args(["-CONT", &in_flight.id().to_string()]).status().unwrap().success());
    let b2 = ok_json(&in_flight.wait_with_output().unwrap());
    assert_eq!(b2["job_id"], Value::from(job2.as_str()));
    let after = src.path().join("after.txt");
    std::fs::write(&after, "written after the catalog copy\n").unwrap();
    let job3 = ok_json(&site.backup(&pw, &[&after]))["job_id"].as_str().unwrap().to_owned();

    // Which DEKs the copy holds, and that each has its audit row there.
    let in_copy: Vec<String> = {
        let conn = rusqlite::Connection::open_with_flags(&copy_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let unaudited: i64 = conn
            .query_row("SELECT count(*) FROM deks d WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.dek_id = d.id AND a.action = 'dek.issue' AND a.result = 'ok')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(unaudited, 0, "a DEK row in the copy without its audit row");
        let state: String = conn.query_row("SELECT state FROM jobs WHERE id = ?1", [&job2], |r| r.get(0)).unwrap();
        assert_eq!(state, "running", "the in-flight job is not running in the copy");
        let mut stmt = conn.prepare("SELECT id FROM deks").unwrap();
        let ids = stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<Vec<String>>>().unwrap();
        ids
    };
    assert!(issued.iter().any(|(id, _)| in_copy.contains(id)), "no DEK issued during the drill is in the copy");

    // The machine is lost: stop the service, wipe all but the KMS.
    drop(site.service.take());
    for entry in std::fs::read_dir(site.dir()).unwrap() {
        let path = entry.unwrap().path();
        if kms_files(kind).iter().any(|k| path.file_name().unwrap() == *k) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(!site.catalog_path().exists() && !site.rig.config_path.exists());

    // Recovery: the configuration, then the catalog from its copy.
    for f in std::iter::once("keybridge.toml").chain(SERVICE_FILES) {
        std::fs::copy(offsite.path().join(f), site.dir().join(f)).unwrap();
    }
    let restored = ok_json(&site.cli(&["--json", "catalog", "restore", copy_path.to_str().unwrap()]));
    assert_eq!(restored["audit_head"], Value::from(copy_head.as_str()));
    assert_eq!(restored["replaced"], Value::Null);
    assert_eq!(mode(&site.catalog_path()), 0o600, "the restored catalog is readable by others");
    ok_json(&site.cli(&["--json", "audit", "verify", "--expect-head", &copy_head]));
    let last = ok_json(&site.cli(&["--json", "audit", "list", "--limit", "1"]));
    assert_eq!(last["rows"][0]["action"], "catalog.restore");
    // Nothing of the configuration is missing: init has nothing to make.
    assert_eq!(ok_json(&site.cli(&["--json", "init"]))["created"], serde_json::json!([]));
    site.start_service();

    // The data: the job complete in the copy restores byte for byte.
    let out = tempfile::tempdir().unwrap();
    ok_json(&site.restore(&pw, &job1, out.path()));
    assert_eq!(files(&out.path().join("data")), files(&data), "restored data differs");
    // The job in flight when the copy was taken is incomplete in it;
    // the job made after the copy is unknown.
    fails(&site.restore(&pw, &job2, &out.path().join("j2")), 3, "never completed");
    fails(&site.restore(&pw, &job3, &out.path().join("j3")), 4, "not found");
    // Every DEK issued before the copy comes back the same; the later ones
    // are gone, by name.
    let alice = site.client("alice", "alice-network-pw").await;
    for (id, hex) in &issued {
        match alice.recover_dek(id).await {
            Ok(grant) => {
                assert!(in_copy.contains(id), "DEK {id} is not in the copy but was recovered");
                assert_eq!(alice.open(&grant).unwrap().expose_hex().as_str(), hex.as_str(), "DEK {id} differs after recovery");
            }
            Err(e) => {
                assert!(!in_copy.contains(id), "DEK {id} is in the copy but did not recover: {e}");
                assert_eq!(e.exit_code(), 4, "DEK {id} is not 'not found': {e}");
            }
        }
    }
    // And the restored site backs up again (its KEK pins were lost with
    // the machine: the first issue checks the KEK against the KMS again).
    let b4 = ok_json(&site.backup(&pw, &[&after]));
    ok_json(&site.restore(&pw, b4["job_id"].as_str().unwrap(), &out.path().join("j4")));
    assert_eq!(std::fs::read(out.path().join("j4/after.txt")).unwrap(), b"written after the catalog copy\n");
    assert!(site.dir().join("kek-pins.json").exists(), "the KEK was not pinned again");
    drop(site.agent.take());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_builtin() {
    drill(Kind::Builtin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_softhsm() {
    drill(Kind::SoftHsm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_kryoptic() {
    drill(Kind::Kryoptic).await;
}

/// A damaged copy is refused by `catalog restore` with a clear error, and
/// the catalog in place is left exactly as it was; so is a restore over an
/// existing catalog without `--force`, and over one in use even with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_are_refused_and_the_catalog_is_untouched() {
    let mut site = Site::start(Kind::Builtin).unwrap();
    let pw = site.register("alice", "alice-network-pw").await;
    let src = tempfile::tempdir().unwrap();
    let data = sample_tree(src.path());
    ok_json(&site.backup(&pw, &[&data]));
    let offsite = tempfile::tempdir().unwrap();
    let good = offsite.path().join("good.db");
    let copy = ok_json(&site.cli(&["--json", "catalog", "backup", "--out", good.to_str().unwrap()]));
    // In use: refused even with --force.
    let out = site.cli(&["--json", "catalog", "restore", "--force", good.to_str().unwrap()]);
    fails(&out, 1, "is in use");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "catalog");
    drop(site.service.take());
    // Exists: refused without --force.
    fails(&site.cli(&["catalog", "restore", good.to_str().unwrap()]), 3, "exists already; pass --force");

    let bytes = std::fs::read(&good).unwrap();
    let truncated = offsite.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    // One bit of the copy's head hash flipped on disk.
    let flipped = offsite.path().join("flipped.db");
    let head = hex::decode(copy["audit_head"].as_str().unwrap()).unwrap();
    let at = bytes.windows(32).position(|w| w == head.as_slice()).expect("the head hash is not in the file");
    let mut b = bytes.clone();
    b[at + 5] ^= 0x04;
    std::fs::write(&flipped, &b).unwrap();
    let edited = offsite.path().join("edited.db");
    std::fs::write(&edited, &bytes).unwrap();
    rusqlite::Connection::open(&edited).unwrap().execute("UPDATE audit SET actor = 'operator:mallory' WHERE seq = 2", []).unwrap();
    let not_sqlite = offsite.path().join("notes.txt");
    std::fs::write(&not_sqlite, "this is not a catalog\n".repeat(400)).unwrap();

    let before = rows_digest(&site.catalog_path());
    for (file, needle) in [
        (&truncated, "database disk image is malformed"),
        (&flipped, "the audit chain is broken"),
        (&edited, "the audit chain is broken: row 2"),
        (&not_sqlite, "not a readable SQLite database"),
    ] {
        let out = site.cli(&["--json", "catalog", "restore", "--force", file.to_str().unwrap()]);
        let err = fails(&out, 6, needle);
        assert!(err.contains("nothing was restored") && err.contains("is unchanged"), "{}: {err}", file.display());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["kind"], "integrity", "{}", file.display());
        assert!(rows_digest(&site.catalog_path()) == before, "restoring {} changed the catalog", file.display());
    }
    let names: Vec<String> = std::fs::read_dir(site.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-") || n.contains(".replaced-")), "a refused restore left {names:?}");
    ok_json(&site.cli(&["--json", "audit", "verify"]));

    // The good copy restores over it with --force; the old one is kept.
    let r = ok_json(&site.cli(&["--json", "catalog", "restore", "--force", good.to_str().unwrap()]));
    let replaced = PathBuf::from(r["replaced"].as_str().unwrap());
    assert!(rows_digest(&replaced) == before, "the replaced catalog was not kept whole");
    site.start_service();
    let client = site.client("alice", "alice-network-pw").await;
    client.issue_dek("p").await.unwrap();

    // The live catalog's header is destroyed under the running service:
    // SQLite can no longer say whether it is in use, the file lock still
    // can, and the restore is refused.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(site.catalog_path()).unwrap();
        f.write_all(b"not SQLite at all").unwrap();
    }
    fails(&site.cli(&["catalog", "restore", "--force", good.to_str().unwrap()]), 1, "is in use (it is unreadable");
    // Stopped, the damaged catalog is replaced, its log kept beside it.
    drop(site.service.take());
    let r = ok_json(&site.cli(&["--json", "catalog", "restore", "--force", good.to_str().unwrap()]));
    assert!(r["replaced_unreadable"].as_str().unwrap().contains("not a database"), "{r}");
    let replaced = PathBuf::from(r["replaced"].as_str().unwrap());
    assert!(std::fs::read(&replaced).unwrap().starts_with(b"not SQLite at all"));
    assert!(!site.dir().join("keybridge.db-wal").exists(), "the damaged catalog's log was left for the restored one");
    site.start_service();
    client.issue_dek("p").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pykmip() {
    drill(Kind::Kmip).await;
}
