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

/// Who keybridge was talking to when a TLS connection failed, and where
/// the operator changes what was wrong: the pieces of [`explain`]'s
/// message.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The peer as the message names it ("the server"; the caller's error
    /// adds its address).
    pub what: &'a str,
    /// Where keybridge's trusted CAs come from, e.g. "the `ca` file
    /// /etc/keybridge/kmip-ca.pem".
    pub trust: &'a str,
    /// What to change when the peer's certificate names other hosts, e.g.
    /// "connect to one of them, or set `server_name`".
    pub name_fix: &'a str,
    /// keybridge's own client certificate when it presented one: where it
    /// is configured, and what it says.
    pub own_cert: Option<(&'a str, Option<&'a crate::cert::CertSummary>)>,
}

/// What a TLS failure was about, in the terms an operator fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsCause {
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate does not name the host keybridge connected to.
    NameMismatch,
    /// The peer's certificate lacks the extended key usage for its role.
    WrongPurpose,
    /// The peer's certificate is not signed by a trusted CA.
    UnknownCa,
    /// The peer refused keybridge's own client certificate.
    OwnCertificateRefused,
    /// No TLS version both sides speak.
    NoSharedVersion,
    /// No cipher suite (or key exchange) both sides speak.
    NoSharedCipher,
    /// Anything else.
    Other,
}

/// The rustls error inside `e` or anything it wraps: tokio-rustls, hyper
/// and reqwest hand it over inside `io::Error`s, whose `source` skips the
/// wrapped error, so each `io::Error`'s inner error is looked at as well.
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e = e;
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(r) = rustls_error(inner) {
                return Some(r);
            }
        }
        e = e.source()?;
    }
}

/// Which of the [`TlsCause`]s a rustls error is.
pub fn classify(err: &rustls::Error) -> TlsCause {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, PeerIncompatible as P};
    match err {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => TlsCause::Expired,
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => TlsCause::NotYetValid,
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => TlsCause::NameMismatch,
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => TlsCause::WrongPurpose,
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => TlsCause::UnknownCa,
        E::AlertReceived(
            A::BadCertificate | A::UnsupportedCertificate | A::CertificateRevoked | A::CertificateExpired | A::CertificateUnknown | A::UnknownCA | A::AccessDenied | A::CertificateRequired,
        ) => TlsCause::OwnCertificateRefused,
        E::AlertReceived(A::ProtocolVersion) | E::PeerIncompatible(P::ServerDoesNotSupportTls12Or13 | P::ServerTlsVersionIsDisabledByOurConfig | P::Tls12NotOffered | P::Tls12NotOfferedOrEnabled | P::SupportedVersionsExtensionRequired) => {
            TlsCause::NoSharedVersion
        }
        E::AlertReceived(A::HandshakeFailure | A::InsufficientSecurity) | E::PeerIncompatible(P::NoCipherSuitesInCommon | P::NoKxGroupsInCommon | P::NoSignatureSchemesInCommon) => TlsCause::NoSharedCipher,
        _ => TlsCause::Other,
    }
}

/// The TLS alert's name as RFC 8446 spells it.
fn alert_name(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match a {
        A::HandshakeFailure => "handshake_failure".into(),
        A::BadCertificate => "bad_certificate".into(),
        A::UnsupportedCertificate => "unsupported_certificate".into(),
        A::CertificateRevoked => "certificate_revoked".into(),
        A::CertificateExpired => "certificate_expired".into(),
        A::CertificateUnknown => "certificate_unknown".into(),
        A::UnknownCA => "unknown_ca".into(),
        A::AccessDenied => "access_denied".into(),
        A::ProtocolVersion => "protocol_version".into(),
        A::InsufficientSecurity => "insufficient_security".into(),
        A::CertificateRequired => "certificate_required".into(),
        A::DecryptError => "decrypt_error".into(),
        A::IllegalParameter => "illegal_parameter".into(),
        A::InternalError => "internal_error".into(),
        other => format!("{other:?}"),
    }
}

/// `DnsName("x")` / `IpAddress(1.2.3.4)` as webpki lists a certificate's
/// names, written `DNS:x` / `IP:1.2.3.4`.
fn presented_names(presented: &[String]) -> String {
    if presented.is_empty() {
        return "no subjectAltName at all".into();
    }
    presented
        .iter()
        .map(|p| {
            if let Some(n) = p.strip_prefix("DnsName(\"").and_then(|n| n.strip_suffix("\")")) {
                format!("DNS:{n}")
            } else if let Some(n) = p.strip_prefix("IpAddress(").and_then(|n| n.strip_suffix(')')) {
                format!("IP:{n}")
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn server_name_text(name: &rustls::pki_types::ServerName<'_>) -> String {
    match name {
        rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// What the cipher-suite refusal means and what to do, once.
const CIPHER_FIX: &str = "keybridge offers TLS 1.3 (AES-GCM, ChaCha20-Poly1305) and TLS 1.2 ECDHE suites with AES-GCM or ChaCha20-Poly1305 on P-256/P-384/X25519, nothing else; \
     enable one of those on the server (a server with an RSA certificate that offers only CBC or plain-RSA suites, as older appliances and PyKMIP do, needs ECDHE-RSA-AES-GCM enabled or an ECDSA certificate)";

/// An operator's sentence for a TLS failure with `peer`: what was wrong,
/// whose certificate it was, and what to do. It starts with the cause
/// ("certificate expired", "name mismatch", ...) so logs can be searched.
pub fn explain(err: &rustls::Error, peer: &Peer<'_>) -> String {
    use rustls::{CertificateError as C, Error as E};
    let what = peer.what;
    match err {
        E::InvalidCertificate(C::ExpiredContext { time, not_after }) => {
            let (now, end) = (time.as_secs() as i64, not_after.as_secs() as i64);
            format!(
                "certificate expired: {what} presented a certificate that expired {} ago ({}; this host's clock says {}): the server needs a renewed certificate (or this host's clock is wrong)",
                crate::cert::span_abs(now - end),
                crate::cert::rfc3339(end),
                crate::cert::rfc3339(now)
            )
        }
        E::InvalidCertificate(C::Expired) => format!("certificate expired: {what} presented an expired certificate: the server needs a renewed certificate (or this host's clock is wrong)"),
        E::InvalidCertificate(C::NotValidYetContext { time, not_before }) => {
            let (now, start) = (time.as_secs() as i64, not_before.as_secs() as i64);
            format!(
                "certificate not yet valid: {what} presented a certificate that is valid only from {} ({} from now by this host's clock, {}): check the clocks of this host and the server, or reissue the certificate",
                crate::cert::rfc3339(start),
                crate::cert::span_abs(start - now),
                crate::cert::rfc3339(now)
            )
        }
        E::InvalidCertificate(C::NotValidYet) => format!("certificate not yet valid: {what} presented a certificate that is not valid yet: check the clocks of this host and the server"),
        E::InvalidCertificate(C::NotValidForNameContext { expected, presented }) => {
            let expected = server_name_text(expected);
            format!(
                "certificate name mismatch: {what} presented a certificate for {}, not for '{expected}': {}, or reissue the certificate with '{expected}' in its subjectAltName",
                presented_names(presented),
                peer.name_fix
            )
        }
        E::InvalidCertificate(C::NotValidForName) => format!("certificate name mismatch: {what} presented a certificate that does not name the host connected to: {}", peer.name_fix),
        E::InvalidCertificate(C::InvalidPurposeContext { required, presented }) => {
            let presented = if presented.is_empty() { "nothing usable".to_owned() } else { presented.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") };
            format!(
                "certificate not for this use: {what} presented a certificate whose extendedKeyUsage allows {presented}, not {required}: reissue it with extendedKeyUsage {}",
                if *required == rustls::ExtendedKeyPurpose::ClientAuth { "clientAuth" } else { "serverAuth" }
            )
        }
        E::InvalidCertificate(C::InvalidPurpose) => format!("certificate not for this use: {what} presented a certificate whose extendedKeyUsage lacks serverAuth: reissue it with extendedKeyUsage serverAuth"),
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "unknown CA: {what} presented a certificate that no CA in {} signed: put the CA that issued it there (and any intermediate CA the server does not send), or check that this is the right server",
            peer.trust
        ),
        E::InvalidCertificate(C::BadSignature) => format!(
            "unknown CA: {what} presented a certificate whose signature does not verify against the CAs in {}: the server's chain or that file holds a different CA of the same name",
            peer.trust
        ),
        E::AlertReceived(alert) if classify(err) == TlsCause::OwnCertificateRefused => own_cert_refused(*alert, peer),
        E::AlertReceived(alert) if classify(err) == TlsCause::NoSharedVersion => format!(
            "no TLS version in common: {what} refused the versions keybridge speaks, TLS 1.3 and 1.2 (TLS alert {}): enable TLS 1.2 or 1.3 on the server",
            alert_name(*alert)
        ),
        E::PeerIncompatible(p) if classify(err) == TlsCause::NoSharedVersion => {
            format!("no TLS version in common: keybridge speaks TLS 1.3 and 1.2 only, and {what} answered with another ({p:?}): enable TLS 1.2 or 1.3 on the server")
        }
        E::AlertReceived(alert) if classify(err) == TlsCause::NoSharedCipher => {
            format!("no cipher suite in common: {what} ended the handshake with TLS alert {}, its answer when it shares no cipher suite or key exchange with keybridge: {CIPHER_FIX}", alert_name(*alert))
        }
        E::PeerIncompatible(p) if classify(err) == TlsCause::NoSharedCipher => format!("no cipher suite in common with {what} ({p:?}): {CIPHER_FIX}"),
        E::AlertReceived(alert) => format!("{what} ended the TLS handshake with alert {}", alert_name(*alert)),
        E::InvalidCertificate(other) => format!("{what} presented a certificate keybridge refuses: {other}"),
        other => format!("TLS with {what} failed: {other}"),
    }
}

/// The peer sent an alert about keybridge's own certificate (or, when it
/// presented none, about the handshake in general).
fn own_cert_refused(alert: rustls::AlertDescription, peer: &Peer<'_>) -> String {
    use rustls::AlertDescription as A;
    let what = peer.what;
    let name = alert_name(alert);
    let Some((own, summary)) = peer.own_cert else {
        return format!("{what} refused the TLS handshake with alert {name}");
    };
    let now = crate::cert::now();
    let validity = summary.map(|s| format!("; keybridge's certificate {}", s.validity_text(now))).unwrap_or_default();
    let usages = summary.map(|s| if s.usages.is_empty() { "no extendedKeyUsage".to_owned() } else { format!("extendedKeyUsage {}", s.usages.join(", ")) });
    let meaning = match alert {
        A::CertificateExpired => format!("it finds the certificate expired or not yet valid{validity}: renew it, or check the clocks"),
        A::UnknownCA => "it does not trust the CA that issued the certificate: add that CA to the server's trusted client CAs, or use a client certificate issued by a CA the server trusts".to_owned(),
        A::UnsupportedCertificate => format!(
            "it cannot use the certificate for TLS client authentication, most often because its extendedKeyUsage lacks clientAuth ({}): reissue it with extendedKeyUsage clientAuth",
            usages.unwrap_or_else(|| "not read".into())
        ),
        A::BadCertificate => match summary {
            Some(s) if now < s.not_before => format!("it finds the certificate not yet valid{validity}: check the clocks, or reissue it"),
            Some(s) if !s.usages.is_empty() && !s.usages.iter().any(|u| u == "clientAuth" || u == "anyExtendedKeyUsage") => {
                format!("its extendedKeyUsage lacks clientAuth ({}): reissue it with extendedKeyUsage clientAuth", usages.unwrap_or_default())
            }
            _ => format!("it finds the certificate malformed, not yet valid, or badly signed{validity}"),
        },
        A::CertificateRevoked => "the certificate has been revoked: issue a new one".to_owned(),
        A::CertificateRequired => "it requires a client certificate and got none".to_owned(),
        A::AccessDenied => "the certificate is valid, but the server does not allow this client".to_owned(),
        _ => format!("it finds the certificate unacceptable{validity}"),
    };
    format!("client certificate refused: {what} refused keybridge's client certificate {own} with TLS alert {name}: {meaning}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, PeerIncompatible as P};

    #[test]
    fn causes() {
        let t = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000));
        for (e, cause) in [
            (E::InvalidCertificate(C::ExpiredContext { time: t, not_after: t }), TlsCause::Expired),
            (E::InvalidCertificate(C::NotValidYetContext { time: t, not_before: t }), TlsCause::NotYetValid),
            (E::InvalidCertificate(C::NotValidForName), TlsCause::NameMismatch),
            (E::InvalidCertificate(C::InvalidPurpose), TlsCause::WrongPurpose),
            (E::InvalidCertificate(C::UnknownIssuer), TlsCause::UnknownCa),
            (E::AlertReceived(A::CertificateExpired), TlsCause::OwnCertificateRefused),
            (E::AlertReceived(A::UnknownCA), TlsCause::OwnCertificateRefused),
            (E::AlertReceived(A::ProtocolVersion), TlsCause::NoSharedVersion),
            (E::PeerIncompatible(P::ServerDoesNotSupportTls12Or13), TlsCause::NoSharedVersion),
            (E::AlertReceived(A::HandshakeFailure), TlsCause::NoSharedCipher),
            (E::PeerIncompatible(P::NoCipherSuitesInCommon), TlsCause::NoSharedCipher),
            (E::AlertReceived(A::DecodeError), TlsCause::Other),
        ] {
            assert_eq!(classify(&e), cause, "{e:?}");
        }
    }

    /// The rustls error is found under the io::Error layers tokio-rustls
    /// and hyper put around it.
    #[test]
    fn finds_the_rustls_error_inside_io_errors() {
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, E::AlertReceived(A::UnknownCA));
        let outer = std::io::Error::other(inner);
        assert!(matches!(rustls_error(&outer), Some(E::AlertReceived(A::UnknownCA))));
        assert!(rustls_error(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)).is_none());
    }

    #[test]
    fn names_as_operators_write_them() {
        assert_eq!(presented_names(&["DnsName(\"kmip.example\")".into(), "IpAddress(10.0.0.7)".into()]), "DNS:kmip.example, IP:10.0.0.7");
        assert_eq!(presented_names(&[]), "no subjectAltName at all");
    }
}
