//! Bulk transfers to and from the MediaAgent on connections of our own
//! (hyper over tokio-rustls, not reqwest), so their socket and TLS
//! buffering can be set:
//!
//! - rustls reads at most one TLS record (16 KiB) per call on its socket;
//!   under reqwest that is one system call per 16 KiB received. Here the
//!   socket sits behind a 256 KiB read buffer, as on the serving side (the
//!   servers in `keybridge_net::http`), which took a 1 GiB restore from
//!   ~65 000 reads to a few thousand.
//! - rustls holds at most 64 KiB of TLS records for the socket by default,
//!   so each 512 KiB piece of an upload went out in eight `writev` calls
//!   (a 1 GiB backup: about 18 000 of them, against 2 700 with a plain-HTTP
//!   MediaAgent), each one a pass through loopback TCP and a wake-up of the
//!   agent. An upload lets rustls hold [`UPLOAD_TLS_BUFFER`].

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use keybridge_proto::{Error, Result};


/// An open download: status, headers, and a body read frame by frame.
pub(crate) struct Download {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
    peer: String,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download").field("status", &self.status).field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl Download {
    /// A response's status, headers and body, from `peer`.
    fn of(response: hyper::Response<hyper::body::Incoming>, peer: &str) -> Self {
        let (parts, body) = response.into_parts();
        Download { status: parts.status.as_u16(), headers: parts.headers, body, peer: peer.to_owned() }
    }

    /// The next piece of the body; `None` at its end.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_) => continue, // trailers
                },
                Err(e) => return Some(Err(Error::Unreachable { peer: self.peer.clone(), reason: e.to_string() })),
            }
        }
    }

    /// The first [`ANSWER_LIMIT`] bytes of the body (a little more), for
    /// error answers.
    pub(crate) async fn head(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Ok(b)) = self.next().await {
            out.extend_from_slice(&b);
            if out.len() > ANSWER_LIMIT {
                break;
            }
        }
        out
    }

    /// The whole body of a short answer; one longer than [`ANSWER_LIMIT`]
    /// is an error, read no further.
    async fn whole(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = self.next().await {
            out.extend_from_slice(&piece?);
            if out.len() > ANSWER_LIMIT {
                return Err(Error::Unreachable { peer: self.peer, reason: format!("the answer is longer than {} KiB", ANSWER_LIMIT >> 10) });
            }
        }
        Ok(out)
    }
}

/// The most of an answer read into memory: an error's message, or the
/// MediaAgent's short JSON answer to an upload.
const ANSWER_LIMIT: usize = 64 * 1024;

/// TLS records rustls may hold for the socket on an upload: a piece the
/// backup hands over (512 KiB) and its records' overhead fit, so it is
/// written in one call.
pub(crate) const UPLOAD_TLS_BUFFER: usize = 1 << 20;

/// A connection to a MediaAgent: TLS for https, plain TCP for http.
type BulkIo = tokio_util::either::Either<tokio_rustls::client::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>>, tokio::io::BufReader<tokio::net::TcpStream>>;

/// An open connection, with what a request on it needs.
struct Opened {
    io: BulkIo,
    /// The `Host` header.
    host: String,
    /// Path and query.
    path: String,
}

/// Connect to `url` (http or https; https trusts only `tls`'s roots). With
/// `tls_buffer`, rustls may hold that many bytes of records for the socket
/// instead of its default 64 KiB.
async fn open(url: &str, tls: &Arc<rustls::ClientConfig>, peer: &str, tls_buffer: Option<usize>) -> Result<Opened> {
    let fail = |reason: String| Error::Unreachable { peer: peer.to_owned(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("bad URL {url}: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| fail(format!("no host in {url}")))?.trim_matches(['[', ']']).to_owned();
    let port = parsed.port_or_known_default().ok_or_else(|| fail(format!("no port in {url}")))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(fail(format!("unsupported URL scheme '{}'", parsed.scheme())));
    }
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| fail("timed out: connecting".into()))?
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tcp = tokio::io::BufReader::with_capacity(keybridge_net::TLS_READ_BUFFER, tcp);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let io = if parsed.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(format!("bad server name {host}: {e}")))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| fail(super::tls_refused(&e).unwrap_or_else(|| format!("TLS handshake failed: {e}"))))?;
        if let Some(limit) = tls_buffer {
            stream.get_mut().1.set_buffer_limit(Some(limit));
        }
        tokio_util::either::Either::Left(stream)
    } else {
        tokio_util::either::Either::Right(tcp)
    };
    Ok(Opened { io, host: format!("{host}:{port}"), path })
}

/// GET `url` (http or https; https trusts only `tls`'s roots), with
/// `bearer` as the `Authorization` token.
pub(crate) async fn get(url: &str, bearer: &str, tls: &Arc<rustls::ClientConfig>, peer: &str) -> Result<Download> {
    let Opened { io, host, path } = open(url, tls, peer, None).await?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| Error::Internal(format!("building request: {e}")))?;
    Ok(Download::of(send(TokioIo::new(io), request, peer).await?, peer))
}

/// PUT `body` to `url` (chunked; an `Err` item aborts the request), with
/// `bearer` as the `Authorization` token. Returns the answer's status and
/// body (at most [`ANSWER_LIMIT`]).
pub(crate) async fn put<S>(url: &str, bearer: &str, tls: &Arc<rustls::ClientConfig>, peer: &str, body: S) -> Result<(u16, Vec<u8>)>
where
    S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    use futures_util::TryStreamExt;
    let Opened { io, host, path } = open(url, tls, peer, Some(UPLOAD_TLS_BUFFER)).await?;
    let request = hyper::Request::put(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(http_body_util::StreamBody::new(body.map_ok(hyper::body::Frame::data)))
        .map_err(|e| Error::Internal(format!("building request: {e}")))?;
    let answer = Download::of(send(TokioIo::new(io), request, peer).await?, peer);
    Ok((answer.status, answer.whole().await?))
}

/// A broken exchange, named by its root cause (hyper's own message wraps
/// it: a failed upload body says only "error from user's Body stream").
fn failed(peer: &str, e: &hyper::Error) -> Error {
    let mut root = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    Error::Unreachable { peer: peer.to_owned(), reason: format!("connection failed: {root}") }
}

async fn send<I, B>(io: I, request: hyper::Request<B>, peer: &str) -> Result<hyper::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| failed(peer, &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "MediaAgent connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(|e| failed(peer, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A TLS server on loopback with a fresh self-signed certificate, and
    /// client TLS trusting only it.
    async fn tls_pair() -> (tokio::net::TcpListener, tokio_rustls::TlsAcceptor, Arc<rustls::ClientConfig>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = keybridge_net::tls::self_signed_localhost().unwrap();
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.as_bytes()).unwrap();
        let server = keybridge_net::tls::server_config(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        let client = keybridge_net::tls::client_config(&dir.path().join("c.pem"), None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (listener, tokio_rustls::TlsAcceptor::from(Arc::new(server)), Arc::new(client), dir)
    }

    /// Serve one connection: every request's body is read whole and
    /// answered 201 with its length, in JSON followed by `pad` spaces.
    fn serve_one(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, pad: usize) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                let len = req.into_body().collect().await.map(|b| b.to_bytes().len());
                let answer = match len {
                    Ok(n) => hyper::Response::builder().status(201).body(http_body_util::Full::new(Bytes::from(format!("{{\"bytes\":{n}}}{}", " ".repeat(pad))))),
                    Err(_) => hyper::Response::builder().status(400).body(http_body_util::Full::new(Bytes::new())),
                };
                Ok::<_, std::convert::Infallible>(answer.unwrap())
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        })
    }

    /// What a connection takes before a write blocks, its peer reading
    /// nothing: what the sockets hold plus what rustls may hold.
    async fn taken_before_blocking(io: &mut BulkIo) -> usize {
        let piece = vec![7u8; 64 << 10];
        let mut taken = 0;
        while let Ok(written) = tokio::time::timeout(std::time::Duration::from_millis(500), io.write(&piece)).await {
            taken += written.unwrap();
        }
        taken
    }

    /// An upload's connection lets rustls hold a whole 512 KiB piece and
    /// more (its default, 64 KiB, made each piece go out in eight writes);
    /// a download's keeps the default. Both peers read nothing, so the
    /// sockets hold the same on both connections and the difference is
    /// rustls's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_lets_rustls_hold_a_whole_piece() {
        let (listener, acceptor, tls, _dir) = tls_pair().await;
        let url = format!("https://127.0.0.1:{}/x", listener.local_addr().unwrap().port());
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                held.push(acceptor.accept(tcp).await.unwrap());
            }
            held
        });
        let mut upload = open(&url, &tls, "test", Some(UPLOAD_TLS_BUFFER)).await.unwrap().io;
        let mut download = open(&url, &tls, "test", None).await.unwrap().io;
        let (up, down) = (taken_before_blocking(&mut upload).await, taken_before_blocking(&mut download).await);
        assert!(up >= down + (512 << 10), "an upload's connection took {up} bytes before blocking, a download's {down}");
        drop(server.await.unwrap());
    }

    /// `put` carries a multi-piece body over TLS and returns the answer; a
    /// body that fails ends the upload with the body's own reason, not
    /// hyper's wrapper ("error from user's Body stream").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_carries_the_body_and_names_a_failed_ones_cause() {
        let (listener, acceptor, tls, _dir) = tls_pair().await;
        let url = format!("https://127.0.0.1:{}/v1/jobs/j/stream", listener.local_addr().unwrap().port());
        let server = serve_one(listener, acceptor, 0);
        let pieces: Vec<std::io::Result<Bytes>> = (0..6).map(|i| Ok(Bytes::from(vec![i as u8; 512 << 10]))).collect();
        let (status, answer) = put(&url, "token", &tls, "MediaAgent test", futures_util::stream::iter(pieces)).await.unwrap();
        assert_eq!((status, answer.as_ref()), (201, format!("{{\"bytes\":{}}}", 6 * (512 << 10)).as_bytes()));
        server.await.unwrap();

        let (listener, acceptor, tls, _dir) = tls_pair().await;
        let url = format!("https://127.0.0.1:{}/v1/jobs/j/stream", listener.local_addr().unwrap().port());
        let _server = serve_one(listener, acceptor, 0);
        let pieces = vec![Ok(Bytes::from(vec![1u8; 512 << 10])), Err(std::io::Error::other("archiving /data/x: Permission denied (os error 13)"))];
        let e = put(&url, "token", &tls, "MediaAgent test", futures_util::stream::iter(pieces)).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Unreachable { .. }) && text.contains("MediaAgent test") && text.contains("archiving /data/x: Permission denied"), "{text}");
    }

    /// A MediaAgent that answers an upload at length (valid JSON padded
    /// with 1 MiB of spaces) gets an error once 64 KiB are read, not its
    /// whole answer held in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overlong_upload_answer_is_refused() {
        let (listener, acceptor, tls, _dir) = tls_pair().await;
        let url = format!("https://127.0.0.1:{}/v1/jobs/j/stream", listener.local_addr().unwrap().port());
        let _server = serve_one(listener, acceptor, 1 << 20);
        let pieces = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"data"))];
        let e = put(&url, "token", &tls, "MediaAgent test", futures_util::stream::iter(pieces)).await.unwrap_err();
        assert!(e.to_string().contains("MediaAgent test") && e.to_string().contains("longer than 64 KiB"), "{e}");
        // A short answer still comes whole.
        let (listener, acceptor, tls, _dir) = tls_pair().await;
        let url = format!("https://127.0.0.1:{}/v1/jobs/j/stream", listener.local_addr().unwrap().port());
        let _server = serve_one(listener, acceptor, 1000);
        let pieces = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"data"))];
        let (status, answer) = put(&url, "token", &tls, "MediaAgent test", futures_util::stream::iter(pieces)).await.unwrap();
        assert_eq!((status, answer.len()), (201, "{\"bytes\":4}".len() + 1000));
    }
}
