//! [`Keybridge`]: the configuration, the catalog and the backends opened on
//! demand. Every flow takes one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use keybridge_kms::crypto::PublicKek;
use keybridge_kms::{self, BackendError, KeyBackend};
use keybridge_catalog::{Catalog, SqliteCatalog};
use crate::config::Config;
use crate::{Error, Result};

/// A KMS opened on first use (empty until then, and after a failed open).
type BackendCell = Arc<OnceCell<Arc<dyn KeyBackend>>>;

/// A running keybridge: configuration, catalog, backends.
#[derive(Debug)]
pub struct Keybridge {
    config: Config,
    catalog: Arc<dyn Catalog>,
    /// One cell per KMS name, filled by the first use. The map's lock is
    /// held only to find a cell, never while a KMS opens: a hanging HSM
    /// holds up the callers of that KMS alone.
    backends: std::sync::Mutex<HashMap<String, BackendCell>>,
    /// KMS whose login was refused, with (token, reason): never tried again
    /// by this process, because tokens lock the PIN after a few wrong tries
    /// and a long-running service would otherwise retry on every request
    /// and health probe.
    refused: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// Pool name -> SHA-256 (hex) of the public KEK this host checked
    /// against the KMS; loaded from `[catalog] kek_pins` on first use.
    kek_pins: std::sync::Mutex<Option<HashMap<String, String>>>,
    /// Pool name -> the public KEK this process found pinned or checked:
    /// later issues compare bytes, with no hashing and no parsing.
    kek_checked: std::sync::Mutex<HashMap<String, CheckedKek>>,
    /// Each client's seal key agreement, kept for its next seals within
    /// bounds (see `SealerCache`).
    sealers: keybridge_proto::seal::SealerCache,
}

/// A public KEK this process found pinned or checked: the DER the catalog
/// holds and, when it encodes to exactly those bytes, the key parsed. The
/// parse computes the key's Montgomery parameters (a 3072-bit division,
/// about 8% of a DEK issue's CPU), so an issue reuses the parsed key
/// whenever the pool's row still holds the same bytes.
#[derive(Debug)]
struct CheckedKek {
    der: Vec<u8>,
    parsed: Option<Arc<PublicKek>>,
}

impl CheckedKek {
    /// `public` is kept only if it is the key `der` encodes: a caller's
    /// key that differs is never handed out for these bytes.
    fn new(der: &[u8], public: &PublicKek) -> CheckedKek {
        let parsed = public.to_spki_der().ok().filter(|d| d == der).map(|_| Arc::new(public.clone()));
        CheckedKek { der: der.to_vec(), parsed }
    }
}

impl Keybridge {
    /// A sealer for `client`, reusing this process's agreement with it
    /// within the cache's bounds.
    pub fn sealer(&self, client: keybridge_proto::seal::Recipient<'_>) -> keybridge_proto::Result<Arc<keybridge_proto::seal::Sealer>> {
        self.sealers.sealer(client)
    }

    /// Forget the seal key agreements past their limits.
    pub fn purge_sealers(&self) {
        self.sealers.purge();
    }

    /// Open the catalog named by the configuration. Backends are opened
    /// lazily, so a dead HSM does not stop commands that do not need it.
    pub fn open(config: Config) -> Result<Self> {
        let catalog = Arc::new(SqliteCatalog::open(&config.catalog.path)?);
        Ok(Keybridge { config, catalog, backends: Default::default(), refused: Default::default(), kek_pins: Default::default(), kek_checked: Default::default(), sealers: Default::default() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The backend for `[[kms]] name`, opened on first use.
    pub async fn backend(&self, name: &str) -> Result<Arc<dyn KeyBackend>> {
        self.config.kms(name)?;
        let cell = self.backends().entry(name.to_owned()).or_default().clone();
        cell.get_or_try_init(|| self.open_backend(name)).await.cloned()
    }

    /// Drop the unwrapped KEKs every open backend caches (after a change of
    /// wrappings, so no later call uses one the catalog no longer names).
    pub async fn clear_caches(&self) {
        let open: Vec<Arc<dyn KeyBackend>> = self.backends().values().filter_map(|c| c.get().cloned()).collect();
        for backend in open {
            backend.clear_cache().await;
        }
    }

    fn backends(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackendCell>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn open_backend(&self, name: &str) -> Result<Arc<dyn KeyBackend>> {
        let cfg = self.config.kms(name)?;
        if let Some((token, reason)) = self.refused.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Err(Error::backend(name)(BackendError::Login {
                token: token.clone(),
                reason: format!("{reason}; not retried, so the token does not lock the PIN: fix the PIN and restart"),
            }));
        }
        keybridge_kms::open(cfg).await.map_err(|e| {
            if let BackendError::Login { token, reason } = &e {
                self.refused.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), (token.clone(), reason.clone()));
            }
            Error::backend(name)(e)
        })
    }

    /// Whether this process already found `kek_public` to be `pool`'s
    /// checked public KEK.
    pub(crate) fn kek_checked(&self, pool: &str, kek_public: &[u8]) -> bool {
        self.kek_checked.lock().unwrap_or_else(|e| e.into_inner()).get(pool).is_some_and(|k| k.der == kek_public)
    }

    /// `kek_public` parsed, if this process already found it to be `pool`'s
    /// checked public KEK (and parsed it then).
    pub(crate) fn checked_public_kek(&self, pool: &str, kek_public: &[u8]) -> Option<Arc<PublicKek>> {
        let checked = self.kek_checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.get(pool).filter(|k| k.der == kek_public).and_then(|k| k.parsed.clone())
    }

    /// Remember for this process that `kek_public` is `pool`'s checked
    /// public KEK, and `public` as its parse if that is what it is.
    pub(crate) fn set_kek_checked(&self, pool: &str, kek_public: &[u8], public: &PublicKek) {
        self.kek_checked.lock().unwrap_or_else(|e| e.into_inner()).insert(pool.to_owned(), CheckedKek::new(kek_public, public));
    }

    /// The pinned SHA-256 (hex) of `pool`'s public KEK, if this host has
    /// checked it against the KMS.
    pub(crate) fn kek_pin(&self, pool: &str) -> Option<String> {
        let mut pins = self.kek_pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.get_or_insert_with(|| self.load_kek_pins()).get(pool).cloned()
    }

    /// Pin `pool`'s public KEK (`sha256` hex) in memory and in the pin file.
    /// A pin file that cannot be written costs a KMS check per process, so
    /// it is a warning, not an error.
    pub(crate) fn pin_kek(&self, pool: &str, sha256: String) {
        let mut pins = self.kek_pins.lock().unwrap_or_else(|e| e.into_inner());
        // Merged into the file as it is now: other processes on this host
        // (the service, the CLI rotating a pool) pin into it too, and an
        // entry this process read earlier may be stale.
        let pins = pins.insert(self.load_kek_pins());
        pins.insert(pool.to_owned(), sha256);
        let path = &self.config.catalog.kek_pins;
        if let Err(e) = write_atomically(path, serde_json::to_string_pretty(pins).unwrap_or_default().as_bytes()) {
            tracing::warn!(path = %path.display(), error = %e, "could not record a checked public KEK; the next process checks it against the KMS again");
        }
    }

    /// The pool whose master key this host pinned as key `key_ref` of KMS
    /// `kms`, if any.
    pub(crate) fn pinned_as_master_key(&self, kms: &str, key_ref: &str) -> Option<String> {
        let value = format!("{kms}/{key_ref}");
        let mut pins = self.kek_pins.lock().unwrap_or_else(|e| e.into_inner());
        let pins = pins.insert(self.load_kek_pins());
        pins.iter().find(|(name, v)| name.ends_with("@mk") && **v == value).map(|(name, _)| name.trim_end_matches("@mk").to_owned())
    }

    /// Read the pins again from the file: another process on this host
    /// (a `pool rotate` or `pool migrate`) may have moved one.
    pub(crate) fn reload_kek_pins(&self) {
        *self.kek_pins.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.load_kek_pins());
    }

    fn load_kek_pins(&self) -> HashMap<String, String> {
        let path = &self.config.catalog.kek_pins;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "the file of checked public KEKs is unreadable; every pool is checked against the KMS again");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        }
    }

    /// Open (if needed) and probe the backend for `[[kms]] name`.
    pub async fn probe(&self, name: &str) -> Result<keybridge_kms::ProbeReport> {
        self.backend(name).await?.probe().await.map_err(Error::backend(name))
    }

    /// Forget an opened backend (after a failed health probe), so the next
    /// use opens it afresh.
    pub async fn forget_backend(&self, name: &str) {
        let forgotten = self.backends().remove(name);
        // Dropping a PKCS#11 backend's last reference waits for its workers
        // to close their sessions (seconds, at worst): neither under the
        // lock every backend lookup takes nor on a runtime thread.
        if let Some(cell) = forgotten {
            drop(tokio::task::spawn_blocking(move || drop(cell)));
        }
    }

    /// The backends opened so far, by name.
    pub async fn open_backends(&self) -> Vec<(String, Arc<dyn KeyBackend>)> {
        self.backends().iter().filter_map(|(n, cell)| Some((n.clone(), cell.get()?.clone()))).collect()
    }
}

/// Replace `path` with `contents` (a temporary file beside it, synced, then
/// renamed), so a crash leaves the old file or the new one.
pub(crate) fn write_atomically(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keybridge_kms::crypto::PrivateKek;

    #[test]
    fn a_checked_kek_keeps_only_its_own_parse() {
        let key = PrivateKek::generate(2048).unwrap().public();
        let other = PrivateKek::generate(2048).unwrap().public();
        let der = key.to_spki_der().unwrap();
        let kept = CheckedKek::new(&der, &key);
        assert_eq!(kept.der, der);
        assert_eq!(kept.parsed.as_deref(), Some(&key));
        // A key that is not what the bytes encode is not kept for them.
        let refused = CheckedKek::new(&der, &other);
        assert_eq!(refused.der, der);
        assert!(refused.parsed.is_none());
    }
}
