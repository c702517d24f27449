//! The crate's error type. Every error names what was being done, to which
//! object, and why it failed, in words an operator can act on. No variant ever
//! carries secret material (keys, PINs, passwords).

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::crypto::CryptoError;
use crate::stream::StreamError;

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
        #[source]
        source: BackendError,
    },

    /// The catalog (SQLite) failed.
    #[error("catalog: {context}: {source}")]
    Catalog {
        context: String,
        #[source]
        source: rusqlite::Error,
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

    /// A caller asked for something not allowed (e.g. another client's DEK).
    #[error("denied: {0}")]
    Denied(String),

    /// The service or MediaAgent answered with an error.
    #[error("{peer}: {message} (HTTP {status})")]
    Remote { peer: String, status: u16, kind: String, message: String },

    /// The service or MediaAgent could not be reached, or the connection
    /// broke.
    #[error("{peer}: {reason}")]
    Unreachable { peer: String, reason: String },

    /// A bug or a failed background task; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn catalog(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
        let context = context.into();
        move |source| Error::Catalog { context, source }
    }

    pub(crate) fn crypto(context: impl Into<String>) -> impl FnOnce(CryptoError) -> Error {
        let context = context.into();
        move |source| Error::Crypto { context, source }
    }

    pub(crate) fn backend(kms: &str) -> impl FnOnce(BackendError) -> Error + '_ {
        move |source| Error::Backend {
            kms: kms.to_owned(),
            source,
        }
    }

    /// The process exit code for this error (documented in README.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Input { .. } => 3,
            Error::NotFound { .. } => 4,
            Error::Backend { .. } => 5,
            Error::Integrity { .. } | Error::Stream { .. } => 6,
            Error::Seal { .. } => 7,
            Error::AlreadyExists { .. } | Error::InvalidName { .. } => 8,
            Error::Denied(_) => 9,
            Error::Remote { kind, .. } => match kind.as_str() {
                "config" | "input" | "invalid_name" => 3,
                "not_found" => 4,
                "kms" => 5,
                "integrity" => 6,
                "seal" => 7,
                "already_exists" => 8,
                "denied" => 9,
                "auth" => 10,
                "storage_full" => 12,
                _ => 1,
            },
            Error::Unreachable { .. } => 11,
            Error::Catalog { .. }
            | Error::CatalogSchema { .. }
            | Error::Crypto { .. }
            | Error::Io { .. }
            | Error::Internal(_) => 1,
        }
    }

    /// A short machine-readable kind, used in `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Input { .. } => "input",
            Error::Backend { .. } => "kms",
            Error::Catalog { .. } | Error::CatalogSchema { .. } => "catalog",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::InvalidName { .. } => "invalid_name",
            Error::Integrity { .. } => "integrity",
            Error::Stream { .. } => "stream",
            Error::Seal { .. } => "seal",
            Error::Crypto { .. } => "crypto",
            Error::Io { .. } => "io",
            Error::Denied(_) => "denied",
            Error::Internal(_) => "internal",
            Error::Remote { .. } => "remote",
            Error::Unreachable { .. } => "unreachable",
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
