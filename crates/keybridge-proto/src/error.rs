//! keybridge's error type and its kinds. Every error names what was being
//! done, to which object, and why it failed, in words an operator can act
//! on. No variant ever carries secret material (keys, PINs, passwords).
//!
//! [`ErrorKind`] is the one table of what an error means to a caller: its
//! name on the wire and in `--json` output, its process exit code and its
//! HTTP status. The service sends the kind, the client reads it back into
//! [`Error::Remote`], and both exit with the same code.
//!
//! The layers below the wire contract keep their own typed errors
//! (`BackendError` in keybridge-kms, the catalog engine's error): they
//! arrive here boxed behind [`Error::Backend`] and [`Error::Catalog`], so
//! this crate depends on neither. A catalog error is the `source()` of
//! [`Error::Catalog`] and downcasts from there; a KMS backend's error sits
//! in a [`BackendSource`], which answers [`BackendFault::is_transient`]
//! without knowing the backend's type and downcasts with
//! [`BackendSource::downcast_ref`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::crypto::CryptoError;
use crate::stream::StreamError;

/// A lower layer's error, kept whole behind the wire contract.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What keybridge needs to know of a KMS backend's error without knowing
/// its type (keybridge-kms's `BackendError` implements it).
pub trait BackendFault: std::error::Error + Send + Sync + AsError + 'static {
    /// Whether the same request may succeed later with nobody changing
    /// anything: the KMS was unreachable, busy or lost a session, as
    /// opposed to a refusal, a missing key or a configuration error.
    fn is_transient(&self) -> bool;
}

/// Views an error as `dyn std::error::Error`, so a `dyn BackendFault` can
/// be downcast (Rust 1.85, this workspace's minimum, cannot upcast trait
/// objects). Implemented for every error type; nothing to write by hand.
pub trait AsError {
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static);
}

impl<E: std::error::Error + Send + Sync + 'static> AsError for E {
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
}

/// A KMS backend's error, kept whole behind [`Error::Backend`]. It shows
/// exactly as the backend's error does: `Display`, `Debug` and
/// `std::error::Error::source` are the backend error's own.
pub struct BackendSource(Box<dyn BackendFault>);

impl BackendSource {
    pub fn new(fault: impl BackendFault) -> Self {
        BackendSource(Box::new(fault))
    }

    /// See [`BackendFault::is_transient`].
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }

    /// The backend's error as its own type, e.g. keybridge-kms's
    /// `BackendError`.
    pub fn downcast_ref<E: BackendFault>(&self) -> Option<&E> {
        (*self.0).as_error().downcast_ref()
    }
}

impl fmt::Display for BackendSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for BackendSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::error::Error for BackendSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        (*self.0).source()
    }
}

/// What an error means to whoever receives it. Serialised in snake case
/// (`"not_found"`); a kind this build does not know reads as
/// [`ErrorKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    Config,
    Input,
    Kms,
    Catalog,
    NotFound,
    AlreadyExists,
    InvalidName,
    Integrity,
    Stream,
    Seal,
    Crypto,
    Io,
    Denied,
    Internal,
    Remote,
    Unreachable,
    /// The request's credentials were missing or wrong.
    Auth,
    /// The MediaAgent's store is full.
    StorageFull,
    /// A per-client limit is reached; retry later.
    Busy,
    /// Every master key of the pool was destroyed (`pool shred`): nothing
    /// of it can be restored or issued, ever. HTTP 410 Gone; exit code 5,
    /// as for a KMS error.
    KeysDestroyed,
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The name on the wire and in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Input => "input",
            ErrorKind::Kms => "kms",
            ErrorKind::Catalog => "catalog",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Stream => "stream",
            ErrorKind::Seal => "seal",
            ErrorKind::Crypto => "crypto",
            ErrorKind::Io => "io",
            ErrorKind::Denied => "denied",
            ErrorKind::Internal => "internal",
            ErrorKind::Remote => "remote",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Auth => "auth",
            ErrorKind::StorageFull => "storage_full",
            ErrorKind::Busy => "busy",
            ErrorKind::KeysDestroyed => "keys_destroyed",
            ErrorKind::Other => "other",
        }
    }

    /// The process exit code (documented in README.md).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config | ErrorKind::Input => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Kms | ErrorKind::KeysDestroyed => 5,
            ErrorKind::Integrity | ErrorKind::Stream => 6,
            ErrorKind::Seal => 7,
            ErrorKind::AlreadyExists | ErrorKind::InvalidName => 8,
            ErrorKind::Denied => 9,
            ErrorKind::Auth => 10,
            ErrorKind::Unreachable => 11,
            ErrorKind::StorageFull => 12,
            ErrorKind::Catalog
            | ErrorKind::Crypto
            | ErrorKind::Io
            | ErrorKind::Internal
            | ErrorKind::Remote
            | ErrorKind::Busy
            | ErrorKind::Other => 1,
        }
    }

    /// The HTTP status the service answers an error of this kind with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists => 409,
            ErrorKind::Input | ErrorKind::InvalidName | ErrorKind::Seal => 400,
            ErrorKind::Denied => 403,
            ErrorKind::Auth => 401,
            ErrorKind::Kms => 503,
            // Permanent: a retry, or another KMS, will never bring it back.
            ErrorKind::KeysDestroyed => 410,
            ErrorKind::Integrity => 422,
            ErrorKind::StorageFull => 507,
            ErrorKind::Busy => 429,
            _ => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result alias used across keybridge.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Top-level error of the library and CLI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read or is invalid.
    #[error("configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// A key-management backend failed.
    #[error("KMS '{kms}': {source}")]
    Backend {
        kms: String,
        /// keybridge-kms's `BackendError`.
        #[source]
        source: BackendSource,
    },

    /// The catalog (SQLite) failed.
    #[error("catalog: {context}: {source}")]
    Catalog {
        context: String,
        /// The catalog engine's error (SQLite today).
        #[source]
        source: Source,
    },

    /// The catalog holds a schema this build does not understand.
    #[error("catalog {path}: {reason}")]
    CatalogSchema { path: PathBuf, reason: String },

    /// A named object does not exist.
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },

    /// A named object exists already.
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },

    /// A name given on the command line or API is not acceptable.
    #[error("invalid {what} '{value}': {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// Stored key material failed an integrity check (tampered, moved or
    /// corrupted catalog data).
    #[error("integrity check failed for {what}: {reason}")]
    Integrity { what: String, reason: String },

    /// A client-data stream is malformed, was altered, truncated or
    /// extended, or does not belong to the DEK given for it.
    #[error("{context}: {source}")]
    Stream {
        context: String,
        #[source]
        source: StreamError,
    },

    /// A sealed DEK did not open for this client.
    #[error("sealed DEK for client '{client}' did not open: {reason}")]
    Seal { client: String, reason: String },

    /// A software cryptographic primitive failed.
    #[error("{context}: {source}")]
    Crypto {
        context: String,
        #[source]
        source: CryptoError,
    },

    /// File-system error on a named path.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Input given to a command (a file, stdin) is not what it should be.
    #[error("{what}: {reason}")]
    Input { what: String, reason: String },

    /// Every master key of the pool was destroyed (`pool shred`): nothing
    /// encrypted under it can be restored, ever.
    #[error("the master keys of pool '{pool}' were destroyed ({at}); its data can no longer be restored")]
    KeysDestroyed { pool: String, at: String },

    /// A caller asked for something not allowed (e.g. another client's DEK).
    #[error("denied: {0}")]
    Denied(String),

    /// The service or MediaAgent answered with an error; `retriable` when
    /// it said the same request may succeed later.
    #[error("{peer}: {message} (HTTP {status})")]
    Remote { peer: String, status: u16, kind: ErrorKind, message: String, retriable: bool },

    /// The service or MediaAgent could not be reached, or the connection
    /// broke.
    #[error("{peer}: {reason}")]
    Unreachable { peer: String, reason: String },

    /// A bug or a failed background task; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps a catalog engine's error, naming what was being done.
    pub fn catalog<E>(context: impl Into<String>) -> impl FnOnce(E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let context = context.into();
        move |source| Error::Catalog { context, source: Box::new(source) }
    }

    pub fn crypto(context: impl Into<String>) -> impl FnOnce(CryptoError) -> Error {
        let context = context.into();
        move |source| Error::Crypto { context, source }
    }

    /// Wraps a KMS backend's error, naming the KMS.
    pub fn backend<E: BackendFault>(kms: &str) -> impl FnOnce(E) -> Error + '_ {
        move |source| Error::Backend { kms: kms.to_owned(), source: BackendSource::new(source) }
    }

    /// Whether the same request may succeed later with nobody changing
    /// anything: a KMS reported the failure as transient (see
    /// [`BackendFault::is_transient`]), or the service answered so
    /// ([`Error::Remote`] with `retriable`). Every other error answers
    /// false, including [`Error::Unreachable`], whose cause arrives as text.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend { source, .. } => source.is_transient(),
            Error::Remote { retriable, .. } => *retriable,
            _ => false,
        }
    }

    /// The process exit code for this error (documented in README.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Remote { kind, .. } => kind.exit_code(),
            other => other.kind().exit_code(),
        }
    }

    /// What this error means to a caller; its name is the `kind` in
    /// `--json` output and in the service's error answers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::Input { .. } => ErrorKind::Input,
            Error::Backend { .. } => ErrorKind::Kms,
            Error::KeysDestroyed { .. } => ErrorKind::KeysDestroyed,
            Error::Catalog { .. } | Error::CatalogSchema { .. } => ErrorKind::Catalog,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::Integrity { .. } => ErrorKind::Integrity,
            Error::Stream { .. } => ErrorKind::Stream,
            Error::Seal { .. } => ErrorKind::Seal,
            Error::Crypto { .. } => ErrorKind::Crypto,
            Error::Io { .. } => ErrorKind::Io,
            Error::Denied(_) => ErrorKind::Denied,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Remote { .. } => ErrorKind::Remote,
            Error::Unreachable { .. } => ErrorKind::Unreachable,
        }
    }
}

/// Check a pool or client name: 1-64 characters of `[A-Za-z0-9._-]`, not
/// starting with a dot or dash.
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() || value.len() > 64 {
        Some("must be 1 to 64 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else if value.starts_with(['.', '-']) {
        Some("must not start with '.' or '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            value: value.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[ErrorKind] = &[
        ErrorKind::Config,
        ErrorKind::Input,
        ErrorKind::Kms,
        ErrorKind::Catalog,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidName,
        ErrorKind::Integrity,
        ErrorKind::Stream,
        ErrorKind::Seal,
        ErrorKind::Crypto,
        ErrorKind::Io,
        ErrorKind::Denied,
        ErrorKind::Internal,
        ErrorKind::Remote,
        ErrorKind::Unreachable,
        ErrorKind::Auth,
        ErrorKind::StorageFull,
        ErrorKind::Busy,
        ErrorKind::KeysDestroyed,
        ErrorKind::Other,
    ];

    #[test]
    fn the_wire_name_is_the_serde_name_and_unknown_kinds_read_as_other() {
        for kind in ALL {
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), *kind);
        }
        assert_eq!(serde_json::from_str::<ErrorKind>("\"from_a_newer_service\"").unwrap(), ErrorKind::Other);
    }

    /// A client that receives an error exits as the process that made it
    /// would have (one table, read on both sides of the wire), with the
    /// codes README.md documents.
    #[test]
    fn a_remote_error_exits_like_the_error_it_reports() {
        let path = PathBuf::from("x");
        let local = [
            (Error::Config { path: path.clone(), reason: String::new() }, 3),
            (Error::Input { what: String::new(), reason: String::new() }, 3),
            (Error::NotFound { what: "pool", name: String::new() }, 4),
            (Error::backend("kms")(fault(false)), 5),
            (Error::KeysDestroyed { pool: String::new(), at: String::new() }, 5),
            (Error::Integrity { what: String::new(), reason: String::new() }, 6),
            (Error::Seal { client: String::new(), reason: String::new() }, 7),
            (Error::AlreadyExists { what: "pool", name: String::new() }, 8),
            (Error::InvalidName { what: "pool", value: String::new(), reason: "" }, 8),
            (Error::Denied(String::new()), 9),
            (Error::Unreachable { peer: String::new(), reason: String::new() }, 11),
            (Error::catalog("reading")(std::io::Error::other("locked")), 1),
            (Error::Internal(String::new()), 1),
        ];
        for (e, documented) in local {
            assert_eq!(e.exit_code(), documented, "{:?}", e.kind());
            let remote = Error::Remote { peer: "service".into(), status: e.kind().http_status(), kind: e.kind(), message: e.to_string(), retriable: false };
            assert_eq!(remote.exit_code(), documented, "remote {:?}", e.kind());
        }
        assert_eq!([ErrorKind::Auth.exit_code(), ErrorKind::StorageFull.exit_code()], [10, 12]);
    }

    /// A shredded pool is gone for good: 410, not the retriable-looking
    /// 503 of a KMS that is down.
    #[test]
    fn a_shredded_pool_is_gone_not_unavailable() {
        let e = Error::KeysDestroyed { pool: "p".into(), at: "2026-12-04T10:00:00.000Z".into() };
        assert_eq!((e.kind(), e.kind().http_status(), e.exit_code()), (ErrorKind::KeysDestroyed, 410, 5));
        assert!(!e.is_transient());
        assert_eq!(Error::backend("kms")(fault(false)).kind().http_status(), 503);
    }

    /// A backend error as keybridge-kms's would be: a message, a cause, and
    /// its own verdict on transience.
    #[derive(Debug, thiserror::Error)]
    #[error("C_Decrypt failed")]
    struct Fault {
        transient: bool,
        #[source]
        cause: std::io::Error,
    }

    impl BackendFault for Fault {
        fn is_transient(&self) -> bool {
            self.transient
        }
    }

    fn fault(transient: bool) -> Fault {
        Fault { transient, cause: std::io::Error::other("link down") }
    }

    #[test]
    fn transience_comes_from_the_backend() {
        assert!(Error::backend("hsm")(fault(true)).is_transient());
        assert!(!Error::backend("hsm")(fault(false)).is_transient());
        assert!(!Error::Internal("a bug".into()).is_transient());
        assert!(!Error::Unreachable { peer: "service".into(), reason: "cannot connect".into() }.is_transient());
    }

    #[test]
    fn the_backend_error_shows_through() {
        use std::error::Error as _;
        let e = Error::backend("hsm")(fault(true));
        assert_eq!(e.to_string(), "KMS 'hsm': C_Decrypt failed");
        assert_eq!(format!("{e:?}"), r#"Backend { kms: "hsm", source: Fault { transient: true, cause: Custom { kind: Other, error: "link down" } } }"#);
        // The chain reads as the backend's own: its message, then its cause.
        let source = e.source().expect("the backend error");
        assert_eq!(source.to_string(), "C_Decrypt failed");
        let cause = source.source().expect("the backend error's cause");
        assert_eq!(cause.downcast_ref::<std::io::Error>().map(|c| c.to_string()).as_deref(), Some("link down"));
        let Error::Backend { source, .. } = &e else { unreachable!() };
        assert!(source.downcast_ref::<Fault>().is_some_and(|f| f.transient));
    }
}
