//! A deployment as an operator runs it: `keybridge serve` and a
//! `keybridge media-agent`, spawned from the built binary on loopback, and
//! the CLI run against them (the end-to-end tests and the soak).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, password, private_softhsm, test_kdf, Kind, Proc, Rig};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_keybridge");

/// SoftHSM2's file object store is not safe for several processes that
/// create objects at once (one process's token scan can miss the token
/// while another writes it: "no token with label"). Each SoftHSM2
/// deployment works on its own copy of the token (`private_softhsm`), made
/// while it holds this turn, so no copy is taken mid-write.
pub(crate) static SOFTHSM_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn softhsm_turn(kind: Kind) -> Option<std::sync::MutexGuard<'static, ()>> {
    matches!(kind, Kind::SoftHsm | Kind::P11KitProxy).then(|| SOFTHSM_TURN.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Kill `server` while `client` is frozen (SIGSTOP), then let the client
/// go on: the kill lands mid-transfer however fast this machine is.
pub(crate) fn kill_while_frozen(client: &Child, mut server: Proc) {
    let pid = client.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
}

/// Service + MediaAgent on one backend, in a temporary directory.
pub(crate) struct Deployment {
    pub rig: Rig,
    /// Environment for every process of this deployment (SoftHSM2: its own
    /// copy of the token, see `private_softhsm`).
    pub env: Vec<(&'static str, PathBuf)>,
    pub service: Option<Proc>,
    pub agent: Option<Proc>,
    pub port: u16,
    pub agent_port: u16,
    pub store: PathBuf,
}

impl Deployment {
    pub(crate) fn start(kind: Kind) -> Option<Deployment> {
        Self::start_with(kind, None, "")
    }

    /// A deployment whose MediaAgent stores in `store` (default: in the
    /// rig's directory) and whose config holds `extra_kms` besides the
    /// rig's `kms` entry.
    pub(crate) fn start_with(kind: Kind, store: Option<PathBuf>, extra_kms: &str) -> Option<Deployment> {
        Self::start_with_env(kind, store, extra_kms, Vec::new())
    }

    /// [`Self::start_with`], every process of the deployment also getting
    /// `more_env`.
    pub(crate) fn start_with_env(kind: Kind, store: Option<PathBuf>, extra_kms: &str, more_env: Vec<(&'static str, PathBuf)>) -> Option<Deployment> {
        let rig = Rig::new(kind)?;
        let (port, agent_port) = (free_port(), free_port());
        let mut cfg = std::fs::OpenOptions::new().append(true).open(&rig.config_path).unwrap();
        write!(
            cfg,
            "\n{extra_kms}\n[service]\nlisten = \"127.0.0.1:{port}\"\ncert = \"service.crt\"\nkey = \"service.key\"\n\
             operator_token_file = \"operator.token\"\nmedia_agent = \"https://127.0.0.1:{agent_port}\"\n\
             media_agent_key_file = \"media-agent.key\"\nhealth_interval_secs = 1\n"
        )
        .unwrap();
        drop(cfg);
        let mut env = match kind {
            // Through p11-kit's proxy, SoftHSM2 reads the same variable.
            Kind::SoftHsm | Kind::P11KitProxy => vec![("SOFTHSM2_CONF", private_softhsm(rig.dir.path()))],
            _ => Vec::new(),
        };
        env.extend(more_env);
        let mut d = Deployment { store: store.unwrap_or_else(|| rig.dir.path().join("store")), rig, env, service: None, agent: None, port, agent_port };
        let init = d.cli(&["init"]);
        assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
        // The pool (a master key written into the token) before the service
        // opens the token: SoftHSM2's file store is not safe for two
        // processes at once (see SOFTHSM_TURN). A CLI scan during the
        // service's first login, or the service's first scan during the
        // CLI's key creation, could miss the token ("tokens present: ''").
        let pool = d.cli(&["pool", "create", "p", "--kms", "kms", "--kek-bits", "2048"]);
        assert!(pool.status.success(), "pool create ({}): {}", pool.status, String::from_utf8_lossy(&pool.stderr));
        d.start_agent();
        d.start_service();
        Some(d)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.rig.dir.path()
    }

    pub(crate) fn spawn(&self, args: &[&str], log: &str) -> Proc {
        let log = std::fs::File::create(self.dir().join(log)).unwrap();
        Proc(
            Command::new(BIN)
                .current_dir(self.dir())
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

    pub(crate) fn start_service(&mut self) {
        self.service = Some(self.spawn(&["serve"], "service.log"));
        self.wait_up(&format!("{}/healthz", self.url()), "service.log");
    }

    /// A second `serve` process on this deployment's catalog and config,
    /// listening on another port; with its URL.
    pub(crate) fn another_service(&self) -> (Proc, String) {
        let port = free_port();
        let cfg = std::fs::read_to_string(&self.rig.config_path).unwrap();
        let cfg = cfg.replace(&format!("listen = \"127.0.0.1:{}\"", self.port), &format!("listen = \"127.0.0.1:{port}\""));
        let path = self.dir().join("second.toml");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(self.dir().join("second.log")).unwrap();
        let proc = Proc(Command::new(BIN).current_dir(self.dir()).arg("serve").env("KEYBRIDGE_CONFIG", &path).stdout(Stdio::null()).stderr(log).spawn().unwrap());
        let url = format!("https://127.0.0.1:{port}");
        self.wait_up(&format!("{url}/healthz"), "second.log");
        (proc, url)
    }

    pub(crate) fn start_agent(&mut self) {
        let listen = format!("127.0.0.1:{}", self.agent_port);
        let store = self.store.display().to_string();
        self.agent = Some(self.spawn(&["media-agent", "--store", &store, "--listen", &listen, "--cert", "service.crt", "--key", "service.key", "--token-key", "media-agent.key"], "agent.log"));
        self.wait_up(&format!("https://127.0.0.1:{}/healthz", self.agent_port), "agent.log");
    }

    pub(crate) fn wait_up(&self, url: &str, log: &str) {
        for _ in 0..300 {
            let ok = Command::new("curl").args(["-fsS", "--cacert"]).arg(self.dir().join("service.crt")).arg(url).output().map(|o| o.status.success()).unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{url} did not come up: {}", std::fs::read_to_string(self.dir().join(log)).unwrap_or_default());
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Run the CLI against this deployment.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run the CLI; killed after `limit` (its output then says so), so a
    /// stuck command fails a test instead of hanging it.
    pub(crate) fn cli_within(&self, args: &[&str], limit: Duration) -> Output {
        use std::io::Read;
        let mut child = self.cli_spawn(args);
        // Read both pipes while waiting: a full pipe must not stall the child.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = err.join().unwrap();
        if std::time::Instant::now() > deadline {
            stderr.extend_from_slice(format!("\n(killed by the test after {limit:?})\n").as_bytes());
        }
        Output { status, stdout: out.join().unwrap(), stderr }
    }

    /// The CLI command with this deployment's environment, not started.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir())
            .args(args)
            .envs(self.env.iter().cloned())
            .env("KEYBRIDGE_CONFIG", &self.rig.config_path)
            .env("KEYBRIDGE_SERVICE", self.url())
            .env("KEYBRIDGE_CA", self.dir().join("service.crt"));
        cmd
    }

    /// Start the CLI with piped output (collect it with `wait_with_output`).
    pub(crate) fn cli_spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    /// Start `keybridge backup` as client `name` of a sparse 1 GiB file
    /// made in `dir` (cheap to make, long to archive and encrypt: a backup
    /// that is still streaming when a test kills something).
    pub(crate) fn spawn_big_backup(&self, name: &str, dir: &Path) -> Child {
        let big = dir.join("big.bin");
        std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
        let pw = self.dir().join(format!("{name}.pw"));
        self.cli_spawn(&["--json", "backup", "--pool", "p", "--client", name, "--password-file", pw.to_str().unwrap(), big.to_str().unwrap()])
    }

    /// Register `name` with `pw` through the operator API (cheap KDF).
    pub(crate) async fn register(&self, name: &str, pw: &str) {
        let reg = keybridge_proto::seal::register(name, &password(pw), test_kdf()).unwrap();
        let body = keybridge_proto::api::RegisterClient { name: name.to_owned(), registration: reg };
        let resp = self.operator().post(format!("{}/v1/clients", self.url())).bearer_auth(self.token()).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        std::fs::write(self.dir().join(format!("{name}.pw")), format!("{pw}\n")).unwrap();
    }

    pub(crate) fn operator(&self) -> reqwest::Client {
        keybridge_client::http_client(Some(&self.dir().join("service.crt"))).unwrap()
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.dir().join("operator.token")).unwrap().trim().to_owned()
    }

    pub(crate) async fn client(&self, name: &str, pw: &str) -> keybridge::Result<keybridge_client::ServiceClient> {
        keybridge_client::ServiceClient::connect(&keybridge_client::ClientOptions {
            service: self.url(),
            ca: Some(self.dir().join("service.crt")),
            client: name.to_owned(),
            password: password(pw),
        })
        .await
    }

    /// `keybridge backup` as client `name`.
    pub(crate) fn backup(&self, name: &str, paths: &[&Path]) -> Output {
        let pw = self.dir().join(format!("{name}.pw"));
        let mut args: Vec<String> = ["--json", "backup", "--pool", "p", "--client", name, "--password-file"].iter().map(|s| s.to_string()).collect();
        args.push(pw.display().to_string());
        args.extend(paths.iter().map(|p| p.display().to_string()));
        self.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub(crate) fn restore(&self, name: &str, job: &str, to: &Path) -> Output {
        let pw = self.dir().join(format!("{name}.pw"));
        self.cli(&["--json", "restore", job, "--to", to.to_str().unwrap(), "--client", name, "--password-file", pw.to_str().unwrap()])
    }

    pub(crate) fn catalog(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir().join("keybridge.db")).unwrap()
    }

    pub(crate) fn job_state(&self, job: &str) -> Option<String> {
        self.catalog().query_row("SELECT state FROM jobs WHERE id = ?1", [job], |r| r.get(0)).ok()
    }
}

/// A tree with what a backup must keep: contents, modes, mtimes, a
/// symlink, an empty directory, a file larger than several chunks.
pub(crate) fn sample_tree(root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = root.join("data");
    std::fs::create_dir_all(data.join("docs/deep")).unwrap();
    std::fs::create_dir_all(data.join("empty")).unwrap();
    std::fs::write(data.join("docs/report.txt"), "quarterly figures\n").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(data.join("docs/deep/big.bin"), &big).unwrap();
    std::fs::write(data.join("empty.txt"), "").unwrap();
    std::fs::write(data.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(data.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(data.join("docs/report.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("docs/report.txt", data.join("latest")).unwrap();
    let t = filetime::FileTime::from_unix_time(1_577_934_245, 0);
    filetime::set_file_mtime(data.join("docs/report.txt"), t).unwrap();
    filetime::set_file_mtime(data.join("docs/deep"), t).unwrap();
    data
}

/// Every entry under `root`: (relative path, type, mode, mtime seconds,
/// contents or link target).
pub(crate) fn describe(root: &Path) -> Vec<(String, char, u32, i64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let (kind, content) = if m.file_type().is_symlink() {
            ('l', std::fs::read_link(&p).unwrap().display().to_string().into_bytes())
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ('d', Vec::new())
        } else {
            ('f', std::fs::read(&p).unwrap())
        };
        let mode = if kind == 'l' { 0 } else { m.mode() & 0o7777 };
        out.push((rel, kind, mode, m.mtime(), content));
    }
    out.sort();
    out
}

