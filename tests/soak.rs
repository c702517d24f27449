//! The soak: mixed load on three deployments at once, with faults injected
//! on a schedule, for `KEYBRIDGE_SOAK_MINUTES` (default 2, the version CI
//! runs; `scripts/soak 30` runs the long one in release).
//!
//! Deployments (each a `keybridge serve` and a `keybridge media-agent`):
//! - `builtin`: the built-in KMS;
//! - `softhsm`: SoftHSM2, plus a second KMS `net`, a SoftHSM2 token served by
//!   `p11-kit server` and reached through `p11-kit-client.so` (a network
//!   HSM). p11-kit's RPC carries no AES key wrap, so no pool can live on
//!   `net`; its restart is watched through `/metrics` while the rest of the
//!   deployment stays under load;
//! - `kmip`: a PyKMIP server of its own, KEK cache off, so every recover is a
//!   KMIP Decrypt.
//!
//! Load: on each deployment two clients issue a DEK and recover one they
//! were issued before, in a loop; a third backs up a small tree through the
//! MediaAgent and restores an earlier backup, in a loop.
//!
//! Faults, at fixed fractions of the run: the p11-kit server killed and
//! restarted; the PyKMIP server killed and restarted 3 s later; the builtin
//! service killed with SIGKILL and restarted; the softhsm MediaAgent killed
//! with SIGKILL and restarted.
//!
//! It ends with the count of operations and failures by kind, then checks:
//! no failure that a fault of its own deployment does not explain (from
//! 1 s before it until 30 s after its repair); each deployment that took a
//! fault issues and recovers again after it; every DEK whose issue returned
//! success recovers to the same key; every backup that returned success
//! restores identically; `audit verify` passes; no DEK row lacks its audit
//! row; the `net` KMS went down and came back in `/metrics`. It writes
//! `soak.json` and `soak.svg` (each process's RSS and each deployment's
//! p50/p99 latency over time) to `KEYBRIDGE_SOAK_OUT` (default
//! `target/soak`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::deployment::{describe, sample_tree, Deployment};
use common::{Kind, Proc};
use keybridge_proto::secret::Dek;
use serde_json::{json, Value};

/// Failures on a deployment are expected from 1 s before a fault is
/// injected into it until this long after it is repaired.
const FAULT_WINDOW: Duration = Duration::from_secs(30);

/// A CLI backup or restore that takes longer is killed and fails the run.
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// One operation as the load saw it.
#[derive(Clone)]
struct Op {
    deployment: &'static str,
    kind: &'static str,
    at: Duration,
    took: Duration,
    /// `None`: success; else the failure's kind.
    failure: Option<String>,
}

/// A fault: when it was injected, into which deployment (`None`: nothing
/// that serves a pool), and when it was repaired.
#[derive(Clone)]
struct Fault {
    site: Option<&'static str>,
    what: String,
    began: Duration,
    repaired: Duration,
}

impl Fault {
    /// Whether a failure of `op` is explained by this fault.
    fn explains(&self, op: &Op) -> bool {
        self.site == Some(op.deployment) && op.at + op.took + Duration::from_secs(1) >= self.began && op.at <= self.repaired + FAULT_WINDOW
    }
}

/// What the load was told succeeded, to be checked at the end.
#[derive(Default)]
struct Ledger {
    deks: Vec<(String, String, Dek)>,
    backups: Vec<(String, String, PathBuf)>,
}

struct Soak {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<Fault>>,
    stop: AtomicBool,
}

/// Stops the load when the test ends, also by a panic: the backup workers
/// are blocking threads the runtime would otherwise wait for.
struct StopOnDrop(Arc<Soak>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

impl Soak {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn record(&self, deployment: &'static str, kind: &'static str, began: Duration, failure: Option<String>) {
        let took = self.now().saturating_sub(began);
        self.ops.lock().unwrap().push(Op { deployment, kind, at: began, took, failure });
    }

    /// Record a fault injected at `began` and repaired now.
    fn fault(&self, site: Option<&'static str>, what: &str, began: Duration) {
        let repaired = self.now();
        eprintln!("[soak {:>6.1}s] {what} (at {:.1}s, repaired after {:.1}s)", repaired.as_secs_f64(), began.as_secs_f64(), (repaired - began).as_secs_f64());
        self.faults.lock().unwrap().push(Fault { site, what: what.to_owned(), began, repaired });
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A deployment under soak: its processes are replaced when faults kill them.
struct Site {
    name: &'static str,
    d: Deployment,
    pool: &'static str,
    service: Mutex<Proc>,
    agent: Mutex<Proc>,
    /// Live pids, for the RSS sampler (never waits for a restart).
    service_pid: AtomicU32,
    agent_pid: AtomicU32,
    /// (process, pid) of every incarnation, with when it started.
    pids: Mutex<Vec<(String, u32, Duration)>>,
}

impl Site {
    fn new(name: &'static str, mut d: Deployment, pool: &'static str, soak: &Soak) -> Site {
        let service = d.service.take().unwrap();
        let agent = d.agent.take().unwrap();
        let pids = vec![("service".into(), service.0.id(), soak.now()), ("agent".into(), agent.0.id(), soak.now())];
        let (service_pid, agent_pid) = (AtomicU32::new(service.0.id()), AtomicU32::new(agent.0.id()));
        Site { name, d, pool, service: Mutex::new(service), agent: Mutex::new(agent), service_pid, agent_pid, pids: Mutex::new(pids) }
    }

    fn kill_and_restart_service(&self, soak: &Soak) {
        let mut s = self.service.lock().unwrap();
        let began = soak.now();
        s.0.kill().unwrap();
        s.0.wait().unwrap();
        *s = self.d.spawn(&["serve"], "service.log");
        self.d.wait_up(&format!("{}/healthz", self.d.url()), "service.log");
        self.service_pid.store(s.0.id(), Ordering::SeqCst);
        self.pids.lock().unwrap().push(("service".into(), s.0.id(), soak.now()));
        soak.fault(Some(self.name), &format!("{}: service killed (SIGKILL) and restarted", self.name), began);
    }

    fn kill_and_restart_agent(&self, soak: &Soak) {
        let mut a = self.agent.lock().unwrap();
        let began = soak.now();
        a.0.kill().unwrap();
        a.0.wait().unwrap();
        let listen = format!("127.0.0.1:{}", self.d.agent_port);
        let store = self.d.store.display().to_string();
        *a = self.d.spawn(&["media-agent", "--store", &store, "--listen", &listen, "--cert", "service.crt", "--key", "service.key", "--token-key", "media-agent.key"], "agent.log");
        self.d.wait_up(&format!("https://127.0.0.1:{}/healthz", self.d.agent_port), "agent.log");
        self.agent_pid.store(a.0.id(), Ordering::SeqCst);
        self.pids.lock().unwrap().push(("agent".into(), a.0.id(), soak.now()));
        soak.fault(Some(self.name), &format!("{}: MediaAgent killed (SIGKILL) and restarted", self.name), began);
    }

    /// Live (process, pid) pairs.
    fn live(&self) -> Vec<(String, u32)> {
        vec![("service".into(), self.service_pid.load(Ordering::SeqCst)), ("agent".into(), self.agent_pid.load(Ordering::SeqCst))]
    }
}

/// A failure's kind, from what the client or CLI said.
fn failure_kind(msg: &str) -> String {
    let m = msg.to_lowercase();
    let kind = if m.contains("kms") && (m.contains("unreachable") || m.contains("retried") || m.contains("unavailable")) {
        "KMS unreachable (retriable)"
    } else if m.contains("media agent") || m.contains("mediaagent") || m.contains("media-agent") {
        "MediaAgent unreachable or interrupted"
    } else if m.contains("connect") || m.contains("sending request") || m.contains("connection") || m.contains("service") {
        "service unreachable or interrupted"
    } else {
        return format!("other: {}", msg.lines().next().unwrap_or_default());
    };
    kind.into()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn keys_worker(soak: Arc<Soak>, site: Arc<Site>, client: String, ledger: Arc<Mutex<Ledger>>) {
    let pw = format!("password-of-{client}");
    let c = loop {
        match site.d.client(&client, &pw).await {
            Ok(c) => break c,
            Err(_) if !soak.stopped() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{}: {client} cannot connect: {e}", site.name),
        }
    };
    let mut mine: Vec<(String, Dek)> = Vec::new();
    let mut n = 0usize;
    while !soak.stopped() {
        n += 1;
        let began = soak.now();
        match c.issue_dek(site.pool).await {
            Ok(g) => {
                let dek = c.open(&g).expect("a grant the service returned opens");
                soak.record(site.name, "issue", began, None);
                // Dek is not Clone (a secret): the ledger gets its own copy.
                ledger.lock().unwrap().deks.push((client.clone(), g.dek_id.clone(), c.open(&g).unwrap()));
                mine.push((g.dek_id, dek));
            }
            Err(e) => {
                soak.record(site.name, "issue", began, Some(failure_kind(&e.to_string())));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        // Recover one issued before (spread over the whole history).
        let (id, dek) = &mine[(n * 7919) % mine.len()];
        let began = soak.now();
        match c.recover_dek(id).await {
            Ok(back) => {
                assert_eq!(&c.open(&back).unwrap(), dek, "{}: DEK {id} recovered to another key", site.name);
                soak.record(site.name, "recover", began, None);
            }
            Err(e) => {
                soak.record(site.name, "recover", began, Some(failure_kind(&e.to_string())));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Backups of a small tree and restores of earlier ones, through the CLI.
fn backups_worker(soak: Arc<Soak>, site: Arc<Site>, client: String, data: PathBuf, ledger: Arc<Mutex<Ledger>>, scratch: PathBuf) {
    let pw = site.d.dir().join(format!("{client}.pw"));
    let mut done: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !soak.stopped() {
        n += 1;
        let began = soak.now();
        let out = site.d.cli_within(&["--json", "backup", "--pool", site.pool, "--client", &client, "--password-file", pw.to_str().unwrap(), data.to_str().unwrap()], CLI_LIMIT);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("backup --json");
            let job = v["job_id"].as_str().unwrap().to_owned();
            soak.record(site.name, "backup", began, None);
            ledger.lock().unwrap().backups.push((client.clone(), job.clone(), data.clone()));
            done.push(job);
        } else {
            soak.record(site.name, "backup", began, Some(failure_kind(&String::from_utf8_lossy(&out.stderr))));
        }
        if let Some(job) = (!done.is_empty()).then(|| done[(n * 7919) % done.len()].clone()) {
            let to = scratch.join(format!("r{n}"));
            let began = soak.now();
            let out = site.d.cli_within(&["--json", "restore", &job, "--to", to.to_str().unwrap(), "--client", &client, "--password-file", pw.to_str().unwrap()], CLI_LIMIT);
            if out.status.success() {
                assert_eq!(describe(&data), describe(&to.join("data")), "{}: job {job} restored differently", site.name);
                soak.record(site.name, "restore", began, None);
            } else {
                soak.record(site.name, "restore", began, Some(failure_kind(&String::from_utf8_lossy(&out.stderr))));
            }
            let _ = std::fs::remove_dir_all(&to);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Whether `/metrics` of `site` says KMS `kms` is reachable.
async fn reachable(site: &Site, kms: &str) -> Option<bool> {
    let m = site.d.operator().get(format!("{}/metrics", site.d.url())).send().await.ok()?.text().await.ok()?;
    let line = format!("keybridge_kms_reachable{{kms=\"{kms}\"}}");
    m.lines().find_map(|l| l.strip_prefix(&line)).map(|v| v.trim() == "1")
}

async fn wait_reachable(site: &Site, kms: &str, want: bool, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if reachable(site, kms).await == Some(want) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let minutes: f64 = std::env::var("KEYBRIDGE_SOAK_MINUTES").ok().map(|m| m.parse().expect("KEYBRIDGE_SOAK_MINUTES is a number of minutes")).unwrap_or(2.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let out_dir = std::env::var_os("KEYBRIDGE_SOAK_OUT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak"));
    std::fs::create_dir_all(&out_dir).unwrap();
    // (Each check skips loudly, or fails under CI=true.)
    if Kind::SoftHsm.module().is_none() || !Kind::Kmip.available() {
        return;
    }
    if std::env::var_os("KEYBRIDGE_TEST_P11KIT_CLIENT_MODULE").is_none() {
        Kind::P11KitClient.module();
        return;
    }
    let soak = Arc::new(Soak { start: Instant::now(), ops: Mutex::default(), faults: Mutex::default(), stop: AtomicBool::new(false) });
    let _stop = StopOnDrop(soak.clone());
    // A hang fails the run instead of holding CI until its limit.
    let watchdog = total + Duration::from_secs(20 * 60);
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!("soak: still running {watchdog:?} after it started; giving up");
        std::process::exit(1);
    });

    // The network HSM: a SoftHSM2 token of its own behind `p11-kit server`.
    let hsm_dir = tempfile::tempdir().unwrap();
    let hsm_conf = common::p11kit::fresh_softhsm_token(hsm_dir.path());
    let hsm = common::p11kit::Server::start("soak", &hsm_conf);
    let Some(client_module) = Kind::P11KitClient.module() else { return };
    let net = format!(
        "[[kms]]\nname = \"net\"\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken = \"{}\"\npin_env = \"KEYBRIDGE_TEST_PIN\"\ntimeout_secs = 5\n",
        client_module.display(),
        std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into())
    );
    let kmip_db = tempfile::tempdir().unwrap();
    let kmip = common::kmip::PyKmip::start("soak", Some(kmip_db.path().join("pykmip.db")), "server").expect("PyKMIP");
    let kmip_kms = common::kmip::kms_toml("kmip", &[kmip.addr()], "client", "timeout_secs = 5\nkek_cache_ttl_secs = 0\n");

    let builtin = Deployment::start(Kind::Builtin).unwrap();
    let softhsm = {
        let _turn = common::deployment::softhsm_turn(Kind::SoftHsm);
        // p11-kit's client module finds its server by this variable.
        Deployment::start_with_env(Kind::SoftHsm, None, &net, vec![("P11_KIT_SERVER_ADDRESS", PathBuf::from(&hsm.address))]).unwrap()
    };
    let kmip_site = Deployment::start_with(Kind::Builtin, None, &kmip_kms).unwrap();
    let pool = kmip_site.cli(&["pool", "create", "q", "--kms", "kmip", "--kek-bits", "2048"]);
    assert!(pool.status.success(), "pool on PyKMIP: {}", String::from_utf8_lossy(&pool.stderr));
    let sites = [
        Arc::new(Site::new("builtin", builtin, "p", &soak)),
        Arc::new(Site::new("softhsm", softhsm, "p", &soak)),
        Arc::new(Site::new("kmip", kmip_site, "q", &soak)),
    ];
    assert_eq!(wait_reachable(&sites[1], "net", true, Duration::from_secs(30)).await.map(|_| ()), Some(()), "the net KMS never showed reachable");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let src = tempfile::tempdir().unwrap();
    let data = sample_tree(src.path());
    let scratch = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let mut backups = Vec::new();
    for site in &sites {
        for c in ["k0", "k1", "b0"] {
            site.d.register(c, &format!("password-of-{c}")).await;
        }
        for c in ["k0", "k1"] {
            keys.push(tokio::spawn(keys_worker(soak.clone(), site.clone(), c.into(), ledger.clone())));
        }
        let (soak, site, data, ledger, scratch) = (soak.clone(), site.clone(), data.clone(), ledger.clone(), scratch.path().join(site.name));
        std::fs::create_dir_all(&scratch).unwrap();
        backups.push(tokio::task::spawn_blocking(move || backups_worker(soak, site, "b0".into(), data, ledger, scratch)));
    }

    // RSS of every live keybridge process, once a second.
    let rss: Arc<Mutex<Vec<(Duration, String, u64)>>> = Arc::default();
    let sampler = {
        let (soak, sites, rss) = (soak.clone(), sites.clone(), rss.clone());
        tokio::spawn(async move {
            while !soak.stopped() {
                for site in &sites {
                    for (proc_name, pid) in site.live() {
                        if let Some(kib) = rss_kib(pid) {
                            rss.lock().unwrap().push((soak.now(), format!("{} {proc_name}", site.name), kib));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // The fault schedule. The run goes on at least FAULT_WINDOW + 15 s
    // after the last repair, so recovery under load is always seen.
    let at = |f: f64| total.mul_f64(f);
    let until = |t: Duration| {
        let soak = soak.clone();
        async move { tokio::time::sleep(t.saturating_sub(soak.now())).await }
    };
    until(at(0.2)).await;
    let began = soak.now();
    hsm.kill();
    let down_after = wait_reachable(&sites[1], "net", false, Duration::from_secs(30)).await;
    hsm.restart(&hsm_conf);
    let up_after = wait_reachable(&sites[1], "net", true, Duration::from_secs(60)).await;
    // No pool lives on `net`: its outage explains no failure.
    soak.fault(None, "softhsm: p11-kit server (network HSM) killed and restarted", began);
    until(at(0.35)).await;
    let began = soak.now();
    kmip.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kmip.restart();
    let kmip_killed = began;
    let kmip_restarted = soak.now();
    soak.fault(Some("kmip"), "kmip: PyKMIP server killed, restarted 3 s later", began);
    until(at(0.5)).await;
    {
        let site = sites[0].clone();
        let s2 = soak.clone();
        tokio::task::spawn_blocking(move || site.kill_and_restart_service(&s2)).await.unwrap();
    }
    until(at(0.65)).await;
    {
        let site = sites[1].clone();
        let s2 = soak.clone();
        tokio::task::spawn_blocking(move || site.kill_and_restart_agent(&s2)).await.unwrap();
    }
    let last_repair = soak.faults.lock().unwrap().iter().map(|f| f.repaired).max().unwrap();
    until(total.max(last_repair + FAULT_WINDOW + Duration::from_secs(15))).await;
    soak.stop.store(true, Ordering::SeqCst);
    for k in keys {
        k.await.unwrap();
    }
    for b in backups {
        b.await.unwrap();
    }
    sampler.await.unwrap();
    let ended = soak.now();

    // Counts, and failures by kind.
    let ops = soak.ops.lock().unwrap().clone();
    let faults = soak.faults.lock().unwrap().clone();
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for op in &ops {
        let key = format!("{} {}", op.deployment, op.kind);
        let outcome = op.failure.clone().unwrap_or_else(|| "ok".into());
        *counts.entry(key).or_default().entry(outcome).or_default() += 1;
        if let Some(f) = &op.failure {
            if !faults.iter().any(|f| f.explains(op)) {
                unexpected.push(format!("{} {} at {:.1}s: {f}", op.deployment, op.kind, op.at.as_secs_f64()));
            }
        }
    }

    // Each deployment a fault hit works again after its repair.
    for f in faults.iter().filter(|f| f.site.is_some()) {
        for kind in ["issue", "recover"] {
            if !ops.iter().any(|o| Some(o.deployment) == f.site && o.kind == kind && o.failure.is_none() && o.at >= f.repaired) {
                unexpected.push(format!("no successful {kind} after '{}' was repaired", f.what));
            }
        }
    }

    // Nothing lost: every DEK issued recovers, every backup restores.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut lost = Vec::new();
    let verified = verify_deks(&sites, &ledger.deks, &mut lost).await;
    let restored = verify_backups(&sites, &ledger.backups, scratch.path(), &mut lost);
    let mut audit = BTreeMap::new();
    for site in &sites {
        let verify = site.d.cli(&["audit", "verify"]);
        audit.insert(site.name, verify.status.success());
        let orphans: i64 = site
            .d
            .catalog()
            .query_row("SELECT count(*) FROM deks d WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.action = 'dek.issue' AND a.dek_id = d.id AND a.result = 'ok')", [], |r| r.get(0))
            .unwrap();
        if orphans != 0 {
            lost.push(format!("{}: {orphans} DEK rows without their audit row", site.name));
        }
    }

    // Latency over time: p50 and p99 of recovers (and backups) per bucket.
    let bucket = (total / 60).max(Duration::from_secs(2));
    let mut latency: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for site in &sites {
        for kind in ["recover", "issue", "backup"] {
            let mut series = Vec::new();
            let mut t = Duration::ZERO;
            while t < ended {
                let mut ms: Vec<f64> = ops
                    .iter()
                    .filter(|o| o.deployment == site.name && o.kind == kind && o.failure.is_none() && o.at >= t && o.at < t + bucket)
                    .map(|o| o.took.as_secs_f64() * 1e3)
                    .collect();
                ms.sort_by(f64::total_cmp);
                if !ms.is_empty() {
                    series.push(((t + bucket / 2).as_secs_f64() / 60.0, percentile(&ms, 0.5), percentile(&ms, 0.99)));
                }
                t += bucket;
            }
            latency.insert(format!("{} {kind}", site.name), series);
        }
    }

    // RSS at the end vs after the first minute of each process's last
    // incarnation (a shorter run: after the first quarter of its life).
    let rss = rss.lock().unwrap().clone();
    let mut rss_ratio = BTreeMap::new();
    for site in &sites {
        for (proc_name, _) in site.live() {
            let name = format!("{} {proc_name}", site.name);
            let born = site.pids.lock().unwrap().iter().filter(|(p, _, _)| *p == proc_name).map(|(_, _, t)| *t).max().unwrap();
            let life = ended.saturating_sub(born);
            let settle = born + Duration::from_secs(60).min(life / 4);
            let samples: Vec<&(Duration, String, u64)> = rss.iter().filter(|(t, n, _)| *n == name && *t >= born).collect();
            let first = samples.iter().find(|(t, _, _)| *t >= settle).map(|s| s.2);
            let last = samples.last().map(|s| s.2);
            if let (Some(first), Some(last)) = (first, last) {
                rss_ratio.insert(name, json!({ "first_kib": first, "end_kib": last, "ratio": last as f64 / first as f64, "since_s": born.as_secs() }));
            }
        }
    }

    // Recover throughput on the KMIP deployment in the minute after its
    // KMS came back vs the minute before it went (window shorter on a short
    // run).
    let window = Duration::from_secs(60).min(total / 8);
    let killed = kmip_killed;
    let rate = |from: Duration, to: Duration| ops.iter().filter(|o| o.deployment == "kmip" && o.kind == "recover" && o.failure.is_none() && o.at >= from && o.at < to).count() as f64 / (to - from).as_secs_f64();
    let before = rate(killed.saturating_sub(window), killed);
    let after = rate(kmip_restarted, kmip_restarted + window);

    let report = json!({
        "minutes": minutes,
        "counts": counts,
        "faults": faults.iter().map(|f| json!({"at_s": f.began.as_secs_f64(), "repaired_s": f.repaired.as_secs_f64(), "fault": f.what})).collect::<Vec<_>>(),
        "net_kms": { "down_seen_after_s": down_after.map(|d| d.as_secs_f64()), "up_again_after_restart_s": up_after.map(|d| d.as_secs_f64()) },
        "unexpected_failures": unexpected,
        "verified": { "deks": verified, "backups": restored },
        "lost": lost,
        "audit_verify": audit,
        "rss": rss_ratio,
        "kmip_recover_per_s": { "window_s": window.as_secs_f64(), "before_kill": before, "after_restart": after, "ratio": after / before },
        "latency_ms": latency.iter().map(|(k, v)| (k.clone(), v.iter().map(|(m, p50, p99)| json!([m, p50, p99])).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>(),
    });
    std::fs::write(out_dir.join("soak.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    plot(&out_dir.join("soak.svg"), &rss, &latency, &faults, ended);
    eprintln!("{}", summary(&report));
    eprintln!("soak: wrote {} and {}", out_dir.join("soak.json").display(), out_dir.join("soak.svg").display());

    assert!(down_after.is_some(), "/metrics never showed the killed network HSM as unreachable");
    assert!(up_after.is_some(), "/metrics never showed the restarted network HSM as reachable again");
    assert!(unexpected.is_empty(), "failures outside any fault's window:\n{}", unexpected.join("\n"));
    assert!(lost.is_empty(), "lost:\n{}", lost.join("\n"));
    assert!(audit.values().all(|ok| *ok), "audit verify failed: {audit:?}");
    for site in &sites {
        for kind in ["issue", "recover", "backup", "restore"] {
            let ok = counts.get(&format!("{} {kind}", site.name)).and_then(|c| c.get("ok")).copied().unwrap_or(0);
            assert!(ok > 0, "{} never completed a {kind}", site.name);
        }
    }
}

/// Recover every ledger DEK on the deployment that issued it.
async fn verify_deks(sites: &[Arc<Site>], deks: &[(String, String, Dek)], lost: &mut Vec<String>) -> usize {
    let (mut verified, mut found) = (0, 0);
    for site in sites {
        let ids: std::collections::HashSet<String> = site.d.catalog().prepare("SELECT id FROM deks").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let mine: Vec<&(String, String, Dek)> = deks.iter().filter(|(_, id, _)| ids.contains(id)).collect();
        found += mine.len();
        let mut clients = BTreeMap::new();
        for c in ["k0", "k1"] {
            clients.insert(c.to_owned(), site.d.client(c, &format!("password-of-{c}")).await.unwrap());
        }
        let results = futures_util::future::join_all(mine.chunks(mine.len().div_ceil(8).max(1)).map(|chunk| {
            let clients = &clients;
            async move {
                let mut bad = Vec::new();
                for (client, id, dek) in chunk {
                    let c = &clients[client];
                    // A slow KMS after the last fault is not a loss: three tries.
                    let mut outcome = Err(String::new());
                    for attempt in 0..3 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        outcome = match c.recover_dek(id).await {
                            Ok(g) if c.open(&g).ok().as_ref() == Some(dek) => Ok(()),
                            Ok(_) => Err(format!("{}: DEK {id} recovers to another key", site.name)),
                            Err(e) => Err(format!("{}: DEK {id} does not recover: {e}", site.name)),
                        };
                        if outcome.is_ok() {
                            break;
                        }
                    }
                    if let Err(e) = outcome {
                        bad.push(e);
                    }
                }
                (chunk.len(), bad)
            }
        }))
        .await;
        for (n, bad) in results {
            verified += n - bad.len();
            lost.extend(bad);
        }
    }
    if found < deks.len() {
        lost.push(format!("{} DEKs whose issue returned success have no row in any catalog", deks.len() - found));
    }
    verified
}

/// Restore every backup that returned success (three tries each).
fn verify_backups(sites: &[Arc<Site>], backups: &[(String, String, PathBuf)], scratch: &Path, lost: &mut Vec<String>) -> usize {
    let mut verified = 0;
    let mut found = 0;
    for site in sites {
        let jobs: std::collections::HashSet<String> = site.d.catalog().prepare("SELECT id FROM jobs").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        for (client, job, data) in backups.iter().filter(|(_, j, _)| jobs.contains(j)) {
            found += 1;
            let to = scratch.join(format!("final-{job}"));
            let pw = site.d.dir().join(format!("{client}.pw"));
            let mut outcome = Err(String::new());
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(2));
                }
                let _ = std::fs::remove_dir_all(&to);
                let out = site.d.cli_within(&["--json", "restore", job, "--to", to.to_str().unwrap(), "--client", client, "--password-file", pw.to_str().unwrap()], CLI_LIMIT);
                outcome = if !out.status.success() {
                    Err(format!("{}: backup {job} does not restore: {}", site.name, String::from_utf8_lossy(&out.stderr).trim()))
                } else if describe(data) != describe(&to.join("data")) {
                    Err(format!("{}: backup {job} restores differently", site.name))
                } else {
                    Ok(())
                };
                if outcome.is_ok() {
                    break;
                }
            }
            match outcome {
                Ok(()) => verified += 1,
                Err(e) => lost.push(e),
            }
            let _ = std::fs::remove_dir_all(&to);
        }
    }
    if found < backups.len() {
        lost.push(format!("{} backups that returned success have no job row in any catalog", backups.len() - found));
    }
    verified
}

fn summary(report: &Value) -> String {
    let mut s = format!("== soak: {} minutes\n", report["minutes"]);
    for (op, outcomes) in report["counts"].as_object().unwrap() {
        s += &format!("  {op:<18} {}\n", outcomes.as_object().unwrap().iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "));
    }
    s += &format!("  faults: {}\n", report["faults"].as_array().unwrap().iter().map(|f| format!("{:.0}s {}", f["at_s"].as_f64().unwrap(), f["fault"].as_str().unwrap())).collect::<Vec<_>>().join("; "));
    s += &format!("  network HSM: {}\n", report["net_kms"]);
    s += &format!("  verified at the end: {} (lost: {})\n", report["verified"], report["lost"].as_array().unwrap().len());
    s += &format!("  audit verify: {}\n", report["audit_verify"]);
    s += &format!("  unexpected failures: {}\n", report["unexpected_failures"].as_array().unwrap().len());
    s += &format!("  KMIP recovers/s, minute before the kill vs after the restart: {}\n", report["kmip_recover_per_s"]);
    for (p, r) in report["rss"].as_object().unwrap() {
        s += &format!("  RSS {p:<16} {:>7} KiB -> {:>7} KiB (end/first minute {:.3})\n", r["first_kib"], r["end_kib"], r["ratio"].as_f64().unwrap());
    }
    s
}

/// Two panels: RSS (MiB) per process, and p50/p99 latency (ms, log scale)
/// per deployment and operation; fault times as vertical lines.
fn plot(path: &Path, rss: &[(Duration, String, u64)], latency: &BTreeMap<String, Vec<(f64, f64, f64)>>, faults: &[Fault], ended: Duration) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (top, bottom) = root.split_vertically(430);
    let minutes = ended.as_secs_f64() / 60.0;
    let names: Vec<String> = rss.iter().map(|(_, n, _)| n.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let max_mib = rss.iter().map(|r| r.2 as f64 / 1024.0).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("RSS of each keybridge process (MiB)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, 0.0..max_mib)
        .unwrap();
    chart.configure_mesh().x_desc("minutes").draw().unwrap();
    for (i, name) in names.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = rss.iter().filter(|(_, n, _)| n == name).map(|(t, _, k)| (t.as_secs_f64() / 60.0, *k as f64 / 1024.0)).collect();
        chart.draw_series(LineSeries::new(points, color.stroke_width(2))).unwrap().label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    for f in faults {
        let x = f.began.as_secs_f64() / 60.0;
        chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, max_mib)], BLACK.mix(0.3))).unwrap();
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().unwrap();

    let max_ms = latency.values().flatten().map(|p| p.2).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency per bucket: p50 (solid) and p99 (thin), ms", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..minutes, (0.1..max_ms).log_scale())
        .unwrap();
    chart.configure_mesh().x_desc("minutes").draw().unwrap();
    for (i, (name, series)) in latency.iter().filter(|(_, s)| !s.is_empty()).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(series.iter().map(|p| (p.0, p.1.max(0.1))), color.stroke_width(2)))
            .unwrap()
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(LineSeries::new(series.iter().map(|p| (p.0, p.2.max(0.1))), color.stroke_width(1))).unwrap();
    }
    for f in faults {
        let x = f.began.as_secs_f64() / 60.0;
        chart.draw_series(LineSeries::new(vec![(x, 0.1), (x, max_ms)], BLACK.mix(0.3))).unwrap();
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().unwrap();
    root.present().unwrap();
}
