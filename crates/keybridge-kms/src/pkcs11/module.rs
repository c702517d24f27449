//! One PKCS#11 context per module per process.
//!
//! C_Initialize is called once per module path; a module that another part
//! of the process already initialised (CKR_CRYPTOKI_ALREADY_INITIALIZED) is
//! used as it is. Contexts are never finalised: other backends in the
//! process may share the module.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::BackendError;

/// A loaded and initialised module.
#[derive(Debug)]
pub(super) struct Module {
    pub path: PathBuf,
    /// The one function list of this module in this process, initialised
    /// once; every call goes through it (p11-kit hands each caller its own).
    pub ctx: Pkcs11,
}

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = LazyLock::new(Default::default);

/// The lock held while creating or destroying objects on the token
/// `identity` (manufacturer, model, serial). SoftHSM2 2.6 can answer
/// CKR_GENERAL_ERROR when two threads of one process write its object store
/// at once; such writes are rare here (pool creation and its rollback), so
/// they are serialised. Per token, not per module: one process may reach a
/// token through several modules (SoftHSM2 directly and through p11-kit's
/// proxy are one SoftHSM2 instance).
pub(super) fn token_writes(identity: &str) -> Arc<Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);
    LOCKS.lock().unwrap_or_else(|e| e.into_inner()).entry(identity.to_owned()).or_default().clone()
}

/// The process-wide context for the module at `path`.
pub(super) fn module(path: &Path) -> Result<Arc<Module>, BackendError> {
    let err = |reason: String| BackendError::Module { module: path.display().to_string(), reason };
    let key = std::fs::canonicalize(path).map_err(|e| err(format!("cannot be opened: {e}")))?;
    let mut map = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(&key) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(&key).map_err(|e| err(format!("cannot be loaded: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(CkError::Pkcs11(rv, _)) => {
            return Err(err(format!("C_Initialize failed: {}", super::rv::ckr_name(rv))))
        }
        Err(e) => return Err(err(format!("C_Initialize failed: {e}"))),
    }
    let m = Arc::new(Module { path: key.clone(), ctx });
    map.insert(key, m.clone());
    Ok(m)
}
