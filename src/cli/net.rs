//! The networked commands: `serve`, `media-agent`, `backup`, `restore`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use keybridge_client::{ClientOptions, ServiceClient};
use keybridge_agent::AgentConfig;
use keybridge_proto::secret::read_secret_file;
use crate::{Keybridge, Result};

/// How a client reaches the service (flags or environment).
#[derive(Debug, Args)]
pub struct Connect {
    /// Service URL.
    #[arg(long, env = "KEYBRIDGE_SERVICE", default_value = "https://127.0.0.1:8443")]
    pub service: String,
    /// CA certificate (PEM) trusted for the service and the MediaAgent.
    #[arg(long, env = "KEYBRIDGE_CA")]
    pub ca: Option<PathBuf>,
    /// This client's name.
    #[arg(long, env = "KEYBRIDGE_CLIENT")]
    pub client: String,
    /// File holding this client's network password (never sent).
    #[arg(long, env = "KEYBRIDGE_PASSWORD_FILE")]
    pub password_file: PathBuf,
}

impl Connect {
    async fn open(&self) -> Result<ServiceClient> {
        let password = read_secret_file(&self.password_file, "password")?;
        ServiceClient::connect(&ClientOptions { service: self.service.clone(), ca: self.ca.clone(), client: self.client.clone(), password }).await
    }
}

#[derive(Debug, Args)]
pub struct MediaAgentArgs {
    /// Storage directory (created if missing).
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub listen: String,
    /// Serve HTTPS with this certificate chain (PEM)...
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// ...and this key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The key shared with the service (its `media_agent_key_file`): every
    /// job request must carry a token the service signed with it.
    #[arg(long, required_unless_present = "no_auth", conflicts_with = "no_auth")]
    pub token_key: Option<PathBuf>,
    /// Accept job requests without tokens (a trusted network only).
    #[arg(long)]
    pub no_auth: bool,
    /// Uploads one client may run at once (the job token names the
    /// client); more are refused with 429.
    #[arg(long, default_value_t = keybridge_agent::UPLOADS_PER_CLIENT)]
    pub uploads_per_client: usize,
    /// An upload that sends nothing for this many seconds is dropped, with
    /// nothing stored; a download, or any answer, that the client takes
    /// nothing of for as long is cut off.
    #[arg(long, default_value_t = keybridge_agent::UPLOAD_IDLE_SECS)]
    pub upload_idle_secs: u64,
    /// Bytes one client may store at this agent (its stored jobs plus its
    /// uploads in progress); an upload that would pass it is refused with
    /// 507 and nothing is stored. Counted per client named by the job
    /// token, so not with --no-auth. No quota unless given.
    #[arg(long, value_name = "BYTES")]
    pub client_quota: Option<u64>,
    /// Write and read streams through the page cache. By default they
    /// bypass it (O_DIRECT) where the store's filesystem allows: every
    /// stream is fsynced, so the cache would only add a copy.
    #[arg(long)]
    pub buffered_io: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Storage pool whose KEK protects this job's DEK.
    #[arg(long)]
    pub pool: String,
    /// Files and directories to back up (each under its own name).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Job id printed by `keybridge backup`.
    pub job: String,
    /// Directory to restore into (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// While the service answers that its KMS is unreachable (retriable),
    /// keep trying with backoff (0.5 s doubling to 10 s) for up to this
    /// many seconds. 0 (the default): fail at once with exit code 5.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub retry_for: u64,
    /// Write every file through the page cache, as tar does. By default
    /// files of 1 MiB and more bypass it (O_DIRECT) where the target's
    /// filesystem allows: a large restore then neither evicts what the
    /// host has cached nor leaves gigabytes of dirty pages to flush.
    #[arg(long)]
    pub buffered_io: bool,
}

/// A progress bar on a TTY (stderr), none otherwise or with --json.
/// The length is set once known (bytes to archive, or the download size).
fn progress(json: bool, what: &str) -> keybridge_client::backup::Progress {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    Some(bar)
}

pub(super) async fn serve(kb: Keybridge) -> Result<(Value, String)> {
    crate::service::run(kb, keybridge_net::http::shutdown_signal()).await?;
    Ok((json!({ "stopped": true }), "service stopped\n".into()))
}

pub(super) async fn media_agent(args: &MediaAgentArgs) -> Result<(Value, String)> {
    let cfg = AgentConfig {
        store: args.store.clone(),
        listen: args.listen.clone(),
        tls: args.cert.clone().zip(args.key.clone()),
        token_key: args.token_key.as_deref().map(keybridge_proto::api::agent_token::AgentKey::read).transpose()?,
        uploads_per_client: args.uploads_per_client,
        upload_idle: Duration::from_secs(args.upload_idle_secs.max(1)),
        client_quota: args.client_quota,
        direct_io: !args.buffered_io,
        shutdown_grace: Duration::from_secs(30),
    };
    keybridge_agent::run(cfg, keybridge_net::http::shutdown_signal()).await?;
    Ok((json!({ "stopped": true }), "media agent stopped\n".into()))
}

pub(super) async fn backup(args: &BackupArgs, json: bool) -> Result<(Value, String)> {
    let svc = args.connect.open().await?;
    let s = keybridge_client::backup::backup(&svc, &args.pool, &args.paths, progress(json, "backup")).await?;
    let mut text = format!(
        "job {} complete: {} entries, {} bytes encrypted into {} bytes with DEK {} (pool '{}'), stored by {} in {:.2} s\n",
        s.job_id, s.files, s.plain_bytes, s.stream_bytes, s.dek_id, s.pool, s.media_agent, s.seconds
    );
    if !s.changed.is_empty() {
        text += &format!("{} entries changed while they were read (see the warnings above): each is archived as it was when opened\n", s.changed.len());
    }
    if !s.removed.is_empty() {
        text += &format!("{} entries were removed or replaced while the backup ran (see the warnings above): not archived\n", s.removed.len());
    }
    Ok((serde_json::to_value(&s).unwrap_or_default(), text))
}

pub(super) async fn restore(args: &RestoreArgs, json: bool) -> Result<(Value, String)> {
    let svc = args.connect.open().await?;
    let s = keybridge_client::restore::restore(&svc, &args.job, &args.to, progress(json, "restore"), Duration::from_secs(args.retry_for), !args.buffered_io).await?;
    let mut text = format!(
        "job {} restored into {}: {} ({} bytes) in {:.2} s\n",
        s.job_id,
        s.to.display(),
        s.entries.join(", "),
        s.plain_bytes,
        s.seconds
    );
    if !s.skipped.is_empty() {
        text += &format!("{} entries not restored (see the warnings above)\n", s.skipped.len());
    }
    Ok((serde_json::to_value(&s).unwrap_or_default(), text))
}

/// Write a private file with mode 0600 (created, never overwritten).
fn write_private(path: &std::path::Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let io = |source| crate::Error::Io { context: "writing", path: path.to_owned(), source };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(io)
}

/// `init` for the service: a self-signed localhost certificate, an operator
/// token and the MediaAgent token key, where missing. Returns what was created.
pub(super) fn init_service(svc: &crate::config::ServiceConfig) -> Result<Vec<String>> {
    let mut created = Vec::new();
    if !svc.cert.exists() && !svc.key.exists() {
        let (cert, key) = keybridge_net::tls::self_signed_localhost().map_err(crate::Error::Internal)?;
        write_private(&svc.key, key.as_bytes())?;
        std::fs::write(&svc.cert, cert).map_err(|source| crate::Error::Io { context: "writing", path: svc.cert.clone(), source })?;
        created.push(format!("service certificate {} (self-signed, localhost) and key {} (mode 0600)", svc.cert.display(), svc.key.display()));
    }
    for (path, what) in [(&svc.operator_token_file, "operator token"), (&svc.media_agent_key_file, "MediaAgent token key")] {
        if !path.exists() {
            let secret = zeroize::Zeroizing::new(hex::encode(*keybridge_proto::crypto::random_array::<32>().map_err(crate::Error::crypto("generating a secret"))?));
            write_private(path, format!("{}\n", secret.as_str()).as_bytes())?;
            created.push(format!("{what} {} (mode 0600)", path.display()));
        }
    }
    Ok(created)
}
