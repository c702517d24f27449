//! What to do about each PKCS#11 return value.
//!
//! One exhaustive match over every `CKR_*` code cryptoki knows. A new code in
//! a cryptoki upgrade fails to compile here, so someone has to decide. The
//! rule: retry only where a second attempt can succeed without anybody
//! changing anything; everything caused by our input, the key material or the
//! token's configuration is permanent and reported at once.

use cryptoki::context::Function;
use cryptoki::error::RvError;

/// The response to a failed PKCS#11 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Report the error; retrying cannot help.
    Permanent,
    /// Retry the call on the same session after a short pause.
    Retry,
    /// The session is gone or unusable: close it, open a new one, retry.
    ReopenSession,
    /// The login state was lost: log in again, then retry.
    Relogin,
}

/// Classify a return value.
pub(super) fn disposition(rv: RvError) -> Disposition {
    use Disposition::*;
    match rv {
        // --- Session lost: a fresh session usually works. ---
        // The session was closed under us (by another thread, C_CloseAllSessions
        // or the token) or the handle is stale.
        RvError::SessionClosed | RvError::SessionHandleInvalid => ReopenSession,
        // The device was removed or reset; when it comes back, a new session
        // is needed. Bounded retries decide whether it did.
        RvError::DeviceRemoved | RvError::TokenNotPresent => ReopenSession,
        // The module was finalised under us (by another part of the
        // process, or by a library that reset itself): a new session fails
        // the same way, which initialises the module again.
        RvError::CryptokiNotInitialized => ReopenSession,
        // A previous caller left an operation active on this session (e.g. a
        // timed-out call finished late): the session state is unknown.
        RvError::OperationActive | RvError::OperationNotInitialized => ReopenSession,

        // --- Login state lost (all sessions were closed at some point). ---
        RvError::UserNotLoggedIn => Relogin,

        // --- Transient conditions in the token or host. ---
        // The spec says a retry of CKR_FUNCTION_FAILED may succeed.
        RvError::FunctionFailed => Retry,
        // Out of memory or session slots right now; others may free them.
        RvError::HostMemory | RvError::DeviceMemory | RvError::SessionCount => Retry,
        // Network HSMs report link trouble as device errors, and p11-kit's
        // client answers every call with it once its server went away: a
        // fresh session tests the link, and if none can be opened the
        // module is initialised again (session.rs).
        RvError::DeviceError => ReopenSession,
        // Cancelled by the library (surrender callbacks, HA failover).
        RvError::Cancel | RvError::FunctionCanceled => Retry,

        // --- Our arguments or the key material: permanent. ---
        RvError::ArgumentsBad
        | RvError::AttributeReadOnly
        | RvError::AttributeSensitive
        | RvError::AttributeTypeInvalid
        | RvError::AttributeValueInvalid
        | RvError::ActionProhibited
        | RvError::DataInvalid
        | RvError::DataLenRange
        | RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::CurveNotSupported
        | RvError::KeyHandleInvalid
        | RvError::KeySizeRange
        | RvError::KeyTypeInconsistent
        | RvError::KeyNotNeeded
        | RvError::KeyChanged
        | RvError::KeyNeeded
        | RvError::KeyIndigestible
        | RvError::KeyFunctionNotPermitted
        | RvError::KeyNotWrappable
        | RvError::KeyUnextractable
        | RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::ObjectHandleInvalid
        | RvError::SignatureInvalid
        | RvError::SignatureLenRange
        | RvError::TemplateIncomplete
        | RvError::TemplateInconsistent
        | RvError::UnwrappingKeyHandleInvalid
        | RvError::UnwrappingKeySizeRange
        | RvError::UnwrappingKeyTypeInconsistent
        | RvError::WrappedKeyInvalid
        | RvError::WrappedKeyLenRange
        | RvError::WrappingKeyHandleInvalid
        | RvError::WrappingKeySizeRange
        | RvError::WrappingKeyTypeInconsistent
        | RvError::DomainParamsInvalid
        | RvError::BufferTooSmall
        | RvError::PublicKeyInvalid
        | RvError::InformationSensitive => Permanent,

        // --- Authentication: retrying a wrong PIN only burns tries. ---
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinExpired
        | RvError::PinLocked
        | RvError::PinTooWeak
        | RvError::UserPinNotInitialized
        | RvError::UserTypeInvalid
        | RvError::UserAnotherAlreadyLoggedIn
        | RvError::UserTooManyTypes
        | RvError::NewPinMode
        | RvError::NextOtp => Permanent,
        // Callers treat this one as success before classifying.
        RvError::UserAlreadyLoggedIn => Permanent,

        // --- Token or library configuration: an operator must act. ---
        RvError::SlotIdInvalid
        | RvError::TokenNotRecognized
        | RvError::TokenWriteProtected
        | RvError::SessionReadOnly
        | RvError::SessionExists
        | RvError::SessionReadOnlyExists
        | RvError::SessionReadWriteSoExists
        | RvError::SessionParallelNotSupported
        | RvError::FunctionNotParallel
        | RvError::FunctionNotSupported
        | RvError::RandomSeedNotSupported
        | RvError::RandomNoRng
        | RvError::SavedStateInvalid
        | RvError::StateUnsaveable
        | RvError::CryptokiAlreadyInitialized
        | RvError::NeedToCreateThreads
        | RvError::CantLock
        | RvError::MutexBad
        | RvError::MutexNotLocked
        | RvError::FipsSelfTestFailed
        | RvError::LibraryLoadFailed
        | RvError::FunctionRejected
        | RvError::ExceededMaxIterations
        | RvError::NoEvent => Permanent,

        // Unrecoverable by definition: the token may be inconsistent.
        RvError::GeneralError => Permanent,

        // Codes we cannot interpret are not retried blindly.
        RvError::VendorDefined(_) | RvError::UnknownErrorCode(_) => Permanent,
    }
}

/// Whether a return value reports a condition that may clear with nobody
/// changing anything, so the same request may succeed later: exactly the
/// codes [`disposition`] retries (lost sessions and logins, device and
/// memory trouble, CKR_FUNCTION_FAILED, cancellations). They reach a caller
/// only once the bounded retries are spent, and a network HSM failing over
/// or a token being re-inserted takes longer than those.
///
/// The doubtful ones:
/// - CKR_FUNCTION_FAILED is transient: the standard says the same call may
///   succeed again, unlike CKR_GENERAL_ERROR, which it calls unrecoverable.
/// - CKR_CRYPTOKI_NOT_INITIALIZED is: a module that says it is not
///   initialised (something finalised it, or a proxy handed out a function
///   list of its own) is gone, and keybridge initialises it again (at most
///   once a second, `module.rs`).
/// - CKR_DEVICE_ERROR is transient, but where C_Decrypt of a DEK or
///   C_UnwrapKey of a KEK returns it, the backend reports a ciphertext or
///   wrapped key that does not decrypt (some tokens answer bad data with
///   it: `bad_ciphertext` and `bad_wrapped_key` in pkcs11/mod.rs), which
///   is not transient.
pub(crate) fn is_transient(rv: RvError) -> bool {
    disposition(rv) != Disposition::Permanent
}

/// Whether C_Login answering `rv` refused the PIN or the user, or may
/// have: the process never logs in with that PIN again (each try may count
/// towards locking it; `context.rs` keeps the refusal until a restart).
/// The transient codes (a device, session or memory in trouble, a module
/// gone) say nothing about the PIN: the call fails, without trying the
/// login again, and the next call logs in afresh. CKR_GENERAL_ERROR
/// refuses (a token may have counted the try before failing; SoftHSM2's,
/// which fails before it looks at the PIN, is the caller's exception), and
/// so do vendor-defined and unknown codes, which may be a PIN policy's.
pub(crate) fn refuses_login(rv: RvError) -> bool {
    !is_transient(rv)
}

/// The `CKR_*` name of a return value, e.g. `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED(0x{code:08X})"),
        RvError::UnknownErrorCode(code) => format!("unknown CK_RV 0x{code:08X}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for ch in camel.chars() {
                if ch.is_ascii_uppercase() || (ch.is_ascii_digit() && !name.ends_with(|c: char| c.is_ascii_digit())) {
                    name.push('_');
                }
                name.push(ch.to_ascii_uppercase());
            }
            name
        }
    }
}

/// The C name of a PKCS#11 function, e.g. `C_Decrypt`.
pub(crate) fn function_name(f: Function) -> String {
    // `Function`'s Debug is the C name without the `C_` prefix.
    format!("C_{f:?}")
}

/// An operator-facing hint for the codes that have an obvious cause.
pub(crate) fn hint(rv: RvError) -> &'static str {
    match rv {
        RvError::PinIncorrect => " (wrong PIN)",
        RvError::PinLocked => " (the user PIN is locked; the security officer must reset it)",
        RvError::UserPinNotInitialized => " (the token's user PIN was never set)",
        RvError::TokenNotPresent | RvError::DeviceRemoved => " (the token is not present)",
        RvError::MechanismInvalid | RvError::MechanismParamInvalid => " (the token does not support this mechanism or its parameters)",
        RvError::WrappedKeyInvalid | RvError::WrappedKeyLenRange => " (the wrapped key is corrupted or was wrapped under another key)",
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => " (the ciphertext is corrupted or belongs to another key)",
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => " (the key no longer exists in the token)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::SessionHandleInvalid), "CKR_SESSION_HANDLE_INVALID");
        assert_eq!(ckr_name(RvError::VendorDefined(0x8000_0001)), "CKR_VENDOR_DEFINED(0x80000001)");
    }

    #[test]
    fn transient_codes() {
        let table = [
            (RvError::DeviceRemoved, true),
            (RvError::TokenNotPresent, true),
            (RvError::DeviceError, true),
            (RvError::DeviceMemory, true),
            (RvError::HostMemory, true),
            (RvError::SessionCount, true),
            (RvError::SessionClosed, true),
            (RvError::SessionHandleInvalid, true),
            (RvError::OperationActive, true),
            (RvError::UserNotLoggedIn, true),
            (RvError::FunctionFailed, true),
            (RvError::FunctionCanceled, true),
            (RvError::CryptokiNotInitialized, true),
            (RvError::GeneralError, false),
            (RvError::PinIncorrect, false),
            (RvError::PinLocked, false),
            (RvError::MechanismInvalid, false),
            (RvError::WrappedKeyInvalid, false),
            (RvError::EncryptedDataInvalid, false),
            (RvError::KeyHandleInvalid, false),
            (RvError::TokenWriteProtected, false),
            (RvError::VendorDefined(0x8000_0001), false),
        ];
        for (rv, transient) in table {
            assert_eq!(is_transient(rv), transient, "{}", ckr_name(rv));
        }
    }

    #[test]
    fn login_refusals() {
        let table = [
            (RvError::PinIncorrect, true),
            (RvError::PinLocked, true),
            (RvError::PinExpired, true),
            (RvError::PinLenRange, true),
            (RvError::UserPinNotInitialized, true),
            (RvError::UserTypeInvalid, true),
            (RvError::VendorDefined(0x8000_0001), true),
            (RvError::GeneralError, true),
            (RvError::DeviceError, false),
            (RvError::DeviceRemoved, false),
            (RvError::TokenNotPresent, false),
            (RvError::SessionHandleInvalid, false),
            (RvError::FunctionFailed, false),
            (RvError::CryptokiNotInitialized, false),
        ];
        for (rv, refuses) in table {
            assert_eq!(refuses_login(rv), refuses, "{}", ckr_name(rv));
        }
    }

    #[test]
    fn function_names() {
        assert_eq!(function_name(Function::Decrypt), "C_Decrypt");
        assert_eq!(function_name(Function::GetMechanismList), "C_GetMechanismList");
    }

    #[test]
    fn wrong_pin_is_never_retried() {
        assert_eq!(disposition(RvError::PinIncorrect), Disposition::Permanent);
        assert_eq!(disposition(RvError::SessionHandleInvalid), Disposition::ReopenSession);
        assert_eq!(disposition(RvError::UserNotLoggedIn), Disposition::Relogin);
        assert_eq!(disposition(RvError::WrappedKeyInvalid), Disposition::Permanent);
    }
}
