//! The seed's three flows, one module each, plus client registration.
//!
//! - [`pool_creation`]: master key in the KMS, KEK pair, wrapped private KEK
//!   stored with the public KEK in one transaction.
//! - [`backup`]: a fresh DEK, RSA-OAEP encrypted under the public KEK and
//!   stored durably, handed to the client sealed under its password.
//! - [`restore`]: the wrapped KEK unwrapped inside the KMS, the DEK decrypted
//!   there, handed to the client sealed under its password.

pub mod backup;
pub mod catalog;
pub mod clients;
mod envelope;
pub mod pool_creation;
pub mod pool_lifecycle;
pub mod restore;

pub use keybridge_proto::api::DekGrant;


/// Record a failed operation in the audit log and hand back the original
/// error. If the audit append itself fails, the original error still wins;
/// the audit failure is logged.
pub(crate) async fn audit_failure(kb: &crate::Keybridge, event: keybridge_catalog::audit::AuditEvent, err: crate::Error) -> crate::Error {
    let event = event.failed(&err);
    let action = event.action;
    if let Err(audit_err) = kb.catalog().audit(event).await {
        tracing::error!(%action, error = %err, audit_error = %audit_err, "could not append the audit record of a failed operation");
    }
    err
}

/// Audit the outcome of `result`: success durably before returning it (so
/// nothing is released before its audit record is committed), failure as
/// [`audit_failure`].
pub(crate) async fn audited<T>(kb: &crate::Keybridge, event: keybridge_catalog::audit::AuditEvent, result: crate::Result<T>) -> crate::Result<T> {
    match result {
        Ok(v) => {
            kb.catalog().audit(event).await?;
            Ok(v)
        }
        Err(e) => Err(audit_failure(kb, event, e).await),
    }
}
