//! Prometheus text metrics for `/metrics`: requests and latency per
//! operation and KMS, KMS errors, and KEK cache hits reported by the
//! backends. Hand-written (a handful of counters does not need a metrics
//! framework); every series is created on first use.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// (operation, kms, outcome) — kms is "-" where no KMS is involved.
type Key = (String, String, String);

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<Key, u64>,
    latency: BTreeMap<(String, String), Histogram>,
    kms_errors: BTreeMap<String, u64>,
    auth_failures: BTreeMap<String, u64>,
}

impl Metrics {
    /// Count one finished operation.
    pub fn observe(&self, operation: &str, kms: &str, outcome: &str, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.requests.entry((operation.to_owned(), kms.to_owned(), outcome.to_owned())).or_default() += 1;
        let h = inner.latency.entry((operation.to_owned(), kms.to_owned())).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Count an error returned by a KMS (HSM or KMIP appliance).
    pub fn kms_error(&self, kms: &str) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()).kms_errors.entry(kms.to_owned()).or_default() += 1;
    }

    /// Count a refused client or operator authentication.
    pub fn auth_failure(&self, reason: &str) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()).auth_failures.entry(reason.to_owned()).or_default() += 1;
    }

    /// The Prometheus text exposition; `cache` lists (kms, hits, misses)
    /// and `up` lists (kms, usable) from the health checker.
    pub fn render(&self, cache: &[(String, u64, u64)], up: &[(String, bool)]) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(out, "# HELP keybridge_requests_total Requests by operation, KMS and outcome.");
        let _ = writeln!(out, "# TYPE keybridge_requests_total counter");
        for ((op, kms, outcome), n) in &inner.requests {
            let _ = writeln!(out, "keybridge_requests_total{{operation=\"{op}\",kms=\"{kms}\",outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keybridge_request_duration_seconds Request latency by operation and KMS.");
        let _ = writeln!(out, "# TYPE keybridge_request_duration_seconds histogram");
        for ((op, kms), h) in &inner.latency {
            let labels = format!("operation=\"{op}\",kms=\"{kms}\"");
            for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "keybridge_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "keybridge_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "keybridge_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "keybridge_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        let _ = writeln!(out, "# HELP keybridge_kms_errors_total Errors returned by a KMS (HSM, KMIP appliance, built-in).");
        let _ = writeln!(out, "# TYPE keybridge_kms_errors_total counter");
        for (kms, n) in &inner.kms_errors {
            let _ = writeln!(out, "keybridge_kms_errors_total{{kms=\"{kms}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keybridge_auth_failures_total Refused authentications by reason.");
        let _ = writeln!(out, "# TYPE keybridge_auth_failures_total counter");
        for (reason, n) in &inner.auth_failures {
            let _ = writeln!(out, "keybridge_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP keybridge_kek_cache_hits_total Restores that found the pool's KEK open in the cache.");
        let _ = writeln!(out, "# TYPE keybridge_kek_cache_hits_total counter");
        for (kms, hits, _) in cache {
            let _ = writeln!(out, "keybridge_kek_cache_hits_total{{kms=\"{kms}\"}} {hits}");
        }
        let _ = writeln!(out, "# HELP keybridge_kek_cache_misses_total Restores that had to open (unwrap) the pool's KEK.");
        let _ = writeln!(out, "# TYPE keybridge_kek_cache_misses_total counter");
        for (kms, _, misses) in cache {
            let _ = writeln!(out, "keybridge_kek_cache_misses_total{{kms=\"{kms}\"}} {misses}");
        }
        let _ = writeln!(out, "# HELP keybridge_kms_up Whether the last probe found the KMS usable.");
        let _ = writeln!(out, "# TYPE keybridge_kms_up gauge");
        for (kms, usable) in up {
            let _ = writeln!(out, "keybridge_kms_up{{kms=\"{kms}\"}} {}", u8::from(*usable));
        }
        out
    }
}
