//! The certificates keybridge is configured with, and when each expires:
//! the service's own certificate chain (`[service] cert`), and for each
//! KMIP KMS its client certificate chain (`cert`) and its CA bundle (`ca`).
//! `kms probe` lists them, the service exports
//! `keybridge_cert_expiry_seconds` for each, and both warn when one is
//! within [`EXPIRY_WARNING_DAYS`] of its notAfter (or past it, or not
//! valid yet).
//!
//! The files are read when asked (the service: once at start; it serves
//! and connects with what it read then, so the numbers describe what it
//! uses until it is restarted).

use std::path::PathBuf;

use keybridge_kms::config::KmsConfig;
pub use keybridge_net::cert::{CertSummary, EXPIRY_WARNING_DAYS};
use serde_json::{json, Value};

use crate::config::Config;

/// One certificate from the configuration.
#[derive(Debug, Clone)]
pub struct ConfiguredCert {
    /// Which certificate it is: `service`, `service_chain` (an intermediate
    /// in the service's chain file), `kmip_client`, `kmip_client_chain`,
    /// `kmip_ca`. The `cert` label of the metric.
    pub role: &'static str,
    /// The `[[kms]]` entry it belongs to; `None` for the service's.
    pub kms: Option<String>,
    /// The file it was read from.
    pub path: PathBuf,
    pub summary: CertSummary,
}

impl ConfiguredCert {
    /// "KMIP client certificate /etc/kb/client.pem of KMS 'appliance'".
    pub fn describe(&self) -> String {
        let what = match self.role {
            "service" => "service certificate",
            "service_chain" => "CA certificate in the service's chain",
            "kmip_client" => "KMIP client certificate",
            "kmip_client_chain" => "CA certificate in the KMIP client chain",
            "kmip_ca" => "KMIP CA certificate",
            other => other,
        };
        match &self.kms {
            Some(kms) => format!("{what} {} of KMS '{kms}'", self.path.display()),
            None => format!("{what} {}", self.path.display()),
        }
    }

    /// Seconds until notAfter at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.summary.seconds_left(now)
    }

    /// The warning for an operator when the certificate is within
    /// [`EXPIRY_WARNING_DAYS`] of expiry, expired, or not valid yet.
    pub fn warning(&self, now: i64) -> Option<String> {
        if !self.summary.needs_attention(now) {
            return None;
        }
        let todo = if self.seconds_left(now) < 0 {
            "TLS connections that need it fail: renew it now"
        } else if now < self.summary.not_before {
            "TLS connections that need it fail until then: check this host's clock, or reissue it"
        } else {
            "renew it before then"
        };
        Some(format!("{} ({}) {}: {todo}", self.describe(), self.summary.subject, self.summary.validity_text(now)))
    }

    pub fn to_json(&self, now: i64) -> Value {
        json!({
            "cert": self.role,
            "kms": self.kms,
            "path": self.path,
            "subject": self.summary.subject,
            "issuer": self.summary.issuer,
            "serial": self.summary.serial,
            "not_before": keybridge_net::cert::rfc3339(self.summary.not_before),
            "not_after": keybridge_net::cert::rfc3339(self.summary.not_after),
            "expires_in_seconds": self.seconds_left(now),
            "warning": self.warning(now),
        })
    }
}

/// The configured certificates of the service (when `with_service`) and of
/// the KMIP entries named in `kms` (all of them when `None`). A file that
/// cannot be read or parsed is reported in the second list and left out.
pub fn configured(config: &Config, kms: Option<&[String]>, with_service: bool) -> (Vec<ConfiguredCert>, Vec<String>) {
    let mut certs = Vec::new();
    let mut errors = Vec::new();
    let mut add = |path: &PathBuf, what: &str, first: &'static str, rest: &'static str, owner: Option<&str>| match keybridge_net::cert::summarize_file(path, what) {
        Ok(list) => {
            for (i, summary) in list.into_iter().enumerate() {
                certs.push(ConfiguredCert { role: if i == 0 { first } else { rest }, kms: owner.map(str::to_owned), path: path.clone(), summary });
            }
        }
        Err(e) => errors.push(e),
    };
    if with_service {
        if let Some(svc) = &config.service {
            add(&svc.cert, "service certificate", "service", "service_chain", None);
        }
    }
    for k in &config.kms {
        let KmsConfig::Kmip(c) = k else { continue };
        if kms.is_some_and(|names| !names.iter().any(|n| n == &c.name)) {
            continue;
        }
        add(&c.cert, "KMIP client certificate", "kmip_client", "kmip_client_chain", Some(&c.name));
        add(&c.ca, "KMIP CA bundle", "kmip_ca", "kmip_ca", Some(&c.name));
    }
    (certs, errors)
}

/// Log a warning for each certificate that needs attention; returns them.
pub fn log_warnings(certs: &[ConfiguredCert], now: i64) -> Vec<String> {
    let warnings: Vec<String> = certs.iter().filter_map(|c| c.warning(now)).collect();
    for w in &warnings {
        tracing::warn!(certificate = %w, "certificate expires soon or is not valid");
    }
    warnings
}

/// What `kms probe` adds for the probed KMS entries and the service: the
/// JSON (`certificates`, `certificate_warnings`) and the text.
pub fn probe_section(config: &Config, kms: &[String]) -> (Value, Value, String) {
    let now = keybridge_net::cert::now();
    let (certs, errors) = configured(config, Some(kms), true);
    let warnings = log_warnings(&certs, now);
    let mut text = String::new();
    if !certs.is_empty() || !errors.is_empty() {
        text += "certificates:\n";
    }
    for c in &certs {
        text += &format!("  {} ({}): {}\n", c.describe(), c.summary.subject, c.summary.validity_text(now));
    }
    for e in &errors {
        text += &format!("  unreadable: {e}\n");
    }
    for w in &warnings {
        text += &format!("warning: {w}\n");
    }
    let warnings: Vec<Value> = warnings.into_iter().map(Value::from).chain(errors.into_iter().map(Value::from)).collect();
    (Value::Array(certs.iter().map(|c| c.to_json(now)).collect()), Value::Array(warnings), text)
}
