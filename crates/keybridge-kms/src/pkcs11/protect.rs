//! What keeps the token from exporting what keybridge protects.
//!
//! Anyone with the user PIN and a copy of the catalog could ask the token to
//! `C_UnwrapKey` a wrapped KEK under its master key as a non-sensitive,
//! extractable object and read the private exponent. Two attributes stop
//! that, where the token enforces them:
//!
//! - the MK's `CKA_UNWRAP_TEMPLATE`: every key it unwraps is a session
//!   object, sensitive (its value can never be read) and
//!   `CKA_WRAP_WITH_TRUSTED` (it can be wrapped only under a key the
//!   security officer marked `CKA_TRUSTED`). Not `CKA_EXTRACTABLE=false`:
//!   rotating a master key re-wraps the KEK inside the token, from the old
//!   MK to a new, trusted one, and that needs a wrappable object;
//! - the MK's `CKA_WRAP_TEMPLATE`: it wraps only RSA private keys.
//!
//! Both hold only if the token applies the templates and lets only the
//! security officer set `CKA_TRUSTED`. [`check`] tries the attacks on
//! throwaway session keys, and `kms probe` reports what it found.
//!
//! cryptoki 0.12 has no variant for these attributes. Their value is an
//! array of `CK_ATTRIBUTE`, which [`template_attribute`] lays out byte by
//! byte and hands to cryptoki as an attribute by number.

use std::mem::{align_of, size_of};

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_BBOOL, CK_KEY_TYPE, CK_OBJECT_CLASS, CK_ULONG, CKA_CLASS, CKA_KEY_TYPE,
    CKA_SENSITIVE, CKA_TOKEN, CKA_UNWRAP_TEMPLATE, CKA_WRAP_TEMPLATE, CKA_WRAP_WITH_TRUSTED, CKK_RSA, CKO_PRIVATE_KEY,
};
use serde::Serialize;

use super::raw;

// The values the templates point at. Statics: the pointers written into a
// template stay valid for as long as anything may read them, and nothing
// writes through them (a module only reads a template).
static TRUE: CK_BBOOL = 1;
static FALSE: CK_BBOOL = 0;
static PRIVATE_KEY: CK_OBJECT_CLASS = CKO_PRIVATE_KEY;
static RSA: CK_KEY_TYPE = CKK_RSA;

// The layout written below: type, pointer, length, with no padding.
const _: () = assert!(size_of::<CK_ATTRIBUTE>() == 2 * size_of::<CK_ULONG>() + size_of::<usize>());

/// One entry of a template: an attribute type and the static it points at.
enum Entry {
    Bool(CK_ATTRIBUTE_TYPE, &'static CK_BBOOL),
    Ulong(CK_ATTRIBUTE_TYPE, &'static CK_ULONG),
}

/// An array-valued attribute (`CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`)
/// holding `entries`, as the `CK_ATTRIBUTE` array the standard defines.
fn template_attribute(kind: CK_ATTRIBUTE_TYPE, entries: &[Entry]) -> Attribute {
    let mut bytes = Vec::with_capacity(entries.len() * size_of::<CK_ATTRIBUTE>());
    for e in entries {
        let (t, ptr, len) = match e {
            Entry::Bool(t, v) => (*t, *v as *const CK_BBOOL as usize, size_of::<CK_BBOOL>()),
            Entry::Ulong(t, v) => (*t, *v as *const CK_ULONG as usize, size_of::<CK_ULONG>()),
        };
        bytes.extend_from_slice(&t.to_ne_bytes());
        bytes.extend_from_slice(&ptr.to_ne_bytes());
        bytes.extend_from_slice(&(len as CK_ULONG).to_ne_bytes());
    }
    Attribute::VendorDefined((AttributeType::VendorDefined(kind), bytes))
}

/// Whether an array built by [`template_attribute`] may be handed to a
/// module: the module reads it as `CK_ATTRIBUTE`s, so it must be aligned as
/// one. The global allocator gives this in practice (malloc aligns to 16);
/// Rust does not promise it for a byte vector, so it is checked.
fn aligned(a: &Attribute) -> bool {
    match a {
        Attribute::VendorDefined((_, bytes)) => bytes.as_ptr() as usize % align_of::<CK_ATTRIBUTE>() == 0,
        _ => true,
    }
}

/// What every key the MK unwraps must be: a session object, sensitive, and
/// wrappable only under a trusted key.
fn unwrap_template() -> Attribute {
    template_attribute(
        CKA_UNWRAP_TEMPLATE,
        &[Entry::Bool(CKA_TOKEN, &FALSE), Entry::Bool(CKA_SENSITIVE, &TRUE), Entry::Bool(CKA_WRAP_WITH_TRUSTED, &TRUE)],
    )
}

/// What the MK may wrap: RSA private keys (the KEKs), nothing else.
fn wrap_template() -> Attribute {
    template_attribute(CKA_WRAP_TEMPLATE, &[Entry::Ulong(CKA_CLASS, &PRIVATE_KEY), Entry::Ulong(CKA_KEY_TYPE, &RSA)])
}

/// The templates a new master key carries, or none if they could not be
/// laid out aligned (never seen; then the MK is made without them and
/// [`check`] reports the unwrap template as not enforced for it).
pub(super) fn master_key_templates() -> Vec<Attribute> {
    let t = vec![unwrap_template(), wrap_template()];
    if t.iter().all(aligned) {
        t
    } else {
        tracing::warn!("could not lay out the master key's wrap and unwrap templates aligned; the master key is made without them");
        Vec::new()
    }
}

/// Attributes the unwrapped KEK must carry so that a token applying the
/// MK's unwrap template finds nothing inconsistent.
pub(super) fn unwrapped_kek_attributes() -> [Attribute; 1] {
    [Attribute::WrapWithTrusted(true)]
}

/// How a token answered one attack on throwaway keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// The token refused the attack.
    Enforced,
    /// The attack worked: the token does not enforce this protection.
    NotEnforced,
    /// The attack could not be tried (the token lacks a mechanism it needs).
    Untested,
}

/// Which of the protections above this token enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProtectionReport {
    /// A key unwrapped under an MK with an unwrap template cannot be made
    /// non-sensitive.
    pub unwrap_template: Protection,
    /// A key unwrapped under such an MK cannot be wrapped under a key the
    /// user made.
    pub wrap_with_trusted: Protection,
    /// A user (not the security officer) cannot make a key `CKA_TRUSTED`.
    pub trusted_needs_so: Protection,
}

impl ProtectionReport {
    /// True when the token stops a PIN holder from reading a KEK.
    pub fn all_enforced(&self) -> bool {
        [self.unwrap_template, self.wrap_with_trusted, self.trusted_needs_so].iter().all(|p| *p == Protection::Enforced)
    }
}

/// Session objects made by [`check`], destroyed when it returns.
struct Throwaway<'a> {
    session: &'a Session,
    handles: Vec<ObjectHandle>,
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            let _ = self.session.destroy_object(h);
        }
    }
}

fn aes_session_key(session: &Session, extra: &[Attribute]) -> Result<ObjectHandle, CkError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Private(true),
    ];
    t.extend_from_slice(extra);
    session.generate_key(&Mechanism::AesKeyGen, &t)
}

fn is_sensitive(session: &Session, h: ObjectHandle) -> Result<bool, CkError> {
    Ok(session
        .get_attributes(h, &[AttributeType::Sensitive])?
        .into_iter()
        .any(|a| matches!(a, Attribute::Sensitive(true))))
}

/// Attack (1) on master key `mk`: wrap a throwaway RSA private key (what a
/// KEK is) under it, then unwrap that as non-sensitive and extractable.
/// Returns the wrapped throwaway for further attacks, or `None` if `mk`
/// would not wrap it.
fn readable_unwrap(made: &mut Throwaway<'_>, mech: u64, mk: ObjectHandle) -> Result<(Protection, Option<Vec<u8>>), CkError> {
    let session = made.session;
    let (public, private) = super::rsa_pair_templates(2048);
    let (public, victim) = session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
    made.handles.extend([public, victim]);
    let wrapped = match raw::wrap_key(session, mech, mk, victim) {
        Ok(w) => w,
        Err(CkError::Pkcs11(_, _)) => return Ok((Protection::Untested, None)),
        Err(e) => return Err(e),
    };
    let p = match raw::unwrap_key(session, mech, mk, &wrapped, &as_rsa(false)) {
        Err(CkError::Pkcs11(_, _)) => Protection::Enforced,
        Err(e) => return Err(e),
        Ok(h) => {
            made.handles.push(h);
            if is_sensitive(session, h)? { Protection::Enforced } else { Protection::NotEnforced }
        }
    };
    Ok((p, Some(wrapped)))
}

/// The template an attacker unwraps a KEK with: extractable, and sensitive
/// or not.
fn as_rsa(sensitive: bool) -> [Attribute; 6] {
    [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
    ]
}

/// Whether master key `mk` (an adopted one, say) keeps what it unwraps
/// sensitive, tried with attack (1) of [`check`].
pub(super) fn check_master_key(session: &Session, mech: u64, mk: ObjectHandle) -> Result<Protection, CkError> {
    let mut made = Throwaway { session, handles: Vec::new() };
    Ok(readable_unwrap(&mut made, mech, mk)?.0)
}

/// Try the attacks on throwaway session keys, with key-wrap mechanism
/// `mech`: a stand-in master key with a new MK's templates, then (1) unwrap
/// an RSA key wrapped under it as non-sensitive and extractable, (2) unwrap it
/// as the token allows and wrap it under a key of the attacker's, (3) make
/// a key `CKA_TRUSTED` as the user.
pub(super) fn check(session: &Session, mech: u64) -> Result<ProtectionReport, CkError> {
    let untested = ProtectionReport { unwrap_template: Protection::Untested, wrap_with_trusted: Protection::Untested, trusted_needs_so: Protection::Untested };
    let mut made = Throwaway { session, handles: Vec::new() };
    let templates = master_key_templates();
    if templates.is_empty() {
        return Ok(untested);
    }
    let mut attrs = vec![Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Wrap(true), Attribute::Unwrap(true)];
    attrs.extend(templates);
    let mk = aes_session_key(session, &attrs)?;
    made.handles.push(mk);
    let (unwrap_template, Some(wrapped)) = readable_unwrap(&mut made, mech, mk)? else { return Ok(untested) };

    let trusted_needs_so = match aes_session_key(session, &[Attribute::Wrap(true), Attribute::Trusted(true)]) {
        Err(CkError::Pkcs11(_, _)) => Protection::Enforced,
        Err(e) => return Err(e),
        Ok(h) => {
            made.handles.push(h);
            Protection::NotEnforced
        }
    };

    let wrap_with_trusted = match raw::unwrap_key(session, mech, mk, &wrapped, &as_rsa(true)) {
        Err(CkError::Pkcs11(_, _)) => Protection::Enforced,
        Err(e) => return Err(e),
        Ok(h) => {
            made.handles.push(h);
            let theirs = aes_session_key(session, &[Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Wrap(true)])?;
            made.handles.push(theirs);
            match raw::wrap_key(session, mech, theirs, h) {
                Err(CkError::Pkcs11(_, _)) => Protection::Enforced,
                Err(e) => return Err(e),
                Ok(_) => Protection::NotEnforced,
            }
        }
    };
    Ok(ProtectionReport { unwrap_template, wrap_with_trusted, trusted_needs_so })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn template_is_a_ck_attribute_array() {
        let Attribute::VendorDefined((t, bytes)) = unwrap_template() else { panic!() };
        assert_eq!(CK_ATTRIBUTE_TYPE::from(t), CKA_UNWRAP_TEMPLATE);
        let w = size_of::<CK_ATTRIBUTE>();
        assert_eq!(bytes.len(), 3 * w);
        let word = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        // Entry 0: CKA_TOKEN -> &FALSE, length 1.
        assert_eq!(word(0), CKA_TOKEN);
        assert_eq!(word(1) as usize, &FALSE as *const CK_BBOOL as usize);
        assert_eq!(word(2), 1);
        // Entry 2: CKA_WRAP_WITH_TRUSTED -> &TRUE.
        assert_eq!(word(6), CKA_WRAP_WITH_TRUSTED);
        assert_eq!(word(7) as usize, &TRUE as *const CK_BBOOL as usize);
        let Attribute::VendorDefined((_, bytes)) = wrap_template() else { panic!() };
        let word = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(2)), (CKA_CLASS, size_of::<CK_ULONG>() as u64));
        assert_eq!((word(3), word(5)), (CKA_KEY_TYPE, size_of::<CK_ULONG>() as u64));
    }
}
