//! One PKCS#11 context per module per process, and its re-initialisation.
//!
//! C_Initialize is called once per module path; a module that another part
//! of the process already initialised (CKR_CRYPTOKI_ALREADY_INITIALIZED) is
//! used as it is.
//!
//! When a module's sessions cannot be reopened (a network HSM rebooted, the
//! `p11-kit server` behind `p11-kit-client.so` restarted: every call then
//! answers CKR_DEVICE_ERROR until the module is finalised and initialised
//! again), [`Module::reinitialize`] waits for the calls in flight to end,
//! calls C_Finalize, and loads and initialises the module again. Each such
//! step starts a new *generation*: sessions and object handles of an older
//! one are never used again, and never closed either (after C_Initialize a
//! module may hand out the same handle numbers to new sessions), only
//! forgotten. Attempts are at most one per [`REINIT_INTERVAL`]; calls in
//! between fail at once with [`BackendError::ModuleDown`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::BackendError;

/// At most one re-initialisation attempt of a module per this interval.
pub(super) const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// A loaded module.
#[derive(Debug)]
pub(super) struct Module {
    pub path: PathBuf,
    state: RwLock<Loaded>,
    /// Held shared by every PKCS#11 call sequence, exclusively by a
    /// re-initialisation: it waits for the calls in flight, and new calls
    /// wait for it.
    calls: RwLock<()>,
}

#[derive(Debug)]
struct Loaded {
    /// The one function list of this module in this process, initialised;
    /// every call goes through it (p11-kit hands each caller its own).
    /// `None` between a C_Finalize and a successful C_Initialize.
    ctx: Option<Pkcs11>,
    generation: u64,
    /// When the module was last initialised again, and why it went, or
    /// why initialising it failed.
    last: Option<(Instant, String)>,
}

/// Load the module at `path` and initialise it.
fn load(path: &Path) -> Result<Pkcs11, String> {
    let ctx = Pkcs11::new(path).map_err(|e| format!("cannot be loaded: {e}"))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(CkError::Pkcs11(rv, _)) => Err(format!("C_Initialize failed: {}", super::rv::ckr_name(rv))),
        Err(e) => Err(format!("C_Initialize failed: {e}")),
    }
}

impl Module {
    /// The initialised context and its generation, or `ModuleDown`.
    pub(super) fn ctx(&self) -> Result<(Pkcs11, u64), BackendError> {
        let l = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &l.ctx {
            Some(ctx) => Ok((ctx.clone(), l.generation)),
            None => Err(self.down(&l)),
        }
    }

    /// The current generation.
    pub(super) fn generation(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).generation
    }

    /// Hold while making PKCS#11 calls (see the field). Never held while
    /// dropping a session or asking for a re-initialisation.
    pub(super) fn calls(&self) -> RwLockReadGuard<'_, ()> {
        self.calls.read().unwrap_or_else(|e| e.into_inner())
    }

    fn down(&self, l: &Loaded) -> BackendError {
        let (since, reason) = match &l.last {
            Some((at, why)) => (at.elapsed().as_secs(), why.clone()),
            None => (0, "finalised, not yet initialised again".into()),
        };
        BackendError::ModuleDown { module: self.path.display().to_string(), since_secs: since, reason }
    }

    /// Finalise and initialise the module again, because a call on
    /// generation `seen` found it gone (`why`). Does nothing if that was
    /// already done since `seen`; fails at once, without waiting for the
    /// call gate, while the last attempt is younger than
    /// [`REINIT_INTERVAL`], so a module that is still gone is not hammered.
    /// An attempt itself holds the gate exclusively while the module
    /// loads: calls on this module wait for it (C_Initialize of a network
    /// module may take its connect timeout).
    pub(super) fn reinitialize(&self, seen: u64, why: &str) -> Result<(), BackendError> {
        let settled = |l: &Loaded| -> Option<Result<(), BackendError>> {
            if l.generation != seen && l.ctx.is_some() {
                return Some(Ok(()));
            }
            l.last.as_ref().is_some_and(|(at, _)| at.elapsed() < REINIT_INTERVAL).then(|| Err(self.down(l)))
        };
        if let Some(r) = settled(&self.state.read().unwrap_or_else(|e| e.into_inner())) {
            return r;
        }
        let _drained = self.calls.write().unwrap_or_else(|e| e.into_inner());
        let mut l = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = settled(&l) {
            return r;
        }
        if let Some(old) = l.ctx.take() {
            // Ends every session of the old list (the module's, or its
            // connection to a p11-kit server). Its error changes nothing.
            let finalized = old.finalize();
            l.generation += 1;
            tracing::warn!(module = %self.path.display(), cause = why, ?finalized, "PKCS#11 module gone; finalised, initialising it again");
        }
        match load(&self.path) {
            Ok(ctx) => {
                // A new generation for every context, so that a caller who
                // saw the module down (after a failed attempt) is not
                // mistaken for one who saw this context fail.
                l.generation += 1;
                l.ctx = Some(ctx);
                l.last = Some((Instant::now(), why.to_owned()));
                tracing::warn!(module = %self.path.display(), generation = l.generation, "PKCS#11 module initialised again");
                Ok(())
            }
            Err(reason) => {
                l.last = Some((Instant::now(), reason));
                Err(self.down(&l))
            }
        }
    }

    /// [`Module::reinitialize`], first waiting out [`REINIT_INTERVAL`]
    /// since the last attempt instead of failing (for a caller's own
    /// bounded attempts, such as opening a backend).
    pub(super) fn reinitialize_when_allowed(&self, seen: u64, why: &str) -> Result<(), BackendError> {
        let wait = self.state.read().unwrap_or_else(|e| e.into_inner()).last.as_ref().map(|(at, _)| REINIT_INTERVAL.saturating_sub(at.elapsed()));
        std::thread::sleep(wait.unwrap_or_default());
        self.reinitialize(seen, why)
    }
}

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = LazyLock::new(Default::default);

/// The lock of the token `identity` (manufacturer, model, serial)'s object
/// store. A call sequence that creates or destroys a token object holds it
/// exclusively, so such writes never run at once (SoftHSM2 2.6 answered
/// CKR_GENERAL_ERROR to concurrent master-key creation). On SoftHSM2 the
/// worker's call sequences that only read also hold it shared: in
/// SoftHSM2 2.6.1 a new object's file exists before the object joins the
/// token's list (`OSToken::createObject`), and a read that indexes the
/// token in between (`OSToken::index`) loads the file as a second object,
/// so the key could be found twice. Opening sessions, logging in and
/// listing slots do not take it. Other tokens need no read lock, and taking
/// it there would make one hung call stall every call behind a waiting
/// pool creation. Per token, not per module: one process may reach a token
/// through several modules (SoftHSM2 directly and through p11-kit's proxy
/// are one SoftHSM2 instance).
pub(super) fn token_objects(identity: &str) -> Arc<RwLock<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<RwLock<()>>>>> = LazyLock::new(Default::default);
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
    let ctx = load(&key).map_err(err)?;
    let m = Arc::new(Module { path: key.clone(), state: RwLock::new(Loaded { ctx: Some(ctx), generation: 0, last: None }), calls: RwLock::new(()) });
    map.insert(key, m.clone());
    Ok(m)
}
