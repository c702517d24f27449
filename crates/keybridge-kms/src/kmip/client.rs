//! The KMIP client: TLS connections (mutual authentication) to one or more
//! servers in priority order, a connection pool, version negotiation, and
//! request/response round trips using the sans-IO codec in [`keybridge_kmip`].
//!
//! Failover: servers are tried in the configured order; one that fails at
//! the connection level (refused, reset, TLS failure, timeout, garbage) is
//! marked down for a short back-off and the request goes to the next. A
//! pooled connection that turns out dead (the server restarted or dropped
//! it while idle) is replaced by a fresh one once before failing over. A
//! KMIP-level refusal (the server answered "Operation Failed") is never
//! retried. Which failures are transient is decided in one place:
//! [`Failure::is_transient`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::KmipConfig;
use keybridge_kmip::messages::{self, BatchResult, QueryResult, Request, Version, SUPPORTED_VERSIONS};
use keybridge_kmip::tags as enums;
use keybridge_kmip::ttlv::{self, Limits};

/// Largest response accepted.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// How long a server that failed is skipped (unless every server is down).
const DOWN_BACKOFF: Duration = Duration::from_secs(5);

/// Why one attempt on one server failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed for a reason keybridge could not name
    /// (the peer hung up, garbage instead of TLS).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// TLS failed for a named cause (a certificate, the protocol version,
    /// the cipher suites): the message says whose certificate and what to
    /// do ([`keybridge_net::tls::explain`]).
    #[error("TLS handshake failed: {message}")]
    TlsRefused { cause: keybridge_net::tls::TlsCause, message: String },
    #[error("connection failed during the request: {0}")]
    Io(io::Error),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("the server did not answer with KMIP: {0}")]
    Garbage(String),
    #[error("the server refused: {0}")]
    Refused(String),
}

impl Failure {
    /// Whether another attempt (fresh connection, then the next server) may
    /// succeed. Everything at the connection level is, except a TLS
    /// failure with a named cause (an expired or misissued certificate, no
    /// common TLS version or cipher suite): that stays until an operator
    /// changes a certificate or a setting. A server's own refusal is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Refused(_) => false,
            Failure::TlsRefused { cause, .. } => *cause == keybridge_net::tls::TlsCause::Other,
            _ => true,
        }
    }
}

/// One server's failure within a request that no server could serve.
#[derive(Debug, thiserror::Error)]
#[error("{server}: {failure}")]
pub struct ServerFailure {
    /// The server's address, `host:port`.
    pub server: String,
    pub failure: Failure,
}

/// Errors of the KMIP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmipError {
    #[error("{0}")]
    Config(String),
    /// Every server failed; one entry per server.
    #[error("no KMIP server could serve the request: {}", joined(.0))]
    AllServersFailed(Vec<ServerFailure>),
    /// The server answered but refused the operation.
    #[error("{operation} refused by {server}: {reason}")]
    Refused { server: String, operation: String, reason: String, code: Option<u32> },
    #[error("malformed response from {server}: {reason}")]
    Protocol { server: String, reason: String },
    /// A successful answer that lacks what the operation returns (a Unique
    /// Identifier, Data, a Key Block). `context` names the operation where
    /// the bare reason would not.
    #[error("{}", incomplete(.context, .source))]
    Incomplete {
        context: Option<String>,
        #[source]
        source: messages::ResponseError,
    },
    #[error("no KMIP version in common with {server} (it offers {offered})")]
    NoCommonVersion { server: String, offered: String },
}

fn joined(failures: &[ServerFailure]) -> String {
    failures.iter().map(ServerFailure::to_string).collect::<Vec<_>>().join("; ")
}

fn incomplete(context: &Option<String>, e: &messages::ResponseError) -> String {
    match context {
        Some(c) => format!("{c}: {}", e.0),
        None => e.0.clone(),
    }
}

impl KmipError {
    /// Whether the same request may succeed later with nobody changing
    /// anything: only when no server could serve it and at least one of
    /// them failed in a way [`Failure::is_transient`] counts as transient
    /// (anything at the connection level); that server may be back. A
    /// server's answer (a refusal, a malformed or incomplete response, no
    /// common version) and the configuration are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            KmipError::AllServersFailed(failures) => failures.iter().any(|f| f.failure.is_transient()),
            KmipError::Config(_) | KmipError::Refused { .. } | KmipError::Protocol { .. } | KmipError::Incomplete { .. } | KmipError::NoCommonVersion { .. } => false,
        }
    }

    /// A successful answer that lacks what the operation returns.
    pub fn incomplete(source: messages::ResponseError) -> Self {
        KmipError::Incomplete { context: None, source }
    }
}

struct Server {
    addr: String,
    name: ServerName<'static>,
    down_until: Mutex<Option<Instant>>,
}

struct Conn {
    server: usize,
    stream: TlsStream<TcpStream>,
    last_used: Instant,
}

/// What negotiation learnt about the servers (assumed alike: replicas).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerFacts {
    pub version: Version,
    pub operations: Vec<String>,
    #[serde(skip)]
    pub query: QueryResult,
    pub vendor: Option<String>,
    pub server: String,
}

/// A pooled, failing-over KMIP client.
pub struct KmipClient {
    servers: Vec<Server>,
    /// What TLS failures refer to: the configured files and our own
    /// certificate's facts.
    tls_context: TlsContext,
    connector: TlsConnector,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    connect_timeout: Duration,
    timeout: Duration,
    idle_timeout: Duration,
    limits: Limits,
    pinned_version: Option<Version>,
    facts: OnceCell<ServerFacts>,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipClient").field("servers", &self.servers.iter().map(|s| &s.addr).collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// The configuration behind the TLS connections, for messages.
struct TlsContext {
    trust: String,
    name_fix: String,
    own: String,
    own_summary: Option<keybridge_net::cert::CertSummary>,
}

impl TlsContext {
    fn new(cfg: &KmipConfig) -> TlsContext {
        let name_fix = match &cfg.server_name {
            Some(n) => format!("`server_name = \"{n}\"` of [[kms]] '{}' must be one of those names", cfg.name),
            None => format!("list the server by one of those names in `servers`, or set `server_name` in [[kms]] '{}' to one of them", cfg.name),
        };
        TlsContext {
            trust: format!("the `ca` file {} of [[kms]] '{}'", cfg.ca.display(), cfg.name),
            name_fix,
            own: format!("{} (`cert` of [[kms]] '{}')", cfg.cert.display(), cfg.name),
            // Its first certificate is ours; the file was read (and
            // checked) by the TLS configuration already.
            own_summary: keybridge_net::cert::summarize_file(&cfg.cert, "client certificate").ok().and_then(|mut v| (!v.is_empty()).then(|| v.remove(0))),
        }
    }

    /// A TLS failure (the server's address is added by [`ServerFailure`]):
    /// named when rustls says what it was.
    fn failure(&self, e: io::Error, during_request: bool) -> Failure {
        match keybridge_net::tls::rustls_error(&e) {
            Some(r) => {
                let peer = keybridge_net::tls::Peer { what: "the server", trust: &self.trust, name_fix: &self.name_fix, own_cert: Some((&self.own, self.own_summary.as_ref())) };
                Failure::TlsRefused { cause: keybridge_net::tls::classify(r), message: keybridge_net::tls::explain(r, &peer) }
            }
            None if during_request => Failure::Io(e),
            None => Failure::Tls(e),
        }
    }
}

/// Build the rustls client configuration: our CA bundle only (no system
/// roots: an appliance is trusted because the operator said so), client
/// certificate and key, TLS 1.2 and 1.3.
fn tls_config(cfg: &KmipConfig) -> Result<rustls::ClientConfig, KmipError> {
    keybridge_net::tls::client_config(&cfg.ca, Some((&cfg.cert, &cfg.key))).map_err(KmipError::Config)
}

fn server_name(addr: &str, override_name: Option<&str>) -> Result<ServerName<'static>, KmipError> {
    let host = match override_name {
        Some(n) => n.to_owned(),
        None => match addr.parse::<SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(['[', ']']).to_owned(),
        },
    };
    ServerName::try_from(host.clone()).map_err(|_| KmipError::Config(format!("server name '{host}' is not a valid DNS name or IP address")))
}

impl KmipClient {
    pub fn new(cfg: &KmipConfig) -> Result<Self, KmipError> {
        if cfg.servers.is_empty() {
            return Err(KmipError::Config("`servers` is empty".into()));
        }
        let tls = tls_config(cfg)?;
        let servers = cfg
            .servers
            .iter()
            .map(|a| {
                let addr = if a.contains(':') { a.clone() } else { format!("{a}:5696") };
                Ok(Server { name: server_name(&addr, cfg.server_name.as_deref())?, addr, down_until: Mutex::new(None) })
            })
            .collect::<Result<Vec<_>, KmipError>>()?;
        let pinned_version = cfg
            .version
            .as_deref()
            .map(|v| {
                SUPPORTED_VERSIONS
                    .iter()
                    .copied()
                    .find(|s| s.to_string() == v)
                    .ok_or_else(|| KmipError::Config(format!("version '{v}' is not one of 2.0, 1.4, 1.3, 1.2, 1.1, 1.0")))
            })
            .transpose()?;
        Ok(KmipClient {
            servers,
            tls_context: TlsContext::new(cfg),
            connector: TlsConnector::from(Arc::new(tls)),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(cfg.max_connections.max(1)),
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs.max(1)),
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            limits: Limits { max_len: MAX_RESPONSE, ..Limits::default() },
            pinned_version,
            facts: OnceCell::new(),
        })
    }

    /// Servers in the order to try now: the configured order, those marked
    /// down moved to the end.
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..self.servers.len()).partition(|i| {
            let d = self.servers[*i].down_until.lock().unwrap_or_else(|e| e.into_inner());
            d.is_none_or(|t| t <= now)
        });
        up.extend(down);
        up
    }

    fn mark(&self, server: usize, down: bool) {
        *self.servers[server].down_until.lock().unwrap_or_else(|e| e.into_inner()) = down.then(|| Instant::now() + DOWN_BACKOFF);
    }

    fn take_idle(&self, server: usize) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Connections idle longer than the timeout are closed: appliances
        // drop them silently, and a write into a dropped socket can hang.
        idle.retain(|c| now.duration_since(c.last_used) < self.idle_timeout);
        let pos = idle.iter().position(|c| c.server == server)?;
        Some(idle.swap_remove(pos))
    }

    fn put_idle(&self, mut conn: Conn) {
        conn.last_used = Instant::now();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    }

    async fn connect(&self, server: usize) -> Result<Conn, Failure> {
        let s = &self.servers[server];
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&s.addr))
            .await
            .map_err(|_| Failure::Timeout(self.connect_timeout.as_secs()))?
            .map_err(Failure::Connect)?;
        tcp.set_nodelay(true).map_err(Failure::Connect)?;
        let stream = tokio::time::timeout(self.connect_timeout, self.connector.connect(s.name.clone(), tcp))
            .await
            .map_err(|_| Failure::Timeout(self.connect_timeout.as_secs()))?
            .map_err(|e| self.tls_context.failure(e, false))?;
        Ok(Conn { server, stream, last_used: Instant::now() })
    }

    /// One request/response exchange on a connection.
    async fn exchange(&self, conn: &mut Conn, request: &[u8]) -> Result<messages::Response, Failure> {
        // Under TLS 1.3 the client's handshake ends before the server has
        // checked our certificate: its refusal (an alert) arrives here.
        let failed = |e: io::Error| self.tls_context.failure(e, true);
        let io = async {
            conn.stream.write_all(request).await.map_err(failed)?;
            conn.stream.flush().await.map_err(failed)?;
            let mut header = [0u8; ttlv::HEADER_LEN];
            conn.stream.read_exact(&mut header).await.map_err(failed)?;
            let total = ttlv::message_len(&header, &self.limits)
                .map_err(|e| Failure::Garbage(e.to_string()))?
                .expect("8 bytes read");
            // Answers carry key material (a decrypted private KEK).
            let mut buf = Zeroizing::new(vec![0u8; total]);
            buf[..ttlv::HEADER_LEN].copy_from_slice(&header);
            conn.stream.read_exact(&mut buf[ttlv::HEADER_LEN..]).await.map_err(failed)?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(self.timeout, io).await.map_err(|_| Failure::Timeout(self.timeout.as_secs()))??;
        let item = ttlv::decode(&buf, &self.limits).map_err(|e| Failure::Garbage(e.to_string()))?;
        messages::parse_response(&item).map_err(|e| Failure::Garbage(e.to_string()))
    }

    /// Send `batch` at `version`, with failover; returns the server's
    /// results (any of which may be a refusal) and the server's address.
    async fn send(&self, version: Version, batch: &[Request]) -> Result<(Vec<BatchResult>, String), KmipError> {
        // Requests carry key material too (a private KEK to encrypt).
        let request = Zeroizing::new(ttlv::encode(&messages::request_message(version, batch)));
        let _permit = self.permits.acquire().await.expect("semaphore never closed");
        let mut failures = Vec::new();
        for server in self.order() {
            let addr = self.servers[server].addr.clone();
            // A pooled connection first, then one fresh connection.
            for fresh in [false, true] {
                let conn = if fresh { self.connect(server).await } else { self.take_idle(server).ok_or(Failure::Io(io::ErrorKind::NotConnected.into())) };
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(_) if !fresh => continue,
                    Err(failure) => {
                        failures.push(ServerFailure { server: addr, failure });
                        break;
                    }
                };
                match self.exchange(&mut conn, &request).await {
                    Ok(resp) => {
                        self.put_idle(conn);
                        self.mark(server, false);
                        if resp.items.len() != batch.len() {
                            // Servers stop a batch at its first failure: report that one.
                            let failed = resp.items.iter().find(|r| !r.is_success());
                            return Err(match failed {
                                Some(r) => KmipError::Refused {
                                    server: addr,
                                    operation: r.operation.and_then(|o| enums::enum_name(keybridge_kmip::tags::OPERATION, o)).unwrap_or("batch").to_owned(),
                                    reason: r.describe_failure(),
                                    code: r.reason,
                                },
                                None => KmipError::Protocol { server: addr, reason: format!("{} results for {} requests", resp.items.len(), batch.len()) },
                            });
                        }
                        return Ok((resp.items, addr));
                    }
                    Err(f) if !fresh && f.is_transient() && !matches!(f, Failure::Garbage(_)) => {
                        tracing::debug!(server = %addr, error = %f, "pooled KMIP connection failed; reconnecting");
                        continue;
                    }
                    Err(failure) => {
                        tracing::warn!(server = %addr, error = %failure, "KMIP server failed");
                        failures.push(ServerFailure { server: addr, failure });
                        break;
                    }
                }
            }
            self.mark(server, true);
        }
        Err(KmipError::AllServersFailed(failures))
    }

    /// Negotiate the version (DiscoverVersions) and learn the server's
    /// operations (Query), once.
    pub async fn facts(&self) -> Result<&ServerFacts, KmipError> {
        self.facts
            .get_or_try_init(|| async {
                let version = match self.pinned_version {
                    Some(v) => v,
                    None => self.negotiate().await?,
                };
                let (results, server) = self
                    .send(version, &[Request::Query { functions: vec![enums::query_function::QUERY_OPERATIONS, enums::query_function::QUERY_OBJECTS, enums::query_function::QUERY_SERVER_INFORMATION] }])
                    .await?;
                let r = &results[0];
                if !r.is_success() {
                    return Err(KmipError::Refused { server, operation: "Query".into(), reason: r.describe_failure(), code: r.reason });
                }
                let query = r.query().map_err(|e| KmipError::Protocol { server: server.clone(), reason: e.0 })?;
                Ok(ServerFacts { version, operations: query.operation_names(), vendor: query.vendor.clone(), query, server })
            })
            .await
    }

    async fn negotiate(&self) -> Result<Version, KmipError> {
        // DiscoverVersions exists from KMIP 1.1; a 1.0 server refuses it.
        let (results, server) = self.send(Version::new(1, 1), &[Request::DiscoverVersions { versions: SUPPORTED_VERSIONS.to_vec() }]).await?;
        let r = &results[0];
        if !r.is_success() {
            tracing::info!(server = %server, reason = %r.describe_failure(), "DiscoverVersions refused; assuming KMIP 1.0");
            return Ok(Version::new(1, 0));
        }
        let offered = r.versions().map_err(|e| KmipError::Protocol { server: server.clone(), reason: e.0 })?;
        // The server lists what it supports of ours, in its preference; take
        // the highest we both speak.
        let mut common: Vec<Version> = offered.iter().copied().filter(|v| SUPPORTED_VERSIONS.contains(v)).collect();
        common.sort();
        common.pop().ok_or_else(|| KmipError::NoCommonVersion {
            server,
            offered: if offered.is_empty() { "none".into() } else { offered.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ") },
        })
    }

    /// Send a batch at the negotiated version; every item must succeed.
    pub async fn call(&self, batch: &[Request]) -> Result<Vec<BatchResult>, KmipError> {
        let version = self.facts().await?.version;
        let (results, server) = self.send(version, batch).await?;
        for (req, r) in batch.iter().zip(&results) {
            if !r.is_success() {
                return Err(KmipError::Refused { server, operation: format!("{req:?}"), reason: r.describe_failure(), code: r.reason });
            }
        }
        Ok(results)
    }

    /// One request, one result.
    pub async fn call_one(&self, request: Request) -> Result<BatchResult, KmipError> {
        Ok(self.call(std::slice::from_ref(&request)).await?.remove(0))
    }

    /// Round-trip time of a Query (for `kms probe`).
    pub async fn ping(&self) -> Result<Duration, KmipError> {
        let start = Instant::now();
        self.call_one(Request::Query { functions: vec![enums::query_function::QUERY_OPERATIONS] }).await?;
        Ok(start.elapsed())
    }

    /// Close every pooled connection (tests; after configuration changes).
    pub fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Convert a protocol-level response problem.
pub fn protocol(server: &str, e: messages::ResponseError) -> KmipError {
    KmipError::Protocol { server: server.to_owned(), reason: e.0 }
}
