//! Prometheus text metrics for `/metrics`: requests and latency per
//! operation and KMS, KMS errors, and KEK cache hits reported by the
//! backends, written by `prometheus-client` in the Prometheus text format
//! (0.0.4). Every series is created on first use; a family without series
//! is left out, and the series of a family come in no fixed order.

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One finished operation; `kms` is "-" where no KMS is involved.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    operation: String,
    kms: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: String,
    kms: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kms {
    kms: String,
}

/// One configured certificate: which one (`service`, `kmip_client`,
/// `kmip_ca`, ...), its KMS (`-` for the service's), subject and serial
/// (two CAs of one name in a bundle during a rollover differ by serial).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cert {
    cert: String,
    kms: String,
    subject: String,
    serial: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rotation {
    pool: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Pool {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// The service's own series. `prometheus-client` appends the `_total` of a
/// counter and the full stop of a help text itself.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    latency: Family<Operation, Histogram, fn() -> Histogram>,
    kms_errors: Family<Kms, Counter>,
    auth_failures: Family<Reason, Counter>,
    rotations: Family<Rotation, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Request, Counter>::default();
        let latency: Family<Operation, Histogram, fn() -> Histogram> = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let kms_errors = Family::<Kms, Counter>::default();
        let auth_failures = Family::<Reason, Counter>::default();
        let mut registry = Registry::default();
        registry.register("keybridge_requests", "Requests by operation, KMS and outcome", requests.clone());
        registry.register("keybridge_request_duration_seconds", "Request latency by operation and KMS", latency.clone());
        registry.register("keybridge_kms_errors", "Errors returned by a KMS (HSM, KMIP appliance, built-in)", kms_errors.clone());
        registry.register("keybridge_auth_failures", "Refused authentications by reason", auth_failures.clone());
        let rotations = Family::<Rotation, Counter>::default();
        registry.register("keybridge_pool_rotations", "Scheduled master-key rotations by pool and outcome (ok, error)", rotations.clone());
        Metrics { registry, requests, latency, kms_errors, auth_failures, rotations }
    }
}

impl Metrics {
    /// Count one finished operation.
    pub fn observe(&self, operation: &str, kms: &str, outcome: &str, elapsed: Duration) {
        let (operation, kms) = (operation.to_owned(), kms.to_owned());
        self.latency.get_or_create(&Operation { operation: operation.clone(), kms: kms.clone() }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&Request { operation, kms, outcome: outcome.to_owned() }).inc();
    }

    /// Count an error returned by a KMS (HSM or KMIP appliance).
    pub fn kms_error(&self, kms: &str) {
        self.kms_errors.get_or_create(&Kms { kms: kms.to_owned() }).inc();
    }

    /// Count a refused client or operator authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&Reason { reason: reason.to_owned() }).inc();
    }

    /// Count one scheduled rotation of `pool`.
    pub fn rotation(&self, pool: &str, ok: bool) {
        self.rotations.get_or_create(&Rotation { pool: pool.to_owned(), outcome: if ok { "ok" } else { "error" }.to_owned() }).inc();
    }

    /// The Prometheus text exposition; `cache` lists (kms, hits, misses),
    /// `up` lists (kms, usable, reachable) from the health checker, and
    /// `certs` the configured certificates, whose seconds to expiry are
    /// taken at `now` (Unix seconds); `key_ages` lists (pool, seconds since
    /// its last rotation or its creation).
    pub fn render(&self, cache: &[(String, u64, u64)], up: &[(String, bool, bool)], certs: &[crate::certs::ConfiguredCert], key_ages: &[(String, i64)], now: i64) -> String {
        // The backends and the health checker keep these numbers; they are
        // read once per scrape into series of their own.
        let hits = Family::<Kms, Counter>::default();
        let misses = Family::<Kms, Counter>::default();
        for (kms, h, m) in cache {
            hits.get_or_create(&Kms { kms: kms.clone() }).inc_by(*h);
            misses.get_or_create(&Kms { kms: kms.clone() }).inc_by(*m);
        }
        let kms_up = Family::<Kms, Gauge>::default();
        let kms_reachable = Family::<Kms, Gauge>::default();
        for (kms, usable, reachable) in up {
            kms_up.get_or_create(&Kms { kms: kms.clone() }).set(i64::from(*usable));
            kms_reachable.get_or_create(&Kms { kms: kms.clone() }).set(i64::from(*reachable));
        }
        let expiry = Family::<Cert, Gauge>::default();
        for c in certs {
            let labels = Cert { cert: c.role.to_owned(), kms: c.kms.clone().unwrap_or_else(|| "-".into()), subject: c.summary.subject.clone(), serial: c.summary.serial.clone() };
            expiry.get_or_create(&labels).set(c.seconds_left(now));
        }
        let ages = Family::<Pool, Gauge>::default();
        for (pool, age) in key_ages {
            ages.get_or_create(&Pool { pool: pool.clone() }).set(*age);
        }
        let mut scrape = Registry::default();
        scrape.register("keybridge_pool_key_age_seconds", "Seconds since the pool's master keys were last rotated (or the pool created)", ages);
        scrape.register("keybridge_kek_cache_hits", "Restores that found the pool's KEK open in the cache", hits);
        scrape.register("keybridge_kek_cache_misses", "Restores that had to open (unwrap) the pool's KEK", misses);
        scrape.register("keybridge_kms_up", "Whether the last probe found the KMS usable", kms_up);
        scrape.register("keybridge_kms_reachable", "Whether the last probe got an answer from the KMS", kms_reachable);
        scrape.register(
            "keybridge_cert_expiry_seconds",
            "Seconds until a configured certificate's notAfter (negative once expired), as read at service start",
            expiry,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &scrape);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition byte for byte, with one series per family (the series
    /// of a family come in no fixed order).
    #[test]
    fn exposition_text() {
        let m = Metrics::default();
        m.observe("dek_issue", "kms", "ok", Duration::from_millis(3));
        m.kms_error("kms");
        m.auth_failure("replay");
        let summary = keybridge_net::cert::CertSummary {
            subject: "CN=kmip client".into(),
            issuer: "CN=kmip ca".into(),
            serial: "01:02".into(),
            not_before: 0,
            not_after: 1_000_000,
            is_ca: false,
            names: Vec::new(),
            usages: Vec::new(),
        };
        let cert = crate::certs::ConfiguredCert { role: "kmip_client", kms: Some("kms".into()), path: "client.pem".into(), summary };
        let text = m.render(&[("kms".into(), 5, 1)], &[("kms".into(), true, true)], &[cert], &[], 1_000_000 + 86_400);
        let expected = concat!(
            "# HELP keybridge_requests_total Requests by operation, KMS and outcome.\n",
            "# TYPE keybridge_requests_total counter\n",
            "keybridge_requests_total{operation=\"dek_issue\",kms=\"kms\",outcome=\"ok\"} 1\n",
            "# HELP keybridge_request_duration_seconds Request latency by operation and KMS.\n",
            "# TYPE keybridge_request_duration_seconds histogram\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.001\"} 0\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.0025\"} 0\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.005\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.01\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.025\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.05\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.1\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.25\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"0.5\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"1\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"2.5\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"5\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"10\"} 1\n",
            "keybridge_request_duration_seconds_bucket{operation=\"dek_issue\",kms=\"kms\",le=\"+Inf\"} 1\n",
            "keybridge_request_duration_seconds_sum{operation=\"dek_issue\",kms=\"kms\"} 0.003\n",
            "keybridge_request_duration_seconds_count{operation=\"dek_issue\",kms=\"kms\"} 1\n",
            "# HELP keybridge_kms_errors_total Errors returned by a KMS (HSM, KMIP appliance, built-in).\n",
            "# TYPE keybridge_kms_errors_total counter\n",
            "keybridge_kms_errors_total{kms=\"kms\"} 1\n",
            "# HELP keybridge_auth_failures_total Refused authentications by reason.\n",
            "# TYPE keybridge_auth_failures_total counter\n",
            "keybridge_auth_failures_total{reason=\"replay\"} 1\n",
            "# HELP keybridge_kek_cache_hits_total Restores that found the pool's KEK open in the cache.\n",
            "# TYPE keybridge_kek_cache_hits_total counter\n",
            "keybridge_kek_cache_hits_total{kms=\"kms\"} 5\n",
            "# HELP keybridge_kek_cache_misses_total Restores that had to open (unwrap) the pool's KEK.\n",
            "# TYPE keybridge_kek_cache_misses_total counter\n",
            "keybridge_kek_cache_misses_total{kms=\"kms\"} 1\n",
            "# HELP keybridge_kms_up Whether the last probe found the KMS usable.\n",
            "# TYPE keybridge_kms_up gauge\n",
            "keybridge_kms_up{kms=\"kms\"} 1\n",
            "# HELP keybridge_kms_reachable Whether the last probe got an answer from the KMS.\n",
            "# TYPE keybridge_kms_reachable gauge\n",
            "keybridge_kms_reachable{kms=\"kms\"} 1\n",
            "# HELP keybridge_cert_expiry_seconds Seconds until a configured certificate's notAfter (negative once expired), as read at service start.\n",
            "# TYPE keybridge_cert_expiry_seconds gauge\n",
            "keybridge_cert_expiry_seconds{cert=\"kmip_client\",kms=\"kms\",subject=\"CN=kmip client\",serial=\"01:02\"} -86400\n",
        );
        assert_eq!(text, expected);
    }

    /// A label value is escaped: `pool_create` labels its series with the
    /// KMS name from the request body.
    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.observe("pool_create", "x\"} 1\nfake 1", "error", Duration::from_millis(1));
        let text = m.render(&[], &[], &[], &[], 0);
        assert!(text.contains("keybridge_requests_total{operation=\"pool_create\",kms=\"x\\\"} 1\\nfake 1\",outcome=\"error\"} 1\n"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
    }
}
