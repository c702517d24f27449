//! Key-wrap mechanisms by number, for the one cryptoki 0.12 cannot name.
//!
//! cryptoki's `MechanismType` cannot name `CKM_AES_KEY_WRAP_KWP` (0x210B,
//! PKCS#11 3.0; Kryoptic's padded key wrap): its constructors accept only
//! codes it knows and vendor codes (>= CKM_VENDOR_DEFINED), and its
//! `get_mechanism_list` silently drops (and logs) codes it does not know.
//! This module builds that one `MechanismType` and makes every call through
//! cryptoki, that is through the one function list `module.rs` loaded and
//! initialised:
//!
//! - whether the token has a mechanism: `C_GetMechanismInfo`
//!   (CKR_MECHANISM_INVALID means no), instead of the mechanism list;
//! - `C_WrapKey` / `C_UnwrapKey`: cryptoki's `Mechanism::VendorDefined`,
//!   which carries any mechanism type with no parameter as it is.
//!
//! Why not call the module directly: an earlier version loaded the module a
//! second time and called `C_GetFunctionList` itself. For a plain module
//! that returns the same table, but p11-kit's proxy (`p11-kit-proxy.so`) and
//! client (`p11-kit-client.so`) hand each caller its own function list,
//! with its own `C_Initialize` and its own sessions, so those calls failed
//! with CKR_CRYPTOKI_NOT_INITIALIZED. cryptoki 0.12 neither exposes the list
//! it holds nor accepts one from us; going through cryptoki is the only way
//! to use exactly the list that was initialised.
//!
//! This is the only `unsafe` in keybridge: one constant, checked by the
//! tests below.
#![allow(unsafe_code)]

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::CK_MECHANISM_TYPE;

use super::{CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD};

/// `CKM_AES_KEY_WRAP_KWP` as a cryptoki mechanism type.
// SAFETY: cryptoki 0.12 declares `MechanismType` `#[repr(transparent)]`
// over its only field, a `CK_MECHANISM_TYPE`, and relies on that itself
// (it hands a `Vec<MechanismType>` to modules as a CK_MECHANISM_TYPE array
// for CKA_ALLOWED_MECHANISMS). Any integer is a valid value of that field,
// and `transmute` refuses to compile if the sizes ever differ. cryptoki
// only passes the value on to the module or prints it; nothing in it
// assumes the code is one it knows. `tests::kwp_reads_back` checks the
// value round-trips through cryptoki's own conversions.
const KWP: MechanismType = unsafe { std::mem::transmute::<CK_MECHANISM_TYPE, MechanismType>(CKM_AES_KEY_WRAP_KWP) };

/// The cryptoki mechanism type of a key-wrap code keybridge uses.
fn mechanism_type(code: u64) -> Option<MechanismType> {
    match code {
        CKM_AES_KEY_WRAP_KWP => Some(KWP),
        CKM_AES_KEY_WRAP_PAD => Some(MechanismType::AES_KEY_WRAP_PAD),
        _ => None,
    }
}

/// A parameterless mechanism by number, for C_WrapKey and C_UnwrapKey.
fn mechanism(code: u64) -> Result<Mechanism<'static>, CkError> {
    let t = mechanism_type(code).ok_or(CkError::NotSupported)?;
    Ok(Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(t, None)))
}

/// Does the token in `slot` offer the mechanism `code`? Asked with
/// C_GetMechanismInfo, so codes cryptoki cannot name are not lost.
pub(super) fn has_mechanism(ctx: &Pkcs11, slot: Slot, code: u64) -> Result<bool, CkError> {
    let t = match mechanism_type(code) {
        Some(t) => t,
        // A code cryptoki knows (the ones below are PKCS#11 2.x).
        None => MechanismType::try_from(code)?,
    };
    match ctx.get_mechanism_info(slot, t) {
        Ok(_) => Ok(true),
        Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// C_WrapKey with the key-wrap mechanism `code`.
pub(super) fn wrap_key(session: &Session, code: u64, wrapping_key: ObjectHandle, key: ObjectHandle) -> Result<Vec<u8>, CkError> {
    session.wrap_key(&mechanism(code)?, wrapping_key, key)
}

/// C_UnwrapKey with the key-wrap mechanism `code`.
pub(super) fn unwrap_key(session: &Session, code: u64, unwrapping_key: ObjectHandle, wrapped: &[u8], template: &[Attribute]) -> Result<ObjectHandle, CkError> {
    session.unwrap_key(&mechanism(code)?, unwrapping_key, wrapped, template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwp_reads_back() {
        assert_eq!(CK_MECHANISM_TYPE::from(KWP), 0x210B);
        assert!(KWP.to_string().contains("210b"), "{KWP}");
        let m = mechanism(CKM_AES_KEY_WRAP_KWP).unwrap();
        assert_eq!(CK_MECHANISM_TYPE::from(m.mechanism_type()), 0x210B);
        let m = cryptoki_sys::CK_MECHANISM::from(&m);
        assert_eq!((m.mechanism, m.pParameter.is_null(), m.ulParameterLen), (0x210B, true, 0));
    }

    #[test]
    fn pad_is_cryptokis_own() {
        assert_eq!(CK_MECHANISM_TYPE::from(mechanism_type(CKM_AES_KEY_WRAP_PAD).unwrap()), 0x210A);
        assert!(mechanism(0x1234).is_err());
    }
}
