//! Growth (issue 14, item 5): how the cost moves as the work grows. Run
//! only when asked for (`KEYBRIDGE_BENCH_ONLY=growth scripts/bench`):
//! the largest catalog takes many minutes to build. Built-in KMS
//! throughout (RSA in software, on the same cores as everything else).
//!
//! - Recover latency (p50, p99) with 10^3, 10^5 and 10^7 DEKs in the
//!   catalog, each in a catalog of its own. Every DEK row, and its audit
//!   row, is written by `backup::store_new_dek`, the function a DEK issue
//!   runs (a fresh DEK, its envelope bound to its own id, OAEP under the
//!   pool's public KEK, the DEK row and its `dek.issue` audit row committed
//!   by the catalog's group-commit writer); only the seal for the client,
//!   which is never stored, is left out. So every row is one keybridge
//!   wrote, and every DEK recovered in the measurement is a real one: it is
//!   checked against the DEK that was issued. The DEKs recovered are drawn
//!   at random from a uniform sample of the whole catalog, so each recover
//!   looks up a different part of the id index; the sizes are measured in
//!   interleaved slices. `restore::recover_inner` as the service runs it
//!   (client actor, one caller). Target: p50 at 10^7 / p50 at 10^3 <= 1.3.
//!   The catalog's own part, `Catalog::dek` by id, is timed alone too.
//! - `keybridge audit verify` (the binary, on the same catalogs: one
//!   `dek.issue` row per DEK plus the recovers' rows) in rows per second,
//!   first with the catalog's files dropped from the page cache, then
//!   again at once.
//! - DEK issue as served (`backup::issue_dek`) against the number of
//!   concurrent clients, 1, 2, 4 ... 1024, each a registered client of its
//!   own, each level against the issue row's baseline (OAEP encrypt + seal
//!   on every core).
//! - Backup throughput against file count for the same bytes: the client
//!   library's `backup::backup` (the code behind `keybridge backup`, run in
//!   this process after one key derivation) against `keybridge serve` and
//!   `keybridge media-agent` (HTTPS) spawned from the built binary, trees of
//!   10 to 100,000 files holding the same bytes.
//!
//! Each curve is written to `target/bench/growth-*.svg`. Environment:
//! `KEYBRIDGE_BENCH_GROWTH_DEKS` (largest catalog, default 1e7; at least
//! 1e3), `KEYBRIDGE_BENCH_GROWTH_CLIENTS` (most concurrent clients, default
//! 1024), `KEYBRIDGE_BENCH_GROWTH_BACKUP_MIB` (bytes of each backup tree,
//! default 256). Catalogs and trees go under `KEYBRIDGE_BENCH_DIR` and are
//! deleted at the end; the 10^7 catalog takes 7.5 GB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keybridge::flows::{backup, clients, restore};
use keybridge_catalog::audit::Actor;
use keybridge_catalog::ClientRecord;
use keybridge_proto::secret::{Dek, SecretString};
use serde_json::Value;
use tokio::runtime::Runtime;

use super::{actor, compare, cpu_now, encrypt_seal_run, issue_run_as, ready, rig, sanity_round_trip, IssueMode, Report, Rig, Settings, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_keybridge");
const BUILTIN: &str = "[[kms]]\nname = \"kms\"\nkind = \"builtin\"\nroot_key = \"root.key\"\n";
/// Catalog sizes measured, up to the largest asked for.
const CATALOG_SIZES: [u64; 3] = [1_000, 100_000, 10_000_000];
/// Concurrent `store_new_dek` callers filling a catalog: as many as the
/// writer commits at once, so commits are few and large.
const FILL_TASKS: usize = 512;
/// DEKs kept (id and value) from each catalog, drawn uniformly, to recover.
const SAMPLE: usize = 16_384;
/// Timed `Catalog::dek` reads per catalog.
const READS: usize = 20_000;
/// File counts of the backup trees (same bytes in each).
const FILE_COUNTS: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];
/// Rounds per tree (in rotating order); the median counts.
const BACKUP_ROUNDS: usize = 3;

/// The sizes of the growth group.
#[derive(Debug, Clone)]
pub(super) struct Sizes {
    /// DEKs in the largest catalog.
    deks: u64,
    /// Most concurrent clients issuing DEKs.
    clients: usize,
    /// Bytes of each backup tree, MiB.
    backup_mib: u64,
}

impl Sizes {
    pub(super) fn from_env(var: &impl Fn(&str) -> Option<String>) -> Sizes {
        // A count: an integer or "1e7".
        let count = |k: &str, default: u64| -> u64 {
            var(k).map_or(default, |v| {
                let n = v.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 1.0 && n.fract() == 0.0);
                n.unwrap_or_else(|| panic!("{k}={v:?} is not a count (e.g. 100000 or 1e5)")) as u64
            })
        };
        let deks = count("KEYBRIDGE_BENCH_GROWTH_DEKS", 10_000_000);
        assert!(deks >= CATALOG_SIZES[0], "KEYBRIDGE_BENCH_GROWTH_DEKS must be at least {}", CATALOG_SIZES[0]);
        let clients = count("KEYBRIDGE_BENCH_GROWTH_CLIENTS", 1024) as usize;
        let backup_mib = count("KEYBRIDGE_BENCH_GROWTH_BACKUP_MIB", 256);
        Sizes { deks, clients, backup_mib }
    }

    /// 10^3, 10^5, 10^7 up to the largest, and the largest.
    fn catalogs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = CATALOG_SIZES.iter().copied().filter(|n| *n <= self.deks).collect();
        if v.last() != Some(&self.deks) {
            v.push(self.deks);
        }
        v
    }

    /// 1, 2, 4 ... up to the most clients, and the most.
    fn client_levels(&self) -> Vec<usize> {
        let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2)).take_while(|n| *n <= self.clients).collect();
        if v.last() != Some(&self.clients) {
            v.push(self.clients);
        }
        v
    }
}

/// `1e7` for a power of ten, the number otherwise: names keys and labels.
fn size_label(n: u64) -> String {
    let mut p = 0;
    let mut m = n;
    while m >= 10 && m % 10 == 0 {
        m /= 10;
        p += 1;
    }
    if m == 1 && p > 0 {
        format!("1e{p}")
    } else {
        n.to_string()
    }
}

/// SplitMix64: random enough to pick rows, and no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The value at quantile `q` (nearest rank) of `v`, sorted in place.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Where the curves go: `target/bench` (or `$CARGO_TARGET_DIR/bench`).
fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

/// Bytes of the files directly in `dir` (a rig's catalog and its WAL).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum()
}

pub(super) fn bench_growth(rt: &Runtime, s: &Settings, report: &mut Report) {
    let out = out_dir();
    if let Err(e) = std::fs::create_dir_all(&out) {
        report.notes.push(format!("growth: cannot create {} ({e}); no curves written", out.display()));
    }
    issue_vs_clients(rt, s, report, &out);
    backup_vs_files(rt, s, report, &out);
    catalogs(rt, s, report, &out);
}

// ------------------------------------------------------------------ curves

/// One line of a panel: (x, y) points.
#[derive(Debug)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// One chart: a caption, the y axis, its lines; x is logarithmic, y too
/// with `log_y` (latencies, whose p99 can be a hundred times the p50).
#[derive(Debug)]
struct Panel {
    caption: String,
    y_desc: String,
    log_y: bool,
    series: Vec<Series>,
}

/// Draw `panels` one above the other into the SVG `path` (x on a log
/// scale); records the file in the report, or why it failed.
fn plot(report: &mut Report, path: &Path, x_desc: &str, panels: &[Panel]) -> Option<PathBuf> {
    match draw(path, x_desc, panels) {
        Ok(()) => Some(path.to_owned()),
        Err(e) => {
            report.notes.push(format!("growth: could not write {}: {e}", path.display()));
            None
        }
    }
}

fn draw(path: &Path, x_desc: &str, panels: &[Panel]) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (900, 400 * panels.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    for (area, p) in root.split_evenly((panels.len().max(1), 1)).iter().zip(panels) {
        let pts: Vec<Vec<(f64, f64)>> = p.series.iter().map(|s| s.points.iter().copied().filter(|q| q.0 > 0.0 && q.1.is_finite() && (q.1 > 0.0 || !p.log_y)).collect()).collect();
        let (lo, hi) = pts.iter().flatten().fold((f64::MAX, f64::MIN), |(lo, hi), q| (lo.min(q.0), hi.max(q.0)));
        if lo > hi {
            continue;
        }
        let (bottom, top) = pts.iter().flatten().fold((f64::MAX, 0.0f64), |(b, t), q| (b.min(q.1), t.max(q.1)));
        let x_label = |x: &f64| if *x >= 1.0 { size_label(x.round() as u64) } else { format!("{x:.2}") };
        let y_label = |y: &f64| if *y >= 20.0 { format!("{y:.0}") } else if *y >= 1.0 { format!("{y:.1}") } else { format!("{y:.3}") };
        // The same drawing on a linear or a logarithmic y axis (two
        // coordinate types in plotters).
        macro_rules! chart {
            ($y:expr) => {{
                let mut chart = ChartBuilder::on(area)
                    .caption(&p.caption, ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(70)
                    .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), $y)
                    .map_err(|x| e(&x))?;
                chart.configure_mesh().x_desc(x_desc).y_desc(&p.y_desc).x_label_formatter(&x_label).y_label_formatter(&y_label).draw().map_err(|x| e(&x))?;
                for (i, (s, pts)) in p.series.iter().zip(&pts).enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(|x| e(&x))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                    chart.draw_series(pts.iter().map(|q| Circle::new(*q, 3, color.filled()))).map_err(|x| e(&x))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|x| e(&x))?;
            }};
        }
        // Headroom above the highest point for the legend.
        if p.log_y {
            chart!((bottom / 2.0..top * 4.0).log_scale());
        } else {
            chart!(0.0..top.max(1e-9) * 1.35);
        }
    }
    root.present().map_err(|x| e(&x))
}

// ------------------------------------------------------------------ DEK issue vs clients

fn issue_vs_clients(rt: &Runtime, s: &Settings, report: &mut Report, out: &Path) {
    let levels = s.growth.client_levels();
    let most = *levels.last().expect("at least one level");
    eprintln!("[growth] DEK issue vs concurrent clients: built-in KMS, {most} clients registered");
    let rig = rig(rt, s, BUILTIN, true);
    sanity_round_trip(rt, &rig);
    // Each client registered through the service's registration path
    // (`register_client`), all with one password-derived key set: a
    // thousand Argon2id runs would only slow the setup, and what an issue
    // costs does not depend on the client's keys.
    let password = SecretString::from(PASSWORD.to_owned());
    let kdf = keybridge_proto::seal::KdfParams { m_kib: keybridge_proto::seal::KdfParams::MIN_M_KIB, t: 5, ..Default::default() };
    let reg = keybridge_proto::seal::register("growth-client", &password, kdf).expect("registration");
    let clients: Vec<ClientRecord> = rt.block_on(async {
        let mut v = Vec::with_capacity(most);
        for i in 0..most {
            v.push(clients::register_client(&rig.kb, &format!("growth-client-{i:04}"), &reg, &actor()).await.expect("registering a client"));
        }
        v
    });
    let threads = s.cores;
    let less = "[baseline does less: no catalog, no KEK check, no DEK generation]";
    let mut points = Vec::new();
    for &n in &levels {
        eprintln!("[growth] encrypt + seal on {threads} threads vs issue_dek, {n} concurrent clients");
        let (base, kb) = compare(s, &mut |b, d| if b { issue_run_as(rt, &rig, &clients[..n], n, IssueMode::Service, d) } else { encrypt_seal_run(&rig, threads, d) });
        report.row(
            &format!("growth.issue_{n}c_vs_encrypt_seal"),
            &format!("info: DEK issue as served, {n} clients at once, vs encrypt + seal {less}"),
            &format!("encrypt + seal, {threads} threads"),
            base,
            &format!("backup::issue_dek, {n} clients"),
            kb,
            None,
        );
        report.figure(&format!("growth.issue_ops_s_{n}c"), kb.rate(), 1);
        points.push((n as f64, kb.rate(), base.rate()));
    }
    // The machine's load drifts over the minutes this takes (the
    // baseline, which does not depend on the clients, moved by 2.5x in one
    // run): the row and the lower curve compare each level with its own
    // interleaved baseline.
    let share = |p: &(f64, f64, f64)| p.1 / p.2;
    let best = points.iter().map(share).fold(0.0, f64::max);
    let last = points.last().map_or(f64::NAN, share);
    let curve = plot(
        report,
        &out.join("growth-issue.svg"),
        "concurrent clients",
        &[
            Panel {
                caption: "DEK issue as served (built-in KMS) vs concurrent clients".into(),
                y_desc: "DEKs/s".into(),
                log_y: false,
                series: vec![
                    Series { name: "backup::issue_dek".into(), points: points.iter().map(|p| (p.0, p.1)).collect() },
                    Series { name: format!("baseline: OAEP encrypt + seal, {threads} threads"), points: points.iter().map(|p| (p.0, p.2)).collect() },
                ],
            },
            Panel {
                caption: "the same as a share of the baseline measured with it".into(),
                y_desc: "issue_dek / baseline".into(),
                log_y: false,
                series: vec![Series { name: "backup::issue_dek / (encrypt + seal)".into(), points: points.iter().map(|p| (p.0, share(p))).collect() }],
            },
        ],
    );
    let text = points.iter().map(|p| format!("{}: {:.0} ({:.2})", p.0, p.1, share(p))).collect::<Vec<_>>().join("  ");
    report.growth_row(
        &format!("growth.issue_{most}c_vs_best"),
        &format!("DEK issue, DEKs/s (share of baseline) by clients ({most} vs best share)"),
        text,
        last / best,
        None,
        curve,
    );
}

// ------------------------------------------------------------------ backup vs file count

/// `keybridge serve` and `keybridge media-agent` (HTTPS) on loopback in a
/// temporary directory, built-in KMS, pool "bench", client "bench"; the
/// processes are killed when this is dropped.
struct Deployment {
    dir: tempfile::TempDir,
    procs: Vec<Child>,
    url: String,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Deployment {
    fn start(rt: &Runtime, s: &Settings) -> Deployment {
        let dir = tempfile::Builder::new().prefix("keybridge-bench-deploy-").tempdir_in(&s.dir).expect("tempdir");
        let (port, agent_port) = (free_port(), free_port());
        let mut d = Deployment { dir, procs: Vec::new(), url: format!("https://127.0.0.1:{port}") };
        d.run(&["init"]);
        let config = d.dir.path().join("keybridge.toml");
        let text = std::fs::read_to_string(&config).expect("reading keybridge.toml");
        let text = text.replace("127.0.0.1:8443", &format!("127.0.0.1:{port}")).replace("127.0.0.1:8444", &format!("127.0.0.1:{agent_port}"));
        std::fs::write(&config, text).expect("writing keybridge.toml");
        std::fs::write(d.dir.path().join("password"), format!("{PASSWORD}\n")).expect("password file");
        d.run(&["pool", "create", "bench", "--kms", "builtin"]);
        d.run(&["client", "add", "bench", "--password-file", "password"]);
        let listen = format!("127.0.0.1:{agent_port}");
        d.spawn(&["media-agent", "--store", "store", "--listen", &listen, "--cert", "service.crt", "--key", "service.key", "--token-key", "media-agent.key"], "agent.log");
        d.spawn(&["serve"], "service.log");
        let http = keybridge_client::http_client(Some(&d.ca())).expect("HTTP client");
        rt.block_on(async {
            for (url, log) in [(format!("https://127.0.0.1:{agent_port}/healthz"), "agent.log"), (format!("{}/healthz", d.url), "service.log")] {
                let mut up = false;
                for _ in 0..300 {
                    if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                        up = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(up, "{url} did not come up: {}", std::fs::read_to_string(d.dir.path().join(log)).unwrap_or_default());
            }
        });
        d
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("service.crt")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path()).args(args).env("KEYBRIDGE_CONFIG", self.dir.path().join("keybridge.toml"));
        cmd
    }

    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap_or_else(|e| panic!("running keybridge {args:?}: {e}"));
        assert!(out.status.success(), "keybridge {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn spawn(&mut self, args: &[&str], log: &str) {
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log file");
        let child = self.command(args).stdout(Stdio::null()).stderr(log).spawn().unwrap_or_else(|e| panic!("starting keybridge {args:?}: {e}"));
        self.procs.push(child);
    }
}

/// A tree of `files` files holding `bytes` between them (a directory per
/// 1,000 files), contents from a pseudo-random 1 MiB block.
fn make_tree(root: &Path, files: usize, bytes: u64, block: &[u8]) {
    use std::io::Write;
    let each = bytes / files as u64;
    let mut offset = 0usize;
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).expect("tree directory");
        }
        let mut left = if i == 0 { each + bytes % files as u64 } else { each } as usize;
        let mut f = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(dir.join(format!("f{i:06}"))).expect("tree file"));
        while left > 0 {
            let n = left.min(block.len() - offset);
            f.write_all(&block[offset..offset + n]).expect("writing tree file");
            left -= n;
            offset = (offset + n) % block.len();
        }
        f.flush().expect("writing tree file");
    }
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn backup_vs_files(rt: &Runtime, s: &Settings, report: &mut Report, out: &Path) {
    let mib = s.growth.backup_mib;
    let bytes = mib << 20;
    eprintln!("[growth] backup throughput vs file count: {mib} MiB in each tree; keybridge serve + media-agent (HTTPS), built-in KMS");
    let d = Deployment::start(rt, s);
    let mut rng = Rng::seeded(7);
    let block: Vec<u8> = (0..(1 << 20) / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
    let trees: Vec<(usize, PathBuf)> = FILE_COUNTS
        .iter()
        .map(|&n| {
            let t0 = Instant::now();
            let root = d.dir.path().join(format!("tree-{n}"));
            make_tree(&root, n, bytes, &block);
            eprintln!("[growth] made a tree of {n} files in {:.1} s", t0.elapsed().as_secs_f64());
            (n, root)
        })
        .collect();
    sync();
    let svc = rt.block_on(keybridge_client::ServiceClient::connect(&keybridge_client::ClientOptions {
        service: d.url.clone(),
        ca: Some(d.ca()),
        client: "bench".into(),
        password: SecretString::from(PASSWORD.to_owned()),
    }))
    .expect("connecting to the service");
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); trees.len()];
    let mut archive = vec![0u64; trees.len()];
    // Warm-up, not counted: the first backup after the trees were written
    // ran 1.5-2.5x slower than the same one later (connections, the
    // agent's first writes, writeback).
    let warm = rt.block_on(keybridge_client::backup::backup(&svc, "bench", std::slice::from_ref(&trees[0].1), None)).expect("backup");
    let _ = std::fs::remove_dir_all(d.dir.path().join("store/jobs").join(&warm.job_id));
    for r in 0..BACKUP_ROUNDS {
        for k in 0..trees.len() {
            // Rotating order: each tree runs early and late.
            let j = (k + r) % trees.len();
            let (n, root) = &trees[j];
            sync();
            let t0 = Instant::now();
            let done = rt.block_on(keybridge_client::backup::backup(&svc, "bench", std::slice::from_ref(root), None)).expect("backup");
            let t = t0.elapsed().as_secs_f64();
            assert_eq!(done.files, *n as u64 + (*n as u64).div_ceil(1000) + 1, "the backup archived another tree");
            secs[j].push(t);
            archive[j] = done.plain_bytes;
            let _ = std::fs::remove_dir_all(d.dir.path().join("store/jobs").join(&done.job_id));
            eprintln!("[growth] round {}: {n} files, {mib} MiB: {t:.2} s ({:.0} MiB/s)", r + 1, mib as f64 / t);
        }
    }
    drop(svc);
    drop(d);
    let rates: Vec<(usize, f64)> = trees.iter().zip(&mut secs).map(|((n, _), t)| (*n, mib as f64 / quantile(t, 0.5))).collect();
    for (n, rate) in &rates {
        report.figure(&format!("growth.backup_mib_s_{n}_files"), *rate, 1);
    }
    let curve = plot(
        report,
        &out.join("growth-backup.svg"),
        "files in the tree (same bytes)",
        &[Panel {
            caption: format!("backup throughput, {mib} MiB tree, HTTPS MediaAgent, median of {BACKUP_ROUNDS}"),
            y_desc: "MiB/s of file data".into(),
            log_y: false,
            series: vec![Series { name: "keybridge_client::backup::backup".into(), points: rates.iter().map(|(n, r)| (*n as f64, *r)).collect() }],
        }],
    );
    let (first, last) = (rates[0], rates[rates.len() - 1]);
    let text = rates.iter().map(|(n, r)| format!("{n}: {r:.0}")).collect::<Vec<_>>().join("  ");
    report.growth_row(
        &format!("growth.backup_{}_vs_{}_files", last.0, first.0),
        &format!("backup MiB/s by files in {mib} MiB ({} vs {} files)", last.0, first.0),
        text,
        last.1 / first.1,
        None,
        curve,
    );
    report.notes.push(format!(
        "growth backup: the client library's backup (survey, job start, tar + stream encryption, HTTPS upload to the MediaAgent, completion) in this process, against keybridge serve and media-agent spawned from the built binary; one key derivation before the rounds. Each tree holds {mib} MiB of file data ({}); the tar stream grows with the headers and padding: {}. Median of {BACKUP_ROUNDS} rounds in rotating order after one warm-up backup, `sync` before each; files in the page cache",
        FILE_COUNTS.iter().map(|n| format!("{n} files of {} B", bytes / *n as u64)).collect::<Vec<_>>().join(", "),
        trees.iter().zip(&archive).map(|((n, _), a)| format!("{n} files {:.0} MiB", *a as f64 / (1 << 20) as f64)).collect::<Vec<_>>().join(", ")
    ));
}

// ------------------------------------------------------------------ catalogs: recover, audit verify

/// A filled catalog: its rig, a uniform sample of its DEKs (id and the DEK
/// that was issued), and what building it took.
struct Catalog {
    deks: u64,
    rig: Rig,
    sample: Arc<Vec<(String, Dek)>>,
    build: Duration,
    bytes: u64,
    /// CPU per DEK while building, µs: the whole process, and the catalog
    /// writer thread's part.
    cpu_us: (f64, f64),
}

/// Fill a fresh catalog with `n` DEKs through `backup::store_new_dek`
/// (each its own DEK, envelope, OAEP ciphertext, row and audit row),
/// `FILL_TASKS` at a time, keeping a uniform sample of about `SAMPLE`.
fn fill(rt: &Runtime, s: &Settings, n: u64) -> Catalog {
    let rig = rig(rt, s, BUILTIN, true);
    let next = Arc::new(AtomicU64::new(0));
    let sample = Arc::new(Mutex::new(Vec::with_capacity(SAMPLE * 2)));
    let keep = (SAMPLE as f64 / n as f64).min(1.0);
    let shared = Arc::new((rig.kb.clone(), rig.pool.clone(), rig.public.clone(), rig.client.clone()));
    let start = Instant::now();
    let cpu0 = cpu_now();
    let step = (n / 20).max(1);
    rt.block_on(async {
        let tasks: Vec<_> = (0..FILL_TASKS)
            .map(|t| {
                let (shared, next, sample) = (shared.clone(), next.clone(), sample.clone());
                tokio::spawn(async move {
                    let (kb, pool, public, client) = &*shared;
                    // As the service issues: the client is the actor.
                    let actor = Actor::Client(client.name.clone());
                    let mut rng = Rng::seeded(t as u64);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let stored = backup::store_new_dek(kb, pool, public, client, &actor).await.expect("storing a DEK");
                        if rng.unit() < keep {
                            sample.lock().unwrap_or_else(|e| e.into_inner()).push((stored.dek_id, stored.dek));
                        }
                        if (i + 1) % step == 0 && n >= 1_000_000 {
                            let el = start.elapsed().as_secs_f64();
                            let rate = (i + 1) as f64 / el;
                            eprintln!("[growth]   {} of {} DEKs, {rate:.0}/s, {:.0} s to go", i + 1, size_label(n), (n - i - 1) as f64 / rate);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("fill task");
        }
        rig.kb.catalog().flush().await.expect("flushing the catalog");
    });
    let build = start.elapsed();
    let cpu1 = cpu_now();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let cpu_us = (per(cpu1.total.saturating_sub(cpu0.total)), per(cpu1.writer.saturating_sub(cpu0.writer)));
    let stored = rt.block_on(rig.kb.catalog().count_deks(rig.pool.id)).expect("counting DEKs");
    assert_eq!(stored, n, "the catalog holds another number of DEKs than were issued");
    drop(shared);
    let sample = Arc::new(std::mem::take(&mut *sample.lock().unwrap_or_else(|e| e.into_inner())));
    let bytes = disk_bytes(rig.dir.path());
    Catalog { deks: n, rig, sample, build, bytes, cpu_us }
}

/// Recover DEKs drawn at random from `c.sample` for `d`, one at a time, as
/// the service does (client actor); each latency in ms. Every DEK must be
/// the one that was issued.
fn recover_latencies(rt: &Runtime, c: &Catalog, rng: &mut Rng, d: Duration) -> Vec<f64> {
    let picks: Vec<usize> = (0..(d.as_secs_f64() * 5_000.0) as usize + 16).map(|_| rng.below(c.sample.len())).collect();
    rt.block_on(async {
        let (kb, client, sample) = (c.rig.kb.clone(), c.rig.client.name.clone(), c.sample.clone());
        tokio::spawn(async move {
            let actor = Actor::Client(client.clone());
            let deadline = Instant::now() + d;
            let mut out = Vec::new();
            for (id, issued) in picks.into_iter().map(|i| &sample[i]) {
                if Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let (dek, _) = restore::recover_inner(&kb, id, &client, &actor).await.expect("recover");
                out.push(t0.elapsed().as_secs_f64() * 1e3);
                assert!(dek == *issued, "DEK {id} recovered as another key than was issued");
            }
            out
        })
        .await
        .expect("recover task")
    })
}

/// `Catalog::dek` by random ids from the sample, one at a time; each in µs.
fn read_latencies(c: &Catalog, rng: &mut Rng, reads: usize) -> Vec<f64> {
    let catalog = c.rig.kb.catalog().clone();
    (0..reads)
        .map(|_| {
            let id = &c.sample[rng.below(c.sample.len())].0;
            let t0 = Instant::now();
            let row = ready(catalog.dek(id)).expect("dek row");
            let t = t0.elapsed().as_secs_f64() * 1e6;
            std::hint::black_box(row);
            t
        })
        .collect()
}

/// `keybridge --json audit verify` on the catalog: rows and seconds.
fn audit_verify(rt: &Runtime, c: &Catalog) -> (u64, f64) {
    rt.block_on(c.rig.kb.catalog().flush()).expect("flushing the catalog");
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(c.rig.dir.path().join("keybridge.toml"))
        .args(["--json", "audit", "verify"])
        .output()
        .expect("running keybridge audit verify");
    let secs = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "keybridge audit verify failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit verify --json output");
    assert_eq!(v["ok"], Value::Bool(true), "audit verify: {v}");
    (v["rows"].as_u64().expect("rows"), secs)
}

/// Bytes this process has had fetched from storage so far
/// (`/proc/self/io`): what the page cache did not hold.
fn disk_read_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("read_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Drop a catalog's files, and only them, from the OS page cache: `sync`,
/// then `dd iflag=nocache count=0` on each (advice to drop the file's
/// clean pages). False if that could not be done.
fn evict(dir: &Path) -> bool {
    sync();
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("keybridge.db")));
    let mut ok = true;
    for f in files {
        let done = Command::new("dd").arg(format!("if={}", f.display())).args(["iflag=nocache", "count=0", "status=none"]).status();
        ok &= done.is_ok_and(|s| s.success());
    }
    ok
}

fn catalogs(rt: &Runtime, s: &Settings, report: &mut Report, out: &Path) {
    let sizes = s.growth.catalogs();
    let mut cats = Vec::new();
    for &n in &sizes {
        eprintln!("[growth] building a catalog of {} DEKs (backup::store_new_dek, {FILL_TASKS} at a time)", size_label(n));
        let c = fill(rt, s, n);
        eprintln!(
            "[growth] {} DEKs in {:.1} s ({:.0} DEKs/s), {:.0} MiB on disk; CPU per DEK {:.0} us, of it the catalog writer {:.0} us",
            size_label(n),
            c.build.as_secs_f64(),
            n as f64 / c.build.as_secs_f64(),
            c.bytes as f64 / (1 << 20) as f64,
            c.cpu_us.0,
            c.cpu_us.1
        );
        cats.push(c);
    }
    let top = cats.last().expect("a catalog");
    let (lo, hi) = (size_label(cats[0].deks), size_label(top.deks));
    report.figure(&format!("growth.catalog_build_s_{hi}"), top.build.as_secs_f64(), 1);
    report.figure(&format!("growth.catalog_mib_{hi}"), top.bytes as f64 / (1 << 20) as f64, 0);
    let plain = [0x5au8; super::ENVELOPE_LEN];
    let oaep_us = super::micro_cpu(Duration::from_millis(300), || drop(top.rig.public.encrypt(top.rig.pool.oaep_hash, &plain).expect("encrypt")));
    report.notes.push(format!(
        "growth catalogs: every DEK row and its dek.issue audit row written by backup::store_new_dek ({FILL_TASKS} concurrent callers, the group-commit writer's transactions; one OAEP encryption alone takes {oaep_us:.0} us of CPU); {}",
        cats.iter()
            .map(|c| {
                format!(
                    "{} DEKs built in {:.1} s ({:.0}/s, {:.0} us CPU per DEK of which the writer {:.0}), {:.0} MiB on disk",
                    size_label(c.deks),
                    c.build.as_secs_f64(),
                    c.deks as f64 / c.build.as_secs_f64(),
                    c.cpu_us.0,
                    c.cpu_us.1,
                    c.bytes as f64 / (1 << 20) as f64
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));

    // Recover latency, the sizes interleaved in slices; 4x the usual time
    // per side, for enough samples at p99 (a software recover takes
    // milliseconds).
    let mut rng = Rng::seeded(11);
    let slice = Duration::from_secs_f64(4.0 * s.secs / s.slices as f64);
    eprintln!("[growth] recover latency at {}: {} slices of {:.2} s each, interleaved", sizes.iter().map(|n| size_label(*n)).collect::<Vec<_>>().join(", "), s.slices, slice.as_secs_f64());
    for c in &cats {
        recover_latencies(rt, c, &mut rng, Duration::from_millis(300));
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); cats.len()];
    let mut reads: Vec<Vec<f64>> = vec![Vec::new(); cats.len()];
    let mut from_disk = vec![0u64; cats.len()];
    for i in 0..s.slices {
        let order: Vec<usize> = if i % 2 == 0 { (0..cats.len()).collect() } else { (0..cats.len()).rev().collect() };
        for j in order {
            let before = disk_read_bytes();
            lat[j].extend(recover_latencies(rt, &cats[j], &mut rng, slice));
            reads[j].extend(read_latencies(&cats[j], &mut rng, READS / s.slices));
            from_disk[j] += disk_read_bytes().saturating_sub(before);
        }
    }
    let stats = |v: &mut Vec<Vec<f64>>| -> Vec<(f64, f64)> { v.iter_mut().map(|x| (quantile(x, 0.5), quantile(x, 0.99))).collect() };
    let (rec, rd) = (stats(&mut lat), stats(&mut reads));
    let points = |st: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64, unit: &str| {
        cats.iter().zip(st).map(|(c, p)| format!("{}: {:.2} {unit}", size_label(c.deks), pick(p))).collect::<Vec<_>>().join("  ")
    };
    for (c, (r, d)) in cats.iter().zip(rec.iter().zip(&rd)) {
        let l = size_label(c.deks);
        report.figure(&format!("growth.recover_p50_ms_{l}"), r.0, 3);
        report.figure(&format!("growth.recover_p99_ms_{l}"), r.1, 3);
        report.figure(&format!("growth.dek_read_p50_us_{l}"), d.0, 2);
        report.figure(&format!("growth.dek_read_p99_us_{l}"), d.1, 2);
    }
    for (c, b) in cats.iter().zip(&from_disk) {
        report.figure(&format!("growth.recover_disk_read_mib_{}", size_label(c.deks)), *b as f64 / (1 << 20) as f64, 1);
    }
    let curve = plot(
        report,
        &out.join("growth-recover.svg"),
        "DEKs in the catalog",
        &[
            Panel {
                caption: "DEK recover latency (restore::recover_inner, built-in KMS, 1 caller)".into(),
                y_desc: "ms (log)".into(),
                log_y: true,
                series: vec![
                    Series { name: "p50".into(), points: cats.iter().zip(&rec).map(|(c, p)| (c.deks as f64, p.0)).collect() },
                    Series { name: "p99".into(), points: cats.iter().zip(&rec).map(|(c, p)| (c.deks as f64, p.1)).collect() },
                ],
            },
            Panel {
                caption: "the catalog's part: Catalog::dek by id".into(),
                y_desc: "us (log)".into(),
                log_y: true,
                series: vec![
                    Series { name: "p50".into(), points: cats.iter().zip(&rd).map(|(c, p)| (c.deks as f64, p.0)).collect() },
                    Series { name: "p99".into(), points: cats.iter().zip(&rd).map(|(c, p)| (c.deks as f64, p.1)).collect() },
                ],
            },
        ],
    );
    let (first, last) = (rec[0], rec[rec.len() - 1]);
    report.growth_row(&format!("growth.recover_p50_{hi}_vs_{lo}"), &format!("recover p50, ms, by DEKs in catalog ({hi} vs {lo})"), points(&rec, |p| p.0, "ms"), last.0 / first.0, Some(1.3), curve.clone());
    report.growth_row(&format!("growth.recover_p99_{hi}_vs_{lo}"), &format!("recover p99, ms, by DEKs in catalog ({hi} vs {lo})"), points(&rec, |p| p.1, "ms"), last.1 / first.1, None, curve.clone());
    let (first, last) = (rd[0], rd[rd.len() - 1]);
    report.growth_row(&format!("growth.dek_read_p50_{hi}_vs_{lo}"), &format!("info: Catalog::dek p50, us ({hi} vs {lo})"), points(&rd, |p| p.0, "us"), last.0 / first.0, None, curve.clone());
    report.growth_row(&format!("growth.dek_read_p99_{hi}_vs_{lo}"), &format!("info: Catalog::dek p99, us ({hi} vs {lo})"), points(&rd, |p| p.1, "us"), last.1 / first.1, None, curve);
    report.notes.push(format!(
        "growth recover: restore::recover_inner as the service runs it (client actor; reads, the built-in KMS's software RSA-OAEP decrypt with the KEK cached, the durable 'started' audit row, the binding check, the seal), one caller, DEKs drawn at random from a uniform sample of {} per catalog, each checked against the DEK issued; samples per size: {}. The catalogs are measured as the build left them in the OS page cache (the 10^7 one is about 7.5 GB; the machine's other work decides how much of it stays): read from disk during each size's slices (/proc/self/io): {}",
        SAMPLE,
        lat.iter().map(|v| v.len().to_string()).collect::<Vec<_>>().join(", "),
        cats.iter().zip(&from_disk).map(|(c, b)| format!("{} {:.1} MiB", size_label(c.deks), *b as f64 / (1 << 20) as f64)).collect::<Vec<_>>().join(", ")
    ));

    // Audit verify: the binary, on each catalog; first with the catalog's
    // files dropped from the page cache (as an operator's occasional check
    // finds them), then again at once (cached, as far as memory allows).
    let mut verified = Vec::new();
    let mut evicted = true;
    for c in &cats {
        eprintln!("[growth] keybridge audit verify on the {} catalog, evicted from the page cache, then again", size_label(c.deks));
        evicted &= evict(c.rig.dir.path());
        let (rows, cold) = audit_verify(rt, c);
        let (again, warm) = audit_verify(rt, c);
        assert_eq!(rows, again, "the audit log grew between two verifies");
        eprintln!("[growth]   {rows} rows in {cold:.2} s ({:.0} rows/s), again {warm:.2} s ({:.0} rows/s)", rows as f64 / cold, rows as f64 / warm);
        verified.push((rows, cold, warm));
    }
    for (c, (rows, cold, warm)) in cats.iter().zip(&verified) {
        let l = size_label(c.deks);
        report.figure(&format!("growth.audit_verify_rows_s_cold_{l}"), *rows as f64 / cold, 0);
        report.figure(&format!("growth.audit_verify_rows_s_warm_{l}"), *rows as f64 / warm, 0);
    }
    let cold_label = if evicted { "evicted from the page cache first" } else { "as found (could not evict)" };
    let curve = plot(
        report,
        &out.join("growth-audit-verify.svg"),
        "audit rows",
        &[Panel {
            caption: "keybridge audit verify (whole chain, one process)".into(),
            y_desc: "rows/s".into(),
            log_y: false,
            series: vec![
                Series { name: format!("catalog {cold_label}"), points: verified.iter().map(|(r, t, _)| (*r as f64, *r as f64 / t)).collect() },
                Series { name: "again at once".into(), points: verified.iter().map(|(r, _, t)| (*r as f64, *r as f64 / t)).collect() },
            ],
        }],
    );
    // Against the middle size: at 10^3 rows the process start dominates.
    let base = if verified.len() > 1 { verified.len() - 2 } else { 0 };
    let mid = size_label(cats[base].deks);
    let (middle, largest) = (verified[base], verified[verified.len() - 1]);
    let rate = |rows: u64, t: f64| rows as f64 / t;
    let text = |pick: fn(&(u64, f64, f64)) -> f64| verified.iter().map(|v| format!("{} rows: {:.0}/s ({:.2} s)", v.0, v.0 as f64 / pick(v), pick(v))).collect::<Vec<_>>().join("  ");
    report.growth_row(
        &format!("growth.audit_verify_cold_{hi}_vs_{mid}"),
        &format!("audit verify rows/s, {cold_label} ({hi} vs {mid} DEKs)"),
        text(|v| v.1),
        rate(largest.0, largest.1) / rate(middle.0, middle.1),
        None,
        curve.clone(),
    );
    report.growth_row(
        &format!("growth.audit_verify_warm_{hi}_vs_{mid}"),
        &format!("audit verify rows/s, again at once ({hi} vs {mid} DEKs)"),
        text(|v| v.2),
        rate(largest.0, largest.2) / rate(middle.0, middle.2),
        None,
        curve,
    );
    report.notes.push(format!(
        "growth audit verify: `keybridge --json audit verify` (the binary: process start, catalog open, the whole chain read in one snapshot and every row's SHA-256 recomputed) on each catalog after the recovers, first with the catalog's files {cold_label}, then again at once; rows = one dek.issue per DEK, the pool and client rows, and two per recover. At {} rows: {:.0} rows/s, then {:.0} rows/s",
        largest.0,
        rate(largest.0, largest.1),
        rate(largest.0, largest.2)
    ));
    drop(cats);
}
