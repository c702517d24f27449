//! What keeps the token from exporting what keybridge protects.
//!
//! Anyone with the user PIN and a copy of the catalog could ask the token to
//! `C_UnwrapKey` a wrapped KEK under its master key as a non-sensitive,
//! extractable object and read the private exponent, or unwrap it as an
//! extractable object and wrap it under a key whose value they know. The
//! MK's templates stop both, where the token enforces them:
//!
//! - `CKA_UNWRAP_TEMPLATE`: every key the MK unwraps is a session object
//!   and sensitive (its value can never be read), and either
//!   - `CKA_WRAP_WITH_TRUSTED`: it can be wrapped only under a key the
//!     security officer marked `CKA_TRUSTED`. Chosen where the token lets
//!     only the SO set `CKA_TRUSTED` (SoftHSM2): a master-key rotation can
//!     then re-wrap a KEK inside the token, from the old MK to a new,
//!     trusted one;
//!   - or `CKA_EXTRACTABLE=false`: it can never be wrapped again. Chosen
//!     where a user may set `CKA_TRUSTED` (Kryoptic), which makes
//!     wrap-with-trusted no barrier;
//! - `CKA_WRAP_TEMPLATE`: the MK wraps only RSA private keys (KEKs).
//!
//! [`check`] tries the attacks on throwaway session keys; `kms probe`
//! reports what it found, and pool creation uses it to choose the template.
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
    CKA_EXTRACTABLE, CKA_SENSITIVE, CKA_TOKEN, CKA_UNWRAP_TEMPLATE, CKA_WRAP_TEMPLATE, CKA_WRAP_WITH_TRUSTED, CKK_RSA, CKO_PRIVATE_KEY,
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

/// What every key the MK unwraps must be: a session object, sensitive,
/// and wrappable only under a trusted key, or (`rewrappable` false) never.
fn unwrap_template(rewrappable: bool) -> Attribute {
    let last = if rewrappable { Entry::Bool(CKA_WRAP_WITH_TRUSTED, &TRUE) } else { Entry::Bool(CKA_EXTRACTABLE, &FALSE) };
    template_attribute(CKA_UNWRAP_TEMPLATE, &[Entry::Bool(CKA_TOKEN, &FALSE), Entry::Bool(CKA_SENSITIVE, &TRUE), last])
}

/// What the MK may wrap: RSA private keys (the KEKs), nothing else.
fn wrap_template() -> Attribute {
    template_attribute(CKA_WRAP_TEMPLATE, &[Entry::Ulong(CKA_CLASS, &PRIVATE_KEY), Entry::Ulong(CKA_KEY_TYPE, &RSA)])
}

/// The templates a new master key carries on a token where only the SO
/// can set `CKA_TRUSTED` (`trusted_needs_so`) or not; none if they could not
/// be laid out aligned (never seen; then the MK is made without them and
/// [`check`] reports the protections untested).
pub(super) fn master_key_templates(trusted_needs_so: bool) -> Vec<Attribute> {
    let t = vec![unwrap_template(trusted_needs_so), wrap_template()];
    if t.iter().all(aligned) {
        t
    } else {
        tracing::warn!("could not lay out the master key's wrap and unwrap templates aligned; the master key is made without them");
        Vec::new()
    }
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

/// Which protections this token enforces, found by trying the attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProtectionReport {
    /// A user (not the security officer) cannot make a key `CKA_TRUSTED`.
    /// Not an attack by itself; it decides which unwrap template a new MK
    /// carries.
    pub trusted_needs_so: Protection,
    /// A key unwrapped under a new MK cannot be made readable
    /// (non-sensitive).
    pub readable_unwrap: Protection,
    /// A key unwrapped under a new MK cannot be wrapped under a key the
    /// user made (a trusted one, where the user may make those).
    pub rewrap_under_own_key: Protection,
}

impl ProtectionReport {
    /// True when the token stops a PIN holder from reading a KEK wrapped
    /// under a master key keybridge made.
    pub fn kek_protected(&self) -> bool {
        self.readable_unwrap == Protection::Enforced && self.rewrap_under_own_key == Protection::Enforced
    }

    /// Whether a master key made now keeps its KEKs re-wrappable under a
    /// trusted key (for rotation inside the token).
    pub fn rewrappable(&self) -> bool {
        self.trusted_needs_so == Protection::Enforced
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

/// Is this the token refusing what the template or the key's attributes
/// forbid (the protection working), rather than a failure of some other
/// kind (which says nothing, and is reported as an error)?
fn refused(e: &CkError) -> bool {
    use cryptoki::error::RvError::*;
    matches!(
        e,
        CkError::Pkcs11(
            TemplateInconsistent
                | TemplateIncomplete
                | AttributeValueInvalid
                | AttributeReadOnly
                | AttributeTypeInvalid
                | KeyUnextractable
                | KeyNotWrappable
                | KeyFunctionNotPermitted
                | ActionProhibited,
            _
        )
    )
}

/// The outcome of one attempt: a refusal is the protection working; any
/// other error is passed on.
fn outcome<T>(r: Result<T, CkError>) -> Result<Option<T>, CkError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A key of the attacker's whose value they can read (generated
/// non-sensitive and extractable): `CKA_TRUSTED` if `trusted` (refused
/// where only the SO may set it).
fn known_key(made: &mut Throwaway<'_>, trusted: bool) -> Result<Option<ObjectHandle>, CkError> {
    // Readable: the attacker learns its value after making it.
    let mut t = vec![Attribute::Sensitive(false), Attribute::Extractable(true), Attribute::Wrap(true)];
    if trusted {
        t.push(Attribute::Trusted(true));
    }
    let h = outcome(aes_session_key(made.session, &t))?;
    made.handles.extend(h);
    Ok(h)
}

/// The template an attacker unwraps a KEK with.
fn as_rsa(sensitive: bool, extractable: bool) -> [Attribute; 6] {
    [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(extractable),
    ]
}

/// The two attacks on master key `mk` with a throwaway RSA private key (what
/// a KEK is) wrapped under it: (1) unwrap it as a non-sensitive object,
/// extractable or not; (2) unwrap it as the token allows and wrap it under
/// `theirs`, a key whose value the attacker knows. `None` if `mk` would not
/// wrap the throwaway key (a wrap template of its own, say).
fn attacks(made: &mut Throwaway<'_>, mech: u64, mk: ObjectHandle, theirs: ObjectHandle) -> Result<Option<(Protection, Protection)>, CkError> {
    let session = made.session;
    let (public, private) = super::rsa_pair_templates(2048);
    let (public, victim) = session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
    made.handles.extend([public, victim]);
    let Some(wrapped) = outcome(raw::wrap_key(session, mech, mk, victim))? else { return Ok(None) };

    let mut readable = Protection::Enforced;
    for extractable in [true, false] {
        if let Some(h) = outcome(raw::unwrap_key(session, mech, mk, &wrapped, &as_rsa(false, extractable)))? {
            made.handles.push(h);
            if !is_sensitive(session, h)? {
                readable = Protection::NotEnforced;
            }
        }
    }

    let rewrap = match outcome(raw::unwrap_key(session, mech, mk, &wrapped, &as_rsa(true, true)))? {
        None => Protection::Enforced,
        Some(h) => {
            made.handles.push(h);
            match outcome(raw::wrap_key(session, mech, theirs, h))? {
                None => Protection::Enforced,
                Some(_) => Protection::NotEnforced,
            }
        }
    };
    Ok(Some((readable, rewrap)))
}

/// The attacker's wrapping key: trusted where the token lets a user make
/// one, else plain; and whether it is trusted.
fn attackers_key(made: &mut Throwaway<'_>) -> Result<(ObjectHandle, bool), CkError> {
    if let Some(h) = known_key(made, true)? {
        return Ok((h, true));
    }
    let h = known_key(made, false)?.ok_or(CkError::NotSupported)?;
    Ok((h, false))
}

/// Whether master key `mk` (an adopted one) stops both attacks of
/// [`check`]: `Untested` if it would not wrap the throwaway key.
pub(super) fn check_master_key(session: &Session, mech: u64, mk: ObjectHandle) -> Result<Protection, CkError> {
    let mut made = Throwaway { session, handles: Vec::new() };
    let (theirs, _) = attackers_key(&mut made)?;
    Ok(match attacks(&mut made, mech, mk, theirs)? {
        None => Protection::Untested,
        Some((Protection::Enforced, Protection::Enforced)) => Protection::Enforced,
        Some(_) => Protection::NotEnforced,
    })
}

/// Try the attacks on throwaway session keys, with key-wrap mechanism
/// `mech`: make a key `CKA_TRUSTED` with a known value as the user; then,
/// on a stand-in master key with the templates a new MK would get, the
/// two attacks of [`attacks`], with that key (or an untrusted one of known
/// value where the token refused).
pub(super) fn check(session: &Session, mech: u64) -> Result<ProtectionReport, CkError> {
    let mut made = Throwaway { session, handles: Vec::new() };
    let mut report = ProtectionReport { trusted_needs_so: Protection::Untested, readable_unwrap: Protection::Untested, rewrap_under_own_key: Protection::Untested };
    let (theirs, trusted) = attackers_key(&mut made)?;
    report.trusted_needs_so = if trusted { Protection::NotEnforced } else { Protection::Enforced };

    let templates = master_key_templates(report.rewrappable());
    if templates.is_empty() {
        return Ok(report);
    }
    let mut attrs = vec![Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Wrap(true), Attribute::Unwrap(true)];
    attrs.extend(templates);
    let mk = aes_session_key(session, &attrs)?;
    made.handles.push(mk);
    if let Some((readable, rewrap)) = attacks(&mut made, mech, mk, theirs)? {
        report.readable_unwrap = readable;
        report.rewrap_under_own_key = rewrap;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn template_is_a_ck_attribute_array() {
        let Attribute::VendorDefined((t, bytes)) = unwrap_template(true) else { panic!() };
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
        let Attribute::VendorDefined((_, bytes)) = unwrap_template(false) else { panic!() };
        assert_eq!(bytes.len(), 3 * w);
        assert_eq!(u64::from_ne_bytes(bytes[48..56].try_into().unwrap()), CKA_EXTRACTABLE);
        let Attribute::VendorDefined((_, bytes)) = wrap_template() else { panic!() };
        let word = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(2)), (CKA_CLASS, size_of::<CK_ULONG>() as u64));
        assert_eq!((word(3), word(5)), (CKA_KEY_TYPE, size_of::<CK_ULONG>() as u64));
    }
}
