//! The one TTL cache of unwrapped KEKs, keyed by pool id, used by every
//! backend so that restoring many DEKs of one pool costs one unwrap: the
//! built-in and KMIP backends keep the parsed private key in memory
//! ([`SoftwareKeks`]), the PKCS#11 backend a handle to the key unwrapped in
//! the token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{BackendError, DekPlaintext, PoolKek};
use crate::crypto::PrivateKek;

/// A cached KEK's key: pool id and KEK generation.
pub(crate) type KekId = (i64, u32);

/// Values expire `ttl` after insertion; with a zero TTL nothing is kept.
/// Expired entries are dropped (and so zeroized or destroyed by their
/// `Drop`) on the next lookup. The lock is never held across an await or a
/// KMS call.
#[derive(Debug)]
pub(crate) struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<KekId, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<KekId, (Instant, V)>> {
        // A panic elsewhere cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live value for `key`, if any. Entries past their TTL, or for
    /// which `valid` says no, leave the cache first.
    pub(crate) fn get_valid(&self, key: KekId, valid: impl Fn(&V) -> bool) -> Option<V> {
        let mut map = self.entries();
        let now = Instant::now();
        map.retain(|_, (at, v)| now.duration_since(*at) < self.ttl && valid(v));
        map.get(&key).map(|(_, v)| v.clone())
    }

    /// The live value for `key`, if any.
    pub(crate) fn get(&self, key: KekId) -> Option<V> {
        self.get_valid(key, |_| true)
    }

    pub(crate) fn insert(&self, key: KekId, value: V) {
        if !self.ttl.is_zero() {
            self.entries().insert(key, (Instant::now(), value));
        }
    }

    /// Drop `key`'s entry if `is_it` says it is still the one the caller saw.
    pub(crate) fn remove_if(&self, key: KekId, is_it: impl FnOnce(&V) -> bool) {
        let mut map = self.entries();
        if map.get(&key).is_some_and(|(_, v)| is_it(v)) {
            map.remove(&key);
        }
    }

    pub(crate) fn clear(&self) {
        self.entries().clear();
    }
}

/// Hit and miss counts of a KEK cache, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct CacheStats {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl CacheStats {
    pub(crate) fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (hits, misses)
    pub(crate) fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// KEKs held in software (built-in and KMIP backends): the parsed private
/// key, cached per pool; DEKs are decrypted off the async runtime.
#[derive(Debug)]
pub(crate) struct SoftwareKeks {
    cache: TtlCache<Arc<PrivateKek>>,
    pub stats: CacheStats,
}

impl SoftwareKeks {
    pub(crate) fn new(ttl: Duration) -> Self {
        SoftwareKeks { cache: TtlCache::new(ttl), stats: CacheStats::default() }
    }

    /// Decrypt `encrypted` with the pool's KEK; on a cache miss `unwrap`
    /// produces the KEK's PKCS#8 (from the KMS).
    pub(crate) async fn decrypt_dek<F, Fut>(&self, kek: &PoolKek<'_>, encrypted: &[u8], unwrap: F) -> Result<DekPlaintext, BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Zeroizing<Vec<u8>>, BackendError>>,
    {
        let cached = self.cache.get((kek.pool_id, kek.generation));
        self.stats.record(cached.is_some());
        let private = match cached {
            Some(p) => p,
            None => {
                let pkcs8 = unwrap().await?;
                let private = Arc::new(PrivateKek::from_pkcs8_der(&pkcs8).map_err(|e| BackendError::KekUnwrap {
                    pool: kek.pool_name.to_owned(),
                    mk: kek.master_key.label.clone(),
                    detail: format!("the unwrapped bytes are not a private key: {e}"),
                })?);
                self.cache.insert((kek.pool_id, kek.generation), private.clone());
                private
            }
        };
        let hash = kek.oaep_hash;
        let ct = encrypted.to_vec();
        tokio::task::spawn_blocking(move || private.decrypt(hash, &ct))
            .await
            .map_err(|source| BackendError::Task { task: "DEK decryption task", source })?
            .map(DekPlaintext::new)
            .map_err(|e| BackendError::DekDecrypt { pool: kek.pool_name.to_owned(), detail: e.to_string() })
    }

    pub(crate) fn clear(&self) {
        self.cache.clear();
    }
}
