//! A small TTL cache for unwrapped KEKs, keyed by pool id. Used by every
//! backend so that restoring many DEKs of one pool costs one unwrap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

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
