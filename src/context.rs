//! [`Keybridge`]: the configuration, the catalog and the backends opened on
//! demand. Every flow takes one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::backend::{self, KeyBackend};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::{Error, Result};

/// A running keybridge: configuration, catalog, backends.
#[derive(Debug)]
pub struct Keybridge {
    config: Config,
    catalog: Arc<Catalog>,
    backends: Mutex<HashMap<String, Arc<dyn KeyBackend>>>,
}

impl Keybridge {
    /// Open the catalog named by the configuration. Backends are opened
    /// lazily, so a dead HSM does not stop commands that do not need it.
    pub fn open(config: Config) -> Result<Self> {
        let catalog = Arc::new(Catalog::open(&config.catalog.path)?);
        Ok(Keybridge { config, catalog, backends: Mutex::new(HashMap::new()) })
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
        let b = backend::open(cfg).await.map_err(Error::backend(name))?;
        map.insert(name.to_owned(), b.clone());
        Ok(b)
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
