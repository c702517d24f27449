//! Downloads of large streams from the MediaAgent on a connection of our
//! own. rustls reads at most one TLS record (16 KiB) per call on its
//! socket; under reqwest that is one system call per 16 KiB received. Here
//! the socket sits behind a 256 KiB read buffer, as on the serving side
//! (the servers in `keybridge_net::http`), which took a 1 GiB restore from ~65 000 reads to a few
//! thousand.

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

    /// The first 64 KiB of the body, for error answers.
    pub(crate) async fn head(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Ok(b)) = self.next().await {
            out.extend_from_slice(&b);
            if out.len() > 64 * 1024 {
                break;
            }
        }
        out
    }
}

/// GET `url` (http or https; https trusts only `tls`'s roots), with
/// `bearer` as the `Authorization` token.
pub(crate) async fn get(url: &str, bearer: &str, tls: &Arc<rustls::ClientConfig>, peer: &str) -> Result<Download> {
    let fail = |reason: String| Error::Unreachable { peer: peer.to_owned(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("bad URL {url}: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| fail(format!("no host in {url}")))?.trim_matches(['[', ']']).to_owned();
    let port = parsed.port_or_known_default().ok_or_else(|| fail(format!("no port in {url}")))?;
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
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| Error::Internal(format!("building request: {e}")))?;
    let response = match parsed.scheme() {
        "https" => {
            let config = tls.clone();
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(format!("bad server name {host}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(super::tls_refused(&e).unwrap_or_else(|| format!("TLS handshake failed: {e}"))))?;
            send(TokioIo::new(stream), request, peer).await?
        }
        "http" => send(TokioIo::new(tcp), request, peer).await?,
        other => return Err(fail(format!("unsupported URL scheme '{other}'"))),
    };
    let (parts, body) = response.into_parts();
    Ok(Download { status: parts.status.as_u16(), headers: parts.headers, body, peer: peer.to_owned() })
}

async fn send<I>(io: I, request: hyper::Request<http_body_util::Empty<Bytes>>, peer: &str) -> Result<hyper::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |e: hyper::Error| Error::Unreachable { peer: peer.to_owned(), reason: format!("connection failed: {e}") };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(fail)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "download connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(fail)
}
