//! What a certificate says about itself, read with `x509-parser`: subject,
//! issuer, serial, validity, names and extended key usages. keybridge uses
//! it to report when its certificates expire (`kms probe`, the service's
//! `keybridge_cert_expiry_seconds`) and to say which certificate a TLS
//! failure was about. Nothing here verifies anything: rustls does that.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate closer than this to its notAfter is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

const DAY: i64 = 86_400;

/// The facts of one certificate that operators act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject distinguished name, RFC 4514 style (`CN=..., O=...`).
    pub subject: String,
    pub issuer: String,
    /// The serial number in hex, colon-separated.
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Whether the basicConstraints extension says CA.
    pub is_ca: bool,
    /// subjectAltName entries as `DNS:name` / `IP:address`.
    pub names: Vec<String>,
    /// Extended key usages (`serverAuth`, `clientAuth`, ...); empty when the
    /// certificate has no such extension (any use allowed).
    pub usages: Vec<String>,
}

impl CertSummary {
    /// Read one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertSummary, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the certificate", rest.len()));
        }
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(ip) => format!("IP:{}", ip_text(ip)),
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::RFC822Name(m) => format!("email:{m}"),
                    other => format!("{other}"),
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("subjectAltName: {e}")),
        };
        let usages = match cert.extended_key_usage() {
            Ok(Some(eku)) => {
                let e = eku.value;
                let mut u = Vec::new();
                for (set, name) in [
                    (e.server_auth, "serverAuth"),
                    (e.client_auth, "clientAuth"),
                    (e.code_signing, "codeSigning"),
                    (e.email_protection, "emailProtection"),
                    (e.time_stamping, "timeStamping"),
                    (e.ocsp_signing, "OCSPSigning"),
                    (e.any, "anyExtendedKeyUsage"),
                ] {
                    if set {
                        u.push(name.to_owned());
                    }
                }
                u.extend(e.other.iter().map(|o| o.to_id_string()));
                u
            }
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("extendedKeyUsage: {e}")),
        };
        Ok(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            names,
            usages,
        })
    }

    /// Seconds from `now` (Unix seconds) until notAfter; negative once it
    /// has passed.
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// Whether the certificate expires within [`EXPIRY_WARNING_DAYS`] of
    /// `now` (or has expired, or is not valid yet).
    pub fn needs_attention(&self, now: i64) -> bool {
        self.seconds_left(now) < EXPIRY_WARNING_DAYS * DAY || now < self.not_before
    }

    /// One line for an operator: "expired 3 days ago (2026-11-30T00:00:00Z)",
    /// "expires in 9 days (…)", "not valid until … (in 2 days)".
    pub fn validity_text(&self, now: i64) -> String {
        if now < self.not_before {
            return format!("not valid until {} ({})", rfc3339(self.not_before), span(self.not_before - now));
        }
        let left = self.seconds_left(now);
        if left < 0 {
            format!("expired {} ago ({})", span_abs(-left), rfc3339(self.not_after))
        } else {
            format!("expires in {} ({})", span_abs(left), rfc3339(self.not_after))
        }
    }
}

fn ip_text(raw: &[u8]) -> String {
    match raw.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(raw).expect("4 bytes")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(raw).expect("16 bytes")).to_string(),
        _ => format!("{raw:02x?}"),
    }
}

/// "in 3 days" / "in 5 hours" for a positive span.
fn span(seconds: i64) -> String {
    format!("in {}", span_abs(seconds))
}

/// "3 days", "5 hours", "12 minutes", "40 seconds".
pub(crate) fn span_abs(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (n, unit) = if s >= 2 * DAY as u64 {
        (s / DAY as u64, "days")
    } else if s >= 2 * 3600 {
        (s / 3600, "hours")
    } else if s >= 120 {
        (s / 60, "minutes")
    } else {
        (s, "seconds")
    };
    format!("{n} {unit}")
}

/// A Unix time as RFC 3339 UTC (`2026-12-03T23:42:10Z`).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

/// The current time, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Every certificate of a PEM file, summarised, in file order.
pub fn summarize_file(path: &Path, what: &str) -> Result<Vec<CertSummary>, String> {
    crate::tls::read_certs(path, what)?
        .iter()
        .enumerate()
        .map(|(i, c)| summarize(c).map_err(|e| format!("{what} {} (certificate {} in the file): {e}", path.display(), i + 1)))
        .collect()
}

/// One certificate, summarised.
pub fn summarize(der: &CertificateDer<'_>) -> Result<CertSummary, String> {
    CertSummary::from_der(der.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8), eku: &[rcgen::ExtendedKeyUsagePurpose]) -> CertSummary {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["kmip.example".to_owned(), "10.0.0.7".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "kmip one");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.extended_key_usages = eku.to_vec();
        let c = params.self_signed(&key).unwrap();
        summarize(c.der()).unwrap()
    }

    #[test]
    fn reads_what_the_certificate_says() {
        let s = cert((2024, 1, 1), (2030, 6, 1), &[rcgen::ExtendedKeyUsagePurpose::ServerAuth]);
        assert_eq!(s.subject, "CN=kmip one");
        assert_eq!(s.names, ["DNS:kmip.example", "IP:10.0.0.7"]);
        assert_eq!(s.usages, ["serverAuth"]);
        assert_eq!(s.not_before, 1_704_067_200);
        assert_eq!(s.not_after, 1_906_502_400);
        assert_eq!(rfc3339(s.not_after), "2030-06-01T00:00:00Z");
        assert!(!s.is_ca);
        let none = cert((2024, 1, 1), (2030, 6, 1), &[]);
        assert!(none.usages.is_empty());
    }

    #[test]
    fn expiry_arithmetic_and_text() {
        let s = cert((2024, 1, 1), (2030, 6, 1), &[]);
        let day = 86_400;
        assert_eq!(s.seconds_left(s.not_after - 10 * day), 10 * day);
        assert_eq!(s.seconds_left(s.not_after + 5), -5);
        assert!(s.needs_attention(s.not_after - 29 * day));
        assert!(!s.needs_attention(s.not_after - 31 * day));
        assert!(s.needs_attention(s.not_before - 1), "not valid yet");
        assert_eq!(s.validity_text(s.not_after - 10 * day), "expires in 10 days (2030-06-01T00:00:00Z)");
        assert_eq!(s.validity_text(s.not_after + 3 * day), "expired 3 days ago (2030-06-01T00:00:00Z)");
        assert_eq!(s.validity_text(s.not_before - 3 * 3600), "not valid until 2024-01-01T00:00:00Z (in 3 hours)");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let err = CertSummary::from_der(b"\x30\x03\x02\x01\x01").unwrap_err();
        assert!(err.starts_with("not an X.509 certificate"), "{err}");
    }
}
