//! The sessions of one token and the one place PKCS#11 calls are run: on
//! worker threads that each own one logged-in session, off the async
//! runtime, with a timeout, and with bounded retries decided by
//! [`super::rv::disposition`].
//!
//! `cryptoki::session::Session` is `Send` but not `Sync`: a session is used
//! by one thread at a time. Here each session lives on one worker thread for
//! its whole life, and calls are queued to whichever worker is free (workers
//! are started on demand, at most one per allowed session). Keeping a session
//! on one thread keeps the token's per-thread state warm; SoftHSM2 scales
//! across cores this way but not when calls hop between pool threads.
//! Login is per application and token, so the first session logs in and
//! later ones see CKR_USER_ALREADY_LOGGED_IN, which is success. Workers keep
//! their sessions open so the login persists.
//!
//! When a session cannot be reopened because the module is gone
//! (CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
//! CKR_CRYPTOKI_NOT_INITIALIZED), the call asks the module to initialise
//! again ([`Module::reinitialize`]), finds the token again by its configured
//! label or serial (never by slot number: slots are renumbered), logs in on
//! the next session, and goes on; every session and object handle of the
//! old generation is forgotten.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use secrecy::SecretString;
use tokio::sync::oneshot;

use super::module::Module;
use super::rv::{ckr_name, disposition, hint, refuses_login, Disposition};
use crate::BackendError;

/// Attempts per call, including the first.
const MAX_ATTEMPTS: u32 = 3;

/// An error inside a PKCS#11 call sequence.
#[derive(Debug)]
pub(super) enum OpError {
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
pub(super) trait Doing<T> {
    fn doing(self, what: &str) -> Result<T, OpError>;
}

impl<T> Doing<T> for Result<T, CkError> {
    fn doing(self, what: &str) -> Result<T, OpError> {
        self.map_err(|err| OpError::Ck { err, doing: what.to_owned() })
    }
}

/// Convert a cryptoki error to the backend error an operator reads.
pub(super) fn ck_to_backend(err: CkError, doing: &str) -> BackendError {
    match err {
        CkError::Pkcs11(rv, function) => BackendError::Pkcs11 { function, rv, doing: doing.to_owned() },
        source => BackendError::Cryptoki { doing: doing.to_owned(), source },
    }
}

impl OpError {
    pub(super) fn into_backend(self) -> BackendError {
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

/// A session of one module generation. Dropped in its generation it is
/// closed; dropped after the module was initialised again it is only
/// forgotten (its handle number may now name another session).
pub(super) struct Held {
    session: Option<Session>,
    generation: u64,
    module: Arc<Module>,
}

impl std::ops::Deref for Held {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        let _calls = self.module.calls();
        if self.module.generation() == self.generation {
            drop(session);
        } else {
            std::mem::forget(session);
        }
    }
}

/// Does this return value, on opening a session or listing slots, mean
/// the module itself is gone?
pub(super) fn module_gone_rv(rv: RvError) -> bool {
    matches!(rv, RvError::DeviceError | RvError::DeviceRemoved | RvError::TokenNotPresent | RvError::CryptokiNotInitialized)
}

/// Run `f`, a call that only reads the token's state (C_GetTokenInfo; on
/// SoftHSM2 also C_Login), again after a short pause while it answers
/// CKR_GENERAL_ERROR, up to five attempts over about 150 ms. SoftHSM2
/// rewrites its token file at every C_Login, and another process that
/// reads the token meanwhile is answered CKR_GENERAL_ERROR for a moment:
/// 2 to 6 of 30 `keybridge kms probe` runs failed beside a tool logging in
/// (tests/cli.rs::softhsm_open_beside_logins_elsewhere). SoftHSM2 answers
/// so before it looks at the PIN; another token might have counted the
/// try, so C_Login is retried on SoftHSM2 only.
pub(super) fn again_on_general_error<T>(mut f: impl FnMut() -> Result<T, CkError>) -> Result<T, CkError> {
    let mut pause = Duration::from_millis(10);
    loop {
        match f() {
            Err(CkError::Pkcs11(RvError::GeneralError, _)) if pause <= Duration::from_millis(80) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            r => return r,
        }
    }
}

/// The slots of `ctx` that hold a token, with the token's information.
pub(super) fn tokens_of(ctx: &Pkcs11) -> Result<Vec<(Slot, TokenInfo)>, CkError> {
    again_on_general_error(|| ctx.get_slots_with_token()?.into_iter().map(|slot| Ok((slot, ctx.get_token_info(slot)?))).collect())
}

/// Whether `info` is a SoftHSM2 token (its quirks: [`TokenSessions`]'s
/// `softhsm`, and opening a backend in `super::Pkcs11Backend`).
pub(super) fn is_softhsm(info: &TokenInfo) -> bool {
    info.manufacturer_id().starts_with("SoftHSM")
}

/// Whether `info` is a SoftHSM2 slot showing no token it could read: its
/// spare slot (an uninitialised token), or a token it misread while
/// another process rewrote the token's file, listed as initialised with
/// neither label nor serial (3 listings in 5,448 beside two login loops;
/// SoftHSM2 always gives a token a serial). Initialising the module again
/// may show the token.
pub(super) fn softhsm_unread(info: &TokenInfo) -> bool {
    is_softhsm(info) && (!info.token_initialized() || (info.label().trim().is_empty() && info.serial_number().trim().is_empty()))
}

/// Does this failure to open a session mean the module itself is gone?
pub(super) fn module_gone(e: &OpError) -> bool {
    matches!(e, OpError::Backend(BackendError::ModuleDown { .. })) || e.rv().is_some_and(module_gone_rv)
}

/// A queued call: runs on a worker with that worker's session slot.
type Job = Box<dyn FnOnce(&mut Option<Held>) + Send>;

/// The sessions of one token.
pub(super) struct TokenSessions {
    pub module: Arc<Module>,
    /// The token's slot, as found in a module generation.
    slot: Mutex<(Slot, u64)>,
    /// How the configuration names the token (label, serial): how it is
    /// found again after the module was initialised again.
    wanted: (Option<String>, Option<String>),
    pub token_label: String,
    pin: SecretString,
    pub max_sessions: usize,
    pub timeout: Duration,
    /// The token's object-store lock ([`super::module::token_objects`]).
    objects: Arc<RwLock<()>>,
    /// The token is SoftHSM2's ([`is_softhsm`]). Then call sequences that
    /// only read hold `objects` shared (its object store needs it;
    /// elsewhere one hung call would make every call wait behind a pool
    /// creation), and C_Login is tried again on CKR_GENERAL_ERROR (see
    /// [`again_on_general_error`]; elsewhere a token may have counted the
    /// PIN try before failing).
    softhsm: bool,
    /// Bumped whenever a session is discarded or the login was lost. Session
    /// objects die with the session that made them, so a cached object
    /// handle from an older epoch may be gone (or, on tokens that reuse
    /// handles, name another object) and must not be used.
    epoch: AtomicU64,
    /// Sessions opened outside a worker (the login check at open), handed
    /// to the first workers.
    spare: Mutex<Vec<Held>>,
    queue: Mutex<mpsc::Sender<Job>>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    workers: AtomicUsize,
    /// The worker threads, joined when the sessions are dropped.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Calls queued or running. A worker is started only when there are more
    /// calls in flight than workers (a call is counted out just before its
    /// result is sent, so back-to-back calls reuse the same worker).
    in_flight: AtomicUsize,
    stopped: Arc<Stopped>,
}

impl Drop for TokenSessions {
    /// Stop the workers and wait (at most [`WORKERS_STOP`]) until they have
    /// closed their sessions and their threads have ended. A process that
    /// exits right after dropping a backend (the CLI) must not unload the
    /// module while a worker is still inside C_CloseSession (SoftHSM2
    /// crashed that way), nor run its exit handlers while a worker thread
    /// is still running the module's per-thread destructors: Kryoptic's
    /// OpenSSL freed a worker's thread state while `exit` ran OpenSSL's
    /// cleanup, and the CLI aborted with a double free.
    fn drop(&mut self) {
        *self.queue.get_mut().unwrap_or_else(|e| e.into_inner()) = mpsc::channel().0;
        // Dropped on one of its own workers (a call that outlived its
        // caller), that worker does not wait for itself.
        let on_own_worker = WORKER_OF.with(|w| w.get()) == Arc::as_ptr(&self.stopped) as usize;
        let expected = self.workers.load(Ordering::SeqCst).saturating_sub(usize::from(on_own_worker));
        let deadline = std::time::Instant::now() + WORKERS_STOP;
        let mut stopped = self.stopped.count.lock().unwrap_or_else(|e| e.into_inner());
        while *stopped < expected {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(token = %self.token_label, "PKCS#11 workers still busy after {} s; not waiting for them", WORKERS_STOP.as_secs());
                break;
            }
            stopped = self.stopped.changed.wait_timeout(stopped, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        let all_stopped = *stopped >= expected;
        drop(stopped);
        // A worker counted out has only its thread's destructors left to
        // run; one still busy in a call is left behind, like its call.
        let me = std::thread::current().id();
        for thread in self.threads.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            if thread.thread().id() != me && (all_stopped || thread.is_finished()) {
                let _ = thread.join();
            }
        }
    }
}

impl std::fmt::Debug for TokenSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSessions")
            .field("slot", &self.slot().id())
            .field("token", &self.token_label)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// After a call, how long a worker polls for the next one before it
/// sleeps. A caller issuing calls back to back (a restore loop: catalog
/// reads, seal, audit hand-off, then the next call) sends the next within
/// a few hundred microseconds; catching it awake saves a thread wake-up per
/// call, which costs more than that on small virtual machines. The poll
/// yields the core between checks, so an idle worker never starves the
/// threads doing that work (bench: 200 us of pure spinning left SoftHSM2
/// recover at 0.86 of raw; 1 ms with yields, 0.89-0.97).
const LINGER: Duration = Duration::from_micros(1000);

/// How long dropping a token's sessions waits for its workers to close
/// their sessions and stop.
const WORKERS_STOP: Duration = Duration::from_secs(5);

thread_local! {
    /// On a worker thread, which token's it is (the address of that
    /// token's [`Stopped`]): a worker never waits for itself to stop.
    static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Workers that have stopped, for [`TokenSessions`]'s drop to wait on.
#[derive(Default)]
struct Stopped {
    count: Mutex<usize>,
    changed: std::sync::Condvar,
}

/// Counts its worker out when the worker ends, however it ends.
struct StopGuard(Arc<Stopped>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        *self.0.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.changed.notify_all();
    }
}

fn worker(jobs: Arc<Mutex<mpsc::Receiver<Job>>>, stopped: Arc<Stopped>) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(&stopped) as usize));
    let _stop = StopGuard(stopped);
    let mut session: Option<Held> = None;
    loop {
        let mut job = None;
        let until = std::time::Instant::now() + LINGER;
        while std::time::Instant::now() < until {
            if let Ok(rx) = jobs.try_lock() {
                match rx.try_recv() {
                    Ok(j) => {
                        job = Some(Ok(j));
                        break;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            std::thread::yield_now();
        }
        let job = job.unwrap_or_else(|| jobs.lock().unwrap_or_else(|e| e.into_inner()).recv());
        match job {
            Ok(job) => job(&mut session),
            // The backend was dropped: close the session and stop.
            Err(_) => return,
        }
    }
}

impl TokenSessions {
    /// Sessions of the token `info` found in `slot`.
    /// `slot`: the token's slot and the module generation it was listed in.
    pub(super) fn new(
        module: Arc<Module>,
        slot: (Slot, u64),
        info: &TokenInfo,
        wanted: (Option<String>, Option<String>),
        pin: SecretString,
        max_sessions: usize,
        timeout: Duration,
    ) -> Self {
        let token_label = info.label().trim_end().to_owned();
        let objects = super::module::token_objects(&format!("{}\u{0}{}\u{0}{}", info.manufacturer_id().trim_end(), info.model().trim_end(), info.serial_number().trim_end()));
        let softhsm = is_softhsm(info);
        let (tx, rx) = mpsc::channel();
        TokenSessions {
            module,
            slot: Mutex::new(slot),
            wanted,
            token_label,
            pin,
            max_sessions,
            timeout,
            objects,
            softhsm,
            epoch: AtomicU64::new(0),
            spare: Mutex::new(Vec::new()),
            queue: Mutex::new(tx),
            jobs: Arc::new(Mutex::new(rx)),
            workers: AtomicUsize::new(0),
            threads: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            stopped: Arc::default(),
        }
    }

    /// The token's slot as last found.
    pub(super) fn slot(&self) -> Slot {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The token's slot in module generation `generation` of `ctx`: found
    /// again by label or serial when the module was initialised again.
    fn slot_in(&self, ctx: &Pkcs11, generation: u64) -> Result<Slot, OpError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.1 == generation {
            return Ok(slot.0);
        }
        let (label, serial) = &self.wanted;
        let tokens = tokens_of(ctx).doing("listing tokens")?;
        let initialised = tokens.iter().any(|(_, info)| info.token_initialized() && !softhsm_unread(info));
        for (s, info) in tokens {
            if label.as_deref().is_none_or(|l| l == info.label().trim_end()) && serial.as_deref().is_none_or(|n| n == info.serial_number().trim_end()) {
                tracing::warn!(token = %self.token_label, slot = s.id(), "token found again after the module was initialised again");
                *slot = (s, generation);
                return Ok(s);
            }
        }
        if initialised {
            // Other tokens are there: this one was removed or relabelled.
            // The module is left alone (initialising it again would end
            // the sessions of every other token on it).
            return Err(OpError::Backend(BackendError::TokenNotFound {
                wanted: format!("label {label:?} and serial {serial:?}"),
                module: self.module.path.display().to_string(),
                present: "others, after the module was initialised again".into(),
            }));
        }
        // The module is back but shows no usable token: its far end is
        // still gone (no token at all), or it could not read the token
        // (SoftHSM2, while another process rewrote the token's file, lists
        // only its spare slot, an uninitialised token). It is initialised
        // again on a later call, at most once a second.
        Err(OpError::Backend(BackendError::ModuleDown {
            module: self.module.path.display().to_string(),
            since_secs: 0,
            reason: format!("token '{}' not present after the module was initialised again", self.token_label),
        }))
    }

    /// Run `f` with the module's current context and the token's slot in
    /// it (for calls made outside a session: token information). Only
    /// inside a call of [`TokenSessions::run`], which holds the call gate
    /// (taking it again could deadlock behind a waiting re-initialisation).
    pub(super) fn with_token<T>(&self, f: impl FnOnce(&Pkcs11, Slot) -> Result<T, OpError>) -> Result<T, OpError> {
        let (ctx, generation) = self.module.ctx()?;
        let slot = self.slot_in(&ctx, generation)?;
        f(&ctx, slot)
    }

    /// The current session epoch (see the field).
    /// Includes the module's generation: a re-initialisation by any
    /// backend on the module ends every session, and so every object
    /// handle, of this token too. Read inside a call (under the call gate)
    /// it is the epoch of that call's session.
    pub(super) fn epoch(&self) -> u64 {
        (self.module.generation() << 32) | (self.epoch.load(Ordering::SeqCst) & 0xFFFF_FFFF)
    }

    fn session_lost(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn login(&self, session: &Session, ctx: &Pkcs11, slot: Slot) -> Result<(), OpError> {
        let login = || session.login(UserType::User, Some(&self.pin));
        match if self.softhsm { again_on_general_error(login) } else { login() } {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            // SoftHSM2 reads a token's PINs once, at C_Initialize; if another
            // process was rewriting the token's file then, it answers this
            // until it is initialised again, while the token's flags, read
            // afresh, say the PIN is set. The module is then as good as
            // gone: the caller initialises it again.
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) if self.softhsm && again_on_general_error(|| ctx.get_token_info(slot)).is_ok_and(|i| i.user_pin_initialized()) => {
                Err(OpError::Backend(BackendError::ModuleDown {
                    module: self.module.path.display().to_string(),
                    since_secs: 0,
                    reason: format!("token '{}' says its user PIN is set, C_Login that it is not (SoftHSM2 read the token while another process rewrote it)", self.token_label),
                }))
            }
            // Trouble that says nothing about the PIN (and SoftHSM2's
            // lasting CKR_GENERAL_ERROR, above): the call fails without
            // trying the login again (a backend error is not retried), and
            // it is not kept as a refused login: the next call logs in
            // afresh.
            Err(CkError::Pkcs11(rv, function)) if !refuses_login(rv) || (rv == RvError::GeneralError && self.softhsm) => {
                Err(OpError::Backend(BackendError::Pkcs11 { function, rv, doing: format!("logging in to token '{}'", self.token_label) }))
            }
            Err(CkError::Pkcs11(rv, _)) => Err(OpError::Backend(BackendError::Login {
                token: self.token_label.clone(),
                reason: format!("{}{}", ckr_name(rv), hint(rv)),
            })),
            Err(e) => Err(OpError::Backend(BackendError::Login { token: self.token_label.clone(), reason: e.to_string() })),
        }
    }

    /// Open and log in a new session (blocking).
    pub(super) fn open_session(&self) -> Result<Held, OpError> {
        // Under the gate the generation cannot change: the context, slot,
        // session and login are of one generation. A session whose login
        // failed is dropped after the gate is released (Held's drop takes
        // it).
        let (held, login) = {
            let _calls = self.module.calls();
            let (ctx, generation) = self.module.ctx()?;
            let slot = self.slot_in(&ctx, generation)?;
            let session = ctx.open_rw_session(slot).doing("opening a session")?;
            let held = Held { session: Some(session), generation, module: self.module.clone() };
            let login = self.login(&held, &ctx, slot);
            (held, login)
        };
        login?;
        Ok(held)
    }

    /// Keep a session opened outside the workers for the first worker.
    pub(super) fn put_back(&self, session: Held) {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(session);
    }

    /// Run `f` on the worker's session, blocking; with retries.
    fn run_on<T>(&self, slot: &mut Option<Held>, operation: &str, writes: bool, mut f: impl FnMut(&Session) -> Result<T, OpError>) -> Result<T, BackendError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= MAX_ATTEMPTS;
            // A session of an older module generation is dead: forget it.
            let generation = self.module.generation();
            if slot.as_ref().is_some_and(|s| s.generation != generation) {
                *slot = None;
                self.session_lost();
            }
            if slot.is_none() {
                let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().filter(|s| s.generation == generation);
                match spare.map(Ok).unwrap_or_else(|| self.open_session()) {
                    Ok(s) => *slot = Some(s),
                    // The module is gone: initialise it again (once, for
                    // every caller that saw this generation), then retry.
                    // While that fails, the call fails at once.
                    Err(e) if module_gone(&e) => {
                        self.session_lost();
                        let why = e.into_backend().to_string();
                        self.module.reinitialize(generation, &why)?;
                        if last {
                            return Err(BackendError::ModuleDown { module: self.module.path.display().to_string(), since_secs: 0, reason: why });
                        }
                        continue;
                    }
                    Err(e) => {
                        let retry = e.rv().map(disposition).is_some_and(|d| d != Disposition::Permanent);
                        if retry && !last {
                            std::thread::sleep(Duration::from_millis(50 << attempt));
                            continue;
                        }
                        return Err(e.into_backend());
                    }
                }
            }
            let session = slot.as_ref().expect("filled above");
            // The generation is checked under the gate: a re-initialisation
            // that finished while this call waited for the gate has ended
            // this session, and its handles mean nothing any more.
            let result = {
                let _calls = self.module.calls();
                let _shared = (!writes && self.softhsm).then(|| self.objects.read().unwrap_or_else(|e| e.into_inner()));
                let _exclusive = writes.then(|| self.objects.write().unwrap_or_else(|e| e.into_inner()));
                (session.generation == self.module.generation()).then(|| f(session))
            };
            let Some(result) = result else {
                *slot = None;
                self.session_lost();
                if last {
                    return Err(BackendError::ModuleDown {
                        module: self.module.path.display().to_string(),
                        since_secs: 0,
                        reason: "initialised again while this call waited".into(),
                    });
                }
                continue;
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let action = err.rv().map(disposition).unwrap_or(Disposition::Permanent);
            tracing::debug!(operation, attempt, ?action, "PKCS#11 call failed");
            match action {
                Disposition::Permanent => return Err(err.into_backend()),
                _ if last => {
                    // Out of attempts: drop the session, it may be the cause.
                    *slot = None;
                    self.session_lost();
                    return Err(err.into_backend());
                }
                Disposition::Retry => std::thread::sleep(Duration::from_millis(50 << attempt)),
                Disposition::ReopenSession => {
                    // Dropping the session closes it; the next attempt opens a new one.
                    *slot = None;
                    self.session_lost();
                }
                Disposition::Relogin => {
                    self.session_lost();
                    // Under the gate, and only on a session of the current
                    // generation: after a re-initialisation its handle may
                    // be another session's (of another token, even).
                    let relogin = {
                        let _calls = self.module.calls();
                        (session.generation == self.module.generation()).then(|| self.with_token(|ctx, slot| self.login(session, ctx, slot)))
                    };
                    match relogin {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(e.into_backend()),
                        None => *slot = None,
                    }
                }
            }
        }
    }

    /// Start another worker if calls in flight outnumber workers.
    fn ensure_worker(&self, in_flight: usize) -> Result<(), BackendError> {
        let more = self
            .workers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < in_flight && n < self.max_sessions).then_some(n + 1))
            .is_ok();
        if more {
            let jobs = self.jobs.clone();
            let stopped = self.stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("keybridge-pkcs11-{}", self.token_label))
                .spawn(move || worker(jobs, stopped))
                .map_err(|e| {
                    self.workers.fetch_sub(1, Ordering::SeqCst);
                    BackendError::Other(format!("cannot start a PKCS#11 worker thread: {e}"))
                })?;
            self.threads.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        }
        Ok(())
    }

    /// Run `f` on a session of this token, on a worker thread, with the
    /// configured timeout. A call that times out keeps its worker (and
    /// session) until it returns; its result is discarded. `f` must not
    /// create or destroy token objects: that is [`Self::run_writing`].
    pub(super) async fn run<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnMut(&Session) -> Result<T, OpError> + Send + 'static,
    {
        self.run_job(operation, false, f).await
    }

    /// [`Self::run`] for a call sequence that creates or destroys token
    /// objects: it holds the token's object store alone.
    pub(super) async fn run_writing<T, F>(self: &Arc<Self>, operation: &str, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnMut(&Session) -> Result<T, OpError> + Send + 'static,
    {
        self.run_job(operation, true, f).await
    }

    async fn run_job<T, F>(self: &Arc<Self>, operation: &str, writes: bool, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnMut(&Session) -> Result<T, OpError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let op = operation.to_owned();
        let job: Job = Box::new(move |slot| {
            let result = this.run_on(slot, &op, writes, f);
            this.in_flight.fetch_sub(1, Ordering::SeqCst);
            // Let go of the sessions before the caller hears back: a caller
            // that then drops the backend must be the one that drops them
            // last, so that it waits for the workers; dropped last here, on
            // a worker, nobody would, and a CLI could exit while this worker
            // was still in C_CloseSession (SoftHSM2 crashed so: 3 cores in
            // 9 runs of tests/cli.rs).
            drop(this);
            let _ = tx.send(result);
        });
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = self.ensure_worker(in_flight) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        if self.queue.lock().unwrap_or_else(|e| e.into_inner()).send(job).is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(BackendError::Other(format!("{operation}: the PKCS#11 workers stopped")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(BackendError::Timeout { operation: operation.to_owned(), secs: self.timeout.as_secs() }),
            Ok(Err(_)) => Err(BackendError::Other(format!("{operation}: the PKCS#11 worker stopped"))),
            Ok(Ok(r)) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::config::Pkcs11Config;

    /// Set by [`Slow`]'s drop, at the very end of a worker thread.
    static DESTRUCTOR_DONE: AtomicBool = AtomicBool::new(false);

    /// A thread-local whose destructor takes a while, like a module's
    /// per-thread state (Kryoptic's OpenSSL random generator).
    struct Slow;

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(300));
            DESTRUCTOR_DONE.store(true, Ordering::SeqCst);
        }
    }

    thread_local! {
        static SLOW: std::cell::RefCell<Option<Slow>> = const { std::cell::RefCell::new(None) };
    }

    /// The caller, not a worker, drops a token's sessions last, and the
    /// drop returns only after every worker thread has ended, its
    /// thread-local destructors included: a process exiting next runs its
    /// exit handlers (the module's static destructors, OpenSSL's cleanup)
    /// beside none of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_sessions_waits_for_the_worker_threads_to_end() {
        let Some(module) = std::env::var_os("KEYBRIDGE_TEST_SOFTHSM_MODULE").filter(|_| std::env::var_os("KEYBRIDGE_TEST_PIN").is_some()) else {
            let msg = "SoftHSM2 is not available (KEYBRIDGE_TEST_SOFTHSM_MODULE or KEYBRIDGE_TEST_PIN unset); run scripts/test, which installs and initialises the tokens";
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true: {msg}");
            eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
            return;
        };
        let config = Pkcs11Config {
            name: "softhsm".into(),
            module: module.into(),
            token: Some(std::env::var("KEYBRIDGE_TEST_TOKEN").unwrap_or_else(|_| "keybridge".into())),
            uri: None,
            pin_env: Some("KEYBRIDGE_TEST_PIN".into()),
            pin_file: None,
            max_sessions: Some(2),
            timeout_secs: 30,
            kek_cache_ttl_secs: 300,
        };
        let sessions = super::super::Pkcs11Backend::open(&config).await.unwrap().sessions;
        sessions
            .run("setting a thread-local", |_| {
                SLOW.with(|s| *s.borrow_mut() = Some(Slow));
                Ok(())
            })
            .await
            .unwrap();
        // A job lets go of the sessions before its result arrives, so the
        // caller drops them last (and waits for the workers). Calls back to
        // back, to catch a job that still holds them.
        for _ in 0..200 {
            sessions.run("nothing", |_| Ok(())).await.unwrap();
            assert_eq!(Arc::strong_count(&sessions), 1, "a worker still held the sessions when its result arrived");
        }
        drop(sessions);
        assert!(DESTRUCTOR_DONE.load(Ordering::SeqCst), "the worker's thread-local destructor had not run when the drop returned");
    }
}
