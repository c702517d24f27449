//! The backup client (`keybridge backup` / `keybridge restore`): talks to
//! the service with requests signed by its password-derived key, opens the
//! sealed DEK locally, encrypts or decrypts its data itself and streams it
//! to or from the MediaAgent. The DEK exists only in this process; the
//! service never sees the data, the MediaAgent never sees a key.
//!
//! It links the wire contract (keybridge-proto) and TLS configuration
//! (keybridge-net) only: no catalog engine, no PKCS#11, no server
//! (`cargo tree -p keybridge-client` shows neither rusqlite nor cryptoki).

pub mod backup;
mod download;
pub mod restore;
pub mod unpack;


use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use keybridge_proto::api::{self, ClientKdf, ErrorBody, JobStarted, PoolRequest};
use keybridge_proto::api::{JobCompletion, JobRecord};
use keybridge_proto::api::DekGrant;
use keybridge_proto::seal::ClientKeys;
use keybridge_proto::secret::{Dek, SecretString};
use keybridge_proto::{Error, ErrorKind, Result};

/// How to reach the service and who we are.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Service base URL (`https://host:8443`).
    pub service: String,
    /// CA certificate (PEM) that signed the service's and MediaAgent's
    /// certificates. Required for https.
    pub ca: Option<std::path::PathBuf>,
    pub client: String,
    pub password: SecretString,
}

/// An HTTP client trusting only `ca` (rustls, ring), for the service and
/// the MediaAgent.
pub fn http_client(ca: Option<&Path>) -> Result<reqwest::Client> {
    http_client_with(client_tls(ca)?)
}

fn http_client_with(tls: rustls::ClientConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .tcp_nodelay(true)
        .http1_only()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))
}

/// TLS trusting only the CA in `ca`; with none, nothing is trusted, so an
/// https peer is refused with a message that points at `--ca`.
pub fn client_tls(ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    match ca {
        Some(ca) => keybridge_net::tls::client_config(ca, None).map_err(|reason| Error::Input { what: "CA certificate".into(), reason }),
        None => Ok(rustls::ClientConfig::builder_with_provider(keybridge_net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS versions: {e}")))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()),
    }
}

/// The reason for a failed TLS connection to the service or a MediaAgent: named by cause (expired, not yet valid, name mismatch,
/// wrong extended key usage, unknown CA, no common version or cipher)
/// when rustls says what it was, pointing at `--ca` when the peer's
/// certificate was not trusted.
pub(crate) fn tls_refused(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let r = keybridge_net::tls::rustls_error(e)?;
    let peer = keybridge_net::tls::Peer {
        what: "the server",
        trust: "the CA file given with --ca / KEYBRIDGE_CA (with none, nothing is trusted)",
        name_fix: "use a URL whose host is one of those names",
        own_cert: None,
    };
    Some(keybridge_net::tls::explain(r, &peer))
}

/// First wait between tries of [`retrying`]; doubled after each, up to
/// [`RETRY_MAX_DELAY`].
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// Run `op` until it succeeds, fails in a way that is not transient
/// ([`Error::is_transient`]), or `retry_for` has passed: then its last
/// error is returned. Each retry is logged with the error that caused it.
pub async fn retrying<T, F, Fut>(retry_for: Duration, doing: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut delay = RETRY_FIRST_DELAY;
    loop {
        match op().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + delay <= deadline => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{doing} failed for now; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX_DELAY);
            }
            other => return other,
        }
    }
}

/// An error status answered by the service or the MediaAgent, with the
/// peer's own message (`api::ErrorBody`) when it sent one.
pub(crate) fn remote_error(peer: &str, status: u16, body: &[u8]) -> Error {
    let (kind, message, retriable) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.kind, b.error.message, b.error.retriable),
        Err(_) => (ErrorKind::Other, String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(), false),
    };
    Error::Remote { peer: peer.to_owned(), status, kind, message, retriable }
}

/// Turn a failed exchange into an error naming the peer and the root
/// cause (reqwest's own message wraps it in several layers).
pub(crate) fn unreachable(peer: &str, e: reqwest::Error) -> Error {
    let mut root = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    let reason = if let Some(tls) = tls_refused(&e) {
        tls
    } else if e.is_timeout() {
        format!("timed out: {root}")
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        format!("connection failed: {root}")
    };
    Error::Unreachable { peer: peer.to_owned(), reason }
}

/// Read a JSON answer; an error status becomes [`Error::Remote`] with the
/// peer's own message.
pub(crate) async fn answer<R: DeserializeOwned>(peer: &str, resp: reqwest::Response) -> Result<R> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| unreachable(peer, e))?;
    parse_answer(peer, status, &bytes)
}

/// A JSON answer already read: an error status becomes [`Error::Remote`]
/// with the peer's own message.
pub(crate) fn parse_answer<R: DeserializeOwned>(peer: &str, status: u16, bytes: &[u8]) -> Result<R> {
    if !(200..300).contains(&status) {
        return Err(remote_error(peer, status, bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Remote { peer: peer.to_owned(), status, kind: ErrorKind::Other, message: format!("unexpected answer: {e}"), retriable: false })
}

/// A client's session with the service.
#[derive(Debug)]
pub struct ServiceClient {
    http: reqwest::Client,
    /// TLS for our own download connections (the same trust as `http`).
    tls: Arc<rustls::ClientConfig>,
    base: String,
    /// `service URL`, for messages.
    peer: String,
    client: String,
    keys: Arc<ClientKeys>,
    password: SecretString,
}

impl ServiceClient {
    /// Fetch the client's KDF salt and derive its keys (one Argon2id run).
    pub async fn connect(opts: &ClientOptions) -> Result<ServiceClient> {
        // The KDF parameters, the signed requests and the sealed DEKs must
        // not cross the network in clear: a man in the middle could hand
        // out cheap KDF parameters and test passwords against signatures.
        if !opts.service.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://")) {
            return Err(Error::Input {
                what: format!("service URL '{}'", opts.service),
                reason: "keybridge reaches the service only over https://".into(),
            });
        }
        // One TLS configuration (one read of the CA file) for the API client
        // and for our own download connections.
        let tls = client_tls(opts.ca.as_deref())?;
        let http = http_client_with(tls.clone())?;
        let base = format!("service {}", opts.service.trim_end_matches('/'));
        let url_base = opts.service.trim_end_matches('/').to_owned();
        let url = format!("{url_base}/v1/clients/{}/kdf", opts.client);
        let resp = http.get(&url).send().await.map_err(|e| unreachable(&base, e))?;
        let kdf: ClientKdf = answer(&base, resp).await?;
        let salt = hex::decode(&kdf.salt)
            .map_err(|_| Error::Remote { peer: base.clone(), status: 200, kind: ErrorKind::Other, message: "salt is not hex".into(), retriable: false })?;
        let password = opts.password.clone();
        let client = opts.client.clone();
        let keys = tokio::task::spawn_blocking(move || ClientKeys::derive(&client, &password, &salt, &kdf.kdf))
            .await
            .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))??;
        Ok(ServiceClient { http, tls: Arc::new(tls), base: url_base, peer: base, client: opts.client.clone(), keys: Arc::new(keys), password: opts.password.clone() })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// TLS configuration for downloads (the restore's stream download).
    pub fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    pub fn name(&self) -> &str {
        &self.client
    }

    /// Send a signed request.
    pub async fn call<R: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&impl Serialize>) -> Result<R> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).expect("request bodies serialise"),
            None => Vec::new(),
        };
        let headers = api::auth::sign(&self.keys, &self.client, method.as_str(), path, &body)?;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if !body.is_empty() {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.peer, e))?;
        answer(&self.peer, resp).await
    }

    /// Backup steps 1-4 on the service: a job with its own DEK.
    pub async fn start_job(&self, pool: &str) -> Result<JobStarted> {
        self.call(reqwest::Method::POST, "/v1/jobs", Some(&PoolRequest { pool: pool.to_owned() })).await
    }

    pub async fn complete_job(&self, job: &str, done: &JobCompletion) -> Result<JobRecord> {
        self.call(reqwest::Method::POST, &format!("/v1/jobs/{job}/complete"), Some(done)).await
    }

    pub async fn job(&self, job: &str) -> Result<keybridge_proto::api::Job> {
        self.call(reqwest::Method::GET, &format!("/v1/jobs/{job}"), None::<&()>).await
    }

    pub async fn issue_dek(&self, pool: &str) -> Result<DekGrant> {
        self.call(reqwest::Method::POST, "/v1/deks", Some(&PoolRequest { pool: pool.to_owned() })).await
    }

    pub async fn recover_dek(&self, dek_id: &str) -> Result<DekGrant> {
        self.call(reqwest::Method::POST, &format!("/v1/deks/{dek_id}/recover"), None::<&()>).await
    }

    /// Open a grant with our password-derived key; the grant must be for
    /// us and name the DEK we asked for.
    pub fn open(&self, grant: &DekGrant) -> Result<Dek> {
        let (header, dek) = keybridge_proto::seal::open_with(&grant.sealed_dek, &self.client, &self.keys, &self.password)?;
        if header.dek_id != grant.dek_id || header.pool != grant.pool {
            return Err(Error::Seal {
                client: self.client.clone(),
                reason: format!("it seals DEK {} of pool '{}', not the DEK {} the service named", header.dek_id, header.pool, grant.dek_id),
            });
        }
        Ok(dek)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service answers a shredded pool with 410 and kind
    /// `keys_destroyed`: the client exits 5, as the CLI on the service's
    /// host would, and does not retry.
    #[test]
    fn gone_reads_back_as_keys_destroyed() {
        let body = br#"{"error":{"kind":"keys_destroyed","message":"the master keys of pool 'p' were destroyed"}}"#;
        let e = remote_error("service", 410, body);
        assert!(matches!(e, Error::Remote { kind: ErrorKind::KeysDestroyed, status: 410, .. }), "{e:?}");
        assert_eq!(e.exit_code(), 5);
        assert!(!e.is_transient());
    }
}
