//! TLS material shared by the service, the MediaAgent, the backup client and
//! the KMIP client: PEM loading, rustls configurations on the ring provider
//! (TLS 1.3 and 1.2 only), and the self-signed localhost certificate that
//! `keybridge init` makes for a first run.
//!
//! Errors are plain strings naming the file and what is wrong with it; each
//! caller wraps them in its own error type.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every keybridge TLS endpoint uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1, unencrypted).
pub fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// A root store holding only the CAs in `path`: a peer is trusted because
/// the operator said so, never because of the system's roots.
pub fn roots(path: &Path, what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(path, what)? {
        roots.add(c).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Client configuration trusting only `ca`, with an optional client
/// certificate and key.
pub fn client_config(ca: &Path, client_auth: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots(ca, "CA bundle")?);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert, "client certificate")?, read_key(key, "client key")?)
            .map_err(|e| format!("client certificate {} / key {}: {e}", cert.display(), key.display())),
    }
}

/// Server configuration from a certificate chain and key (no client
/// certificates asked for). ALPN offers HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert, "server certificate")?, read_key(key, "server key")?)
        .map_err(|e| format!("server certificate {} / key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1/::1:
/// (certificate PEM, private key PEM). For first runs and tests; operators
/// put their own certificate in the configuration.
pub fn self_signed_localhost() -> Result<(String, zeroize::Zeroizing<String>), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("generating the service key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| format!("certificate names: {e}"))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "keybridge service (self-signed)");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| format!("self-signing the service certificate: {e}"))?;
    Ok((cert.pem(), zeroize::Zeroizing::new(key.serialize_pem())))
}
