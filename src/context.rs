//! [`Keybridge`]: the configuration, the catalog and the backends opened on
//! demand. Every flow takes one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::backend::{self, BackendError, KeyBackend};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::{Error, Result};

/// A running keybridge: configuration, catalog, backends.
#[derive(Debug)]
pub struct Keybridge {
    config: Config,
    catalog: Arc<Catalog>,
    backends: Mutex<HashMap<String, Arc<dyn KeyBackend>>>,
    /// KMS whose login was refused, with (token, reason): never tried again
    /// by this process, because tokens lock the PIN after a few wrong tries
    /// and a long-running service would otherwise retry on every request
    /// and health probe.
    refused: std::sync::Mutex<HashMap<String, (String, String)>>,
}

impl Keybridge {
    /// Open the catalog named by the configuration. Backends are opened
    /// lazily, so a dead HSM does not stop commands that do not need it.
    pub fn open(config: Config) -> Result<Self> {
        let catalog = Arc::new(Catalog::open(&config.catalog.path)?);
        Ok(Keybridge { config, catalog, backends: Mutex::new(HashMap::new()), refused: Default::default() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The backend for `[[kms]] name`, opened on first use.
    pub async fn backend(&self, name: &str) -> Result<Arc<dyn KeyBackend>> {
        let mut map = self.backends.lock().await;
        if let Some(b) = map.get(name) {
            return Ok(b.clone());
        }
        let cfg = self.config.kms(name)?;
        if let Some((token, reason)) = self.refused.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Err(Error::Backend {
                kms: name.to_owned(),
                source: BackendError::Login {
                    token: token.clone(),
                    reason: format!("{reason}; not retried, so the token does not lock the PIN: fix the PIN and restart"),
                },
            });
        }
        let b = match backend::open(cfg).await {
            Ok(b) => b,
            Err(e) => {
                if let BackendError::Login { token, reason } = &e {
                    self.refused.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), (token.clone(), reason.clone()));
                }
                return Err(Error::backend(name)(e));
            }
        };
        map.insert(name.to_owned(), b.clone());
        Ok(b)
    }

    /// Open (if needed) and probe the backend for `[[kms]] name`.
    pub async fn probe(&self, name: &str) -> Result<backend::ProbeReport> {
        self.backend(name).await?.probe().await.map_err(Error::backend(name))
    }

    /// Forget an opened backend (after a failed health probe), so the next
    /// use opens it afresh.
    pub async fn forget_backend(&self, name: &str) {
        self.backends.lock().await.remove(name);
    }

    /// The backends opened so far, by name.
    pub async fn open_backends(&self) -> Vec<(String, Arc<dyn KeyBackend>)> {
        self.backends.lock().await.iter().map(|(n, b)| (n.clone(), b.clone())).collect()
    }
}
