//! The HTTP(S) server loop shared by `keybridge serve` and `keybridge
//! media-agent`: accept, TLS handshake (when configured), HTTP/1.1 through
//! hyper, and graceful shutdown — on the shutdown signal the listener closes,
//! in-flight requests finish (up to a grace period), idle connections close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use keybridge_proto::api::{ErrorBody, ErrorDetail};
use keybridge_proto::{Error, ErrorKind};

/// An error answer of the service or the MediaAgent: status, kind and
/// message (never secret material), sent as [`keybridge_proto::api::ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
    retriable: bool,
}

impl ApiError {
    /// An answer of `kind`, with the HTTP status that kind maps to.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { status, kind, message: message.into(), retriable: kind == ErrorKind::Busy }
    }

    /// The same answer with a more precise status than its kind's (413 for
    /// a body too large, 408 for one too slow: both are input errors).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<Error> for ApiError {
    /// The status and kind come from the error's [`ErrorKind`].
    /// A transient KMS failure is answered retriable, with a message that
    /// says so.
    fn from(e: Error) -> Self {
        if e.is_transient() {
            let message = format!("{e}; the KMS is unreachable or failing for now: nothing was changed, and the request can be retried");
            return ApiError { retriable: true, ..ApiError::new(e.kind(), message) };
        }
        ApiError::new(e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { kind: self.kind, message: self.message, retriable: self.retriable } };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The fallback route: a JSON 404 naming the path.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route {}", uri.path()))
}

/// Why a request carries no usable `Authorization: Bearer` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    Missing,
    Malformed,
    NotBearer,
}

/// The token of a request's `Authorization: Bearer <token>` header (the
/// operator token at the service, a job token at the MediaAgent).
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, BearerError> {
    let value = headers.get(axum::http::header::AUTHORIZATION).ok_or(BearerError::Missing)?;
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    value.strip_prefix("Bearer ").ok_or(BearerError::NotBearer)
}

/// Time a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers, counted from the moment
/// the connection waits for them (also while an open connection is idle
/// between requests), so a silent or byte-a-second client is dropped.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a peer may take no bytes of a response while one is being written
/// (the service's; the MediaAgent uses its idle limit). A client that sends
/// requests and never reads the answers is dropped once the socket buffers
/// are full and this passes, so it cannot hold a connection slot for ever.
/// A slow reader that takes anything within it keeps its connection.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once; a connection beyond it is closed at once, so
/// idle sockets cannot take every file descriptor. Slow clients are shed by
/// the timeouts above long before this many pile up. Lower where the
/// process may not open that many files (see `connection_cap`).
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept free of connections: the catalog, the store's files,
/// KMS connections, logs.
const RESERVED_FDS: u64 = 256;

/// How many connections this process may hold: its soft limit on open files
/// is first raised to the hard limit, then [`RESERVED_FDS`] are kept back.
fn connection_cap() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || (limit.current.is_some() && limit.maximum.is_none()) {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "could not raise the open-file limit");
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let cap = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).clamp(64, MAX_CONNECTIONS);
    if cap < MAX_CONNECTIONS {
        tracing::warn!(cap, open_file_limit = soft, "the open-file limit allows fewer connections than {MAX_CONNECTIONS}");
    }
    cap
}

/// Serve `router` on `listener` until `shutdown` resolves, then wait up to
/// `grace` for in-flight requests. A connection whose peer takes no bytes
/// of a pending write for `write_stall` is closed. Returns how many
/// connections were still open when the grace period ran out (0 on a clean
/// drain).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    write_stall: Duration,
) -> usize {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(crate::SERVER_READ_BUFFER);
    let builder = builder.http1_only();
    let cap = connection_cap();
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = cap, "connection refused: too many open connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The clock runs only while a write waits for the peer to take bytes.
        let mut tcp = tokio_io_timeout::TimeoutStream::new(tcp);
        // Capped: the deadline is added to the clock, and a limit meant
        // as "never" would overflow it.
        tcp.set_write_timeout(Some(write_stall.min(Duration::from_secs(365 * 86_400))));
        let tcp = Box::pin(tcp);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        match &acceptor {
            Some(acceptor) => {
                // The handshake runs in its own task so a slow client cannot
                // stall the accept loop; the connection joins the graceful
                // set once it speaks HTTP.
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // rustls reads at most one record (16 KiB) per call; a
                    // buffer below it turns a large upload's 65 000 reads
                    // per GiB into 16 000.
                    let tcp = tokio::io::BufReader::with_capacity(crate::SERVER_READ_BUFFER, tcp);
                    let _slot = slot;
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        connection_error(peer, &*e, write_stall);
                    }
                });
            }
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        connection_error(peer, &*e, write_stall);
                    }
                });
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(connections = open, "shutting down: waiting for in-flight requests");
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}

/// Log how a connection ended with an error: a peer dropped by the write
/// deadline as a warning (an operator should see who does that), the rest
/// (resets, malformed requests) at debug.
fn connection_error(peer: std::net::SocketAddr, e: &(dyn std::error::Error + 'static), write_stall: Duration) {
    if write_deadline_hit(e) {
        tracing::warn!(%peer, secs = write_stall.as_secs(), "connection closed: the peer took nothing of an answer for the write limit");
    } else {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Whether a connection's error is the write deadline's: a `TimedOut` made
/// by the deadline carries no OS error number, while the kernel's own
/// ETIMEDOUT (a peer gone without a word, keepalive or retransmissions
/// given up) does, and is not the peer refusing to read.
fn write_deadline_hit(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::TimedOut && io.raw_os_error().is_none())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Far more than the socket buffers of both ends hold.
    const BODY: usize = 16 << 20;

    /// A GET of a 16 MiB answer, with `recv_buffer` as the socket's receive
    /// buffer where given.
    async fn ask(addr: std::net::SocketAddr, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
        s
    }

    /// The write deadline's own error is told apart from the kernel's
    /// ETIMEDOUT (a vanished peer) and from other connection errors, so
    /// only a peer that took nothing is logged as one.
    #[tokio::test]
    async fn only_the_write_deadline_counts_as_a_peer_that_takes_nothing() {
        // The deadline's own error, as a connection gets it: a stream that
        // takes nothing (its reader never reads) past the limit.
        let (near, _far) = tokio::io::duplex(64);
        let mut stream = tokio_io_timeout::TimeoutStream::new(near);
        stream.set_write_timeout(Some(Duration::from_millis(50)));
        let mut stream = Box::pin(stream);
        let mut err = None;
        for _ in 0..64 {
            if let Err(e) = stream.write_all(&[0u8; 64]).await {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the write deadline ended the writes");
        // As hyper hands it over: the I/O error is the source of its own.
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection error")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(write_deadline_hit(&Wrapped(err)));
        // The kernel's ETIMEDOUT (a vanished peer) is something else.
        let kernel = std::io::Error::from_raw_os_error(rustix::io::Errno::TIMEDOUT.raw_os_error());
        assert_eq!(kernel.kind(), std::io::ErrorKind::TimedOut);
        assert!(!write_deadline_hit(&Wrapped(kernel)));
        assert!(!write_deadline_hit(&Wrapped(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
    }

    /// A peer that takes nothing of an answer loses its connection once
    /// the write has waited `write_stall`; one that keeps reading (64 KiB
    /// every 20 ms) gets the whole answer. Without the write deadline the
    /// first one would be served whole whenever it chose to read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_takes_nothing_is_dropped_and_a_reading_one_is_not() {
        let router = axum::Router::new().route("/big", axum::routing::get(|| async { vec![7u8; BODY] }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, None, router, async { let _ = stopped.await; }, Duration::from_secs(2), Duration::from_secs(1)));

        let mut stalled = ask(addr, Some(16 << 10)).await;
        let mut reader = ask(addr, None).await;
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // Headers and body, then the connection stays open (keep-alive).
        while got <= BODY {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await.expect("the reader timed out") {
                Ok(0) => panic!("the reading peer's connection was closed after {got} bytes"),
                Ok(n) => got += n,
                Err(e) => panic!("the reading peer's connection broke after {got} bytes: {e}"),
            }
        }

        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest)).await.expect("the stalled connection was not closed");
        assert!(rest.len() < BODY, "the stalled peer was served all {} bytes ({read:?})", rest.len());

        drop((reader, stalled));
        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), 0, "connections left open at shutdown");
    }
}
