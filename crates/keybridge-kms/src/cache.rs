//! A small TTL cache for unwrapped KEKs, keyed by pool id. Used by every
//! backend so that restoring many DEKs of one pool costs one unwrap.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{BackendError, PoolKek};
use crate::crypto::PrivateKek;

/// Cached values expire `ttl` after insertion. Expired entries are dropped
/// (and so zeroized or destroyed by their `Drop`) on the next access.
#[derive(Debug)]
pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<i64, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The live value for `key`, if any.
    pub async fn get(&self, key: i64) -> Option<V> {
        let mut map = self.entries.lock().await;
        let now = Instant::now();
        map.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        map.get(&key).map(|(_, v)| v.clone())
    }

    pub async fn insert(&self, key: i64, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        self.entries.lock().await.insert(key, (Instant::now(), value));
    }

    pub async fn remove(&self, key: i64) {
        self.entries.lock().await.remove(&key);
    }

    pub async fn clear(&self) {
        self.entries.lock().await.clear();
    }
}

/// Hit and miss counts of a KEK cache, for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl CacheStats {
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (hits, misses)
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// KEKs held in software (built-in and KMIP backends): the parsed private
/// key, cached per pool; DEKs are decrypted off the async runtime.
#[derive(Debug)]
pub struct SoftwareKeks {
    cache: TtlCache<Arc<PrivateKek>>,
    pub stats: CacheStats,
}

impl SoftwareKeks {
    pub fn new(ttl: Duration) -> Self {
        SoftwareKeks { cache: TtlCache::new(ttl), stats: CacheStats::default() }
    }

    /// Decrypt `encrypted` with the pool's KEK; on a cache miss `unwrap`
    /// produces the KEK's PKCS#8 (from the KMS).
    pub async fn decrypt_dek<F, Fut>(&self, kek: &PoolKek<'_>, encrypted: &[u8], unwrap: F) -> Result<Zeroizing<Vec<u8>>, BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Zeroizing<Vec<u8>>, BackendError>>,
    {
        let cached = self.cache.get(kek.pool_id).await;
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
                self.cache.insert(kek.pool_id, private.clone()).await;
                private
            }
        };
        let hash = kek.oaep_hash;
        let ct = encrypted.to_vec();
        tokio::task::spawn_blocking(move || private.decrypt(hash, &ct))
            .await
            .map_err(|source| BackendError::Task { task: "DEK decryption task", source })?
            .map_err(|e| BackendError::DekDecrypt { pool: kek.pool_name.to_owned(), detail: e.to_string() })
    }

    pub async fn clear(&self) {
        self.cache.clear().await;
    }
}
