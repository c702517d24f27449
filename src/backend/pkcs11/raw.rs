//! The few PKCS#11 calls cryptoki 0.12 cannot make for us.
//!
//! cryptoki's `MechanismType` cannot name `CKM_AES_KEY_WRAP_KWP` (0x210B,
//! PKCS#11 3.0), and its `get_mechanism_list` silently drops codes it does
//! not know, so a Kryoptic token would appear to have no padded key wrap at
//! all. These calls go through the module's own function list (loaded with
//! cryptoki-sys from the same shared object, so they share the module's
//! state and sessions with cryptoki). This is the only `unsafe` in keybridge.
#![allow(unsafe_code)]

use std::ptr;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{CK_ATTRIBUTE, CK_FUNCTION_LIST_PTR, CK_MECHANISM, CK_OBJECT_HANDLE, CK_ULONG};

/// The module's function list, for the calls made here.
pub struct RawModule {
    // Keeps the library mapped for as long as `list` is used.
    _lib: cryptoki_sys::Pkcs11,
    list: CK_FUNCTION_LIST_PTR,
}

// SAFETY: the function list is a table of function pointers owned by the
// module and valid while the library stays loaded (we hold `_lib`). PKCS#11
// modules initialised with CKF_OS_LOCKING_OK are safe to call from any thread.
unsafe impl Send for RawModule {}
unsafe impl Sync for RawModule {}

impl std::fmt::Debug for RawModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawModule")
    }
}

fn check(rv: cryptoki_sys::CK_RV, function: Function) -> Result<(), CkError> {
    Rv::from(rv).into_result(function)
}

impl RawModule {
    /// Load `path` a second time (the loader returns the same mapping) and
    /// fetch its function list.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        // SAFETY: loading a PKCS#11 module runs its initialisers; the same
        // module was already loaded by cryptoki from the same path.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| e.to_string())?;
        let mut list: CK_FUNCTION_LIST_PTR = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to `list`.
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        check(rv, Function::GetFunctionList).map_err(|e| e.to_string())?;
        if list.is_null() {
            return Err("C_GetFunctionList returned no function list".into());
        }
        Ok(RawModule { _lib: lib, list })
    }

    fn list(&self) -> &cryptoki_sys::CK_FUNCTION_LIST {
        // SAFETY: checked non-null in `load`; the table lives as long as the library.
        unsafe { &*self.list }
    }

    /// Every mechanism the slot lists, including codes cryptoki cannot name.
    pub fn mechanism_list(&self, slot: u64) -> Result<Vec<u64>, CkError> {
        let f = self.list().C_GetMechanismList.ok_or(CkError::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a null list pointer asks only for the count.
        check(unsafe { f(slot, ptr::null_mut(), &mut count) }, Function::GetMechanismList)?;
        let mut out = vec![0 as cryptoki_sys::CK_MECHANISM_TYPE; count as usize];
        // SAFETY: `out` has room for `count` entries; the module writes at most that.
        check(unsafe { f(slot, out.as_mut_ptr(), &mut count) }, Function::GetMechanismList)?;
        out.truncate(count as usize);
        Ok(out)
    }

    /// C_WrapKey with a parameterless mechanism given by its number.
    pub fn wrap_key(
        &self,
        session: &Session,
        mechanism: u64,
        wrapping_key: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>, CkError> {
        let f = self.list().C_WrapKey.ok_or(CkError::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM { mechanism, pParameter: ptr::null_mut(), ulParameterLen: 0 };
        let mut len: CK_ULONG = 0;
        // SAFETY: a null output buffer asks for the length only.
        check(
            unsafe { f(session.handle(), &mut mech, wrapping_key.handle(), key.handle(), ptr::null_mut(), &mut len) },
            Function::WrapKey,
        )?;
        let mut out = vec![0u8; len as usize];
        // SAFETY: `out` has `len` bytes, as the module asked for.
        check(
            unsafe { f(session.handle(), &mut mech, wrapping_key.handle(), key.handle(), out.as_mut_ptr(), &mut len) },
            Function::WrapKey,
        )?;
        out.truncate(len as usize);
        Ok(out)
    }

    /// C_UnwrapKey with a parameterless mechanism given by its number.
    /// Returns the raw handle; callers find it again by a unique CKA_ID they
    /// put in `template` (cryptoki cannot build an `ObjectHandle` from a raw one).
    pub fn unwrap_key(
        &self,
        session: &Session,
        mechanism: u64,
        unwrapping_key: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<CK_OBJECT_HANDLE, CkError> {
        let f = self.list().C_UnwrapKey.ok_or(CkError::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM { mechanism, pParameter: ptr::null_mut(), ulParameterLen: 0 };
        let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: all pointers reference live buffers of the stated lengths;
        // the module only reads `wrapped` and the template.
        check(
            unsafe {
                f(
                    session.handle(),
                    &mut mech,
                    unwrapping_key.handle(),
                    wrapped.as_ptr() as *mut u8,
                    wrapped.len() as CK_ULONG,
                    attrs.as_mut_ptr(),
                    attrs.len() as CK_ULONG,
                    &mut handle,
                )
            },
            Function::UnwrapKey,
        )?;
        Ok(handle)
    }
}
