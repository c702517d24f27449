//! A pool of logged-in sessions on one token, and the one place PKCS#11
//! calls are run: off the async runtime (`spawn_blocking`), with a timeout,
//! and with bounded retries decided by [`super::rv::disposition`].
//!
//! `cryptoki::session::Session` is `Send` but not `Sync`: a session is used
//! by one thread at a time. The pool hands each call a session of its own
//! and takes it back afterwards; a session whose state is in doubt is
//! closed instead. Login is per application and token, so the first session
//! logs in and later ones see CKR_USER_ALREADY_LOGGED_IN, which is success.
//! The pool always keeps its idle sessions open so the login persists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use tokio::sync::Semaphore;

use super::module::Module;
use super::rv::{ckr_name, disposition, hint, Disposition};
use crate::backend::BackendError;

/// Attempts per call, including the first.
const MAX_ATTEMPTS: u32 = 3;

/// An error inside a PKCS#11 call sequence.
#[derive(Debug)]
pub enum OpError {
    /// A cryptoki call failed; `doing` says what we were doing.
    Ck { err: CkError, doing: String },
    /// Already a backend error (not retried).
    Backend(BackendError),
}

impl From<BackendError> for OpError {
    fn from(e: BackendError) -> Self {
        OpError::Backend(e)
    }
}

/// Attach "what we were doing" to a cryptoki result.
pub trait Doing<T> {
    fn doing(self, what: &str) -> Result<T, OpError>;
}

impl<T> Doing<T> for Result<T, CkError> {
    fn doing(self, what: &str) -> Result<T, OpError> {
        self.map_err(|err| OpError::Ck { err, doing: what.to_owned() })
    }
}

/// Convert a cryptoki error to the backend error an operator reads.
pub fn ck_to_backend(err: CkError, doing: &str) -> BackendError {
    match err {
        CkError::Pkcs11(rv, function) => BackendError::Pkcs11 {
            function: function_name(function),
            rv: ckr_name(rv),
            doing: doing.to_owned(),
            hint: hint(rv),
        },
        other => BackendError::Other(format!("{doing}: {other}")),
    }
}

fn function_name(f: cryptoki::context::Function) -> String {
    // `Function`'s Debug is the C name without the `C_` prefix.
    format!("C_{f:?}")
}

impl OpError {
    fn into_backend(self) -> BackendError {
        match self {
            OpError::Ck { err, doing } => ck_to_backend(err, &doing),
            OpError::Backend(b) => b,
        }
    }

    fn rv(&self) -> Option<RvError> {
        match self {
            OpError::Ck { err: CkError::Pkcs11(rv, _), .. } => Some(*rv),
            _ => None,
        }
    }
}

/// The sessions of one token.
pub struct TokenSessions {
    pub module: Arc<Module>,
    pub slot: Slot,
    pub token_label: String,
    pin: SecretString,
    idle: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
    pub max_sessions: usize,
    pub timeout: Duration,
    /// Bumped whenever a session is discarded or the login was lost. Session
    /// objects die with the session that made them, so a cached object
    /// handle from an older epoch may be gone (or, on tokens that reuse
    /// handles, name another object) and must not be used.
    epoch: AtomicU64,
}

impl std::fmt::Debug for TokenSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSessions")
            .field("slot", &self.slot.id())
            .field("token", &self.token_label)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

impl TokenSessions {
    pub fn new(module: Arc<Module>, slot: Slot, token_label: String, pin: SecretString, max_sessions: usize, timeout: Duration) -> Self {
        TokenSessions {
            module,
            slot,
            token_label,
            pin,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_sessions)),
            max_sessions,
            timeout,
            epoch: AtomicU64::new(0),
        }
    }

    fn login(&self, session: &Session) -> Result<(), OpError> {
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(rv, _)) => Err(OpError::Backend(BackendError::Login {
                token: self.token_label.clone(),
                reason: format!("{}{}", ckr_name(rv), hint(rv)),
            })),
            Err(e) => Err(OpError::Backend(BackendError::Login { token: self.token_label.clone(), reason: e.to_string() })),
        }
    }

    /// Open and log in a new session (blocking).
    pub fn open_session(&self) -> Result<Session, OpError> {
        let session = self.module.ctx.open_rw_session(self.slot).doing("opening a session")?;
        self.login(&session)?;
        Ok(session)
    }

    /// The current session epoch (see the field).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn session_lost(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn take(&self) -> Result<Session, OpError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => self.open_session(),
        }
    }

    pub fn put_back(&self, session: Session) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(session);
    }

    /// Run `f` on a session of this token, blocking; with retries.
    fn run_blocking<T>(&self, operation: &str, mut f: impl FnMut(&Session) -> Result<T, OpError>) -> Result<T, BackendError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= MAX_ATTEMPTS;
            let (session, result) = match self.take() {
                Ok(s) => {
                    let r = f(&s);
                    (Some(s), r)
                }
                Err(e) => (None, Err(e)),
            };
            let err = match result {
                Ok(v) => {
                    if let Some(s) = session {
                        self.put_back(s);
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let action = err.rv().map(disposition).unwrap_or(Disposition::Permanent);
            tracing::debug!(operation, attempt, ?action, "PKCS#11 call failed");
            match action {
                Disposition::Permanent => {
                    if let Some(s) = session {
                        self.put_back(s);
                    }
                    return Err(err.into_backend());
                }
                _ if last => {
                    // Out of attempts: drop the session, it may be the cause.
                    if session.is_some() {
                        self.session_lost();
                    }
                    return Err(err.into_backend());
                }
                Disposition::Retry => {
                    if let Some(s) = session {
                        self.put_back(s);
                    }
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
                Disposition::ReopenSession => {
                    // Dropping the session closes it; the next attempt opens a new one.
                    drop(session);
                    self.session_lost();
                }
                Disposition::Relogin => {
                    self.session_lost();
                    if let Some(s) = session {
                        if let Err(e) = self.login(&s) {
                            return Err(e.into_backend());
                        }
                        self.put_back(s);
                    }
                }
            }
        }
    }

    /// Run `f` on a session off the async runtime, with the configured
    /// timeout. A call that times out keeps its session until it returns;
    /// its result is discarded.
    pub async fn run<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnMut(&Session) -> Result<T, OpError> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.expect("semaphore never closed");
        let this = self.clone();
        let op = operation.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.run_blocking(&op, f)
        });
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(BackendError::Timeout { operation: operation.to_owned(), secs: self.timeout.as_secs() }),
            Ok(Err(join)) => Err(BackendError::Other(format!("{operation}: PKCS#11 worker failed: {join}"))),
            Ok(Ok(r)) => r,
        }
    }
}
