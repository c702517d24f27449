//! The `keybridge` command line. Every command prints one JSON object on
//! stdout with `--json`; exit codes are listed in README.md and come from
//! [`crate::Error::exit_code`].

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

mod net;

use keybridge_catalog::audit::Actor;
use keybridge_kms::ProbeStatus;
use crate::config::{Config, DEFAULT_CONFIG};
use crate::flows::{backup, clients, escrow, pool_creation, pool_lifecycle, restore};
use keybridge_proto::secret::read_secret_file;
use keybridge_proto::seal;
use crate::{Error, Keybridge, Result};

/// keybridge: hardware-backed keys for backup systems.
#[derive(Debug, Parser)]
#[command(name = "keybridge", version, about)]
pub struct Cli {
    /// Configuration file (default: ./keybridge.toml).
    #[arg(long, global = true, env = "KEYBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the catalog and built-in root keys (and a default config if none exists).
    Init,
    /// Key-management systems.
    Kms {
        #[command(subcommand)]
        command: KmsCommand,
    },
    /// Storage pools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Data-encryption keys.
    Dek {
        #[command(subcommand)]
        command: DekCommand,
    },
    /// The audit log: every key operation, hash-chained in the catalog.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The catalog itself: online backup, restore from a backup (docs/operations.md).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// KMIP wire format tools.
    Ttlv {
        #[command(subcommand)]
        command: TtlvCommand,
    },
    /// Run the adapter service (HTTPS API; needs a `[service]` section).
    Serve,
    /// Run a MediaAgent: receives encrypted backup streams, never a key.
    MediaAgent(net::MediaAgentArgs),
    /// Back up files and directories: archive, encrypt with a fresh DEK, stream to the MediaAgent.
    Backup(net::BackupArgs),
    /// Restore a backup job into a directory.
    Restore(net::RestoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum TtlvCommand {
    /// Decode a TTLV message (hex or binary, from FILE or stdin) into a
    /// readable tree with tag, type and enumeration names.
    Decode {
        /// File to read; `-` or nothing for stdin.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write a consistent copy of the catalog to FILE while it is in use.
    ///
    /// SQLite's online backup API: the service goes on. The copy is made
    /// 0600, checked (integrity, schema version, audit chain), synced and
    /// renamed into place; the backup is recorded in the live audit log.
    /// Store it off this machine and never with the built-in KMS's root
    /// key; a recovery also needs the KMS keys and the configuration (see
    /// docs/operations.md).
    Backup {
        /// Where to write the copy.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Put the catalog back from a copy made by `catalog backup`.
    ///
    /// The catalog named by the configuration is replaced only after the
    /// copy passed the checks (integrity, foreign keys, schema version,
    /// audit chain); nothing may have the catalog open. The restore is
    /// recorded in the restored audit log.
    Restore {
        /// The copy to restore.
        file: PathBuf,
        /// Replace an existing catalog (moved aside as NAME.replaced-TIME,
        /// not deleted). A catalog in use is refused even so.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit hash chain: OK with the row count and the head hash,
    /// or the first edited, missing or reordered row (exit code 6).
    ///
    /// Rows removed at the END of the log leave a shorter valid chain and
    /// cannot be detected from inside the catalog: record the head hash
    /// somewhere else and compare it (or pass it to --expect-head).
    Verify {
        /// A head hash recorded earlier (hex, as printed by verify): fail
        /// unless the chain still contains that row.
        #[arg(long, value_name = "HEX")]
        expect_head: Option<String>,
    },
    /// Show the most recent audit rows, oldest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Check health and capabilities of one or all KMS entries.
    Probe { name: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool: master key in the KMS, KEK pair, wrapped KEK in the catalog.
    Create {
        name: String,
        #[arg(long)]
        kms: String,
        #[arg(long, default_value_t = 3072)]
        kek_bits: usize,
        /// Adopt an existing master key (PKCS#11 URI) instead of creating one.
        #[arg(long)]
        master_key: Option<String>,
    },
    /// List pools.
    List,
    /// Show one pool, with its KEK generations.
    Show { name: String },
    /// Give a pool its next KEK generation (wrapped under the same master
    /// key): new DEKs use it; older DEKs keep, and restore under, theirs.
    Rekey {
        name: String,
        /// Size of the new KEK (default: that of the newest generation).
        #[arg(long)]
        kek_bits: Option<usize>,
        /// Make the new generation under a new master key in this KMS
        /// (new DEKs go there; older generations stay where they are).
        #[arg(long)]
        kms: Option<String>,
    },
    /// Give pools new master keys (one in each KMS that wraps them) and
    /// re-wrap their KEKs under them; the old keys become deactivated.
    ///
    /// A pool that fails does not stop the others: each pool's outcome is
    /// reported, and if any failed the command exits with the first
    /// failure's code.
    Rotate {
        /// The pools to rotate, one after another.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Rotate every pool.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Wrap a pool's KEKs under a new master key in another KMS too.
    Wrap {
        name: String,
        #[arg(long)]
        kms: String,
    },
    /// Remove a pool's wrappings in one KMS (refused for the last one).
    Unwrap {
        name: String,
        #[arg(long)]
        kms: String,
    },
    /// Move a pool to another KMS: wrap it there, then unwrap it elsewhere.
    Migrate {
        name: String,
        #[arg(long)]
        to: String,
    },
    /// Escrow: write every KEK generation of a pool to a file under a
    /// passphrase (Argon2id, AES-256-GCM; docs/escrow-format.md).
    Export {
        name: String,
        /// The passphrase, first line of this file (at least 12 characters).
        #[arg(long)]
        passphrase_file: PathBuf,
        /// The escrow file to write (never over an existing one).
        #[arg(long)]
        out: PathBuf,
    },
    /// Escrow: wrap the KEK generations of an escrow file under a new
    /// master key in a KMS, for the pool of the same name.
    Import {
        file: PathBuf,
        #[arg(long)]
        passphrase_file: PathBuf,
        #[arg(long)]
        kms: String,
    },
    /// Destroy the deactivated master keys of a pool that nothing uses.
    RetireKeys { name: String },
    /// Finish or roll back a pool's unfinished change whose process is
    /// gone (what the next command on the pool does first).
    ///
    /// A change owned by a process on another host (a container recreated
    /// under a new host name, a machine gone) is never taken for dead: name
    /// that owner with --take-over, exactly as `pool show` gives it, and it
    /// is taken over here (audited as pool.take_over), then finished or
    /// rolled back. Refused when the owner is a process of this host that
    /// still runs.
    Resume {
        name: String,
        /// The change's owner, HOST:PID:START, as `pool show` names it.
        #[arg(long, value_name = "HOST:PID:START")]
        take_over: Option<String>,
    },
    /// Set how often `keybridge serve` rotates a pool's master keys.
    Schedule {
        name: String,
        /// Days between rotations (0: never).
        #[arg(long, required_unless_present = "default", conflicts_with = "default")]
        rotation_days: Option<u32>,
        /// Follow `[lifecycle] rotation_days` of the configuration.
        #[arg(long)]
        default: bool,
    },
    /// Destroy every master key of a pool: nothing of it can be restored.
    Shred {
        name: String,
        /// The pool's name again, to confirm.
        #[arg(long, value_name = "POOL")]
        yes_destroy: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client with its network password (read from a file).
    Add {
        name: String,
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DekCommand {
    /// Issue a new DEK for a backup.
    Issue {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        client: String,
    },
    /// Recover a DEK for a restore.
    Recover {
        dek_id: String,
        #[arg(long)]
        client: String,
    },
    /// Client side: open a sealed DEK read from stdin; prints the DEK as hex.
    Open {
        #[arg(long)]
        client: String,
        #[arg(long)]
        password_file: PathBuf,
    },
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

async fn open(cli: &Cli) -> Result<Keybridge> {
    Keybridge::open(Config::load(&config_path(cli))?)
}

fn pool_json(p: &keybridge_catalog::PoolRecord, deks: Option<u64>) -> Value {
    let mut v = p.to_json();
    if let Some(n) = deks {
        v["deks"] = json!(n);
    }
    v
}

fn lifecycle_out(r: pool_lifecycle::ChangeReport) -> Result<(Value, String)> {
    let text = r.to_text();
    Ok((serde_json::to_value(&r).unwrap_or_default(), text))
}

/// A command that failed, with what it did before or besides failing (`pool
/// rotate` of several pools where some failed): that is printed as well.
struct Failed {
    error: Error,
    done: Option<(Value, String)>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed { error, done: None }
    }
}

/// Run one command; returns the JSON result and a text rendering, or the
/// error and what was done anyway.
async fn run_partial(cli: &Cli) -> std::result::Result<(Value, String), Failed> {
    match &cli.command {
        Command::Pool { command: PoolCommand::Rotate { names, all } } => rotate(&open(cli).await?, names, *all).await,
        _ => Ok(run(cli).await?),
    }
}

/// `pool rotate`: every pool named (or all), one after another; a pool
/// that fails does not stop the others. Each pool's outcome is reported;
/// if any failed, the command fails with the first failure's exit code.
async fn rotate(kb: &Keybridge, names: &[String], all: bool) -> std::result::Result<(Value, String), Failed> {
    let names = if all { kb.catalog().list_pools().await?.into_iter().map(|p| p.name).collect() } else { names.to_vec() };
    let (mut rotated, mut failed) = (Vec::new(), Vec::new());
    let mut text = String::new();
    let mut first = None;
    for name in &names {
        match pool_lifecycle::rotate(kb, name, &Actor::local_user()).await {
            Ok(r) => {
                text += &r.to_text();
                rotated.push(r);
            }
            Err(e) => {
                text += &format!("pool '{name}': rotation failed: {e}\n");
                failed.push(json!({ "pool": name, "error": error_json(&e) }));
                first.get_or_insert(e);
            }
        }
    }
    let value = json!({ "rotated": rotated, "failed": failed });
    match first {
        None => Ok((value, text)),
        Some(error) => {
            text += &format!("rotated {} of {} pool(s); {} failed (above)\n", rotated.len(), names.len(), failed.len());
            Err(Failed { error, done: Some((value, text)) })
        }
    }
}

fn error_json(e: &Error) -> Value {
    json!({ "kind": e.kind(), "message": e.to_string(), "exit_code": e.exit_code() })
}

/// Run one command; returns the JSON result and a text rendering.
async fn run(cli: &Cli) -> Result<(Value, String)> {
    match &cli.command {
        Command::Init => init(&config_path(cli)),
        Command::Kms { command: KmsCommand::Probe { name } } => {
            let kb = open(cli).await?;
            let names: Vec<String> = match name {
                Some(n) => vec![kb.config().kms(n)?.name().to_owned()],
                None => kb.config().kms.iter().map(|k| k.name().to_owned()).collect(),
            };
            let (certificates, cert_warnings, cert_text) = crate::certs::probe_section(kb.config(), &names);
            let mut reports = Vec::new();
            let mut text = String::new();
            let mut first_err = None;
            for n in names {
                match kb.probe(&n).await {
                    Ok(r) => {
                        text += &format!("{}: {} ({}) {}\n{}\n", r.name, r.state, r.kind, r.identity, serde_json::to_string_pretty(&r.details).unwrap_or_default());
                        reports.push(serde_json::to_value(&r).unwrap_or_default());
                    }
                    Err(e) => {
                        text += &format!("{n}: {}: {e}\n", ProbeStatus::Unusable);
                        reports.push(json!({ "name": n, "state": ProbeStatus::Unusable, "error": e.to_string() }));
                        first_err.get_or_insert(e);
                    }
                }
            }
            text += &cert_text;
            if let Some(e) = first_err {
                if !cli.json {
                    print!("{text}");
                }
                return Err(e);
            }
            Ok((json!({ "kms": reports, "certificates": certificates, "certificate_warnings": cert_warnings }), text))
        }
        Command::Pool { command } => {
            let kb = open(cli).await?;
            match command {
                PoolCommand::Create { name, kms, kek_bits, master_key } => {
                    let opts = pool_creation::PoolOptions { kek_bits: *kek_bits, master_key: master_key.as_deref() };
                    let p = pool_creation::create_pool(&kb, name, kms, &opts, &Actor::local_user()).await?;
                    let text = format!(
                        "pool '{}' created on KMS '{}': master key {} (id {}), RSA-{} KEK wrapped with {}, OAEP {}\n",
                        p.name, p.kms_name, p.master_key.label, p.master_key.id, p.kek_bits, p.wrap_mechanism, p.oaep_hash
                    );
                    Ok((pool_json(&p, None), text))
                }
                PoolCommand::List => {
                    let pools = kb.catalog().list_pools().await?;
                    let text = pools.iter().map(|p| format!("{}\t{}\tRSA-{}\t{}\t{}\n", p.name, p.kms_name, p.kek_bits, p.wrap_mechanism, p.created_at)).collect();
                    Ok((json!({ "pools": pools.iter().map(|p| pool_json(p, None)).collect::<Vec<_>>() }), text))
                }
                PoolCommand::Show { name } => {
                    let v = pool_lifecycle::show(&kb, name).await?;
                    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
                    for w in v["warnings"].as_array().into_iter().flatten() {
                        text += &format!("warning: {}\n", w.as_str().unwrap_or_default());
                    }
                    Ok((v, text))
                }
                // `run_partial` runs it, keeping what was done besides a failure.
                PoolCommand::Rotate { names, all } => rotate(&kb, names, *all).await.map_err(|f| f.error),
                PoolCommand::Wrap { name, kms } => lifecycle_out(pool_lifecycle::wrap(&kb, name, kms, &Actor::local_user()).await?),
                PoolCommand::Unwrap { name, kms } => lifecycle_out(pool_lifecycle::unwrap(&kb, name, kms, &Actor::local_user()).await?),
                PoolCommand::Migrate { name, to } => lifecycle_out(pool_lifecycle::migrate(&kb, name, to, &Actor::local_user()).await?),
                PoolCommand::Schedule { name, rotation_days, .. } => {
                    let v = pool_lifecycle::set_schedule(&kb, name, *rotation_days, &Actor::local_user()).await?;
                    let text = format!("pool '{name}': rotation every {} days{}, next due {}\n", v["rotation_days"], if v["own_schedule"] == true { "" } else { " (the configuration's default)" }, v["next_due"].as_str().unwrap_or("never"));
                    Ok((v, text))
                }
                PoolCommand::Export { name, passphrase_file, out } => {
                    let pass = escrow::passphrase_from_file(passphrase_file)?;
                    let e = escrow::export(&kb, name, &pass, out, &Actor::local_user()).await?;
                    let text = format!(
                        "pool '{}': KEK generation(s) {:?} exported to {} ({} bytes); keep it apart from the catalog: with its passphrase it restores the pool without any KMS\n",
                        e.pool,
                        e.generations,
                        out.display(),
                        e.bytes
                    );
                    Ok((serde_json::to_value(&e).unwrap_or_default(), text))
                }
                PoolCommand::Import { file, passphrase_file, kms } => {
                    let pass = escrow::passphrase_from_file(passphrase_file)?;
                    lifecycle_out(escrow::import(&kb, file, &pass, kms, &Actor::local_user()).await?)
                }
                PoolCommand::RetireKeys { name } => lifecycle_out(pool_lifecycle::retire_keys(&kb, name, &Actor::local_user()).await?),
                PoolCommand::Resume { name, take_over } => lifecycle_out(pool_lifecycle::resume(&kb, name, take_over.as_deref(), &Actor::local_user()).await?),
                PoolCommand::Shred { name, yes_destroy } => lifecycle_out(pool_lifecycle::shred(&kb, name, yes_destroy, &Actor::local_user()).await?),
                PoolCommand::Rekey { name, kek_bits, kms: Some(kms) } => lifecycle_out(pool_lifecycle::rekey_to(&kb, name, *kek_bits, kms, &Actor::local_user()).await?),
                PoolCommand::Rekey { name, kek_bits, kms: None } => {
                    let p = pool_lifecycle::rekey(&kb, name, *kek_bits, &Actor::local_user()).await?;
                    let text = format!("pool '{}' rekeyed: KEK generation {} (RSA-{}), wrapped under master key {}; new DEKs use it\n", p.name, p.generation, p.kek_bits, p.master_key.label);
                    Ok((pool_json(&p, None), text))
                }
            }
        }
        Command::Client { command: ClientCommand::Add { name, password_file } } => {
            let kb = open(cli).await?;
            let password = read_secret_file(password_file, "password")?;
            let c = clients::add_client(&kb, name, &password, seal::KdfParams::default(), &Actor::local_user()).await?;
            let v = json!({ "name": c.name, "kdf": c.kdf, "created_at": c.created_at });
            Ok((v, format!("client '{}' registered (Argon2id m={} KiB, t={})\n", c.name, c.kdf.m_kib, c.kdf.t)))
        }
        Command::Catalog { command: CatalogCommand::Backup { out, force } } => catalog_backup(&open(cli).await?, out, *force).await,
        Command::Catalog { command: CatalogCommand::Restore { file, force } } => catalog_restore(&Config::load(&config_path(cli))?, file, *force).await,
        Command::Ttlv { command: TtlvCommand::Decode { file } } => ttlv_decode(file.as_deref()),
        Command::Serve => net::serve(open(cli).await?).await,
        Command::MediaAgent(args) => net::media_agent(args).await,
        Command::Backup(args) => net::backup(args, cli.json).await,
        Command::Restore(args) => net::restore(args, cli.json).await,
        Command::Audit { command } => {
            let kb = open(cli).await?;
            match command {
                AuditCommand::Verify { expect_head } => audit_verify(&kb, expect_head.as_deref()).await,
                AuditCommand::List { limit } => audit_list(&kb, *limit).await,
            }
        }
        Command::Dek { command } => match command {
            DekCommand::Issue { pool, client } => {
                let kb = open(cli).await?;
                let g = backup::issue_dek(&kb, pool, client, &Actor::local_user()).await?;
                Ok((serde_json::to_value(&g).unwrap_or_default(), format!("dek_id: {}\nsealed_dek: {}\n", g.dek_id, g.sealed_dek)))
            }
            DekCommand::Recover { dek_id, client } => {
                let kb = open(cli).await?;
                let g = restore::recover_dek(&kb, dek_id, client, &Actor::local_user()).await?;
                Ok((serde_json::to_value(&g).unwrap_or_default(), format!("dek_id: {}\nsealed_dek: {}\n", g.dek_id, g.sealed_dek)))
            }
            DekCommand::Open { client, password_file } => {
                let password = read_secret_file(password_file, "password")?;
                let mut input = String::new();
                std::io::stdin().read_to_string(&mut input).map_err(|source| Error::Io { context: "reading sealed DEK from", path: "stdin".into(), source })?;
                let sealed = extract_sealed(&input);
                let (header, dek) = seal::open(&sealed, client, &password)?;
                let hex = dek.expose_hex();
                let v = json!({ "dek_id": header.dek_id, "pool": header.pool, "client": header.client, "dek": hex.as_str() });
                Ok((v, format!("{}\n", hex.as_str())))
            }
        },
    }
}

const TAIL_NOTE: &str = "rows removed at the end of the log cannot be detected from inside the catalog: record the head hash elsewhere and check it with `audit verify --expect-head`";

/// `audit verify`: OK with the count and head, or the first break as an
/// integrity error (exit code 6).
async fn audit_verify(kb: &Keybridge, expect_head: Option<&str>) -> Result<(Value, String)> {
    let report = kb.catalog().verify_audit().await?;
    let what = || format!("audit log in {}", kb.catalog().location());
    if let Some(b) = &report.broken {
        let verified = if report.rows == 0 { "no row before it verifies".to_owned() } else { format!("rows 1 to {} verify", report.head_seq) };
        return Err(Error::Integrity { what: what(), reason: format!("{} ({verified})", b.message) });
    }
    if let Some(expected) = expect_head {
        let expected = expected.trim().to_ascii_lowercase();
        let bytes = hex::decode(&expected)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Error::Input { what: "--expect-head".into(), reason: "not a SHA-256 hash in hex (64 hex digits)".into() })?;
        if kb.catalog().audit_seq_of_hash(&bytes).await?.is_none() {
            return Err(Error::Integrity {
                what: what(),
                reason: format!(
                    "the recorded head {expected} is not in the chain ({} rows, head {}): rows were removed from the end, or the chain was rewritten",
                    report.rows,
                    report.head_hash.as_deref().unwrap_or("none")
                ),
            });
        }
    }
    let text = match &report.head_hash {
        Some(head) => format!("audit log OK: {} rows, head (row {}) hash {head}\nnote: {TAIL_NOTE}\n", report.rows, report.head_seq),
        None => format!("audit log OK: empty\nnote: {TAIL_NOTE}\n"),
    };
    let v = json!({ "ok": true, "rows": report.rows, "head_seq": report.head_seq, "head_hash": report.head_hash, "note": TAIL_NOTE });
    Ok((v, text))
}

/// `audit list`: the last `limit` rows, oldest first.
async fn audit_list(kb: &Keybridge, limit: usize) -> Result<(Value, String)> {
    let rows = kb.catalog().audit_rows(limit).await?;
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let text = rows
        .iter()
        .map(|r| format!("{}\t{}\t{}\t{}\tpool={}\tclient={}\tdek={}\t{}\n", r.seq, r.at, r.actor, r.action, dash(&r.pool), dash(&r.client), dash(&r.dek_id), r.result))
        .collect();
    Ok((json!({ "rows": rows }), text))
}

/// `catalog backup`: the copy, then its audit row in the live catalog.
async fn catalog_backup(kb: &Keybridge, out: &Path, force: bool) -> Result<(Value, String)> {
    let copy = crate::flows::catalog::backup(kb, out, force, &Actor::local_user()).await?;
    let head = copy.audit_head.as_deref().unwrap_or("none (empty audit log)");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&copy.path).map_err(|source| Error::Io { context: "reading the mode of", path: copy.path.clone(), source })?;
        format!("{:04o}", m.permissions().mode() & 0o7777)
    };
    let text = format!(
        "catalog {} copied to {} (mode {mode}, {} bytes, schema version {})\naudit log in the copy: {} rows, head hash {head}\n\
         record the head hash with the copy: after a restore, `keybridge audit verify --expect-head {head}` proves nothing was cut from it\n",
        kb.catalog().location(),
        copy.path.display(),
        copy.bytes,
        copy.schema_version,
        copy.audit_rows,
    );
    let v = json!({ "catalog": kb.catalog().location(), "out": copy.path, "bytes": copy.bytes, "mode": mode, "schema_version": copy.schema_version, "audit_rows": copy.audit_rows, "audit_head": copy.audit_head });
    Ok((v, text))
}

/// `catalog restore`: check the copy, put it in place, then record the
/// restore in the restored catalog.
async fn catalog_restore(config: &Config, file: &Path, force: bool) -> Result<(Value, String)> {
    let r = crate::flows::catalog::restore(config, file, force, &Actor::local_user()).await?;
    let head = r.from.audit_head.as_deref().unwrap_or("none (empty audit log)");
    let mut text = format!(
        "catalog {} restored from {} (integrity ok, schema version {}, audit log {} rows verified, head hash {head})\n",
        r.catalog.display(),
        r.from.path.display(),
        r.from.schema_version,
        r.from.audit_rows,
    );
    match (&r.replaced, &r.replaced_unreadable) {
        (Some(old), Some(why)) => text += &format!("the catalog that was there could not be read ({why}); it is kept as {}\n", old.display()),
        (Some(old), None) => text += &format!("the catalog that was there is kept as {}\n", old.display()),
        _ => {}
    }
    text += "anything issued after this backup was taken is not in it: DEKs issued since cannot be recovered\n";
    let v = json!({ "catalog": r.catalog, "from": r.from.path, "bytes": r.from.bytes, "schema_version": r.from.schema_version, "audit_rows": r.from.audit_rows, "audit_head": r.from.audit_head, "replaced": r.replaced, "replaced_unreadable": r.replaced_unreadable });
    Ok((v, text))
}

/// `ttlv decode`: hex (whitespace ignored) or raw bytes.
fn ttlv_decode(file: Option<&Path>) -> Result<(Value, String)> {
    use keybridge_kmip::{render, ttlv};
    let (name, raw) = match file {
        Some(p) if p != Path::new("-") => (p.to_owned(), std::fs::read(p).map_err(|source| Error::Io { context: "reading TTLV from", path: p.to_owned(), source })?),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|source| Error::Io { context: "reading TTLV from", path: "stdin".into(), source })?;
            (PathBuf::from("stdin"), buf)
        }
    };
    let text: String = String::from_utf8_lossy(&raw).split_whitespace().collect();
    let bytes = if !text.is_empty() && text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(&text).expect("checked hex")
    } else {
        raw
    };
    let item = ttlv::decode(&bytes, &ttlv::Limits::default()).map_err(|e| Error::Input { what: format!("TTLV from {}", name.display()), reason: e.to_string() })?;
    Ok((render::to_json(&item), render::render_tree(&item)))
}

/// Accept either the bare `kbseal1.` string or the JSON printed by
/// `dek issue --json` / `dek recover --json` on stdin.
fn extract_sealed(input: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(input) {
        if let Some(s) = v.get("sealed_dek").and_then(Value::as_str) {
            return s.to_owned();
        }
    }
    input.trim().to_owned()
}

fn init(path: &Path) -> Result<(Value, String)> {
    let mut created = Vec::new();
    if !path.exists() {
        std::fs::write(path, Config::default_text()).map_err(|source| Error::Io { context: "writing default configuration", path: path.to_owned(), source })?;
        created.push(format!("configuration {}", path.display()));
    }
    let config = Config::load(path)?;
    let existed = config.catalog.path.exists();
    keybridge_catalog::SqliteCatalog::open_or_create(&config.catalog.path)?;
    if !existed {
        created.push(format!("catalog {}", config.catalog.path.display()));
    }
    for kms in &config.kms {
        if let keybridge_kms::config::KmsConfig::Builtin(b) = kms {
            if !b.root_key.exists() {
                keybridge_kms::builtin::create_root_key(&b.root_key).map_err(Error::backend(&b.name))?;
                created.push(format!("root key {} (mode 0600)", b.root_key.display()));
            }
        }
    }
    if let Some(svc) = &config.service {
        created.extend(net::init_service(svc)?);
    }
    let text = if created.is_empty() {
        "already initialised; nothing created\n".to_owned()
    } else {
        created.iter().map(|c| format!("created {c}\n")).collect()
    };
    Ok((json!({ "config": path, "created": created }), text))
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KEYBRIDGE_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keybridge: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run_partial(&cli)) {
        Ok((value, text)) => match print(if cli.json { format!("{value}\n") } else { text }) {
            Ok(()) => 0,
            Err(()) => 1,
        },
        Err(Failed { error: e, done }) => {
            // One JSON object still: what was done, and the error.
            let out = match (done, cli.json) {
                (Some((mut value, _)), true) => {
                    value["error"] = error_json(&e);
                    format!("{value}\n")
                }
                (None, true) => format!("{}\n", json!({ "error": error_json(&e) })),
                (Some((_, text)), false) => text,
                (None, false) => String::new(),
            };
            let _ = print(out);
            eprintln!("keybridge: error: {e}");
            e.exit_code()
        }
    }
}

/// Write `out` on stdout. A reader that stops early (`| head`) is not an
/// error of ours.
fn print(out: String) -> std::result::Result<(), ()> {
    match std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("keybridge: cannot write the result: {e}");
            Err(())
        }
        _ => Ok(()),
    }
}
