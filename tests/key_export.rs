//! A token user with the PIN and a copy of the catalog tries to read a
//! pool's KEK: unwrap the wrapped KEK under the pool's master key as a
//! readable object, or as a wrappable one and wrap it under a key of their
//! own, or make their own key CKA_TRUSTED first. On a token that enforces
//! the master key's templates every attempt fails; where a token does not
//! enforce one, `kms probe` must say so, as docs/security.md records.
// cryptoki 0.12 cannot name CKM_AES_KEY_WRAP_KWP (Kryoptic's key wrap); the
// test builds it the way crates/keybridge-kms/src/pkcs11/raw.rs does.
#![allow(unsafe_code)]

mod common;

use common::{actor, password, test_kdf, Kind, Rig};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keybridge::flows::{backup, clients, pool_creation, restore};
use keybridge_kms::config::KmsConfig;
use keybridge_kms::pkcs11::{Pkcs11Backend, Protection};

/// The attacker's own session on the test token, logged in as the user.
fn attacker_session(kind: Kind) -> Session {
    let (ctx, slot) = common::test_token(kind);
    let session = ctx.open_rw_session(slot).unwrap();
    let pin = AuthPin::new(std::env::var("KEYBRIDGE_TEST_PIN").unwrap().into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

/// The pool's key-wrap mechanism, by the name the catalog records.
fn wrap_mechanism(name: &str) -> Mechanism<'static> {
    let t = match name {
        "CKM_AES_KEY_WRAP_PAD" => MechanismType::AES_KEY_WRAP_PAD,
        // SAFETY: as in raw.rs: MechanismType is repr(transparent) over a
        // CK_MECHANISM_TYPE, and any integer is a valid value of it.
        "CKM_AES_KEY_WRAP_KWP" => unsafe { std::mem::transmute::<cryptoki_sys::CK_MECHANISM_TYPE, MechanismType>(0x210B) },
        other => panic!("unknown wrap mechanism {other}"),
    };
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(t, None))
}

fn as_rsa(sensitive: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
    ]
}

/// A key whose value the attacker can read (non-sensitive, extractable), trusted if asked
/// (and if the token lets a user make one).
fn known_key(session: &Session, trusted: bool) -> Result<cryptoki::object::ObjectHandle, CkError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        // Readable: the attacker learns its value after making it.
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Wrap(true),
    ];
    if trusted {
        t.push(Attribute::Trusted(true));
    }
    session.generate_key(&Mechanism::AesKeyGen, &t)
}

/// `CKA_UNWRAP_TEMPLATE = {CKA_SENSITIVE: true}` (the CK_ATTRIBUTE array the
/// standard defines): what an operator might think is enough.
fn sensitive_only_unwrap_template() -> Attribute {
    static TRUE: cryptoki_sys::CK_BBOOL = 1;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&cryptoki_sys::CKA_SENSITIVE.to_ne_bytes());
    bytes.extend_from_slice(&(&TRUE as *const cryptoki_sys::CK_BBOOL as usize).to_ne_bytes());
    bytes.extend_from_slice(&(1 as cryptoki_sys::CK_ULONG).to_ne_bytes());
    Attribute::VendorDefined((AttributeType::VendorDefined(cryptoki_sys::CKA_UNWRAP_TEMPLATE), bytes))
}

/// What each token is documented (docs/security.md) to enforce:
/// (only the SO sets CKA_TRUSTED, readable unwrap refused, re-wrap under
/// the user's own key refused).
fn documented(kind: Kind) -> [Protection; 3] {
    use Protection::*;
    match kind {
        Kind::SoftHsm => [Enforced, Enforced, Enforced],
        // Kryoptic lets a user set CKA_TRUSTED; its MKs therefore get an
        // unwrap template with CKA_EXTRACTABLE=false.
        Kind::Kryoptic => [NotEnforced, Enforced, Enforced],
        _ => unreachable!(),
    }
}

/// The tests of this file run one at a time: `unprotected_key_is_not_adopted`
/// writes token objects through its own session, outside the lock that
/// keybridge holds against SoftHSM2's object-store race (`token_objects` in
/// the PKCS#11 backend).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn pin_holder_cannot_read_a_kek(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let pool = format!("export-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    let p = kb.catalog().pool_by_name(&pool).await.unwrap();
    let backend = match rig.config().kms("kms").unwrap() {
        KmsConfig::Pkcs11(c) => Pkcs11Backend::open(c).await.unwrap(),
        _ => unreachable!(),
    };
    let probe = backend.key_protection().await.unwrap();
    assert_eq!([probe.trusted_needs_so, probe.readable_unwrap, probe.rewrap_under_own_key], documented(kind), "kms probe disagrees with docs/security.md");
    assert!(probe.kek_protected());

    let s = attacker_session(kind);
    let id = hex::decode(&p.master_key.id).unwrap();
    let mk = s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id)]).unwrap();
    let [mk] = mk.as_slice() else { panic!("the pool's master key by CKA_ID: {mk:?}") };
    let mech = wrap_mechanism(&p.wrap_mechanism);

    // The control: keybridge's own unwrap works with the same mechanism and
    // blob, so a refusal below is the token's protection, not a bad call.
    let ours = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::WrapWithTrusted(true),
    ];
    let h = s.unwrap_key(&mech, *mk, &p.kek_wrapped, &ours).expect("the legitimate unwrap");
    s.destroy_object(h).unwrap();

    // (1) Unwrap the real KEK as a readable object and read its exponent.
    let readable = s.unwrap_key(&mech, *mk, &p.kek_wrapped, &as_rsa(false));
    if let Ok(h) = readable {
        let exponent = s.get_attributes(h, &[AttributeType::PrivateExponent]).unwrap_or_default();
        let leaked = exponent.iter().any(|a| matches!(a, Attribute::PrivateExponent(v) if !v.is_empty()));
        s.destroy_object(h).unwrap();
        assert!(!leaked, "{kind:?}: a PIN holder read the KEK's private exponent");
    }

    // (2) Unwrap it as the token allows and wrap it under a key of the
    // attacker's: a trusted one where the token lets a user make it.
    let theirs = match known_key(&s, true) {
        Ok(h) => h,
        Err(CkError::Pkcs11(_, _)) => known_key(&s, false).unwrap(),
        Err(e) => panic!("{e}"),
    };
    if let Ok(h) = s.unwrap_key(&mech, *mk, &p.kek_wrapped, &as_rsa(true)) {
        let out = s.wrap_key(&wrap_mechanism(&p.wrap_mechanism), theirs, h);
        s.destroy_object(h).unwrap();
        assert!(out.is_err(), "{kind:?}: the KEK was wrapped under a key the attacker made");
    }
    s.destroy_object(theirs).unwrap();
}

/// A key the operator made without an unwrap template is not adopted as a
/// master key on a token that enforces one: it would let a PIN holder read
/// every KEK wrapped under it.
async fn unprotected_key_is_not_adopted(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(rig) = Rig::new(kind) else { return };
    let backend = match rig.config().kms("kms").unwrap() {
        KmsConfig::Pkcs11(c) => Pkcs11Backend::open(c).await.unwrap(),
        _ => unreachable!(),
    };
    let s = attacker_session(kind);
    // No unwrap template, and one that keeps unwrapped keys sensitive but
    // lets them be wrapped under any key.
    for extra in [None, Some(sensitive_only_unwrap_template())] {
        let label = format!("weak-mk-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Id(uuid::Uuid::new_v4().as_bytes().to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let described = if extra.is_some() { "a sensitive-only unwrap template" } else { "no unwrap template" };
        template.extend(extra);
        let key = s.generate_key(&Mechanism::AesKeyGen, &template).unwrap();
        use keybridge_kms::KeyBackend;
        let adopted = backend.adopt_master_key(&format!("pkcs11:object={label};type=secret-key")).await;
        s.destroy_object(key).unwrap();
        let err = adopted.map(|_| ()).expect_err(&format!("{kind:?}: a key with {described} was adopted")).to_string();
        assert!(err.contains("readable, non-sensitive") && err.contains("CKA_UNWRAP_TEMPLATE"), "{err}");
    }
}

/// A second key carrying a master key's CKA_ID (planted by a PIN holder, or
/// left by a duplicated generation): keybridge refuses to pick one, names
/// the ambiguity, and restores again once the stranger is gone.
async fn ambiguous_master_key_is_refused(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    let pool = format!("twin-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    pool_creation::create_pool(&kb, &pool, "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    clients::add_client(&kb, "c", &password("client-pw-one"), test_kdf(), &actor()).await.unwrap();
    let g = backup::issue_dek(&kb, &pool, "c", &actor()).await.unwrap();
    let p = kb.catalog().pool_by_name(&pool).await.unwrap();
    let s = attacker_session(kind);
    let twin = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Id(hex::decode(&p.master_key.id).unwrap()),
                Attribute::Label(b"twin".to_vec()),
            ],
        )
        .unwrap();
    let err = restore::recover_dek(&rig.open(), &g.dek_id, "c", &actor()).await.map(|_| ()).unwrap_err().to_string();
    s.destroy_object(twin).unwrap();
    assert!(err.contains("2 secret keys carry the CKA_ID") && err.contains("ambiguous"), "{err}");
    restore::recover_dek(&rig.open(), &g.dek_id, "c", &actor()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_ambiguous_master_key_is_refused() {
    ambiguous_master_key_is_refused(Kind::SoftHsm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic_ambiguous_master_key_is_refused() {
    ambiguous_master_key_is_refused(Kind::Kryoptic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_unprotected_key_is_not_adopted() {
    unprotected_key_is_not_adopted(Kind::SoftHsm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic_unprotected_key_is_not_adopted() {
    unprotected_key_is_not_adopted(Kind::Kryoptic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_pin_holder_cannot_read_a_kek() {
    pin_holder_cannot_read_a_kek(Kind::SoftHsm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic_pin_holder_cannot_read_a_kek() {
    pin_holder_cannot_read_a_kek(Kind::Kryoptic).await
}
